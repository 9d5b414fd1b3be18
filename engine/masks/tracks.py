"""Tracked regions kept for the jobs that follow: a training and the propagations after it on the
same shot and prompt track its region once.

A ``TrackCache`` belongs to whoever runs the jobs (the engine holds one); a clip read without one
tracks its region every time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

from framecast.engine.masks.trackers import Track

TRACKS_KEPT = 8  # a training and the propagations that follow it


class TrackCache:
    """The last ``kept`` tracked regions, by what was tracked (a shot's source, grid, prompt and tracker)."""

    def __init__(self, kept: int = TRACKS_KEPT):
        self.kept = kept
        self._tracks: OrderedDict[Hashable, Track] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Track | None:
        with self._lock:
            track = self._tracks.get(key)
            if track is not None:
                self._tracks.move_to_end(key)
            return track

    def put(self, key: Hashable, track: Track) -> None:
        with self._lock:
            self._tracks[key] = track
            self._tracks.move_to_end(key)
            while len(self._tracks) > self.kept:
                self._tracks.popitem(last=False)
