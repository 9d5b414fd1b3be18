"""Reading and writing the media framecast handles: videos, images, masks.

Torch-free on purpose (numpy, PyAV, Pillow only), so the client and the CLI can use it
without the server's dependencies. Frames are ``[F, H, W, 3] uint8`` RGB; masks are
``[F, H, W] bool`` with True = the edit region.
"""

from __future__ import annotations

import enum
import io
import os
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from framecast.engine.errors import InvalidInput


class MediaKind(str, enum.Enum):
    VIDEO = "video"
    IMAGE = "image"
    IMAGE_SEQUENCE = "image_sequence"  # a zip of PNG/JPEG frames, ordered by file name


@dataclass(frozen=True)
class Media:
    """Decoded media. ``frames``: [F, H, W, 3] uint8; ``fps`` is 0 for still images."""

    kind: MediaKind
    frames: np.ndarray
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its files are private (0600). Opened like any new file, the temporary one
    # gets the permissions the process's umask gives, and so does the file it becomes.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"  # what remove_interrupted_writes removes
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make the entries just created, renamed or removed in ``directory`` survive a power loss."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_interrupted_writes(directory: str | os.PathLike) -> None:
    """Delete the temporary files that ``atomic_write``s a crash interrupted left in ``directory`` and below."""
    for path in Path(directory).rglob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)


def sniff_kind(data: bytes) -> MediaKind:
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff":
        return MediaKind.IMAGE
    if data[:4] == b"PK\x03\x04":
        return MediaKind.IMAGE_SEQUENCE
    return MediaKind.VIDEO


@dataclass(frozen=True)
class _Limits:
    field: str
    max_pixels: int | None
    max_frames: int | None

    def check_size(self, width: int, height: int) -> None:
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise InvalidInput(self.field, f"{width}x{height}", f"is larger than the limit of {self.max_pixels} pixels per frame")

    def check_count(self, frames: int) -> None:
        if self.max_frames is not None and frames > self.max_frames:
            raise InvalidInput(self.field, f"{frames} frames", f"is longer than the limit of {self.max_frames} frames")


def decode_media(
    data: bytes, field: str = "data", max_pixels: int | None = None, max_frames: int | None = None
) -> Media:
    """Decode uploaded bytes. Raises InvalidInput naming ``field`` for empty, corrupt or
    oversized data; sizes are checked from headers before any frame is decoded."""
    if not data:
        raise InvalidInput(field, "", "is empty: no bytes were uploaded")
    kind = sniff_kind(data)
    limits = _Limits(field, max_pixels, max_frames)
    try:
        if kind is MediaKind.IMAGE:
            frames, fps = decode_image(data, limits)[None], 0.0
        elif kind is MediaKind.IMAGE_SEQUENCE:
            frames, fps = _decode_image_sequence(data, limits), 0.0
        else:
            frames, fps = _decode_video(data, limits)
    except InvalidInput:
        raise
    except Exception as exc:  # PyAV and Pillow raise many types for broken input
        raise InvalidInput(field, f"<{len(data)} bytes>", f"is not a readable {kind.value}: {exc}") from None
    if frames.shape[0] == 0:
        raise InvalidInput(field, f"<{len(data)} bytes>", "contains zero frames")
    return Media(kind, frames, fps)


def decode_image(data: bytes, limits: _Limits | None = None) -> np.ndarray:
    """PNG/JPEG bytes -> [H, W, 3] uint8."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if limits is not None:
            limits.check_size(*image.size)
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _decode_image_sequence(data: bytes, limits: _Limits) -> np.ndarray:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = sorted(n for n in archive.namelist() if not n.endswith("/"))
        limits.check_count(len(names))
        frames = [decode_image(archive.read(n), limits) for n in names]
    if not frames:
        return np.zeros((0, 1, 1, 3), np.uint8)
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise InvalidInput("data", sorted(shapes), "holds frames of different sizes")
    return np.stack(frames)


def _decode_video(data: bytes, limits: _Limits) -> tuple[np.ndarray, float]:
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.video:
            raise InvalidInput(limits.field, f"<{len(data)} bytes>", "has no video stream")
        stream = container.streams.video[0]
        limits.check_size(stream.codec_context.width, stream.codec_context.height)
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        frames = []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            limits.check_count(len(frames))
    if not frames:
        return np.zeros((0, 1, 1, 3), np.uint8), fps
    return np.stack(frames), fps


def encode_video(frames: np.ndarray, fps: float, lossless: bool = False) -> bytes:
    """[F, H, W, 3] uint8 -> H.264 mp4 bytes (yuv420p, CRF 18; lossless: yuv444p, CRF 0)."""
    import av

    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    height, width = frames.shape[1:3]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=_fps_fraction(fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv444p" if lossless else "yuv420p"
        stream.options = {"crf": "0" if lossless else "18", "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def _fps_fraction(fps: float):
    from fractions import Fraction

    return Fraction(fps or 16).limit_denominator(1001)


def encode_png(image: np.ndarray) -> bytes:
    """[H, W, 3] or [H, W] uint8 -> PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_png_sequence(frames: np.ndarray) -> bytes:
    """[F, H, W, 3] uint8 -> a zip of lossless PNG frames named 00000.png, 00001.png, ...; the same
    frames always give the same bytes (every entry is dated 1980-01-01, not when it was written)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for index, frame in enumerate(frames):
            entry = zipfile.ZipInfo(f"{index:05d}.png", date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16  # a plain readable file
            archive.writestr(entry, encode_png(frame))
    return buffer.getvalue()


def mask_from_frames(frames: np.ndarray) -> np.ndarray:
    """[F, H, W, 3] uint8 mask frames (white = edit region) -> [F, H, W] bool.

    Averages RGB and thresholds at mid-grey, which survives lossy video coding.
    """
    return frames.astype(np.float32).mean(axis=-1) >= 127.5


def mask_to_frames(mask: np.ndarray) -> np.ndarray:
    """[F, H, W] bool -> [F, H, W, 3] uint8 (white = edit region)."""
    return np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=-1)
