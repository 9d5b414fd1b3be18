"""The phases of a job, rebuilt from a pipeline's configurations and traced (``trace``).

Each component is built again from its configuration at a chosen depth, on the meta device, in
the pipeline's dtypes (``Component``), with the adapters ``AdapterSlots`` would attach and the
quantised linears ``quantize_pipeline`` would leave; each trace then runs the engine's own step
and reports its peaks: ``sampling.denoising_step`` (a step of ``sampling.denoise``), the parts of
``training._train_step`` (``training_loss``, ``backpropagate``, ``apply_gradients``),
``sampling.encode_video``, ``encode_prompt_ids`` and ``metrics.ssim``. Two still mirror the code
they trace: the VAE decode ``decode_stream``'s loop (its frames go to the host, which fake tensors
cannot) and the image encoder the pipeline's ``encode_image``. ``fake=False`` runs the same steps
on real CPU tensors.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from framecast.common.requests import TrainSettings
from framecast.engine.compat import add_peft_adapter
from framecast.engine.config import Quantize
from framecast.engine.memory.trace import (
    AdamW8bit,
    LiveBytes,
    granules,
    materialised,
    quantize_stand_ins,
    random_tensor,
    run_traced,
)
from framecast.engine.method import sampling, training
from framecast.engine.method.sampling import Conditioning, Sampler
from framecast.engine.method.training import Sample

TEXT_TOKENS = sampling.MAX_PROMPT_TOKENS  # prompts are encoded padded to this length
TRACED_SAMPLER = Sampler(steps=30, guidance_scale=5.0)  # guided where the trace has a negative prompt


# --- components from their configurations ----------------------------------------------------


_INDEX = re.compile(r"\.\d+\.")


def param_name(name: str) -> str:
    """A parameter's name with block indices and peft's wrapping taken out: one key per kind."""
    return _INDEX.sub(".*.", name.replace(".base_layer.", ".").replace("_orig_mod.", ""))


@dataclass(frozen=True)
class Component:
    """How to build one of a pipeline's models again, at a chosen depth, without its weights."""

    name: str
    cls: type
    config: object  # a diffusers config dict or a transformers config
    depth_key: str | None  # the config entry counting its blocks; None: built whole
    dtypes: tuple[tuple[str, torch.dtype], ...]  # param_name -> dtype, as the pipeline holds them
    default_dtype: torch.dtype

    @property
    def depth(self) -> int | None:
        if self.depth_key is None:
            return None
        config = self.config
        return int(config[self.depth_key] if isinstance(config, dict) else getattr(config, self.depth_key))

    @classmethod
    def of(cls, name: str, module: torch.nn.Module, depth_key: str | None, compute_dtype: torch.dtype) -> Component:
        config = dict(module.config) if isinstance(module.config, dict) else copy.deepcopy(module.config)
        dtypes = {}
        for pname, param in module.named_parameters():
            if "lora_" not in pname:  # adapters are added per trace
                dtypes[param_name(pname)] = param.dtype if param.dtype.is_floating_point else compute_dtype
        kinds = list(dtypes.values())
        default = max(set(kinds), key=kinds.count) if kinds else compute_dtype
        return cls(name, type(module), config, depth_key, tuple(sorted(dtypes.items())), default)

    def digest_items(self) -> tuple:
        config = self.config if isinstance(self.config, dict) else self.config.to_dict()
        keep = {k: v for k, v in config.items() if not str(k).startswith("_") and k not in ("transformers_version",
                                                                                                "architectures")}  # fmt: skip
        return (self.name, self.cls.__name__, repr(sorted(keep.items(), key=str)), repr(self.dtypes))

    def build(self, depth: int | None = None) -> torch.nn.Module:
        """The module on the meta device (at ``depth`` blocks), in the pipeline's dtypes, eval mode."""
        config = self.config
        if depth is not None:
            if isinstance(config, dict):
                config = {**config, self.depth_key: depth}
            else:
                config = copy.deepcopy(config)
                setattr(config, self.depth_key, depth)
        with torch.device("meta"):  # thread-local; the default dtype is not (a job may run meanwhile)
            module = self.cls.from_config(config) if isinstance(config, dict) else self.cls(config)
        dtypes = dict(self.dtypes)
        for pname, param in module.named_parameters():
            dtype = dtypes.get(param_name(pname), self.default_dtype)
            if param.dtype != dtype:
                param.data = param.data.to(dtype)
        return module.eval()


# --- the steps the engine runs ---------------------------------------------------------------


@dataclass(frozen=True)
class TransformerTrace:
    """What a transformer trace runs: a denoising step (CFG: both passes, one after the other)
    or a training step, with the adapters the engine would have attached."""

    training: bool
    quantize: Quantize = Quantize.NONE
    guidance: bool = True
    slot_rank: int = 0  # the inference slot (TARGET_PATTERN), active while sampling; 0: none
    rank: int = 16  # the training adapter (TRAINING_PATTERN), float32, AdamW
    gradient_checkpointing: bool = True
    optimizer: str = "adamw"


def _attach_adapters(transformer, trace: TransformerTrace) -> list[str]:
    """The peft adapters ``AdapterSlots`` attaches (on the meta module): the slot (frozen, in the
    base linears' dtype; float32 on a quantised model, as peft makes it there) and, to train, the
    training adapter in float32, the active one. Returns the trainable parameters' names."""
    from peft import LoraConfig

    from framecast.engine.adapters.formats import TARGET_PATTERN, TRAINING_PATTERN

    if trace.slot_rank:
        add_peft_adapter(transformer, LoraConfig(r=trace.slot_rank, lora_alpha=trace.slot_rank, lora_dropout=0.0,
                                                 target_modules=TARGET_PATTERN), "_slot")  # fmt: skip
    if not trace.training:
        return []
    add_peft_adapter(transformer, LoraConfig(r=trace.rank, lora_alpha=trace.rank, lora_dropout=0.0,
                                             target_modules=TRAINING_PATTERN), "fc_trace")  # fmt: skip
    transformer.set_adapter("fc_trace")
    trainable = []
    for name, param in transformer.named_parameters():
        param.requires_grad_(".fc_trace." in name and "lora_" in name)
        if param.requires_grad:
            param.data = param.data.float()
            trainable.append(name)
    return trainable


def trace_transformer(component: Component, trace: TransformerTrace, depth: int, latent_grid: tuple[int, int, int],
                      image_tokens: int, image_dim: int, fake: bool = True,
                      scheduler=None) -> dict[str, int]:  # fmt: skip
    """Peaks of one step of the transformer at ``depth`` blocks on a latent grid (F_lat, h, w).
    ``scheduler``: the pipeline's (a fresh one of its class and configuration steps the trace;
    None: diffusers' FlowMatchEulerDiscreteScheduler, the toy lab's)."""
    transformer, trainable_names = traced_transformer(component, trace, depth)
    scheduler = None if trace.training else first_step_scheduler(scheduler)
    with materialised(fake) as make:
        transformer = make(transformer)
        params = dict(transformer.named_parameters())
        trainable = [params[name] for name in trainable_names]
        sample = step_inputs(transformer.config, trace, latent_grid, image_tokens, image_dim, component.default_dtype)
        cond = sample.cond
        inputs = [sample.target_latents, cond.keep_mask, cond.condition_latents, cond.prompt_embeds,
                  cond.negative_prompt_embeds, cond.image_embeds]  # fmt: skip
        if trace.training:
            step, state = training_trace(transformer, trainable, sample, trace.optimizer, trace.gradient_checkpointing)
            inputs += [sample.loss_weight, *state]
        else:
            step, held = denoising_trace(transformer, sample, scheduler)
            inputs += held
        return run_traced(step, [transformer], inputs)


def traced_transformer(component: Component, trace: TransformerTrace, depth: int) -> tuple[torch.nn.Module, list[str]]:
    """The transformer at ``depth`` blocks on the meta device as the engine holds it for ``trace``:
    its linears' quantised stand-ins, its adapters. Returns (it, its trainable parameters' names)."""
    transformer = component.build(depth)
    with torch.device("meta"):  # no memory, and peft's initialisers draw nothing from the global RNG
        quantize_stand_ins(transformer.blocks, trace.quantize, component.default_dtype)
        trainable_names = _attach_adapters(transformer, trace)
    return transformer, trainable_names


def step_inputs(config, trace: TransformerTrace, latent_grid: tuple[int, int, int], image_tokens: int, image_dim: int,
                compute_dtype: torch.dtype) -> Sample:  # fmt: skip
    """What a step is given, on a latent grid (F_lat, h, w), as a training sample: to denoise, its
    target latents are the sampler's latents and it has no loss weight; the negative prompt only
    with guidance."""
    z = config.out_channels
    frames, height, width = latent_grid
    prompt = (1, TEXT_TOKENS, config.text_dim)
    cond = Conditioning(
        keep_mask=random_tensor(1, config.in_channels - 2 * z, frames, height, width),
        condition_latents=random_tensor(1, z, frames, height, width),
        prompt_embeds=random_tensor(*prompt, dtype=compute_dtype),
        negative_prompt_embeds=random_tensor(*prompt, dtype=compute_dtype) if trace.guidance else None,
        image_embeds=random_tensor(1, image_tokens, image_dim, dtype=compute_dtype),
    )
    x0 = random_tensor(1, z, frames, height, width)
    return Sample(cond, x0, random_tensor(1, 1, frames, height, width) if trace.training else None)


def denoising_trace(transformer, sample: Sample, scheduler):
    """The first step of ``sampling.denoise`` (every step's memory is the same) through its own
    ``sampling.denoising_step``: both passes with guidance, the scheduler's step. ``scheduler``: set
    up by ``first_step_scheduler``. Returns (step, what ``denoise`` computes before its loop and
    keeps through it)."""
    cond = sample.cond
    condition = cond.transformer_condition
    t = scheduler.timesteps[0]

    def step(counter: LiveBytes):
        counter.mark("denoise")
        with torch.no_grad():
            latents = sample.target_latents
            sampling.denoising_step(transformer, scheduler, latents, condition, cond, t, 0, TRACED_SAMPLER)

    return step, [condition]


def first_step_scheduler(scheduler=None):
    """A fresh scheduler of ``scheduler``'s class and configuration (None: diffusers'
    FlowMatchEulerDiscreteScheduler, the toy lab's) at the first of ``TRACED_SAMPLER``'s steps,
    made on real tensors (schedulers read their values)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if scheduler is None:
        scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler = type(scheduler).from_config(scheduler.config)
    scheduler.set_timesteps(TRACED_SAMPLER.steps, device="cpu")
    scheduler.set_begin_index(0)  # the index the scheduler finds for the first timestep itself, by value
    return scheduler


def training_trace(transformer, trainable: list[torch.nn.Parameter], sample: Sample, optimizer: str = "adamw",
                   gradient_checkpointing: bool = True):  # fmt: skip
    """``training._train_step`` in the segments forward, backward, optimizer, each the engine's own
    function, with the default settings and the optimiser's state already in place (as from the
    second step on), the transformer set up as ``train_lora`` sets it. Left out: drawing t (0.5
    here) and reading the loss's value on the host, which read values fake tensors do not have.
    Returns (step, the state's tensors)."""
    settings = TrainSettings()
    if optimizer == "adamw8bit":
        update = AdamW8bit(trainable)
    else:
        update = training.make_optimizer(trainable, optimizer, settings, foreach=True)  # CUDA's default for AdamW
    for param in trainable:  # one step outside the count creates the state
        param.grad = torch.zeros_like(param)
    update.step()
    update.zero_grad(set_to_none=True)
    state = [t for s in update.state.values() for t in s.values() if isinstance(t, torch.Tensor) and t.dim()]
    if gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()

    def step(counter: LiveBytes):
        counter.mark("forward")
        noise = random_tensor(*sample.target_latents.shape)
        # The PyTorch reference (CUDA runs the fused Triton kernel): latent-sized buffers either way.
        loss = training.training_loss(transformer, sample, 0.5, noise, backend="reference")
        counter.mark("backward")
        training.backpropagate(update, loss)
        counter.mark("optimizer")
        training.apply_gradients(update, trainable, settings.grad_clip)

    return step, state


def trace_vae(component: Component, kind: str, frames: int, height: int, width: int, tiling: bool = False,
              fake: bool = True) -> dict[str, int]:  # fmt: skip
    """Peaks of the VAE encoding a [1, 3, frames, height, width] clip (``sampling.encode_video``) or
    decoding its latents as ``sampling.decode_stream`` does (streamed per latent frame; whole and
    tiled with ``tiling``), the uint8 frames handed to the host."""
    from framecast.engine.compat import decode_latent_frames, vae_streams
    from framecast.engine.method.windows import latent_frames

    vae = component.build()
    if tiling:
        vae.enable_tiling()
    spatial = getattr(vae.config, "scale_factor_spatial", None) or 2 ** (len(vae.config.dim_mult) - 1)
    with materialised(fake) as make:
        vae = make(vae)
        if kind == "encode":
            video = random_tensor(1, 3, frames, height, width)

            def encode(counter):
                counter.mark("vae_encode")
                sampling.encode_video(SimpleNamespace(vae=vae), video)

            return run_traced(encode, [vae], [video])
        latents = random_tensor(1, vae.config.z_dim, latent_frames(frames), height // spatial, width // spatial)

        def decode(counter):
            counter.mark("vae_decode")
            with torch.no_grad():
                mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
                std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
                z = (latents.to(torch.float32) * std + mean).to(vae.dtype)
                chunks = decode_latent_frames(vae, z) if vae_streams(vae) else [vae.decode(z, return_dict=False)[0]]
                for chunk in chunks:  # conditioning.to_uint8, up to its copy to the host
                    frames = (chunk[0].float() / 2 + 0.5).clamp(0, 1)
                    (frames.movedim(-4, -1) * 255).round().to(torch.uint8)
                    del chunk, frames

        return run_traced(decode, [vae], [latents])


def trace_text_encoder(component: Component, quantize: Quantize, depth: int, fake: bool = True) -> dict[str, int]:
    """Peak of ``sampling.encode_prompt_ids``: the text encoder over a padded prompt (the engine
    quantises its encoder's linears with the transformer's, the full-precision ones kept)."""
    from framecast.engine.compat import keep_in_fp32_modules

    encoder = component.build(depth)
    if hasattr(encoder, "encoder"):
        with torch.device("meta"):
            quantize_stand_ins(encoder.encoder, quantize, component.default_dtype, keep_in_fp32_modules(encoder))
    with materialised(fake) as make:
        encoder = make(encoder)
        pipe = SimpleNamespace(text_encoder=encoder, tokenizer=SimpleNamespace(pad_token_id=0),
                               transformer=SimpleNamespace(dtype=component.default_dtype))  # fmt: skip

        def encode(counter):
            counter.mark("text_encoder")
            sampling.encode_prompt_ids(pipe, (1,) * 8, "cpu")

        return run_traced(encode, [encoder], [])


def trace_image_encoder(component: Component, depth: int, image_size: int, fake: bool = True) -> dict[str, int]:
    """Peak of ``WanImageToVideoPipeline.encode_image``: the CLIP vision model on one processed
    image, every hidden state kept (the pipeline takes the penultimate)."""
    encoder = component.build(depth)
    with materialised(fake) as make:
        encoder = make(encoder)
        pixels = random_tensor(1, 3, image_size, image_size)

        def encode(counter):
            counter.mark("image_encoder")
            with torch.no_grad():
                encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2].to(component.default_dtype)

        return run_traced(encode, [encoder], [pixels])


def trace_ssim(frames: int, height: int, width: int) -> int:
    """Peak device bytes of ``metrics.ssim`` over ``frames`` frames (one chunk), traced on real
    CPU tensors: on a GPU the two uint8 chunks it copies to the device add 2 x 3 bytes a pixel."""
    import numpy as np

    from framecast.engine.quality.metrics import ssim

    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8)
    where = np.ones((frames, height, width), dtype=bool)
    counter = LiveBytes()
    with counter:
        ssim(a, b, where, device="cpu")
    return max(counter.peaks.values()) + 2 * granules(frames * height * width * 3)
