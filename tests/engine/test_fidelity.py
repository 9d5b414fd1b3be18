"""Edit fidelity without ground truth: an edit held, faded back to the source, or garbled is told
apart from the source, the edited first frame, the region and the output alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from framecast.engine.quality.fidelity import FidelityMeter, FrameFidelity, Verdict, summarize
from framecast.engine.toy.world import SceneConfig, make_scene

FRAMES, SIZE, SIDE = 20, (180, 320), 48


def sliding_square(colour=(230, 40, 40)):
    """A flat square sliding 9 px a frame over a colour gradient with texture, its box (loose by
    8 px), and the same clip with the square recoloured green: (source, edited, regions)."""
    height, width = SIZE
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack([xs * 255 // width, ys * 255 // height, np.full_like(xs, 90)], -1).astype(np.int16)
    background = np.clip(background + rng.integers(-12, 13, background.shape), 0, 255).astype(np.uint8)
    source, edited, regions = [], [], []
    for t in range(FRAMES):
        x, y = 20 + 9 * t, 60
        frame, recoloured, region = background.copy(), background.copy(), np.zeros(SIZE, bool)
        frame[y : y + SIDE, x : x + SIDE] = colour
        recoloured[y : y + SIDE, x : x + SIDE] = (40, 200, 60)
        region[y - 8 : y + SIDE + 8, x - 8 : x + SIDE + 8] = True
        source.append(frame), edited.append(recoloured), regions.append(region)
    return np.stack(source), np.stack(edited), np.stack(regions)


def measure(source, edited, regions, output, threshold=0.5):
    meter = FidelityMeter(source[0], edited[0], regions[0])
    for t in range(len(output)):
        meter.add(source[t], output[t], regions[t])
    return meter.result(threshold)


def test_an_edit_carried_through_every_frame_is_held():
    source, edited, regions = sliding_square()
    result = measure(source, edited, regions, edited)
    assert result.verdict is Verdict.HELD and result.first_below == -1
    assert result.mean > 0.95 and result.worst > 0.9
    assert result.edit_psnr_db > 25  # the output against the predicted edit (a prediction, not the truth)


def test_an_edit_that_goes_back_to_the_source_is_faded_from_the_frame_it_went():
    source, edited, regions = sliding_square()
    output = edited.copy()
    output[7:] = source[7:]
    result = measure(source, edited, regions, output)
    assert result.verdict is Verdict.FADED and result.first_below == 7
    assert all(f.fidelity > 0.9 for f in result.frames[1:7]) and all(f.fidelity < 0.1 for f in result.frames[7:])
    assert "faded from frame 7" in result.describe() and result.edit_psnr_db < 15


def test_a_region_that_looks_like_neither_is_garbled():
    """A blotchy patch of colours the edit, the source and the background are all far from (blue
    blocks of any red and green) from frame 12 on: about as near the edit as the source, so
    judged by its garbled share."""
    source, edited, regions = sliding_square()
    rng = np.random.default_rng(1)
    output = edited.copy()
    blocks = rng.integers(0, 256, (FRAMES, SIZE[0] // 8 + 1, SIZE[1] // 8 + 1, 3), dtype=np.uint8)
    blocks[..., 2] = 200 + blocks[..., 2] % 56
    patches = blocks.repeat(8, axis=1).repeat(8, axis=2)[:, : SIZE[0], : SIZE[1]]
    output[12:] = np.where(regions[12:, ..., None], patches[12:], output[12:])
    result = measure(source, edited, regions, output)
    assert result.verdict is Verdict.GARBLED and result.first_below == 12
    assert all(f.garbled_share > 0.8 for f in result.frames[12:])


def test_a_blurred_region_a_pixel_off_still_carries_the_edit():
    source, edited, regions = sliding_square()
    output = np.roll(ndimage.uniform_filter(edited, size=(1, 5, 5, 1)), 1, axis=2)
    assert measure(source, edited, regions, output).verdict is Verdict.HELD


def test_one_bad_frame_is_not_a_fade_but_is_the_worst():
    source, edited, regions = sliding_square()
    output = edited.copy()
    output[9] = source[9]
    result = measure(source, edited, regions, output)
    assert result.verdict is Verdict.HELD and result.worst_frame == 9 and result.worst < 0.1


def test_an_edit_of_nothing_or_a_lost_region_is_unmeasured():
    source, _, regions = sliding_square()
    assert measure(source, source, regions, source).verdict is Verdict.UNMEASURED  # the edited frame is the source
    result = measure(source, sliding_square()[1], np.zeros_like(regions), source)
    assert result.verdict is Verdict.UNMEASURED and math.isnan(result.mean)


def test_the_threshold_decides():
    frames = [FrameFidelity(1.0, 0.0, 0.0, 100)] + [FrameFidelity(0.6, 0.4, 0.0, 100)] * 5
    assert summarize(frames, 0.5).verdict is Verdict.HELD
    assert summarize(frames, 0.7).verdict is Verdict.FADED and summarize(frames, 0.7).first_below == 1


@pytest.mark.parametrize("seed", [2, 6, 11])
def test_toy_world_recolours_read_held_when_true_and_faded_when_the_source_is_returned(seed):
    scene = make_scene(seed, SceneConfig(frames=17, height=64, width=64, sprites=2))
    regions = np.stack([ndimage.binary_dilation(m, iterations=4) for m in scene.edit_mask])
    assert measure(scene.source, scene.edited, regions, scene.edited).verdict is Verdict.HELD
    faded = scene.edited.copy()
    faded[5:] = scene.source[5:]
    result = measure(scene.source, scene.edited, regions, faded)
    assert result.verdict is Verdict.FADED and result.first_below == 5
