"""The quality measures: PSNR, SSIM and temporal change on inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from framecast.engine.quality.metrics import PSNR_CAP_DB, psnr, ssim, temporal_change


def test_psnr_known_values():
    a = np.full((2, 4, 4, 3), 100, np.uint8)
    assert psnr(a, a) == PSNR_CAP_DB
    assert psnr(a, a + 10) == pytest.approx(10 * math.log10(255**2 / 100))
    assert math.isnan(psnr(a, a, np.zeros((2, 4, 4), bool)))


def test_ssim_known_values():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    assert ssim(image, image) == pytest.approx(1.0)
    # Flat images: no variance, so SSIM is the luminance term alone.
    c1 = (0.01 * 255) ** 2
    flat = ssim(np.full((16, 16, 3), 100, np.uint8), np.full((16, 16, 3), 150, np.uint8))
    assert flat == pytest.approx((2 * 100 * 150 + c1) / (100**2 + 150**2 + c1))
    noisy = np.clip(image.astype(int) + rng.integers(-40, 41, image.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(image.astype(int) + rng.integers(-90, 91, image.shape), 0, 255).astype(np.uint8)
    assert 1 > ssim(image, noisy) > ssim(image, noisier) > 0
    # Only the selected pixels count: damage outside them does not change the score.
    where = np.zeros((2, 24, 24), bool)
    where[:, :12] = True
    damaged = image.copy()
    damaged[:, 12:] = 0
    assert ssim(damaged, image, where) == pytest.approx(1.0) and ssim(damaged, image) < 0.9
    damaged[:, :2] = 0
    assert ssim(damaged, image, where) < 1
    assert math.isnan(ssim(image, image, np.zeros_like(where)))


def test_temporal_change():
    rng = np.random.default_rng(1)
    source = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    where = np.ones((5, 8, 8), bool)
    assert temporal_change(source, source, where) == pytest.approx(1.0)
    frozen = np.repeat(source[:1], 5, axis=0)
    assert temporal_change(frozen, source, where) < 0.02
    steady = np.stack([np.full((8, 8, 3), 100 + 2 * t, np.uint8) for t in range(5)])
    flicker = np.stack([np.full((8, 8, 3), 100 + 20 * (t % 2), np.uint8) for t in range(5)])
    assert temporal_change(flicker, steady, where) == pytest.approx((20 + 1) / (2 + 1))
    assert temporal_change(source, source, np.zeros_like(where)) == 1.0
    still = np.repeat(steady[:1], 5, axis=0)
    assert temporal_change(still, still, where) == 1.0
    assert temporal_change(flicker, still, where) == pytest.approx(21.0)  # finite for a still source
    assert temporal_change(source[:1], source[:1], where[:1]) == 1.0
