"""Content-addressed media store: ``<root>/<sha256>/{data,meta.json}``.

Uploads are probed on arrival (headers, packet timestamps and the first frame: never every
frame), so corrupt, oversized or too long media is refused before it is stored; jobs read the
stored file itself, streaming (``framecast.engine.footage.read``). A delete
renames the directory out of the way first (one atomic step) and then removes it, so a crash
never leaves half a media file under its id. Leftovers of interrupted deletes and uploads
(an upload is committed by its meta.json, written last) are removed at start-up. ``expire``
deletes what is older than a retention period (the server's ``--media-retention-hours``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from framecast.common.media import MediaKind, atomic_write, fsync_dir, remove_interrupted_writes
from framecast.engine.errors import InvalidInput, MediaNotFound
from framecast.engine.footage.read import FootageInfo, Limits, decode_all, probe

ID_PREFIX = "sha256:"
_TRASH_PREFIX = ".deleted-"
_DIGEST = re.compile("[0-9a-f]{64}")


@dataclass(frozen=True)
class MediaInfo:
    id: str
    kind: str  # MediaKind value
    num_frames: int
    width: int  # as displayed
    height: int
    fps: float
    size_bytes: int
    filename: str = ""
    created_at: float = 0.0  # unix seconds; the commit time of meta.json, not stored in it
    footage: dict | None = None  # FootageInfo.to_json(); None in records older than it (probed when read)

    @property
    def duration_s(self) -> float:
        return FootageInfo.from_json(self.footage).duration_s if self.footage else 0.0


class MediaStore:
    def __init__(self, root: str | Path, max_pixels: int | None = None, max_duration_s: float | None = None,
                 max_frames: int | None = None, sweep: bool = True):  # fmt: skip
        """``max_pixels`` per frame, ``max_duration_s`` for videos, ``max_frames`` for image sequences:
        uploads beyond them are refused (results are stored whatever they are). ``sweep``: remove what
        interrupted writes left, for a process that is the store's only writer; a cluster's processes,
        which share the store, pass False (another one's upload in flight looks the same)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.limits = Limits(max_pixels, max_duration_s, max_frames)
        self._lock = threading.Lock()
        if sweep:
            self._remove_interrupted_writes()

    def _remove_interrupted_writes(self) -> None:
        """Remove deletes and uploads a crash interrupted: trash (an upload's spooled file, a renamed
        entry, a staging or scratch directory), temporary files, media without meta.json."""
        remove_interrupted_writes(self.root)
        for entry in self.root.iterdir():
            if entry.name.startswith(_TRASH_PREFIX) or (_DIGEST.fullmatch(entry.name) and not (entry / "meta.json").is_file()):
                _remove(entry)

    def _dir(self, media_id: str) -> Path:
        if not media_id.startswith(ID_PREFIX):
            raise InvalidInput("media id", media_id, f"must look like '{ID_PREFIX}<64 hex digits>'")
        digest = media_id[len(ID_PREFIX) :]
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidInput("media id", media_id, f"must look like '{ID_PREFIX}<64 hex digits>'")
        return self.root / digest

    def put(self, data: bytes, filename: str = "", field: str = "data") -> MediaInfo:
        """Probe, validate and store ``data``; the same bytes always give the same id."""
        media_id = ID_PREFIX + hashlib.sha256(data).hexdigest()
        existing = self._again(media_id)
        if existing is not None:
            return existing
        footage = probe(data, field, self.limits)
        return self._commit(media_id, footage, len(data), filename, lambda path: atomic_write(path, data))

    def put_stream(self, chunks: Iterable[bytes], filename: str = "", field: str = "data",
                   max_bytes: int | None = None) -> MediaInfo:  # fmt: skip
        """Probe, validate and store an upload arriving in ``chunks``: spooled to a file beside the
        store as it arrives, hashed on the way, so its memory is a chunk's whatever its size (a refused
        upload never sits in memory whole). InvalidInput naming ``field`` beyond ``max_bytes`` or for
        media ``put`` refuses; the spooled file is removed whatever happens."""
        spool = self.root / f"{_TRASH_PREFIX}upload-{secrets.token_hex(6)}"
        try:
            digest, size = hashlib.sha256(), 0
            with open(spool, "wb") as f:
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise InvalidInput(field, f"> {max_bytes} bytes", "exceeds the upload limit")
                    digest.update(chunk)
                    f.write(chunk)
            media_id = ID_PREFIX + digest.hexdigest()
            existing = self._again(media_id)
            if existing is not None:
                return existing
            footage = probe(spool, field, self.limits)

            def move(target: Path) -> None:
                with open(spool, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(spool, target)
                fsync_dir(target.parent)

            return self._commit(media_id, footage, size, filename, move)
        finally:
            spool.unlink(missing_ok=True)

    def put_file(self, path: str | Path, filename: str = "") -> MediaInfo:
        """Store the file at ``path`` (a job's result, not an upload: no limits apply), moving it
        into the store; the same bytes always give the same id."""
        path = Path(path)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        media_id = ID_PREFIX + digest.hexdigest()
        existing = self._again(media_id)
        if existing is not None:
            path.unlink(missing_ok=True)
            return existing
        footage = probe(path, "result")

        def move(target: Path) -> None:
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            os.replace(path, target)  # same file system: the data dir's temporary folder
            fsync_dir(target.parent)

        return self._commit(media_id, footage, path.stat().st_size, filename, move)

    def scratch_dir(self) -> Path:
        """A fresh directory on the store's file system for a job to write a result into (removed at
        start-up if a crash leaves it)."""
        scratch = self.root / f"{_TRASH_PREFIX}scratch-{secrets.token_hex(6)}"
        scratch.mkdir(parents=True)
        return scratch

    def _again(self, media_id: str) -> MediaInfo | None:
        existing = self._info_or_none(media_id)
        if existing is None:
            return None
        try:  # uploaded again: the retention clock restarts
            os.utime(self._dir(media_id) / "meta.json")
        except FileNotFoundError:  # deleted meanwhile: store it again
            return None
        return self._info_or_none(media_id) or existing

    def _commit(self, media_id: str, footage: FootageInfo, size: int, filename: str, write_data) -> MediaInfo:
        info = MediaInfo(
            id=media_id, kind=footage.kind.value, num_frames=footage.num_frames, width=footage.width,
            height=footage.height, fps=footage.fps, size_bytes=size, filename=Path(filename).name if filename else "",
            footage=footage.to_json(),
        )  # fmt: skip
        directory = self._dir(media_id)
        meta = {key: value for key, value in asdict(info).items() if key != "created_at"}
        # Written whole in a staging directory, then renamed into place in one step: processes sharing
        # the store (a cluster's replicas and fronts) never see, or clean up, another's half-written
        # entry, and of two storing the same bytes at once one rename wins and the other keeps it.
        staging = self.root / f"{_TRASH_PREFIX}commit-{secrets.token_hex(6)}"
        try:
            staging.mkdir(parents=True)
            write_data(staging / "data")
            atomic_write(staging / "meta.json", json.dumps(meta).encode())  # the commit marker, as before
            with self._lock:
                self._move_into_place(staging, directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return replace(info, created_at=(directory / "meta.json").stat().st_mtime)

    def _move_into_place(self, staging: Path, directory: Path) -> None:
        """Rename ``staging`` to ``directory``; when an entry is there already, keep a committed one
        (the same bytes, by their digest) and move a crash's leftover (no meta.json) out of the way."""
        for _ in range(3):
            try:
                os.rename(staging, directory)
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                if (directory / "meta.json").is_file():
                    return
                leftover = self.root / f"{_TRASH_PREFIX}{directory.name}-{secrets.token_hex(4)}"
                with contextlib.suppress(FileNotFoundError):
                    directory.rename(leftover)
                shutil.rmtree(leftover, ignore_errors=True)
                continue
            fsync_dir(self.root)
            return
        raise OSError(errno.EEXIST, f"cannot store {directory.name}: its directory keeps reappearing without a commit")

    def _info_or_none(self, media_id: str) -> MediaInfo | None:
        meta = self._dir(media_id) / "meta.json"
        try:
            fields = json.loads(meta.read_text())
            fields["created_at"] = meta.stat().st_mtime
        except FileNotFoundError:
            return None
        return MediaInfo(**fields)

    def list(self) -> list[MediaInfo]:
        """Every stored media, newest first."""
        infos = []
        for directory in self.root.iterdir():
            if directory.name.startswith("."):
                continue
            try:
                info = self._info_or_none(ID_PREFIX + directory.name)
            except InvalidInput:  # not a media directory
                continue
            if info is not None:
                infos.append(info)
        return sorted(infos, key=lambda info: info.created_at, reverse=True)

    def delete(self, media_id: str, field: str = "id") -> None:
        self.info(media_id, field)
        directory = self._dir(media_id)
        trash = self.root / f"{_TRASH_PREFIX}{directory.name}-{secrets.token_hex(4)}"
        with self._lock:
            try:
                directory.rename(trash)
            except FileNotFoundError:  # deleted meanwhile
                raise MediaNotFound(media_id) from None
            fsync_dir(self.root)  # gone from under its id for good, power loss or not
        shutil.rmtree(trash, ignore_errors=True)

    def expire(self, max_age_s: float) -> list[str]:
        """Delete every media stored (or uploaded again) more than ``max_age_s`` seconds ago;
        returns the ids deleted."""
        cutoff = time.time() - max_age_s
        deleted = []
        for info in self.list():
            if info.created_at >= cutoff:
                continue
            current = self._info_or_none(info.id)  # uploaded again since the listing: kept
            if current is None or current.created_at >= cutoff:
                continue
            try:
                self.delete(info.id)
            except MediaNotFound:  # deleted meanwhile
                continue
            deleted.append(info.id)
        return deleted

    def info(self, media_id: str, field: str = "media id") -> MediaInfo:
        if not media_id:
            raise InvalidInput(field, media_id, "is required")
        try:
            info = self._info_or_none(media_id)
        except InvalidInput as exc:
            raise InvalidInput(field, media_id, str(exc).split(" (got")[0].removeprefix("media id ")) from None
        if info is None:
            raise MediaNotFound(media_id)
        return info

    def read_bytes(self, media_id: str) -> bytes:
        self.info(media_id)
        try:
            return (self._dir(media_id) / "data").read_bytes()
        except FileNotFoundError:  # deleted since info() found it
            raise MediaNotFound(media_id) from None

    def footage(self, media_id: str, field: str = "media id") -> tuple[Path, FootageInfo]:
        """The stored file of ``media_id`` and what it is; NotFound, or InvalidInput naming ``field``."""
        info = self.info(media_id, field)
        path = self._dir(media_id) / "data"
        if info.footage is None:  # stored before probes were kept: probe it now
            return path, probe(path, field)
        return path, FootageInfo.from_json(info.footage)

    def frames(self, media_id: str, field: str = "media id") -> np.ndarray:
        """Every decoded frame [F, H, W, 3] uint8 of stored media, as displayed (small media only)."""
        path, _ = self.footage(media_id, field)
        return decode_all(path, field).frames


def _remove(path: Path) -> None:
    """Remove a file or a directory tree, whichever ``path`` is (rmtree leaves a file in place)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def kind_of(info: MediaInfo) -> MediaKind:
    return MediaKind(info.kind)
