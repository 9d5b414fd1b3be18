"""The engine: one base model in memory, adapters trained and applied on it.

Driven by the server's worker thread (one job at a time) or directly from Python. A request
is checked and planned once (``prepare_train`` / ``prepare_propagate``, cheap enough for a
request thread) into a prepared object; ``train`` and ``propagate`` run it. Both also take
an unprepared request and prepare it first, for callers without a queue in between.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from framecast.common.requests import MaskMode, PropagateJob, TrainJob
from framecast.engine.adapters.manager import AdapterManager
from framecast.engine.adapters.slots import AdapterRecord, AdapterSlots, AdapterStore, check_adapter_name
from framecast.engine.config import GiB, EngineConfig, EngineInfo, Offload, Quantize, concrete
from framecast.engine.errors import AlreadyExists, Cancelled, InvalidInput, OutOfMemory, Problems, public_message
from framecast.engine.jobs import checks
from framecast.engine.jobs.clip import ArrayClip, ClipData, OnRead, job_clip
from framecast.engine.jobs.prepared import PreparedPropagate, PreparedTrain, PropagateResult
from framecast.engine.masks.trackers import Tracker, TrackerKind, new_tracker
from framecast.engine.masks.tracks import TrackCache
from framecast.engine.memory.lowvram import Placement, quantize_pipeline, select_attention
from framecast.engine.memory.model import MemoryModel, MemoryPlan, Workload
from framecast.engine.memory.sizes import memory_size, module_bytes
from framecast.engine.method import conditioning as C
from framecast.engine.method.encoding import Encoders
from framecast.engine.method.propagation import OnFrames, OnStep, Propagation
from framecast.engine.method.sampling import Sampler
from framecast.engine.method.training import LoraTrainer, Progress, train_lora
from framecast.engine.method.windows import WindowPlan, plan_windows
from framecast.engine.model import load_pipeline, model_limits
from framecast.engine.model_settings import ModelSettings
from framecast.engine.quality.fidelity import Fidelity, FidelityMeter, Verdict
from framecast.engine.speed import Speed

log = logging.getLogger(__name__)
OnClip = Callable[[ClipData], None]  # what a job read: its notices, a tracked region


class Engine:
    def __init__(self, config: EngineConfig, data_dir: str | Path, pipe=None):
        """Load the base model from ``config.model_dir`` (or take an already built ``pipe``,
        as benchmarks do with random-weight architectures) and apply the memory options."""
        self.config = config
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" \
            else torch.device(config.device)  # fmt: skip
        self.dtype = (torch.bfloat16 if self.device.type == "cuda" else torch.float32) if config.dtype == "auto" \
            else getattr(torch, config.dtype.value)  # fmt: skip
        started = time.perf_counter()
        if pipe is None:
            pipe = load_pipeline(config.model_dir, torch.device("cpu"), self.dtype)
        self.pipe = pipe
        self.quantize, self.offload = self._choose_memory_settings()
        quantize_pipeline(pipe, self.quantize, self.dtype, self.device if self.offload is Offload.NONE else "cpu")
        self.placement = Placement(pipe, self.device, self.offload)
        self.attention = select_attention(pipe.transformer, config.attention, self.device)
        if config.vae_tiling:
            pipe.vae.enable_tiling()
        self.load_seconds = time.perf_counter() - started
        self.base_model = base_model_id(config.model_dir, self.pipe.transformer.config)
        slots = AdapterSlots(
            self.pipe.transformer, capacity=config.adapter_slots, host_bytes=int(config.adapter_host_cache_gb * GiB),
            max_rank=config.adapter_max_rank, device=self.device,
        )  # fmt: skip
        self.adapters = AdapterManager(AdapterStore(Path(data_dir) / "adapters"), slots, self.base_model)
        self.encoders = Encoders(pipe, self.placement, self.device)
        self.limits = model_limits(pipe, config.model_dir)
        self.settings = ModelSettings.load(config.model_dir)  # what a request's unset fields take
        self.speed = Speed()
        self._sam2 = None
        self.tracks = TrackCache()  # regions a job tracked, for the jobs that follow on the same shot
        self._prompts = checks.PromptCounter(pipe.tokenizer)
        log.info(
            "loaded %s on %s (%s, quantize=%s, offload=%s, attention=%s) in %.1fs", self.base_model, self.device,
            self.dtype, self.quantize.value, self.offload.value, self.attention, self.load_seconds,
        )  # fmt: skip

    # --- trackers ---------------------------------------------------------------------------

    @property
    def tracker_kinds(self) -> tuple[TrackerKind, ...]:
        """The trackers a mask prompt may name here: SAM2 only with a checkpoint."""
        kinds = (TrackerKind.CSRT, TrackerKind.FLOW)
        return (*kinds, TrackerKind.SAM2) if self.config.sam2_checkpoint else kinds

    def tracker(self, kind: TrackerKind) -> Tracker:
        """The tracker of ``kind``; SAM2's model is loaded once, on first use, on the engine's device."""
        if TrackerKind(kind) is not TrackerKind.SAM2:
            return new_tracker(kind)
        if not self.config.sam2_checkpoint:
            raise InvalidInput("mask_prompt.tracker", "sam2", "needs a SAM2 checkpoint: serve --sam2-checkpoint DIR")
        if self._sam2 is None:
            from framecast.engine.masks.sam2 import Sam2Tracker

            self._sam2 = Sam2Tracker.load(self.config.sam2_checkpoint, self.device)
        return self._sam2

    # --- memory -------------------------------------------------------------------------------

    def _choose_memory_settings(self) -> tuple[Quantize, Offload]:
        """The configured quantize/offload; ``auto`` takes the first that fits the budget for
        ``planning_frames`` at the reference size, from least to most aggressive."""
        config = self.config
        quantizers = concrete(Quantize) if config.quantize is Quantize.AUTO else [config.quantize]
        offloads = concrete(Offload) if config.offload is Offload.AUTO else [config.offload]
        if len(quantizers) == len(offloads) == 1:
            return quantizers[0], offloads[0]
        height, width = config.reference_size
        for offload in offloads:
            for quantize in quantizers:
                plan = self.memory_plan(quantize, offload, config.planning_frames, height, width, training=True)
                if plan.peak_bytes <= config.max_vram_gb * GiB:
                    return quantize, offload
        return quantizers[-1], offloads[-1]

    def memory_plan(self, quantize: Quantize, offload: Offload, frames: int, height: int, width: int, training: bool,
                    rank: int = 16) -> MemoryPlan:  # fmt: skip
        """The memory a window of ``frames`` at ``width`` x ``height`` needs under these memory settings
        (``framecast.engine.memory.model``): its peak on the device, ``peak_bytes`` what a budget must
        hold, with the adapter slot at the server's slot rank (a server has one from its first adapter
        on), the adapters now in the device and host tiers, sampling with guidance or training at
        ``rank`` with this server's checkpointing and optimiser. The first plan of a setting traces
        the model's components on fake tensors (seconds for the 14B); later ones take microseconds."""
        if getattr(self, "_memory_model", None) is None:
            self._memory_model = MemoryModel(self.pipe, self.dtype)
        config = self.config
        slots = getattr(getattr(self, "adapters", None), "slots", None)
        tiers = slots.memory() if slots is not None else {}
        work = Workload(
            frames=frames, height=height, width=width, training=training, quantize=quantize, offload=offload,
            rank=rank, slot_rank=max(config.adapter_max_rank, slots.max_rank if slots is not None else 0),
            gradient_checkpointing=config.gradient_checkpointing, optimizer=config.optimizer,
            vae_tiling=config.vae_tiling, adapter_cache_bytes=tiers.get("device_bytes", 0) - tiers.get("slot_bytes", 0),
            adapter_host_bytes=tiers.get("host_bytes", 0),
        )  # fmt: skip
        return self._memory_model.predict(work)

    def plan_windows(self, frames: int, height: int, width: int, requested: int, overlap: int | None, training: bool,
                     rank: int = 16) -> WindowPlan:  # fmt: skip
        """Windows for a clip: the requested window (else the configured one; 0: the whole clip).
        Under a memory budget the configured window shrinks to the largest that fits; a requested
        window, or the whole clip under ``window_frames`` 0, must fit as it is. OutOfMemory when
        nothing does."""
        limit = min(self.config.max_frames, self.limits.max_window_frames)
        if requested > limit:
            raise InvalidInput("window_frames", requested, f"must be at most {limit} (the longest window this server runs)")
        window = min(requested or self.config.window_frames, limit)
        if not window and frames > limit:
            raise InvalidInput("source", f"{frames} working frames", f"is longer than the {limit} frames one window holds, and "
                               "this server does not cut clips into windows (window_frames 0): edit a shorter part "
                               "(shot.start_s, shot.end_s) or ask for a window_frames")  # fmt: skip
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

    def release_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # --- info -----------------------------------------------------------------------------------

    def info(self) -> EngineInfo:
        if self.device.type == "cuda":
            memory = torch.cuda.memory_allocated(self.device)
        else:
            memory = sum(module_bytes(m) for m in self.pipe.components.values() if isinstance(m, torch.nn.Module))
        config, slots = self.config, self.adapters.slots
        return EngineInfo(
            model=self.base_model, model_dir=str(config.model_dir), dtype=str(self.dtype).removeprefix("torch."),
            device=str(self.device), quantization=self.quantize.value, attention_backend=self.attention,
            offload=self.offload.value, max_vram_bytes=int(config.max_vram_gb * GiB), vae_tiling=config.vae_tiling,
            gradient_checkpointing=config.gradient_checkpointing, optimizer=config.optimizer.value,
            memory_bytes=int(memory), max_frames=config.max_frames, max_pixels=config.max_pixels,
            window_frames=config.window_frames, adapters_loaded=tuple(slots.attached),
            adapters_cached=tuple(slots.cached), adapters_pinned=tuple(slots.pinned),
            adapter_device_slots=slots.capacity, adapter_host_cache_bytes=slots.host_bytes,
            adapter_slot_rank=slots.max_rank, native_width=self.limits.native_width,
            native_height=self.limits.native_height, max_side=self.limits.max_side,
            max_window_frames=min(config.max_frames, self.limits.max_window_frames), size_factor=self.limits.factor,
            model_settings_json=json.dumps(self.settings.to_json(), sort_keys=True),
        )  # fmt: skip

    def device_memory(self) -> tuple[int, int] | None:
        """(bytes torch has allocated on the device now, the most it has had allocated at once since the
        process started or its peak was last reset) on a CUDA device; None elsewhere (no such counts)."""
        if self.device.type != "cuda":
            return None
        return torch.cuda.memory_allocated(self.device), torch.cuda.max_memory_allocated(self.device)

    # --- training -------------------------------------------------------------------------------

    def prepare_train(self, job: TrainJob, problems: Problems | None = None) -> PreparedTrain:
        """Check a training request and plan it, without running it (a request thread may call this):
        every problem of its fields, with those already in ``problems``, is reported at once
        (``InvalidRequest``)."""
        self.adapters.check_new(job.adapter)
        problems = problems or Problems()
        with problems.check():
            prompt = self._prompts.ids("prompt", job.prompt)
        checks.check_train_settings(job.settings, bool(job.references) or bool(job.clip and job.clip.has_references),
                                    self.config, problems)  # fmt: skip
        clip = job_clip(job)
        if clip is not None:  # None: its footage could not be planned (the problems say why)
            clip.check(problems, self.config, self.limits, job.mask_mode, job.dilate_px)
            with problems.check():
                plan = self.plan_windows(clip.frames, clip.height, clip.width, job.window_frames, job.overlap_frames,
                                         True, job.settings.rank)  # fmt: skip
            if job.auto_steps is not None and not clip.has_edited_first_frame:
                problems.add(InvalidInput("auto_steps", True, "needs the edited first frame to preview the edit: give "
                                          "edited_first_frame_id (framecast edit does), or a reference at frame 0"))  # fmt: skip
        if job.auto_steps is not None:
            with problems.check():
                self._prompts.ids("preview_prompt", job.auto_steps.prompt)
        problems.raise_if_any()
        return PreparedTrain(job, clip, prompt, plan)

    def train(
        self,
        request: TrainJob | PreparedTrain,
        on_progress: Callable[[Progress], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        on_read: OnRead | None = None,
        on_clip: OnClip | None = None,
    ) -> AdapterRecord:
        """Train ``job.adapter`` and store it. A request ``prepare_train`` refuses, a cancel, or a
        name taken meanwhile leaves no trace; any other failure leaves the name FAILED with its error.
        ``on_read(phase, done, total)`` follows the reading of a clip of stored footage; ``on_clip`` sees what
        was read (its notices, a tracked region)."""
        prepared = request if isinstance(request, PreparedTrain) else self.prepare_train(request)
        job = prepared.job
        self.adapters.check_new(job.adapter)  # another training may have taken it meanwhile
        started = time.perf_counter()
        try:
            record, data = self._train(prepared, on_progress, should_cancel, on_read, on_clip)
        except (Cancelled, AlreadyExists, InvalidInput):  # cancelled; the name taken meanwhile; a bad mask read
            raise
        except Exception as exc:
            self.adapters.mark_training_failed(job.adapter, f"training failed: {public_message(exc)}")
            raise
        plan, clip = prepared.plan, prepared.clip
        self.speed.record("train", time.perf_counter() - started, prepared.steps, max(plan.lengths), clip.height, clip.width)
        return record

    def _train(self, prepared: PreparedTrain, on_progress, should_cancel, on_read, on_clip) -> tuple[AdapterRecord, ClipData]:
        job, plan, settings = prepared.job, prepared.plan, prepared.job.settings
        slots, encoders = self.adapters.slots, self.encoders
        slots.mark_training(job.adapter, settings.rank)  # TRAINING while its clip is read
        try:
            data = prepared.clip.read(job.mask_mode, job.dilate_px, on_read)
            if on_clip is not None:
                on_clip(data)
        except BaseException:
            slots.mark_training(job.adapter, None)  # a problem of the request (its mask): no trace
            raise
        self.adapters.store.clear_failure(job.adapter)  # as add_trainable clears the in-memory mark
        slots.add_trainable(job.adapter, settings.rank, settings.lora_alpha, settings.seed)
        phases = []
        try:
            edit_mask = data.edit_mask
            # Each window is its own motion sample: a long clip trains with one window's memory.
            clips = [data.frames]
            variant_rng = np.random.default_rng([settings.seed, 0xC010])
            clips += [C.colour_variant(data.frames, data.region, variant_rng) for _ in range(settings.colour_variants)]
            motion = [
                encoders.motion_sample(clip[s : s + n], edit_mask[s : s + n], prepared.prompt, settings)
                for clip in clips
                for s, n in zip(plan.starts, plan.lengths)
            ]
            # ``steps`` per window, as if each window were trained on its own (the public code's
            # scheme): every stretch of the clip gets the passes a one-window clip gets. Or, with
            # ``steps_in_all``, the steps of the clip, each on the next window (round robin).
            phases.append(("motion", motion, settings.motion_steps(plan.count)))
            if data.references:
                refs = [encoders.reference_sample(data.frames, edit_mask, i, f, prepared.prompt, settings)
                        for i, f in data.references]  # fmt: skip
                # Mixed with the source clip itself as in the paper (not its colour variants).
                mixed = refs * settings.reference_repeats + motion[: len(plan.starts)]
                phases.append(("appearance", mixed, settings.appearance_steps))
            if job.auto_steps is None:
                with self.placement.using("transformer"):
                    outcome = train_lora(self.pipe.transformer, phases, settings, on_progress, should_cancel,
                                         optimizer=self.config.optimizer)  # fmt: skip
                auto = None
            else:
                outcome, auto = self._train_auto(prepared, data, phases, on_progress, should_cancel)
            state_dict = slots.state_dict(job.adapter)
        except BaseException:
            slots.detach(job.adapter)
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
            training={**asdict(settings), "alpha": settings.lora_alpha, "mask_mode": MaskMode(job.mask_mode).value,
                      "dilate_px": job.dilate_px, "references": [i for i, _ in data.references], "prompt": job.prompt,
                      "window_starts": list(plan.starts), "window_lengths": list(plan.lengths)},  # fmt: skip
            source_media_id=job.source_media_id,
            final_loss=outcome.final_loss,
        )
        if auto is not None:  # the steps it stopped at, and why
            record.training.update(steps=auto["stopped_at"], auto_steps=auto)
        return self.adapters.store_trained(state_dict, record), data

    def _train_auto(self, prepared: PreparedTrain, data: ClipData, phases, on_progress, should_cancel):
        """Automatic steps (``AutoSteps``): the motion phase in chunks; after each, the appearance
        phase (if any) from a snapshot of the adapter and the optimizer, then a preview of the edit;
        the first whose edit holds is kept, else the whole motion phase is trained. An adapter stopped
        after N motion steps is the one a fixed run of N steps trains. -> (outcome, what was done)."""
        job, settings, auto = prepared.job, prepared.job.settings, prepared.job.auto_steps
        motion = phases[0][1]
        appearance = phases[1] if len(phases) > 1 else None
        windows = prepared.plan.count
        checkpoints = auto.checkpoints(settings.steps)
        total = settings.motion_steps(windows) + (settings.appearance_steps if appearance else 0)
        edited = data.edited_first_frame if data.edited_first_frame is not None else dict(data.references)[0]
        previews, done, reason = [], 0, "cap"
        with self.placement.using("transformer"):
            trainer = LoraTrainer(self.pipe.transformer, settings, total, on_progress, should_cancel,
                                  optimizer=self.config.optimizer)  # fmt: skip
        for number, steps in enumerate(checkpoints):
            last = number == len(checkpoints) - 1
            upto = settings.motion_steps(windows) * steps // settings.steps
            with self.placement.using("transformer"), trainer:
                trainer.run("motion", motion, upto - done, first=done)
            done = upto
            snapshot = trainer.snapshot() if appearance and not last else None
            if appearance:
                with self.placement.using("transformer"), trainer:
                    trainer.run("appearance", appearance[1], appearance[2])
            if last:
                break
            started = time.perf_counter()
            fidelity = self._preview(prepared, data, edited, should_cancel)
            previews.append({"steps": steps, "verdict": fidelity.verdict.value, "fidelity_mean": fidelity.mean,
                             "edit_psnr_db": fidelity.edit_psnr_db, "seconds": time.perf_counter() - started})  # fmt: skip
            if on_progress is not None:
                on_progress(Progress("preview", number + 1, len(checkpoints) - 1, 0.0, time.perf_counter() - started))
            if fidelity.verdict is Verdict.HELD:
                reason = "held"
                break
            if snapshot is not None:
                trainer.restore(snapshot)
        return trainer.outcome, {"stopped_at": checkpoints[len(previews)] if reason == "cap" else steps, "cap": settings.steps,
                                 "reason": reason, "previews": previews, "checkpoints": checkpoints}  # fmt: skip

    def _preview(self, prepared: PreparedTrain, data: ClipData, edited: np.ndarray, should_cancel) -> Fidelity:
        """The edit as the adapter being trained carries it now: the first ``preview_frames``
        working frames sampled in ``preview_steps`` steps with the preview's settings, composited,
        and their fidelity (framecast.engine.quality.fidelity)."""
        job, auto = prepared.job, prepared.job.auto_steps
        frames = min(auto.preview_frames, len(data.frames))
        frames = (frames - 1) // 4 * 4 + 1
        sampling = dict(auto.sampling)
        strength = float(sampling.pop("adapter_strength", 1.0))
        preview = PropagateJob("", data.frames[:frames], data.edit_mask[:frames], edited, auto.prompt or job.prompt,
                               **{**sampling, "steps": auto.preview_steps, "composite": True,
                                  "mask_mode": MaskMode.EXACT, "window_frames": 0})  # fmt: skip
        negative = self._prompts.ids("negative_prompt", preview.negative_prompt) if preview.guidance_scale > 1 else None
        clip = ClipData(data.frames[:frames], data.edit_mask[:frames], data.edit_mask[:frames], edited)
        run = PreparedPropagate(preview, ArrayClip(clip.frames, clip.edit_mask, edited),
                                self._prompts.ids("preview_prompt", preview.prompt), negative, plan_windows(frames, 0, None))  # fmt: skip
        with torch.no_grad(), self.adapters.slots.training_strength(job.adapter, strength):
            result = Propagation(self.pipe, self.encoders, run, clip, should_cancel).run()
        meter = FidelityMeter(clip.frames[0], edited, clip.edit_mask[0])
        for source, output, region in zip(clip.frames, result.frames, clip.edit_mask):
            meter.add(source, output, region)
        return meter.result(auto.threshold)

    # --- propagation ----------------------------------------------------------------------------

    def prepare_propagate(self, job: PropagateJob, adapter_pending: bool = False,
                          problems: Problems | None = None) -> PreparedPropagate:  # fmt: skip
        """Check a propagation request and plan it, without running it (a request thread may call this):
        every problem of its fields, with those already in ``problems``, is reported at once
        (``InvalidRequest``). ``adapter_pending``: a job that runs first trains ``job.adapter``; it is
        checked when this one runs."""
        problems = problems or Problems()
        with problems.check():
            prompt = self._prompts.ids("prompt", job.prompt)
        with problems.check():
            negative = self._prompts.ids("negative_prompt", job.negative_prompt)
        clip = job_clip(job)
        checks.check_propagate_settings(job, self.config, problems, clip.feather_side if clip else None)
        if clip is not None:  # None: its footage could not be planned (the problems say why)
            clip.check(problems, self.config, self.limits, job.mask_mode, job.dilate_px)
            with problems.check():
                plan = self.plan_windows(clip.frames, clip.height, clip.width, job.window_frames, job.overlap_frames,
                                         False)  # fmt: skip
        if job.adapter and adapter_pending:
            with problems.check():
                check_adapter_name(job.adapter)
        if job.accelerator:
            with problems.check():
                check_adapter_name(job.accelerator, "accelerator")
        problems.raise_if_any()
        if job.adapter and not adapter_pending:
            self.adapters.usable(job.adapter)
        if job.accelerator:
            self.adapters.usable(job.accelerator)
        return PreparedPropagate(job, clip, prompt, negative if job.guidance_scale > 1.0 else None, plan)

    def propagate(
        self,
        request: PropagateJob | PreparedPropagate,
        on_step: OnStep | None = None,
        on_frames: OnFrames | None = None,
        should_cancel: Callable[[], bool] | None = None,
        on_read: OnRead | None = None,
        on_clip: OnClip | None = None,
    ) -> PropagateResult:
        """Generate the edited video (``Propagation``), holding its adapter for the whole run: it is
        never evicted or deleted meanwhile. ``on_frames(first_index, frames [n, H, W, 3])`` is called
        as soon as frames are final; ``on_step(step, total)`` after each denoising step; ``on_read``
        follows the reading of a clip of stored footage."""
        prepared = request if isinstance(request, PreparedPropagate) else self.prepare_propagate(request)
        job = prepared.job
        accelerator = job.accelerator or ""
        with self.adapters.using(job.adapter, accelerator):
            data = prepared.clip.read(job.mask_mode, job.dilate_px, on_read)
            if on_clip is not None:
                on_clip(data)
            if job.adapter:
                self.adapters.usable(job.adapter)  # a training it waited for has stored it by now
            self.adapters.activate(job.adapter, job.adapter_strength, accelerator, job.accelerator_strength)
            try:
                result = Propagation(self.pipe, self.encoders, prepared, data, should_cancel).run(on_step, on_frames)
            finally:
                self.release_memory()
        plan, clip = prepared.plan, prepared.clip
        # per transformer pass: a propagation with fewer (guidance on the first steps, a step cache) runs faster
        self.speed.record("propagate", result.elapsed_s, Sampler.of(job).passes() * plan.count, max(plan.lengths),
                          clip.height, clip.width)  # fmt: skip
        return result


def base_model_id(model_dir: str | Path, transformer_config) -> str:
    """A name for the base model that changes when its architecture does: directory name + config hash."""
    config = {k: v for k, v in dict(transformer_config).items() if not k.startswith("_")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{Path(model_dir).resolve().name}@{digest}"
