"""``framecast info``: the server's model, device and limits."""

from __future__ import annotations

import json

from framecast.client.cli.args import client_options, connect
from framecast.client.display import format_bytes


def _readiness(info) -> str:
    if info.ready:
        return "yes"
    return f"no (the model failed to load: {info.load_error})" if info.load_error else "no (loading)"


def _side_by_side(pixels: int) -> str:
    """The 16:9 frame of about ``pixels`` pixels: ``8294400`` -> ``3840x2160``."""
    height = int((pixels * 9 / 16) ** 0.5)
    return f"about {height * 16 // 9}x{height} at 16:9"


def _model_limits(info) -> list[tuple[str, str]]:
    """The loaded model's limits (the working grid), known once it is loaded."""
    if not info.native_width:
        return [("model limits", "- (known once the model is loaded)")]
    return [
        ("native size", f"{info.native_width}x{info.native_height} (the working grid's pixel budget)"),
        ("max side", f"{info.max_side} px (of the working grid)"),
        ("size factor", f"{info.size_factor} (working sides are multiples of it)"),
        ("max window", f"{info.max_window_frames} frames"),
    ]


def _trackers(info) -> str:
    """What may track a region given on the first frame (``--tracker``)."""
    if info.trackers:
        return f"{', '.join(info.trackers)} (for --box, --points, --mask-frame0)"
    return "- (known once the model is loaded)" if not info.ready else "- (none: this server takes masks only)"


def _settings(info) -> list[tuple[str, str]]:
    """The model's recommended settings (its framecast.json): what a request's unset fields take."""
    if not info.model_settings_json:
        return [("model settings", "- (known once the model is loaded)")]
    settings = json.loads(info.model_settings_json)
    plain = lambda values: ", ".join(f"{k} {v}" for k, v in values.items()) or "the method's"  # noqa: E731
    source = settings.get("file") or "none (the method's defaults)"
    return [
        ("model settings", f"{source}; fidelity threshold {settings.get('fidelity_threshold')}"
                           f"{', the edited first frame as a reference' if settings.get('first_frame_reference') else ''}"),
        ("  train", plain(settings.get("train", {}))),
        ("  propagate", plain(settings.get("propagate", {}))),
        *[(f"  preset {name}", "; ".join(f"{kind}: {plain(values)}" for kind, values in preset.items() if values) or
           "the model's settings") for name, preset in settings.get("presets", {}).items()],
    ]  # fmt: skip


def cmd_info(args) -> int:
    with connect(args) as client:
        info = client.server_info()
    rows = [
        ("server", args.server), ("version", info.version), ("ready", _readiness(info)),
        ("model", info.model), ("model dir", info.model_dir), ("device", info.device), ("dtype", info.dtype),
        ("quantization", info.quantization), ("attention", info.attention_backend), ("offload", info.offload),
        ("memory budget", format_bytes(info.max_vram_bytes) if info.max_vram_bytes else "-"),
        ("optimizer", info.optimizer), ("window frames", info.window_frames),
        ("memory", format_bytes(info.memory_bytes)),
        *_model_limits(info),
        *_settings(info),
        ("max duration", f"{info.max_duration_s:g} s (source)"),
        ("max source", f"{info.max_source_pixels} pixels a frame ({_side_by_side(info.max_source_pixels)})"),
        ("interpolation", f"{info.interpolation} (default)"),
        ("trackers", _trackers(info)),
        ("max frames", info.max_frames), ("max pixels", info.max_pixels),
        ("max upload", format_bytes(info.max_upload_bytes)),
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
