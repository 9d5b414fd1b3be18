"""The adapter caches: device and host memory tiers, pins, in-use marks and each adapter's state.

An adapter lives in up to three tiers, and its state says which is the fastest it is in:

    LOADED   its weights are in device memory: a swap is one device-to-device copy
    CACHED   its weights are in host memory (page-locked on CUDA): a swap adds one host-to-device copy
    READY    on disk only (``AdapterStore``): a swap reads the file first
    TRAINING a job is training it; FAILED it could not be trained or loaded (``error`` says why)

The device tier holds at most ``capacity`` adapters and the host tier at most ``host_bytes``;
each evicts least recently used first, the device tier a tier down into host memory. Pinned
adapters never leave the device, and an adapter a running job uses (``using``) is never
evicted, unloaded or deleted under it.

Counting: ``observe(callback)`` has ``callback(event, tier)`` called for each lookup and eviction,
``event`` one of "hit", "miss", "eviction" and ``tier`` "device" or "host": a job or a load that
needs an adapter on the device counts a device hit, or a device miss and then a host hit, or a
host miss (read from disk). It is a plain callable, so whoever counts (the server's metrics)
stays outside the engine; it runs under the cache's lock and must be quick.

Threads: nothing here touches the transformer (``AdapterSlots`` adds that), so every method is
safe from any thread: RPC threads load, unload, pin and read states while the job thread runs.
One lock guards the bookkeeping and is held briefly; a second serialises disk reads and
copies between tiers, and is always taken first.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch

from framecast.engine.adapters.canonical import check_fits, split_adapter
from framecast.engine.adapters.keys import ModelLayout
from framecast.engine.adapters.packed import Extras, PackedWeights, copy_all  # noqa: F401 (copy_all: the slots')
from framecast.engine.adapters.store import AdapterRecord, AdapterStore
from framecast.engine.config import GiB
from framecast.engine.errors import FailedPrecondition, IncompatibleAdapter, OutOfMemory, public_message


class AdapterState(str, Enum):
    TRAINING = "training"
    READY = "ready"
    CACHED = "cached"
    LOADED = "loaded"
    FAILED = "failed"


@dataclass(frozen=True)
class AdapterStatus:
    state: AdapterState
    pinned: bool = False
    in_use: bool = False
    last_used_at: float = 0.0  # unix seconds of the last activation or load (kept across restarts); 0 = never
    device_bytes: int = 0
    host_bytes: int = 0
    error: str = ""


@dataclass(frozen=True)
class AdapterChange:
    """What a load, unload or pin did: ``action`` is "none" when the adapter already was as asked."""

    name: str
    action: str  # none | loaded | cached | unloaded | pinned | unpinned
    previous: AdapterState
    status: AdapterStatus
    evicted: tuple[str, ...] = ()  # adapters moved down a tier to make room


CacheObserver = Callable[[str, str], None]  # (event: hit | miss | eviction, tier: device | host)


def _ignore(event: str, tier: str) -> None:
    pass


class AdapterCache:
    """Adapter weights in device and host memory, and every adapter's state."""

    def __init__(self, capacity: int, host_bytes: int, device: torch.device, dtype: torch.dtype, model: ModelLayout):
        if capacity < 0 or host_bytes < 0:
            raise ValueError(f"capacity and host_bytes must be >= 0 (got {capacity}, {host_bytes})")
        self.capacity = capacity  # adapters kept in device memory
        self.host_bytes = host_bytes
        self.device = torch.device(device)
        self.dtype = dtype  # both tiers hold weights in the dtype they run in
        self.model = model  # what adapters may change: every loaded file is checked against it
        self.shapes = dict(model.slot)  # the linears the slot holds
        self._pin_host = self.device.type == "cuda"
        self._in_slot: int | None = None  # serial of the weights the model's slot holds (AdapterSlots)
        self._device: OrderedDict[str, PackedWeights] = OrderedDict()  # least recently used first
        self._host: OrderedDict[str, PackedWeights] = OrderedDict()
        self._pinned: set[str] = set()
        self._in_use: Counter[str] = Counter()
        self._training: dict[str, int] = {}  # name -> rank
        self._failed: dict[str, str] = {}
        self._last_used: dict[str, float] = {}
        self._serials = itertools.count(1)
        self._lock = threading.RLock()  # bookkeeping; held briefly
        self._load_lock = threading.RLock()  # serialises disk reads and copies between tiers; taken before _lock
        self._observe: CacheObserver = _ignore

    def observe(self, callback: CacheObserver | None) -> None:
        """Have ``callback(event, tier)`` called for every hit, miss and eviction (None: stop)."""
        self._observe = callback or _ignore

    # --- state ------------------------------------------------------------------------------

    @property
    def attached(self) -> list[str]:
        """Adapters whose weights are on the device (LOADED)."""
        with self._lock:
            return list(self._device)

    @property
    def cached(self) -> list[str]:
        """Adapters in host memory and not on the device (CACHED)."""
        with self._lock:
            return [name for name in self._host if name not in self._device]

    @property
    def pinned(self) -> list[str]:
        with self._lock:
            return sorted(self._pinned)

    @property
    def training(self) -> dict[str, int]:
        with self._lock:
            return dict(self._training)

    @property
    def failed(self) -> dict[str, str]:
        with self._lock:
            return dict(self._failed)

    def status(self, name: str) -> AdapterStatus:
        """The in-memory view of ``name``; READY means "not in memory" (whether it is on disk is the store's)."""
        with self._lock:
            device, host = self._device.get(name), self._host.get(name)
            if name in self._training:
                state = AdapterState.TRAINING
            elif name in self._failed:
                state = AdapterState.FAILED
            elif device is not None:
                state = AdapterState.LOADED
            elif host is not None:
                state = AdapterState.CACHED
            else:
                state = AdapterState.READY
            return AdapterStatus(
                state=state, pinned=name in self._pinned, in_use=self._in_use[name] > 0,
                last_used_at=self._last_used.get(name, 0.0), device_bytes=device.nbytes if device else 0,
                host_bytes=host.nbytes if host else 0, error=self._failed.get(name, ""),
            )  # fmt: skip

    def memory(self) -> dict[str, int]:
        """Bytes each tier holds."""
        with self._lock:
            return {
                "device_bytes": sum(w.nbytes for w in self._device.values()),
                "host_bytes": sum(w.nbytes for w in self._host.values()),
            }

    def mark_training(self, name: str, rank: int | None) -> None:
        """``name`` reads TRAINING at ``rank`` (a job is preparing to train it); None: no longer."""
        with self._lock:
            if rank is None:
                self._training.pop(name, None)
            else:
                self._training[name] = rank

    def mark_failed(self, name: str, message: str) -> None:
        with self._lock:
            self._failed[name] = message

    @contextlib.contextmanager
    def using(self, *names: str):
        """Mark adapters as used by a running job for the block: never evicted, unloaded or deleted."""
        names = tuple(n for n in names if n)
        with self._lock:
            self._in_use.update(names)
        try:
            yield
        finally:
            with self._lock:
                self._in_use.subtract(names)
                for name in names:
                    if self._in_use[name] <= 0:
                        del self._in_use[name]

    # --- load, unload, pin (any thread) -----------------------------------------------------

    def record(self, name: str, store: AdapterStore) -> AdapterRecord:
        """The record of a stored adapter about to be used. Raises FailedPrecondition while it is
        being trained, AdapterFailed when its training failed, AdapterNotFound when there is none."""
        with self._lock:
            training = name in self._training
        if training:
            raise FailedPrecondition(f"adapter {name!r} is being trained; use it when its job has finished")
        return store.record(name)

    def _check_loadable(self, name: str, store: AdapterStore) -> AdapterState:
        previous = self.status(name).state
        self.record(name, store)
        return previous

    def load(self, name: str, store: AdapterStore, to: AdapterState = AdapterState.LOADED) -> AdapterChange:
        """Bring ``name`` up to ``to`` (LOADED: on the device; CACHED: in host memory). Idempotent:
        an adapter already there (or higher) is left as it is, with action "none".

        Raises AdapterNotFound, FailedPrecondition (being trained; a stored file that does not
        fit, which also marks it FAILED) and OutOfMemory when every device slot holds a pinned
        or in-use adapter, or the adapter is larger than the whole host cache.
        """
        if to not in (AdapterState.LOADED, AdapterState.CACHED):
            raise ValueError(f"load goes to LOADED or CACHED, not {to}")
        previous = self._check_loadable(name, store)
        evicted: list[str] = []
        with self._load_lock:
            if to is AdapterState.LOADED:
                if name in self._device:
                    action = "none"
                else:
                    self._device_weights(name, store, evicted, required=True)
                    action = "loaded"
            elif name in self._device or name in self._host:
                action = "none"
            else:
                self._host_weights(name, store, evicted, required=True)
                action = "cached"
        with self._lock:
            self._touch(name, store)
        return AdapterChange(name, action, previous, self.status(name), tuple(evicted))

    def unload(self, name: str, store: AdapterStore, to: AdapterState = AdapterState.READY) -> AdapterChange:
        """Take ``name`` down to ``to`` (CACHED: off the device, kept in host memory; READY: out of
        memory). Idempotent. Raises AdapterNotFound, FailedPrecondition for a pinned adapter or
        one a running job uses."""
        if to not in (AdapterState.CACHED, AdapterState.READY):
            raise ValueError(f"unload goes to CACHED or READY, not {to}")
        previous = self._check_loadable(name, store)
        with self._load_lock, self._lock:
            if name in self._pinned:
                raise FailedPrecondition(f"adapter {name!r} is pinned; unpin it first")
            if self._in_use[name]:
                raise FailedPrecondition(f"adapter {name!r} is used by a running job; unload it when the job has finished")
            action = "none"
            device = self._device.pop(name, None)
            if device is not None:
                action = "unloaded"
                if to is AdapterState.CACHED and name not in self._host:
                    self._insert_host(name, self._to_host(device), [])
            if to is AdapterState.READY and self._host.pop(name, None) is not None:
                action = "unloaded"
        return AdapterChange(name, action, previous, self.status(name))

    def pin(self, name: str, store: AdapterStore, pinned: bool = True) -> AdapterChange:
        """Pin (load onto the device and keep it there) or unpin ``name``. Idempotent. Raises as ``load``."""
        previous = self._check_loadable(name, store)
        evicted: list[str] = []
        with self._load_lock:
            if not pinned:
                with self._lock:
                    action = "unpinned" if name in self._pinned else "none"
                    self._pinned.discard(name)
            elif name in self._pinned:
                action = "none"
            else:
                self._device_weights(name, store, evicted, required=True)
                with self._lock:
                    self._pinned.add(name)
                    self._touch(name, store)
                action = "pinned"
            store.set_pinned(name, pinned)
        return AdapterChange(name, action, previous, self.status(name), tuple(evicted))

    def restore_pins(self, store: AdapterStore) -> dict[str, str]:
        """Pin again what was pinned before a restart (``AdapterStore.pinned``), without counting it
        as a use. A pin that no longer fits (fewer device slots now, a file that fails to load) is
        dropped: returns those adapters' names with why."""
        dropped = {}
        for name in store.pinned():
            try:
                self.record(name, store)
                with self._load_lock:
                    self._device_weights(name, store, [], required=True)
                    with self._lock:
                        self._pinned.add(name)
            except Exception as error:  # noqa: BLE001 (one bad pin must not stop the server starting)
                dropped[name] = public_message(error)
                store.set_pinned(name, False)
        return dropped

    def delete(self, name: str, store: AdapterStore) -> None:
        """Delete from disk and memory at once; of a failed training, its error. Raises
        AdapterNotFound, FailedPrecondition while a running job uses it or it is being trained."""
        with self._load_lock, self._lock:
            if name in self._training:
                raise FailedPrecondition(f"adapter {name!r} is being trained; cancel its job or delete it when it has finished")
            if self._in_use[name]:
                raise FailedPrecondition(f"adapter {name!r} is used by a running job; delete it when the job has finished")
            if name in self._failed and not store.exists(name):  # a failed training left only its error
                store.clear_failure(name)
            else:
                store.delete(name)
            self.forget(name)

    def forget(self, name: str) -> None:
        """Drop everything held in memory about ``name`` (its files are the store's)."""
        with self._lock:
            for tier in (self._device, self._host):
                weights = tier.pop(name, None)
                if weights is not None and weights.serial == self._in_slot:
                    self._in_slot = None
            self._pinned.discard(name)
            self._failed.pop(name, None)
            self._last_used.pop(name, None)

    # --- tiers ------------------------------------------------------------------------------

    def remember_used(self, last_used: dict[str, float]) -> None:
        """Last-use times kept by the store from before a restart (``AdapterStore.last_used``)."""
        with self._lock:
            for name, when in last_used.items():
                self._last_used.setdefault(name, when)

    def touch(self, name: str, store: AdapterStore) -> None:
        """Mark ``name`` used now: most recently used in its tiers, and the time kept by ``store``."""
        with self._lock:
            self._touch(name, store)

    def _touch(self, name: str, store: AdapterStore | None = None) -> None:
        self._last_used[name] = time.time()
        if store is not None:
            store.mark_used(name, self._last_used[name])
        for tier in (self._device, self._host):
            if name in tier:
                tier.move_to_end(name)

    def _evictable(self, tier: OrderedDict, keep: str) -> list[str]:
        return [n for n in tier if n != keep and n not in self._pinned and not self._in_use[n]]

    def _to_host(self, weights: PackedWeights) -> PackedWeights:
        return weights.to(torch.device("cpu"), weights.flat.dtype, pin=self._pin_host)

    def _to_device(self, weights: PackedWeights) -> PackedWeights:
        moved = weights.to(self.device, self.dtype)  # one copy; none where already there (CPU)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # the host copy may be evicted next
        return moved

    def _insert_host(self, name: str, weights: PackedWeights, evicted: list[str]) -> bool:
        """Cache ``weights`` in host memory, evicting least recently used entries; False when it cannot fit."""
        with self._lock:
            need = weights.nbytes
            if need > self.host_bytes:
                return False
            held = sum(w.nbytes for w in self._host.values())
            candidates = self._evictable(self._host, keep=name)
            while held + need > self.host_bytes and candidates:
                victim = candidates.pop(0)
                held -= self._host.pop(victim).nbytes
                self._observe("eviction", "host")
                if victim not in self._device:
                    evicted.append(victim)
            if held + need > self.host_bytes:
                return False
            self._host[name] = weights
            return True

    def _host_weights(self, name: str, store: AdapterStore, evicted: list[str], required: bool = False) -> PackedWeights:
        """``name`` in host memory: from the host cache, else read from disk (and cached if it fits)."""
        with self._lock:
            if name in self._host:
                self._host.move_to_end(name)
                self._observe("hit", "host")
                return self._host[name]
            self._observe("miss", "host")
        try:
            state_dict, _ = store.load(name)
            pairs, deltas = split_adapter(state_dict)
            check_fits(pairs, self.model, deltas)
        except IncompatibleAdapter as exc:
            self.mark_failed(name, str(exc))
            raise
        slot = {module: pair for module, pair in pairs.items() if module in self.shapes}
        extras = Extras({module: pair for module, pair in pairs.items() if module not in slot},
                        {param: delta.float() for param, delta in deltas.items()})  # fmt: skip
        # In host memory already in the slot's dtype: a swap is then one plain host-to-device copy.
        weights = PackedWeights.pack(slot, next(self._serials), "cpu", self.dtype, pin=self._pin_host, extras=extras)
        with self._lock:
            self._failed.pop(name, None)
        if not self._insert_host(name, weights, evicted) and required:
            raise OutOfMemory(f"adapter {name!r} needs {weights.nbytes} bytes, more than the host cache of {self.host_bytes}")
        return weights

    def _device_weights(self, name: str, store: AdapterStore, evicted: list[str], required: bool = False) -> PackedWeights:
        """``name`` on the device: from the device cache, else through host memory. Cached on the
        device when a slot can be freed; otherwise, with ``required``, raises OutOfMemory, and
        without it returns weights held only by the caller (a job still runs)."""
        with self._load_lock:
            with self._lock:
                if name in self._device:
                    self._device.move_to_end(name)
                    self._observe("hit", "device")
                    return self._device[name]
                self._observe("miss", "device")
                room = len(self._device) < self.capacity or bool(self._evictable(self._device, keep=name))
            if required and not room:
                raise OutOfMemory(
                    f"all {self.capacity} device slots hold pinned or in-use adapters "
                    f"({', '.join(self._device)}); unpin one or wait for a job to finish"
                )
            weights = self._to_device(self._host_weights(name, store, evicted))
            if not (room and self._insert_device(name, weights, evicted)) and required:
                raise OutOfMemory(f"no device slot could be freed for adapter {name!r}: all hold pinned or in-use adapters")
            return weights

    def _insert_device(self, name: str, weights: PackedWeights, evicted: list[str]) -> bool:
        with self._load_lock, self._lock:
            if self.capacity == 0:
                return False
            candidates = self._evictable(self._device, keep=name)
            while len(self._device) >= self.capacity and candidates:
                victim = candidates.pop(0)
                dropped = self._device.pop(victim)
                self._observe("eviction", "device")
                if victim not in self._host:  # keep it a tier down when host memory allows
                    self._insert_host(victim, self._to_host(dropped), evicted)
                evicted.append(victim)
            if len(self._device) >= self.capacity:
                return False
            self._device[name] = weights
            return True
