"""Masks people can make: a box, a few points or one mask on frame 0, tracked through the shot.

A ``Tracker`` turns frame 0's region into one per frame. Each is behind the same small
interface (``track(frames, first) -> Track``), so more can be added:

- ``CsrtTracker`` (the default): OpenCV's CSRT box tracker, needing no weights. Every frame's
  mask is its tracked box, which the method's own default (``bbox`` masks) asks for anyway.
- ``FlowTracker``: the frame-0 mask carried from frame to frame along dense optical flow
  (OpenCV's Farneback), keeping its shape.
- ``Sam2Tracker`` (``framecast.engine.masks.sam2``): SAM2's video model from a local checkpoint;
  points or a mask give exact per-frame masks.

A frame where the region is lost (the tracker fails, or the region leaves the frame) gets an
empty mask and is listed in ``Track.lost``: nothing is invented there.

Points without SAM2 become a region by OpenCV's GrabCut, seeded by them (``region_from_points``).
A box given on the first frame is clipped to it the same way on every side (``clip_box``), with a
notice saying so, and another when it covers most of the frame.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from framecast.engine.errors import InvalidInput
from framecast.engine.jobs.clip import Notice

MIN_AREA_SHARE = 0.05  # a region shrunk below this share of its frame-0 area is lost
MIN_VISIBLE_SHARE = 0.3  # a box whose visible part is below this share of its area has left the frame
# A box given on the first frame covering more than this share of its area leaves too little
# background to keep as it is: the edit region is nearly the whole frame (said, not refused).
LARGE_BOX_SHARE = 0.6


class TrackerKind(str, enum.Enum):
    CSRT = "csrt"
    FLOW = "flow"
    SAM2 = "sam2"


@dataclass(frozen=True)
class Box:
    """A box in pixels of the frames it is given with: top-left corner and size."""

    x: float
    y: float
    width: float
    height: float

    def mask(self, height: int, width: int) -> np.ndarray:
        out = np.zeros((height, width), bool)
        x0, y0 = max(0, int(np.floor(self.x))), max(0, int(np.floor(self.y)))
        x1, y1 = min(width, int(np.ceil(self.x + self.width))), min(height, int(np.ceil(self.y + self.height)))
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = True
        return out

    def visible_share(self, height: int, width: int) -> float:
        area = self.width * self.height
        if area <= 0:
            return 0.0
        w = max(0.0, min(self.x + self.width, width) - max(self.x, 0.0))
        h = max(0.0, min(self.y + self.height, height) - max(self.y, 0.0))
        return w * h / area

    @classmethod
    def of(cls, mask: np.ndarray) -> Box | None:
        """The bounding box of a mask's pixels; None when it has none."""
        ys, xs = np.nonzero(mask)
        if not len(ys):
            return None
        return cls(float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))


def _shown(box: Box) -> str:
    return f"{box.x:g},{box.y:g},{box.width:g},{box.height:g}"


def clip_box(box: Box, width: int, height: int, field: str = "mask_prompt.box") -> tuple[Box, tuple[Notice, ...]]:
    """A box on a ``width`` x ``height`` frame, clipped to it the same way on every side, and what
    to say: that it was clipped (the box given and the box kept), that it covers most of the frame
    (over ``LARGE_BOX_SHARE`` of its area). InvalidInput naming ``field`` for a box of no size, or
    one lying entirely outside the frame."""
    values = (box.x, box.y, box.width, box.height)
    if not (all(math.isfinite(value) for value in values) and box.width > 0 and box.height > 0):
        raise InvalidInput(field, _shown(box), f"must be a box of finite position and positive size on the {width}x"
                           f"{height} first frame (x, y, width, height in source pixels)")  # fmt: skip
    x0, y0 = max(box.x, 0.0), max(box.y, 0.0)
    x1, y1 = min(box.x + box.width, float(width)), min(box.y + box.height, float(height))
    if not (x1 > x0 and y1 > y0):
        raise InvalidInput(field, _shown(box), f"lies entirely outside the {width}x{height} first frame (x from 0 to "
                           f"{width}, y from 0 to {height}, in source pixels): give a box over the region to edit")  # fmt: skip
    kept = Box(x0, y0, x1 - x0, y1 - y0)
    notices = []
    if kept != box:
        notices.append(Notice("box_clipped", f"{field} {_shown(box)} reaches outside the {width}x{height} first frame: "
                              f"clipped to {_shown(kept)} (x, y, width, height in source pixels)"))  # fmt: skip
    share = kept.width * kept.height / (width * height)
    if share > LARGE_BOX_SHARE:
        notices.append(Notice("box_large", f"{field} {_shown(kept)} covers {share:.0%} of the {width}x{height} first "
                              f"frame (over {LARGE_BOX_SHARE:.0%}): the edit region is nearly the whole frame, so "
                              "little of the background can be kept as it is; box only the region to edit"))  # fmt: skip
    return kept, tuple(notices)


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    negative: bool = False  # a point on what is not the region


@dataclass
class Track:
    masks: np.ndarray  # [F, H, W] bool: the region in each frame, empty where lost
    lost: list[int] = field(default_factory=list)  # frames where the region was lost or left the frame


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks' bounding boxes (1.0 when both are empty)."""
    first, second = Box.of(a), Box.of(b)
    if first is None or second is None:
        return float(first is None and second is None)
    x0, y0 = max(first.x, second.x), max(first.y, second.y)
    x1 = min(first.x + first.width, second.x + second.width)
    y1 = min(first.y + first.height, second.y + second.height)
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = first.width * first.height + second.width * second.height - inter
    return inter / union if union else 0.0


class Tracker:
    kind: TrackerKind

    def track(self, frames: np.ndarray, first: np.ndarray) -> Track:
        """frames: [F, H, W, 3] uint8; first: [H, W] bool, the region in frame 0 -> a mask per frame."""
        raise NotImplementedError


class CsrtTracker(Tracker):
    """OpenCV's CSRT: a discriminative correlation filter with channel and spatial reliability.
    Twice OpenCV's default scale candidates (65), and frames blurred a little first (sigma = the
    longer side / 170, 1.5 px at 256): chosen on the toy world's development scenes (seeds 100-109;
    rotating, growing and shrinking sprites over textured backgrounds), where they took the mean box
    IoU from 0.79 to 0.82 and then 0.84."""

    kind = TrackerKind.CSRT
    scales = 65
    blur = 1 / 170

    def track(self, frames: np.ndarray, first: np.ndarray) -> Track:
        import cv2

        height, width = frames.shape[1:3]
        start = Box.of(first)
        masks = np.zeros(frames.shape[:3], bool)
        if start is None:
            return Track(masks, list(range(len(frames))))
        masks[0] = start.mask(height, width)
        params = cv2.TrackerCSRT.Params()
        params.number_of_scales = self.scales
        tracker = cv2.TrackerCSRT.create(params)
        sigma = self.blur * max(height, width)

        def seen(frame: np.ndarray) -> np.ndarray:
            return cv2.GaussianBlur(_bgr(frame), (0, 0), sigma)

        tracker.init(seen(frames[0]), _rect(start))
        lost = []
        for index in range(1, len(frames)):
            ok, (x, y, w, h) = tracker.update(seen(frames[index]))
            box = Box(float(x), float(y), float(w), float(h))
            if not ok or box.visible_share(height, width) < MIN_VISIBLE_SHARE:
                lost.append(index)
                continue
            masks[index] = box.mask(height, width)
        return Track(masks, lost)


class FlowTracker(Tracker):
    """The frame-0 mask carried along the dense optical flow between consecutive frames. Each
    frame's pixels are traced back to frame 0 through the chain of flows (the maps composed, not
    the mask re-sampled every frame, which would blur and shrink it), then read from its mask."""

    kind = TrackerKind.FLOW

    def track(self, frames: np.ndarray, first: np.ndarray) -> Track:
        import cv2

        masks = np.zeros(frames.shape[:3], bool)
        masks[0] = first
        area = max(int(first.sum()), 1)
        height, width = first.shape
        xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        origin_x, origin_y = xs.copy(), ys.copy()  # where each pixel of the current frame was in frame 0
        source = first.astype(np.uint8)
        previous = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
        lost = []
        for index in range(1, len(frames)):
            gray = cv2.cvtColor(frames[index], cv2.COLOR_RGB2GRAY)
            back = cv2.calcOpticalFlowFarneback(gray, previous, None, 0.5, 3, 15, 3, 5, 1.2, 0)
            # A pixel here came from (x, y) + back in the previous frame, which came from origin there.
            origin_x, origin_y = (cv2.remap(origin, xs + back[..., 0], ys + back[..., 1], cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE) for origin in (origin_x, origin_y))  # fmt: skip
            previous = gray
            region = cv2.remap(source, origin_x, origin_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0) > 0  # fmt: skip
            if region.sum() < MIN_AREA_SHARE * area:
                lost.append(index)
                continue
            masks[index] = region
        return Track(masks, lost)


def region_from_points(frame: np.ndarray, points: list[Point], iterations: int = 5) -> np.ndarray:
    """A frame-0 region from a few points (OpenCV's GrabCut): positive points are surely the region,
    negative ones surely not, and the region's colours are learnt within a box around the positive
    points, grown. [H, W, 3] uint8 -> [H, W] bool."""
    import cv2

    height, width = frame.shape[:2]
    positive = [p for p in points if not p.negative]
    if not positive:
        return np.zeros((height, width), bool)
    xs, ys = np.array([p.x for p in positive]), np.array([p.y for p in positive])
    reach = max(8.0, 0.15 * max(height, width), 0.5 * max(np.ptp(xs), np.ptp(ys)))
    x0, y0 = int(max(0, xs.min() - reach)), int(max(0, ys.min() - reach))
    x1, y1 = int(min(width, xs.max() + reach)), int(min(height, ys.max() + reach))
    labels = np.full((height, width), cv2.GC_BGD, np.uint8)
    labels[y0:y1, x0:x1] = cv2.GC_PR_FGD
    radius = max(1, round(0.01 * max(height, width)))
    for point in points:
        cv2.circle(labels, (int(round(point.x)), int(round(point.y))), radius,
                   int(cv2.GC_BGD if point.negative else cv2.GC_FGD), -1)  # fmt: skip
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(_bgr(frame), labels, None, background, foreground, iterations, cv2.GC_INIT_WITH_MASK)
    region = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return _component_of(region, positive)


def _component_of(region: np.ndarray, points: list[Point]) -> np.ndarray:
    """The connected parts of ``region`` that hold one of the points."""
    from scipy import ndimage

    labels, _ = ndimage.label(region)
    keep = {labels[int(round(p.y)), int(round(p.x))] for p in points
            if 0 <= int(round(p.y)) < region.shape[0] and 0 <= int(round(p.x)) < region.shape[1]}  # fmt: skip
    keep.discard(0)
    return np.isin(labels, list(keep)) if keep else region


def _bgr(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frame[..., ::-1])


def _rect(box: Box) -> tuple[int, int, int, int]:
    return int(round(box.x)), int(round(box.y)), max(1, int(round(box.width))), max(1, int(round(box.height)))


def new_tracker(kind: TrackerKind) -> Tracker:
    """A new tracker of a kind that needs no weights; SAM2 needs a checkpoint
    (``framecast.engine.masks.sam2.Sam2Tracker``, which ``Engine.tracker`` loads once)."""
    kind = TrackerKind(kind)
    if kind is TrackerKind.CSRT:
        return CsrtTracker()
    if kind is TrackerKind.FLOW:
        return FlowTracker()
    raise ValueError(f"the {kind.value} tracker is built with its checkpoint (framecast.engine.masks.sam2)")
