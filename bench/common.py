"""Helpers shared by framecast's benchmarks: timing, memory, environment, tables, result rows.

Benchmarks are scripts, not tests: they print a table and append JSON lines to a results
file, each carrying the device, torch version, git sha and a timestamp.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
_L2_FLUSH_BYTES = 256 * 2**20  # larger than any current GPU's L2 (H100: 50 MB)
_flush_buffers: dict[str, torch.Tensor] = {}


def device_name(device: str | torch.device = "cuda") -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def git_sha() -> str:
    """The checkout's commit, with "-dirty" when tracked files differ from it; "unknown" outside git.
    ``BENCH_GIT_SHA`` overrides it, for a copy of the tree whose .git is not the tree's own."""
    if os.environ.get("BENCH_GIT_SHA"):
        return os.environ["BENCH_GIT_SHA"]
    try:
        command = ["git", "describe", "--always", "--dirty", "--abbrev=12"]
        out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def synchronize(device: str | torch.device = "cuda") -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _flush_l2(device: torch.device) -> None:
    buffer = _flush_buffers.get(str(device))
    if buffer is None:
        buffer = _flush_buffers[str(device)] = torch.empty(_L2_FLUSH_BYTES, dtype=torch.int8, device=device)
    buffer.zero_()


def measure(
    fn: Callable[[], object],
    warmup: int = 10,
    iters: int = 50,
    device: str | torch.device = "cuda",
    flush_l2: bool = True,
) -> dict[str, float]:
    """Time ``fn`` after ``warmup`` calls (compilation excluded): {"median", "p20", "p80"} in ms.

    On CUDA each call is bracketed by events, read after synchronising; with ``flush_l2``
    a 256 MiB write before each call evicts the inputs from L2, so bandwidth figures are
    DRAM figures, and gives the host time to queue the call's launches. On CPU each call
    is timed with perf_counter.
    """
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            if flush_l2:
                _flush_l2(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1e3)
    cuts = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
    return {"median": statistics.median(times), "p20": cuts[1], "p80": cuts[7]}


def copy_bandwidth_gbs(device: str | torch.device = "cuda", nbytes: int = 1 << 30, iters: int = 20) -> float:
    """Achieved GB/s of a device-to-device copy of ``nbytes`` (counted as read + write)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = measure(lambda: dst.copy_(src), warmup=3, iters=iters, device=device, flush_l2=False)["median"]
    return 2 * nbytes / (ms * 1e-3) / 1e9


@contextmanager
def peak_memory(device: str | torch.device = "cuda"):
    """Track the peak memory allocated inside the block beyond what was allocated before it.

    Yields a dict whose "mb" is filled on exit (None on CPU, where torch keeps no such count).
    """
    device = torch.device(device)
    result: dict[str, float | None] = {"mb": None}
    if device.type != "cuda":
        yield result
        return
    synchronize(device)
    baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        yield result
    finally:
        synchronize(device)
        result["mb"] = (torch.cuda.max_memory_allocated(device) - baseline) / 2**20


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_table(rows: Sequence[dict], columns: Sequence[str], header: bool = True) -> None:
    """Print ``rows`` as an aligned text table of ``columns`` (missing values show as "-");
    ``header=False`` prints the rows alone (progress lines while a benchmark runs)."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    if header:
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
        print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.rjust(w) if v[:1].isdigit() or v[:1] == "-" else v.ljust(w) for v, w in zip(r, widths)))


def append_rows(path: str | Path, rows: Iterable[dict], device: str | torch.device = "cuda") -> int:
    """Append ``rows`` as JSON lines, each with device, torch, git_sha and timestamp added."""
    context = {
        "device": device_name(device),
        "torch": torch.__version__,
        "git_sha": git_sha(),
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps({**context, **row}) + "\n")
            count += 1
    return count
