"""``framecast adapters`` (list, show, load, unload, pin, unpin, delete), ``framecast import``
and ``framecast export``: the adapters a server stores."""

from __future__ import annotations

from framecast.client.cli.args import CliError, client_options, command_with_actions, connect, existing_file, output_path
from framecast.client.display import format_adapter, format_adapter_table, format_bytes, format_change
from framecast.client.requests import SAMPLING_FIELDS


def cmd_adapters(args) -> int:
    with connect(args) as client:
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


def sampling_spec(text: str) -> dict:
    """``--sampling steps=4,guidance_scale=1,shift=5``: an accelerator's sampling settings."""
    import argparse

    settings = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in SAMPLING_FIELDS or not value:
            raise argparse.ArgumentTypeError(f"{item!r}: give NAME=VALUE, NAME one of {', '.join(SAMPLING_FIELDS)}")
        try:
            settings[name] = int(value) if name == "steps" else float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: {value!r} is not a number") from None
    return settings


def cmd_import(args) -> int:
    path = existing_file(args.file, "FILE")
    name = args.name or path.name.split(".")[0]
    with connect(args) as client:
        info = client.import_adapter(name, path, drop_unsupported=args.drop_unsupported, sampling=args.sampling)
    print(format_adapter(info))
    return 0


def cmd_export(args) -> int:
    suffix = ".safetensors" if args.format == "diffusers" else f".{args.format}.safetensors"
    output = output_path(args.output or f"{args.name}{suffix}", "--output")
    with connect(args) as client:
        try:
            data = client.export_adapter(args.name, output, format=args.format)
        except OSError as error:  # the write; a refused call is a FramecastError
            raise CliError(
                f"could not write --output {output}: {error.strerror or error}. The adapter is still on the server: "
                "export it again with another --output"
            ) from None
    print(f"{output} ({format_bytes(len(data))}, {args.format})")
    return 0


def add_parsers(commands) -> None:
    """Register ``adapters`` with its actions, ``import`` and ``export``."""
    adapters, add_action = command_with_actions(
        commands, "adapters", "list, show, load, unload, pin or delete adapters"
    )
    add_action("list", "every adapter with its state (default)")
    add_action("show", "one adapter's details").add_argument("name", metavar="NAME")
    add_action("delete", "delete an adapter").add_argument("name", metavar="NAME")
    load = add_action("load", "load an adapter into device memory now (fast first swap)")
    load.add_argument("name", metavar="NAME")
    load.add_argument("--host", action="store_true", help="into host memory only")
    unload = add_action("unload", "take an adapter off the device")
    unload.add_argument("name", metavar="NAME")
    unload.add_argument("--keep-in-host", action="store_true", help="keep it in host memory (default: out of memory)")
    add_action("pin", "load an adapter and never evict it").add_argument("name", metavar="NAME")
    add_action("unpin", "let a pinned adapter be evicted again").add_argument("name", metavar="NAME")
    adapters.set_defaults(run=cmd_adapters)

    client = client_options()
    imports = commands.add_parser(
        "import", parents=[client], help="add an adapter from a Wan LoRA .safetensors (ComfyUI / LightX2V, diffusion-pipe, "
        "musubi-tuner, VideoX-Fun, DiffSynth-Studio, peft or diffusers keys)",
    )  # fmt: skip
    imports.add_argument("file", metavar="FILE")
    imports.add_argument(
        "--name", default=None, metavar="NAME", help="name of the new adapter (default: the file name up to its first dot)"
    )
    imports.add_argument("--drop-unsupported", action="store_true",
                         help="leave out the entries framecast cannot apply (LoHa, LoKr, DoRA, a text encoder's, a layer "
                         "the model lacks) instead of refusing the file; the adapter lists what was left out")  # fmt: skip
    imports.add_argument("--sampling", type=sampling_spec, default=None, metavar="NAME=VALUE,...",
                         help="how to sample with it as an accelerator (--accelerator NAME --preset turbo), as its "
                         "publisher gives it: steps, guidance_scale, shift, accelerator_strength; LightX2V's "
                         "Wan2.1-I2V-14B-480P distill LoRA: steps=4,guidance_scale=1,shift=5")  # fmt: skip
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
