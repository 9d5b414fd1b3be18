"""Bad requests get the right status and a message naming the field and value; the server keeps serving."""

from __future__ import annotations

import io
import zipfile

import grpc
import numpy as np
import pytest
from PIL import Image

from framecast.common.media import encode_png, encode_video, mask_to_frames
from framecast.v1 import framecast_pb2 as pb

from .test_e2e import upload, upload_scene


def expect(code: grpc.StatusCode, call, *words: str):
    with pytest.raises(grpc.RpcError) as caught:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)
    assert caught.value.code() == code, caught.value.details()
    for word in words:
        assert word in caught.value.details(), caught.value.details()
    return caught.value.details()


@pytest.fixture(scope="module")
def media(grpc_server, scene):
    import grpc as g

    from framecast.v1 import framecast_pb2_grpc

    with g.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        source, mask, edited = upload_scene(stub, scene)
        list(stub.Train(pb.TrainRequest(adapter="bad-req", source_id=source.id, mask_id=mask.id, prompt="p", steps=1, rank=2), timeout=120))
        yield {"source": source, "mask": mask, "edited": edited, "adapter": "bad-req"}  # the adapter it trained


@pytest.fixture(autouse=True)
def still_serving(stub):
    yield
    assert stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).ready


def propagate(stub, **fields):
    return lambda: stub.Propagate(pb.PropagateRequest(prompt="p", steps=1, **fields), timeout=60)


def test_unknown_adapter(stub, media):
    call = propagate(stub, adapter="nobody", source_id=media["source"].id, mask_id=media["mask"].id,
                     edited_first_frame_id=media["edited"].id)
    expect(grpc.StatusCode.NOT_FOUND, call, "adapter", "'nobody'")
    expect(grpc.StatusCode.NOT_FOUND, lambda: stub.GetAdapter(pb.AdapterRef(name="nobody"), timeout=10), "nobody")
    expect(grpc.StatusCode.NOT_FOUND, lambda: stub.ExportAdapter(pb.ExportAdapterRequest(name="nobody"), timeout=10))


def test_unknown_media_and_job(stub, media):
    missing = "sha256:" + "0" * 64
    call = propagate(stub, source_id=missing, mask_id=media["mask"].id, edited_first_frame_id=media["edited"].id)
    expect(grpc.StatusCode.NOT_FOUND, call, missing)
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.DownloadMedia(pb.MediaRef(id="../../etc/passwd"), timeout=10), "id")
    expect(grpc.StatusCode.NOT_FOUND, lambda: stub.GetJob(pb.JobRef(job_id="nope"), timeout=10), "nope")
    expect(grpc.StatusCode.NOT_FOUND, lambda: stub.CancelJob(pb.JobRef(job_id="nope"), timeout=10), "nope")


def test_corrupt_video_bytes(stub):
    junk = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: upload(stub, junk), "data", "not a readable video")


def test_empty_upload(stub):
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.UploadMedia(iter([]), timeout=10), "data", "empty")


def test_zero_frames(stub):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme/", "")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: upload(stub, buffer.getvalue()), "zero frames")


def test_huge_dimensions(stub):
    huge = Image.new("RGB", (4096, 4096))
    data = io.BytesIO()
    huge.save(data, format="PNG")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: upload(stub, data.getvalue()), "4096x4096", "limit")


def test_mask_of_another_aspect(stub, scene, media):
    """Any size of the source's aspect works (it is resampled to the grid); another aspect is refused."""
    wide = upload(stub, encode_video(mask_to_frames(scene.edit_mask[:, :32, :]), 8, lossless=True))
    call = propagate(stub, source_id=media["source"].id, mask_id=wide.id, edited_first_frame_id=media["edited"].id)
    expect(grpc.StatusCode.INVALID_ARGUMENT, call, "mask_id", "64x32", "aspect", "64x64")


def test_mask_of_another_length(stub, scene, media):
    short = upload(stub, encode_video(mask_to_frames(scene.edit_mask[:5]), 8, lossless=True))
    call = lambda: stub.Train(pb.TrainRequest(adapter="x", source_id=media["source"].id, mask_id=short.id, prompt="p"), timeout=60)
    expect(grpc.StatusCode.INVALID_ARGUMENT, call, "mask_id", "5 frames", "9 frames")


def test_every_problem_of_a_request_is_reported_at_once(stub, scene, media):
    wide = upload(stub, encode_png(np.zeros((32, 64, 3), np.uint8)))
    call = propagate(stub, source_id=media["source"].id, mask_id=wide.id, edited_first_frame_id=wide.id,
                     guidance_scale=99, shot=pb.ShotOptions(start_s=30))  # fmt: skip
    details = expect(grpc.StatusCode.INVALID_ARGUMENT, call, "problems:", "mask_id", "edited_first_frame_id",
                     "guidance_scale", "shot.start_s")  # fmt: skip
    assert details.startswith("4 problems:") or details.startswith("5 problems:"), details


def test_edited_frame_must_be_an_image_of_the_source_size(stub, media):
    call = propagate(stub, source_id=media["source"].id, mask_id=media["mask"].id, edited_first_frame_id=media["source"].id)
    expect(grpc.StatusCode.INVALID_ARGUMENT, call, "edited_first_frame_id", "single image")


def test_bad_adapter_name_and_duplicate(stub, media):
    for name in ("../evil", "a/b", "x" * 65):
        call = lambda: stub.Train(pb.TrainRequest(adapter=name, source_id=media["source"].id, mask_id=media["mask"].id), timeout=60)
        expect(grpc.StatusCode.INVALID_ARGUMENT, call, "adapter")
    call = lambda: stub.Train(pb.TrainRequest(adapter=media["adapter"], source_id=media["source"].id, mask_id=media["mask"].id), timeout=60)
    expect(grpc.StatusCode.ALREADY_EXISTS, call, media["adapter"])


def test_out_of_range_settings(stub, media):
    base = dict(source_id=media["source"].id, mask_id=media["mask"].id, edited_first_frame_id=media["edited"].id)
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.Propagate(pb.PropagateRequest(steps=100000, **base), timeout=60), "steps", "100000")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.Propagate(pb.PropagateRequest(guidance_scale=-1, **base), timeout=60), "guidance_scale")
    call = lambda: stub.Propagate(pb.PropagateRequest(adapter_strength=2.5, **base), timeout=60)
    expect(grpc.StatusCode.INVALID_ARGUMENT, call, "adapter_strength", "2.5")
    call = lambda: stub.Train(pb.TrainRequest(adapter="r", rank=9999, source_id=media["source"].id, mask_id=media["mask"].id), timeout=60)
    expect(grpc.StatusCode.INVALID_ARGUMENT, call, "rank", "9999")
    call = lambda: stub.Train(pb.TrainRequest(adapter="r", colour_variants=99, source_id=media["source"].id, mask_id=media["mask"].id), timeout=60)
    expect(grpc.StatusCode.INVALID_ARGUMENT, call, "colour_variants", "99")


def test_cancelled_job(stub, media):
    request = pb.TrainRequest(adapter="cancel-me", source_id=media["source"].id, mask_id=media["mask"].id, prompt="p", steps=5000, rank=2)
    stream = stub.Train(request, timeout=300)
    job_id = None
    with pytest.raises(grpc.RpcError) as caught:
        for event in stream:
            job_id = job_id or event.job_id
            if event.WhichOneof("event") == "progress" and event.progress.step >= 2:
                stub.CancelJob(pb.JobRef(job_id=job_id), timeout=10)
    assert caught.value.code() == grpc.StatusCode.CANCELLED, caught.value.details()
    job = stub.GetJob(pb.JobRef(job_id=job_id), timeout=10)
    assert job.state == pb.JOB_STATE_CANCELLED and job.error.code == "CANCELLED"
    assert job.progress.step < 5000
    expect(grpc.StatusCode.NOT_FOUND, lambda: stub.GetAdapter(pb.AdapterRef(name="cancel-me"), timeout=10))
    # Cancelling again is a no-op that reports the state.
    assert stub.CancelJob(pb.JobRef(job_id=job_id), timeout=10).state == pb.JOB_STATE_CANCELLED


def test_settings_that_would_stall_or_break_a_job_are_refused_up_front(stub, media, scene):
    """Refused before queueing, naming field and value: no job runs, no adapter name is marked FAILED."""
    ids = dict(source_id=media["source"].id, mask_id=media["mask"].id)
    base = dict(**ids, edited_first_frame_id=media["edited"].id)
    expect(grpc.StatusCode.INVALID_ARGUMENT, propagate(stub, composite=True, feather_px=4_000_000_000, **base),
           "feather_px must be between 0 and 64", "4000000000")
    dilate = dict(mask_mode=pb.MASK_MODE_DILATE, dilate_px=4_294_967_295)
    expect(grpc.StatusCode.INVALID_ARGUMENT, propagate(stub, **dilate, **base), "dilate_px", "4294967295")
    train = lambda **fields: lambda: stub.Train(pb.TrainRequest(adapter="refused", prompt="p", steps=1, **fields), timeout=60)
    expect(grpc.StatusCode.INVALID_ARGUMENT, train(**dilate, **ids), "dilate_px", "4294967295")
    for weights in (pb.LossWeights(edit=float("nan"), keep=1), pb.LossWeights(edit=1, keep=float("inf"))):
        expect(grpc.StatusCode.INVALID_ARGUMENT, train(loss_weights=weights, **ids), "loss_weights must be finite")
    black = upload(stub, encode_video(mask_to_frames(np.zeros_like(scene.edit_mask)), 8, lossless=True), "black.mp4")
    expect(grpc.StatusCode.INVALID_ARGUMENT, train(source_id=ids["source_id"], mask_id=black.id), "mask", "no edit region")
    expect(grpc.StatusCode.INVALID_ARGUMENT, propagate(stub, **{**base, "mask_id": black.id}), "mask", "no edit region")
    names = [a.name for a in stub.ListAdapters(pb.ListAdaptersRequest(), timeout=10).adapters]
    assert "refused" not in names


def test_prompts_the_text_encoder_would_cut_are_refused_up_front(stub, media):
    """The pipeline encodes prompts at 512 UMT5 tokens and cut longer ones silently. The tiny model's
    tokenizer gives one token per UTF-8 byte, plus the end-of-sequence token."""
    ids = dict(source_id=media["source"].id, mask_id=media["mask"].id)
    base = dict(**ids, edited_first_frame_id=media["edited"].id, steps=1)
    jobs = len(stub.ListJobs(pb.ListJobsRequest(limit=1000), timeout=10).jobs)
    too_long = "a" * 512
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.Propagate(pb.PropagateRequest(prompt=too_long, **base), timeout=60),
           "prompt is 513 tokens long, over the limit of 512")  # fmt: skip
    negative = pb.PropagateRequest(prompt="p", negative_prompt="é" * 300, **base)
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.Propagate(negative, timeout=60),
           "negative_prompt is 601 tokens long, over the limit of 512")
    train = pb.TrainRequest(adapter="long-prompt", prompt=too_long, steps=1, rank=2, **ids)
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.Train(train, timeout=60), "prompt is 513 tokens long")
    huge = "a" * (1 << 20)  # refused on its length alone, never tokenized
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.Propagate(pb.PropagateRequest(prompt=huge, **base), timeout=60),
           "prompt is 1048576 characters long, over the limit of 16384")  # fmt: skip
    train = pb.TrainRequest(adapter="long-prompt", prompt=huge, steps=1, rank=2, **ids)
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.Train(train, timeout=60), "prompt is 1048576 characters long")
    assert len(stub.ListJobs(pb.ListJobsRequest(limit=1000), timeout=10).jobs) == jobs
    assert "long-prompt" not in [a.name for a in stub.ListAdapters(pb.ListAdaptersRequest(), timeout=10).adapters]
    # Counted as the pipeline counts: after its whitespace clean-up, 511 bytes + </s> fit exactly.
    fits = pb.PropagateRequest(prompt="  \n" * 1000 + "a" * 511, negative_prompt="b" * 511, **base)
    assert list(stub.Propagate(fits, timeout=300))[-1].result.num_frames == 9


def test_sampling_levers_out_of_range(stub, media):
    base = dict(source_id=media["source"].id, mask_id=media["mask"].id, edited_first_frame_id=media["edited"].id)
    expect(grpc.StatusCode.INVALID_ARGUMENT, propagate(stub, guidance_steps=2, **base), "guidance_steps", "2", "steps (1)")
    expect(grpc.StatusCode.INVALID_ARGUMENT, propagate(stub, step_cache=99, **base), "step_cache", "99", "StepCache")
    expect(grpc.StatusCode.INVALID_ARGUMENT, propagate(stub, cache_interval=0, **base), "cache_interval", "0")
    expect(grpc.StatusCode.INVALID_ARGUMENT, propagate(stub, cache_threshold=1.5, **base), "cache_threshold", "1.5")


def test_a_container_for_png_frames_or_an_unknown_one_is_refused(stub, media):
    base = dict(source_id=media["source"].id, mask_id=media["mask"].id, edited_first_frame_id=media["edited"].id)
    call = propagate(stub, output_encoding=pb.OUTPUT_ENCODING_PNG_SEQUENCE, container=pb.OUTPUT_CONTAINER_MP4, **base)
    expect(grpc.StatusCode.INVALID_ARGUMENT, call, "container", "mp4", "png-sequence writes a zip")
    expect(grpc.StatusCode.INVALID_ARGUMENT, propagate(stub, container=7, **base), "container", "7", "OutputContainer")
