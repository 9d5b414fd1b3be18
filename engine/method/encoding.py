"""The encoders' side of a job: prompt and image embeddings (cached), VAE latents, and the
conditioning and training samples built from them (docs/method.md, "What the method changes").

The text and image encoders run once per distinct prompt and image: their embeddings are
kept in small LRU caches, so a training and the propagations that follow it share them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

from framecast.common.requests import TrainSettings
from framecast.engine.memory.lowvram import Placement
from framecast.engine.method import conditioning as C
from framecast.engine.method.sampling import Conditioning, PromptIds, encode_clip_image, encode_prompt_ids, encode_video
from framecast.engine.method.training import Sample

CACHED_EMBEDDINGS = 16  # prompts and images each


class Encoders:
    def __init__(self, pipe, placement: Placement, device: torch.device):
        self.pipe = pipe
        self.placement = placement
        self.device = device
        self._prompts: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()
        self._images: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    @property
    def vae_spatial(self) -> int:
        """How many times the VAE shrinks space (8 for Wan2.1's): the latent grid is H/s x W/s."""
        return self.pipe.vae_scale_factor_spatial

    def prompt(self, prompt: PromptIds | None) -> torch.Tensor | None:
        """UMT5 embedding of a tokenized prompt, cached by its ids; None for None."""
        if prompt is None:
            return None
        if prompt.ids not in self._prompts:
            with self.placement.using("text_encoder"):
                self._prompts[prompt.ids] = encode_prompt_ids(self.pipe, prompt.ids, self.device)
            while len(self._prompts) > CACHED_EMBEDDINGS:
                self._prompts.popitem(last=False)
        self._prompts.move_to_end(prompt.ids)
        return self._prompts[prompt.ids]

    def image(self, image: np.ndarray) -> torch.Tensor:
        """CLIP embedding of [H, W, 3] uint8, cached by content."""
        key = hashlib.sha256(image.tobytes() + str(image.shape).encode()).digest()
        if key not in self._images:
            with self.placement.using("image_encoder"):
                self._images[key] = encode_clip_image(self.pipe, image, self.device)
            while len(self._images) > CACHED_EMBEDDINGS:
                self._images.popitem(last=False)
        self._images.move_to_end(key)
        return self._images[key]

    def video(self, video: torch.Tensor) -> torch.Tensor:
        """[1, 3, F, H, W] in [-1, 1] -> normalised latents on the engine's device."""
        with self.placement.using("vae"):
            return encode_video(self.pipe, video).to(self.device)

    def conditioning(self, first_frame, source, edit_mask, prompt: PromptIds, negative_prompt: PromptIds | None,
                     clip_image: np.ndarray, first_known: bool = True) -> Conditioning:  # fmt: skip
        """What the transformer is given for a clip: frame 0 in full (``first_frame``; None greys it
        too), later frames greyed inside ``edit_mask``, the keep mask, prompt and CLIP embeddings."""
        return Conditioning(
            keep_mask=C.latent_keep_mask(edit_mask, first_known, self.vae_spatial).to(self.device),
            condition_latents=self.video(C.condition_video(first_frame, source, edit_mask)),
            prompt_embeds=self.prompt(prompt),
            negative_prompt_embeds=self.prompt(negative_prompt),
            image_embeds=self.image(clip_image),
        )

    def motion_sample(self, source, edit_mask, prompt: PromptIds, settings: TrainSettings) -> Sample:
        """The motion phase's sample of a clip: the greyed clip as condition, the clip as target."""
        return Sample(
            cond=self.conditioning(source[0], source, edit_mask, prompt, None, source[0]),
            target_latents=self.video(C.to_unit_range(source)),
            loss_weight=self._loss_weight(edit_mask, settings),
        )

    def reference_sample(self, source, edit_mask, index: int, edited: np.ndarray, prompt: PromptIds,
                         settings: TrainSettings) -> Sample:  # fmt: skip
        """The appearance phase's single-frame sample of an edited frame at source frame ``index``."""
        frame_mask = edit_mask[index : index + 1]
        return Sample(
            cond=self.conditioning(None, source[index : index + 1], frame_mask, prompt, None, edited, first_known=False),
            target_latents=self.video(C.to_unit_range(edited[None])),
            loss_weight=self._loss_weight(frame_mask, settings),
        )

    def _loss_weight(self, edit_mask: np.ndarray, settings: TrainSettings) -> torch.Tensor:
        return C.loss_weight(edit_mask, settings.w_edit, settings.w_keep, self.vae_spatial).to(self.device)
