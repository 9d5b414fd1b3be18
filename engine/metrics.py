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


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    weights = np.exp(-(offsets**2) / (2 * sigma**2))
    return weights / weights.sum()


def ssim(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean structural similarity of uint8 images/videos, over the pixels selected by ``where``.

    The SSIM map of Wang et al. (2004): 11-tap Gaussian window (sigma 1.5), K1 0.01, K2 0.03,
    computed per colour channel with the frame's edges reflected, averaged over the channels
    and then over the selected pixels. Unselected pixels of ``a`` are taken from ``b`` first, so
    windows that straddle the selection's edge compare only selected pixels: outputs that agree
    on the selection score 1.0 whatever differs elsewhere. a, b: [..., H, W, 3] uint8; where:
    [..., H, W] bool or None for all pixels. Returns NaN when ``where`` selects nothing.
    """
    import torch

    if where is not None:
        if not where.any():
            return math.nan
        a = np.where(where[..., None], a, b)
    height, width = a.shape[-3:-1]
    x = torch.from_numpy(a.reshape(-1, height, width, 3)).permute(0, 3, 1, 2).double()
    y = torch.from_numpy(b.reshape(-1, height, width, 3)).permute(0, 3, 1, 2).double()
    taps = torch.from_numpy(_gaussian_window())
    pad = len(taps) // 2

    def blur(v: torch.Tensor) -> torch.Tensor:  # separable Gaussian, per channel
        v = torch.nn.functional.pad(v, (pad, pad, pad, pad), mode="reflect" if min(height, width) > pad else "replicate")
        channels = v.shape[1]
        v = torch.nn.functional.conv2d(v, taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
        return torch.nn.functional.conv2d(v, taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    per_pixel = index.mean(dim=1).numpy().reshape(a.shape[:-1])  # [..., H, W]
    return float(per_pixel[where].mean() if where is not None else per_pixel.mean())


def temporal_change(frames: np.ndarray, source: np.ndarray, where: np.ndarray) -> float:
    """Temporal smoothness: the output's mean frame-to-frame change over the source's, inside
    ``where`` (a pixel counts for a step when it is selected in either frame).

    frames, source: [F, H, W, 3] uint8; where: [F, H, W] bool. Both mean changes (grey levels
    per frame) have 1 added, which keeps a still source finite: 1.0 means the region changes as
    much from frame to frame as the source does there (a still one included), well above 1 is
    flicker, well below 1 a region frozen while the source moves. 1.0 for a single frame or an
    empty region.
    """
    if len(frames) < 2:
        return 1.0
    region = where[1:] | where[:-1]
    if not region.any():
        return 1.0
    change = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=-1)[region].mean()
    reference = np.abs(np.diff(source.astype(np.int16), axis=0)).mean(axis=-1)[region].mean()
    return float((change + 1.0) / (reference + 1.0))
