"""The engine: one base model in memory, adapters trained and applied on it.

Driven by the server's worker thread (one job at a time) or directly from Python. Jobs
carry decoded numpy media; every check of a request's content happens here, raising
``InvalidInput`` with the request's field name.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from framecast.engine import conditioning as C
from framecast.engine.adapters import AdapterRecord, AdapterSlots, AdapterStore, check_adapter_name
from framecast.engine.errors import AlreadyExists, Cancelled, IncompatibleAdapter, InvalidInput
from framecast.engine.metrics import psnr, seam_score
from framecast.engine.model import load_pipeline
from framecast.engine.sampling import (
    Conditioning,
    composite,
    decode_stream,
    denoise,
    encode_clip_image,
    encode_prompts,
    encode_video,
    feather_alpha,
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
    adapter_slots: int = 8  # adapters kept attached to the model at once
    window_frames: int = 81  # clips longer than this are generated/trained in windows

    def __post_init__(self):
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise InvalidInput("device", self.device, "must be auto, cpu, cuda or cuda:N")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise InvalidInput("dtype", self.dtype, "must be auto, float32, bfloat16 or float16")

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
    overlap_frames: int = 4


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
    overlap_frames: int = 4
    blend_ramp: str = "linear"  # linear | cosine


@dataclass
class PropagateResult:
    frames: np.ndarray  # [F, H, W, 3] uint8
    edit_mask: np.ndarray  # [F, H, W] bool, the mask actually used
    background_psnr: float  # output vs source outside the edit mask, dB
    first_frame_psnr: float  # output frame 0 vs the edited first frame, dB
    seam_score: float  # frame change at window seams / elsewhere; 1.0 = invisible (or one window)
    windows: int
    elapsed_s: float


class Engine:
    def __init__(self, config: EngineConfig, data_dir: str | Path):
        self.config = config
        self.device = config.resolved_device()
        self.dtype = config.resolved_dtype()
        started = time.perf_counter()
        self.pipe = load_pipeline(config.model_dir, self.device, self.dtype)
        self.load_seconds = time.perf_counter() - started
        self.base_model = base_model_id(config.model_dir, self.pipe.transformer.config)
        self.store = AdapterStore(Path(data_dir) / "adapters")
        self.slots = AdapterSlots(self.pipe.transformer, capacity=config.adapter_slots)
        log.info("loaded %s on %s (%s) in %.1fs", self.base_model, self.device, self.dtype, self.load_seconds)

    # --- info ---------------------------------------------------------------------------

    def info(self) -> dict:
        if self.device.type == "cuda":
            memory = torch.cuda.memory_allocated(self.device)
        else:
            memory = sum(p.numel() * p.element_size() for p in self.pipe.transformer.parameters())
        return {
            "model": self.base_model,
            "model_dir": str(self.config.model_dir),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "quantization": "none",
            "attention_backend": "sdpa",
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

    def _check_steps(self, field_name: str, steps: int) -> None:
        if not 1 <= steps <= self.config.max_steps:
            raise InvalidInput(field_name, steps, f"must be between 1 and {self.config.max_steps}")

    # --- training -----------------------------------------------------------------------

    def validate_train(self, job: TrainJob) -> np.ndarray:
        """Check a training request without running it; returns the mask as [F, H, W]."""
        check_adapter_name(job.adapter)
        if self.store.exists(job.adapter):
            raise AlreadyExists(f"adapter {job.adapter!r} already exists; delete it first or pick another name")
        settings = job.settings
        self._check_steps("steps", settings.steps)
        if job.references:
            self._check_steps("appearance_steps", settings.appearance_steps)
        if not 1 <= settings.rank <= 512:
            raise InvalidInput("rank", settings.rank, "must be between 1 and 512")
        if not 0 < settings.learning_rate < 1:
            raise InvalidInput("learning_rate", settings.learning_rate, "must be in (0, 1)")
        if settings.w_edit < 0 or settings.w_keep < 0 or settings.w_edit + settings.w_keep == 0:
            raise InvalidInput("loss_weights", (settings.w_edit, settings.w_keep), "must be >= 0 and not both 0")
        mask = self.check_clip(job.source, job.mask)
        for index, frame in job.references:
            if not 0 <= index < len(job.source):
                raise InvalidInput("references.frame_index", index, f"must be in [0, {len(job.source) - 1}]")
            if frame.shape != job.source.shape[1:]:
                raise InvalidInput("references.image", f"{frame.shape[1]}x{frame.shape[0]}", "must match the source size")
        plan_windows(len(job.source), self._window_frames(job.window_frames), job.overlap_frames)
        return mask

    def train(
        self,
        job: TrainJob,
        on_progress: Callable[[Progress], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> AdapterRecord:
        mask = self.validate_train(job)
        self.slots.flush()
        settings = job.settings
        edit_mask = C.prepare_edit_mask(mask, job.mask_mode, job.dilate_px)

        # Each window is its own motion sample: a long clip trains with one window's memory.
        plan = plan_windows(len(job.source), self._window_frames(job.window_frames), job.overlap_frames)
        motion = [
            self._motion_sample(job.source[s : s + n], edit_mask[s : s + n], job.prompt, settings)
            for s, n in zip(plan.starts, plan.lengths)
        ]
        phases = [("motion", motion, settings.steps)]
        if job.references:
            refs = [self._reference_sample(job.source, edit_mask, i, f, job.prompt, settings) for i, f in job.references]
            mixed = refs * settings.reference_repeats + phases[0][1]
            phases.append(("appearance", mixed, settings.appearance_steps))

        self.slots.add_trainable(job.adapter, settings.rank, settings.lora_alpha, settings.seed)
        try:
            outcome = train_lora(self.pipe.transformer, phases, settings, on_progress, should_cancel)
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
        return self.store.save(state_dict, record)

    def _conditioning(self, first_frame, source, edit_mask, prompt, negative_prompt, clip_image, first_known=True):
        video = C.condition_video(first_frame, source, edit_mask)
        positive, negative = encode_prompts(self.pipe, prompt, negative_prompt, negative_prompt is not None, self.device)
        return Conditioning(
            keep_mask=C.latent_keep_mask(edit_mask, first_frame_known=first_known).to(self.device),
            condition_latents=encode_video(self.pipe, video).to(self.device),
            prompt_embeds=positive,
            negative_prompt_embeds=negative,
            image_embeds=encode_clip_image(self.pipe, clip_image, self.device),
        )

    def _motion_sample(self, source, edit_mask, prompt, settings: TrainSettings) -> Sample:
        cond = self._conditioning(source[0], source, edit_mask, prompt, None, source[0])
        return Sample(
            cond=cond,
            target_latents=encode_video(self.pipe, C.to_unit_range(source)).to(self.device),
            loss_weight=C.loss_weight(edit_mask, settings.w_edit, settings.w_keep).to(self.device),
        )

    def _reference_sample(self, source, edit_mask, index, edited, prompt, settings: TrainSettings) -> Sample:
        frame_mask = edit_mask[index : index + 1]
        cond = self._conditioning(None, source[index : index + 1], frame_mask, prompt, None, edited, first_known=False)
        return Sample(
            cond=cond,
            target_latents=encode_video(self.pipe, C.to_unit_range(edited[None])).to(self.device),
            loss_weight=C.loss_weight(frame_mask, settings.w_edit, settings.w_keep).to(self.device),
        )

    # --- propagation --------------------------------------------------------------------

    def validate_propagate(self, job: PropagateJob) -> np.ndarray:
        """Check a propagation request without running it; returns the mask as [F, H, W]."""
        self._check_steps("steps", job.steps)
        if not 0 <= job.guidance_scale <= 50:
            raise InvalidInput("guidance_scale", job.guidance_scale, "must be between 0 and 50")
        if job.feather_px < 0:
            raise InvalidInput("feather_px", job.feather_px, "must be >= 0")
        if job.blend_ramp not in ("linear", "cosine"):
            raise InvalidInput("blend_ramp", job.blend_ramp, "must be linear or cosine")
        mask = self.check_clip(job.source, job.mask)
        plan_windows(len(job.source), self._window_frames(job.window_frames), job.overlap_frames)
        if job.edited_first_frame.shape != job.source.shape[1:]:
            h, w = job.edited_first_frame.shape[:2]
            raise InvalidInput("edited_first_frame", f"{w}x{h}", "must match the source size")
        if job.adapter:
            record = self.store.record(check_adapter_name(job.adapter))
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
        plan = plan_windows(len(job.source), self._window_frames(job.window_frames), job.overlap_frames)
        self.slots.flush()
        edit_mask = C.prepare_edit_mask(mask, job.mask_mode, job.dilate_px)
        if job.adapter:
            self.slots.activate(job.adapter, self.store)
        else:
            self.slots.deactivate()
        alpha = feather_alpha(edit_mask, job.feather_px) if job.composite else None
        emitted = 0

        def finish(first: int, frames: np.ndarray) -> np.ndarray:
            """Composite: generated pixels inside the feathered mask over the source; frame 0
            takes the edited first frame itself, which the user gave exactly."""
            if alpha is None:
                return frames
            if first == 0:
                frames = np.concatenate([job.edited_first_frame[None], frames[1:]])
            return composite(frames, job.source[first : first + len(frames)], alpha[first : first + len(frames)])

        def emit(first: int, frames: np.ndarray) -> None:
            nonlocal emitted
            frames = finish(first, frames)
            if on_frames is not None:
                on_frames(first, frames)
            emitted = first + len(frames)

        total_steps = job.steps * plan.count
        windows: list[np.ndarray] = []
        try:
            for k, (start, length) in enumerate(zip(plan.starts, plan.lengths)):
                # Window 0 starts from the edited first frame, later ones from a generated frame.
                first = job.edited_first_frame if k == 0 else windows[k - 1][start - plan.starts[k - 1]]
                step_base = k * job.steps
                window_steps = None if on_step is None else (lambda i, n, b=step_base: on_step(b + i, total_steps))
                stream = None if plan.count > 1 else emit
                windows.append(
                    self._generate(job, first, start, length, edit_mask, window_steps, stream, should_cancel, seed=job.seed + k)
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
            first_frame_psnr=psnr(frames[0], job.edited_first_frame),
            seam_score=seam_score(frames, plan.seam_boundaries()),
            windows=plan.count,
            elapsed_s=time.perf_counter() - started,
        )

    def _window_frames(self, requested: int) -> int:
        """The window length in effect: the request's, else the configured maximum clip length."""
        if requested:
            return requested
        return self.config.window_frames

    def _generate(self, job, first_frame, start, length, edit_mask, on_step, on_frames, should_cancel, seed):
        """Generate frames [start, start + length) conditioned on ``first_frame``. -> [n, H, W, 3]."""
        guided = job.guidance_scale > 1.0
        source = job.source[start : start + length]
        cond = self._conditioning(
            first_frame, source, edit_mask[start : start + length], job.prompt,
            job.negative_prompt if guided else None, job.edited_first_frame,
        )
        latents = denoise(self.pipe, cond, seed, job.steps, job.guidance_scale, on_step, should_cancel)
        del cond
        chunks, done = [], 0
        for chunk in decode_stream(self.pipe, latents):
            if on_frames is not None:
                on_frames(start + done, chunk)
            chunks.append(chunk)
            done += len(chunk)
            if should_cancel is not None and should_cancel() and done < length:
                raise Cancelled("job cancelled")
        return np.concatenate(chunks)

    @staticmethod
    def _blend(windows: list[np.ndarray], plan: WindowPlan, last: int, ramp: str) -> np.ndarray:
        """Blend windows 0..last into frames [0, end of window ``last``)."""
        from framecast.kernels import blend_windows

        tensors = [torch.from_numpy(w) for w in windows[: last + 1]]
        return blend_windows(tensors, plan.starts[: last + 1], frame_dim=0, ramp=ramp).numpy()

    # --- adapters -----------------------------------------------------------------------

    def delete_adapter(self, name: str) -> None:
        """Delete from disk now; detach from the model before the next job (a job may be running)."""
        self.store.delete(name)
        self.slots.detach_later(name)

    def release_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def base_model_id(model_dir: str | Path, transformer_config) -> str:
    """A name for the base model that changes when its architecture does: directory name + config hash."""
    config = {k: v for k, v in dict(transformer_config).items() if not k.startswith("_")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{Path(model_dir).resolve().name}@{digest}"
