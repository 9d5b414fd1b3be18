"""A cluster's replica: the engine a single server runs, as a Ray Serve deployment.

Each replica (one per GPU) holds one base model and its adapter caches, and runs its jobs one
at a time through the single server's own ``FramecastService`` and ``JobQueue``; only the wire is
different. The front (``framecast.server.cluster.front``) calls it through a Ray Serve
``DeploymentHandle`` with serialized framecast messages:

- ``job(method, request, request_id)``: Train or Propagate, streamed (``stream=True``). First a
  placement (which replica, its pid, whether it held the adapter), then the job's events as
  serialized ``JobEvent``s, then, if the call or the job failed, ``{"status", "message"}``;
- ``call(method, request, request_id, training)``: the unary RPCs (and ExportAdapter's chunks,
  ImportAdapter's), answering ``{"reply": ...}`` or ``{"status", "message"}``.

Adapter affinity is Ray Serve's model multiplexing with the adapter's name as the model id: the
front sends a propagation (or an adapter RPC) naming an adapter with ``multiplexed_model_id=name``,
Ray Serve routes it to a replica that has served that id, and ``_holds`` (``serve.multiplexed``)
keeps this replica's list of them, least recently used dropped beyond ``--adapter-slots``, the
adapters its device keeps. A Train is routed by load alone (Ray Serve's less loaded of two: a
training is the heaviest job) and the replica it lands on adds its adapter to that list, so the
adapter's propagations come to the replica that trained it and keeps it on its device. Whether the adapter was in
this replica's memory when a job arrived (``hit``) is what the placement reports.

Media and adapters are on the shared data directory, through the single server's stores. Other
replicas may delete or retrain an adapter this one caches; before each use the stored record's
creation time is compared with the one this replica's copy came from, and a stale copy is dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ray import serve

from framecast.engine.adapters.cache import AdapterState
from framecast.engine.engine import Engine
from framecast.engine.footage.grid import WAN_FPS
from framecast.server.app import lock_data_dir
from framecast.server.cluster.front_jobs import CANCEL_DIR, CANCEL_POLL_S, cancel_requested
from framecast.server.config import ServerConfig
from framecast.server.errors import status_for
from framecast.server.jobs import JobQueue
from framecast.server.media_store import MediaStore
from framecast.server.request_ids import request_scope
from framecast.server.service import FramecastService
from framecast.v1 import framecast_pb2 as pb

log = logging.getLogger(__name__)

_METHODS = pb.DESCRIPTOR.services_by_name["Framecast"].methods_by_name
_END = object()  # what ``next`` returns past a stream's last item
_front_training: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("front_training", default=frozenset())


def request_class(method: str):
    """The request message class of Framecast RPC ``method``."""
    return getattr(pb, _METHODS[method].input_type.name)


def failure(exc: BaseException) -> dict:
    """An exception as the front re-raises it: its status code's name and a message safe to send."""
    status = status_for(exc)
    return {"status": status.code.name, "message": status.message}


class _ReplicaCall:
    """The servicer's view of the call on a replica. The front holds the client's real call:
    a job's stream here ends when the front cancels it (``Replica.job``), not by asking."""

    @staticmethod
    def is_active() -> bool:
        return True


class ReplicaService(FramecastService):
    """The single server's servicer, with the adapters the front knows to be training (on any
    replica) reported as TRAINING too."""

    def queued_training(self) -> frozenset[str]:
        return super().queued_training() | _front_training.get()


class Replica:
    """One replica: engine, job queue and servicer of a single server on the shared data dir."""

    def __init__(self, config: ServerConfig):
        # Not install_log_records(): Ray Serve's access log passes its own request_id to each record.
        data = Path(config.data_dir)
        self._data_lock = lock_data_dir(data, shared=True)  # held for the process's life
        self.config = config
        self.media = MediaStore(data / "media", max_pixels=config.max_source_pixels, max_duration_s=config.max_duration_s,
                                max_frames=int(config.max_duration_s * WAN_FPS), sweep=False)  # fmt: skip
        self.engine = Engine(config.engine, config.data_dir)
        # Job records here are the replica's own scratch: the front keeps the cluster's.
        self.queue = JobQueue(tempfile.mkdtemp(prefix="framecast-replica-jobs-"), config.max_queue)
        self.service = ReplicaService(config, self.media, self.queue, authenticated=lambda context: True)
        self.service.set_engine(self.engine)
        self.pool = ThreadPoolExecutor(config.max_streams + config.max_workers, thread_name_prefix="framecast-replica")
        try:
            self.name = serve.get_replica_context().replica_id.unique_id
        except Exception:  # constructed outside Ray Serve (a test of the class itself)
            self.name = f"pid{os.getpid()}"
        self.affinity: Counter[str] = Counter()  # device, host, miss
        async def holds(adapter: str) -> str:  # Ray Serve's record that this replica serves ``adapter``
            return adapter  # the engine loads it on demand

        self._holds = serve.multiplexed(max_num_models_per_replica=config.engine.adapter_slots)(holds)
        self._cancel_dir = data / CANCEL_DIR
        threading.Thread(target=self._watch_cancels, name="framecast-cancels", daemon=True).start()
        self._versions: dict[str, float | None] = {}  # adapter -> created_at of the stored version cached here
        log.info("replica %s ready: %s on %s (pid %d)", self.name, self.engine.base_model, self.engine.device, os.getpid())

    def _watch_cancels(self) -> None:
        """Cancel the jobs here that a front asked to cancel (``FrontJobs.cancel``)."""
        while True:
            time.sleep(CANCEL_POLL_S)
            try:
                for info in self.queue.list(pb.JOB_STATE_QUEUED) + self.queue.list(pb.JOB_STATE_RUNNING):
                    if cancel_requested(self._cancel_dir, info.job_id):
                        self.queue.cancel(info.job_id)
            except Exception:  # never let the watcher die: a cancel would never arrive again
                log.exception("looking for cancelled jobs failed")

    # --- adapters ---------------------------------------------------------------------------

    def _stored_version(self, adapter: str) -> float | None:
        store = self.engine.adapters.store
        try:
            return store.record(adapter).created_at if store.exists(adapter) else None
        except Exception:  # an invalid name, an unreadable record: the job will say so
            return None

    def _drop_if_stale(self, adapter: str) -> None:
        """Forget this replica's copy of ``adapter`` if another replica deleted or retrained it."""
        stored = self._stored_version(adapter)
        if adapter in self._versions and self._versions[adapter] != stored:
            log.info("adapter %r changed on the shared store: dropping this replica's copy", adapter)
            self.engine.adapters.slots.forget(adapter)
        self._versions[adapter] = stored

    def _placement(self, adapter: str) -> dict:
        """Where a job runs and whether its adapter was in this replica's memory when it arrived."""
        placement = {"replica": self.name, "pid": os.getpid(), "hit": ""}
        if adapter and self.engine.adapters.exists(adapter):
            state = self.engine.adapters.status(adapter).state
            placement["hit"] = {AdapterState.LOADED: "device", AdapterState.CACHED: "host"}.get(state, "miss")
            self.affinity[placement["hit"]] += 1
            log.info("replica %s: adapter %r %s", self.name, adapter,
                     "miss" if placement["hit"] == "miss" else f"hit ({placement['hit']})")  # fmt: skip
        return placement

    async def _route(self) -> str:
        adapter = serve.get_multiplexed_model_id()
        if adapter:
            await self._holds(adapter)
            await self._in_thread(self._drop_if_stale, adapter)
        return adapter

    # --- calls from the front ---------------------------------------------------------------

    async def _in_thread(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, function, *args)

    @staticmethod
    def _next(events, request_id: str):
        with request_scope(request_id):
            return next(events, _END)

    async def job(self, method: str, request: bytes, request_id: str):
        """Run a Train or Propagate request; yields a placement, the job's serialized events, and a
        status if it was refused or failed."""
        adapter = await self._route()
        message = request_class(method).FromString(request)
        if method == "Train" and message.adapter:  # routed by load; from now on, propagations come here
            await self._holds(message.adapter)
        # The hit is the propagation's adapter's, however the job was routed (by it, or not: benchmarks).
        yield await self._in_thread(self._placement, message.adapter if method == "Propagate" else "")
        events = getattr(self.service, method)(message, _ReplicaCall())
        job_id = ""
        try:
            while (event := await self._in_thread(self._next, events, request_id)) is not _END:
                job_id = job_id or event.job_id
                yield event.SerializeToString()
        except asyncio.CancelledError:  # the front cancelled the stream: CancelJob, or the front stopped
            if job_id:
                self.queue.cancel(job_id)
            raise
        except Exception as exc:
            yield failure(exc)
        finally:
            if adapter:
                self._versions[adapter] = self._stored_version(adapter)  # what this replica's caches hold now

    async def call(self, method: str, request, request_id: str, training: tuple[str, ...] = ()):
        """A unary RPC (``request`` serialized), ImportAdapter (a list of serialized chunks) or
        ExportAdapter (answered with the list of its chunks)."""
        adapter = await self._route()
        try:
            return {"reply": await self._in_thread(self._call, method, request, request_id, frozenset(training))}
        except Exception as exc:
            return failure(exc)
        finally:
            if adapter:
                self._versions[adapter] = self._stored_version(adapter)

    def _call(self, method: str, request, request_id: str, training: frozenset[str]):
        token = _front_training.set(training)
        try:
            with request_scope(request_id):
                return self._handle(self.service, method, request)
        finally:
            _front_training.reset(token)

    @staticmethod
    def _handle(service: FramecastService, method: str, request):
        message_class, rpc = request_class(method), _METHODS[method]
        handler = getattr(service, method)
        if rpc.client_streaming:
            return handler(iter(message_class.FromString(chunk) for chunk in request), _ReplicaCall()).SerializeToString()
        reply = handler(message_class.FromString(request), _ReplicaCall())
        if rpc.server_streaming:
            return [chunk.SerializeToString() for chunk in reply]
        return reply.SerializeToString()

    def stats(self) -> dict:
        """This replica: its id, pid, affinity counts, the adapters in its device and host memory."""
        adapters = self.engine.adapters
        return {"replica": self.name, "pid": os.getpid(), "affinity": dict(self.affinity), "loaded": adapters.loaded,
                "cached": adapters.cached, "waiting": self.queue.waiting, "running": self.queue.running}  # fmt: skip

    def check_health(self) -> None:
        """Ray Serve's health check: a replica whose job worker died is restarted."""
        if not self.queue.worker_alive:
            raise RuntimeError("the job worker thread has stopped")
