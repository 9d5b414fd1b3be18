"""``framecast info``: the server's model, device and limits."""

from __future__ import annotations

from framecast.client.cli.args import client_options
from framecast.client.client import FramecastClient
from framecast.client.display import format_bytes


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


def add_parser(commands) -> None:
    """Register ``info``."""
    info = commands.add_parser("info", parents=[client_options()], help="the server's model, device and limits")
    info.set_defaults(run=cmd_info)
