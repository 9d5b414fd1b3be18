"""Measures of what the user receives: the delivered file, decoded at the source's size, against
the decoded source (docs/method.md, "Quality measures").

Nothing here reads the working grid or the composite's own arrays: every figure comes from the
file as a player decodes it, so each can fail. Background PSNR and SSIM are taken outside the
region the output may change (the feathered region, at the source's size, frame by frame), where a
composite keeps the source: what they lose is what the encoding and the scaling lost there. The
region's share of the frame says whether the background was kept at all (a box over most of the
frame leaves none). The edited first frame is compared with the delivered frame 0 inside the
region and outside it, where an edit the user made is dropped by the composite. And the edit's
fidelity (``framecast.engine.quality.fidelity``) is read from the delivered frames, frame by frame.

Background SSIM is costly at 4K: it is taken on at most ``SSIM_FRAMES`` frames spread evenly
over the clip (``ssim_frames`` says how many), PSNR on every frame.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from framecast.engine.quality.fidelity import Fidelity, FidelityMeter, summarize
from framecast.engine.quality.metrics import PSNR_CAP_DB, ssim

SSIM_FRAMES = 48  # background SSIM is averaged over at most this many frames, spread over the clip
MOST_OF_FRAME = 0.6  # a region covering more than this share of the frame leaves little background to keep
EDIT_CHANGE = 24.0  # RGB distance at which the edited first frame is said to change a source pixel
DROPPED_SHARE = 0.005  # an edit outside the region over more than this share of the frame is reported dropped

OnMeasure = Callable[[int, int], None]  # (frames measured, frames to measure)


@dataclass(frozen=True)
class QualityWarning:
    code: str  # "region_covers_frame", "edit_outside_region_dropped", "edit_faded", "edit_garbled"
    message: str
    frames: tuple[int, ...] = ()


@dataclass(frozen=True)
class DeliveredMeasures:
    background_psnr_db: float  # outside the region, every frame's pixels together
    background_psnr_worst_db: float  # the worst frame's
    background_psnr_worst_frame: int
    background_ssim: float  # mean over ``ssim_frames`` frames
    background_ssim_worst: float
    ssim_frames: int
    region_share: float  # the region's mean share of the frame
    region_share_max: float
    first_frame_psnr_inside_db: float  # the edited first frame vs delivered frame 0, inside the region
    first_frame_psnr_outside_db: float  # ... outside it (the source there, unless the user's edit is kept)
    edit_outside_share: float  # share of the frame the user's edit changed outside the region
    fidelity: Fidelity
    frames: int
    warnings: tuple[QualityWarning, ...] = field(default_factory=tuple)


class _Psnr:
    """Squared error and pixel count summed, for one PSNR over many frames."""

    def __init__(self):
        self.squared, self.count = 0, 0

    def add(self, a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
        """Add frame pixels [H, W, 3] uint8 where ``where``; returns this frame's own PSNR."""
        if not where.any():
            return math.nan
        diff = a[where].astype(np.int32) - b[where].astype(np.int32)
        squared, count = int(np.einsum("ij,ij->", diff, diff)), diff.size
        self.squared, self.count = self.squared + squared, self.count + count
        return _db(squared, count)

    @property
    def db(self) -> float:
        return _db(self.squared, self.count) if self.count else math.nan


def _db(squared: int, count: int) -> float:
    return PSNR_CAP_DB if squared == 0 else min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 * count / squared))


def measure_delivered(
    frames: Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
    total: int,
    edited_first_frame: np.ndarray | None,
    fidelity_threshold: float,
    on_measure: OnMeasure | None = None,
) -> DeliveredMeasures:
    """Measure a delivered clip. ``frames`` yields, for each of the ``total`` frames in order,
    (index from 0, source frame [H, W, 3] uint8 decoded from the source file, delivered frame [H, W, 3]
    uint8 decoded from the delivered file, coverage [H, W] float32 or bool: how much of each pixel the
    output takes from the generated region, 1 inside it, fading across the feather, 0 where it keeps
    the source). The background is where the coverage is 0, the region where it is above 0, its
    inside where it is 1. ``edited_first_frame`` [H, W, 3] uint8 at the source's size, or None."""
    background = _Psnr()
    worst_psnr, worst_frame = math.inf, -1
    ssims: list[float] = []
    ssim_at = set(np.linspace(0, max(total - 1, 0), min(SSIM_FRAMES, max(total, 1))).round().astype(int).tolist())
    shares: list[float] = []
    meter: FidelityMeter | None = None
    inside_db = outside_db = math.nan
    outside_share = 0.0
    for index, source, delivered, coverage in frames:
        region, outside = coverage > 0, coverage <= 0
        shares.append(float(region.mean()))
        frame_db = background.add(delivered, source, outside)
        if not math.isnan(frame_db) and frame_db < worst_psnr:
            worst_psnr, worst_frame = frame_db, index
        if index in ssim_at and outside.any():
            ssims.append(ssim(delivered, source, outside))
        if index == 0 and edited_first_frame is not None:
            edited = edited_first_frame
            inside_db = _Psnr().add(delivered, edited, coverage >= 1)  # not the feather, which mixes in the source
            outside_db = _Psnr().add(delivered, edited, outside)
            changed = np.linalg.norm(edited.astype(np.float32) - source.astype(np.float32), axis=-1) >= EDIT_CHANGE
            outside_share = float((changed & outside).mean())
            meter = FidelityMeter(source, edited, region)
        if meter is not None:
            meter.add(source, delivered, region)
        if on_measure is not None:
            on_measure(index + 1, total)
    fidelity = meter.result(fidelity_threshold) if meter is not None else summarize([], fidelity_threshold)
    share = float(np.mean(shares)) if shares else 0.0
    measures = DeliveredMeasures(
        background_psnr_db=background.db, background_psnr_worst_db=worst_psnr if worst_frame >= 0 else math.nan,
        background_psnr_worst_frame=worst_frame, background_ssim=float(np.mean(ssims)) if ssims else math.nan,
        background_ssim_worst=float(np.min(ssims)) if ssims else math.nan, ssim_frames=len(ssims),
        region_share=share, region_share_max=max(shares, default=0.0), first_frame_psnr_inside_db=inside_db,
        first_frame_psnr_outside_db=outside_db, edit_outside_share=outside_share, fidelity=fidelity,
        frames=len(shares),
    )  # fmt: skip
    return dataclasses.replace(measures, warnings=tuple(_warnings(measures)))


def _warnings(m: DeliveredMeasures) -> list[QualityWarning]:
    found = []
    if m.region_share > MOST_OF_FRAME:
        found.append(QualityWarning("region_covers_frame", (
            f"the edit region covers {m.region_share:.0%} of the frame on average (most {m.region_share_max:.0%}): "
            "little background is kept from the source, and the background figures measure little; give a "
            "box or mask around the object alone")))  # fmt: skip
    if m.edit_outside_share > DROPPED_SHARE:
        found.append(QualityWarning("edit_outside_region_dropped", (
            f"the edited first frame changes {m.edit_outside_share:.1%} of the frame outside the edit region; "
            "the output keeps the source there, so that part of the edit is not in it: mark a region that "
            "covers every change (a larger box, or a mask)"), (0,)))  # fmt: skip
    fidelity = m.fidelity
    if fidelity.verdict.value in ("faded", "garbled"):
        low = tuple(i for i, f in enumerate(fidelity.frames) if i and f.fidelity < fidelity.threshold)
        found.append(QualityWarning(f"edit_{fidelity.verdict.value}", (
            f"the edit {fidelity.describe()}: try more training steps (or automatic steps), the edited first "
            "frame as a reference, a higher adapter strength, or a region that holds the object in every frame"),
            low))  # fmt: skip
    return found
