"""The job layer: one request in, checked and planned once, run to a result; the same for every front.

A front (the gRPC servicer, a cluster's replica, a web page, a notebook) turns what it was sent
into a ``TrainSpec`` or ``PropagateSpec`` of plain values (``framecast.engine.jobs.specs``): media
ids, the settings the request set, a preset. ``Jobs.prepare_train`` / ``prepare_propagate`` look the
media up, plan the shot onto the working grid, fill unset settings (the request's, its preset's, the
model's, the method's), check every field and report every problem at once (``InvalidRequest``),
and plan the windows, the memory and the work: the prepared job is what ``Plan`` shows, as it is
(``Jobs.plan``). ``run_train`` and ``run_propagate`` run a prepared job, telling its owner what
happens as plain events (``framecast.engine.jobs.events``); a propagation's run ends with its
output written at the source's geometry, stored, and measured on the delivered file.

Nothing here knows gRPC: the servicer converts protobuf to specs and events to protobuf.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from framecast.common.media import encode_video, mask_to_frames
from framecast.common.requests import AutoSteps, MaskMode, PropagateJob, TrainJob, TrainSettings
from framecast.engine.adapters.manager import AdapterView
from framecast.engine.adapters.store import check_adapter_name
from framecast.engine.engine import Engine
from framecast.engine.errors import AdapterNotFound, AlreadyExists, FailedPrecondition, FramecastError, InvalidInput
from framecast.engine.errors import InvalidRequest, Problems
from framecast.engine.footage.output import OutputOptions, WrittenOutput, check_output, delivered_frames, write_output
from framecast.engine.footage.shot_clip import ShotClip
from framecast.engine.footage.shots import MaskPrompt, ReferenceInput, Shot, StoredMedia, plan_shot
from framecast.engine.jobs.clip import ClipData
from framecast.engine.jobs.events import FrameReady, Noticed, OnEvent, Progressed, RegionTracked
from framecast.engine.jobs.prepared import PreparedPropagate, PreparedTrain, PropagateResult
from framecast.engine.jobs.specs import MediaAccess, PropagateSpec, RegionSpec, TrackSpec, TrainSpec
from framecast.engine.masks.trackers import TrackerKind
from framecast.engine.method.sampling import Sampler
from framecast.engine.method.training import Progress
from framecast.engine.model_settings import TURBO
from framecast.engine.quality.delivered import DeliveredMeasures, QualityWarning, measure_delivered

PROGRESS_EVENTS_A_PHASE = 20  # a phase of many small steps (frames) reports about this many times
# The propagation settings an automatic-steps preview samples with (its own steps and frames aside).
PREVIEW_SETTINGS = ("guidance_scale", "adapter_strength", "negative_prompt", "guidance_steps", "step_cache",
                    "cache_threshold", "cache_interval", "seed")  # fmt: skip


# --- what a prepared job holds --------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    steps: int  # training steps, or denoising steps over every window (automatic steps: the most)
    work: int  # what a job's speed is counted in: training steps, or transformer passes
    device_bytes: int  # the peak of device memory the longest window needs
    seconds: float  # from this server's measured speed; 0 before a job of the kind has run
    steps_min: int = 0  # automatic steps: the fewest (stopped at the first preview); else ``steps``
    seconds_min: float = 0.0


@dataclass(frozen=True)
class PreparedTrainJob:
    spec: TrainSpec
    run: PreparedTrain  # what the engine runs
    estimate: Estimate

    @property
    def shot(self) -> Shot:
        return self.run.clip.shot


@dataclass(frozen=True)
class PreparedPropagateJob:
    spec: PropagateSpec
    run: PreparedPropagate
    output: OutputOptions
    fidelity_threshold: float
    estimate: Estimate
    adapter_pending: bool = False  # a job queued before it trains its adapter

    @property
    def shot(self) -> Shot:
        return self.run.clip.shot


@dataclass(frozen=True)
class PreparedTrackJob:
    spec: TrackSpec
    shot: Shot  # with its mask_prompt: the region to track


@dataclass(frozen=True)
class PlanReport:
    """A job planned without running it: what could be planned, and every problem at once."""

    kind: str  # "train" | "propagate"
    problems: tuple[InvalidInput, ...]
    shot: Shot | None
    prepared: PreparedTrainJob | PreparedPropagateJob | None  # None when any problem stops it

    @property
    def ok(self) -> bool:
        return not self.problems and self.prepared is not None


@dataclass(frozen=True)
class PropagateOutcome:
    result: PropagateResult  # the generation on the working grid (its figures are diagnostics)
    stored: Any  # the output as stored (what MediaAccess.put_file returned)
    written: WrittenOutput  # the output file at the source's geometry
    measures: DeliveredMeasures  # of the delivered file
    job_s: float  # the run: reading, generation, writing, measuring


# --- the layer --------------------------------------------------------------------------------------


class Jobs:
    def __init__(self, engine: Engine, media: MediaAccess):
        self.engine, self.media = engine, media

    # --- preparing --------------------------------------------------------------------------------

    def prepare_train(self, spec: TrainSpec, problems: Problems | None = None, found: dict | None = None) -> PreparedTrainJob:
        """Check and plan a training (every problem at once: InvalidRequest); NotFound for unknown
        media, AlreadyExists / FailedPrecondition for a name taken. ``found["shot"]``: the shot,
        once planned (for a Plan that reports it whatever else fails)."""
        engine, problems = self.engine, problems or Problems()
        if not spec.adapter:
            raise InvalidInput("adapter", "", "is required: name the adapter to create")
        settings = TrainSettings()
        with problems.check():
            settings = TrainSettings(**engine.settings.fill("train", spec.preset, spec.settings))
        edited = "edited_first_frame_id" if spec.edited_first_frame_id else None
        shot = self._shot(spec, problems, edited, found if found is not None else {})
        auto = None
        if spec.auto_steps:
            threshold = engine.settings.fidelity_threshold if spec.fidelity_threshold is None else spec.fidelity_threshold
            if not 0.0 <= threshold <= 1.0:  # NaN too
                problems.add(InvalidInput("fidelity_threshold", threshold, "must be a share between 0 and 1"))
            sampling = {}
            with problems.check():
                sampling = engine.settings.fill("propagate", spec.preset, {})
            auto = AutoSteps(threshold=threshold, prompt=spec.preview_prompt, sampling=tuple(
                (name, value) for name, value in sampling.items() if name in PREVIEW_SETTINGS))  # fmt: skip
        job = TrainJob(adapter=spec.adapter, source=None, mask=None, prompt=spec.prompt, settings=settings,
                       source_media_id=spec.source_id, clip=self._clip(shot), auto_steps=auto, **spec.options)  # fmt: skip
        prepared = engine.prepare_train(job, problems)
        return PreparedTrainJob(spec, prepared, self._estimate("train", prepared))

    def prepare_propagate(self, spec: PropagateSpec, adapter_pending: bool = False, problems: Problems | None = None,
                          found: dict | None = None) -> PreparedPropagateJob:  # fmt: skip
        """Check and plan a propagation (as ``prepare_train``). ``adapter_pending``: a job that runs
        first trains its adapter (checked when this one runs)."""
        engine, problems = self.engine, problems or Problems()
        accelerator = engine.config.accelerator if spec.accelerator is None else spec.accelerator
        filled: dict[str, Any] = {}
        with problems.check():
            filled = engine.settings.fill("propagate", spec.preset, spec.settings, self._turbo(spec.preset, accelerator))
        shot = self._shot(spec, problems, "edited_first_frame_id", found if found is not None else {})
        job = PropagateJob(adapter=spec.adapter, source=None, mask=None, edited_first_frame=None, prompt=spec.prompt,
                           clip=self._clip(shot), accelerator=accelerator, **filled)  # fmt: skip
        output = OutputOptions()
        with problems.check():
            output = OutputOptions(**spec.output)
            check_output(output)
        threshold = engine.settings.fidelity_threshold if spec.fidelity_threshold is None else spec.fidelity_threshold
        if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
            problems.add(InvalidInput("fidelity_threshold", threshold, "must be a share between 0 and 1 (0 judges nothing)"))
        prepared = engine.prepare_propagate(job, adapter_pending=adapter_pending, problems=problems)
        return PreparedPropagateJob(spec, prepared, output, threshold, self._estimate("propagate", prepared), adapter_pending)

    def _turbo(self, preset: str, accelerator: str) -> dict[str, Any] | None:
        """What stands for the ``turbo`` preset: the accelerator's sampling settings, stored with it
        (None for any other preset). InvalidInput without an accelerator, or when neither it nor
        the model says how to sample with it."""
        if preset != TURBO:
            return None
        if not accelerator:
            raise InvalidInput("preset", preset, "needs an accelerator (a step-distill adapter): name one in the request's "
                               "accelerator (--accelerator NAME) or serve --accelerator NAME")  # fmt: skip
        sampling = self.engine.adapters.accelerator_sampling(check_adapter_name(accelerator, "accelerator"))
        if not sampling and TURBO not in self.engine.settings.presets:
            raise InvalidInput("preset", preset, f"takes its steps, guidance and shift from the accelerator, and "
                               f"{accelerator!r} stores none: import it with them (framecast import --sampling "
                               "steps=4,guidance_scale=1,shift=5) or set the request's steps, guidance_scale and shift")  # fmt: skip
        return sampling

    def plan(self, spec: TrainSpec | PropagateSpec, adapter_pending: bool = False,
             problems: Problems | None = None) -> PlanReport:  # fmt: skip
        """Prepare without running or raising: what Plan shows."""
        kind = "train" if isinstance(spec, TrainSpec) else "propagate"
        problems, found = problems or Problems(), {}
        prepared = None
        try:
            if kind == "train":
                prepared = self.prepare_train(spec, problems, found)
            else:
                prepared = self.prepare_propagate(spec, adapter_pending, problems, found)
        except InvalidRequest as refused:
            problems.found = list(refused.problems)
        except InvalidInput as refused:
            problems.add(refused)
        except FramecastError as refused:  # an unknown media or adapter, a taken name: one more problem
            problems.add(InvalidInput(_field_of(refused), "", str(refused)))
        shot = prepared.shot if prepared is not None else found.get("shot")
        return PlanReport(kind, tuple(problems.found), shot, prepared)

    def prepare_track(self, spec: TrackSpec, problems: Problems | None = None) -> PreparedTrackJob:
        """Check and plan a region's tracking alone: the shot a training or propagation with the same
        source, shot options and region plans (every problem at once: InvalidRequest; NotFound for
        unknown media)."""
        problems = problems or Problems()
        if spec.region is None:
            problems.add(InvalidInput("mask_prompt", "", "is required: a box, points or a frame-0 mask to track"))
            self._stored(spec.source_id, "source_id", problems)
            problems.raise_if_any()
        shot = self._shot(spec, problems, None, {})
        problems.raise_if_any()
        return PreparedTrackJob(spec, shot)

    def _shot(self, spec, problems: Problems, edited_field: str | None, found: dict) -> Shot | None:
        """The shot a spec's media and options make, planned from their probes (or None)."""
        engine = self.engine
        source = self._stored(spec.source_id, "source_id", problems)
        prompt = self._region(spec.region, problems)
        mask = self._stored(spec.mask_id, "mask_id", problems) if spec.mask_id or prompt is None else None
        edited = self._stored(spec.edited_first_frame_id, edited_field, problems) if edited_field else None
        references = []
        for number, ref in enumerate(getattr(spec, "references", ())):
            image = self._stored(ref.image_id, f"references[{number}].image_id", problems)
            if image is not None:
                references.append(ReferenceInput(image, ref.frame_index, ref.time_s))
        if source is None:
            return None
        shot = None
        with problems.check():
            shot = plan_shot(source, spec.shot, engine.limits, engine.config, problems, mask, edited, tuple(references),
                             prompt)  # fmt: skip
        found["shot"] = shot
        return shot

    def _clip(self, shot: Shot | None) -> ShotClip | None:
        """The shot as the job's clip, tracked with the engine's trackers and kept in its track cache."""
        return None if shot is None else ShotClip(shot, self.engine.tracker, self.engine.tracks)

    def _stored(self, media_id: str, field: str, problems: Problems) -> StoredMedia | None:
        """A stored media a spec names; a missing or malformed id is a problem, an unknown one NotFound."""
        with problems.check():
            path, info = self.media.footage(media_id, field)
            return StoredMedia(path, info, field, media_id)
        return None

    def _region(self, region: RegionSpec | None, problems: Problems) -> MaskPrompt | None:
        if region is None:
            return None
        trackers = self.engine.tracker_kinds
        frame0 = self._stored(region.frame0_mask_id, "mask_prompt.frame0_mask_id", problems) if region.frame0_mask_id else None
        tracker = region.tracker
        if tracker is None:
            tracker = TrackerKind.SAM2 if region.points and TrackerKind.SAM2 in trackers else TrackerKind.CSRT
        if tracker not in trackers:
            problems.add(InvalidInput("mask_prompt.tracker", tracker.value, "needs a SAM2 checkpoint, which this server "
                                      "was not given (serve --sam2-checkpoint DIR); use csrt or flow"))  # fmt: skip
        return MaskPrompt(region.box, region.points, frame0, tracker)

    def _estimate(self, kind: str, prepared: PreparedTrain | PreparedPropagate) -> Estimate:
        """The steps, work, memory and time of a prepared job, counted once (Plan shows these)."""
        engine, windows, clip, job = self.engine, prepared.plan, prepared.clip, prepared.job
        training = kind == "train"
        if training:
            steps = work = prepared.steps
        else:
            steps = job.steps * windows.count
            work = Sampler.of(job).passes() * windows.count  # a propagation's speed is per transformer pass
        longest = max(windows.lengths)
        memory = engine.memory_plan(engine.quantize, engine.offload, longest, clip.height, clip.width, training,
                                    job.settings.rank if training else 16).peak_bytes  # fmt: skip
        seconds = engine.speed.estimate(kind, work, longest, clip.height, clip.width)
        if not training or job.auto_steps is None:
            return Estimate(steps, work, memory, seconds, steps, seconds)
        # The fewest: the first chunk of the motion phase, the appearance phase once, one preview (its
        # sampling counted as transformer passes of a propagation of its frames).
        settings, first = job.settings, job.auto_steps.checkpoints(job.settings.steps)[0]
        fewest = settings.motion_steps(windows.count) * first // settings.steps + (steps - settings.motion_steps(windows.count))
        preview = engine.speed.estimate("propagate", job.auto_steps.preview_steps * 2, min(job.auto_steps.preview_frames, clip.frames),
                                        clip.height, clip.width)  # fmt: skip
        return Estimate(steps, work, memory, seconds, fewest,
                        engine.speed.estimate(kind, fewest, longest, clip.height, clip.width) + preview)  # fmt: skip

    # --- running ----------------------------------------------------------------------------------

    def run_train(self, prepared: PreparedTrainJob, on_event: OnEvent, should_cancel=None, name: str = "train") -> AdapterView:
        """Train and store the adapter; its view once stored. ``name`` (the job's id) names what it
        stores besides (a tracked region's mask video)."""
        clock = _Clock(on_event)

        def on_progress(progress: Progress) -> None:
            on_event(Progressed(progress.phase, progress.step, progress.total, clock.elapsed(), progress.eta_s,
                                progress.loss))  # fmt: skip

        record = self.engine.train(prepared.run, on_progress, should_cancel, on_read=clock.reading(),
                                   on_clip=self._reporter(on_event, prepared.shot, name))  # fmt: skip
        auto = record.training.get("auto_steps")
        if auto is not None:
            on_event(Noticed("auto_steps", auto_steps_said(auto)))
        return self.engine.adapters.view(record.name)

    def run_propagate(self, prepared: PreparedPropagateJob, on_event: OnEvent, should_cancel=None,
                      name: str = "output") -> PropagateOutcome:  # fmt: skip
        """Generate, write the output at the source's geometry, measure the delivered file and store
        it (as ``name`` + its suffix: the job's id, by which a restart finds it); a faded or garbled
        edit, a region over most of the frame, an edit dropped outside the region are ``Noticed``."""
        clock, shot = _Clock(on_event), prepared.shot

        def on_step(step: int, total: int) -> None:
            elapsed = clock.elapsed()
            on_event(Progressed("denoise", step, total, elapsed, clock.phase_eta("denoise", step, total)))

        def on_frames(first: int, frames: np.ndarray) -> None:
            for offset, frame in enumerate(frames):
                index = first + offset
                if index < shot.grid.frames:  # not the frames padding the shot to 4N+1
                    on_event(FrameReady(index, frame, shot.grid.time(index)))

        result = self.engine.propagate(prepared.run, on_step, on_frames, should_cancel, on_read=clock.reading(),
                                       on_clip=self._reporter(on_event, shot, name))  # fmt: skip
        scratch = self.media.scratch_dir()
        try:
            written = write_output(shot, result.frames, result.edit_mask, prepared.output, scratch, clock.phase("encode"))
            measures = measure_delivered(
                delivered_frames(shot, result.edit_mask, prepared.output, written.path), written.num_frames,
                _edited_at_source(shot), prepared.fidelity_threshold, clock.phase("measure"),
            )  # fmt: skip
            stored = self.media.put_file(written.path, filename=f"{name}{written.suffix}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        said = {notice.code for notice in shot.notices}
        for warning in measures.warnings:
            if not (warning.code == "region_covers_frame" and "box_large" in said):  # the box's own notice said it
                on_event(_noticed(warning))
        return PropagateOutcome(result, stored, written, measures, clock.elapsed())

    def run_track(self, prepared: PreparedTrackJob, on_event: OnEvent, name: str = "track") -> RegionTracked:
        """Read the shot and track its region (kept for the jobs that follow, as a training's is): the
        tracked mask, stored as ``name``-tracked-mask.mp4. Its notices (a region lost, a box clipped)
        are told as a training tells them; the tracked region is returned, not told."""
        clock, shot = _Clock(on_event), prepared.shot
        data = self._clip(shot).read(MaskMode.EXACT, 0, clock.reading())
        for notice in data.notices:
            on_event(Noticed(notice.code, notice.message, tuple(notice.frames)))
        return self._tracked(data, shot, name)

    def _tracked(self, data: ClipData, shot: Shot, name: str) -> RegionTracked:
        video = encode_video(mask_to_frames(data.tracked), shot.grid.fps, lossless=True)
        stored = self.media.put(video, filename=f"{name}-tracked-mask.mp4")
        lost = next((n.frames for n in data.notices if n.code == "region_lost"), ())
        return RegionTracked(stored, tuple(lost), shot.mask_prompt.tracker.value)

    def _reporter(self, on_event: OnEvent, shot: Shot, name: str):
        """What a job tells its owner once its clip is read: notices (a region lost, a single mask the
        region moves out of), and a tracked region, stored as a mask video it can fetch."""

        def report(data: ClipData) -> None:
            for notice in data.notices:
                on_event(Noticed(notice.code, notice.message, tuple(notice.frames)))
            if data.tracked is not None:
                on_event(self._tracked(data, shot, name))

        return report


def auto_steps_said(auto: dict) -> str:
    """What automatic steps did, in words: where they stopped and why, what the previews cost."""
    previews = auto["previews"]
    spent = sum(p["seconds"] for p in previews)
    tried = ", ".join(f"{p['steps']} steps {p['verdict']} (fidelity {p['fidelity_mean']:.2f})" for p in previews)
    if auto["reason"] == "held":
        head = f"stopped at {auto['stopped_at']} of {auto['cap']} motion steps: the preview's edit held"
    else:
        head = f"trained all {auto['cap']} motion steps: no preview's edit held before"
    return f"{head} ({tried}; previews {spent:.1f} s)"


def _noticed(warning: QualityWarning) -> Noticed:
    return Noticed(warning.code, warning.message, warning.frames)


def _edited_at_source(shot: Shot) -> np.ndarray | None:
    from framecast.engine.footage.output import edited_first_frame

    return edited_first_frame(shot)


def _field_of(error: Exception) -> str:
    """The request field an error is about, for a Plan's problem list."""
    if isinstance(error, AdapterNotFound | AlreadyExists | FailedPrecondition):
        return "adapter"
    return ""


class _Clock:
    """A running job's clock: elapsed seconds, and progress callbacks that report a phase at most
    about ``PROGRESS_EVENTS_A_PHASE`` times, each with the phase's own ETA."""

    def __init__(self, on_event: OnEvent):
        self.on_event, self.started = on_event, time.time()
        self._phase_started: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.time() - self.started

    def phase_eta(self, phase: str, done: int, total: int) -> float:
        started = self._phase_started.setdefault(phase, time.time())
        return (time.time() - started) / done * (total - done) if done else 0.0

    def phase(self, phase: str) -> Callable[[int, int], None]:
        self._phase_started.setdefault(phase, time.time())
        last = [-1]

        def on_progress(done: int, total: int) -> None:
            bucket = done * PROGRESS_EVENTS_A_PHASE // max(total, 1)
            if done != total and bucket == last[0]:
                return
            last[0] = bucket
            self.on_event(Progressed(phase, done, total, self.elapsed(), self.phase_eta(phase, done, total)))

        return on_progress

    def reading(self) -> Callable[[str, int, int], None]:
        """``on_read(phase, done, total)`` of a job's clip (``decode``, ``mask``), each phase its own."""
        phases: dict[str, Callable[[int, int], None]] = {}

        def on_read(phase: str, done: int, total: int) -> None:
            if phase not in phases:
                phases[phase] = self.phase(phase)
            phases[phase](done, total)

        return on_read
