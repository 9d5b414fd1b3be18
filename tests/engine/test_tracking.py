"""Trackers turn a region on the first frame into one per frame (engine/masks/trackers.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from framecast.engine.masks.trackers import Box, CsrtTracker, FlowTracker, Point, box_iou, region_from_points
from framecast.engine.toy.world import SceneConfig, make_scene


def _scaled(frames: np.ndarray, factor: int, nearest: bool = False) -> np.ndarray:
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.fromarray(f).resize((f.shape[1] * factor, f.shape[0] * factor), resample))
                     for f in frames])  # fmt: skip


@pytest.fixture(scope="module")
def moving():
    """A held-out toy scene at 256x256: the target moves across the frame, turning and changing size."""
    scene = make_scene(4, SceneConfig(frames=25, sprites=2, edit="recolor"))
    frames = _scaled(scene.source, 4)
    masks = _scaled(scene.target_amodal_mask.astype(np.uint8) * 255, 4, nearest=True) > 127
    return frames, masks


@pytest.mark.parametrize("tracker", [CsrtTracker(), FlowTracker()], ids=["csrt", "flow"])
def test_a_tracker_follows_the_region_from_the_first_frame(moving, tracker):
    frames, truth = moving
    track = tracker.track(frames, truth[0])
    assert track.masks.shape == truth.shape and not track.lost
    ious = [box_iou(track.masks[k], truth[k]) for k in range(len(frames))]
    assert ious[0] > 0.95
    assert np.mean(ious) > 0.5  # it follows the target (a region left where it started scores near 0 by the end)
    still = [box_iou(truth[0], truth[k]) for k in range(len(frames))]
    assert np.mean(ious[12:]) > np.mean(still[12:]) + 0.2


def test_a_region_that_leaves_the_frame_is_reported_lost_not_invented():
    frames = np.full((24, 96, 128, 3), 60, np.uint8)
    frames[..., 1] = np.linspace(40, 120, 128, dtype=np.uint8)[None, None]  # some texture to track against
    for k in range(24):
        x = 20 + 8 * k
        frames[k, 30:62, x : x + 24] = (220, 40, 40)
        frames[k, 40:50, x + 6 : x + 12] = (255, 255, 255)
    first = np.zeros((96, 128), bool)
    first[30:62, 20:44] = True
    track = CsrtTracker().track(frames, first)
    gone = [k for k in range(24) if 20 + 8 * k >= 128]  # fully outside from frame 14 on
    assert set(gone) <= set(track.lost)
    assert not track.masks[track.lost].any()  # nothing is drawn where it is lost
    assert box_iou(track.masks[4], _box(30, 62, 52, 76, (96, 128))) > 0.6  # followed while it was there


def _box(y0, y1, x0, x1, shape):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_points_become_a_region_by_grabcut(moving):
    frames, truth = moving
    ys, xs = np.nonzero(truth[0])
    centre = Point(float(xs.mean()), float(ys.mean()))
    region = region_from_points(frames[0], [centre, Point(5, 5, negative=True)])
    assert box_iou(region, truth[0]) > 0.6
    assert not region[:10, :10].any()
    assert not region_from_points(frames[0], [Point(5, 5, negative=True)]).any()  # no positive point: nothing


def test_box_helpers():
    box = Box(10.5, 4, 20, 8)
    mask = box.mask(16, 32)
    assert mask.sum() == 21 * 8 and Box.of(mask) == Box(10, 4, 21, 8)
    assert Box(-10, 0, 20, 10).visible_share(10, 40) == pytest.approx(0.5)
    assert Box.of(np.zeros((4, 4), bool)) is None
    assert box_iou(mask, mask) == 1.0 and box_iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0
