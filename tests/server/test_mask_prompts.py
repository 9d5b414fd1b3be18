"""Masks from a box, points or a frame-0 mask, tracked through the shot on the server, end to end
on the built-in model: the edit follows the region while the background stays untouched; a
region that is lost is reported, not invented; a single mask the region moves out of is flagged."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from framecast.common.media import encode_png, mask_to_frames
from framecast.engine.toy.world import SceneConfig, make_scene
from framecast.v1 import framecast_pb2 as pb

from .footage import read_video, write_video
from .test_e2e import upload


@pytest.fixture(scope="module")
def moving(tmp_path_factory):
    """A 256x256 clip at 16 fps (the working rate) whose target crosses the frame, as a file."""
    from PIL import Image

    scene = make_scene(4, SceneConfig(frames=25, sprites=2, edit="recolor"))
    scale = lambda frames, nearest=False: np.stack([  # noqa: E731
        np.asarray(Image.fromarray(f).resize((256, 256), Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR))
        for f in frames])  # fmt: skip
    frames = scale(scene.source)
    regions = scale(scene.target_amodal_mask.astype(np.uint8) * 255, nearest=True) > 127
    path = tmp_path_factory.mktemp("moving") / "moving.mp4"
    write_video(path, frames, [k / 16 for k in range(25)], audio=None)
    edited = scale(scene.edited[:1])[0]
    return path, regions, edited


def propagate(stub, path, edited, prompt: pb.MaskPrompt | None = None, mask_id: str = "") -> tuple[list, bytes]:
    source = upload(stub, path.read_bytes(), path.name)
    edited_ref = upload(stub, encode_png(edited))
    request = pb.PropagateRequest(source_id=source.id, mask_id=mask_id, edited_first_frame_id=edited_ref.id, prompt="p",
                                  steps=2, guidance_scale=1.0, composite=True,
                                  output_encoding=pb.OUTPUT_ENCODING_MP4_H264_LOSSLESS)  # fmt: skip
    if prompt is not None:
        request.mask_prompt.CopyFrom(prompt)
    events = list(stub.Propagate(request, timeout=600))
    assert events[-1].WhichOneof("event") == "result"
    data = b"".join(c.data for c in stub.DownloadMedia(pb.MediaRef(id=events[-1].result.video.id), timeout=60))
    return events, data


def tracked_mask(stub, events) -> np.ndarray:
    (tracked,) = [e.tracked for e in events if e.WhichOneof("event") == "tracked"]
    data = b"".join(c.data for c in stub.DownloadMedia(pb.MediaRef(id=tracked.mask.id), timeout=60))
    return read_video(data)[0].mean(axis=-1) > 127.5


def follows(path, regions, data, mask: np.ndarray) -> None:
    """The edit follows the region: the output changed inside the true region in late frames (far
    from where it started), and is the decoded source exactly away from the tracked mask."""
    output, _, _ = read_video(data)
    source, _, _ = read_video(path)
    changed = np.abs(output.astype(int) - source.astype(int)).sum(-1)
    late = range(16, 25)
    assert np.mean([changed[k][regions[k] & ~regions[0]].mean() for k in late]) > 2.0
    away = ~ndimage.binary_dilation(mask, iterations=24)  # the method's bbox growth and a grid cell or two
    assert away[16:].mean() > 0.3
    np.testing.assert_array_equal(output[away], source[away])


def test_a_box_on_the_first_frame_is_tracked_and_the_edit_follows_it(toy, moving):
    path, regions, edited = moving
    ys, xs = np.nonzero(regions[0])
    box = pb.Box(x=xs.min(), y=ys.min(), width=np.ptp(xs) + 1, height=np.ptp(ys) + 1)
    events, data = propagate(toy, path, edited, pb.MaskPrompt(box=box))
    mask = tracked_mask(toy, events)
    assert mask.shape == (25, 256, 256)
    from framecast.engine.masks.trackers import box_iou

    assert np.mean([box_iou(mask[k], regions[k]) for k in range(25)]) > 0.6
    follows(path, regions, data, mask)


def _notices(events) -> dict[str, str]:
    """The notices of a job's inputs (not the result's verdict on its edit, ``edit_*``)."""
    return {e.notice.code: e.notice.message for e in events
            if e.WhichOneof("event") == "notice" and not e.notice.code.startswith("edit_")}  # fmt: skip


def test_a_box_hanging_off_any_side_is_clipped_to_the_frame_and_said(toy, moving):
    """Off the left (an object entering from there) as off the right: clipped the same way, the
    tracked region starts from the clipped box, and a notice names the box given and the box kept."""
    path, regions, edited = moving
    ys, xs = np.nonzero(regions[0])
    top, height = int(ys.min()), int(np.ptp(ys)) + 1
    left = pb.Box(x=-40, y=top, width=int(xs.max()) + 1 + 40, height=height)
    events, _ = propagate(toy, path, edited, pb.MaskPrompt(box=left))
    said = _notices(events)
    assert said["box_clipped"] == (f"mask_prompt.box -40,{top},{int(xs.max()) + 41},{height} reaches outside the "
                                   f"256x256 first frame: clipped to 0,{top},{int(xs.max()) + 1},{height} (x, y, "
                                   "width, height in source pixels)"), said  # fmt: skip
    first = tracked_mask(toy, events)[0]
    rows, cols = np.nonzero(first)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (0, xs.max(), top, top + height - 1)
    right = pb.Box(x=int(xs.min()), y=top, width=256 - int(xs.min()) + 40, height=height)
    events, _ = propagate(toy, path, edited, pb.MaskPrompt(box=right))
    assert f"clipped to {int(xs.min())},{top},{256 - int(xs.min())},{height} " in _notices(events)["box_clipped"]
    cols = np.nonzero(tracked_mask(toy, events)[0].any(0))[0]
    assert (cols.min(), cols.max()) == (xs.min(), 255)


def test_a_box_over_most_of_the_frame_is_warned_about_and_one_outside_it_refused(toy, moving):
    import grpc

    path, _, edited = moving
    source = upload(toy, path.read_bytes(), path.name)
    base = dict(source_id=source.id, edited_first_frame_id=upload(toy, encode_png(edited)).id, prompt="p")
    huge = pb.PropagateRequest(**base, mask_prompt=pb.MaskPrompt(box=pb.Box(x=-100, y=-100, width=1000, height=1000)))
    plan = toy.Plan(pb.PlanRequest(propagate=huge), timeout=60)
    assert plan.ok and [n.code for n in plan.notices] == ["box_clipped", "box_large"], plan
    assert "mask_prompt.box -100,-100,1000,1000 reaches outside the 256x256 first frame: clipped to 0,0,256,256" \
        in plan.notices[0].message  # fmt: skip
    assert plan.notices[1].message.startswith("mask_prompt.box 0,0,256,256 covers 100% of the 256x256 first frame "
                                              "(over 60%): the edit region is nearly the whole frame")  # fmt: skip
    most = pb.MaskPrompt(box=pb.Box(x=10, y=10, width=220, height=220))  # 74% of the frame, inside it
    events, _ = propagate(toy, path, edited, most)
    assert set(_notices(events)) == {"box_large"} and "covers 74%" in _notices(events)["box_large"]
    for box in (pb.Box(x=-100, y=10, width=60, height=60), pb.Box(x=300, y=10, width=60, height=60),
                pb.Box(x=10, y=256, width=60, height=60)):  # fmt: skip
        with pytest.raises(grpc.RpcError) as caught:
            list(toy.Propagate(pb.PropagateRequest(**base, mask_prompt=pb.MaskPrompt(box=box)), timeout=60))
        details = caught.value.details()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, details
        shown = f"{box.x:g},{box.y:g},{box.width:g},{box.height:g}"
        assert f"mask_prompt.box lies entirely outside the 256x256 first frame" in details and shown in details, details
        assert "give a box over the region to edit" in details


def test_a_frame0_mask_image_is_tracked(toy, moving):
    path, regions, edited = moving
    frame0 = upload(toy, encode_png(mask_to_frames(regions[:1])[0][::2, ::2]))  # another size, the same aspect
    events, data = propagate(toy, path, edited, pb.MaskPrompt(frame0_mask_id=frame0.id, tracker=pb.TRACKER_CSRT))
    follows(path, regions, data, tracked_mask(toy, events))


def test_points_on_the_first_frame_make_the_region(toy, moving):
    path, regions, edited = moving
    ys, xs = np.nonzero(regions[0])
    points = [pb.Point(x=float(xs.mean()), y=float(ys.mean())), pb.Point(x=4, y=4, negative=True)]
    events, data = propagate(toy, path, edited, pb.MaskPrompt(points=points))
    mask = tracked_mask(toy, events)
    from framecast.engine.masks.trackers import box_iou

    assert box_iou(mask[0], regions[0]) > 0.5
    follows(path, regions, data, mask)


def test_a_region_that_leaves_the_frame_is_reported_lost(toy, tmp_path):
    frames = np.full((24, 96, 128, 3), 60, np.uint8)
    frames[..., 1] = np.linspace(40, 120, 128, dtype=np.uint8)[None, None]
    for k in range(24):
        x = 20 + 8 * k
        frames[k, 30:62, x : x + 24] = (220, 40, 40)
        frames[k, 40:50, x + 6 : x + 12] = (255, 255, 255)
    path = tmp_path / "exit.mp4"
    write_video(path, frames, [k / 16 for k in range(24)], audio=None)
    events, _ = propagate(toy, path, frames[0], pb.MaskPrompt(box=pb.Box(x=20, y=30, width=24, height=32)))
    notices = [e.notice for e in events if e.WhichOneof("event") == "notice"]
    (lost,) = [n for n in notices if n.code == "region_lost"]
    assert {14, 15, 23} <= set(lost.frames) and "left unedited" in lost.message
    (tracked,) = [e.tracked for e in events if e.WhichOneof("event") == "tracked"]
    assert list(tracked.lost_frames) == list(lost.frames)
    mask = tracked_mask(toy, events)
    assert not mask[list(lost.frames)].any() and mask[0].any()


def test_a_single_mask_the_region_moves_out_of_is_flagged(toy, moving):
    path, regions, edited = moving
    still = upload(toy, encode_png(mask_to_frames(regions[:1])[0]))
    events, _ = propagate(toy, path, edited, mask_id=still.id)
    # the notices of its inputs (the base model's edit is judged too: that is the result's)
    (notice,) = [e.notice for e in events if e.WhichOneof("event") == "notice" and not e.notice.code.startswith("edit_")]
    assert notice.code == "region_moves" and "mask_prompt" in notice.message and len(notice.frames) > 10


def test_a_tracked_mask_sent_back_as_a_mask_video_gives_the_same_edit(toy, moving):
    path, regions, edited = moving
    ys, xs = np.nonzero(regions[0])
    box = pb.Box(x=xs.min(), y=ys.min(), width=np.ptp(xs) + 1, height=np.ptp(ys) + 1)
    events, data = propagate(toy, path, edited, pb.MaskPrompt(box=box))
    (tracked,) = [e.tracked for e in events if e.WhichOneof("event") == "tracked"]
    again_events, again = propagate(toy, path, edited, mask_id=tracked.mask.id)
    assert not [e for e in again_events if e.WhichOneof("event") == "tracked"]
    np.testing.assert_array_equal(read_video(again)[0], read_video(data)[0])


def test_bad_mask_prompts_are_refused_up_front_naming_the_field(toy, moving):
    import grpc

    path, _, edited = moving
    source = upload(toy, path.read_bytes(), path.name)
    base = dict(source_id=source.id, edited_first_frame_id=upload(toy, encode_png(edited)).id, prompt="p")
    cases = [
        (pb.MaskPrompt(box=pb.Box(x=300, y=0, width=10, height=10)), "mask_prompt.box lies entirely outside"),
        (pb.MaskPrompt(box=pb.Box(x=10, y=0, width=0, height=10)), "mask_prompt.box must be a box of finite position"),
        (pb.MaskPrompt(points=[pb.Point(x=-1, y=5)]), "mask_prompt.points[0]"),
        (pb.MaskPrompt(points=[pb.Point(x=5, y=5, negative=True)]), "mask_prompt.points"),
        (pb.MaskPrompt(), "mask_prompt"),
        (pb.MaskPrompt(box=pb.Box(x=1, y=1, width=9, height=9), tracker=pb.TRACKER_SAM2), "serve --sam2-checkpoint"),
    ]
    for prompt, words in cases:
        with pytest.raises(grpc.RpcError) as caught:
            list(toy.Propagate(pb.PropagateRequest(**base, mask_prompt=prompt), timeout=60))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in caught.value.details(), caught.value.details()


def test_sam2_from_a_local_checkpoint_runs_through_the_server(start_server_at, moving, tmp_path):
    """serve with a SAM2 checkpoint (a small random-weight one): ServerInfo lists the tracker, and a
    frame-0 mask or points tracked by it give an output, the frames where its (random) masks are
    empty reported lost. Points are the default tracker's input there: SAM2 when the server has it."""
    import grpc

    from framecast.engine.model import builtin_model_dir
    from framecast.engine.toy.architectures import make_tiny_sam2
    from framecast.v1 import framecast_pb2_grpc

    path, regions, edited = moving
    server = start_server_at(builtin_model_dir(), tmp_path / "data", sam2_checkpoint=str(make_tiny_sam2(tmp_path / "sam2")))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        assert list(stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).trackers) == ["csrt", "flow", "sam2"]
        frame0 = upload(stub, encode_png(mask_to_frames(regions[:1])[0]))
        events, data = propagate(stub, path, edited, pb.MaskPrompt(frame0_mask_id=frame0.id, tracker=pb.TRACKER_SAM2))
        (tracked,) = [e.tracked for e in events if e.WhichOneof("event") == "tracked"]
        assert tracked.tracker == "sam2" and tracked.mask.num_frames == 25
        mask = tracked_mask(stub, events)
        assert mask[0].any() and sorted(tracked.lost_frames) == [k for k in range(25) if not mask[k].any()]
        assert read_video(data)[0].shape == (25, 256, 256, 3)
        ys, xs = np.nonzero(regions[0])
        events, _ = propagate(stub, path, edited, pb.MaskPrompt(points=[pb.Point(x=float(xs.mean()), y=float(ys.mean()))]))
        (tracked,) = [e.tracked for e in events if e.WhichOneof("event") == "tracked"]
        mask = tracked_mask(stub, events)
        assert tracked.tracker == "sam2" and sorted(tracked.lost_frames) == [k for k in range(25) if not mask[k].any()]
