"""``framecast train`` and ``framecast propagate``: upload the inputs, run a job on the server
with a progress bar, and show (propagate: download) what it made."""

from __future__ import annotations

import argparse
from pathlib import Path

from framecast.client.cli.args import (
    CliError,
    client_options,
    colour_variants_int,
    existing_file,
    non_negative_float,
    non_negative_int,
    output_path,
    positive_float,
    positive_int,
    reference_spec,
    seed_int,
)
from framecast.client.client import MASK_MODES, OUTPUT_ENCODINGS, FramecastClient
from framecast.client.display import JobProgress, follow_job, format_adapter, format_metrics, upload_file
from framecast.client.errors import FramecastError
from framecast.client.jobs import collect_propagation, run_train
from framecast.engine.config import field_default
from framecast.engine.requests import PropagateJob, TrainSettings

TRAIN = TrainSettings()  # the server's training defaults, which the options show and send


def _propagate(name: str):
    """The server's default of a propagation setting."""
    return field_default(PropagateJob, name)


def save_result(client: FramecastClient, media_id: str, output: Path, timeout: float | None) -> None:
    """Download a finished job's stored result into ``output``. When that fails the result is
    still on the server: raises CliError naming its id and how to fetch it."""
    try:
        client.download_to(media_id, output, timeout=timeout)
    except FramecastError as error:
        problem = f"could not download the result into {output}: {error}"
    except OSError as error:
        problem = f"could not write --output {output}: {error.strerror or error}"
    else:
        return
    raise CliError(
        f"{problem}. The job finished; its result is stored on the server as {media_id}: fetch it with "
        f"framecast media --server {client.address} download {media_id} --output FILE"
    )


def cmd_train(args) -> int:
    source = existing_file(args.source, "--source")
    mask = existing_file(args.mask, "--mask")
    references = [(index, existing_file(path, "--reference")) for index, path in args.reference]
    with FramecastClient(args.server, timeout=args.timeout) as client:
        source_ref = upload_file(client, source, args.timeout)
        mask_ref = upload_file(client, mask, args.timeout)
        reference_ids = [(index, upload_file(client, path, args.timeout).id) for index, path in references]
        events = client.train(
            args.adapter, source_ref.id, mask_ref.id, args.prompt,
            steps=args.steps, rank=args.rank, learning_rate=args.lr, mask_mode=args.mask_mode,
            dilate_px=args.dilate_px, references=reference_ids, seed=args.seed,
            loss_weights=args.loss_weights, appearance_steps=args.appearance_steps,
            gradient_checkpointing=not args.no_gradient_checkpointing, colour_variants=args.colour_variants,
        )  # fmt: skip
        adapter = follow_job(client, run_train, events, JobProgress("train"))
    print(format_adapter(adapter))
    return 0


def cmd_propagate(args) -> int:
    source = existing_file(args.source, "--source")
    mask = existing_file(args.mask, "--mask")
    edited = existing_file(args.edited_first_frame, "--edited-first-frame")
    output = output_path(args.output or ("output.zip" if args.output_encoding == "png-sequence" else "output.mp4"),
                         "--output")  # fmt: skip
    frames_dir = output_path(args.frames_dir, "--frames-dir", directory=True) if args.frames_dir else None
    with FramecastClient(args.server, timeout=args.timeout) as client:
        source_ref = upload_file(client, source, args.timeout)
        mask_ref = upload_file(client, mask, args.timeout)
        edited_ref = upload_file(client, edited, args.timeout)
        events = client.propagate(
            args.adapter, source_ref.id, mask_ref.id, edited_ref.id, args.prompt,
            negative_prompt=args.negative_prompt, steps=args.steps, guidance_scale=args.guidance,
            seed=args.seed, composite=args.composite, feather_px=args.feather_px,
            mask_mode=args.mask_mode, dilate_px=args.dilate_px, output_encoding=args.output_encoding,
            adapter_strength=args.adapter_strength,
        )  # fmt: skip
        progress = JobProgress("propagate", frames_total=source_ref.num_frames, frames_dir=frames_dir)
        _, result = follow_job(client, collect_propagation, events, progress)
        try:
            save_result(client, result.video.id, output, args.timeout)
        except CliError:
            print(format_metrics(result))
            raise
    print(f"output              {output}")
    if frames_dir is not None:
        print(f"frames              {frames_dir}/frame_*.png")
    print(format_metrics(result))
    return 0


def _mask_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mask-mode", choices=list(MASK_MODES), default=None, help=f"how the mask is loosened (server default: {_propagate('mask_mode').value})"
    )
    parser.add_argument(
        "--dilate-px", type=non_negative_int, default=None, metavar="PX",
        help="pixels to grow the mask by, with --mask-mode dilate",
    )  # fmt: skip


def add_parsers(commands) -> None:
    """Register ``train`` and ``propagate``."""
    client = client_options()

    train = commands.add_parser("train", parents=[client], help="train an adapter on a source video")
    train.add_argument(
        "--adapter", required=True, metavar="NAME", help="name of the new adapter: 1-64 of [A-Za-z0-9_-]"
    )
    train.add_argument(
        "--source", required=True, metavar="VIDEO", help="source video (4N+1 frames, sides multiple of 16)"
    )
    train.add_argument("--mask", required=True, metavar="MASK", help="mask video/image, white = edit region")
    train.add_argument("--prompt", required=True, help="caption of the source video")
    train.add_argument("--steps", type=positive_int, default=TRAIN.steps, help="motion-phase steps, per window for a clip trained in windows (default: %(default)s)")
    train.add_argument(
        "--appearance-steps",
        type=positive_int,
        default=None,
        help=f"appearance-phase steps with --reference (server default: {TRAIN.appearance_steps})",
    )
    train.add_argument("--rank", type=positive_int, default=TRAIN.rank, help="LoRA rank (default: %(default)s)")
    train.add_argument("--lr", type=positive_float, default=TRAIN.learning_rate, help="learning rate (default: %(default)s)")
    train.add_argument("--seed", type=seed_int, default=0, help="0 to 2**64-1; the same seed gives the same result (default: %(default)s)")
    train.add_argument(
        "--colour-variants",
        type=colour_variants_int,
        default=0,
        metavar="N",
        help="also train on N copies of the source with the edit region recoloured, so the adapter "
        "takes the region's colours from the edited first frame (0-16; default: %(default)s)",
    )
    train.add_argument(
        "--loss-weights",
        type=non_negative_float,
        nargs=2,
        default=None,
        metavar=("EDIT", "KEEP"),
        help=f"loss weight inside / outside the edit region (default: {TRAIN.w_edit:g} {TRAIN.w_keep:g})",
    )
    train.add_argument(
        "--reference",
        type=reference_spec,
        action="append",
        default=[],
        metavar="IDX:IMAGE",
        help="an edited frame at source frame IDX (repeatable)",
    )
    train.add_argument("--no-gradient-checkpointing", action="store_true", help="faster, more memory")
    _mask_options(train)
    train.set_defaults(run=cmd_train)

    prop = commands.add_parser("propagate", parents=[client], help="propagate an edited first frame through the video")
    prop.add_argument(
        "--adapter", default="", metavar="NAME", help="adapter trained on this source (default: none, the base model)"
    )
    prop.add_argument("--source", required=True, metavar="VIDEO")
    prop.add_argument("--mask", required=True, metavar="MASK")
    prop.add_argument("--edited-first-frame", required=True, metavar="IMAGE")
    prop.add_argument("--prompt", required=True, help="description of the edited video")
    prop.add_argument("--negative-prompt", default="")
    prop.add_argument("--steps", type=positive_int, default=_propagate("steps"), help="denoising steps (default: %(default)s)")
    prop.add_argument(
        "--guidance", type=non_negative_float, default=_propagate("guidance_scale"), help="classifier-free guidance; <= 1 disables it (default: %(default)s)"
    )
    prop.add_argument("--adapter-strength", type=non_negative_float, default=None, metavar="S",
                      help=f"scale the adapter's effect, 0 (the base model) to 2 (default: the server's, {_propagate('adapter_strength')})")
    prop.add_argument("--seed", type=seed_int, default=0, help="0 to 2**64-1; the same seed gives the same result (default: %(default)s)")
    prop.add_argument("--composite", action="store_true", help="keep source pixels outside the (feathered) mask")
    prop.add_argument(
        "--feather-px", type=non_negative_int, default=_propagate("feather_px"), metavar="PX", help="composite feather width (default: %(default)s)"
    )
    prop.add_argument("--output-encoding", choices=list(OUTPUT_ENCODINGS), default="mp4")
    prop.add_argument(
        "--output",
        default=None,
        metavar="FILE",
        help="output video (default: output.mp4, or output.zip for png-sequence)",
    )
    prop.add_argument("--frames-dir", default=None, metavar="DIR", help="also write every streamed frame as a PNG here")
    _mask_options(prop)
    prop.set_defaults(run=cmd_propagate)
