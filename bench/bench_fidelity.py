"""Does the fidelity verdict tell a carried edit from a lost one? Validated against ground truth.

    python3 bench/bench_fidelity.py                      # 20 held-out scenes, rows to bench/results/fidelity.jsonl
    python3 bench/bench_fidelity.py --scenes 4 --results /tmp/fidelity.jsonl
    python3 bench/bench_fidelity.py --outputs DIR ...    # also keep every run's output frames in DIR
    python3 bench/bench_fidelity.py --rescore DIR ...    # judge the outputs kept in DIR again (no training)
    python3 bench/bench_fidelity.py --plot docs/images/fidelity.png --outputs DIR --plot-scene 102   # curves of kept runs

On toy-world scenes the model never saw (the quality benchmark's held-out seeds), each edit is
propagated by adapters trained with the model's own settings and with deliberately weak ones, so
that both carried and lost edits occur:

  model          the built-in model's settings (its framecast.json)
  1 step, 5 steps, 20 steps   as few motion steps
  no reference   without the edited first frame as an appearance reference
  strength 0.2   the adapter at a fifth of its strength
  method         the method's own defaults (no colour variants, strength 1, CFG 5, no reference)
  drifting box   trained and propagated on a box that slides off the object (3 px a frame)

and the two baselines the quality benchmark beats, (a) plain I2V and (b) mask only. Every output
is composited as the server delivers it. For each run: the true masked PSNR (inside the true edit
mask, against the true edited video), and the fidelity the server would report (the mean of its
curve and its verdict, from the source, the edited first frame, the region the run used and the
output alone). Goals (issue 30): the Spearman correlation of per-run fidelity with masked PSNR
>= 0.7; as a detector of edits that lose to a baseline (masked PSNR below the better of (a) and (b)
on the scene), at least 90% of them flagged (verdict not held) with at most 10% false alarms.

The fidelity here is read on the working grid, which at the toy world's 64x64 is the source's
size: what the server measures on a delivered file of a source given at that size, losslessly.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, print_table  # noqa: E402
from quality import held_out_scene  # noqa: E402

from framecast.engine.config import EngineConfig  # noqa: E402
from framecast.engine.engine import Engine  # noqa: E402
from framecast.engine.model import builtin_model_dir  # noqa: E402
from framecast.engine.model_settings import ModelSettings  # noqa: E402
from framecast.engine.quality.fidelity import FidelityMeter, Verdict  # noqa: E402
from framecast.engine.quality.metrics import psnr  # noqa: E402
from framecast.common.requests import MaskMode, PropagateJob, TrainJob, TrainSettings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "fidelity.jsonl"
FIRST_SEED = 0  # the quality benchmark's held-out scenes
BASELINES = ("(a) plain I2V", "(b) mask only")
DRIFT_PX = 3  # the drifting box slides this many pixels a frame, whatever the object does


def drifting_box(edit_mask: np.ndarray) -> np.ndarray:
    """Frame 0's box of the edit region, sliding right by DRIFT_PX a frame: [F, H, W] bool."""
    frames, height, width = edit_mask.shape
    rows, cols = np.nonzero(edit_mask[0])
    out = np.zeros_like(edit_mask)
    for t in range(frames):
        x0, x1 = cols.min() + DRIFT_PX * t, cols.max() + 1 + DRIFT_PX * t
        out[t, rows.min() : rows.max() + 1, max(0, x0) : min(width, x1)] = True
    return out


def variants(model) -> dict[str, tuple[dict, dict, bool, bool]]:
    """name -> (training settings, propagation settings, first-frame reference, drifting box), from
    the model's settings (``ModelSettings``)."""
    train, propagate, reference = dict(model.train), dict(model.propagate), model.first_frame_reference
    return {
        "model": (train, propagate, reference, False),
        "1 step": ({**train, "steps": 1}, propagate, reference, False),
        "5 steps": ({**train, "steps": 5}, propagate, reference, False),
        "20 steps": ({**train, "steps": 20}, propagate, reference, False),
        "no reference": (train, propagate, False, False),
        "strength 0.2": (train, {**propagate, "adapter_strength": 0.2}, reference, False),
        "method": ({}, {}, False, False),
        "drifting box": (train, propagate, reference, True),
    }


def fidelity_of(scene, frames: np.ndarray, region: np.ndarray, threshold: float):
    meter = FidelityMeter(scene.source[0], scene.edited_first_frame, region[0])
    for t in range(len(frames)):
        meter.add(scene.source[t], frames[t], region[t])
    return meter.result(threshold)


def judged(scene, method: str, frames: np.ndarray, region: np.ndarray, threshold: float, steps: int,
           seconds: float) -> dict:
    """A run's row: its true masked PSNR and what the fidelity measure says of it."""
    fidelity = fidelity_of(scene, frames, region, threshold)
    return {
        "scene": scene.seed, "edit": scene.edit.value, "method": method, "steps": steps,
        "masked_psnr": psnr(frames, scene.edited, scene.edit_mask), "fidelity_mean": fidelity.mean,
        "fidelity_worst": fidelity.worst, "verdict": fidelity.verdict.value, "first_below": fidelity.first_below,
        "edit_psnr": fidelity.edit_psnr_db,
        "curve": [None if math.isnan(v) else round(v, 4) for v in fidelity.curve], "seconds": seconds,
    }  # fmt: skip


def evaluate(engine: Engine, seed: int, threshold: float, only: tuple[str, ...], outputs: Path | None) -> list[dict]:
    scene = held_out_scene(seed)
    rows = []

    def row(method: str, result, started: float, steps: int) -> dict:
        if outputs is not None:
            np.savez_compressed(outputs / f"{seed}-{method}.npz", frames=result.frames, region=result.edit_mask,
                                steps=steps, seconds=time.perf_counter() - started)  # fmt: skip
        return judged(scene, method, result.frames, result.edit_mask, threshold, steps, time.perf_counter() - started)

    for name in BASELINES:
        started = time.perf_counter()
        everything = name.startswith("(a)")
        mask = np.ones_like(scene.edit_mask) if everything else scene.edit_mask
        job = PropagateJob("", scene.source, mask, scene.edited_first_frame, scene.edited_prompt, seed=seed, composite=True,
                           mask_mode=MaskMode.EXACT if everything else MaskMode.BBOX,
                           **engine.settings.fill("propagate", "", {}))  # fmt: skip
        result = engine.propagate(job)
        if everything:  # plain I2V regenerates the whole frame: judge it inside the edit region, as the others
            result.edit_mask = np.broadcast_to(scene.edit_mask, result.edit_mask.shape).copy()
        rows.append(row(name, result, started, 0))
    for name, (train, propagate, reference, drifting) in variants(engine.settings).items():
        if only and name not in only:
            continue
        started = time.perf_counter()
        mask = drifting_box(scene.edit_mask) if drifting else scene.edit_mask
        settings = TrainSettings(**{**train, "seed": seed, "gradient_checkpointing": False})
        adapter = f"fidelity-{seed}-{name.replace(' ', '-').replace('.', '')}"
        engine.train(TrainJob(adapter, scene.source, mask, scene.prompt, settings,
                              references=[(0, scene.edited_first_frame)] if reference else []))  # fmt: skip
        job = PropagateJob(adapter, scene.source, mask, scene.edited_first_frame, scene.edited_prompt, seed=seed,
                           composite=True, **propagate)  # fmt: skip
        rows.append(row(name, engine.propagate(job), started, settings.steps))
        engine.adapters.delete(adapter)
    return rows


def spearman(a: list[float], b: list[float]) -> float:
    ranks = [np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(float) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def summarize(rows: list[dict]) -> dict:
    """The goals' figures over every run of every scene (baselines excluded from the detector)."""
    runs = [r for r in rows if r["method"] not in BASELINES and not math.isnan(r["fidelity_mean"])]
    best_baseline = {}
    for r in rows:
        if r["method"] in BASELINES:
            best_baseline[r["scene"]] = max(best_baseline.get(r["scene"], -math.inf), r["masked_psnr"])
    losing = [r for r in runs if r["masked_psnr"] < best_baseline[r["scene"]]]
    winning = [r for r in runs if r["masked_psnr"] >= best_baseline[r["scene"]]]
    flagged = lambda r: r["verdict"] != Verdict.HELD.value  # noqa: E731
    unmeasured = [r for r in rows if r["method"] not in BASELINES and r not in runs]
    return {
        "runs": len(runs), "unmeasured": len(unmeasured),
        "spearman": spearman([r["fidelity_mean"] for r in runs], [r["masked_psnr"] for r in runs]) if len(runs) > 2 else None,
        "spearman_edit_psnr": spearman([r["edit_psnr"] for r in runs], [r["masked_psnr"] for r in runs]) if len(runs) > 2 else None,
        "losing": len(losing), "caught": sum(map(flagged, losing)) / len(losing) if losing else None,
        "winning": len(winning), "false_alarms": sum(map(flagged, winning)) / len(winning) if winning else None,
    }  # fmt: skip


def rescore(directory: Path, seeds: range, threshold: float) -> list[dict]:
    """Rows of the outputs kept in ``directory`` (``--outputs``), judged again by the current measure."""
    rows = []
    for seed in seeds:
        scene = held_out_scene(seed)
        for path in sorted(directory.glob(f"{seed}-*.npz")):
            kept = np.load(path)
            method = path.stem.split("-", 1)[1]
            rows.append(judged(scene, method, kept["frames"], kept["region"], threshold, int(kept["steps"]),
                               float(kept["seconds"])))  # fmt: skip
    return rows


def plot(directory: Path, seed: int, methods: list[str], path: Path, threshold: float) -> None:
    """The fidelity curves of kept runs of one scene, on one chart (``framecast.client.plot``)."""
    from framecast.client.plot import fidelity_png

    scene, curves, verdicts = held_out_scene(seed), [], []
    for method in methods:
        kept = np.load(directory / f"{seed}-{method}.npz")
        fidelity = fidelity_of(scene, kept["frames"], kept["region"], threshold)
        curves.append((f"{method}: {fidelity.verdict.value}", fidelity.curve))
        verdicts.append(f"{method} {fidelity.verdict.value}")
    title = f"toy-world scene {seed} ({scene.edit.value}): " + ", ".join(verdicts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(fidelity_png(curves, threshold, title))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED)
    parser.add_argument("--threshold", type=float, default=None, help="fidelity threshold (default: the model's)")
    parser.add_argument("--only", nargs="*", default=(), help="run only these variants (and the baselines)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--outputs", default=None, metavar="DIR", help="keep every run's output frames here (.npz)")
    parser.add_argument("--rescore", default=None, metavar="DIR", help="judge the outputs kept in DIR, training nothing")
    parser.add_argument("--plot", default=None, metavar="PNG", help="draw kept runs' curves (--outputs DIR) into PNG")
    parser.add_argument("--plot-scene", type=int, default=102)
    parser.add_argument("--plot-runs", nargs="*", default=["model", "drifting box"])
    args = parser.parse_args(argv)
    if args.plot:
        threshold = ModelSettings.load(builtin_model_dir()).fidelity_threshold if args.threshold is None else args.threshold
        plot(Path(args.outputs), args.plot_scene, args.plot_runs, Path(args.plot), threshold)
        return 0
    columns = ["scene", "edit", "method", "steps", "masked_psnr", "edit_psnr", "fidelity_mean", "fidelity_worst",
               "verdict", "first_below", "seconds"]  # fmt: skip
    seeds = range(args.first_seed, args.first_seed + args.scenes)
    if args.rescore:
        threshold = ModelSettings.load(builtin_model_dir()).fidelity_threshold if args.threshold is None else args.threshold
        every = rescore(Path(args.rescore), seeds, threshold)
        print_table(every, columns)
        summary = summarize(every)
        print()
        print_table([summary], list(summary))
        rows = [{**r, "bench": "fidelity", "threshold": threshold, "rescored": True} for r in every]
        append_rows(args.results, rows + [{"bench": "fidelity", "summary": True, "rescored": True, "scenes": args.scenes,
                                           "first_seed": args.first_seed, "threshold": threshold, **summary}], device="cpu")  # fmt: skip
        return 0
    outputs = Path(args.outputs) if args.outputs else None
    if outputs is not None:
        outputs.mkdir(parents=True, exist_ok=True)
    engine = Engine(EngineConfig(model_dir=str(builtin_model_dir())), tempfile.mkdtemp(prefix="framecast-fidelity-"))
    threshold = engine.settings.fidelity_threshold if args.threshold is None else args.threshold
    every: list[dict] = []
    for number, seed in enumerate(seeds):
        rows = evaluate(engine, seed, threshold, tuple(args.only), outputs)
        print_table(rows, columns, header=number == 0)
        append_rows(args.results, [{**r, "bench": "fidelity", "threshold": threshold} for r in rows], device="cpu")
        every += rows
    summary = summarize(every)
    print()
    print_table([summary], list(summary))
    append_rows(args.results, [{"bench": "fidelity", "summary": True, "scenes": args.scenes, "threshold": threshold,
                                **summary}], device="cpu")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
