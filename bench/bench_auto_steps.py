"""Automatic steps against the fixed default, on toy-world scenes the model never saw.

    python3 bench/bench_auto_steps.py                    # 20 held-out scenes, rows to bench/results/auto_steps.jsonl
    python3 bench/bench_auto_steps.py --scenes 4 --results /tmp/auto.jsonl

For each scene the built-in model trains an adapter with its own settings twice, with a fixed
number of motion steps (the model's, 200) and with automatic steps (the motion phase in chunks of
an eighth, a quarter and half, each previewed, stopping once the preview's edit holds), and
propagates the edit with each, composited as the server delivers it. Per run: the motion steps
trained, the training's seconds (previews included, and apart), the propagation's seconds, the
whole job, and the masked PSNR against the true edited video. The goal (issue 30): masked PSNR
within 0.3 dB of the fixed default or better, in fewer steps.

The preview's cost on the 14B, 49 frames of 832x480, is derived from the H200's per-step figures
in docs/benchmarks.md (a training step 7.7 s, a transformer pass 1.70 s at 49 frames): a preview
samples 10 steps with guidance (20 passes) on 17 frames, about a third of the tokens.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, print_table  # noqa: E402
from quality import held_out_scene  # noqa: E402

from framecast.common.requests import AutoSteps, PropagateJob, TrainJob, TrainSettings  # noqa: E402
from framecast.engine.config import EngineConfig  # noqa: E402
from framecast.engine.engine import Engine  # noqa: E402
from framecast.engine.model import builtin_model_dir  # noqa: E402
from framecast.engine.quality.metrics import psnr  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "auto_steps.jsonl"
# The 14B at 49 frames of 832x480 on an H200 (docs/benchmarks.md): a training step, a transformer pass.
H200_TRAIN_STEP_S, H200_PASS_S, FULL_FRAMES = 7.7, 1.70, 49


def preview_seconds_14b(auto: AutoSteps) -> float:
    """A preview on the 14B, extrapolated: its transformer passes (guided: two a step) on
    ``preview_frames`` of 49 frames' tokens (latent frames: (F - 1) / 4 + 1)."""
    share = ((auto.preview_frames - 1) // 4 + 1) / ((FULL_FRAMES - 1) // 4 + 1)
    return auto.preview_steps * 2 * H200_PASS_S * share


def run(engine: Engine, seed: int) -> list[dict]:
    scene = held_out_scene(seed)
    model = engine.settings
    settings = TrainSettings(**{**model.train, "seed": seed, "gradient_checkpointing": False})
    auto = AutoSteps(threshold=model.fidelity_threshold, sampling=tuple(model.propagate.items()), prompt=scene.edited_prompt)
    rows = []
    for mode, steps in (("fixed", None), ("auto", auto)):
        name = f"auto-bench-{seed}-{mode}"
        started = time.perf_counter()
        record = engine.train(TrainJob(name, scene.source, scene.edit_mask, scene.prompt, settings,
                                       references=[(0, scene.edited_first_frame)], auto_steps=steps))  # fmt: skip
        train_s = time.perf_counter() - started
        started = time.perf_counter()
        result = engine.propagate(PropagateJob(name, scene.source, scene.edit_mask, scene.edited_first_frame,
                                               scene.edited_prompt, seed=seed, composite=True, **model.propagate))  # fmt: skip
        propagate_s = time.perf_counter() - started
        done = record.training.get("auto_steps") or {}
        previews = done.get("previews", [])
        rows.append({
            "scene": seed, "edit": scene.edit.value, "mode": mode, "motion_steps": record.training["steps"],
            "stopped": done.get("reason", "fixed"), "previews": len(previews),
            "preview_s": sum(p["seconds"] for p in previews), "train_s": train_s, "propagate_s": propagate_s,
            "job_s": train_s + propagate_s, "masked_psnr": psnr(result.frames, scene.edited, scene.edit_mask),
        })  # fmt: skip
        engine.adapters.delete(name)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    engine = Engine(EngineConfig(model_dir=str(builtin_model_dir())), tempfile.mkdtemp(prefix="framecast-auto-"))
    columns = ["scene", "edit", "mode", "motion_steps", "stopped", "previews", "preview_s", "train_s", "propagate_s",
               "job_s", "masked_psnr"]  # fmt: skip
    every = []
    for number, seed in enumerate(range(args.first_seed, args.first_seed + args.scenes)):
        rows = run(engine, seed)
        print_table(rows, columns, header=number == 0)
        append_rows(args.results, [{**r, "bench": "auto_steps"} for r in rows], device="cpu")
        every += rows
    summary = []
    for mode in ("fixed", "auto"):
        mine = [r for r in every if r["mode"] == mode]
        summary.append({"mode": mode, "scenes": len(mine),
                        **{key: statistics.fmean(r[key] for r in mine)
                           for key in ("motion_steps", "train_s", "preview_s", "job_s", "masked_psnr")}})  # fmt: skip
    auto = AutoSteps()
    summary.append({"mode": "auto - fixed", "masked_psnr": summary[1]["masked_psnr"] - summary[0]["masked_psnr"],
                    "motion_steps": summary[1]["motion_steps"] - summary[0]["motion_steps"]})  # fmt: skip
    print()
    print_table(summary, ["mode", "scenes", "motion_steps", "train_s", "preview_s", "job_s", "masked_psnr"])
    print(f"\na preview on the 14B, 49 frames of 832x480 (extrapolated from the H200's pass): {preview_seconds_14b(auto):.1f} s")
    append_rows(args.results, [{**row, "bench": "auto_steps", "summary": True} for row in summary], device="cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
