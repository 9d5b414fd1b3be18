"""Planning windows along the frame axis (docs/method.md, "Windows").

A clip longer than the window is cut into windows of ``window_frames`` (4N+1) frames that
overlap by at least ``overlap_frames``. The last window is moved back until its length is
4N+1 too, which can only widen its overlap; no frame lies in three windows, so every
overlap is a blend of exactly two.
"""

from __future__ import annotations

from dataclasses import dataclass

from framecast.engine.errors import InvalidInput

VAE_TEMPORAL = 4  # latent frame j >= 1 encodes pixel frames 4j-3 .. 4j


def latent_frames(num_frames: int) -> int:
    return (num_frames - 1) // VAE_TEMPORAL + 1


def is_frame_count(num_frames: int) -> bool:
    """Whether a clip of ``num_frames`` frames is one the VAE encodes whole: 4N+1."""
    return num_frames >= 1 and (num_frames - 1) % VAE_TEMPORAL == 0


def check_frame_count(num_frames: int, field: str = "num_frames") -> None:
    if not is_frame_count(num_frames):
        raise InvalidInput(field, num_frames, "must be 4N+1 (1, 5, 9, 13, ..., 49, 81)")


@dataclass(frozen=True)
class WindowPlan:
    starts: tuple[int, ...]
    lengths: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.starts)

    @property
    def ends(self) -> tuple[int, ...]:
        return tuple(s + n for s, n in zip(self.starts, self.lengths))

    def final_before(self, index: int) -> int:
        """Frames [0, result) are final once windows 0..index are generated."""
        return self.starts[index + 1] if index + 1 < self.count else self.ends[-1]

    def seam_boundaries(self) -> list[int]:
        """Frames where one window's frames give way to the next: each overlap's first frame
        and the frame after it ends (equal when the overlap is empty)."""
        bounds = set()
        for k in range(1, self.count):
            bounds.update((self.starts[k], self.ends[k - 1]))
        return sorted(bounds)


DEFAULT_OVERLAP = 4


def default_overlap(window_frames: int) -> int:
    """The overlap a request that names none gets: 4 frames, fewer when the window is too short."""
    return min(DEFAULT_OVERLAP, (window_frames - 3) // 2)


def plan_windows(num_frames: int, window_frames: int, overlap_frames: int | None = None) -> WindowPlan:
    """Windows covering ``num_frames``; one window when the clip fits (or window_frames is 0).
    ``overlap_frames`` None: ``default_overlap(window_frames)``."""
    check_frame_count(num_frames, "source.num_frames")
    if window_frames == 0 or window_frames >= num_frames:
        return WindowPlan((0,), (num_frames,))
    check_frame_count(window_frames, "window_frames")
    if window_frames < 5:
        raise InvalidInput("window_frames", window_frames, "must be at least 5")
    if overlap_frames is None:
        overlap_frames = default_overlap(window_frames)
    # At least one frame: a later window starts from a frame the one before it generated.
    if not 1 <= overlap_frames <= (window_frames - 3) // 2:
        raise InvalidInput(
            "overlap_frames", overlap_frames,
            f"must be between 1 and {(window_frames - 3) // 2} for windows of {window_frames} frames",
        )
    stride = window_frames - overlap_frames
    starts = [0]
    while starts[-1] + window_frames < num_frames:
        start = starts[-1] + stride
        remaining = num_frames - start
        if remaining <= window_frames:  # the last window: make its length 4N+1
            remaining = -(-(remaining - 1) // VAE_TEMPORAL) * VAE_TEMPORAL + 1
            start = num_frames - remaining
        starts.append(start)
    lengths = [window_frames] * (len(starts) - 1) + [num_frames - starts[-1]]
    return WindowPlan(tuple(starts), tuple(lengths))
