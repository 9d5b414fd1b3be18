"""What the client's commands share: option value types, the checks of local files, CliError,
and the --server and --timeout options."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from framecast.engine.arguments import (  # noqa: F401 (the client's commands take them from here, with the rest)
    UINT32_MAX,
    UINT64_MAX,
    non_negative_int,
    positive_float,
    positive_int,
    whole_number,
)

DEFAULT_SERVER = os.environ.get("FRAMECAST_SERVER", "127.0.0.1:50051")
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


# ---- shared options -------------------------------------------------------------------------


def client_options(defaults: bool = True) -> argparse.ArgumentParser:
    """--server and --timeout, as a parent parser for the commands that call a server.
    ``defaults=False`` is for the actions under a command that has them already (``adapters
    show``, ``media delete``): the options may follow the action too, and an action's absent
    option must not overwrite one given before it."""
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
