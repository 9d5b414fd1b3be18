"""Memory options over the wire: reported settings, budget refusals, out-of-memory jobs."""

from __future__ import annotations

import threading

import grpc
import pytest
import torch

from framecast.engine.config import EngineConfig
from framecast.engine.engine import Engine
from framecast.engine.errors import Cancelled
from framecast.engine.memory.sizes import GiB, memory_size
from framecast.engine.toy.world import SceneConfig, make_scene
from framecast.server.job import Job
from framecast.server.jobs import JobQueue
from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc

from .test_e2e import upload_scene


def test_settings_reported_and_budget_refusal(start_server_at, tiny_model_dir, tmp_path, scene):
    server = start_server_at(tiny_model_dir, tmp_path, quantize="nf4", offload="model", max_vram_gb=1e-6,
                             optimizer="adamw8bit")
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
        assert (info.quantization, info.offload, info.attention_backend, info.optimizer) == ("nf4", "model", "sdpa", "adamw8bit")
        assert info.max_vram_bytes == int(1e-6 * (1 << 30)) and info.gradient_checkpointing
        source, mask, edited = upload_scene(stub, scene)
        request = pb.PropagateRequest(source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id, steps=1)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Propagate(request, timeout=60))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "over the budget" in caught.value.details()
        assert stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).ready


def test_whole_clip_budget_refusal(start_server_at, tiny_model_dir, tmp_path, scene):
    """serve --window-frames 0 --max-vram: a clip is never cut into windows, so one whose whole
    length is over the budget is refused before it starts; a shorter one runs."""
    probe = Engine(EngineConfig(model_dir=str(tiny_model_dir)), tmp_path / "probe")
    need = {n: probe.memory_plan("none", "none", n, 64, 64, training=False).peak_bytes
            for n in (9, 17)}
    budget_gb = (need[9] + need[17]) / 2 / GiB
    server = start_server_at(tiny_model_dir, tmp_path / "data", window_frames=0, max_vram_gb=budget_gb)
    long = make_scene(5, SceneConfig(frames=17, height=64, width=64, sprites=1))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
        assert (info.window_frames, info.max_vram_bytes) == (0, int(budget_gb * GiB))
        for clip, frames in ((long, 17), (scene, 9)):
            source, mask, edited = upload_scene(stub, clip)
            request = pb.PropagateRequest(source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id, steps=1)
            if frames == 9:
                (result,) = [e.result for e in stub.Propagate(request, timeout=300) if e.WhichOneof("event") == "result"]
                assert (result.num_frames, result.metrics.windows) == (9, 1)
                continue
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.Propagate(request, timeout=60))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert caught.value.details().startswith(
                f"generating 64x64 as one clip of 17 frames needs ~{memory_size(need[17])} of device memory, over the "
                f"budget of {memory_size(budget_gb * GiB)}"
            )
            assert not stub.ListJobs(pb.ListJobsRequest(), timeout=10).jobs  # refused before a job was queued


def test_out_of_memory_fails_the_job_and_the_queue_goes_on(tmp_path):
    queue = JobQueue(tmp_path, max_queue=4)
    ran = threading.Event()

    def exhaust(job):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def fine(job):
        ran.set()

    failed = queue.submit(Job(pb.JOB_KIND_PROPAGATE, "", exhaust))
    after = queue.submit(Job(pb.JOB_KIND_PROPAGATE, "", fine))
    events = list(failed.follow())
    assert events[-1].error.code == "RESOURCE_EXHAUSTED" and "out of device memory" in events[-1].error.message
    list(after.follow())
    assert ran.is_set() and after.info.state == pb.JOB_STATE_SUCCEEDED
    assert queue.info(failed.id).state == pb.JOB_STATE_FAILED
    queue.shutdown(grace_s=1)


def test_shutdown_cancels_waiting_jobs_and_stops_the_running_one(tmp_path):
    queue = JobQueue(tmp_path, max_queue=4)
    started = threading.Event()

    def long_job(job):
        started.set()
        while not job.should_cancel():
            job.cancel_requested.wait(0.01)
        raise Cancelled("job cancelled")

    running = queue.submit(Job(pb.JOB_KIND_TRAIN, "a", long_job))
    waiting = queue.submit(Job(pb.JOB_KIND_TRAIN, "b", long_job))
    assert started.wait(10)
    queue.shutdown(grace_s=0.2)
    assert waiting.info.state == pb.JOB_STATE_CANCELLED and running.info.state == pb.JOB_STATE_CANCELLED
    with pytest.raises(Exception, match="shutting down"):
        queue.submit(Job(pb.JOB_KIND_TRAIN, "c", long_job))
    # Records were flushed: a new queue on the same directory sees both as finished.
    reloaded = JobQueue(tmp_path, max_queue=4)
    assert {reloaded.info(running.id).state, reloaded.info(waiting.id).state} == {pb.JOB_STATE_CANCELLED}
    reloaded.shutdown(grace_s=0.1)


def test_plan_reports_the_memory_model_estimate(start_server_at, tiny_model_dir, tmp_path, scene):
    """Plan's estimated_device_bytes is Engine.memory_plan's planning figure for the window the job
    would run: sampling, or training at the request's rank."""
    probe = Engine(EngineConfig(model_dir=str(tiny_model_dir)), tmp_path / "probe")
    server = start_server_at(tiny_model_dir, tmp_path / "data")
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        source, mask, edited = upload_scene(stub, scene)
        propagate = pb.PropagateRequest(source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id, prompt="p")
        train = pb.TrainRequest(adapter="planned", source_id=source.id, mask_id=mask.id, prompt="p", rank=8)
        for request, training, rank in ((pb.PlanRequest(propagate=propagate), False, 16),
                                        (pb.PlanRequest(train=train), True, 8)):  # fmt: skip
            plan = stub.Plan(request, timeout=60)
            assert plan.ok and [(w.start, w.frames) for w in plan.windows] == [(0, 9)]
            expected = probe.memory_plan("none", "none", 9, 64, 64, training=training, rank=rank)
            assert plan.estimated_device_bytes == expected.peak_bytes > expected.allocated_bytes
