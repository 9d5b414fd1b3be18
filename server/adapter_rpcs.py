"""The adapter RPCs of the Framecast service: state, load/unload/pin, delete, import, export.

A mixin of ``FramecastService`` (which provides ``engine``, ``queue`` and ``config``). None of
these RPCs queues a job: they change only the adapter store and caches through
``Engine.adapters``, which is safe from RPC threads, so a LoadAdapter answers while a long
training job runs; a propagation holds its own adapter so it is never evicted under it.
"""

from __future__ import annotations

from collections.abc import Iterator

from framecast.engine.adapters.cache import AdapterState
from framecast.engine.adapters.store import AdapterStore, check_adapter_name
from framecast.engine.errors import AdapterFailed, AdapterNotFound, FailedPrecondition, InvalidInput
from framecast.server import convert
from framecast.server.jobs import ensure_not_in_use
from framecast.v1 import framecast_pb2 as pb


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
        info.adapter_result.CopyFrom(convert.stored_adapter_info(record))


class AdapterRpcs:
    """The adapter RPCs; ``engine.adapters`` (``AdapterManager``) does the work."""

    def queued_training(self) -> frozenset[str]:
        """Adapters a queued or running Train job creates (the engine knows only the running one)."""
        active = self.queue.list(pb.JOB_STATE_QUEUED, limit=10_000) + self.queue.list(pb.JOB_STATE_RUNNING, limit=10_000)
        return frozenset(job.adapter for job in active if job.kind == pb.JOB_KIND_TRAIN)

    def _change(self, change) -> pb.AdapterChange:
        return convert.adapter_change(change, self.engine.adapters.record(change.name))

    def ListAdapters(self, request, context):
        views = self.engine.adapters.list(self.queued_training())
        return pb.ListAdaptersResponse(adapters=[convert.adapter_info(view) for view in views])

    def GetAdapter(self, request, context):
        return convert.adapter_info(self.engine.adapters.view(request.name, self.queued_training()))

    def LoadAdapter(self, request, context):
        target = convert.target_state(request.to, AdapterState.LOADED)
        return self._change(self.engine.adapters.load(request.name, target))

    def UnloadAdapter(self, request, context):
        target = convert.target_state(request.to, AdapterState.READY)
        return self._change(self.engine.adapters.unload(request.name, target))

    def PinAdapter(self, request, context):
        return self._change(self.engine.adapters.pin(request.name, pinned=not request.unpin))

    def DeleteAdapter(self, request, context):
        adapters = self.engine.adapters
        name = check_adapter_name(request.name, "name")
        ensure_not_in_use(self.queue, name)  # queued jobs, trainings too; running ones are checked again atomically
        adapters.delete(name)
        return pb.DeleteAdapterResponse(deleted=True)

    def ImportAdapter(self, request_iterator, context):
        adapters = self.engine.adapters
        header, parts, size = None, [], 0
        limit = self.config.max_upload_bytes
        for chunk in request_iterator:
            if header is None:
                header = chunk.header
                name = adapters.check_new(header.name, "header.name")  # refuse before reading the file
                if self.queue.adapter_in_use(name):
                    raise FailedPrecondition(f"adapter {name!r} is being trained by a queued or running job")
            size += len(chunk.data)
            if size > limit:
                raise InvalidInput("data", f"> {limit} bytes", "exceeds the upload limit")
            parts.append(chunk.data)
        if header is None:
            raise InvalidInput("data", "no chunks", "is empty: send the header, then the file")
        record = adapters.import_file(name, b"".join(parts), header.filename, **convert.import_options(header))
        return convert.adapter_info(adapters.view(record.name))

    def ExportAdapter(self, request, context) -> Iterator[pb.FileChunk]:
        layout = convert.export_layout(request.format)
        name = check_adapter_name(request.name, "name")
        data = self.engine.adapters.export(name, layout)
        filename = f"{name}.safetensors" if layout == "diffusers" else f"{name}.{layout}.safetensors"
        step = self.config.chunk_bytes
        yield pb.FileChunk(filename=filename, size_bytes=len(data), data=data[:step])
        for start in range(step, len(data), step):
            yield pb.FileChunk(data=data[start : start + step])
