"""Weighted flow-matching loss with its gradient fused into the forward pass.

    loss = sum(w * (pred - target)^2) / (C * sum(w))        w: [B, 1, F, H, W] over C channels
    d loss / d pred = 2 * w * (pred - target) / (C * sum(w))
    all-zero w -> loss 0 and gradient 0 (never NaN). Weights are expected to be >= 0.

Training never materialises ``pred - target``: one pass over pred and target adds up the
loss and writes the gradient (in pred's dtype); backward only rescales it by grad_output,
and skips even that when grad_output is 1 (what ``loss.backward()`` passes), without a
host sync: the kernel reads grad_output. Two launches forward, one backward. The loss is
summed with fp32 atomics, so its last bits may vary run to run; the gradient does not.
Gradients with respect to target, noise, x0 and weight are not computed (None): they
are data in flow matching. ``masked_flow_loss_from_noise`` forms target = noise - x0
inside the kernel (in fp32), saving the pass that would write target.

Traffic, in elements (N = B*C*F*H*W, M = N/C = weight elements):
    weight sum   reads M
    main pass    reads 2N + M (3N + M from noise), writes N (gradient)
    backward     reads nothing when grad_output == 1, else reads N, writes N
The alternative, writing an unnormalised gradient and rescaling it once sum(w) is known,
costs 2N more instead of M: the first cheap pass over the C-times-smaller weight wins.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .dispatch import tl, triton, tuning_configs, use_triton

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)  # fp64: for gradcheck
_TILE = 2048  # elements of pred per program in the main pass: [C_PAD, BLOCK_S]
_WEIGHT_BLOCK = 1024
_WEIGHT_PARTS = 128  # at most this many weight partial sums (each main program reduces them)
_SCALE_BLOCK = 4096


@triton.jit
def _weight_sum_kernel(
    weight_ptr,  # [M] weight, any float dtype
    part_ptr,  # [num_programs] fp32 partial sums
    loss_ptr,  # [] fp32, zeroed here for the main pass to add into
    M,
    BLOCK: tl.constexpr,
):
    # reads M, writes num_programs: grid-stride so the partial count stays <= _WEIGHT_PARTS
    pid = tl.program_id(0)
    if pid == 0:
        tl.store(loss_ptr, 0.0)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(pid * BLOCK, M, tl.num_programs(0) * BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(weight_ptr + offs, mask=offs < M, other=0.0).to(tl.float32)
    tl.store(part_ptr + pid, tl.sum(acc, axis=0))


@triton.autotune(
    configs=tuning_configs([triton.Config({}, num_warps=w) for w in (4, 8, 2)]),
    key=["C", "S"],
    reset_to_zero=["loss_ptr"],  # tuning runs add into the loss too
)
@triton.jit
def _masked_loss_kernel(
    pred_ptr,  # [B, C, S] S = F*H*W
    target_ptr,  # [B, C, S] target, or noise when FROM_NOISE
    x0_ptr,  # [B, C, S] clean latents when FROM_NOISE (else unused)
    weight_ptr,  # [B, S]
    weight_part_ptr,  # [num_weight_parts] fp32, from _weight_sum_kernel
    grad_ptr,  # [B, C, S] pred's dtype, written when WRITE_GRAD
    loss_ptr,  # [] fp32: each program adds its sum(w * (pred - target)^2) / (C * sum(w))
    C,
    S,
    num_weight_parts,
    C_PAD: tl.constexpr,
    BLOCK_S: tl.constexpr,
    WEIGHT_PARTS: tl.constexpr,
    FROM_NOISE: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
):
    # reads 2N + M (3N + M from noise), writes N when WRITE_GRAD
    pid_s = tl.program_id(0)
    b = tl.program_id(1)
    # Every program reduces the same partials in the same order: one normaliser, no sync.
    parts = tl.arange(0, WEIGHT_PARTS)
    weight_total = tl.sum(
        tl.load(weight_part_ptr + parts, mask=parts < num_weight_parts, other=0.0), axis=0
    )
    # loss = sum(w * d^2) / (C * sum(w)) and d loss / d pred = 2 * w * d / (C * sum(w)),
    # d = pred - target; both 0 where sum(w) == 0
    safe_total = tl.where(weight_total > 0, weight_total, 1.0)
    loss_scale = tl.where(weight_total > 0, 1.0 / (C * safe_total), 0.0)

    s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    c = tl.arange(0, C_PAD)
    s_in = s < S
    mask = (c[:, None] < C) & s_in[None, :]
    w = tl.load(weight_ptr + b.to(tl.int64) * S + s, mask=s_in, other=0.0).to(tl.float32)
    batch = b.to(tl.int64) * C * S
    offs = c[:, None] * S + s[None, :]  # [C_PAD, BLOCK_S] within one batch element
    pred = tl.load(pred_ptr + batch + offs, mask=mask, other=0.0).to(tl.float32)
    if FROM_NOISE:
        noise = tl.load(target_ptr + batch + offs, mask=mask, other=0.0).to(tl.float32)
        x0 = tl.load(x0_ptr + batch + offs, mask=mask, other=0.0).to(tl.float32)
        target = noise - x0
    else:
        target = tl.load(target_ptr + batch + offs, mask=mask, other=0.0).to(tl.float32)
    diff = pred - target
    weighted = w[None, :] * diff
    # fp32 atomics in arbitrary order: the loss's last bits may vary run to run (the gradient does not)
    tl.atomic_add(loss_ptr, tl.sum(weighted * diff) * loss_scale)
    if WRITE_GRAD:
        grad = weighted * (2.0 * loss_scale)
        tl.store(grad_ptr + batch + offs, grad.to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _scale_grad_kernel(
    grad_ptr,  # [N] in place
    grad_output_ptr,  # [] the loss's incoming gradient
    N,
    BLOCK: tl.constexpr,
):
    # reads 1 scalar per program; reads N, writes N only when grad_output != 1
    g = tl.load(grad_output_ptr).to(tl.float32)
    if g != 1.0:
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        grad = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(grad_ptr + offs, (grad * g).to(grad_ptr.dtype.element_ty), mask=mask)


def _check_inputs(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, x0=None) -> None:
    if pred.dim() != 5:
        raise ValueError(f"pred must be [B, C, F, H, W] but has shape {tuple(pred.shape)}")
    if pred.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"pred must be float32, float16, bfloat16 or float64 but is {pred.dtype}")
    others = {"target": target} if x0 is None else {"noise": target, "x0": x0}
    for name, tensor in others.items():
        if tensor.shape != pred.shape:
            raise ValueError(f"{name} must have pred's shape {tuple(pred.shape)} but has {tuple(tensor.shape)}")
    b, _, f, h, w = pred.shape
    if weight.shape != (b, 1, f, h, w):
        raise ValueError(f"weight must have shape {(b, 1, f, h, w)} but has {tuple(weight.shape)}")
    for name, tensor in {**others, "weight": weight}.items():
        if not tensor.dtype.is_floating_point:
            raise ValueError(f"{name} must be a float tensor but is {tensor.dtype}")
        if tensor.device != pred.device:
            raise ValueError(f"{name} is on {tensor.device} but pred is on {pred.device}")


def masked_flow_loss_reference(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The plain PyTorch twin of ``masked_flow_loss`` (autograd, fp32 accumulation)."""
    # pred, target: [B, C, F, H, W]; weight: [B, 1, F, H, W]
    _check_inputs(pred, target, weight)
    acc = torch.promote_types(pred.dtype, torch.float32)  # fp64 stays fp64 (gradcheck)
    w = weight.to(acc)
    weight_total = w.sum()
    # a denominator of 1 when every weight is 0: the numerator and its gradient are 0 then
    safe_total = torch.where(weight_total > 0, weight_total, torch.ones_like(weight_total))
    return (w * (pred.to(acc) - target.to(acc)).square()).sum() / (pred.shape[1] * safe_total)


def masked_flow_loss_from_noise_reference(
    pred: torch.Tensor, noise: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """``masked_flow_loss_reference`` with target = noise - x0 formed in fp32."""
    _check_inputs(pred, noise, weight, x0)
    acc = torch.promote_types(pred.dtype, torch.float32)
    return masked_flow_loss_reference(pred, noise.to(acc) - x0.to(acc), weight)


def _masked_loss_forward(
    pred: torch.Tensor,
    target: torch.Tensor,
    x0: torch.Tensor | None,
    weight: torch.Tensor,
    write_grad: bool,
    grad: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the two forward kernels; returns (loss fp32 [], grad in pred's dtype or None).

    ``grad``: an optional preallocated [B, C, F, H, W] buffer (tests poison it first).
    """
    b, c, f, h, w = pred.shape
    s = f * h * w
    from_noise = x0 is not None
    pred, target, weight = pred.contiguous(), target.contiguous(), weight.contiguous()
    x0 = x0.contiguous() if from_noise else pred  # an unused pointer unless FROM_NOISE
    if write_grad and grad is None:
        grad = torch.empty_like(pred)
    device = pred.device
    if pred.numel() == 0:  # nothing to launch: the loss of no elements is 0, like all-zero weights
        return torch.zeros((), device=device), grad.zero_() if write_grad else None

    m = b * s
    num_weight_parts = min(triton.cdiv(m, _WEIGHT_BLOCK), _WEIGHT_PARTS)
    weight_parts = torch.empty(num_weight_parts, dtype=torch.float32, device=device)
    loss = torch.empty((), dtype=torch.float32, device=device)
    _weight_sum_kernel[(num_weight_parts,)](weight, weight_parts, loss, m, BLOCK=_WEIGHT_BLOCK, num_warps=4)

    c_pad = triton.next_power_of_2(c)
    block_s = max(16, _TILE // c_pad)
    _masked_loss_kernel[(triton.cdiv(s, block_s), b)](
        pred, target, x0, weight, weight_parts, grad if write_grad else pred, loss,
        c, s, num_weight_parts,
        C_PAD=c_pad, BLOCK_S=block_s, WEIGHT_PARTS=_WEIGHT_PARTS,
        FROM_NOISE=from_noise, WRITE_GRAD=write_grad,
    )  # fmt: skip
    return loss, grad if write_grad else None


def _scale_grad_(grad: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    n = grad.numel()
    if n:
        _scale_grad_kernel[(triton.cdiv(n, _SCALE_BLOCK),)](grad, grad_output.float(), n, BLOCK=_SCALE_BLOCK)
    return grad


class MaskedFlowLoss(torch.autograd.Function):
    """Fused weighted flow-matching loss; inputs (pred, target_or_noise, x0 or None, weight)."""

    @staticmethod
    def forward(ctx, pred, target, x0, weight):
        loss, grad = _masked_loss_forward(pred, target, x0, weight, write_grad=ctx.needs_input_grad[0])
        ctx.grad_pred = grad
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        grad = ctx.grad_pred
        if grad is None:
            raise RuntimeError("masked_flow_loss keeps one gradient buffer: backward can run once per forward")
        ctx.grad_pred = None  # scaled in place below; a second backward would see it scaled
        # target, x0 and weight are data: no gradient flows to them
        return _scale_grad_(grad, grad_output), None, None, None


def masked_flow_loss(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, *, backend: str = "auto"
) -> torch.Tensor:
    """Weighted flow-matching loss sum(weight * (pred - target)^2) / (C * sum(weight)).

    pred, target: [B, C, F, H, W] fp32, fp16 or bf16 (fp64 accepted; the kernel accumulates
    in fp32); weight: [B, 1, F, H, W] >= 0, fp32 or pred's dtype. Returns an fp32 scalar
    (fp64 from the reference for fp64 inputs), 0 when weight is all 0. The gradient flows
    to ``pred`` only. ``backend``: "auto" | "triton" | "reference" (``kernels.dispatch``).
    Raises ValueError on mismatched shapes, non-float dtypes or mixed devices.
    """
    _check_inputs(pred, target, weight)
    if use_triton(backend, pred, target, weight):
        return MaskedFlowLoss.apply(pred, target, None, weight)
    return masked_flow_loss_reference(pred, target, weight)


def masked_flow_loss_from_noise(
    pred: torch.Tensor, noise: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor, *, backend: str = "auto"
) -> torch.Tensor:
    """``masked_flow_loss(pred, noise - x0, weight)`` without materialising noise - x0."""
    _check_inputs(pred, noise, weight, x0)
    if use_triton(backend, pred, noise, x0, weight):
        return MaskedFlowLoss.apply(pred, noise, x0, weight)
    return masked_flow_loss_from_noise_reference(pred, noise, x0, weight)
