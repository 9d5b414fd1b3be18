"""Masks from a box or a frame-0 mask, tracked, against the toy world's exact per-frame masks.

    python3 bench/bench_masks.py                        # 20 held-out scenes, trackers only
    python3 bench/bench_masks.py --edit-scenes 6        # and framecast with tracked against true masks

Scenes: held-out seeds (below 1,000,000, never trained on), 256x256, 17 frames, two sprites, the
target moving along a curve while it turns and grows or shrinks, every other scene with an
occluder passing in front of it. For each tracker (csrt, flow) started from a frame-0 box (the
target's) and from a frame-0 mask (its visible pixels): the per-frame IoU of the tracked region's
box with the target's true box (its whole silhouette, hidden parts included: the region an edit
covers), mean and worst frame, frames lost, frames per second on this CPU. With ``--edit-scenes``,
framecast (the quality benchmark's settings) is trained and propagated on the first scenes twice,
with the true per-frame masks and with the tracked ones (CSRT from a box), and masked PSNR against
the true edit compared. Prints tables and appends rows to bench/results/masks.jsonl.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, print_table  # noqa: E402

from framecast.engine.masks.trackers import Box, CsrtTracker, FlowTracker, box_iou  # noqa: E402
from framecast.engine.toy.world import SceneConfig, make_scene  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "masks.jsonl"


def scene(seed: int, size: int, frames: int):
    return make_scene(seed, SceneConfig(frames=frames, height=size, width=size, sprites=2, occlude=seed % 2 == 1))


def track_rows(seeds: range, size: int, frames: int) -> list[dict]:
    rows = []
    for tracker in (CsrtTracker(), FlowTracker()):
        for start in ("box", "mask"):
            ious, worst, lost, seconds, count = [], [], 0, 0.0, 0
            for seed in seeds:
                sc = scene(seed, size, frames)
                first = sc.target_mask[0]
                if start == "box":
                    first = Box.of(sc.target_amodal_mask[0]).mask(size, size)
                started = time.perf_counter()
                track = tracker.track(sc.source, first)
                seconds += time.perf_counter() - started
                count += len(sc.source)
                per_frame = [box_iou(track.masks[k], sc.target_amodal_mask[k]) for k in range(frames)]
                ious.append(statistics.fmean(per_frame))
                worst.append(min(per_frame))
                lost += len(track.lost)
            rows.append({"bench": "masks", "tracker": tracker.kind.value, "from": start, "scenes": len(seeds),
                         "size": size, "frames": frames, "mean_iou": statistics.fmean(ious), "worst_scene_iou": min(ious),
                         "worst_frame_iou": min(worst), "lost_frames": lost, "fps": count / seconds})  # fmt: skip
    return rows


def _downscaled(mask: np.ndarray, size: int) -> np.ndarray:
    """[F, S, S] bool -> [F, size, size]: a pixel is in when any of the pixels it covers is."""
    factor = mask.shape[1] // size
    return mask.reshape(len(mask), size, factor, size, factor).any(axis=(2, 4))


def edit_rows(seeds: range, frames: int, steps: int | None) -> list[dict]:
    """framecast with the true per-frame masks and with tracked ones (CSRT from a box), at the toy
    model's 64x64, the scenes rendered at 256 for the tracker and at 64 for the model."""
    import dataclasses
    import tempfile

    from quality import QualityOptions, evaluate_scene

    from framecast.engine.config import EngineConfig
    from framecast.engine.engine import Engine
    from framecast.engine.model import builtin_model_dir

    options = QualityOptions(methods=("framecast",), windowed=False, composite=False)
    if steps:
        options = dataclasses.replace(options, steps=steps)
    engine = Engine(EngineConfig(model_dir=str(builtin_model_dir()), device="cpu"), tempfile.mkdtemp())
    rows = []
    for seed in seeds:
        small, large = scene(seed, 64, frames), scene(seed, 256, frames)
        track = CsrtTracker().track(large.source, Box.of(large.target_amodal_mask[0]).mask(256, 256))
        tracked = _downscaled(track.masks, 64)
        true = evaluate_scene(engine, small, options)["framecast"]["masked_psnr"]
        with_tracked = dataclasses.replace(small, edit_mask=tracked)
        result = evaluate_scene(engine, with_tracked, options)["framecast"]
        # Scored against the true edit inside the true mask, whatever mask the method was given.
        from framecast.engine.quality.metrics import psnr

        tracked_psnr = psnr(result["frames"], small.edited, small.edit_mask)
        rows.append({"bench": "masks-edit", "scene_seed": seed, "masked_psnr_true_masks": true,
                     "masked_psnr_tracked_masks": tracked_psnr, "difference_db": tracked_psnr - true,
                     "steps": options.steps})  # fmt: skip
        print_table(rows[-1:], EDIT_COLUMNS, header=len(rows) == 1)
    return rows


TRACK_COLUMNS = ["tracker", "from", "scenes", "mean_iou", "worst_scene_iou", "worst_frame_iou", "lost_frames", "fps"]
EDIT_COLUMNS = ["scene_seed", "masked_psnr_true_masks", "masked_psnr_tracked_masks", "difference_db"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0, help="held-out seeds start here (default: 0)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--edit-scenes", type=int, default=0, help="scenes to run framecast on with both masks")
    parser.add_argument("--steps", type=int, default=None, help="framecast's motion-phase steps (default: quality's)")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    seeds = range(args.first_seed, args.first_seed + args.scenes)
    rows = track_rows(seeds, args.size, args.frames)
    print_table(rows, TRACK_COLUMNS)
    if args.edit_scenes:
        print()
        edits = edit_rows(range(args.first_seed, args.first_seed + args.edit_scenes), args.frames, args.steps)
        summary = {"bench": "masks-edit-summary", "scenes": len(edits),
                   "mean_difference_db": statistics.fmean(r["difference_db"] for r in edits)}  # fmt: skip
        print(f"framecast with tracked masks: {summary['mean_difference_db']:+.2f} dB against true masks (goal: within 0.3 dB)")
        rows += edits + [summary]
    count = append_rows(args.results, rows, device="cpu")
    print(f"appended {count} rows to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
