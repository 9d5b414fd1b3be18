"""The adapter RPCs of the Framecast service: state, load/unload/pin, delete, import, export.

A mixin of ``FramecastService`` (which provides ``engine``, ``queue`` and ``config``). None of
these RPCs queues a job: they change only the adapter store and caches, which are safe from
RPC threads (``framecast.engine.adapters``), so a LoadAdapter answers while a long training
job runs. The one job-side hook is ``AdapterSlots.using``, which the Propagate job holds so
that its adapter is never evicted, unloaded or deleted under it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from framecast.engine.adapters import (
    AdapterRecord,
    AdapterState,
    AdapterStatus,
    AdapterStore,
    check_adapter_name,
    import_adapter,
)
from framecast.engine.errors import AdapterFailed, AdapterNotFound, AlreadyExists, FailedPrecondition, InvalidInput
from framecast.server.jobs import ensure_not_in_use
from framecast.v1 import framecast_pb2 as pb

STATES = {
    AdapterState.TRAINING: pb.ADAPTER_STATE_TRAINING,
    AdapterState.READY: pb.ADAPTER_STATE_READY,
    AdapterState.CACHED: pb.ADAPTER_STATE_CACHED,
    AdapterState.LOADED: pb.ADAPTER_STATE_LOADED,
    AdapterState.FAILED: pb.ADAPTER_STATE_FAILED,
}
ACTIONS = {
    "none": pb.ADAPTER_ACTION_NONE,
    "loaded": pb.ADAPTER_ACTION_LOADED,
    "cached": pb.ADAPTER_ACTION_CACHED,
    "unloaded": pb.ADAPTER_ACTION_UNLOADED,
    "pinned": pb.ADAPTER_ACTION_PINNED,
    "unpinned": pb.ADAPTER_ACTION_UNPINNED,
}
EXPORT_LAYOUTS = {
    pb.EXPORT_FORMAT_UNSPECIFIED: "diffusers",
    pb.EXPORT_FORMAT_DIFFUSERS: "diffusers",
    pb.EXPORT_FORMAT_COMFYUI: "comfyui",
}


def _target_state(to: int, default: AdapterState, default_wire: int) -> AdapterState:
    """The state a Load/Unload request's ``to`` asks for: ``default`` (also when unset) or CACHED."""
    targets = {pb.ADAPTER_STATE_UNSPECIFIED: default, default_wire: default, pb.ADAPTER_STATE_CACHED: AdapterState.CACHED}
    if to not in targets:
        raise InvalidInput("to", pb.AdapterState.Name(to) if to in STATES.values() else to,
                           f"must be {pb.AdapterState.Name(default_wire)} or ADAPTER_STATE_CACHED")  # fmt: skip
    return targets[to]


def adapter_info(record: AdapterRecord, status: AdapterStatus) -> pb.AdapterInfo:
    return pb.AdapterInfo(
        name=record.name, base_model=record.base_model, rank=record.rank, alpha=record.alpha,
        target_modules=record.target_modules, size_bytes=record.size_bytes, created_at=record.created_at,
        source_media_id=record.source_media_id, final_loss=record.final_loss,
        training_json=json.dumps(record.training, sort_keys=True), loaded=status.state is AdapterState.LOADED,
        state=STATES[status.state], pinned=status.pinned, last_used_at=status.last_used_at,
        device_bytes=status.device_bytes, host_bytes=status.host_bytes, error=status.error,
        origin=record.origin, in_use=status.in_use,
    )  # fmt: skip


def settle_interrupted_training(store: AdapterStore, info: pb.JobInfo) -> None:
    """Settle a Train job a crash or restart interrupted (``info`` reads FAILED): SUCCEEDED when its
    adapter was stored before the crash and only the job's record lagged behind, else its adapter
    reads FAILED with why, as after any training that failed."""
    if info.kind != pb.JOB_KIND_TRAIN:
        return
    try:
        record = store.record(info.adapter)
    except InvalidInput:  # not a name a training was accepted for
        return
    except (AdapterNotFound, AdapterFailed):
        store.record_failure(info.adapter, "training failed: interrupted by a server restart")
        return
    if info.started_at and record.created_at >= info.started_at:
        info.state = pb.JOB_STATE_SUCCEEDED
        info.finished_at = record.created_at
        info.ClearField("error")
        info.adapter_result.CopyFrom(adapter_info(record, AdapterStatus(AdapterState.READY)))


class AdapterRpcs:
    # --- conversions ------------------------------------------------------------------------

    def _status(self, name: str) -> AdapterStatus:
        engine = self._engine
        return engine.slots.status(name) if engine is not None else AdapterStatus(AdapterState.READY)

    def _adapter_info(self, record: AdapterRecord, status: AdapterStatus | None = None) -> pb.AdapterInfo:
        return adapter_info(record, status or self._status(record.name))

    def _unstored_info(self, name: str, status: AdapterStatus) -> pb.AdapterInfo:
        """An adapter not on disk: being trained (queued jobs included) or whose training failed."""
        rank = self.engine.slots.training.get(name, 0)
        return pb.AdapterInfo(name=name, state=STATES[status.state], rank=rank, error=status.error, origin="trained")

    def _queued_training(self) -> set[str]:
        active = self.queue.list(pb.JOB_STATE_QUEUED, limit=10_000) + self.queue.list(pb.JOB_STATE_RUNNING, limit=10_000)
        return {job.adapter for job in active if job.kind == pb.JOB_KIND_TRAIN}

    def _unstored(self, stored: set[str]) -> dict[str, AdapterStatus]:
        slots = self.engine.slots
        training = (self._queued_training() | set(slots.training)) - stored
        unstored = {name: AdapterStatus(AdapterState.TRAINING) for name in training}
        for name, error in slots.failed.items():
            if name not in stored and name not in training:
                unstored[name] = AdapterStatus(AdapterState.FAILED, error=error)
        return unstored

    def _change(self, change) -> pb.AdapterChange:
        record = self.engine.store.record(change.name)
        return pb.AdapterChange(
            action=ACTIONS[change.action], previous_state=STATES[change.previous],
            adapter=self._adapter_info(record, change.status), evicted=list(change.evicted),
        )  # fmt: skip

    # --- RPCs -------------------------------------------------------------------------------

    def ListAdapters(self, request, context):
        records = self.engine.store.list()
        infos = [self._adapter_info(r) for r in records]
        unstored = self._unstored({r.name for r in records})
        infos += [self._unstored_info(name, status) for name, status in sorted(unstored.items())]
        return pb.ListAdaptersResponse(adapters=infos)

    def GetAdapter(self, request, context):
        engine = self.engine
        name = check_adapter_name(request.name, "name")
        if engine.store.exists(name):
            return self._adapter_info(engine.store.record(name))
        unstored = self._unstored(set())
        if name in unstored:
            return self._unstored_info(name, unstored[name])
        raise AdapterNotFound(name)

    def LoadAdapter(self, request, context):
        engine = self.engine
        target = _target_state(request.to, AdapterState.LOADED, pb.ADAPTER_STATE_LOADED)
        name = check_adapter_name(request.name, "name")
        return self._change(engine.slots.load(name, engine.store, target))

    def UnloadAdapter(self, request, context):
        engine = self.engine
        target = _target_state(request.to, AdapterState.READY, pb.ADAPTER_STATE_READY)
        name = check_adapter_name(request.name, "name")
        return self._change(engine.slots.unload(name, engine.store, target))

    def PinAdapter(self, request, context):
        engine = self.engine
        name = check_adapter_name(request.name, "name")
        return self._change(engine.slots.pin(name, engine.store, pinned=not request.unpin))

    def DeleteAdapter(self, request, context):
        engine = self.engine
        name = check_adapter_name(request.name, "name")
        ensure_not_in_use(self.queue, name)  # queued jobs, trainings too; running ones are checked again atomically
        engine.delete_adapter(name)
        return pb.DeleteAdapterResponse(deleted=True)

    def ImportAdapter(self, request_iterator, context):
        engine = self.engine
        header, parts, size = None, [], 0
        limit = self.config.max_upload_bytes
        for chunk in request_iterator:
            if header is None:
                header = chunk.header
                name = check_adapter_name(header.name, "header.name")  # refuse before reading the file
                if engine.store.exists(name):
                    raise AlreadyExists(f"adapter {name!r} already exists; delete it first or pick another name")
                if self.queue.adapter_in_use(name):
                    raise FailedPrecondition(f"adapter {name!r} is being trained by a queued or running job")
            size += len(chunk.data)
            if size > limit:
                raise InvalidInput("data", f"> {limit} bytes", "exceeds the upload limit")
            parts.append(chunk.data)
        if header is None:
            raise InvalidInput("data", "no chunks", "is empty: send the header, then the file")
        record = import_adapter(engine.store, engine.slots, engine.base_model, name, b"".join(parts), header.filename)
        return self._adapter_info(record)

    def ExportAdapter(self, request, context) -> Iterator[pb.FileChunk]:
        if request.format not in EXPORT_LAYOUTS:
            raise InvalidInput("format", request.format, "is not a supported ExportFormat (DIFFUSERS, COMFYUI)")
        layout = EXPORT_LAYOUTS[request.format]
        name = check_adapter_name(request.name, "name")
        data = self.engine.store.export(name, layout)
        filename = f"{name}.safetensors" if layout == "diffusers" else f"{name}.{layout}.safetensors"
        step = self.config.chunk_bytes
        yield pb.FileChunk(filename=filename, size_bytes=len(data), data=data[:step])
        for start in range(step, len(data), step):
            yield pb.FileChunk(data=data[start : start + step])

    def _fill_adapter_server_info(self, info: pb.ServerInfo) -> None:
        slots = self._engine.slots
        info.adapters_loaded.extend(slots.attached)
        info.adapters_cached.extend(slots.cached)
        info.adapters_pinned.extend(slots.pinned)
        info.adapter_device_slots = slots.capacity
        info.adapter_host_cache_bytes = slots.host_bytes
        info.adapter_slot_rank = slots.max_rank
