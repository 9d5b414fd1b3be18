"""The ``framecast`` command line: run a server, train adapters, propagate edits, run the demo.

Client subcommands talk to a server over gRPC through ``FramecastClient``; ``serve``,
``make-tiny-model``, ``train-toy-model`` and ``demo`` import the server and engine (torch) lazily, inside the
subcommand, so the client commands work on a client-only install.

Exit codes: 0 ok, 2 a refused call (``error: <CODE>: <message>``), a bad local input or a
passed ``--timeout`` (a running job is cancelled first: ``error: DEADLINE_EXCEEDED: timed out
after N s; cancelled job <id>``), 130 interrupted (a running job is cancelled first), 141
when whoever reads the output closed the pipe (``framecast adapters list | head -1``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from framecast.client.client import MASK_MODES, OUTPUT_ENCODINGS, FramecastClient
from framecast.client.display import (
    JobProgress,
    follow_job,
    format_adapter,
    format_adapter_table,
    format_change,
    format_bytes,
    format_media_table,
    format_metrics,
    upload_file,
)
from framecast.client.errors import FramecastError
from framecast.client.jobs import collect_propagation, run_train
from framecast.engine.errors import FramecastError as EngineError
from framecast.engine.toy import cli as toy_cli

# The option value types the toy lab's command line shares (it cannot import the client).
from framecast.engine.toy.cli import (
    UINT32_MAX,
    UINT64_MAX,
    cmd_make_tiny_model,  # noqa: F401 (framecast.client.cli.cmd_make_tiny_model, as before)
    non_negative_int,
    positive_float,
    positive_int,
    whole_number,
)
from framecast.server import cli as server_cli
from framecast.server.cli import cmd_serve  # noqa: F401 (framecast.client.cli.cmd_serve, as before)

DEFAULT_SERVER = os.environ.get("FRAMECAST_SERVER", "127.0.0.1:50051")


class CliError(Exception):
    """A local problem with the command line's inputs; printed as ``error: <message>``, exit 2."""


def existing_file(path: str, flag: str) -> Path:
    """``path`` as a Path; raises CliError naming ``flag`` when it is not an existing file."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise CliError(f"{flag}: no such file: {path}")
    if not resolved.is_file():
        raise CliError(f"{flag}: not a file: {path}")
    return resolved


def output_path(path: str | os.PathLike, flag: str, directory: bool = False) -> Path:
    """``path`` as a Path a file (``directory=True``: a directory of files) can be written to,
    checked before anything is uploaded: not an existing directory (not an existing file), and
    under a directory that exists or can be created (missing ones are created when written) and
    is writable. Raises CliError naming ``flag``."""
    resolved = Path(path).expanduser()
    try:
        if directory and resolved.exists() and not resolved.is_dir():
            raise CliError(f"{flag}: not a directory: {path}")
        if not directory and resolved.is_dir():
            raise CliError(f"{flag}: is a directory: {path}")
        existing = resolved if directory else resolved.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise CliError(f"{flag}: {existing} is not a directory: {path}")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise CliError(f"{flag}: {existing} is not writable: {path}")
    except OSError as error:
        raise CliError(f"{flag}: {error.strerror or error}: {path}") from None
    return resolved


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


MAX_TIMEOUT_S = 1e9  # gRPC reads a deadline much further away (~7e9 s) as one already past
seed_int = whole_number(0, UINT64_MAX, "seed_int")  # the API's seeds are uint64
colour_variants_int = whole_number(0, 16, "colour_variants_int")  # TrainRequest.colour_variants: 0-16


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (loss weights, guidance): nan and inf are refused here."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of at least 0 but got {text!r}")
    return value


def timeout_seconds(text: str) -> float:
    """``--timeout``: seconds above 0. 0 or less would fail every call at once; a deadline further
    away than ``MAX_TIMEOUT_S`` overflows inside gRPC and fails at once too."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:.0f} but got {text!r}"
        )
    return value


def reference_spec(text: str) -> tuple[int, str]:
    """``IDX:path`` (``--reference``) -> (frame index, path)."""
    index, sep, path = text.partition(":")
    try:
        frame_index = int(index)
    except ValueError:
        frame_index = -1
    if not sep or not path or not 0 <= frame_index <= UINT32_MAX:
        raise argparse.ArgumentTypeError(f"expected FRAME_INDEX:IMAGE (e.g. 8:edited_8.png) but got {text!r}")
    return frame_index, path


# ---- subcommands ----------------------------------------------------------------------------


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


def cmd_adapters(args) -> int:
    with FramecastClient(args.server, timeout=args.timeout) as client:
        action = args.action or "list"
        if action == "show":
            print(format_adapter(client.get_adapter(args.name)))
        elif action == "delete":
            deleted = client.delete_adapter(args.name)
            print(f"deleted {args.name}" if deleted else f"{args.name} was not stored")
        elif action == "load":
            print(format_change(client.load_adapter(args.name, to="host" if args.host else "device")))
        elif action == "unload":
            print(format_change(client.unload_adapter(args.name, to="host" if args.keep_in_host else "disk")))
        elif action in ("pin", "unpin"):
            change = client.pin_adapter(args.name) if action == "pin" else client.unpin_adapter(args.name)
            print(format_change(change))
        else:
            print(format_adapter_table(client.list_adapters()))
    return 0


def resolve_media_ids(prefixes: list[str], stored: list[str]) -> list[str]:
    """Full ids for ids or unique id prefixes (``sha256:4335614be1e6`` as listings show them)."""
    resolved = []
    for prefix in prefixes:
        matches = [media_id for media_id in stored if media_id.startswith(prefix.removesuffix("..."))]
        if len(matches) != 1:
            problem = "matches no stored media" if not matches else f"matches {len(matches)} media; give more digits"
            raise CliError(f"ID {prefix!r} {problem}")
        resolved.append(matches[0])
    return resolved


def cmd_media(args) -> int:
    output = output_path(args.output, "--output") if args.action == "download" else None
    with FramecastClient(args.server, timeout=args.timeout) as client:
        listing = client.list_media()
        if output is not None:
            (media_id,) = resolve_media_ids([args.id], [ref.id for ref in listing.media])
            try:
                client.download_to(media_id, output)
            except OSError as error:  # the write; a refused call is a FramecastError
                raise CliError(f"could not write --output {output}: {error.strerror or error}") from None
            print(f"{output} ({output.stat().st_size} bytes, {media_id})")
        elif args.action == "delete":
            for media_id in resolve_media_ids(args.ids, [ref.id for ref in listing.media]):
                client.delete_media(media_id)
                print(f"deleted {media_id}")
        else:
            print(format_media_table(listing))
    return 0


def cmd_import(args) -> int:
    path = existing_file(args.file, "FILE")
    name = args.name or path.name.split(".")[0]
    with FramecastClient(args.server, timeout=args.timeout) as client:
        info = client.import_adapter(name, path)
    print(format_adapter(info))
    return 0


def cmd_export(args) -> int:
    suffix = ".safetensors" if args.format == "diffusers" else f".{args.format}.safetensors"
    output = output_path(args.output or f"{args.name}{suffix}", "--output")
    with FramecastClient(args.server, timeout=args.timeout) as client:
        try:
            data = client.export_adapter(args.name, output, format=args.format)
        except OSError as error:  # the write; a refused call is a FramecastError
            raise CliError(
                f"could not write --output {output}: {error.strerror or error}. The adapter is still on the server: "
                "export it again with another --output"
            ) from None
    print(f"{output} ({format_bytes(len(data))}, {args.format})")
    return 0


def _readiness(info) -> str:
    if info.ready:
        return "yes"
    return f"no (the model failed to load: {info.load_error})" if info.load_error else "no (loading)"


def cmd_info(args) -> int:
    with FramecastClient(args.server, timeout=args.timeout) as client:
        info = client.server_info()
    rows = [
        ("server", args.server), ("version", info.version), ("ready", _readiness(info)),
        ("model", info.model), ("model dir", info.model_dir), ("device", info.device), ("dtype", info.dtype),
        ("quantization", info.quantization), ("attention", info.attention_backend), ("offload", info.offload),
        ("memory budget", format_bytes(info.max_vram_bytes) if info.max_vram_bytes else "-"),
        ("optimizer", info.optimizer), ("window frames", info.window_frames),
        ("memory", format_bytes(info.memory_bytes)), ("max frames", info.max_frames),
        ("max pixels", info.max_pixels), ("max upload", format_bytes(info.max_upload_bytes)),
        ("queue", f"{info.queue_length} waiting (max {info.max_queue})"),
        ("adapters loaded", ", ".join(info.adapters_loaded) or "-"),
        ("adapters cached", ", ".join(info.adapters_cached) or "-"),
        ("adapters pinned", ", ".join(info.adapters_pinned) or "-"),
        ("adapter caches", (f"{info.adapter_device_slots} on the device, {format_bytes(info.adapter_host_cache_bytes)} "
                            f"in host memory; slot rank {info.adapter_slot_rank}")),
    ]  # fmt: skip
    print("\n".join(f"{key:<16} {value}" for key, value in rows))
    return 0


def cmd_demo(args) -> int:
    from framecast.client.demo import run_demo

    return run_demo(args)


# ---- parser ---------------------------------------------------------------------------------


def _client_options(defaults: bool = True) -> argparse.ArgumentParser:
    """--server and --timeout. ``defaults=False`` is for the actions under a command that has
    them already (``adapters show``, ``media delete``): the options may follow the action too,
    and an action's absent option must not overwrite one given before it."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--server",
        default=DEFAULT_SERVER if defaults else argparse.SUPPRESS,
        metavar="ADDR",
        help="host:port of the server (default: %(default)s, or $FRAMECAST_SERVER)"
        if defaults
        else "as before the action",
    )
    parent.add_argument(
        "--timeout",
        type=timeout_seconds,
        default=None if defaults else argparse.SUPPRESS,
        metavar="S",
        help="deadline of each call in seconds; a train or propagate job still running at its deadline is "
        "cancelled (default: none)"
        if defaults
        else "as before the action",
    )
    return parent


def _mask_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mask-mode", choices=list(MASK_MODES), default=None, help="how the mask is loosened (server default: bbox)"
    )
    parser.add_argument(
        "--dilate-px", type=non_negative_int, default=None, metavar="PX",
        help="pixels to grow the mask by, with --mask-mode dilate",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framecast", description="Propagate a first-frame edit through a video with mask-aware LoRA adapters."
    )
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="(default: info for serve, warning otherwise)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    client = _client_options()
    client_after = _client_options(defaults=False)

    server_cli.add_parser(commands)

    toy_cli.add_parsers(commands)

    train = commands.add_parser("train", parents=[client], help="train an adapter on a source video")
    train.add_argument(
        "--adapter", required=True, metavar="NAME", help="name of the new adapter: 1-64 of [A-Za-z0-9_-]"
    )
    train.add_argument(
        "--source", required=True, metavar="VIDEO", help="source video (4N+1 frames, sides multiple of 16)"
    )
    train.add_argument("--mask", required=True, metavar="MASK", help="mask video/image, white = edit region")
    train.add_argument("--prompt", required=True, help="caption of the source video")
    train.add_argument("--steps", type=positive_int, default=100, help="motion-phase steps, per window for a clip trained in windows (default: %(default)s)")
    train.add_argument(
        "--appearance-steps",
        type=positive_int,
        default=None,
        help="appearance-phase steps with --reference (server default: 100)",
    )
    train.add_argument("--rank", type=positive_int, default=16, help="LoRA rank (default: %(default)s)")
    train.add_argument("--lr", type=positive_float, default=1e-4, help="learning rate (default: %(default)s)")
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
        help="loss weight inside / outside the edit region (default: 1 1)",
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
    prop.add_argument("--steps", type=positive_int, default=30, help="denoising steps (default: %(default)s)")
    prop.add_argument(
        "--guidance", type=non_negative_float, default=5.0, help="classifier-free guidance; <= 1 disables it (default: %(default)s)"
    )
    prop.add_argument("--adapter-strength", type=non_negative_float, default=None, metavar="S",
                      help="scale the adapter's effect, 0 (the base model) to 2 (default: the server's, 1.0)")
    prop.add_argument("--seed", type=seed_int, default=0, help="0 to 2**64-1; the same seed gives the same result (default: %(default)s)")
    prop.add_argument("--composite", action="store_true", help="keep source pixels outside the (feathered) mask")
    prop.add_argument(
        "--feather-px", type=non_negative_int, default=3, metavar="PX", help="composite feather width (default: %(default)s)"
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

    adapters = commands.add_parser(
        "adapters", parents=[client], help="list, show, load, unload, pin or delete adapters"
    )
    actions = adapters.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", parents=[client_after], help="every adapter with its state (default)")
    actions.add_parser("show", parents=[client_after], help="one adapter's details").add_argument("name", metavar="NAME")
    actions.add_parser("delete", parents=[client_after], help="delete an adapter").add_argument("name", metavar="NAME")
    load = actions.add_parser(
        "load", parents=[client_after], help="load an adapter into device memory now (fast first swap)"
    )
    load.add_argument("name", metavar="NAME")
    load.add_argument("--host", action="store_true", help="into host memory only")
    unload = actions.add_parser("unload", parents=[client_after], help="take an adapter off the device")
    unload.add_argument("name", metavar="NAME")
    unload.add_argument("--keep-in-host", action="store_true", help="keep it in host memory (default: out of memory)")
    pin = actions.add_parser("pin", parents=[client_after], help="load an adapter and never evict it")
    pin.add_argument("name", metavar="NAME")
    unpin = actions.add_parser("unpin", parents=[client_after], help="let a pinned adapter be evicted again")
    unpin.add_argument("name", metavar="NAME")
    adapters.set_defaults(run=cmd_adapters)

    media_command = commands.add_parser(
        "media", parents=[client], help="list, download or delete stored uploads and results"
    )
    media_actions = media_command.add_subparsers(dest="action", metavar="ACTION")
    media_actions.add_parser(
        "list", parents=[client_after], help="stored media, newest first, and the bytes they take (default)"
    )
    media_delete = media_actions.add_parser("delete", parents=[client_after], help="delete stored media by id")
    media_delete.add_argument("ids", nargs="+", metavar="ID", help="media ids, or unique prefixes of them as list shows")
    media_download = media_actions.add_parser(
        "download", parents=[client_after], help="write stored media to a file (an existing one is replaced)"
    )
    media_download.add_argument("id", metavar="ID", help="a media id, or a unique prefix of one as list shows")
    media_download.add_argument("--output", required=True, metavar="FILE", help="the file to write")
    media_command.set_defaults(run=cmd_media)

    imports = commands.add_parser(
        "import", parents=[client], help="add an adapter from a LoRA .safetensors (diffusers, ComfyUI or musubi keys)"
    )
    imports.add_argument("file", metavar="FILE")
    imports.add_argument(
        "--name", default=None, metavar="NAME", help="name of the new adapter (default: the file name up to its first dot)"
    )
    imports.set_defaults(run=cmd_import)

    export = commands.add_parser("export", parents=[client], help="download an adapter as a safetensors file")
    export.add_argument("name", metavar="NAME")
    export.add_argument(
        "--output", default=None, metavar="FILE", help="(default: NAME.safetensors, NAME.comfyui.safetensors)"
    )
    export.add_argument(
        "--format", default="diffusers", choices=["diffusers", "comfyui"],
        help="diffusers keys, or original Wan keys under diffusion_model. for ComfyUI (default: %(default)s)",
    )  # fmt: skip
    export.set_defaults(run=cmd_export)

    info = commands.add_parser("info", parents=[client], help="the server's model, device and limits")
    info.set_defaults(run=cmd_info)

    demo = commands.add_parser("demo", help="run the whole method end to end on the built-in small model")
    demo.add_argument(
        "--out", default="demo-out", metavar="DIR", help="where everything is written (default: %(default)s)"
    )
    demo.add_argument(
        "--model", default=None, metavar="DIR", help="model directory (default: the built-in toy model)"
    )
    demo.add_argument("--steps", type=positive_int, default=200, help="training steps (default: %(default)s)")
    demo.add_argument("--sample-steps", type=positive_int, default=30, help="denoising steps (default: %(default)s)")
    demo.add_argument("--frames", type=int, default=17, help="video length, 4N+1 (default: %(default)s)")
    demo.add_argument(
        "--size", type=int, default=64, help="frame side in pixels, a multiple of 16 (default: %(default)s)"
    )
    demo.add_argument("--seed", type=seed_int, default=0, help="scene, training and sampling seed (default: %(default)s)")
    demo.add_argument(
        "--edit", choices=["recolor", "retexture", "reshape"], default="recolor", help="the edit to propagate"
    )
    demo.add_argument("--rank", type=positive_int, default=16)
    # The toy model is small and trains in a few hundred CPU steps: a larger rate than Wan's 1e-4.
    demo.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate (default: %(default)s)")
    demo.add_argument(
        "--colour-variants", type=colour_variants_int, default=7, metavar="N",
        help="recoloured copies of the source trained alongside it (0-16; default: %(default)s)",
    )  # fmt: skip
    demo.add_argument(
        "--w-keep", type=non_negative_float, default=0.25, metavar="W",
        help="training loss weight outside the edit region, inside it 1; the toy model does better below "
        "the paper's 1 (default: %(default)s)",
    )  # fmt: skip
    # Chosen for the toy model on held-out development scenes (bench/quality.py): CFG 2 and the
    # adapter at 0.6 strength beat Wan's CFG 5 at full strength by 0.43 dB inside the mask.
    demo.add_argument("--guidance", type=non_negative_float, default=2.0,
                      help="classifier-free guidance; <= 1 disables it (default: %(default)s)")
    demo.add_argument("--adapter-strength", type=non_negative_float, default=0.6, metavar="S",
                      help="the adapter's strength when propagating, 0 to 2 (default: %(default)s)")
    # On 10 development scenes at the demo's settings: +0.64 dB inside the mask, better in 9 of 10.
    demo.add_argument("--no-first-frame-reference", dest="first_frame_reference", action="store_false",
                      help="train the motion phase only, without the edited first frame as an appearance reference")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--dtype", default="auto")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``framecast`` command line; returns the exit code."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
    except BrokenPipeError:
        # ``framecast adapters list | head -1``: the reader closed the pipe. Stop quietly with the
        # status of a process SIGPIPE ended; stdout goes to devnull so that the flush at exit of
        # what is still buffered does not fail again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    level = args.log_level or ("info" if args.command == "serve" else "warning")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except FramecastError as error:
        print(f"error: {error.code.name}: {error.message}", file=sys.stderr)
    except (CliError, EngineError) as error:
        print(f"error: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    # ``python -m framecast.client.cli``: run the module under its package name, as the ``framecast``
    # script does, so that CliError raised by modules that import it (demo) is the one main catches.
    from framecast.client.cli import main as package_main

    sys.exit(package_main())
