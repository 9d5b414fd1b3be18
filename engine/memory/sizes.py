"""What a model's parts take in memory, counted from its modules: weights as quantisation leaves
them (``weight_bytes``, bitsandbytes' exact int8 and NF4 storage), adapters (``lora_bytes``, the
hot-swap slot's ``slot_bytes``), and bytes for a message (``memory_size``). The memory model
(``framecast.engine.memory.model``) counts a job's weights with them, so a request that cannot fit
is refused before it starts.
"""

from __future__ import annotations

import math
import re

import torch

from framecast.engine.config import GiB, Quantize


def module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def quantized_linear_bytes(out_features: int, in_features: int, quantize: Quantize) -> int:
    """Device bytes of a linear's weight as bitsandbytes stores it after ``quantize_linears``:
    int8 one byte a weight and a float32 scale per output row; NF4 two weights a byte, a uint8
    absmax per 64 weights, double-quantised with a float32 absmax per 256 of those, and the two
    code books (16 and 256 float32) and offset."""
    n = out_features * in_features
    if Quantize(quantize) is Quantize.INT8:
        return n + 4 * out_features
    blocks = -(-n // 64)
    return -(-n // 2) + blocks + 4 * -(-blocks // 256) + 4 * (16 + 256 + 1)


def _is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) and hasattr(module, "in_features")


def weight_bytes(module: torch.nn.Module, quantize: Quantize = Quantize.NONE, compute_dtype: torch.dtype = torch.bfloat16,
                 quantized: str | None = None, keep: frozenset[str] = frozenset(), rounding=None) -> int:  # fmt: skip
    """Bytes of ``module``'s weights (parameters and buffers) with the linears under the submodule
    ``quantized`` ("" for all, None for none) stored as ``quantize`` leaves them, those named in
    ``keep`` excepted; linears already quantised count as ``quantize`` says, at ``compute_dtype``
    unquantised. LoRA layers are left out (``lora_bytes``). ``rounding(nbytes)``: applied per tensor."""
    quantize = Quantize(quantize)
    rounding = rounding or (lambda n: n)
    total, seen = 0, set()  # tied weights (UMT5's shared embedding) count once
    for name, sub in module.named_modules():
        parts = name.split(".")
        if any(part.startswith("lora_") for part in parts):
            continue
        tensors = [t for t in (*sub.parameters(recurse=False), *sub.buffers(recurse=False)) if id(t) not in seen]
        seen.update(id(t) for t in tensors)
        if not _is_linear(sub):
            total += sum(rounding(t.numel() * t.element_size()) for t in tensors)
            continue
        if not tensors:
            continue
        inside = quantized is not None and (quantized == "" or name == quantized or name.startswith(quantized + "."))
        weight = getattr(sub, "weight", None)
        width = weight.element_size() if weight is not None and weight.dtype.is_floating_point else compute_dtype.itemsize
        if inside and quantize is not Quantize.NONE and parts[-1] not in keep:
            total += rounding(quantized_linear_bytes(sub.out_features, sub.in_features, quantize))
            width = compute_dtype.itemsize  # the bias, cast to the compute dtype
        else:
            total += rounding(sub.out_features * sub.in_features * width)
        if getattr(sub, "bias", None) is not None:
            total += rounding(sub.out_features * width)
    return total


def lora_bytes(transformer, rank: int, slot: bool = True) -> int:
    """Values of a rank-``rank`` adapter on ``transformer``: lora_A [rank, in] and lora_B [out, rank]
    over the inference slot's targets (``slot``) or a training adapter's (multiply by the width)."""
    from framecast.engine.adapters.formats import TARGET_PATTERN, TRAINING_PATTERN

    pattern = re.compile(TARGET_PATTERN if slot else TRAINING_PATTERN)
    features = sum(m.in_features + m.out_features for name, m in transformer.named_modules()
                   if _is_linear(m) and "lora_" not in name
                   and pattern.fullmatch(name.replace("_orig_mod.", "").replace(".base_layer", "")))  # fmt: skip
    return features * rank


def slot_bytes(transformer, rank: int, dtype_bytes: int = 2) -> int:
    """The adapter hot-swap slot's size: rank-``rank`` A and B matrices over every adapter target."""
    return lora_bytes(transformer, rank, slot=True) * dtype_bytes


def memory_size(n: float) -> str:
    """Bytes for a message: GiB, or MiB below 1 GiB (a small model's figures stay readable)."""
    if not math.isfinite(n):
        return "inf"
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / (1 << 20):.2f} MiB"
