"""What `framecast serve` writes to its log at the default level: a line for each job accepted and
each job ended, and one for each refused request, each with its request id, which is what an
operator greps for; and no library's warnings that say nothing about the server."""

from __future__ import annotations

import logging
import re
import time

import grpc
import pytest

from framecast.server.config import ServerConfig
from framecast.server.job import Job
from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc

from .test_bad_requests import expect
from .test_crash_recovery import serve  # noqa: F401 (a fixture)
from .test_e2e import upload_scene


def request(request_id: str) -> list[tuple[str, str]]:
    return [("x-request-id", request_id)]


def lines_of(log: str, request_id: str) -> list[str]:
    """The log's lines made in the request's scope, without their time: 'INFO name: message'."""
    marker = f" [{request_id}]: "
    return [re.sub(r"^\S+ \S+ ", "", line).replace(marker, ": ") for line in log.splitlines() if marker in line]


def test_each_job_and_each_refused_request_has_its_lines_with_its_request_id(serve, scene, tmp_path):  # noqa: F811
    server = serve(tmp_path / "data")
    source, mask, edited = upload_scene(server.stub, scene)
    train = pb.TrainRequest(adapter="logged", source_id=source.id, mask_id=mask.id, steps=2, rank=2)
    trained = list(server.stub.Train(train, metadata=request("train-1"), timeout=300))
    propagate = pb.PropagateRequest(adapter="logged", source_id=source.id, mask_id=mask.id,
                                    edited_first_frame_id=edited.id, steps=1)  # fmt: skip
    propagated = list(server.stub.Propagate(propagate, metadata=request("propagate-1"), timeout=300))
    # A training cancelled by another request: its lines still name the request that made it.
    long = server.stub.Train(pb.TrainRequest(adapter="cut", source_id=source.id, mask_id=mask.id, steps=500, rank=2),
                             metadata=request("train-2"), timeout=300)  # fmt: skip
    cut = next(long).job_id
    next(event for event in long if event.WhichOneof("event") == "progress")
    server.stub.CancelJob(pb.JobRef(job_id=cut), metadata=request("cancel-1"), timeout=10)
    with pytest.raises(grpc.RpcError):
        list(long)
    bad_name = pb.TrainRequest(adapter="bad name!", source_id=source.id, mask_id=mask.id, steps=2)
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: server.stub.Train(bad_name, metadata=request("refused-1"), timeout=60))
    expect(grpc.StatusCode.NOT_FOUND,
           lambda: server.stub.GetJob(pb.JobRef(job_id="nobody"), metadata=request("refused-2"), timeout=10))  # fmt: skip
    log = server.stop()

    job = trained[0].job_id
    assert lines_of(log, "train-1")[0] == f"INFO framecast.server.jobs: job {job} accepted: train, adapter 'logged', request train-1"
    ended = [line for line in lines_of(log, "train-1") if f"job {job} succeeded" in line]
    assert len(ended) == 1, log
    loss = trained[-1].adapter.final_loss
    assert re.fullmatch(rf"INFO framecast.server.jobs: job {job} succeeded: train, adapter 'logged', request train-1, "
                        rf"ran \d+\.\d\d s after \d+\.\d\d s queued; adapter 'logged' rank 2, final loss {loss:.4g}",
                        ended[0])  # fmt: skip

    job, result = propagated[0].job_id, propagated[-1].result
    assert [line.split(": ", 1)[1] for line in lines_of(log, "propagate-1") if f"job {job}" in line] == [
        f"job {job} accepted: propagate, adapter 'logged', request propagate-1",
        AnyText(rf"job {job} succeeded: propagate, adapter 'logged', request propagate-1, ran \d+\.\d\d s after "
                rf"\d+\.\d\d s queued; output {result.video.id}, 9 frames, background PSNR \d+\.\d dB, edit "
                + re.escape(result.fidelity.summary)),
    ]  # fmt: skip

    assert [line.split(": ", 1)[1] for line in lines_of(log, "train-2") if f"job {cut}" in line] == [
        f"job {cut} accepted: train, adapter 'cut', request train-2",
        AnyText(rf"job {cut} cancelled: train, adapter 'cut', request train-2, ran \d+\.\d\d s after \d+\.\d\d s "
                r"queued; CANCELLED: job cancelled"),
    ]  # fmt: skip

    assert lines_of(log, "refused-1") == [
        AnyText(r"INFO framecast.server.errors: refused Train: INVALID_ARGUMENT \(field adapter\): adapter .*'bad name!'.*")
    ]
    assert lines_of(log, "refused-2") == [
        "INFO framecast.server.errors: refused GetJob: NOT_FOUND: job 'nobody' not found"
    ]


def test_a_fresh_servers_first_plan_and_training_print_no_peft_warning(serve, scene, tmp_path):  # noqa: F811
    server = serve(tmp_path / "data")
    source, mask, _ = upload_scene(server.stub, scene)
    train = pb.TrainRequest(adapter="first", source_id=source.id, mask_id=mask.id, steps=2, rank=2)
    # Plan traces a training step's memory with the slot and a training adapter attached, as the
    # engine runs it; the training attaches its adapter beside the slot.
    assert server.stub.Plan(pb.PlanRequest(train=train), timeout=120).estimated_device_bytes > 0
    assert list(server.stub.Train(train, timeout=300))[-1].WhichOneof("event") == "adapter"
    log = server.stop()
    assert "job" in log and "Already found a `peft_config`" not in log and "UserWarning" not in log, log


def test_a_cluster_fronts_refusals_are_logged_with_their_request_id(tiny_model_dir, tmp_path, caplog):
    """The front alone, without replicas (no Ray): its own refusals, before anything reaches a replica."""
    from framecast.server.cluster.front import ClusterFront

    caplog.set_level(logging.INFO, logger="framecast")
    config = ServerConfig.build(model_dir=str(tiny_model_dir), data_dir=str(tmp_path / "data"), port=0)
    front = ClusterFront(config, replicas=None).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
            stub = framecast_pb2_grpc.FramecastStub(channel)
            expect(grpc.StatusCode.INVALID_ARGUMENT,
                   lambda: list(stub.Train(pb.TrainRequest(adapter="bad name!"), metadata=request("front-1"), timeout=30)))  # fmt: skip
            expect(grpc.StatusCode.NOT_FOUND, lambda: stub.GetJob(pb.JobRef(job_id="nobody"), metadata=request("front-2"),
                                                                   timeout=10))  # fmt: skip
    finally:
        front.stop(grace=0)
    refusals = [(r.request_id, r.getMessage()) for r in caplog.records if r.getMessage().startswith("refused")]
    assert refusals == [("front-1", AnyText(r"refused Train: INVALID_ARGUMENT \(field adapter\): adapter .*")),
                        ("front-2", "refused GetJob: NOT_FOUND: job 'nobody' not found")]  # fmt: skip


def test_a_cluster_fronts_jobs_have_their_lines(tmp_path, caplog):
    """A front's job, followed from its replica's events (here the events a replica sends for a
    training), is accepted and ends in the front's log as on a single server."""
    from framecast.server.cluster.front_jobs import FrontJobs, relay

    caplog.set_level(logging.INFO, logger="framecast")
    accepted = pb.JobInfo(job_id="f" * 16, kind=pb.JOB_KIND_TRAIN, state=pb.JOB_STATE_QUEUED, adapter="remote",
                          created_at=time.time(), request_id="front-train")  # fmt: skip
    events = [pb.JobEvent(job_id=accepted.job_id, accepted=accepted),
              pb.JobEvent(job_id=accepted.job_id, progress=pb.Progress(phase="motion", step=1, total=1)),
              pb.JobEvent(job_id=accepted.job_id, adapter=pb.AdapterInfo(name="remote", rank=4, final_loss=0.5))]  # fmt: skip
    queue = FrontJobs(tmp_path / "fronts", "front", tmp_path / "cancel")
    job = Job(accepted.kind, accepted.adapter, relay(iter(e.SerializeToString() for e in events[1:])),
              request_id=accepted.request_id)  # fmt: skip
    job.info.CopyFrom(accepted)
    list(queue.submit(job).follow())
    queue.shutdown(1.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "framecast.server.jobs"]
    assert lines == [
        f"job {'f' * 16} accepted: train, adapter 'remote', request front-train",
        AnyText(rf"job {'f' * 16} succeeded: train, adapter 'remote', request front-train, ran \d+\.\d\d s after "
                r"\d+\.\d\d s queued; adapter 'remote' rank 4, final loss 0.5"),
    ]  # fmt: skip


class AnyText(str):
    """Equal to any text the regular expression matches whole (for the parts of a line that vary)."""

    def __eq__(self, other) -> bool:
        return isinstance(other, str) and re.fullmatch(str(self), other) is not None

    __hash__ = str.__hash__
