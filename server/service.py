"""The Framecast gRPC servicer: converts protobuf <-> engine jobs at the edge.

Requests are validated before they are queued, so bad input fails the RPC at once with
INVALID_ARGUMENT / NOT_FOUND; a job's own failure ends its stream with an error event and
the matching status.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import grpc
import numpy as np

import framecast
from framecast.engine.conditioning import MaskMode
from framecast.engine.engine import Engine, PropagateJob, TrainJob
from framecast.engine.errors import FailedPrecondition, InvalidInput, MediaNotFound, Unavailable
from framecast.engine.media import encode_png, encode_png_sequence, encode_video, mask_from_frames
from framecast.engine.training import Progress, TrainSettings
from framecast.server.adapter_rpcs import AdapterRpcs
from framecast.server.config import ServerConfig
from framecast.server.jobs import Job, JobQueue
from framecast.server.media_store import MediaInfo, MediaStore
from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

_MASK_MODES = {
    pb.MASK_MODE_UNSPECIFIED: MaskMode.BBOX,
    pb.MASK_MODE_EXACT: MaskMode.EXACT,
    pb.MASK_MODE_BBOX: MaskMode.BBOX,
    pb.MASK_MODE_DILATE: MaskMode.DILATE,
}
_MEDIA_KINDS = {"video": pb.MEDIA_KIND_VIDEO, "image": pb.MEDIA_KIND_IMAGE, "image_sequence": pb.MEDIA_KIND_IMAGE_SEQUENCE}


def media_ref(info: MediaInfo) -> pb.MediaRef:
    return pb.MediaRef(
        id=info.id, kind=_MEDIA_KINDS[info.kind], num_frames=info.num_frames, width=info.width,
        height=info.height, fps=info.fps, size_bytes=info.size_bytes, filename=info.filename,
        created_at=info.created_at,
    )


def result_filename(job_id: str, encoding: int) -> str:
    """The filename a Propagate job's result is stored under: how a restart finds it again."""
    return f"{job_id}.{'zip' if encoding == pb.OUTPUT_ENCODING_PNG_SEQUENCE else 'mp4'}"


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
        names = {result_filename(info.job_id, e) for e in (pb.OUTPUT_ENCODING_MP4_H264, pb.OUTPUT_ENCODING_PNG_SEQUENCE)}
        stored = [m for m in media.list() if m.filename in names and m.created_at >= info.started_at]
        if not stored:
            return
        result = max(stored, key=lambda m: m.created_at)
        info.propagate_result.CopyFrom(pb.PropagateResult(video=media_ref(result), num_frames=result.num_frames))
    info.state = pb.JOB_STATE_SUCCEEDED
    info.finished_at = info.propagate_result.video.created_at  # when the result was stored
    info.ClearField("error")


def _blend_ramp(value: int) -> str:
    ramps = {pb.BLEND_RAMP_UNSPECIFIED: "linear", pb.BLEND_RAMP_LINEAR: "linear", pb.BLEND_RAMP_COSINE: "cosine"}
    if value not in ramps:
        raise InvalidInput("blend_ramp", value, "is not a known BlendRamp")
    return ramps[value]


def _mask_mode(value: int) -> MaskMode:
    try:
        return _MASK_MODES[value]
    except KeyError:
        raise InvalidInput("mask_mode", value, "is not a known MaskMode") from None


class FramecastService(AdapterRpcs, pb_grpc.FramecastServicer):
    def __init__(self, config: ServerConfig, media: MediaStore, queue: JobQueue):
        self.config = config
        self.media = media
        self.queue = queue
        self._engine: Engine | None = None
        self._engine_ready = threading.Event()
        self._engine_error: str | None = None

    # --- engine lifecycle -------------------------------------------------------------------

    def set_engine(self, engine: Engine | None, error: str | None = None) -> None:
        self._engine, self._engine_error = engine, error
        self._engine_ready.set()

    @property
    def load_error(self) -> str | None:
        return self._engine_error

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            if self._engine_error:
                raise Unavailable(f"the model failed to load: {self._engine_error}")
            raise Unavailable("the model is still loading; retry when health reports SERVING")
        return self._engine

    # --- media ------------------------------------------------------------------------------

    def UploadMedia(self, request_iterator, context):
        header, parts, size = None, [], 0
        for chunk in request_iterator:
            if header is None:
                header = chunk.header
            size += len(chunk.data)
            if size > self.config.max_upload_bytes:
                raise InvalidInput("data", f"> {self.config.max_upload_bytes} bytes", "exceeds the upload limit")
            parts.append(chunk.data)
        header = header or pb.MediaRef()
        info = self.media.put(b"".join(parts), filename=header.filename, field="data")
        return media_ref(info)

    def DownloadMedia(self, request, context):
        info = self.media.info(request.id, "id")
        data = self.media.read_bytes(request.id)
        step = self.config.chunk_bytes
        yield pb.MediaChunk(header=media_ref(info), data=data[:step])
        for start in range(step, len(data), step):
            yield pb.MediaChunk(data=data[start : start + step])

    def ListMedia(self, request, context):
        infos = self.media.list()
        return pb.ListMediaResponse(media=[media_ref(i) for i in infos], total_bytes=sum(i.size_bytes for i in infos))

    def DeleteMedia(self, request, context):
        self.media.delete(request.id, "id")
        return pb.DeleteMediaResponse(deleted=True)

    def _mask(self, mask_id: str) -> np.ndarray:
        return mask_from_frames(self.media.frames(mask_id, "mask_id"))

    # --- jobs -------------------------------------------------------------------------------

    def Train(self, request: pb.TrainRequest, context) -> Iterator[pb.JobEvent]:
        engine = self.engine
        weights = request.loss_weights if request.HasField("loss_weights") else pb.LossWeights(edit=1.0, keep=1.0)
        settings = TrainSettings(
            rank=request.rank or 16,
            steps=request.steps or 100,
            appearance_steps=request.appearance_steps or 100,
            learning_rate=float(f"{request.learning_rate:.6g}") if request.learning_rate else 1e-4,
            w_edit=weights.edit,
            w_keep=weights.keep,
            seed=request.seed,
            gradient_checkpointing=not request.gradient_checkpointing_off,
            colour_variants=request.colour_variants,
        )
        if not request.adapter:
            raise InvalidInput("adapter", "", "is required: name the adapter to create")
        job = TrainJob(
            adapter=request.adapter,
            source=self.media.frames(request.source_id, "source_id"),
            mask=self._mask(request.mask_id),
            prompt=request.prompt,
            settings=settings,
            references=[
                (ref.frame_index, self.media.image(ref.image_id, "references.image_id")) for ref in request.references
            ],
            mask_mode=_mask_mode(request.mask_mode),
            dilate_px=request.dilate_px,
            source_media_id=request.source_id,
            window_frames=request.window_frames,
            overlap_frames=request.overlap_frames if request.HasField("overlap_frames") else None,
        )
        engine.validate_train(job)

        def run(handle: Job) -> None:
            def on_progress(p: Progress) -> None:
                handle.emit(progress=pb.Progress(phase=p.phase, step=p.step, total=p.total, loss=p.loss,
                                                 elapsed_s=p.elapsed_s, eta_s=p.eta_s))

            record = engine.train(job, on_progress, handle.should_cancel)
            info = self._adapter_info(record)
            handle.set_state(handle.info.state, adapter_result=info)
            handle.emit(adapter=info)

        handle = self.queue.submit(Job(pb.JOB_KIND_TRAIN, request.adapter, run, (request.adapter,)))
        yield from self._stream(handle, context)

    def Propagate(self, request: pb.PropagateRequest, context) -> Iterator[pb.JobEvent]:
        engine = self.engine
        source_info = self.media.info(request.source_id, "source_id")
        job = PropagateJob(
            adapter=request.adapter,
            source=self.media.frames(request.source_id, "source_id"),
            mask=self._mask(request.mask_id),
            edited_first_frame=self.media.image(request.edited_first_frame_id, "edited_first_frame_id"),
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            steps=request.steps or 30,
            guidance_scale=request.guidance_scale if request.HasField("guidance_scale") else 5.0,
            seed=request.seed,
            composite=request.composite,
            feather_px=request.feather_px if request.HasField("feather_px") else 3,
            mask_mode=_mask_mode(request.mask_mode),
            dilate_px=request.dilate_px,
            window_frames=request.window_frames,
            overlap_frames=request.overlap_frames if request.HasField("overlap_frames") else None,
            blend_ramp=_blend_ramp(request.blend_ramp),
            adapter_strength=request.adapter_strength if request.HasField("adapter_strength") else 1.0,
        )
        # An adapter a queued or running Train job creates: the job runs first (one FIFO queue).
        training = self.queue.training(request.adapter) if request.adapter else None
        engine.validate_propagate(job, adapter_pending=training is not None)
        encoding = request.output_encoding or pb.OUTPUT_ENCODING_MP4_H264
        if encoding not in (pb.OUTPUT_ENCODING_MP4_H264, pb.OUTPUT_ENCODING_MP4_H264_LOSSLESS, pb.OUTPUT_ENCODING_PNG_SEQUENCE):
            raise InvalidInput("output_encoding", encoding, "is not a known OutputEncoding")
        fps = source_info.fps or 16.0

        def run(handle: Job) -> None:
            def on_step(step: int, total: int) -> None:
                elapsed = _elapsed(handle)
                handle.emit(progress=pb.Progress(phase="denoise", step=step, total=total, elapsed_s=elapsed,
                                                 eta_s=elapsed / step * (total - step)))

            def on_frames(first: int, frames: np.ndarray) -> None:
                for offset, frame in enumerate(frames):
                    handle.emit(frame=pb.Frame(index=first + offset, png=encode_png(frame)))

            if training is not None:
                _check_trained(training)
            with engine.slots.using(job.adapter):  # never evicted or deleted while the job runs
                result = engine.propagate(job, on_step, on_frames, handle.should_cancel)
            if encoding == pb.OUTPUT_ENCODING_PNG_SEQUENCE:
                data = encode_png_sequence(result.frames)
            else:
                data = encode_video(result.frames, fps, lossless=encoding == pb.OUTPUT_ENCODING_MP4_H264_LOSSLESS)
            stored = self.media.put(data, filename=result_filename(handle.id, encoding))
            message = pb.PropagateResult(
                video=media_ref(stored),
                metrics=pb.QualityMetrics(
                    background_psnr_db=result.background_psnr, first_frame_psnr_db=result.first_frame_psnr,
                    seam_score=result.seam_score, windows=result.windows, background_ssim=result.background_ssim,
                    temporal_change=result.temporal_change,
                ),
                num_frames=len(result.frames),
                elapsed_s=result.elapsed_s,
            )
            handle.set_state(handle.info.state, propagate_result=message)
            handle.checkpoint()  # a crash from here on still finds the result, metrics and all
            handle.emit(result=message)

        adapters = (request.adapter,) if request.adapter else ()
        handle = self.queue.submit(Job(pb.JOB_KIND_PROPAGATE, request.adapter, run, adapters))
        yield from self._stream(handle, context)

    def _stream(self, job: Job, context, replay_progress: bool = True) -> Iterator[pb.JobEvent]:
        """Follow a job; a failed or cancelled job ends the RPC with its status after the error event."""
        for event in job.follow(replay_progress):
            yield event
            if event.WhichOneof("event") == "error":
                context.abort(getattr(grpc.StatusCode, event.error.code, grpc.StatusCode.UNKNOWN), event.error.message)

    def WatchJob(self, request, context):
        job = self.queue.get(request.job_id)
        if not isinstance(job, Job):  # finished before a restart: only its record remains
            yield pb.JobEvent(job_id=job.job_id, accepted=job)
            return
        yield pb.JobEvent(job_id=job.id, accepted=job.snapshot())
        yield from (e for e in self._stream(job, context, replay_progress=False) if e.WhichOneof("event") != "accepted")

    def GetJob(self, request, context):
        return self.queue.info(request.job_id)

    def ListJobs(self, request, context):
        return pb.ListJobsResponse(jobs=self.queue.list(request.state, request.limit))

    def CancelJob(self, request, context):
        return self.queue.cancel(request.job_id)

    # --- adapters: framecast.server.adapter_rpcs.AdapterRpcs -----------------------------------

    # --- server -----------------------------------------------------------------------------

    def GetServerInfo(self, request, context):
        info = pb.ServerInfo(
            version=framecast.__version__, max_upload_bytes=self.config.max_upload_bytes,
            max_queue=self.config.max_queue, queue_length=self.queue.waiting, ready=self._engine is not None,
            max_frames=self.config.max_frames, max_pixels=self.config.max_pixels, model_dir=self.config.model_dir,
            window_frames=self.config.window_frames, load_error=self._engine_error or "",
        )
        if self._engine is not None:
            details = self._engine.info()
            info.model = details["model"]
            info.dtype = details["dtype"]
            info.device = details["device"]
            info.quantization = details["quantization"]
            info.attention_backend = details["attention_backend"]
            info.memory_bytes = details["memory_bytes"]
            info.offload = details["offload"]
            info.max_vram_bytes = details["max_vram_bytes"]
            info.vae_tiling = details["vae_tiling"]
            info.gradient_checkpointing = details["gradient_checkpointing"]
            info.optimizer = details["optimizer"]
            self._fill_adapter_server_info(info)
        return info


def _check_trained(training: Job) -> None:
    """Raise FailedPrecondition, with its error, unless the Train job a Propagate waited for succeeded."""
    info = training.snapshot()
    if info.state != pb.JOB_STATE_SUCCEEDED:
        outcome = "was cancelled" if info.state == pb.JOB_STATE_CANCELLED else "failed"
        raise FailedPrecondition(f"adapter {info.adapter!r} was not trained: its training job {info.job_id} {outcome}: "
                                 f"{info.error.message or pb.JobState.Name(info.state)}")


def _elapsed(job: Job) -> float:
    import time

    return time.time() - job.info.started_at if job.info.started_at else 0.0
