"""The fused masked flow loss against its PyTorch reference, run by Triton's CPU interpreter.

Tolerances: the loss is accumulated in fp32 by both, from the same inputs, so it matches to
rtol 1e-5 in every dtype. The gradient is stored in pred's dtype: fp32 to rtol 1e-5,
fp16 to one fp16 ulp (rtol 1e-3), bf16 to one bf16 ulp (rtol 1e-2; the interpreter also
truncates fp32 -> bf16 where GPUs round to nearest).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import pytest
import torch

from framecast.kernels import (
    dispatch,
    masked_flow_loss,
    masked_flow_loss_from_noise,
    masked_flow_loss_from_noise_reference,
    masked_flow_loss_reference,
    use_triton,
)
from framecast.kernels.masked_loss import _masked_loss_forward

needs_triton = pytest.mark.skipif(
    not (dispatch.HAVE_TRITON and dispatch.TRITON_INTERPRETED and dispatch.interpret_requested()),
    reason="needs triton imported under TRITON_INTERPRET=1 (run `pytest tests/kernels` on its own)",
)

GRAD_TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-8),
    torch.float16: dict(rtol=1e-3, atol=1e-6),
    torch.bfloat16: dict(rtol=1e-2, atol=1e-6),
}
LOSS_TOL = dict(rtol=1e-5, atol=1e-7)
SHAPES = [(2, 5, 3, 11, 13), (1, 16, 2, 7, 9), (3, 3, 1, 5, 33)]  # odd sizes, B > 1, S > BLOCK_S


def _inputs(shape, dtype, weight_dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b, _, f, h, w = shape
    pred = torch.randn(shape, generator=gen).to(dtype)
    target = torch.randn(shape, generator=gen).to(dtype)
    # an edit mask with soft edges: 0 (ignored), 1 (keep) and 2.5 (edit) with a ramp between
    weight = torch.rand(b, 1, f, h, w, generator=gen) * 2.5
    weight[weight < 0.5] = 0
    return pred, target, weight.to(weight_dtype)


def _reference_grad(loss_fn, pred, *args, grad_output=1.0):
    pred = pred.detach().requires_grad_()
    loss = loss_fn(pred, *args)
    (grad,) = torch.autograd.grad(loss, pred, torch.tensor(grad_output, dtype=loss.dtype))
    return loss.detach(), grad


@needs_triton
@pytest.mark.parametrize("dtype", list(GRAD_TOL))
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_writes_loss_and_every_gradient_element(shape, dtype):
    pred, target, weight = _inputs(shape, dtype)
    grad = torch.full_like(pred, float("nan"))  # poison: an unwritten element fails
    loss, grad = _masked_loss_forward(pred, target, None, weight, write_grad=True, grad=grad)
    ref_loss, ref_grad = _reference_grad(masked_flow_loss_reference, pred, target, weight)
    assert loss.dtype == torch.float32 and loss.shape == ()
    torch.testing.assert_close(loss, ref_loss, **LOSS_TOL)
    assert not grad.isnan().any()
    torch.testing.assert_close(grad, ref_grad, **GRAD_TOL[dtype])


@needs_triton
@pytest.mark.parametrize("dtype", list(GRAD_TOL))
@pytest.mark.parametrize("grad_output", [1.0, 3.0])
def test_autograd_matches_reference(dtype, grad_output):
    pred, target, weight = _inputs((2, 5, 3, 11, 13), dtype, weight_dtype=dtype, seed=1)
    pred.requires_grad_()
    loss = masked_flow_loss(pred, target, weight, backend="triton")
    (grad,) = torch.autograd.grad(loss, pred, torch.tensor(grad_output))
    ref_loss, ref_grad = _reference_grad(masked_flow_loss_reference, pred, target, weight, grad_output=grad_output)
    torch.testing.assert_close(loss.detach(), ref_loss, **LOSS_TOL)
    # grad_output != 1 rescales the stored gradient: one more rounding in pred's dtype
    tol = GRAD_TOL[dtype] if dtype == torch.float32 else {k: 2 * v for k, v in GRAD_TOL[dtype].items()}
    torch.testing.assert_close(grad, ref_grad, **tol)


@needs_triton
@pytest.mark.parametrize("dtype", list(GRAD_TOL))
def test_from_noise_forms_the_target_in_the_kernel(dtype):
    pred, noise, weight = _inputs((2, 4, 3, 9, 7), dtype, seed=2)
    x0 = torch.randn(noise.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    grad = torch.full_like(pred, float("nan"))
    loss, grad = _masked_loss_forward(pred, noise, x0, weight, write_grad=True, grad=grad)
    ref_loss, ref_grad = _reference_grad(masked_flow_loss_from_noise_reference, pred, noise, x0, weight)
    torch.testing.assert_close(loss, ref_loss, **LOSS_TOL)
    torch.testing.assert_close(grad, ref_grad, **GRAD_TOL[dtype])
    pred.requires_grad_()
    public = masked_flow_loss_from_noise(pred, noise, x0, weight, backend="triton")
    torch.testing.assert_close(public.detach(), ref_loss, **LOSS_TOL)


@needs_triton
def test_all_masked_is_the_plain_mse():
    pred, target, _ = _inputs((2, 3, 2, 5, 7), torch.float32, seed=4)
    weight = torch.ones(2, 1, 2, 5, 7)
    pred.requires_grad_()
    loss = masked_flow_loss(pred, target, weight, backend="triton")
    (grad,) = torch.autograd.grad(loss, pred)
    torch.testing.assert_close(loss.detach(), torch.nn.functional.mse_loss(pred, target).detach(), **LOSS_TOL)
    torch.testing.assert_close(grad, 2 * (pred - target).detach() / pred.numel(), **GRAD_TOL[torch.float32])


@needs_triton
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_nothing_masked_gives_zero_loss_and_gradient(backend):
    pred, target, _ = _inputs((2, 3, 2, 5, 7), torch.bfloat16, seed=5)
    pred.requires_grad_()
    loss = masked_flow_loss(pred, target, torch.zeros(2, 1, 2, 5, 7), backend=backend)
    (grad,) = torch.autograd.grad(loss, pred)
    assert loss.item() == 0.0
    assert not grad.isnan().any() and (grad == 0).all()


@needs_triton
def test_binary_mask_averages_over_masked_elements_only():
    pred, target, _ = _inputs((1, 4, 3, 6, 5), torch.float32, seed=6)
    mask = torch.zeros(1, 1, 3, 6, 5)
    mask[..., 1:4, 2:] = 1
    loss = masked_flow_loss(pred, target, mask, backend="triton")
    inside = mask.expand_as(pred).bool()
    torch.testing.assert_close(loss, ((pred - target)[inside] ** 2).mean(), **LOSS_TOL)


@needs_triton
def test_weight_sum_pass_with_many_partials():
    # B*F*H*W = 160,000 > 128 partials x 1024: the weight pass strides over its input
    pred, target, weight = _inputs((1, 1, 5, 160, 200), torch.float32, seed=7)
    grad = torch.full_like(pred, float("nan"))
    loss, grad = _masked_loss_forward(pred, target, None, weight, write_grad=True, grad=grad)
    ref_loss, ref_grad = _reference_grad(masked_flow_loss_reference, pred, target, weight)
    torch.testing.assert_close(loss, ref_loss, **LOSS_TOL)
    torch.testing.assert_close(grad, ref_grad, **GRAD_TOL[torch.float32])


@needs_triton
def test_without_grad_the_gradient_is_not_written():
    pred, target, weight = _inputs((1, 3, 2, 5, 7), torch.float32, seed=8)
    loss, grad = _masked_loss_forward(pred, target, None, weight, write_grad=False)
    assert grad is None
    torch.testing.assert_close(loss, masked_flow_loss_reference(pred, target, weight), **LOSS_TOL)
    with torch.no_grad():
        masked_flow_loss(pred.requires_grad_(), target, weight, backend="triton")


@needs_triton
def test_gradient_flows_through_a_sum_of_losses_and_noncontiguous_pred():
    pred, target, weight = _inputs((2, 3, 4, 5, 7), torch.float32, seed=9)
    base = pred.transpose(1, 2).contiguous().requires_grad_()  # [B, F, C, H, W] storage
    view = base.transpose(1, 2)
    total = masked_flow_loss(view, target, weight, backend="triton") + 0.5 * masked_flow_loss(
        view, torch.zeros_like(target), weight, backend="triton"
    )
    (grad,) = torch.autograd.grad(total, base)
    ref = masked_flow_loss_reference(view, target, weight) + 0.5 * masked_flow_loss_reference(
        view, torch.zeros_like(target), weight
    )
    (ref_grad,) = torch.autograd.grad(ref, base)
    torch.testing.assert_close(grad, ref_grad, **GRAD_TOL[torch.float32])


@needs_triton
def test_second_backward_raises():
    pred, target, weight = _inputs((1, 3, 2, 5, 7), torch.float32, seed=10)
    pred.requires_grad_()
    loss = masked_flow_loss(pred, target, weight, backend="triton")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once"):
        loss.backward()


def test_reference_gradient_passes_gradcheck_in_fp64():
    pred, target, weight = _inputs((2, 3, 2, 3, 4), torch.float64, weight_dtype=torch.float64, seed=11)
    pred.requires_grad_()
    assert torch.autograd.gradcheck(lambda p: masked_flow_loss_reference(p, target, weight), (pred,))


@needs_triton
def test_kernel_gradient_matches_finite_differences_of_kernel_loss():
    pred, target, weight = _inputs((2, 3, 2, 5, 7), torch.float32, seed=12)
    direction = torch.randn(pred.shape, generator=torch.Generator().manual_seed(13))
    pred.requires_grad_()
    (grad,) = torch.autograd.grad(masked_flow_loss(pred, target, weight, backend="triton"), pred)
    eps = 1e-2  # the loss is quadratic in pred: the central difference is exact up to rounding
    with torch.no_grad():
        plus = masked_flow_loss(pred + eps * direction, target, weight, backend="triton")
        minus = masked_flow_loss(pred - eps * direction, target, weight, backend="triton")
    torch.testing.assert_close((plus - minus) / (2 * eps), (grad * direction).sum(), rtol=1e-3, atol=1e-6)
    # and the fp32 kernel against the fp64 reference
    _, ref_grad = _reference_grad(masked_flow_loss_reference, pred.double(), target.double(), weight.double())
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(pred=torch.zeros(2, 3, 4, 5)), "pred must be"),
        (dict(target=torch.zeros(1, 3, 2, 4, 4)), "target must have"),
        (dict(weight=torch.zeros(1, 3, 2, 4, 5)), r"weight must have shape \(1, 1, 2, 4, 5\)"),
        (dict(weight=torch.zeros(1, 1, 2, 4, 5, dtype=torch.int64)), "weight must be a float"),
        (dict(pred=torch.zeros(1, 3, 2, 4, 5, dtype=torch.int32)), "pred must be float32"),
    ],
)
def test_bad_inputs_raise_value_error_naming_them(bad, match):
    args = dict(pred=torch.zeros(1, 3, 2, 4, 5), target=torch.zeros(1, 3, 2, 4, 5), weight=torch.zeros(1, 1, 2, 4, 5))
    args.update(bad)
    for backend in ("auto", "reference"):
        with pytest.raises(ValueError, match=match):
            masked_flow_loss(**args, backend=backend)


def test_dispatch_rule(monkeypatch):
    cpu = torch.zeros(1)
    assert use_triton("reference", cpu) is False
    with pytest.raises(ValueError, match="backend must be one of"):
        use_triton("cuda", cpu)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert use_triton("auto", cpu) is False
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        use_triton("triton", cpu)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert use_triton("auto", cpu) is (dispatch.HAVE_TRITON and dispatch.TRITON_INTERPRETED)


@needs_triton
def test_empty_input_gives_zero():
    pred = torch.zeros(1, 3, 0, 4, 5, requires_grad=True)
    loss = masked_flow_loss(pred, torch.zeros(1, 3, 0, 4, 5), torch.ones(1, 1, 0, 4, 5), backend="triton")
    (grad,) = torch.autograd.grad(loss, pred)
    assert loss.item() == 0.0 and grad.shape == pred.shape
