"""Real footage in, real footage out, end to end through the real server on the built-in model:
clips as cameras and phones write them go in whole, and what comes back has the source's size,
orientation, frame rate, frame count, timestamps and audio, with the background untouched."""

from __future__ import annotations

import math
from fractions import Fraction

import grpc
import numpy as np
import pytest

from framecast.common.media import encode_png, encode_video, mask_to_frames
from framecast.v1 import framecast_pb2 as pb

from .footage import make_footage, read_audio, read_video, video_times
from .test_e2e import upload

SPRITE_FILL = 0.5  # the mask boxes below are drawn generously around the sprite's path


def box_mask(footage, margin: float = 0.1) -> np.ndarray:
    """One mask image for every frame: the box around every position the edit region takes, grown."""
    ys, xs = np.nonzero(footage.edit_mask.any(axis=0))
    h, w = footage.edit_mask.shape[1:]
    grow_y, grow_x = int(margin * h), int(margin * w)
    mask = np.zeros((h, w), bool)
    mask[max(0, ys.min() - grow_y) : ys.max() + grow_y, max(0, xs.min() - grow_x) : xs.max() + grow_x] = True
    return mask


def run(stub, footage, mask_bytes: bytes, encoding=pb.OUTPUT_ENCODING_MP4_H264_LOSSLESS, **fields) -> tuple[pb.PropagateResult, bytes]:
    source = upload(stub, footage.path.read_bytes(), footage.path.name)
    mask = upload(stub, mask_bytes, "mask")
    edited = upload(stub, encode_png(footage.edited_first_frame), "edited.png")
    request = pb.PropagateRequest(source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id,
                                  prompt=footage.prompt, steps=2, guidance_scale=1.0, composite=True,
                                  output_encoding=encoding, **fields)  # fmt: skip
    events = list(stub.Propagate(request, timeout=600))
    result = events[-1].result
    phases = {e.progress.phase for e in events if e.WhichOneof("event") == "progress"}
    assert {"decode", "denoise", "encode"} <= phases, phases
    data = b"".join(c.data for c in stub.DownloadMedia(pb.MediaRef(id=result.video.id), timeout=120))
    return result, data


def outside(mask: np.ndarray, grow: int) -> np.ndarray:
    """Pixels farther than ``grow`` from the mask: untouched whatever the grid cells round to."""
    from scipy import ndimage

    return ~ndimage.binary_dilation(mask, iterations=grow)


def check_whole(footage, result: pb.PropagateResult, data: bytes, still_mask: np.ndarray) -> np.ndarray:
    """The output is the source's: size, orientation, frame count, timestamps, audio; lossless, the
    pixels away from the mask are the decoded source's exactly. Returns the output frames."""
    frames, times, rotation = read_video(data)
    source_frames, source_times, source_rotation = read_video(footage.path)
    turns = (source_rotation // 90) % 4
    displayed = np.stack([np.rot90(f, turns) for f in source_frames]) if turns else source_frames
    assert rotation == 0 and frames.shape == displayed.shape, (frames.shape, displayed.shape)
    assert result.video.width == displayed.shape[2] and result.video.height == displayed.shape[1]
    assert result.num_frames == len(source_times) == result.video.num_frames
    np.testing.assert_allclose(times, source_times, atol=1e-3)
    assert result.video.duration_s == pytest.approx(result.video.duration_s)
    np.testing.assert_array_equal(read_audio(data), read_audio(footage.path))
    # The method loosens the mask to its box grown by 10% (bbox mode) on the working grid: a grid
    # cell, scaled up, is this many source pixels.
    grid_cell = -(-max(displayed.shape[1:3]) // min(result.working_width, result.working_height))
    ys, xs = np.nonzero(still_mask)
    growth = int(0.05 * max(np.ptp(ys), np.ptp(xs))) + 1
    away = outside(still_mask, growth + 2 * grid_cell + 2)
    assert away.mean() > 0.05  # enough background to check
    np.testing.assert_array_equal(frames[:, away], displayed[:, away])
    changed = np.abs(frames.astype(int) - displayed.astype(int)).sum(-1)[:, still_mask]
    assert changed.mean() > 1.0  # and the region was edited
    return frames


def test_a_1080p_30fps_h264_clip_with_aac_comes_back_whole(toy, tmp_path):
    footage = make_footage(tmp_path / "phone.mp4", 3, 1920, 1080, [i / 30 for i in range(60)])
    mask = box_mask(footage)
    result, data = run(toy, footage, encode_png(mask_to_frames(mask[None])[0]))
    assert (result.working_width, result.working_height, result.working_fps) == (80, 48, 16.0)
    assert result.working_frames == 32  # 2 s at 16 fps
    assert result.video.has_audio
    check_whole(footage, result, data, mask)


def test_a_portrait_clip_with_rotation_metadata_is_edited_upright(toy, tmp_path):
    footage = make_footage(tmp_path / "portrait.mp4", 4, 360, 640, [i / 30 for i in range(24)], rotation=-90)
    assert read_video(footage.path)[0].shape[1:3] == (360, 640)  # stored sideways
    mask = box_mask(footage)
    result, data = run(toy, footage, encode_png(mask_to_frames(mask[None])[0]))
    assert (result.working_width, result.working_height) == (48, 80)  # portrait on the grid too
    assert result.video.rotation == 0 and (result.video.width, result.video.height) == (360, 640)
    check_whole(footage, result, data, mask)


def test_a_variable_frame_rate_webm_keeps_its_timestamps(toy, tmp_path):
    times = [0, 0.05, 0.1, 0.3, 0.33, 0.6, 0.9, 1.0, 1.5, 2.0, 2.2, 2.63]
    footage = make_footage(tmp_path / "vfr.webm", 5, 320, 240, times, codec="libvpx-vp9", audio="libopus",
                           time_base=Fraction(1, 1000))  # fmt: skip
    mask = box_mask(footage)
    result, data = run(toy, footage, encode_png(mask_to_frames(mask[None])[0]))
    source = toy.ListMedia(pb.ListMediaRequest(), timeout=10).media
    duration = next(m.duration_s for m in source if m.filename == "vfr.webm")
    assert result.working_fps == 16.0 and result.working_frames == math.ceil(duration * 16 - 1e-6)
    check_whole(footage, result, data, mask)


def test_a_variable_frame_rate_webm_starting_after_0_keeps_its_first_timestamp(toy, tmp_path):
    """Its first frame at 7 ms (as a browser's recorder writes one): the output's first frame stays
    at 7 ms, every frame at its own source time, and the audio where it was beside them."""
    times = [0.007, 0.05, 0.1, 0.3, 0.33, 0.6, 0.9, 1.0, 1.5, 2.0, 2.2, 2.63]
    footage = make_footage(tmp_path / "late.webm", 5, 320, 240, times, codec="libvpx-vp9", audio="libopus",
                           time_base=Fraction(1, 1000))  # fmt: skip
    source_times = video_times(footage.path)
    assert source_times[0] == pytest.approx(0.007, abs=1e-9)
    mask = box_mask(footage)
    result, data = run(toy, footage, encode_png(mask_to_frames(mask[None])[0]))
    output_times = video_times(data)
    tick = 1e-3  # the source's time base
    assert abs(output_times[0] - source_times[0]) <= tick, (output_times[0], source_times[0])
    np.testing.assert_allclose(output_times, source_times, atol=tick)
    check_whole(footage, result, data, mask)


def test_decode_progress_counts_the_working_frames_the_plan_names(toy, tmp_path, monkeypatch):
    """12 source frames over 2.7 s are 46 working frames at 16 fps (a frame shown again through each
    gap): the decode progress counts those, as Plan's num_frames does, and so does the reading of a
    mask video when the job runs (here every mask video is read then, none before queueing)."""
    from framecast.engine.footage import shot_clip as shots

    monkeypatch.setattr(shots, "EARLY_MASK_PIXELS", 0)
    times = [0, 0.05, 0.1, 0.3, 0.33, 0.6, 0.9, 1.0, 1.5, 2.0, 2.2, 2.63]
    footage = make_footage(tmp_path / "gaps.webm", 5, 320, 240, times, codec="libvpx-vp9", audio=None,
                           time_base=Fraction(1, 1000))  # fmt: skip
    masks = np.stack([box_mask(footage)] * len(times))  # one mask frame per source frame
    source = upload(toy, footage.path.read_bytes(), footage.path.name)
    mask = upload(toy, encode_video(mask_to_frames(masks), 24, lossless=True), "masks.mp4")
    edited = upload(toy, encode_png(footage.edited_first_frame), "edited.png")
    request = pb.PropagateRequest(source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id, prompt="p",
                                  steps=1, guidance_scale=1.0, composite=True)  # fmt: skip
    planned = toy.Plan(pb.PlanRequest(propagate=request), timeout=60).num_frames
    assert planned == 46 > len(times)
    events = list(toy.Propagate(request, timeout=600))
    for phase in ("decode", "mask"):
        progress = [e.progress for e in events if e.WhichOneof("event") == "progress" and e.progress.phase == phase]
        assert progress and {p.total for p in progress} == {planned}, (phase, progress)
        assert progress[-1].step == planned, (phase, progress[-1])
    assert events[-1].result.working_frames == planned


def test_640x360_with_37_frames_and_a_mask_video_at_another_resolution(toy, tmp_path):
    footage = make_footage(tmp_path / "small.mp4", 6, 640, 360, [i / 24 for i in range(37)], audio=None)
    masks = np.stack([box_mask(footage)] * 37)
    small = np.stack([m[::4, ::4] for m in masks])  # 160x90: the same aspect
    result, data = run(toy, footage, encode_video(mask_to_frames(small), 24, lossless=True))
    assert not result.video.has_audio and result.num_frames == 37
    check_whole(footage, result, data, masks[0])


def test_a_short_4k_clip(toy, tmp_path):
    footage = make_footage(tmp_path / "uhd.mp4", 7, 3840, 2160, [i / 30 for i in range(8)])
    mask = box_mask(footage)
    result, data = run(toy, footage, encode_png(mask_to_frames(mask[None])[0]), encoding=pb.OUTPUT_ENCODING_MP4_H264)
    frames, times, _ = read_video(data)
    assert frames.shape == (8, 2160, 3840, 3) and result.video.has_audio
    np.testing.assert_allclose(times, footage.times, atol=1e-3)


def test_plan_answers_the_grid_windows_and_every_problem_without_queueing(toy, tmp_path):
    footage = make_footage(tmp_path / "plan.mp4", 3, 1920, 1080, [i / 30 for i in range(150)], audio=None)
    source = upload(toy, footage.path.read_bytes(), "plan.mp4")
    mask = upload(toy, encode_png(mask_to_frames(box_mask(footage)[None])[0]))
    jobs = len(toy.ListJobs(pb.ListJobsRequest(limit=1000), timeout=10).jobs)
    propagate = pb.PropagateRequest(source_id=source.id, mask_id=mask.id, edited_first_frame_id=mask.id, prompt="p",
                                    window_frames=33, shot=pb.ShotOptions(start_s=1.0, end_s=4.0))  # fmt: skip
    plan = toy.Plan(pb.PlanRequest(propagate=propagate), timeout=60)
    assert plan.ok and not plan.problems
    assert (plan.width, plan.height, plan.fps, plan.num_frames, plan.padded_frames) == (80, 48, 16.0, 48, 49)
    assert [(w.start, w.frames) for w in plan.windows] == [(0, 33), (28, 21)]  # the last window 4N+1 too
    assert plan.output_frames == 90 and plan.output_duration_s == pytest.approx(3.0)
    assert plan.estimated_device_bytes > 0 and plan.source.width == 1920 and plan.steps == 60
    wide = upload(toy, encode_png(np.zeros((100, 400, 3), np.uint8)))
    bad = pb.PropagateRequest(source_id=source.id, mask_id=wide.id, edited_first_frame_id=wide.id, prompt="p",
                              guidance_scale=99, shot=pb.ShotOptions(start_s=9.0))  # fmt: skip
    plan = toy.Plan(pb.PlanRequest(propagate=bad), timeout=60)
    assert not plan.ok
    assert {p.field for p in plan.problems} == {"shot.start_s", "mask_id", "edited_first_frame_id", "guidance_scale"}
    assert all(p.message for p in plan.problems)
    assert len(toy.ListJobs(pb.ListJobsRequest(limit=1000), timeout=10).jobs) == jobs  # nothing queued
