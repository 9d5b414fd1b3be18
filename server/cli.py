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
import os
import sys
import threading
from enum import Enum
from pathlib import Path

from framecast.common.requests import field_default
from framecast.engine.config import Attention, Dtype, EngineConfig, Offload, Optimizer, Quantize
from framecast.engine.errors import FramecastError, InvalidInput, exit_code
from framecast.server.config import ServerConfig

# Settings whose serve option is not named after them (adapter_slots is --adapter-slots).
_OPTIONS = {"model_dir": "--model", "data_dir": "--data", "max_vram_gb": "--max-vram",
            "adapter_host_cache_gb": "--adapter-host-cache", "max_duration_s": "--max-duration"}  # fmt: skip


def option_of(field: str) -> str:
    return _OPTIONS.get(field, "--" + field.replace("_", "-"))

class ServeError(FramecastError):
    """A setting ``serve`` cannot start with, named by its option, or a server extra that is not
    installed; printed as ``error: <message>``, exit 2."""


def _default(name: str):
    """The default of a setting, from the config that owns it (the one place it is written)."""
    config = EngineConfig if name in EngineConfig.field_names() else ServerConfig
    value = field_default(config, name)
    return value.value if isinstance(value, Enum) else value


def add_options(parser: argparse.ArgumentParser) -> None:
    """The serve options, on ``framecast serve`` or on ``python -m framecast.server`` itself. Each
    option's ``dest`` is the config field it sets, and its default is that field's."""

    def option(flag: str, dest: str, help: str = "", **kwargs) -> None:
        shown = f" (default: {_default(dest)})" if help and "choices" not in kwargs else ""
        parser.add_argument(flag, dest=dest, default=_default(dest), help=help + shown, **kwargs)

    parser.add_argument("--model", dest="model_dir", default=None, metavar="DIR",
                        help="diffusers directory of a WanImageToVideoPipeline (default: the built-in toy "
                        "model)")  # fmt: skip
    parser.add_argument("--data", dest="data_dir", default=None, metavar="DIR",
                        help="where adapters, media and job records are kept (default: $XDG_DATA_HOME/framecast, "
                        "or ~/.local/share/framecast)")  # fmt: skip
    option("--host", "host")
    option("--port", "port", "0 picks a free port", type=int)
    option("--device", "device", "auto | cpu | cuda | cuda:N")
    option("--dtype", "dtype", "", choices=[d.value for d in Dtype])
    option("--max-queue", "max_queue", "queued jobs beyond which requests are refused", type=int, metavar="N")
    option("--max-streams", "max_streams", "streaming calls open at once (Train, Propagate, WatchJob, uploads and "
           "downloads); one more is refused with RESOURCE_EXHAUSTED. Each holds a thread; unary calls and health "
           "probes have threads of their own", type=int, metavar="N")  # fmt: skip
    option("--quantize", "quantize", "bitsandbytes quantisation of the transformer and text encoder (auto: by --max-vram)",
           choices=[q.value for q in Quantize])  # fmt: skip
    option("--attention", "attention", "attention kernels (auto: xformers where it loads, else PyTorch SDPA)",
           choices=[a.value for a in Attention])  # fmt: skip
    option("--offload", "offload", "keep components in host memory between uses (auto: by --max-vram)",
           choices=[o.value for o in Offload])  # fmt: skip
    option("--max-vram", "max_vram_gb", "device memory budget in GB: settings and windows are chosen to fit; requests "
           "that cannot are refused; 0: none", type=float, metavar="GB")  # fmt: skip
    parser.add_argument("--vae-tiling", dest="vae_tiling", action="store_true", help="decode in spatial tiles (less memory)")
    option("--optimizer", "optimizer", "adapter optimiser", choices=[o.value for o in Optimizer])
    option("--window-frames", "window_frames", "clips longer than this (4N+1) are trained and generated in windows",
           type=int, metavar="N")  # fmt: skip
    option("--adapter-slots", "adapter_slots", "adapters kept in device memory, least recently used evicted",
           type=int, metavar="N")  # fmt: skip
    option("--adapter-host-cache", "adapter_host_cache_gb", "host memory for adapters off the device, in GB",
           type=float, metavar="GB")  # fmt: skip
    option("--adapter-max-rank", "adapter_max_rank", "rank of the hot-swap LoRA slot adapters are zero-padded to; a "
           "larger adapter grows it once, with a recompile", type=int, metavar="R")  # fmt: skip
    option("--accelerator", "accelerator", "a stored adapter held under every propagation's that names none (a "
           "step-distill LoRA, imported first: framecast import); a request's accelerator overrides it", metavar="NAME")  # fmt: skip
    option("--max-source-pixels", "max_source_pixels", "largest source frame accepted, width x height (8K UHD); the "
           "model works on its own grid whatever the source's size", type=int, metavar="N")  # fmt: skip
    option("--max-duration", "max_duration_s", "longest source video accepted, in seconds", type=float, metavar="S")
    option("--sam2-checkpoint", "sam2_checkpoint", "a local SAM2 video model directory (transformers' Sam2VideoModel, "
           "save_pretrained): exact masks from points, a box or a frame-0 mask; empty: CSRT and flow trackers only",
           metavar="DIR")  # fmt: skip
    option("--metrics-port", "metrics_port", "serve Prometheus metrics over HTTP at http://HOST:PORT/metrics (0 picks a "
           "free port); off unless given", type=int, metavar="PORT")  # fmt: skip
    parser.add_argument("--otel-endpoint", dest="otel_endpoint", default="", metavar="URL",
                        help="send OpenTelemetry traces (a span per RPC, job and job phase) over OTLP/gRPC to the "
                        "collector at this URL (http://HOST:4317; https:// for TLS), or 'env' for the one "
                        "OTEL_EXPORTER_OTLP_ENDPOINT names; needs framecast[tracing]; off unless given")  # fmt: skip
    option("--otel-service-name", "otel_service_name", "the service.name of the traces", metavar="NAME")
    option("--media-retention-hours", "media_retention_hours", "delete uploads and results H hours after they were "
           "stored or last uploaded again; 0: kept until deleted", type=float, metavar="H")  # fmt: skip
    network = parser.add_argument_group("on a network", "who may call the server (docs/serving.md#on-a-network); a --host "
                                        "other than loopback needs TLS and tokens or client certificates, or --insecure")
    network.add_argument("--auth-tokens", dest="auth_tokens", default="", metavar="FILE",
                         help="bearer tokens, one a line ('#' comments; 'read:TOKEN' for a read-only one), read again "
                         "when the file changes; every call but health's needs one")  # fmt: skip
    network.add_argument("--tls-cert", dest="tls_cert", default="", metavar="FILE", help="PEM certificate chain: serve TLS")
    network.add_argument("--tls-key", dest="tls_key", default="", metavar="FILE", help="PEM private key of --tls-cert")
    network.add_argument("--tls-client-ca", dest="tls_client_ca", default="", metavar="FILE",
                         help="PEM CA bundle: callers must present a certificate it signed (mutual TLS)")  # fmt: skip
    network.add_argument("--insecure", dest="insecure", action="store_true",
                         help="serve a non-loopback --host without TLS or caller authentication (a network you trust)")
    parser.set_defaults(run=cmd_serve)


def add_parser(commands) -> argparse.ArgumentParser:
    """Register ``serve`` under the ``framecast`` command line's subcommands."""
    serve = commands.add_parser("serve", help="run the gRPC server")
    add_options(serve)
    return serve


def default_data_dir() -> Path:
    """Where ``serve`` keeps its data without ``--data``: the user's data directory
    (``$XDG_DATA_HOME/framecast``, or ``~/.local/share/framecast``)."""
    base = os.environ.get("XDG_DATA_HOME") or ""
    return (Path(base) if Path(base).is_absolute() else Path.home() / ".local" / "share") / "framecast"


def server_config(args) -> ServerConfig:
    """The ServerConfig the parsed serve options describe (raises InvalidInput naming the field):
    without ``--model`` the built-in model, without ``--data`` ``default_data_dir()``."""
    fields = EngineConfig.field_names() | ServerConfig.field_names()
    settings = {name: value for name, value in vars(args).items() if name in fields}
    if settings.get("model_dir") is None:
        from framecast.engine.model import builtin_model_dir

        settings["model_dir"] = str(builtin_model_dir())
    if settings.get("data_dir") is None:
        settings["data_dir"] = str(default_data_dir())
    return ServerConfig.build(**settings)


def require_server(command: str) -> None:
    """Import the server (torch, diffusers...) for ``command`` (serve, demo): on a client-only install
    raise ServeError saying which extra to install, instead of an ImportError's traceback."""
    try:
        import framecast.server.app  # noqa: F401
    except ImportError as error:
        missing = (error.name or "framecast").partition(".")[0]
        if missing == "framecast":
            raise  # a broken install or a bug, not a missing dependency
        raise ServeError(
            f"{command} needs {missing}, which is not installed (a client-only install?): pip install 'framecast[server]'"
        ) from None


@exit_code
def cmd_serve(args) -> int:
    """Start the server and serve until a signal stops it."""
    require_server("serve")
    # Hand the interpreter lock on after 1 ms instead of 5: with hundreds of stream threads a health
    # probe or a unary call waits for fewer turns (p99 with 256 watchers of a training: 63 -> 33 ms).
    sys.setswitchinterval(0.001)
    from framecast.server.app import start_server
    from framecast.server.request_ids import show_request_ids

    show_request_ids()  # each log line names the request it was made for, [-] outside any

    try:
        config = server_config(args)
        running = start_server(config, handle_signals=True)
    except InvalidInput as error:  # a setting the server cannot start with: name its option
        option = option_of(error.field)
        raise ServeError(f"{option}: {str(error).removeprefix(error.field + ' ')}") from None
    if args.model_dir is None:
        print(f"framecast serves the built-in model ({config.engine.model_dir}); --model DIR serves another", flush=True)
    if args.data_dir is None:
        print(f"framecast keeps its data in {config.data_dir}; --data DIR keeps it elsewhere", flush=True)
    print(f"framecast listening on {args.host}:{running.port}, loading {config.engine.model_dir}", flush=True)
    if running.metrics_port is not None:
        print(f"framecast metrics on http://{args.host}:{running.metrics_port}/metrics", flush=True)

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
    """``python -m framecast.server [--model DIR] [--data DIR] ...``: ``framecast serve`` without the
    client's command line. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m framecast.server", description="Run the framecast gRPC server.")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="(default: %(default)s)")  # fmt: skip
    add_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return cmd_serve(args)
