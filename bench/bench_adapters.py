"""Adapter swap latency and memory: from the device cache, from (pinned) host memory, from disk.

    python bench/bench_adapters.py --arch tiny --device cpu                  # runs anywhere, small
    python bench/bench_adapters.py --arch wan2.1-i2v-14b --device cuda       # the real 14B architecture

A swap is ``AdapterSlots.activate``: whatever it takes to make an adapter the one in effect,
ending with its weights written into the transformer's hot-swap slot. Each path is timed from
a state where the adapter is only as close as that path says (untimed setup before every
call), wall clock with the device synchronised: what a job waiting on the swap sees.

    device   the adapter's weights are already in device memory (LOADED)
    host     in host memory (CACHED; page-locked on CUDA): one host-to-device copy, then the slot
    disk     only on disk (READY): safetensors read (page cache warm), pinned, copied, slotted

``wan2.1-i2v-14b`` is the Wan2.1-I2V-14B-480P transformer with random weights, built on the
device in bf16; the adapters target the linears framecast trains (attention q/k/v/o, both
attentions, and the FFN: 10 per block) with random weights. ``--compile`` compiles the
transformer (regional: one WanTransformerBlock, reused; or full) after the slot exists, runs
it, then swaps along every path and runs it again with dynamo's error_on_recompile set: the
``recompiles`` column counts the recompilations seen (the goal is 0). The ``diffusers``
rows time diffusers' own ``load_lora_adapter(hotswap=True)`` from device tensors, the API
this replaces, for reference. Goals on an H100, 14B, rank 16: device <= 20 ms, host <= 150 ms.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, device_name, print_table, synchronize  # noqa: E402

from framecast.engine.adapters.formats import BLOCK_MODULES  # noqa: E402
from framecast.engine.adapters.slots import AdapterRecord, AdapterSlots, AdapterState, AdapterStore  # noqa: E402
from framecast.engine.toy import architectures  # noqa: E402
from framecast.engine.toy.architectures import preset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "adapters.jsonl"
COLUMNS = ["arch", "rank", "path", "median_ms", "p20_ms", "p80_ms", "goal_ms", "adapter_MB", "host_MB", "file_MB",
           "slot_MB", "recompiles"]  # fmt: skip
GOALS_MS = {("wan2.1-i2v-14b", 16, "device"): 20.0, ("wan2.1-i2v-14b", 16, "host"): 150.0}
TRAINED_MODULES = [name for name in BLOCK_MODULES if "add_" not in name]  # what framecast trains

def build_transformer(arch: str, device: torch.device, dtype: torch.dtype, layers: int | None = None):
    """The transformer of the model preset ``arch`` with random weights, built on ``device`` in
    ``dtype`` (the 14B's: 28 GB in bf16), frozen; ``layers`` overrides the block count (a smoke
    run of the 14B's widths on a small machine)."""
    spec = preset(arch) if layers is None else preset(arch, layers=layers)
    return architectures.build_transformer(spec, device, dtype).eval().requires_grad_(False)


def example_inputs(transformer, device: torch.device, dtype: torch.dtype) -> tuple:
    """A small forward: one latent frame of 8x8 (16 tokens), 16 text tokens, 257 image tokens."""
    config = transformer.config
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device, dtype)

    latents = randn(1, config.in_channels, 1, 8, 8)
    text = randn(1, 16, config.text_dim)
    image = randn(1, 257, config.image_dim)
    return latents, torch.tensor([500], device=device), text, image


def random_adapter(slots: AdapterSlots, rank: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for module, (in_features, out_features) in slots.shapes.items():
        if module.split(".", 2)[2] not in TRAINED_MODULES:
            continue
        weights[f"transformer.{module}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator) * 0.01
        weights[f"transformer.{module}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * 0.01
    return weights


def arch_label(args) -> str:
    return args.arch if args.layers is None else f"{args.arch}-{args.layers}layers"


def timed(fn, setup, iters: int, device: torch.device) -> dict[str, float]:
    """Wall-clock ms of ``fn`` after an untimed ``setup`` each time, device synchronised around it."""
    times = []
    for _ in range(iters):
        setup()
        synchronize(device)
        started = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - started) * 1e3)
    cuts = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
    return {"median_ms": statistics.median(times), "p20_ms": cuts[1], "p80_ms": cuts[7]}


def swap_paths(slots: AdapterSlots, store: AdapterStore, a: str, b: str, c: str) -> dict:
    """path -> (timed swap, untimed setup). The setup leaves b in the slot, so every timed call
    writes it; a and b stay in device memory, c is taken down to the tier the path starts from."""

    def b_in_slot_and_c(to: AdapterState):
        def setup():
            slots.activate(b, store)
            slots.unload(c, store, to)

        return setup

    return {
        "device": (partial(slots.activate, a, store), partial(slots.activate, b, store)),
        "host": (partial(slots.activate, c, store), b_in_slot_and_c(AdapterState.CACHED)),
        "disk": (partial(slots.activate, c, store), b_in_slot_and_c(AdapterState.READY)),
    }


def compile_transformer(transformer, mode: str) -> None:
    if mode == "regional":
        transformer.compile_repeated_blocks()
    elif mode == "full":
        transformer.compile()


def run(args) -> list[dict]:
    import torch._dynamo

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    started = time.perf_counter()
    transformer = build_transformer(args.arch, device, dtype, args.layers)
    print(f"{args.arch} on {device_name(device)} ({args.dtype}) built in {time.perf_counter() - started:.0f} s", flush=True)
    inputs = example_inputs(transformer, device, dtype)

    def forward():
        with torch.no_grad():
            return transformer(*inputs[:3], encoder_hidden_states_image=inputs[3], return_dict=False)[0]

    workdir = tempfile.TemporaryDirectory(prefix="bench-adapters-")
    store = AdapterStore(Path(workdir.name) / "adapters")
    slots = AdapterSlots(transformer, capacity=8, host_bytes=64 << 30, max_rank=max(args.ranks), device=device)
    slots.prepare()
    names = {}
    for rank in args.ranks:
        names[rank] = [f"r{rank}-{i}" for i in range(3)]
        for index, name in enumerate(names[rank]):
            record = AdapterRecord(name=name, base_model=args.arch, rank=rank, alpha=float(rank), target_modules=[],
                                   training={}, source_media_id="", final_loss=0.0)  # fmt: skip
            store.save(random_adapter(slots, rank, seed=1000 * rank + index), record)
    print(f"wrote {sum(len(v) for v in names.values())} adapters in {time.perf_counter() - started:.0f} s", flush=True)

    if args.compile != "none":
        compile_transformer(transformer, args.compile)
        slots.activate(names[args.ranks[0]][0], store)
        compiling = time.perf_counter()
        forward()
        synchronize(device)
        print(f"compiled ({args.compile}) in {time.perf_counter() - compiling:.0f} s", flush=True)

    rows = []
    for rank in args.ranks:
        a, b, c = names[rank]
        for name in (a, b):
            slots.load(name, store)  # a and b in device memory; c starts on disk
        paths = swap_paths(slots, store, a, b, c)
        slots.load(c, store, AdapterState.CACHED)
        memory = {"adapter_MB": slots.status(a).device_bytes / 2**20, "host_MB": slots.status(c).host_bytes / 2**20,
                  "file_MB": store.record(a).size_bytes / 2**20, "slot_MB": slots.memory()["slot_bytes"] / 2**20}  # fmt: skip
        for path, (swap, setup) in paths.items():
            stats = timed(swap, setup, args.iters, device)
            rows.append({
                "bench": "adapters", "arch": arch_label(args), "rank": rank, "path": path, **stats, **memory,
                "slot_rank": slots.max_rank, "dtype": args.dtype, "compile": args.compile,
                "goal_ms": GOALS_MS.get((arch_label(args), rank, path)), "iters": args.iters,
                "page_cache": "warm" if path == "disk" else None,
            })  # fmt: skip
            print(f"rank {rank:>3} {path:<6} median {stats['median_ms']:.2f} ms", flush=True)

    if args.compile != "none":
        # Every path once more, each followed by a forward: a recompilation would raise.
        recompiles = 0
        with torch._dynamo.config.patch(error_on_recompile=True):
            for rank in args.ranks:
                a, b, c = names[rank]
                for name in (a, b, c):
                    if name == c:
                        slots.unload(c, store)  # from disk
                    slots.activate(name, store)
                    try:
                        forward()
                    except torch._dynamo.exc.RecompileError as error:
                        recompiles += 1
                        print(f"recompiled: {str(error).splitlines()[0]}")
        for row in rows:
            row["recompiles"] = recompiles
        print(f"recompiles after swaps: {recompiles}")

    if args.diffusers_reference:
        try:
            rows += diffusers_hotswap_rows(transformer, slots, store, names, args, device)
        except Exception as error:  # noqa: BLE001 - the reference must not lose the rows above
            print(f"diffusers hotswap reference skipped: {type(error).__name__}: {str(error).splitlines()[0]}")
    workdir.cleanup()
    return rows


def diffusers_hotswap_rows(transformer, slots, store, names, args, device) -> list[dict]:
    """diffusers' load_lora_adapter(hotswap=True) from device tensors into a padded adapter."""
    transformer.enable_lora_hotswap(target_rank=max(args.ranks), check_compiled="ignore")
    rows = []
    loaded = False
    for rank in args.ranks:
        a, b, _ = names[rank]
        weights = {}
        for name in (a, b):
            state_dict, record = store.load(name)
            weights[name] = ({k: v.to(device) for k, v in state_dict.items()}, record.lora_config())
        if not loaded:
            transformer.load_lora_adapter(weights[a][0], adapter_name="reference", prefix="transformer", metadata=weights[a][1])
            loaded = True
        stats = timed(alternating_hotswap(transformer, [weights[b], weights[a]]), lambda: None, args.iters, device)
        rows.append({"bench": "adapters", "arch": arch_label(args), "rank": rank, "path": "diffusers", **stats,
                     "dtype": args.dtype, "compile": args.compile, "iters": args.iters})  # fmt: skip
        print(f"rank {rank:>3} diffusers hotswap median {stats['median_ms']:.2f} ms", flush=True)
    return rows


def alternating_hotswap(transformer, weights: list[tuple[dict, dict]]):
    """A swap that hot-swaps the next of ``weights`` (state dict, metadata) into "reference" each call."""
    turn = itertools.count()

    def swap():
        state_dict, metadata = weights[next(turn) % len(weights)]
        transformer.load_lora_adapter(state_dict, adapter_name="reference", prefix="transformer", hotswap=True,
                                      metadata=metadata)  # fmt: skip

    return swap


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["tiny", "wan2.1-i2v-14b"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float32"],
                        help="base model dtype (default: bfloat16 on cuda, float32 on cpu)")  # fmt: skip
    parser.add_argument("--ranks", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--layers", type=int, default=None,
                        help="override the 14B's 40 blocks (a smoke run of its widths; rows say so)")  # fmt: skip
    parser.add_argument("--compile", choices=["none", "regional", "full"], default="regional",
                        help="compile the transformer and count recompilations after swaps (default: %(default)s)")  # fmt: skip
    parser.add_argument("--no-diffusers-reference", dest="diffusers_reference", action="store_false",
                        help="skip timing diffusers' load_lora_adapter(hotswap=True)")  # fmt: skip
    parser.add_argument("--results", default=str(RESULTS), help="JSON-lines file to append to ('' to write nothing)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible")
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    rows = run(args)
    print_table(rows, COLUMNS)
    for row in rows:
        if row.get("goal_ms") is not None:
            verdict = "meets" if row["median_ms"] <= row["goal_ms"] else "MISSES"
            print(f"goal: rank {row['rank']} {row['path']} {row['median_ms']:.1f} ms {verdict} <= {row['goal_ms']:g} ms")
    if args.results:
        count = append_rows(args.results, rows, device=args.device)
        print(f"appended {count} rows to {args.results}")


if __name__ == "__main__":
    main()
