"""The method's conditioning, pinned against hand-built examples (docs/method.md, "What the method changes")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framecast.engine.errors import InvalidInput
from framecast.engine.method import conditioning as C


def test_keep_mask_channel_layout_with_frame0_repeat():
    # 9 pixel frames of 16x16 -> 3 latent frames of 2x2. Frame f's edit region is the
    # top-left latent cell for odd f and the bottom-right cell for even f >= 2.
    edit = np.zeros((9, 16, 16), bool)
    for f in range(1, 9):
        if f % 2:
            edit[f, :8, :8] = True
        else:
            edit[f, 8:, 8:] = True
    edit[0] = True  # ignored: frame 0 is given in full
    keep = C.latent_keep_mask(edit)
    assert keep.shape == (1, 4, 3, 2, 2)
    # Latent frame 0 <- pixel frame 0 repeated 4 times: all keep.
    assert torch.equal(keep[0, :, 0], torch.ones(4, 2, 2))
    # Latent frame 1 <- pixel frames 1, 2, 3, 4 as channels 0..3; frame 2 <- 5, 6, 7, 8.
    for latent in (1, 2):
        for channel in range(4):
            f = 4 * (latent - 1) + 1 + channel
            expected = torch.ones(2, 2)
            if f % 2:
                expected[0, 0] = 0
            else:
                expected[1, 1] = 0
            assert torch.equal(keep[0, channel, latent], expected), (latent, channel, f)


def test_full_mask_equals_diffusers_plain_i2v_mask():
    edit = np.ones((9, 16, 16), bool)
    keep = C.latent_keep_mask(edit)
    expected = torch.zeros(1, 4, 3, 2, 2)
    expected[:, :, 0] = 1  # diffusers: m[:, :, 0] = 1, m[:, :, 1:] = 0 before the repeat
    assert torch.equal(keep, expected)


def test_single_frame_sample_may_generate_frame0():
    edit = np.zeros((1, 16, 16), bool)
    edit[0, :8, :8] = True
    keep = C.latent_keep_mask(edit, first_frame_known=False)
    assert keep.shape == (1, 4, 1, 2, 2)
    assert torch.equal(keep[0, :, 0, 0, 0], torch.zeros(4)) and keep[0, :, 0, 1, 1].eq(1).all()


def test_condition_video_greys_edit_region_but_not_frame0():
    source = np.full((5, 16, 16, 3), 200, np.uint8)
    first = np.full((16, 16, 3), 10, np.uint8)
    edit = np.zeros((5, 16, 16), bool)
    edit[:, 4:8, 4:8] = True
    video = C.condition_video(first, source, edit)
    assert video.shape == (1, 3, 5, 16, 16)
    assert torch.allclose(video[0, :, 0], torch.full((3, 16, 16), 10 / 127.5 - 1))
    assert video[0, :, 1:, 4:8, 4:8].eq(0.0).all()  # mid-grey is exactly 0 in [-1, 1]
    assert torch.allclose(video[0, :, 1:, 0, 0], torch.full((3, 4), 200 / 127.5 - 1))


def test_loss_weight_is_union_of_encoded_frames():
    edit = np.zeros((9, 16, 16), bool)
    edit[3, 0, 0] = True  # one pixel in frame 3 -> latent frame 1, cell (0, 0)
    weight = C.loss_weight(edit, w_edit=2.0, w_keep=0.5)
    assert weight.shape == (1, 1, 3, 2, 2)
    assert weight[0, 0, 1, 0, 0] == 2.0
    assert weight.eq(0.5).sum() == 11


def test_bbox_mode_boxes_components_and_drops_specks():
    # At 416x240 (a quarter of 832x480) the 50 px minimum scales to 12 px.
    edit = np.zeros((1, 240, 416), bool)
    yy, xx = np.mgrid[:240, :416]
    edit[0] = (yy - 20) ** 2 + (xx - 20) ** 2 <= 100  # a disc of radius 10
    edit[0, 200:202, 300:302] = True  # a 4-px speck: dropped
    edit[0, 100:104, 100:104] = True  # a 16-px square: kept
    boxed = C.prepare_edit_mask(edit, C.MaskMode.BBOX)
    disc = boxed[0, :60, :60]
    ys, xs = np.nonzero(disc)
    # Box 10..30 (21 px) grown by 10% = 2 px in total, 1 px each side.
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (9, 31, 9, 31)
    assert disc[9:32, 9:32].all()
    assert not boxed[0, 190:210, 290:310].any()
    assert boxed[0, 100:104, 100:104].all()


@pytest.mark.parametrize("size", [(64, 64), (128, 128), (144, 160)])
def test_the_prepared_mask_marks_something_exactly_when_a_region_survives_its_mode(size):
    """bbox keeps a frame's regions when one reaches the minimum area (8-connected, within the
    frame); exact and dilate keep every marked pixel."""
    from scipy import ndimage

    rng = np.random.default_rng(sum(size))
    for density in (0.0, 0.0005, 0.002, 0.01, 0.05):
        edit = rng.random((3, *size)) < density
        areas = [np.bincount(ndimage.label(frame, structure=np.ones((3, 3)))[0].ravel())[1:] for frame in edit]
        survives = {"bbox": any(a.size and a.max() >= C.bbox_min_area(*size) for a in areas),
                    "exact": edit.any(), "dilate": edit.any()}  # fmt: skip
        for mode in ("bbox", "exact", "dilate"):
            assert C.prepare_edit_mask(edit, mode, dilate_px=1).any() == survives[mode], (density, mode)


def test_dilate_and_exact_modes():
    edit = np.zeros((2, 16, 16), bool)
    edit[:, 8, 8] = True
    assert np.array_equal(C.prepare_edit_mask(edit, "exact"), edit)
    grown = C.prepare_edit_mask(edit, "dilate", dilate_px=2)
    assert grown[0].sum() == 25 and grown[0, 6:11, 6:11].all()


def test_dilation_is_a_square_max_filter_at_any_radius():
    edit = np.random.default_rng(0).random((3, 16, 24)) < 0.02
    for radius in (1, 3, 11):
        square = torch.nn.functional.max_pool2d(torch.from_numpy(edit).float()[:, None], 2 * radius + 1, stride=1, padding=radius)
        assert np.array_equal(C.prepare_edit_mask(edit, "dilate", dilate_px=radius), square[:, 0].bool().numpy())
    # Past the frame's side every frame with an edit pixel is covered, and the work does not grow.
    covered = C.prepare_edit_mask(edit, "dilate", dilate_px=10_000)
    assert all(frame.all() == bool(e.any()) for frame, e in zip(covered, edit))


@pytest.mark.parametrize("frames", [0, 2, 8, 10])
def test_frame_count_must_be_4n_plus_1(frames):
    with pytest.raises(InvalidInput, match=rf"num_frames must be 4N\+1.*got {frames}"):
        C.check_frame_count(frames)


def test_frame_size_must_be_multiple_of_16():
    with pytest.raises(InvalidInput, match="56x40"):
        C.check_frame_size(40, 56)


def test_colour_variant_changes_only_the_region_and_the_same_way_in_every_frame():
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    frames[:, 4:10, 4:10] = (200, 40, 40)  # a red patch inside the region
    region = np.zeros((5, 16, 16), bool)
    region[:, 2:12, 2:12] = True
    out = C.colour_variant(frames, region, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == frames.shape
    assert np.array_equal(out[~region], frames[~region])
    patch = out[:, 4:10, 4:10].reshape(-1, 3)
    assert (patch == patch[0]).all(), "the same colour must map to the same colour in every frame"
    assert np.abs(patch[0].astype(int) - (200, 40, 40)).max() > 40, f"hue barely moved: {patch[0]}"
    again = C.colour_variant(frames, region, np.random.default_rng(0))
    assert np.array_equal(out, again)
    # Grey stays grey (the rotation is about the grey axis); only the gain may change it.
    grey = np.full((1, 2, 2, 3), 128, np.uint8)
    shifted = C.colour_variant(grey, np.ones((1, 2, 2), bool), np.random.default_rng(1))
    assert np.ptp(shifted.astype(int), axis=-1).max() <= 1
