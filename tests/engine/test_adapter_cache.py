"""The adapter slot and caches on the tiny transformer: states, idempotent load/unload/pin, LRU with
pinning and in-use protection, in-place swaps that match natively loaded LoRA, and no recompiles."""

from __future__ import annotations

import threading

import pytest
import torch

from framecast.engine.adapters.slots import (
    SLOT_ADAPTER,
    AdapterRecord,
    AdapterSlots,
    AdapterState,
    AdapterStore,
    import_adapter,
    peft_name,
    serialize_adapter,
)
from framecast.engine.errors import (
    AdapterNotFound,
    AlreadyExists,
    FailedPrecondition,
    IncompatibleAdapter,
    InvalidInput,
    OutOfMemory,
)

from .test_adapter_formats import random_lora

LOADED, CACHED, READY = AdapterState.LOADED, AdapterState.CACHED, AdapterState.READY
BASE = "wan-tiny@000000000000"


@pytest.fixture()
def transformer(tiny_model_dir):
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel.from_pretrained(tiny_model_dir / "transformer").eval()
    return model.requires_grad_(False)


@pytest.fixture()
def store(tmp_path):
    return AdapterStore(tmp_path / "adapters")


def make_slots(transformer, **kwargs) -> AdapterSlots:
    return AdapterSlots(transformer, **{"capacity": 8, "host_bytes": 1 << 30, "max_rank": 8, **kwargs})


def put(store, slots, name, rank=4, seed=0, modules=None) -> AdapterRecord:
    weights = {k: v * 0.3 for k, v in random_lora(slots.shapes, rank, seed, modules).items()}
    record = AdapterRecord(name=name, base_model=BASE, rank=rank, alpha=float(rank), target_modules=[], training={},
                           source_media_id="", final_loss=0.0)  # fmt: skip
    return store.save(weights, record)


def forward(transformer) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 36, 3, 8, 8, generator=generator)
    text = torch.randn(1, 12, 32, generator=generator)
    image = torch.randn(1, 17, 32, generator=generator)
    with torch.no_grad():
        return transformer(latents, torch.tensor([500]), text, encoder_hidden_states_image=image, return_dict=False)[0]


def test_states_and_idempotent_load_unload(transformer, store):
    slots = make_slots(transformer)
    put(store, slots, "a")
    assert slots.status("a").state is READY
    steps = [
        (slots.load, CACHED, "cached", CACHED), (slots.load, CACHED, "none", CACHED),
        (slots.load, LOADED, "loaded", LOADED), (slots.load, LOADED, "none", LOADED),
        (slots.load, CACHED, "none", LOADED),  # load never moves down
        (slots.unload, CACHED, "unloaded", CACHED), (slots.unload, CACHED, "none", CACHED),
        (slots.unload, READY, "unloaded", READY), (slots.unload, READY, "none", READY),
        (slots.load, LOADED, "loaded", LOADED), (slots.unload, READY, "unloaded", READY),
    ]  # fmt: skip
    for call, to, action, after in steps:
        previous = slots.status("a").state
        change = call("a", store, to)
        assert (change.action, change.previous, change.status.state) == (action, previous, after), (call, to)
    assert slots.status("a").last_used_at > 0
    with pytest.raises(AdapterNotFound):
        slots.load("ghost", store)
    with pytest.raises(InvalidInput):
        slots.load("../escape", store)


def test_lru_eviction_pinning_and_full_slots(transformer, store):
    slots = make_slots(transformer, capacity=2)
    for name in "abc":
        put(store, slots, name, seed=ord(name))
    slots.load("a", store)
    slots.load("b", store)
    change = slots.load("c", store)
    assert change.evicted == ("a",) and slots.attached == ["b", "c"]
    assert slots.status("a").state is CACHED  # evicted a tier down, not dropped
    pin = slots.pin("b", store)
    assert pin.action == "pinned" and slots.pin("b", store).action == "none"
    assert slots.load("a", store).evicted == ("c",)  # b is pinned: c was the least recently used unpinned
    slots.pin("a", store)
    with pytest.raises(OutOfMemory, match="pinned"):
        slots.load("c", store)
    with pytest.raises(FailedPrecondition, match="pinned"):
        slots.unload("b", store)
    # A job still gets an adapter when every slot is pinned: it goes straight into the slot.
    slots.activate("c", store)
    assert slots.attached == ["b", "a"] and slots.status("c").state is CACHED
    assert slots.pin("b", store, pinned=False).action == "unpinned"
    assert slots.pin("b", store, pinned=False).action == "none"
    assert slots.load("c", store).evicted == ("b",)
    assert slots.pinned == ["a"]


def test_host_cache_is_bounded_in_bytes(transformer, store):
    probe = make_slots(transformer)
    put(store, probe, "a", seed=1)
    put(store, probe, "b", seed=2)
    one = probe.load("a", store, CACHED).status.host_bytes
    slots = make_slots(transformer, capacity=0, host_bytes=int(one * 1.5))
    slots.load("a", store, CACHED)
    change = slots.load("b", store, CACHED)
    assert change.evicted == ("a",) and slots.status("a").state is READY and slots.cached == ["b"]
    with pytest.raises(OutOfMemory, match="device slots"):
        slots.load("a", store)  # capacity 0: no device cache at all
    tiny = make_slots(transformer, host_bytes=one // 2)
    with pytest.raises(OutOfMemory, match="host cache"):
        tiny.load("a", store, CACHED)


def test_in_use_adapters_are_never_evicted_unloaded_or_deleted(transformer, store):
    slots = make_slots(transformer, capacity=1)
    put(store, slots, "a", seed=1)
    put(store, slots, "b", seed=2)
    with slots.using("a"):
        slots.activate("a", store)
        assert slots.status("a").in_use
        with pytest.raises(OutOfMemory):
            slots.load("b", store)  # the one device slot holds the running job's adapter
        with pytest.raises(FailedPrecondition, match="running job"):
            slots.unload("a", store)
        with pytest.raises(FailedPrecondition, match="running job"):
            slots.delete("a", store)
        assert store.exists("a") and slots.attached == ["a"]
    assert not slots.status("a").in_use
    slots.delete("a", store)
    assert not store.exists("a") and slots.attached == []
    with pytest.raises(AdapterNotFound):
        slots.delete("a", store)


def test_swaps_are_in_place_match_native_lora_and_never_reload_the_base(transformer, store, tiny_model_dir):
    from diffusers import WanTransformer3DModel

    slots = make_slots(transformer, max_rank=16)
    put(store, slots, "a", rank=4, seed=1)
    put(store, slots, "b", rank=8, seed=2, modules=[m for m in slots.shapes if "attn1" in m])
    base_out = forward(transformer)
    base_params = {p.data_ptr() for p in transformer.parameters()}

    slots.activate("a", store)
    slot_params = {n: p.data_ptr() for n, p in transformer.named_parameters() if SLOT_ADAPTER in n}
    a1 = forward(transformer)
    slots.activate("b", store)
    b = forward(transformer)
    slots.activate("a", store)
    a2 = forward(transformer)
    slots.deactivate()
    base_again = forward(transformer)
    slots.activate("a", store)

    assert torch.equal(a1, a2) and not torch.allclose(a1, b) and not torch.allclose(a1, base_out)
    assert torch.equal(base_again, base_out)
    after = {p.data_ptr() for p in transformer.parameters()}
    assert base_params | set(slot_params.values()) == after  # nothing reloaded or reallocated
    assert not any(p.requires_grad for p in transformer.parameters())

    # The padded slot computes what diffusers computes with the adapter loaded natively at its rank.
    for name, expected in (("a", a1), ("b", b)):
        native = WanTransformer3DModel.from_pretrained(tiny_model_dir / "transformer").eval()
        weights, record = store.load(name)
        native.load_lora_adapter(weights, adapter_name=name, prefix="transformer", metadata=record.lora_config())
        torch.testing.assert_close(forward(native), expected, rtol=1e-5, atol=1e-5)


def test_comfyui_export_loads_through_stock_diffusers_and_matches_the_slot(transformer, store, tiny_model_dir, tmp_path):
    from diffusers import WanImageToVideoPipeline

    slots = make_slots(transformer)
    put(store, slots, "a", rank=4, seed=3)
    slots.activate("a", store)
    ours = forward(transformer)
    path = tmp_path / "a.comfyui.safetensors"
    path.write_bytes(store.export("a", "comfyui"))
    pipe = WanImageToVideoPipeline.from_pretrained(tiny_model_dir, local_files_only=True)
    pipe.load_lora_weights(str(path))  # diffusers' own conversion of the original-Wan layout
    torch.testing.assert_close(forward(pipe.transformer.eval()), ours, rtol=1e-5, atol=1e-5)


def test_swaps_follow_the_slot_when_offloading_moves_it(transformer, store):
    """Model offload moves the transformer (module.to rebinds every parameter's storage): a
    swap must write the slot's current storage, not views of the old one."""
    slots = make_slots(transformer)
    put(store, slots, "a", seed=1)
    put(store, slots, "b", seed=2)
    slots.activate("a", store)
    a = forward(transformer)
    slots.activate("b", store)
    b = forward(transformer)
    transformer.to(torch.float64).to(torch.float32)  # new storage for every parameter, same values
    slots.activate("a", store)
    moved = forward(transformer)  # equal up to BLAS noise: the new storage's alignment differs
    torch.testing.assert_close(moved, a, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(moved, b, atol=1e-2)


def test_slot_grows_for_a_larger_rank(transformer, store):
    slots = make_slots(transformer, max_rank=2)
    put(store, slots, "small", rank=2, seed=1)
    put(store, slots, "large", rank=6, seed=2)
    slots.activate("small", store)
    small = forward(transformer)
    slots.activate("large", store)
    assert slots.max_rank == 6
    slots.activate("small", store)
    torch.testing.assert_close(forward(transformer), small, rtol=1e-6, atol=1e-6)


def test_training_adapter_joins_the_device_cache_with_alpha_folded(transformer, store):
    slots = make_slots(transformer)
    slots.add_trainable("trained", rank=4, alpha=8.0, seed=0)
    assert slots.status("trained").state is AdapterState.TRAINING
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if f".{peft_name('trained')}." in name and "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * 0.1)
    trained = forward(transformer)
    assert not torch.equal(trained, forward_without_lora(transformer))
    record = AdapterRecord(name="trained", base_model=BASE, rank=4, alpha=8.0, target_modules=[], training={},
                           source_media_id="", final_loss=0.0)  # fmt: skip
    state_dict = slots.state_dict("trained")
    slots.finish_training("trained", record)
    store.save(state_dict, record)
    assert record.alpha == 4.0  # folded: stored at scale 1
    assert slots.status("trained").state is LOADED and "trained" not in getattr(transformer, "peft_config", {})
    slots.activate("trained", store)
    torch.testing.assert_close(forward(transformer), trained, rtol=1e-5, atol=1e-5)
    slots.unload("trained", store)
    slots.activate("trained", store)  # from disk this time
    torch.testing.assert_close(forward(transformer), trained, rtol=1e-5, atol=1e-5)


def forward_without_lora(transformer) -> torch.Tensor:
    transformer.disable_lora()
    try:
        return forward(transformer)
    finally:
        transformer.enable_lora()


@pytest.mark.parametrize("name", ["training", "forward", "to", "parameters", "default", "lora_A", "base_layer", "x_slot"])
def test_any_valid_name_trains_whatever_peft_makes_of_names(transformer, store, name):
    """peft makes adapter names module attributes: ``training`` once raised "attribute 'training' already exists"."""
    slots = make_slots(transformer)
    slots.prepare()
    slots.add_trainable(name, rank=2, alpha=2.0, seed=0)
    state_dict = slots.state_dict(name)
    assert state_dict and all(k.startswith("transformer.blocks.") and k.endswith(("lora_A.weight", "lora_B.weight"))
                              for k in state_dict)  # fmt: skip
    record = AdapterRecord(name=name, base_model=BASE, rank=2, alpha=2.0, target_modules=[], training={},
                           source_media_id="", final_loss=0.0)  # fmt: skip
    slots.finish_training(name, record)
    store.save(state_dict, record)
    assert list(transformer.peft_config) == [SLOT_ADAPTER]
    slots.activate(name, store)
    assert store.record(name).name == name and slots.status(name).state is LOADED


@pytest.mark.parametrize("prepared", [False, True])
def test_an_injection_that_fails_part_way_leaves_the_model_clean(transformer, store, monkeypatch, prepared):
    from peft.tuners.lora.layer import LoraLayer

    slots = make_slots(transformer)
    if prepared:
        slots.prepare()
    update_layer, calls = LoraLayer.update_layer, []

    def failing(self, adapter_name, *args, **kwargs):
        calls.append(adapter_name)
        if len(calls) == 3:
            raise RuntimeError("injection failed")
        return update_layer(self, adapter_name, *args, **kwargs)

    monkeypatch.setattr(LoraLayer, "update_layer", failing)
    with pytest.raises(RuntimeError, match="injection failed"):
        slots.add_trainable("first", rank=2, alpha=2.0, seed=0)
    monkeypatch.setattr(LoraLayer, "update_layer", update_layer)
    slots.add_trainable("second", rank=2, alpha=2.0, seed=0)
    assert sorted(transformer.peft_config) == sorted([peft_name("second")] + ([SLOT_ADAPTER] if prepared else []))
    assert not any(f".{peft_name('first')}." in n for n, _ in transformer.named_parameters())
    forward(transformer)


def test_a_stored_file_that_no_longer_fits_is_failed(transformer, store):
    slots = make_slots(transformer)
    put(store, slots, "broken")
    path = store.weights_path("broken")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IncompatibleAdapter, match="cannot be read"):
        slots.load("broken", store)
    status = slots.status("broken")
    assert status.state is AdapterState.FAILED and "cannot be read" in status.error
    slots.delete("broken", store)
    assert slots.status("broken").state is READY and not store.exists("broken")


def test_import_stores_canonical_or_nothing(transformer, store):
    slots = make_slots(transformer)
    weights = random_lora(slots.shapes, rank=4, seed=7)
    record = AdapterRecord(name="x", base_model=BASE, rank=4, alpha=4.0, target_modules=[], training={"steps": 3},
                           source_media_id="sha256:abc", final_loss=0.5)  # fmt: skip
    comfy = serialize_adapter(weights, record, "comfyui")
    imported = import_adapter(store, slots, BASE, "from-comfy", comfy, "x.safetensors")
    assert imported.origin == "imported from comfyui" and imported.training["steps"] == 3
    assert imported.training["imported_from"] == "x.safetensors" and imported.source_media_id == "sha256:abc"
    stored, _ = store.load("from-comfy")
    assert stored.keys() == weights.keys() and all(torch.equal(stored[k], weights[k]) for k in weights)
    with pytest.raises(AlreadyExists):
        import_adapter(store, slots, BASE, "from-comfy", comfy)
    for bad in ("../evil", "a/b", "x" * 65, ".hidden", ""):
        with pytest.raises(InvalidInput, match="name"):
            import_adapter(store, slots, BASE, bad, comfy)
    with pytest.raises(IncompatibleAdapter, match="base model"):
        import_adapter(store, slots, "other@ffffffffffff", "other-base", comfy)
    from safetensors.torch import save

    with pytest.raises(IncompatibleAdapter, match="lands on this model"):
        import_adapter(store, slots, BASE, "flux", save({"transformer.single_transformer_blocks.0.x.lora_A.weight": torch.ones(1)}))
    assert [r.name for r in store.list()] == ["from-comfy"]


def test_load_and_unload_from_other_threads_while_the_job_thread_swaps(transformer, store):
    slots = make_slots(transformer, capacity=1, max_rank=8)
    for index, name in enumerate("abcd"):
        put(store, slots, name, seed=index)
    slots.activate("a", store)
    expected = forward(transformer)
    stop = threading.Event()
    errors = []

    def churn():
        while not stop.is_set():
            for name in "bcd":
                try:
                    slots.load(name, store)
                    slots.unload(name, store, CACHED)
                except (OutOfMemory, FailedPrecondition):
                    pass  # the job's adapter holds the one device slot
                except Exception as exc:  # noqa: BLE001 - any other error fails the test
                    errors.append(exc)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for name in "bcab":
            with slots.using(name):
                slots.activate(name, store)
                out = forward(transformer)
                if name == "a":
                    assert torch.equal(out, expected)
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors


def test_compiled_transformer_swaps_without_recompiling(transformer, store):
    """Swaps write the slot's parameters in place, so dynamo's guards still hold: under
    error_on_recompile a recompilation would raise. Inductor on CPU: ~10 s warm, ~45 s cold."""
    import torch._dynamo

    slots = make_slots(transformer, max_rank=8)
    put(store, slots, "a", rank=4, seed=1)
    put(store, slots, "b", rank=8, seed=2, modules=[m for m in slots.shapes if "ffn" in m])
    slots.prepare()  # the slot exists before compiling: the first activation changes no module
    slots.activate("a", store)
    eager_a = forward(transformer)
    torch._dynamo.reset()
    transformer.compile()
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            a1 = forward(transformer)
            slots.activate("b", store)
            b = forward(transformer)
            slots.activate("a", store)
            a2 = forward(transformer)
            slots.activate("a", store, strength=0.5)  # a strength re-scales the slot in place, too
            half = forward(transformer)
    finally:
        torch._dynamo.reset()
    assert torch.equal(a1, a2) and not torch.allclose(a1, b)
    assert not torch.allclose(half, a1)
    torch.testing.assert_close(a1, eager_a, rtol=1e-4, atol=1e-4)


def test_a_strength_scales_the_adapters_delta_and_zero_is_the_base_model(transformer, store):
    slots = make_slots(transformer, max_rank=8)
    put(store, slots, "a", rank=4, seed=1)
    base = forward(transformer)
    slots.activate("a", store)
    full = forward(transformer)
    heads_b = {name: b[:, :4].clone() for name, (_, b) in slots._slot.params.items()}
    slots.activate("a", store, strength=0.5)
    for name, (_, b) in slots._slot.params.items():
        torch.testing.assert_close(b[:, :4], heads_b[name] * 0.5, rtol=0, atol=0)
    half = forward(transformer)
    slots.activate("a", store, strength=0.0)
    assert torch.equal(forward(transformer), base)
    slots.activate("a", store)  # back to full strength: copied again from the cache, not re-scaled
    assert torch.equal(forward(transformer), full)
    assert not torch.allclose(half, full) and not torch.allclose(half, base)


def test_an_observer_sees_each_hit_miss_and_eviction_by_tier(transformer, store):
    """What the server's metrics count, through the manager the engine uses: one device slot, a host
    cache of two and a half adapters, three adapters."""
    from framecast.engine.adapters.manager import AdapterManager

    probe = make_slots(transformer)
    for name in "abc":
        put(store, probe, name, seed=ord(name))
    one = probe.load("a", store, CACHED).status.host_bytes
    manager = AdapterManager(store, make_slots(transformer, capacity=1, host_bytes=int(one * 2.5)), BASE)
    events = []
    manager.observe(lambda event, tier: events.append((event, tier)))

    def activate(name):
        events.clear()
        manager.activate(name)
        return events

    assert activate("a") == [("miss", "device"), ("miss", "host")]  # read from disk
    assert activate("a") == [("hit", "device")]
    assert activate("b") == [("miss", "device"), ("miss", "host"), ("eviction", "device")]  # a stays in host memory
    assert activate("a") == [("miss", "device"), ("hit", "host"), ("eviction", "device")]
    # c: host memory holds a and b, b least recently used; the device slot gives a back to host memory.
    assert activate("c") == [("miss", "device"), ("miss", "host"), ("eviction", "host"), ("eviction", "device")]
    assert manager.cached == ["a"] and manager.loaded == ["c"]
    manager.observe(None)
    assert activate("a") == []
