"""Measures of the delivered clip: figures that fail when the background, the first frame or the
edit is not what the user gave."""

from __future__ import annotations

import math

import numpy as np

from framecast.engine.quality.delivered import measure_delivered
from framecast.engine.quality.fidelity import Verdict

from .test_fidelity import sliding_square


def frames_of(source, delivered, regions):
    return ((i, source[i], delivered[i], regions[i]) for i in range(len(source)))


def test_a_background_kept_to_the_bit_reads_the_cap_and_an_encoded_one_less():
    source, edited, regions = sliding_square()
    exact = measure_delivered(frames_of(source, edited, regions), len(source), edited[0], 0.5)
    assert exact.background_psnr_db == 100.0 and exact.background_ssim == 1.0 and exact.warnings == ()
    assert exact.fidelity.verdict is Verdict.HELD and exact.first_frame_psnr_inside_db == 100.0
    noisy = edited.astype(np.int16) + np.random.default_rng(0).integers(-3, 4, edited.shape)
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    noisy[5] = np.clip(edited[5].astype(np.int16) + 20, 0, 255)  # one frame far worse
    measured = measure_delivered(frames_of(source, noisy, regions), len(source), edited[0], 0.5)
    assert 30 < measured.background_psnr_db < 50 and measured.background_psnr_worst_frame == 5
    assert measured.background_psnr_worst_db < 25 and measured.background_ssim < 1.0
    assert measured.ssim_frames == len(source)


def test_a_region_over_most_of_the_frame_warns():
    source, edited, regions = sliding_square()
    whole = np.ones_like(regions)
    whole[:, :4] = False
    measured = measure_delivered(frames_of(source, edited, whole), len(source), edited[0], 0.5)
    assert measured.region_share > 0.95
    assert [w.code for w in measured.warnings] == ["region_covers_frame"]


def test_an_edit_outside_the_region_that_the_output_drops_warns():
    source, edited, regions = sliding_square()
    user_edit = edited[0].copy()
    user_edit[150:, :] = 255  # the user also painted the bottom of the frame, outside the region
    measured = measure_delivered(frames_of(source, edited, regions), len(source), user_edit, 0.5)
    (warning,) = measured.warnings
    assert warning.code == "edit_outside_region_dropped" and "outside the edit region" in warning.message
    assert measured.edit_outside_share > 0.1 and measured.first_frame_psnr_outside_db < 20


def test_a_faded_edit_warns_naming_its_frames():
    source, edited, regions = sliding_square()
    delivered = edited.copy()
    delivered[8:] = source[8:]
    measured = measure_delivered(frames_of(source, delivered, regions), len(source), edited[0], 0.5)
    (warning,) = measured.warnings
    assert warning.code == "edit_faded" and warning.frames == tuple(range(8, len(source)))
    assert "faded from frame 8" in warning.message and "more training steps" in warning.message


def test_without_an_edited_first_frame_nothing_is_judged():
    source, edited, regions = sliding_square()
    measured = measure_delivered(frames_of(source, edited, regions), len(source), None, 0.5)
    assert measured.fidelity.verdict is Verdict.UNMEASURED and math.isnan(measured.first_frame_psnr_inside_db)
