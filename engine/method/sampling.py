"""Propagating an edit: the denoising loop and streamed decoding.

The loop follows diffusers' WanImageToVideoPipeline step for step (same noise draw,
scheduler, guidance and VAE normalisation); what differs is only the conditioning the
method gives it. With an edit mask covering every frame completely, the conditioning is
exactly plain I2V's, and the output matches the stock pipeline's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch

from framecast.common.requests import StepCache
from framecast.engine.compat import decode_latent_frames, prompt_clean, vae_streams
from framecast.engine.errors import Cancelled
from framecast.engine.method.conditioning import to_uint8


@dataclass
class Conditioning:
    """Everything the transformer is given besides the noisy latents, for one clip."""

    keep_mask: torch.Tensor  # [1, 4, F_lat, h, w] 1 = keep
    condition_latents: torch.Tensor  # [1, 16, F_lat, h, w] normalised VAE latents of the greyed video
    prompt_embeds: torch.Tensor  # [1, L, text_dim]
    negative_prompt_embeds: torch.Tensor | None  # [1, L, text_dim], None without guidance
    image_embeds: torch.Tensor  # [1, N, image_dim] CLIP penultimate hidden states

    @property
    def transformer_condition(self) -> torch.Tensor:
        return torch.cat([self.keep_mask.to(self.condition_latents), self.condition_latents], dim=1)


def _latent_stats(vae, device) -> tuple[torch.Tensor, torch.Tensor]:
    z_dim = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32, device=device).view(1, z_dim, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32, device=device).view(1, z_dim, 1, 1, 1)
    return mean, std


@torch.no_grad()
def encode_video(pipe, video: torch.Tensor) -> torch.Tensor:
    """[1, 3, F, H, W] in [-1, 1] -> normalised latents [1, 16, F_lat, H/8, W/8] float32 (the mode)."""
    vae = pipe.vae
    posterior = vae.encode(video.to(device=vae.device, dtype=vae.dtype)).latent_dist
    latents = posterior.mode().float()
    mean, std = _latent_stats(vae, latents.device)
    return (latents - mean) / std


MAX_PROMPT_TOKENS = 512  # the UMT5 sequence length the pipeline encodes prompts at; it cuts longer ones
MAX_PROMPT_CHARS = 32 * MAX_PROMPT_TOKENS  # longer text is refused without being tokenized


@dataclass(frozen=True)
class PromptIds:
    """A prompt as the text encoder reads it: its token ids, counted and checked once."""

    text: str
    ids: tuple[int, ...]


def tokenize_prompt(tokenizer, prompt: str) -> tuple[int, ...]:
    """The token ids the pipeline's text encoder reads for ``prompt``, uncut: the pipeline's own
    clean-up, then its tokenizer with the end-of-sequence token. Longer than MAX_PROMPT_TOKENS
    means the pipeline would cut it."""
    return tuple(tokenizer(prompt_clean(prompt), add_special_tokens=True, truncation=False)["input_ids"])


@torch.no_grad()
def encode_prompt_ids(pipe, ids: tuple[int, ...], device) -> torch.Tensor:
    """UMT5 embedding [1, MAX_PROMPT_TOKENS, text_dim] of tokenized text, as the pipeline's
    ``encode_prompt`` computes it: the ids padded to MAX_PROMPT_TOKENS and masked, the hidden
    states past the prompt's own tokens set to zero."""
    if len(ids) > MAX_PROMPT_TOKENS:
        raise ValueError(f"{len(ids)} prompt tokens, over the {MAX_PROMPT_TOKENS} the text encoder reads: count them first")
    pad = pipe.tokenizer.pad_token_id or 0
    input_ids = torch.tensor([list(ids) + [pad] * (MAX_PROMPT_TOKENS - len(ids))])
    mask = torch.zeros_like(input_ids)
    mask[:, : len(ids)] = 1
    encoder = pipe.text_encoder
    hidden = encoder(input_ids.to(encoder.device), mask.to(encoder.device)).last_hidden_state
    hidden = hidden.to(device=device, dtype=pipe.transformer.dtype)
    hidden[:, len(ids) :] = 0
    return hidden


def encode_prompts(pipe, prompt: str, negative_prompt: str | None, device) -> tuple:
    """(prompt embedding, negative prompt embedding or None) of text: tokenized, then encoded."""
    positive = encode_prompt_ids(pipe, tokenize_prompt(pipe.tokenizer, prompt), device)
    if negative_prompt is None:
        return positive, None
    return positive, encode_prompt_ids(pipe, tokenize_prompt(pipe.tokenizer, negative_prompt), device)


@torch.no_grad()
def encode_clip_image(pipe, image: np.ndarray, device) -> torch.Tensor:
    """[H, W, 3] uint8 -> CLIP embedding as the transformer takes it."""
    embeds = pipe.encode_image(PIL.Image.fromarray(image), device)
    return embeds.to(pipe.transformer.dtype)


def initial_noise(shape, seed: int, device) -> torch.Tensor:
    """The starting latents: drawn on the CPU from ``seed`` so every device gets the same ones."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


@dataclass(frozen=True)
class Sampler:
    """How a propagation samples: the steps, classifier-free guidance, and the step cache."""

    steps: int
    guidance_scale: float  # <= 1: no guidance
    guidance_steps: int = 0  # guidance on the first this many steps only; 0 = every step
    step_cache: StepCache = StepCache.NONE
    cache_threshold: float = 0.05
    cache_interval: int = 3
    shift: float | None = None  # None: the pipeline's scheduler; set: shifted Euler (``scheduler``)

    @classmethod
    def of(cls, job) -> Sampler:
        """A PropagateJob's sampler."""
        return cls(job.steps, job.guidance_scale, job.guidance_steps, StepCache(job.step_cache), job.cache_threshold,
                   job.cache_interval, getattr(job, "shift", None))  # fmt: skip

    def scheduler(self, scheduler, device):
        """The scheduler this run steps, its timesteps set: the pipeline's own; or, with ``shift``,
        flow-matching Euler at that shift over evenly spaced sigmas 1, 1 - 1/steps, ... (timesteps
        1000, 750, 500, 250 at 4 steps, shifted), the sampler LightX2V's step-distilled Wan models
        are published with (its WanStepDistillScheduler's denoising_step_list and sample_shift)."""
        if self.shift is None:
            scheduler.set_timesteps(self.steps, device=device)
            return scheduler
        from diffusers import FlowMatchEulerDiscreteScheduler

        euler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=scheduler.config.get("num_train_timesteps", 1000),
                                                shift=self.shift)  # fmt: skip
        euler.set_timesteps(sigmas=[1.0 - index / self.steps for index in range(self.steps)], device=device)
        return euler

    def guided(self, index: int) -> bool:
        return self.guidance_scale > 1.0 and (self.guidance_steps == 0 or index < self.guidance_steps)

    def passes(self) -> int:
        """Full transformer passes a run computes: every conditional step and every guided one, less
        those TaylorSeer predicts (its schedule is fixed; a first-block cache decides as it runs, so
        its steps count in full here)."""
        guided = sum(self.guided(index) for index in range(self.steps))
        if self.step_cache is not StepCache.TAYLORSEER:
            return self.steps + guided

        def computed(calls: int) -> int:  # as diffusers' hook decides, per cache context (cond, uncond)
            return sum(call < 2 or (call - 3) % self.cache_interval == 0 or call >= self.steps - 1 for call in range(calls))

        return computed(self.steps) + computed(guided)

    def cache_config(self):
        """The diffusers cache hook configuration, or None."""
        if self.step_cache is StepCache.FIRST_BLOCK:
            from diffusers import FirstBlockCacheConfig

            return FirstBlockCacheConfig(threshold=self.cache_threshold)
        if self.step_cache is StepCache.TAYLORSEER:
            from diffusers import TaylorSeerCacheConfig

            # Whole transformer blocks predicted (diffusers' default names match no Wan module: its
            # attentions are attn1 and attn2); the first two steps and the last computed in full.
            return TaylorSeerCacheConfig(cache_interval=self.cache_interval, disable_cache_before_step=2,
                                         disable_cache_after_step=self.steps - 1, taylor_factors_dtype=torch.float32,
                                         cache_identifiers=[r"blocks\.\d+"])  # fmt: skip
        return None


@contextmanager
def step_cache(transformer, sampler: Sampler):
    """The sampler's cache hooks on ``transformer`` for one denoising run, removed after it: the
    cache holds this run's activations only, and training never sees the hooks."""
    config = sampler.cache_config()
    if config is None:
        yield
        return
    transformer.enable_cache(config)
    try:
        yield
    finally:
        transformer.disable_cache()


@torch.no_grad()
def denoise(
    pipe,
    cond: Conditioning,
    seed: int,
    sampler: Sampler,
    on_step: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Run the flow-matching sampler. Returns final latents [1, 16, F_lat, h, w] float32."""
    transformer = pipe.transformer
    device = cond.condition_latents.device
    latents = initial_noise(cond.condition_latents.shape, seed, device)
    condition = cond.transformer_condition
    scheduler = sampler.scheduler(pipe.scheduler, device)
    with step_cache(transformer, sampler):
        for index, t in enumerate(scheduler.timesteps):
            if should_cancel is not None and should_cancel():
                raise Cancelled("job cancelled")
            latents = denoising_step(transformer, scheduler, latents, condition, cond, t, index, sampler)
            if on_step is not None:
                on_step(index + 1, sampler.steps)
    return latents


def denoising_step(transformer, scheduler, latents: torch.Tensor, condition: torch.Tensor, cond: Conditioning,
                   t: torch.Tensor, index: int, sampler: Sampler) -> torch.Tensor:  # fmt: skip
    """Step ``index`` (at timestep ``t``) of ``denoise``: the transformer's velocity, guided by its
    unconditional pass where the sampler guides, then the scheduler's step. The memory model traces
    this function (``memory.phases``). Returns the next latents.

    latents: [1, 16, F_lat, h, w]; condition: [1, 20, F_lat, h, w], ``cond.transformer_condition``.
    """
    cached = sampler.cache_config() is not None

    def predict(model_input, timestep, prompt_embeds, context: str):
        # the cache keeps the conditional and unconditional passes' states apart, by the context's name
        scope = transformer.cache_context(context, step_index=index, num_inference_steps=sampler.steps)
        with scope if cached else nullcontext():
            return transformer(
                hidden_states=model_input, timestep=timestep, encoder_hidden_states=prompt_embeds,
                encoder_hidden_states_image=cond.image_embeds, return_dict=False,
            )[0]  # fmt: skip

    model_input = torch.cat([latents, condition], dim=1).to(transformer.dtype)
    timestep = t.expand(latents.shape[0])
    velocity = predict(model_input, timestep, cond.prompt_embeds, "cond")
    if sampler.guided(index) and cond.negative_prompt_embeds is not None:
        unconditional = predict(model_input, timestep, cond.negative_prompt_embeds, "uncond")
        velocity = unconditional + sampler.guidance_scale * (velocity - unconditional)
    return scheduler.step(velocity, t, latents, return_dict=False)[0]


@torch.no_grad()
def decode_stream(pipe, latents: torch.Tensor) -> Iterator[np.ndarray]:
    """Decode latents [1, 16, F_lat, h, w] to uint8 frames, yielding [n, H, W, 3] as each
    latent frame is decoded (1 frame, then 4 at a time), so the first frames reach the
    caller before the last ones are computed.

    The Wan VAE decodes causally one latent frame at a time with a feature cache; this walks
    that loop itself. With tiling on (or a VAE this loop does not know), it decodes whole.
    """
    vae = pipe.vae
    mean, std = _latent_stats(vae, vae.device)
    z = latents.to(device=vae.device, dtype=torch.float32) * std + mean
    z = z.to(vae.dtype)
    if not vae_streams(vae):
        video = vae.decode(z, return_dict=False)[0]
        yield to_uint8(video[0])
        return
    for chunk in decode_latent_frames(vae, z):
        yield to_uint8(chunk[0])


def feather_alpha(edit_mask: np.ndarray, feather_px: int) -> np.ndarray:
    """Compositing weight of the generated frame: 0 outside the edit region (exactly), rising
    to 1 over ``feather_px`` pixels inside it. [F, H, W] bool -> [F, H, W] float32."""
    mask = torch.from_numpy(edit_mask).float()[:, None]
    if feather_px <= 0:
        return mask[:, 0].numpy()
    total = torch.zeros_like(mask)
    eroded = mask
    for done in range(feather_px):
        total += eroded
        shrunk = -torch.nn.functional.max_pool2d(-eroded, 3, stride=1, padding=1)
        if torch.equal(shrunk, eroded):  # nothing left to erode: the remaining rounds add the same
            total += eroded * (feather_px - done - 1)
            break
        eroded = shrunk
    return (total / feather_px)[:, 0].numpy()


def composite(generated: np.ndarray, source: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Generated inside the (feathered) edit region, source pixels outside. All [n, H, W, ...]."""
    a = alpha[..., None]
    mixed = generated.astype(np.float32) * a + source.astype(np.float32) * (1.0 - a)
    out = np.round(mixed).astype(np.uint8)
    return np.where(a > 0, out, source)
