"""The requests ``FramecastClient`` sends: Train, Propagate and Plan messages built from Python values.

One builder a request, shared by the job call and its plan (``train`` and ``plan_train`` send the
same ``TrainRequest``). A value the wire cannot carry (a negative count, an unknown choice) is
refused here, at call time, with a ValueError naming the argument; everything the server can judge
(a time range past the source's end, a mask of another aspect) is left to it, so that Plan
reports every problem of a request at once.

The edit region is a mask (``mask_id``) or a region on the first frame that the server tracks
through the shot (``box``, ``points`` or ``mask_frame0``, with a ``tracker``): exactly one.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable

import numpy as np

from framecast.v1 import framecast_pb2 as pb

MASK_MODES = {"exact": pb.MASK_MODE_EXACT, "bbox": pb.MASK_MODE_BBOX, "dilate": pb.MASK_MODE_DILATE}
OUTPUT_ENCODINGS = {
    "mp4": pb.OUTPUT_ENCODING_MP4_H264,
    "mp4-lossless": pb.OUTPUT_ENCODING_MP4_H264_LOSSLESS,
    "png-sequence": pb.OUTPUT_ENCODING_PNG_SEQUENCE,
}
# The file of an mp4 encoding's output: mp4 (audio mp4 cannot carry as it is transcoded to AAC), or
# Matroska (the audio copied whatever its codec); None: mp4 unless the source's audio needs Matroska.
CONTAINERS = {"mp4": pb.OUTPUT_CONTAINER_MP4, "matroska": pb.OUTPUT_CONTAINER_MATROSKA}
FIT_MODES = {"fit": pb.FIT_MODE_FIT, "crop": pb.FIT_MODE_CROP, "pad": pb.FIT_MODE_PAD}
INTERPOLATIONS = {"nearest": pb.INTERPOLATION_NEAREST, "blend": pb.INTERPOLATION_BLEND, "flow": pb.INTERPOLATION_FLOW}
TRACKERS = {"csrt": pb.TRACKER_CSRT, "flow": pb.TRACKER_FLOW, "sam2": pb.TRACKER_SAM2}
STEP_CACHES = {"none": pb.STEP_CACHE_NONE, "first-block": pb.STEP_CACHE_FIRST_BLOCK, "taylorseer": pb.STEP_CACHE_TAYLORSEER}
MAX_QUALITY = 51  # PropagateRequest.quality: an H.264 CRF, 0 (best) to 51

Reference = tuple[int | float, "str | pb.MediaRef"]  # (source frame index, or source time in seconds; image)
BoxSpec = "tuple[float, float, float, float] | pb.Box"  # (x, y, width, height): source pixels of the first frame
# (x, y) a point on the region; (x, y, False) a point on what is not the region (SAM's label 0)
PointSpec = "tuple[float, float] | tuple[float, float, bool] | pb.Point"
MASK_PROMPTS = ("box", "points", "mask_frame0")


def enum_value(value: str | int | None, choices: dict[str, int], argument: str) -> int:
    """Map a choice name (``"bbox"``, case and ``_``/``-`` insensitive) or a proto enum number to
    the number; ``None`` -> 0 (UNSPECIFIED, the server's default). Raises ValueError naming ``argument``."""
    if value is None:
        return 0
    if isinstance(value, str):
        key = value.strip().lower().replace("_", "-")
        if key in choices:
            return choices[key]
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool) and int(value) in (0, *choices.values()):
        return int(value)
    raise ValueError(f"{argument} must be one of {', '.join(choices)} but is {value!r}")


def mask_mode_value(mask_mode: str | int | None) -> int:
    """``"exact" | "bbox" | "dilate"`` (or ``None`` = server default, bbox) -> ``framecast_pb2.MaskMode``."""
    return enum_value(mask_mode, MASK_MODES, "mask_mode")


def uint_value(value, argument: str, bits: int = 32, high: int | None = None) -> int:
    """``value`` as an int for a ``uint32`` (or ``bits=64``) request field, at most ``high`` when
    given. Raises ValueError naming ``argument`` for a value out of range (protobuf's own says only
    "Value out of range: -1"), TypeError for a value that is not a whole number."""
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{argument} must be a whole number but is {value!r}") from None
    high = (1 << bits) - 1 if high is None else high
    if not 0 <= number <= high:
        raise ValueError(f"{argument} must be between 0 and {high} but is {value!r}")
    return number


def non_negative_number(value, argument: str) -> float:
    """A finite number >= 0: a time or rate in seconds (``start_s``, ``fps``, a reference's time), a
    coordinate in pixels. Raises TypeError for a value that is not a number, ValueError naming
    ``argument`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argument} must be a number but is {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{argument} must be a finite number of at least 0 but is {value!r}")
    return float(value)


def finite_number(value, argument: str) -> float:
    """A finite number: a coordinate that may lie left of or above the frame. Raises TypeError for a
    value that is not a number, ValueError naming ``argument`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argument} must be a number but is {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{argument} must be a finite number but is {value!r}")
    return float(value)


def media_id(value: str | pb.MediaRef, argument: str) -> str:
    """The id of a media argument given as an id or as the ``MediaRef`` an upload returned."""
    if isinstance(value, pb.MediaRef):
        return value.id
    if isinstance(value, str):
        return value
    raise TypeError(f"{argument} must be a media id (str) or a MediaRef but is {type(value).__name__}")


def shot_options(
    start_s: float | None = None,
    end_s: float | None = None,
    fps: float | None = None,
    source_fps: bool = False,
    fit: str | int | None = None,
) -> pb.ShotOptions | None:
    """The ``shot`` of a request: the part of the source (``start_s`` to ``end_s`` seconds; None =
    its start, its end), the working frame rate (``fps``; None = 16, Wan's; or ``source_fps=True``
    for the source's own) and how the frame maps onto the working grid (``fit``: "fit", "crop" or
    "pad"; None = fit). None when every option is left to the server. Raises ValueError/TypeError
    naming the argument for a value the request cannot carry."""
    shot = pb.ShotOptions(
        start_s=non_negative_number(start_s or 0.0, "start_s"),
        fps=non_negative_number(fps or 0.0, "fps"),
        source_fps=bool(source_fps),
        fit=enum_value(fit, FIT_MODES, "fit"),
    )
    if end_s is not None:
        shot.end_s = non_negative_number(end_s, "end_s")
    return shot if shot.ListFields() else None


def add_references(request: pb.TrainRequest, references: Iterable[Reference]) -> None:
    """``(frame_index, image)`` or ``(time_s, image)`` pairs as ``request.references``: an int is a
    source frame index, a float a source time in seconds."""
    for number, (where, image) in enumerate(references):
        reference = request.references.add(image_id=media_id(image, f"references[{number}] image"))
        if isinstance(where, (float, np.floating)):
            reference.time_s = non_negative_number(float(where), f"references[{number}] time_s")
        else:
            reference.frame_index = uint_value(where, "references frame_index")


def box_message(box: BoxSpec) -> pb.Box:
    """``(x, y, width, height)`` in source pixels of the first frame (or a ``pb.Box``) as the
    request's box: finite numbers, sides above 0. It may hang off the frame on any side (x or y
    below 0): the server clips it to the frame and says so in a ``box_clipped`` notice, and refuses
    one lying entirely outside it. Raises ValueError/TypeError naming ``box``."""
    if isinstance(box, pb.Box):
        box = (box.x, box.y, box.width, box.height)
    if isinstance(box, (str, bytes)) or not isinstance(box, Iterable) or len(values := tuple(box)) != 4:
        raise ValueError(f"box must be (x, y, width, height) in source pixels but is {box!r}")
    x, y = (finite_number(value, f"box {name}") for value, name in zip(values, "xy"))
    width, height = (non_negative_number(value, f"box {name}") for value, name in zip(values[2:], ("width", "height")))
    if not (width > 0 and height > 0):
        raise ValueError(f"box width and height must be above 0 but are {width:g} and {height:g}")
    return pb.Box(x=x, y=y, width=width, height=height)


def point_message(point: PointSpec, number: int) -> pb.Point:
    """A point of ``points``: ``(x, y)`` on the region, or ``(x, y, on_region)`` with ``on_region``
    False (or 0, SAM's label) for a point on what is not the region; a ``pb.Point`` as it is.
    Raises ValueError/TypeError naming ``points[number]``."""
    if isinstance(point, pb.Point):
        return pb.Point(x=point.x, y=point.y, negative=point.negative)
    values = tuple(point) if isinstance(point, Iterable) and not isinstance(point, (str, bytes)) else ()
    on_region = values[2] if len(values) == 3 else True
    if len(values) not in (2, 3) or on_region not in (True, False):
        raise ValueError(f"points[{number}] must be (x, y), or (x, y, False) for a point off the region, "
                         f"but is {point!r}")
    x, y = (non_negative_number(value, f"points[{number}] {name}") for value, name in zip(values, "xy"))
    return pb.Point(x=x, y=y, negative=not on_region)


def mask_prompt(
    box: BoxSpec | None = None,
    points: Iterable[PointSpec] | None = None,
    mask_frame0: str | pb.MediaRef | None = None,
    tracker: str | int | None = None,
) -> pb.MaskPrompt | None:
    """The region on the first frame that the server tracks through the shot: one of ``box``
    (``(x, y, width, height)``), ``points`` (``[(x, y), (x, y, False), ...]``: at least one on the
    region; ``False`` marks one off it) or ``mask_frame0`` (the media id of a mask image for the
    first frame), and the ``tracker`` ("csrt", "flow" or "sam2"; None: the server's, CSRT, or SAM2
    for points where it has it). None when none is given. Raises ValueError naming the arguments
    for several, or a tracker without one; ValueError/TypeError for a value the request cannot carry."""
    given = [name for name, value in zip(MASK_PROMPTS, (box, points, mask_frame0)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"give one of box, points or mask_frame0, not {' and '.join(given)}")
    if not given:
        if tracker is not None:
            raise ValueError(f"tracker ({tracker!r}) tracks a box, points or mask_frame0, and none is given")
        return None
    prompt = pb.MaskPrompt(tracker=enum_value(tracker, TRACKERS, "tracker"))
    if box is not None:
        prompt.box.CopyFrom(box_message(box))
    elif points is not None:
        prompt.points.extend(point_message(point, number) for number, point in enumerate(points))
        if not prompt.points:
            raise ValueError("points must hold at least one point on the region but is empty")
    else:
        prompt.frame0_mask_id = media_id(mask_frame0, "mask_frame0")
    return prompt


def mask_fields(mask_id: str | pb.MediaRef | None, **prompt) -> dict:
    """The request fields of its edit region: ``{"mask_id": ...}`` or ``{"mask_prompt": ...}`` from
    ``mask_id`` or ``mask_prompt(**prompt)``, exactly one of them. Raises ValueError naming the
    arguments when neither or both are given, and as ``mask_prompt``."""
    tracked = mask_prompt(**prompt)
    if mask_id is None and tracked is None:
        raise ValueError("give mask_id, or one of box, points or mask_frame0 (the region on the first frame, tracked "
                         "on the server)")  # fmt: skip
    if mask_id is not None and tracked is not None:
        given = next(name for name in MASK_PROMPTS if prompt.get(name) is not None)
        raise ValueError(f"give mask_id or {given}, not both: {given} is tracked into a mask")
    return {"mask_prompt": tracked} if tracked is not None else {"mask_id": media_id(mask_id, "mask_id")}


def required(value, argument: str, call: str):
    """``value``, or TypeError when it is None: ``prompt`` and ``edited_first_frame_id`` take None
    as a default only so that ``mask_id`` before them may be left out."""
    if value is None:
        raise TypeError(f"{call}() needs {argument}")
    return value


def loss_weights_message(loss_weights: tuple[float, float]) -> pb.LossWeights:
    try:
        edit, keep = (float(w) for w in loss_weights)
    except (TypeError, ValueError):
        raise ValueError(f"loss_weights must be (edit, keep) floats but is {loss_weights!r}") from None
    return pb.LossWeights(edit=edit, keep=keep)


def train_request(
    adapter: str,
    source_id: str | pb.MediaRef,
    mask_id: str | pb.MediaRef | None = None,
    prompt: str | None = None,
    *,
    box: BoxSpec | None = None,
    points: Iterable[PointSpec] | None = None,
    mask_frame0: str | pb.MediaRef | None = None,
    tracker: str | int | None = None,
    steps: int | None = None,
    rank: int | None = None,
    learning_rate: float | None = None,
    mask_mode: str | int | None = None,
    dilate_px: int | None = None,
    references: Iterable[Reference] = (),
    seed: int = 0,
    loss_weights: tuple[float, float] | None = None,
    appearance_steps: int | None = None,
    gradient_checkpointing: bool = True,
    colour_variants: int | None = None,
    window_frames: int | None = None,
    overlap_frames: int | None = None,
    steps_in_all: bool | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    fps: float | None = None,
    source_fps: bool = False,
    fit: str | int | None = None,
    auto_steps: bool | None = None,
    edited_first_frame_id: str | pb.MediaRef | None = None,
    preview_prompt: str | None = None,
    fidelity_threshold: float | None = None,
) -> pb.TrainRequest:
    """The ``TrainRequest`` of ``FramecastClient.train`` and ``plan_train``.

    The edit region: ``mask_id`` (a mask video, image sequence or image), or a region on the first
    frame tracked on the server, ``box``, ``points`` or ``mask_frame0`` with ``tracker`` (as
    ``mask_prompt``); exactly one. ``prompt`` (the source's caption) is required.
    ``None`` leaves a setting to the server's default: steps 100 (motion phase, per window),
    rank 16, learning_rate 1e-4, mask_mode "bbox", appearance_steps 100, loss_weights (edit 1.0,
    keep 1.0). ``colour_variants``: recoloured copies of the source trained alongside it (0: none).
    ``window_frames`` (4N+1; None or 0: the server's window) and ``overlap_frames`` cut the clip
    into windows; ``steps_in_all``: a clip trained in windows takes ``steps`` in all, each the next
    window (fewer tokens a step), instead of ``steps`` for each window.
    ``references``: edited frames for the appearance phase, ``(frame_index, image_id)`` or
    ``(time_s, image_id)`` (an int is a source frame index, a float a source time in seconds).
    The shot (``start_s``, ``end_s``, ``fps``, ``source_fps``, ``fit``) as ``shot_options``.
    ``auto_steps``: train the motion phase in chunks, previewing the edit after each, and stop once
    it holds (``steps`` is then the most); its previews need ``edited_first_frame_id`` (or a
    reference at frame 0), and sample with ``preview_prompt`` (of the edited video; default
    ``prompt``) at ``fidelity_threshold`` (default the model's).
    Raises ValueError for no edit region or two, a bad choice or loss_weights, or a count, pixel
    width, coordinate, seed or time below 0 or beyond its field; TypeError for a value of the wrong
    type or no prompt.
    """
    request = pb.TrainRequest(
        adapter=adapter,
        source_id=media_id(source_id, "source_id"),
        **mask_fields(mask_id, box=box, points=points, mask_frame0=mask_frame0, tracker=tracker),
        prompt=required(prompt, "prompt", "train"),
        rank=uint_value(rank or 0, "rank"),
        steps=uint_value(steps or 0, "steps"),
        appearance_steps=uint_value(appearance_steps or 0, "appearance_steps"),
        learning_rate=learning_rate or 0.0,
        mask_mode=mask_mode_value(mask_mode),
        dilate_px=uint_value(dilate_px or 0, "dilate_px"),
        seed=uint_value(seed, "seed", bits=64),
        gradient_checkpointing_off=not gradient_checkpointing,
        window_frames=uint_value(window_frames or 0, "window_frames"),
        steps_in_all=bool(steps_in_all),
        shot=shot_options(start_s, end_s, fps, source_fps, fit),
    )
    if overlap_frames is not None:
        request.overlap_frames = uint_value(overlap_frames, "overlap_frames")
    if colour_variants is not None:
        request.colour_variants = uint_value(colour_variants, "colour_variants")
    request.auto_steps = bool(auto_steps)
    if edited_first_frame_id is not None:
        request.edited_first_frame_id = media_id(edited_first_frame_id, "edited_first_frame_id")
    if preview_prompt is not None:
        request.preview_prompt = preview_prompt
    if fidelity_threshold is not None:
        request.fidelity_threshold = share_value(fidelity_threshold, "fidelity_threshold")
    add_references(request, references)
    if loss_weights is not None:
        request.loss_weights.CopyFrom(loss_weights_message(loss_weights))
    return request


def propagate_request(
    adapter: str,
    source_id: str | pb.MediaRef,
    mask_id: str | pb.MediaRef | None = None,
    edited_first_frame_id: str | pb.MediaRef | None = None,
    prompt: str | None = None,
    *,
    box: BoxSpec | None = None,
    points: Iterable[PointSpec] | None = None,
    mask_frame0: str | pb.MediaRef | None = None,
    tracker: str | int | None = None,
    negative_prompt: str = "",
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
    composite: bool = False,
    feather_px: int | None = None,
    mask_mode: str | int | None = None,
    dilate_px: int | None = None,
    output_encoding: str | int | None = None,
    adapter_strength: float | None = None,
    quality: int | None = None,
    interpolation: str | int | None = None,
    guidance_steps: int | None = None,
    step_cache: str | int | None = None,
    cache_threshold: float | None = None,
    cache_interval: int | None = None,
    window_frames: int | None = None,
    overlap_frames: int | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    fps: float | None = None,
    source_fps: bool = False,
    fit: str | int | None = None,
    container: str | int | None = None,
    fidelity_threshold: float | None = None,
    accelerator: str | None = None,
    accelerator_strength: float | None = None,
    shift: float | None = None,
) -> pb.PropagateRequest:
    """The ``PropagateRequest`` of ``FramecastClient.propagate`` and ``plan_propagate``.

    ``adapter=""`` samples the base model alone. The edit region as in ``train_request``: ``mask_id``,
    or ``box``, ``points`` or ``mask_frame0`` with ``tracker``. ``edited_first_frame_id`` and
    ``prompt`` (of the edited video) are required. ``None`` leaves a setting to the server's default:
    guidance_scale 5.0, feather_px 3, adapter_strength 1.0 (0 to 2: scales the adapter's effect),
    mask_mode "bbox", quality 18 (the output's H.264 CRF, 0 best to 51), interpolation the server's
    (``ServerInfo.interpolation``; "nearest", "blend" or "flow": how source frames between two
    working frames get their edit). ``output_encoding``: "mp4" (default), "mp4-lossless" or
    "png-sequence"; ``container`` (mp4 encodings): "mp4" (audio an mp4 cannot carry as it is, Opus
    or Vorbis, transcoded to AAC) or "matroska" (the audio copied as it is); None: mp4 unless the
    source's audio needs Matroska. Faster sampling: ``guidance_steps`` (guidance on the first N steps only; 0 =
    every step), ``step_cache`` ("none", "first-block" with ``cache_threshold``, "taylorseer" with
    ``cache_interval``). ``window_frames`` and ``overlap_frames`` as in ``train_request``. The
    shot (``start_s``, ``end_s``, ``fps``, ``source_fps``, ``fit``) as
    ``shot_options``. ``fidelity_threshold``: the share of the pixels the edit changes that a frame
    must carry for the edit to count as held (0 to 1; None: the model's). ``accelerator``: an adapter
    held under ``adapter`` (a step-distill LoRA), at ``accelerator_strength`` (0 to 2); None the
    server's (``ServerInfo.accelerator``), "" none; with ``preset="turbo"`` its steps, guidance and
    ``shift`` (the sampler's timestep shift) are the ones stored with it. Raises ValueError for no edit region or two, a bad choice, or a count, pixel
    width, coordinate, seed, quality or time below 0 or beyond its field; TypeError for a value of
    the wrong type, or no edited first frame or prompt.
    """
    request = pb.PropagateRequest(
        adapter=adapter,
        source_id=media_id(source_id, "source_id"),
        **mask_fields(mask_id, box=box, points=points, mask_frame0=mask_frame0, tracker=tracker),
        edited_first_frame_id=media_id(required(edited_first_frame_id, "edited_first_frame_id", "propagate"),
                                       "edited_first_frame_id"),
        prompt=required(prompt, "prompt", "propagate"),
        negative_prompt=negative_prompt,
        steps=uint_value(steps or 0, "steps"),
        seed=uint_value(seed, "seed", bits=64),
        composite=composite,
        mask_mode=mask_mode_value(mask_mode),
        dilate_px=uint_value(dilate_px or 0, "dilate_px"),
        output_encoding=enum_value(output_encoding, OUTPUT_ENCODINGS, "output_encoding"),
        interpolation=enum_value(interpolation, INTERPOLATIONS, "interpolation"),
        container=enum_value(container, CONTAINERS, "container"),
        guidance_steps=uint_value(guidance_steps or 0, "guidance_steps"),
        step_cache=enum_value(step_cache, STEP_CACHES, "step_cache"),
        window_frames=uint_value(window_frames or 0, "window_frames"),
        shot=shot_options(start_s, end_s, fps, source_fps, fit),
    )
    if overlap_frames is not None:
        request.overlap_frames = uint_value(overlap_frames, "overlap_frames")
    if cache_threshold is not None:
        request.cache_threshold = float(cache_threshold)
    if cache_interval is not None:
        request.cache_interval = uint_value(cache_interval, "cache_interval")
    if guidance_scale is not None:
        request.guidance_scale = float(guidance_scale)
    if feather_px is not None:
        request.feather_px = uint_value(int(feather_px), "feather_px")
    if adapter_strength is not None:
        request.adapter_strength = float(adapter_strength)
    if quality is not None:
        request.quality = uint_value(quality, "quality", high=MAX_QUALITY)
    if fidelity_threshold is not None:
        request.fidelity_threshold = share_value(fidelity_threshold, "fidelity_threshold")
    if accelerator is not None:
        if not isinstance(accelerator, str):
            raise TypeError(f"accelerator must be a str but is {type(accelerator).__name__}")
        request.accelerator = accelerator
    if accelerator_strength is not None:
        request.accelerator_strength = float(accelerator_strength)
    if shift is not None:
        request.shift = float(shift)
    return request


SAMPLING_FIELDS = ("steps", "guidance_scale", "shift", "accelerator_strength")


def sampling_message(sampling: dict | None) -> pb.Sampling | None:
    """An accelerator's sampling settings (steps, guidance_scale, shift, accelerator_strength) as the
    wire's ``Sampling``; the server checks their ranges. ValueError for another name, TypeError for a
    value that is not a number."""
    if not sampling:
        return None
    message = pb.Sampling()
    for name, value in sampling.items():
        if name not in SAMPLING_FIELDS:
            raise ValueError(f"sampling takes {', '.join(SAMPLING_FIELDS)}, not {name!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"sampling {name} must be a number but is {type(value).__name__}")
        setattr(message, name, uint_value(value, "sampling.steps") if name == "steps" else float(value))
    return message


def share_value(value, field: str) -> float:
    """A share from 0 to 1 (a fidelity threshold): ValueError beyond, or for NaN; TypeError for a non-number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{field} must be a number but is {type(value).__name__}")
    if not 0.0 <= value <= 1.0:  # NaN fails both
        raise ValueError(f"{field} must be a share between 0 and 1 but is {value!r}")
    return float(value)


def preset_name(preset: str | None) -> str:
    """A job call's ``preset=``: a name of the server's model's presets (``ServerInfo.model_settings_json``;
    every model has "quality" and "fast"), checked by the server; None or "" for none."""
    if preset is None:
        return ""
    if not isinstance(preset, str):
        raise TypeError(f"preset must be a str but is {type(preset).__name__}")
    return preset


JOB_REQUESTS = {"train": train_request, "propagate": propagate_request}


def job_request(kind: str, *args, preset: str | None = None, **options):
    """The ``TrainRequest`` or ``PropagateRequest`` of a job call: ``train_request`` or
    ``propagate_request``, naming ``preset``, whose settings the server applies where the request
    leaves them unset (None)."""
    if kind not in JOB_REQUESTS:
        raise ValueError(f"kind must be one of {', '.join(JOB_REQUESTS)} but is {kind!r}")
    request = JOB_REQUESTS[kind](*args, **{name: value for name, value in options.items() if value is not None})
    request.preset = preset_name(preset)
    return request


def plan_request(kind: str, *args, **options) -> pb.PlanRequest:
    """The ``PlanRequest`` of a ``kind`` = "train" or "propagate" request, built from the same
    arguments as that job's call. Raises ValueError for another kind, and as the request's builder."""
    return pb.PlanRequest(**{kind: job_request(kind, *args, **options)})


def track_request(source_id: str | pb.MediaRef, box: BoxSpec | None = None, points: Iterable[PointSpec] | None = None,
                  mask_frame0: str | pb.MediaRef | None = None, tracker: str | int | None = None,
                  **shot) -> pb.TrackRequest:  # fmt: skip
    """The ``TrackRequest`` of ``FramecastClient.track``: the source, one of ``box``, ``points`` or
    ``mask_frame0`` with ``tracker`` (as ``mask_prompt``) and the shot options (``shot_options``'s).
    Raises ValueError naming the arguments for no region or several, and as ``mask_prompt``."""
    prompt = mask_prompt(box, points, mask_frame0, tracker)
    if prompt is None:
        raise ValueError("give one of box, points or mask_frame0: the region on the first frame to track")
    request = pb.TrackRequest(source_id=media_id(source_id, "source_id"), mask_prompt=prompt)
    if (options := shot_options(**shot)) is not None:
        request.shot.CopyFrom(options)
    return request
