"""A shot as a job's clip (``ShotClip``): its source decoded onto the working grid when the job runs,
only the source frames the grid shows, one at a time; its mask read onto the grid, or a region given
on the first frame tracked through the shot at up to ``TRACKING_SIDE`` pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from framecast.common.media import mask_from_frames, mask_to_frames
from framecast.common.requests import MaskMode
from framecast.engine.config import EngineConfig
from framecast.engine.errors import InvalidInput, Problems
from framecast.engine.footage.grid import ModelLimits
from framecast.engine.footage.read import iter_frames, read_image
from framecast.engine.footage.shots import Shot
from framecast.engine.jobs import checks
from framecast.engine.jobs.clip import Clip, ClipData, Notice, OnRead
from framecast.engine.masks.trackers import Box, CsrtTracker, Point, Track, Tracker, TrackerKind, new_tracker, region_from_points
from framecast.engine.masks.tracks import TrackCache

EARLY_MASK_PIXELS = 64 << 20  # a mask of up to this many pixels in all is decoded and checked before queueing
TRACKING_SIDE = 512  # the longest side trackers see (never above the source's)


def tracking_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, TRACKING_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


class ShotClip(Clip):
    """A shot as a job's clip: decoded onto the working grid when the job runs; a region given on
    the first frame (``Shot.mask_prompt``) is tracked through it then."""

    def __init__(self, shot: Shot, tracker_of: Callable[[TrackerKind], Tracker] | None = None,
                 tracks: TrackCache | None = None):  # fmt: skip
        """``tracker_of(kind)``: the tracker of a kind (the engine's, SAM2 included; else ``new_tracker``);
        ``tracks``: where tracked regions are kept for the jobs that follow (None: tracked every time)."""
        self.shot = shot
        self.frames, self.height, self.width = shot.padded_frames, shot.grid.height, shot.grid.width
        self.has_references = bool(shot.references)
        self.has_edited_first_frame = shot.edited_first_frame is not None or any(k == 0 for k, _ in shot.references)
        self.tracker_of = tracker_of or new_tracker
        self.tracks = tracks
        self._mask: np.ndarray | None = None

    @property
    def feather_side(self) -> int:
        """``feather_px`` counts source pixels: the composite is made at the source's size."""
        info = self.shot.source.info
        return max(info.width, info.height)

    def check(self, problems: Problems, config: EngineConfig, limits: ModelLimits, mask_mode: MaskMode,
              dilate_px: int) -> None:  # fmt: skip
        """The mask's problems: ``dilate_px`` against the working frame; and whether anything is left
        to edit, up front when the mask is small to decode (one image, or frames of up to
        ``EARLY_MASK_PIXELS`` in all), else when the job reads it. A tracked region is made then."""
        shot = self.shot
        if shot.mask is None and shot.mask_prompt is None:  # it had a problem of its own, already reported
            return
        with problems.check():
            checks.check_dilate(mask_mode, dilate_px, self.height, self.width)
        if shot.mask is None:
            return
        mask = shot.mask.info
        frames = 1 if shot.mask_indices is None else len(set(shot.mask_indices))
        if frames * mask.width * mask.height <= EARLY_MASK_PIXELS and not problems.found:
            with problems.check():
                region = self._region()
                checks.edit_mask(region[: shot.grid.frames], mask_mode, dilate_px)

    def _on_grid(self, mask: np.ndarray) -> np.ndarray:
        """A mask of the source's aspect, any size, on the working grid: [h, w] bool."""
        return mask_from_frames(self.shot.grid.to_grid(mask_to_frames(mask[None])[0], mask=True)[None])[0]

    def _region(self, on_read: OnRead | None = None) -> np.ndarray:
        """The user's mask on the working grid, [frames, h, w] bool; decoded once (a mask video's
        reading follows ``on_read("mask", ...)`` in working frames)."""
        if self._mask is not None:
            return self._mask
        shot, grid = self.shot, self.shot.grid
        if shot.mask is None:
            raise InvalidInput("mask_id", "", "is required: mark the region to edit")
        if shot.mask_indices is None:
            still = mask_from_frames(grid.to_grid(read_image(shot.mask.path, shot.mask.field), mask=True)[None])[0]
            self._mask = np.broadcast_to(still, (self.frames, grid.height, grid.width)).copy()
            return self._mask
        region = np.empty((self.frames, grid.height, grid.width), bool)
        positions: dict[int, list[int]] = {}
        for k, index in enumerate(shot.mask_indices):
            positions.setdefault(index, []).append(k)
        wanted, done = sorted(positions), 0
        for index, frame in iter_frames(shot.mask.path, shot.mask.info, set(wanted), wanted[0]):
            region[positions[index]] = mask_from_frames(grid.to_grid(frame, mask=True)[None])[0]
            done += len(positions[index])
            if on_read is not None:
                on_read("mask", done, grid.frames)
        region[grid.frames :] = region[grid.frames - 1]
        self._mask = region
        return region

    def read(self, mask_mode: MaskMode, dilate_px: int, on_read: OnRead | None = None) -> ClipData:
        shot, grid = self.shot, self.shot.grid
        info = shot.source.info
        positions: dict[int, list[int]] = {}
        for k, index in enumerate(shot.source_indices):
            positions.setdefault(index, []).append(k)
        wanted = sorted(positions)
        # Progress counts working frames, as Plan does: a source frame a variable frame rate's gap
        # shows in several working frames counts as each of them.
        done = 0
        # What trackers see: the working frames' times at up to TRACKING_SIDE pixels, not the grid's.
        watch = shot.mask_prompt is not None or (shot.mask is not None and shot.mask_indices is None)
        track_w, track_h = tracking_size(info.width, info.height)
        seen = np.empty((grid.frames, track_h, track_w, 3), np.uint8) if watch else None
        frames = np.empty((self.frames, grid.height, grid.width, 3), np.uint8)
        for index, frame in iter_frames(shot.source.path, info, set(wanted), wanted[0]):
            frames[positions[index]] = grid.to_grid(frame)
            if seen is not None:
                from PIL import Image

                small = np.asarray(Image.fromarray(frame).resize((track_w, track_h), Image.Resampling.BOX))
                seen[[k for k in positions[index] if k < grid.frames]] = small
            done += len(positions[index])
            if on_read is not None:
                on_read("decode", done, grid.frames)
        frames[grid.frames :] = frames[grid.frames - 1]  # padding to 4N+1
        notices, tracked = list(shot.notices), None
        if shot.mask_prompt is not None:
            track = self._track(seen)
            tracked = track.masks
            region = np.empty((self.frames, grid.height, grid.width), bool)
            region[: grid.frames] = [self._on_grid(mask) for mask in track.masks]
            region[grid.frames :] = region[grid.frames - 1]
            if track.lost:
                notices.append(Notice("region_lost", f"the region was lost or left the frame in {len(track.lost)} of "
                                      f"{grid.frames} working frames ({_spans(track.lost)}): they are left unedited; "
                                      "check the tracked mask, or send a mask video", tuple(track.lost)))  # fmt: skip
        else:
            region = self._region(on_read)
            if seen is not None:
                notices += _moving_out_of(region[0], seen, self._on_grid)
        edited = shot.edited_first_frame
        return ClipData(
            frames=frames,
            region=region,
            edit_mask=checks.edit_mask(region, mask_mode, dilate_px),
            edited_first_frame=None if edited is None else grid.to_grid(read_image(edited.path, edited.field)),
            references=[(k, grid.to_grid(read_image(m.path, m.field))) for k, m in shot.references],
            shot_frames=grid.frames,
            notices=notices,
            tracked=tracked,
        )

    def _track(self, seen: np.ndarray) -> Track:
        """The prompt's region tracked through the frames trackers see (once per shot and prompt)."""
        shot, prompt = self.shot, self.shot.mask_prompt
        kind = prompt.tracker or TrackerKind.CSRT
        key = (shot.source.media_id, shot.grid, prompt.key(), kind)
        kept = None if self.tracks is None else self.tracks.get(key)
        if kept is not None:
            return kept
        info = shot.source.info
        height, width = seen.shape[1:3]
        scale_x, scale_y = width / info.width, height / info.height
        if prompt.box is not None:
            box = prompt.box
            first = Box(box.x * scale_x, box.y * scale_y, box.width * scale_x, box.height * scale_y).mask(height, width)
        elif prompt.points:
            points = [Point(p.x * scale_x, p.y * scale_y, p.negative) for p in prompt.points]
            first = region_from_points(seen[0], points) if kind is not TrackerKind.SAM2 else None
        else:
            from PIL import Image

            image = read_image(prompt.frame0_mask.path, prompt.frame0_mask.field)
            first = mask_from_frames(np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BOX))[None])[0]
        tracker_ = self.tracker_of(kind)
        if kind is TrackerKind.SAM2:
            track = tracker_.track(seen, first, [Point(p.x * scale_x, p.y * scale_y, p.negative) for p in prompt.points])
        else:
            if not first.any():
                raise InvalidInput("mask_prompt", "an empty region", "marks nothing on the first frame: give a box, "
                                   "more points, or a frame-0 mask")  # fmt: skip
            track = tracker_.track(seen, first)
        if self.tracks is not None:
            self.tracks.put(key, track)
        return track


MOVED_SHARE = 0.8  # a region is said to move out of a single mask when less than this share of it stays inside


def _moving_out_of(still: np.ndarray, seen: np.ndarray, on_grid) -> list[Notice]:
    """A notice when the region a single mask marks on the first frame moves out of it: the mask
    stays where it is and the edit stays behind. The region is followed with the box tracker."""
    height, width = seen.shape[1:3]
    from PIL import Image

    first = mask_from_frames(np.asarray(Image.fromarray(mask_to_frames(still[None])[0]).resize((width, height),
                                                                                          Image.Resampling.NEAREST))[None])[0]  # fmt: skip
    if not first.any():
        return []
    track = CsrtTracker().track(seen, first)
    outside = [k for k in range(1, len(seen)) if k not in track.lost and track.masks[k].any()
               and (track.masks[k] & first).sum() < MOVED_SHARE * track.masks[k].sum()]  # fmt: skip
    if not outside:
        return []
    return [Notice("region_moves", f"the region moves out of the single mask in {len(outside)} of {len(seen)} working "
                   f"frames ({_spans(outside)}): the mask stays where it is and the edit stays behind; give a box, "
                   "points or a frame-0 mask (mask_prompt) to track it, or a mask video", tuple(outside))]  # fmt: skip


def _spans(frames: list[int]) -> str:
    """Frame indices as ranges: "3-7, 12"."""
    spans, start = [], None
    for index, frame in enumerate(frames):
        if start is None:
            start = frame
        if index + 1 == len(frames) or frames[index + 1] != frame + 1:
            spans.append(f"{start}-{frame}" if frame != start else f"{frame}")
            start = None
    return ", ".join(spans)
