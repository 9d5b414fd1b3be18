"""The one-command edit on the built-in model, with no tuning flags, on five ordinary shots.

    python3 bench/bench_edit_shots.py                    # rows to bench/results/edit_shots.jsonl
    python3 bench/bench_edit_shots.py --only 640x360 --results /tmp/shots.jsonl

Each shot is a toy-world scene written as a camera or a phone writes a clip
(``framecast.engine.toy.footage``): 1080p at 30 fps with AAC, a portrait clip stored sideways with
rotation metadata, a variable-frame-rate webm with Opus, 640x360 with 37 frames, and 4K. Through a
real ``framecast serve`` on the built-in model, ``framecast edit SHOT --box ... --edited-first-frame
frame0.png --prompt ...`` runs as a user would type it (the box: the edited object's box on frame
0), and the row keeps what it said (the verdict, the edit PSNR, the background figures) beside the
truth the scene knows: PSNR inside the true edit mask against the true edited video, both at the
shot's own size, from the delivered file.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, print_table  # noqa: E402

from framecast.common.media import encode_png  # noqa: E402
from framecast.engine.footage.read import decode_all  # noqa: E402
from framecast.engine.model import builtin_model_dir  # noqa: E402
from framecast.engine.quality.metrics import psnr  # noqa: E402
from framecast.engine.toy.footage import make_footage  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "edit_shots.jsonl"


def vfr_times(count: int, seed: int = 0) -> list[float]:
    """Frame times of a variable-frame-rate clip: 20 to 40 fps, jittered."""
    rng = np.random.default_rng(seed)
    return list(np.cumsum(rng.uniform(1 / 40, 1 / 20, count)) - 1 / 40)


# name -> (seed, width, height displayed, frame times, writer options)
SHOTS = {
    "1080p30 AAC": (3, 1920, 1080, [i / 30 for i in range(60)], {}),
    "portrait rotated": (4, 720, 1280, [i / 30 for i in range(45)], {"rotation": -90}),
    "VFR webm Opus": (5, 640, 480, vfr_times(40), {"codec": "libvpx-vp9", "audio": "libopus", "time_base": Fraction(1, 1000)}),
    "640x360 37 frames": (6, 640, 360, [i / 24 for i in range(37)], {"audio": None}),
    "4K": (7, 3840, 2160, [i / 30 for i in range(24)], {}),
}


def box_of(mask: np.ndarray, grow: float = 0.1) -> str:
    """The box of frame 0's mask, grown by ``grow`` of its size, as --box x,y,w,h."""
    rows, cols = np.nonzero(mask)
    x0, x1, y0, y1 = cols.min(), cols.max() + 1, rows.min(), rows.max() + 1
    dx, dy = round((x1 - x0) * grow / 2), round((y1 - y0) * grow / 2)
    return f"{x0 - dx},{y0 - dy},{x1 - x0 + 2 * dx},{y1 - y0 + 2 * dy}"


def said(pattern: str, text: str) -> str:
    found = re.search(pattern, text, re.MULTILINE)
    return found.group(1) if found else ""


def edit(address: str, name: str, workdir: Path) -> dict:
    from framecast.client.cli import main

    seed, width, height, times, options = SHOTS[name]
    suffix = ".webm" if options.get("codec") == "libvpx-vp9" else ".mp4"
    footage = make_footage(workdir / f"shot{suffix}", seed, width, height, times, **options)
    frame0 = workdir / "frame0.png"
    frame0.write_bytes(encode_png(footage.edited_first_frame))
    output = workdir / "edited.mp4"
    command = ["edit", str(footage.path), "--server", address, "--box", box_of(footage.edit_mask[0]),
               "--edited-first-frame", str(frame0), "--prompt", footage.prompt, "-o", str(output)]  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(command)
    seconds = time.perf_counter() - started
    text = out.getvalue()
    delivered = decode_all(output, "output").frames if code == 0 else None
    masked = psnr(delivered, footage.edited, footage.edit_mask) if delivered is not None and \
        delivered.shape == footage.edited.shape else float("nan")  # fmt: skip
    return {
        "shot": name, "size": f"{width}x{height}", "frames": len(times), "exit": code, "command_s": seconds,
        "verdict": said(r"^edit\s+(\S+)", text), "edit": said(r"^edit\s+(.*)$", text),
        "background_psnr": float(said(r"^background PSNR\s+([\d.]+)", text) or "nan"),
        "region": said(r"^region\s+(\d+%)", text), "masked_psnr": masked,
        "warnings": sorted(set(re.findall(r"^warning: (\w+):", err.getvalue(), re.MULTILINE))),
    }  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=(), help="shots to run (default: all five)")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    from framecast.server.app import start_server
    from framecast.server.config import ServerConfig

    rows = []
    with tempfile.TemporaryDirectory(prefix="framecast-shots-") as scratch:
        config = ServerConfig.build(model_dir=str(builtin_model_dir()), data_dir=f"{scratch}/data", host="127.0.0.1",
                                    port=0, max_source_pixels=3840 * 2160)  # fmt: skip
        server = start_server(config)
        try:
            assert server.wait_ready(timeout=300), server.load_error
            for name in SHOTS:
                if args.only and not any(part in name for part in args.only):
                    continue
                workdir = Path(scratch) / name.replace(" ", "-")
                workdir.mkdir()
                row = edit(f"127.0.0.1:{server.port}", name, workdir)
                print_table([row], ["shot", "size", "frames", "exit", "verdict", "masked_psnr", "background_psnr",
                                    "region", "command_s", "warnings"], header=not rows)  # fmt: skip
                rows.append(row)
                append_rows(args.results, [{**row, "bench": "edit_shots"}], device="cpu")
        finally:
            server.stop(grace=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
