"""Quality measures framecast reports (docs/method.md, "Quality measures")."""

from __future__ import annotations

import math

import numpy as np

PSNR_CAP_DB = 100.0  # identical pixels report this instead of infinity
_SSIM_CHUNK_PIXELS = 1 << 22  # frame pixels per SSIM pass: bounds its buffers to ~100 MB each


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """PSNR in dB between uint8 images/videos, over the pixels selected by ``where``.

    a, b: [..., H, W, 3] uint8; where: [..., H, W] bool or None for all pixels.
    Returns NaN when ``where`` selects nothing.
    """
    if where is not None and not where.any():
        return math.nan
    diff = a.astype(np.int16) - b.astype(np.int16)
    squared = np.einsum("...c,...c->...", diff, diff, dtype=np.int64)  # exact, per pixel over the channels
    if where is not None:
        squared = squared[where]
    mse = float(squared.sum()) / (squared.size * a.shape[-1])
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


def _blur(v, taps: list[float]):
    """Separable Gaussian of [N, C, H + k - 1, W + k - 1] -> [N, C, H, W], as k shifted weighted
    sums per axis (elementwise work a CPU does far faster than a 1-channel convolution)."""
    size = len(taps)
    height, width = v.shape[-2] - size + 1, v.shape[-1] - size + 1
    rows = v[..., :, :width] * taps[0]
    for i, tap in enumerate(taps[1:], start=1):
        rows.add_(v[..., :, i : i + width], alpha=tap)
    out = rows[..., :height, :] * taps[0]
    for i, tap in enumerate(taps[1:], start=1):
        out.add_(rows[..., i : i + height, :], alpha=tap)
    return out


def ssim(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None, device=None) -> float:
    """Mean structural similarity of uint8 images/videos, over the pixels selected by ``where``.

    The SSIM map of Wang et al. (2004): 11-tap Gaussian window (sigma 1.5), K1 0.01, K2 0.03,
    computed per colour channel with the frame's edges reflected, averaged over the channels
    and then over the selected pixels. Unselected pixels of ``a`` are taken from ``b`` first, so
    windows that straddle the selection's edge compare only selected pixels: outputs that agree
    on the selection score 1.0 whatever differs elsewhere. a, b: [..., H, W, 3] uint8; where:
    [..., H, W] bool or None for all pixels. Returns NaN when ``where`` selects nothing.
    Computed in float64 on ``device`` (default CPU), a few frames at a time.
    """
    import torch

    if where is not None:
        if not where.any():
            return math.nan
        a = np.where(where[..., None], a, b)
    height, width = a.shape[-3:-1]
    a, b = a.reshape(-1, height, width, 3), b.reshape(-1, height, width, 3)
    selected = None if where is None else where.reshape(-1, height, width)
    taps = _gaussian_window().tolist()
    pad = len(taps) // 2
    mode = "reflect" if min(height, width) > pad else "replicate"
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    total, count = 0.0, 0
    chunk = max(1, _SSIM_CHUNK_PIXELS // (height * width))

    def blur(v):
        return _blur(torch.nn.functional.pad(v, (pad, pad, pad, pad), mode=mode), taps)

    for start in range(0, len(a), chunk):
        x, y = (torch.from_numpy(v[start : start + chunk]).to(device).permute(0, 3, 1, 2).double() for v in (a, b))
        mu_x, mu_y = blur(x), blur(y)
        var_x = blur(x * x) - mu_x**2
        var_y = blur(y * y) - mu_y**2
        cov = blur(x * y) - mu_x * mu_y
        index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        per_pixel = index.mean(dim=1)  # [n, H, W]
        if selected is not None:
            per_pixel = per_pixel[torch.from_numpy(selected[start : start + chunk]).to(per_pixel.device)]
        total += float(per_pixel.sum())
        count += per_pixel.numel()
    return total / count


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
