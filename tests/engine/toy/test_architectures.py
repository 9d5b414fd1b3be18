"""One spec type and one builder for every model framecast builds: the presets build the
architectures they name, and the shipped toy model's recorded spec builds the shipped model."""

from __future__ import annotations

import json

import pytest
import torch

from framecast.engine.toy.architectures import PRESETS, WanSpec, build_components, build_pipeline, preset


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_the_14b_preset_is_wan2_1_i2v_14b_480p():
    """Built on the meta device (sizes only, no memory): the parameter counts of Wan2.1-I2V-14B-480P's
    transformer, UMT5-XXL encoder, CLIP ViT-H/14 vision tower and Wan VAE, as the benchmarks built them."""
    pipe = build_pipeline(preset("wan2.1-i2v-14b"), "meta", torch.bfloat16)
    counts = {name: _parameters(getattr(pipe, name))
              for name in ("transformer", "text_encoder", "image_encoder", "vae")}  # fmt: skip
    assert counts == {"transformer": 16_394_878_784, "text_encoder": 5_680_910_336, "image_encoder": 630_766_080,
                      "vae": 126_892_531}  # fmt: skip
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.vae.dtype == torch.float32
    assert not pipe.transformer.training and pipe.vae_scale_factor_spatial == 8
    assert pipe.image_processor.crop_size == {"height": 224, "width": 224}


def test_with_layers_keeps_the_widths_and_sets_every_block_count():
    spec = preset("wan2.1-i2v-14b").with_layers(1)
    assert (spec.layers, spec.text_layers, spec.image_layers) == (1, 1, 1)
    assert spec.inner_dim == 5120 and spec.text_dim == 4096 and spec.image_dim == 1280
    pipe = build_pipeline(spec, "meta", torch.bfloat16)
    assert len(pipe.transformer.blocks) == 1 and _parameters(pipe.transformer) == 645_178_688


def test_preset_overrides_fields_and_names_the_presets_when_it_has_no_such_one():
    assert preset("tiny") == WanSpec() and preset("toy", vae_z_dim=24).vae_z_dim == 24
    assert PRESETS["toy"].vae_z_dim == 16  # the preset itself is left alone
    with pytest.raises(ValueError, match="tiny, toy, wan2.1-i2v-14b"):
        preset("wan2.2")


def test_the_same_seed_builds_the_same_weights():
    first, again = build_components(preset("tiny")), build_components(preset("tiny"))
    other = build_components(preset("tiny", seed=1))
    for name in ("text_encoder", "image_encoder", "vae", "transformer"):
        a, b, c = (parts[name].state_dict() for parts in (first, again, other))
        assert all(torch.equal(a[k], b[k]) for k in a), name
        assert not all(torch.equal(a[k], c[k]) for k in a), name


def test_the_shipped_toy_models_recorded_spec_builds_the_shipped_model():
    """framecast_toy.json records the spec the model was trained at (in the older form: a square
    ``size``, no encoder sizes): it reads back as the toy preset with the wider decoder, and the
    components built from it have the shipped model's configs."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionConfig, UMT5Config

    from framecast.engine.model import builtin_model_dir

    shipped = builtin_model_dir()
    spec = WanSpec.from_dict(json.loads((shipped / "framecast_toy.json").read_text())["spec"])
    assert spec == preset("toy", vae_decoder_base_dim=20)
    assert (spec.frames, spec.height, spec.width) == (17, 64, 64)
    built = build_components(spec)
    for name, config_class in (("transformer", WanTransformer3DModel), ("vae", AutoencoderKLWan)):
        stored = {k: v for k, v in config_class.load_config(shipped / name).items() if not k.startswith("_")}
        for key, value in stored.items():
            if key not in ("latents_mean", "latents_std"):  # measured by the training
                assert json.loads(json.dumps(built[name].config[key])) == value, (name, key)
    for name, config_class in (("text_encoder", UMT5Config), ("image_encoder", CLIPVisionConfig)):
        stored = config_class.from_pretrained(shipped / name).to_diff_dict()
        ours = built[name].config.to_diff_dict()
        for key in stored.keys() - {"architectures", "dtype", "torch_dtype", "transformers_version"}:
            assert ours.get(key) == stored[key], (name, key)
