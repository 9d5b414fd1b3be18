"""What a front asks the job layer for (``framecast.engine.jobs.layer``): a ``TrainSpec``,
``PropagateSpec`` or ``TrackSpec`` of plain values (media ids, the settings the request set, a preset), and the
stored media a job reads and writes (``MediaAccess``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from framecast.engine.footage.read import FootageInfo
from framecast.engine.footage.shots import ShotOptions
from framecast.engine.masks.trackers import Box, Point, TrackerKind


@dataclass(frozen=True)
class RegionSpec:
    """A region given on the first frame, tracked through the shot: a box, points, or a mask image."""

    box: Box | None = None
    points: tuple[Point, ...] = ()
    frame0_mask_id: str = ""
    tracker: TrackerKind | None = None  # None: SAM2 for points where the server has it, else CSRT


@dataclass(frozen=True)
class ReferenceSpec:
    image_id: str
    frame_index: int | None = None  # the source frame it shows, or
    time_s: float | None = None  # the source time it shows


@dataclass(frozen=True)
class TrainSpec:
    adapter: str
    source_id: str = ""
    mask_id: str = ""  # a mask (one image or a video), or
    region: RegionSpec | None = None  # a region tracked from the first frame
    prompt: str = ""
    references: tuple[ReferenceSpec, ...] = ()
    shot: ShotOptions = ShotOptions()
    settings: Mapping[str, Any] = field(default_factory=dict)  # the TrainSettings fields the request set
    options: Mapping[str, Any] = field(default_factory=dict)  # the TrainJob fields it set (mask_mode, windows...)
    preset: str = ""  # a preset of the model's settings ("" none)
    # Automatic steps: the motion phase in chunks, each previewed, stopping once the edit holds; the
    # previews need the edited first frame (or a reference at frame 0) and sample with the model's
    # propagation settings (and the preset's), prompted with ``preview_prompt`` ("" the training's).
    auto_steps: bool = False
    edited_first_frame_id: str = ""
    preview_prompt: str = ""
    fidelity_threshold: float | None = None  # the previews' (None: the model's)


@dataclass(frozen=True)
class PropagateSpec:
    adapter: str = ""  # "" the base model alone
    source_id: str = ""
    mask_id: str = ""
    region: RegionSpec | None = None
    edited_first_frame_id: str = ""
    prompt: str = ""
    shot: ShotOptions = ShotOptions()
    settings: Mapping[str, Any] = field(default_factory=dict)  # the PropagateJob fields the request set
    output: Mapping[str, Any] = field(default_factory=dict)  # the OutputOptions fields it set
    preset: str = ""  # "turbo": the accelerator's own sampling settings
    fidelity_threshold: float | None = None  # None: the model's
    accelerator: str | None = None  # an adapter held under ``adapter``: "" none, None the server's default


@dataclass(frozen=True)
class TrackSpec:
    """A region on the first frame tracked through the shot alone: what a training or propagation of
    the same source, shot and region would track (and then finds kept)."""

    source_id: str = ""
    region: RegionSpec | None = None
    shot: ShotOptions = ShotOptions()
    mask_id: str = ""  # never given: a Track tracks a region, it reads no mask


class MediaAccess(Protocol):
    """The stored media a job reads and writes (the server's MediaStore)."""

    def footage(self, media_id: str, field: str) -> tuple[Path, FootageInfo]: ...
    def put(self, data: bytes, filename: str = "", field: str = "data"): ...
    def put_file(self, path: Path, filename: str = ""): ...
    def scratch_dir(self) -> Path: ...
