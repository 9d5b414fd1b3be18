"""Memory-efficient serving: quantisation, attention backend, offloading.

- Quantisation replaces the transformer's block linears (and the text encoder's) with
  bitsandbytes int8 / NF4 layers in place, on any device; LoRA adapters then sit on top of
  the quantised layers (QLoRA-style) and are never fused into them.
- Offloading keeps components in host memory until they run: ``model`` moves whole
  components (encoders run once per job and leave the device), ``group`` streams the
  transformer's blocks through the device (diffusers' group offloading, CUDA streams).
- What the weights then take is counted in ``framecast.engine.memory.sizes``, for the memory
  model behind ``--max-vram``.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager

import torch

from framecast.engine.compat import keep_in_fp32_modules
from framecast.engine.config import Attention, Offload, Quantize
from framecast.engine.errors import InvalidInput

log = logging.getLogger(__name__)
# int8 layers compute in fp16 and say so on every call (a warning, or bitsandbytes' log since 0.45).
warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
logging.getLogger("bitsandbytes.autograd._functions").addFilter(
    lambda record: not record.getMessage().startswith("MatMul8bitLt: inputs will be cast")
)


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
