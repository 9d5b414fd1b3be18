"""Train then Propagate without waiting: jobs run in FIFO order on one queue, so a propagation
that names an adapter a queued or running Train job creates is accepted and runs after it; a
second training of that adapter is refused, however close together the requests come."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from framecast.engine.errors import FailedPrecondition
from framecast.server.job import Job
from framecast.server.jobs import JobQueue
from framecast.v1 import framecast_pb2 as pb

from .test_bad_requests import expect
from .test_e2e import upload_scene


def kinds(events) -> list[str]:
    return [e.WhichOneof("event") for e in events]


@pytest.fixture()
def media(stub, scene):
    return upload_scene(stub, scene)


def train(stub, media, adapter: str, steps: int = 2, weights: pb.LossWeights | None = None):
    source, mask, _ = media
    request = pb.TrainRequest(adapter=adapter, source_id=source.id, mask_id=mask.id, prompt="p", steps=steps, rank=2,
                              loss_weights=weights)  # fmt: skip
    return stub.Train(request, timeout=300)


def propagate(stub, media, adapter: str, steps: int = 2):
    source, mask, edited = media
    request = pb.PropagateRequest(adapter=adapter, source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id,
                                  prompt="p", steps=steps)  # fmt: skip
    return stub.Propagate(request, timeout=300)


def accepted(stream) -> tuple[str, int]:
    """The job id and queue position a Train/Propagate stream starts with."""
    first, second = next(stream), next(stream)
    assert (first.WhichOneof("event"), second.WhichOneof("event")) == ("accepted", "queued")
    return first.job_id, second.queued.position


def test_propagate_with_an_adapter_whose_training_is_queued_or_running_runs_after_it(stub, media):
    blocker = propagate(stub, media, "", steps=5000)
    blocker_id, _ = accepted(blocker)
    try:
        next(e for e in blocker if e.WhichOneof("event") == "progress")  # running
        training = train(stub, media, "pipelined", steps=3)
        training_id, position = accepted(training)
        assert position == 1
        assert stub.GetAdapter(pb.AdapterRef(name="pipelined"), timeout=10).state == pb.ADAPTER_STATE_TRAINING
        queued = propagate(stub, media, "pipelined")  # was NOT_FOUND: the adapter does not exist yet
        assert accepted(queued)[1] == 2
        expect(grpc.StatusCode.FAILED_PRECONDITION, lambda: train(stub, media, "pipelined"), "'pipelined'", training_id)
    finally:
        stub.CancelJob(pb.JobRef(job_id=blocker_id), timeout=10)
        blocker.cancel()

    next(e for e in training if e.WhichOneof("event") == "progress")  # running: the adapter is TRAINING
    assert stub.GetAdapter(pb.AdapterRef(name="pipelined"), timeout=10).state == pb.ADAPTER_STATE_TRAINING
    running = propagate(stub, media, "pipelined")  # was FAILED_PRECONDITION "is being trained"
    accepted(running)
    assert kinds(training)[-1] == "adapter"
    for stream in (queued, running):
        events = list(stream)
        assert kinds(events)[-1] == "result" and events[-1].result.num_frames == 9
    assert stub.GetJob(pb.JobRef(job_id=training_id), timeout=10).state == pb.JOB_STATE_SUCCEEDED


def test_propagate_after_a_training_that_fails_or_is_cancelled_fails_with_its_error(stub, media):
    blocker = propagate(stub, media, "", steps=5000)
    blocker_id, _ = accepted(blocker)
    try:
        next(e for e in blocker if e.WhichOneof("event") == "progress")  # running: what follows queues
        # Loss weights at float32's limit: their sum overflows, the first loss is nan and the training diverges.
        doomed = train(stub, media, "doomed", weights=pb.LossWeights(edit=3e38, keep=3e38))
        doomed_id, _ = accepted(doomed)
        dropped = train(stub, media, "dropped")
        dropped_id, _ = accepted(dropped)
        after_dropped = propagate(stub, media, "dropped")
        after_doomed = propagate(stub, media, "doomed")
        accepted(after_dropped)
        accepted(after_doomed)
        assert stub.CancelJob(pb.JobRef(job_id=dropped_id), timeout=10).state == pb.JOB_STATE_CANCELLED
    finally:
        stub.CancelJob(pb.JobRef(job_id=blocker_id), timeout=10)
        blocker.cancel()

    expect(grpc.StatusCode.FAILED_PRECONDITION, lambda: list(doomed), "training diverged")
    expect(grpc.StatusCode.FAILED_PRECONDITION, lambda: list(after_doomed),
           f"adapter 'doomed' was not trained: its training job {doomed_id} failed: training diverged")
    expect(grpc.StatusCode.FAILED_PRECONDITION, lambda: list(after_dropped),
           f"adapter 'dropped' was not trained: its training job {dropped_id} was cancelled")
    assert stub.GetAdapter(pb.AdapterRef(name="doomed"), timeout=10).state == pb.ADAPTER_STATE_FAILED
    expect(grpc.StatusCode.NOT_FOUND, lambda: stub.GetAdapter(pb.AdapterRef(name="dropped"), timeout=10), "dropped")
    # Neither is pending any more: a propagation now says so at once, and the server goes on serving.
    expect(grpc.StatusCode.FAILED_PRECONDITION, lambda: propagate(stub, media, "doomed"), "'doomed' failed to train")
    expect(grpc.StatusCode.NOT_FOUND, lambda: propagate(stub, media, "dropped"), "'dropped'")
    assert kinds(propagate(stub, media, ""))[-1] == "result"


def test_of_trainings_of_one_adapter_submitted_at_once_exactly_one_is_queued(tmp_path):
    queue = JobQueue(tmp_path, max_queue=64)
    release = threading.Event()
    barrier = threading.Barrier(16)
    outcomes: list[Job | Exception] = []

    def submit() -> None:
        barrier.wait()
        try:
            outcomes.append(queue.submit(Job(pb.JOB_KIND_TRAIN, "same", lambda job: release.wait(10))))
        except FailedPrecondition as error:
            outcomes.append(error)

    threads = [threading.Thread(target=submit) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queued = [o for o in outcomes if isinstance(o, Job)]
    assert len(queued) == 1
    assert all(f"already being trained by job {queued[0].id}" in str(o) for o in outcomes if o is not queued[0])
    other = queue.submit(Job(pb.JOB_KIND_TRAIN, "other", lambda job: None))  # other names queue as before
    release.set()
    list(queued[0].follow())
    list(other.follow())
    again = queue.submit(Job(pb.JOB_KIND_TRAIN, "same", lambda job: None))  # once it has finished, it may be submitted again
    list(again.follow())
    assert {queued[0].info.state, other.info.state, again.info.state} == {pb.JOB_STATE_SUCCEEDED}
    queue.shutdown(grace_s=1)


def test_a_checkpoint_writes_the_record_so_far_and_never_over_the_final_one(tmp_path):
    from google.protobuf import json_format

    queue = JobQueue(tmp_path, max_queue=4)
    record = lambda job_id: json_format.Parse((tmp_path / f"{job_id}.json").read_text(), pb.JobInfo())  # noqa: E731
    seen = {}

    def run(job: Job) -> None:
        job.set_state(job.info.state, propagate_result=pb.PropagateResult(num_frames=5))
        job.checkpoint()
        seen["mid-run"] = record(job.id)

    job = queue.submit(Job(pb.JOB_KIND_PROPAGATE, "", run))
    list(job.follow())
    assert seen["mid-run"].state == pb.JOB_STATE_RUNNING and seen["mid-run"].propagate_result.num_frames == 5
    deadline = time.monotonic() + 10
    while record(job.id).state == pb.JOB_STATE_RUNNING and time.monotonic() < deadline:  # written just after the end
        time.sleep(0.01)
    job.checkpoint()  # a late one, as from a job abandoned at shutdown whose run goes on: nothing written
    final = record(job.id)
    assert final.state == pb.JOB_STATE_SUCCEEDED and final.propagate_result.num_frames == 5 and final.finished_at
    queue.shutdown(grace_s=1)
