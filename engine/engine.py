"""The engine: one base model in memory, adapters trained and applied on it.

Driven by the server's worker thread (one job at a time) or directly from Python. Jobs
carry decoded numpy media; every check of a request's content happens here, raising
``InvalidInput`` with the request's field name.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from framecast.engine import conditioning as C
from framecast.engine.adapters import AdapterRecord, AdapterSlots, AdapterStore, check_adapter_name
from framecast.engine.errors import AlreadyExists, Cancelled, IncompatibleAdapter, InvalidInput, OutOfMemory, public_message
from framecast.engine.lowvram import (
    GiB,
    Attention,
    Offload,
    Quantize,
    MemoryPlan,
    Placement,
    component_bytes,
    estimate_peak_bytes,
    memory_size,
    module_bytes,
    quantize_pipeline,
    select_attention,
    slot_bytes,
)
from framecast.engine.metrics import psnr, seam_score, ssim, temporal_change
from framecast.engine.model import load_pipeline
from framecast.engine.sampling import (
    MAX_PROMPT_CHARS,
    MAX_PROMPT_TOKENS,
    Conditioning,
    composite,
    decode_stream,
    denoise,
    encode_clip_image,
    encode_prompts,
    encode_video,
    feather_alpha,
    prompt_tokens,
)
from framecast.engine.training import Progress, Sample, TrainSettings, train_lora
from framecast.engine.windows import WindowPlan, plan_windows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    model_dir: str
    device: str = "auto"  # auto: cuda when available, else cpu
    dtype: str = "auto"  # auto: bfloat16 on cuda, float32 on cpu
    max_frames: int = 81
    max_pixels: int = 832 * 480 * 2  # per frame
    max_steps: int = 10_000
    adapter_slots: int = 8  # adapters kept in device memory at once (LRU; pinned ones never evicted)
    adapter_host_cache_gb: float = 4.0  # host memory for adapters off the device (LRU)
    adapter_max_rank: int = 64  # rank of the hot-swap slot every adapter is zero-padded to
    window_frames: int = 81  # clips longer than this are generated/trained in windows
    quantize: str = "none"  # none | int8 | nf4 | auto (auto: the least that fits max_vram_gb)
    attention: str = "auto"  # auto | sdpa | xformers
    offload: str = "none"  # none | model | group | auto (auto: the least that fits max_vram_gb)
    vae_tiling: bool = False  # decode in spatial tiles (less memory, frames no longer stream per latent frame)
    gradient_checkpointing: bool = True
    optimizer: str = "adamw"  # adamw | adamw8bit (bitsandbytes)
    max_vram_gb: float = 0.0  # memory budget for planning; 0 = none
    reference_size: tuple[int, int] = (480, 832)  # (height, width) the budget is planned for at start-up

    def __post_init__(self):
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise InvalidInput("device", self.device, "must be auto, cpu, cuda or cuda:N")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise InvalidInput("dtype", self.dtype, "must be auto, float32, bfloat16 or float16")
        if self.quantize not in ("auto", *(q.value for q in Quantize)):
            raise InvalidInput("quantize", self.quantize, "must be none, int8, nf4 or auto")
        if self.offload not in ("auto", *(o.value for o in Offload)):
            raise InvalidInput("offload", self.offload, "must be none, model, group or auto")
        Attention(self.attention) if self.attention in {a.value for a in Attention} else _bad("attention", self.attention, "must be auto, sdpa or xformers")
        if self.optimizer not in ("adamw", "adamw8bit"):
            raise InvalidInput("optimizer", self.optimizer, "must be adamw or adamw8bit")
        if not (math.isfinite(self.max_vram_gb) and self.max_vram_gb >= 0):
            raise InvalidInput("max_vram_gb", self.max_vram_gb, "must be a finite number >= 0")
        if not (math.isfinite(self.adapter_host_cache_gb) and self.adapter_host_cache_gb >= 0):
            raise InvalidInput("adapter_host_cache_gb", self.adapter_host_cache_gb, "must be a finite number >= 0")
        if "auto" in (self.quantize, self.offload) and not self.max_vram_gb:
            raise InvalidInput("max_vram_gb", self.max_vram_gb, "must be set when quantize or offload is auto")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if self.resolved_device().type == "cuda" else torch.float32
        return getattr(torch, self.dtype)


@dataclass
class TrainJob:
    adapter: str
    source: np.ndarray  # [F, H, W, 3] uint8
    mask: np.ndarray  # [F, H, W] or [1, H, W] bool, True = edit region
    prompt: str
    settings: TrainSettings = TrainSettings()
    references: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (frame index, edited [H, W, 3])
    mask_mode: C.MaskMode = C.MaskMode.BBOX
    dilate_px: int = 0
    source_media_id: str = ""
    window_frames: int = 0  # 0: the server's window (the whole clip when it fits)
    overlap_frames: int | None = None  # None: windows.default_overlap of the window used


@dataclass
class PropagateJob:
    adapter: str  # "" = the base model alone
    source: np.ndarray  # [F, H, W, 3] uint8
    mask: np.ndarray  # [F, H, W] or [1, H, W] bool
    edited_first_frame: np.ndarray  # [H, W, 3] uint8
    prompt: str
    negative_prompt: str = ""
    steps: int = 30
    guidance_scale: float = 5.0
    seed: int = 0
    composite: bool = False
    feather_px: int = 3
    mask_mode: C.MaskMode = C.MaskMode.BBOX
    dilate_px: int = 0
    window_frames: int = 0  # 0: the server's window (one window when the clip fits)
    overlap_frames: int | None = None  # None: windows.default_overlap of the window used
    blend_ramp: str = "linear"  # linear | cosine
    adapter_strength: float = 1.0  # the adapter's delta scaled by this (0 = the base model); ignored without one


@dataclass
class PropagateResult:
    frames: np.ndarray  # [F, H, W, 3] uint8
    edit_mask: np.ndarray  # [F, H, W] bool, the mask actually used
    background_psnr: float  # output vs source outside the edit mask, dB
    background_ssim: float  # the same pixels' mean SSIM (1.0 = identical)
    first_frame_psnr: float  # output frame 0 vs the edited first frame, dB
    temporal_change: float  # frame-to-frame change inside the mask over the source's; 1.0 = as smooth
    seam_score: float  # frame change at window seams / elsewhere; 1.0 = invisible (or one window)
    windows: int
    elapsed_s: float
    timings: dict[str, float] = field(default_factory=dict)  # encode_s, denoise_s, decode_s


def planning_frames(config: EngineConfig) -> int:
    """Frames ``auto`` memory settings are planned for: a window of at most 13 frames (a longer
    clip is cut into windows that fit), or with ``window_frames`` 0, which never cuts a clip,
    the longest clip the server accepts."""
    return min(config.window_frames, 13) if config.window_frames else config.max_frames


def _bad(field_name: str, value, reason: str):
    raise InvalidInput(field_name, value, reason)


class Engine:
    def __init__(self, config: EngineConfig, data_dir: str | Path, pipe=None):
        """Load the base model from ``config.model_dir`` (or take an already built ``pipe``,
        as benchmarks do with random-weight architectures) and apply the memory options."""
        self.config = config
        self.device = config.resolved_device()
        self.dtype = config.resolved_dtype()
        started = time.perf_counter()
        if pipe is None:
            pipe = load_pipeline(config.model_dir, torch.device("cpu"), self.dtype)
        self.pipe = pipe
        self.quantize, self.offload = self._choose_memory_settings()
        quantize_pipeline(pipe, self.quantize, self.dtype, self.device if self.offload is Offload.NONE else "cpu")
        self.placement = Placement(pipe, self.device, self.offload)
        self.attention = select_attention(pipe.transformer, Attention(config.attention), self.device)
        if config.vae_tiling:
            pipe.vae.enable_tiling()
        self.load_seconds = time.perf_counter() - started
        self.base_model = base_model_id(config.model_dir, self.pipe.transformer.config)
        self.store = AdapterStore(Path(data_dir) / "adapters")
        self.slots = AdapterSlots(
            self.pipe.transformer, capacity=config.adapter_slots, host_bytes=int(config.adapter_host_cache_gb * GiB),
            max_rank=config.adapter_max_rank, device=self.device,
        )
        for name, message in self.store.failures().items():  # failed trainings survive a restart
            self.slots.mark_failed(name, message)
        self.slots.remember_used(self.store.last_used())  # and so do last-use times
        for name, why in self.slots.restore_pins(self.store).items():  # and pins, where they still fit
            log.warning("adapter %r was pinned before the restart and is no longer: %s", name, why)
        # Request threads count prompt tokens on a copy: a tokenizer call sets truncation and padding
        # on the tokenizer, which the job thread's prompt encoding must not see change under it.
        tokenizer = getattr(self.pipe, "tokenizer", None)
        self._count_tokenizer = copy.deepcopy(tokenizer) if tokenizer is not None else None
        if self._count_tokenizer is not None:
            self._count_tokenizer.model_max_length = 1 << 30  # counts past 512 are wanted, without a warning
        self._count_lock = threading.Lock()
        self._prompt_cache: OrderedDict[tuple, tuple] = OrderedDict()
        self._image_cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        log.info(
            "loaded %s on %s (%s, quantize=%s, offload=%s, attention=%s) in %.1fs", self.base_model, self.device,
            self.dtype, self.quantize.value, self.offload.value, self.attention, self.load_seconds,
        )

    def _choose_memory_settings(self) -> tuple[Quantize, Offload]:
        """The configured quantize/offload; ``auto`` takes the first that fits the budget for
        ``planning_frames`` at the reference size, from least to most aggressive."""
        config = self.config
        if "auto" not in (config.quantize, config.offload):
            return Quantize(config.quantize), Offload(config.offload)
        quantizers = [Quantize(config.quantize)] if config.quantize != "auto" else list(Quantize)
        offloads = [Offload(config.offload)] if config.offload != "auto" else list(Offload)
        height, width = config.reference_size
        budget = config.max_vram_gb * GiB
        for offload in offloads:
            for quantize in quantizers:
                plan = self.memory_plan(quantize, offload, planning_frames(config), height, width, training=True)
                if plan.peak_bytes <= budget:
                    return quantize, offload
        return quantizers[-1], offloads[-1]

    def memory_plan(self, quantize, offload, frames: int, height: int, width: int, training: bool,
                    rank: int = 16) -> MemoryPlan:
        """The device memory a clip of ``frames`` at ``width`` x ``height`` needs under these memory
        settings (``estimate_peak_bytes``): the transformer, the components beside it on the device,
        the adapter slot and the activations."""
        dtype_bytes = torch.finfo(self.dtype).bits // 8
        resident, visiting = component_bytes(self.pipe, quantize, offload, dtype_bytes)
        resident += slot_bytes(self.pipe.transformer, self.config.adapter_max_rank, dtype_bytes)
        return estimate_peak_bytes(
            self.pipe.transformer, quantize, offload, frames, height, width, training, rank, dtype_bytes=dtype_bytes,
            vae_spatial=self._vae_spatial, resident_bytes=resident, visiting_bytes=visiting,
        )  # fmt: skip

    # --- info ---------------------------------------------------------------------------

    def info(self) -> dict:
        if self.device.type == "cuda":
            memory = torch.cuda.memory_allocated(self.device)
        else:
            memory = sum(module_bytes(m) for m in self.pipe.components.values() if isinstance(m, torch.nn.Module))
        return {
            "model": self.base_model,
            "model_dir": str(self.config.model_dir),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "quantization": self.quantize.value,
            "attention_backend": self.attention,
            "offload": self.offload.value,
            "max_vram_bytes": int(self.config.max_vram_gb * GiB),
            "vae_tiling": self.config.vae_tiling,
            "gradient_checkpointing": self.config.gradient_checkpointing,
            "optimizer": self.config.optimizer,
            "memory_bytes": int(memory),
            "max_frames": self.config.max_frames,
            "max_pixels": self.config.max_pixels,
            "max_steps": self.config.max_steps,
            "transformer_layers": int(self.pipe.transformer.config.num_layers),
        }

    # --- validation ---------------------------------------------------------------------

    def check_clip(self, source: np.ndarray, mask: np.ndarray, field_prefix: str = "") -> np.ndarray:
        """Validate a source video and its mask; return the mask broadcast to [F, H, W]."""
        frames, height, width = source.shape[:3]
        if frames == 0:
            raise InvalidInput(f"{field_prefix}source", 0, "has zero frames")
        C.check_frame_count(frames, f"{field_prefix}source.num_frames")
        C.check_frame_size(height, width, f"{field_prefix}source")
        if frames > self.config.max_frames:
            raise InvalidInput(f"{field_prefix}source.num_frames", frames, f"exceeds the limit of {self.config.max_frames}")
        if height * width > self.config.max_pixels:
            raise InvalidInput(
                f"{field_prefix}source", f"{width}x{height}", f"exceeds the limit of {self.config.max_pixels} pixels per frame"
            )
        if mask.shape[1:] != (height, width):
            raise InvalidInput(
                f"{field_prefix}mask", f"{mask.shape[2]}x{mask.shape[1]}", f"must match the source size {width}x{height}"
            )
        if mask.shape[0] not in (1, frames):
            raise InvalidInput(
                f"{field_prefix}mask.num_frames", mask.shape[0], f"must be 1 (one mask for every frame) or {frames} (the source's)"
            )
        return np.broadcast_to(mask, (frames, height, width)).copy()

    @staticmethod
    def _check_edit_region(mask: np.ndarray, mode: C.MaskMode, dilate_px: int) -> None:
        """Refuse a mask that leaves nothing to edit once ``mode`` has shaped it. Runs on the RPC
        thread: it asks ``has_edit_region`` rather than preparing the whole mask (the job does)."""
        if mode not in tuple(C.MaskMode):
            raise InvalidInput("mask_mode", mode, "must be exact, bbox or dilate")
        height, width = mask.shape[1:]
        if C.MaskMode(mode) is C.MaskMode.DILATE and not 0 <= dilate_px <= max(height, width):
            raise InvalidInput("dilate_px", dilate_px, f"must be between 0 and {max(height, width)} (the frame's longer side)")
        if not mask.any():
            raise InvalidInput("mask", "all black", "has no edit region: mark the region to change in white")
        if not C.has_edit_region(mask, mode):
            raise InvalidInput("mask", f"mask_mode {C.MaskMode(mode).value}", "leaves no edit region (every region is "
                               f"below the bbox minimum area, {C.bbox_min_area(height, width)} px at {width}x{height}); "
                               "use mask_mode exact or dilate")

    def check_prompt(self, field_name: str, prompt: str) -> None:
        """Refuse a prompt the text encoder would cut (over MAX_PROMPT_TOKENS tokens, as the pipeline
        tokenizes it); text over MAX_PROMPT_CHARS characters is refused without tokenizing it."""
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidInput(field_name, prompt, f"is {len(prompt)} characters long, over the limit of {MAX_PROMPT_CHARS} "
                               f"(the text encoder reads at most {MAX_PROMPT_TOKENS} tokens); shorten it")
        if self._count_tokenizer is None:
            return
        with self._count_lock:
            tokens = prompt_tokens(self._count_tokenizer, prompt)
        if tokens > MAX_PROMPT_TOKENS:
            raise InvalidInput(field_name, prompt, f"is {tokens} tokens long, over the limit of {MAX_PROMPT_TOKENS} the text "
                               "encoder reads (longer prompts would be cut); shorten it")

    def _check_steps(self, field_name: str, steps: int) -> None:
        if not 1 <= steps <= self.config.max_steps:
            raise InvalidInput(field_name, steps, f"must be between 1 and {self.config.max_steps}")

    # --- training -----------------------------------------------------------------------

    def validate_train(self, job: TrainJob) -> np.ndarray:
        """Check a training request without running it; returns the mask as [F, H, W]."""
        check_adapter_name(job.adapter)
        if self.store.exists(job.adapter):
            raise AlreadyExists(f"adapter {job.adapter!r} already exists; delete it first or pick another name")
        self.check_prompt("prompt", job.prompt)
        settings = job.settings
        self._check_steps("steps", settings.steps)
        if job.references:
            self._check_steps("appearance_steps", settings.appearance_steps)
        if not 1 <= settings.rank <= 512:
            raise InvalidInput("rank", settings.rank, "must be between 1 and 512")
        if not 0 < settings.learning_rate < 1:
            raise InvalidInput("learning_rate", settings.learning_rate, "must be in (0, 1)")
        weights = (settings.w_edit, settings.w_keep)
        if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) == 0:
            raise InvalidInput("loss_weights", weights, "must be finite, >= 0 and not both 0")
        if not 0 <= settings.colour_variants <= 16:
            raise InvalidInput("colour_variants", settings.colour_variants, "must be between 0 and 16")
        mask = self.check_clip(job.source, job.mask)
        self._check_edit_region(mask, job.mask_mode, job.dilate_px)
        for index, frame in job.references:
            if not 0 <= index < len(job.source):
                raise InvalidInput("references.frame_index", index, f"must be in [0, {len(job.source) - 1}]")
            if frame.shape != job.source.shape[1:]:
                raise InvalidInput("references.image", f"{frame.shape[1]}x{frame.shape[0]}", "must match the source size")
        self._plan(job.source, job.window_frames, job.overlap_frames, training=True, rank=settings.rank)
        return mask

    def train(
        self,
        job: TrainJob,
        on_progress: Callable[[Progress], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> AdapterRecord:
        """Train ``job.adapter`` and store it. A request ``validate_train`` refuses, a cancel, or a
        name taken meanwhile leaves no trace; any other failure leaves the name FAILED with its error."""
        mask = self.validate_train(job)
        try:
            return self._train(job, mask, on_progress, should_cancel)
        except (Cancelled, AlreadyExists):  # cancelled by its owner; the name taken meanwhile
            raise
        except Exception as exc:
            # FAILED with its error, across restarts, until the name is trained again or deleted
            self._mark_training_failed(job.adapter, f"training failed: {public_message(exc)}")
            raise

    def _train(self, job: TrainJob, mask: np.ndarray, on_progress, should_cancel) -> AdapterRecord:
        settings = job.settings
        edit_mask = C.prepare_edit_mask(mask, job.mask_mode, job.dilate_px)

        # Each window is its own motion sample: a long clip trains with one window's memory.
        plan = self._plan(job.source, job.window_frames, job.overlap_frames, training=True, rank=settings.rank)
        clips = [job.source]
        variant_rng = np.random.default_rng([settings.seed, 0xC010])
        clips += [C.colour_variant(job.source, mask, variant_rng) for _ in range(settings.colour_variants)]
        motion = [
            self._motion_sample(clip[s : s + n], edit_mask[s : s + n], job.prompt, settings)
            for clip in clips
            for s, n in zip(plan.starts, plan.lengths)
        ]
        # ``steps`` per window, as if each window were trained on its own (the public code's
        # scheme): every stretch of the clip gets the passes a one-window clip gets.
        phases = [("motion", motion, settings.steps * plan.count)]
        if job.references:
            refs = [self._reference_sample(job.source, edit_mask, i, f, job.prompt, settings) for i, f in job.references]
            # Mixed with the source clip itself as in the paper (not its colour variants).
            mixed = refs * settings.reference_repeats + motion[: len(plan.starts)]
            phases.append(("appearance", mixed, settings.appearance_steps))

        self.store.clear_failure(job.adapter)  # as add_trainable clears the in-memory mark
        self.slots.add_trainable(job.adapter, settings.rank, settings.lora_alpha, settings.seed)
        try:
            with self.placement.using("transformer"):
                outcome = train_lora(
                    self.pipe.transformer, phases, settings, on_progress, should_cancel, optimizer=self.config.optimizer
                )
            state_dict = self.slots.state_dict(job.adapter)
        except BaseException:
            self.slots.detach(job.adapter)
            for param in self.pipe.transformer.parameters():
                param.requires_grad_(False)
            raise
        finally:
            del phases
            self.release_memory()
        record = AdapterRecord(
            name=job.adapter,
            base_model=self.base_model,
            rank=settings.rank,
            alpha=settings.lora_alpha,
            target_modules=sorted({k[len("transformer.") :].rsplit(".lora_", 1)[0] for k in state_dict}),
            training={**asdict(settings), "alpha": settings.lora_alpha, "mask_mode": C.MaskMode(job.mask_mode).value, "dilate_px": job.dilate_px,
                      "references": [i for i, _ in job.references], "prompt": job.prompt,
                      "window_starts": list(plan.starts), "window_lengths": list(plan.lengths)},
            source_media_id=job.source_media_id,
            final_loss=outcome.final_loss,
        )
        self.slots.finish_training(job.adapter, record)
        stored = self.store.save(state_dict, record)
        self.slots.touch(job.adapter, self.store)  # training is a use: kept across restarts, now that it is stored
        return stored

    @property
    def _vae_spatial(self) -> int:
        """How many times the VAE shrinks space (8 for Wan2.1's): the latent grid is H/s x W/s."""
        return self.pipe.vae_scale_factor_spatial

    def _conditioning(self, first_frame, source, edit_mask, prompt, negative_prompt, clip_image, first_known=True):
        video = C.condition_video(first_frame, source, edit_mask)
        positive, negative = self._prompt_embeds(prompt, negative_prompt)
        return Conditioning(
            keep_mask=C.latent_keep_mask(edit_mask, first_known, self._vae_spatial).to(self.device),
            condition_latents=self._encode_video(video),
            prompt_embeds=positive,
            negative_prompt_embeds=negative,
            image_embeds=self._image_embeds(clip_image),
        )

    def _encode_video(self, video: torch.Tensor) -> torch.Tensor:
        with self.placement.using("vae"):
            return encode_video(self.pipe, video).to(self.device)

    def _prompt_embeds(self, prompt: str, negative_prompt: str | None) -> tuple:
        """UMT5 embeddings, cached by text: the text encoder runs once per distinct prompt."""
        key = (prompt, negative_prompt)
        if key not in self._prompt_cache:
            with self.placement.using("text_encoder"):
                embeds = encode_prompts(self.pipe, prompt, negative_prompt, negative_prompt is not None, self.device)
            self._prompt_cache[key] = embeds
            while len(self._prompt_cache) > 16:
                self._prompt_cache.popitem(last=False)
        self._prompt_cache.move_to_end(key)
        return self._prompt_cache[key]

    def _image_embeds(self, image: np.ndarray) -> torch.Tensor:
        """CLIP embedding, cached by image content."""
        key = hashlib.sha256(image.tobytes() + str(image.shape).encode()).digest()
        if key not in self._image_cache:
            with self.placement.using("image_encoder"):
                self._image_cache[key] = encode_clip_image(self.pipe, image, self.device)
            while len(self._image_cache) > 16:
                self._image_cache.popitem(last=False)
        self._image_cache.move_to_end(key)
        return self._image_cache[key]

    def _motion_sample(self, source, edit_mask, prompt, settings: TrainSettings) -> Sample:
        cond = self._conditioning(source[0], source, edit_mask, prompt, None, source[0])
        return Sample(
            cond=cond,
            target_latents=self._encode_video(C.to_unit_range(source)),
            loss_weight=C.loss_weight(edit_mask, settings.w_edit, settings.w_keep, self._vae_spatial).to(self.device),
        )

    def _reference_sample(self, source, edit_mask, index, edited, prompt, settings: TrainSettings) -> Sample:
        frame_mask = edit_mask[index : index + 1]
        cond = self._conditioning(None, source[index : index + 1], frame_mask, prompt, None, edited, first_known=False)
        return Sample(
            cond=cond,
            target_latents=self._encode_video(C.to_unit_range(edited[None])),
            loss_weight=C.loss_weight(frame_mask, settings.w_edit, settings.w_keep, self._vae_spatial).to(self.device),
        )

    # --- propagation --------------------------------------------------------------------

    def validate_propagate(self, job: PropagateJob, adapter_pending: bool = False) -> np.ndarray:
        """Check a propagation request without running it; returns the mask as [F, H, W].
        ``adapter_pending``: a job that runs first is training ``job.adapter``, which is checked when this one runs."""
        self.check_prompt("prompt", job.prompt)
        self.check_prompt("negative_prompt", job.negative_prompt)
        self._check_steps("steps", job.steps)
        if not 0 <= job.guidance_scale <= 50:
            raise InvalidInput("guidance_scale", job.guidance_scale, "must be between 0 and 50")
        if not 0 <= job.adapter_strength <= 2:
            raise InvalidInput("adapter_strength", job.adapter_strength, "must be between 0 and 2")
        if job.blend_ramp not in ("linear", "cosine"):
            raise InvalidInput("blend_ramp", job.blend_ramp, "must be linear or cosine")
        mask = self.check_clip(job.source, job.mask)
        if not 0 <= job.feather_px <= max(job.source.shape[1:3]):
            raise InvalidInput("feather_px", job.feather_px, f"must be between 0 and {max(job.source.shape[1:3])} (the frame's longer side)")
        self._check_edit_region(mask, job.mask_mode, job.dilate_px)
        self._plan(job.source, job.window_frames, job.overlap_frames, training=False)
        if job.edited_first_frame.shape != job.source.shape[1:]:
            h, w = job.edited_first_frame.shape[:2]
            raise InvalidInput("edited_first_frame", f"{w}x{h}", "must match the source size")
        if job.adapter and adapter_pending:
            check_adapter_name(job.adapter)
        elif job.adapter:
            record = self.slots.record(check_adapter_name(job.adapter), self.store)
            if record.base_model != self.base_model:
                raise IncompatibleAdapter(
                    f"adapter {job.adapter!r} was trained on {record.base_model}, the server runs {self.base_model}"
                )
        return mask

    def propagate(
        self,
        job: PropagateJob,
        on_step: Callable[[int, int], None] | None = None,
        on_frames: Callable[[int, np.ndarray], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> PropagateResult:
        """Generate the edited video. ``on_frames(first_index, frames [n, H, W, 3])`` is called
        as soon as frames are final; ``on_step(step, total)`` after each denoising step.

        A clip longer than ``window_frames`` is generated window by window: each later
        window starts from a frame the previous one generated, and the frames two windows
        share are blended with a ramp (the overlap-blend kernel).
        """
        started = time.perf_counter()
        mask = self.validate_propagate(job)
        plan = self._plan(job.source, job.window_frames, job.overlap_frames, training=False)
        edit_mask = C.prepare_edit_mask(mask, job.mask_mode, job.dilate_px)
        if job.adapter:
            self.slots.activate(job.adapter, self.store, job.adapter_strength)
        else:
            self.slots.deactivate()
        alpha = feather_alpha(edit_mask, job.feather_px) if job.composite else None
        emitted = 0

        def finish(first: int, frames: np.ndarray) -> np.ndarray:
            """Composite: generated pixels inside the feathered mask over the source; frame 0
            takes the edited first frame itself, which the user gave exactly."""
            if alpha is None:
                return frames
            frames = composite(frames, job.source[first : first + len(frames)], alpha[first : first + len(frames)])
            if first == 0:
                frames[0] = np.where(edit_mask[0][..., None], job.edited_first_frame, job.source[0])
            return frames

        def emit(first: int, frames: np.ndarray) -> None:
            nonlocal emitted
            frames = finish(first, frames)
            if on_frames is not None:
                on_frames(first, frames)
            emitted = first + len(frames)

        total_steps = job.steps * plan.count
        timings: dict[str, float] = {}
        windows: list[np.ndarray] = []
        try:
            for k, (start, length) in enumerate(zip(plan.starts, plan.lengths)):
                first = job.edited_first_frame if k == 0 else self._window_first_frame(job, edit_mask, windows, plan, k)
                step_base = k * job.steps
                window_steps = None if on_step is None else (lambda i, n, b=step_base: on_step(b + i, total_steps))
                stream = None if plan.count > 1 else emit
                windows.append(
                    self._generate(job, first, start, length, edit_mask, window_steps, stream, should_cancel,
                                   seed=job.seed + k, timings=timings)
                )
                if plan.count > 1:
                    blended = self._blend(windows, plan, k, job.blend_ramp)
                    final = plan.final_before(k)
                    emit(emitted, blended[emitted:final])
        finally:
            self.release_memory()
        frames = finish(0, windows[0] if plan.count == 1 else self._blend(windows, plan, plan.count - 1, job.blend_ramp))
        return PropagateResult(
            frames=frames,
            edit_mask=edit_mask,
            background_psnr=psnr(frames, job.source, ~edit_mask),
            background_ssim=ssim(frames, job.source, ~edit_mask, device=self.device),
            first_frame_psnr=psnr(frames[0], job.edited_first_frame),
            temporal_change=temporal_change(frames, job.source, edit_mask),
            seam_score=seam_score(frames, plan.seam_boundaries()),
            windows=plan.count,
            elapsed_s=time.perf_counter() - started,
            timings=timings,
        )

    @staticmethod
    def _window_first_frame(job, edit_mask: np.ndarray, windows: list[np.ndarray], plan: WindowPlan, k: int) -> np.ndarray:
        """The frame window ``k`` (k >= 1) starts from: the previous window's frame there inside the
        edit mask, the source outside it, which is known exactly (as in training, where every
        window starts from a source frame)."""
        start = plan.starts[k]
        generated = windows[k - 1][start - plan.starts[k - 1]]
        return np.where(edit_mask[start][..., None], generated, job.source[start])

    def _plan(self, source: np.ndarray, requested: int, overlap: int | None, training: bool, rank: int = 16) -> WindowPlan:
        """Windows for a clip: the requested window (else the configured one; 0: the whole clip).
        Under a memory budget the configured window shrinks to the largest that fits; a requested
        window, or the whole clip under ``window_frames`` 0, must fit as it is. OutOfMemory when
        nothing does."""
        frames, height, width = source.shape[:3]
        window = requested or self.config.window_frames
        plan = plan_windows(frames, window, overlap)
        budget = self.config.max_vram_gb * GiB
        if not budget:
            return plan

        def need(window: int) -> int:
            return self.memory_plan(self.quantize, self.offload, window, height, width, training, rank).peak_bytes

        longest = max(plan.lengths)
        if need(longest) <= budget:
            return plan
        if not requested and window:
            for shorter in range(longest - 4, 4, -4):
                if need(shorter) <= budget:
                    return plan_windows(frames, shorter, None if overlap is None else min(overlap, (shorter - 3) // 2))
        if requested:
            smallest, what, hint = longest, f"in windows of {longest} frames", "; ask for a smaller window_frames"
        elif window:
            smallest = min(longest, 5)
            what, hint = f"in windows of {smallest} frames", ""
        else:
            smallest, what = frames, f"as one clip of {frames} frames"
            hint = "; this server does not cut clips into windows (window_frames 0): ask for a window_frames"
        raise OutOfMemory(
            f"{'training' if training else 'generating'} {width}x{height} {what} needs ~{memory_size(need(smallest))} of "
            f"device memory, over the budget of {memory_size(budget)}{hint}"
        )

    def _generate(self, job, first_frame, start, length, edit_mask, on_step, on_frames, should_cancel, seed, timings):
        """Generate frames [start, start + length) conditioned on ``first_frame``. -> [n, H, W, 3].
        Adds the seconds spent encoding, denoising and decoding to ``timings``."""
        guided = job.guidance_scale > 1.0
        source = job.source[start : start + length]
        with self._timed(timings, "encode_s"):
            cond = self._conditioning(
                first_frame, source, edit_mask[start : start + length], job.prompt,
                job.negative_prompt if guided else None, job.edited_first_frame,
            )
        with self._timed(timings, "denoise_s"), self.placement.using("transformer"):
            latents = denoise(self.pipe, cond, seed, job.steps, job.guidance_scale, on_step, should_cancel)
        del cond
        chunks, done = [], 0
        with self._timed(timings, "decode_s"), self.placement.using("vae"):
            for chunk in decode_stream(self.pipe, latents):
                if on_frames is not None:
                    on_frames(start + done, chunk)
                chunks.append(chunk)
                done += len(chunk)
                if should_cancel is not None and should_cancel() and done < length:
                    raise Cancelled("job cancelled")
        return np.concatenate(chunks)

    @contextmanager
    def _timed(self, timings: dict, key: str):
        """Wall time of a phase, synchronised with the device so queued kernels are counted."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - started

    @staticmethod
    def _blend(windows: list[np.ndarray], plan: WindowPlan, last: int, ramp: str) -> np.ndarray:
        """Blend windows 0..last into frames [0, end of window ``last``)."""
        from framecast.kernels import blend_windows

        tensors = [torch.from_numpy(w) for w in windows[: last + 1]]
        return blend_windows(tensors, plan.starts[: last + 1], frame_dim=0, ramp=ramp).numpy()

    # --- adapters -----------------------------------------------------------------------

    def delete_adapter(self, name: str) -> None:
        """Delete from disk and memory now (of a failed training, its error); FailedPrecondition
        while a running job uses or trains it, AdapterNotFound when there is nothing to delete."""
        self.slots.delete(name, self.store)

    def _mark_training_failed(self, name: str, message: str) -> None:
        """``name`` reads FAILED with ``message`` until trained again or forgotten, across restarts."""
        self.slots.forget(name)  # weights a save that failed left in the caches
        self.slots.mark_failed(name, message)
        self.store.record_failure(name, message)

    def release_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def base_model_id(model_dir: str | Path, transformer_config) -> str:
    """A name for the base model that changes when its architecture does: directory name + config hash."""
    config = {k: v for k, v in dict(transformer_config).items() if not k.startswith("_")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{Path(model_dir).resolve().name}@{digest}"
