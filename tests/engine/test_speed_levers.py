"""The speed levers on the tiny model. Sampling (guidance on the first steps only, diffusers' step
caches): each does less of the transformer's work, stays close to the full sampler's frames, leaves
no hook behind, and refuses bad settings naming the field. Training in windows with the steps in
all: the clip's steps, each on the next window."""

from __future__ import annotations

import numpy as np
import pytest

from framecast.common.requests import PropagateJob, StepCache, TrainJob, TrainSettings
from framecast.engine.config import EngineConfig
from framecast.engine.engine import Engine
from framecast.engine.errors import InvalidInput
from framecast.engine.quality.metrics import psnr

STEPS = 8


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tmp_path_factory):
    return Engine(EngineConfig(model_dir=str(tiny_model_dir)), tmp_path_factory.mktemp("levers-data"))


def count_passes(engine):
    """[transformer calls, last-block computations]: a cached step skips the last block's feed-forward."""
    transformer = engine.pipe.transformer
    counts = [0, 0]

    def bump(index):
        def hook(*_):
            counts[index] += 1

        return hook

    handles = [transformer.register_forward_hook(bump(0)), transformer.blocks[-1].ffn.register_forward_hook(bump(1))]
    return counts, handles


def propagate(engine, scene, **lever):
    lever = {"guidance_scale": 3.0, **lever}
    job = PropagateJob("", scene.source, scene.edit_mask, scene.edited_first_frame, scene.edited_prompt,
                       steps=STEPS, seed=5, **lever)  # fmt: skip
    counts, handles = count_passes(engine)
    try:
        frames = engine.propagate(job).frames
    finally:
        for handle in handles:
            handle.remove()
    return frames, counts


@pytest.fixture(scope="module")
def slow(engine, scene):
    return propagate(engine, scene)


def test_the_full_sampler_computes_every_step_twice(slow):
    assert slow[1] == [2 * STEPS, 2 * STEPS]  # conditional and unconditional, every block


@pytest.mark.parametrize("lever", [{}, {"guidance_steps": 3}, {"guidance_scale": 1.0},
                                   {"step_cache": StepCache.TAYLORSEER, "cache_interval": 2},
                                   {"step_cache": StepCache.TAYLORSEER, "cache_interval": 3, "guidance_steps": 5}])  # fmt: skip
def test_the_planned_passes_are_the_computed_ones(engine, scene, lever):
    """Sampler.passes, what Plan's time estimate counts, against the blocks a run computes."""
    from framecast.engine.method.sampling import Sampler

    settings = {"guidance_scale": 3.0, **lever}
    job = PropagateJob("", scene.source, scene.edit_mask, scene.edited_first_frame, "p", steps=STEPS, **settings)
    _, counts = propagate(engine, scene, **lever)
    assert Sampler.of(job).passes() == counts[1]


def test_guidance_on_the_first_steps_only(engine, scene, slow):
    frames, counts = propagate(engine, scene, guidance_steps=3)
    assert counts == [STEPS + 3, STEPS + 3]
    everything = np.ones(frames.shape[:3], bool)
    assert not np.array_equal(frames, slow[0]) and psnr(frames, slow[0], everything) > 25


@pytest.mark.parametrize("lever", [dict(step_cache=StepCache.TAYLORSEER, cache_interval=3),
                                   dict(step_cache="first-block", cache_threshold=0.5)])  # fmt: skip
def test_a_step_cache_skips_blocks_and_stays_close(engine, scene, slow, lever):
    frames, counts = propagate(engine, scene, **lever)
    assert counts[0] == 2 * STEPS  # every step still calls the transformer
    assert counts[1] < 2 * STEPS  # but not every block computes
    everything = np.ones(frames.shape[:3], bool)
    assert psnr(frames, slow[0], everything) > 20
    assert not engine.pipe.transformer.is_cache_enabled  # the hooks went with the run
    again, _ = propagate(engine, scene, **lever)
    assert np.array_equal(frames, again)  # no state carried from the run before


def test_training_after_a_cached_propagation_sees_no_hooks(engine, scene):
    propagate(engine, scene, step_cache=StepCache.TAYLORSEER)
    settings = TrainSettings(steps=2, rank=2, seed=1, gradient_checkpointing=False)
    counts, handles = count_passes(engine)
    try:
        engine.train(TrainJob("after-cache", scene.source, scene.edit_mask, scene.prompt, settings))
    finally:
        for handle in handles:
            handle.remove()
    assert counts == [2, 2]


@pytest.mark.parametrize("field, value, message", [
    ("guidance_steps", STEPS + 1, f"between 0 \\(every step\\) and steps \\({STEPS}\\)"),
    ("step_cache", "teacache", "step_cache"),
    ("cache_threshold", 0.0, "above 0 and at most 1"),
    ("cache_threshold", float("nan"), "above 0 and at most 1"),
    ("cache_interval", 0, "between 1 and 10"),
])  # fmt: skip
def test_bad_lever_settings_are_refused_naming_the_field(engine, scene, field, value, message):
    job = PropagateJob("", scene.source, scene.edit_mask, scene.edited_first_frame, "p", steps=STEPS, **{field: value})
    with pytest.raises(InvalidInput, match=field) as caught:
        engine.prepare_propagate(job)
    assert caught.match(message)


def test_windowed_training_with_steps_in_all_takes_the_clips_steps(engine, scene):
    """9 frames in 5-frame windows overlapping by 1: two windows, so 3 steps per window are 6; in all, 3,
    each a window's tokens."""
    counts = {}
    for in_all in (False, True):
        settings = TrainSettings(steps=3, rank=2, seed=1, gradient_checkpointing=False, steps_in_all=in_all)
        seen = []
        calls, handles = count_passes(engine)
        shapes = []
        handles.append(engine.pipe.transformer.register_forward_pre_hook(
            lambda module, args, kwargs: shapes.append(kwargs["hidden_states"].shape[2]), with_kwargs=True))
        try:
            engine.train(TrainJob(f"in-all-{in_all}", scene.source, scene.edit_mask, scene.prompt, settings,
                                  window_frames=5, overlap_frames=1), seen.append)  # fmt: skip
        finally:
            for handle in handles:
                handle.remove()
        counts[in_all] = (len(seen), calls[0], shapes)
    assert counts[False][:2] == (6, 6) and counts[True][:2] == (3, 3)
    assert set(counts[True][2]) == {2}  # latent frames a step: a 5-frame window's, never the clip's 3
    assert counts[True][2] == counts[False][2][:3]
