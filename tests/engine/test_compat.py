"""What framecast takes from diffusers', peft's and transformers' internals (engine/compat.py)
still exists and still does what framecast relies on: an upgrade that moves one fails here."""

from __future__ import annotations

import importlib.metadata
import warnings

import numpy as np
import pytest
import torch

from framecast.engine import compat


def test_the_versions_it_was_tested_with_are_named():
    for package, version in compat.TESTED_WITH.items():
        installed = importlib.metadata.version(package)
        assert version.count(".") == 2 and installed, package  # a tested version is named for every package


def test_prompt_clean_is_the_pipelines_own():
    assert compat.prompt_clean("  a   red\n\n cat &amp; dog ") == "a red cat & dog"


def test_group_offloading_can_be_reapplied_to_a_module_without_it():
    from diffusers.hooks.group_offloading import _maybe_remove_and_reapply_group_offloading  # noqa: F401

    compat.reapply_group_offloading(torch.nn.Linear(2, 2))  # nothing to re-hook: a no-op, no error


def test_the_umt5_encoder_keeps_its_ffn_output_projections_in_full_precision():
    from transformers import UMT5Config, UMT5EncoderModel

    model = UMT5EncoderModel(UMT5Config(vocab_size=8, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2))
    assert "wo" in compat.keep_in_fp32_modules(model)


def test_streamed_decode_equals_the_vaes_own(tiny_model_dir):
    """decode_latent_frames walks the VAE's causal decode one latent frame at a time with its own
    cache: the frames it yields are the ones AutoencoderKLWan.decode gives for the whole clip."""
    from framecast.engine.model import load_pipeline

    vae = load_pipeline(tiny_model_dir).vae
    assert compat.vae_streams(vae)
    z = torch.randn(1, vae.config.z_dim, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = vae.decode(z, return_dict=False)[0].clamp(-1, 1)
        streamed = torch.cat(list(compat.decode_latent_frames(vae, z)), dim=2)
    assert [c.shape[2] for c in compat.decode_latent_frames(vae, z)] == [1, 4, 4]
    np.testing.assert_allclose(streamed.numpy(), whole.numpy(), atol=1e-5)
    vae.enable_tiling()
    assert not compat.vae_streams(vae)


def test_a_failed_injection_leaves_no_peft_loaded_mark():
    module = torch.nn.Module()
    module._hf_peft_config_loaded = True
    compat.reset_peft_loaded_flag(module)
    assert module._hf_peft_config_loaded is False


def test_a_second_peft_adapter_is_added_without_peft_warning(tiny_model_dir):
    from diffusers import WanTransformer3DModel
    from peft import LoraConfig

    transformer = WanTransformer3DModel.from_pretrained(tiny_model_dir / "transformer")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in ("first", "second"):  # the slot and a training adapter beside it, as the engine has them
            compat.add_peft_adapter(transformer, LoraConfig(r=2, lora_alpha=2, target_modules=["to_q"]), name)
    assert set(transformer.peft_config) == {"first", "second"}
    assert not [str(w.message) for w in caught if "peft_config" in str(w.message)]


@pytest.mark.parametrize("torchvision", [False])
def test_the_clip_processor_name_means_the_pil_one_without_torchvision(torchvision):
    import transformers
    from transformers.utils import is_torchvision_available

    compat.use_pil_clip_processor()
    if is_torchvision_available() is torchvision and hasattr(transformers, "CLIPImageProcessorPil"):
        import sys

        assert sys.modules["transformers"].CLIPImageProcessor is transformers.CLIPImageProcessorPil
