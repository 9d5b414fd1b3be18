"""The requests ``FramecastClient`` sends: Train, Propagate and Plan messages built from Python values.

One builder a request, shared by the job call and its plan (``train`` and ``plan_train`` send the
same ``TrainRequest``). A value the wire cannot carry (a negative count, an unknown choice) is
refused here, at call time, with a ValueError naming the argument; everything the server can judge
(a time range past the source's end, a mask of another aspect) is left to it, so that Plan
reports every problem of a request at once.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable

import numpy as np

from framecast.engine.config import field_default
from framecast.engine.requests import PropagateJob
from framecast.v1 import framecast_pb2 as pb

MASK_MODES = {"exact": pb.MASK_MODE_EXACT, "bbox": pb.MASK_MODE_BBOX, "dilate": pb.MASK_MODE_DILATE}
OUTPUT_ENCODINGS = {
    "mp4": pb.OUTPUT_ENCODING_MP4_H264,
    "mp4-lossless": pb.OUTPUT_ENCODING_MP4_H264_LOSSLESS,
    "png-sequence": pb.OUTPUT_ENCODING_PNG_SEQUENCE,
}
FIT_MODES = {"fit": pb.FIT_MODE_FIT, "crop": pb.FIT_MODE_CROP, "pad": pb.FIT_MODE_PAD}
INTERPOLATIONS = {"nearest": pb.INTERPOLATION_NEAREST, "blend": pb.INTERPOLATION_BLEND, "flow": pb.INTERPOLATION_FLOW}
MAX_QUALITY = 51  # PropagateRequest.quality: an H.264 CRF, 0 (best) to 51

Reference = tuple[int | float, "str | pb.MediaRef"]  # (source frame index, or source time in seconds; image)


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


def seconds_value(value, argument: str) -> float:
    """A time or rate in seconds (``start_s``, ``fps``, a reference's time): a finite number >= 0.
    Raises TypeError for a value that is not a number, ValueError naming ``argument`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argument} must be a number but is {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{argument} must be a finite number of at least 0 but is {value!r}")
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
        start_s=seconds_value(start_s or 0.0, "start_s"),
        fps=seconds_value(fps or 0.0, "fps"),
        source_fps=bool(source_fps),
        fit=enum_value(fit, FIT_MODES, "fit"),
    )
    if end_s is not None:
        shot.end_s = seconds_value(end_s, "end_s")
    return shot if shot.ListFields() else None


def add_references(request: pb.TrainRequest, references: Iterable[Reference]) -> None:
    """``(frame_index, image)`` or ``(time_s, image)`` pairs as ``request.references``: an int is a
    source frame index, a float a source time in seconds."""
    for number, (where, image) in enumerate(references):
        reference = request.references.add(image_id=media_id(image, f"references[{number}] image"))
        if isinstance(where, (float, np.floating)):
            reference.time_s = seconds_value(float(where), f"references[{number}] time_s")
        else:
            reference.frame_index = uint_value(where, "references frame_index")


def loss_weights_message(loss_weights: tuple[float, float]) -> pb.LossWeights:
    try:
        edit, keep = (float(w) for w in loss_weights)
    except (TypeError, ValueError):
        raise ValueError(f"loss_weights must be (edit, keep) floats but is {loss_weights!r}") from None
    return pb.LossWeights(edit=edit, keep=keep)


def train_request(
    adapter: str,
    source_id: str | pb.MediaRef,
    mask_id: str | pb.MediaRef,
    prompt: str,
    *,
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
    colour_variants: int = 0,
    start_s: float | None = None,
    end_s: float | None = None,
    fps: float | None = None,
    source_fps: bool = False,
    fit: str | int | None = None,
) -> pb.TrainRequest:
    """The ``TrainRequest`` of ``FramecastClient.train`` and ``plan_train``.

    ``None`` leaves a setting to the server's default: steps 100 (motion phase, per window),
    rank 16, learning_rate 1e-4, mask_mode "bbox", appearance_steps 100, loss_weights (edit 1.0,
    keep 1.0). ``colour_variants``: recoloured copies of the source trained alongside it (0: none).
    ``references``: edited frames for the appearance phase, ``(frame_index, image_id)`` or
    ``(time_s, image_id)`` (an int is a source frame index, a float a source time in seconds).
    The shot (``start_s``, ``end_s``, ``fps``, ``source_fps``, ``fit``) as ``shot_options``.
    Raises ValueError for a bad choice or loss_weights, or a count, pixel width, seed or time
    below 0 or beyond its field; TypeError for a value of the wrong type.
    """
    request = pb.TrainRequest(
        adapter=adapter,
        source_id=media_id(source_id, "source_id"),
        mask_id=media_id(mask_id, "mask_id"),
        prompt=prompt,
        rank=uint_value(rank or 0, "rank"),
        steps=uint_value(steps or 0, "steps"),
        appearance_steps=uint_value(appearance_steps or 0, "appearance_steps"),
        learning_rate=learning_rate or 0.0,
        mask_mode=mask_mode_value(mask_mode),
        dilate_px=uint_value(dilate_px or 0, "dilate_px"),
        seed=uint_value(seed, "seed", bits=64),
        gradient_checkpointing_off=not gradient_checkpointing,
        colour_variants=uint_value(colour_variants, "colour_variants"),
        shot=shot_options(start_s, end_s, fps, source_fps, fit),
    )
    add_references(request, references)
    if loss_weights is not None:
        request.loss_weights.CopyFrom(loss_weights_message(loss_weights))
    return request


def propagate_request(
    adapter: str,
    source_id: str | pb.MediaRef,
    mask_id: str | pb.MediaRef,
    edited_first_frame_id: str | pb.MediaRef,
    prompt: str,
    *,
    negative_prompt: str = "",
    steps: int = field_default(PropagateJob, "steps"),
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
    start_s: float | None = None,
    end_s: float | None = None,
    fps: float | None = None,
    source_fps: bool = False,
    fit: str | int | None = None,
) -> pb.PropagateRequest:
    """The ``PropagateRequest`` of ``FramecastClient.propagate`` and ``plan_propagate``.

    ``adapter=""`` samples the base model alone. ``None`` leaves a setting to the server's default:
    guidance_scale 5.0, feather_px 3, adapter_strength 1.0 (0 to 2: scales the adapter's effect),
    mask_mode "bbox", quality 18 (the output's H.264 CRF, 0 best to 51), interpolation the server's
    (``ServerInfo.interpolation``; "nearest", "blend" or "flow": how source frames between two
    working frames get their edit). ``output_encoding``: "mp4" (default), "mp4-lossless" or
    "png-sequence". The shot (``start_s``, ``end_s``, ``fps``, ``source_fps``, ``fit``) as
    ``shot_options``. Raises ValueError for a bad choice, or a count, pixel width, seed, quality or
    time below 0 or beyond its field; TypeError for a value of the wrong type.
    """
    request = pb.PropagateRequest(
        adapter=adapter,
        source_id=media_id(source_id, "source_id"),
        mask_id=media_id(mask_id, "mask_id"),
        edited_first_frame_id=media_id(edited_first_frame_id, "edited_first_frame_id"),
        prompt=prompt,
        negative_prompt=negative_prompt,
        steps=uint_value(steps or 0, "steps"),
        seed=uint_value(seed, "seed", bits=64),
        composite=composite,
        mask_mode=mask_mode_value(mask_mode),
        dilate_px=uint_value(dilate_px or 0, "dilate_px"),
        output_encoding=enum_value(output_encoding, OUTPUT_ENCODINGS, "output_encoding"),
        interpolation=enum_value(interpolation, INTERPOLATIONS, "interpolation"),
        shot=shot_options(start_s, end_s, fps, source_fps, fit),
    )
    if guidance_scale is not None:
        request.guidance_scale = float(guidance_scale)
    if feather_px is not None:
        request.feather_px = uint_value(int(feather_px), "feather_px")
    if adapter_strength is not None:
        request.adapter_strength = float(adapter_strength)
    if quality is not None:
        request.quality = uint_value(quality, "quality", high=MAX_QUALITY)
    return request


JOB_REQUESTS = {"train": train_request, "propagate": propagate_request}


def plan_request(kind: str, *args, **options) -> pb.PlanRequest:
    """The ``PlanRequest`` of a ``kind`` = "train" or "propagate" request, built from the same
    arguments as that job's call. Raises ValueError for another kind, and as the request's builder."""
    if kind not in JOB_REQUESTS:
        raise ValueError(f"kind must be one of {', '.join(JOB_REQUESTS)} but is {kind!r}")
    return pb.PlanRequest(**{kind: JOB_REQUESTS[kind](*args, **options)})
