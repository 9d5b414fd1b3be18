"""A server you can put on a network (issue 22): malformed bytes, health, streams, tokens, TLS.

Every test runs the real server on a loopback port; certificates are made here with cryptography.
"""

from __future__ import annotations

import logging
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["Framecast"]
GARBAGE = b"\xff\xff\xff"  # a field tag whose varint never ends: no message decodes from it


def raw_call(channel: grpc.Channel, method, payload: bytes, timeout: float = 10, metadata=None):
    """Call ``method`` (a MethodDescriptor) with ``payload`` as its serialized request, unchecked;
    returns the responses (raw bytes)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    if method.client_streaming and method.server_streaming:
        return list(channel.stream_stream(path)(iter([payload]), timeout=timeout, metadata=metadata))
    if method.client_streaming:
        return channel.stream_unary(path)(iter([payload]), timeout=timeout, metadata=metadata)
    if method.server_streaming:
        return list(channel.unary_stream(path)(payload, timeout=timeout, metadata=metadata))
    return channel.unary_unary(path)(payload, timeout=timeout, metadata=metadata)


def rpc_code(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


# ---- defect 6: bytes that do not decode ------------------------------------------------------


@pytest.mark.parametrize("method", SERVICE.methods, ids=lambda m: m.name)
def test_request_bytes_that_do_not_decode_are_invalid_argument(grpc_server, method):
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            raw_call(channel, method, GARBAGE)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert f"does not decode as {method.input_type.full_name}" in caught.value.details()
        assert framecast_pb2_grpc.FramecastStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=10).ready


def test_health_bytes_that_do_not_decode_are_invalid_argument(grpc_server):
    check = health_pb2.DESCRIPTOR.services_by_name["Health"].methods_by_name["Check"]
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            raw_call(channel, check, GARBAGE)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "grpc.health.v1.HealthCheckRequest" in caught.value.details()


def test_an_oversize_message_is_logged_as_what_it_is(grpc_server, caplog):
    upload = SERVICE.methods_by_name["UploadMedia"]
    caplog.set_level(logging.INFO, logger="framecast")
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}", options=[("grpc.max_send_message_length", -1)]) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            raw_call(channel, upload, bytes(pb.MediaChunk(data=b"\0" * (65 << 20)).SerializeToString()))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    deadline = time.monotonic() + 10
    while "over the server's receive limit" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "over the server's receive limit" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


# ---- health that means something, no stalls (defect 4) ---------------------------------------


def health_status(channel: grpc.Channel, service: str, timeout: float = 5) -> int:
    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return answer.status


@pytest.fixture()
def held_job(grpc_server):
    """A job the real queue runs until the test lets it end: streams following it stay open."""
    from framecast.server.jobs import Job

    release = threading.Event()
    job = grpc_server.queue.submit(Job(pb.JOB_KIND_TRAIN, "", lambda handle: release.wait(120)))
    yield job
    release.set()


def open_watchers(channel: grpc.Channel, job_id: str, count: int) -> list:
    """``count`` WatchJob streams on ``job_id``, each with its first event read (so each is open on the server)."""
    stub = framecast_pb2_grpc.FramecastStub(channel)
    streams = []
    for _ in range(count):
        stream = stub.WatchJob(pb.JobRef(job_id=job_id), timeout=120)
        assert next(stream).WhichOneof("event") == "accepted"
        streams.append(stream)
    return streams


def test_liveness_and_readiness_are_health_names(grpc_server):
    from framecast.server.health import LIVENESS, READINESS

    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        for name in ("", "framecast.v1.Framecast", LIVENESS, READINESS):
            assert health_status(channel, name) == health_pb2.HealthCheckResponse.SERVING, name


def test_readiness_says_no_while_a_model_cannot_run_jobs(tiny_model_dir, tmp_path):
    """A model that fails to load: live (the process answers), never ready."""
    from framecast.server.app import start_server
    from framecast.server.config import ServerConfig

    from .test_startup import hollow_model

    model = hollow_model(tiny_model_dir, tmp_path / "hollow")
    server = start_server(ServerConfig.build(model_dir=str(model), data_dir=str(tmp_path / "data"), port=0))
    try:
        assert not server.wait_ready(120)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            assert health_status(channel, "liveness") == health_pb2.HealthCheckResponse.SERVING
            assert health_status(channel, "readiness") == health_pb2.HealthCheckResponse.NOT_SERVING
            assert health_status(channel, "") == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        server.stop(grace=1)


def test_open_streams_never_starve_health_or_unary_calls(grpc_server, held_job):
    """64 open WatchJob streams (16 stalled the server before): health and GetServerInfo still answer."""
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        streams = open_watchers(channel, held_job.id, 64)
        stub = framecast_pb2_grpc.FramecastStub(channel)
        for _ in range(20):
            assert health_status(channel, "readiness", timeout=5) == health_pb2.HealthCheckResponse.SERVING
            info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5)
        assert info.open_streams >= 64 and info.max_streams >= 64 and info.unary_workers >= 1
        for stream in streams:
            stream.cancel()


def test_a_stream_beyond_the_cap_is_resource_exhausted(start_server_at, tiny_model_dir, tmp_path):
    from framecast.server.jobs import Job

    server = start_server_at(tiny_model_dir, tmp_path, max_streams=4)
    release = threading.Event()
    job = server.queue.submit(Job(pb.JOB_KIND_TRAIN, "", lambda handle: release.wait(120)))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            streams = open_watchers(channel, job.id, 4)
            stub = framecast_pb2_grpc.FramecastStub(channel)
            info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5)
            assert (info.max_streams, info.open_streams, info.max_message_bytes) == (4, 4, 64 << 20)
            with pytest.raises(grpc.RpcError) as caught:
                next(stub.WatchJob(pb.JobRef(job_id=job.id), timeout=10))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "4 streams are open" in caught.value.details() and "--max-streams" in caught.value.details()
            assert health_status(channel, "readiness") == health_pb2.HealthCheckResponse.SERVING
            streams[0].cancel()  # its place comes back once the server sees the client gone (within a second)
            deadline = time.monotonic() + 10
            while stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5).open_streams > 3:
                assert time.monotonic() < deadline, "a cancelled stream kept its place"
                time.sleep(0.1)
            assert next(stub.WatchJob(pb.JobRef(job_id=job.id), timeout=10)).WhichOneof("event") == "accepted"
    finally:
        release.set()


def test_a_watcher_gets_progress_coalesced_and_every_other_event(tmp_path):
    """Watchers get progress at most every WATCH_PROGRESS_EVERY_S, the latest before any other event; a
    job's own stream gets every event."""
    from framecast.server.jobs import WATCH_PROGRESS_EVERY_S, Job, JobQueue

    queue = JobQueue(tmp_path, max_queue=4)
    go = threading.Event()

    def run(handle):
        go.wait(30)
        for phase, steps in (("motion", 50), ("appearance", 30)):
            for step in range(1, steps + 1):
                handle.emit(progress=pb.Progress(phase=phase, step=step, total=steps))
                time.sleep(0.002)
        handle.emit(frame=pb.Frame(index=0))

    job = queue.submit(Job(pb.JOB_KIND_TRAIN, "", run))
    watched = []
    watcher = threading.Thread(target=lambda: watched.extend(job.follow(replay_progress=False, coalesce_progress=True)))
    watcher.start()
    time.sleep(0.1)
    started = time.monotonic()
    go.set()
    everything = list(job.follow())
    watcher.join(30)
    elapsed = time.monotonic() - started
    progress = [(e.progress.phase, e.progress.step) for e in everything if e.WhichOneof("event") == "progress"]
    assert len(progress) == 80
    seen = [(e.progress.phase, e.progress.step) for e in watched if e.WhichOneof("event") == "progress"]
    assert len(seen) <= elapsed / WATCH_PROGRESS_EVERY_S + 3, seen
    assert ("motion", 50) in seen and seen[-1] == ("appearance", 30)  # each phase's last step, in order
    assert [e.WhichOneof("event") for e in watched][-1] == "frame"
    queue.shutdown(1)
