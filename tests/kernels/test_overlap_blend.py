"""Overlap blending of windows against its PyTorch reference, run by Triton's CPU interpreter.

Tolerances: fp32 and fp16 match exactly (same fp32 products and sums, same rounding);
bf16 to one bf16 ulp (rtol 1e-2: the interpreter truncates fp32 -> bf16 where GPUs round to
nearest); uint8 to 1 (a GPU may contract a*w + b*w' into an FMA and round a .5 the other way).
Frames covered by one window are exact copies in every dtype.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import math

import pytest
import torch

from framecast.kernels import RAMPS, blend_weights, blend_windows, blend_windows_reference, dispatch

needs_triton = pytest.mark.skipif(
    not (dispatch.HAVE_TRITON and dispatch.TRITON_INTERPRETED and dispatch.interpret_requested()),
    reason="needs triton imported under TRITON_INTERPRET=1 (run `pytest tests/kernels` on its own)",
)

TOL = {
    torch.float32: dict(rtol=0, atol=0),
    torch.float16: dict(rtol=0, atol=0),
    torch.bfloat16: dict(rtol=1e-2, atol=1e-2),
    torch.uint8: dict(rtol=0, atol=1),
}
POISON = {torch.float32: float("nan"), torch.float16: float("nan"), torch.bfloat16: float("nan")}


def _windows(lengths, other_shape, frame_dim, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    windows = []
    for n in lengths:
        shape = list(other_shape)
        shape.insert(frame_dim, n)
        x = torch.rand(shape, generator=gen) * 255 if dtype == torch.uint8 else torch.randn(shape, generator=gen)
        windows.append(x.to(dtype))
    return windows


def _blend_poisoned(windows, starts, frame_dim, ramp="linear", total_frames=None):
    """The Triton result, written into buffers poisoned two ways: an unwritten element shows."""
    results = []
    like = blend_windows_reference(windows, starts, frame_dim, ramp, total_frames)
    poisons = [POISON[like.dtype]] if like.dtype in POISON else [0, 255]
    for poison in poisons:
        out = torch.full_like(like, poison)
        results.append(blend_windows(windows, starts, frame_dim, ramp, total_frames, out=out, backend="triton"))
    assert all(torch.equal(r, results[0]) for r in results)
    return results[0], like


def _covered_once(starts, lengths, total):
    count = torch.zeros(total, dtype=torch.int64)
    for s, n in zip(starts, lengths):
        count[s : s + n] += 1
    return (count == 1).nonzero().flatten().tolist()


LAYOUTS = {
    # latents [C, f, h, w]: 13-frame-style windows of 5 overlapping by 2, last one shorter
    "latent": dict(lengths=[5, 5, 4], starts=[0, 3, 6], other=(3, 7, 9), frame_dim=1),
    # decoded frames [f, H, W, 3]: windows of 7 overlapping by 3
    "decoded": dict(lengths=[7, 7, 7], starts=[0, 4, 8], other=(5, 11, 3), frame_dim=0),
    # no overlap at all, and windows of different lengths
    "overlap0": dict(lengths=[4, 2, 3], starts=[0, 4, 6], other=(2, 5, 3), frame_dim=0),
    "uneven": dict(lengths=[6, 4, 7], starts=[0, 4, 6], other=(3, 5, 7), frame_dim=1),
    "single": dict(lengths=[5], starts=[0], other=(3, 4, 6), frame_dim=1),
    # frames of 2,376 elements: more than one BLOCK per frame, with a ragged tail
    "wide": dict(lengths=[4, 4, 4], starts=[0, 3, 6], other=(24, 33, 3), frame_dim=0),
}


@needs_triton
@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("ramp", RAMPS)
def test_triton_matches_reference(layout, dtype, ramp):
    spec = LAYOUTS[layout]
    windows = _windows(spec["lengths"], spec["other"], spec["frame_dim"], dtype)
    out, ref = _blend_poisoned(windows, spec["starts"], spec["frame_dim"], ramp)
    total = max(s + n for s, n in zip(spec["starts"], spec["lengths"]))
    expected_shape = list(spec["other"])
    expected_shape.insert(spec["frame_dim"], total)
    assert out.shape == ref.shape == tuple(expected_shape) and out.dtype == dtype
    torch.testing.assert_close(out, ref, **TOL[dtype])
    # frames inside a single window are copies of it, bit for bit
    for t in _covered_once(spec["starts"], spec["lengths"], total):
        k = max(k for k, s in enumerate(spec["starts"]) if s <= t)
        frame = windows[k].select(spec["frame_dim"], t - spec["starts"][k])
        assert torch.equal(out.select(spec["frame_dim"], t), frame)
        assert torch.equal(ref.select(spec["frame_dim"], t), frame)


@needs_triton
def test_overlap0_and_single_window_are_concatenation():
    windows = _windows([4, 2, 3], (2, 5, 3), 0, torch.uint8, seed=1)
    out = blend_windows(windows, [0, 4, 6], 0, backend="triton")
    assert torch.equal(out, torch.cat(windows))
    (single,) = _windows([5], (3, 4, 6), 1, torch.bfloat16, seed=2)
    assert torch.equal(blend_windows([single], [0], 1, backend="triton"), single)


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_blending_constant_windows_is_constant(backend):
    if backend == "triton" and not dispatch.TRITON_INTERPRETED:
        pytest.skip("needs triton imported under TRITON_INTERPRET=1")
    windows = [torch.full((3, n, 4, 5), 0.75) for n in (5, 5, 4)]
    out = blend_windows(windows, [0, 3, 6], 1, "cosine", backend=backend)
    torch.testing.assert_close(out, torch.full((3, 10, 4, 5), 0.75), rtol=1e-6, atol=0)


@needs_triton
def test_windows_that_are_views_at_unaligned_offsets():
    # a video sliced into windows: views with storage offsets not divisible by 16 bytes
    video = _windows([12], (3, 5, 3), 0, torch.uint8, seed=3)[0]  # 45 bytes a frame
    windows, starts = [video[1:6], video[4:9], video[7:12]], [0, 3, 6]
    assert any(w.data_ptr() % 16 for w in windows)
    latents = _windows([11], (3, 5, 7), 1, torch.float32, seed=4)[0].permute(1, 0, 2, 3)  # [f, C, h, w]
    lat_windows = [latents[s : s + 5].permute(1, 0, 2, 3) for s in (0, 3, 6)]  # non-contiguous
    for wins, dim in ((windows, 0), (lat_windows, 1)):
        out, ref = _blend_poisoned(wins, starts, dim)
        torch.testing.assert_close(out, ref, **TOL[out.dtype])


@needs_triton
def test_noncontiguous_out_is_filled():
    windows = _windows([5, 5], (2, 3, 4), 1, torch.float32, seed=5)
    out = torch.full((2, 8, 4, 3), float("nan")).transpose(2, 3)  # [2, 8, 3, 4] non-contiguous
    result = blend_windows(windows, [0, 3], 1, out=out, backend="triton")
    assert result is out
    torch.testing.assert_close(out, blend_windows_reference(windows, [0, 3], 1), rtol=0, atol=0)


def test_blend_weights_ramps():
    linear = blend_weights([0, 3, 7], [5, 5, 4], "linear")  # overlaps of 2 and 1 frames
    expected = [[1, 1, 1, 2 / 3, 1 / 3], [1 / 3, 2 / 3, 1, 1, 0.5], [0.5, 1, 1, 1]]
    for weights, want in zip(linear, expected):
        torch.testing.assert_close(weights, torch.tensor(want), rtol=1e-6, atol=1e-7)
    cosine = blend_weights([0, 4], [7, 6], "cosine")  # overlap 3: x = 1/4, 2/4, 3/4
    expected = [0.5 - 0.5 * math.cos(math.pi * x) for x in (0.25, 0.5, 0.75)]
    torch.testing.assert_close(cosine[1][:3], torch.tensor(expected), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(cosine[0][4:] + cosine[1][:3], torch.ones(3))
    assert blend_weights([0, 4], [4, 3])[0].tolist() == [1, 1, 1, 1]  # overlap 0


def _valid():
    return dict(windows=[torch.zeros(3, 5, 2, 2), torch.zeros(3, 5, 2, 2)], starts=[0, 3], frame_dim=1)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(starts=[0, 6]), r"frames \[5\] are covered by no window"),
        (dict(starts=[1, 3]), r"frames \[0\] are covered by no window"),
        (dict(starts=[3, 0]), r"starts must be strictly increasing but are \[3, 0\]"),
        (dict(starts=[0]), r"starts must give one start per window \(2\)"),
        (dict(starts=[-1, 3]), r"starts must be >= 0 but are \[-1, 3\]"),
        (dict(total_frames=10), r"frames \[8, 9\] are covered by no window"),
        (dict(total_frames=6), "total_frames is 6 but window 1 ends at frame 8"),
        (dict(ramp="sigmoid"), "ramp must be one of"),
        (dict(frame_dim=4), "frame_dim must index a 4-d window but is 4"),
        (dict(windows=[]), "windows must hold at least one tensor"),
        (dict(windows=[torch.zeros(3, 5, 2, 2), torch.zeros(3, 5, 2, 3)]), r"windows\[1\] has shape \(3, 5, 2, 3\)"),
        (dict(windows=[torch.zeros(3, 5, 2, 2), torch.zeros(3, 5, 2, 2).half()]), r"windows\[1\] is torch.float16"),
        (dict(windows=[torch.zeros(3, 5, 2, 2, dtype=torch.int32)] * 2), "windows must be float32"),
        (dict(windows=[torch.zeros(3, 5, 2, 2), torch.zeros(3, 1, 2, 2)]), "window 1 .* ends inside window 0"),
        (dict(windows=[torch.zeros(3, 5, 2, 2)] * 3, starts=[0, 2, 4]), "frame 4 lies in windows 0, 1 and 2"),
        (dict(out=torch.zeros(3, 7, 2, 2)), r"out must be torch.float32 \(3, 8, 2, 2\)"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(change, match):
    args = {**_valid(), **change}
    for backend in ("auto", "reference"):
        with pytest.raises(ValueError, match=match):
            blend_windows(**args, backend=backend)
