"""An accelerator (a step-distill LoRA as LightX2V publishes it) under a clip's adapter, through the
real server and the CLI: imported with its sampling settings, chosen per request or by the server,
``--preset turbo`` sampling as it says, a clip's adapter alone again exactly as before; refusals
that name the field and what to do."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import torch
from safetensors.torch import save

from framecast.common.media import decode_image
from framecast.v1 import framecast_pb2 as pb

from .test_bad_requests import expect
from .test_e2e import upload_scene

WAN_LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
               "cross_attn.v", "cross_attn.o", "cross_attn.k_img", "cross_attn.v_img", "ffn.0", "ffn.2")  # fmt: skip
WIDTHS = {"ffn.0": (24, 48), "ffn.2": (48, 24)}  # (in, out) of the tiny model's linears; 24 -> 24 otherwise


def distill_file(seed: int = 0, extra: dict | None = None) -> bytes:
    """A LightX2V-style distill LoRA for the tiny model: lora_down/up with alpha on every block linear
    with its bias change, the affine norm's and the modulation's changes, the time projection's LoRA
    and the head's whole change."""
    generator = torch.Generator().manual_seed(seed)

    def random(*shape):
        return torch.randn(*shape, generator=generator) * 0.05

    tensors = {}
    for block in range(2):
        for wan in WAN_LINEARS:
            in_features, out_features = WIDTHS.get(wan, (24, 24))
            stem = f"diffusion_model.blocks.{block}.{wan}"
            tensors.update({f"{stem}.lora_down.weight": random(4, in_features), f"{stem}.lora_up.weight": random(out_features, 4),
                            f"{stem}.alpha": torch.tensor(4.0), f"{stem}.diff_b": random(out_features)})  # fmt: skip
        tensors[f"diffusion_model.blocks.{block}.norm3.diff"] = random(24)
        tensors[f"diffusion_model.blocks.{block}.diff_m"] = random(1, 6, 24)
    tensors["diffusion_model.time_projection.1.lora_down.weight"] = random(4, 24)
    tensors["diffusion_model.time_projection.1.lora_up.weight"] = random(144, 4)
    tensors["diffusion_model.head.head.diff"] = random(64, 24)
    return save({**tensors, **(extra or {})})


def chunks(name: str, data: bytes, **header):
    yield pb.ImportAdapterChunk(header=pb.ImportAdapterHeader(name=name, filename=f"{name}.safetensors", **header),
                                data=data[:4096])  # fmt: skip
    for start in range(4096, len(data), 4096):
        yield pb.ImportAdapterChunk(data=data[start : start + 4096])


TURBO = pb.Sampling(steps=4, guidance_scale=1.0, shift=5.0)


@pytest.fixture(scope="module")
def distill(grpc_server):
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        from framecast.v1 import framecast_pb2_grpc

        stub = framecast_pb2_grpc.FramecastStub(channel)
        return stub.ImportAdapter(chunks("accel-distill", distill_file(), sampling=TURBO), timeout=60)


def frames_of(events) -> np.ndarray:
    return np.stack([decode_image(e.frame.png) for e in events if e.WhichOneof("event") == "frame"])


def test_a_distill_lora_imports_with_its_sampling_and_says_what_it_changes(stub, distill):
    assert distill.origin == "imported from comfyui" and distill.rank == 4 and list(distill.dropped) == []
    # 24 bias changes, 2 norms, 2 modulation tables, the head's weight, and the time projection's LoRA
    assert distill.changed_parameters == 24 + 2 + 2 + 1 + 1
    assert (distill.sampling.steps, distill.sampling.guidance_scale, distill.sampling.shift) == (4, 1.0, 5.0)
    assert not distill.sampling.HasField("accelerator_strength")
    again = stub.GetAdapter(pb.AdapterRef(name="accel-distill"), timeout=10)
    assert again.sampling == distill.sampling and again.changed_parameters == distill.changed_parameters


def test_entries_it_cannot_apply_are_named_or_dropped_on_request(stub):
    data = distill_file(seed=1, extra={"diffusion_model.blocks.0.self_attn.q.lokr_w1": torch.zeros(2, 2)})
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.ImportAdapter(chunks("accel-lokr", data), timeout=60),
           "blocks.0.self_attn.q.lokr_w1", "LoKr", "drop_unsupported")  # fmt: skip
    info = stub.ImportAdapter(chunks("accel-lokr", data, drop_unsupported=True), timeout=60)
    assert list(info.dropped) == ["diffusion_model.blocks.0.self_attn.q.lokr_w1: a LoKr factor: LyCORIS LoKr is not applied"]
    expect(grpc.StatusCode.INVALID_ARGUMENT,
           lambda: stub.ImportAdapter(chunks("accel-bad", distill_file(), sampling=pb.Sampling(steps=0)), timeout=60),
           "sampling.steps", "from 1 to 1000")  # fmt: skip
    expect(grpc.StatusCode.FAILED_PRECONDITION,
           lambda: stub.ImportAdapter(chunks("accel-big", save({"diffusion_model.blocks.0.norm3.diff": torch.zeros(5120)})),
                                      timeout=60), "blocks.0.norm2.weight", "[5120]")  # fmt: skip


def test_an_accelerator_under_a_clip_adapter_with_preset_turbo(stub, scene, distill):
    source, mask, edited = upload_scene(stub, scene)
    list(stub.Train(pb.TrainRequest(adapter="accel-clip", source_id=source.id, mask_id=mask.id, prompt=scene.prompt,
                                    steps=4, rank=2, learning_rate=5e-3, seed=1), timeout=300))  # fmt: skip

    def run(**fields):
        request = pb.PropagateRequest(adapter="accel-clip", source_id=source.id, mask_id=mask.id,
                                      edited_first_frame_id=edited.id, prompt=scene.prompt, seed=3, **fields)  # fmt: skip
        events = list(stub.Propagate(request, timeout=300))
        assert events[-1].WhichOneof("event") == "result", events[-1]
        return frames_of(events)

    plan = stub.Plan(pb.PlanRequest(propagate=pb.PropagateRequest(
        adapter="accel-clip", source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id, prompt="p",
        accelerator="accel-distill", preset="turbo")), timeout=60)  # fmt: skip
    assert plan.ok and plan.steps == 4, plan.problems

    plain = dict(steps=4, guidance_scale=1.0, shift=5.0)
    alone = run(**plain)
    turbo = run(accelerator="accel-distill", preset="turbo")
    explicit = run(accelerator="accel-distill", accelerator_strength=1.0, **plain)
    nothing = run(accelerator="accel-distill", accelerator_strength=0.0, **plain)
    assert np.array_equal(turbo, explicit)  # turbo is the accelerator's own steps, guidance and shift
    assert np.array_equal(nothing, alone)  # at strength 0 the accelerator changes nothing
    assert np.abs(turbo.astype(int) - alone.astype(int)).max() > 2
    assert np.array_equal(run(**plain), alone)  # the clip's adapter alone again: the base parameters are the base's

    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: run(preset="turbo"), "preset", "needs an accelerator")
    expect(grpc.StatusCode.NOT_FOUND, lambda: run(accelerator="no-such-accelerator"), "no-such-accelerator")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: run(accelerator="accel-clip"), "accelerator", "the clip's adapter too")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: run(accelerator="accel-distill", shift=0.0), "shift", "0.01")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: run(accelerator="accel-distill", accelerator_strength=3.0),
           "accelerator_strength", "between 0 and 2")  # fmt: skip


def test_the_servers_default_accelerator(start_server_at, tiny_model_dir, tmp_path, scene):
    from framecast.v1 import framecast_pb2_grpc

    server = start_server_at(tiny_model_dir, tmp_path / "data", accelerator="default-distill")
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        assert stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).accelerator == "default-distill"
        source, mask, edited = upload_scene(stub, scene)

        def run(**fields):
            request = pb.PropagateRequest(source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id,
                                          prompt="p", steps=2, guidance_scale=1.0, **fields)  # fmt: skip
            return frames_of(stub.Propagate(request, timeout=300))

        expect(grpc.StatusCode.NOT_FOUND, run, "default-distill")  # named by the server, not imported yet
        stub.ImportAdapter(chunks("default-distill", distill_file(seed=2)), timeout=60)
        assert np.array_equal(run(), run(accelerator="default-distill"))
        assert not np.array_equal(run(), run(accelerator=""))  # "" asks for none


def test_the_cli_imports_an_accelerator_and_propagates_over_it(grpc_server, scene, tmp_path, capsys):
    from framecast.client.cli import main
    from framecast.common.media import encode_png, encode_video, mask_to_frames

    server = f"127.0.0.1:{grpc_server.port}"
    lora = tmp_path / "cli-distill.safetensors"
    lora.write_bytes(distill_file(seed=3, extra={"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 3)}))
    assert main(["import", "--server", server, str(lora), "--sampling", "steps=2,guidance_scale=1,shift=5"]) == 2
    assert "--drop-unsupported" in capsys.readouterr().err
    assert main(["import", "--server", server, str(lora), "--drop-unsupported", "--sampling",
                 "steps=2,guidance_scale=1,shift=5"]) == 0  # fmt: skip
    shown = capsys.readouterr().out
    assert "steps=2, guidance_scale=1, shift=5" in shown and "lora_te_text_model_encoder_layers_0_mlp_fc1" in shown
    files = {"source": tmp_path / "s.mp4", "mask": tmp_path / "m.mp4", "edited": tmp_path / "e.png"}
    files["source"].write_bytes(encode_video(scene.source, 8, lossless=True))
    files["mask"].write_bytes(encode_video(mask_to_frames(scene.edit_mask), 8, lossless=True))
    files["edited"].write_bytes(encode_png(scene.edited_first_frame))
    assert main(["propagate", "--server", server, "--adapter", "", "--source", str(files["source"]), "--mask",
                 str(files["mask"]), "--edited-first-frame", str(files["edited"]), "--prompt", "p", "--accelerator",
                 "cli-distill", "--preset", "turbo", "--output", str(tmp_path / "out.mp4")]) == 0  # fmt: skip
    assert (tmp_path / "out.mp4").stat().st_size > 0
