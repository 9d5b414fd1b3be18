"""Blend K overlapping windows of a video (latents or decoded frames) into one.

Window k covers frames [start_k, start_k + length_k). Its weight on a frame is 1 except
where it shares frames with a neighbour: over an overlap of O frames, position
i = 0..O-1, the later window weighs r((i+1)/(O+1)) and the earlier one 1 - that, with
r(x) = x ("linear") or 0.5 - 0.5*cos(pi*x) ("cosine"). Output frame = sum_k w_k * x_k /
sum_k w_k, accumulated in fp32, returned in the windows' dtype (uint8 rounded, clamped).

Every frame must be covered by one or two windows: starts strictly increase, each window
ends after the one before it, and no frame lies in three windows.

The Triton kernel reads each window element once and writes each output element once:
reads sum_k numel(window_k), writes numel(output); no torch.cat of the windows. The host
packs, per output frame, the addresses of the (up to) two windows covering it, the
frame's index inside each and the normalised weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .dispatch import tl, triton, tuning_configs, use_triton

RAMPS = ("linear", "cosine")
_BLEND_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.uint8)


@triton.autotune(
    configs=tuning_configs(
        [triton.Config({"BLOCK": b}, num_warps=w) for b, w in ((2048, 4), (1024, 4), (4096, 8), (8192, 8))]
    ),
    key=["outer", "T", "inner"],
)
@triton.jit
def _blend_kernel(
    out_ptr,  # [outer, T, inner] the windows' dtype
    table_ptr,  # [T, 2, 4] int64: per frame t, per covering window (a, then b or none):
    #             (base address, frames in it, t's index in it, fp32 bits of its weight)
    outer,
    T,
    inner,
    BLOCK: tl.constexpr,
    TO_UINT8: tl.constexpr,
):
    # reads one element of each covering window (sum_k numel(window_k) in all), writes one
    row = tl.program_id(0)  # (o, t) of the output
    o = row // T
    t = row % T
    x = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = x < inner
    dtype = out_ptr.dtype.element_ty
    entry = table_ptr + 8 * t
    # windows are [outer, frames, inner] with 16-byte aligned bases (checked on the host)
    window_a = tl.multiple_of(tl.load(entry).to(tl.pointer_type(dtype)), 16)
    frame_a = o * tl.load(entry + 1) + tl.load(entry + 2)
    weight_a = tl.load(entry + 3).to(tl.int32).to(tl.float32, bitcast=True)
    a = tl.load(window_a + frame_a * inner + x, mask=mask, other=0)
    acc = weight_a * a.to(tl.float32)
    weight_b = tl.load(entry + 7).to(tl.int32).to(tl.float32, bitcast=True)
    if weight_b > 0:
        window_b = tl.multiple_of(tl.load(entry + 4).to(tl.pointer_type(dtype)), 16)
        frame_b = o * tl.load(entry + 5) + tl.load(entry + 6)
        b = tl.load(window_b + frame_b * inner + x, mask=mask, other=0)
        acc += weight_b * b.to(tl.float32)
    if TO_UINT8:
        acc = tl.minimum(tl.maximum(tl.floor(acc + 0.5), 0.0), 255.0)
    tl.store(out_ptr + (o.to(tl.int64) * T + t) * inner + x, acc.to(dtype), mask=mask)


def _ramp(x: float, ramp: str) -> float:
    return x if ramp == "linear" else 0.5 - 0.5 * math.cos(math.pi * x)


def blend_weights(starts: Sequence[int], lengths: Sequence[int], ramp: str = "linear") -> list[torch.Tensor]:
    """Per-window, per-frame blend weights: a list of K fp32 CPU tensors of shape [length_k].

    Raises ValueError for a ramp not in RAMPS, unsorted starts, empty windows, a window
    ending inside its predecessor, or a frame covered by three windows.
    """
    starts, lengths = [int(s) for s in starts], [int(n) for n in lengths]
    if ramp not in RAMPS:
        raise ValueError(f"ramp must be one of {RAMPS} but is {ramp!r}")
    if len(starts) != len(lengths) or not starts:
        raise ValueError(f"starts and lengths must be non-empty and of equal length but are {starts} and {lengths}")
    if min(lengths) < 1:
        raise ValueError(f"lengths must be >= 1 but are {lengths}")
    ends = [s + n for s, n in zip(starts, lengths)]
    for k in range(1, len(starts)):
        if starts[k] <= starts[k - 1]:
            raise ValueError(f"starts must be strictly increasing but are {starts}")
        if ends[k] <= ends[k - 1]:
            raise ValueError(
                f"window {k} (frames {starts[k]}..{ends[k] - 1}) ends inside window {k - 1}; lengths={lengths}"
            )
        if k >= 2 and starts[k] < ends[k - 2]:
            raise ValueError(
                f"frame {starts[k]} lies in windows {k - 2}, {k - 1} and {k}; starts={starts}, lengths={lengths}"
            )
    weights = [torch.ones(n, dtype=torch.float32) for n in lengths]
    for k in range(1, len(starts)):
        overlap = ends[k - 1] - starts[k]
        for i in range(max(overlap, 0)):
            incoming = _ramp((i + 1) / (overlap + 1), ramp)
            weights[k][i] = incoming
            weights[k - 1][lengths[k - 1] - overlap + i] = 1.0 - incoming
    return weights


@dataclass(frozen=True)
class _Plan:
    outer: int  # elements before the frame dim
    inner: int  # elements after it
    total_frames: int
    out_shape: tuple[int, ...]
    starts: list[int]
    lengths: list[int]
    weights: list[torch.Tensor]  # per window [length_k] fp32, normalised: they sum to 1 per frame


def _plan(windows, starts, frame_dim, ramp, total_frames) -> _Plan:
    if len(windows) == 0:
        raise ValueError("windows must hold at least one tensor but is empty")
    if len(starts) != len(windows):
        raise ValueError(f"starts must give one start per window ({len(windows)}) but is {list(starts)}")
    first = windows[0]
    if not -first.dim() <= frame_dim < first.dim():
        raise ValueError(f"frame_dim must index a {first.dim()}-d window but is {frame_dim}")
    frame_dim %= first.dim()
    other_dims = first.shape[:frame_dim] + first.shape[frame_dim + 1 :]
    for k, window in enumerate(windows):
        if window.dim() != first.dim() or window.shape[:frame_dim] + window.shape[frame_dim + 1 :] != other_dims:
            raise ValueError(
                f"windows[{k}] has shape {tuple(window.shape)} but windows[0] has {tuple(first.shape)}; "
                f"only dim {frame_dim} (frames) may differ"
            )
        if window.dtype != first.dtype or window.device != first.device:
            raise ValueError(
                f"windows[{k}] is {window.dtype} on {window.device} but windows[0] is {first.dtype} on {first.device}"
            )
    if first.dtype not in _BLEND_DTYPES:
        raise ValueError(f"windows must be float32, float16, bfloat16 or uint8 but are {first.dtype}")
    starts = [int(s) for s in starts]
    if min(starts) < 0:
        raise ValueError(f"starts must be >= 0 but are {starts}")
    lengths = [w.shape[frame_dim] for w in windows]
    weights = blend_weights(starts, lengths, ramp)
    ends = [s + n for s, n in zip(starts, lengths)]
    total = ends[-1] if total_frames is None else int(total_frames)
    if ends[-1] > total:
        raise ValueError(f"total_frames is {total} but window {len(ends) - 1} ends at frame {ends[-1]}")
    weight_sum = torch.zeros(total, dtype=torch.float32)
    for start, weight in zip(starts, weights):
        weight_sum[start : start + len(weight)] += weight
    missing = (weight_sum == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(
            f"frames {missing} are covered by no window (starts={starts}, lengths={lengths}, total_frames={total})"
        )
    weights = [weight / weight_sum[start : start + len(weight)] for start, weight in zip(starts, weights)]
    before, after = first.shape[:frame_dim], first.shape[frame_dim + 1 :]
    return _Plan(math.prod(before), math.prod(after), total, (*before, total, *after), starts, lengths, weights)


def _check_out(out: torch.Tensor | None, plan: _Plan, like: torch.Tensor) -> torch.Tensor:
    if out is None:
        return torch.empty(plan.out_shape, dtype=like.dtype, device=like.device)
    if tuple(out.shape) != plan.out_shape or out.dtype != like.dtype or out.device != like.device:
        raise ValueError(
            f"out must be {like.dtype} {plan.out_shape} on {like.device} "
            f"but is {out.dtype} {tuple(out.shape)} on {out.device}"
        )
    return out


def blend_windows_reference(
    windows: Sequence[torch.Tensor],
    starts: Sequence[int],
    frame_dim: int,
    ramp: str = "linear",
    total_frames: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The plain PyTorch twin of ``blend_windows`` (same arguments, same result)."""
    plan = _plan(windows, starts, frame_dim, ramp, total_frames)
    device = windows[0].device
    acc = torch.zeros(plan.outer, plan.total_frames, plan.inner, dtype=torch.float32, device=device)
    # in window order, so a frame in two windows is (0 + w_a * a) + w_b * b, as in the kernel
    for window, start, weight in zip(windows, plan.starts, plan.weights):
        frames = window.reshape(plan.outer, -1, plan.inner).float()  # [outer, length_k, inner]
        acc[:, start : start + frames.shape[1]] += weight.to(device)[None, :, None] * frames
    if windows[0].dtype == torch.uint8:
        acc = torch.floor(acc + 0.5).clamp_(0, 255)
    result = acc.to(windows[0].dtype).reshape(plan.out_shape)
    return result if out is None else _check_out(out, plan, windows[0]).copy_(result)


def _blend_windows_triton(windows: Sequence[torch.Tensor], plan: _Plan, out: torch.Tensor) -> torch.Tensor:
    # windows: K x [outer, length_k, inner] once viewed so; out: [outer, T, inner]
    # The kernel's vector loads assume contiguous windows with 16-byte aligned bases:
    # torch allocations are; a view at an odd offset is copied.
    windows = [w.contiguous() for w in windows]
    windows = [w if w.data_ptr() % 16 == 0 else w.clone() for w in windows]
    covers = [[] for _ in range(plan.total_frames)]  # per frame: (window, index, weight), 1 or 2
    for k, (start, weight) in enumerate(zip(plan.starts, plan.weights)):
        for i, w in enumerate(weight.tolist()):
            covers[start + i].append((k, i, w))
    slots = [c if len(c) == 2 else [c[0], (*c[0][:2], 0.0)] for c in covers]  # b: none, weight 0
    slots = [slot for pair in slots for slot in pair]  # [T * 2] of (window, index, weight)
    table = torch.tensor([[windows[k].data_ptr(), plan.lengths[k], i, 0] for k, i, _ in slots], dtype=torch.int64)
    table[:, 3] = torch.tensor([w for *_, w in slots], dtype=torch.float32).view(torch.int32)  # the fp32 bits
    table = table.to(out.device)  # [T, 2, 4] as [T * 2, 4]: one small copy
    target = out if out.is_contiguous() else torch.empty(plan.out_shape, dtype=out.dtype, device=out.device)
    grid = lambda meta: (plan.outer * plan.total_frames, triton.cdiv(plan.inner, meta["BLOCK"]))  # noqa: E731
    _blend_kernel[grid](target, table, plan.outer, plan.total_frames, plan.inner, TO_UINT8=out.dtype == torch.uint8)
    return out if target is out else out.copy_(target)


def blend_windows(
    windows: Sequence[torch.Tensor],
    starts: Sequence[int],
    frame_dim: int,
    ramp: str = "linear",
    total_frames: int | None = None,
    out: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Blend overlapping windows along ``frame_dim`` into one video.

    windows: latents [C, f_k, h, w] (frame_dim=1) or frames [f_k, H, W, 3] (frame_dim=0),
    equal except in frame count; ``starts[k]``: window k's first output frame.
    ``total_frames``: output length (default: the last window's end). ``out``: optional
    preallocated output. Returns the blended tensor in the windows' dtype.
    Raises ValueError (naming the argument and value) on mismatched shapes, unsorted
    starts, uncovered frames or an unknown ramp.
    """
    plan = _plan(windows, starts, frame_dim, ramp, total_frames)
    if not use_triton(backend, *windows):
        return blend_windows_reference(windows, starts, frame_dim, ramp, total_frames, out)
    return _blend_windows_triton(windows, plan, _check_out(out, plan, windows[0]))
