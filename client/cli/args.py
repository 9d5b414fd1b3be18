"""What the client's commands share: option value types, the checks of local files, CliError,
the --server, --timeout, token and TLS options (``connect``: the client they name), and the shot
options of train, propagate, edit and plan."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from framecast.client.client import FramecastClient, server_address
from framecast.client.requests import FIT_MODES
from framecast.common.arguments import (  # noqa: F401 (the client's commands take them from here, with the rest)
    UINT32_MAX,
    UINT64_MAX,
    non_negative_int,
    positive_float,
    positive_int,
    whole_number,
)

DEFAULT_SERVER = os.environ.get("FRAMECAST_SERVER", "127.0.0.1:50051")
TOKEN_ENV, TLS_ENV, TLS_CA_ENV = "FRAMECAST_TOKEN", "FRAMECAST_TLS", "FRAMECAST_TLS_CA"
TLS_CERT_ENV, TLS_KEY_ENV = "FRAMECAST_TLS_CERT", "FRAMECAST_TLS_KEY"
MAX_TIMEOUT_S = 1e9  # gRPC reads a deadline much further away (~7e9 s) as one already past


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


def existing_input(path: str, flag: str) -> Path:
    """``path`` as a Path to an existing file, or to a folder (of frames); raises CliError naming ``flag``."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise CliError(f"{flag}: no such file or folder: {path}")
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


# ---- option value types ---------------------------------------------------------------------

seed_int = whole_number(0, UINT64_MAX, "seed_int")  # the API's seeds are uint64
colour_variants_int = whole_number(0, 16, "colour_variants_int")  # TrainRequest.colour_variants: 0-16


def share_float(text: str) -> float:
    """A share from 0 to 1 (a fidelity threshold)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1 but got {text!r}")
    return value


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


def seconds(text: str) -> float:
    """A time in the source: seconds (``12.5``) or ``[H:]M:S`` (``1:02.5``), at least 0."""
    try:
        parts = [float(part) for part in text.strip().split(":")]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3 or not all(math.isfinite(part) and part >= 0 for part in parts) or any(
        part >= 60 for part in parts[1:]
    ):
        raise argparse.ArgumentTypeError(f"must be seconds (12.5) or [H:]M:S (1:02.5) of at least 0 but got {text!r}")
    return sum(part * 60**power for power, part in enumerate(reversed(parts)))


def reference_spec(text: str) -> tuple[int | float, str]:
    """``IDX:path`` or ``SECONDSs:path`` (``--reference``) -> (frame index, path) or (time in
    seconds as a float, path): the source frame the edited image shows, by index or by time."""
    where, sep, path = text.partition(":")
    position: int | float | None = None
    try:
        position = float(where[:-1]) if where.endswith("s") else int(where)
    except ValueError:
        pass
    if isinstance(position, float) and not (math.isfinite(position) and position >= 0):
        position = None
    if not sep or not path or position is None or (isinstance(position, int) and not 0 <= position <= UINT32_MAX):
        raise argparse.ArgumentTypeError(
            f"expected FRAME_INDEX:IMAGE or SECONDSs:IMAGE (e.g. 8:edited_8.png, 0.5s:edited.png) but got {text!r}"
        )
    return position, path


def server_arg(text: str) -> str:
    """``--server``: host:port, a host alone meaning port 50051."""
    try:
        return server_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# ---- shared options -------------------------------------------------------------------------


def client_options(defaults: bool = True) -> argparse.ArgumentParser:
    """--server, --timeout, --token and the TLS options, as a parent parser for the commands that call a server.
    ``defaults=False`` is for the actions under a command that has them already (``adapters
    show``, ``media delete``): the options may follow the action too, and an action's absent
    option must not overwrite one given before it."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--server",
        type=server_arg,
        default=DEFAULT_SERVER if defaults else argparse.SUPPRESS,
        metavar="ADDR",
        help="host[:port] of the server, port 50051 unless given (default: %(default)s, or $FRAMECAST_SERVER)"
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
    security = parent.add_argument_group("a server on a network (docs/serving.md#on-a-network)")
    unset = None if defaults else argparse.SUPPRESS

    def option(flag: str, help: str, **kwargs) -> None:
        security.add_argument(flag, default=unset, help=help if defaults else "as before the action", **kwargs)

    option("--token", f"bearer token the server accepts (default: ${TOKEN_ENV}; the environment keeps it out of "
           "the process list)", metavar="TOKEN")  # fmt: skip
    option("--tls", "connect over TLS, the server verified against the system's CA roots (default: on when "
           f"${TLS_ENV} is 1)", action="store_const", const=True)  # fmt: skip
    option("--tls-ca", f"PEM CA bundle to verify the server with; implies --tls (default: ${TLS_CA_ENV})", metavar="FILE")
    option("--tls-cert", f"PEM client certificate, for a server that asks for one (default: ${TLS_CERT_ENV})",
           metavar="FILE")  # fmt: skip
    option("--tls-key", f"PEM private key of --tls-cert (default: ${TLS_KEY_ENV})", metavar="FILE")
    return parent


def connect(args) -> FramecastClient:
    """The client a parsed command line names: --server, --timeout, and the token and TLS options,
    each falling back to its environment variable. Raises CliError naming the option of an
    unreadable file or a certificate without its key."""
    def given(name: str, env: str) -> str | None:
        return getattr(args, name, None) or os.environ.get(env) or None

    tls_ca, tls_cert, tls_key = given("tls_ca", TLS_CA_ENV), given("tls_cert", TLS_CERT_ENV), given("tls_key", TLS_KEY_ENV)
    for path, flag in ((tls_ca, "--tls-ca"), (tls_cert, "--tls-cert"), (tls_key, "--tls-key")):
        if path:
            existing_file(path, flag)
    if bool(tls_cert) != bool(tls_key):
        raise CliError(f"{'--tls-key' if tls_cert else '--tls-cert'} is required with "
                       f"{'--tls-cert' if tls_cert else '--tls-key'}: a client certificate needs its private key")  # fmt: skip
    tls = bool(getattr(args, "tls", None)) or os.environ.get(TLS_ENV, "").strip().lower() in ("1", "true", "yes")
    token = given("token", TOKEN_ENV)
    if token is not None and any(c.isspace() for c in token):
        raise CliError(f"--token (or ${TOKEN_ENV}) must not hold spaces or line breaks")
    return FramecastClient(args.server, timeout=args.timeout, token=token, tls=tls, tls_ca=tls_ca, tls_cert=tls_cert,
                           tls_key=tls_key)  # fmt: skip


def command_with_actions(commands, name: str, help: str):
    """A command with actions (``adapters show NAME``, ``media delete ID``) that takes --server
    and --timeout before or after its action. Returns the command's parser and
    ``add_action(action, help)``, which adds an action's parser."""
    command = commands.add_parser(name, parents=[client_options()], help=help)
    actions = command.add_subparsers(dest="action", metavar="ACTION")
    after = client_options(defaults=False)

    def add_action(action: str, help: str) -> argparse.ArgumentParser:
        return actions.add_parser(action, parents=[after], help=help)

    return command, add_action


def add_shot_options(parser: argparse.ArgumentParser) -> None:
    """--start, --end, --fps / --source-fps and --fit: the part of the source a job works on and
    the working grid it maps onto (the output is restored to the source's size and frame rate)."""
    shot = parser.add_argument_group("shot", "the part of the source and the working grid it maps onto")
    shot.add_argument("--start", type=seconds, default=None, metavar="T",
                      help="edit from this source time, seconds or [H:]M:S (default: its start)")  # fmt: skip
    shot.add_argument("--end", type=seconds, default=None, metavar="T", help="... to this one (default: its end)")
    rate = shot.add_mutually_exclusive_group()
    rate.add_argument("--fps", type=positive_float, default=None, metavar="F",
                      help="working frame rate, never above the source's (default: 16, Wan's)")  # fmt: skip
    rate.add_argument("--source-fps", action="store_true", help="work at the source's own frame rate")
    shot.add_argument("--fit", choices=list(FIT_MODES), default=None,
                      help="fit: the whole frame, scaled; crop: a centred part with the aspect kept; pad: the whole "
                      "frame, padded (default: fit)")  # fmt: skip


def shot_kwargs(args) -> dict:
    """The shot options of a parsed command as ``FramecastClient`` keyword arguments."""
    return {"start_s": args.start, "end_s": args.end, "fps": args.fps, "source_fps": args.source_fps, "fit": args.fit}


def resolve_prefix(prefix: str, stored: list[str], what: str, flag: str) -> str:
    """The one of ``stored`` that ``prefix`` names (an id, or its start as listings show it, ``...``
    and all); raises CliError naming ``flag`` when none or several match."""
    matches = [item for item in stored if item.startswith(prefix.removesuffix("..."))]
    if len(matches) != 1 or not prefix.removesuffix("..."):
        problem = f"matches no stored {what}" if not matches else f"matches {len(matches)} {what}; give more digits"
        raise CliError(f"{flag} {prefix!r} {problem}")
    return matches[0]
