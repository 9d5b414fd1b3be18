"""``framecast train`` and ``framecast propagate``: upload the inputs, run a job on the server
with progress, and show (propagate: download) what it made; and what they share with ``edit``
and ``plan``: their options, the requests those options make, starting a job and saving a result."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from framecast.client.cli.args import (
    CliError,
    add_shot_options,
    client_options,
    colour_variants_int,
    connect,
    share_float,
    existing_file,
    existing_input,
    non_negative_float,
    non_negative_int,
    output_path,
    positive_float,
    positive_int,
    reference_spec,
    seed_int,
    shot_kwargs,
    whole_number,
)
from framecast.client.cli.inputs import Uploads
from framecast.client.cli.masks import MaskInput, add_mask_options, tracked_mask_path
from framecast.client.client import FramecastClient
from framecast.client.display import format_adapter, format_metrics
from framecast.client.errors import FramecastError
from framecast.client.jobs import accepted, collect_propagation, run_train
from framecast.client.progress import JobProgress, follow_job, jobs_command
from framecast.client.requests import INTERPOLATIONS, MASK_MODES, MAX_QUALITY, OUTPUT_ENCODINGS, STEP_CACHES
from framecast.common.requests import PropagateJob, TrainSettings, field_default
from framecast.v1 import framecast_pb2 as pb

TRAIN = TrainSettings()  # the server's training defaults, which the options show and send
# What an mp4 encoding's --output may be named, and the container each name asks the server for:
# .mp4 (audio an mp4 cannot carry as it is, Opus or Vorbis, transcoded to AAC) or .mkv (audio as it is).
CONTAINER_SUFFIXES = {".mp4": "mp4", ".mkv": "matroska"}
quality_int = whole_number(0, MAX_QUALITY, "quality_int")


def _propagate(name: str):
    """The server's default of a propagation setting."""
    return field_default(PropagateJob, name)


# ---- requests from options ------------------------------------------------------------------


def local_references(args) -> list[tuple[int | float, Path]]:
    """The ``--reference`` images, checked before anything is uploaded."""
    return [(where, existing_file(path, "--reference")) for where, path in args.reference]


def train_kwargs(args, references: list, edited_first_frame_id: str | None = None, preview_prompt: str | None = None) -> dict:
    """``FramecastClient.train`` keyword arguments of train's (or edit's) options; an edit's
    automatic steps preview its edited first frame with its prompt."""
    return dict(
        steps=args.train_steps, rank=args.rank, learning_rate=args.lr, mask_mode=args.mask_mode,
        dilate_px=args.dilate_px, references=references, seed=args.seed, loss_weights=args.loss_weights,
        appearance_steps=args.appearance_steps, gradient_checkpointing=not args.no_gradient_checkpointing,
        colour_variants=args.colour_variants, steps_in_all=args.steps_in_all or None, preset=args.preset,
        window_frames=args.window_frames, overlap_frames=args.overlap_frames, auto_steps=args.auto_steps or None,
        edited_first_frame_id=edited_first_frame_id if args.auto_steps else None,
        preview_prompt=preview_prompt if args.auto_steps else None,
        fidelity_threshold=getattr(args, "fidelity_threshold", None) if args.auto_steps else None, **shot_kwargs(args),
    )  # fmt: skip


def propagate_kwargs(args) -> dict:
    """``FramecastClient.propagate`` keyword arguments of propagate's (or edit's) options."""
    return dict(
        negative_prompt=args.negative_prompt, steps=args.steps, guidance_scale=args.guidance, seed=args.seed,
        composite=args.composite, feather_px=args.feather_px, mask_mode=args.mask_mode, dilate_px=args.dilate_px,
        output_encoding=args.output_encoding, adapter_strength=args.adapter_strength, quality=args.quality,
        interpolation=args.interpolation, guidance_steps=args.guidance_steps, step_cache=args.step_cache,
        cache_threshold=args.cache_threshold, cache_interval=args.cache_interval, preset=args.preset,
        window_frames=args.window_frames, overlap_frames=args.overlap_frames, container=output_container(args),
        fidelity_threshold=args.fidelity_threshold, accelerator="" if args.no_accelerator else args.accelerator,
        accelerator_strength=args.accelerator_strength, shift=args.shift, **shot_kwargs(args),
    )  # fmt: skip


def output_container(args) -> str | None:
    """The container the ``--output`` name asks for ("mp4", "matroska"); None without a name (the
    server's choice, whose suffix the file then takes) or for png-sequence (a zip)."""
    name = getattr(args, "output", None)
    if name is None or args.output_encoding == "png-sequence":
        return None
    return CONTAINER_SUFFIXES.get(Path(name).suffix.lower())


# ---- running jobs ---------------------------------------------------------------------------


def start_job(label: str, events) -> str:
    """Read a job stream's ``accepted`` event, say so on stderr, and return the job id. Raises
    FramecastError for a refused request."""
    job_id = accepted(events).job_id
    print(f"{label} job {job_id} accepted", file=sys.stderr)
    return job_id


def detached(client: FramecastClient, started: list[tuple[str, str]], streams) -> int:
    """``--detach``: the jobs run on; close their streams, print their ids (stdout, one a line) and
    how to follow them (stderr)."""
    for events in streams:
        events.close()
    for _, job_id in started:
        print(job_id)
    hints = "; ".join(f"{jobs_command(client, 'watch', job_id)} follows the {label}" for label, job_id in started)
    print(f"detached: {hints}", file=sys.stderr)
    return 0


def output_file(args) -> Path:
    """``--output``, or ``output.mp4`` (``output.zip`` for png-sequence), checked before any upload:
    a name says what the file is (.mp4 or .mkv for the mp4 encodings, .zip for png-sequence)."""
    png = args.output_encoding == "png-sequence"
    output = output_path(args.output or ("output.zip" if png else "output.mp4"), "--output")
    suffix = output.suffix.lower()
    if png and suffix != ".zip":
        raise CliError(f"--output {output}: png-sequence writes a zip of PNG frames; name the file .zip")
    if not png and suffix not in CONTAINER_SUFFIXES:
        raise CliError(f"--output {output}: the video is written as .mp4 (its audio AAC where the source's is a codec "
                       "mp4 cannot carry as it is) or .mkv (its audio as the source has it); name the file with one of "
                       "them, or use --output-encoding png-sequence for a .zip of frames")  # fmt: skip
    return output


def save_result(client: FramecastClient, result, output: Path, timeout: float | None, named: bool = True) -> Path:
    """Download a finished propagation's stored result into ``output`` and return where it went.
    Unless the user ``named`` the file, its suffix is the result's (``.mkv`` for a source whose audio
    an mp4 cannot carry). Raises CliError as ``save_media``."""
    return save_media(client, result.video, output, timeout, named=named)


def save_media(client: FramecastClient, ref, output: Path, timeout: float | None, named: bool = True,
               what: str = "result", flag: str = "--output") -> Path:  # fmt: skip
    """Download what a finished job stored (``ref``: its MediaRef) into ``output``, the file of
    ``flag``, and return where it went; a file the user ``named`` keeps its suffix, said when it is
    not the stored one's. When the download fails, ``what`` is still on the server: raises CliError
    naming its id and how to fetch it."""
    media_id, suffix = ref.id, Path(ref.filename).suffix
    if suffix and output.suffix != suffix:
        if named:
            print(f"note: the {what} is a {suffix} file (written to {output} as asked)", file=sys.stderr)
        else:
            output = output.with_suffix(suffix)
    try:
        client.download_to(media_id, output, timeout=timeout)
    except FramecastError as error:
        problem = f"could not download the {what} into {output}: {error}"
    except OSError as error:
        problem = f"could not write {flag} {output}: {error.strerror or error}"
    else:
        return output
    raise CliError(
        f"{problem}. The job finished; its {what} is stored on the server as {media_id}: fetch it with "
        f"framecast media --server {client.address} download {media_id} --output FILE"
    )


def save_tracked_mask(client: FramecastClient, tracked: pb.TrackedMask | None, path: Path | None,
                      timeout: float | None) -> None:  # fmt: skip
    """``--tracked-mask``: download the tracked mask a job reported into ``path`` and say where it
    went (stdout), or (stderr) that the job reported none. Raises CliError as ``save_media``."""
    if path is None:
        return
    if tracked is None:
        print(f"note: the job reported no tracked mask; --tracked-mask {path} was not written", file=sys.stderr)
        return
    saved = save_media(client, tracked.mask, path, timeout, what="tracked mask", flag="--tracked-mask")
    print(f"tracked mask        {saved}")


def print_result(client: FramecastClient, result, output: Path | None, frames_dir: Path | None, args,
                 started: float | None = None, uploads: Uploads | None = None) -> None:  # fmt: skip
    """Save a propagation's result into ``output`` (when given; named by the user when ``args.output``
    is) and print where it went, and its measures; with ``started`` (the command's
    ``time.monotonic()`` at its start), how long the command took, ``uploads``' time of it."""
    try:
        if output is not None:
            output = save_result(client, result, output, args.timeout, named=args.output is not None)
    except CliError:
        print(format_metrics(result))
        raise
    if output is not None:
        print(f"output              {output}")
    if frames_dir is not None:
        print(f"frames              {frames_dir}/frame_*.png")
    took = None if started is None else time.monotonic() - started
    print(format_metrics(result, took, uploads.seconds if uploads is not None else 0.0))


# ---- commands -------------------------------------------------------------------------------


def cmd_train(args) -> int:
    source = existing_input(args.source, "--source")
    mask = MaskInput.local(args)
    references = local_references(args)
    tracked_mask = tracked_mask_path(args)
    with connect(args) as client, Uploads(client, args.timeout) as upload:
        source_ref, mask = upload(source, "--source"), mask.uploaded(upload)
        reference_ids = [(where, upload(path, "--reference").id) for where, path in references]
        events = client.train(args.adapter, source_ref.id, prompt=args.prompt, **mask.kwargs(),
                              **train_kwargs(args, reference_ids))  # fmt: skip
        job_id = start_job("train", events)
        if args.detach:
            return detached(client, [("training", job_id)], [events])
        progress = JobProgress("train")
        progress.job_id = job_id
        adapter = follow_job(client, run_train, events, progress)
        print(format_adapter(adapter))
        save_tracked_mask(client, progress.tracked, tracked_mask, args.timeout)
    return 0


def cmd_propagate(args) -> int:
    started = time.monotonic()
    source = existing_input(args.source, "--source")
    mask = MaskInput.local(args)
    edited = existing_file(args.edited_first_frame, "--edited-first-frame")
    output = output_file(args)
    frames_dir = output_path(args.frames_dir, "--frames-dir", directory=True) if args.frames_dir else None
    tracked_mask = tracked_mask_path(args)
    with connect(args) as client, Uploads(client, args.timeout) as upload:
        source_ref, mask = upload(source, "--source"), mask.uploaded(upload)
        edited_ref = upload(edited, "--edited-first-frame")
        events = client.propagate(args.adapter, source_ref.id, edited_first_frame_id=edited_ref.id, prompt=args.prompt,
                                  **mask.kwargs(), **propagate_kwargs(args))  # fmt: skip
        job_id = start_job("propagate", events)
        if args.detach:
            return detached(client, [("propagation", job_id)], [events])
        progress = JobProgress("propagate", frames_dir=frames_dir)
        progress.job_id = job_id
        _, result = follow_job(client, collect_propagation, events, progress)
        print_result(client, result, output, frames_dir, args, started, upload)
        save_tracked_mask(client, progress.tracked, tracked_mask, args.timeout)
    return 0


# ---- options --------------------------------------------------------------------------------


def add_common_options(parser: argparse.ArgumentParser, detach: bool = True) -> None:
    """--seed, the mask options, the shot options and (``detach``) --detach."""
    parser.add_argument("--seed", type=seed_int, default=0, help="0 to 2**64-1; the same seed gives the same result (default: %(default)s)")
    parser.add_argument(
        "--mask-mode", choices=list(MASK_MODES), default=None, help=f"how the mask is loosened (server default: {_propagate('mask_mode').value})"
    )
    parser.add_argument(
        "--dilate-px", type=non_negative_int, default=None, metavar="PX",
        help="pixels to grow the mask by, with --mask-mode dilate",
    )  # fmt: skip
    parser.add_argument("--preset", default=None, metavar="NAME",
                        help="a preset of the server's model (framecast info lists them; every model has quality and "
                        "fast): its settings where the options leave them unset, before the model's own. quality: "
                        "the model's settings; fast: the speed levers that held its quality on the toy world "
                        "(docs/benchmarks.md#time-to-an-edited-clip); turbo (a propagation with --accelerator): the "
                        "accelerator's own steps, guidance and shift")  # fmt: skip
    parser.add_argument("--window-frames", type=non_negative_int, default=None, metavar="N",
                        help="cut the clip into windows of N frames (4N+1; default: the server's)")
    parser.add_argument("--overlap-frames", type=positive_int, default=None, metavar="N",
                        help="frames consecutive windows share (default: the server's, 4)")
    add_shot_options(parser)
    if detach:
        parser.add_argument("--detach", action="store_true",
                            help="print the job id(s) and return once the server accepted the job(s); "
                            "framecast jobs watch ID follows one again")  # fmt: skip


def add_train_options(parser: argparse.ArgumentParser, steps_flag: str) -> None:
    """The training's own options; its motion steps are ``steps_flag`` (train's --steps, edit's --train-steps)."""
    parser.add_argument(steps_flag, dest="train_steps", type=positive_int, default=None,
                        help="motion-phase steps of the adapter, per window for a clip trained in windows (default: the "
                        f"model's settings, else the method's {TRAIN.steps})")  # fmt: skip
    parser.add_argument(
        "--appearance-steps",
        type=positive_int,
        default=None,
        help=f"appearance-phase steps with --reference (server default: {TRAIN.appearance_steps})",
    )
    parser.add_argument("--auto-steps", action="store_true",
                        help="train the motion phase in chunks, preview the edit after each (a few sampling steps on "
                        "the first frames) and stop once it holds; the steps are then the most (framecast edit "
                        "previews its edited first frame; train needs --reference 0:IMAGE)")  # fmt: skip
    parser.add_argument("--steps-in-all", action="store_true",
                        help="a clip trained in windows: --steps in all, each step the next window (fewer tokens a "
                        "step), instead of --steps for each window")  # fmt: skip
    parser.add_argument("--rank", type=positive_int, default=None,
                        help=f"LoRA rank (default: the model's settings, else {TRAIN.rank})")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help=f"learning rate (default: the model's settings, else the method's {TRAIN.learning_rate:g})")
    parser.add_argument(
        "--colour-variants",
        type=colour_variants_int,
        default=None,
        metavar="N",
        help="also train on N copies of the source with the edit region recoloured, so the adapter "
        "takes the region's colours from the edited first frame (0-16; default: the model's settings, else 0)",
    )
    parser.add_argument(
        "--loss-weights",
        type=non_negative_float,
        nargs=2,
        default=None,
        metavar=("EDIT", "KEEP"),
        help=f"loss weight inside / outside the edit region (default: {TRAIN.w_edit:g} {TRAIN.w_keep:g})",
    )
    parser.add_argument(
        "--reference",
        type=reference_spec,
        action="append",
        default=[],
        metavar="IDX:IMAGE",
        help="an edited frame showing source frame IDX, or source time SECONDS with SECONDSs:IMAGE (0.5s:e.png); "
        "any size of the source's aspect (repeatable)",
    )
    parser.add_argument("--no-gradient-checkpointing", action="store_true", help="faster, more memory")


def add_propagate_options(parser: argparse.ArgumentParser, composite_by_default: bool, files: bool = True) -> None:
    """The propagation's own options. Its output is composited over the source with --composite,
    or (``composite_by_default``, edit) unless --no-composite. ``files``: --output and --frames-dir
    (a plan writes none)."""
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--steps", type=positive_int, default=None, help=f"denoising steps (default: {_propagate('steps')})")
    parser.add_argument("--guidance", type=non_negative_float, default=None,
                        help="classifier-free guidance; <= 1 disables it (default: the model's settings, else "
                        f"{_propagate('guidance_scale')})")  # fmt: skip
    parser.add_argument("--guidance-steps", type=non_negative_int, default=None, metavar="N",
                        help="guidance on the first N steps only, the rest at half the work (default: every step)")
    parser.add_argument("--step-cache", choices=list(STEP_CACHES), default=None,
                        help="reuse the transformer's work between steps (default: none)")
    parser.add_argument("--cache-threshold", type=non_negative_float, default=None, metavar="T",
                        help="first-block: (0, 1], higher skips more (default: the server's, 0.05)")
    parser.add_argument("--cache-interval", type=positive_int, default=None, metavar="N",
                        help="taylorseer: a full step every N (default: the server's, 3)")
    parser.add_argument("--adapter-strength", type=non_negative_float, default=None, metavar="S",
                        help="scale the adapter's effect, 0 (the base model) to 2 (default: the model's settings, else "
                        f"{_propagate('adapter_strength')})")  # fmt: skip
    accelerator = parser.add_mutually_exclusive_group()
    accelerator.add_argument("--accelerator", default=None, metavar="NAME",
                             help="a stored adapter held under the clip's (a step-distill LoRA, imported with framecast "
                             "import --sampling ...); with --preset turbo, its steps, guidance and shift (default: the "
                             "server's, framecast info)")  # fmt: skip
    accelerator.add_argument("--no-accelerator", action="store_true", help="none, whatever the server's default")
    parser.add_argument("--accelerator-strength", type=non_negative_float, default=None, metavar="S",
                        help="scale the accelerator's effect, 0 to 2 (default: its own, else 1)")
    parser.add_argument("--shift", type=positive_float, default=None, metavar="S",
                        help="the sampler's timestep shift: a flow-matching Euler sampler over evenly spaced timesteps, "
                        "as step-distilled models sample (default: the model's scheduler; --preset turbo: the "
                        "accelerator's)")  # fmt: skip
    parser.add_argument("--fidelity-threshold", type=share_float, default=None, metavar="SHARE",
                        help="the share of the pixels the edit changes a frame must carry for the edit to count as "
                        "held (0 to 1; default: the model's settings, else 0.5)")  # fmt: skip
    if composite_by_default:
        parser.add_argument("--no-composite", dest="composite", action="store_false",
                            help="the whole generated frame, scaled up, instead of the generated region over the "
                            "untouched source")  # fmt: skip
    else:
        parser.add_argument("--composite", action="store_true", help="keep source pixels outside the (feathered) mask")
    parser.add_argument("--feather-px", type=non_negative_int, default=None, metavar="PX",
                        help=f"composite feather width (default: the model's settings, else {_propagate('feather_px')})")
    parser.add_argument("--output-encoding", choices=list(OUTPUT_ENCODINGS), default="mp4",
                        help="mp4: H.264 at --quality; mp4-lossless: decodes to exactly the pixels written; png-sequence: "
                        "a zip of PNG frames (default: %(default)s)")  # fmt: skip
    parser.add_argument("--quality", type=quality_int, default=None, metavar="CRF",
                        help="H.264 CRF of the output, 0 (best) to 51 (default: the server's, 18)")  # fmt: skip
    parser.add_argument("--interpolation", choices=list(INTERPOLATIONS), default=None,
                        help="how source frames between two working frames get the edit (default: the server's, "
                        "framecast info shows it)")  # fmt: skip
    if not files:
        return
    parser.add_argument(
        "-o", "--output",
        default=None,
        metavar="FILE",
        help="output video, .mp4 or .mkv (.zip for png-sequence); a source's Opus or Vorbis audio goes into an .mp4 "
        "as AAC, into an .mkv as it is (default: output.mp4, or .mkv when the source's audio needs it; output.zip "
        "for png-sequence)",
    )  # fmt: skip
    parser.add_argument("--frames-dir", default=None, metavar="DIR",
                        help="also write every frame the server streams (the working grid's) as a PNG here")  # fmt: skip


def add_parsers(commands) -> None:
    """Register ``train`` and ``propagate``."""
    client = client_options()

    train = commands.add_parser("train", parents=[client], help="train an adapter on a source video")
    train.add_argument(
        "--adapter", required=True, metavar="NAME", help="name of the new adapter: 1-64 of [A-Za-z0-9_-]"
    )
    train.add_argument("--source", required=True, metavar="VIDEO",
                       help="source video (any size and frame rate), or a folder of PNG/JPEG frames")  # fmt: skip
    train.add_argument("--prompt", required=True, help="caption of the source video")
    add_mask_options(train)
    add_train_options(train, "--steps")
    add_common_options(train)
    train.set_defaults(run=cmd_train)

    prop = commands.add_parser("propagate", parents=[client], help="propagate an edited first frame through the video")
    prop.add_argument(
        "--adapter", default="", metavar="NAME", help="adapter trained on this source (default: none, the base model)"
    )
    prop.add_argument("--source", required=True, metavar="VIDEO", help="source video, or a folder of PNG/JPEG frames")
    prop.add_argument("--edited-first-frame", required=True, metavar="IMAGE")
    prop.add_argument("--prompt", required=True, help="description of the edited video")
    add_mask_options(prop)
    add_propagate_options(prop, composite_by_default=False)
    add_common_options(prop)
    prop.set_defaults(run=cmd_propagate)
