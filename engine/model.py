"""Loading the Wan2.1 image-to-video base model from a local diffusers directory.

``load_pipeline`` is the one path every model takes: a local diffusers directory of
Wan2.1-I2V-14B-480P on a GPU, the built-in toy model shipped in ``assets/``, or a directory
the toy lab's builders wrote (``framecast.engine.toy.architectures``), on any device.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from framecast.engine.errors import InvalidInput

log = logging.getLogger(__name__)


def builtin_model_dir() -> Path:
    """The shipped toy model: Wan2.1 I2V's classes, shrunk and trained on the toy world (fp16,
    a few MB; ``framecast.engine.toy.train`` made it). The demo's default model."""
    return Path(__file__).resolve().parent / "assets" / "toy-wan-i2v"


WAN_480P_SIZE = (480, 832)  # (height, width) Wan2.1-I2V-14B-480P works at, the pipeline's default size
SPEC_FILES = ("framecast_toy.json", "framecast_tiny.json")  # the sizes framecast's own models were made for


def native_size(model_dir: str | Path) -> tuple[int, int]:
    """(height, width) the model was made for: what framecast's own models record, else the
    480P size Wan2.1's pipeline works at."""
    for name in SPEC_FILES:
        path = Path(model_dir) / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        spec = data.get("spec", data) if isinstance(data, dict) else {}
        if "height" in spec and "width" in spec:
            return int(spec["height"]), int(spec["width"])
        if "size" in spec:
            return int(spec["size"]), int(spec["size"])
    return WAN_480P_SIZE


def model_limits(pipe, model_dir: str | Path):
    """The working grid's limits for a loaded pipeline (``framecast.engine.footage.grid.ModelLimits``): its
    native size, its spatial factor (the VAE's times the patch), and how far its rotary position
    embeddings reach in space and time."""
    from framecast.engine.footage.grid import ModelLimits
    from framecast.engine.method.windows import VAE_TEMPORAL

    config = pipe.transformer.config
    patch = int(config.patch_size[1])
    factor = int(pipe.vae_scale_factor_spatial) * patch
    positions = int(getattr(config, "rope_max_seq_len", 1024))
    height, width = native_size(model_dir)
    return ModelLimits(width, height, factor, positions * factor, (positions - 1) * VAE_TEMPORAL + 1)


def check_model_dir(model_dir: str | Path) -> dict:
    """The ``model_index.json`` of a diffusers WanImageToVideoPipeline directory, read without
    loading a weight: InvalidInput naming ``model`` when the directory is not one or lacks a
    component its index names (a partial copy), so a server refuses it before loading for minutes."""
    model_dir = Path(model_dir)
    if not (model_dir / "model_index.json").is_file():
        raise InvalidInput("model", str(model_dir), "is not a diffusers directory: model_index.json is missing")
    try:
        index = json.loads((model_dir / "model_index.json").read_text())
    except (OSError, ValueError) as error:
        raise InvalidInput("model", str(model_dir), f"has a model_index.json that cannot be read: {error}") from None
    name = index.get("_class_name") if isinstance(index, dict) else None
    if name != "WanImageToVideoPipeline":
        raise InvalidInput("model", str(model_dir), f"holds a {name}, not a WanImageToVideoPipeline")
    missing = [
        component for component, spec in index.items()
        if isinstance(spec, list) and spec and spec[0] is not None and not (model_dir / component).is_dir()
    ]  # fmt: skip
    if missing:
        raise InvalidInput("model", str(model_dir), f"lacks components model_index.json names: {', '.join(missing)}")
    return index


def load_pipeline(model_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """Load a WanImageToVideoPipeline from a local diffusers directory (never from a hub).

    The transformer and VAE weights stay frozen; adapters are added on top.
    """
    import diffusers
    import torch
    import transformers

    from framecast.engine.compat import use_pil_clip_processor

    use_pil_clip_processor()  # before diffusers' Wan pipeline module imports the name
    from diffusers import WanImageToVideoPipeline

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    model_dir = Path(model_dir)
    check_model_dir(model_dir)
    pipe = WanImageToVideoPipeline.from_pretrained(model_dir, dtype=dtype or torch.float32, local_files_only=True)
    # The VAE runs in fp32 even when the rest is bf16: it is small and its decode is sensitive.
    if pipe.vae.dtype != torch.float32:
        pipe.vae.to(torch.float32)
    pipe.to(device)
    for module in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.image_encoder):
        module.requires_grad_(False)
        module.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
