"""How fast this engine runs, measured on its own jobs, for the time a plan estimates.

Each kind of job (training, propagation) keeps a running mean of seconds per step per latent
token; a plan's estimate is that rate times its steps and tokens. No figure is invented: until
a job of the kind has run, the estimate is 0 (unknown).
"""

from __future__ import annotations

import threading

from framecast.engine.method.windows import latent_frames

PATCH = 16  # pixels a latent token covers along each side (8x VAE, 2x2 patches)


def tokens(frames: int, height: int, width: int) -> int:
    return latent_frames(frames) * max(1, height // PATCH) * max(1, width // PATCH)


class Speed:
    def __init__(self, smoothing: float = 0.3):
        self.smoothing = smoothing
        self._rates: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, kind: str, seconds: float, steps: int, frames: int, height: int, width: int) -> None:
        """A finished job's ``seconds`` of ``steps`` on windows of ``frames`` x ``height`` x ``width``."""
        if steps <= 0 or seconds <= 0:
            return
        rate = seconds / (steps * tokens(frames, height, width))
        with self._lock:
            old = self._rates.get(kind)
            self._rates[kind] = rate if old is None else old + self.smoothing * (rate - old)

    def estimate(self, kind: str, steps: int, frames: int, height: int, width: int) -> float:
        """Seconds ``steps`` would take on windows of that size; 0 when nothing of the kind has run."""
        with self._lock:
            rate = self._rates.get(kind)
        return 0.0 if rate is None else rate * steps * tokens(frames, height, width)
