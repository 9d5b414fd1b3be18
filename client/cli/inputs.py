"""The local inputs of a job command: files and folders of frames, uploaded once each with progress.

A folder given as ``--source`` or ``--mask`` holds one PNG or JPEG a frame, in name order (numbers
in names compared as numbers: ``f2.png`` before ``f10.png``): it is zipped into an image sequence
in a temporary file, the folder itself never touched, and the zip uploaded.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from framecast.client.cli.args import CliError
from framecast.client.client import FramecastClient
from framecast.client.display import short_media_id
from framecast.client.progress import UploadProgress
from framecast.v1 import framecast_pb2 as pb

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # every entry's date: the same frames make the same zip, and the same media id


def frame_files(folder: Path, flag: str) -> list[Path]:
    """The frames of a folder in name order (numbers compared as numbers); hidden files and other
    kinds of file are left out. Raises CliError naming ``flag`` when it holds no frame."""
    frames = [path for path in folder.iterdir()
              if path.is_file() and path.suffix.lower() in FRAME_SUFFIXES and not path.name.startswith(".")]  # fmt: skip
    if not frames:
        raise CliError(f"{flag}: the folder {folder} holds no PNG or JPEG frames")
    return sorted(frames, key=_natural_key)


def _natural_key(path: Path) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", path.name)]


def zip_frames(folder: Path, target: Path, flag: str) -> Path:
    """Write the frames of ``folder`` into the zip ``target`` as an image sequence: entries renamed
    ``frame_00000.png`` ... in the folder's order (the server reads a zip in name order), stored
    as they are (PNG and JPEG are compressed already). Returns ``target``."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for index, frame in enumerate(frame_files(folder, flag)):
            entry = zipfile.ZipInfo(f"frame_{index:05d}{frame.suffix.lower()}", date_time=_ZIP_TIME)
            archive.writestr(entry, frame.read_bytes())
    return target


class Uploads:
    """Uploads a command's inputs, each file or folder once however many times it is named (an
    edit's source serves its training and its propagation; a reference may be the edited first
    frame), with a progress bar (or plain lines) per file. Use as a context manager: the zips of
    folders live in a temporary directory until it closes. ``seconds``: the time the uploads took."""

    def __init__(self, client: FramecastClient, timeout: float | None, quiet: bool = False):
        self.client, self.timeout, self.quiet = client, timeout, quiet
        self.done: dict[Path, pb.MediaRef] = {}
        self.seconds = 0.0
        self._scratch: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> Uploads:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()

    def __call__(self, path: Path, flag: str) -> pb.MediaRef:
        """Upload a file, or a folder of frames as an image sequence; returns its MediaRef."""
        key = path.resolve()
        if key not in self.done:
            upload, name = path, path.name
            if path.is_dir():
                if self._scratch is None:
                    self._scratch = tempfile.TemporaryDirectory(prefix="framecast-")
                name = f"{path.name or 'frames'}.zip"
                upload = zip_frames(path, Path(self._scratch.name) / f"{len(self.done)}-{name}", flag)
            progress = UploadProgress(name, disable=self.quiet)
            started = time.monotonic()
            try:
                ref = self.client.upload(upload, filename=name, timeout=self.timeout, on_progress=progress)
            finally:
                progress.close()
                self.seconds += time.monotonic() - started
            if not self.quiet:
                print(f"uploaded {name}: {describe_media(ref)}", file=sys.stderr)
            self.done[key] = ref
        return self.done[key]


def describe_media(ref: pb.MediaRef) -> str:
    """``sha256:4335614be1e6... 1920x1080, 150 frames at 30 fps, 5.00 s, audio`` and the like."""
    parts = [f"{ref.width}x{ref.height}"]
    if ref.kind == pb.MEDIA_KIND_IMAGE:
        parts.append("image")
    elif ref.fps:
        parts.append(f"{ref.num_frames} frames at {ref.fps:.3g} fps, {ref.duration_s:.2f} s")
    else:
        parts.append(f"{ref.num_frames} frame(s)")
    if ref.rotation:
        parts.append(f"rotated {ref.rotation} degrees")
    if ref.has_audio:
        parts.append("audio")
    return f"{short_media_id(ref.id)} {', '.join(parts)}"
