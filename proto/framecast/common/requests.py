"""What a caller asks the engine for, with every default in one place.

``TrainJob`` and ``PropagateJob`` are requests as given (decoded media, settings); the engine
checks and plans each once (``Engine.prepare_train`` / ``prepare_propagate``) into what the run
consumes (``framecast.engine.jobs.prepared``). The server fills these dataclasses from protobuf only
with the fields a request set, so an unset field takes the default written here and nowhere else.
Torch-free and engine-free: the client's command line reads the defaults for its help
(``field_default``).
"""

from __future__ import annotations

import enum
from dataclasses import MISSING, dataclass, field, fields

import numpy as np


def field_default(config: type, name: str):
    """The default of dataclass ``config``'s field ``name``: what a setting left unset gets."""
    found = next(f for f in fields(config) if f.name == name)
    return found.default if found.default is not MISSING else found.default_factory()


class MaskMode(str, enum.Enum):
    """How the user's mask becomes the method's (docs/method.md, "What the method changes")."""

    EXACT = "exact"
    BBOX = "bbox"  # each component's bounding box grown by 10%, filled (the paper's default)
    DILATE = "dilate"  # grown by ``dilate_px``


class StepCache(str, enum.Enum):
    """Reusing the transformer's work between denoising steps (diffusers' cache hooks)."""

    NONE = "none"
    # A step whose first block's output changed by less than ``cache_threshold`` (relative mean
    # absolute difference from the last computed step) reuses that step's residual of the other blocks.
    FIRST_BLOCK = "first-block"
    # Every step after the first few predicts the blocks' outputs by a Taylor expansion of the last
    # computed ones, computing them in full only every ``cache_interval`` steps.
    TAYLORSEER = "taylorseer"


class BlendRamp(str, enum.Enum):
    """Weights across the frames two windows share."""

    LINEAR = "linear"
    COSINE = "cosine"


@dataclass(frozen=True)
class TrainSettings:
    rank: int = 16
    alpha: float | None = None  # None: alpha = rank (scale 1)
    steps: int = 100  # motion phase, per window when the clip is trained in windows
    appearance_steps: int = 100  # only when reference frames are given
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    w_edit: float = 1.0
    w_keep: float = 1.0
    seed: int = 0
    gradient_checkpointing: bool = True
    reference_repeats: int = 9  # reference samples per original-video sample in the appearance phase
    # Motion-phase copies of the clip with the edit region recoloured (the same change in every
    # frame, first frame included), trained alongside the clip itself: the adapter learns this
    # video's motion but takes the region's colours from the first frame it is given.
    colour_variants: int = 0
    # A clip trained in windows: ``steps`` for each window (False, each stretch of the clip gets what a
    # one-window clip gets) or ``steps`` in all, each step the next window (True: a window's tokens a
    # step, the whole clip's steps: fewer tokens per step for the same steps).
    steps_in_all: bool = False

    def motion_steps(self, windows: int) -> int:
        """The motion phase's steps for a clip cut into ``windows``."""
        return self.steps if self.steps_in_all else self.steps * windows

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)


@dataclass(frozen=True)
class AutoSteps:
    """Automatic steps: the motion phase trained in chunks (``fractions`` of its steps), a cheap
    preview after each (the appearance phase tried from a copy of the adapter, then ``preview_steps``
    sampling steps on the first ``preview_frames`` working frames, the edit's fidelity measured),
    stopping at the first whose edit holds, or at the whole motion phase (the cap)."""

    threshold: float = 0.35  # the fidelity a preview's frames must keep (framecast.engine.quality.fidelity)
    sampling: tuple[tuple[str, object], ...] = ()  # the preview's PropagateJob settings (guidance, strength...)
    prompt: str = ""  # the preview's prompt, of the edited video ("" the training's)
    preview_steps: int = 10
    preview_frames: int = 17  # 4N+1
    fractions: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)

    def checkpoints(self, steps: int) -> list[int]:
        """The motion steps (of ``steps``) after which a preview is made; the last is ``steps``."""
        marks = sorted({max(1, round(steps * f)) for f in self.fractions if f < 1.0} | {steps})
        return [m for m in marks if m <= steps]


@dataclass
class TrainJob:
    """Train an adapter on a clip: ``source`` and ``mask`` arrays shaped for the model, or a ``clip``
    (a ``framecast.engine.jobs.clip.Clip``: stored footage of any shape, read onto the working grid)."""

    adapter: str
    source: np.ndarray | None  # [F, H, W, 3] uint8; None with a clip
    mask: np.ndarray | None  # [F, H, W] or [1, H, W] bool, True = edit region; None with a clip
    prompt: str
    settings: TrainSettings = TrainSettings()
    references: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (frame index, edited [H, W, 3])
    mask_mode: MaskMode = MaskMode.BBOX
    dilate_px: int = 0
    source_media_id: str = ""
    window_frames: int = 0  # 0: the server's window (the whole clip when it fits)
    overlap_frames: int | None = None  # None: windows.default_overlap of the window used
    clip: object | None = None  # instead of the arrays: a framecast.engine.jobs.clip.Clip
    auto_steps: AutoSteps | None = None  # stop the motion phase once a preview's edit holds
    edited_first_frame: np.ndarray | None = None  # arrays only: the edited first frame (auto steps' previews)


@dataclass
class PropagateJob:
    """Propagate an edited first frame through a clip (arrays shaped for the model, or a ``clip``)."""

    adapter: str  # "" = the base model alone
    source: np.ndarray | None  # [F, H, W, 3] uint8; None with a clip
    mask: np.ndarray | None  # [F, H, W] or [1, H, W] bool; None with a clip
    edited_first_frame: np.ndarray | None  # [H, W, 3] uint8; None with a clip
    prompt: str
    negative_prompt: str = ""
    steps: int = 30
    guidance_scale: float = 5.0  # <= 1 disables classifier-free guidance
    # Classifier-free guidance on the first this many steps only (the rest run the conditional pass
    # alone, half the work); 0 = every step.
    guidance_steps: int = 0
    step_cache: StepCache = StepCache.NONE
    cache_threshold: float = 0.05  # StepCache.FIRST_BLOCK's
    cache_interval: int = 3  # StepCache.TAYLORSEER's: a full computation every this many steps
    seed: int = 0
    composite: bool = False
    feather_px: int = 3
    mask_mode: MaskMode = MaskMode.BBOX
    dilate_px: int = 0
    window_frames: int = 0  # 0: the server's window (one window when the clip fits)
    overlap_frames: int | None = None  # None: windows.default_overlap of the window used
    blend_ramp: BlendRamp = BlendRamp.LINEAR
    adapter_strength: float = 1.0  # the adapter's delta scaled by this (0 = the base model); ignored without one
    clip: object | None = None  # instead of the arrays: a framecast.engine.jobs.clip.Clip
    # An adapter held under ``adapter`` (a step-distill LoRA): "" none; None the server's default (serve --accelerator).
    accelerator: str | None = None
    accelerator_strength: float = 1.0  # the accelerator's delta scaled by this, 0 to 2; ignored without one
    # The sampler's timestep shift: None the scheduler's own; set, a flow-matching Euler sampler with this
    # shift over evenly spaced timesteps (1000, 750, 500, 250 at 4 steps), as step-distilled models sample.
    shift: float | None = None
