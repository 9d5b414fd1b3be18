"""The ``framecast`` command line: run a server, edit videos, train adapters, propagate edits,
follow jobs, run the demo, serve the studio's page.

One module a command group, each registering its own subcommands: ``jobs`` (train, propagate),
``edit`` (edit, plan), ``queue`` (jobs list, watch, cancel), ``adapters`` (adapters, import,
export), ``media``, ``info``, ``demo``, ``studio`` (the studio's page: ``framecast.client.studio``,
loaded when it runs); ``args`` holds what they share, ``inputs`` the uploads
of local files and folders of frames, ``masks`` the edit region's options (``--mask``, or ``--box``,
``--points`` or ``--mask-frame0`` tracked on the server). ``serve`` is the server's
(``framecast.server.cli``), ``cluster`` the Ray Serve cluster's (``framecast.server.cluster.cli``),
``make-tiny-model`` and ``train-toy-model`` the toy lab's (``framecast.engine.toy.cli``), and what
``demo`` runs is the toy lab's too (``framecast.engine.toy.demo``). They import the server and the
engine (torch) lazily, inside the subcommand, so the client commands work on a client-only install,
and each turns its own refusals into ``error: <message>``, exit 2: the client knows no engine class.

Exit codes: 0 ok, 2 a refused call (``error: <CODE>: <message>``), a bad local input, a plan
with problems or a passed ``--timeout`` (a running job is cancelled first: ``error: DEADLINE_EXCEEDED: timed out
after N s; cancelled job <id>``), 130 interrupted (a running job is cancelled first), 141
when whoever reads the output closed the pipe (``framecast adapters list | head -1``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from framecast.client.cli import adapters, demo, edit, info, jobs, media, queue, studio
from framecast.client.cli.adapters import cmd_adapters, cmd_export, cmd_import
from framecast.client.cli.args import DEFAULT_SERVER, CliError, existing_file, output_path
from framecast.client.cli.demo import cmd_demo
from framecast.client.cli.edit import cmd_edit, cmd_plan
from framecast.client.cli.info import cmd_info
from framecast.client.cli.jobs import cmd_propagate, cmd_train, save_result
from framecast.client.cli.masks import dashed_values
from framecast.client.cli.media import cmd_media
from framecast.client.cli.queue import cmd_jobs
from framecast.client.errors import FramecastError
from framecast.engine.toy import cli as toy_cli
from framecast.engine.toy.cli import cmd_make_tiny_model, cmd_train_toy_model
from framecast.server import cli as server_cli
from framecast.server.cli import cmd_serve
from framecast.server.cluster import cli as cluster_cli

__all__ = [
    "DEFAULT_SERVER", "CliError", "build_parser", "cmd_adapters", "cmd_demo", "cmd_edit", "cmd_export", "cmd_import",
    "cmd_info", "cmd_jobs", "cmd_make_tiny_model", "cmd_media", "cmd_plan", "cmd_propagate", "cmd_serve", "cmd_train",
    "cmd_train_toy_model", "existing_file", "main", "output_path", "save_result",
]  # fmt: skip


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
    server_cli.add_parser(commands)
    cluster_cli.add_parser(commands)
    edit.add_parsers(commands)
    jobs.add_parsers(commands)
    queue.add_parsers(commands)
    adapters.add_parsers(commands)
    media.add_parsers(commands)
    info.add_parser(commands)
    demo.add_parser(commands)
    studio.add_parser(commands)
    toy_cli.add_parsers(commands)
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
    args = build_parser().parse_args(dashed_values(sys.argv[1:] if argv is None else list(argv)))
    level = args.log_level or ("info" if args.command in ("serve", "cluster") else "warning")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except FramecastError as error:
        print(f"error: {error.code.name}: {error.message}", file=sys.stderr)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 2
