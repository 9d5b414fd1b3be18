"""``framecast demo``'s options. What it runs (a server in this process, the built-in model,
a scene it never saw) is ``framecast.engine.toy.demo``, imported when the command runs."""

from __future__ import annotations

from framecast.client.cli.args import colour_variants_int, non_negative_float, positive_float, positive_int, seed_int


def cmd_demo(args) -> int:
    """Run the demo (the toy lab's), which says on a client-only install which extra it needs."""
    from framecast.engine.toy.demo import run_demo

    return run_demo(args)


def add_parser(commands) -> None:
    """Register ``demo``."""
    demo = commands.add_parser("demo", help="run the whole method end to end on the built-in small model")
    demo.add_argument(
        "--out", default="demo-out", metavar="DIR", help="where everything is written (default: %(default)s)"
    )
    demo.add_argument(
        "--model", default=None, metavar="DIR", help="model directory (default: the built-in toy model)"
    )
    # Unset, the training and sampling settings are the model's own (its framecast.json: the built-in
    # model's were tuned on the toy world's development scenes), else the method's.
    demo.add_argument("--steps", type=positive_int, default=None, help="training steps (default: the model's settings)")
    demo.add_argument("--sample-steps", type=positive_int, default=None,
                      help="denoising steps (default: the model's settings)")
    # A user's clip, not one shaped for the model (64x64 at 16 fps): it is mapped onto the model's
    # grid and the output restored at this size and frame rate.
    demo.add_argument("--frames", type=int, default=25, help="the clip's frames (default: %(default)s)")
    demo.add_argument("--width", type=int, default=128, help="the clip's width in pixels (default: %(default)s)")
    demo.add_argument("--height", type=int, default=128, help="the clip's height in pixels (default: %(default)s)")
    demo.add_argument("--fps", type=float, default=24.0, help="the clip's frame rate (default: %(default)s)")
    demo.add_argument("--seed", type=seed_int, default=0, help="scene, training and sampling seed (default: %(default)s)")
    demo.add_argument(
        "--edit", choices=["recolor", "retexture", "reshape"], default="recolor", help="the edit to propagate"
    )
    demo.add_argument("--rank", type=positive_int, default=None, help="LoRA rank (default: the model's settings)")
    demo.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: the model's settings)")
    demo.add_argument(
        "--colour-variants", type=colour_variants_int, default=None, metavar="N",
        help="recoloured copies of the source trained alongside it (0-16; default: the model's settings)",
    )  # fmt: skip
    demo.add_argument(
        "--w-keep", type=non_negative_float, default=None, metavar="W",
        help="training loss weight outside the edit region, inside it 1 (default: the model's settings)",
    )  # fmt: skip
    demo.add_argument("--guidance", type=non_negative_float, default=None,
                      help="classifier-free guidance; <= 1 disables it (default: the model's settings)")
    demo.add_argument("--adapter-strength", type=non_negative_float, default=None, metavar="S",
                      help="the adapter's strength when propagating, 0 to 2 (default: the model's settings)")
    demo.add_argument("--no-first-frame-reference", dest="first_frame_reference", action="store_false",
                      help="train the motion phase only, without the edited first frame as an appearance reference "
                      "(where the model's settings would add it)")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--dtype", default="auto")
    demo.set_defaults(run=cmd_demo)
