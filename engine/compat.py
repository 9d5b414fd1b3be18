"""Every use of diffusers', peft's and transformers' internals, in one place.

framecast leans on a few things these libraries do not promise to keep: a helper of the Wan
pipeline module, a private group-offloading hook, a private flag diffusers sets while peft
injects layers, the Wan VAE's causal decode cache, and a class attribute transformers reads.
Each is wrapped here, with what to do when it is missing, so that an upgrade that moves one
breaks this module's tests (tests/engine/test_compat.py) rather than a job.

Tested with: diffusers 0.42.1, peft 0.21.2, transformers 5.25.0 (and the GPU image's
diffusers and peft wheels of the same versions).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch

TESTED_WITH = {"diffusers": "0.42.1", "peft": "0.21.2", "transformers": "5.25.0"}


def use_pil_clip_processor() -> None:
    """Bind transformers' ``CLIPImageProcessor`` to its PIL class where torchvision is absent, before
    diffusers' Wan pipeline module imports the name.

    transformers 5 gave the name ``CLIPImageProcessor`` to its torchvision backend and named the
    PIL one ``CLIPImageProcessorPil``. diffusers' Wan pipeline module imports the old name, and a
    real Wan2.1 directory's model_index.json names it too; without torchvision (framecast does
    not need it) transformers then resolves the name to the PIL class with a warning that asks
    for torchvision. framecast means the PIL processor (the built-in model was made with it), so
    it binds the name to that class, as transformers' fallback would. Looking the class up
    imports transformers' processing_utils, which re-executes the package and puts a new module
    object in sys.modules: the name goes on that one, the one diffusers imports from.
    transformers 4 (no ``...Pil`` class) and hosts with torchvision are left alone."""
    import sys

    import transformers
    from transformers.utils import is_torchvision_available

    if not is_torchvision_available() and hasattr(transformers, "CLIPImageProcessorPil"):
        sys.modules["transformers"].CLIPImageProcessor = transformers.CLIPImageProcessorPil


def prompt_clean(text: str) -> str:
    """The clean-up the Wan pipeline applies to a prompt before tokenizing it (ftfy, HTML
    unescaping, white space), so that framecast counts and encodes exactly what it would."""
    use_pil_clip_processor()
    from diffusers.pipelines.wan.pipeline_wan_i2v import prompt_clean as clean

    return clean(text)


def reapply_group_offloading(module: torch.nn.Module) -> None:
    """Re-hook a group-offloaded module after layers were added to it (peft's LoRA layers):
    group offloading holds references to each block's tensors. Nothing to do without it."""
    try:
        from diffusers.hooks.group_offloading import _maybe_remove_and_reapply_group_offloading
    except ImportError:
        return
    _maybe_remove_and_reapply_group_offloading(module)


def add_peft_adapter(model: torch.nn.Module, config, name: str) -> None:
    """``model.add_adapter(config, adapter_name=name)`` (diffusers' peft integration), without peft's
    "Already found a `peft_config` attribute in the model" warning.

    peft warns whenever a model that carries an adapter gets another one, in case it was not
    meant to. framecast always means it: the transformer carries the inference slot and, while a
    job trains, the training adapter beside it (each under its own peft name), and the memory
    planner traces the same two. Left alone, the warning greeted each server's first plan or
    training. Only that message is silenced, only around this call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Already found a `peft_config` attribute", UserWarning)
        model.add_adapter(config, adapter_name=name)


def reset_peft_loaded_flag(model: torch.nn.Module) -> None:
    """diffusers marks a model as carrying peft layers before peft injects them; after an
    injection that failed part way and left none, clear the mark so the next one starts clean."""
    if not hasattr(model, "peft_config"):
        model._hf_peft_config_loaded = False


def keep_in_fp32_modules(model: torch.nn.Module) -> frozenset[str]:
    """Names of the linears a transformers model keeps in full precision (``_keep_in_fp32_modules``;
    UMT5 keeps its FFN output projections)."""
    return frozenset(getattr(model, "_keep_in_fp32_modules", None) or ())


def vae_streams(vae) -> bool:
    """Whether ``decode_latent_frames`` can walk this VAE's causal decode one latent frame at a
    time: the Wan 2.1 VAE without tiling (tiled decodes and Wan 2.2's patched VAE do not)."""
    return (
        not getattr(vae, "use_tiling", False)
        and getattr(vae.config, "patch_size", None) is None
        and callable(getattr(vae, "clear_cache", None))  # which (re)creates the decoder's feature cache
        and hasattr(vae, "decoder")
        and hasattr(vae, "post_quant_conv")
    )


def decode_latent_frames(vae, z: torch.Tensor) -> Iterator[torch.Tensor]:
    """Decode un-normalised latents ``z`` [1, C, F_lat, h, w] one latent frame at a time, as
    ``AutoencoderKLWan._decode`` does in one loop with its feature cache: yields [1, 3, n, H, W]
    in [-1, 1] (1 frame, then 4 at a time). Only for a VAE ``vae_streams`` accepts."""
    vae.clear_cache()
    try:
        hidden = vae.post_quant_conv(z)
        for index in range(hidden.shape[2]):
            vae._conv_idx = [0]
            kwargs = {"first_chunk": True} if index == 0 else {}
            chunk = vae.decoder(hidden[:, :, index : index + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, **kwargs)
            yield chunk.clamp(-1.0, 1.0)
    finally:
        vae.clear_cache()
