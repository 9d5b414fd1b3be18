"""FramecastClient.track's request: the source, one region on the first frame and the shot, checked
before anything is sent."""

from __future__ import annotations

import pytest

from framecast.v1 import framecast_pb2 as pb

pytestmark = pytest.mark.timeout(30)


def test_track_sends_the_region_and_the_shot(client, fake_stub, server_stream):
    stub = fake_stub(Track=server_stream([pb.JobEvent(job_id="j", tracked=pb.TrackedMask(tracker="csrt"))]))
    events = list(client.track("sha256:ab", box=(10, 20, 30, 40), tracker="flow", start_s=0.5))
    assert [e.WhichOneof("event") for e in events] == ["tracked"]
    (name, request, timeout), = stub.calls
    assert name == "Track" and timeout == 5.0
    assert request.source_id == "sha256:ab" and request.mask_prompt.tracker == pb.TRACKER_FLOW
    assert (request.mask_prompt.box.x, request.mask_prompt.box.height) == (10, 40) and request.shot.start_s == 0.5

    list(client.track("sha256:ab", points=[(1, 2), (3, 4, False)]))
    points = stub.calls[-1][1].mask_prompt.points
    assert [(p.x, p.y, p.negative) for p in points] == [(1, 2, False), (3, 4, True)]
    assert not stub.calls[-1][1].HasField("shot")


def test_track_refuses_no_region_or_two_before_calling(client, fake_stub, server_stream):
    stub = fake_stub(Track=server_stream([]))
    with pytest.raises(ValueError, match="box, points or mask_frame0"):
        client.track("sha256:ab")
    with pytest.raises(ValueError, match="not box and points"):
        client.track("sha256:ab", box=(0, 0, 1, 1), points=[(0, 0)])
    with pytest.raises(TypeError):
        client.track("sha256:ab", box=(0, 0, 1, 1), steps=3)
    assert stub.calls == []


def test_a_track_stream_ends_at_its_tracked_region_and_a_training_s_does_not():
    from framecast.client.errors import FramecastError
    from framecast.client.jobs import run_track, wait_for_result

    tracked = pb.TrackedMask(mask=pb.MediaRef(id="sha256:m"), lost_frames=[3], tracker="csrt")
    track = [pb.JobEvent(job_id="t", accepted=pb.JobInfo(job_id="t", kind=pb.JOB_KIND_TRACK)),
             pb.JobEvent(job_id="t", tracked=tracked)]  # fmt: skip
    assert run_track(track) == tracked
    record = pb.JobInfo(job_id="t", kind=pb.JOB_KIND_TRACK, state=pb.JOB_STATE_SUCCEEDED, track_result=tracked)
    assert run_track([pb.JobEvent(job_id="t", accepted=record)]) == tracked  # ended before a restart: its record

    train = [pb.JobEvent(job_id="j", accepted=pb.JobInfo(job_id="j", kind=pb.JOB_KIND_TRAIN)),
             pb.JobEvent(job_id="j", tracked=tracked), pb.JobEvent(job_id="j", adapter=pb.AdapterInfo(name="a"))]  # fmt: skip
    assert wait_for_result(train).adapter.name == "a"
    with pytest.raises(FramecastError, match="not a tracked region"):
        run_track(train)
