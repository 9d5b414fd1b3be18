"""The checks a request passes before it is queued, each raising ``InvalidInput`` naming the
request's field, the value and the limit.

Pure functions of the request and the engine's limits (``EngineConfig``), plus
``PromptCounter``, which tokenizes a prompt once: the ids it returns are what the text
encoder later reads, so a prompt is never tokenized twice.
"""

from __future__ import annotations

import copy
import math
import threading

import numpy as np

from framecast.common.requests import BlendRamp, MaskMode, PropagateJob, StepCache, TrainSettings
from framecast.engine.config import EngineConfig, choice
from framecast.engine.errors import InvalidInput, Problems
from framecast.engine.method import conditioning as C
from framecast.engine.method.sampling import MAX_PROMPT_CHARS, MAX_PROMPT_TOKENS, PromptIds, tokenize_prompt


def check_clip(source: np.ndarray, mask: np.ndarray, limits: EngineConfig) -> np.ndarray:
    """Validate a source video and its mask; return the mask broadcast to [F, H, W]."""
    frames, height, width = source.shape[:3]
    if frames == 0:
        raise InvalidInput("source", 0, "has zero frames")
    C.check_frame_count(frames, "source.num_frames")
    C.check_frame_size(height, width, "source")
    if frames > limits.max_frames:
        raise InvalidInput("source.num_frames", frames, f"exceeds the limit of {limits.max_frames}")
    if height * width > limits.max_pixels:
        raise InvalidInput("source", f"{width}x{height}", f"exceeds the limit of {limits.max_pixels} pixels per frame")
    if mask.shape[1:] != (height, width):
        raise InvalidInput("mask", f"{mask.shape[2]}x{mask.shape[1]}", f"must match the source size {width}x{height}")
    if mask.shape[0] not in (1, frames):
        raise InvalidInput("mask.num_frames", mask.shape[0], f"must be 1 (one mask for every frame) or {frames} (the source's)")
    return np.broadcast_to(mask, (frames, height, width)).copy()


def check_dilate(mode: MaskMode, dilate_px: int, height: int, width: int) -> None:
    if choice(MaskMode, mode, "mask_mode") is MaskMode.DILATE and not 0 <= dilate_px <= max(height, width):
        raise InvalidInput("dilate_px", dilate_px, f"must be between 0 and {max(height, width)} (the frame's longer side)")


def edit_mask(region: np.ndarray, mode: MaskMode, dilate_px: int) -> np.ndarray:
    """The method's mask of the user's ``region`` [F, H, W] bool under ``mode``; refuses a region
    that leaves nothing to edit once ``mode`` has shaped it."""
    mode = choice(MaskMode, mode, "mask_mode")
    height, width = region.shape[1:]
    check_dilate(mode, dilate_px, height, width)
    if not region.any():
        raise InvalidInput("mask", "all black", "has no edit region: mark the region to change in white")
    prepared = C.prepare_edit_mask(region, mode, dilate_px)
    if not prepared.any():
        raise InvalidInput("mask", f"mask_mode {mode.value}", "leaves no edit region (every region is "
                           f"below the bbox minimum area, {C.bbox_min_area(height, width)} px at {width}x{height}); "
                           "use mask_mode exact or dilate")  # fmt: skip
    return prepared


def check_steps(field_name: str, steps: int, limits: EngineConfig) -> None:
    if not 1 <= steps <= limits.max_steps:
        raise InvalidInput(field_name, steps, f"must be between 1 and {limits.max_steps}")


def check_train_settings(settings: TrainSettings, references: bool, limits: EngineConfig, problems: Problems) -> None:
    """Every problem of a training's settings."""
    with problems.check():
        check_steps("steps", settings.steps, limits)
    if references:
        with problems.check():
            check_steps("appearance_steps", settings.appearance_steps, limits)
    if not 1 <= settings.rank <= 512:
        problems.add(InvalidInput("rank", settings.rank, "must be between 1 and 512"))
    if not 0 < settings.learning_rate < 1:
        problems.add(InvalidInput("learning_rate", settings.learning_rate, "must be in (0, 1)"))
    weights = (settings.w_edit, settings.w_keep)
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) == 0:
        problems.add(InvalidInput("loss_weights", weights, "must be finite, >= 0 and not both 0"))
    if not 0 <= settings.colour_variants <= 16:
        problems.add(InvalidInput("colour_variants", settings.colour_variants, "must be between 0 and 16"))


def check_references(references: list[tuple[int, np.ndarray]], source: np.ndarray) -> None:
    for index, frame in references:
        if not 0 <= index < len(source):
            raise InvalidInput("references.frame_index", index, f"must be in [0, {len(source) - 1}]")
        if frame.shape != source.shape[1:]:
            raise InvalidInput("references.image", f"{frame.shape[1]}x{frame.shape[0]}", "must match the source size")


def check_propagate_settings(job: PropagateJob, limits: EngineConfig, problems: Problems, longer_side: int | None) -> None:
    """Every problem of a propagation's settings; ``longer_side``: the frame's, in the pixels
    ``feather_px`` counts (None: unknown, the source could not be read)."""
    with problems.check():
        check_steps("steps", job.steps, limits)
    with problems.check():
        choice(BlendRamp, job.blend_ramp, "blend_ramp")
    with problems.check():
        choice(StepCache, job.step_cache, "step_cache")
    if not 0 <= job.guidance_scale <= 50:
        problems.add(InvalidInput("guidance_scale", job.guidance_scale, "must be between 0 and 50"))
    if not 0 <= job.guidance_steps <= job.steps:
        problems.add(InvalidInput("guidance_steps", job.guidance_steps,
                                  f"must be between 0 (every step) and steps ({job.steps})"))  # fmt: skip
    if not 0 < job.cache_threshold <= 1:
        problems.add(InvalidInput("cache_threshold", job.cache_threshold, "must be above 0 and at most 1"))
    if not 1 <= job.cache_interval <= 10:
        problems.add(InvalidInput("cache_interval", job.cache_interval, "must be between 1 and 10"))
    if not 0 <= job.adapter_strength <= 2:
        problems.add(InvalidInput("adapter_strength", job.adapter_strength, "must be between 0 and 2"))
    if not 0 <= job.accelerator_strength <= 2:
        problems.add(InvalidInput("accelerator_strength", job.accelerator_strength, "must be between 0 and 2"))
    if job.shift is not None and not 0.01 <= job.shift <= 100:  # NaN too
        problems.add(InvalidInput("shift", job.shift, "must be between 0.01 and 100 (Wan's 480P sampler uses 3, "
                                  "LightX2V's 4-step one 5)"))  # fmt: skip
    if job.accelerator and job.accelerator == job.adapter:
        problems.add(InvalidInput("accelerator", job.accelerator, "is the clip's adapter too: an accelerator sits under "
                                  "another adapter (or alone, with adapter empty)"))  # fmt: skip
    if longer_side is not None and not 0 <= job.feather_px <= longer_side:
        problems.add(InvalidInput("feather_px", job.feather_px,
                                  f"must be between 0 and {longer_side} (the frame's longer side)"))  # fmt: skip


class PromptCounter:
    """Tokenizes prompts on request threads, once per request, with the pipeline's tokenizer.

    It works on a copy of the pipeline's tokenizer (a call sets truncation and padding state on
    the tokenizer it is made with), under a lock (request threads tokenize concurrently)."""

    def __init__(self, tokenizer):
        self._tokenizer = copy.deepcopy(tokenizer)
        self._tokenizer.model_max_length = 1 << 30  # counts past 512 are wanted, without a warning
        self._lock = threading.Lock()

    def ids(self, field_name: str, prompt: str) -> PromptIds:
        """Refuse a prompt the text encoder would cut (over MAX_PROMPT_TOKENS tokens, as the pipeline
        tokenizes it); text over MAX_PROMPT_CHARS characters is refused without tokenizing it."""
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidInput(field_name, prompt, f"is {len(prompt)} characters long, over the limit of {MAX_PROMPT_CHARS} "
                               f"(the text encoder reads at most {MAX_PROMPT_TOKENS} tokens); shorten it")  # fmt: skip
        with self._lock:
            ids = tokenize_prompt(self._tokenizer, prompt)
        if len(ids) > MAX_PROMPT_TOKENS:
            raise InvalidInput(field_name, prompt, f"is {len(ids)} tokens long, over the limit of {MAX_PROMPT_TOKENS} the text "
                               "encoder reads (longer prompts would be cut); shorten it")  # fmt: skip
        return PromptIds(prompt, ids)
