"""SAM2's video model as a tracker, loaded from a local directory and run on frames, on a small
model of transformers' SAM2 classes with random weights (what its masks mean needs real weights:
here the loading, the inputs it is given and the shape of what comes back are what is checked)."""

from __future__ import annotations

import numpy as np
import pytest

from framecast.engine.errors import InvalidInput
from framecast.engine.masks.trackers import Point
from framecast.engine.toy.world import SceneConfig, make_scene


@pytest.fixture(scope="module")
def sam2_dir(tmp_path_factory):
    from framecast.engine.toy.architectures import make_tiny_sam2

    return make_tiny_sam2(tmp_path_factory.mktemp("sam2") / "tiny-sam2")


def test_the_tracker_loads_a_local_checkpoint_and_tracks_points_and_masks(sam2_dir):
    from framecast.engine.masks.sam2 import Sam2Tracker

    tracker = Sam2Tracker.load(sam2_dir)
    assert tracker.size == 128 and not any(p.requires_grad for p in tracker.model.parameters())
    scene = make_scene(4, SceneConfig(frames=9, height=96, width=160, sprites=2))
    ys, xs = np.nonzero(scene.target_mask[0])
    from_points = tracker.track(scene.source, None, [Point(xs.mean(), ys.mean()), Point(2, 2, negative=True)])
    from_mask = tracker.track(scene.source, scene.target_mask[0])
    for track in (from_points, from_mask):
        assert track.masks.shape == (9, 96, 160) and track.masks.dtype == bool
        assert track.lost == [k for k in range(9) if not track.masks[k].any()]  # empty exactly where it says lost
    assert from_mask.masks[0].any()  # the mask it was given shapes frame 0's
    again = tracker.track(scene.source, scene.target_mask[0])
    np.testing.assert_array_equal(again.masks, from_mask.masks)  # the same inputs, the same masks


def test_a_directory_that_is_not_a_sam2_model_is_refused_naming_the_setting(tmp_path, tiny_model_dir):
    from framecast.engine.masks.sam2 import Sam2Tracker

    with pytest.raises(InvalidInput, match="sam2_checkpoint .*no config.json"):
        Sam2Tracker.load(tmp_path)
    with pytest.raises(InvalidInput, match="sam2_checkpoint .*does not load as a Sam2VideoModel"):
        Sam2Tracker.load(tiny_model_dir / "transformer")
