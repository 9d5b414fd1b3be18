"""LoRA file layouts: diffusers/peft, original Wan/ComfyUI and kohya/musubi normalise to one canonical
form with alpha folded; stock diffusers' own converters agree; bad files are refused whole.
(tests/engine/test_adapter_imports.py applies every published layout to the model.)"""

from __future__ import annotations

import io
import json

import pytest
import torch
from safetensors.torch import save

from framecast.engine.adapters.formats import (
    BLOCK_MODULES,
    ModelLayout,
    normalise,
    parse_key,
    read_safetensors,
    split_canonical,
    target_shapes,
    to_comfyui,
)
from framecast.engine.errors import IncompatibleAdapter, InvalidInput


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from diffusers import WanTransformer3DModel

    return ModelLayout.of(WanTransformer3DModel.from_pretrained(tiny_model_dir / "transformer"))


@pytest.fixture(scope="module")
def shapes(tiny_model_dir):
    from diffusers import WanTransformer3DModel

    return target_shapes(WanTransformer3DModel.from_pretrained(tiny_model_dir / "transformer"))


def random_lora(shapes, rank=4, seed=0, modules=None) -> dict[str, torch.Tensor]:
    """Canonical weights: transformer.blocks.N.<module>.lora_A/B.weight."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for module in modules or shapes:
        in_features, out_features = shapes[module]
        out[f"transformer.{module}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator)
        out[f"transformer.{module}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator)
    return out


def deltas(state_dict) -> dict[str, torch.Tensor]:
    """The weight change each module applies at scale 1: B @ A."""
    return {module: b @ a for module, (a, b) in split_canonical(state_dict).items()}


def musubi(state_dict, alpha: float) -> dict[str, torch.Tensor]:
    out = {}
    for module, (a, b) in split_canonical(state_dict).items():
        _, block, name = module.split(".", 2)
        base = f"lora_unet_blocks_{block}_{BLOCK_MODULES[name].replace('.', '_')}"
        out[f"{base}.lora_down.weight"], out[f"{base}.lora_up.weight"] = a, b
        out[f"{base}.alpha"] = torch.tensor(alpha)
    return out


@pytest.mark.parametrize(
    "key, expected",
    [
        ("transformer.blocks.1.attn1.to_q.lora_A.weight", ("blocks.1.attn1.to_q", "A", "diffusers")),
        ("blocks.0.ffn.net.2.lora_B.weight", ("blocks.0.ffn.net.2", "B", "diffusers")),
        ("base_model.model.blocks.1.attn2.to_out.0.lora_A.weight", ("blocks.1.attn2.to_out.0", "A", "peft")),
        ("diffusion_model.blocks.1.self_attn.o.lora_up.weight", ("blocks.1.attn1.to_out.0", "B", "comfyui")),
        ("diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight", ("blocks.0.attn2.add_k_proj", "A", "comfyui")),
        ("diffusion_model.blocks.0.ffn.0.alpha", ("blocks.0.ffn.net.0.proj", "alpha", "comfyui")),
        ("blocks.1.cross_attn.v.lora_A.default.weight", ("blocks.1.attn2.to_v", "A", "diffsynth")),
        ("lora_unet_blocks_1_self_attn_q.lora_down.weight", ("blocks.1.attn1.to_q", "A", "musubi")),
        ("lora_unet_blocks_1_cross_attn_v_img.alpha", ("blocks.1.attn2.add_v_proj", "alpha", "musubi")),
        ("lora_unet__blocks_0_ffn_2.lora_up.weight", ("blocks.0.ffn.net.2", "B", "videox-fun")),
        ("diffusion_model.head.head.lora_down.weight", ("proj_out", "A", "comfyui")),
        ("diffusion_model.blocks.0.self_attn.norm_q.diff", ("blocks.0.attn1.norm_q.weight", "diff", "comfyui")),
        ("diffusion_model.blocks.1.norm3.diff_b", ("blocks.1.norm2.bias", "diff", "comfyui")),  # Wan's norm3 is diffusers' norm2
        ("diffusion_model.blocks.0.diff_m", ("blocks.0.scale_shift_table", "diff", "comfyui")),
        ("diffusion_model.head.diff_m", ("scale_shift_table", "diff", "comfyui")),
        ("transformer.blocks.0.attn2.to_k.lora_B.bias", ("blocks.0.attn2.to_k", "bias", "diffusers")),
    ],
)
def test_parse_key_in_every_layout(model, key, expected):
    parsed = parse_key(key, model)
    assert (parsed.target, parsed.kind, parsed.layout) == expected


@pytest.mark.parametrize(
    "key, why",
    [
        ("transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight", "names nothing"),  # Flux
        ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "names nothing"),  # SD UNet
        ("diffusion_model.blocks.0.self_attn.k_img.lora_down.weight", "names nothing"),  # k_img is cross-attention's
        ("diffusion_model.blocks.5.self_attn.q.lora_down.weight", "names nothing"),  # the tiny model has 2 blocks
        ("diffusion_model.blocks.0.norm2.diff", "names nothing"),  # Wan's norm2 has no weight
        ("diffusion_model.blocks.0.self_attn.norm_q.lora_down.weight", "not a linear"),
        ("blocks.0.attn1.to_q.lora_magnitude_vector", "DoRA"),
        ("diffusion_model.blocks.0.self_attn.q.hada_w1_a", "LoHa"),
        ("diffusion_model.blocks.0.self_attn.q.lokr_w1", "LoKr"),
        ("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", "text or image encoder"),
        ("diffusion_model.blocks.0.self_attn.q.set_weight", "replacement"),
    ],
)
def test_keys_framecast_cannot_apply_say_why(model, key, why):
    parsed = parse_key(key, model)
    assert not hasattr(parsed, "target") and why in parsed.why, parsed


def test_tiny_model_targets_every_block_linear(shapes):
    assert len(shapes) == 2 * len(BLOCK_MODULES)
    assert shapes["blocks.0.attn1.to_q"] == (24, 24) and shapes["blocks.1.ffn.net.0.proj"] == (24, 48)
    assert shapes["blocks.0.attn2.add_k_proj"] == (24, 24)  # added_kv_proj_dim -> inner dim


def test_diffusers_layout_is_already_canonical(shapes):
    weights = random_lora(shapes, rank=4)
    lora = normalise(weights, {}, shapes)
    assert lora.layout == "diffusers" and lora.rank == 4 and lora.rank_pattern == {}
    assert lora.state_dict.keys() == weights.keys()
    assert all(torch.equal(lora.state_dict[k], weights[k]) for k in weights)


def test_comfyui_round_trip_is_exact_and_matches_diffusers_converter(shapes):
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_wan_lora_to_diffusers

    weights = random_lora(shapes, rank=4, seed=1)
    comfy = to_comfyui(weights)
    assert "diffusion_model.blocks.1.self_attn.q.lora_down.weight" in comfy
    assert "diffusion_model.blocks.0.ffn.2.lora_up.weight" in comfy and "diffusion_model.blocks.0.cross_attn.k_img.alpha" in comfy
    lora = normalise(comfy, {}, shapes)
    assert lora.layout == "comfyui"
    assert lora.state_dict.keys() == weights.keys()
    assert all(torch.equal(lora.state_dict[k], weights[k]) for k in weights)
    # diffusers' own reading of the same file lands on the same tensors.
    theirs = _convert_non_diffusers_wan_lora_to_diffusers(dict(comfy))
    assert theirs.keys() == weights.keys()
    assert all(torch.equal(theirs[k], weights[k]) for k in weights)


@pytest.mark.parametrize("alpha", [2.0, 4.0, 16.0])
def test_musubi_alpha_is_folded_as_diffusers_scales_it(shapes, alpha):
    from diffusers.loaders.lora_conversion_utils import _convert_musubi_wan_lora_to_diffusers

    weights = random_lora(shapes, rank=8, seed=2)
    file = musubi(weights, alpha)
    lora = normalise(file, {}, shapes)
    assert lora.layout == "musubi" and lora.rank == 8
    theirs = _convert_musubi_wan_lora_to_diffusers(dict(file))
    ours, expected = deltas(lora.state_dict), deltas(theirs)
    assert ours.keys() == expected.keys()
    for module in ours:
        torch.testing.assert_close(ours[module], expected[module], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours[module], deltas(weights)[module] * alpha / 8, rtol=1e-5, atol=1e-5)
    # lora_A is untouched: the whole scale goes into lora_B.
    first = "transformer.blocks.0.attn1.to_q.lora_A.weight"
    assert torch.equal(lora.state_dict[first], weights[first])


def test_comfyui_with_lora_a_b_names_and_alpha(shapes):
    weights = random_lora(shapes, rank=4, seed=3, modules=["blocks.0.attn1.to_q", "blocks.1.ffn.net.2"])
    file = {}
    for module, (a, b) in split_canonical(weights).items():
        _, block, name = module.split(".", 2)
        base = f"diffusion_model.blocks.{block}.{BLOCK_MODULES[name]}"
        file.update({f"{base}.lora_A.weight": a.half(), f"{base}.lora_B.weight": b.half(), f"{base}.alpha": torch.tensor(8.0)})
    lora = normalise(file, {}, shapes)
    assert lora.target_modules == ["blocks.0.attn1.to_q", "blocks.1.ffn.net.2"]
    assert all(t.dtype == torch.float32 for t in lora.state_dict.values())
    b = "transformer.blocks.1.ffn.net.2.lora_B.weight"
    torch.testing.assert_close(lora.state_dict[b], weights[b].half().float() * 2)


def test_diffusers_metadata_alpha_and_rank_pattern(shapes):
    weights = random_lora(shapes, rank=8, seed=4, modules=["blocks.0.attn1.to_q", "blocks.0.attn1.to_k"])
    weights.update(random_lora(shapes, rank=2, seed=5, modules=["blocks.1.attn2.to_v"]))
    metadata = {"lora_adapter_metadata": json.dumps(
        {"transformer.r": 8, "transformer.lora_alpha": 4, "transformer.alpha_pattern": {"blocks.1.attn2.to_v": 4}}
    )}  # fmt: skip
    lora = normalise(weights, metadata, shapes)
    assert lora.rank == 8 and lora.rank_pattern == {"blocks.1.attn2.to_v": 2}
    q, v = "transformer.blocks.0.attn1.to_q.lora_B.weight", "transformer.blocks.1.attn2.to_v.lora_B.weight"
    torch.testing.assert_close(lora.state_dict[q], weights[q] * 0.5)  # alpha 4 / rank 8
    torch.testing.assert_close(lora.state_dict[v], weights[v] * 2.0)  # alpha 4 / rank 2


def test_entries_framecast_cannot_apply_refuse_the_file_naming_them_or_are_dropped_on_request(model, shapes):
    weights = random_lora(shapes, rank=2)
    weights["transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight"] = torch.zeros(2, 3)
    weights["diffusion_model.blocks.0.self_attn.q.hada_w1_a"] = torch.zeros(2, 3)
    with pytest.raises(InvalidInput) as caught:
        normalise(weights, {}, model)
    message = str(caught.value)
    assert message.startswith("data holds entries framecast cannot apply") and "(got '2 of 50 keys')" in message
    assert "single_transformer_blocks.0.attn.to_q" in message and "LoHa" in message and "drop_unsupported" in message
    lora = normalise(weights, {}, model, drop_unsupported=True)
    assert len(lora.pairs) == 24 and len(lora.dropped) == 2 and "hada_w1_a: a LoHa factor" in " ".join(lora.dropped)


def test_a_file_of_another_model_is_incompatible_whatever_is_asked(model):
    flux = {"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(2, 3)}
    for drop in (False, True):
        with pytest.raises(IncompatibleAdapter, match="none of the file's 1 keys lands on this model"):
            normalise(flux, {}, model, drop_unsupported=drop)


def test_blocks_beyond_the_model_name_nothing(model, shapes):
    weights = random_lora(shapes, rank=2, modules=["blocks.0.attn1.to_q"])
    weights["transformer.blocks.39.attn1.to_q.lora_A.weight"] = torch.zeros(2, 24)
    weights["transformer.blocks.39.attn1.to_q.lora_B.weight"] = torch.zeros(24, 2)
    with pytest.raises(InvalidInput, match="blocks.39.attn1.to_q"):
        normalise(weights, {}, model)


def test_another_architecture_is_refused_with_its_shapes(shapes):
    big = {m: (5120, 5120) for m in shapes}  # the 14B's attention width on the tiny model's layout
    weights = random_lora(big, rank=2, modules=["blocks.0.attn1.to_q", "blocks.1.attn1.to_k"])
    with pytest.raises(IncompatibleAdapter) as caught:
        normalise(weights, {}, shapes)
    assert "architecture" in str(caught.value) and "[2, 5120]" in str(caught.value) and "[r, 24]" in str(caught.value)


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda w: w.pop("transformer.blocks.0.attn1.to_q.lora_B.weight"), ["blocks.0.attn1.to_q", "lora_B"]),
        (lambda w: w.__setitem__("transformer.blocks.0.attn1.to_q.lora_A.weight", torch.full((2, 24), float("nan"))), ["not finite"]),
        (lambda w: w.__setitem__("transformer.blocks.0.attn1.to_q.lora_A.weight", torch.zeros(2, 24, dtype=torch.int8)), ["floating-point"]),
        (lambda w: w.__setitem__("transformer.blocks.0.attn1.to_q.lora_B.weight", torch.zeros(24, 3)), ["[24, 3]"]),
        (lambda w: w.__setitem__("diffusion_model.blocks.0.self_attn.q.lora_down.weight", torch.zeros(2, 24)), ["twice"]),
    ],
)
def test_malformed_pairs_are_refused(shapes, mutate, words):
    weights = random_lora(shapes, rank=2)
    mutate(weights)
    with pytest.raises(IncompatibleAdapter) as caught:
        normalise(weights, {}, shapes)
    assert all(word in str(caught.value) for word in words), str(caught.value)


def test_dora_is_refused(shapes):
    metadata = {"lora_adapter_metadata": json.dumps({"transformer.r": 2, "transformer.use_dora": True})}
    with pytest.raises(IncompatibleAdapter, match="DoRA"):
        normalise(random_lora(shapes, rank=2), metadata, shapes)


def test_only_safetensors_are_read():
    tensors = {"a": torch.ones(2, 3)}
    parsed, metadata = read_safetensors(save(tensors, metadata={"k": "v"}))
    assert torch.equal(parsed["a"], tensors["a"]) and metadata == {"k": "v"}

    pickled = io.BytesIO()
    torch.save(tensors, pickled)  # a zip of pickles
    with pytest.raises(InvalidInput, match="pickle"):
        read_safetensors(pickled.getvalue())
    legacy = io.BytesIO()
    torch.save(tensors, legacy, _use_new_zipfile_serialization=False)  # a bare pickle stream
    with pytest.raises(InvalidInput, match="pickle"):
        read_safetensors(legacy.getvalue())
    # A safetensors file starts with its header's length: one whose first bytes are those of a
    # pickle ("\x80", "PK") is still read.
    for length in (0x80, 0x4B50):
        padding = "x" * (length - int.from_bytes(save(tensors, metadata={"pad": ""})[:8], "little"))
        blob = save(tensors, metadata={"pad": padding})
        assert int.from_bytes(blob[:8], "little") == length
        assert torch.equal(read_safetensors(blob)[0]["a"], tensors["a"])
    good = save(tensors)
    for corrupt in (good[: len(good) - 5], b"\xff" * 64, good[:8] + b"[" + good[9:], b""):
        with pytest.raises(InvalidInput, match="safetensors"):
            read_safetensors(corrupt)
