"""Track: a region on the first frame tracked through the shot alone, before any training, on the
built-in model's real server: the tracked mask is the one a training of the same shot and region
then uses (kept, not tracked again); a request without a region, or with a source it does not hold,
is refused as a training would be."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from framecast.v1 import framecast_pb2 as pb

from .footage import make_footage, read_video
from .test_e2e import upload

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 128x128 clip at 24 fps with sound, 1 s, and the box of its target on frame 0."""
    footage = make_footage(tmp_path_factory.mktemp("track") / "clip.mp4", 5, 128, 128, [k / 24 for k in range(24)])
    rows, cols = np.nonzero(footage.edit_mask[0])
    box = pb.Box(x=cols.min(), y=rows.min(), width=cols.max() - cols.min() + 1, height=rows.max() - rows.min() + 1)
    return footage, box


def download(stub, media_id: str) -> bytes:
    return b"".join(c.data for c in stub.DownloadMedia(pb.MediaRef(id=media_id), timeout=60))


def test_a_box_tracked_before_training_is_the_mask_the_training_uses(toy, clip):
    footage, box = clip
    source = upload(toy, footage.path.read_bytes(), "clip.mp4")
    events = list(toy.Track(pb.TrackRequest(source_id=source.id, mask_prompt=pb.MaskPrompt(box=box)), timeout=120))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "accepted" and events[0].accepted.kind == pb.JOB_KIND_TRACK
    assert kinds[-1] == "tracked" and kinds.count("tracked") == 1
    assert {e.progress.phase for e in events if e.HasField("progress")} == {"decode"}
    tracked = events[-1].tracked
    assert tracked.tracker  # the server's default tracker, named
    info = toy.GetJob(pb.JobRef(job_id=events[0].job_id), timeout=10)
    assert info.state == pb.JOB_STATE_SUCCEEDED and info.track_result == tracked

    masks, _, _ = read_video(download(toy, tracked.mask.id))
    assert len(masks) == 16  # the working frames: 1 s at 16 fps
    first = masks[0].mean(axis=-1) > 127.5
    rows, cols = np.nonzero(first)  # the tracker's frame is the source's at up to 512 px: here 128, as given
    assert abs(cols.min() - box.x) <= 2 and abs(rows.min() - box.y) <= 2
    assert abs(cols.max() + 1 - (box.x + box.width)) <= 2 and abs(rows.max() + 1 - (box.y + box.height)) <= 2

    # A training of the same shot and region finds it tracked: its tracked mask is the same stored video.
    train = pb.TrainRequest(adapter="track-then-train", source_id=source.id, prompt="p", steps=1,
                            mask_prompt=pb.MaskPrompt(box=box))  # fmt: skip
    trained = list(toy.Train(train, timeout=120))
    assert trained[-1].WhichOneof("event") == "adapter"
    (again,) = [e.tracked for e in trained if e.HasField("tracked")]
    assert again.mask.id == tracked.mask.id and list(again.lost_frames) == list(tracked.lost_frames)


def test_track_refuses_what_a_training_refuses(toy, clip):
    footage, box = clip
    source = upload(toy, footage.path.read_bytes(), "clip.mp4")
    with pytest.raises(grpc.RpcError) as refused:
        list(toy.Track(pb.TrackRequest(source_id=source.id), timeout=30))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "mask_prompt" in refused.value.details()

    outside = pb.MaskPrompt(box=pb.Box(x=500, y=500, width=10, height=10))
    with pytest.raises(grpc.RpcError) as refused:
        list(toy.Track(pb.TrackRequest(source_id=source.id, mask_prompt=outside), timeout=30))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "mask_prompt.box" in refused.value.details()

    unknown = "sha256:" + "0" * 64
    with pytest.raises(grpc.RpcError) as refused:
        list(toy.Track(pb.TrackRequest(source_id=unknown, mask_prompt=pb.MaskPrompt(box=box)), timeout=30))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
