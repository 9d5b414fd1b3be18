"""Real footage through the real server: a phone-like clip in, the edited clip out at its size.

    python3 bench/bench_footage.py                      # a 2-minute 1080p 30 fps clip with AAC, and a 5 s one
    python3 bench/bench_footage.py --seconds 5 --size 1920x1080
    python3 bench/bench_footage.py --model /models/Wan2.1-I2V-14B-480P-Diffusers --steps 4

Starts ``framecast serve`` in a process of its own (the built-in model unless ``--model``), writes
an H.264 clip with AAC audio (a moving square over a moving gradient, generated frame by frame:
never held whole), uploads it, plans it (Plan), propagates an edit with a still mask, downloads
the result and checks it has the source's frame count. Measures the server's peak resident
memory (VmHWM: the question is whether a 2-minute 1080p clip is ever held as full-resolution
frames; 3600 of them would be 22 GiB), the time of each phase the server reports (decode,
denoise, encode) and in all. Prints a table and appends rows to bench/results/footage.jsonl.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, append_rows, print_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "footage.jsonl"


def write_clip(path: Path, seconds: float, width: int, height: int, fps: int = 30) -> int:
    """A synthetic H.264 + AAC clip written frame by frame; returns its frame count."""
    import av

    count = int(round(seconds * fps))
    ys, xs = np.mgrid[0:height, 0:width]
    base = ((xs * 255 // max(width - 1, 1)) ^ (ys * 255 // max(height - 1, 1))).astype(np.uint8)
    side = height // 5
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "23"}
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        per = 1024
        samples = 0
        for index in range(count):
            frame = np.stack([np.roll(base, 4 * index, axis=1), np.roll(base, 2 * index, axis=0), base], axis=-1)
            x = int((width - side) * (0.5 + 0.4 * np.sin(index / fps)))
            y = int((height - side) * (0.5 + 0.4 * np.cos(index / fps)))
            frame[y : y + side, x : x + side] = (230, 60, 40)
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            while samples < (index + 1) * 48000 // fps:
                tone = 0.2 * np.sin(2 * np.pi * 440 * (samples + np.arange(per)) / 48000)
                chunk = av.AudioFrame.from_ndarray(np.stack([tone, tone]).astype(np.float32), format="fltp", layout="stereo")
                chunk.sample_rate, chunk.pts = 48000, samples
                for packet in audio.encode(chunk):
                    container.mux(packet)
                samples += per
        for stream in (video, audio):
            for packet in stream.encode():
                container.mux(packet)
    return count


def still_mask(width: int, height: int) -> bytes:
    """The region the square travels through, as one image for every frame."""
    from framecast.common.media import encode_png

    mask = np.zeros((height, width, 3), np.uint8)
    mask[height // 12 : height - height // 12, width // 12 : width - width // 12] = 255
    return encode_png(mask)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve(model: str | None, data: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "framecast.server", "--data", str(data), "--port", str(port), "--log-level", "warning"]
    if model:
        command += ["--model", model]
    else:
        from framecast.engine.model import builtin_model_dir

        command += ["--model", str(builtin_model_dir())]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.Popen(command, env=env, cwd=tempfile.gettempdir())


def run_clip(args, server: subprocess.Popen, folder: Path, seconds: float) -> dict:
    import grpc

    from framecast.client import FramecastClient
    from framecast.engine.footage.read import probe
    from framecast.v1 import framecast_pb2 as pb
    from framecast.v1 import framecast_pb2_grpc as pb_grpc

    width, height = (int(v) for v in args.size.split("x"))
    path = folder / f"clip-{seconds:g}s.mp4"
    started = time.perf_counter()
    frames = write_clip(path, seconds, width, height)
    written = time.perf_counter() - started
    row = {"bench": "footage", "source": f"{width}x{height}@30 {seconds:g}s h264+aac", "source_frames": frames,
           "source_mb": path.stat().st_size / 2**20, "steps": args.steps, "write_s": written}  # fmt: skip
    with FramecastClient(f"127.0.0.1:{args.port}", timeout=3600) as client:
        assert client.wait_ready(timeout=300), "the server did not become ready"
        row["rss_ready_mb"] = peak_rss_mb(server.pid)
        t = time.perf_counter()
        source = client.upload(path)
        mask_path = folder / "mask.png"
        mask_path.write_bytes(still_mask(width, height))
        mask = client.upload(mask_path)
        row["upload_s"] = time.perf_counter() - t
        request = pb.PropagateRequest(source_id=source.id, mask_id=mask.id, edited_first_frame_id=mask.id, prompt="a red square",
                                      steps=args.steps, guidance_scale=1.0, composite=True)  # fmt: skip
        with grpc.insecure_channel(f"127.0.0.1:{args.port}") as channel:
            plan = pb_grpc.FramecastStub(channel).Plan(pb.PlanRequest(propagate=request), timeout=600)
        assert plan.ok, [p.message for p in plan.problems]
        row.update(working=f"{plan.width}x{plan.height}@{plan.fps:g}", working_frames=plan.num_frames,
                   windows=len(plan.windows))
        t = time.perf_counter()
        phases: dict[str, float] = {}
        last = {}
        events = client.propagate("", source.id, mask.id, mask.id, request.prompt, steps=args.steps, guidance_scale=1.0,
                                  composite=True)  # fmt: skip
        for event in events:
            kind = event.WhichOneof("event")
            if kind == "progress":
                phase = event.progress.phase
                last.setdefault(phase, time.perf_counter())
                phases[phase] = time.perf_counter() - last[phase]
            elif kind == "result":
                result = event.result
            elif kind == "error":
                raise RuntimeError(event.error.message)
        row["propagate_s"] = time.perf_counter() - t
        row.update({f"{phase}_s": seconds for phase, seconds in phases.items()})
        output = folder / "out.mp4"
        client.download_to(result.video.id, output)
        info = probe(output)
        assert info.num_frames == frames and (info.width, info.height) == (width, height), info
        row.update(output_frames=info.num_frames, output_audio=info.audio is not None,
                   output_mb=output.stat().st_size / 2**20, rss_peak_mb=peak_rss_mb(server.pid))
        client.delete_media(result.video.id)
        client.delete_media(source.id)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="diffusers directory (default: the built-in model)")
    parser.add_argument("--size", default="1920x1080", help="source size WxH (default: %(default)s)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 120.0], help="clip lengths (default: 5 120)")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps (default: %(default)s)")
    parser.add_argument("--port", type=int, default=50097)
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="framecast-footage-bench-") as folder:
        folder = Path(folder)
        for seconds in args.seconds:  # a fresh server for each clip: its peak memory is that clip's
            server = serve(args.model, folder / f"data-{seconds:g}", args.port)
            try:
                rows.append(run_clip(args, server, folder, seconds))
            finally:
                server.terminate()
                server.wait(60)
            print_table(rows[-1:], COLUMNS, header=len(rows) == 1)
    print()
    print_table(rows, COLUMNS)
    count = append_rows(args.results, rows, device="cpu")
    print(f"appended {count} rows to {args.results}")
    return 0


COLUMNS = ["source", "source_frames", "source_mb", "working", "working_frames", "windows", "upload_s", "decode_s",
           "denoise_s", "encode_s", "propagate_s", "output_frames", "output_audio", "rss_ready_mb", "rss_peak_mb"]

if __name__ == "__main__":
    sys.exit(main())
