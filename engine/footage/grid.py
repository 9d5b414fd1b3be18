"""The working grid: where the model sees a shot, and how its frames map there and back.

A shot of any size, aspect and frame rate is mapped onto a grid the loaded model supports:
sides that are multiples of the model's spatial factor (16 for Wan2.1: 8x VAE, 2x2 patches),
at most its pixel budget (the size it was made for) and never beyond what its position
embeddings reach; a working frame rate (16 fps, Wan's, unless asked otherwise, and never above
the source's); working frame k shows the source as displayed at ``start_s + k / fps``.

Invariants:
- A shot already shaped for the model (sides multiples of the factor, within the budget, at
  the working frame rate) maps onto itself: the same frames, pixel for pixel.
- The grid never upscales: a smaller source keeps its size, rounded to the factor.
- ``fit`` scales the whole frame (the aspect moves by less than one grid cell); ``crop`` keeps
  the aspect and shows a centred part of the source; ``pad`` keeps the aspect and shows all of
  it inside a centred box of the working frame. ``source_box`` and ``content_box`` say which
  part of the displayed source fills which part of the working frame.
"""

from __future__ import annotations

import bisect
import enum
import math
from dataclasses import dataclass

import numpy as np

from framecast.engine.errors import InvalidInput

WAN_FPS = 16.0  # the frame rate Wan2.1 was trained at
TIME_EPSILON = 1e-6


class Fit(str, enum.Enum):
    FIT = "fit"
    CROP = "crop"
    PAD = "pad"


@dataclass(frozen=True)
class ModelLimits:
    """What the loaded model supports."""

    native_width: int  # the size it was made for: its pixel budget
    native_height: int
    factor: int  # working sides are multiples of this
    max_side: int  # pixels its position embeddings reach along either side
    max_window_frames: int  # frames its position embeddings reach in one window (4N+1)

    @property
    def native_pixels(self) -> int:
        return self.native_width * self.native_height


@dataclass(frozen=True)
class Grid:
    width: int
    height: int
    fps: float
    start_s: float  # source time of working frame 0, seconds from the source's first frame
    frames: int  # working frames: the shot's frames at ``fps``
    fit: Fit = Fit.FIT
    source_box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # (x0, y0, x1, y1), fractions of the source
    content_box: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1) pixels of the working frame; None: all

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.content_box or (0, 0, self.width, self.height)

    def time(self, k: int) -> float:
        return self.start_s + k / self.fps

    def position(self, time_s: float) -> float:
        """Where a source time falls among the working frames (fractional index)."""
        return (time_s - self.start_s) * self.fps

    def source_indices(self, frame_times: tuple[float, ...] | None, num_frames: int) -> list[int]:
        """For each working frame, the source frame displayed at its time: the last one at or before
        it. Without frame times (image sequences) source frame k is working frame k."""
        if not frame_times:
            return [min(int(round(self.start_s * self.fps)) + k, num_frames - 1) for k in range(self.frames)]
        return [max(0, bisect.bisect_right(frame_times, self.time(k) + TIME_EPSILON) - 1) for k in range(self.frames)]

    def to_grid(self, frame: np.ndarray, mask: bool = False) -> np.ndarray:
        """A displayed frame (any size of the source's aspect) on the working grid: [H, W, C] uint8
        -> [height, width, C]. Masks (``mask=True``) are averaged over each grid pixel's area."""
        from PIL import Image

        h, w = frame.shape[:2]
        x0, y0, x1, y1 = self.source_box
        bx0, by0, bx1, by1 = self.box
        if (w, h) == (self.width, self.height) and self.content_box is None and self.source_box == (0.0, 0.0, 1.0, 1.0):
            return frame  # a frame already on the grid: unchanged, pixel for pixel
        image = Image.fromarray(frame)
        resample = Image.Resampling.BOX if mask else Image.Resampling.LANCZOS
        fitted = image.resize((bx1 - bx0, by1 - by0), resample, box=(x0 * w, y0 * h, x1 * w, y1 * h))
        if self.content_box is None:
            return np.asarray(fitted)
        out = np.zeros((self.height, self.width, *frame.shape[2:]), np.uint8)
        out[by0:by1, bx0:bx1] = np.asarray(fitted)
        return out


def floor_to(value: float, factor: int) -> int:
    return max(factor, int(math.floor(value / factor + TIME_EPSILON)) * factor)


def plan_size(width: int, height: int, limits: ModelLimits, max_pixels: int | None = None) -> tuple[int, int]:
    """The working size of a ``width`` x ``height`` source: its aspect, scaled down (never up) to the
    pixel budget and the longest side the model reaches, sides floored to the factor."""
    budget = min(limits.native_pixels, max_pixels or limits.native_pixels)
    scale = min(1.0, math.sqrt(budget / (width * height)), limits.max_side / max(width, height))
    return floor_to(width * scale, limits.factor), floor_to(height * scale, limits.factor)


def boxes(width: int, height: int, grid_w: int, grid_h: int, fit: Fit) -> tuple[tuple, tuple | None]:
    """(source_box, content_box) for a source of ``width`` x ``height`` on a ``grid_w`` x ``grid_h`` grid."""
    fit = Fit(fit)
    source_aspect, grid_aspect = width / height, grid_w / grid_h
    if fit is Fit.FIT or abs(source_aspect - grid_aspect) < 1e-9:
        return (0.0, 0.0, 1.0, 1.0), None
    if fit is Fit.CROP:  # the centred part of the source with the grid's aspect
        if source_aspect > grid_aspect:
            keep = grid_aspect / source_aspect
            return ((1 - keep) / 2, 0.0, (1 + keep) / 2, 1.0), None
        keep = source_aspect / grid_aspect
        return (0.0, (1 - keep) / 2, 1.0, (1 + keep) / 2), None
    if source_aspect > grid_aspect:  # pad: the whole source in a centred box of its own aspect
        inner = max(1, round(grid_w / source_aspect))
        top = (grid_h - inner) // 2
        return (0.0, 0.0, 1.0, 1.0), (0, top, grid_w, top + inner)
    inner = max(1, round(grid_h * source_aspect))
    left = (grid_w - inner) // 2
    return (0.0, 0.0, 1.0, 1.0), (left, 0, left + inner, grid_h)


def source_rate(frame_times: tuple[float, ...], average: float) -> float:
    """The rate a source shows new frames at: its average for a constant rate; for a variable rate,
    the rate of its faster stretches (the tenth-shortest share of its frame intervals), so a clip
    that is mostly still but moves in bursts keeps the bursts' motion."""
    if len(frame_times) < 3:
        return average
    intervals = np.diff(np.asarray(frame_times))
    intervals = intervals[intervals > TIME_EPSILON]
    if not len(intervals):
        return average
    return max(average, 1.0 / float(np.percentile(intervals, 10)))


def working_fps(source_fps: float, requested: float = 0.0, use_source: bool = False) -> float:
    """The working frame rate: the source's when asked (or it has none of its own, for sequences),
    else the requested one (0: Wan's 16), never above the source's (``source_rate``)."""
    if use_source and source_fps > 0:
        return source_fps
    wanted = requested or WAN_FPS
    if requested < 0 or not math.isfinite(wanted):
        raise InvalidInput("shot.fps", requested, "must be a finite number >= 0 (0: 16 fps, Wan's)")
    return min(wanted, source_fps) if source_fps > 0 else wanted


def working_frames(duration_s: float, start_s: float, end_s: float, fps: float, num_frames: int, timed: bool) -> int:
    """Working frames of the part [start_s, end_s) of a source: every multiple of 1/fps from start_s
    before end_s; an untimed source (image sequence) gives one per frame of that part."""
    if not timed:
        first = int(round(start_s * fps))
        last = min(num_frames, int(math.ceil(end_s * fps - TIME_EPSILON)) if math.isfinite(end_s) else num_frames)
        return max(0, last - first)
    end = min(end_s, duration_s)
    return max(0, int(math.ceil((end - start_s) * fps - TIME_EPSILON)))
