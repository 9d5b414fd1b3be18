"""What an upload sends: files, bytes and arrays as a stream of chunks, the header on the first."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from framecast.common import media
from framecast.v1 import framecast_pb2 as pb

MiB = 1 << 20

OnBytes = Callable[[int, int], None]  # (bytes sent so far, bytes in all)


def media_chunks(
    source: str | os.PathLike | bytes, filename: str | None = None, chunk_bytes: int = MiB
) -> Iterator[pb.MediaChunk]:
    """The ``MediaChunk`` stream of an upload: the header (filename, size) rides on the first
    chunk only; an empty payload is still one chunk. Raises FileNotFoundError for a missing
    path and ValueError for ``chunk_bytes < 1`` at call time, not mid-stream."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1 but is {chunk_bytes}")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = memoryview(source).cast("B")
        header = pb.MediaRef(filename=filename or "", size_bytes=len(data))
        return _chunks_of_bytes(data, header, chunk_bytes)
    path = Path(source)
    size = path.stat().st_size  # FileNotFoundError here, before any RPC starts
    if not path.is_file():
        raise IsADirectoryError(f"{path} is not a file")
    header = pb.MediaRef(filename=filename or path.name, size_bytes=size)
    return _chunks_of_file(path, header, chunk_bytes)


def adapter_chunks(
    name: str, source: str | os.PathLike | bytes, filename: str | None = None, chunk_bytes: int = MiB,
    drop_unsupported: bool = False, sampling: pb.Sampling | None = None,
) -> Iterator[pb.ImportAdapterChunk]:  # fmt: skip
    """The ``ImportAdapterChunk`` stream of an adapter import: the header (name, filename, what to do
    with entries framecast cannot apply, an accelerator's sampling) on the first chunk only. Raises
    FileNotFoundError / ValueError at call time, as ``media_chunks``."""
    media = media_chunks(source, filename, chunk_bytes)  # validates now
    header = pb.ImportAdapterHeader(name=name, filename=filename or ("" if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).name),
                                    drop_unsupported=drop_unsupported, sampling=sampling)  # fmt: skip

    def chunks() -> Iterator[pb.ImportAdapterChunk]:
        for index, chunk in enumerate(media):
            yield pb.ImportAdapterChunk(header=header if index == 0 else None, data=chunk.data)

    return chunks()


def _chunks_of_bytes(data: memoryview, header: pb.MediaRef, chunk_bytes: int) -> Iterator[pb.MediaChunk]:
    yield pb.MediaChunk(header=header, data=bytes(data[:chunk_bytes]))
    for start in range(chunk_bytes, len(data), chunk_bytes):
        yield pb.MediaChunk(data=bytes(data[start : start + chunk_bytes]))


def _chunks_of_file(path: Path, header: pb.MediaRef, chunk_bytes: int) -> Iterator[pb.MediaChunk]:
    with open(path, "rb") as f:
        yield pb.MediaChunk(header=header, data=f.read(chunk_bytes))
        while piece := f.read(chunk_bytes):
            yield pb.MediaChunk(data=piece)


def reporting(chunks: Iterator[pb.MediaChunk], on_progress: OnBytes) -> Iterator[pb.MediaChunk]:
    """``chunks`` as they are, calling ``on_progress(sent, total)`` as each is taken."""
    sent, total = 0, 0
    for chunk in chunks:
        if chunk.HasField("header"):
            total = chunk.header.size_bytes
        sent += len(chunk.data)
        yield chunk
        on_progress(sent, total)


def encode_array(frames: np.ndarray, fps: float = 16, lossless: bool = True) -> tuple[bytes, str]:
    """Frames or a mask as uploadable bytes and a file name.

    ``[H, W, 3]`` uint8 or ``[H, W]`` bool -> PNG; ``[F, H, W, 3]`` uint8 or ``[F, H, W]`` bool
    -> H.264 mp4 (lossless: yuv444p CRF 0). Bool arrays are masks (True = edit region, white).
    Raises ValueError for any other shape or dtype.
    """
    frames = np.asarray(frames)
    if frames.dtype == bool:
        if frames.ndim not in (2, 3):
            raise ValueError(f"a mask must be [H, W] or [F, H, W] bool but has shape {frames.shape}")
        image = frames.ndim == 2
        frames = media.mask_to_frames(frames[None] if image else frames)
        frames = frames[0] if image else frames
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (or bool for a mask) but are {frames.dtype}")
    if frames.ndim == 3 and frames.shape[-1] == 3:
        return media.encode_png(frames), "image.png"
    if frames.ndim == 4 and frames.shape[-1] == 3:
        return media.encode_video(frames, fps, lossless=lossless), "video.mp4"
    raise ValueError(f"frames must be [H, W, 3] or [F, H, W, 3] but have shape {frames.shape}")
