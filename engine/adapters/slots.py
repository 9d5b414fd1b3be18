"""Adapters on the model: hot-swappable LoRA slots on the transformer, over the caches.

The transformer carries one peft adapter for a clip's adapter, the *slot* (``SLOT_ADAPTER``),
which targets every block linear an adapter may touch at a fixed maximum rank. Activating an
adapter copies its weights into the slot in place, zero-padding its rank to the slot's: the
base model is never reloaded, no module is added or removed, and a compiled transformer sees
the same parameters with new values, so a swap causes no recompilation. Every stored adapter
has its alpha folded into lora_B, so the slot runs at scale 1 for all of them. Training
attaches a separate peft adapter at the requested rank and hands the result to the caches.

An *accelerator* (a step-distill LoRA, or any adapter) sits under the clip's adapter in a second
slot (``ACCELERATOR_ADAPTER``), at its own rank and strength; both run together. Swapping the
clip's adapter leaves it as it is, so a swap under a loaded accelerator costs what it costs
without one. What an adapter changes outside the block linears (bias, norm and modulation
changes, LoRA on the embedders or the head) is written into the base parameters themselves
(``patches``), and undone exactly. Training sees neither: its adapter runs alone on the base.

peft makes an adapter's name a key of every LoRA layer's ModuleDicts, that is a module
attribute, so a public name such as ``training`` or ``to`` cannot be a peft name: the training
adapter is attached as ``peft_name(name)``. Public names are what the API, the store and
exported files carry; peft names never leave this module.

Threads: the transformer's adapters (the slot, training adapters, which one is active) are
changed only by ``activate``, ``deactivate``, ``prepare``, ``add_trainable``,
``finish_training`` and ``detach``, which the engine calls from the one thread that runs
jobs. Everything inherited from ``AdapterCache`` (load, unload, pin, delete, states) touches
only the caches and is safe from any thread: RPC threads call it directly, without queueing
behind a long job.
"""

from __future__ import annotations

import contextlib

import logging
import warnings
from dataclasses import dataclass

import torch

from framecast.engine.adapters.cache import (
    GiB,
    AdapterCache,
    AdapterChange,
    AdapterState,
    AdapterStatus,
    PackedWeights,
    copy_all,
)
from framecast.engine.adapters.canonical import KEY_PREFIX, TARGET_PATTERN, TRAINING_PATTERN, TargetShapes, split_canonical
from framecast.engine.adapters.keys import ModelLayout
from framecast.engine.adapters.patches import ParameterPatches
from framecast.engine.adapters.store import (
    RECORD_FILE,
    WEIGHTS_FILE,
    AdapterRecord,
    AdapterStore,
    check_adapter_name,
    serialize_adapter,
)
from framecast.engine.compat import add_peft_adapter, reapply_group_offloading, reset_peft_loaded_flag

__all__ = [
    "ACCELERATOR_ADAPTER",
    "KEY_PREFIX",
    "RECORD_FILE",
    "SLOT_ADAPTER",
    "WEIGHTS_FILE",
    "AdapterCache",
    "AdapterChange",
    "AdapterRecord",
    "AdapterSlots",
    "AdapterState",
    "AdapterStatus",
    "AdapterStore",
    "check_adapter_name",
    "import_adapter",
    "peft_name",
    "serialize_adapter",
]  # fmt: skip

log = logging.getLogger(__name__)

SLOT_ADAPTER = "_slot"  # peft name of the inference slot; user names cannot start with "_"
ACCELERATOR_ADAPTER = "_accel"  # peft name of the accelerator's slot, under the clip's
TRAINING_PREFIX = "fc_"  # peft name of a training adapter: this + its public name


def peft_name(name: str) -> str:
    """The peft adapter name ``name`` trains under: no nn.Module attribute starts with the prefix."""
    return TRAINING_PREFIX + name


@dataclass(eq=False)
class _Slot:
    rank: int
    params: dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]]  # module -> (lora_A [R, in], lora_B [out, R])
    held: tuple[int, float] | None = None  # (serial, strength) of the weights it holds; None: unknown

    @property
    def nbytes(self) -> int:
        return sum(a.numel() * a.element_size() + b.numel() * b.element_size() for a, b in self.params.values())


def _adapter_dtype(transformer, shapes: TargetShapes) -> torch.dtype:
    """The dtype peft gives LoRA layers injected through diffusers: the base linear's (bf16 on a
    bf16 model, as stock diffusers loads LoRA), float32 on a quantised one."""
    for module in shapes:
        layer = transformer.get_submodule(module)
        weight = getattr(getattr(layer, "base_layer", layer), "weight", None)
        if weight is not None:
            return weight.dtype if weight.dtype.is_floating_point else torch.float32
    return torch.float32


class AdapterSlots(AdapterCache):
    """The inference slot on the transformer and the training adapters, over the caches."""

    def __init__(
        self,
        transformer,
        capacity: int = 8,
        host_bytes: int = 4 * GiB,
        max_rank: int = 64,
        device: torch.device | str | None = None,
    ):
        if max_rank < 1:
            raise ValueError(f"max_rank must be >= 1 (got {max_rank})")
        model = ModelLayout.of(transformer)
        device = torch.device(device) if device is not None else next(transformer.parameters()).device
        super().__init__(capacity, host_bytes, device, _adapter_dtype(transformer, model.slot), model)
        self.transformer = transformer
        self.max_rank = max_rank  # the slot's rank; grows (once, recompiling) for a larger adapter
        self._slot: _Slot | None = None
        self._slot_strength = 1.0  # the strength the slot's lora_B heads were scaled by
        self._accel: _Slot | None = None  # the accelerator's slot, made by the first accelerator
        self.accelerator: tuple[str, float] | None = None  # (name, strength) in effect under the clip's adapter
        self.patches = ParameterPatches(transformer)

    def memory(self) -> dict[str, int]:
        """Bytes each tier holds; the device tier counts the slots."""
        slot_bytes = sum(slot.nbytes for slot in (self._slot, self._accel) if slot is not None)
        tiers = super().memory()
        return {**tiers, "device_bytes": tiers["device_bytes"] + slot_bytes, "slot_bytes": slot_bytes}

    def forget(self, name: str) -> None:
        with self._lock:
            serials = {w.serial for tier in (self._device, self._host) for w in [tier.get(name)] if w is not None}
            if self._accel is not None and self._accel.held and self._accel.held[0] in serials:
                self._accel.held = None
        super().forget(name)

    # --- the slots on the transformer (the job thread only) -----------------------------------

    def _lora_layers(self):
        from peft.tuners.lora import LoraLayer

        return (m for m in self.transformer.modules() if isinstance(m, LoraLayer))

    def prepare(self, rank: int | None = None) -> None:
        """Create the slot now (at ``max_rank``, or ``rank`` if larger): call before compiling the
        transformer, so that the first activation changes no module."""
        self._ensure_slot(rank or self.max_rank)

    def _build_slot(self, peft: str, rank: int, old: _Slot | None) -> _Slot:
        """The slot ``peft`` at ``rank`` (replacing ``old``): zeros, frozen, on every block linear."""
        from peft import LoraConfig

        if old is not None:
            log.warning("adapter rank %d > slot rank %d: rebuilding the slot (a compiled transformer recompiles once)",
                        rank, old.rank)
            self._delete_peft_adapter(peft)
            with self._lock:  # plans hold views of the old slot: let it be freed
                for weights in [*self._device.values(), *self._host.values()]:
                    weights.plan = None
        config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=TARGET_PATTERN)
        self._add_peft_adapter(config, peft, seed=None)
        params = {}
        for name, module in self.transformer.named_modules():
            if peft in getattr(module, "lora_A", {}):
                params[name.removeprefix("_orig_mod.")] = (module.lora_A[peft].weight, module.lora_B[peft].weight)
        with torch.no_grad():
            torch._foreach_zero_([p for pair in params.values() for p in pair])
        for pair in params.values():
            for param in pair:
                param.requires_grad_(False)
        self.dtype = next(iter(params.values()))[0].dtype
        return _Slot(rank, params)

    def _ensure_slot(self, rank: int) -> _Slot:
        if self._slot is not None and self._slot.rank >= rank:
            return self._slot
        slot_rank = max(rank, self.max_rank)
        self._slot = self._build_slot(SLOT_ADAPTER, slot_rank, self._slot)
        self.max_rank, self._in_slot = slot_rank, None
        return self._slot

    def _ensure_accelerator_slot(self, rank: int) -> _Slot:
        """The accelerator's slot, at the accelerator's own rank (it is not padded to the clip slot's)."""
        if self._accel is None or self._accel.rank < rank:
            self._accel = self._build_slot(ACCELERATOR_ADAPTER, max(rank, 1), self._accel)
        return self._accel

    def _copy_into_slot(self, weights: PackedWeights, strength: float = 1.0, accelerator: bool = False) -> None:
        """Write ``weights`` over a slot in place (the clip's, or the accelerator's): rank r into the
        first r rows of lora_A and columns of lora_B, zeros after them and in every module the
        adapter does not target. ``strength`` scales every lora_B head (the adapter's delta), so it
        costs no recompilation.

        Launches are what a swap costs (a 14B adapter is ~800 tensors), so the work is arranged
        for torch's fused multi-tensor kernels, which take only dense tensors: one fused zeroing
        of every lora_A tail and whole lora_B, one fused copy of the lora_A heads (and of the
        lora_B heads at full rank); only a lora_B head narrower than the slot is strided and
        copied one tensor at a time."""
        if accelerator:
            slot = self._ensure_accelerator_slot(weights.rank)
            if slot.held == (weights.serial, strength):
                return
        else:
            slot = self._ensure_slot(weights.rank)
            if self._in_slot == weights.serial and self._slot_strength == strength:
                return
        # The views, built once per adapter and slot storage: offloading moves the slot's parameters
        # (module.to and group-offload hooks rebind .data), and views of the old storage would miss.
        storage = tuple(t.data_ptr() for pair in slot.params.values() for t in pair)
        if weights.plan is None or weights.plan[0] != storage:
            zeros, dense, strided, heads_b = [], ([], []), ([], []), []
            for module, (slot_a, slot_b) in slot.params.items():
                pair = weights.modules.get(module)
                if pair is None:
                    zeros += [slot_a, slot_b]
                    continue
                lora_a, lora_b = pair
                rank = lora_a.shape[0]
                zeros += [slot_a[rank:], slot_b] if rank < slot.rank else []
                dense[0].append(slot_a[:rank])
                dense[1].append(lora_a)
                target = dense if rank == slot.rank else strided
                target[0].append(slot_b[:, :rank])
                target[1].append(lora_b)
                heads_b.append(slot_b[:, :rank])
            weights.plan = (storage, zeros, dense, strided, heads_b)
        _, zeros, dense, strided, heads_b = weights.plan
        with torch.no_grad():
            if zeros:
                torch._foreach_zero_(zeros)
            copy_all(*dense)
            copy_all(*strided)
            if strength != 1.0 and heads_b:
                torch._foreach_mul_(heads_b, strength)
        if accelerator:
            slot.held = (weights.serial, strength)
        else:
            self._in_slot, self._slot_strength = weights.serial, strength

    def _select(self, adapters: list[str]) -> None:
        """Make ``adapters`` the active peft adapters, with LoRA enabled (none: disabled); no-op when
        they already are (a compiled transformer guards on these flags)."""
        layer = next(self._lora_layers(), None)
        if not adapters:
            if layer is not None and not layer.disable_adapters:
                self.transformer.disable_lora()
            return
        if layer is None or list(layer.active_adapters) != adapters:
            self.transformer.set_adapter(adapters if len(adapters) > 1 else adapters[0])
        if layer is None or layer.disable_adapters:
            self.transformer.enable_lora()

    def activate(self, name: str, store: AdapterStore, strength: float = 1.0, accelerator: str = "",
                 accelerator_strength: float = 1.0) -> AdapterRecord | None:  # fmt: skip
        """Put ``name`` in effect ("" none), its delta scaled by ``strength``, over ``accelerator``
        ("" none) at ``accelerator_strength``, loading each on demand (disk -> host -> device ->
        slot). An accelerator already in its slot stays there: swapping the clip's adapter copies
        the clip's alone. Returns ``name``'s record (None without one)."""
        record = store.record(name) if name else None
        if accelerator:
            store.record(accelerator)
        with self._load_lock:
            weights = self._device_weights(name, store, []) if name else None
            under = self._device_weights(accelerator, store, []) if accelerator else None
        active, layers = [], []
        if weights is not None:
            self._copy_into_slot(weights, strength)
            active.append(SLOT_ADAPTER)
            layers.append((name, weights.serial, weights.extras, strength))
        if under is not None:
            if under.modules:
                self._copy_into_slot(under, accelerator_strength, accelerator=True)
                active.append(ACCELERATOR_ADAPTER)
            layers.append((accelerator, under.serial, under.extras, accelerator_strength))
        self.patches.apply(layers)
        self._select(active)
        self._freeze_slot()  # peft's set_adapter marks them trainable
        self.accelerator = (accelerator, accelerator_strength) if accelerator else None
        with self._lock:
            for used in (name, accelerator):
                if used:
                    self._touch(used, store)
        return record

    def deactivate(self) -> None:
        """Run the bare base model (the slots stay, unused; the base parameters get their own values back)."""
        self._select([])
        self.patches.clear()
        self.accelerator = None

    # --- training (the job thread only) ---------------------------------------------------------

    def add_trainable(self, name: str, rank: int, alpha: float, seed: int) -> None:
        """Attach a fresh adapter to train: lora_A random from ``seed``, lora_B = 0, so it
        starts as the identity and the same seed gives the same adapter."""
        from peft import LoraConfig

        self.detach(name)
        self.patches.clear()  # training sees the base model's own parameters, and no accelerator
        self.accelerator = None
        internal = peft_name(name)
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=TRAINING_PATTERN)
        try:
            self._add_peft_adapter(config, internal, seed)
        except BaseException:
            self._discard_partial(internal)
            raise
        self.transformer.set_adapter(internal)
        self.transformer.enable_lora()  # a base-model-only job may have disabled LoRA layers
        for param_name, param in self.transformer.named_parameters():
            is_lora = f".{internal}." in param_name and "lora_" in param_name
            param.requires_grad_(is_lora)
            if is_lora:
                param.data = param.data.float()  # train adapter weights in fp32 on a bf16 base
        with self._lock:
            self._training[name] = rank
            self._failed.pop(name, None)

    @contextlib.contextmanager
    def training_strength(self, name: str, strength: float):
        """While open, ``name``'s training adapter acts at ``strength`` (its delta scaled), as a
        propagation would use it once stored; training's own scale after."""
        internal = peft_name(name)
        layers = [layer for layer in self._lora_layers() if internal in getattr(layer, "scaling", {})]
        scales = [layer.scaling[internal] for layer in layers]
        try:
            for layer, scale in zip(layers, scales):
                layer.scaling[internal] = scale * strength
            yield
        finally:
            for layer, scale in zip(layers, scales):
                layer.scaling[internal] = scale

    def _discard_partial(self, internal: str) -> None:
        """Undo an injection that failed part way, so that the next adapter attaches to a clean model."""
        try:
            self._delete_peft_adapter(internal)
        except Exception:
            log.exception("could not remove the partly attached adapter %s", internal)
        reset_peft_loaded_flag(self.transformer)

    def state_dict(self, name: str) -> dict[str, torch.Tensor]:
        from peft.utils import get_peft_model_state_dict

        weights = get_peft_model_state_dict(self.transformer, adapter_name=peft_name(name))
        return {KEY_PREFIX + key: value.detach().clone() for key, value in weights.items()}

    def finish_training(self, name: str, record: AdapterRecord) -> None:
        """Move the trained weights from their training adapter into the device cache (LOADED).
        The use is kept in memory only: the caller ``touch``es it with the store once it is saved."""
        modules = split_canonical(self.state_dict(name))
        scale = record.alpha / record.rank
        if scale != 1.0:  # stored adapters run at scale 1: fold alpha into lora_B as the store does
            modules = {m: (a, b * scale) for m, (a, b) in modules.items()}
        for param in self.transformer.parameters():
            param.requires_grad_(False)
        self._delete_peft_adapter(peft_name(name))
        weights = PackedWeights.pack(modules, next(self._serials), self.device, self.dtype)
        with self._load_lock, self._lock:
            self._training.pop(name, None)
            self.forget(name)
            self._insert_device(name, weights, [])
            self._touch(name)

    def detach(self, name: str) -> bool:
        """Remove ``name``'s training adapter (if any) and forget it; True if one was attached."""
        attached = peft_name(name) in (getattr(self.transformer, "peft_config", None) or {})
        if attached:
            self._delete_peft_adapter(peft_name(name))
        with self._lock:
            self._training.pop(name, None)
        self.forget(name)
        return attached

    def _add_peft_adapter(self, config, name: str, seed: int | None) -> None:
        """Inject a peft adapter; its random init draws from ``seed`` (or a forked RNG) and leaves
        the global RNG as it was."""
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            add_peft_adapter(self.transformer, config, name)  # beside the slot: without peft's warning
        reapply_group_offloading(self.transformer)

    def _delete_peft_adapter(self, name: str) -> None:
        with warnings.catch_warnings():  # "Adapter X was active which is now deleted": intended
            warnings.simplefilter("ignore", UserWarning)
            self.transformer.delete_adapters(name)
        if name == SLOT_ADAPTER:
            self._slot, self._in_slot = None, None
        elif name == ACCELERATOR_ADAPTER:
            self._accel = None
        else:  # peft makes the adapter left active trainable: the slot, after a training adapter goes
            self._freeze_slot()

    def _freeze_slot(self) -> None:
        """The slot's weights are written in place, never trained."""
        for slot in (self._slot, self._accel):
            for slot_a, slot_b in (slot.params.values() if slot is not None else ()):
                slot_a.requires_grad_(False)
                slot_b.requires_grad_(False)


def import_adapter(store: AdapterStore, slots: AdapterSlots, base_model: str, name: str, data: bytes, filename: str = "",
                   drop_unsupported: bool = False, sampling: dict | None = None) -> AdapterRecord:  # fmt: skip
    """``imports.import_adapter`` onto this transformer's layout (the caches forget the name first)."""
    from framecast.engine.adapters.imports import import_adapter as store_import

    return store_import(store, slots.model, base_model, name, data, filename, drop_unsupported, sampling, slots.forget)
