"""Every conversion between protobuf messages and the engine's values, in one place.

Requests become engine requests with only the fields they set: a field left unset (0, empty,
or an ``optional`` field not present) takes the engine dataclass's default, which is written
nowhere else. Wire enums become the engine's ``str`` Enums here, and an unknown number is
refused naming the field.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

import framecast
from framecast.engine.adapter_cache import AdapterChange, AdapterState, AdapterStatus
from framecast.engine.adapter_manager import AdapterView
from framecast.engine.adapter_store import AdapterRecord
from framecast.engine.config import EngineInfo
from framecast.engine.errors import InvalidInput
from framecast.engine.media import mask_from_frames
from framecast.engine.requests import BlendRamp, MaskMode, PropagateJob, PropagateResult, TrainJob, TrainSettings
from framecast.engine.training import Progress
from framecast.server.config import ServerConfig
from framecast.server.media_store import MediaInfo, MediaStore
from framecast.v1 import framecast_pb2 as pb

MASK_MODES = {pb.MASK_MODE_EXACT: MaskMode.EXACT, pb.MASK_MODE_BBOX: MaskMode.BBOX, pb.MASK_MODE_DILATE: MaskMode.DILATE}
BLEND_RAMPS = {pb.BLEND_RAMP_LINEAR: BlendRamp.LINEAR, pb.BLEND_RAMP_COSINE: BlendRamp.COSINE}
OUTPUT_ENCODINGS = (pb.OUTPUT_ENCODING_MP4_H264, pb.OUTPUT_ENCODING_MP4_H264_LOSSLESS, pb.OUTPUT_ENCODING_PNG_SEQUENCE)
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
    return pb.MediaRef(
        id=info.id, kind=MEDIA_KINDS[info.kind], num_frames=info.num_frames, width=info.width,
        height=info.height, fps=info.fps, size_bytes=info.size_bytes, filename=info.filename,
        created_at=info.created_at,
    )  # fmt: skip


def _mask(media: MediaStore, mask_id: str) -> np.ndarray:
    return mask_from_frames(media.frames(mask_id, "mask_id"))


# --- jobs ----------------------------------------------------------------------------------------


def train_job(request: pb.TrainRequest, media: MediaStore) -> TrainJob:
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
    ))  # fmt: skip
    return TrainJob(
        adapter=request.adapter,
        source=media.frames(request.source_id, "source_id"),
        mask=_mask(media, request.mask_id),
        prompt=request.prompt,
        settings=settings,
        references=[(ref.frame_index, media.image(ref.image_id, "references.image_id")) for ref in request.references],
        source_media_id=request.source_id,
        **_set(
            mask_mode=_choice(MASK_MODES, request.mask_mode, "mask_mode", "MaskMode"),
            dilate_px=request.dilate_px,
            window_frames=request.window_frames,
            overlap_frames=_present(request, "overlap_frames"),
        ),
    )


def propagate_job(request: pb.PropagateRequest, media: MediaStore) -> PropagateJob:
    return PropagateJob(
        adapter=request.adapter,
        source=media.frames(request.source_id, "source_id"),
        mask=_mask(media, request.mask_id),
        edited_first_frame=media.image(request.edited_first_frame_id, "edited_first_frame_id"),
        prompt=request.prompt,
        **_set(
            negative_prompt=request.negative_prompt,
            steps=request.steps or None,
            guidance_scale=_present(request, "guidance_scale"),
            seed=request.seed,
            composite=request.composite,
            feather_px=_present(request, "feather_px"),
            mask_mode=_choice(MASK_MODES, request.mask_mode, "mask_mode", "MaskMode"),
            dilate_px=request.dilate_px,
            window_frames=request.window_frames,
            overlap_frames=_present(request, "overlap_frames"),
            blend_ramp=_choice(BLEND_RAMPS, request.blend_ramp, "blend_ramp", "BlendRamp"),
            adapter_strength=_present(request, "adapter_strength"),
        ),
    )


def output_encoding(request: pb.PropagateRequest) -> int:
    encoding = request.output_encoding or pb.OUTPUT_ENCODING_MP4_H264
    if encoding not in OUTPUT_ENCODINGS:
        raise InvalidInput("output_encoding", encoding, "is not a known OutputEncoding")
    return encoding


def training_progress(progress: Progress) -> pb.Progress:
    return pb.Progress(phase=progress.phase, step=progress.step, total=progress.total, loss=progress.loss,
                       elapsed_s=progress.elapsed_s, eta_s=progress.eta_s)  # fmt: skip


def propagate_result(result: PropagateResult, stored: MediaInfo) -> pb.PropagateResult:
    return pb.PropagateResult(
        video=media_ref(stored),
        metrics=pb.QualityMetrics(
            background_psnr_db=result.background_psnr, first_frame_psnr_db=result.first_frame_psnr,
            seam_score=result.seam_score, windows=result.windows, background_ssim=result.background_ssim,
            temporal_change=result.temporal_change,
        ),  # fmt: skip
        num_frames=len(result.frames),
        elapsed_s=result.elapsed_s,
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


def server_info(config: ServerConfig, queue_length: int, engine: EngineInfo | None, load_error: str | None) -> pb.ServerInfo:
    """What the server is: its limits always, the loaded engine's details once it is ready."""
    info = pb.ServerInfo(
        version=framecast.__version__, max_upload_bytes=config.max_upload_bytes, max_queue=config.max_queue,
        queue_length=queue_length, ready=engine is not None, max_frames=config.engine.max_frames,
        max_pixels=config.engine.max_pixels, model_dir=config.engine.model_dir,
        window_frames=config.engine.window_frames, load_error=load_error or "",
    )  # fmt: skip
    if engine is not None:
        info.MergeFrom(pb.ServerInfo(**dataclasses.asdict(engine)))
    return info
