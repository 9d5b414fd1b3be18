"""Per-clip memory and latency: propagation (encode, denoise, decode) and one training step,
over quantize x offload x window length, with a bf16 all-on-device baseline in the same run.

    python bench/bench_clip.py --arch tiny --device cpu                 # runs here, small
    python bench/bench_clip.py --arch wan2.1-i2v-14b --device cuda      # the real 14B architecture

``wan2.1-i2v-14b`` builds the Wan2.1-I2V-14B-480P architecture and component sizes (UMT5-XXL,
CLIP ViT-H/14, the Wan VAE) with random weights directly on the device: timings and memory
do not depend on weight values, and nothing is downloaded (``--layers N``: the same widths
with N blocks in each encoder and the transformer, a smoke run for a small machine; rows
say so). Quantised rows quantise those weights in place. Each row is the median of
``--runs`` runs, printed and appended to bench/results/clip.jsonl (device, torch version,
git sha) as soon as its configuration finishes, so a run cut short keeps what it measured.
Rows also carry the ``--max-vram`` planner's estimates for the same clip
(``Engine.memory_plan``, the memory model), next to the measured peaks they should bound.

``--caps 8 12 16 24`` emulates smaller cards on a large one: for each cap (GiB) the settings
``serve --quantize auto --offload auto --max-vram CAP`` picks (the engine's own choice, asked of
the architecture on the meta device, so quantisation runs on the GPU before any offloading), with
``--vae-tiling`` where the planner refuses the clip without it, then the allocator capped with
``torch.cuda.set_per_process_memory_fraction`` and one propagation (``--steps``) and
``--train-steps`` training steps after a first (steps in all: each on the next window), in the
windows the planner cuts; each row has peak allocated and reserved, seconds per denoising step
(the median between synchronised steps of a window) and per training step against the uncapped
bf16 run, the process's peak resident host memory (sampled) and the planner's device and host
estimates for the longest window. ``--deadline-s`` skips caps that would not finish in time
(``bench_proof.py`` runs the same caps in its one prepared run):

    python bench/bench_clip.py --arch wan2.1-i2v-14b --device cuda --caps 8 12 16 24 --steps 4 --train-steps 3
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import resource
import statistics
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from types import MethodType, SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, device_name, print_table  # noqa: E402

from framecast.common.requests import PropagateJob, TrainJob, TrainSettings  # noqa: E402
from framecast.engine.config import EngineConfig  # noqa: E402
from framecast.engine.engine import Engine  # noqa: E402
from framecast.engine.errors import OutOfMemory  # noqa: E402
from framecast.engine.memory.lowvram import quantize_pipeline  # noqa: E402
from framecast.engine.memory.sizes import module_bytes  # noqa: E402
from framecast.engine.model import model_limits  # noqa: E402
from framecast.engine.toy.architectures import build_pipeline, make_tiny_model, preset  # noqa: E402
from framecast.engine.toy.world import SceneConfig, make_scene  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "clip.jsonl"


def build_14b_pipeline(device: torch.device, dtype: torch.dtype, layers: int | None = None):
    """Wan2.1-I2V-14B-480P's architecture with random weights, built on ``device`` in ``dtype``
    (the VAE in fp32); ``layers`` overrides the block count of the transformer and both encoders
    (their widths stay)."""
    spec = preset("wan2.1-i2v-14b")
    return build_pipeline(spec if layers is None else spec.with_layers(layers), device, dtype)


def bench_pipeline(arch: str, tiny_dir: Path, device: torch.device, dtype: torch.dtype, layers: int | None = None):
    """``tiny``: the tiny model through the real loading path (written once to ``tiny_dir``), on
    the CPU; ``wan2.1-i2v-14b``: built on ``device``."""
    from framecast.engine.model import load_pipeline

    if arch == "tiny":
        if not (tiny_dir / "model_index.json").exists():
            make_tiny_model(tiny_dir)
        return load_pipeline(tiny_dir, torch.device("cpu"), dtype)
    return build_14b_pipeline(device, dtype, layers)


def arch_label(args) -> str:
    return args.arch if args.layers is None else f"{args.arch}-{args.layers}layers"


def parse_config(text: str) -> tuple[str, str, int]:
    """``QUANTIZE/OFFLOAD/WINDOW`` (window 0: the whole clip) -> (quantize, offload, window)."""
    parts = text.split("/")
    if len(parts) != 3 or parts[0] not in ("none", "int8", "nf4") or parts[1] not in ("none", "model", "group") \
            or not parts[2].isdigit():
        raise argparse.ArgumentTypeError(f"--config must be QUANTIZE/OFFLOAD/WINDOW like nf4/model/13, not {text!r}")
    return parts[0], parts[1], int(parts[2])


def transformer_flops(transformer, frames: int, height: int, width: int, text_tokens: int = 512,
                      image_tokens: int = 257) -> float:
    """Forward FLOPs of one transformer pass (2 per multiply-add): each block linear over the
    tokens it sees (the cross-attention's key/value projections see the text's ``text_tokens``
    and the image's ``image_tokens``, everything else the L video tokens), plus self-attention
    (QK^T and AV: 4 L^2 d) and cross-attention (4 L (T + I) d)."""
    cfg = transformer.config
    hidden = cfg.num_attention_heads * cfg.attention_head_dim
    tokens = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)
    seen_by = {"attn2.to_k": text_tokens, "attn2.to_v": text_tokens, "attn2.add_k_proj": image_tokens,
               "attn2.add_v_proj": image_tokens}  # fmt: skip
    linear = sum(2 * seen_by.get(name.replace(".base_layer", ""), tokens) * m.in_features * m.out_features
                 for name, m in transformer.blocks[0].named_modules()
                 if isinstance(m, torch.nn.Linear) and "lora_" not in name)  # the base model's, adapters aside  # fmt: skip
    attention = 4 * tokens * tokens * hidden + 4 * tokens * (text_tokens + image_tokens) * hidden
    return float(cfg.num_layers * (linear + attention))


def matmul_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """Measured dense matmul rate on this device (bf16 on GPUs)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    iters = 20 if device.type == "cuda" else 3
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - start) / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peaks(device: torch.device) -> tuple[float, float]:
    """(allocated, reserved) peak GiB since the last reset; on CPU the process's peak RSS twice."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, torch.cuda.max_memory_reserved(device) / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return rss, rss


def run_config(args, pipe_factory, quantize: str, offload: str, window: int, baseline: bool, scene, data_dir):
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    _reset_peak(device)
    engine = Engine(
        EngineConfig(model_dir=str(engine_model_dir(args)), device=args.device, dtype=str(dtype).removeprefix("torch."),
                     quantize=quantize, offload=offload, window_frames=window, max_frames=args.frames,
                     max_pixels=args.width * args.height),
        data_dir, pipe=pipe_factory(),
    )
    job = PropagateJob("", scene.source, scene.edit_mask, scene.edited_first_frame, "a sprite moving", steps=args.steps,
                       guidance_scale=5.0, window_frames=window)  # the default overlap for the window
    results = []
    for run in range(args.runs + 1):  # the first run warms up (allocator, autotune) and is dropped
        _reset_peak(device)
        result = engine.propagate(job)
        peak_alloc, peak_reserved = _peaks(device)
        if run:
            results.append((result, peak_alloc, peak_reserved))
    step_times, train_peak = [], (float("nan"), float("nan"))
    if args.train_steps:
        _reset_peak(device)
        times = []

        def on_progress(progress):
            times.append(time.perf_counter())

        settings = TrainSettings(steps=args.train_steps + 1, rank=16, gradient_checkpointing=True)
        begin = time.perf_counter()
        engine.train(TrainJob(f"bench-{quantize}-{offload}-{window}", scene.source, scene.edit_mask, "a sprite",
                              settings, window_frames=window),
                     on_progress)
        train_peak = _peaks(device)
        step_times = np.diff([begin] + times)[1:]  # drop the first step (warm-up)
    frames = min(window or args.frames, args.frames)
    flops = transformer_flops(engine.pipe.transformer, frames, args.height, args.width)

    def estimate(training: bool) -> float:  # what --max-vram plans with (reserved), for the measured window
        plan = engine.memory_plan(engine.quantize, engine.offload, frames, args.height, args.width, training)
        return plan.peak_bytes / 2**30

    passes = args.steps * 2 * max(1, results[0][0].windows)
    denoise = statistics.median(r.timings["denoise_s"] for r, _, _ in results)
    row = {
        "arch": arch_label(args), "config": f"{quantize}/{offload}/w{window or args.frames}" + (" (baseline)" if baseline else ""),
        "frames": args.frames, "windows": results[0][0].windows, "size": f"{args.width}x{args.height}",
        "steps": args.steps,
        "encode_s": statistics.median(r.timings["encode_s"] for r, _, _ in results),
        "denoise_s": denoise,
        "decode_s": statistics.median(r.timings["decode_s"] for r, _, _ in results),
        "total_s": statistics.median(r.elapsed_s for r, _, _ in results),
        "peak_alloc_gib": max(p for _, p, _ in results), "peak_reserved_gib": max(p for _, _, p in results),
        "train_step_s": float(np.median(step_times)) if len(step_times) else float("nan"),
        "train_peak_alloc_gib": train_peak[0], "train_peak_reserved_gib": train_peak[1],
        "estimated_peak_gib": estimate(training=False), "estimated_train_peak_gib": estimate(training=True),
        "tflop_per_clip": flops * passes / 1e12,
        "achieved_tflops": flops * passes / denoise / 1e12,
        "weights_gib": module_bytes(engine.pipe.transformer) / 2**30,
    }
    del engine
    _reset_peak(device)
    return row


# --- emulated smaller cards ------------------------------------------------------------------


@contextmanager
def host_rss_peak():
    """Yields a dict whose "gib" becomes the process's peak resident memory over the block
    (sampled every 20 ms from /proc; ru_maxrss only ever grows over the whole process)."""
    out, done = {"gib": 0.0}, threading.Event()

    def rss() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize() / 2**30
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    def sample():
        while not done.is_set():
            out["gib"] = max(out["gib"], rss())
            done.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        done.set()
        thread.join()
        out["gib"] = max(out["gib"], rss())


def host_rss_peak_now() -> float:
    with host_rss_peak() as rss:
        pass
    return rss["gib"]


def release_host_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        empty_pinned = getattr(torch._C, "_host_emptyCache", None)  # freed pinned blocks stay cached otherwise
        if empty_pinned is not None:
            empty_pinned()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def engine_model_dir(args) -> Path:
    """The directory the engine is configured with: the tiny model's own; for the 14B (built, not
    loaded) an empty one, so the method's defaults and presets apply (no framecast.json) and the
    native size is Wan2.1's 480P."""
    if args.arch == "tiny":
        return args.tiny_dir
    empty = Path(tempfile.gettempdir()) / "framecast-bench-14b"
    empty.mkdir(exist_ok=True)
    return empty


def engine_config(args, quantize: str, offload: str, cap_gb: float, dtype: torch.dtype,
                  vae_tiling: bool = False) -> EngineConfig:  # fmt: skip
    return EngineConfig(model_dir=str(engine_model_dir(args)), device=args.device, dtype=str(dtype).removeprefix("torch."),
                        quantize=quantize, offload=offload, max_vram_gb=cap_gb, max_frames=args.frames,
                        max_pixels=args.width * args.height, vae_tiling=vae_tiling)  # fmt: skip


_meta_pipes: dict[tuple, object] = {}


def planner(args, quantize: str, offload: str, cap_gb: float, dtype: torch.dtype, vae_tiling: bool = False):
    """An engine that plans without weights: ``Engine``'s own ``memory_plan``, ``plan_windows`` and
    ``_choose_memory_settings`` on the architecture built on the meta device (the tiny model: on
    the CPU), under ``serve --quantize Q --offload O --max-vram cap_gb [--vae-tiling]``."""
    device = torch.device("meta") if args.arch != "tiny" else torch.device("cpu")
    key = (args.arch, args.layers, str(dtype))
    if key not in _meta_pipes:
        _meta_pipes[key] = bench_pipeline(args.arch, args.tiny_dir, device, dtype, args.layers)
    pipe = _meta_pipes[key]
    probe = SimpleNamespace(config=engine_config(args, quantize, offload, cap_gb, dtype, vae_tiling), dtype=dtype,
                            _memory_model=None, pipe=pipe, limits=model_limits(pipe, engine_model_dir(args)))  # fmt: skip
    for name in ("memory_plan", "plan_windows", "_choose_memory_settings"):
        setattr(probe, name, MethodType(getattr(Engine, name), probe))
    probe.quantize, probe.offload = probe.config.quantize, probe.config.offload
    return probe


def chosen_settings(args, cap_gb: float, dtype: torch.dtype) -> tuple[str, str]:
    """What ``serve --quantize auto --offload auto --max-vram cap_gb`` picks: the engine's own choice
    (``Engine._choose_memory_settings`` over ``Engine.memory_plan``), asked of the architecture on
    the meta device, before anything is built on the GPU."""
    quantize, offload = planner(args, "auto", "auto", cap_gb, dtype)._choose_memory_settings()
    return quantize.value, offload.value


def needs_vae_tiling(args, cap_gb: float, quantize: str, offload: str, dtype: torch.dtype) -> bool:
    """Whether ``--max-vram cap_gb`` with these settings refuses to generate the clip unless the VAE
    decodes in tiles (``serve --vae-tiling``, which a user of such a card must add): planned, not run."""
    try:
        planner(args, quantize, offload, cap_gb, dtype).plan_windows(args.frames, args.height, args.width, 0, None, False)
    except OutOfMemory:
        return True
    return False


def _step_marks(device: torch.device):
    """(marks, callback): the callback notes (its first argument, the time), synchronised with the
    device first, so each mark is when a step's kernels ended."""
    marks: list[tuple[object, float]] = []

    def mark(first=None, *_):
        _sync(device)
        marks.append((first, time.perf_counter()))

    return marks, mark


def plan_as_run(engine: Engine, frames: int, height: int, width: int, training: bool, rank: int = 16):
    """The memory model's figure for the engine as it stands. ``Engine.memory_plan`` plans as a server
    does, with the rank-64 adapter slot from the start (``estimated_*``); a run before any adapter has
    made the slot has none, so this is the same workload with no slot while the engine has none
    (``estimated_*_as_run``; the H200 rows were compared so)."""
    plan = engine.memory_plan(engine.quantize, engine.offload, frames, height, width, training, rank)
    slots = getattr(getattr(engine, "adapters", None), "slots", None)  # a planner() has none
    if slots is not None and slots.memory()["slot_bytes"]:
        return plan
    model, asked = engine._memory_model, []
    model.predict = lambda work: asked.append(work) or type(model).predict(model, work)  # the engine's own workload
    try:
        engine.memory_plan(engine.quantize, engine.offload, frames, height, width, training, rank)
    finally:
        del model.predict
    return model.predict(dataclasses.replace(asked[0], slot_rank=0))


def _as_run(row: dict, engine: Engine, args, window: int, training: bool, prefix: str, rank: int = 16) -> None:
    plan = plan_as_run(engine, window, args.height, args.width, training, rank)
    row[f"estimated_{prefix}alloc_as_run_gib"] = plan.allocated_bytes / 2**30
    row[f"estimated_{prefix}peak_as_run_gib"] = plan.peak_bytes / 2**30
    row[f"{prefix}slot_gib"] = engine.adapters.slots.memory()["slot_bytes"] / 2**30


def measure_propagation(engine: Engine, args, scene, steps: int, job: PropagateJob | None = None) -> dict:
    """One propagation of ``scene`` (``steps`` guided steps, or ``job``) in the windows the planner cuts:
    its phases, the median denoising step (synchronised marks between steps of a window; a window's
    first step is left out, it follows the encodes), peak device and host memory, and the memory
    model's figures for its longest window."""
    device = engine.device
    job = job or PropagateJob("", scene.source, scene.edit_mask, scene.edited_first_frame, "a sprite moving",
                              steps=steps, guidance_scale=5.0)  # fmt: skip
    prepared = engine.prepare_propagate(job)  # the windows the planner cuts (under a budget: to fit it)
    window = max(prepared.plan.lengths)
    plan = engine.memory_plan(engine.quantize, engine.offload, window, args.height, args.width, training=False)
    row = {"windows": prepared.plan.count, "window_frames": window, "estimated_peak_gib": plan.peak_bytes / 2**30,
           "estimated_alloc_gib": plan.allocated_bytes / 2**30, "estimated_phase": plan.phase,
           "estimated_host_gib": plan.host_bytes / 2**30}  # fmt: skip
    _reset_peak(device)
    marks, on_step = _step_marks(device)
    with host_rss_peak() as rss:
        started = time.perf_counter()
        result = engine.propagate(prepared, on_step)
        row["propagate_s"] = time.perf_counter() - started
    row["peak_alloc_gib"], row["peak_reserved_gib"] = _peaks(device)
    _as_run(row, engine, args, window, False, "")
    per_window = job.steps
    steps_s = [b - a for (s, a), (t, b) in zip(marks, marks[1:]) if (t - 1) // per_window == (s - 1) // per_window]
    timings = result.timings
    mean_step = timings["denoise_s"] / (per_window * prepared.plan.count)  # one step a window: the first steps' mean
    row.update(host_rss_peak_gib=rss["gib"], encode_s=timings["encode_s"], denoise_s=timings["denoise_s"],
               decode_s=timings["decode_s"], total_s=result.elapsed_s,
               denoise_step_s=statistics.median(steps_s) if steps_s else mean_step)  # fmt: skip
    row["_result"] = result  # for a caller that wants the frames; dropped before the row is written
    return row


def measure_training(engine: Engine, args, scene, steps: int, name: str, settings: TrainSettings | None = None,
                     keep: bool = False) -> dict:  # fmt: skip
    """A training of ``steps`` steps after a first one (or ``settings``; by default TrainSettings' rank 16
    with gradient checkpointing, ``steps + 1`` steps in all, each on the next window the planner cuts):
    seconds to the first step (the clip's encodes and that step), the median step after it, peak
    device and host memory, and the memory model's figures for its longest window. Keys ``train_*``.
    The adapter is deleted after, unless ``keep``."""
    device = engine.device
    settings = settings or TrainSettings(steps=steps + 1, steps_in_all=True)
    prepared = engine.prepare_train(TrainJob(name, scene.source, scene.edit_mask, "a sprite", settings))
    window = max(prepared.plan.lengths)
    plan = engine.memory_plan(engine.quantize, engine.offload, window, args.height, args.width, True, settings.rank)
    row = {"train_windows": prepared.plan.count, "train_window_frames": window, "train_steps": prepared.steps,
           "estimated_train_peak_gib": plan.peak_bytes / 2**30, "estimated_train_alloc_gib": plan.allocated_bytes / 2**30,
           "estimated_train_phase": plan.phase, "estimated_train_host_gib": plan.host_bytes / 2**30}  # fmt: skip
    _reset_peak(device)
    marks, on_progress = _step_marks(device)
    with host_rss_peak() as rss:
        begin = time.perf_counter()
        engine.train(prepared, on_progress)
        row["train_s"] = time.perf_counter() - begin
    row["train_peak_alloc_gib"], row["train_peak_reserved_gib"] = _peaks(device)
    _as_run(row, engine, args, window, True, "train_", settings.rank)
    times = [t for _, t in marks]
    row.update(train_host_rss_peak_gib=rss["gib"], train_first_step_s=times[0] - begin if times else None,
               train_step_s=float(np.median(np.diff(times))) if len(times) > 1 else None,
               train_after_steps_s=begin + row["train_s"] - times[-1] if times else None)  # storing the adapter  # fmt: skip
    if not keep:
        engine.adapters.delete(name)
    return row


def build_engine(args, quantize: str, offload: str, cap_gb: float, data_dir: Path,
                 vae_tiling: bool = False) -> tuple[Engine, dict]:  # fmt: skip
    """The architecture built on the device (random weights), quantised there (in seconds; offloaded,
    the engine would quantise on the CPU), then the engine over it: (engine, {"setup_s", "quantize_s"})."""
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    started = time.perf_counter()
    pipe = bench_pipeline(args.arch, args.tiny_dir, device, dtype, args.layers)
    figures = {"build_s": time.perf_counter() - started}
    if quantize != "none" and device.type == "cuda":
        begin = time.perf_counter()
        quantize_pipeline(pipe, quantize, dtype, device)
        _sync(device)
        figures["quantize_s"] = time.perf_counter() - begin
    engine = Engine(engine_config(args, quantize, offload, cap_gb, dtype, vae_tiling), data_dir, pipe=pipe)
    figures["setup_s"] = time.perf_counter() - started
    return engine, figures


def failure(exc: BaseException) -> str:
    """An exception as a row's error: the planner's refusal (framecast's OutOfMemory: nothing ran) and
    the allocator's (torch's OutOfMemoryError) read differently."""
    traceback.print_exc()
    return f"{type(exc).__name__}: {exc}"[:300]


def device_allocated_gib(device: torch.device) -> float | None:
    """What torch holds on the device now (a run starts near 0: what an earlier run left counts against a cap)."""
    return torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else None


def run_capped(args, cap_gb: float | None, scene, data_dir, uncapped: dict | None) -> dict:
    """One emulated card (``cap_gb`` GiB; None: the uncapped bf16 all-on-device run): the settings
    ``--max-vram`` picks (and ``--vae-tiling`` where the planner refuses the clip without it), a
    propagation of ``args.steps`` steps and ``args.train_steps`` training steps after a first, with the
    allocator capped at ``cap_gb``. Errors are rows: a refusal by the planner, an out-of-memory."""
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    row = {"arch": arch_label(args), "frames": args.frames, "size": f"{args.width}x{args.height}", "steps": args.steps,
           "cap_gib": cap_gb}  # fmt: skip
    started, engine = time.perf_counter(), None
    quantize, offload = chosen_settings(args, cap_gb, dtype) if cap_gb else ("none", "none")
    tiling = bool(cap_gb) and needs_vae_tiling(args, cap_gb, quantize, offload, dtype)
    row.update(config=(f"cap {cap_gb:g} GiB: {quantize}/{offload}" + (" +vae-tiling" if tiling else "")) if cap_gb
               else "uncapped: none/none", quantize=quantize, offload=offload, vae_tiling=tiling,
               planning_s=time.perf_counter() - started, device_alloc_before_gib=device_allocated_gib(device),
               host_rss_base_gib=host_rss_peak_now())  # the interpreter's, torch's, CUDA's: not the planner's  # fmt: skip
    try:
        engine, figures = build_engine(args, quantize, offload, cap_gb or 0.0, data_dir, tiling)
        row.update(figures)
        release_host_memory()
        row["host_rss_setup_gib"] = host_rss_peak_now()
        if cap_gb and device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb * 2**30 / total), device)
        try:
            row.update(measure_propagation(engine, args, scene, args.steps))
            row.pop("_result")
        except Exception as exc:  # an out-of-memory under the cap is a result: the planner said it would fit
            row["error"] = failure(exc)
        if args.train_steps:
            try:
                row.update(measure_training(engine, args, scene, args.train_steps, f"cap-{cap_gb or 0:g}".replace(".", "-")))
            except Exception as exc:
                row["train_error"] = failure(exc)
    except Exception as exc:  # building or quantising
        row["error"] = failure(exc)
    finally:
        if cap_gb and device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0, device)
        engine = None
        _reset_peak(device)
        release_host_memory()
    if uncapped is not None:
        compare_with(row, uncapped)
    row["wall_s"] = time.perf_counter() - started
    return row


def compare_with(row: dict, uncapped: dict) -> None:
    """Seconds per denoising and training step against the uncapped bf16 run's."""
    for key, ratio in (("denoise_step_s", "denoise_step_vs_uncapped"), ("train_step_s", "train_step_vs_uncapped")):
        if row.get(key) and uncapped.get(key):
            row[ratio] = row[key] / uncapped[key]


CAPS_COLUMNS = ["config", "windows", "window_frames", "peak_alloc_gib", "peak_reserved_gib", "estimated_peak_gib",
                "denoise_step_s", "denoise_step_vs_uncapped", "train_window_frames", "train_peak_reserved_gib",
                "estimated_train_peak_gib", "train_step_s", "train_step_vs_uncapped", "host_rss_peak_gib",
                "estimated_host_gib", "error", "train_error"]  # fmt: skip


def run_caps(args, scene) -> list[dict]:
    """The uncapped run, then each cap in turn, as long as the deadline leaves time for one more."""
    started, rows, uncapped, longest = time.perf_counter(), [], None, 0.0
    for cap in [None] + args.caps:
        elapsed = time.perf_counter() - started
        if cap is not None and elapsed + longest > args.deadline_s:
            row = {"arch": arch_label(args), "config": f"cap {cap:g} GiB", "cap_gib": cap,
                   "error": f"skipped: {elapsed:.0f} s gone, a cap takes up to {longest:.0f} s, deadline {args.deadline_s} s"}  # fmt: skip
        else:
            row = run_capped(args, cap, scene, args.data_dir / f"cap-{cap}", uncapped)
            longest = max(longest, row["wall_s"])
            if cap is None:
                uncapped = row
        rows.append(row)
        print_table([row], CAPS_COLUMNS, header=len(rows) == 1)
        append_rows(args.results, [row], device=torch.device(args.device))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["tiny", "wan2.1-i2v-14b"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=None, help="default: 49 (14B) or 17 (tiny)")
    parser.add_argument("--width", type=int, default=None, help="default: 832 (14B) or 64 (tiny)")
    parser.add_argument("--height", type=int, default=None, help="default: 480 (14B) or 64 (tiny)")
    parser.add_argument("--steps", type=int, default=30, help="denoising steps (CFG 5: two passes each)")
    parser.add_argument("--train-steps", type=int, default=3, help="training steps timed (0: skip training)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quantize", nargs="+", default=["none", "int8", "nf4"])
    parser.add_argument("--offload", nargs="+", default=["none", "model", "group"])
    parser.add_argument("--windows", nargs="+", type=int, default=None, help="window lengths; 0 = whole clip")
    parser.add_argument("--config", dest="configs", type=parse_config, nargs="+", default=None, metavar="Q/O/W",
                        help="run exactly these QUANTIZE/OFFLOAD/WINDOW configurations, in order, instead of the "
                             "--quantize x --offload x --windows matrix (the baseline none/none/0 still runs first)")
    parser.add_argument("--layers", type=int, default=None,
                        help="14B widths with this many blocks per model (a smoke run; rows say so)")
    parser.add_argument("--tiny-dir", type=Path, default=Path("/tmp/framecast-bench-tiny"))
    parser.add_argument("--data-dir", type=Path, default=None, help="adapters trained here (default: a new temp dir)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--caps", type=float, nargs="+", default=None, metavar="GIB",
                        help="emulate cards of these sizes (allocator capped) with the settings --max-vram picks, "
                             "instead of the --config / matrix runs")
    parser.add_argument("--deadline-s", type=float, default=450.0, help="--caps: skip caps that would end past this")
    args = parser.parse_args(argv)
    args.data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="framecast-bench-"))
    big = args.arch != "tiny"
    args.frames = args.frames or (49 if big else 17)
    args.width = args.width or (832 if big else 64)
    args.height = args.height or (480 if big else 64)
    windows = args.windows if args.windows is not None else [0, 13]
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    scene = make_scene(0, SceneConfig(frames=args.frames, height=args.height, width=args.width, sprites=2))

    def factory():
        return bench_pipeline(args.arch, args.tiny_dir, device, dtype, args.layers)

    if args.caps:
        run_caps(args, scene)
        print(f"\nappended {len(args.caps) + 1} rows to {args.results} (device: {device_name(device)})")
        return 0
    rate = matmul_tflops(device, dtype)
    baseline = ("none", "none", 0)
    chosen = args.configs or [(q, o, w) for q in args.quantize for o in args.offload for w in windows]
    configs = [baseline] + [c for c in chosen if c != baseline]
    columns = ["config", "total_s", "denoise_s", "peak_alloc_gib", "estimated_peak_gib", "train_step_s",
               "train_peak_alloc_gib", "estimated_train_peak_gib"]  # fmt: skip
    rows = []
    for quantize, offload, window in configs:
        started = time.perf_counter()
        try:
            row = run_config(args, factory, quantize, offload, window, (quantize, offload, window) == baseline, scene,
                             args.data_dir / f"{quantize}-{offload}-{window}")  # fmt: skip
        except Exception as exc:  # one failing configuration must not lose the others' rows
            traceback.print_exc()
            row = {"arch": arch_label(args), "config": f"{quantize}/{offload}/w{window}",
                   "error": f"{type(exc).__name__}: {exc}"[:300]}  # fmt: skip
            _reset_peak(device)
        row["matmul_tflops"] = rate
        row["wall_s"] = time.perf_counter() - started
        if "achieved_tflops" in row:
            row["mfu"] = row["achieved_tflops"] / rate
        base = rows[0] if rows else row
        if "total_s" in row and "total_s" in base:
            row["latency_vs_baseline"] = row["total_s"] / base["total_s"]
            row["train_vs_baseline"] = row["train_step_s"] / base["train_step_s"] if base["train_step_s"] else float("nan")
        rows.append(row)
        print_table([row], columns + ["error"])
        append_rows(args.results, [row], device=device)  # now: a run cut short keeps the rows it finished
    print()
    print_table(rows, ["config", "encode_s", "denoise_s", "decode_s", "total_s", "latency_vs_baseline", "peak_alloc_gib",
                       "estimated_peak_gib", "peak_reserved_gib", "train_step_s", "train_vs_baseline",
                       "train_peak_alloc_gib", "estimated_train_peak_gib", "tflop_per_clip", "mfu", "error"])  # fmt: skip
    print(f"\nappended {len(rows)} rows to {args.results} (device: {device_name(device)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
