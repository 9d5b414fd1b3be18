"""A request checked and planned, what the engine runs (``Engine.prepare_train`` / ``prepare_propagate``
make them, ``Engine.train`` / ``propagate`` run them), and what a propagation generates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from framecast.common.requests import PropagateJob, TrainJob
from framecast.engine.jobs.clip import Clip
from framecast.engine.method.sampling import PromptIds
from framecast.engine.method.windows import WindowPlan


@dataclass(frozen=True)
class PreparedTrain:
    """A training request checked and planned: what ``Engine.train`` runs."""

    job: TrainJob
    clip: Clip
    prompt: PromptIds
    plan: WindowPlan

    @property
    def steps(self) -> int:
        """The training's steps in all: the motion phase's over its windows, and the appearance
        phase's when it has reference frames (what its speed and its estimate count)."""
        settings = self.job.settings
        return settings.motion_steps(self.plan.count) + (settings.appearance_steps if self.clip.has_references else 0)


@dataclass(frozen=True)
class PreparedPropagate:
    """A propagation request checked and planned: what ``Engine.propagate`` runs."""

    job: PropagateJob
    clip: Clip
    prompt: PromptIds
    negative_prompt: PromptIds | None  # None without guidance
    plan: WindowPlan


@dataclass
class PropagateResult:
    frames: np.ndarray  # [F, H, W, 3] uint8, on the working grid
    edit_mask: np.ndarray  # [F, H, W] bool, the mask actually used
    background_psnr: float  # output vs source outside the edit mask, dB
    background_ssim: float  # the same pixels' mean SSIM (1.0 = identical)
    first_frame_psnr: float  # output frame 0 vs the edited first frame, dB
    temporal_change: float  # frame-to-frame change inside the mask over the source's; 1.0 = as smooth
    seam_score: float  # frame change at window seams / elsewhere; 1.0 = invisible (or one window)
    windows: int
    elapsed_s: float
    timings: dict[str, float] = field(default_factory=dict)  # encode_s, denoise_s, decode_s
