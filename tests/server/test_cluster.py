"""A cluster on a local Ray: two replicas of the tiny model on Ray Serve behind a real front on a
real port, sharing one data directory. The single server's end-to-end tests run against it
unchanged; then adapter affinity, a replica killed during a job, and refusals through the front."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

pytest.importorskip("ray.serve")

from framecast.client import FramecastClient, FramecastError  # noqa: E402
from framecast.common.media import encode_png, encode_video, mask_to_frames  # noqa: E402
from framecast.v1 import framecast_pb2 as pb  # noqa: E402
from framecast.v1 import framecast_pb2_grpc  # noqa: E402

from ..client import test_cli_e2e as cli_e2e  # noqa: E402
from . import test_e2e as server_e2e  # noqa: E402

REPLICAS = 2


@contextlib.contextmanager
def ray_head(cpus: int):
    """A local Ray head in processes of its own (``ray start --head --block``), this process joined
    to it as a driver. ``ray.init`` without an address would start Ray's processes itself, running a
    ``preexec_fn`` (Python) in a fork of this process: with a server's threads alive in it (a
    session-scoped fixture's), the child could wait forever on a lock one of them held."""
    import ray

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray_cli = Path(sys.executable).with_name("ray")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRITON_INTERPRET": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}",
                             "--include-dashboard=false", "--disable-usage-stats", "--node-ip-address=127.0.0.1"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                ray.init(address=f"127.0.0.1:{port}", configure_logging=False, log_to_driver=False,
                         runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TRITON_INTERPRET": "1"}})  # fmt: skip
                break
            except (ConnectionError, RuntimeError):  # its GCS is not up yet
                assert head.poll() is None, f"ray start exited with {head.returncode}"
                assert time.monotonic() < deadline, "the Ray head did not start in 90 s"
                time.sleep(0.5)
        yield
    finally:
        ray.shutdown()
        os.killpg(head.pid, signal.SIGTERM)  # the head and every process it started (its session)
        try:
            head.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


@pytest.fixture(scope="module")
def cluster(tiny_model_dir, tmp_path_factory):
    """Two replicas on a local Ray (one CPU each) and a front on 127.0.0.1:<free port>."""
    from ray import serve

    from framecast.server.cluster.launch import ClusterConfig, start_local
    from framecast.server.config import ServerConfig

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    config = ServerConfig.build(model_dir=str(tiny_model_dir), data_dir=str(tmp_path_factory.mktemp("cluster-data")),
                                host="127.0.0.1", port=0, max_frames=33, max_pixels=128 * 128,
                                otel_exporter=InMemorySpanExporter())  # the front traces; the replicas get no exporter  # fmt: skip
    with ray_head(REPLICAS):
        try:
            front = start_local(config, ClusterConfig(replicas=REPLICAS, health_check_period_s=1.0))
            yield front
            front.stop(grace=5)
        finally:
            serve.shutdown()


@pytest.fixture()
def stub(cluster):
    with grpc.insecure_channel(f"127.0.0.1:{cluster.port}") as channel:
        yield framecast_pb2_grpc.FramecastStub(channel)


@pytest.fixture()
def client(cluster):
    with FramecastClient(f"127.0.0.1:{cluster.port}", timeout=120) as fc:
        yield fc


def healthy_replicas() -> int:
    from ray import serve

    from framecast.server.cluster.launch import APP_NAME, REPLICA_DEPLOYMENT

    deployment = serve.status().applications[APP_NAME].deployments[REPLICA_DEPLOYMENT]
    return deployment.replica_states.get("RUNNING", 0)


def wait_for_replicas(count: int = REPLICAS, timeout: float = 90.0) -> None:
    """Until Ray Serve runs ``count`` healthy replicas (a killed one is restarted)."""
    deadline = time.monotonic() + timeout
    while healthy_replicas() < count:
        assert time.monotonic() < deadline, f"{healthy_replicas()} of {count} replicas running"
        time.sleep(0.5)


def upload_scene(client: FramecastClient, scene):
    source = client.upload(encode_video(scene.source, 8, lossless=True), filename="source.mp4")
    mask = client.upload(encode_video(mask_to_frames(scene.edit_mask), 8, lossless=True), filename="mask.mp4")
    edited = client.upload(encode_png(scene.edited_first_frame), filename="edited.png")
    return source, mask, edited


def adapter_file(data: bytes, path) -> tuple[dict, dict]:
    """An exported safetensors file's metadata and tensors (its header's key order is the writer
    process's own: the bytes of two replicas' exports of one adapter may differ)."""
    from safetensors import safe_open

    path.write_bytes(data)
    with safe_open(str(path), "pt") as f:
        return f.metadata(), {key: f.get_tensor(key).tolist() for key in f.keys()}


def placement(cluster, events) -> dict:
    return cluster.service.placements[events[0].job_id]


# --- the single server's end-to-end tests, unchanged, through the front ----------------------


def test_upload_train_propagate_download_over_the_wire(stub, scene):
    server_e2e.test_train_then_propagate_over_the_wire(stub, scene)


def test_the_front_traces_rpcs_and_the_jobs_it_runs_on_replicas(cluster, client, scene):
    from framecast.server.tracing import REQUEST_ID

    from .test_e2e import upload_scene

    source, mask, _ = upload_scene(client._stub, scene)
    events = list(client.train("traced", source, mask, "p", steps=2, rank=2))
    request_id = events[0].accepted.request_id  # this training's, among the spans of every test before it
    exporter = cluster.config.otel_exporter
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        spans = [s for s in exporter.get_finished_spans() if s.attributes.get(REQUEST_ID) == request_id]
        if {s.name for s in spans} >= {"framecast.v1.Framecast/Train", "train job"}:
            break
        time.sleep(0.1)
    call = next(s for s in spans if s.name == "framecast.v1.Framecast/Train")
    job = next(s for s in spans if s.name == "train job")
    assert job.parent is not None and job.parent.span_id == call.context.span_id
    assert job.attributes["framecast.job.state"] == "succeeded"


def test_cli_train_propagate_export(cluster, tmp_path, scene, capsys):
    files = {"source": tmp_path / "source.mp4", "mask": tmp_path / "mask.mp4", "edited": tmp_path / "edited.png"}
    files["source"].write_bytes(encode_video(scene.source, 8, lossless=True))
    files["mask"].write_bytes(encode_video(mask_to_frames(scene.edit_mask), 8, lossless=True))
    files["edited"].write_bytes(encode_png(scene.edited_first_frame))
    cli_e2e.test_train_propagate_export_info(cluster, files, tmp_path, capsys)


# --- adapter affinity -----------------------------------------------------------------------


def test_an_adapter_is_served_where_it_was_trained_and_two_spread_over_both(cluster, client, scene, caplog):
    wait_for_replicas()
    source, mask, edited = upload_scene(client, scene)
    caplog.set_level(logging.INFO, logger="framecast.server.cluster.front")
    hits_before = cluster.metrics.registry.get_sample_value("framecast_cluster_adapter_affinity_total",
                                                           {"result": "hit"}) or 0.0  # fmt: skip
    trained = {}

    def train(name: str, accepted: threading.Event) -> None:
        events = client.train(name, source, mask, prompt="p", steps=8, rank=2)
        first = next(events)
        accepted.set()
        trained[name] = [first, *events]

    # Two trainings at once: Ray Serve routes the second to the replica with less in flight.
    threads = []
    for name in ("aff-a", "aff-b"):
        accepted = threading.Event()
        threads.append(threading.Thread(target=train, args=(name, accepted)))
        threads[-1].start()
        assert accepted.wait(60)  # on a replica before the second is routed
    for thread in threads:
        thread.join()
    trainers = {name: placement(cluster, events)["replica"] for name, events in trained.items()}
    assert trainers["aff-a"] != trainers["aff-b"], trainers

    propagated = {}

    def propagate(name: str) -> None:
        propagated[name] = list(client.propagate(name, source, mask, edited_first_frame_id=edited, prompt="p", steps=1))

    threads = [threading.Thread(target=propagate, args=(name,)) for name in ("aff-a", "aff-b", "aff-a")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, events in propagated.items():
        assert events[-1].HasField("result")
        where = placement(cluster, events)
        assert where["replica"] == trainers[name] and where["hit"] == "device", (name, where, trainers)
    hits = cluster.metrics.registry.get_sample_value("framecast_cluster_adapter_affinity_total", {"result": "hit"})
    assert hits - hits_before == 3
    assert any("adapter 'aff-b' hit (device)" in record.getMessage() for record in caplog.records)


# --- faults ---------------------------------------------------------------------------------


def test_a_replica_killed_during_a_job_fails_it_unavailable_and_loses_nothing(cluster, client, scene, tmp_path):
    wait_for_replicas()
    source, mask, edited = upload_scene(client, scene)
    list(client.train("kept", source, mask, prompt="p", steps=2, rank=2))
    exported = client.export_adapter("kept")
    media_before = {m.id: m.size_bytes for m in client.list_media().media}

    events = client.train("doomed", source, mask, prompt="p", steps=10_000, rank=2)
    accepted = next(events)
    job_id = accepted.job_id
    for event in events:  # until the replica's worker runs it
        if event.HasField("progress") and event.progress.phase == "motion":
            break
    os.kill(cluster.service.placements[job_id]["pid"], signal.SIGKILL)
    with pytest.raises(FramecastError) as failed:
        for _ in events:
            pass
    assert failed.value.code is grpc.StatusCode.UNAVAILABLE and "submit the job again" in failed.value.message
    info = client.get_job(job_id)
    assert info.state == pb.JOB_STATE_FAILED and info.error.code == "UNAVAILABLE"

    # The next job succeeds (on the replica left, or the one Ray Serve restarts), and nothing stored is lost.
    result = list(client.propagate("kept", source, mask, edited_first_frame_id=edited, prompt="p", steps=1))[-1].result
    assert result.num_frames == 9
    assert adapter_file(client.export_adapter("kept"), tmp_path / "after") == adapter_file(exported, tmp_path / "before")
    media_after = {m.id: m.size_bytes for m in client.list_media().media}
    assert {k: media_after.get(k) for k in media_before} == media_before
    assert client.download(source.id) == encode_video(scene.source, 8, lossless=True)
    # The killed training's name is free again: its claim went with its job.
    assert list(client.train("doomed", source, mask, prompt="p", steps=1, rank=2))[-1].HasField("adapter")
    wait_for_replicas()  # Ray Serve restarted the killed replica


# --- refusals and claims through the front ----------------------------------------------------


def test_refusals_keep_their_status_and_a_name_is_claimed_once(cluster, client, scene):
    source, mask, edited = upload_scene(client, scene)
    with pytest.raises(FramecastError) as refused:
        list(client.train("bad", source, mask, prompt="p", steps=10**6))
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT and "steps" in refused.value.message
    with pytest.raises(FramecastError) as refused:
        list(client.propagate("no-such-adapter", source, mask, edited_first_frame_id=edited, prompt="p"))
    assert refused.value.code is grpc.StatusCode.NOT_FOUND
    with pytest.raises(FramecastError) as refused:
        list(client.train("../x", source, mask, prompt="p"))
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT and "adapter" in refused.value.message

    long_training = client.train("once", source, mask, prompt="p", steps=10_000, rank=2)
    job_id = next(long_training).job_id
    with pytest.raises(FramecastError) as refused:
        list(client.train("once", source, mask, prompt="p", steps=1, rank=2))
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION and job_id in refused.value.message
    assert client.get_adapter("once").state == pb.ADAPTER_STATE_TRAINING
    client.cancel_job(job_id)
    deadline = time.monotonic() + 30
    while client.get_job(job_id).state != pb.JOB_STATE_CANCELLED:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    trained = list(client.train("once", source, mask, prompt="p", steps=1, rank=2))
    assert trained[-1].adapter.name == "once"
    with pytest.raises(FramecastError) as refused:
        list(client.train("once", source, mask, prompt="p", steps=1, rank=2))
    assert refused.value.code is grpc.StatusCode.ALREADY_EXISTS


# --- the Ray Serve config file in the docs ----------------------------------------------------


def test_the_serve_config_file_is_valid_and_builds(tiny_model_dir, tmp_path):
    """docs/cluster/serve-config.yaml is a Ray Serve config that Ray accepts, naming a builder whose
    every argument framecast takes (here with this machine's model and data, no TLS)."""
    from pathlib import Path

    import yaml
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    from framecast.server.cluster import launch

    text = (Path(__file__).resolve().parents[2] / "docs" / "cluster" / "serve-config.yaml").read_text()
    schema = ServeDeploySchema.parse_obj(yaml.safe_load(text))
    (app,) = schema.applications
    assert app.import_path == "framecast.server.cluster.launch:build_app"
    args = {**app.args, "model_dir": str(tiny_model_dir), "data_dir": str(tmp_path), "host": "127.0.0.1",
            "tls_cert": "", "tls_key": "", "auth_tokens": ""}  # fmt: skip
    assert isinstance(launch.build_app(args), Application)
    with pytest.raises(TypeError):
        launch.build_app({**args, "replicaz": 2})


def test_replicas_autoscale_between_replicas_and_max_replicas(tiny_model_dir, tmp_path):
    from framecast.server.cluster.launch import ClusterConfig, replica_options
    from framecast.server.config import ServerConfig

    config = ServerConfig.build(model_dir=str(tiny_model_dir), data_dir=str(tmp_path), max_queue=4)
    fixed = replica_options(config, ClusterConfig(replicas=3, replica_gpus=1))
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1}
    assert fixed["max_ongoing_requests"] == 4 + 1 + config.max_workers  # its queue, its running job, unary calls
    scaling = replica_options(config, ClusterConfig(replicas=1, max_replicas=4))
    assert scaling["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 1.0}
    assert "num_replicas" not in scaling


def test_watch_job_re_attaches_through_the_front(cluster, client, scene):
    source, mask, _ = upload_scene(client, scene)
    events = client.train("watched", source, mask, prompt="p", steps=6, rank=2)
    job_id = next(events).job_id
    events.close()  # the client went away; the job runs on
    watched = list(client.watch_job(job_id))
    assert watched[0].accepted.job_id == job_id and watched[-1].HasField("adapter")
    assert client.get_job(job_id).state == pb.JOB_STATE_SUCCEEDED
    assert any(job.job_id == job_id for job in client.list_jobs())


def test_a_second_front_shares_claims_records_and_cancels(cluster, client, scene):
    """Two fronts on one cluster (behind a load balancer): a name one front's training holds is
    refused by the other, which finds the job in the first one's records and cancels it."""
    from framecast.server.cluster.front import ClusterFront

    import dataclasses

    # its own config: stopping it would otherwise shut the first front's span exporter down
    untraced = dataclasses.replace(cluster.config, otel_exporter=None)
    second = ClusterFront(untraced, cluster.replicas, front_id="second-front").start()
    try:
        with FramecastClient(f"127.0.0.1:{second.port}", timeout=60) as other:
            source, mask, _ = upload_scene(client, scene)
            events = client.train("two-fronts", source, mask, prompt="p", steps=10_000, rank=2)
            job_id = next(events).job_id
            with pytest.raises(FramecastError) as refused:
                list(other.train("two-fronts", source, mask, prompt="p", steps=1, rank=2))
            assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION and job_id in refused.value.message
            assert other.get_job(job_id).adapter == "two-fronts"
            assert job_id in {job.job_id for job in other.list_jobs()}
            other.cancel_job(job_id)
            with pytest.raises(FramecastError) as cancelled:
                list(events)
            assert cancelled.value.code is grpc.StatusCode.CANCELLED
            deadline = time.monotonic() + 10  # the first front writes its record just after the job's last event
            while other.get_job(job_id).state != pb.JOB_STATE_CANCELLED:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert list(other.train("two-fronts", source, mask, prompt="p", steps=1, rank=2))[-1].HasField("adapter")
    finally:
        second.stop(grace=2)
