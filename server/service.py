"""The Framecast gRPC servicer: requests in, jobs queued, events and results out.

A request is converted (``convert``), checked and planned by the engine once, before it is
queued, so bad input fails the RPC at once with INVALID_ARGUMENT / NOT_FOUND and the job runs
what was planned; a job's own failure ends its stream with an error event and the job's status.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import time
from collections.abc import Iterator

import numpy as np

from framecast.engine.engine import Engine
from framecast.engine.errors import (
    AdapterNotFound,
    AlreadyExists,
    FailedPrecondition,
    FramecastError,
    InvalidInput,
    InvalidRequest,
    MediaNotFound,
    Problems,
    Unavailable,
)
from framecast.engine.restore import restore
from framecast.engine.media import encode_png, encode_video, mask_to_frames
from framecast.engine.training import Progress
from framecast.server import convert
from framecast.server.adapter_rpcs import AdapterRpcs
from framecast.server.config import ServerConfig
from framecast.server.errors import JobFailed
from framecast.server.jobs import Job, JobQueue
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
        engine = self.engine
        problems = Problems()
        prepared = engine.prepare_train(convert.train_job(request, self.media, engine, problems), problems)

        def run(handle: Job) -> None:
            def on_progress(progress: Progress) -> None:
                handle.emit(progress=convert.training_progress(progress))

            record = engine.train(prepared, on_progress, handle.should_cancel, on_read=_reading(handle),
                                  on_clip=self._reporter(handle, prepared.clip))  # fmt: skip
            info = convert.adapter_info(engine.adapters.view(record.name))
            handle.set_state(handle.info.state, adapter_result=info)
            handle.emit(adapter=info)

        handle = self.queue.submit(Job(pb.JOB_KIND_TRAIN, request.adapter, run, (request.adapter,)))
        yield from self._stream(handle, alive=context.is_active)

    def Propagate(self, request: pb.PropagateRequest, context) -> Iterator[pb.JobEvent]:
        engine = self.engine
        problems = Problems()
        job = convert.propagate_job(request, self.media, engine, problems)
        output = convert.output_options(request, problems)
        # An adapter a queued or running Train job creates: the job runs first (one FIFO queue).
        training = self.queue.training(request.adapter) if request.adapter else None
        prepared = engine.prepare_propagate(job, adapter_pending=training is not None, problems=problems)
        shot = prepared.clip.shot

        def run(handle: Job) -> None:
            def on_step(step: int, total: int) -> None:
                elapsed = _elapsed(handle)
                handle.emit(progress=pb.Progress(phase="denoise", step=step, total=total, elapsed_s=elapsed,
                                                 eta_s=elapsed / step * (total - step)))  # fmt: skip

            def on_frames(first: int, frames: np.ndarray) -> None:
                for offset, frame in enumerate(frames):
                    index = first + offset
                    if index < shot.grid.frames:  # not the frames padding the shot to 4N+1
                        handle.emit(frame=pb.Frame(index=index, png=encode_png(frame), time_s=shot.grid.time(index)))

            if training is not None:
                check_trained(training)
            result = engine.propagate(prepared, on_step, on_frames, handle.should_cancel, on_read=_reading(handle),
                                      on_clip=self._reporter(handle, prepared.clip))  # fmt: skip
            scratch = self.media.scratch_dir()
            try:
                restored = restore(shot, result.frames, result.edit_mask, output, scratch, _phase(handle, "encode"))
                stored = self.media.put_file(restored.path, filename=f"{handle.id}{restored.suffix}")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            info = handle.info
            message = convert.propagate_result(result, stored, shot, job_s=_elapsed(handle),
                                               queued_s=max(0.0, info.started_at - info.created_at))  # fmt: skip
            handle.set_state(handle.info.state, propagate_result=message)
            handle.checkpoint()  # a crash from here on still finds the result, metrics and all
            handle.emit(result=message)

        adapters = (request.adapter,) if request.adapter else ()
        handle = self.queue.submit(Job(pb.JOB_KIND_PROPAGATE, request.adapter, run, adapters))
        yield from self._stream(handle, alive=context.is_active)

    def Plan(self, request: pb.PlanRequest, context) -> pb.PlanResponse:
        engine = self.engine
        kind = request.WhichOneof("request")
        if kind is None:
            raise InvalidInput("request", "", "is required: a train or a propagate request to plan")
        problems, prepared, job = Problems(), None, None
        try:
            if kind == "train":
                job = convert.train_job(request.train, self.media, engine, problems)
                prepared = engine.prepare_train(job, problems)
            else:
                job = convert.propagate_job(request.propagate, self.media, engine, problems)
                convert.output_options(request.propagate, problems)
                training = self.queue.training(request.propagate.adapter) if request.propagate.adapter else None
                prepared = engine.prepare_propagate(job, adapter_pending=training is not None, problems=problems)
        except InvalidRequest as refused:
            problems.found = refused.problems
        except FramecastError as refused:  # an unknown media or adapter, a taken name: one more problem
            problems.add(InvalidInput(_field_of(refused), "", str(refused)))
        reply = convert.plan(engine, kind, job.clip if job is not None else None, prepared, problems)
        shot = getattr(job.clip, "shot", None) if job is not None else None
        if shot is not None:
            reply.source.CopyFrom(convert.media_ref(self.media.info(shot.source.media_id)))
        return reply

    def _reporter(self, handle: Job, clip):
        """What a job tells its owner once its clip is read: notices (a region lost, a single mask
        the region moves out of), and a tracked region, stored as a mask video it can fetch."""

        def report(data) -> None:
            for notice in data.notices:
                handle.emit(notice=convert.notice(notice))
            if data.tracked is not None:
                grid = clip.shot.grid
                video = encode_video(mask_to_frames(data.tracked), grid.fps, lossless=True)
                stored = self.media.put(video, filename=f"{handle.id}-tracked-mask.mp4")
                lost = next((n.frames for n in data.notices if n.code == "region_lost"), ())
                handle.emit(tracked=pb.TrackedMask(mask=convert.media_ref(stored), lost_frames=list(lost),
                                                   tracker=clip.shot.mask_prompt.tracker.value))  # fmt: skip

        return report

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


def _elapsed(job: Job) -> float:
    return time.time() - job.info.started_at if job.info.started_at else 0.0


def _phase(job: Job, phase: str):
    """A progress callback ``(done, total)`` emitting ``phase`` events with the phase's own ETA,
    at most about 20 times a phase (a long clip has thousands of frames)."""
    started = time.time()
    last = [-1]

    def on_progress(done: int, total: int) -> None:
        if done != total and done * 20 // max(total, 1) == last[0]:
            return
        last[0] = done * 20 // max(total, 1)
        elapsed = time.time() - started
        job.emit(progress=pb.Progress(phase=phase, step=done, total=total, elapsed_s=_elapsed(job),
                                      eta_s=elapsed / done * (total - done) if done else 0.0))  # fmt: skip

    return on_progress


def _reading(job: Job):
    """``on_read(phase, done, total)`` of a job's clip: ``decode`` (the source onto the grid) and
    ``mask`` (a mask video) progress in working frames, each phase with its own ETA."""
    phases = {}

    def on_read(phase: str, done: int, total: int) -> None:
        if phase not in phases:
            phases[phase] = _phase(job, phase)
        phases[phase](done, total)

    return on_read


def _field_of(error: Exception) -> str:
    """The request field an error is about, for a Plan's problem list."""
    if isinstance(error, AdapterNotFound | AlreadyExists | FailedPrecondition):
        return "adapter"
    return ""
