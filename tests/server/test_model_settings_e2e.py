"""The model's settings through the real server on the built-in model: shown by GetServerInfo and
framecast info, taken by a request's unset fields, under its preset's and its own; the verdict
in GetJob and ListJobs."""

from __future__ import annotations

import json

import grpc
import pytest

from framecast.common.media import encode_png, encode_video, mask_to_frames
from framecast.engine.toy.world import SceneConfig, make_scene
from framecast.v1 import framecast_pb2 as pb


def upload(stub, data: bytes, name: str) -> pb.MediaRef:
    return stub.UploadMedia(iter([pb.MediaChunk(header=pb.MediaRef(filename=name), data=data)]), timeout=60)


@pytest.fixture(scope="module")
def media(toy):
    scene = make_scene(7, SceneConfig(frames=9, height=64, width=64, sprites=1, edit="recolor"))
    return (scene, upload(toy, encode_video(scene.source, 16.0, lossless=True), "s.mp4"),
            upload(toy, encode_png(mask_to_frames(scene.edit_mask[:1])[0]), "m.png"),
            upload(toy, encode_png(scene.edited_first_frame), "e.png"))  # fmt: skip


def test_the_model_settings_are_shown(toy):
    settings = json.loads(toy.GetServerInfo(pb.GetServerInfoRequest(), timeout=30).model_settings_json)
    assert settings["file"] == "framecast.json" and settings["train"]["learning_rate"] == 0.001
    assert settings["propagate"] == {"adapter_strength": 0.6, "guidance_scale": 2.0}
    assert settings["first_frame_reference"] and set(settings["presets"]) == {"quality", "fast"}


def test_unset_fields_take_the_preset_then_the_model_and_an_unknown_preset_is_refused(toy, media):
    scene, source, mask, edited = media

    def plan(**fields):
        return toy.Plan(pb.PlanRequest(train=pb.TrainRequest(adapter="planned", source_id=source.id, mask_id=mask.id,
                                                             prompt="p", **fields)), timeout=60)  # fmt: skip

    assert plan().steps == 200 and plan(preset="fast").steps == 40 and plan(preset="quality").steps == 1600
    assert plan(preset="fast", steps=7).steps == 7  # what the request sets wins
    refused = plan(preset="turbo")
    assert not refused.ok and refused.problems[0].field == "preset" and "fast" in refused.problems[0].message
    with pytest.raises(grpc.RpcError) as error:
        list(toy.Propagate(pb.PropagateRequest(source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id,
                                               prompt="p", preset="turbo"), timeout=60))  # fmt: skip
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "preset" in error.value.details()


def test_the_verdict_is_in_get_job_and_list_jobs(toy, media):
    scene, source, mask, edited = media
    events = list(toy.Propagate(pb.PropagateRequest(source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id,
                                                    prompt=scene.edited_prompt, steps=2), timeout=300))  # fmt: skip
    verdict = events[-1].result.fidelity.verdict
    assert verdict != pb.EDIT_VERDICT_UNSPECIFIED
    assert toy.GetJob(pb.JobRef(job_id=events[0].job_id), timeout=30).verdict == verdict
    listed = {job.job_id: job for job in toy.ListJobs(pb.ListJobsRequest(limit=100), timeout=30).jobs}
    assert listed[events[0].job_id].verdict == verdict
