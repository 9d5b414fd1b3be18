"""Windowed training and generation: planning, blending, seams."""

from __future__ import annotations

import numpy as np
import pytest

from framecast.common.requests import PropagateJob, TrainJob, TrainSettings
from framecast.engine.config import EngineConfig
from framecast.engine.engine import Engine
from framecast.engine.errors import InvalidInput
from framecast.engine.method.windows import plan_windows
from framecast.engine.quality.metrics import seam_score
from framecast.engine.toy.world import SceneConfig, make_scene


@pytest.mark.parametrize(
    "frames, window, overlap, starts, lengths",
    [
        (49, 13, 4, (0, 9, 18, 27, 36), (13,) * 5),
        (17, 9, 3, (0, 6, 12), (9, 9, 5)),  # the last window is shorter
        (17, 9, 1, (0, 8), (9, 9)),
        (17, 9, None, (0, 6, 12), (9, 9, 5)),  # no overlap named: 4, but at most 3 for 9-frame windows
        (49, 13, None, (0, 9, 18, 27, 36), (13,) * 5),
        (9, 13, 4, (0,), (9,)),  # fits in one window
        (9, 0, 4, (0,), (9,)),
        (81, 21, 8, (0, 13, 26, 39, 52, 64), (21, 21, 21, 21, 21, 17)),
    ],
)
def test_plan_windows(frames, window, overlap, starts, lengths):
    plan = plan_windows(frames, window, overlap)
    assert (plan.starts, plan.lengths) == (starts, lengths)
    assert plan.ends[-1] == frames
    assert all((n - 1) % 4 == 0 for n in plan.lengths)
    assert all(plan.ends[k - 1] - plan.starts[k] >= (overlap or 1) for k in range(1, plan.count))


def test_plan_windows_refuses_bad_settings():
    with pytest.raises(InvalidInput, match="window_frames"):
        plan_windows(49, 12, 2)
    with pytest.raises(InvalidInput, match="overlap_frames"):
        plan_windows(49, 13, 6)
    # A later window starts from a frame the previous one generated: they must share one.
    with pytest.raises(InvalidInput, match="overlap_frames must be between 1 and 1"):
        plan_windows(17, 5, 0)


def test_seam_score():
    steady = np.cumsum(np.full((9, 2, 2, 3), 10, np.uint8), axis=0).astype(np.uint8)
    assert seam_score(steady, [4]) == pytest.approx(1.0)
    jumpy = steady.copy()
    jumpy[4:] += 30
    assert seam_score(jumpy, [4]) == pytest.approx(4.0)


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tmp_path_factory):
    return Engine(EngineConfig(model_dir=str(tiny_model_dir), window_frames=9), tmp_path_factory.mktemp("win-data"))


@pytest.fixture(scope="module")
def long_scene():
    return make_scene(5, SceneConfig(frames=17, height=64, width=64, sprites=1))


@pytest.fixture(scope="module")
def win(engine, long_scene):
    """`win`, trained once on the long scene in 9-frame windows overlapping by 3: (its record, its progress)."""
    settings = TrainSettings(steps=4, rank=2, gradient_checkpointing=False)
    progress = []
    record = engine.train(TrainJob("win", long_scene.source, long_scene.edit_mask, "p", settings, overlap_frames=3),
                          on_progress=progress.append)
    return record, progress


def test_windowed_training_uses_one_sample_per_window(win):
    record, progress = win
    assert record.training["window_starts"] == [0, 6, 12]
    assert record.training["window_lengths"] == [9, 9, 5]
    # ``steps`` is per window: each of the 3 windows gets the 4 steps a one-window clip gets.
    assert [p.step for p in progress] == list(range(1, 13)) and {p.total for p in progress} == {12}


def test_windowed_propagation_streams_every_frame_once(engine, long_scene, win):
    record, _ = win
    job = PropagateJob(record.name, long_scene.source, long_scene.edit_mask, long_scene.edited_first_frame, "p",
                       steps=2, seed=3, overlap_frames=3, composite=True, blend_ramp="cosine")
    streamed, steps = {}, []
    result = engine.propagate(job, on_step=lambda s, n: steps.append((s, n)),
                              on_frames=lambda first, frames: streamed.update({first + i: f for i, f in enumerate(frames)}))
    assert result.windows == 3 and result.frames.shape == (17, 64, 64, 3)
    assert sorted(streamed) == list(range(17))
    assert np.array_equal(np.stack([streamed[i] for i in range(17)]), result.frames)
    assert steps[-1] == (6, 6)  # 2 steps x 3 windows
    assert np.isfinite(result.seam_score) and result.seam_score > 0
    # Composite holds across windows: outside the mask the output is the source.
    assert np.array_equal(result.frames[~result.edit_mask], long_scene.source[~result.edit_mask])
    again = engine.propagate(job)
    assert np.array_equal(again.frames, result.frames)


def test_later_windows_start_from_the_known_background(engine, long_scene, monkeypatch):
    """Window k >= 1 starts from window k-1's frame inside the edit mask and the source outside it."""
    from framecast.engine.method.propagation import Propagation

    firsts, outputs = {}, {}
    generate = Propagation.generate

    def recording(self, first_frame, start, *args, **kwargs):
        firsts[start] = first_frame.copy()
        outputs[start] = generate(self, first_frame, start, *args, **kwargs)
        return outputs[start]

    monkeypatch.setattr(Propagation, "generate", recording)
    job = PropagateJob("", long_scene.source, long_scene.edit_mask, long_scene.edited_first_frame, "p",
                       steps=1, seed=3, overlap_frames=3, composite=False)  # fmt: skip
    mask = engine.propagate(job).edit_mask
    assert sorted(firsts) == [0, 6, 12]
    np.testing.assert_array_equal(firsts[0], long_scene.edited_first_frame)
    for previous, start in ((0, 6), (6, 12)):
        inside = mask[start]
        assert inside.any() and (~inside).any()
        np.testing.assert_array_equal(firsts[start][~inside], long_scene.source[start][~inside])
        np.testing.assert_array_equal(firsts[start][inside], outputs[previous][start - previous][inside])


def test_window_of_whole_clip_is_one_window(engine, long_scene):
    job = PropagateJob("", long_scene.source, long_scene.edit_mask, long_scene.edited_first_frame, "p",
                       steps=1, window_frames=17)
    result = engine.propagate(job)
    assert result.windows == 1 and result.seam_score == 1.0
