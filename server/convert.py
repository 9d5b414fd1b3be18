"""Every conversion between protobuf messages and the engine's values, in one place.

Requests become engine requests with only the fields they set: a field left unset (0, empty,
or an ``optional`` field not present) takes the engine dataclass's default, which is written
nowhere else. Wire enums become the engine's ``str`` Enums here, and an unknown number is
refused naming the field.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import framecast
from framecast.engine.adapter_cache import AdapterChange, AdapterState, AdapterStatus
from framecast.engine.adapter_manager import AdapterView
from framecast.engine.adapter_store import AdapterRecord
from framecast.engine.config import EngineInfo, field_default
from framecast.engine.engine import Engine
from framecast.engine.errors import InvalidInput, Problems
from framecast.engine.grid import Fit
from framecast.engine.requests import (
    BlendRamp,
    MaskMode,
    PropagateJob,
    PropagateResult,
    StepCache,
    TrainJob,
    TrainSettings,
)
from framecast.engine.restore import Container, Encoding, Interpolation, OutputOptions, check_output
from framecast.engine.sampling import Sampler
from framecast.engine.shots import MaskPrompt, ReferenceInput, Shot, ShotClip, ShotOptions, StoredMedia, plan_shot
from framecast.engine.tracking import Box, Point, TrackerKind
from framecast.engine.training import Progress
from framecast.server.config import MAX_MESSAGE_BYTES, ServerConfig
from framecast.server.media_store import MediaInfo, MediaStore
from framecast.v1 import framecast_pb2 as pb

MASK_MODES = {pb.MASK_MODE_EXACT: MaskMode.EXACT, pb.MASK_MODE_BBOX: MaskMode.BBOX, pb.MASK_MODE_DILATE: MaskMode.DILATE}
BLEND_RAMPS = {pb.BLEND_RAMP_LINEAR: BlendRamp.LINEAR, pb.BLEND_RAMP_COSINE: BlendRamp.COSINE}
STEP_CACHES = {pb.STEP_CACHE_NONE: StepCache.NONE, pb.STEP_CACHE_FIRST_BLOCK: StepCache.FIRST_BLOCK,
               pb.STEP_CACHE_TAYLORSEER: StepCache.TAYLORSEER}  # fmt: skip
ENCODINGS = {
    pb.OUTPUT_ENCODING_MP4_H264: Encoding.MP4,
    pb.OUTPUT_ENCODING_MP4_H264_LOSSLESS: Encoding.MP4_LOSSLESS,
    pb.OUTPUT_ENCODING_PNG_SEQUENCE: Encoding.PNG_SEQUENCE,
}
CONTAINERS = {pb.OUTPUT_CONTAINER_MP4: Container.MP4, pb.OUTPUT_CONTAINER_MATROSKA: Container.MATROSKA}
FITS = {pb.FIT_MODE_FIT: Fit.FIT, pb.FIT_MODE_CROP: Fit.CROP, pb.FIT_MODE_PAD: Fit.PAD}
TRACKERS = {pb.TRACKER_CSRT: TrackerKind.CSRT, pb.TRACKER_FLOW: TrackerKind.FLOW, pb.TRACKER_SAM2: TrackerKind.SAM2}
INTERPOLATIONS = {
    pb.INTERPOLATION_NEAREST: Interpolation.NEAREST,
    pb.INTERPOLATION_BLEND: Interpolation.BLEND,
    pb.INTERPOLATION_FLOW: Interpolation.FLOW,
}
MEDIA_KINDS = {"video": pb.MEDIA_KIND_VIDEO, "image": pb.MEDIA_KIND_IMAGE, "image_sequence": pb.MEDIA_KIND_IMAGE_SEQUENCE}
ADAPTER_STATES = {
    AdapterState.TRAINING: pb.ADAPTER_STATE_TRAINING,
    AdapterState.READY: pb.ADAPTER_STATE_READY,
    AdapterState.CACHED: pb.ADAPTER_STATE_CACHED,
    AdapterState.LOADED: pb.ADAPTER_STATE_LOADED,
    AdapterState.FAILED: pb.ADAPTER_STATE_FAILED,
}
ADAPTER_ACTIONS = {
    "none": pb.ADAPTER_ACTION_NONE,
    "loaded": pb.ADAPTER_ACTION_LOADED,
    "cached": pb.ADAPTER_ACTION_CACHED,
    "unloaded": pb.ADAPTER_ACTION_UNLOADED,
    "pinned": pb.ADAPTER_ACTION_PINNED,
    "unpinned": pb.ADAPTER_ACTION_UNPINNED,
}
EXPORT_LAYOUTS = {pb.EXPORT_FORMAT_DIFFUSERS: "diffusers", pb.EXPORT_FORMAT_COMFYUI: "comfyui"}


def _choice(table: dict, value: int, field: str, kind: str):
    """The engine's value of a wire enum: None when UNSPECIFIED (the engine's default)."""
    if value == 0:
        return None
    if value not in table:
        raise InvalidInput(field, value, f"is not a known {kind}")
    return table[value]


def _set(**fields) -> dict:
    """The keyword arguments of the fields a request set (None means unset)."""
    return {name: value for name, value in fields.items() if value is not None}


def _present(message, field: str):
    """An ``optional`` field's value, or None when the request left it out."""
    return getattr(message, field) if message.HasField(field) else None


# --- media ---------------------------------------------------------------------------------------


def media_ref(info: MediaInfo) -> pb.MediaRef:
    footage = info.footage or {}
    return pb.MediaRef(
        id=info.id, kind=MEDIA_KINDS[info.kind], num_frames=info.num_frames, width=info.width,
        height=info.height, fps=info.fps, size_bytes=info.size_bytes, filename=info.filename,
        created_at=info.created_at, duration_s=info.duration_s, has_audio=bool(footage.get("audio")),
        rotation=int(footage.get("rotation", 0)), codec=footage.get("codec", ""),
    )  # fmt: skip


def shot_options(message) -> ShotOptions:
    """The ``shot`` of a Train or Propagate request."""
    if not message.HasField("shot"):
        return ShotOptions()
    shot = message.shot
    return ShotOptions(**_set(
        start_s=shot.start_s, end_s=_present(shot, "end_s"), fps=shot.fps, source_fps=shot.source_fps,
        fit=_choice(FITS, shot.fit, "shot.fit", "FitMode"),
    ))  # fmt: skip


def _stored(media: MediaStore, media_id: str, field: str, problems: Problems) -> StoredMedia | None:
    """A stored media a request names; a missing or malformed id is a problem, an unknown one NotFound."""
    with problems.check():
        path, info = media.footage(media_id, field)
        return StoredMedia(path, info, field, media_id)
    return None


def mask_prompt(request, media: MediaStore, problems: Problems, trackers=(TrackerKind.CSRT,)) -> MaskPrompt | None:
    """A request's ``mask_prompt``: the region on the first frame the server tracks (with one of
    ``trackers``, what this server has); None without one. Unset, the tracker is SAM2 for points
    where the server has it, else CSRT."""
    if not request.HasField("mask_prompt"):
        return None
    prompt = request.mask_prompt
    box = Box(prompt.box.x, prompt.box.y, prompt.box.width, prompt.box.height) if prompt.HasField("box") else None
    points = tuple(Point(p.x, p.y, p.negative) for p in prompt.points)
    frame0 = _stored(media, prompt.frame0_mask_id, "mask_prompt.frame0_mask_id", problems) if prompt.frame0_mask_id else None
    tracker = None
    with problems.check():
        tracker = _choice(TRACKERS, prompt.tracker, "mask_prompt.tracker", "Tracker")
    if tracker is None:
        tracker = TrackerKind.SAM2 if points and TrackerKind.SAM2 in trackers else TrackerKind.CSRT
    if tracker not in trackers:
        problems.add(InvalidInput("mask_prompt.tracker", tracker.value, "needs a SAM2 checkpoint, which this server was "
                                  "not given (serve --sam2-checkpoint DIR); use csrt or flow"))  # fmt: skip
    return MaskPrompt(box, points, frame0, tracker)


def _shot(request, media: MediaStore, engine: Engine, problems: Problems, edited_field: str | None) -> Shot | None:
    """The shot a request's media and options make (planned from their probes), or None."""
    source = _stored(media, request.source_id, "source_id", problems)
    prompt = mask_prompt(request, media, problems, engine.tracker_kinds)
    mask = _stored(media, request.mask_id, "mask_id", problems) if request.mask_id or prompt is None else None
    edited = _stored(media, request.edited_first_frame_id, edited_field, problems) if edited_field else None
    references = []
    for number, ref in enumerate(getattr(request, "references", ())):  # Propagate has none
        image = _stored(media, ref.image_id, f"references[{number}].image_id", problems)
        if image is not None:
            timed = ref.HasField("time_s")
            references.append(ReferenceInput(image, None if timed else ref.frame_index, ref.time_s if timed else None))
    with problems.check():
        options = shot_options(request)
        if source is not None:
            return plan_shot(source, options, engine.limits, engine.config, problems, mask, edited, tuple(references),
                             prompt)  # fmt: skip
    return None


# --- jobs ----------------------------------------------------------------------------------------


def train_job(request: pb.TrainRequest, media: MediaStore, engine: Engine, problems: Problems) -> TrainJob:
    """The engine's training of a request, its footage planned onto the working grid; the problems
    of its inputs go to ``problems`` (the engine adds its own and reports them all)."""
    if not request.adapter:
        raise InvalidInput("adapter", "", "is required: name the adapter to create")
    weights = _present(request, "loss_weights")
    settings = TrainSettings(**_set(
        rank=request.rank or None,
        steps=request.steps or None,
        appearance_steps=request.appearance_steps or None,
        # a float32 on the wire: 1e-4 arrives as 9.99999974e-05
        learning_rate=float(f"{request.learning_rate:.6g}") if request.learning_rate else None,
        w_edit=None if weights is None else weights.edit,
        w_keep=None if weights is None else weights.keep,
        seed=request.seed,
        gradient_checkpointing=False if request.gradient_checkpointing_off else None,
        colour_variants=request.colour_variants,
        steps_in_all=request.steps_in_all,
    ))  # fmt: skip
    shot = _shot(request, media, engine, problems, edited_field=None)
    mask_mode = None
    with problems.check():
        mask_mode = _choice(MASK_MODES, request.mask_mode, "mask_mode", "MaskMode")
    return TrainJob(
        adapter=request.adapter, source=None, mask=None, prompt=request.prompt, settings=settings,
        source_media_id=request.source_id, clip=None if shot is None else ShotClip(shot, engine.trackers),
        **_set(mask_mode=mask_mode, dilate_px=request.dilate_px,
               window_frames=request.window_frames, overlap_frames=_present(request, "overlap_frames")),
    )  # fmt: skip


def propagate_job(request: pb.PropagateRequest, media: MediaStore, engine: Engine, problems: Problems) -> PropagateJob:
    """The engine's propagation of a request (as ``train_job``)."""
    shot = _shot(request, media, engine, problems, edited_field="edited_first_frame_id")
    choices = {}
    for name, table, kind in (("mask_mode", MASK_MODES, "MaskMode"), ("blend_ramp", BLEND_RAMPS, "BlendRamp"),
                              ("step_cache", STEP_CACHES, "StepCache")):  # fmt: skip
        with problems.check():
            choices[name] = _choice(table, getattr(request, name), name, kind)
    choices = {name: value for name, value in choices.items() if value is not None}
    return PropagateJob(
        adapter=request.adapter, source=None, mask=None, edited_first_frame=None, prompt=request.prompt,
        clip=None if shot is None else ShotClip(shot, engine.trackers),
        **_set(
            negative_prompt=request.negative_prompt,
            steps=request.steps or None,
            guidance_scale=_present(request, "guidance_scale"),
            seed=request.seed,
            composite=request.composite,
            feather_px=_present(request, "feather_px"),
            dilate_px=request.dilate_px,
            window_frames=request.window_frames,
            overlap_frames=_present(request, "overlap_frames"),
            adapter_strength=_present(request, "adapter_strength"),
            guidance_steps=request.guidance_steps,
            cache_threshold=_present(request, "cache_threshold"),
            cache_interval=_present(request, "cache_interval"),
        ),
        **choices,
    )  # fmt: skip


def output_options(request: pb.PropagateRequest, problems: Problems) -> OutputOptions:
    """How a propagation's result is written: encoding, quality, composite, interpolation, container."""
    encoding = request.output_encoding or pb.OUTPUT_ENCODING_MP4_H264
    if encoding not in ENCODINGS:
        problems.add(InvalidInput("output_encoding", encoding, "is not a known OutputEncoding"))
        encoding = pb.OUTPUT_ENCODING_MP4_H264
    interpolation = None
    with problems.check():
        interpolation = _choice(INTERPOLATIONS, request.interpolation, "interpolation", "Interpolation")
    container = None
    with problems.check():
        container = _choice(CONTAINERS, request.container, "container", "OutputContainer")
    options = OutputOptions(**_set(
        encoding=ENCODINGS[encoding], quality=_present(request, "quality"), composite=request.composite,
        feather_px=_present(request, "feather_px"), interpolation=interpolation, container=container,
    ))  # fmt: skip
    with problems.check():
        check_output(options)
    return options


def training_progress(progress: Progress) -> pb.Progress:
    return pb.Progress(phase=progress.phase, step=progress.step, total=progress.total, loss=progress.loss,
                       elapsed_s=progress.elapsed_s, eta_s=progress.eta_s)  # fmt: skip


def propagate_result(result: PropagateResult, stored: MediaInfo, shot: Shot, job_s: float = 0.0,
                     queued_s: float = 0.0) -> pb.PropagateResult:  # fmt: skip
    """A propagation's result: the stored video, the grid, the metrics; ``elapsed_s`` the generation's
    seconds, ``job_s`` the whole job's (reading and writing too), ``queued_s`` its wait before."""
    grid = shot.grid
    return pb.PropagateResult(
        video=media_ref(stored), working_width=grid.width, working_height=grid.height, working_frames=grid.frames,
        working_fps=grid.fps,
        metrics=pb.QualityMetrics(
            background_psnr_db=result.background_psnr, first_frame_psnr_db=result.first_frame_psnr,
            seam_score=result.seam_score, windows=result.windows, background_ssim=result.background_ssim,
            temporal_change=result.temporal_change,
        ),  # fmt: skip
        num_frames=stored.num_frames,
        elapsed_s=result.elapsed_s, job_s=job_s, queued_s=queued_s,
    )


# --- adapters ------------------------------------------------------------------------------------


def adapter_info(view: AdapterView) -> pb.AdapterInfo:
    """An adapter as the API shows it: stored (its record and state) or not (training, failed)."""
    status, record = view.status, view.record
    fields = dict(
        name=view.name, state=ADAPTER_STATES[status.state], pinned=status.pinned, last_used_at=status.last_used_at,
        device_bytes=status.device_bytes, host_bytes=status.host_bytes, error=status.error, in_use=status.in_use,
        loaded=status.state is AdapterState.LOADED, rank=view.training_rank, origin="trained",
    )  # fmt: skip
    if record is not None:
        fields.update(
            base_model=record.base_model, rank=record.rank, alpha=record.alpha, target_modules=record.target_modules,
            size_bytes=record.size_bytes, created_at=record.created_at, source_media_id=record.source_media_id,
            final_loss=record.final_loss, training_json=json.dumps(record.training, sort_keys=True), origin=record.origin,
        )  # fmt: skip
    return pb.AdapterInfo(**fields)


def stored_adapter_info(record: AdapterRecord, state: AdapterState = AdapterState.READY) -> pb.AdapterInfo:
    return adapter_info(AdapterView(record.name, record, AdapterStatus(state)))


def adapter_change(change: AdapterChange, record: AdapterRecord) -> pb.AdapterChange:
    return pb.AdapterChange(
        action=ADAPTER_ACTIONS[change.action], previous_state=ADAPTER_STATES[change.previous],
        adapter=adapter_info(AdapterView(change.name, record, change.status)), evicted=list(change.evicted),
    )  # fmt: skip


def target_state(to: int, default: AdapterState) -> AdapterState:
    """The state a Load/Unload request's ``to`` asks for: ``default`` (also when unset) or CACHED."""
    default_wire = ADAPTER_STATES[default]
    targets = {pb.ADAPTER_STATE_UNSPECIFIED: default, default_wire: default, pb.ADAPTER_STATE_CACHED: AdapterState.CACHED}
    if to not in targets:
        raise InvalidInput("to", pb.AdapterState.Name(to) if to in ADAPTER_STATES.values() else to,
                           f"must be {pb.AdapterState.Name(default_wire)} or ADAPTER_STATE_CACHED")  # fmt: skip
    return targets[to]


def export_layout(value: int) -> str:
    layout = _choice(EXPORT_LAYOUTS, value, "format", "ExportFormat (DIFFUSERS, COMFYUI)")
    return layout or "diffusers"


# --- the server ----------------------------------------------------------------------------------


def server_info(config: ServerConfig, queue_length: int, engine: EngineInfo | None, load_error: str | None,
                engine_trackers=None, open_streams: int = 0) -> pb.ServerInfo:  # fmt: skip
    """What the server is: its limits always, the loaded engine's details once it is ready."""
    info = pb.ServerInfo(
        version=framecast.__version__, max_upload_bytes=config.max_upload_bytes, max_queue=config.max_queue,
        queue_length=queue_length, ready=engine is not None, max_frames=config.engine.max_frames,
        max_pixels=config.engine.max_pixels, model_dir=config.engine.model_dir,
        window_frames=config.engine.window_frames, load_error=load_error or "",
        max_duration_s=config.max_duration_s, max_source_pixels=config.max_source_pixels,
        interpolation=field_default(OutputOptions, "interpolation").value,
        max_streams=config.max_streams, open_streams=open_streams, unary_workers=config.max_workers,
        max_message_bytes=MAX_MESSAGE_BYTES,
    )  # fmt: skip
    info.trackers.extend(kind.value for kind in (engine_trackers or ()))
    if engine is not None:
        info.MergeFrom(pb.ServerInfo(**dataclasses.asdict(engine)))
    return info


def hide_paths(info: pb.ServerInfo, config: ServerConfig) -> None:
    """Leave no absolute server path in ``info``, for a caller that did not authenticate: the model
    directory by its name only, the model and data directories in a load error by their names."""
    info.model_dir = Path(info.model_dir).name
    info.load_error = without_paths(info.load_error, config)


def without_paths(text: str, config: ServerConfig) -> str:
    """``text`` with the model and data directories named by their names, not their paths."""
    for directory in sorted((config.engine.model_dir, config.data_dir), key=len, reverse=True):
        text = text.replace(str(Path(directory).resolve()), Path(directory).name)
        text = text.replace(str(directory), Path(directory).name)
    return text


def notice(notice) -> pb.Notice:
    return pb.Notice(code=notice.code, message=notice.message, frames=list(notice.frames))


def plan(engine: Engine, kind: str, clip, prepared, problems: Problems) -> pb.PlanResponse:
    """A Plan reply: the shot's grid and windows (what could be planned), the memory and time the
    job needs, and every problem."""
    reply = pb.PlanResponse(ok=not problems.found and prepared is not None)
    reply.problems.extend(pb.Problem(field=p.field, message=str(p)) for p in problems.found)
    shot = getattr(clip, "shot", None)
    if shot is not None:
        reply.notices.extend(notice(n) for n in shot.notices)
        grid, info = shot.grid, shot.source.info
        first, last = shot.range_indices
        times = info.frame_times
        reply.MergeFrom(pb.PlanResponse(
            width=grid.width, height=grid.height, fps=grid.fps, num_frames=grid.frames, padded_frames=shot.padded_frames,
            output_frames=last - first + 1,
            output_duration_s=(times[last] - times[first] + 1 / info.fps) if times else (last - first + 1) / grid.fps,
        ))  # fmt: skip
    if prepared is not None:
        windows = prepared.plan
        reply.windows.extend(pb.Window(start=start, frames=length) for start, length in zip(windows.starts, windows.lengths))
        training = kind == "train"
        if training:
            settings = prepared.job.settings
            steps = settings.motion_steps(windows.count) + (settings.appearance_steps if prepared.clip.has_references else 0)
            work = steps
        else:
            steps = prepared.job.steps * windows.count
            work = Sampler.of(prepared.job).passes() * windows.count  # the speed of propagations is per transformer pass
        reply.steps = steps
        reply.estimated_device_bytes = engine.memory_plan(
            engine.quantize, engine.offload, max(windows.lengths), prepared.clip.height, prepared.clip.width, training,
            prepared.job.settings.rank if training else 16,
        ).peak_bytes  # fmt: skip
        reply.estimated_seconds = engine.speed.estimate(kind, work, max(windows.lengths), prepared.clip.height,
                                                        prepared.clip.width)  # fmt: skip
    return reply
