from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MediaKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEDIA_KIND_UNSPECIFIED: _ClassVar[MediaKind]
    MEDIA_KIND_VIDEO: _ClassVar[MediaKind]
    MEDIA_KIND_IMAGE: _ClassVar[MediaKind]
    MEDIA_KIND_IMAGE_SEQUENCE: _ClassVar[MediaKind]

class MaskMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MASK_MODE_UNSPECIFIED: _ClassVar[MaskMode]
    MASK_MODE_EXACT: _ClassVar[MaskMode]
    MASK_MODE_BBOX: _ClassVar[MaskMode]
    MASK_MODE_DILATE: _ClassVar[MaskMode]

class FitMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FIT_MODE_UNSPECIFIED: _ClassVar[FitMode]
    FIT_MODE_FIT: _ClassVar[FitMode]
    FIT_MODE_CROP: _ClassVar[FitMode]
    FIT_MODE_PAD: _ClassVar[FitMode]

class Tracker(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRACKER_UNSPECIFIED: _ClassVar[Tracker]
    TRACKER_CSRT: _ClassVar[Tracker]
    TRACKER_FLOW: _ClassVar[Tracker]
    TRACKER_SAM2: _ClassVar[Tracker]

class BlendRamp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BLEND_RAMP_UNSPECIFIED: _ClassVar[BlendRamp]
    BLEND_RAMP_LINEAR: _ClassVar[BlendRamp]
    BLEND_RAMP_COSINE: _ClassVar[BlendRamp]

class OutputEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_ENCODING_UNSPECIFIED: _ClassVar[OutputEncoding]
    OUTPUT_ENCODING_MP4_H264: _ClassVar[OutputEncoding]
    OUTPUT_ENCODING_MP4_H264_LOSSLESS: _ClassVar[OutputEncoding]
    OUTPUT_ENCODING_PNG_SEQUENCE: _ClassVar[OutputEncoding]

class OutputContainer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_CONTAINER_UNSPECIFIED: _ClassVar[OutputContainer]
    OUTPUT_CONTAINER_MP4: _ClassVar[OutputContainer]
    OUTPUT_CONTAINER_MATROSKA: _ClassVar[OutputContainer]

class StepCache(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_CACHE_UNSPECIFIED: _ClassVar[StepCache]
    STEP_CACHE_NONE: _ClassVar[StepCache]
    STEP_CACHE_FIRST_BLOCK: _ClassVar[StepCache]
    STEP_CACHE_TAYLORSEER: _ClassVar[StepCache]

class Interpolation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTERPOLATION_UNSPECIFIED: _ClassVar[Interpolation]
    INTERPOLATION_NEAREST: _ClassVar[Interpolation]
    INTERPOLATION_BLEND: _ClassVar[Interpolation]
    INTERPOLATION_FLOW: _ClassVar[Interpolation]

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_KIND_UNSPECIFIED: _ClassVar[JobKind]
    JOB_KIND_TRAIN: _ClassVar[JobKind]
    JOB_KIND_PROPAGATE: _ClassVar[JobKind]
    JOB_KIND_TRACK: _ClassVar[JobKind]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class EditVerdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EDIT_VERDICT_UNSPECIFIED: _ClassVar[EditVerdict]
    EDIT_VERDICT_HELD: _ClassVar[EditVerdict]
    EDIT_VERDICT_FADED: _ClassVar[EditVerdict]
    EDIT_VERDICT_GARBLED: _ClassVar[EditVerdict]
    EDIT_VERDICT_UNMEASURED: _ClassVar[EditVerdict]

class AdapterState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADAPTER_STATE_UNSPECIFIED: _ClassVar[AdapterState]
    ADAPTER_STATE_TRAINING: _ClassVar[AdapterState]
    ADAPTER_STATE_READY: _ClassVar[AdapterState]
    ADAPTER_STATE_CACHED: _ClassVar[AdapterState]
    ADAPTER_STATE_LOADED: _ClassVar[AdapterState]
    ADAPTER_STATE_FAILED: _ClassVar[AdapterState]

class AdapterAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADAPTER_ACTION_UNSPECIFIED: _ClassVar[AdapterAction]
    ADAPTER_ACTION_NONE: _ClassVar[AdapterAction]
    ADAPTER_ACTION_LOADED: _ClassVar[AdapterAction]
    ADAPTER_ACTION_CACHED: _ClassVar[AdapterAction]
    ADAPTER_ACTION_UNLOADED: _ClassVar[AdapterAction]
    ADAPTER_ACTION_PINNED: _ClassVar[AdapterAction]
    ADAPTER_ACTION_UNPINNED: _ClassVar[AdapterAction]

class ExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_FORMAT_UNSPECIFIED: _ClassVar[ExportFormat]
    EXPORT_FORMAT_DIFFUSERS: _ClassVar[ExportFormat]
    EXPORT_FORMAT_COMFYUI: _ClassVar[ExportFormat]
MEDIA_KIND_UNSPECIFIED: MediaKind
MEDIA_KIND_VIDEO: MediaKind
MEDIA_KIND_IMAGE: MediaKind
MEDIA_KIND_IMAGE_SEQUENCE: MediaKind
MASK_MODE_UNSPECIFIED: MaskMode
MASK_MODE_EXACT: MaskMode
MASK_MODE_BBOX: MaskMode
MASK_MODE_DILATE: MaskMode
FIT_MODE_UNSPECIFIED: FitMode
FIT_MODE_FIT: FitMode
FIT_MODE_CROP: FitMode
FIT_MODE_PAD: FitMode
TRACKER_UNSPECIFIED: Tracker
TRACKER_CSRT: Tracker
TRACKER_FLOW: Tracker
TRACKER_SAM2: Tracker
BLEND_RAMP_UNSPECIFIED: BlendRamp
BLEND_RAMP_LINEAR: BlendRamp
BLEND_RAMP_COSINE: BlendRamp
OUTPUT_ENCODING_UNSPECIFIED: OutputEncoding
OUTPUT_ENCODING_MP4_H264: OutputEncoding
OUTPUT_ENCODING_MP4_H264_LOSSLESS: OutputEncoding
OUTPUT_ENCODING_PNG_SEQUENCE: OutputEncoding
OUTPUT_CONTAINER_UNSPECIFIED: OutputContainer
OUTPUT_CONTAINER_MP4: OutputContainer
OUTPUT_CONTAINER_MATROSKA: OutputContainer
STEP_CACHE_UNSPECIFIED: StepCache
STEP_CACHE_NONE: StepCache
STEP_CACHE_FIRST_BLOCK: StepCache
STEP_CACHE_TAYLORSEER: StepCache
INTERPOLATION_UNSPECIFIED: Interpolation
INTERPOLATION_NEAREST: Interpolation
INTERPOLATION_BLEND: Interpolation
INTERPOLATION_FLOW: Interpolation
JOB_KIND_UNSPECIFIED: JobKind
JOB_KIND_TRAIN: JobKind
JOB_KIND_PROPAGATE: JobKind
JOB_KIND_TRACK: JobKind
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
EDIT_VERDICT_UNSPECIFIED: EditVerdict
EDIT_VERDICT_HELD: EditVerdict
EDIT_VERDICT_FADED: EditVerdict
EDIT_VERDICT_GARBLED: EditVerdict
EDIT_VERDICT_UNMEASURED: EditVerdict
ADAPTER_STATE_UNSPECIFIED: AdapterState
ADAPTER_STATE_TRAINING: AdapterState
ADAPTER_STATE_READY: AdapterState
ADAPTER_STATE_CACHED: AdapterState
ADAPTER_STATE_LOADED: AdapterState
ADAPTER_STATE_FAILED: AdapterState
ADAPTER_ACTION_UNSPECIFIED: AdapterAction
ADAPTER_ACTION_NONE: AdapterAction
ADAPTER_ACTION_LOADED: AdapterAction
ADAPTER_ACTION_CACHED: AdapterAction
ADAPTER_ACTION_UNLOADED: AdapterAction
ADAPTER_ACTION_PINNED: AdapterAction
ADAPTER_ACTION_UNPINNED: AdapterAction
EXPORT_FORMAT_UNSPECIFIED: ExportFormat
EXPORT_FORMAT_DIFFUSERS: ExportFormat
EXPORT_FORMAT_COMFYUI: ExportFormat

class MediaRef(_message.Message):
    __slots__ = ("id", "kind", "num_frames", "width", "height", "fps", "size_bytes", "filename", "created_at", "duration_s", "has_audio", "rotation", "codec")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    HAS_AUDIO_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: MediaKind
    num_frames: int
    width: int
    height: int
    fps: float
    size_bytes: int
    filename: str
    created_at: float
    duration_s: float
    has_audio: bool
    rotation: int
    codec: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[MediaKind, str]] = ..., num_frames: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[float] = ..., size_bytes: _Optional[int] = ..., filename: _Optional[str] = ..., created_at: _Optional[float] = ..., duration_s: _Optional[float] = ..., has_audio: _Optional[bool] = ..., rotation: _Optional[int] = ..., codec: _Optional[str] = ...) -> None: ...

class ListMediaRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListMediaResponse(_message.Message):
    __slots__ = ("media", "total_bytes")
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    media: _containers.RepeatedCompositeFieldContainer[MediaRef]
    total_bytes: int
    def __init__(self, media: _Optional[_Iterable[_Union[MediaRef, _Mapping]]] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class DeleteMediaResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class MediaChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: MediaRef
    data: bytes
    def __init__(self, header: _Optional[_Union[MediaRef, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class LossWeights(_message.Message):
    __slots__ = ("edit", "keep")
    EDIT_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    edit: float
    keep: float
    def __init__(self, edit: _Optional[float] = ..., keep: _Optional[float] = ...) -> None: ...

class ReferenceFrame(_message.Message):
    __slots__ = ("frame_index", "image_id", "time_s")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    image_id: str
    time_s: float
    def __init__(self, frame_index: _Optional[int] = ..., image_id: _Optional[str] = ..., time_s: _Optional[float] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    width: float
    height: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., width: _Optional[float] = ..., height: _Optional[float] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y", "negative")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    negative: bool
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., negative: _Optional[bool] = ...) -> None: ...

class MaskPrompt(_message.Message):
    __slots__ = ("box", "points", "frame0_mask_id", "tracker")
    BOX_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    FRAME0_MASK_ID_FIELD_NUMBER: _ClassVar[int]
    TRACKER_FIELD_NUMBER: _ClassVar[int]
    box: Box
    points: _containers.RepeatedCompositeFieldContainer[Point]
    frame0_mask_id: str
    tracker: Tracker
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., frame0_mask_id: _Optional[str] = ..., tracker: _Optional[_Union[Tracker, str]] = ...) -> None: ...

class ShotOptions(_message.Message):
    __slots__ = ("start_s", "end_s", "fps", "source_fps", "fit")
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FPS_FIELD_NUMBER: _ClassVar[int]
    FIT_FIELD_NUMBER: _ClassVar[int]
    start_s: float
    end_s: float
    fps: float
    source_fps: bool
    fit: FitMode
    def __init__(self, start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., fps: _Optional[float] = ..., source_fps: _Optional[bool] = ..., fit: _Optional[_Union[FitMode, str]] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("adapter", "source_id", "mask_id", "references", "prompt", "rank", "steps", "appearance_steps", "learning_rate", "mask_mode", "dilate_px", "loss_weights", "seed", "gradient_checkpointing_off", "window_frames", "overlap_frames", "colour_variants", "shot", "mask_prompt", "steps_in_all", "preset", "auto_steps", "edited_first_frame_id", "preview_prompt", "fidelity_threshold")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    MASK_ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    APPEARANCE_STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MASK_MODE_FIELD_NUMBER: _ClassVar[int]
    DILATE_PX_FIELD_NUMBER: _ClassVar[int]
    LOSS_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_OFF_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FRAMES_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FRAMES_FIELD_NUMBER: _ClassVar[int]
    COLOUR_VARIANTS_FIELD_NUMBER: _ClassVar[int]
    SHOT_FIELD_NUMBER: _ClassVar[int]
    MASK_PROMPT_FIELD_NUMBER: _ClassVar[int]
    STEPS_IN_ALL_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    AUTO_STEPS_FIELD_NUMBER: _ClassVar[int]
    EDITED_FIRST_FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_PROMPT_FIELD_NUMBER: _ClassVar[int]
    FIDELITY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    adapter: str
    source_id: str
    mask_id: str
    references: _containers.RepeatedCompositeFieldContainer[ReferenceFrame]
    prompt: str
    rank: int
    steps: int
    appearance_steps: int
    learning_rate: float
    mask_mode: MaskMode
    dilate_px: int
    loss_weights: LossWeights
    seed: int
    gradient_checkpointing_off: bool
    window_frames: int
    overlap_frames: int
    colour_variants: int
    shot: ShotOptions
    mask_prompt: MaskPrompt
    steps_in_all: bool
    preset: str
    auto_steps: bool
    edited_first_frame_id: str
    preview_prompt: str
    fidelity_threshold: float
    def __init__(self, adapter: _Optional[str] = ..., source_id: _Optional[str] = ..., mask_id: _Optional[str] = ..., references: _Optional[_Iterable[_Union[ReferenceFrame, _Mapping]]] = ..., prompt: _Optional[str] = ..., rank: _Optional[int] = ..., steps: _Optional[int] = ..., appearance_steps: _Optional[int] = ..., learning_rate: _Optional[float] = ..., mask_mode: _Optional[_Union[MaskMode, str]] = ..., dilate_px: _Optional[int] = ..., loss_weights: _Optional[_Union[LossWeights, _Mapping]] = ..., seed: _Optional[int] = ..., gradient_checkpointing_off: _Optional[bool] = ..., window_frames: _Optional[int] = ..., overlap_frames: _Optional[int] = ..., colour_variants: _Optional[int] = ..., shot: _Optional[_Union[ShotOptions, _Mapping]] = ..., mask_prompt: _Optional[_Union[MaskPrompt, _Mapping]] = ..., steps_in_all: _Optional[bool] = ..., preset: _Optional[str] = ..., auto_steps: _Optional[bool] = ..., edited_first_frame_id: _Optional[str] = ..., preview_prompt: _Optional[str] = ..., fidelity_threshold: _Optional[float] = ...) -> None: ...

class PropagateRequest(_message.Message):
    __slots__ = ("adapter", "source_id", "mask_id", "edited_first_frame_id", "prompt", "negative_prompt", "steps", "guidance_scale", "seed", "composite", "feather_px", "mask_mode", "dilate_px", "output_encoding", "window_frames", "overlap_frames", "blend_ramp", "adapter_strength", "shot", "quality", "interpolation", "mask_prompt", "guidance_steps", "step_cache", "cache_threshold", "cache_interval", "container", "preset", "fidelity_threshold", "accelerator", "accelerator_strength", "shift")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    MASK_ID_FIELD_NUMBER: _ClassVar[int]
    EDITED_FIRST_FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    COMPOSITE_FIELD_NUMBER: _ClassVar[int]
    FEATHER_PX_FIELD_NUMBER: _ClassVar[int]
    MASK_MODE_FIELD_NUMBER: _ClassVar[int]
    DILATE_PX_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FRAMES_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FRAMES_FIELD_NUMBER: _ClassVar[int]
    BLEND_RAMP_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    SHOT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    INTERPOLATION_FIELD_NUMBER: _ClassVar[int]
    MASK_PROMPT_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_CACHE_FIELD_NUMBER: _ClassVar[int]
    CACHE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CACHE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    FIDELITY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    SHIFT_FIELD_NUMBER: _ClassVar[int]
    adapter: str
    source_id: str
    mask_id: str
    edited_first_frame_id: str
    prompt: str
    negative_prompt: str
    steps: int
    guidance_scale: float
    seed: int
    composite: bool
    feather_px: int
    mask_mode: MaskMode
    dilate_px: int
    output_encoding: OutputEncoding
    window_frames: int
    overlap_frames: int
    blend_ramp: BlendRamp
    adapter_strength: float
    shot: ShotOptions
    quality: int
    interpolation: Interpolation
    mask_prompt: MaskPrompt
    guidance_steps: int
    step_cache: StepCache
    cache_threshold: float
    cache_interval: int
    container: OutputContainer
    preset: str
    fidelity_threshold: float
    accelerator: str
    accelerator_strength: float
    shift: float
    def __init__(self, adapter: _Optional[str] = ..., source_id: _Optional[str] = ..., mask_id: _Optional[str] = ..., edited_first_frame_id: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., seed: _Optional[int] = ..., composite: _Optional[bool] = ..., feather_px: _Optional[int] = ..., mask_mode: _Optional[_Union[MaskMode, str]] = ..., dilate_px: _Optional[int] = ..., output_encoding: _Optional[_Union[OutputEncoding, str]] = ..., window_frames: _Optional[int] = ..., overlap_frames: _Optional[int] = ..., blend_ramp: _Optional[_Union[BlendRamp, str]] = ..., adapter_strength: _Optional[float] = ..., shot: _Optional[_Union[ShotOptions, _Mapping]] = ..., quality: _Optional[int] = ..., interpolation: _Optional[_Union[Interpolation, str]] = ..., mask_prompt: _Optional[_Union[MaskPrompt, _Mapping]] = ..., guidance_steps: _Optional[int] = ..., step_cache: _Optional[_Union[StepCache, str]] = ..., cache_threshold: _Optional[float] = ..., cache_interval: _Optional[int] = ..., container: _Optional[_Union[OutputContainer, str]] = ..., preset: _Optional[str] = ..., fidelity_threshold: _Optional[float] = ..., accelerator: _Optional[str] = ..., accelerator_strength: _Optional[float] = ..., shift: _Optional[float] = ...) -> None: ...

class JobRef(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Queued(_message.Message):
    __slots__ = ("position",)
    POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    def __init__(self, position: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("phase", "step", "total", "loss", "elapsed_s", "eta_s")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    phase: str
    step: int
    total: int
    loss: float
    elapsed_s: float
    eta_s: float
    def __init__(self, phase: _Optional[str] = ..., step: _Optional[int] = ..., total: _Optional[int] = ..., loss: _Optional[float] = ..., elapsed_s: _Optional[float] = ..., eta_s: _Optional[float] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("index", "png", "time_s")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    index: int
    png: bytes
    time_s: float
    def __init__(self, index: _Optional[int] = ..., png: _Optional[bytes] = ..., time_s: _Optional[float] = ...) -> None: ...

class QualityMetrics(_message.Message):
    __slots__ = ("background_psnr_db", "background_psnr_worst_db", "background_psnr_worst_frame", "background_ssim", "background_ssim_worst", "ssim_frames", "region_share", "region_share_max", "first_frame_psnr_inside_db", "first_frame_psnr_outside_db", "edit_outside_share", "seam_score", "windows", "temporal_change", "working_grid")
    BACKGROUND_PSNR_DB_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_PSNR_WORST_DB_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_PSNR_WORST_FRAME_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_SSIM_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_SSIM_WORST_FIELD_NUMBER: _ClassVar[int]
    SSIM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    REGION_SHARE_FIELD_NUMBER: _ClassVar[int]
    REGION_SHARE_MAX_FIELD_NUMBER: _ClassVar[int]
    FIRST_FRAME_PSNR_INSIDE_DB_FIELD_NUMBER: _ClassVar[int]
    FIRST_FRAME_PSNR_OUTSIDE_DB_FIELD_NUMBER: _ClassVar[int]
    EDIT_OUTSIDE_SHARE_FIELD_NUMBER: _ClassVar[int]
    SEAM_SCORE_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    TEMPORAL_CHANGE_FIELD_NUMBER: _ClassVar[int]
    WORKING_GRID_FIELD_NUMBER: _ClassVar[int]
    background_psnr_db: float
    background_psnr_worst_db: float
    background_psnr_worst_frame: int
    background_ssim: float
    background_ssim_worst: float
    ssim_frames: int
    region_share: float
    region_share_max: float
    first_frame_psnr_inside_db: float
    first_frame_psnr_outside_db: float
    edit_outside_share: float
    seam_score: float
    windows: int
    temporal_change: float
    working_grid: WorkingGrid
    def __init__(self, background_psnr_db: _Optional[float] = ..., background_psnr_worst_db: _Optional[float] = ..., background_psnr_worst_frame: _Optional[int] = ..., background_ssim: _Optional[float] = ..., background_ssim_worst: _Optional[float] = ..., ssim_frames: _Optional[int] = ..., region_share: _Optional[float] = ..., region_share_max: _Optional[float] = ..., first_frame_psnr_inside_db: _Optional[float] = ..., first_frame_psnr_outside_db: _Optional[float] = ..., edit_outside_share: _Optional[float] = ..., seam_score: _Optional[float] = ..., windows: _Optional[int] = ..., temporal_change: _Optional[float] = ..., working_grid: _Optional[_Union[WorkingGrid, _Mapping]] = ...) -> None: ...

class WorkingGrid(_message.Message):
    __slots__ = ("background_psnr_db", "background_ssim", "first_frame_psnr_db")
    BACKGROUND_PSNR_DB_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_SSIM_FIELD_NUMBER: _ClassVar[int]
    FIRST_FRAME_PSNR_DB_FIELD_NUMBER: _ClassVar[int]
    background_psnr_db: float
    background_ssim: float
    first_frame_psnr_db: float
    def __init__(self, background_psnr_db: _Optional[float] = ..., background_ssim: _Optional[float] = ..., first_frame_psnr_db: _Optional[float] = ...) -> None: ...

class Fidelity(_message.Message):
    __slots__ = ("curve", "source_share", "garbled_share", "verdict", "threshold", "mean", "worst", "worst_frame", "first_below", "summary", "edit_psnr_db", "edit_psnr")
    CURVE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SHARE_FIELD_NUMBER: _ClassVar[int]
    GARBLED_SHARE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    WORST_FIELD_NUMBER: _ClassVar[int]
    WORST_FRAME_FIELD_NUMBER: _ClassVar[int]
    FIRST_BELOW_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    EDIT_PSNR_DB_FIELD_NUMBER: _ClassVar[int]
    EDIT_PSNR_FIELD_NUMBER: _ClassVar[int]
    curve: _containers.RepeatedScalarFieldContainer[float]
    source_share: _containers.RepeatedScalarFieldContainer[float]
    garbled_share: _containers.RepeatedScalarFieldContainer[float]
    verdict: EditVerdict
    threshold: float
    mean: float
    worst: float
    worst_frame: int
    first_below: int
    summary: str
    edit_psnr_db: float
    edit_psnr: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, curve: _Optional[_Iterable[float]] = ..., source_share: _Optional[_Iterable[float]] = ..., garbled_share: _Optional[_Iterable[float]] = ..., verdict: _Optional[_Union[EditVerdict, str]] = ..., threshold: _Optional[float] = ..., mean: _Optional[float] = ..., worst: _Optional[float] = ..., worst_frame: _Optional[int] = ..., first_below: _Optional[int] = ..., summary: _Optional[str] = ..., edit_psnr_db: _Optional[float] = ..., edit_psnr: _Optional[_Iterable[float]] = ...) -> None: ...

class PropagateResult(_message.Message):
    __slots__ = ("video", "metrics", "num_frames", "elapsed_s", "working_width", "working_height", "working_frames", "working_fps", "job_s", "queued_s", "fidelity")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    WORKING_WIDTH_FIELD_NUMBER: _ClassVar[int]
    WORKING_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WORKING_FRAMES_FIELD_NUMBER: _ClassVar[int]
    WORKING_FPS_FIELD_NUMBER: _ClassVar[int]
    JOB_S_FIELD_NUMBER: _ClassVar[int]
    QUEUED_S_FIELD_NUMBER: _ClassVar[int]
    FIDELITY_FIELD_NUMBER: _ClassVar[int]
    video: MediaRef
    metrics: QualityMetrics
    num_frames: int
    elapsed_s: float
    working_width: int
    working_height: int
    working_frames: int
    working_fps: float
    job_s: float
    queued_s: float
    fidelity: Fidelity
    def __init__(self, video: _Optional[_Union[MediaRef, _Mapping]] = ..., metrics: _Optional[_Union[QualityMetrics, _Mapping]] = ..., num_frames: _Optional[int] = ..., elapsed_s: _Optional[float] = ..., working_width: _Optional[int] = ..., working_height: _Optional[int] = ..., working_frames: _Optional[int] = ..., working_fps: _Optional[float] = ..., job_s: _Optional[float] = ..., queued_s: _Optional[float] = ..., fidelity: _Optional[_Union[Fidelity, _Mapping]] = ...) -> None: ...

class Notice(_message.Message):
    __slots__ = ("code", "message", "frames")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    frames: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., frames: _Optional[_Iterable[int]] = ...) -> None: ...

class TrackedMask(_message.Message):
    __slots__ = ("mask", "lost_frames", "tracker")
    MASK_FIELD_NUMBER: _ClassVar[int]
    LOST_FRAMES_FIELD_NUMBER: _ClassVar[int]
    TRACKER_FIELD_NUMBER: _ClassVar[int]
    mask: MediaRef
    lost_frames: _containers.RepeatedScalarFieldContainer[int]
    tracker: str
    def __init__(self, mask: _Optional[_Union[MediaRef, _Mapping]] = ..., lost_frames: _Optional[_Iterable[int]] = ..., tracker: _Optional[str] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "kind", "state", "adapter", "created_at", "started_at", "finished_at", "progress", "queue_position", "error", "adapter_result", "propagate_result", "request_id", "verdict", "track_result")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_RESULT_FIELD_NUMBER: _ClassVar[int]
    PROPAGATE_RESULT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    TRACK_RESULT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    kind: JobKind
    state: JobState
    adapter: str
    created_at: float
    started_at: float
    finished_at: float
    progress: Progress
    queue_position: int
    error: JobError
    adapter_result: AdapterInfo
    propagate_result: PropagateResult
    request_id: str
    verdict: EditVerdict
    track_result: TrackedMask
    def __init__(self, job_id: _Optional[str] = ..., kind: _Optional[_Union[JobKind, str]] = ..., state: _Optional[_Union[JobState, str]] = ..., adapter: _Optional[str] = ..., created_at: _Optional[float] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., queue_position: _Optional[int] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., adapter_result: _Optional[_Union[AdapterInfo, _Mapping]] = ..., propagate_result: _Optional[_Union[PropagateResult, _Mapping]] = ..., request_id: _Optional[str] = ..., verdict: _Optional[_Union[EditVerdict, str]] = ..., track_result: _Optional[_Union[TrackedMask, _Mapping]] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "accepted", "queued", "progress", "frame", "adapter", "result", "error", "notice", "tracked")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    TRACKED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    accepted: JobInfo
    queued: Queued
    progress: Progress
    frame: Frame
    adapter: AdapterInfo
    result: PropagateResult
    error: JobError
    notice: Notice
    tracked: TrackedMask
    def __init__(self, job_id: _Optional[str] = ..., accepted: _Optional[_Union[JobInfo, _Mapping]] = ..., queued: _Optional[_Union[Queued, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ..., adapter: _Optional[_Union[AdapterInfo, _Mapping]] = ..., result: _Optional[_Union[PropagateResult, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., notice: _Optional[_Union[Notice, _Mapping]] = ..., tracked: _Optional[_Union[TrackedMask, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("state", "limit")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    limit: int
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class AdapterRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class AdapterInfo(_message.Message):
    __slots__ = ("name", "base_model", "rank", "alpha", "target_modules", "size_bytes", "created_at", "source_media_id", "final_loss", "training_json", "loaded", "state", "pinned", "last_used_at", "device_bytes", "host_bytes", "error", "origin", "in_use", "dropped", "changed_parameters", "sampling")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_MEDIA_ID_FIELD_NUMBER: _ClassVar[int]
    FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_JSON_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_BYTES_FIELD_NUMBER: _ClassVar[int]
    HOST_BYTES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    IN_USE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    name: str
    base_model: str
    rank: int
    alpha: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    size_bytes: int
    created_at: float
    source_media_id: str
    final_loss: float
    training_json: str
    loaded: bool
    state: AdapterState
    pinned: bool
    last_used_at: float
    device_bytes: int
    host_bytes: int
    error: str
    origin: str
    in_use: bool
    dropped: _containers.RepeatedScalarFieldContainer[str]
    changed_parameters: int
    sampling: Sampling
    def __init__(self, name: _Optional[str] = ..., base_model: _Optional[str] = ..., rank: _Optional[int] = ..., alpha: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ..., size_bytes: _Optional[int] = ..., created_at: _Optional[float] = ..., source_media_id: _Optional[str] = ..., final_loss: _Optional[float] = ..., training_json: _Optional[str] = ..., loaded: _Optional[bool] = ..., state: _Optional[_Union[AdapterState, str]] = ..., pinned: _Optional[bool] = ..., last_used_at: _Optional[float] = ..., device_bytes: _Optional[int] = ..., host_bytes: _Optional[int] = ..., error: _Optional[str] = ..., origin: _Optional[str] = ..., in_use: _Optional[bool] = ..., dropped: _Optional[_Iterable[str]] = ..., changed_parameters: _Optional[int] = ..., sampling: _Optional[_Union[Sampling, _Mapping]] = ...) -> None: ...

class Sampling(_message.Message):
    __slots__ = ("steps", "guidance_scale", "shift", "accelerator_strength")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SHIFT_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    steps: int
    guidance_scale: float
    shift: float
    accelerator_strength: float
    def __init__(self, steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., shift: _Optional[float] = ..., accelerator_strength: _Optional[float] = ...) -> None: ...

class ListAdaptersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAdaptersResponse(_message.Message):
    __slots__ = ("adapters",)
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    adapters: _containers.RepeatedCompositeFieldContainer[AdapterInfo]
    def __init__(self, adapters: _Optional[_Iterable[_Union[AdapterInfo, _Mapping]]] = ...) -> None: ...

class DeleteAdapterResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class LoadAdapterRequest(_message.Message):
    __slots__ = ("name", "to")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    name: str
    to: AdapterState
    def __init__(self, name: _Optional[str] = ..., to: _Optional[_Union[AdapterState, str]] = ...) -> None: ...

class UnloadAdapterRequest(_message.Message):
    __slots__ = ("name", "to")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    name: str
    to: AdapterState
    def __init__(self, name: _Optional[str] = ..., to: _Optional[_Union[AdapterState, str]] = ...) -> None: ...

class PinAdapterRequest(_message.Message):
    __slots__ = ("name", "unpin")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UNPIN_FIELD_NUMBER: _ClassVar[int]
    name: str
    unpin: bool
    def __init__(self, name: _Optional[str] = ..., unpin: _Optional[bool] = ...) -> None: ...

class AdapterChange(_message.Message):
    __slots__ = ("action", "previous_state", "adapter", "evicted")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    action: AdapterAction
    previous_state: AdapterState
    adapter: AdapterInfo
    evicted: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, action: _Optional[_Union[AdapterAction, str]] = ..., previous_state: _Optional[_Union[AdapterState, str]] = ..., adapter: _Optional[_Union[AdapterInfo, _Mapping]] = ..., evicted: _Optional[_Iterable[str]] = ...) -> None: ...

class ImportAdapterHeader(_message.Message):
    __slots__ = ("name", "filename", "drop_unsupported", "sampling")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    DROP_UNSUPPORTED_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    name: str
    filename: str
    drop_unsupported: bool
    sampling: Sampling
    def __init__(self, name: _Optional[str] = ..., filename: _Optional[str] = ..., drop_unsupported: _Optional[bool] = ..., sampling: _Optional[_Union[Sampling, _Mapping]] = ...) -> None: ...

class ImportAdapterChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ImportAdapterHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[ImportAdapterHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ExportAdapterRequest(_message.Message):
    __slots__ = ("name", "format")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    name: str
    format: ExportFormat
    def __init__(self, name: _Optional[str] = ..., format: _Optional[_Union[ExportFormat, str]] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("filename", "size_bytes", "data")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    filename: str
    size_bytes: int
    data: bytes
    def __init__(self, filename: _Optional[str] = ..., size_bytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrackRequest(_message.Message):
    __slots__ = ("source_id", "mask_prompt", "shot")
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    MASK_PROMPT_FIELD_NUMBER: _ClassVar[int]
    SHOT_FIELD_NUMBER: _ClassVar[int]
    source_id: str
    mask_prompt: MaskPrompt
    shot: ShotOptions
    def __init__(self, source_id: _Optional[str] = ..., mask_prompt: _Optional[_Union[MaskPrompt, _Mapping]] = ..., shot: _Optional[_Union[ShotOptions, _Mapping]] = ...) -> None: ...

class PlanRequest(_message.Message):
    __slots__ = ("train", "propagate")
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    PROPAGATE_FIELD_NUMBER: _ClassVar[int]
    train: TrainRequest
    propagate: PropagateRequest
    def __init__(self, train: _Optional[_Union[TrainRequest, _Mapping]] = ..., propagate: _Optional[_Union[PropagateRequest, _Mapping]] = ...) -> None: ...

class Problem(_message.Message):
    __slots__ = ("field", "message")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    field: str
    message: str
    def __init__(self, field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Window(_message.Message):
    __slots__ = ("start", "frames")
    START_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    start: int
    frames: int
    def __init__(self, start: _Optional[int] = ..., frames: _Optional[int] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("ok", "problems", "width", "height", "fps", "num_frames", "padded_frames", "windows", "estimated_device_bytes", "estimated_seconds", "source", "output_frames", "output_duration_s", "steps", "notices", "steps_min", "estimated_seconds_min")
    OK_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    PADDED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_DEVICE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FRAMES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    STEPS_MIN_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_SECONDS_MIN_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    problems: _containers.RepeatedCompositeFieldContainer[Problem]
    width: int
    height: int
    fps: float
    num_frames: int
    padded_frames: int
    windows: _containers.RepeatedCompositeFieldContainer[Window]
    estimated_device_bytes: int
    estimated_seconds: float
    source: MediaRef
    output_frames: int
    output_duration_s: float
    steps: int
    notices: _containers.RepeatedCompositeFieldContainer[Notice]
    steps_min: int
    estimated_seconds_min: float
    def __init__(self, ok: _Optional[bool] = ..., problems: _Optional[_Iterable[_Union[Problem, _Mapping]]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[float] = ..., num_frames: _Optional[int] = ..., padded_frames: _Optional[int] = ..., windows: _Optional[_Iterable[_Union[Window, _Mapping]]] = ..., estimated_device_bytes: _Optional[int] = ..., estimated_seconds: _Optional[float] = ..., source: _Optional[_Union[MediaRef, _Mapping]] = ..., output_frames: _Optional[int] = ..., output_duration_s: _Optional[float] = ..., steps: _Optional[int] = ..., notices: _Optional[_Iterable[_Union[Notice, _Mapping]]] = ..., steps_min: _Optional[int] = ..., estimated_seconds_min: _Optional[float] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "model", "model_dir", "dtype", "device", "quantization", "attention_backend", "memory_bytes", "max_frames", "max_pixels", "max_upload_bytes", "max_queue", "queue_length", "ready", "adapters_loaded", "window_frames", "offload", "max_vram_bytes", "vae_tiling", "gradient_checkpointing", "optimizer", "load_error", "adapters_cached", "adapters_pinned", "adapter_device_slots", "adapter_host_cache_bytes", "adapter_slot_rank", "native_width", "native_height", "max_side", "max_window_frames", "size_factor", "max_duration_s", "max_source_pixels", "interpolation", "trackers", "max_streams", "open_streams", "unary_workers", "max_message_bytes", "model_settings_json", "accelerator")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIR_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_BACKEND_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_UPLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_LOADED_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FRAMES_FIELD_NUMBER: _ClassVar[int]
    OFFLOAD_FIELD_NUMBER: _ClassVar[int]
    MAX_VRAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    VAE_TILING_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    LOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_CACHED_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_PINNED_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_DEVICE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_HOST_CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_SLOT_RANK_FIELD_NUMBER: _ClassVar[int]
    NATIVE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    NATIVE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_WINDOW_FRAMES_FIELD_NUMBER: _ClassVar[int]
    SIZE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    MAX_SOURCE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    INTERPOLATION_FIELD_NUMBER: _ClassVar[int]
    TRACKERS_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    OPEN_STREAMS_FIELD_NUMBER: _ClassVar[int]
    UNARY_WORKERS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_SETTINGS_JSON_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    version: str
    model: str
    model_dir: str
    dtype: str
    device: str
    quantization: str
    attention_backend: str
    memory_bytes: int
    max_frames: int
    max_pixels: int
    max_upload_bytes: int
    max_queue: int
    queue_length: int
    ready: bool
    adapters_loaded: _containers.RepeatedScalarFieldContainer[str]
    window_frames: int
    offload: str
    max_vram_bytes: int
    vae_tiling: bool
    gradient_checkpointing: bool
    optimizer: str
    load_error: str
    adapters_cached: _containers.RepeatedScalarFieldContainer[str]
    adapters_pinned: _containers.RepeatedScalarFieldContainer[str]
    adapter_device_slots: int
    adapter_host_cache_bytes: int
    adapter_slot_rank: int
    native_width: int
    native_height: int
    max_side: int
    max_window_frames: int
    size_factor: int
    max_duration_s: float
    max_source_pixels: int
    interpolation: str
    trackers: _containers.RepeatedScalarFieldContainer[str]
    max_streams: int
    open_streams: int
    unary_workers: int
    max_message_bytes: int
    model_settings_json: str
    accelerator: str
    def __init__(self, version: _Optional[str] = ..., model: _Optional[str] = ..., model_dir: _Optional[str] = ..., dtype: _Optional[str] = ..., device: _Optional[str] = ..., quantization: _Optional[str] = ..., attention_backend: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., max_frames: _Optional[int] = ..., max_pixels: _Optional[int] = ..., max_upload_bytes: _Optional[int] = ..., max_queue: _Optional[int] = ..., queue_length: _Optional[int] = ..., ready: _Optional[bool] = ..., adapters_loaded: _Optional[_Iterable[str]] = ..., window_frames: _Optional[int] = ..., offload: _Optional[str] = ..., max_vram_bytes: _Optional[int] = ..., vae_tiling: _Optional[bool] = ..., gradient_checkpointing: _Optional[bool] = ..., optimizer: _Optional[str] = ..., load_error: _Optional[str] = ..., adapters_cached: _Optional[_Iterable[str]] = ..., adapters_pinned: _Optional[_Iterable[str]] = ..., adapter_device_slots: _Optional[int] = ..., adapter_host_cache_bytes: _Optional[int] = ..., adapter_slot_rank: _Optional[int] = ..., native_width: _Optional[int] = ..., native_height: _Optional[int] = ..., max_side: _Optional[int] = ..., max_window_frames: _Optional[int] = ..., size_factor: _Optional[int] = ..., max_duration_s: _Optional[float] = ..., max_source_pixels: _Optional[int] = ..., interpolation: _Optional[str] = ..., trackers: _Optional[_Iterable[str]] = ..., max_streams: _Optional[int] = ..., open_streams: _Optional[int] = ..., unary_workers: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., model_settings_json: _Optional[str] = ..., accelerator: _Optional[str] = ...) -> None: ...
