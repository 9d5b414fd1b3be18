"""The built-in toy model: Wan2.1 image-to-video's own diffusers classes, shrunk and trained
on the toy world (``world``), so that quality can be measured against ground truth.

Its sizes are the ``"toy"`` preset of ``architectures`` (``preset("toy")``, whose ``frames``,
``height`` and ``width`` are the clips it trains on); this module holds the training data drawn
from the toy world. ``train`` trains it; ``framecast train-toy-model`` runs that; the result
ships in ``engine/assets/toy-wan-i2v``.

Scene seeds: training draws scenes only from ``TRAIN_SCENE_SEEDS`` and validates on
``VALIDATION_SCENE_SEEDS``. Every seed below 1,000,000 is held out: the demo (seed 0) and the
quality benchmark (seeds 0, 1, 2, ...) only ever show the model scenes it never saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from framecast.engine.method import conditioning as C
from framecast.engine.toy.architectures import WanSpec
from framecast.engine.toy.world import Scene, SceneConfig, make_scene

TRAIN_SCENE_SEEDS = range(1_000_000, 2_000_000)
VALIDATION_SCENE_SEEDS = range(2_000_000, 2_000_100)
HELD_OUT_SEED_LIMIT = 1_000_000  # scenes with a smaller seed are never used in training


# --- training data from the toy world ---------------------------------------------------------


def random_scene(rng: np.random.Generator, spec: WanSpec, seeds: range = TRAIN_SCENE_SEEDS) -> Scene:
    """A training scene with a random layout: 1-3 sprites, panning or not, sometimes an occluder."""
    sprites = int(rng.integers(1, 4))
    config = SceneConfig(
        frames=spec.frames,
        height=spec.height,
        width=spec.width,
        sprites=sprites,
        pan=bool(rng.random() < 0.7),
        occlude=bool(sprites >= 2 and rng.random() < 0.25),
    )
    return make_scene(int(rng.integers(seeds.start, seeds.stop)), config)


def random_edit_mask(rng: np.random.Generator, scene: Scene) -> np.ndarray:
    """An edit mask as users give them, loosened the way the engine can: [F, H, W] bool."""
    exact = scene.edit_mask if rng.random() < 0.7 else scene.target_mask
    mode = rng.choice(["bbox", "bbox", "exact", "dilate"])
    return C.prepare_edit_mask(exact, C.MaskMode(mode), dilate_px=int(rng.integers(1, 5)))


def vae_training_clip(rng: np.random.Generator, spec: WanSpec, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """A clip the VAE must reconstruct: a toy-world video, or a condition video made from one
    (edit region painted grey; or plain I2V's first frame + grey frames).
    -> (clip [frames, H, W, 3] uint8, the edit target's pixels [frames, H, W] bool)."""
    scene = random_scene(rng, spec)
    video = scene.edited if rng.random() < 0.5 else scene.source
    start = int(rng.integers(0, spec.frames - frames + 1))
    clip = video[start : start + frames].copy()
    target = scene.edit_mask[start : start + frames].copy()
    kind = rng.random()
    if kind < 0.2:
        mask = random_edit_mask(rng, scene)[start : start + frames]
        clip[1:][mask[1:]] = 128
        target[1:] &= ~mask[1:]
    elif kind < 0.3:
        clip[1:] = 128
        target[1:] = False
    if rng.random() < 0.5:
        clip, target = clip[:, :, ::-1].copy(), target[:, :, ::-1].copy()
    return clip, target


@dataclass
class LatentSet:
    """Precomputed transformer training samples (all tensors stacked over samples, CPU).

    Video samples (17 frames; prefixes of 1/2/3/4 latent frames are valid shorter clips, since
    the Wan VAE is causal) and single-frame samples (the appearance phase's form)."""

    target: torch.Tensor  # [N, 16, F_lat, h, w] normalised latents of the video
    plain_condition: torch.Tensor  # [N, 16, F_lat, h, w] plain I2V: first frame + grey frames
    masked_condition: torch.Tensor  # [N, 16, F_lat, h, w] the method's: first frame + greyed source
    masked_keep: torch.Tensor  # [N, 4, F_lat, h, w]
    prompt: torch.Tensor  # [N, L, text_dim] fp16
    image: torch.Tensor  # [N, I, image_dim] CLIP of frame 0
    frame_target: torch.Tensor  # [N, 16, 1, h, w] one later frame alone
    frame_condition: torch.Tensor  # [N, 16, 1, h, w] that frame with the edit region grey
    frame_keep: torch.Tensor  # [N, 4, 1, h, w]
    frame_image: torch.Tensor  # [N, I, image_dim] CLIP of that frame
    empty_prompt: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # [L, text_dim]

    def __len__(self) -> int:
        return self.target.shape[0]
