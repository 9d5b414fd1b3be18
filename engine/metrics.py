"""Quality measures framecast reports (METHOD.md, "Quality measures")."""

from __future__ import annotations

import math

import numpy as np

PSNR_CAP_DB = 100.0  # identical pixels report this instead of infinity


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """PSNR in dB between uint8 images/videos, over the pixels selected by ``where``.

    a, b: [..., H, W, 3] uint8; where: [..., H, W] bool or None for all pixels.
    Returns NaN when ``where`` selects nothing.
    """
    diff = a.astype(np.float64) - b.astype(np.float64)
    squared = (diff**2).mean(axis=-1)
    if where is not None:
        if not where.any():
            return math.nan
        squared = squared[where]
    mse = float(squared.mean())
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def seam_score(frames: np.ndarray, boundaries: list[int]) -> float:
    """Mean frame-to-frame change at window boundaries over the mean change elsewhere.

    frames: [F, H, W, 3] uint8; boundaries: frame indices b where the step b-1 -> b crosses
    from one window's frames to the next. 1.0 means seams are as smooth as ordinary motion.
    """
    if len(frames) < 3 or not boundaries:
        return 1.0
    steps = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # step i: frame i -> i+1
    at_seam = np.zeros(len(steps), dtype=bool)
    for b in boundaries:
        if 1 <= b < len(frames):
            at_seam[b - 1] = True
    if at_seam.all() or not at_seam.any():
        return 1.0
    elsewhere = steps[~at_seam].mean()
    return float(steps[at_seam].mean() / elsewhere) if elsewhere > 0 else 1.0
