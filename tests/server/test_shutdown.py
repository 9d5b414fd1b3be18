"""SIGTERM ends a server process even while a stream follows a job stuck inside one step."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import grpc
import pytest

from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc

# A server as `framecast serve` runs it (signal handlers, main thread waiting), with one job that
# never reaches a point where it could stop: it does not look at its cancel flag.
SERVER = """
import sys, threading
from framecast.server.app import start_server
from framecast.server.config import ServerConfig
from framecast.server.jobs import Job
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
