"""``framecast demo``: the whole method end to end on the built-in small model.

Uses the shipped toy model (Wan2.1 I2V's classes, shrunk and trained on the toy world, so the
edit visibly propagates; ``--model`` picks another), starts a server in this process on a
free port, renders a toyworld scene the model never saw (textured sprites moving over a
textured background, the edit target's mask and its edited first frame), then drives the
server through a real ``FramecastClient``: upload, train, propagate with compositing,
download. Writes the inputs, the output video and a ``strip.png`` contact sheet to OUT.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from framecast.client.cli.args import CliError, output_path
from framecast.client.client import FramecastClient
from framecast.client.display import format_adapter, format_metrics
from framecast.client.jobs import collect_propagation, run_train
from framecast.client.progress import JobProgress, follow_job
from framecast.client.strip import write_strip
from framecast.engine import media
from framecast.engine.metrics import psnr
from framecast.engine.windows import is_frame_count

ADAPTER = "demo"


def _check(args) -> None:
    if not is_frame_count(args.frames):
        raise CliError(f"--frames must be 4N+1 (5, 9, 17, 33, ...) but is {args.frames}")
    if args.size < 16 or args.size % 16:
        raise CliError(f"--size must be a multiple of 16 but is {args.size}")
    if args.steps < 1 or args.sample_steps < 1:
        raise CliError("--steps and --sample-steps must be >= 1")
    output_path(args.out, "--out", directory=True)


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


def run_demo(args) -> int:
    _check(args)
    from framecast.engine.toy.world import SceneConfig, make_scene

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = _model_dir(args, out)

    # The sample: source video, edit mask, edited first frame, and the ground-truth edit.
    scene = make_scene(
        args.seed,
        SceneConfig(frames=args.frames, height=args.size, width=args.size, sprites=2, pan=True, edit=args.edit),
    )
    paths = {
        "source": out / "source.mp4",
        "mask": out / "mask.mp4",
        "edited_first_frame": out / "edited_first_frame.png",
        "ground_truth": out / "ground_truth.mp4",
        "output": out / "output.mp4",
        "strip": out / "strip.png",
    }
    media.atomic_write(paths["source"], media.encode_video(scene.source, 16, lossless=True))
    media.atomic_write(paths["mask"], media.encode_video(media.mask_to_frames(scene.edit_mask), 16, lossless=True))
    media.atomic_write(paths["edited_first_frame"], media.encode_png(scene.edited_first_frame))
    media.atomic_write(paths["ground_truth"], media.encode_video(scene.edited, 16, lossless=True))
    print(f"scene: {scene.prompt}  ->  {scene.edited_prompt}", file=sys.stderr)

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
                loss_weights=(1.0, args.w_keep),
                references=[(0, edited)] if args.first_frame_reference else [],
            )
            adapter = follow_job(client, run_train, events, JobProgress("train"))

            events = client.propagate(
                ADAPTER, source, mask, edited, scene.edited_prompt,
                steps=args.sample_steps, seed=args.seed, composite=True, guidance_scale=args.guidance,
                adapter_strength=args.adapter_strength,
            )  # fmt: skip
            progress = JobProgress("propagate", frames_total=source.num_frames)
            frames, result = follow_job(client, collect_propagation, events, progress)
            client.download_to(result.video.id, paths["output"], timeout=60)
    finally:
        server.stop(grace=5)

    if len(frames) == scene.source.shape[0]:
        output = np.stack([frames[i] for i in sorted(frames)])
    else:  # frames missing from the stream: fall back to the stored video
        output = media.decode_media(paths["output"].read_bytes(), "output").frames
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
