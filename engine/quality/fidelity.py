"""Edit fidelity without ground truth: does frame t still carry the edit that frame 0 shows?

Nothing but the source, the edited first frame, the region and the output is needed:

1. The edit is learned from frame 0 as a change of colours inside the region (``EditModel.learn``):
   the source region's colours are clustered, and each cluster keeps its mean change from the
   source to the edited first frame. A loose box's background pixels form clusters that change
   by nothing, the object's clusters change by the edit.
2. Frame t's edited appearance is predicted from the source at t inside the region tracked there:
   each pixel changed as frame 0's pixels of its colour were (a recolour), or frame 0's edited pixels
   carried onto frame t with the region (its box's shift and scale, or the source's own motion
   aligned by ECC: a new shape, which no change of colours describes).
3. Frame t is scored on the pixels where the prediction or the output differs from the source by
   at least ``MIN_CHANGE``: its *fidelity* is how much nearer the output is to the prediction than
   to the source there, e_source / (e_source + e_edit) of their mean squared errors: 1 is the
   prediction exactly, 0 the source exactly, 0.5 as near one as the other. Its *edit PSNR* is the
   output against the prediction there, a stand-in for the PSNR against a true edited video that
   nobody has. The share of those pixels nearer neither than the edit's own size at them tells a
   garbled region from one faded back to the source. Of the predictions, the one the output agrees
   with best is kept.

Frames where the region holds too few pixels the edit changes say nothing (NaN). The verdict reads
the curve from frame 1 on (frame 0 is the edited first frame itself): held, or faded / garbled from
the first frame where the curve (a running median of 3 frames) falls below the threshold. Computed
at ``ANALYSIS_SIDE`` pixels on the longer side, on lightly blurred frames. How well these figures
track the truth on the toy world is measured by ``bench/bench_fidelity.py``
(docs/benchmarks.md, "Edit fidelity").

Torch-free (numpy, OpenCV).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

ANALYSIS_SIDE = 256  # frames are measured at this many pixels on their longer side (or their own, if smaller)
CLUSTERS = 12  # colour clusters of frame 0's region
MIN_CHANGE = 24.0  # RGB distance (0-255 a channel) from the source at which the edit is said to change a pixel
# An output pixel further from both the prediction and the source than this share of the edit's size
# there (and than GARBLED_MIN) looks like neither: garbled.
GARBLED_FACTOR = 0.5
GARBLED_MIN = 48.0
GARBLED_GATE = 0.8  # a frame with more of its scored pixels garbled than this fails, whatever its fidelity
MIN_PIXELS = 16  # fewer changed pixels (at the analysis size) than this: the frame says nothing
UNSEEN = 48.0  # a source colour further than this from every cluster of frame 0 is predicted unchanged
DEFAULT_THRESHOLD = 0.35  # a frame carries the edit while its fidelity is at least this (chosen on development scenes: docs/benchmarks.md)


class Verdict(str, enum.Enum):
    HELD = "held"  # every frame carries the edit
    FADED = "faded"  # from some frame on, the region went back to the source
    GARBLED = "garbled"  # from some frame on, the region looks like neither the edit nor the source
    UNMEASURED = "unmeasured"  # no frame after the first holds enough of the edit to tell (an edit of nothing, a region lost)


@dataclass(frozen=True)
class FrameFidelity:
    fidelity: float  # 0 (the source) to 1 (the predicted edit); NaN when too few pixels tell
    source_share: float  # the scored pixels nearer the source than the predicted edit
    garbled_share: float  # the scored pixels near neither (further from both than the edit's size there)
    pixels: int  # pixels the edit changes in this frame, at the analysis size
    edit_error: float = math.nan  # mean squared error (summed over RGB) of the output against the prediction
    scored: int = 0  # the pixels scored (where the prediction or the output differs from the source)

    @property
    def edit_psnr_db(self) -> float:
        return _db(self.edit_error)

    @property
    def judged(self) -> float:
        """What the verdict reads: the fidelity, or 0 for a frame nearly all garbled (pure noise sits
        as near the edit as the source, and would pass on fidelity alone)."""
        return 0.0 if self.garbled_share > GARBLED_GATE else self.fidelity


@dataclass(frozen=True)
class Fidelity:
    """A clip's fidelity curve and what it says."""

    frames: tuple[FrameFidelity, ...]
    threshold: float
    verdict: Verdict
    mean: float  # over frames 1.. that say something (NaN when none does)
    worst: float
    worst_frame: int  # -1 when no frame says anything
    first_below: int  # the first frame from which the curve stays low (running median); -1 when none
    edit_psnr_db: float = math.nan  # frames 1.. against the predicted edit, their scored pixels together

    @property
    def curve(self) -> list[float]:
        return [f.fidelity for f in self.frames]

    def describe(self) -> str:
        if self.verdict is Verdict.HELD:
            return (f"held (fidelity mean {self.mean:.2f}, worst {self.worst:.2f} at frame {self.worst_frame}; "
                    f"edit PSNR {self.edit_psnr_db:.1f} dB)")  # fmt: skip
        if self.verdict is Verdict.UNMEASURED:
            return "unmeasured (no frame after the first shows enough of the edit to tell)"
        return (f"{self.verdict.value} from frame {self.first_below} (fidelity mean {self.mean:.2f}, worst "
                f"{self.worst:.2f} at frame {self.worst_frame}, threshold {self.threshold:.2f}; edit PSNR "
                f"{self.edit_psnr_db:.1f} dB)")  # fmt: skip


def analysis_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) frames are measured at: the longer side at most ``ANALYSIS_SIDE``."""
    scale = min(1.0, ANALYSIS_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrink(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A frame [H, W, 3] uint8 at the analysis ``size`` (area average), blurred a little, as float32."""
    import cv2

    small = frame if frame.shape[1::-1] == size else cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small.astype(np.float32), (3, 3), 0.8)


def shrink_region(region: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A region [H, W] bool at the analysis ``size``: the pixels it covers at least half of."""
    import cv2

    if region.shape[1::-1] == size:
        return region.astype(bool)
    return cv2.resize(region.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5


def _kmeans(colours: np.ndarray, k: int, iterations: int = 12) -> np.ndarray:
    """Cluster centres of ``colours`` [N, 3] float32: k-means from evenly spaced quantiles of
    brightness (deterministic: the same frame always gives the same clusters)."""
    order = np.argsort(colours.sum(axis=1), kind="stable")
    centres = colours[order[np.linspace(0, len(colours) - 1, k).round().astype(int)]].copy()
    for _ in range(iterations):
        nearest = _nearest(colours, centres)[0]
        for c in range(k):
            members = colours[nearest == c]
            if len(members):
                centres[c] = members.mean(axis=0)
    return centres


def _nearest(colours: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest centre, distance to it) of each colour [N, 3]."""
    distances = np.linalg.norm(colours[:, None, :] - centres[None, :, :], axis=-1)  # [N, K]
    nearest = distances.argmin(axis=1)
    return nearest, distances[np.arange(len(colours)), nearest]


@dataclass(frozen=True)
class EditModel:
    """The edit as frame 0 shows it: source colour clusters of the region and each one's change."""

    centres: np.ndarray  # [K, 3] float32, source colours
    changes: np.ndarray  # [K, 3] float32, edited minus source, mean over the cluster
    size: tuple[int, int]  # the analysis (width, height)
    edited_share: float  # share of frame 0's region the edit changes by at least MIN_CHANGE
    edited0: np.ndarray  # [h, w, 3] float32: the edited first frame at the analysis size, blurred
    changed0: np.ndarray  # [h, w] bool: the pixels of frame 0's region the edit changes
    box0: tuple[float, float, float, float] | None  # frame 0's region: (x0, y0, x1, y1) at the analysis size
    source0: np.ndarray  # [h, w, 3] float32: the source's frame 0 at the analysis size, blurred
    region0: np.ndarray  # [h, w] bool: frame 0's region at the analysis size

    @classmethod
    def learn(cls, source0: np.ndarray, edited0: np.ndarray, region0: np.ndarray) -> EditModel:
        """source0, edited0: [H, W, 3] uint8 (the same size); region0: [H, W] bool."""
        size = analysis_size(source0.shape[1], source0.shape[0])
        source, edited, region = shrink(source0, size), shrink(edited0, size), shrink_region(region0, size)
        colours, targets = source[region], edited[region]
        changed0 = region & (np.linalg.norm(edited - source, axis=-1) >= MIN_CHANGE)
        if len(colours) < CLUSTERS:
            none = np.zeros((0, 3), np.float32)
            return cls(none, none, size, 0.0, edited, changed0, _box(region), source, region)
        centres = _kmeans(colours, CLUSTERS)
        nearest = _nearest(colours, centres)[0]
        changes = np.zeros_like(centres)
        for c in range(len(centres)):
            members = nearest == c
            if members.any():
                changes[c] = (targets[members] - colours[members]).mean(axis=0)
        edited_share = float(changed0[region].mean())
        return cls(centres, changes, size, edited_share, edited, changed0, _box(region), source, region)

    def recoloured(self, source: np.ndarray) -> np.ndarray:
        """Prediction 1, the edit as a change of colours: ``source`` pixels [N, 3] float32 each
        changed as frame 0's pixels of its colour were."""
        if not len(self.centres):
            return source
        nearest, distance = _nearest(source, self.centres)
        change = np.where((distance <= UNSEEN)[:, None], self.changes[nearest], 0.0)
        return np.clip(source + change, 0.0, 255.0)

    def carried(self, source: np.ndarray, region: np.ndarray, to_frame: np.ndarray) -> np.ndarray:
        """Prediction 2, the edit moving with the region: frame 0's edited pixels carried onto this
        frame by ``to_frame`` (frame 0 -> this frame, 2x3), the source elsewhere. What a change of
        shape needs, which no change of colours describes. source: [h, w, 3] float32."""
        import cv2

        w, h = self.size
        edited = cv2.warpAffine(self.edited0, to_frame, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        changed = cv2.warpAffine(self.changed0.astype(np.uint8), to_frame, (w, h), flags=cv2.INTER_NEAREST) > 0
        return np.where(changed[..., None], edited, source)

    def box_motion(self, region: np.ndarray) -> np.ndarray | None:
        """Frame 0's region box onto this frame's, shifted and scaled (2x3, frame 0 -> this frame)."""
        box = _box(region)
        if box is None or self.box0 is None:
            return None
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = self.box0, box
        sx, sy = (bx1 - bx0) / max(ax1 - ax0, 1e-6), (by1 - by0) / max(ay1 - ay0, 1e-6)
        return np.float32([[sx, 0, bx0 - ax0 * sx], [0, sy, by0 - ay0 * sy]])

    def aligned_motion(self, source: np.ndarray, start: np.ndarray) -> np.ndarray | None:
        """Frame 0's region onto this frame as the source moved it: an affine map (2x3, frame 0 ->
        this frame) aligning the source's region at frame 0 with this frame's source (ECC, which
        follows a rotation the boxes do not show), from ``start``; None when it does not converge."""
        import cv2

        grey0, grey = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (self.source0, source))
        warp = start.astype(np.float32).copy()
        try:
            cv2.findTransformECC(grey0, grey, warp, cv2.MOTION_AFFINE,
                                 (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4),
                                 self.region0.astype(np.uint8), 3)  # fmt: skip
        except cv2.error:
            return None
        return warp  # ECC's warp takes template (frame 0) coordinates to this frame's


class FidelityMeter:
    """A clip's fidelity, frame by frame in order (``add``), then its verdict (``result``)."""

    def __init__(self, source0: np.ndarray, edited0: np.ndarray, region0: np.ndarray):
        """source0, edited0: [H, W, 3] uint8 (one size); region0: [H, W] bool, frame 0's region."""
        self.model = EditModel.learn(source0, edited0, region0)
        self.frames: list[FrameFidelity] = []
        self._motion: np.ndarray | None = None  # frame 0 -> the last frame measured, as aligned

    def add(self, source: np.ndarray, output: np.ndarray, region: np.ndarray) -> FrameFidelity:
        """How the next frame carries the edit. source, output: [H, W, 3] uint8 at frame 0's size;
        region: [H, W] bool, the region tracked there."""
        model, size = self.model, self.model.size
        region = shrink_region(region, size)
        if not region.any():
            reading = FrameFidelity(math.nan, math.nan, math.nan, 0)
        else:
            source, output = shrink(source, size), shrink(output, size)
            src, out = source[region], output[region]
            readings = [_classify(src, out, model.recoloured(src))]
            boxed = model.box_motion(region)
            if boxed is not None:
                aligned = model.aligned_motion(source, self._motion if self._motion is not None else boxed)
                self._motion = aligned
                for motion in (boxed, aligned):
                    if motion is not None:
                        readings.append(_classify(src, out, model.carried(source, region, motion)[region]))
            # The prediction the output agrees with best: a recolour fits the first, a new shape the others.
            reading = max(readings, key=lambda r: (r.pixels >= MIN_PIXELS, -1.0 if math.isnan(r.fidelity) else r.fidelity))
        self.frames.append(reading)
        return reading

    def result(self, threshold: float = DEFAULT_THRESHOLD) -> Fidelity:
        return summarize(self.frames, threshold)


def _box(region: np.ndarray) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) of a region's pixels, edges exclusive; None when it is empty."""
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    if not len(rows):
        return None
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def _classify(source: np.ndarray, output: np.ndarray, predicted: np.ndarray) -> FrameFidelity:
    """Output pixels [N, 3] scored against one prediction of the edit (all float32)."""
    separation = np.linalg.norm(predicted - source, axis=1)
    edited = separation >= MIN_CHANGE
    count = int(edited.sum())
    if count < MIN_PIXELS:
        return FrameFidelity(math.nan, math.nan, math.nan, count)
    scored = edited | (np.linalg.norm(output - source, axis=1) >= MIN_CHANGE)
    output, source, predicted, separation = output[scored], source[scored], predicted[scored], separation[scored]
    to_edit, to_source = np.linalg.norm(output - predicted, axis=1), np.linalg.norm(output - source, axis=1)
    edit_error, source_error = float(np.mean(to_edit**2)), float(np.mean(to_source**2))
    fidelity = source_error / (source_error + edit_error) if source_error + edit_error > 0 else 0.5
    garbled = np.minimum(to_edit, to_source) > np.maximum(GARBLED_FACTOR * separation, GARBLED_MIN)
    return FrameFidelity(fidelity, float(((to_source < to_edit) & ~garbled).mean()), float(garbled.mean()), count,
                         edit_error, int(scored.sum()))  # fmt: skip


def _db(error: float) -> float:
    """PSNR of a mean squared error summed over the three channels (NaN for NaN)."""
    if math.isnan(error):
        return math.nan
    return 100.0 if error <= 0 else min(100.0, 10.0 * math.log10(3 * 255.0**2 / error))


def summarize(frames: list[FrameFidelity] | tuple[FrameFidelity, ...], threshold: float = DEFAULT_THRESHOLD) -> Fidelity:
    """The verdict of a fidelity curve (``frames[0]`` is the edited first frame: not judged)."""
    frames = tuple(frames)
    values = np.array([f.judged for f in frames[1:]], dtype=np.float64)
    measured = ~np.isnan(values)
    if not measured.any():
        return Fidelity(frames, threshold, Verdict.UNMEASURED, math.nan, math.nan, -1, -1)
    scored = [(f.edit_error, f.scored) for f in frames[1:] if f.scored]
    edit_psnr = _db(sum(e * n for e, n in scored) / sum(n for _, n in scored)) if scored else math.nan
    mean = float(values[measured].mean())
    worst_at = int(np.nanargmin(values))
    # A running median over the measured frames: one bad frame is not a fade, three in a row are.
    indices = np.flatnonzero(measured)
    smoothed = [float(np.median(values[indices[max(0, i - 1) : i + 2]])) for i in range(len(indices))]
    low = [i for i, v in enumerate(smoothed) if v < threshold]
    if not low:
        return Fidelity(frames, threshold, Verdict.HELD, mean, float(values[worst_at]), worst_at + 1, -1, edit_psnr)
    first = int(indices[low[0]]) + 1  # the curve's frame number (frame 0 is not in ``values``)
    later = [f for f in frames[first:] if not math.isnan(f.fidelity)]
    faded = np.mean([f.source_share for f in later]) >= np.mean([f.garbled_share for f in later])
    return Fidelity(frames, threshold, Verdict.FADED if faded else Verdict.GARBLED, mean, float(values[worst_at]),
                    worst_at + 1, first, edit_psnr)  # fmt: skip
