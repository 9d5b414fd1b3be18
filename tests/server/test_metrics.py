"""Metrics scraped over HTTP from a real server after real jobs, and request ids end to end."""

from __future__ import annotations

import logging
import re
import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from framecast.engine.errors import InvalidInput
from framecast.server.job import Job
from framecast.server.jobs import JobQueue
from framecast.server.request_ids import install_log_records, request_scope
from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc

from .test_e2e import upload_scene

TRAIN = "/framecast.v1.Framecast/Train"
WATCH = "/framecast.v1.Framecast/WatchJob"


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    from framecast.server.app import start_server
    from framecast.server.config import ServerConfig

    config = ServerConfig.build(model_dir=str(tiny_model_dir), data_dir=str(tmp_path_factory.mktemp("metrics-data")),
                                host="127.0.0.1", port=0, metrics_port=0, max_frames=33, max_pixels=128 * 128)  # fmt: skip
    running = start_server(config)
    assert running.wait_ready(timeout=120), running.load_error
    yield running
    running.stop(grace=5)


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield framecast_pb2_grpc.FramecastStub(channel)


@pytest.fixture(scope="module")
def media(stub, scene):
    return upload_scene(stub, scene)


def scrape(server) -> dict[tuple[str, tuple], float]:
    """Every sample on the server's /metrics page, by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def train(stub, media, adapter: str, steps: int = 2, metadata=()) -> list[pb.JobEvent]:
    source, mask, _ = media
    request = pb.TrainRequest(adapter=adapter, source_id=source.id, mask_id=mask.id, prompt="p", steps=steps, rank=2,
                              seed=1)  # fmt: skip
    return list(stub.Train(request, timeout=300, metadata=metadata))


def test_a_scrape_after_jobs_shows_them(server, stub, media):
    before = scrape(server)
    train(stub, media, "metrics-a", steps=3)
    with pytest.raises(grpc.RpcError) as refused:
        train(stub, media, "bad name!")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    source, mask, edited = media
    propagate = pb.PropagateRequest(adapter="metrics-a", source_id=source.id, mask_id=mask.id, prompt="p", steps=3,
                                    edited_first_frame_id=edited.id)  # fmt: skip
    propagated = list(stub.Propagate(propagate, timeout=300))
    assert propagated[-1].WhichOneof("event") == "result"
    verdict = pb.EditVerdict.Name(propagated[-1].result.fidelity.verdict).removeprefix("EDIT_VERDICT_").lower()
    after = scrape(server)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    train_ok = {"kind": "train", "state": "succeeded"}
    assert grew("framecast_job_duration_seconds_count", **train_ok) == 1
    assert grew("framecast_job_duration_seconds_sum", **train_ok) > 0
    assert grew("framecast_jobs_total", **train_ok) == 1
    assert grew("framecast_jobs_total", kind="propagate", state="succeeded") == 1
    assert grew("framecast_edit_verdicts_total", verdict=verdict) == 1  # whether the edit held, counted
    for phase in ("decode", "motion"):
        assert grew("framecast_job_phase_duration_seconds_count", kind="train", phase=phase) == 1, phase
    for phase in ("decode", "denoise", "encode", "measure"):
        assert grew("framecast_job_phase_duration_seconds_count", kind="propagate", phase=phase) == 1, phase
    assert value(after, "framecast_train_steps_per_second") > 0
    assert value(after, "framecast_sampling_steps_per_second") > 0
    assert grew("framecast_queue_wait_seconds_count", kind="train") == 1
    assert grew("framecast_rpcs_total", method=TRAIN, code="OK") == 1
    assert grew("framecast_rpcs_total", method=TRAIN, code="INVALID_ARGUMENT") == 1
    assert grew("framecast_rpc_duration_seconds_count", method=TRAIN) == 2
    assert value(after, "framecast_rpcs_total", method="/framecast.v1.Framecast/UploadMedia", code="OK") >= 3
    assert value(after, "framecast_queue_depth") == 0 and value(after, "framecast_jobs_running") == 0
    stored = stub.ListMedia(pb.ListMediaRequest(), timeout=10)
    assert value(after, "framecast_media_bytes") == stored.total_bytes > 0
    assert value(after, "framecast_media_files") == len(stored.media)
    assert value(after, "framecast_open_streams", method=TRAIN) == 0
    # The trained adapter went into the device cache; the propagation found it there.
    assert grew("framecast_adapter_cache_hits_total", tier="device") >= 1
    if server.engine.device.type != "cuda":  # device memory is reported for CUDA only
        assert not any(name == "framecast_device_memory_bytes" for name, _ in after)


def test_a_stream_the_client_cancels_is_counted_and_closed(server, stub, media):
    source, mask, _ = media
    request = pb.TrainRequest(adapter="metrics-watched", source_id=source.id, mask_id=mask.id, prompt="p", steps=500,
                              rank=2)  # fmt: skip
    training = stub.Train(request, timeout=300)
    job_id = next(training).job_id
    before = scrape(server)
    watch = stub.WatchJob(pb.JobRef(job_id=job_id), timeout=300)
    next(watch)
    samples = scrape(server)
    assert value(samples, "framecast_open_streams", method=WATCH) == 1
    assert value(samples, "framecast_open_streams", method=TRAIN) == 1
    watch.cancel()
    training.cancel()
    deadline = time.monotonic() + 10
    while value(samples := scrape(server), "framecast_open_streams", method=WATCH) != 0 or \
            value(samples, "framecast_open_streams", method=TRAIN) != 0:  # fmt: skip
        assert time.monotonic() < deadline, "a cancelled stream still counts as open"
        time.sleep(0.05)
    for method in (WATCH, TRAIN):
        cancelled = value(samples, "framecast_rpcs_total", method=method, code="CANCELLED")
        assert cancelled - value(before, "framecast_rpcs_total", method=method, code="CANCELLED") == 1, method
    stub.CancelJob(pb.JobRef(job_id=job_id), timeout=10)
    while stub.GetJob(pb.JobRef(job_id=job_id), timeout=10).state != pb.JOB_STATE_CANCELLED:
        time.sleep(0.1)  # the next test's jobs run after this one
    assert value(scrape(server), "framecast_jobs_total", kind="train", state="cancelled") >= 1


def test_request_ids_come_back_and_land_in_the_job(stub, media):
    reply, call = stub.GetServerInfo.with_call(pb.GetServerInfoRequest(), timeout=10,
                                               metadata=[("x-request-id", "client-req-42")])  # fmt: skip
    assert dict(call.initial_metadata())["x-request-id"] == "client-req-42"
    generated = set()
    for metadata in ((), [("x-request-id", "not an id: spaces")], [("x-request-id", "x" * 129)]):
        _, call = stub.GetServerInfo.with_call(pb.GetServerInfoRequest(), timeout=10, metadata=metadata)
        generated.add(dict(call.initial_metadata())["x-request-id"])
    assert len(generated) == 3 and all(re.fullmatch("[0-9a-f]{32}", i) for i in generated)
    # An error carries it too.
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetJob(pb.JobRef(job_id="nobody"), timeout=10, metadata=[("x-request-id", "req-missing")])
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert dict(refused.value.initial_metadata())["x-request-id"] == "req-missing"

    events = train(stub, media, "metrics-id", steps=1, metadata=[("x-request-id", "train-req-7")])
    assert events[0].accepted.request_id == "train-req-7"
    assert stub.GetJob(pb.JobRef(job_id=events[0].job_id), timeout=10).request_id == "train-req-7"
    unnamed = train(stub, media, "metrics-id-2", steps=1)
    assert re.fullmatch("[0-9a-f]{32}", stub.GetJob(pb.JobRef(job_id=unnamed[0].job_id), timeout=10).request_id)


def test_a_jobs_log_records_carry_its_request_id(tmp_path, caplog):
    install_log_records()

    def fail(job):
        logging.getLogger("framecast.test").info("working")
        raise InvalidInput("mask", "m", "is wrong")

    queue = JobQueue(tmp_path / "jobs", max_queue=4)
    with caplog.at_level(logging.INFO):
        with request_scope("req-in-log"):
            job = queue.submit(Job(pb.JOB_KIND_TRAIN, "a", fail))
        list(job.follow())
        queue.shutdown(1.0)
        logging.getLogger("framecast.test").info("outside")
    assert job.snapshot().request_id == "req-in-log"
    ours = [r for r in caplog.records if r.name in ("framecast.test", "framecast.server.jobs")]
    assert [r.getMessage().split(":")[0] for r in ours] == [f"job {job.id} accepted", "working", f"job {job.id} failed",
                                                            "outside"]  # fmt: skip
    assert [r.request_id for r in ours] == ["req-in-log", "req-in-log", "req-in-log", "-"]


def test_the_metrics_port_option_and_its_refusals(tiny_model_dir, tmp_path):
    import argparse
    import socket

    from framecast.server.app import start_server
    from framecast.server.cli import add_options, server_config
    from framecast.server.config import ServerConfig

    parser = argparse.ArgumentParser()
    add_options(parser)
    base = ["--model", str(tiny_model_dir), "--data", str(tmp_path / "data")]
    assert server_config(parser.parse_args(base + ["--metrics-port", "9464"])).metrics_port == 9464
    assert server_config(parser.parse_args(base)).metrics_port is None  # off unless asked for
    settings = {"model_dir": str(tiny_model_dir), "data_dir": str(tmp_path / "data")}
    with pytest.raises(InvalidInput, match=r"metrics_port must be in \[0, 65535\]"):
        ServerConfig.build(**settings, metrics_port=70000)
    with pytest.raises(InvalidInput, match="metrics_port must differ from the gRPC port"):
        ServerConfig.build(**settings, port=50999, metrics_port=50999)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvalidInput) as caught:
            start_server(ServerConfig.build(**settings, port=0, metrics_port=port))
        assert str(caught.value) == f"metrics_port cannot be opened on 127.0.0.1: Address already in use (got {port})"
    # The refused server left its data dir to the next one.
    running = start_server(ServerConfig.build(**settings, port=0, metrics_port=0))
    try:
        assert running.metrics_port and running.metrics_port != running.port
    finally:
        running.stop(grace=1)
    with pytest.raises(OSError):  # stopped with the server
        urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=2)
