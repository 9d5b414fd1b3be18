"""A `framecast serve` killed with SIGKILL at a bad moment, then started again on the same data dir:
what was stored is all there and usable, what a crash left half-written is gone, and what was
running reads as interrupted."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import json_format

from framecast.common.media import encode_png
from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc

from .test_adapter_lifecycle import import_adapter, lora_file, shapes  # noqa: F401 (a fixture)
from .test_bad_requests import expect
from .test_e2e import upload, upload_scene


LIMIT_FILE_SIZE = ("import os, resource, sys; limit = int(sys.argv[1]); "
                   "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); os.execv(sys.argv[2], sys.argv[2:])")


class Served:
    """``framecast serve`` in a process of its own, as a user runs it."""

    def __init__(self, model_dir: Path, data_dir: Path, file_size_limit: int | None = None):
        command = [sys.executable, "-m", "framecast.client.cli", "serve", "--model", str(model_dir), "--data",
                   str(data_dir), "--host", "127.0.0.1", "--port", "0"]  # fmt: skip
        if file_size_limit:  # a disk that fills up: writes past the limit fail with EFBIG
            # The limit is set by a launcher that then execs the server. A preexec_fn would run Python
            # in a fork of this process, whose gRPC threads the fork can leave broken (abort in epoll).
            command = [sys.executable, "-c", LIMIT_FILE_SIZE, str(file_size_limit), *command]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        log, port = [], None
        for line in self.process.stderr:
            log.append(line)
            if match := re.search(r"listening on \S+:(\d+)", line):
                port = int(match.group(1))
            if "ready:" in line:
                break
            if "failed to load" in line:  # the server stays up, refusing jobs: no "ready" will come
                self.process.kill()
                self.process.wait()
                pytest.fail(f"serve could not load the model: {''.join(log)}{self.process.stderr.read()}")
        else:
            self.process.wait()
            pytest.fail(f"serve exited with {self.process.returncode}: {''.join(log)}")
        self.log = log  # its stderr, its log lines, as far as it has written
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = framecast_pb2_grpc.FramecastStub(self.channel)

    def _read(self) -> None:
        for line in self.process.stderr:
            self.log.append(line)

    def kill(self) -> None:
        self.channel.close()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> str:
        """SIGTERM, as an operator stops it; everything it wrote to stderr."""
        self.channel.close()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        return "".join(self.log)


@pytest.fixture()
def serve(tiny_model_dir):
    started: list[Served] = []

    def start(data_dir: Path, **options) -> Served:
        started.append(Served(tiny_model_dir, data_dir, **options))
        return started[-1]

    yield start
    for served in started:
        if served.process.poll() is None:
            served.kill()


def adapter_states(stub) -> dict[str, int]:
    return {a.name: a.state for a in stub.ListAdapters(pb.ListAdaptersRequest(), timeout=10).adapters}


def test_a_training_killed_part_way_reads_failed_after_the_restart(serve, start_server_at, tiny_model_dir, scene, tmp_path):
    data_dir = tmp_path / "data"
    server = serve(data_dir)
    uploaded = upload_scene(server.stub, scene)
    source, mask, _ = uploaded
    request = pb.TrainRequest(adapter="cut-short", source_id=source.id, mask_id=mask.id, steps=500, rank=2)
    for event in server.stub.Train(request, timeout=300):
        if event.WhichOneof("event") == "accepted":
            job_id = event.accepted.job_id
        if event.WhichOneof("event") == "progress" and event.progress.step >= 2:
            break
    server.kill()

    restarted = start_server_at(tiny_model_dir, data_dir)
    with grpc.insecure_channel(f"127.0.0.1:{restarted.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        job = stub.GetJob(pb.JobRef(job_id=job_id), timeout=10)
        assert job.state == pb.JOB_STATE_FAILED and "interrupted by a server restart" in job.error.message
        # Not TRAINING forever, not silently gone: FAILED with why, as a training that failed reads.
        assert adapter_states(stub) == {"cut-short": pb.ADAPTER_STATE_FAILED}
        assert "interrupted by a server restart" in stub.GetAdapter(pb.AdapterRef(name="cut-short"), timeout=10).error
        expect(grpc.StatusCode.FAILED_PRECONDITION,
               lambda: stub.LoadAdapter(pb.LoadAdapterRequest(name="cut-short"), timeout=10),
               "'cut-short' failed to train: interrupted by a server restart")  # fmt: skip
        assert {m.id for m in stub.ListMedia(pb.ListMediaRequest(), timeout=10).media} == {m.id for m in uploaded}
        assert stub.DeleteAdapter(pb.AdapterRef(name="cut-short"), timeout=10).deleted
        assert adapter_states(stub) == {}


def test_what_a_crash_left_half_written_is_removed_and_what_was_stored_is_kept(
    serve, start_server_at, tiny_model_dir, scene, shapes, tmp_path  # noqa: F811 (a fixture)
):
    data_dir = tmp_path / "data"
    server = serve(data_dir)
    uploaded = {m.id: m for m in upload_scene(server.stub, scene)}
    import_adapter(server.stub, "kept", lora_file(shapes, rank=2))
    server.kill()

    adapters, media, jobs = data_dir / "adapters", data_dir / "media", data_dir / "jobs"
    weights = (adapters / "kept" / "adapter.safetensors").read_bytes()
    # The files a kill leaves at each point of a write: an import or training stopped between the
    # weights and the record, a delete stopped after the record went, atomic writes stopped before
    # their rename, an upload stopped before its meta.json.
    for name in ("half-saved", "half-deleted"):
        (adapters / name).mkdir()
        (adapters / name / "adapter.safetensors").write_bytes(weights)
    (adapters / "half-deleted" / "last_used").touch()
    (adapters / "kept" / ".adapter.json.0123456789abcdef.tmp").write_text("{")
    half_upload = media / ("ab" * 32)
    half_upload.mkdir()
    (half_upload / "data").write_bytes(b"\x89PNG\r\n\x1a\n")
    some_media = media / next(iter(uploaded)).removeprefix("sha256:")
    (some_media / ".data.0123456789abcdef.tmp").write_bytes(b"\0" * 100)
    (jobs / ".0123456789abcdef.json.0123456789abcdef.tmp").write_text("{")

    restarted = start_server_at(tiny_model_dir, data_dir)
    with grpc.insecure_channel(f"127.0.0.1:{restarted.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        assert {m.id for m in stub.ListMedia(pb.ListMediaRequest(), timeout=10).media} == set(uploaded)
        for media_id, ref in uploaded.items():
            data = b"".join(c.data for c in stub.DownloadMedia(pb.MediaRef(id=media_id), timeout=10))
            assert len(data) == ref.size_bytes
        assert adapter_states(stub) == {"kept": pb.ADAPTER_STATE_READY}
        assert stub.LoadAdapter(pb.LoadAdapterRequest(name="kept"), timeout=10).adapter.state == pb.ADAPTER_STATE_LOADED
    assert sorted(p.name for p in adapters.iterdir()) == ["kept"]
    assert not list(data_dir.rglob("*.tmp"))
    assert not half_upload.exists()


def test_an_upload_killed_part_way_leaves_nothing_after_the_restart(serve, start_server_at, tiny_model_dir, scene, tmp_path):
    data_dir = tmp_path / "data"
    server = serve(data_dir)
    source, mask, edited = upload_scene(server.stub, scene)
    media = data_dir / "media"
    held = threading.Event()  # the upload's stream waits here, its first chunk spooled by the server

    def chunks():
        yield pb.MediaChunk(header=pb.MediaRef(filename="big.mp4"), data=b"\0" * 65536)
        held.wait(60)

    upload_call = server.stub.UploadMedia.future(chunks(), timeout=60)
    deadline = time.monotonic() + 30
    while not (spooled := [p for p in media.glob(".deleted-upload-*") if p.stat().st_size]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(spooled) == 1 and spooled[0].is_file()
    server.process.kill()  # before the channel closes: a cancelled upload removes its spool itself
    server.process.wait()
    server.kill()
    held.set()
    with pytest.raises(grpc.RpcError):
        upload_call.result()
    # What a crash in the middle of a delete leaves beside it: the entry renamed out of the way.
    interrupted_delete = media / f".deleted-{'cd' * 32}-0123abcd"
    interrupted_delete.mkdir()
    (interrupted_delete / "data").write_bytes(b"partly removed")
    assert spooled[0].exists()

    restarted = start_server_at(tiny_model_dir, data_dir)
    with grpc.insecure_channel(f"127.0.0.1:{restarted.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        assert {m.id for m in stub.ListMedia(pb.ListMediaRequest(), timeout=10).media} == {source.id, mask.id, edited.id}
    assert not spooled[0].exists() and not interrupted_delete.exists()
    assert sorted(p.name for p in media.iterdir()) == sorted(m.id.removeprefix("sha256:") for m in (source, mask, edited))


def test_trainings_a_crash_caught_before_their_job_record_was_final(start_server_at, tiny_model_dir, shapes, tmp_path):  # noqa: F811
    data_dir = tmp_path / "data"
    server = start_server_at(tiny_model_dir, data_dir)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stored = import_adapter(framecast_pb2_grpc.FramecastStub(channel), "stored", lora_file(shapes, rank=2))
    server.stop(grace=5)
    # Job records as a kill leaves them: one training had stored its adapter but its record still
    # said RUNNING, another was still queued.
    for job_id, adapter, state, started_at in (("a" * 16, "stored", pb.JOB_STATE_RUNNING, stored.created_at - 1),
                                               ("b" * 16, "never-ran", pb.JOB_STATE_QUEUED, 0.0)):  # fmt: skip
        info = pb.JobInfo(job_id=job_id, kind=pb.JOB_KIND_TRAIN, state=state, adapter=adapter,
                          created_at=stored.created_at - 2, started_at=started_at)  # fmt: skip
        (data_dir / "jobs" / f"{job_id}.json").write_text(json_format.MessageToJson(info, preserving_proto_field_name=True))

    server = start_server_at(tiny_model_dir, data_dir)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        finished = stub.GetJob(pb.JobRef(job_id="a" * 16), timeout=10)
        assert finished.state == pb.JOB_STATE_SUCCEEDED and not finished.error.message
        assert finished.adapter_result.name == "stored" and finished.adapter_result.created_at == stored.created_at
        never_ran = stub.GetJob(pb.JobRef(job_id="b" * 16), timeout=10)
        assert never_ran.state == pb.JOB_STATE_FAILED and "interrupted by a server restart" in never_ran.error.message
        assert adapter_states(stub) == {"stored": pb.ADAPTER_STATE_READY, "never-ran": pb.ADAPTER_STATE_FAILED}


def test_a_full_disk_refuses_cleanly_and_leaves_nothing_half_written(serve, scene, shapes, tmp_path):  # noqa: F811
    data_dir = tmp_path / "data"
    server = serve(data_dir, file_size_limit=30_000)  # room for the scene, not for larger files
    source, mask, _ = upload_scene(server.stub, scene)
    noise = encode_png(np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8))
    full = "out of storage space"
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: upload(server.stub, noise), full)
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: import_adapter(server.stub, "big", lora_file(shapes, rank=8)), full)
    request = pb.TrainRequest(adapter="trained", source_id=source.id, mask_id=mask.id, steps=2, rank=8)
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: server.stub.Train(request, timeout=300), full)
    info = server.stub.GetAdapter(pb.AdapterRef(name="trained"), timeout=10)
    assert info.state == pb.ADAPTER_STATE_FAILED and full in info.error
    assert adapter_states(server.stub) == {"trained": pb.ADAPTER_STATE_FAILED}
    server_info = server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    assert list(server_info.adapters_loaded) == []  # its weights are not held as if it were stored
    assert len(server.stub.ListMedia(pb.ListMediaRequest(), timeout=10).media) == 3
    assert len(list((data_dir / "media").iterdir())) == 3
    assert [p.name for p in (data_dir / "adapters").iterdir()] == ["trained"]
    assert [p.name for p in (data_dir / "adapters" / "trained").iterdir()] == ["failure.txt"]


def test_pins_outlive_a_restart_and_a_crash_where_they_still_fit(serve, start_server_at, tiny_model_dir, shapes, tmp_path):  # noqa: F811
    data_dir = tmp_path / "data"
    server = serve(data_dir)
    for seed, name in enumerate(("kept-pinned", "unpinned", "never-pinned", "second-pin")):
        import_adapter(server.stub, name, lora_file(shapes, rank=2, seed=seed))
    for name in ("kept-pinned", "unpinned", "second-pin"):
        assert server.stub.PinAdapter(pb.PinAdapterRequest(name=name), timeout=30).adapter.pinned
    server.stub.PinAdapter(pb.PinAdapterRequest(name="unpinned", unpin=True), timeout=30)
    server.kill()

    def pinned_after_restart(**config) -> tuple[list[str], dict[str, int]]:
        restarted = start_server_at(tiny_model_dir, data_dir, **config)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{restarted.port}") as channel:
                stub = framecast_pb2_grpc.FramecastStub(channel)
                listed = {a.name: a for a in stub.ListAdapters(pb.ListAdaptersRequest(), timeout=10).adapters}
                assert [n for n, a in listed.items() if a.pinned] == list(stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).adapters_pinned)
                return sorted(stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).adapters_pinned), {n: a.state for n, a in listed.items()}
        finally:
            restarted.stop(grace=5)

    pinned, states = pinned_after_restart()
    assert pinned == ["kept-pinned", "second-pin"]
    assert states == {"kept-pinned": pb.ADAPTER_STATE_LOADED, "second-pin": pb.ADAPTER_STATE_LOADED,
                      "unpinned": pb.ADAPTER_STATE_READY, "never-pinned": pb.ADAPTER_STATE_READY}  # fmt: skip
    # One device slot now: the first pin (by name) is restored, the second no longer fits and is dropped for good.
    assert pinned_after_restart(adapter_slots=1)[0] == ["kept-pinned"]
    assert pinned_after_restart()[0] == ["kept-pinned"]


def test_a_propagation_whose_result_was_stored_before_the_crash_reads_succeeded(start_server_at, tiny_model_dir, scene, tmp_path):
    data_dir = tmp_path / "data"
    server = start_server_at(tiny_model_dir, data_dir)
    written = []  # every record the queue writes, in order (it still writes them all)
    persist = server.queue._persist
    server.queue._persist = lambda info: (written.append(pb.JobInfo.FromString(info.SerializeToString())), persist(info))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        source, mask, edited = upload_scene(stub, scene)
        request = pb.PropagateRequest(source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id, prompt="p", steps=2)
        results = {}
        # The third run repeats the first: the same frames, stored once under the first job's filename
        # (PNG sequences: x264 does not always give identical frames identical bytes).
        for encoding in (pb.OUTPUT_ENCODING_PNG_SEQUENCE, pb.OUTPUT_ENCODING_MP4_H264, pb.OUTPUT_ENCODING_PNG_SEQUENCE):
            request.output_encoding = encoding
            events = list(stub.Propagate(request, timeout=300))
            results[events[0].job_id] = events[-1].result
    server.stop(grace=5)
    first, second, repeat = results
    assert results[repeat].video.id == results[first].video.id
    # Right after its result is stored, a job's record carries it, metrics and all, before the job ends.
    for job_id, result in results.items():
        running = [r for r in written if r.job_id == job_id and r.state == pb.JOB_STATE_RUNNING]
        assert running[-1].propagate_result == result, job_id
    # Their records as a kill before the final record leaves them: two with the result written
    # (the checkpoint), one killed between storing the video and that checkpoint, and one of a
    # propagation that had not got as far.
    records = data_dir / "jobs"
    for job_id in results:
        info = json_format.Parse((records / f"{job_id}.json").read_text(), pb.JobInfo())
        info.state = pb.JOB_STATE_RUNNING
        info.ClearField("finished_at")
        if job_id == second:
            info.ClearField("propagate_result")
        (records / f"{job_id}.json").write_text(json_format.MessageToJson(info, preserving_proto_field_name=True))
    info.ClearField("propagate_result")
    info.job_id = "c" * 16
    (records / f"{info.job_id}.json").write_text(json_format.MessageToJson(info, preserving_proto_field_name=True))

    server = start_server_at(tiny_model_dir, data_dir)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        for job_id, result in results.items():
            settled = stub.GetJob(pb.JobRef(job_id=job_id), timeout=10)
            assert settled.state == pb.JOB_STATE_SUCCEEDED and not settled.error.message
            assert settled.propagate_result.video == result.video and settled.propagate_result.num_frames == 9
            assert settled.finished_at == result.video.created_at
            if job_id == second:  # found by its filename: the metrics were not stored with the video
                assert not settled.propagate_result.HasField("metrics")
            else:
                assert settled.propagate_result == result
        interrupted = stub.GetJob(pb.JobRef(job_id="c" * 16), timeout=10)
        assert interrupted.state == pb.JOB_STATE_FAILED and "interrupted by a server restart" in interrupted.error.message
    server.stop(grace=5)

    # A result deleted while the server was down is not claimed.
    info = json_format.Parse((records / f"{first}.json").read_text(), pb.JobInfo())
    info.state = pb.JOB_STATE_RUNNING
    (records / f"{first}.json").write_text(json_format.MessageToJson(info, preserving_proto_field_name=True))
    shutil.rmtree(data_dir / "media" / results[first].video.id.removeprefix("sha256:"))
    server = start_server_at(tiny_model_dir, data_dir)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        gone = framecast_pb2_grpc.FramecastStub(channel).GetJob(pb.JobRef(job_id=first), timeout=10)
    assert gone.state == pb.JOB_STATE_FAILED and not gone.HasField("propagate_result")
