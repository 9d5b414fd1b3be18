"""``framecast make-tiny-model`` and ``framecast train-toy-model``, also run as
``python -m framecast.engine.toy COMMAND ...``: the toy lab's command line.

Importing this module is light (argparse and the engine's error classes): the client's
``framecast`` command line imports it to list these commands. The toy model (torch,
transformers, diffusers) is imported when a command runs.
Nothing here imports the client, so ``python -m framecast.engine.toy`` also runs where the
client's gRPC code cannot load (a GPU image that carries another grpcio).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from framecast.common.arguments import UINT32_MAX, non_negative_int, positive_float, positive_int, whole_number
from framecast.engine.errors import InvalidInput, exit_code

_multiplier = whole_number(1, 64, "multiplier")


def dim_mult(text: str) -> tuple[int, ...]:
    """A VAE's width multipliers, ``1,2,2``: at least three (time shrinks 4x over the last two levels)."""
    values = tuple(_multiplier(part) for part in text.split(","))
    if len(values) < 3:
        raise argparse.ArgumentTypeError(f"needs at least 3 comma-separated levels but got {text!r}")
    return values

# ---- commands -------------------------------------------------------------------------------


@exit_code
def cmd_make_tiny_model(args) -> int:
    import transformers

    from framecast.engine.toy.architectures import make_tiny_model

    transformers.utils.logging.disable_progress_bar()
    print(make_tiny_model(args.dir))
    return 0


@exit_code
def cmd_train_toy_model(args) -> int:
    import transformers

    from framecast.engine.model import check_model_dir
    from framecast.engine.toy.architectures import build_vae, preset
    from framecast.engine.toy.train import ToyTrainSettings, train_toy_model

    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("framecast.engine.toy.train").setLevel(logging.INFO)
    schedule = {
        name: getattr(args, name)
        for name in ("vae_steps", "vae_finetune_steps", "decoder_steps", "transformer_steps", "vae_image_batch",
                     "vae_clip_batch", "data_workers")
        if getattr(args, name) is not None
    }
    if args.init_from is not None:
        try:
            check_model_dir(args.init_from)
        except InvalidInput as error:
            raise InvalidInput("--init-from", args.init_from, error.reason) from None
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InvalidInput("--device", args.device, "needs a CUDA GPU, and torch sees none")
    settings = ToyTrainSettings(seed=args.seed, max_minutes=args.minutes, threads=args.threads, device=args.device,
                                **schedule)  # fmt: skip
    spec = preset("toy", vae_z_dim=args.vae_z_dim, vae_decoder_base_dim=args.vae_decoder_dim)
    if args.vae_dim_mult is not None:
        spec = dataclasses.replace(spec, vae_dim_mult=args.vae_dim_mult)
        try:
            build_vae(spec)
        except ValueError as error:
            raise InvalidInput("--vae-dim-mult", ",".join(map(str, args.vae_dim_mult)), f"cannot be built: {error}") from None
    try:
        out = train_toy_model(args.dir, settings, spec, init_from=args.init_from)
    except InvalidInput as error:  # a setting refused before the run starts: name its option
        raise InvalidInput("--" + error.field.replace("_", "-"), error.value, error.reason) from None
    print(out)
    return 0


# ---- parsers --------------------------------------------------------------------------------


def add_parsers(commands) -> None:
    """Register ``make-tiny-model`` and ``train-toy-model`` under a command line's subcommands."""
    tiny = commands.add_parser("make-tiny-model", help="write the small built-in random-weight model")
    tiny.add_argument("dir", metavar="DIR")
    tiny.set_defaults(run=cmd_make_tiny_model)

    toy = commands.add_parser(
        "train-toy-model", help="train the small Wan I2V model on the toy world (one CPU core: about 50 minutes, 90 with the shipped model's longer schedule)"
    )
    toy.add_argument("dir", metavar="OUT_DIR", help="diffusers directory to write; checkpoints resume from OUT_DIR/checkpoints")
    toy.add_argument("--seed", type=whole_number(0, UINT32_MAX, "seed"), default=0,
                     help="seed of every draw (default: %(default)s)")
    toy.add_argument(
        "--minutes", type=positive_float, default=None, metavar="N", help="wall-clock cap: the VAE and decoder stop at 40%% of it, the transformer at N; the decoder's and "
                                "transformer's learning rates anneal along it (default: every step runs)"
    )
    toy.add_argument("--threads", type=positive_int, default=1, metavar="N", help="CPU threads (default: %(default)s)")
    toy.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                     help="where the models train; the data is drawn on the CPU either way (default: %(default)s)")
    # A longer schedule on an OUT_DIR that holds a finished run continues it from its checkpoints.
    # The shipped model: a default run, then --vae-finetune-steps 2000 --transformer-steps 5000;
    # then a run from that model (its checkpoints gone): --init-from DIR --vae-steps 0
    # --vae-finetune-steps 0 --transformer-steps 4000, whose transformer's held-out loss fell 22%;
    # then a decoder of base width 20 trained alone on an H200 from that model: --init-from DIR
    # --vae-steps 0 --vae-finetune-steps 0 --transformer-steps 0 --vae-decoder-dim 20
    # --decoder-steps 100000 --vae-image-batch 32 --vae-clip-batch 4 --data-workers 12
    # --minutes 12.5 --device cuda (2824 steps in its 5 minutes; validation PSNR 22.25 -> 22.96 dB).
    toy.add_argument("--init-from", metavar="DIR", default=None,
                     help="start from this toy model's weights instead of from scratch")
    toy.add_argument("--vae-z-dim", type=whole_number(4, 64, "vae-z-dim"), default=16, metavar="N",
                     help="VAE latent channels; more than --init-from's widens it (default: %(default)s)")
    toy.add_argument("--vae-dim-mult", type=dim_mult, default=None, metavar="M,M,...",
                     help="VAE width multipliers, one level per entry: space shrinks 2^(levels-1) times "
                          "(default: 1,2,4,4, 8x as Wan2.1's; 1,2,2 is 4x). Other levels than --init-from's "
                          "train a new VAE from scratch")  # fmt: skip
    toy.add_argument("--vae-steps", type=non_negative_int, default=None, metavar="N",
                     help="VAE steps on frames and short clips (default: 2000)")
    toy.add_argument("--vae-finetune-steps", type=non_negative_int, default=None, metavar="N",
                     help="VAE fine-tune steps on whole clips (default: 1000)")
    toy.add_argument("--vae-decoder-dim", type=whole_number(4, 256, "vae-decoder-dim"), default=None, metavar="N",
                     help="VAE decoder base width (default: the encoder's, 12); another width than --init-from's "
                          "decoder trains a new decoder from scratch (give --decoder-steps)")  # fmt: skip
    toy.add_argument("--decoder-steps", type=non_negative_int, default=None, metavar="N",
                     help="steps training the VAE decoder alone on the frozen encoder's latents (default: 0)")
    toy.add_argument("--transformer-steps", type=non_negative_int, default=None, metavar="N",
                     help="transformer steps (default: 2500; 0 keeps --init-from's)")
    toy.add_argument("--vae-image-batch", type=positive_int, default=None, metavar="N",
                     help="single frames per VAE and decoder step (default: 8)")
    toy.add_argument("--vae-clip-batch", type=positive_int, default=None, metavar="N",
                     help="clips per VAE and decoder step (default: 1)")
    toy.add_argument("--data-workers", type=non_negative_int, default=None, metavar="N",
                     help="processes drawing the VAE and decoder batches ahead, so a GPU does not wait "
                          "(default: 0, drawn in the training loop)")  # fmt: skip
    toy.set_defaults(run=cmd_train_toy_model)


def main(argv: list[str] | None = None) -> int:
    """``python -m framecast.engine.toy COMMAND ...``: the toy commands without the client's
    command line (the training logs its progress at INFO). Returns the exit code: 0 ok, 2 a
    setting refused (``error: --vae-steps ...``), 130 interrupted."""
    parser = argparse.ArgumentParser(prog="python -m framecast.engine.toy", description="Make or train the toy model.")
    add_parsers(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.run(args)
