"""Memory-efficient serving: quantisation, attention backend, offloading, memory planning.

- Quantisation replaces the transformer's block linears (and the text encoder's) with
  bitsandbytes int8 / NF4 layers in place, on any device; LoRA adapters then sit on top of
  the quantised layers (QLoRA-style) and are never fused into them.
- Offloading keeps components in host memory until they run: ``model`` moves whole
  components (encoders run once per job and leave the device), ``group`` streams the
  transformer's blocks through the device (diffusers' group offloading, CUDA streams).
- ``estimate_peak_bytes`` is the planner behind ``--max-vram``: weights resident on the
  device plus activations for the request's tokens, so a request that cannot fit is refused
  before it starts.
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from framecast.engine.compat import keep_in_fp32_modules
from framecast.engine.config import GiB, Attention, Offload, Quantize
from framecast.engine.errors import InvalidInput

log = logging.getLogger(__name__)
# int8 layers on the CPU compute in fp16 and say so on every call.
warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")


# Bytes per weight of a quantised linear, including its scales (NF4: 4 bits + one absmax per 64).
BYTES_PER_WEIGHT = {Quantize.NONE: None, Quantize.INT8: 1.0 + 4 / 4096, Quantize.NF4: 0.5 + 4 / 64}


# --- quantisation ---------------------------------------------------------------------------


def quantize_linears(
    module: torch.nn.Module, mode: Quantize, compute_dtype: torch.dtype, device, keep: frozenset[str] = frozenset()
) -> int:
    """Replace every ``nn.Linear`` under ``module`` by a bitsandbytes layer holding the same
    weights, quantised on ``device``; linears named in ``keep`` stay as they are. Returns how
    many were replaced."""
    mode = Quantize(mode)
    if mode is Quantize.NONE:
        return 0
    import bitsandbytes as bnb

    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or name in keep:
                continue
            # Quantised where the weight already lives: bitsandbytes quantises on the move to ``device``.
            weight = child.weight.data.to(torch.float16 if compute_dtype == torch.float16 else torch.bfloat16)
            if mode is Quantize.NF4:
                layer = bnb.nn.Linear4bit(
                    child.in_features, child.out_features, bias=child.bias is not None,
                    compute_dtype=compute_dtype, quant_type="nf4", quant_storage=torch.uint8,
                )
                layer.weight = bnb.nn.Params4bit(weight.float(), requires_grad=False, quant_type="nf4")
                # bitsandbytes repacks NF4 weights in place for an AVX512-bf16 CPU path at the first
                # no-grad call, which needs out_features % 32 == 0 and changes the layout training
                # then sees; keep one layout everywhere.
                layer.support_avx512bf16_for_cpu = False
            else:
                layer = bnb.nn.Linear8bitLt(
                    child.in_features, child.out_features, bias=child.bias is not None, has_fp16_weights=False
                )
                layer.weight = bnb.nn.Int8Params(weight.float(), requires_grad=False, has_fp16_weights=False)
            if child.bias is not None:
                layer.bias = torch.nn.Parameter(child.bias.data.to(compute_dtype), requires_grad=False)
            setattr(parent, name, layer.to(device))  # quantises on the move
            del child
            replaced += 1
    return replaced


def quantize_pipeline(pipe, mode: Quantize, compute_dtype: torch.dtype, device) -> dict[str, int]:
    """Quantise the transformer's blocks and the text encoder in place."""
    mode = Quantize(mode)
    if mode is Quantize.NONE:
        return {}
    counts = {"transformer": quantize_linears(pipe.transformer.blocks, mode, compute_dtype, device)}
    text_encoder = getattr(pipe, "text_encoder", None)
    if text_encoder is not None:
        # transformers' "keep in full precision" layers stay unquantised: UMT5's FFN output
        # projection ``wo`` casts its input to the weight's dtype, which for NF4 is the uint8
        # storage, and would turn every prompt embedding into noise.
        counts["text_encoder"] = quantize_linears(text_encoder.encoder, mode, compute_dtype, device, keep_in_fp32_modules(text_encoder))
    log.info("quantised to %s: %s linears", mode.value, counts)
    return counts


# --- attention --------------------------------------------------------------------------------


def xformers_usable(device: torch.device) -> bool:
    """True when xformers imports and its kernels run for this torch on ``device``."""
    if device.type != "cuda":
        return False
    try:
        import xformers.ops

        q = torch.randn(1, 8, 1, 64, device=device, dtype=torch.float16)
        xformers.ops.memory_efficient_attention(q, q, q)
        return True
    except Exception as exc:  # missing, built for another torch/CUDA, or no kernel for this GPU
        log.info("xformers not usable here: %s", exc)
        return False


def select_attention(transformer, requested: Attention, device: torch.device) -> str:
    """Set the transformer's attention backend; returns the one actually in effect."""
    requested = Attention(requested)
    if requested is Attention.XFORMERS and not xformers_usable(device):
        raise InvalidInput("attention", "xformers", f"is not usable on {device} (xformers missing or without kernels)")
    if requested is Attention.XFORMERS or (requested is Attention.AUTO and xformers_usable(device)):
        transformer.set_attention_backend("xformers")
        return "xformers"
    return "sdpa"  # diffusers' default dispatch: torch.nn.functional.scaled_dot_product_attention


# --- offloading -------------------------------------------------------------------------------


class Placement:
    """Where the pipeline's components live between uses, under an offload policy.

    ``with placement.using("text_encoder"):`` puts a component on the device for the block;
    under offload it goes back to host memory afterwards. The transformer under ``group``
    offload is managed by diffusers' hooks and is never moved whole.
    """

    def __init__(self, pipe, device: torch.device, offload: Offload):
        self.pipe = pipe
        self.device = device
        self.offload = Offload(offload)
        self.host = torch.device("cpu")
        if self.offload is Offload.NONE:
            pipe.to(device)
            return
        for name in ("text_encoder", "image_encoder", "vae", "transformer"):
            self._move(name, self.host)
        if self.offload is Offload.GROUP:
            from diffusers.hooks import apply_group_offloading

            apply_group_offloading(
                pipe.transformer, onload_device=device, offload_device=self.host, offload_type="block_level",
                num_blocks_per_group=1, use_stream=device.type == "cuda",
            )

    def _move(self, name: str, where: torch.device) -> None:
        module = getattr(self.pipe, name, None)
        if module is None or (name == "transformer" and self.offload is Offload.GROUP):
            return
        module.to(where)

    @contextmanager
    def using(self, *names: str):
        if self.offload is Offload.NONE:
            yield
            return
        for name in names:
            self._move(name, self.device)
        try:
            yield
        finally:
            for name in names:
                self._move(name, self.host)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


# --- memory planning --------------------------------------------------------------------------


# Measured activations over the estimate below, from the Wan2.1-I2V-14B architecture at 49 frames
# of 832x480 on an H200 (bench/results/clip.jsonl): 8.54 GiB generating against 3.37 estimated
# (the VAE's decode at full resolution, which the per-token model leaves out, is most of it) and
# 18.69 GiB training against 13.76. Rounded up: a budget is better refused than overrun.
ACTIVATION_CALIBRATION = {False: 2.6, True: 1.4}  # {training: factor}


@dataclass(frozen=True)
class MemoryPlan:
    weights_bytes: int  # resident on the device while the transformer runs (the other components too, without offload)
    activation_bytes: int
    tokens: int

    @property
    def peak_bytes(self) -> int:
        return self.weights_bytes + self.activation_bytes


def module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def _quantized_bytes(module: torch.nn.Module, quantize: Quantize, dtype_bytes: int, keep=frozenset()) -> int:
    """``module``'s bytes once ``quantize`` has replaced its linears (as stored if it already has)."""
    quantize = Quantize(quantize)
    stored = module_bytes(module)
    if quantize is Quantize.NONE or _is_quantized(module):
        return stored
    linear = sum(m.weight.numel() for name, m in module.named_modules()
                 if type(m) is torch.nn.Linear and name.rsplit(".", 1)[-1] not in keep)  # fmt: skip
    return int(stored - linear * dtype_bytes + linear * BYTES_PER_WEIGHT[quantize])


def component_bytes(pipe, quantize: Quantize, offload: Offload, dtype_bytes: int = 2) -> tuple[int, int]:
    """(resident, visiting): device memory the pipeline's other components (text and image
    encoders, VAE; the text encoder quantised with the transformer) hold while the transformer
    runs, and the largest that visits the device alone. Without offloading all are resident;
    under ``model`` or ``group`` offload none is, and each visits alone."""
    text_encoder = getattr(pipe, "text_encoder", None)
    sizes = [module_bytes(m) for m in (getattr(pipe, "image_encoder", None), pipe.vae) if m is not None]
    if text_encoder is not None:
        sizes.append(_quantized_bytes(text_encoder, quantize, dtype_bytes, keep_in_fp32_modules(text_encoder)))
    if Offload(offload) is Offload.NONE:
        return sum(sizes), 0
    return 0, max(sizes, default=0)


def slot_bytes(transformer, rank: int, dtype_bytes: int = 2) -> int:
    """The adapter hot-swap slot's size: rank-``rank`` A and B matrices over every block linear."""
    features = sum(m.in_features + m.out_features for name, m in transformer.blocks.named_modules()
                   if "lora_" not in name and hasattr(m, "in_features") and not list(m.children()))  # fmt: skip
    return features * rank * dtype_bytes


def estimate_peak_bytes(
    transformer,
    quantize: Quantize,
    offload: Offload,
    frames: int,
    height: int,
    width: int,
    training: bool,
    rank: int = 16,
    dtype_bytes: int = 2,
    vae_spatial: int = 8,
    resident_bytes: int = 0,
    visiting_bytes: int = 0,
) -> MemoryPlan:
    """Estimate the device memory a clip needs: a planning figure, not a measurement.

    Weights: the transformer as stored (already quantised, or in ``dtype_bytes`` if
    ``quantize`` is still to be applied); under ``group`` offload only two blocks at a time;
    plus ``resident_bytes`` on the device beside it (``component_bytes``, the adapter slot),
    or ``visiting_bytes``, a component on the device alone, when that is more. Activations:
    per token, the hidden state in flight through one block (norms, q/k/v, attention output,
    FFN intermediate) with memory-efficient attention; training keeps one block input per
    layer (gradient checkpointing) plus one block's full activations for the backward pass,
    and the LoRA optimiser state; each scaled by ``ACTIVATION_CALIBRATION``, measured on the 14B.
    """
    cfg = transformer.config
    hidden = cfg.num_attention_heads * cfg.attention_head_dim
    patch = cfg.patch_size
    latent_frames = (frames - 1) // 4 + 1
    tokens = latent_frames * (height // vae_spatial // patch[1]) * (width // vae_spatial // patch[2])
    params = sum(p.numel() for p in transformer.parameters())
    per_weight = BYTES_PER_WEIGHT[Quantize(quantize)] or dtype_bytes
    stored = module_bytes(transformer)
    weights = stored if Quantize(quantize) is Quantize.NONE or _is_quantized(transformer) else int(params * per_weight)
    if Offload(offload) is Offload.GROUP:
        weights = int(weights * min(1.0, 2 / max(1, cfg.num_layers)))
    # One block in flight: ~6 hidden-sized tensors plus the FFN intermediate, in dtype_bytes.
    block_activation = tokens * (6 * hidden + cfg.ffn_dim) * dtype_bytes
    activation = 2 * block_activation  # cond + uncond passes run one after the other; allocator slack
    if training:
        lora_params = cfg.num_layers * 10 * rank * 2 * hidden  # ~10 targeted linears per block
        activation = (
            cfg.num_layers * tokens * hidden * dtype_bytes  # checkpointed block inputs
            + 3 * block_activation  # recomputed block forward + its backward
            + lora_params * 4 * 4  # fp32 weights, grads, two AdamW moments
        )
    activation = int(activation * ACTIVATION_CALIBRATION[bool(training)])
    weights = max(weights + resident_bytes, visiting_bytes)
    return MemoryPlan(weights_bytes=int(weights), activation_bytes=int(activation), tokens=tokens)


def _is_quantized(module: torch.nn.Module) -> bool:
    return any(type(m).__module__.startswith("bitsandbytes") for m in module.modules())


def memory_size(n: float) -> str:
    """Bytes for a message: GiB, or MiB below 1 GiB (a small model's figures stay readable)."""
    if not math.isfinite(n):
        return "inf"
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / (1 << 20):.2f} MiB"
