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
from framecast.common.media import encode_png
from framecast.common.requests import BlendRamp, MaskMode, StepCache, field_default
from framecast.engine.adapters.cache import AdapterChange, AdapterState, AdapterStatus
from framecast.engine.adapters.manager import AdapterView
from framecast.engine.adapters.store import AdapterRecord
from framecast.engine.config import EngineInfo
from framecast.engine.errors import InvalidInput, Problems
from framecast.engine.footage.grid import Fit
from framecast.engine.footage.output import Container, Encoding, Interpolation, OutputOptions
from framecast.engine.footage.shots import Shot, ShotOptions
from framecast.engine.jobs.events import Event, FrameReady, Noticed, Progressed, RegionTracked
from framecast.engine.jobs.layer import PlanReport, PropagateOutcome
from framecast.engine.jobs.specs import PropagateSpec, ReferenceSpec, RegionSpec, TrackSpec, TrainSpec
from framecast.engine.masks.trackers import Box, Point, TrackerKind
from framecast.engine.quality.fidelity import Fidelity, Verdict
from framecast.server.config import MAX_MESSAGE_BYTES, ServerConfig
from framecast.server.media_store import MediaInfo
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
VERDICTS = {
    Verdict.HELD: pb.EDIT_VERDICT_HELD,
    Verdict.FADED: pb.EDIT_VERDICT_FADED,
    Verdict.GARBLED: pb.EDIT_VERDICT_GARBLED,
    Verdict.UNMEASURED: pb.EDIT_VERDICT_UNMEASURED,
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


def region(request, problems: Problems) -> RegionSpec | None:
    """A request's ``mask_prompt``: the region on the first frame the server tracks; None without one."""
    if not request.HasField("mask_prompt"):
        return None
    prompt = request.mask_prompt
    box = Box(prompt.box.x, prompt.box.y, prompt.box.width, prompt.box.height) if prompt.HasField("box") else None
    tracker = None
    with problems.check():
        tracker = _choice(TRACKERS, prompt.tracker, "mask_prompt.tracker", "Tracker")
    points = tuple(Point(p.x, p.y, p.negative) for p in prompt.points)
    return RegionSpec(box, points, prompt.frame0_mask_id, tracker)


def train_spec(request: pb.TrainRequest, problems: Problems) -> TrainSpec:
    """The job layer's training of a request: only the fields it set (the rest take the preset's,
    the model's, the method's); wire enums it cannot read go to ``problems``."""
    weights = _present(request, "loss_weights")
    settings = _set(
        rank=request.rank or None,
        steps=request.steps or None,
        appearance_steps=request.appearance_steps or None,
        # a float32 on the wire: 1e-4 arrives as 9.99999974e-05
        learning_rate=float(f"{request.learning_rate:.6g}") if request.learning_rate else None,
        w_edit=None if weights is None else weights.edit,
        w_keep=None if weights is None else weights.keep,
        seed=request.seed or None,
        gradient_checkpointing=False if request.gradient_checkpointing_off else None,
        colour_variants=_present(request, "colour_variants"),
        steps_in_all=request.steps_in_all or None,
    )  # fmt: skip
    mask_mode = None
    with problems.check():
        mask_mode = _choice(MASK_MODES, request.mask_mode, "mask_mode", "MaskMode")
    references = []
    for ref in request.references:
        timed = ref.HasField("time_s")
        references.append(ReferenceSpec(ref.image_id, None if timed else ref.frame_index, ref.time_s if timed else None))
    shot = ShotOptions()
    with problems.check():
        shot = shot_options(request)
    return TrainSpec(
        adapter=request.adapter, source_id=request.source_id, mask_id=request.mask_id, region=region(request, problems),
        prompt=request.prompt, references=tuple(references), shot=shot,
        settings=settings, preset=request.preset,
        options=_set(mask_mode=mask_mode, dilate_px=request.dilate_px or None, window_frames=request.window_frames or None,
                     overlap_frames=_present(request, "overlap_frames")),
        auto_steps=request.auto_steps, edited_first_frame_id=request.edited_first_frame_id,
        preview_prompt=request.preview_prompt, fidelity_threshold=_present(request, "fidelity_threshold"),
    )  # fmt: skip


def track_spec(request: pb.TrackRequest, problems: Problems) -> TrackSpec:
    """The job layer's tracking of a request: its source, region and shot."""
    shot = ShotOptions()
    with problems.check():
        shot = shot_options(request)
    return TrackSpec(source_id=request.source_id, region=region(request, problems), shot=shot)


def propagate_spec(request: pb.PropagateRequest, problems: Problems) -> PropagateSpec:
    """The job layer's propagation of a request (as ``train_spec``), with how its output is written."""
    choices = {}
    for name, table, kind in (("mask_mode", MASK_MODES, "MaskMode"), ("blend_ramp", BLEND_RAMPS, "BlendRamp"),
                              ("step_cache", STEP_CACHES, "StepCache")):  # fmt: skip
        with problems.check():
            choices[name] = _choice(table, getattr(request, name), name, kind)
    shot = ShotOptions()
    with problems.check():
        shot = shot_options(request)
    return PropagateSpec(
        adapter=request.adapter, source_id=request.source_id, mask_id=request.mask_id, region=region(request, problems),
        edited_first_frame_id=request.edited_first_frame_id, prompt=request.prompt, shot=shot,
        settings=_set(
            negative_prompt=request.negative_prompt or None,
            steps=request.steps or None,
            guidance_scale=_present(request, "guidance_scale"),
            seed=request.seed or None,
            composite=request.composite or None,
            feather_px=_present(request, "feather_px"),
            dilate_px=request.dilate_px or None,
            window_frames=request.window_frames or None,
            overlap_frames=_present(request, "overlap_frames"),
            adapter_strength=_present(request, "adapter_strength"),
            guidance_steps=request.guidance_steps or None,
            cache_threshold=_present(request, "cache_threshold"),
            cache_interval=_present(request, "cache_interval"),
            accelerator_strength=_present(request, "accelerator_strength"),
            shift=_present(request, "shift"),
            **choices,
        ),
        output=output_options(request, problems), preset=request.preset,
        fidelity_threshold=_present(request, "fidelity_threshold"), accelerator=_present(request, "accelerator"),
    )  # fmt: skip


def output_options(request: pb.PropagateRequest, problems: Problems) -> dict:
    """How a propagation's result is written, the fields the request set: encoding, quality,
    composite, feather, interpolation, container."""
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
    return _set(
        encoding=ENCODINGS[encoding], quality=_present(request, "quality"), composite=request.composite,
        feather_px=_present(request, "feather_px"), interpolation=interpolation, container=container,
    )  # fmt: skip


def event(happened: Event) -> dict:
    """A job layer's event as the ``JobEvent`` field it fills (a frame as PNG)."""
    if isinstance(happened, Progressed):
        return {"progress": pb.Progress(phase=happened.phase, step=happened.step, total=happened.total, loss=happened.loss,
                                        elapsed_s=happened.elapsed_s, eta_s=happened.eta_s)}  # fmt: skip
    if isinstance(happened, FrameReady):
        return {"frame": pb.Frame(index=happened.index, png=encode_png(happened.frame), time_s=happened.time_s)}
    if isinstance(happened, Noticed):
        return {"notice": pb.Notice(code=happened.code, message=happened.message, frames=list(happened.frames))}
    if isinstance(happened, RegionTracked):
        return {"tracked": pb.TrackedMask(mask=media_ref(happened.mask), lost_frames=list(happened.lost_frames),
                                          tracker=happened.tracker)}  # fmt: skip
    raise TypeError(f"not a job event: {happened!r}")


def fidelity(measured: Fidelity) -> pb.Fidelity:
    frames = measured.frames
    return pb.Fidelity(
        curve=[f.fidelity for f in frames], source_share=[f.source_share for f in frames],
        garbled_share=[f.garbled_share for f in frames], verdict=VERDICTS[measured.verdict],
        threshold=measured.threshold, mean=measured.mean, worst=measured.worst, worst_frame=measured.worst_frame,
        first_below=measured.first_below, summary=measured.describe(), edit_psnr_db=measured.edit_psnr_db,
        edit_psnr=[f.edit_psnr_db for f in frames],
    )  # fmt: skip


def propagate_result(outcome: PropagateOutcome, shot: Shot, queued_s: float = 0.0) -> pb.PropagateResult:
    """A propagation's result: the stored video, the grid, the measures of the delivered file and
    the edit's fidelity; ``elapsed_s`` the generation's seconds, ``job_s`` the whole run's (reading,
    writing and measuring too), ``queued_s`` its wait before."""
    grid, result, measured, stored = shot.grid, outcome.result, outcome.measures, outcome.stored
    return pb.PropagateResult(
        video=media_ref(stored), working_width=grid.width, working_height=grid.height, working_frames=grid.frames,
        working_fps=grid.fps,
        metrics=pb.QualityMetrics(
            background_psnr_db=measured.background_psnr_db, background_psnr_worst_db=measured.background_psnr_worst_db,
            background_psnr_worst_frame=max(0, measured.background_psnr_worst_frame),
            background_ssim=measured.background_ssim, background_ssim_worst=measured.background_ssim_worst,
            ssim_frames=measured.ssim_frames, region_share=measured.region_share,
            region_share_max=measured.region_share_max, first_frame_psnr_inside_db=measured.first_frame_psnr_inside_db,
            first_frame_psnr_outside_db=measured.first_frame_psnr_outside_db,
            edit_outside_share=measured.edit_outside_share, seam_score=result.seam_score, windows=result.windows,
            temporal_change=result.temporal_change,
            working_grid=pb.WorkingGrid(background_psnr_db=result.background_psnr, background_ssim=result.background_ssim,
                                        first_frame_psnr_db=result.first_frame_psnr),
        ),  # fmt: skip
        num_frames=stored.num_frames, fidelity=fidelity(measured.fidelity),
        elapsed_s=result.elapsed_s, job_s=outcome.job_s, queued_s=queued_s,
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
            dropped=record.dropped, changed_parameters=len(record.deltas) + sum(
                not m.startswith("blocks.") for m in record.target_modules),
            sampling=pb.Sampling(**record.sampling),
        )  # fmt: skip
    return pb.AdapterInfo(**fields)


def import_options(header: pb.ImportAdapterHeader) -> dict:
    """What an ImportAdapter header asks of the import besides the name: ``drop_unsupported`` and the
    accelerator's ``sampling`` (the fields set; None when none is)."""
    sampling = {name: _present(header.sampling, name) for name in ("steps", "guidance_scale", "shift", "accelerator_strength")}
    # float32 on the wire: 0.7 arrives as 0.699999988
    sampling = {name: value if name == "steps" else float(f"{value:.6g}") for name, value in sampling.items() if value is not None}
    return {"drop_unsupported": header.drop_unsupported, "sampling": sampling or None}


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
        max_message_bytes=MAX_MESSAGE_BYTES, accelerator=config.engine.accelerator,
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


def plan(report: PlanReport, source: MediaInfo | None) -> pb.PlanResponse:
    """A Plan reply: the shot's grid and windows (what could be planned), the memory and time the
    prepared job needs (its own estimate, as it would run), and every problem."""
    reply = pb.PlanResponse(ok=report.ok)
    reply.problems.extend(pb.Problem(field=p.field, message=str(p)) for p in report.problems)
    shot = report.shot
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
        if source is not None:
            reply.source.CopyFrom(media_ref(source))
    prepared = report.prepared
    if prepared is not None:
        windows, estimate = prepared.run.plan, prepared.estimate
        reply.windows.extend(pb.Window(start=start, frames=length) for start, length in zip(windows.starts, windows.lengths))
        reply.steps, reply.estimated_device_bytes = estimate.steps, estimate.device_bytes
        reply.estimated_seconds = estimate.seconds
        reply.steps_min, reply.estimated_seconds_min = estimate.steps_min, estimate.seconds_min
    return reply
