"""Exported adapters load into stock diffusers and reproduce the server's frames; adapters,
media and job records survive a restart; jobs queue behind each other."""

from __future__ import annotations

import threading

import numpy as np
import PIL.Image
import torch

from framecast.common.media import decode_image, encode_png, encode_video, mask_to_frames
from framecast.v1 import framecast_pb2 as pb

from .test_e2e import upload, upload_scene


def frames_of(events):
    return np.stack([decode_image(e.frame.png) for e in events if e.WhichOneof("event") == "frame"])


def test_exported_adapter_in_stock_diffusers_matches_server(stub, scene, tiny_model_dir, tmp_path):
    from diffusers import WanImageToVideoPipeline

    source, _, edited = upload_scene(stub, scene)
    mask = upload(stub, encode_video(mask_to_frames(scene.edit_mask), 8, lossless=True))
    list(stub.Train(pb.TrainRequest(adapter="export-me", source_id=source.id, mask_id=mask.id, prompt=scene.prompt,
                                    steps=8, rank=8, learning_rate=5e-3, seed=2), timeout=300))
    blob = b"".join(c.data for c in stub.ExportAdapter(pb.ExportAdapterRequest(name="export-me"), timeout=60))
    path = tmp_path / "export-me.safetensors"
    path.write_bytes(blob)

    # A mask covering every frame whole reduces the method's conditioning to plain I2V, which
    # is what the stock pipeline computes: the frames must then agree.
    full_mask = upload(stub, encode_png(np.full((64, 64, 3), 255, np.uint8)))
    settings = dict(prompt="a recoloured sprite", negative_prompt="blurry", steps=3, guidance_scale=5.0, seed=21)
    request = pb.PropagateRequest(adapter="export-me", source_id=source.id, mask_id=full_mask.id,
                                  edited_first_frame_id=edited.id, mask_mode=pb.MASK_MODE_EXACT, **settings)
    served = frames_of(stub.Propagate(request, timeout=300))
    request.adapter = ""
    served_base = frames_of(stub.Propagate(request, timeout=300))

    pipe = WanImageToVideoPipeline.from_pretrained(tiny_model_dir, local_files_only=True)
    pipe.load_lora_weights(str(path))
    stock = pipe(
        image=PIL.Image.fromarray(scene.edited_first_frame), prompt=settings["prompt"],
        negative_prompt=settings["negative_prompt"], height=64, width=64, num_frames=9,
        num_inference_steps=settings["steps"], guidance_scale=settings["guidance_scale"],
        generator=torch.Generator("cpu").manual_seed(settings["seed"]), output_type="np",
    ).frames[0]
    stock = np.round(stock * 255.0)
    # Tolerance: 1 grey level, from float rounding at the final x255 (identical math otherwise).
    assert np.abs(stock - served).max() <= 1.0
    # ...and the adapter matters: the bare base model is far from both.
    assert np.abs(stock - served_base).max() > 10


def test_restart_keeps_adapters_media_and_jobs(start_server_at, tiny_model_dir, scene, tmp_path):
    import grpc

    from framecast.v1 import framecast_pb2_grpc

    data_dir = tmp_path / "data"
    server = start_server_at(tiny_model_dir, data_dir)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        source, mask, edited = upload_scene(stub, scene)
        events = list(stub.Train(pb.TrainRequest(adapter="keep", source_id=source.id, mask_id=mask.id, steps=2, rank=2), timeout=300))
        job_id = events[0].job_id
        request = pb.PropagateRequest(adapter="keep", source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id,
                                      prompt="p", steps=2, seed=3)
        before = frames_of(stub.Propagate(request, timeout=300))
    server.stop(grace=5)

    server = start_server_at(tiny_model_dir, data_dir)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        assert [a.name for a in stub.ListAdapters(pb.ListAdaptersRequest(), timeout=10).adapters] == ["keep"]
        assert stub.GetJob(pb.JobRef(job_id=job_id), timeout=10).state == pb.JOB_STATE_SUCCEEDED
        after = frames_of(stub.Propagate(request, timeout=300))
    assert np.array_equal(before, after)


def test_second_job_waits_in_queue_and_can_reattach(stub, scene):
    source, mask, edited = upload_scene(stub, scene)
    first = stub.Train(pb.TrainRequest(adapter="queue-a", source_id=source.id, mask_id=mask.id, steps=40, rank=2), timeout=300)
    first_events = []
    started = threading.Event()

    def drain():
        for event in first:
            first_events.append(event)
            if event.WhichOneof("event") == "progress":
                started.set()

    reader = threading.Thread(target=drain)
    reader.start()
    assert started.wait(60)
    request = pb.PropagateRequest(adapter="", source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id,
                                  prompt="p", steps=2)
    second = stub.Propagate(request, timeout=300)
    accepted = next(second)
    queued = next(second)
    assert queued.queued.position == 1  # the training job runs ahead of it
    # Drop the stream and re-attach by job id: nothing is lost.
    second.cancel()
    watched = list(stub.WatchJob(pb.JobRef(job_id=accepted.job_id), timeout=300))
    reader.join(120)
    assert first_events[-1].WhichOneof("event") == "adapter"
    assert watched[0].WhichOneof("event") == "accepted"
    assert sorted(e.frame.index for e in watched if e.WhichOneof("event") == "frame") == list(range(9))
    assert watched[-1].WhichOneof("event") == "result"
    assert stub.ListJobs(pb.ListJobsRequest(state=pb.JOB_STATE_SUCCEEDED), timeout=10).jobs
