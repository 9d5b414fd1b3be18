"""Content-addressed media store: ``<root>/<sha256>/{data,meta.json}``.

Uploads are decoded once on arrival, so corrupt or oversized media is refused before it is
stored; the decoded frames of recently used media stay in a small in-memory cache. A delete
renames the directory out of the way first (one atomic step) and then removes it, so a crash
never leaves half a media file under its id. Leftovers of interrupted deletes and uploads
(an upload is committed by its meta.json, written last) are removed at start-up. ``expire``
deletes what is older than a retention period (the server's ``--media-retention-hours``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from framecast.engine.errors import InvalidInput, MediaNotFound
from framecast.engine.media import Media, MediaKind, atomic_write, decode_media, fsync_dir, remove_interrupted_writes

ID_PREFIX = "sha256:"
_TRASH_PREFIX = ".deleted-"
_DIGEST = re.compile("[0-9a-f]{64}")


@dataclass(frozen=True)
class MediaInfo:
    id: str
    kind: str  # MediaKind value
    num_frames: int
    width: int
    height: int
    fps: float
    size_bytes: int
    filename: str = ""
    created_at: float = 0.0  # unix seconds; the commit time of meta.json, not stored in it


class MediaStore:
    def __init__(self, root: str | Path, max_pixels: int, max_frames: int, cache_items: int = 8):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_pixels = max_pixels
        self.max_frames = max_frames
        self._cache: OrderedDict[str, Media] = OrderedDict()
        self._cache_items = cache_items
        self._lock = threading.Lock()
        self._remove_interrupted_writes()

    def _remove_interrupted_writes(self) -> None:
        """Remove deletes and uploads a crash interrupted: trash, temporary files, media without meta.json."""
        remove_interrupted_writes(self.root)
        for directory in self.root.iterdir():
            if directory.name.startswith(_TRASH_PREFIX):
                shutil.rmtree(directory, ignore_errors=True)
            elif _DIGEST.fullmatch(directory.name) and not (directory / "meta.json").is_file():
                shutil.rmtree(directory, ignore_errors=True)

    def _dir(self, media_id: str) -> Path:
        if not media_id.startswith(ID_PREFIX):
            raise InvalidInput("media id", media_id, f"must look like '{ID_PREFIX}<64 hex digits>'")
        digest = media_id[len(ID_PREFIX) :]
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidInput("media id", media_id, f"must look like '{ID_PREFIX}<64 hex digits>'")
        return self.root / digest

    def put(self, data: bytes, filename: str = "", field: str = "data") -> MediaInfo:
        """Decode, validate and store ``data``; the same bytes always give the same id."""
        media_id = ID_PREFIX + hashlib.sha256(data).hexdigest()
        existing = self._info_or_none(media_id)
        if existing is not None:
            try:  # uploaded again: the retention clock restarts
                os.utime(self._dir(media_id) / "meta.json")
            except FileNotFoundError:  # deleted meanwhile: store it again
                pass
            else:
                return self._info_or_none(media_id) or existing
        media = decode_media(data, field=field, max_pixels=self.max_pixels, max_frames=self.max_frames)
        info = MediaInfo(
            id=media_id,
            kind=media.kind.value,
            num_frames=media.num_frames,
            width=media.width,
            height=media.height,
            fps=media.fps,
            size_bytes=len(data),
            filename=Path(filename).name if filename else "",
        )
        directory = self._dir(media_id)
        meta = {key: value for key, value in asdict(info).items() if key != "created_at"}
        with self._lock:
            try:
                atomic_write(directory / "data", data)
                atomic_write(directory / "meta.json", json.dumps(meta).encode())  # written last: the commit
            except BaseException:
                if not (directory / "meta.json").is_file():  # not stored (a full disk): leave no trace
                    shutil.rmtree(directory, ignore_errors=True)
                raise
            self._remember(media_id, media)
        return replace(info, created_at=(directory / "meta.json").stat().st_mtime)

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
            self._cache.pop(media_id, None)
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

    def frames(self, media_id: str, field: str = "media id") -> np.ndarray:
        """Decoded frames [F, H, W, 3] uint8 of stored media."""
        self.info(media_id, field)
        with self._lock:
            if media_id in self._cache:
                self._cache.move_to_end(media_id)
                return self._cache[media_id].frames
        media = decode_media(self.read_bytes(media_id), field=field)
        with self._lock:
            self._remember(media_id, media)
        return media.frames

    def image(self, media_id: str, field: str) -> np.ndarray:
        """One image [H, W, 3] uint8; refuses media with more than one frame."""
        frames = self.frames(media_id, field)
        if len(frames) != 1:
            raise InvalidInput(field, media_id, f"must be a single image, but has {len(frames)} frames")
        return frames[0]

    def _remember(self, media_id: str, media: Media) -> None:
        self._cache[media_id] = media
        self._cache.move_to_end(media_id)
        while len(self._cache) > self._cache_items:
            self._cache.popitem(last=False)


def kind_of(info: MediaInfo) -> MediaKind:
    return MediaKind(info.kind)
