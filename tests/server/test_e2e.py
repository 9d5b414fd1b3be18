"""End to end over a real port: upload, train, propagate, download, decode."""

from __future__ import annotations


import grpc
import numpy as np
import pytest

from framecast.common.media import decode_image, encode_png, encode_video, mask_to_frames
from framecast.engine.footage.read import decode_all
from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc


def upload(stub, data: bytes, filename: str = "") -> pb.MediaRef:
    def chunks():
        yield pb.MediaChunk(header=pb.MediaRef(filename=filename), data=data[:4096])
        for start in range(4096, len(data), 4096):
            yield pb.MediaChunk(data=data[start : start + 4096])

    return stub.UploadMedia(chunks(), timeout=60)


def upload_scene(stub, scene):
    source = upload(stub, encode_video(scene.source, 8, lossless=True), "source.mp4")
    mask = upload(stub, encode_video(mask_to_frames(scene.edit_mask), 8, lossless=True), "mask.mp4")
    edited = upload(stub, encode_png(scene.edited_first_frame), "edited.png")
    return source, mask, edited


def test_upload_is_content_addressed_and_described(stub, scene):
    data = encode_video(scene.source, 8, lossless=True)
    first, second = upload(stub, data), upload(stub, data)
    assert first.id == second.id and first.id.startswith("sha256:")
    assert (first.kind, first.num_frames, first.width, first.height) == (pb.MEDIA_KIND_VIDEO, 9, 64, 64)
    assert first.fps == pytest.approx(8.0)
    chunks = list(stub.DownloadMedia(pb.MediaRef(id=first.id), timeout=60))
    assert chunks[0].header.id == first.id
    assert b"".join(c.data for c in chunks) == data


def test_train_then_propagate_over_the_wire(stub, scene):
    source, mask, edited = upload_scene(stub, scene)
    events = list(
        stub.Train(
            pb.TrainRequest(adapter="e2e", source_id=source.id, mask_id=mask.id, prompt=scene.prompt, steps=6, rank=4, seed=1),
            timeout=300,
        )
    )
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "accepted" and "queued" in kinds and kinds[-1] == "adapter"
    progress = [e.progress for e in events if e.WhichOneof("event") == "progress"]
    decoded = [p for p in progress if p.phase == "decode"]  # the source read onto the working grid first
    assert decoded and decoded[-1].step == decoded[-1].total
    progress = [p for p in progress if p.phase != "decode"]
    assert [p.step for p in progress] == list(range(1, 7)) and all(p.total == 6 for p in progress)
    assert all(np.isfinite(p.loss) and p.loss > 0 for p in progress)
    adapter = events[-1].adapter
    assert adapter.name == "e2e" and adapter.rank == 4 and adapter.size_bytes > 0

    request = pb.PropagateRequest(
        adapter="e2e", source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id,
        prompt=scene.edited_prompt, steps=3, seed=5, output_encoding=pb.OUTPUT_ENCODING_MP4_H264_LOSSLESS,
    )
    events = list(stub.Propagate(request, timeout=300))
    frames = {e.frame.index: decode_image(e.frame.png) for e in events if e.WhichOneof("event") == "frame"}
    assert sorted(frames) == list(range(9))
    assert all(f.shape == (64, 64, 3) for f in frames.values())
    result = events[-1].result
    assert result.num_frames == 9 and result.video.num_frames == 9
    assert np.isfinite(result.metrics.background_psnr_db) and np.isfinite(result.metrics.first_frame_psnr_inside_db)
    assert len(result.fidelity.curve) == 9 and result.fidelity.verdict != pb.EDIT_VERDICT_UNSPECIFIED

    data = b"".join(c.data for c in stub.DownloadMedia(pb.MediaRef(id=result.video.id), timeout=60))
    video = decode_all(data)
    assert video.frames.shape == (9, 64, 64, 3)
    streamed = np.stack([frames[i] for i in range(9)])
    # Lossless H.264 is yuv444 at CRF 0: only the RGB<->YUV round trip separates it from the PNG frames.
    assert np.abs(video.frames.astype(int) - streamed.astype(int)).max() <= 3

    job = stub.GetJob(pb.JobRef(job_id=events[0].job_id), timeout=10)
    assert job.state == pb.JOB_STATE_SUCCEEDED and job.propagate_result.video.id == result.video.id

    def frames_at(adapter: str, **strength) -> np.ndarray:
        again = pb.PropagateRequest(**{**{f.name: v for f, v in request.ListFields()}, "adapter": adapter, **strength})
        events = list(stub.Propagate(again, timeout=300))
        return np.stack([decode_image(e.frame.png) for e in events if e.WhichOneof("event") == "frame"])

    base = frames_at("")
    assert not np.array_equal(base, streamed)  # the adapter changes the video...
    assert np.array_equal(frames_at("e2e", adapter_strength=0.0), base)  # ...unless scaled to nothing
    assert np.array_equal(frames_at("e2e", adapter_strength=1.0), streamed)


def test_same_seed_same_frames_and_composite_keeps_background(stub, scene):
    source, mask, edited = upload_scene(stub, scene)

    def run(seed, composite):
        request = pb.PropagateRequest(
            source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id, prompt=scene.edited_prompt,
            steps=2, seed=seed, composite=composite, output_encoding=pb.OUTPUT_ENCODING_PNG_SEQUENCE,
        )
        events = list(stub.Propagate(request, timeout=300))
        frames = np.stack([decode_image(e.frame.png) for e in events if e.WhichOneof("event") == "frame"])
        return frames, events[-1].result.metrics

    (first, metrics), (again, _), (other, _) = run(11, False), run(11, False), run(12, False)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert 0 < metrics.background_ssim < 1 and metrics.temporal_change > 0

    composited, metrics = run(11, True)
    assert metrics.background_psnr_db == 100 and metrics.background_ssim == pytest.approx(1.0)
    from framecast.engine.method.conditioning import prepare_edit_mask

    # The source as the server holds it: the uploaded mp4, decoded.
    stored = b"".join(c.data for c in stub.DownloadMedia(pb.MediaRef(id=source.id), timeout=60))
    source_frames = decode_all(stored).frames
    used_mask = prepare_edit_mask(scene.edit_mask, "bbox")
    assert np.array_equal(composited[~used_mask], source_frames[~used_mask])
    assert not np.array_equal(composited[used_mask], source_frames[used_mask])


def test_sampling_levers_over_the_wire(stub, scene):
    """Guidance on the first step only with TaylorSeer's cache: other frames than the full sampler's, close to them."""
    source, mask, edited = upload_scene(stub, scene)

    def run(**lever):
        request = pb.PropagateRequest(
            source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id, prompt=scene.edited_prompt,
            steps=6, seed=3, guidance_scale=3.0, output_encoding=pb.OUTPUT_ENCODING_PNG_SEQUENCE, **lever,
        )  # fmt: skip
        events = list(stub.Propagate(request, timeout=300))
        assert events[-1].WhichOneof("event") == "result", events[-1]
        return np.stack([decode_image(e.frame.png) for e in events if e.WhichOneof("event") == "frame"])

    full = run()
    lever = dict(guidance_steps=1, step_cache=pb.STEP_CACHE_TAYLORSEER, cache_interval=2)
    fast = run(**lever)
    assert fast.shape == full.shape and not np.array_equal(fast, full)
    from framecast.engine.quality.metrics import psnr

    assert psnr(fast, full, np.ones(full.shape[:3], bool)) > 20
    # Plan's time estimate counts transformer passes: 6 guided steps are 12; guidance on the first
    # and TaylorSeer computing steps 0, 1, 3 and 5 of the conditional pass are 5
    plans = [stub.Plan(pb.PlanRequest(propagate=pb.PropagateRequest(
        source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id, prompt="p", steps=6, guidance_scale=3.0,
        **extra)), timeout=60) for extra in ({}, lever)]  # fmt: skip
    assert plans[0].estimated_seconds > 0
    assert plans[1].estimated_seconds == pytest.approx(plans[0].estimated_seconds * 5 / 12)


def test_windowed_training_with_steps_in_all_over_the_wire(stub, scene):
    source, mask, _ = upload_scene(stub, scene)

    def totals(in_all: bool) -> set[int]:
        request = pb.TrainRequest(adapter=f"in-all-{int(in_all)}", source_id=source.id, mask_id=mask.id, prompt="p",
                                  steps=2, rank=2, window_frames=5, overlap_frames=1, steps_in_all=in_all)  # fmt: skip
        events = list(stub.Train(request, timeout=300))
        assert events[-1].WhichOneof("event") == "adapter", events[-1]
        return {e.progress.total for e in events if e.WhichOneof("event") == "progress" and e.progress.phase == "motion"}

    assert totals(False) == {4} and totals(True) == {2}  # two windows: 2 steps each, or 2 in all


def test_health_info_and_reflection(grpc_server, stub):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}")
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    responses = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "framecast.v1.Framecast" in names and "grpc.health.v1.Health" in names
    channel.close()

    info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    assert info.ready and info.device == "cpu" and info.dtype == "float32"
    assert info.quantization == "none" and info.attention_backend == "sdpa"
    assert info.memory_bytes > 0 and info.max_frames == 33 and info.version


def test_windowed_propagation_reports_seams(stub):
    from framecast.engine.toy.world import SceneConfig, make_scene

    long_scene = make_scene(8, SceneConfig(frames=17, height=64, width=64, sprites=1))
    source, mask, edited = upload_scene(stub, long_scene)
    request = pb.PropagateRequest(
        source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id, prompt="p", steps=1,
        window_frames=9, overlap_frames=2, blend_ramp=pb.BLEND_RAMP_COSINE,
    )
    events = list(stub.Propagate(request, timeout=300))
    assert sorted(e.frame.index for e in events if e.WhichOneof("event") == "frame") == list(range(17))
    metrics = events[-1].result.metrics
    assert metrics.windows == 3 and metrics.seam_score > 0
    progress = [e.progress for e in events if e.WhichOneof("event") == "progress" and e.progress.phase == "denoise"]
    assert progress[-1].step == progress[-1].total == 3
    # No overlap named: the default 4 shrinks to the 3 that 9-frame windows allow, for training too.
    train = pb.TrainRequest(adapter="win-default", source_id=source.id, mask_id=mask.id, prompt="p", steps=1, rank=2,
                            window_frames=9)
    progress = [e.progress for e in stub.Train(train, timeout=300) if e.WhichOneof("event") == "progress"
                and e.progress.phase == "motion"]
    assert progress[-1].step == progress[-1].total == 3  # 1 step in each of 3 windows
    request = pb.PropagateRequest(adapter="win-default", source_id=source.id, mask_id=mask.id,
                                  edited_first_frame_id=edited.id, prompt="p", steps=1, window_frames=9)
    assert list(stub.Propagate(request, timeout=300))[-1].result.metrics.windows == 3
    for window, overlap in ((9, 7), (5, 0)):  # too wide; none (window 1 would not start from window 0's frames)
        bad = pb.PropagateRequest(source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id,
                                  window_frames=window, overlap_frames=overlap)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Propagate(bad, timeout=60))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"overlap_frames must be between 1 and {(window - 3) // 2}" in caught.value.details()
        assert f"(got {overlap})" in caught.value.details()


def test_serve_window_frames_5_takes_clips_that_name_no_window(start_server_at, tiny_model_dir, tmp_path, scene):
    """`serve --window-frames 5`: a 9-frame clip is two windows overlapping by the 1 frame that
    5-frame windows allow (a default of 4 refused every such request, blaming overlap_frames)."""
    server = start_server_at(tiny_model_dir, tmp_path, window_frames=5)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        source, mask, edited = upload_scene(stub, scene)
        train = pb.TrainRequest(adapter="w5", source_id=source.id, mask_id=mask.id, prompt="p", steps=1, rank=2)
        progress = [e.progress for e in stub.Train(train, timeout=300) if e.WhichOneof("event") == "progress"
                and e.progress.phase == "motion"]
        assert progress[-1].step == progress[-1].total == 2  # 1 step in each of 2 windows
        request = pb.PropagateRequest(adapter="w5", source_id=source.id, mask_id=mask.id,
                                      edited_first_frame_id=edited.id, prompt="p", steps=1)  # fmt: skip
        events = list(stub.Propagate(request, timeout=300))
        assert sorted(e.frame.index for e in events if e.WhichOneof("event") == "frame") == list(range(9))
        assert events[-1].result.metrics.windows == 2
