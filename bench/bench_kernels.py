"""Benchmark framecast's Triton kernels against eager and torch.compile'd PyTorch references.

    python3 bench/bench_kernels.py --device cuda      # appends to bench/results/kernels.jsonl
    python3 bench/bench_kernels.py --device cpu --quick --results /tmp/kernels.jsonl

GB/s counts the bytes each op must move at minimum (comments at *_bytes below), the same
for every implementation, so it compares them on equal terms; "copy%" divides it by a
device-to-device copy measured in the same run. Targets on an H100: both kernels >= 85%
of copy bandwidth, the fused loss fwd+bwd >= 3x eager and faster than torch.compile.
On CPU, Triton runs only under TRITON_INTERPRET=1 (the interpreter: correctness, not speed).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, copy_bandwidth_gbs, device_name, measure, peak_memory, print_table  # noqa: E402

from framecast.kernels import (  # noqa: E402
    blend_windows,
    blend_windows_reference,
    masked_flow_loss,
    masked_flow_loss_from_noise,
    masked_flow_loss_from_noise_reference,
    masked_flow_loss_reference,
    use_triton,
)

LOSS_SHAPES = {  # latents [B, C, F, H, W]
    "window13_480p": (1, 16, 4, 60, 104),  # one 13-frame window of 832x480
    "clip49_480p": (1, 16, 13, 60, 104),  # a 49-frame 832x480 clip
    "clip81_720p": (1, 16, 21, 90, 160),  # 81 frames of 1280x720
}
QUICK_LOSS_SHAPES = {"small": (1, 16, 3, 12, 20), "odd_b2": (2, 5, 3, 11, 13)}
# name: (window shape, None at the frame dim; frame_dim; total frames; window frames; overlap; dtypes)
BLEND_CASES = {
    "decoded49_480p": ((None, 480, 832, 3), 0, 49, 13, 4, (torch.uint8,)),
    "latent49_480p": ((16, None, 60, 104), 1, 13, 4, 1, (torch.bfloat16, torch.float32)),
    "latent81_720p": ((16, None, 90, 160), 1, 21, 4, 1, (torch.bfloat16,)),
}
QUICK_BLEND_CASES = {
    "decoded_small": ((None, 24, 32, 3), 0, 11, 5, 2, (torch.uint8,)),
    "latent_small": ((16, None, 6, 8), 1, 6, 3, 1, (torch.bfloat16, torch.float32)),
}
COLUMNS = ["op", "case", "dtype", "mode", "impl", "median_ms", "p20_ms", "p80_ms"]
COLUMNS += ["GB/s", "copy%", "x_eager", "x_compile", "peak_MB"]


def loss_bytes(shape, dtype, from_noise: bool, backward: bool) -> int:
    # N = B*C*F*H*W elements of pred, M = N/C of the fp32 weight. The op must read pred and
    # target (pred, noise and x0 from noise) and the weight once, and write the gradient
    # once with backward: (2N or 3N + N if backward) * itemsize + 4M. The Triton path moves
    # 4M more (its normaliser pass re-reads the weight), left out so all rows compare alike.
    n = math.prod(shape)
    size = torch.empty((), dtype=dtype).element_size()
    return ((3 if from_noise else 2) + backward) * n * size + 4 * (n // shape[1])


def blend_bytes(windows, out_numel: int) -> int:
    # reads every window element once, writes every output element once
    return (sum(w.numel() for w in windows) + out_numel) * windows[0].element_size()


def window_starts(total: int, window: int, overlap: int) -> list[int]:
    starts = list(range(0, total - window + 1, window - overlap))
    if starts[-1] + window < total:  # a last window flush with the end, overlapping more
        starts.append(total - window)
    return starts


def compiled(fn):
    return torch.compile(fn, dynamic=False)


def loss_cases(shapes, dtypes, device, with_triton, with_compile):
    """Yield (config, bytes, {impl: callable}) for the loss, fwd+bwd and fwd."""
    compiled_loss = compiled(masked_flow_loss_reference) if with_compile else None
    compiled_noise = compiled(masked_flow_loss_from_noise_reference) if with_compile else None
    for case, shape in shapes.items():
        for dtype in dtypes:
            gen = torch.Generator(device=device).manual_seed(0)
            pred = torch.randn(shape, generator=gen, device=device).to(dtype)
            noise = torch.randn(shape, generator=gen, device=device).to(dtype)
            x0 = torch.randn(shape, generator=gen, device=device).to(dtype)
            target = noise - x0
            b, _, f, h, w = shape
            weight = (torch.rand(b, 1, f, h, w, generator=gen, device=device) > 0.3).float() * 2.0
            pred_grad = pred.detach().requires_grad_()

            def fwd_bwd(loss_fn, *args, pred=pred_grad):
                return lambda: torch.autograd.grad(loss_fn(pred, *args), pred)

            def fwd(loss_fn, *args, pred=pred):
                return lambda: loss_fn(pred, *args)

            triton_loss = lambda p, t, w: masked_flow_loss(p, t, w, backend="triton")  # noqa: E731
            triton_noise = lambda p, n, x, w: masked_flow_loss_from_noise(p, n, x, w, backend="triton")  # noqa: E731
            for mode, make, backward in (("fwd+bwd", fwd_bwd, True), ("fwd", fwd, False)):
                impls = {"eager": make(masked_flow_loss_reference, target, weight)}
                if with_compile:
                    impls["compile"] = make(compiled_loss, target, weight)
                if with_triton:
                    impls["triton"] = make(triton_loss, target, weight)
                config = dict(op="masked_loss", case=case, shape=list(shape), dtype=str(dtype)[6:], mode=mode)
                yield config, loss_bytes(shape, dtype, False, backward), impls
            impls = {"eager": fwd_bwd(masked_flow_loss_from_noise_reference, noise, x0, weight)}
            if with_compile:
                impls["compile"] = fwd_bwd(compiled_noise, noise, x0, weight)
            if with_triton:
                # what fusing noise - x0 saves: the same kernel after an eager subtraction
                impls["triton+sub"] = fwd_bwd(lambda p, n, x, w: triton_loss(p, n - x, w), noise, x0, weight)
                impls["triton"] = fwd_bwd(triton_noise, noise, x0, weight)
            config = dict(op="masked_loss_from_noise", case=case, shape=list(shape), dtype=str(dtype)[6:])
            yield {**config, "mode": "fwd+bwd"}, loss_bytes(shape, dtype, True, True), impls


def blend_cases(cases, device, with_triton, with_compile):
    """Yield (config, bytes, {impl: callable or (callable, its own bytes)}) for overlap blending."""
    compiled_blend = compiled(blend_windows_reference) if with_compile else None
    for case, (layout, frame_dim, total, window, overlap, dtypes) in cases.items():
        starts = window_starts(total, window, overlap)
        for dtype in dtypes:
            shape = [window if d is None else d for d in layout]
            gen = torch.Generator(device=device).manual_seed(0)
            windows = [
                (torch.rand(shape, generator=gen, device=device) * (255 if dtype == torch.uint8 else 1)).to(dtype)
                for _ in starts
            ]
            impls = {
                "eager": partial(blend_windows_reference, windows, starts, frame_dim),
                # not a blend: the copy a torch.cat-based kernel would add (what the pointer table
                # avoids); it moves its own bytes: reads and writes every window element once
                "cat": (partial(torch.cat, windows, dim=frame_dim), 2 * blend_bytes(windows, 0)),
            }
            if with_compile:
                impls["compile"] = partial(compiled_blend, windows, starts, frame_dim)
            if with_triton:
                impls["triton"] = partial(blend_windows, windows, starts, frame_dim, backend="triton")
            out_numel = windows[0].numel() // window * total
            config = dict(
                op="overlap_blend", case=case, shape=shape, starts=starts, total_frames=total,
                dtype=str(dtype)[6:], mode="linear",
            )  # fmt: skip
            yield config, blend_bytes(windows, out_numel), impls


def run(args, on_case=None) -> list[dict]:
    """Measure every case; ``on_case(rows)`` gets each case's rows as soon as it is done."""
    device = torch.device(args.device)
    probe = torch.zeros(1, device=device)
    with_triton = use_triton("auto", probe)
    with_compile = not args.no_compile
    if with_compile:  # one compiled graph per shape, dtype and mode: more than the default 8
        torch._dynamo.config.recompile_limit = 64
    warmup, iters = (2, 5) if args.quick else (args.warmup, args.iters)
    copy_gbs = copy_bandwidth_gbs(device, nbytes=(64 if args.quick else 1024) * 2**20)
    print(f"{device_name(device)}: device-to-device copy {copy_gbs:.1f} GB/s; triton={'yes' if with_triton else 'no'}")

    loss_shapes = QUICK_LOSS_SHAPES if args.quick else LOSS_SHAPES
    blends = QUICK_BLEND_CASES if args.quick else BLEND_CASES
    cases = []  # generators: each case's tensors exist only while it is measured
    if args.only in (None, "loss"):
        cases.append(loss_cases(loss_shapes, (torch.bfloat16, torch.float32), device, with_triton, with_compile))
    if args.only in (None, "blend"):
        cases.append(blend_cases(blends, device, with_triton, with_compile))

    rows = []
    for config, nbytes, impls in itertools.chain(*cases):
        timed = {}
        for impl, fn in impls.items():
            fn, impl_bytes = fn if isinstance(fn, tuple) else (fn, nbytes)
            try:
                stats = measure(fn, warmup=warmup, iters=iters, device=device)  # warmup compiles, tunes
                with peak_memory(device) as peak:
                    fn()
            except Exception as error:  # a compile failure should not lose the other rows
                print(f"{config['op']} {config['case']} {impl}: {type(error).__name__}: {error}".splitlines()[0])
                continue
            timed[impl] = stats["median"]
            gbs = impl_bytes / (stats["median"] * 1e-3) / 1e9
            rows.append({
                "config": {**config, "impl": impl, "quick": args.quick},
                **{k: config[k] for k in ("op", "case", "dtype", "mode")}, "impl": impl,
                "bytes": impl_bytes, "median_ms": stats["median"], "p20_ms": stats["p20"], "p80_ms": stats["p80"],
                "GB/s": gbs, "copy%": 100 * gbs / copy_gbs, "copy_gbs": copy_gbs, "peak_MB": peak["mb"],
            })  # fmt: skip
        for row in rows[len(rows) - len(timed) :]:
            for base in ("eager", "compile"):
                if base in timed:
                    row[f"x_{base}"] = timed[base] / row["median_ms"]
        if on_case is not None and timed:
            on_case(rows[len(rows) - len(timed) :])
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="small shapes, few iterations (CPU smoke run)")
    parser.add_argument("--only", choices=["loss", "blend"], help="run one kernel's cases")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--results", default=str(Path(__file__).parent / "results" / "kernels.jsonl"),
                        help="JSON-lines file to append to ('' to write nothing)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible; use --device cpu --quick")
    def keep(case_rows):  # appended case by case: a run cut short keeps what it measured
        print_table(case_rows, COLUMNS, header=False)
        if args.results:
            append_rows(args.results, case_rows, device=args.device)

    rows = run(args, keep)
    print()
    print_table(rows, COLUMNS)
    if args.results:
        print(f"appended {len(rows)} rows to {args.results}")


if __name__ == "__main__":
    main()
