"""Every published Wan LoRA layout, built here as a safetensors file on the tiny model's shapes,
imports and is applied exactly: the transformer's effective weights move by what the file says
(LoRA up @ down * alpha / rank, whole changes as they are), and its output is that of a base
model the test patches by hand. An accelerator stacks under a clip's adapter; training and the
bare base model see neither."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save

from framecast.engine.adapters.slots import AdapterSlots, AdapterStore, import_adapter
from framecast.engine.errors import IncompatibleAdapter, InvalidInput

from .test_adapter_cache import forward

BASE = "wan-tiny@000000000000"
BLOCKS = 2
# Original Wan name -> diffusers name, written out here (not the code's table) for the tiny model.
WAN_LINEARS = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v", "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0", "cross_attn.k_img": "attn2.add_k_proj", "cross_attn.v_img": "attn2.add_v_proj",
    "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
}  # fmt: skip
WAN_NORMS = {"norm3": "norm2", "self_attn.norm_q": "attn1.norm_q", "self_attn.norm_k": "attn1.norm_k",
             "cross_attn.norm_q": "attn2.norm_q", "cross_attn.norm_k": "attn2.norm_k",
             "cross_attn.norm_k_img": "attn2.norm_added_k"}  # fmt: skip
WAN_OUTSIDE = {
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "head.head": "proj_out",
}


@pytest.fixture()
def transformer(tiny_model_dir):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel.from_pretrained(tiny_model_dir / "transformer").eval().requires_grad_(False)


@pytest.fixture()
def base(transformer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in transformer.named_parameters()}


@pytest.fixture()
def store(tmp_path):
    return AdapterStore(tmp_path / "adapters")


class FileBuilder:
    """A LoRA file in one layout, and the change of each diffusers parameter it means."""

    def __init__(self, base: dict[str, torch.Tensor], seed: int = 0):
        self.base, self.tensors, self.expected = base, {}, {}
        self.generator = torch.Generator().manual_seed(seed)

    def random(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator) * 0.05

    def change(self, param: str, delta: torch.Tensor) -> None:
        self.expected[param] = self.expected.get(param, 0) + delta.float()

    def lora(self, stem: str, module: str, down: str, up: str, rank: int = 3, alpha: float | None = None,
             alpha_key: str = ".alpha") -> None:  # fmt: skip
        out_features, in_features = self.base[f"{module}.weight"].shape
        lora_down, lora_up = self.random(rank, in_features), self.random(out_features, rank)
        self.tensors[f"{stem}{down}"], self.tensors[f"{stem}{up}"] = lora_down, lora_up
        if alpha is not None:
            self.tensors[f"{stem}{alpha_key}"] = torch.tensor(alpha)
        self.change(f"{module}.weight", lora_up @ lora_down * ((alpha if alpha is not None else rank) / rank))

    def diff(self, key: str, param: str, shape=None) -> None:
        delta = self.random(*(shape or self.base[param].shape))
        self.tensors[key] = delta
        self.change(param, delta.reshape(self.base[param].shape))


def comfyui_file(base, lora_down="lora_down.weight", lora_up="lora_up.weight", alpha=6.0, changes=True) -> FileBuilder:
    """ComfyUI / original Wan keys as LightX2V's distill LoRAs carry them: every block linear with
    bias changes, norm changes, a modulation change per block, and the layers outside the blocks."""
    file = FileBuilder(base)
    for block in range(BLOCKS):
        for wan, module in WAN_LINEARS.items():
            stem = f"diffusion_model.blocks.{block}.{wan}"
            file.lora(stem, f"blocks.{block}.{module}", f".{lora_down}", f".{lora_up}", alpha=alpha)
            if changes:
                file.diff(f"{stem}.diff_b", f"blocks.{block}.{module}.bias")
        if changes:
            for wan, module in WAN_NORMS.items():
                file.diff(f"diffusion_model.blocks.{block}.{wan}.diff", f"blocks.{block}.{module}.weight")
            file.diff(f"diffusion_model.blocks.{block}.norm3.diff_b", f"blocks.{block}.norm2.bias")
            file.diff(f"diffusion_model.blocks.{block}.diff_m", f"blocks.{block}.scale_shift_table")
    if changes:
        for wan, module in WAN_OUTSIDE.items():
            stem = f"diffusion_model.{wan}"
            if wan == "head.head":  # LightX2V's Wan2.2 distill LoRAs change the head whole
                file.diff(f"{stem}.diff", "proj_out.weight")
            else:
                file.lora(stem, module, f".{lora_down}", f".{lora_up}", alpha=alpha)
            file.diff(f"{stem}.diff_b", f"{module}.bias")
        file.diff("diffusion_model.img_emb.proj.0.diff", "condition_embedder.image_embedder.norm1.weight")
        file.diff("diffusion_model.img_emb.proj.4.diff_b", "condition_embedder.image_embedder.norm2.bias")
        file.diff("diffusion_model.head.diff_m", "scale_shift_table")
        file.diff("diffusion_model.patch_embedding.diff", "patch_embedding.weight")
    return file


def kohya_file(base, prefix: str) -> FileBuilder:
    """musubi-tuner (``lora_unet_``) and VideoX-Fun (``lora_unet__``): Wan names with "_"."""
    file = FileBuilder(base, seed=1)
    for block in range(BLOCKS):
        for wan, module in WAN_LINEARS.items():
            stem = f"{prefix}blocks_{block}_{wan.replace('.', '_')}"
            file.lora(stem, f"blocks.{block}.{module}", ".lora_down.weight", ".lora_up.weight", alpha=1.0)
    for wan, module in WAN_OUTSIDE.items():  # VideoX-Fun targets every linear of the transformer
        file.lora(f"{prefix}{wan.replace('.', '_')}", module, ".lora_down.weight", ".lora_up.weight", alpha=2.0)
    return file


def diffsynth_file(base) -> FileBuilder:
    """DiffSynth-Studio: peft's keys with the adapter's name, original Wan names, no prefix, no alpha."""
    file = FileBuilder(base, seed=2)
    for block in range(BLOCKS):
        for wan, module in WAN_LINEARS.items():
            file.lora(f"blocks.{block}.{wan}", f"blocks.{block}.{module}", ".lora_A.default.weight", ".lora_B.default.weight")
    return file


def peft_file(base) -> FileBuilder:
    """peft's raw state dict of a diffusers transformer: ``base_model.model.`` and diffusers names."""
    file = FileBuilder(base, seed=3)
    for block in range(BLOCKS):
        for module in WAN_LINEARS.values():
            file.lora(f"base_model.model.blocks.{block}.{module}", f"blocks.{block}.{module}", ".lora_A.weight", ".lora_B.weight")
    file.lora("base_model.model.proj_out", "proj_out", ".lora_A.weight", ".lora_B.weight")
    return file


def diffusers_file(base) -> FileBuilder:
    """diffusers' own keys, bias changes as lora_B.bias (scaled with the LoRA, as peft runs them)."""
    file = FileBuilder(base, seed=4)
    for block in range(BLOCKS):
        for module in WAN_LINEARS.values():
            name = f"blocks.{block}.{module}"
            file.lora(f"transformer.{name}", name, ".lora_A.weight", ".lora_B.weight")
            bias = file.random(base[f"{name}.bias"].shape[0])
            file.tensors[f"transformer.{name}.lora_B.bias"] = bias
            file.change(f"{name}.bias", bias)
    file.lora("transformer.condition_embedder.time_proj", "condition_embedder.time_proj", ".lora_A.weight", ".lora_B.weight")
    return file


LAYOUTS = {
    "comfyui": (lambda base: comfyui_file(base), "comfyui"),  # + LightX2V's diff, diff_b, diff_m, outside the blocks
    "diffusion-pipe": (lambda base: comfyui_file(base, "lora_A.weight", "lora_B.weight", alpha=None, changes=False), "comfyui"),
    "musubi": (lambda base: kohya_file(base, "lora_unet_"), "musubi"),
    "videox-fun": (lambda base: kohya_file(base, "lora_unet__"), "videox-fun"),
    "diffsynth": (diffsynth_file, "diffsynth"),
    "peft": (peft_file, "peft"),
    "diffusers": (diffusers_file, "diffusers"),
}


def effective(transformer) -> dict[str, torch.Tensor]:
    """Every parameter as the model computes with it: a peft linear's weight with its active LoRA merged."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in transformer.named_modules():
        if isinstance(module, LoraLayer):
            weight = module.base_layer.weight.detach().double()
            if not module.disable_adapters:
                for adapter in [a for a in module.active_adapters if a in module.lora_A]:
                    lora_a, lora_b = module.lora_A[adapter].weight.double(), module.lora_B[adapter].weight.double()
                    weight = weight + lora_b @ lora_a * module.scaling[adapter]
            out[f"{name}.weight"] = weight
            out[f"{name}.bias"] = module.base_layer.bias.detach().double()
    for name, param in transformer.named_parameters():
        if "lora_" not in name and ".base_layer." not in name:
            out[name] = param.detach().double()
    return out


def assert_changed_by(transformer, base, expected, strength=1.0):
    now = effective(transformer)
    assert now.keys() == base.keys()
    for name, value in now.items():
        change = expected.get(name)
        if change is None:
            assert torch.equal(value, base[name].double()), f"{name} changed"
        else:
            torch.testing.assert_close(value - base[name].double(), strength * change.double(), rtol=1e-5, atol=2e-6, msg=name)


def patched_by_hand(tiny_model_dir, base, expected, strength=1.0):
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel.from_pretrained(tiny_model_dir / "transformer").eval()
    model.load_state_dict({name: value + strength * expected.get(name, 0) for name, value in base.items()})
    return model


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_published_layout_is_applied_exactly(layout, transformer, base, store, tiny_model_dir):
    build, name = LAYOUTS[layout]
    file = build(base)
    slots = AdapterSlots(transformer, max_rank=4)
    record = import_adapter(store, slots, BASE, "imported", save(file.tensors), f"{layout}.safetensors")
    assert record.origin == f"imported from {name}" and record.dropped == []
    slots.activate("imported", store)
    assert_changed_by(transformer, base, file.expected)
    torch.testing.assert_close(forward(transformer), forward(patched_by_hand(tiny_model_dir, base, file.expected)),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    # At a strength, every change scales; the bare base model is the base model again, bit for bit.
    slots.activate("imported", store, strength=0.5)
    assert_changed_by(transformer, base, file.expected, strength=0.5)
    slots.deactivate()
    assert_changed_by(transformer, base, {})


def test_lightx2v_layout_reads_as_diffusers_reads_its_lora_and_bias_entries(base, tiny_model_dir, tmp_path):
    """diffusers' own converter takes the LoRA and diff_b entries (it drops the norm and modulation
    changes): on a file of those alone, the weights it loads are ours."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_wan_lora_to_diffusers

    from framecast.engine.adapters.formats import ModelLayout, normalise

    file = comfyui_file(base, changes=False)
    for block in range(BLOCKS):
        for wan, module in WAN_LINEARS.items():
            file.diff(f"diffusion_model.blocks.{block}.{wan}.diff_b", f"blocks.{block}.{module}.bias")
    theirs = _convert_non_diffusers_wan_lora_to_diffusers({k: v.clone() for k, v in file.tensors.items()})  # it scales in place
    model = patched_by_hand(tiny_model_dir, base, {})
    ours = normalise(file.tensors, {}, ModelLayout.of(model))
    for module, (lora_a, lora_b) in ours.pairs.items():
        a, b = theirs[f"transformer.{module}.lora_A.weight"], theirs[f"transformer.{module}.lora_B.weight"]
        torch.testing.assert_close(lora_b @ lora_a, b @ a, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(ours.deltas[f"{module}.bias"], theirs[f"transformer.{module}.lora_B.bias"])


def test_a_convolution_lora_changes_the_patch_embedding(transformer, base, store, tiny_model_dir):
    file = FileBuilder(base, seed=5)
    out_channels, in_channels, *kernel = base["patch_embedding.weight"].shape
    down, up = file.random(2, in_channels, *kernel), file.random(out_channels, 2, 1, 1, 1)
    file.tensors = {"diffusion_model.patch_embedding.lora_down.weight": down, "diffusion_model.patch_embedding.lora_up.weight": up}
    file.change("patch_embedding.weight", (up.reshape(out_channels, 2) @ down.reshape(2, -1)).reshape(base["patch_embedding.weight"].shape))
    slots = AdapterSlots(transformer, max_rank=4)
    import_adapter(store, slots, BASE, "conv", save(file.tensors))
    slots.activate("conv", store)
    assert_changed_by(transformer, base, file.expected)


def test_unsupported_entries_are_named_or_dropped_and_reported(transformer, base, store):
    file = diffsynth_file(base)
    file.tensors["blocks.0.self_attn.q.hada_w1_a"] = torch.zeros(2, 24)
    file.tensors["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.zeros(2, 32)
    slots = AdapterSlots(transformer, max_rank=4)
    with pytest.raises(InvalidInput) as refused:
        import_adapter(store, slots, BASE, "partial", save(file.tensors))
    assert refused.value.field == "data" and "hada_w1_a" in str(refused.value) and "drop_unsupported" in str(refused.value)
    assert not store.exists("partial")
    record = import_adapter(store, slots, BASE, "partial", save(file.tensors), drop_unsupported=True)
    assert sorted(line.split(":")[0] for line in record.dropped) == [
        "blocks.0.self_attn.q.hada_w1_a", "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"]
    assert store.record("partial").dropped == record.dropped  # kept with the adapter
    slots.activate("partial", store)
    assert_changed_by(transformer, base, file.expected)  # the rest, exactly


@pytest.mark.parametrize(("key", "shape", "words"), [
    ("diffusion_model.blocks.0.norm3.diff", (25,), ["blocks.0.norm2.weight", "[25]", "[24]"]),
    ("diffusion_model.blocks.0.diff_m", (1, 5, 24), ["blocks.0.scale_shift_table", "[1, 5, 24]"]),
])  # fmt: skip
def test_changes_of_another_shape_refuse_the_file(transformer, base, store, key, shape, words):
    slots = AdapterSlots(transformer, max_rank=4)
    with pytest.raises(IncompatibleAdapter) as refused:
        import_adapter(store, slots, BASE, "wrong", save({key: torch.zeros(shape)}))
    assert all(word in str(refused.value) for word in words), str(refused.value)


def test_a_modulation_change_saved_without_its_leading_axis_is_read(transformer, base, store):
    delta = torch.randn(6, 24)
    slots = AdapterSlots(transformer, max_rank=4)
    import_adapter(store, slots, BASE, "mod", save({"diffusion_model.blocks.1.diff_m": delta}))
    slots.activate("mod", store)
    assert_changed_by(transformer, base, {"blocks.1.scale_shift_table": delta.reshape(1, 6, 24)})


def test_an_import_exports_to_comfyui_and_back_exactly_and_diffusers_says_what_it_cannot_carry(transformer, base, store):
    from framecast.engine.errors import FailedPrecondition

    file = comfyui_file(base)
    slots = AdapterSlots(transformer, max_rank=4)
    import_adapter(store, slots, BASE, "distill", save(file.tensors))
    exported = store.export("distill", "comfyui")
    import_adapter(store, slots, BASE, "again", exported)
    first, _ = store.load("distill")
    again, _ = store.load("again")
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    with pytest.raises(FailedPrecondition, match="format COMFYUI") as refused:
        store.export("distill", "diffusers")
    assert "22 parameters" in str(refused.value) and "blocks.0.attn1.norm_k.weight" in str(refused.value)


def put_lora(store, slots, name, seed, modules=None):
    from .test_adapter_cache import put

    return put(store, slots, name, rank=4, seed=seed, modules=modules)


def test_an_accelerator_stacks_under_each_clip_adapter_and_a_swap_leaves_it_alone(transformer, base, store, tiny_model_dir):
    from framecast.engine.adapters.slots import ACCELERATOR_ADAPTER, SLOT_ADAPTER

    file = comfyui_file(base)
    slots = AdapterSlots(transformer, max_rank=4)
    import_adapter(store, slots, BASE, "distill", save(file.tensors))
    put_lora(store, slots, "clip-a", seed=1)
    put_lora(store, slots, "clip-b", seed=2)
    clip = {}
    for name in ("clip-a", "clip-b"):
        weights, _ = store.load(name)
        clip[name] = {f"{k[len('transformer.'):-len('.lora_A.weight')]}.weight": weights[k.replace("lora_A", "lora_B")] @ weights[k]
                      for k in weights if k.endswith("lora_A.weight")}  # fmt: skip

    def stacked(name, strength, accel_strength):
        return {p: accel_strength * file.expected.get(p, 0) + strength * clip[name].get(p, 0)
                for p in set(file.expected) | set(clip[name])}  # fmt: skip

    slots.activate("clip-a", store, 0.8, accelerator="distill", accelerator_strength=0.7)
    assert_changed_by(transformer, base, stacked("clip-a", 0.8, 0.7))
    torch.testing.assert_close(forward(transformer), forward(patched_by_hand(tiny_model_dir, base, stacked("clip-a", 0.8, 0.7))),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    accel_params = {n: (p.data_ptr(), p.detach().clone()) for n, p in transformer.named_parameters() if ACCELERATOR_ADAPTER in n}
    held, kept = slots._accel.held, dict(slots.patches._kept)

    slots.activate("clip-b", store, 1.0, accelerator="distill", accelerator_strength=0.7)  # the swap
    assert_changed_by(transformer, base, stacked("clip-b", 1.0, 0.7))
    assert slots._accel.held == held and slots.patches._kept.keys() == kept.keys()
    for name, param in transformer.named_parameters():
        if ACCELERATOR_ADAPTER in name:  # the accelerator's slot: not rewritten, not moved
            assert param.data_ptr() == accel_params[name][0] and torch.equal(param, accel_params[name][1])
    layer = transformer.blocks[0].attn1.to_q
    assert list(layer.active_adapters) == [SLOT_ADAPTER, ACCELERATOR_ADAPTER]

    slots.activate("clip-b", store)  # no accelerator: the clip's adapter alone, on the base's own values
    assert_changed_by(transformer, base, {p: c for p, c in clip["clip-b"].items()})
    slots.activate("", store, accelerator="distill")  # the accelerator alone
    assert_changed_by(transformer, base, file.expected)


def test_training_sees_neither_the_accelerator_nor_its_changes(transformer, base, store):
    file = comfyui_file(base)
    slots = AdapterSlots(transformer, max_rank=4)
    import_adapter(store, slots, BASE, "distill", save(file.tensors))
    put_lora(store, slots, "clip", seed=1)
    slots.activate("clip", store, accelerator="distill")
    slots.add_trainable("fresh", rank=2, alpha=2.0, seed=0)  # lora_B = 0: the training adapter starts as the identity
    assert_changed_by(transformer, base, {})
    assert slots.accelerator is None
    assert [p for n, p in transformer.named_parameters() if p.requires_grad] and all(
        "fc_fresh" in n for n, p in transformer.named_parameters() if p.requires_grad)  # fmt: skip
