"""Real footage out: ``write_output`` writes what was generated on the working grid back at the
source's size, frame rate, frame count and timestamps, with the source's audio: copied unchanged,
or transcoded to AAC where an mp4 is asked for and the source's codec is one mp4 cannot carry as it
is (the file itself is written by ``framecast.engine.footage.writers``).

For every source frame of the shot (decoded again, one at a time) the generated region is
taken at that frame's time (working frames ``interpolation``-ed in between: a source at 30 fps
worked at 16 has frames the model never made), scaled up from the grid, and composited over the
decoded source frame: outside the feathered edit region every pixel is the source's, exactly.
Frame 0 of the shot takes the edited first frame itself, at its own resolution.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from framecast.engine.errors import InvalidInput
from framecast.engine.footage.grid import TIME_EPSILON, Grid
from framecast.engine.footage.read import iter_frames, probe, read_image
from framecast.engine.footage.shots import Shot
from framecast.engine.footage.writers import MP4_AUDIO, PngWriter, VideoWriter

OnWrite = Callable[[int, int], None]  # (frames written, frames to write)


class Encoding(str, enum.Enum):
    MP4 = "mp4"  # H.264, CRF ``quality``
    MP4_LOSSLESS = "mp4-lossless"  # H.264 in RGB at QP 0: decodes to exactly the pixels written
    PNG_SEQUENCE = "png-sequence"  # a zip of PNG frames and their timestamps (no audio)


class Container(str, enum.Enum):
    """The file an mp4 encoding is written in."""

    AUTO = "auto"  # mp4, or Matroska when the source's audio is a codec mp4 cannot carry as it is
    MP4 = "mp4"  # mp4 always: audio it cannot carry as it is is transcoded to AAC
    MATROSKA = "matroska"  # .mkv always: the audio copied whatever its codec


class Interpolation(str, enum.Enum):
    """How a source frame between two working frames gets its generated region."""

    NEAREST = "nearest"  # the working frame nearest in time
    BLEND = "blend"  # the two around it, cross-faded by time
    FLOW = "flow"  # the two around it, each warped along the optical flow between them, then cross-faded


@dataclass(frozen=True)
class OutputOptions:
    encoding: Encoding = Encoding.MP4
    quality: int = 18  # H.264 CRF: 0 (best) to 51
    composite: bool = True  # the generated region over the source; False: the whole generated frame, scaled up
    feather_px: int = 3  # source pixels over which the region fades into the source
    interpolation: Interpolation = Interpolation.FLOW
    container: Container = Container.AUTO


@dataclass(frozen=True)
class WrittenOutput:
    """What was written: the output's own properties."""

    path: Path
    suffix: str  # ".mp4", ".mkv" (asked for, or a source audio codec an mp4 cannot carry as it is), ".zip"
    width: int
    height: int
    num_frames: int
    fps: float
    duration_s: float
    has_audio: bool


def check_output(options: OutputOptions) -> None:
    if not 0 <= options.quality <= 51:
        raise InvalidInput("quality", options.quality, "must be a CRF between 0 (best) and 51")
    if options.encoding is Encoding.PNG_SEQUENCE and options.container is not Container.AUTO:
        raise InvalidInput("container", options.container.value, "applies to the mp4 encodings; png-sequence "
                           "writes a zip: leave container unset, or ask for an mp4 encoding")  # fmt: skip


# --- between working frames -------------------------------------------------------------------


class _Interpolator:
    """Generated frames at fractional working positions; optical flow computed once per pair."""

    def __init__(self, frames: np.ndarray, method: Interpolation):
        self.frames, self.method = frames, Interpolation(method)
        self._pair: tuple[int, np.ndarray, np.ndarray] | None = None

    def at(self, k0: int, k1: int, a: float) -> np.ndarray:
        frames = self.frames
        if k1 == k0 or a <= TIME_EPSILON:
            return frames[k0]
        if a >= 1 - TIME_EPSILON:
            return frames[k1]
        if self.method is Interpolation.NEAREST:
            return frames[k1] if a >= 0.5 else frames[k0]
        if self.method is Interpolation.BLEND:
            return _mix(frames[k0], frames[k1], a)
        forward, backward = self._flows(k0)
        return _mix(_warp(frames[k0], forward, a), _warp(frames[k1], backward, 1 - a), a)

    def _flows(self, k0: int) -> tuple[np.ndarray, np.ndarray]:
        if self._pair is None or self._pair[0] != k0:
            a, b = (_gray(self.frames[k]) for k in (k0, k0 + 1))
            self._pair = (k0, _flow(a, b), _flow(b, a))
        return self._pair[1], self._pair[2]


def _mix(a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
    return np.round(a.astype(np.float32) * (1 - weight) + b.astype(np.float32) * weight).astype(np.uint8)


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense optical flow from ``a`` to ``b`` (Farneback): [H, W, 2] pixels."""
    import cv2

    levels = max(1, min(3, int(math.log2(max(1, min(a.shape) // 8)))))
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, levels, 9, 3, 5, 1.1, 0)


def _warp(frame: np.ndarray, flow: np.ndarray, amount: float) -> np.ndarray:
    """``frame`` moved ``amount`` of the way along ``flow`` (sampled backwards at x - amount * flow)."""
    import cv2

    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(frame, xs - amount * flow[..., 0], ys - amount * flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


# --- one source frame ---------------------------------------------------------------------------


class _Compositor:
    """Puts a working-grid frame and region over a source frame at the source's size."""

    def __init__(self, grid: Grid, width: int, height: int, options: OutputOptions):
        self.grid, self.width, self.height, self.options = grid, width, height, options
        x0, y0, x1, y1 = grid.source_box
        self.source_px = (x0 * width, y0 * height, x1 * width, y1 * height)  # the part of the source the grid shows
        # A source already on the grid: its pixels are the working ones, no scaling at all.
        self.identity = (width, height) == (grid.width, grid.height) and grid.box == (0, 0, width, height) \
            and grid.source_box == (0.0, 0.0, 1.0, 1.0)  # fmt: skip

    def _to_working(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Working-grid coordinates of source pixel centres."""
        sx0, sy0, sx1, sy1 = self.source_px
        bx0, by0, bx1, by1 = self.grid.box
        return (bx0 + (xs + 0.5 - sx0) / (sx1 - sx0) * (bx1 - bx0), by0 + (ys + 0.5 - sy0) / (sy1 - sy0) * (by1 - by0))

    def _bbox(self, region: np.ndarray) -> tuple[int, int, int, int] | None:
        """The source pixels the working ``region`` covers, grown by the feather: (x0, y0, x1, y1)."""
        rows, cols = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
        if not len(rows):
            return None
        sx0, sy0, sx1, sy1 = self.source_px
        bx0, by0, bx1, by1 = self.grid.box
        scale_x, scale_y = (sx1 - sx0) / (bx1 - bx0), (sy1 - sy0) / (by1 - by0)
        margin = 2
        x0 = int(max(0, math.floor(sx0 + (cols[0] - bx0) * scale_x) - margin))
        x1 = int(min(self.width, math.ceil(sx0 + (cols[-1] + 1 - bx0) * scale_x) + margin))
        y0 = int(max(0, math.floor(sy0 + (rows[0] - by0) * scale_y) - margin))
        y1 = int(min(self.height, math.ceil(sy0 + (rows[-1] + 1 - by0) * scale_y) + margin))
        return x0, y0, x1, y1

    def _upscale(self, working: np.ndarray, bbox: tuple[int, int, int, int]) -> np.ndarray:
        """The working frame's pixels over source pixels ``bbox``, scaled up (Lanczos)."""
        from PIL import Image

        x0, y0, x1, y1 = bbox
        if self.identity:
            return working[y0:y1, x0:x1]
        (wx0, wx1), (wy0, wy1) = (self._to_working(np.array([x0 - 0.5, x1 - 0.5]), np.array([y0 - 0.5, y1 - 0.5])))
        return np.asarray(Image.fromarray(working).resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS,
                                                          box=(wx0, wy0, wx1, wy1)))  # fmt: skip

    def _region(self, region: np.ndarray, bbox: tuple[int, int, int, int]) -> np.ndarray:
        """The working region over source pixels ``bbox`` (nearest), false outside the grid's source box."""
        x0, y0, x1, y1 = bbox
        wx, wy = self._to_working(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
        ix, iy = np.floor(wx).astype(int), np.floor(wy).astype(int)
        bx0, by0, bx1, by1 = self.grid.box
        inside_x, inside_y = (ix >= bx0) & (ix < bx1), (iy >= by0) & (iy < by1)
        picked = region[np.clip(iy, 0, region.shape[0] - 1)][:, np.clip(ix, 0, region.shape[1] - 1)]
        return picked & inside_y[:, None] & inside_x[None, :]

    def _alpha(self, region: np.ndarray) -> np.ndarray:
        feather = self.options.feather_px
        if feather <= 0:
            return region.astype(np.float32)
        from scipy import ndimage

        inside = np.pad(region, 1)  # the bbox's edge is outside the region
        return np.minimum(1.0, ndimage.distance_transform_edt(inside)[1:-1, 1:-1] / feather).astype(np.float32)

    def coverage(self, region: np.ndarray) -> np.ndarray:
        """How much of each source pixel [H, W] float32 the output takes from what was generated for a
        working ``region``: 1 inside it, fading to 0 across the feather, 0 outside (where ``compose``
        keeps the source)."""
        covered = np.zeros((self.height, self.width), np.float32)
        bbox = self._bbox(region)
        if bbox is None:
            return covered
        x0, y0, x1, y1 = bbox
        covered[y0:y1, x0:x1] = self._alpha(self._region(region, bbox))
        return covered

    def compose(self, source: np.ndarray, working: np.ndarray, region: np.ndarray,
                replacement: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """``source`` [H, W, 3] with the generated ``working`` frame (or a full-size ``replacement``,
        the edited first frame) inside the feathered ``region``; untouched outside it."""
        if not self.options.composite and replacement is None:
            region = np.ones_like(region)
            alpha_of = lambda r: r.astype(np.float32)  # noqa: E731 (the whole generated frame, no feather)
        else:
            alpha_of = self._alpha
        bbox = self._bbox(region)
        if bbox is None:
            return source
        x0, y0, x1, y1 = bbox
        alpha = alpha_of(self._region(region, bbox))[..., None]
        generated = replacement[y0:y1, x0:x1] if replacement is not None else self._upscale(working, bbox)
        patch = source[y0:y1, x0:x1]
        mixed = np.round(generated.astype(np.float32) * alpha + patch.astype(np.float32) * (1 - alpha)).astype(np.uint8)
        out = source.copy()
        out[y0:y1, x0:x1] = np.where(alpha > 0, mixed, patch)
        return out


def output_suffix(shot: Shot, encoding: Encoding, container: Container = Container.AUTO) -> str:
    """The output's file: a zip of PNGs, or the container asked for (AUTO: mp4 unless the source's
    audio is a codec mp4 cannot carry as it is)."""
    if Encoding(encoding) is Encoding.PNG_SEQUENCE:
        return ".zip"
    if Container(container) is not Container.AUTO:
        return ".mp4" if Container(container) is Container.MP4 else ".mkv"
    audio = shot.source.info.audio
    return ".mkv" if audio is not None and audio.codec not in MP4_AUDIO else ".mp4"


def edited_first_frame(shot: Shot) -> np.ndarray | None:
    """The shot's edited first frame at the source's size [H, W, 3] uint8 (Lanczos), or None."""
    if shot.edited_first_frame is None:
        return None
    info = shot.source.info
    edited = read_image(shot.edited_first_frame.path, shot.edited_first_frame.field)
    if edited.shape[:2] != (info.height, info.width):
        from PIL import Image

        edited = np.asarray(Image.fromarray(edited).resize((info.width, info.height), Image.Resampling.LANCZOS))
    return edited


def _placed(shot: Shot, regions: np.ndarray):
    """Each source frame of the shot, decoded, with where it falls on the working grid: (index,
    frame [H, W, 3] uint8, k0, k1, a: between working frames k0 and k1 at a, its working region)."""
    grid, info = shot.grid, shot.source.info
    first, last = shot.range_indices
    times = info.frame_times or tuple(i / grid.fps for i in range(info.num_frames))
    for index, frame in iter_frames(shot.source.path, info, None, first):
        if index > last:
            break
        position = min(max(grid.position(times[index]), 0.0), grid.frames - 1.0)
        k0 = min(int(math.floor(position + TIME_EPSILON)), grid.frames - 1)
        k1, a = min(k0 + 1, grid.frames - 1), position - k0
        yield index, frame, k0, k1, a, regions[k0] | (regions[k1] if a > TIME_EPSILON else False)


def write_output(
    shot: Shot,
    frames: np.ndarray,
    edit_mask: np.ndarray,
    options: OutputOptions,
    out_dir: Path,
    on_write: OnWrite | None = None,
) -> WrittenOutput:
    """Write the shot's output into ``out_dir`` (a file named ``output<suffix>``): every source frame
    of the shot, at its own time and the source's size, the generated region composited over it.
    ``frames``/``edit_mask``: the working grid's generated frames and the method's mask for them."""
    grid, info = shot.grid, shot.source.info
    generated, regions = frames[: grid.frames], edit_mask[: grid.frames]
    first, last = shot.range_indices
    path = Path(out_dir) / f"output{output_suffix(shot, options.encoding, options.container)}"
    times = info.frame_times or tuple(i / grid.fps for i in range(info.num_frames))
    start_time = times[first]
    # Each frame keeps its source timestamp, the first's included (a webm's first frame may come at
    # 7 ms, its audio at 0); a part of the source moves earlier by its offset from the first frame.
    origin = float(info.first_pts * Fraction(info.time_base)) if info.frame_times else 0.0
    if Encoding(options.encoding) is Encoding.PNG_SEQUENCE:
        writer = PngWriter(path)
    else:
        lossless = Encoding(options.encoding) is Encoding.MP4_LOSSLESS
        writer = VideoWriter(path, shot, start_time, lossless, options.quality)
    compositor = _Compositor(grid, info.width, info.height, options)
    interpolate = _Interpolator(generated, options.interpolation)
    edited = edited_first_frame(shot)
    total, written = last - first + 1, 0
    try:
        for index, frame, k0, k1, a, region in _placed(shot, regions):
            replacement = edited if index == first and edited is not None and options.composite else None
            out = compositor.compose(frame, interpolate.at(k0, k1, a), region, replacement)
            writer.write(out, origin + times[index] - start_time)
            written += 1
            if on_write is not None:
                on_write(written, total)
    finally:
        writer.close()
    duration = (times[last] - start_time) + (1.0 / info.fps if info.fps else 1.0 / grid.fps)
    return WrittenOutput(path, path.suffix, info.width, info.height, written, info.fps or grid.fps, duration,
                    info.audio is not None and path.suffix != ".zip")  # fmt: skip


def delivered_frames(shot: Shot, edit_mask: np.ndarray, options: OutputOptions, delivered: Path):
    """The delivered file beside its source, frame by frame, for measuring what the user receives:
    (index from 0, source frame, delivered frame, coverage: how much of each source pixel the output
    takes from the generated region, ``_Compositor.coverage``), each [H, W, ...] at the source's size,
    both frames decoded from their files as a player shows them."""
    grid, info = shot.grid, shot.source.info
    compositor = _Compositor(grid, info.width, info.height, options)
    first = shot.range_indices[0]
    output = iter_frames(delivered, probe(delivered, "output"))
    for (index, frame, _, _, _, region), (_, out) in zip(_placed(shot, edit_mask[: grid.frames]), output):
        yield index - first, frame, out, compositor.coverage(region)
