"""Writing the media framecast handles: frames encoded as H.264, PNG or a zip of PNGs, masks to
and from frames, files written atomically, a stored file's kind from its first bytes.

Torch-free on purpose (numpy, PyAV, Pillow only), so the client and the CLI can use it
without the server's dependencies. Frames are ``[F, H, W, 3] uint8`` RGB; masks are
``[F, H, W] bool`` with True = the edit region. Stored media are read (probed, decoded as a
player shows them) by ``framecast.engine.footage.read``.
"""

from __future__ import annotations

import enum
import io
import os
import secrets
import zipfile
from pathlib import Path

import numpy as np


class MediaKind(str, enum.Enum):
    VIDEO = "video"
    IMAGE = "image"
    IMAGE_SEQUENCE = "image_sequence"  # a zip of PNG/JPEG frames, ordered by file name


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


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> [H, W, 3] uint8 (as stored: frames a server streams, a client's own images)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


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
