"""Health is NOT_SERVING until the model is loaded; a model that fails to load leaves the
server up, saying why, instead of crashing it. Settings it cannot start with (a port
or a data dir another server uses) stop ``framecast serve`` at once with an error naming the option."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from framecast.client import cli
from framecast.engine.errors import InvalidInput
from framecast.server.app import start_server
from framecast.server.config import ServerConfig
from framecast.server.job import Job
from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc


def hollow_model(tiny_model_dir: Path, path: Path) -> Path:
    """What a diffusers model directory looks like (its model_index.json, a folder per component)
    with nothing inside: it passes the start-up check, then fails to load."""
    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    path.mkdir()
    (path / "model_index.json").write_text(json.dumps(index))
    for name, spec in index.items():
        if isinstance(spec, list) and spec[0] is not None:
            (path / name).mkdir()
    return path


def test_unloadable_model_keeps_serving_errors(tiny_model_dir, tmp_path, capsys):
    model = hollow_model(tiny_model_dir, tmp_path / "hollow")
    server = start_server(ServerConfig.build(model_dir=str(model), data_dir=str(tmp_path / "data"), port=0))
    try:
        assert not server.wait_ready(timeout=120)  # False as soon as the load failed
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
            stub = framecast_pb2_grpc.FramecastStub(channel)
            info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
            assert not info.ready and info.version
            assert info.load_error and info.load_error != "loading"  # what failed
            # a caller who did not authenticate learns the directories' names, not their paths
            assert str(tmp_path) not in info.load_error and str(tmp_path) in server.load_error
            assert info.load_error == server.load_error.replace(str(model), model.name)
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.Train(pb.TrainRequest(adapter="a"), timeout=10))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert caught.value.details() == f"the model failed to load: {info.load_error}"
        capsys.readouterr()
        assert cli.main(["info", "--server", f"127.0.0.1:{server.port}"]) == 0
        assert f"no (the model failed to load: {info.load_error})" in capsys.readouterr().out
    finally:
        server.stop(grace=1)


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({}, "is not a diffusers directory: model_index.json is missing"),
        ({"model_index.json": "{"}, "has a model_index.json that cannot be read"),
        ({"model_index.json": '{"_class_name": "FluxPipeline"}'}, "holds a FluxPipeline, not a WanImageToVideoPipeline"),
        ({"model_index.json": '{"_class_name": "WanImageToVideoPipeline", "vae": ["diffusers", "AutoencoderKLWan"], '
                              '"transformer_2": [null, null]}'}, "lacks components model_index.json names: vae"),
    ],
)  # fmt: skip
def test_config_refuses_a_directory_that_is_not_a_wan_i2v_model(tmp_path, files, reason):
    model = tmp_path / "model"
    model.mkdir()
    for name, text in files.items():
        (model / name).write_text(text)
    with pytest.raises(InvalidInput) as caught:
        ServerConfig.build(model_dir=str(model), data_dir=str(tmp_path / "data"))
    assert str(caught.value).startswith(f"model {reason}") and str(caught.value).endswith(f"(got {str(model)!r})")


def test_serve_refuses_a_directory_that_is_not_a_model(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    result = serve("--model", model, "--data", tmp_path / "data", "--port", 0)
    assert result.returncode == 2, result.stderr
    assert f"error: --model: is not a diffusers directory: model_index.json is missing (got {str(model)!r})" in result.stderr


def test_config_refuses_a_missing_model_dir(tmp_path):
    from framecast.engine.errors import InvalidInput

    with pytest.raises(InvalidInput, match="model"):
        ServerConfig.build(model_dir=str(tmp_path / "nowhere"), data_dir=str(tmp_path))


@pytest.mark.parametrize(
    ("field", "value"), [("adapter_slots", 0), ("adapter_host_cache_gb", -1.0), ("adapter_max_rank", 0)]
)
def test_config_refuses_bad_adapter_cache_sizes(tmp_path, field, value):
    from framecast.engine.errors import InvalidInput

    with pytest.raises(InvalidInput, match=f"{field}.*{value}"):
        ServerConfig.build(model_dir=str(tmp_path), data_dir=str(tmp_path), **{field: value})


@pytest.mark.parametrize("window", [6, 3, -5])
def test_config_refuses_a_window_that_is_not_4n_plus_1(tmp_path, window):
    from framecast.engine.errors import InvalidInput

    with pytest.raises(InvalidInput, match=f"window_frames.*{window}"):
        ServerConfig.build(model_dir=str(tmp_path), data_dir=str(tmp_path), window_frames=window)


def serve(*options, timeout: float = 60) -> subprocess.CompletedProcess:
    """``framecast serve`` in a process of its own, as a user runs it; one still running after
    ``timeout`` (it started when it should have refused) fails the test."""
    command = [sys.executable, "-m", "framecast.client.cli", "serve", *map(str, options)]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"serve {' '.join(map(str, options))} was still running after {timeout} s: {expired.stderr!r}")


def test_a_port_in_use_is_refused(grpc_server, tmp_path, tiny_model_dir):
    """gRPC would share a port through SO_REUSEPORT; two servers answering on one port must not happen."""
    port = grpc_server.port
    config = ServerConfig.build(model_dir=str(tiny_model_dir), data_dir=str(tmp_path / "second"), port=port)
    with pytest.raises(InvalidInput) as caught:
        start_server(config).stop(grace=0)
    assert str(caught.value) == f"port cannot be opened on 127.0.0.1: Address already in use (got {port})"
    result = serve("--model", tiny_model_dir, "--data", tmp_path / "third", "--port", port)
    assert result.returncode == 2, result.stderr
    assert f"error: --port: cannot be opened on 127.0.0.1: Address already in use (got {port})" in result.stderr


def test_serve_names_the_option_it_refuses(tiny_model_dir, tmp_path):
    result = serve("--model", tiny_model_dir, "--data", tmp_path, "--port", 0, "--window-frames", 6)
    assert result.returncode == 2, result.stderr
    assert "error: --window-frames: must be 0 (whole clips) or 4N+1 and at least 5 (got 6)" in result.stderr


def test_a_data_dir_in_use_is_refused(start_server_at, tiny_model_dir, tmp_path):
    data_dir = tmp_path / "data"
    first = start_server_at(tiny_model_dir, data_dir)
    release = threading.Event()
    busy = first.queue.submit(Job(pb.JOB_KIND_TRAIN, "busy", lambda job: release.wait(60)))
    deadline = time.monotonic() + 10
    while busy.info.state != pb.JOB_STATE_RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    record = data_dir / "jobs" / f"{busy.id}.json"
    assert json.loads(record.read_text())["state"] == "JOB_STATE_RUNNING"
    held = f"another framecast server (pid {os.getpid()} holds {data_dir / 'server.lock'})"
    config = ServerConfig.build(model_dir=str(tiny_model_dir), data_dir=str(data_dir), port=0)
    try:
        with pytest.raises(InvalidInput) as caught:
            start_server(config).stop(grace=0)
        assert str(caught.value) == f"data is used by {held} (got {str(data_dir)!r})"
        result = serve("--model", tiny_model_dir, "--data", data_dir, "--port", 0)
        assert result.returncode == 2, result.stderr
        assert f"error: --data: is used by {held} (got {str(data_dir)!r})" in result.stderr
        # The first server's running job is left alone (a second server used to fail it as interrupted).
        assert json.loads(record.read_text())["state"] == "JOB_STATE_RUNNING"
    finally:
        release.set()
    list(busy.follow())
    assert busy.info.state == pb.JOB_STATE_SUCCEEDED
    first.stop(grace=1)  # a stopped server leaves the data dir to the next one
    start_server_at(tiny_model_dir, data_dir)


def test_serve_refuses_a_sam2_checkpoint_that_is_not_one(tiny_model_dir, tmp_path):
    out = serve("--model", tiny_model_dir, "--data", tmp_path / "data", "--sam2-checkpoint", tmp_path)
    assert out.returncode == 2 and "--sam2-checkpoint" in out.stderr and "no config.json" in out.stderr, out.stderr
