"""Fast client tests that need no server: enum mapping, error conversion, requests, chunking, strips."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from framecast.client import FramecastError, collect_propagation, media_chunks, run_train, wait_for_result
from framecast.client.client import OUTPUT_ENCODINGS, MiB, encode_array, enum_value, mask_mode_value
from framecast.client.progress import JobProgress, follow_job
from framecast.client.strip import GAP, HEADER_HEIGHT, LABEL_WIDTH, build_strip, frame_indices
from framecast.common import media
from framecast.engine.footage.read import decode_all
from framecast.v1 import framecast_pb2 as pb


# ---- import hygiene -------------------------------------------------------------------------


def test_client_imports_neither_torch_nor_diffusers():
    code = (
        "import sys, framecast.client, framecast.client.cli, framecast.client.strip, framecast.engine.toy.demo; "
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, "
        "[m for m in ('torch', 'diffusers') if m in sys.modules]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---- enums ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [("exact", pb.MASK_MODE_EXACT), ("bbox", pb.MASK_MODE_BBOX), ("DILATE", pb.MASK_MODE_DILATE),
     (None, pb.MASK_MODE_UNSPECIFIED), (pb.MASK_MODE_BBOX, pb.MASK_MODE_BBOX)],
)  # fmt: skip
def test_mask_mode_mapping(value, expected):
    assert mask_mode_value(value) == expected


@pytest.mark.parametrize("value", ["box", "", 7, True, 1.0])
def test_unknown_mask_mode_is_a_value_error_naming_the_argument(value):
    with pytest.raises(ValueError, match="mask_mode must be one of exact, bbox, dilate"):
        mask_mode_value(value)


def test_output_encoding_mapping():
    assert enum_value("mp4-lossless", OUTPUT_ENCODINGS, "output_encoding") == pb.OUTPUT_ENCODING_MP4_H264_LOSSLESS
    assert enum_value("png_sequence", OUTPUT_ENCODINGS, "output_encoding") == pb.OUTPUT_ENCODING_PNG_SEQUENCE
    with pytest.raises(ValueError, match="output_encoding"):
        enum_value("gif", OUTPUT_ENCODINGS, "output_encoding")


# ---- error conversion ---------------------------------------------------------------------


def test_framecast_error_from_rpc_error(rpc_error):
    error = FramecastError.from_rpc_error(rpc_error(grpc.StatusCode.NOT_FOUND, "adapter 'x' not found"))
    assert error.code is grpc.StatusCode.NOT_FOUND and error.message == "adapter 'x' not found"
    assert str(error) == "NOT_FOUND: adapter 'x' not found"
    bare = FramecastError.from_rpc_error(grpc.RpcError("boom"))  # no .code(): UNKNOWN
    assert bare.code is grpc.StatusCode.UNKNOWN and bare.message == "boom"


def test_unary_rpc_error_becomes_framecast_error_from_none(client, fake_stub, rpc_error):
    fake_stub(GetAdapter=rpc_error(grpc.StatusCode.NOT_FOUND, "adapter 'x' not found"))
    with pytest.raises(FramecastError) as info:
        client.get_adapter("x")
    assert info.value.code is grpc.StatusCode.NOT_FOUND and info.value.message == "adapter 'x' not found"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_timeouts_default_to_the_client_and_can_be_overridden(client, fake_stub):
    fake_stub(GetServerInfo=pb.ServerInfo(version="v"), ListAdapters=pb.ListAdaptersResponse())
    assert client.server_info().version == "v"
    client.list_adapters(timeout=1.5)
    assert [timeout for _, _, timeout in client._stub.calls] == [5.0, 1.5]


def test_stream_error_mid_stream_becomes_framecast_error(client, fake_stub, rpc_error, server_stream):
    accepted = pb.JobEvent(job_id="j", accepted=pb.JobInfo(job_id="j"))
    call = server_stream([accepted], rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "out of memory"))
    fake_stub(Train=call)
    events = client.train("a", "sha256:s", "sha256:m", "p")
    assert next(events) == accepted
    with pytest.raises(FramecastError) as info:
        next(events)
    assert info.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.__suppress_context__
    assert call.cancelled


def test_abandoning_a_stream_cancels_the_call(client, fake_stub, server_stream):
    call = server_stream([pb.JobEvent(job_id="j"), pb.JobEvent(job_id="j")])
    fake_stub(WatchJob=call)
    events = client.watch_job("j")
    next(events)
    events.close()
    assert call.cancelled


def test_job_error_event_raises_with_its_code():
    cancelled = pb.JobError(code="CANCELLED", message="cancelled by its owner")
    events = [pb.JobEvent(job_id="j", progress=pb.Progress(step=1, total=2)), pb.JobEvent(job_id="j", error=cancelled)]
    seen = []
    with pytest.raises(FramecastError) as info:
        run_train(events, seen.append)
    assert info.value.code is grpc.StatusCode.CANCELLED and len(seen) == 2
    with pytest.raises(FramecastError) as info:
        wait_for_result([pb.JobEvent(job_id="j", error=pb.JobError(code="NOT_A_CODE", message="?"))])
    assert info.value.code is grpc.StatusCode.UNKNOWN


def test_stream_that_ends_early_is_an_error():
    with pytest.raises(FramecastError, match="ended before the job finished") as info:
        run_train([pb.JobEvent(job_id="j", accepted=pb.JobInfo(job_id="j"))])
    assert info.value.code is grpc.StatusCode.UNKNOWN


def _deadline_stream(server_stream, rpc_error, accepted=True):
    events = [pb.JobEvent(job_id="j-1", accepted=pb.JobInfo(job_id="j-1"))] if accepted else []
    events.append(pb.JobEvent(job_id="j-1", progress=pb.Progress(phase="motion", step=1, total=100)))
    return server_stream(events, rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))


@pytest.mark.parametrize(
    "state, says",
    [(pb.JobInfo(job_id="j-1", state=pb.JOB_STATE_RUNNING), "timed out after 5 s; cancelled job j-1"),
     (pb.JobInfo(job_id="j-1", state=pb.JOB_STATE_SUCCEEDED, adapter_result=pb.AdapterInfo(name="a")),
      "timed out after 5 s; job j-1 had already finished: adapter a is stored")],
)  # fmt: skip
def test_a_deadline_cancels_the_job(client, fake_stub, server_stream, rpc_error, state, says):
    """A passed deadline ends the stream, not the job: follow_job cancels it, as on Ctrl-C."""
    fake = fake_stub(Train=_deadline_stream(server_stream, rpc_error), CancelJob=state)
    events = client.train("a", "sha256:s", "sha256:m", "p")
    with pytest.raises(FramecastError) as info:
        follow_job(client, run_train, events, JobProgress("train", disable=True))
    assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED and info.value.message == says
    assert fake.calls[1:] == [("CancelJob", pb.JobRef(job_id="j-1"), 10)]


def test_a_deadline_before_the_job_is_named_or_another_error_cancels_nothing(client, fake_stub, server_stream,
                                                                            rpc_error):  # fmt: skip
    fake = fake_stub(Train=_deadline_stream(server_stream, rpc_error, accepted=False), CancelJob=pb.JobInfo())
    with pytest.raises(FramecastError, match="^DEADLINE_EXCEEDED: timed out after 2.5 s, before the server named"):
        follow_job(client, run_train, client.train("a", "s", "m", "p"), JobProgress("train", disable=True), timeout=2.5)
    assert [name for name, *_ in fake.calls] == ["Train"]
    refused = server_stream([], rpc_error(grpc.StatusCode.NOT_FOUND, "no media 's'"))
    fake = fake_stub(Train=refused, CancelJob=pb.JobInfo())
    with pytest.raises(FramecastError, match="^NOT_FOUND: no media 's'$"):
        follow_job(client, run_train, client.train("a", "s", "m", "p"), JobProgress("train", disable=True))
    assert [name for name, *_ in fake.calls] == ["Train"]


def test_collect_propagation_decodes_frames():
    frame = np.arange(16 * 32 * 3, dtype=np.uint8).reshape(16, 32, 3)
    result = pb.PropagateResult(num_frames=2, video=pb.MediaRef(id="sha256:o"))
    events = [pb.JobEvent(job_id="j", frame=pb.Frame(index=i, png=media.encode_png(frame + i))) for i in (1, 0)]
    frames, final = collect_propagation(events + [pb.JobEvent(job_id="j", result=result)])
    assert sorted(frames) == [0, 1] and final == result
    np.testing.assert_array_equal(frames[1], frame + 1)


def test_wait_ready_polls_health_until_serving(client, rpc_error):
    from grpc_health.v1 import health_pb2

    answers = iter(
        [
            rpc_error(grpc.StatusCode.UNAVAILABLE, "connecting"),
            health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING),
            health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING),
        ]
    )

    class Health:
        def Check(self, request, timeout=None):
            assert request.service == "" and timeout <= 5.0
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
            return answer

    client._health = Health()
    assert client.wait_ready(timeout=10) is True


def test_wait_ready_times_out_with_deadline_exceeded(client):
    started = time.monotonic()
    with pytest.raises(FramecastError, match="not ready after 0.3 s") as info:
        client.wait_ready(timeout=0.3)  # nothing listens on port 1
    assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5


# ---- requests -----------------------------------------------------------------------------


def test_train_request_fields(client, fake_stub, server_stream):
    fake_stub(Train=server_stream([]))
    client.train("a", pb.MediaRef(id="sha256:s"), "sha256:m", "p", steps=5, mask_mode="exact",
                 references=[(4, "sha256:r")], loss_weights=(2, 0.5), gradient_checkpointing=False)  # fmt: skip
    ((_, request, _),) = client._stub.calls
    assert request.source_id == "sha256:s" and request.steps == 5 and request.rank == 0  # 0 = server default
    assert request.mask_mode == pb.MASK_MODE_EXACT and request.gradient_checkpointing_off
    assert [(r.frame_index, r.image_id) for r in request.references] == [(4, "sha256:r")]
    assert (request.loss_weights.edit, request.loss_weights.keep) == (2.0, 0.5)
    with pytest.raises(ValueError, match="loss_weights"):
        client.train("a", "s", "m", "p", loss_weights=(1,))
    with pytest.raises(ValueError, match="mask_mode"):
        client.train("a", "s", "m", "p", mask_mode="tight")


def test_propagate_sets_optional_fields_explicitly(client, fake_stub, server_stream):
    fake_stub(Propagate=server_stream([]))
    client.propagate("a", "s", "m", "e", "p", guidance_scale=1.0, feather_px=0, output_encoding="png-sequence",
                     adapter_strength=0.0)  # fmt: skip
    client.propagate("a", "s", "m", "e", "p", guidance_scale=None, feather_px=None)
    (_, explicit, _), (_, unset, _) = client._stub.calls
    assert explicit.HasField("adapter_strength") and explicit.adapter_strength == 0.0
    assert not unset.HasField("adapter_strength")
    assert explicit.HasField("guidance_scale") and explicit.guidance_scale == 1.0
    assert explicit.HasField("feather_px") and explicit.feather_px == 0
    assert explicit.output_encoding == pb.OUTPUT_ENCODING_PNG_SEQUENCE and explicit.steps == 0  # the server's
    assert not unset.HasField("guidance_scale") and not unset.HasField("feather_px")


@pytest.mark.parametrize(
    "call, argument",
    [(lambda c: c.train("a", "s", "m", "p", seed=-1), "seed"),
     (lambda c: c.train("a", "s", "m", "p", seed=2**64), "seed"),
     (lambda c: c.train("a", "s", "m", "p", dilate_px=-5), "dilate_px"),
     (lambda c: c.train("a", "s", "m", "p", colour_variants=-1), "colour_variants"),
     (lambda c: c.train("a", "s", "m", "p", steps=2**32), "steps"),
     (lambda c: c.train("a", "s", "m", "p", rank=-1), "rank"),
     (lambda c: c.train("a", "s", "m", "p", appearance_steps=-1), "appearance_steps"),
     (lambda c: c.train("a", "s", "m", "p", references=[(-1, "sha256:r")]), "references frame_index"),
     (lambda c: c.propagate("a", "s", "m", "e", "p", feather_px=-1), "feather_px"),
     (lambda c: c.propagate("a", "s", "m", "e", "p", seed=-1), "seed"),
     (lambda c: c.propagate("a", "s", "m", "e", "p", dilate_px=2**32), "dilate_px"),
     (lambda c: c.propagate("a", "s", "m", "e", "p", steps=-30), "steps"),
     (lambda c: c.list_jobs(limit=-1), "limit")],
)  # fmt: skip
def test_out_of_range_numbers_are_value_errors_naming_the_parameter(client, fake_stub, server_stream, call, argument):
    fake = fake_stub(Train=server_stream([]), Propagate=server_stream([]), ListJobs=pb.ListJobsResponse())
    with pytest.raises(ValueError, match=rf"^{argument} must be between 0 and \d+ but is -?\d+$"):
        call(client)
    assert fake.calls == []  # refused before any call
    client.train("a", "s", "m", "p", seed=np.uint64(2**64 - 1), colour_variants=np.int32(3))
    ((_, request, _),) = fake.calls
    assert (request.seed, request.colour_variants) == (2**64 - 1, 3)
    with pytest.raises(TypeError, match="seed must be a whole number"):
        client.propagate("a", "s", "m", "e", "p", seed=1.5)


# ---- upload chunking ----------------------------------------------------------------------


def _check_chunks(chunks, data: bytes, filename: str, chunk_bytes: int):
    assert chunks[0].HasField("header")
    assert chunks[0].header.filename == filename and chunks[0].header.size_bytes == len(data)
    assert not any(chunk.HasField("header") for chunk in chunks[1:])
    assert all(len(chunk.data) <= chunk_bytes for chunk in chunks)
    assert b"".join(chunk.data for chunk in chunks) == data


@pytest.mark.parametrize("size, count", [(0, 1), (1, 1), (10, 1), (25, 3), (30, 3)])
def test_media_chunks_from_bytes(size, count):
    data = bytes(range(256))[:size] if size <= 256 else b""
    chunks = list(media_chunks(data, "clip.mp4", chunk_bytes=10))
    assert len(chunks) == count
    _check_chunks(chunks, data, "clip.mp4", 10)


def test_media_chunks_from_a_file(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 2 * MiB + 5, dtype=np.uint8).tobytes()
    path = tmp_path / "source.mp4"
    path.write_bytes(data)
    chunks = list(media_chunks(path))
    assert len(chunks) == 3
    _check_chunks(chunks, data, "source.mp4", MiB)


def test_media_chunks_fail_at_call_time():
    with pytest.raises(FileNotFoundError):
        media_chunks("/nonexistent/clip.mp4")
    with pytest.raises(ValueError, match="chunk_bytes"):
        media_chunks(b"abc", chunk_bytes=0)


def test_upload_streams_the_chunks(client, fake_stub):
    ref = pb.MediaRef(id="sha256:x", num_frames=1)
    fake_stub(UploadMedia=ref)
    assert client.upload(b"a" * 25, filename="e.png", chunk_bytes=10) == ref
    ((_, chunks, timeout),) = client._stub.calls
    _check_chunks(chunks, b"a" * 25, "e.png", 10)
    assert timeout == 5.0


def test_encode_array_picks_png_or_mp4():
    image = np.zeros((32, 48, 3), np.uint8)
    data, name = encode_array(image)
    assert name == "image.png" and decode_all(data).frames.shape == (1, 32, 48, 3)
    mask = np.zeros((5, 32, 48), bool)
    mask[:, 8:16, 8:24] = True
    data, name = encode_array(mask, lossless=True)
    decoded = decode_all(data)
    assert name == "video.mp4" and decoded.frames.shape == (5, 32, 48, 3)
    np.testing.assert_array_equal(media.mask_from_frames(decoded.frames), mask)
    assert encode_array(mask[0])[1] == "image.png"
    with pytest.raises(ValueError):
        encode_array(np.zeros((4, 4), np.float32))


def test_download_checks_size_and_writes_atomically(client, fake_stub, server_stream, tmp_path):
    chunks = [pb.MediaChunk(header=pb.MediaRef(id="sha256:o", size_bytes=6), data=b"abc"), pb.MediaChunk(data=b"def")]
    fake_stub(DownloadMedia=server_stream(chunks))
    assert client.download_to("sha256:o", tmp_path / "out" / "o.mp4").read_bytes() == b"abcdef"
    fake_stub(DownloadMedia=server_stream(chunks[:1]))
    with pytest.raises(FramecastError) as info:
        client.download("sha256:o")
    assert info.value.code is grpc.StatusCode.DATA_LOSS


# ---- strip --------------------------------------------------------------------------------


def test_frame_indices():
    assert frame_indices(17, 5) == [0, 4, 8, 12, 16]
    assert frame_indices(3, 5) == [0, 1, 2]
    assert frame_indices(1, 5) == [0]


def test_build_strip_shape():
    source = np.zeros((9, 32, 48, 3), np.uint8)
    mask = np.zeros((9, 32, 48), bool)
    sheet = build_strip([("source", source), ("mask", mask), ("output", source)], columns=5, scale=2)
    assert sheet.dtype == np.uint8
    assert sheet.shape == (HEADER_HEIGHT + 3 * 64 + 2 * GAP, LABEL_WIDTH + 5 * 96 + 4 * GAP, 3)
    bare = build_strip([("source", source)], columns=3, scale=1, labels=False)
    assert bare.shape == (32, 3 * 48 + 2 * GAP, 3)
    assert build_strip([("source", source)], columns=2).shape[0] == HEADER_HEIGHT + 128  # enlarged to MIN_TILE


def test_build_strip_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="frame size"):
        build_strip([("a", np.zeros((5, 16, 16, 3), np.uint8)), ("b", np.zeros((5, 32, 16, 3), np.uint8))])
    with pytest.raises(ValueError):
        build_strip([])
