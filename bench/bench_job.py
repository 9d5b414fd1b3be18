"""Time to an edited clip: the whole job (train the adapter, then propagate and write the file),
phase by phase, for the slow path and each lever of issue 24.

    python3 bench/bench_job.py                                  # the built-in toy model on the CPU, every config run whole
    python3 bench/bench_job.py --arch wan2.1-i2v-14b --device cuda   # the 14B: unit costs measured, jobs extrapolated
    python3 bench/bench_job.py --unit-costs bench/results/clip.jsonl  # the 14B from the H200's bench_clip rows

A config is the slow path's job (``--train-steps`` motion steps, ``--steps`` sampling steps with
classifier-free guidance on each) changed by one lever or several: fewer training steps, guidance on
the first steps only or not at all, a step cache (first-block, TaylorSeer), fewer sampling steps.

Each config's transformer work is counted, not guessed: its sampler runs on the built-in toy model
(the toy world's scene 100) with the last block's feed-forward counted, which a cached step skips,
so ``sample_passes`` is full transformer passes (the slow path: 2 per step). First-block caching
decides per step from the activations, so its count is the toy model's, a proxy for the 14B's; the
others are fixed schedules and hold for any model.

With ``--run`` (the default on the CPU) every config's job runs whole on the model and its phases
are measured: encoders and VAE encode, training, denoising, VAE decode, the H.264 file. Otherwise
(the 14B) the unit costs are measured once with few steps (a training step, a transformer pass, the
encodes and decodes) and each job is extrapolated: ``encode + train_steps x train_step +
sample_passes x pass + decode + file``; rows say ``extrapolated``. ``--unit-costs FILE`` takes the
unit costs from bench_clip rows (the H200's bf16 baseline) instead of measuring them. Prints a table
and appends rows to bench/results/job.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, print_table  # noqa: E402
from quality import LEVERS, QualityOptions, counting_blocks, held_out_scene  # noqa: E402

from framecast.common.requests import PropagateJob, TrainJob, TrainSettings  # noqa: E402
from framecast.engine.config import EngineConfig  # noqa: E402
from framecast.engine.engine import Engine  # noqa: E402
from framecast.engine.model import builtin_model_dir  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "job.jsonl"
COLUMNS = ["arch", "config", "train_steps", "steps", "sample_passes", "encode_s", "train_s", "denoise_s", "decode_s",
           "file_s", "total_s", "speedup", "extrapolated"]  # fmt: skip


@dataclass(frozen=True)
class Config:
    """A job: the slow path's settings, changed by ``levers`` (quality.LEVERS names and training ones)."""

    name: str
    train_share: float = 1.0  # of the slow path's training steps
    sampling: tuple[str, ...] = ()  # quality.LEVERS names, applied in order
    note: str = ""

    def propagate_settings(self, steps: int, guidance: float) -> dict:
        settings = {"steps": steps, "guidance_scale": guidance}
        for lever in self.sampling:
            settings.update(LEVERS[lever](steps))
        return settings


CONFIGS = {
    config.name: config
    for config in (
        Config("slow"),
        Config("train-half", train_share=0.5),
        Config("train-quarter", train_share=0.25),
        Config("train-fifth", train_share=0.2),
        Config("guidance-third", sampling=("guidance-third",)),
        Config("no-guidance", sampling=("no-guidance",)),
        Config("first-block-0.1", sampling=("first-block-0.1",)),
        Config("taylorseer-2", sampling=("taylorseer-2",)),
        Config("half-steps", sampling=("half-steps",)),
        Config("fast", train_share=0.2, sampling=("fast",)),  # --preset fast
    )
}


@dataclass
class UnitCosts:
    """What one of each costs on a model and device (seconds)."""

    encode_s: float  # text, image and VAE encoders of a propagation (a training's are in train_step_s' first step)
    train_step_s: float
    pass_s: float  # one transformer pass (a guided sampling step is two)
    decode_s: float
    file_s: float  # the output written as H.264
    source: str = "measured"
    extra: dict = field(default_factory=dict)


def sample_passes(config: Config, steps: int, guidance: float, counter_engine, scene) -> int:
    """Full transformer passes the config's sampler computes, counted on ``counter_engine`` (a
    cached step calls the transformer but skips its blocks)."""
    job = PropagateJob("", scene.source, scene.edit_mask, scene.edited_first_frame, scene.edited_prompt, seed=scene.seed,
                       **config.propagate_settings(steps, guidance))  # fmt: skip
    with counting_blocks(counter_engine.pipe.transformer) as computed:
        counter_engine.propagate(job)
    return computed[0]


def write_file(frames: np.ndarray, fps: float) -> float:
    from framecast.common.media import encode_video

    started = time.perf_counter()
    encode_video(frames, fps)
    return time.perf_counter() - started


def run_job(engine: Engine, scene, config: Config, options, name: str) -> dict:
    """The whole job on ``engine``, measured phase by phase."""
    train_steps = max(1, round(options.train_steps * config.train_share))
    settings = TrainSettings(steps=train_steps, appearance_steps=options.appearance_steps, rank=options.rank,
                             learning_rate=options.learning_rate, seed=scene.seed, gradient_checkpointing=False,
                             colour_variants=options.colour_variants, w_keep=options.w_keep)  # fmt: skip
    started = time.perf_counter()
    engine.train(TrainJob(name, scene.source, scene.edit_mask, scene.prompt, settings,
                          references=[(0, scene.edited_first_frame)]))  # fmt: skip
    train_s = time.perf_counter() - started
    job = PropagateJob(name, scene.source, scene.edit_mask, scene.edited_first_frame, scene.edited_prompt,
                       seed=scene.seed, composite=True, adapter_strength=options.adapter_strength,
                       **config.propagate_settings(options.steps, options.guidance))  # fmt: skip
    with counting_blocks(engine.pipe.transformer) as computed:
        result = engine.propagate(job)
    file_s = write_file(result.frames, 16.0)
    engine.adapters.delete(name)
    timings = result.timings
    return {"train_steps": train_steps, "sample_passes": computed[0], "encode_s": timings["encode_s"], "train_s": train_s,
            "denoise_s": timings["denoise_s"], "decode_s": timings["decode_s"], "file_s": file_s,
            "total_s": train_s + result.elapsed_s + file_s, "extrapolated": False}  # fmt: skip


def measure_unit_costs(engine: Engine, scene, steps: int, train_steps: int, fps: float) -> UnitCosts:
    """A propagation of ``steps`` guided steps and a training of ``train_steps`` (its first step dropped)."""
    job = PropagateJob("", scene.source, scene.edit_mask, scene.edited_first_frame, "a sprite moving", steps=steps,
                       guidance_scale=5.0)  # fmt: skip
    engine.propagate(job)  # warm-up
    result = engine.propagate(job)
    times = []
    settings = TrainSettings(steps=train_steps + 1, rank=16, gradient_checkpointing=True)
    begin = time.perf_counter()
    engine.train(TrainJob("unit-costs", scene.source, scene.edit_mask, "a sprite", settings),
                 lambda progress: times.append(time.perf_counter()))  # fmt: skip
    engine.adapters.delete("unit-costs")
    step_times = np.diff([begin, *times])[1:]
    return UnitCosts(encode_s=result.timings["encode_s"], train_step_s=float(np.median(step_times)),
                     pass_s=result.timings["denoise_s"] / (2 * steps), decode_s=result.timings["decode_s"],
                     file_s=write_file(result.frames, fps))  # fmt: skip


def unit_costs_from_rows(path: Path, arch: str) -> UnitCosts:
    """The newest bf16 all-on-device baseline row of ``arch`` in bench_clip's results (a GPU's)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("arch") == arch and "(baseline)" in r.get("config", "")]
    if not rows:
        raise SystemExit(f"--unit-costs: {path} has no '(baseline)' row of {arch}; run bench_clip.py on a GPU first")
    row = rows[-1]
    return UnitCosts(encode_s=row["encode_s"], train_step_s=row["train_step_s"], pass_s=row["denoise_s"] / (2 * row["steps"]),
                     decode_s=row["decode_s"], file_s=float("nan"),
                     source=f"{row['device']} bench_clip row {row['git_sha']}",
                     extra={"device": f"{row['device']} (extrapolated from bench_clip's per-step figures)"})  # fmt: skip


def extrapolate(costs: UnitCosts, config: Config, options, passes: int) -> dict:
    train_steps = max(1, round(options.train_steps * config.train_share))
    row = {"train_steps": train_steps, "sample_passes": passes, "encode_s": costs.encode_s,
           "train_s": train_steps * costs.train_step_s, "denoise_s": passes * costs.pass_s, "decode_s": costs.decode_s,
           "file_s": costs.file_s, "extrapolated": True, "unit_costs": costs.source}  # fmt: skip
    row["total_s"] = sum(v for k, v in row.items() if k.endswith("_s") and k != "total_s" and np.isfinite(v))
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=["toy", "wan2.1-i2v-14b"], default="toy",
                        help="toy: the built-in model on the toy world's scene; wan2.1-i2v-14b: random weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--train-steps", type=int, default=None,
                        help="the slow path's motion steps (default: 1600 on the toy model, the quality benchmark's; "
                             "100 on the 14B, the method's)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=30, help="the slow path's sampling steps (default: %(default)s)")
    parser.add_argument("--run", action=argparse.BooleanOptionalAction, default=None,
                        help="run every job whole (default: on the toy model); else extrapolate from unit costs")
    parser.add_argument("--unit-steps", type=int, default=3, help="sampling and training steps timed for unit costs")
    parser.add_argument("--unit-costs", type=Path, default=None, metavar="CLIP_JSONL",
                        help="take the unit costs from bench_clip rows (a GPU's bf16 baseline) instead of measuring")
    parser.add_argument("--frames", type=int, default=49, help="the 14B's clip (default: %(default)s frames of 832x480)")
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--layers", type=int, default=None,
                        help="the 14B's widths with N blocks in each encoder and the transformer: a smoke run; rows say so")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    toy = args.arch == "toy"
    run = toy and not args.unit_costs if args.run is None else args.run
    quality = QualityOptions()
    options = argparse.Namespace(
        train_steps=args.train_steps or (quality.steps if toy else 100), steps=args.steps,
        guidance=quality.guidance_scale if toy else 5.0, appearance_steps=quality.appearance_steps if toy else 0,
        rank=quality.rank, learning_rate=quality.learning_rate, colour_variants=quality.colour_variants if toy else 0,
        w_keep=quality.w_keep, adapter_strength=quality.adapter_strength,
    )  # fmt: skip
    scene = held_out_scene(100)
    data_dir = Path(tempfile.mkdtemp(prefix="framecast-bench-job-"))
    if run and not toy:
        raise SystemExit("--run needs --arch toy (the 14B's jobs are extrapolated from its unit costs)")
    counter = Engine(EngineConfig(model_dir=str(builtin_model_dir()), device="cpu"), data_dir / "counter")

    extra = {}
    if run:  # each job counts its own passes as it runs
        rows = [{"config": name, **run_job(counter, scene, CONFIGS[name], options, f"job-{name}")} for name in args.configs]
    else:
        passes = {name: sample_passes(CONFIGS[name], options.steps, options.guidance, counter, scene)
                  for name in args.configs}  # fmt: skip
        if args.unit_costs:
            costs = unit_costs_from_rows(args.unit_costs, args.arch)
            extra = costs.extra
        else:
            costs = measure_arch_unit_costs(args, data_dir)
        rows = [{"config": name, **extrapolate(costs, CONFIGS[name], options, passes[name])} for name in args.configs]
    slow = next((r["total_s"] for r in rows if r["config"] == "slow"), None)
    for row in rows:
        settings = CONFIGS[row["config"]].propagate_settings(options.steps, options.guidance)
        row.update(arch=args.arch if args.layers is None else f"{args.arch}-{args.layers}layers", steps=settings["steps"],
                   levers=list(CONFIGS[row["config"]].sampling),
                   train_share=CONFIGS[row["config"]].train_share, guidance=options.guidance,
                   speedup=slow / row["total_s"] if slow else None)  # fmt: skip
    print_table(rows, COLUMNS)
    count = append_rows(args.results, [{"bench": "job", **row, **extra} for row in rows], device=args.device)
    print(f"appended {count} rows to {args.results}")
    return 0


def measure_arch_unit_costs(args, data_dir: Path) -> UnitCosts:
    """The 14B architecture with random weights on ``--device`` (bench_clip's builder), ``--frames`` of
    ``--width`` x ``--height`` (49 of 832x480)."""
    from bench_clip import build_14b_pipeline

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    from framecast.engine.toy.world import SceneConfig, make_scene

    scene = make_scene(0, SceneConfig(frames=args.frames, height=args.height, width=args.width, sprites=2))
    engine = Engine(EngineConfig(model_dir=str(builtin_model_dir()), device=args.device,
                                 dtype=str(dtype).removeprefix("torch."), max_frames=args.frames,
                                 max_pixels=args.width * args.height),
                    data_dir / "arch", pipe=build_14b_pipeline(device, dtype, args.layers))  # fmt: skip
    costs = measure_unit_costs(engine, scene, args.unit_steps, args.unit_steps, 16.0)
    layers = "" if args.layers is None else f", {args.layers} blocks (smoke run)"
    costs.source = f"measured on {args.device}, {args.unit_steps} steps, {args.frames} frames of {args.width}x{args.height}{layers}"
    return costs


if __name__ == "__main__":
    sys.exit(main())
