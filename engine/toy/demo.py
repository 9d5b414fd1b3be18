"""``framecast demo``: the whole method end to end on the built-in small model, on a clip that
is not shaped for it.

Uses the shipped toy model (Wan2.1 I2V's classes, shrunk and trained on the toy world, so the
edit visibly propagates; ``--model`` picks another), starts a server in this process on a
free port, and renders a toy-world scene the model never saw (textured sprites moving over a
textured background) as a user's clip would come: 128x128 pixels at 24 fps with a sound track,
not the model's 64x64 at 16 fps; with the edit target's mask and its edited first frame. Then it
drives the server through a real ``FramecastClient``: upload, train, propagate with compositing,
download. The output has the source's size, frame count, timestamps and sound. Writes the
inputs, the output video and a ``strip.png`` contact sheet to OUT.

The toy lab's showcase: it drives the server and the client as a user would, so it imports both
(the client's ``framecast demo`` imports this module when the command runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from framecast.client.cli.args import CliError, output_path
from framecast.client.client import FramecastClient
from framecast.client.display import format_adapter, format_metrics
from framecast.client.jobs import collect_propagation, run_train
from framecast.client.progress import JobProgress, follow_job
from framecast.client.strip import write_strip
from framecast.common import media
from framecast.engine.errors import exit_code
from framecast.engine.quality.metrics import psnr

ADAPTER = "demo"


def _check(args) -> None:
    if args.frames < 5:
        raise CliError(f"--frames must be at least 5 but is {args.frames}")
    for name in ("width", "height"):
        if getattr(args, name) < 32:
            raise CliError(f"--{name} must be at least 32 pixels but is {getattr(args, name)}")
    if not 1 <= args.fps <= 120:
        raise CliError(f"--fps must be between 1 and 120 but is {args.fps:g}")
    output_path(args.out, "--out", directory=True)


def write_clip(path: Path, frames: np.ndarray, fps: float, sound: bool = True) -> None:
    """A clip as a camera writes one: H.264 at ``fps`` (lossless, so the demo's own frames are what
    the server reads) with a tone as its AAC sound track."""
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264rgb", rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        video.options = {"qp": "0", "preset": "ultrafast"}
        audio = None
        if sound:
            audio = container.add_stream("aac", rate=48000)
            audio.layout = "stereo"
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            seconds = len(frames) / fps
            samples = np.arange(int(48000 * seconds)) / 48000
            tone = (0.15 * np.sin(2 * np.pi * 330 * samples) * np.minimum(1, 4 * samples)).astype(np.float32)
            for start in range(0, len(tone) - 1024 + 1, 1024):
                chunk = av.AudioFrame.from_ndarray(np.stack([tone[start : start + 1024]] * 2), format="fltp", layout="stereo")
                chunk.sample_rate, chunk.pts = 48000, start
                for packet in audio.encode(chunk):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)


def _model_dir(args, out: Path) -> Path:
    if args.model is not None:
        model = Path(args.model)
        if not (model / "model_index.json").is_file():
            raise CliError(f"--model: not a diffusers model directory (no model_index.json): {args.model}")
        return model
    from framecast.engine.model import builtin_model_dir

    model = builtin_model_dir()
    if (model / "model_index.json").is_file():
        return model
    # A checkout without the shipped weights: the random tiny model runs the same path (noise out).
    model = out / "model"
    if not (model / "model_index.json").is_file():
        import transformers

        from framecast.engine.toy.architectures import make_tiny_model

        transformers.utils.logging.disable_progress_bar()
        print(f"no built-in toy model found; building the random tiny model into {model}", file=sys.stderr)
        make_tiny_model(model)
    return model


@exit_code
def run_demo(args) -> int:
    """Run the demo; on a client-only install, say which extra it needs (as ``serve`` does)."""
    from framecast.server.cli import require_server

    require_server("demo")  # before anything is written
    _check(args)
    from framecast.engine.toy.world import SceneConfig, make_scene

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = _model_dir(args, out)

    # The sample: a user's clip (another size and frame rate than the model's, with sound), the
    # edit target's mask, the edited first frame, and the ground-truth edit.
    scene = make_scene(
        args.seed,
        SceneConfig(frames=args.frames, height=args.height, width=args.width, sprites=2, pan=True, edit=args.edit),
    )
    paths = {
        "source": out / "source.mp4",
        "mask": out / "mask.mp4",
        "edited_first_frame": out / "edited_first_frame.png",
        "ground_truth": out / "ground_truth.mp4",
        "output": out / "output.mp4",
        "strip": out / "strip.png",
    }
    write_clip(paths["source"], scene.source, args.fps)
    write_clip(paths["mask"], media.mask_to_frames(scene.edit_mask), args.fps, sound=False)
    media.atomic_write(paths["edited_first_frame"], media.encode_png(scene.edited_first_frame))
    write_clip(paths["ground_truth"], scene.edited, args.fps, sound=False)
    print(f"scene: {scene.prompt}  ->  {scene.edited_prompt}", file=sys.stderr)
    print(f"source: {args.width}x{args.height} at {args.fps:g} fps, {args.frames} frames, with sound", file=sys.stderr)

    from framecast.server.app import start_server
    from framecast.server.config import ServerConfig

    config = ServerConfig.build(
        model_dir=str(model), data_dir=str(out / "data"), host="127.0.0.1", port=0, device=args.device, dtype=args.dtype
    )
    server = start_server(config)
    try:
        address = f"127.0.0.1:{server.port}"
        with FramecastClient(address) as client:
            client.wait_ready(timeout=600)
            info = client.server_info(timeout=30)
            print(f"server on {address}: {info.model} on {info.device} ({info.dtype})", file=sys.stderr)
            source = client.upload(paths["source"], timeout=60)
            mask = client.upload(paths["mask"], timeout=60)
            edited = client.upload(paths["edited_first_frame"], timeout=60)

            if any(a.name == ADAPTER for a in client.list_adapters(timeout=30)):
                client.delete_adapter(ADAPTER, timeout=30)  # from an earlier run into the same OUT
            settings = json.loads(info.model_settings_json or "{}")  # the model's own training and sampling
            first_frame = args.first_frame_reference and settings.get("first_frame_reference", False)
            events = client.train(
                ADAPTER,
                source,
                mask,
                scene.prompt,
                steps=args.steps,
                rank=args.rank,
                learning_rate=args.lr,
                seed=args.seed,
                colour_variants=args.colour_variants,
                loss_weights=None if args.w_keep is None else (1.0, args.w_keep),
                references=[(0, edited)] if first_frame else [],
            )
            adapter = follow_job(client, run_train, events, JobProgress("train"))

            events = client.propagate(
                ADAPTER, source, mask, edited, scene.edited_prompt,
                steps=args.sample_steps, seed=args.seed, composite=True, guidance_scale=args.guidance,
                adapter_strength=args.adapter_strength,
            )  # fmt: skip
            progress = JobProgress("propagate")
            _, result = follow_job(client, collect_propagation, events, progress)
            paths["output"] = paths["output"].with_suffix(Path(result.video.filename).suffix or ".mp4")
            client.download_to(result.video.id, paths["output"], timeout=60)
    finally:
        server.stop(grace=5)

    from framecast.engine.footage.read import decode_all

    output = decode_all(paths["output"], "output").frames  # the output file as a player shows it
    video = result.video
    print(f"worked on {result.working_width}x{result.working_height} at {result.working_fps:g} fps "
          f"({result.working_frames} frames); output {video.width}x{video.height}, {video.num_frames} frames at "
          f"{video.fps:g} fps, {video.duration_s:.2f} s, {'with' if video.has_audio else 'without'} sound",
          file=sys.stderr)  # fmt: skip
    write_strip(
        paths["strip"],
        [("source", scene.source), ("mask", scene.edit_mask), ("output", output), ("ground truth", scene.edited)],
    )
    print(format_adapter(adapter))
    print()
    for name, path in paths.items():
        print(f"{name:<19} {path}")
    print(format_metrics(result))
    if output.shape == scene.edited.shape:
        print(f"edit PSNR vs truth  {psnr(output, scene.edited, scene.edit_mask):.2f} dB (inside the mask)")
    return 0
