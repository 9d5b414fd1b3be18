"""SIGTERM ends a server process even while a stream follows a job stuck inside one step; two stops
at once (two signals) stop a server or a cluster's front once."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from framecast.server.app import lock_data_dir
from framecast.server.config import ServerConfig
from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc

# A server as `framecast serve` runs it (signal handlers, main thread waiting), with one job that
# never reaches a point where it could stop: it does not look at its cancel flag.
SERVER = """
import sys, threading
from framecast.server.app import start_server
from framecast.server.config import ServerConfig
from framecast.server.job import Job
from framecast.v1 import framecast_pb2 as pb

config = ServerConfig.build(model_dir=sys.argv[1], data_dir=sys.argv[2], port=0, grace_s=0.5)
server = start_server(config, handle_signals=True)
assert server.wait_ready(120)
stuck = server.queue.submit(Job(pb.JOB_KIND_TRAIN, "stuck", lambda job: threading.Event().wait()))
print(server.port, stuck.id, flush=True)
server.wait()
"""


def test_sigterm_exits_while_a_stream_follows_a_stuck_job(tiny_model_dir, tmp_path):
    data_dir = tmp_path / "data"
    command = [sys.executable, "-c", SERVER, str(tiny_model_dir), str(data_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        port, job_id = line.split()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = framecast_pb2_grpc.FramecastStub(channel).WatchJob(pb.JobRef(job_id=job_id), timeout=60)
            assert next(stream).WhichOneof("event") == "accepted"  # an RPC handler now follows the job
            process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.RpcError) as caught:
                list(stream)
            # The handler following the job used to keep the process alive after "stopped".
            assert process.wait(timeout=30) == 0
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "the server shut down before the job reached a step where it could stop" in caught.value.details()
        record = json.loads((data_dir / "jobs" / f"{job_id}.json").read_text())
        assert record["state"] == "JOB_STATE_FAILED" and record["error"]["code"] == "UNAVAILABLE"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def stop_twice_at_once(port: int, stop) -> list[BaseException | None]:
    """Call ``stop`` on two threads at once, as two signals close together do, while a call is open
    (a health Watch), so that each stop lasts its grace; what each raised."""
    start = threading.Barrier(2)

    def stop_once() -> None:
        start.wait()
        stop(grace=1)

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="liveness"), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        with ThreadPoolExecutor(2) as pool:
            stops = [pool.submit(stop_once) for _ in range(2)]
            return [stop.exception(timeout=60) for stop in stops]


def assert_stopped_once(caplog, message: str, port: int, data_dir) -> None:
    assert [r.getMessage() for r in caplog.records if r.getMessage() == message] == [message]
    with pytest.raises(ConnectionRefusedError):  # the port is closed
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    lock_data_dir(data_dir).close()  # released: another server may have the directory


def test_two_stops_at_once_stop_a_server_once(start_server_at, tiny_model_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="framecast")
    server = start_server_at(tiny_model_dir, tmp_path / "data")
    assert stop_twice_at_once(server.port, server.stop) == [None, None]
    assert_stopped_once(caplog, "stopped", server.port, tmp_path / "data")
    server.wait()  # returns: stopped


def test_two_stops_at_once_stop_a_cluster_front_once(tiny_model_dir, tmp_path, caplog):
    from framecast.server.cluster.front import ClusterFront  # the front alone: no replicas, no Ray

    caplog.set_level(logging.INFO, logger="framecast")
    config = ServerConfig.build(model_dir=str(tiny_model_dir), data_dir=str(tmp_path / "data"), port=0)
    front = ClusterFront(config, replicas=None).start()
    try:
        assert stop_twice_at_once(front.port, front.stop) == [None, None]
    finally:
        front.stop(grace=0)
    assert_stopped_once(caplog, "cluster front stopped", front.port, tmp_path / "data")
    front.wait()
