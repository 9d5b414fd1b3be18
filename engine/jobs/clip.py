"""What a job works on: a clip on the working grid, read once when the job runs.

A ``Clip`` knows its working shape before it is read, so a request is checked and planned
without decoding anything large; ``read`` then gives the frames, the user's mask, the method's
edit mask (computed once), the edited first frame and the reference frames. ``ArrayClip`` wraps
arrays a caller already holds (a notebook, a benchmark) and must already be shaped for the
model; ``framecast.engine.footage.shot_clip.ShotClip`` reads stored footage of any shape onto the grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from framecast.common.requests import MaskMode, PropagateJob, TrainJob
from framecast.engine.config import EngineConfig
from framecast.engine.errors import InvalidInput, Problems
from framecast.engine.footage.grid import ModelLimits
from framecast.engine.jobs import checks

# (what is read: "decode" the source onto the grid, "mask" a mask video; working frames made, working
# frames in all): both count the shot's working frames, what Plan's num_frames counts.
OnRead = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Notice:
    """Something a job's owner should know about its inputs, with the working frames it concerns."""

    code: str  # "region_lost", "region_moves", "box_clipped", "box_large"
    message: str
    frames: tuple[int, ...] = ()


@dataclass
class ClipData:
    frames: np.ndarray  # [F, H, W, 3] uint8, F = 4N+1
    region: np.ndarray  # [F, H, W] bool: the user's mask on every frame
    edit_mask: np.ndarray  # [F, H, W] bool: the method's mask (mask_mode applied)
    edited_first_frame: np.ndarray | None = None  # [H, W, 3] uint8
    references: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (working frame index, [H, W, 3])
    shot_frames: int | None = None  # frames of the shot itself; the rest pad it to 4N+1 (None: all)
    notices: list[Notice] = field(default_factory=list)
    tracked: np.ndarray | None = None  # [frames, h, w] bool: a tracked region at the tracker's resolution


class Clip:
    """The interface a job's clip offers the engine."""

    frames: int  # working frames, 4N+1
    height: int
    width: int
    has_references: bool = False  # reference frames come with it (they start the appearance phase)
    # the edited first frame comes with it, or a reference at frame 0 (what automatic steps preview)
    has_edited_first_frame: bool = False

    @property
    def feather_side(self) -> int:
        """The longer side of the frames a composite's ``feather_px`` counts in."""
        return max(self.height, self.width)

    def check(self, problems: Problems, config: EngineConfig, limits: ModelLimits, mask_mode: MaskMode,
              dilate_px: int) -> None:  # fmt: skip
        """Add every problem of the clip's inputs to ``problems`` (nothing large is decoded)."""
        raise NotImplementedError

    def read(self, mask_mode: MaskMode, dilate_px: int, on_read: OnRead | None = None) -> ClipData:
        """Decode the clip onto the working grid; InvalidInput for a problem only its content shows."""
        raise NotImplementedError


class ArrayClip(Clip):
    """Arrays already shaped for the model: 4N+1 frames, sides multiples of 16, within the limits."""

    def __init__(self, source: np.ndarray, mask: np.ndarray, edited_first_frame: np.ndarray | None = None,
                 references: list[tuple[int, np.ndarray]] = ()):  # fmt: skip
        self.source, self.mask = source, mask
        self.edited_first_frame, self.references = edited_first_frame, list(references)
        self.frames, self.height, self.width = source.shape[:3]
        self.has_references = bool(self.references)
        self.has_edited_first_frame = edited_first_frame is not None or any(i == 0 for i, _ in self.references)
        self._data: ClipData | None = None

    def check(self, problems: Problems, config: EngineConfig, limits: ModelLimits, mask_mode: MaskMode,
              dilate_px: int) -> None:  # fmt: skip
        if max(self.height, self.width) > limits.max_side:
            problems.add(InvalidInput("source", f"{self.width}x{self.height}", f"has a side over the {limits.max_side} px "
                                      "this model's position embeddings reach; scale it down"))  # fmt: skip
        with problems.check():
            region = checks.check_clip(self.source, self.mask, config)
            self._data = ClipData(self.source, region, checks.edit_mask(region, mask_mode, dilate_px),
                                  self.edited_first_frame, self.references)  # fmt: skip
        with problems.check():
            checks.check_references(self.references, self.source)
        if self.edited_first_frame is not None and self.edited_first_frame.shape != self.source.shape[1:]:
            with problems.check():
                h, w = self.edited_first_frame.shape[:2]
                raise InvalidInput("edited_first_frame", f"{w}x{h}", "must match the source size")

    def read(self, mask_mode: MaskMode, dilate_px: int, on_read: OnRead | None = None) -> ClipData:
        if self._data is None:
            raise RuntimeError("an ArrayClip is read after its check (Engine.prepare_train / prepare_propagate)")
        return self._data


def job_clip(job: TrainJob | PropagateJob) -> Clip | None:
    """The clip a request works on: its ``clip``, or its arrays wrapped; None when it has neither
    (footage that could not be planned)."""
    if job.clip is not None or job.source is None:
        return job.clip
    if isinstance(job, TrainJob):
        return ArrayClip(job.source, job.mask, job.edited_first_frame, job.references)
    return ArrayClip(job.source, job.mask, job.edited_first_frame)
