"""Automatic steps through the real server on the built-in model: the motion phase stops at the
first preview whose edit holds, says so, and trains the adapter a fixed run of those steps trains."""

from __future__ import annotations

import json

import grpc
import pytest

from framecast.common.media import encode_png, encode_video, mask_to_frames
from framecast.engine.toy.world import SceneConfig, make_scene
from framecast.v1 import framecast_pb2 as pb

pytestmark = pytest.mark.slow


def upload(stub, data: bytes, name: str) -> pb.MediaRef:
    chunks = [pb.MediaChunk(header=pb.MediaRef(filename=name), data=data)]
    return stub.UploadMedia(iter(chunks), timeout=60)


@pytest.fixture(scope="module")
def recolour(toy):
    """A recolour on the toy world (a development scene, not a benchmark one), uploaded."""
    scene = make_scene(102, SceneConfig(frames=17, height=64, width=64, sprites=2, edit="recolor"))
    source = upload(toy, encode_video(scene.source, 16.0, lossless=True), "source.mp4")
    mask = upload(toy, encode_video(mask_to_frames(scene.edit_mask), 16.0, lossless=True), "mask.mp4")
    edited = upload(toy, encode_png(scene.edited_first_frame), "edited.png")
    return scene, source, mask, edited


def train(toy, name: str, scene, source, mask, edited, **fields) -> list[pb.JobEvent]:
    request = pb.TrainRequest(adapter=name, source_id=source.id, mask_id=mask.id, prompt=scene.prompt, seed=3,
                              references=[pb.ReferenceFrame(frame_index=0, image_id=edited.id)], **fields)  # fmt: skip
    return list(toy.Train(request, timeout=600))


def test_automatic_steps_stop_when_the_preview_holds_and_train_what_those_steps_train(toy, recolour):
    scene, source, mask, edited = recolour
    plan = toy.Plan(pb.PlanRequest(train=pb.TrainRequest(
        adapter="auto", source_id=source.id, mask_id=mask.id, prompt=scene.prompt, auto_steps=True,
        edited_first_frame_id=edited.id, preview_prompt=scene.edited_prompt)), timeout=60)  # fmt: skip
    assert plan.ok and plan.steps_min < plan.steps  # a range: the first preview's stop to the whole phase
    events = train(toy, "auto", scene, source, mask, edited, auto_steps=True, edited_first_frame_id=edited.id,
                   preview_prompt=scene.edited_prompt)  # fmt: skip
    (said,) = [e.notice for e in events if e.WhichOneof("event") == "notice" and e.notice.code == "auto_steps"]
    previews = [e.progress for e in events if e.WhichOneof("event") == "progress" and e.progress.phase == "preview"]
    auto = json.loads(events[-1].adapter.training_json)["auto_steps"]
    assert previews and len(previews) == len(auto["previews"]) and auto["cap"] == 200  # the model's steps
    assert f"of {auto['cap']} motion steps" in said.message
    if auto["reason"] == "held":
        assert auto["stopped_at"] < auto["cap"] and said.message.startswith(f"stopped at {auto['stopped_at']} of 200")
    fixed = train(toy, "fixed", scene, source, mask, edited, steps=auto["stopped_at"])
    assert events[-1].adapter.final_loss == fixed[-1].adapter.final_loss  # the same steps, the same adapter


def test_automatic_steps_without_an_edited_first_frame_are_refused(toy, recolour):
    scene, source, mask, _ = recolour
    with pytest.raises(grpc.RpcError) as refused:
        list(toy.Train(pb.TrainRequest(adapter="auto-blind", source_id=source.id, mask_id=mask.id, prompt="p",
                                       auto_steps=True), timeout=60))  # fmt: skip
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "auto_steps" in refused.value.details() and "edited first frame" in refused.value.details()
    with pytest.raises(grpc.RpcError) as refused:
        list(toy.Train(pb.TrainRequest(adapter="auto-bad", source_id=source.id, mask_id=mask.id, prompt="p",
                                       auto_steps=True, fidelity_threshold=1.5,
                                       references=[pb.ReferenceFrame(frame_index=0, image_id=source.id)]), timeout=60))  # fmt: skip
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "fidelity_threshold" in refused.value.details()
