"""``framecast serve`` and ``python -m framecast.server``: the server's command line.

Importing this module is light (argparse and the engine's error classes): the client's
``framecast`` command line imports it to list ``serve`` among its commands. The server itself
(torch, diffusers) is imported when the command runs, so on a client-only install ``serve``
says which extra to install instead of failing with a traceback.

Exit codes: 0 stopped, 2 a setting the server cannot start with (``error: --port: ...``) or a
missing server extra, 130 interrupted before the signal handlers were installed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from framecast.engine.errors import FramecastError, InvalidInput

# ServerConfig fields whose serve option is not named after them (adapter_slots -> --adapter-slots).
_SERVE_OPTIONS = {"model_dir": "--model", "data_dir": "--data", "max_vram_gb": "--max-vram",
                  "adapter_host_cache_gb": "--adapter-host-cache"}  # fmt: skip


class ServeError(FramecastError):
    """A setting ``serve`` cannot start with, named by its option, or a server extra that is not
    installed; printed as ``error: <message>``, exit 2."""


def add_options(parser: argparse.ArgumentParser) -> None:
    """The serve options, on ``framecast serve`` or on ``python -m framecast.server`` itself."""
    parser.add_argument("--model", required=True, metavar="DIR", help="diffusers directory of a WanImageToVideoPipeline")
    parser.add_argument("--data", required=True, metavar="DIR", help="where adapters, media and job records are kept")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50051, help="0 picks a free port")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    parser.add_argument(
        "--max-queue", type=int, default=16, metavar="N", help="queued jobs beyond which requests are refused"
    )
    parser.add_argument("--quantize", default="none", choices=["none", "int8", "nf4", "auto"],
                        help="bitsandbytes quantisation of the transformer and text encoder (auto: by --max-vram)")
    parser.add_argument("--attention", default="auto", choices=["auto", "sdpa", "xformers"],
                        help="attention kernels (auto: xformers where it loads, else PyTorch SDPA)")
    parser.add_argument("--offload", default="none", choices=["none", "model", "group", "auto"],
                        help="keep components in host memory between uses (auto: by --max-vram)")
    parser.add_argument("--max-vram", type=float, default=None, metavar="GB",
                        help="device memory budget: settings and windows are chosen to fit; requests that cannot are refused")
    parser.add_argument("--vae-tiling", action="store_true", help="decode in spatial tiles (less memory)")
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "adamw8bit"], help="adapter optimiser")
    parser.add_argument("--window-frames", type=int, default=81, metavar="N",
                        help="clips longer than this (4N+1) are trained and generated in windows")
    parser.add_argument("--adapter-slots", type=int, default=8, metavar="N",
                        help="adapters kept in device memory, least recently used evicted (default: %(default)s)")
    parser.add_argument("--adapter-host-cache", type=float, default=4.0, metavar="GB",
                        help="host memory for adapters off the device (default: %(default)s)")
    parser.add_argument("--adapter-max-rank", type=int, default=64, metavar="R",
                        help="rank of the hot-swap LoRA slot adapters are zero-padded to; a larger adapter grows it once, "
                        "with a recompile (default: %(default)s)")
    parser.add_argument("--media-retention-hours", type=float, default=0.0, metavar="H",
                        help="delete uploads and results H hours after they were stored or last uploaded again "
                        "(default: 0, kept until deleted)")
    parser.set_defaults(run=cmd_serve)


def add_parser(commands) -> argparse.ArgumentParser:
    """Register ``serve`` under the ``framecast`` command line's subcommands."""
    serve = commands.add_parser("serve", help="run the gRPC server")
    add_options(serve)
    return serve


def server_config(args):
    """The ServerConfig the parsed serve options describe (raises InvalidInput naming the field)."""
    from framecast.server.config import ServerConfig

    return ServerConfig(
        model_dir=args.model, data_dir=args.data, host=args.host, port=args.port,
        device=args.device, dtype=args.dtype, max_queue=args.max_queue, quantize=args.quantize,
        attention=args.attention, offload=args.offload, max_vram_gb=args.max_vram or 0.0,
        vae_tiling=args.vae_tiling, optimizer=args.optimizer, window_frames=args.window_frames,
        adapter_slots=args.adapter_slots, adapter_host_cache_gb=args.adapter_host_cache,
        adapter_max_rank=args.adapter_max_rank, media_retention_hours=args.media_retention_hours,
    )  # fmt: skip


def cmd_serve(args) -> int:
    """Start the server and serve until a signal stops it."""
    try:
        from framecast.server.app import start_server
    except ImportError as error:
        missing = (error.name or "framecast").partition(".")[0]
        if missing == "framecast":
            raise  # a broken install or a bug, not a missing dependency
        raise ServeError(
            f"serve needs {missing}, which is not installed (a client-only install?): pip install 'framecast[server]'"
        ) from None
    try:
        running = start_server(server_config(args), handle_signals=True)
    except InvalidInput as error:  # a setting the server cannot start with: name its option
        option = _SERVE_OPTIONS.get(error.field, "--" + error.field.replace("_", "-"))
        raise ServeError(f"{option}: {str(error).removeprefix(error.field + ' ')}") from None
    print(f"framecast listening on {args.host}:{running.port}, loading {args.model}", flush=True)

    def announce_ready():
        if running.wait_ready(None):
            print(f"framecast ready on {args.host}:{running.port}", flush=True)
        elif running.load_error:
            print(f"framecast: the model failed to load: {running.load_error}; jobs are refused until serve is restarted",
                  file=sys.stderr, flush=True)  # fmt: skip

    threading.Thread(target=announce_ready, name="framecast-announce", daemon=True).start()
    try:
        running.wait()
    except KeyboardInterrupt:  # only when the signal handlers could not be installed
        running.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m framecast.server --model DIR --data DIR ...``: ``framecast serve`` without the
    client's command line. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m framecast.server", description="Run the framecast gRPC server.")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="(default: %(default)s)")  # fmt: skip
    add_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return cmd_serve(args)
    except FramecastError as error:
        print(f"error: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 2
