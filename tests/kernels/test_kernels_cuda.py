"""The Triton kernels compiled for a real GPU against their PyTorch references.

The other kernel tests run Triton's CPU interpreter, which tries one autotuning config and
truncates where GPUs round. These run the compiled kernels, every autotuned config in play,
on CUDA, so they need a GPU and Triton imported *without* the interpreter:

    TRITON_INTERPRET=0 pytest tests/kernels/test_kernels_cuda.py

Tolerances: the loss is accumulated in fp32 by both (rtol 1e-5, a little more at clip size,
where the two sum in another order); gradients and blends round to their dtype: one ulp of
bf16/fp16, exact-to-rounding in fp32, within 1 for uint8.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # as the suite's conftest does; this file asks for 0

import pytest
import torch

from framecast.kernels import (
    RAMPS,
    blend_windows,
    blend_windows_reference,
    dispatch,
    masked_flow_loss,
    masked_flow_loss_from_noise,
    masked_flow_loss_from_noise_reference,
    masked_flow_loss_reference,
    use_triton,
)

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and dispatch.HAVE_TRITON and not dispatch.TRITON_INTERPRETED),
    reason="needs a CUDA GPU and triton imported with TRITON_INTERPRET=0",
)

GRAD_TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-8),
    torch.float16: dict(rtol=1e-3, atol=1e-6),
    torch.bfloat16: dict(rtol=8e-3, atol=1e-6),
}
BLEND_TOL = {
    torch.float32: dict(rtol=1e-6, atol=1e-6),
    torch.float16: dict(rtol=1e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=8e-3, atol=8e-3),
    torch.uint8: dict(rtol=0, atol=1),
}
# odd sizes, B > 1, a frame bigger than one block, and 49 frames of 832x480 latents
LOSS_SHAPES = [(2, 5, 3, 11, 13), (3, 3, 1, 5, 33), (1, 16, 4, 60, 104), (1, 16, 13, 60, 104)]


def _loss_inputs(shape, dtype, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    b, _, f, h, w = shape
    pred, target, x0 = (torch.randn(shape, generator=gen, device="cuda").to(dtype) for _ in range(3))
    weight = torch.rand(b, 1, f, h, w, generator=gen, device="cuda") * 2.5
    weight[weight < 0.5] = 0  # ignored, keep and edit weights with soft edges between
    return pred, target, x0, weight


def _loss_and_grad(loss_fn, pred, *args, **kwargs):
    pred = pred.detach().requires_grad_()
    loss = loss_fn(pred, *args, **kwargs)
    (grad,) = torch.autograd.grad(loss, pred, torch.tensor(3.0, device="cuda"))
    return loss.detach(), grad


def test_the_dispatcher_picks_triton_for_cuda_tensors():
    assert use_triton("auto", torch.zeros(1, device="cuda"))


@pytest.mark.parametrize("dtype", list(GRAD_TOL))
@pytest.mark.parametrize("shape", LOSS_SHAPES)
def test_masked_loss_and_gradient_match_the_reference(shape, dtype):
    pred, target, _, weight = _loss_inputs(shape, dtype)
    loss, grad = _loss_and_grad(masked_flow_loss, pred, target, weight, backend="triton")
    ref_loss, ref_grad = _loss_and_grad(masked_flow_loss_reference, pred, target, weight)
    assert loss.dtype == torch.float32 and grad.dtype == dtype and not grad.isnan().any()
    torch.testing.assert_close(loss, ref_loss, rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(grad, ref_grad, **GRAD_TOL[dtype])


@pytest.mark.parametrize("dtype", list(GRAD_TOL))
@pytest.mark.parametrize("shape", LOSS_SHAPES[:3])
def test_loss_from_noise_matches_the_reference(shape, dtype):
    pred, noise, x0, weight = _loss_inputs(shape, dtype, seed=1)
    loss, grad = _loss_and_grad(masked_flow_loss_from_noise, pred, noise, x0, weight, backend="triton")
    ref_loss, ref_grad = _loss_and_grad(masked_flow_loss_from_noise_reference, pred, noise, x0, weight)
    torch.testing.assert_close(loss, ref_loss, rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(grad, ref_grad, **GRAD_TOL[dtype])


def test_nothing_masked_gives_zero_loss_and_gradient():
    pred, target, _, weight = _loss_inputs((2, 3, 2, 5, 7), torch.bfloat16, seed=2)
    loss, grad = _loss_and_grad(masked_flow_loss, pred, target, torch.zeros_like(weight), backend="triton")
    assert loss.item() == 0.0 and not grad.isnan().any() and not grad.any()


def _windows(lengths, other, frame_dim, dtype, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    windows = []
    for n in lengths:
        shape = list(other)
        shape.insert(frame_dim, n)
        x = torch.rand(shape, generator=gen, device="cuda")
        windows.append((x * 255).to(dtype) if dtype == torch.uint8 else (x * 2 - 1).to(dtype))
    return windows


BLEND_LAYOUTS = {
    "latent": dict(lengths=[5, 5, 4], starts=[0, 3, 6], other=(3, 7, 9), frame_dim=1),
    "uneven": dict(lengths=[6, 4, 7], starts=[0, 4, 6], other=(3, 5, 7), frame_dim=1),
    # 49 decoded 832x480 frames in windows of 13 overlapping by 4, the last flush with the end
    "decoded49_480p": dict(lengths=[13] * 5, starts=[0, 9, 18, 27, 36], other=(480, 832, 3), frame_dim=0),
}


@pytest.mark.parametrize("ramp", RAMPS)
@pytest.mark.parametrize("dtype", list(BLEND_TOL))
@pytest.mark.parametrize("layout", list(BLEND_LAYOUTS))
def test_overlap_blend_matches_the_reference(layout, dtype, ramp):
    spec = BLEND_LAYOUTS[layout]
    windows = _windows(spec["lengths"], spec["other"], spec["frame_dim"], dtype)
    ref = blend_windows_reference(windows, spec["starts"], spec["frame_dim"], ramp)
    poisoned = torch.full_like(ref, 255 if dtype == torch.uint8 else float("nan"))
    out = blend_windows(windows, spec["starts"], spec["frame_dim"], ramp, out=poisoned, backend="triton")
    assert out.shape == ref.shape and out.dtype == dtype
    torch.testing.assert_close(out, ref, **BLEND_TOL[dtype])
    # a frame only the first window covers is that window's frame, bit for bit
    assert torch.equal(out.select(spec["frame_dim"], 0), windows[0].select(spec["frame_dim"], 0))
