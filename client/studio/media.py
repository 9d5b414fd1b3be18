"""The studio's copies of the server's media: what the page plays (the source, the result) and the
tracked mask's frames as overlays it lays over the clip.

Media ids are content hashes, so a copy never goes stale: each is downloaded once, through
``FramecastClient``, into the studio's cache directory (an upload is kept there as it is sent).
"""

from __future__ import annotations

import io
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from framecast.client.client import FramecastClient

OVERLAY_RGB = (255, 40, 150)  # the tracked region's colour over the clip
OVERLAY_FILL, OVERLAY_EDGE = 110, 255  # its opacity inside, and on its edge
MASKS_KEPT = 4  # decoded tracked masks kept in memory


def file_name(media_id: str, filename: str = "") -> str:
    """The cache's file of a media id: its hash, with the suffix of its name (players go by it)."""
    digest = media_id.removeprefix("sha256:")
    if not digest.isalnum():
        raise ValueError(f"media id must be sha256:<hex> but is {media_id!r}")
    return digest + Path(filename).suffix.lower()


class MediaCache:
    def __init__(self, client: FramecastClient, directory: Path):
        self.client, self.directory = client, Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()

    def keep(self, media_id: str, filename: str, path: Path) -> Path:
        """Keep an uploaded file (moved) as the copy of ``media_id``."""
        target = self.directory / file_name(media_id, filename)
        if not target.exists():
            shutil.move(str(path), target)
        return target

    def path(self, media_id: str, filename: str = "") -> Path:
        """The local copy of ``media_id``, downloaded the first time. Raises FramecastError (NOT_FOUND)."""
        target = self.directory / file_name(media_id, filename)
        with self._lock:
            fetching = self._fetching.setdefault(target.name, threading.Lock())
        with fetching:
            if not target.exists():
                self.client.download_to(media_id, target)
        return target

    def mask(self, media_id: str) -> np.ndarray:
        """A tracked mask video as [frames, h, w] bool (white = the region), decoded once."""
        with self._lock:
            if media_id in self._masks:
                self._masks.move_to_end(media_id)
                return self._masks[media_id]
        import av

        with av.open(str(self.path(media_id, "tracked.mp4"))) as container:
            frames = [frame.to_ndarray(format="gray") >= 128 for frame in container.decode(container.streams.video[0])]
        mask = np.stack(frames)
        with self._lock:
            self._masks[media_id] = mask
            while len(self._masks) > MASKS_KEPT:
                self._masks.popitem(last=False)
        return mask

    def overlay_png(self, media_id: str, index: int) -> bytes:
        """Frame ``index`` of a tracked mask as a transparent PNG: the region tinted, its edge solid,
        nothing elsewhere (a frame where the region was lost is all transparent)."""
        from PIL import Image

        masks = self.mask(media_id)
        region = masks[min(max(index, 0), len(masks) - 1)]
        inner = region.copy()
        inner[1:, :] &= region[:-1, :]
        inner[:-1, :] &= region[1:, :]
        inner[:, 1:] &= region[:, :-1]
        inner[:, :-1] &= region[:, 1:]
        rgba = np.zeros((*region.shape, 4), np.uint8)
        rgba[region, :3] = OVERLAY_RGB
        rgba[region, 3] = OVERLAY_FILL
        rgba[region & ~inner, 3] = OVERLAY_EDGE
        out = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(out, format="PNG")
        return out.getvalue()
