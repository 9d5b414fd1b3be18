"""Every adapter operation the server offers, on one object: ``Engine.adapters``.

It joins the store on disk (``AdapterStore``) and the caches and slot in memory
(``AdapterSlots``), so callers name an adapter and never pass one to the other. Everything
here is safe from any thread (RPC threads call it while a job runs), except ``activate``,
``train_into`` and what the engine's job thread calls through them, as ``AdapterSlots`` says.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from framecast.engine.adapters.cache import AdapterChange, AdapterState, AdapterStatus, CacheObserver
from framecast.engine.adapters.slots import AdapterSlots, import_adapter
from framecast.engine.adapters.store import AdapterRecord, AdapterStore, check_adapter_name
from framecast.engine.errors import AdapterExists, AdapterNotFound, IncompatibleAdapter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterView:
    """An adapter as a listing shows it: its record when stored (None while training or after a
    failed training), its state in memory, and the rank a running training uses."""

    name: str
    record: AdapterRecord | None
    status: AdapterStatus
    training_rank: int = 0


class AdapterManager:
    def __init__(self, store: AdapterStore, slots: AdapterSlots, base_model: str):
        self.store = store
        self.slots = slots
        self.base_model = base_model
        for name, message in store.failures().items():  # failed trainings survive a restart
            slots.mark_failed(name, message)
        slots.remember_used(store.last_used())  # and so do last-use times
        for name, why in slots.restore_pins(store).items():  # and pins, where they still fit
            log.warning("adapter %r was pinned before the restart and is no longer: %s", name, why)

    # --- reading --------------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        return self.store.exists(name)

    def check_new(self, name: str, field: str = "adapter") -> str:
        """A valid name no stored adapter has; AdapterExists otherwise."""
        check_adapter_name(name, field)
        if self.store.exists(name):
            raise AdapterExists(name)
        return name

    def record(self, name: str) -> AdapterRecord:
        return self.store.record(name)

    def status(self, name: str) -> AdapterStatus:
        return self.slots.status(name)

    def usable(self, name: str) -> AdapterRecord:
        """The record of an adapter a job is about to use: stored, not training or failed, and made
        for the loaded base model (IncompatibleAdapter otherwise)."""
        record = self.slots.record(check_adapter_name(name), self.store)
        if record.base_model != self.base_model:
            raise IncompatibleAdapter(f"adapter {name!r} was trained on {record.base_model}, the server runs {self.base_model}")
        return record

    def view(self, name: str, also_training: frozenset[str] = frozenset()) -> AdapterView:
        """One adapter, stored or not (training, queued for training in ``also_training``, failed)."""
        name = check_adapter_name(name, "name")
        if self.store.exists(name):
            return AdapterView(name, self.store.record(name), self.slots.status(name))
        unstored = self._unstored(also_training)
        if name not in unstored:
            raise AdapterNotFound(name)
        return unstored[name]

    def list(self, also_training: frozenset[str] = frozenset()) -> list[AdapterView]:
        """Every stored adapter, then those training (or queued for training: ``also_training``) and
        those whose training failed, by name."""
        records = self.store.list()
        views = [AdapterView(r.name, r, self.slots.status(r.name)) for r in records]
        stored = {r.name for r in records}
        unstored = self._unstored(also_training)
        return views + [view for name, view in sorted(unstored.items()) if name not in stored]

    def _unstored(self, also_training: frozenset[str]) -> dict[str, AdapterView]:
        training = self.slots.training
        views = {name: AdapterView(name, None, AdapterStatus(AdapterState.TRAINING), training.get(name, 0))
                 for name in set(also_training) | set(training) if not self.store.exists(name)}  # fmt: skip
        for name, error in self.slots.failed.items():
            if name not in views and not self.store.exists(name):
                views[name] = AdapterView(name, None, AdapterStatus(AdapterState.FAILED, error=error))
        return views

    @property
    def loaded(self) -> list[str]:
        return self.slots.attached

    @property
    def cached(self) -> list[str]:
        return self.slots.cached

    @property
    def pinned(self) -> list[str]:
        return self.slots.pinned

    def observe(self, callback: CacheObserver | None) -> None:
        """Have ``callback(event, tier)`` called for each cache hit, miss and eviction
        (``AdapterCache.observe``); None stops it."""
        self.slots.observe(callback)

    # --- changing (any thread) --------------------------------------------------------------

    def load(self, name: str, to: AdapterState = AdapterState.LOADED) -> AdapterChange:
        return self.slots.load(check_adapter_name(name, "name"), self.store, to)

    def unload(self, name: str, to: AdapterState = AdapterState.READY) -> AdapterChange:
        return self.slots.unload(check_adapter_name(name, "name"), self.store, to)

    def pin(self, name: str, pinned: bool = True) -> AdapterChange:
        return self.slots.pin(check_adapter_name(name, "name"), self.store, pinned=pinned)

    def delete(self, name: str) -> None:
        """Delete from disk and memory now (of a failed training, its error); FailedPrecondition
        while a running job uses or trains it, AdapterNotFound when there is nothing to delete."""
        self.slots.delete(check_adapter_name(name, "name"), self.store)

    def import_file(self, name: str, data: bytes, filename: str = "", drop_unsupported: bool = False,
                    sampling: dict | None = None) -> AdapterRecord:  # fmt: skip
        """Store a LoRA safetensors file as adapter ``name`` (``imports.import_adapter``): entries
        framecast cannot apply refuse it, or are left out and listed with ``drop_unsupported``;
        ``sampling`` is how to sample with it as an accelerator (``--preset turbo``)."""
        return import_adapter(self.store, self.slots, self.base_model, name, data, filename, drop_unsupported, sampling)

    def accelerator_sampling(self, name: str) -> dict:
        """How to sample with ``name`` as an accelerator, as stored with it (empty when it says nothing)."""
        return dict(self.usable(name).sampling)

    def export(self, name: str, layout: str = "diffusers") -> bytes:
        return self.store.export(check_adapter_name(name, "name"), layout)

    @contextlib.contextmanager
    def using(self, *names: str):
        """Hold these adapters for a job: never evicted, unloaded or deleted while the block runs."""
        with self.slots.using(*names):
            yield

    # --- the job thread -----------------------------------------------------------------------

    def activate(self, name: str, strength: float = 1.0, accelerator: str = "", accelerator_strength: float = 1.0) -> None:
        """Put ``name`` in the transformer's slot at ``strength`` ("" = no adapter), over ``accelerator``
        at ``accelerator_strength`` ("" = none); neither: the base model."""
        if name or accelerator:
            self.slots.activate(name, self.store, strength, accelerator, accelerator_strength)
        else:
            self.slots.deactivate()

    def mark_training_failed(self, name: str, message: str) -> None:
        """``name`` reads FAILED with ``message`` until trained again or deleted, across restarts."""
        self.slots.forget(name)  # weights a save that failed left in the caches
        self.slots.mark_failed(name, message)
        self.store.record_failure(name, message)

    def store_trained(self, state_dict, record: AdapterRecord) -> AdapterRecord:
        """Hand a finished training's weights to the caches and the store."""
        self.slots.finish_training(record.name, record)
        stored = self.store.save(state_dict, record)
        self.slots.touch(record.name, self.store)  # training is a use: kept across restarts, now that it is stored
        return stored
