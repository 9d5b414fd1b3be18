"""Real footage in: what a clip is (``probe``), and reading its frames as displayed.

A clip is read as a viewer shows it: rotation metadata applied (the display matrix of phone
videos), frames placed by their own timestamps (variable frame rates included), images turned
upright by their EXIF orientation. Reading streams: a video is decoded frame by frame, and only
the frames a caller keeps stay in memory.

Torch-free (numpy, PyAV, Pillow): the client can probe a file too.
"""

from __future__ import annotations

import bisect
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from framecast.common.media import MediaKind, sniff_kind
from framecast.engine.errors import InvalidInput

TIME_EPSILON = 1e-6  # seconds: timestamps this close are the same instant (float rounding of exact rationals)
MAX_SEQUENCE_ENTRIES = 100_000


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class FootageInfo:
    """A stored clip as displayed. ``frame_times`` are seconds from its first frame, in
    presentation order; image sequences and images have none of their own (``fps`` 0)."""

    kind: MediaKind
    width: int  # displayed: rotation applied
    height: int
    num_frames: int
    fps: float = 0.0  # average frames per second; 0 for images and image sequences
    frame_times: tuple[float, ...] = ()  # videos only
    rotation: int = 0  # degrees the decoded frames are turned counterclockwise to be displayed: 0, 90, 180 or 270
    codec: str = ""
    audio: AudioInfo | None = None
    time_base: str = "1/1"  # of the video stream's timestamps, as "num/den"
    first_pts: int = 0  # the first frame's presentation timestamp: frame times count from it

    @property
    def duration_s(self) -> float:
        """Seconds the clip lasts: its last frame's time plus one average frame; 0 for stills."""
        if not self.frame_times:
            return 0.0
        return self.frame_times[-1] + (1.0 / self.fps if self.fps else 0.0)

    @property
    def aspect(self) -> float:
        return self.width / self.height

    def to_json(self) -> dict:
        return {"kind": self.kind.value, "width": self.width, "height": self.height, "num_frames": self.num_frames,
                "fps": self.fps, "frame_times": [round(t, 9) for t in self.frame_times], "rotation": self.rotation,
                "codec": self.codec, "audio": None if self.audio is None else vars(self.audio),
                "time_base": self.time_base, "first_pts": self.first_pts}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> FootageInfo:
        audio = data.get("audio")
        return cls(MediaKind(data["kind"]), int(data["width"]), int(data["height"]), int(data["num_frames"]),
                   float(data.get("fps", 0.0)), tuple(data.get("frame_times", ())), int(data.get("rotation", 0)),
                   data.get("codec", ""), AudioInfo(**audio) if audio else None, data.get("time_base", "1/1"),
                   int(data.get("first_pts", 0)))  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """What a stored clip may be: pixels per frame and seconds (frames for image sequences)."""

    max_pixels: int | None = None
    max_duration_s: float | None = None
    max_frames: int | None = None  # image sequences: entries

    def check_size(self, field: str, width: int, height: int) -> None:
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise InvalidInput(field, f"{width}x{height}", f"is larger than the limit of {self.max_pixels} pixels per "
                               "frame; scale it down first")  # fmt: skip

    def check_length(self, field: str, info: FootageInfo) -> None:
        if self.max_duration_s is not None and info.duration_s > self.max_duration_s + TIME_EPSILON:
            raise InvalidInput(field, f"{info.duration_s:.2f} s", f"is longer than the limit of {self.max_duration_s:g} s; "
                               "cut it, or send a part of it")  # fmt: skip
        if self.max_frames is not None and info.kind is MediaKind.IMAGE_SEQUENCE and info.num_frames > self.max_frames:
            raise InvalidInput(field, f"{info.num_frames} frames", f"is longer than the limit of {self.max_frames} frames")


# --- probing ----------------------------------------------------------------------------------


def probe(source: str | Path | bytes, field: str = "data", limits: Limits = Limits()) -> FootageInfo:
    """What ``source`` (a file or its bytes) is, read from its headers, its packets' timestamps and
    its first frame, without decoding the rest. InvalidInput naming ``field`` for empty, corrupt or
    oversized media."""
    data = source if isinstance(source, bytes) else None
    head = data[:16] if data is not None else _head(Path(source))
    if not head:
        raise InvalidInput(field, "", "is empty: no bytes were uploaded")
    kind = sniff_kind(head)
    try:
        if kind is MediaKind.IMAGE:
            with _open_image(source) as image:
                limits.check_size(field, *image.size)  # before any pixel is decoded (a PNG's EXIF may come after them)
                width, height = _upright_size(image)
                image.load()
            info = FootageInfo(kind, width, height, 1)
        elif kind is MediaKind.IMAGE_SEQUENCE:
            info = _probe_sequence(source, field, limits)
        else:
            info = _probe_video(source, field, limits)
    except InvalidInput:
        raise
    except Exception as exc:  # PyAV, Pillow and zipfile raise many types for broken input
        size = len(data) if data is not None else Path(source).stat().st_size
        reason = str(exc) if data is not None else str(exc).replace(str(source), "<file>")  # no server path in replies
        raise InvalidInput(field, f"<{size} bytes>", f"is not a readable {kind.value}: {reason}") from None
    limits.check_length(field, info)
    return info


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(16)


def _binary(source: str | Path | bytes):
    return io.BytesIO(source) if isinstance(source, bytes) else str(source)


def _open_image(source):
    from PIL import Image

    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def _upright_size(image) -> tuple[int, int]:
    """An image's size as displayed: EXIF orientations 5-8 swap width and height."""
    orientation = image.getexif().get(0x0112, 1)
    return (image.height, image.width) if orientation in (5, 6, 7, 8) else image.size


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _sequence_names(archive: zipfile.ZipFile) -> list[str]:
    """The frames of an image sequence: its PNG and JPEG entries by name (other files, such as the
    timestamps.json framecast writes beside its own frames, are not frames)."""
    names = [n for n in archive.namelist() if not n.endswith("/")]
    images = [n for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
    return sorted(images if images or not names else names)


def entry_limit(limits: Limits) -> int:
    """Bytes one image of a sequence may inflate to: an uncompressed RGBA frame of the largest size
    allowed, and a margin (a PNG or JPEG is smaller than that)."""
    return 4 * (limits.max_pixels or 7680 * 4320) + (1 << 20)


def _probe_sequence(source, field: str, limits: Limits) -> FootageInfo:
    with zipfile.ZipFile(_binary(source)) as archive:
        names = _sequence_names(archive)
        largest = entry_limit(limits)
        for entry in archive.infolist():  # sizes as the archive declares them, before anything is inflated
            if entry.file_size > largest:
                raise InvalidInput(field, f"{entry.filename}: {entry.file_size} bytes", f"inflates beyond {largest} "
                                   "bytes, more than any allowed frame needs")  # fmt: skip
        if len(names) > MAX_SEQUENCE_ENTRIES:
            raise InvalidInput(field, f"{len(names)} entries", f"has more than {MAX_SEQUENCE_ENTRIES} frames")
        if limits.max_frames is not None and len(names) > limits.max_frames:
            raise InvalidInput(field, f"{len(names)} frames", f"is longer than the limit of {limits.max_frames} frames")
        if not names:
            raise InvalidInput(field, "<zip>", "contains zero frames")
        from PIL import Image

        sizes = set()
        for name in names:
            # Streamed from the archive, never inflated whole; its size is checked from its header
            # before a PNG without early EXIF is decoded to find its orientation.
            with archive.open(name) as entry, Image.open(entry) as image:
                limits.check_size(field, *image.size)
                sizes.add(_upright_size(image))
    if len(sizes) != 1:
        raise InvalidInput(field, sorted(sizes), "holds frames of different sizes")
    (width, height), = sizes
    limits.check_size(field, width, height)
    return FootageInfo(MediaKind.IMAGE_SEQUENCE, width, height, len(names))


def _probe_video(source, field: str, limits: Limits) -> FootageInfo:
    import av

    with av.open(_binary(source), mode="r") as container:
        if not container.streams.video:
            raise InvalidInput(field, "<no video stream>", "has no video stream")
        stream = container.streams.video[0]
        coded = (stream.codec_context.width, stream.codec_context.height)
        limits.check_size(field, *coded)
        first = next(container.decode(stream), None)
        if first is None:
            raise InvalidInput(field, "<video>", "contains zero frames")
        rotation = _quarter_turns(first.rotation) * 90
        container.seek(0)
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size)
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_info = None if audio is None else AudioInfo(audio.codec_context.name, int(audio.codec_context.sample_rate or 0),
                                                          int(audio.codec_context.channels or 0))  # fmt: skip
        time_base = stream.time_base
        average = float(stream.average_rate or stream.guessed_rate or 0.0)
        codec = stream.codec_context.name
    if not pts:
        pts = [first.pts or 0]
    times = tuple(float((p - pts[0]) * time_base) for p in pts)
    width, height = coded if rotation in (0, 180) else coded[::-1]
    if len(times) > 1 and times[-1] > 0:
        average = (len(times) - 1) / times[-1] if not average else average
    return FootageInfo(MediaKind.VIDEO, width, height, len(times), average, times, rotation, codec,
                       audio_info, f"{time_base.numerator}/{time_base.denominator}", pts[0])  # fmt: skip


def _quarter_turns(degrees: float) -> int:
    """The display matrix's counterclockwise rotation as quarter turns (np.rot90's k)."""
    return int(round((degrees or 0) / 90.0)) % 4


# --- reading ----------------------------------------------------------------------------------


def read_image(source: str | Path | bytes, field: str = "image") -> np.ndarray:
    """An image, upright (EXIF orientation applied), as [H, W, 3] uint8 RGB."""
    from PIL import ImageOps

    try:
        with _open_image(source) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:
        raise InvalidInput(field, "<image>", f"is not a readable image: {exc}") from None


def iter_frames(source: str | Path | bytes, info: FootageInfo, wanted: set[int] | None = None,
                start_index: int = 0) -> Iterator[tuple[int, np.ndarray]]:  # fmt: skip
    """(index, frame [H, W, 3] uint8 as displayed) of the clip's frames in order, from
    ``start_index`` on; with ``wanted``, only those indices are converted (the rest are decoded and
    dropped). One frame is held at a time."""
    if info.kind is MediaKind.IMAGE:
        if start_index == 0 and (wanted is None or 0 in wanted):
            yield 0, read_image(source)
        return
    if info.kind is MediaKind.IMAGE_SEQUENCE:
        with zipfile.ZipFile(_binary(source)) as archive:
            for index, name in enumerate(_sequence_names(archive)):
                if index >= start_index and (wanted is None or index in wanted):
                    yield index, read_image(archive.read(name), "frame")
        return
    yield from _iter_video(source, info, wanted, start_index)


def _iter_video(source, info: FootageInfo, wanted: set[int] | None, start_index: int):
    import av

    last = max(wanted) if wanted else info.num_frames - 1
    times, turns = info.frame_times, _quarter_turns(info.rotation)
    time_base = Fraction(info.time_base)
    with av.open(_binary(source), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start_index > 0:  # a keyframe at or before the first wanted frame, then decode forward
            target = info.first_pts + round(Fraction(times[start_index]).limit_denominator(1 << 30) / time_base)
            container.seek(target, stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            time = float((frame.pts - info.first_pts) * time_base)
            index = min(bisect.bisect_left(times, time - TIME_EPSILON), len(times) - 1)
            if index >= start_index and (wanted is None or index in wanted):
                array = frame.to_ndarray(format="rgb24")
                yield index, np.ascontiguousarray(np.rot90(array, turns)) if turns else array
            if index >= last:
                break


@dataclass
class Decoded:
    """What ``decode_all`` read: the frames, and the source's info."""

    frames: np.ndarray  # [F, H, W, 3] uint8
    info: FootageInfo = field(repr=False)


def decode_all(source: str | Path | bytes, field: str = "data") -> Decoded:
    """Every frame of a clip at once (small clips: masks, tests)."""
    info = probe(source, field)
    frames = [frame for _, frame in iter_frames(source, info)]
    return Decoded(np.stack(frames), info)
