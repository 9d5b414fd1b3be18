"""Generating an edited clip, window by window (docs/method.md, "Sampling" and "Windows").

A clip longer than its window is generated window by window: each later window starts from
a frame the previous one generated (inside the edit mask; the source outside it, which is
known exactly), and the frames two windows share are blended with a ramp (the overlap-blend
kernel). Frames are handed to ``on_frames`` as soon as they are final.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import torch

from framecast.common.requests import BlendRamp
from framecast.engine.errors import Cancelled
from framecast.engine.jobs.clip import ClipData
from framecast.engine.jobs.prepared import PreparedPropagate, PropagateResult
from framecast.engine.method.encoding import Encoders
from framecast.engine.method.sampling import Sampler, composite, decode_stream, denoise, feather_alpha
from framecast.engine.method.windows import WindowPlan
from framecast.engine.quality.metrics import psnr, seam_score, ssim, temporal_change

OnStep = Callable[[int, int], None]  # (step, total) after each denoising step
OnFrames = Callable[[int, np.ndarray], None]  # (first index, frames [n, H, W, 3]) once final


class Propagation:
    """One propagation run of a prepared request, on the engine's pipeline."""

    def __init__(self, pipe, encoders: Encoders, prepared: PreparedPropagate, data: ClipData, should_cancel=None):
        self.pipe = pipe
        self.encoders = encoders
        self.prepared = prepared
        self.job = prepared.job
        self.data = data
        self.source, self.edit_mask = data.frames, data.edit_mask
        self.edited_first_frame = data.edited_first_frame
        self.should_cancel = should_cancel
        self.timings: dict[str, float] = {}
        self.alpha = feather_alpha(data.edit_mask, self.job.feather_px) if self.job.composite else None
        self.sampler = Sampler.of(self.job)

    def run(self, on_step: OnStep | None = None, on_frames: OnFrames | None = None) -> PropagateResult:
        started = time.perf_counter()
        job, plan, edit_mask, source = self.job, self.prepared.plan, self.edit_mask, self.source
        emitted = 0

        def emit(first: int, frames: np.ndarray) -> None:
            nonlocal emitted
            frames = self.finish(first, frames)
            if on_frames is not None:
                on_frames(first, frames)
            emitted = first + len(frames)

        total_steps = job.steps * plan.count
        windows: list[np.ndarray] = []
        for k, (start, length) in enumerate(zip(plan.starts, plan.lengths)):
            first = self.edited_first_frame if k == 0 else self.window_first_frame(windows, plan, k)
            window_steps = None if on_step is None else (lambda i, n, base=k * job.steps: on_step(base + i, total_steps))
            stream = None if plan.count > 1 else emit
            # Window k's noise from seed + k, wrapped within the 64 bits a seed has.
            windows.append(self.generate(first, start, length, window_steps, stream, seed=(job.seed + k) % 2**64))
            if plan.count > 1:
                blended = blend(windows, plan, k, job.blend_ramp)
                emit(emitted, blended[emitted : plan.final_before(k)])
        frames = self.finish(0, windows[0] if plan.count == 1 else blend(windows, plan, plan.count - 1, job.blend_ramp))
        return PropagateResult(
            frames=frames,
            edit_mask=edit_mask,
            background_psnr=psnr(frames, source, ~edit_mask),
            background_ssim=ssim(frames, source, ~edit_mask, device=self.encoders.device),
            first_frame_psnr=psnr(frames[0], self.edited_first_frame),
            temporal_change=temporal_change(frames, source, edit_mask),
            seam_score=seam_score(frames, plan.seam_boundaries()),
            windows=plan.count,
            elapsed_s=time.perf_counter() - started,
            timings=self.timings,
        )

    def finish(self, first: int, frames: np.ndarray) -> np.ndarray:
        """Composite: generated pixels inside the feathered mask over the source; frame 0 takes
        the edited first frame itself, which the user gave exactly."""
        if self.alpha is None:
            return frames
        source, edit_mask = self.source, self.edit_mask
        frames = composite(frames, source[first : first + len(frames)], self.alpha[first : first + len(frames)])
        if first == 0:
            frames[0] = np.where(edit_mask[0][..., None], self.edited_first_frame, source[0])
        return frames

    def window_first_frame(self, windows: list[np.ndarray], plan: WindowPlan, k: int) -> np.ndarray:
        """The frame window ``k`` (k >= 1) starts from: the previous window's frame there inside the
        edit mask, the source outside it, which is known exactly (as in training, where every
        window starts from a source frame)."""
        start = plan.starts[k]
        generated = windows[k - 1][start - plan.starts[k - 1]]
        return np.where(self.edit_mask[start][..., None], generated, self.source[start])

    def generate(self, first_frame, start: int, length: int, on_step: OnStep | None, on_frames: OnFrames | None,
                 seed: int) -> np.ndarray:  # fmt: skip
        """Generate frames [start, start + length) conditioned on ``first_frame``. -> [n, H, W, 3]."""
        job, prepared = self.job, self.prepared
        with self.timed("encode_s"):
            cond = self.encoders.conditioning(
                first_frame, self.source[start : start + length], self.edit_mask[start : start + length],
                prepared.prompt, prepared.negative_prompt, self.edited_first_frame,
            )  # fmt: skip
        with self.timed("denoise_s"), self.encoders.placement.using("transformer"):
            latents = denoise(self.pipe, cond, seed, self.sampler, on_step, self.should_cancel)
        del cond
        chunks, done = [], 0
        with self.timed("decode_s"), self.encoders.placement.using("vae"):
            for chunk in decode_stream(self.pipe, latents):
                if on_frames is not None:
                    on_frames(start + done, chunk)
                chunks.append(chunk)
                done += len(chunk)
                if self.should_cancel is not None and self.should_cancel() and done < length:
                    raise Cancelled("job cancelled")
        return np.concatenate(chunks)

    @contextmanager
    def timed(self, key: str):
        """Wall time of a phase, synchronised with the device so queued kernels are counted."""
        device = self.encoders.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        try:
            yield
        finally:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - started


def blend(windows: list[np.ndarray], plan: WindowPlan, last: int, ramp: BlendRamp) -> np.ndarray:
    """Blend windows 0..last into frames [0, end of window ``last``)."""
    from framecast.kernels import blend_windows

    tensors = [torch.from_numpy(w) for w in windows[: last + 1]]
    return blend_windows(tensors, plan.starts[: last + 1], frame_dim=0, ramp=BlendRamp(ramp).value).numpy()
