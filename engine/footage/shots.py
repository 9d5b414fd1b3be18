"""A shot: stored footage on the working grid, with its mask, edited first frame and references.

``plan_shot`` works from the media's probes alone (``framecast.engine.footage.read``), so a request is
checked and planned without decoding its frames, and every problem of its inputs is reported at
once. ``framecast.engine.footage.shot_clip.ShotClip`` is the job's clip: it decodes only the source
frames the grid shows, one at a time, when the job runs. ``framecast.engine.footage.output`` takes
what was generated back to the source's size, frame rate and timestamps.

Inputs other than the source may come at any size of the source's aspect; a mask is one image
for every frame, one frame per source frame, or a video of the source's duration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from framecast.common.media import MediaKind
from framecast.engine.config import EngineConfig
from framecast.engine.errors import InvalidInput, Problems
from framecast.engine.footage.grid import Fit, Grid, ModelLimits, boxes, plan_size, source_rate, working_fps, working_frames
from framecast.engine.footage.read import TIME_EPSILON, FootageInfo
from framecast.engine.jobs.clip import Notice
from framecast.engine.masks.trackers import Box, Point, TrackerKind, clip_box
from framecast.engine.method.windows import VAE_TEMPORAL

ASPECT_TOLERANCE = 0.02  # another input's aspect may differ from the source's by this share (rounding of sizes)


@dataclass(frozen=True)
class StoredMedia:
    """A stored media file a request names, and the request field that names it."""

    path: Path
    info: FootageInfo
    field: str
    media_id: str = ""


@dataclass(frozen=True)
class ShotOptions:
    start_s: float = 0.0  # seconds from the source's first frame
    end_s: float | None = None  # None: the source's end
    fps: float = 0.0  # working frame rate; 0: 16 (Wan's), never above the source's
    source_fps: bool = False  # work at the source's own frame rate
    fit: Fit = Fit.FIT


@dataclass(frozen=True)
class ReferenceInput:
    media: StoredMedia
    frame_index: int | None = None  # the source frame it shows, or
    time_s: float | None = None  # the source time it shows


@dataclass(frozen=True)
class MaskPrompt:
    """A region given on the shot's first frame, tracked through the shot on the server: a box, a
    few points (positive and negative), or one mask image; in source pixels (the mask: any size of
    the source's aspect)."""

    box: Box | None = None
    points: tuple[Point, ...] = ()
    frame0_mask: StoredMedia | None = None
    tracker: TrackerKind | None = None  # None: SAM2 for points when the server has it, else CSRT

    def key(self) -> tuple:
        mask = self.frame0_mask.media_id if self.frame0_mask is not None else ""
        return (self.box, self.points, mask, self.tracker)


@dataclass(frozen=True)
class Shot:
    source: StoredMedia
    grid: Grid
    source_indices: tuple[int, ...]  # for each working frame, the source frame it shows
    mask: StoredMedia | None = None
    mask_indices: tuple[int, ...] | None = None  # for each working frame, its mask frame; None: one mask for all
    edited_first_frame: StoredMedia | None = None
    references: tuple[tuple[int, StoredMedia], ...] = ()  # (working frame, image)
    mask_prompt: MaskPrompt | None = None  # instead of a mask: the region tracked from the first frame
    notices: tuple[Notice, ...] = ()  # what the inputs' owner should know that is no problem (a box clipped)

    @property
    def padded_frames(self) -> int:
        """The working frames rounded up to 4N+1 (the last frame repeated), what the model runs on."""
        return -(-(self.grid.frames - 1) // VAE_TEMPORAL) * VAE_TEMPORAL + 1

    @property
    def range_indices(self) -> tuple[int, int]:
        """The source frames [first, last] the shot covers: what its output holds."""
        return self.source_indices[0], self._last_source_index

    @property
    def _last_source_index(self) -> int:
        info, grid = self.source.info, self.grid
        if not info.frame_times:
            return self.source_indices[-1]
        end = grid.time(grid.frames)  # working frames cover [start, start + frames / fps)
        return max(self.source_indices[-1], int(np.searchsorted(info.frame_times, end - TIME_EPSILON)) - 1)


def _same_aspect(info: FootageInfo, source: FootageInfo) -> bool:
    return abs(info.aspect - source.aspect) <= ASPECT_TOLERANCE * source.aspect


def _aspect_problem(media: StoredMedia, source: FootageInfo) -> InvalidInput:
    return InvalidInput(media.field, f"{media.info.width}x{media.info.height}",
                        f"must have the source's aspect ({source.width}x{source.height}, {source.aspect:.3f}); it has "
                        f"{media.info.aspect:.3f}: any size of the same aspect works")  # fmt: skip


def plan_grid(source: FootageInfo, options: ShotOptions, limits: ModelLimits, max_pixels: int | None,
              field: str = "source_id") -> Grid:  # fmt: skip
    """The working grid of a source under ``options``; InvalidRequest naming ``shot.*`` fields."""
    problems = Problems()
    with problems.check():
        fps = working_fps(source_rate(source.frame_times, source.fps), options.fps, options.source_fps)
    timed = bool(source.frame_times)
    duration = source.duration_s if timed else source.num_frames / (fps if math.isfinite(fps) else 16.0)
    end = duration if options.end_s is None else options.end_s
    if not (math.isfinite(options.start_s) and 0 <= options.start_s < duration):
        problems.add(InvalidInput("shot.start_s", options.start_s, f"must be in [0, {duration:.3f}) s (the source lasts "
                                  f"{duration:.3f} s)"))  # fmt: skip
    if problems.found == [] and not (math.isfinite(end) and end > options.start_s):
        problems.add(InvalidInput("shot.end_s", options.end_s, f"must be after shot.start_s ({options.start_s:g} s)"))
    problems.raise_if_any()
    frames = working_frames(duration, options.start_s, end, fps, source.num_frames, timed)
    if frames < 1:
        raise InvalidInput("shot", f"{options.start_s:g}-{end:g} s", "holds no frame of the source")
    width, height = plan_size(source.width, source.height, limits, max_pixels)
    source_box, content_box = boxes(source.width, source.height, width, height, Fit(options.fit))
    return Grid(width, height, fps, options.start_s, frames, Fit(options.fit), source_box, content_box)


def plan_shot(
    source: StoredMedia,
    options: ShotOptions,
    limits: ModelLimits,
    config: EngineConfig,
    problems: Problems,
    mask: StoredMedia | None = None,
    edited_first_frame: StoredMedia | None = None,
    references: tuple[ReferenceInput, ...] = (),
    mask_prompt: MaskPrompt | None = None,
) -> Shot | None:
    """Map a source and its inputs onto the working grid from their probes alone. Every problem
    goes to ``problems``; None when the grid itself cannot be planned."""
    info = source.info
    if info.kind is MediaKind.IMAGE:
        problems.add(InvalidInput(source.field, "an image", "must be a video or an image sequence (a zip of frames)"))
        return None
    grid = None
    with problems.check():
        grid = plan_grid(info, options, limits, config.max_pixels, source.field)
    if mask is not None and mask_prompt is not None:
        problems.add(InvalidInput("mask_prompt", "a box, points or a frame-0 mask", "cannot come with mask_id: give one"))
    if mask is not None:  # its aspect and length need no grid
        with problems.check():
            _check_mask(mask, info)
    notices: tuple[Notice, ...] = ()
    if mask_prompt is not None:
        with problems.check():
            mask_prompt, notices = _check_prompt(mask_prompt, info)
    if edited_first_frame is not None:
        if edited_first_frame.info.num_frames != 1:
            problems.add(InvalidInput(edited_first_frame.field, edited_first_frame.media_id,
                                      f"must be a single image, but has {edited_first_frame.info.num_frames} frames"))  # fmt: skip
        elif not _same_aspect(edited_first_frame.info, info):
            problems.add(_aspect_problem(edited_first_frame, info))
    if grid is None:
        return None
    indices = tuple(grid.source_indices(info.frame_times, info.num_frames))
    placed = []
    for number, reference in enumerate(references):
        with problems.check():
            placed.append((_reference_index(reference, number, info, grid), reference.media))
    mask_ok = mask is not None and not any(p.field == mask.field for p in problems.found)
    prompt_ok = mask_prompt is not None and not any(p.field.startswith("mask_prompt") for p in problems.found)
    return Shot(source, grid, indices, mask if mask_ok else None, _mask_indices(mask, info, indices) if mask_ok else None,
                edited_first_frame, tuple(placed), mask_prompt if prompt_ok else None, notices if prompt_ok else ())  # fmt: skip


def _check_mask(mask: StoredMedia, source: FootageInfo) -> None:
    """A mask is one image for every frame, one frame per source frame, or a video as long as the
    source; any size of the source's aspect."""
    info = mask.info
    if not _same_aspect(info, source):
        raise _aspect_problem(mask, source)
    if info.num_frames in (1, source.num_frames):
        return
    if info.frame_times and source.frame_times:  # another frame rate: aligned by time
        slack = max(0.05 * source.duration_s, 2.0 / max(source.fps, 1.0))
        if abs(info.duration_s - source.duration_s) <= slack:
            return
    raise InvalidInput(mask.field, f"{info.num_frames} frames, {info.duration_s:.2f} s",
                       f"must be one image for every frame, have the source's {source.num_frames} frames, or last as "
                       f"long as the source ({source.duration_s:.2f} s)")  # fmt: skip


def _check_prompt(prompt: MaskPrompt, source: FootageInfo) -> tuple[MaskPrompt, tuple[Notice, ...]]:
    """A box overlapping the first frame (clipped to it), or points inside it; a frame-0 mask of the
    source's aspect; only one of them. Returns the prompt as tracked, and what to say about it."""
    given = [name for name, value in (("box", prompt.box), ("points", prompt.points), ("frame0_mask_id", prompt.frame0_mask))
             if value]  # fmt: skip
    if len(given) != 1:
        raise InvalidInput("mask_prompt", ", ".join(given) or "nothing", "must be one of box, points or frame0_mask_id")
    width, height = source.width, source.height
    notices: tuple[Notice, ...] = ()
    if prompt.box is not None:
        box, notices = clip_box(prompt.box, width, height)
        prompt = replace(prompt, box=box)
    for number, point in enumerate(prompt.points):
        if not (0 <= point.x < width and 0 <= point.y < height):
            raise InvalidInput(f"mask_prompt.points[{number}]", f"{point.x:g},{point.y:g}",
                               f"must be inside the {width}x{height} first frame (source pixels)")  # fmt: skip
    if prompt.points and all(p.negative for p in prompt.points):
        raise InvalidInput("mask_prompt.points", len(prompt.points), "must hold a point on the region (not only negative ones)")
    if prompt.frame0_mask is not None:
        mask = prompt.frame0_mask
        if mask.info.num_frames != 1:
            raise InvalidInput(mask.field, mask.media_id, f"must be one image, but has {mask.info.num_frames} frames")
        if not _same_aspect(mask.info, source):
            raise _aspect_problem(mask, source)
    return prompt, notices


def _mask_indices(mask: StoredMedia, source: FootageInfo, indices: tuple[int, ...]) -> tuple[int, ...] | None:
    """Which mask frame each working frame takes (``_check_mask`` passed): None for one mask for all."""
    info = mask.info
    if info.num_frames == 1:
        return None
    if info.num_frames == source.num_frames:
        return indices
    times = info.frame_times
    return tuple(max(0, int(np.searchsorted(times, source.frame_times[i] + TIME_EPSILON, "right")) - 1) for i in indices)


def _reference_index(reference: ReferenceInput, number: int, source: FootageInfo, grid: Grid) -> int:
    field = f"references[{number}]"
    media = reference.media
    if media.info.num_frames != 1:
        raise InvalidInput(f"{field}.image_id", media.media_id, f"must be a single image, but has {media.info.num_frames} frames")
    if not _same_aspect(media.info, source):
        raise _aspect_problem(StoredMedia(media.path, media.info, f"{field}.image_id"), source)
    if reference.time_s is not None:
        time, shown = reference.time_s, f"{reference.time_s:g} s"
    else:
        index = reference.frame_index or 0
        if not 0 <= index < source.num_frames:
            raise InvalidInput(f"{field}.frame_index", index, f"must be in [0, {source.num_frames - 1}]")
        time = source.frame_times[index] if source.frame_times else index / grid.fps
        shown = f"frame {index}"
    position = round(grid.position(time))
    if not (math.isfinite(time) and 0 <= position < grid.frames):
        raise InvalidInput(field, shown, f"is outside the shot ({grid.start_s:g} to {grid.time(grid.frames):g} s)")
    return position
