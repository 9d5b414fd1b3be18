"""The Framecast gRPC servicer: requests in, jobs queued, events and results out.

A request is converted (``convert``) into the job layer's spec and prepared by it once
(``framecast.engine.jobs.layer``: checked and planned), before it is queued, so bad input fails the RPC
at once with INVALID_ARGUMENT / NOT_FOUND and the job runs what was planned; Plan shows that
prepared job. A job's events are converted back as they come; its own failure ends its stream
with an error event and the job's status.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

from framecast.engine.engine import Engine
from framecast.engine.errors import FailedPrecondition, InvalidInput, MediaNotFound, Problems, Unavailable
from framecast.engine.jobs.layer import Jobs
from framecast.server import convert
from framecast.server.adapter_rpcs import AdapterRpcs
from framecast.server.config import ServerConfig
from framecast.server.errors import JobFailed
from framecast.server.job import Job
from framecast.server.jobs import JobQueue
from framecast.server.media_store import MediaStore
from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


def settle_interrupted_propagation(media: MediaStore, info: pb.JobInfo) -> None:
    """Settle a Propagate job a crash or restart interrupted (``info`` reads FAILED): SUCCEEDED when
    its result was stored before the crash and only the job's final record lagged behind.

    The record written right after the result was stored carries the whole result, metrics
    included. A crash between storing the result and writing that record leaves only the result
    video, found by its job-id filename: then ``metrics`` stays unset."""
    if info.kind != pb.JOB_KIND_PROPAGATE or not info.started_at:
        return
    if info.HasField("propagate_result"):
        try:
            media.info(info.propagate_result.video.id)
        except MediaNotFound:  # stored, then deleted or expired while the server was down
            info.ClearField("propagate_result")
            return
    else:
        names = {f"{info.job_id}{suffix}" for suffix in (".mp4", ".mkv", ".zip")}
        stored = [m for m in media.list() if m.filename in names and m.created_at >= info.started_at]
        if not stored:
            return
        result = max(stored, key=lambda m: m.created_at)
        info.propagate_result.CopyFrom(pb.PropagateResult(video=convert.media_ref(result), num_frames=result.num_frames))
    info.state = pb.JOB_STATE_SUCCEEDED
    info.finished_at = info.propagate_result.video.created_at  # when the result was stored
    info.ClearField("error")


class FramecastService(AdapterRpcs, pb_grpc.FramecastServicer):
    def __init__(self, config: ServerConfig, media: MediaStore, queue: JobQueue, open_streams=lambda: 0,
                 authenticated=lambda context: False):  # fmt: skip
        """``open_streams()``: how many streaming calls are open now; ``authenticated(context)``: whether
        a caller proved who it is (a token or a client certificate). Both for GetServerInfo."""
        self.config = config
        self.media = media
        self.queue = queue
        self._open_streams = open_streams
        self._authenticated = authenticated
        self._engine: Engine | None = None
        self._engine_error: str | None = None

    # --- engine lifecycle -------------------------------------------------------------------

    def set_engine(self, engine: Engine | None, error: str | None = None) -> None:
        self._engine, self._engine_error = engine, error

    @property
    def load_error(self) -> str | None:
        return self._engine_error

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            if self._engine_error:
                # any caller may get this refusal: the paths stay in the log and in GetServerInfo for the authenticated
                raise Unavailable(f"the model failed to load: {convert.without_paths(self._engine_error, self.config)}")
            raise Unavailable("the model is still loading; retry when health reports SERVING")
        return self._engine

    @property
    def jobs(self) -> Jobs:
        """The job layer on the loaded engine (UNAVAILABLE while it loads or after it failed)."""
        return Jobs(self.engine, self.media)

    # --- media ------------------------------------------------------------------------------

    def UploadMedia(self, request_iterator, context):
        first = next(request_iterator, None)
        header = first.header if first is not None else pb.MediaRef()
        data = itertools.chain([first.data] if first is not None else [], (chunk.data for chunk in request_iterator))
        info = self.media.put_stream(data, filename=header.filename, field="data", max_bytes=self.config.max_upload_bytes)
        return convert.media_ref(info)

    def DownloadMedia(self, request, context):
        info = self.media.info(request.id, "id")
        data = self.media.read_bytes(request.id)
        step = self.config.chunk_bytes
        yield pb.MediaChunk(header=convert.media_ref(info), data=data[:step])
        for start in range(step, len(data), step):
            yield pb.MediaChunk(data=data[start : start + step])

    def ListMedia(self, request, context):
        infos = self.media.list()
        return pb.ListMediaResponse(media=[convert.media_ref(i) for i in infos], total_bytes=sum(i.size_bytes for i in infos))

    def DeleteMedia(self, request, context):
        self.media.delete(request.id, "id")
        return pb.DeleteMediaResponse(deleted=True)

    # --- jobs -------------------------------------------------------------------------------

    def Train(self, request: pb.TrainRequest, context) -> Iterator[pb.JobEvent]:
        jobs, problems = self.jobs, Problems()
        prepared = jobs.prepare_train(convert.train_spec(request, problems), problems)

        def run(handle: Job) -> None:
            view = jobs.run_train(prepared, _emitter(handle), handle.should_cancel, name=handle.id)
            info = convert.adapter_info(view)
            handle.set_state(handle.info.state, adapter_result=info)
            handle.emit(adapter=info)

        handle = self.queue.submit(Job(pb.JOB_KIND_TRAIN, request.adapter, run, (request.adapter,)))
        yield from self._stream(handle, alive=context.is_active)

    def Propagate(self, request: pb.PropagateRequest, context) -> Iterator[pb.JobEvent]:
        jobs, problems = self.jobs, Problems()
        spec = convert.propagate_spec(request, problems)
        # An adapter a queued or running Train job creates: the job runs first (one FIFO queue).
        training = self.queue.training(spec.adapter) if spec.adapter else None
        prepared = jobs.prepare_propagate(spec, adapter_pending=training is not None, problems=problems)

        def run(handle: Job) -> None:
            if training is not None:
                check_trained(training)
            outcome = jobs.run_propagate(prepared, _emitter(handle), handle.should_cancel, name=handle.id)
            info = handle.info
            message = convert.propagate_result(outcome, prepared.shot, queued_s=max(0.0, info.started_at - info.created_at))
            handle.set_state(handle.info.state, propagate_result=message, verdict=message.fidelity.verdict)
            handle.checkpoint()  # a crash from here on still finds the result, metrics and all
            handle.emit(result=message)

        adapters = (spec.adapter,) if spec.adapter else ()
        handle = self.queue.submit(Job(pb.JOB_KIND_PROPAGATE, spec.adapter, run, adapters))
        yield from self._stream(handle, alive=context.is_active)

    def Track(self, request: pb.TrackRequest, context) -> Iterator[pb.JobEvent]:
        jobs, problems = self.jobs, Problems()
        prepared = jobs.prepare_track(convert.track_spec(request, problems), problems)

        def run(handle: Job) -> None:
            tracked = convert.event(jobs.run_track(prepared, _emitter(handle), name=handle.id))["tracked"]
            handle.set_state(handle.info.state, track_result=tracked)
            handle.emit(tracked=tracked)

        handle = self.queue.submit(Job(pb.JOB_KIND_TRACK, "", run))
        yield from self._stream(handle, alive=context.is_active)

    def Plan(self, request: pb.PlanRequest, context) -> pb.PlanResponse:
        jobs, problems = self.jobs, Problems()
        kind = request.WhichOneof("request")
        if kind is None:
            raise InvalidInput("request", "", "is required: a train or a propagate request to plan")
        if kind == "train":
            report = jobs.plan(convert.train_spec(request.train, problems), problems=problems)
        else:
            spec = convert.propagate_spec(request.propagate, problems)
            pending = bool(spec.adapter) and self.queue.training(spec.adapter) is not None
            report = jobs.plan(spec, adapter_pending=pending, problems=problems)
        source = self.media.info(report.shot.source.media_id) if report.shot is not None else None
        return convert.plan(report, source)

    @staticmethod
    def _stream(job: Job, replay_progress: bool = True, alive=None, coalesce_progress: bool = False) -> Iterator[pb.JobEvent]:
        """Follow a job; a failed or cancelled job ends the RPC with its own status after its error event.
        The follow ends early once ``alive()`` is False: the client went away (the job runs on)."""
        for event in job.follow(replay_progress, alive, coalesce_progress):
            yield event
        if job.status is not None:
            raise JobFailed(job.status)

    def WatchJob(self, request, context):
        job = self.queue.get(request.job_id)
        if not isinstance(job, Job):  # finished before a restart: only its record remains
            yield pb.JobEvent(job_id=job.job_id, accepted=job)
            return
        yield pb.JobEvent(job_id=job.id, accepted=job.snapshot())
        # A watcher gets the state, not the log: progress at most four times a second, so hundreds
        # of watchers of a fast job leave the server time for everything else.
        events = self._stream(job, replay_progress=False, alive=context.is_active, coalesce_progress=True)
        yield from (e for e in events if e.WhichOneof("event") != "accepted")

    def GetJob(self, request, context):
        return self.queue.info(request.job_id)

    def ListJobs(self, request, context):
        return pb.ListJobsResponse(jobs=self.queue.list(request.state, request.limit))

    def CancelJob(self, request, context):
        return self.queue.cancel(request.job_id)

    # --- adapters: framecast.server.adapter_rpcs.AdapterRpcs -----------------------------------

    # --- server -----------------------------------------------------------------------------

    def GetServerInfo(self, request, context):
        engine = self._engine
        info = convert.server_info(self.config, self.queue.waiting, engine.info() if engine else None, self._engine_error,
                                   engine.tracker_kinds if engine else None, self._open_streams())  # fmt: skip
        if not self._authenticated(context):  # a caller nobody vouches for learns no path on the server
            convert.hide_paths(info, self.config)
        return info


def check_trained(training: Job) -> None:
    """Raise FailedPrecondition, with its error, unless the Train job a Propagate waited for succeeded."""
    info = training.snapshot()
    if info.state != pb.JOB_STATE_SUCCEEDED:
        outcome = "was cancelled" if info.state == pb.JOB_STATE_CANCELLED else "failed"
        raise FailedPrecondition(f"adapter {info.adapter!r} was not trained: its training job {info.job_id} {outcome}: "
                                 f"{info.error.message or pb.JobState.Name(info.state)}")


def _emitter(job: Job):
    """A job layer's events as the job's own (``JobEvent``s its streams follow)."""

    def on_event(happened) -> None:
        job.emit(**convert.event(happened))

    return on_event
