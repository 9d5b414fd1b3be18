"""What a running job tells its owner, as plain values: progress, frames, notices, a tracked region
(``framecast.engine.jobs.layer`` reports them; the servicer turns them into protobuf).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Progressed:
    phase: str  # decode, mask, motion, appearance, denoise, encode, measure
    step: int
    total: int
    elapsed_s: float  # since the job started running
    eta_s: float  # of the phase
    loss: float = 0.0


@dataclass(frozen=True)
class FrameReady:
    index: int  # working frame
    frame: np.ndarray  # [H, W, 3] uint8 on the working grid
    time_s: float


@dataclass(frozen=True)
class Noticed:
    code: str
    message: str
    frames: tuple[int, ...] = ()


@dataclass(frozen=True)
class RegionTracked:
    mask: Any  # the stored mask video (what MediaAccess.put returned)
    lost_frames: tuple[int, ...]
    tracker: str


Event = Progressed | FrameReady | Noticed | RegionTracked
OnEvent = Callable[[Event], None]
