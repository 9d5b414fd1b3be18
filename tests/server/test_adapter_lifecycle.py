"""Adapter lifecycle over the wire: import in three layouts, idempotent load/unload/pin that say what
they did, A-B-A propagation bit-identical, no delete under a running job, export round trips, and
clean refusals of files that do not fit."""

from __future__ import annotations

import io
import json
import threading

import grpc
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save

from framecast.common.media import decode_image
from framecast.engine.adapters.formats import BLOCK_MODULES, target_shapes
from framecast.v1 import framecast_pb2 as pb

from .test_bad_requests import expect
from .test_e2e import upload_scene


@pytest.fixture(scope="module")
def shapes(tiny_model_dir):
    from diffusers import WanTransformer3DModel

    return target_shapes(WanTransformer3DModel.from_pretrained(tiny_model_dir / "transformer"))


def lora_file(shapes, layout="diffusers", rank=4, seed=0, alpha=None, modules=None) -> bytes:
    """A random LoRA for the tiny model as safetensors bytes, in ``layout``."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for module in modules or shapes:
        in_features, out_features = shapes[module]
        down = torch.randn(rank, in_features, generator=generator) * 0.3
        up = torch.randn(out_features, rank, generator=generator) * 0.3
        _, block, name = module.split(".", 2)
        if layout == "diffusers":
            tensors[f"transformer.{module}.lora_A.weight"], tensors[f"transformer.{module}.lora_B.weight"] = down, up
            continue
        base = (f"diffusion_model.blocks.{block}.{BLOCK_MODULES[name]}" if layout == "comfyui"
                else f"lora_unet_blocks_{block}_{BLOCK_MODULES[name].replace('.', '_')}")  # fmt: skip
        tensors[f"{base}.lora_down.weight"], tensors[f"{base}.lora_up.weight"] = down, up
        tensors[f"{base}.alpha"] = torch.tensor(float(alpha or rank))
    return save(tensors)


def chunks(name: str, data: bytes, step: int = 4096):
    yield pb.ImportAdapterChunk(header=pb.ImportAdapterHeader(name=name, filename=f"{name}.safetensors"), data=data[:step])
    for start in range(step, len(data), step):
        yield pb.ImportAdapterChunk(data=data[start : start + step])


def import_adapter(stub, name: str, data: bytes) -> pb.AdapterInfo:
    return stub.ImportAdapter(chunks(name, data), timeout=60)


def frames_of(events) -> np.ndarray:
    return np.stack([decode_image(e.frame.png) for e in events if e.WhichOneof("event") == "frame"])


def export(stub, name: str, fmt: int) -> bytes:
    return b"".join(c.data for c in stub.ExportAdapter(pb.ExportAdapterRequest(name=name, format=fmt), timeout=60))


def test_import_each_layout_then_load_unload_pin(stub, shapes):
    for layout in ("diffusers", "comfyui", "musubi"):
        info = import_adapter(stub, f"life-{layout}", lora_file(shapes, layout, seed=len(layout)))
        assert info.state == pb.ADAPTER_STATE_READY and info.origin == f"imported from {layout}"
        assert info.rank == 4 and info.alpha == 4.0 and len(info.target_modules) == len(shapes)

    def load(name, to=pb.ADAPTER_STATE_UNSPECIFIED):
        return stub.LoadAdapter(pb.LoadAdapterRequest(name=name, to=to), timeout=30)

    def unload(name, to=pb.ADAPTER_STATE_UNSPECIFIED):
        return stub.UnloadAdapter(pb.UnloadAdapterRequest(name=name, to=to), timeout=30)

    def pin(name, unpin=False):
        return stub.PinAdapter(pb.PinAdapterRequest(name=name, unpin=unpin), timeout=30)

    first = load("life-comfyui")
    assert (first.action, first.previous_state, first.adapter.state) == (
        pb.ADAPTER_ACTION_LOADED, pb.ADAPTER_STATE_READY, pb.ADAPTER_STATE_LOADED)
    assert first.adapter.device_bytes > 0 and first.adapter.loaded and first.adapter.last_used_at > 0
    assert load("life-comfyui").action == pb.ADAPTER_ACTION_NONE
    cached = load("life-musubi", pb.ADAPTER_STATE_CACHED)
    assert (cached.action, cached.adapter.state) == (pb.ADAPTER_ACTION_CACHED, pb.ADAPTER_STATE_CACHED)
    assert cached.adapter.host_bytes > 0 and cached.adapter.device_bytes == 0

    pinned = pin("life-comfyui")
    assert pinned.action == pb.ADAPTER_ACTION_PINNED and pinned.adapter.pinned
    assert pin("life-comfyui").action == pb.ADAPTER_ACTION_NONE
    expect(grpc.StatusCode.FAILED_PRECONDITION, lambda: unload("life-comfyui"), "pinned")
    info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    assert "life-comfyui" in info.adapters_loaded and list(info.adapters_pinned) == ["life-comfyui"]
    assert "life-musubi" in info.adapters_cached
    assert info.adapter_device_slots == 8 and info.adapter_slot_rank >= 64 and info.adapter_host_cache_bytes > 0

    assert pin("life-comfyui", unpin=True).action == pb.ADAPTER_ACTION_UNPINNED
    assert pin("life-comfyui", unpin=True).action == pb.ADAPTER_ACTION_NONE
    down = unload("life-comfyui", pb.ADAPTER_STATE_CACHED)
    assert (down.action, down.previous_state, down.adapter.state) == (
        pb.ADAPTER_ACTION_UNLOADED, pb.ADAPTER_STATE_LOADED, pb.ADAPTER_STATE_CACHED)
    assert unload("life-comfyui", pb.ADAPTER_STATE_CACHED).action == pb.ADAPTER_ACTION_NONE
    assert unload("life-comfyui").adapter.state == pb.ADAPTER_STATE_READY
    assert unload("life-comfyui").action == pb.ADAPTER_ACTION_NONE

    states = {a.name: a.state for a in stub.ListAdapters(pb.ListAdaptersRequest(), timeout=10).adapters}
    assert states["life-comfyui"] == pb.ADAPTER_STATE_READY and states["life-musubi"] == pb.ADAPTER_STATE_CACHED
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: load("life-comfyui", pb.ADAPTER_STATE_READY), "to")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: unload("life-comfyui", pb.ADAPTER_STATE_LOADED), "to")
    expect(grpc.StatusCode.NOT_FOUND, lambda: load("nobody"), "nobody")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: pin("../x"), "name")


def test_propagation_a_then_b_then_a_is_bit_identical(stub, scene, shapes):
    source, mask, edited = upload_scene(stub, scene)
    import_adapter(stub, "aba-a", lora_file(shapes, "comfyui", rank=4, seed=11))
    import_adapter(stub, "aba-b", lora_file(shapes, "musubi", rank=8, seed=12, alpha=4))

    def run(adapter):
        request = pb.PropagateRequest(adapter=adapter, source_id=source.id, mask_id=mask.id,
                                      edited_first_frame_id=edited.id, prompt="p", steps=2, seed=4)  # fmt: skip
        return frames_of(stub.Propagate(request, timeout=300))

    a_alone = run("aba-a")  # loaded on demand from disk
    b = run("aba-b")
    a_again = run("aba-a")  # swapped back from the device cache
    stub.UnloadAdapter(pb.UnloadAdapterRequest(name="aba-a"), timeout=10)
    a_from_disk = run("aba-a")
    assert np.array_equal(a_alone, a_again) and np.array_equal(a_alone, a_from_disk)
    assert not np.array_equal(a_alone, b)
    info = stub.GetAdapter(pb.AdapterRef(name="aba-a"), timeout=10)
    assert info.state == pb.ADAPTER_STATE_LOADED and info.last_used_at > 0 and not info.in_use


def test_no_delete_or_unload_under_a_running_job(stub, scene, shapes):
    source, mask, edited = upload_scene(stub, scene)
    import_adapter(stub, "busy", lora_file(shapes, seed=21))
    request = pb.PropagateRequest(adapter="busy", source_id=source.id, mask_id=mask.id,
                                  edited_first_frame_id=edited.id, prompt="p", steps=5000)  # fmt: skip
    stream = stub.Propagate(request, timeout=300)
    job_id, running = [], threading.Event()

    def follow():
        try:
            for event in stream:
                job_id.append(event.job_id)
                if event.WhichOneof("event") == "progress":
                    running.set()
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=follow)
    reader.start()
    assert running.wait(60)
    assert stub.GetAdapter(pb.AdapterRef(name="busy"), timeout=10).in_use
    expect(grpc.StatusCode.FAILED_PRECONDITION, lambda: stub.DeleteAdapter(pb.AdapterRef(name="busy"), timeout=10), "busy")
    unload = pb.UnloadAdapterRequest(name="busy")
    expect(grpc.StatusCode.FAILED_PRECONDITION, lambda: stub.UnloadAdapter(unload, timeout=10), "running job")
    stub.CancelJob(pb.JobRef(job_id=job_id[0]), timeout=10)
    reader.join(60)
    assert stub.DeleteAdapter(pb.AdapterRef(name="busy"), timeout=10).deleted
    expect(grpc.StatusCode.NOT_FOUND, lambda: stub.GetAdapter(pb.AdapterRef(name="busy"), timeout=10), "busy")


def test_export_then_import_gives_identical_frames_and_comfyui_loads_in_diffusers(stub, scene, shapes, tmp_path):
    from diffusers import WanImageToVideoPipeline

    import_adapter(stub, "rt", lora_file(shapes, "musubi", rank=8, seed=31, alpha=2))  # alpha folded at import
    diffusers_file = export(stub, "rt", pb.EXPORT_FORMAT_DIFFUSERS)
    comfy_file = export(stub, "rt", pb.EXPORT_FORMAT_COMFYUI)
    import_adapter(stub, "rt-diffusers", diffusers_file)
    import_adapter(stub, "rt-comfy", comfy_file)

    comfy_path = tmp_path / "rt.comfyui.safetensors"
    comfy_path.write_bytes(comfy_file)
    with safe_open(str(comfy_path), "pt") as f:
        metadata, keys = f.metadata(), list(f.keys())
    assert all(k.startswith("diffusion_model.blocks.") for k in keys)
    assert "diffusion_model.blocks.0.self_attn.q.lora_down.weight" in keys and "diffusion_model.blocks.1.ffn.2.alpha" in keys
    assert metadata["framecast.rank"] == "8" and metadata["framecast.alpha"] == "8"
    assert json.loads(metadata["framecast.target_modules"])[0] == "blocks.0.attn1.to_q"
    assert metadata["framecast.base_model"] and json.loads(metadata["framecast.training"])["imported_layout"] == "musubi"

    # Stock diffusers converts the ComfyUI file to exactly the tensors of the diffusers export.
    theirs = WanImageToVideoPipeline.lora_state_dict(str(comfy_path))
    ours, _ = _read(diffusers_file)
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)

    source, mask, edited = upload_scene(stub, scene)

    def run(adapter):
        request = pb.PropagateRequest(adapter=adapter, source_id=source.id, mask_id=mask.id,
                                      edited_first_frame_id=edited.id, prompt="p", steps=2, seed=8)  # fmt: skip
        return frames_of(stub.Propagate(request, timeout=300))

    original = run("rt")
    assert np.array_equal(original, run("rt-diffusers")) and np.array_equal(original, run("rt-comfy"))


def _read(data: bytes):
    from framecast.engine.adapters.formats import read_safetensors

    return read_safetensors(data)


def test_import_refusals_store_nothing(stub, shapes):
    def refuse(code, name, data, *words):
        expect(code, lambda: import_adapter(stub, name, data), *words)

    flux = save({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(2, 3),
                 "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(3, 2)})  # fmt: skip
    refuse(grpc.StatusCode.FAILED_PRECONDITION, "no-flux", flux, "lands on this model", "single_transformer_blocks.0.attn.to_q")
    half = lora_file(shapes, modules=["blocks.0.attn1.to_q"]) 
    mixed = dict(_read(half)[0], **{"diffusion_model.head.head.lora_down.weight": torch.zeros(2, 3)})
    refuse(grpc.StatusCode.FAILED_PRECONDITION, "no-mixed", save(mixed), "proj_out: lora_B (down/up) missing")  # the head's
    wide = {m: (5120, 5120) for m in shapes}
    refuse(grpc.StatusCode.FAILED_PRECONDITION, "no-14b", lora_file(wide, modules=["blocks.0.attn1.to_q"]), "architecture", "5120")
    pickled = io.BytesIO()
    torch.save({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 24)}, pickled)
    refuse(grpc.StatusCode.INVALID_ARGUMENT, "no-pickle", pickled.getvalue(), "pickle")
    good = lora_file(shapes, seed=41)
    refuse(grpc.StatusCode.INVALID_ARGUMENT, "no-corrupt", good[: len(good) // 2], "safetensors")
    for name in ("../evil", "a/b", "x" * 65, ""):
        refuse(grpc.StatusCode.INVALID_ARGUMENT, name, good, "header.name")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.ImportAdapter(iter([]), timeout=10), "empty")
    import_adapter(stub, "taken", good)
    refuse(grpc.StatusCode.ALREADY_EXISTS, "taken", good, "taken")
    for name in ("no-flux", "no-mixed", "no-14b", "no-pickle", "no-corrupt"):
        expect(grpc.StatusCode.NOT_FOUND, lambda name=name: stub.GetAdapter(pb.AdapterRef(name=name), timeout=10), name)
    bad_format = pb.ExportAdapterRequest(name="taken", format=99)
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.ExportAdapter(bad_format, timeout=10), "format")


def test_upload_limit_and_a_corrupt_stored_file(start_server_at, tiny_model_dir, tmp_path, shapes):
    data_dir = tmp_path / "data"
    server = start_server_at(tiny_model_dir, data_dir, max_upload_bytes=20_000)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        from framecast.v1 import framecast_pb2_grpc

        stub = framecast_pb2_grpc.FramecastStub(channel)
        big = lora_file(shapes, rank=16)
        assert len(big) > 20_000
        expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: import_adapter(stub, "big", big), "upload limit")
        import_adapter(stub, "small", lora_file(shapes, rank=1, modules=list(shapes)[:4]))
        path = data_dir / "adapters" / "small" / "adapter.safetensors"
        path.write_bytes(path.read_bytes()[:200])
        expect(grpc.StatusCode.FAILED_PRECONDITION, lambda: stub.LoadAdapter(pb.LoadAdapterRequest(name="small"), timeout=10),
               "cannot be read")  # fmt: skip
        info = stub.GetAdapter(pb.AdapterRef(name="small"), timeout=10)
        assert info.state == pb.ADAPTER_STATE_FAILED and "cannot be read" in info.error
        assert stub.DeleteAdapter(pb.AdapterRef(name="small"), timeout=10).deleted


def test_failed_trainings_and_last_use_times_survive_a_restart(start_server_at, tiny_model_dir, scene, tmp_path):
    from framecast.engine.adapters.store import AdapterStore
    from framecast.v1 import framecast_pb2_grpc

    data_dir = tmp_path / "data"
    # What a previous run left when training "broken" failed and training "retrained" failed once.
    store = AdapterStore(data_dir / "adapters")
    store.record_failure("broken", "training failed: out of device memory")
    store.record_failure("retrained", "training failed: the first try")

    def connect(server):
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        return channel, framecast_pb2_grpc.FramecastStub(channel)

    server = start_server_at(tiny_model_dir, data_dir)
    channel, stub = connect(server)
    with channel:
        info = stub.GetAdapter(pb.AdapterRef(name="broken"), timeout=10)
        assert info.state == pb.ADAPTER_STATE_FAILED and info.error == "training failed: out of device memory"
        listed = {a.name: a.state for a in stub.ListAdapters(pb.ListAdaptersRequest(), timeout=10).adapters}
        assert listed == {"broken": pb.ADAPTER_STATE_FAILED, "retrained": pb.ADAPTER_STATE_FAILED}
        source, mask, edited = upload_scene(stub, scene)
        # Using a failed adapter says why it cannot be used (not "not found").
        propagate = pb.PropagateRequest(adapter="broken", source_id=source.id, mask_id=mask.id,
                                        edited_first_frame_id=edited.id, prompt="p", steps=1)
        for use in (lambda: stub.Propagate(propagate, timeout=60),
                    lambda: stub.LoadAdapter(pb.LoadAdapterRequest(name="broken"), timeout=10),
                    lambda: stub.ExportAdapter(pb.ExportAdapterRequest(name="broken"), timeout=10)):
            expect(grpc.StatusCode.FAILED_PRECONDITION, use,
                   "adapter 'broken' failed to train: out of device memory; train it again or delete it")
        request = pb.TrainRequest(adapter="retrained", source_id=source.id, mask_id=mask.id, steps=2, rank=2)
        assert list(stub.Train(request, timeout=300))[-1].adapter.state == pb.ADAPTER_STATE_LOADED
        assert stub.DeleteAdapter(pb.AdapterRef(name="broken"), timeout=10).deleted
        used_at = stub.LoadAdapter(pb.LoadAdapterRequest(name="retrained"), timeout=10).adapter.last_used_at
        assert used_at > 0
    server.stop(grace=5)

    server = start_server_at(tiny_model_dir, data_dir)
    channel, stub = connect(server)
    with channel:
        listed = {a.name: a.state for a in stub.ListAdapters(pb.ListAdaptersRequest(), timeout=10).adapters}
        assert listed == {"retrained": pb.ADAPTER_STATE_READY}
        # When it was last used is kept too (a list of adapters nobody has used lately stays true).
        assert stub.GetAdapter(pb.AdapterRef(name="retrained"), timeout=10).last_used_at == pytest.approx(used_at, abs=1e-3)
        expect(grpc.StatusCode.NOT_FOUND, lambda: stub.GetAdapter(pb.AdapterRef(name="broken"), timeout=10), "broken")
    assert sorted(p.name for p in (data_dir / "adapters").iterdir()) == ["retrained"]


def test_an_adapter_being_trained_is_listed_as_training(stub, scene):
    source, mask, _ = upload_scene(stub, scene)
    stream = stub.Train(pb.TrainRequest(adapter="in-training", source_id=source.id, mask_id=mask.id, steps=8, rank=2),
                        timeout=300)  # fmt: skip
    kinds = []
    for event in stream:
        kinds.append(event.WhichOneof("event"))
        if kinds[-1] == "progress" and event.progress.step == 2:
            listed = {a.name: a for a in stub.ListAdapters(pb.ListAdaptersRequest(), timeout=10).adapters}
            assert listed["in-training"].state == pb.ADAPTER_STATE_TRAINING and listed["in-training"].rank == 2
            assert stub.GetAdapter(pb.AdapterRef(name="in-training"), timeout=10).state == pb.ADAPTER_STATE_TRAINING
            # A delete during use is refused, training included.
            expect(grpc.StatusCode.FAILED_PRECONDITION,
                   lambda: stub.DeleteAdapter(pb.AdapterRef(name="in-training"), timeout=10), "'in-training'")
    assert kinds[-1] == "adapter"
    info = stub.GetAdapter(pb.AdapterRef(name="in-training"), timeout=10)
    assert info.state == pb.ADAPTER_STATE_LOADED and info.origin == "trained"


def test_names_that_are_module_attributes_train_propagate_export_and_reload(start_server_at, tiny_model_dir, scene, tmp_path):
    """peft makes an adapter's name a module attribute: `training` failed to train ("attribute 'training'
    already exists") and left the model unable to train any adapter after it."""
    from framecast.v1 import framecast_pb2_grpc

    def connect(server):
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        return channel, framecast_pb2_grpc.FramecastStub(channel)

    server = start_server_at(tiny_model_dir, tmp_path / "data")  # fresh: no adapter attached to the model yet
    channel, stub = connect(server)
    with channel:
        source, mask, edited = upload_scene(stub, scene)

        def run(adapter):
            request = pb.PropagateRequest(adapter=adapter, source_id=source.id, mask_id=mask.id,
                                          edited_first_frame_id=edited.id, prompt="p", steps=2, seed=3)  # fmt: skip
            return frames_of(stub.Propagate(request, timeout=300))

        for name in ("training", "to", "plain"):
            train = pb.TrainRequest(adapter=name, source_id=source.id, mask_id=mask.id, prompt="p", steps=2, rank=2, seed=1)
            events = list(stub.Train(train, timeout=300))
            assert events[-1].WhichOneof("event") == "adapter", events[-1]
            assert events[-1].adapter.name == name and events[-1].adapter.state == pb.ADAPTER_STATE_LOADED
        frames = run("training")
        assert np.array_equal(frames, run("plain"))  # the same seed and settings train the same weights, whatever the name
        assert not np.array_equal(frames, run(""))
        exported = export(stub, "training", pb.EXPORT_FORMAT_DIFFUSERS)
        tensors, metadata = _read(exported)
        assert all(k.startswith("transformer.blocks.") and k.endswith(("lora_A.weight", "lora_B.weight")) for k in tensors)
        assert json.loads(metadata["framecast.adapter"])["name"] == "training"
        assert import_adapter(stub, "training-copy", exported).name == "training-copy"
        assert np.array_equal(frames, run("training-copy"))
    server.stop(grace=5)

    server = start_server_at(tiny_model_dir, tmp_path / "data")
    channel, stub = connect(server)
    with channel:
        names = {a.name: a.state for a in stub.ListAdapters(pb.ListAdaptersRequest(), timeout=10).adapters}
        assert names == dict.fromkeys(("plain", "to", "training", "training-copy"), pb.ADAPTER_STATE_READY)
        assert np.array_equal(frames, run("training"))
