"""``framecast studio``: serve the studio's page (``framecast.client.studio``) on this machine, for a
framecast server.

The page's process is a client like the command line: it needs ``framecast[studio]`` (Starlette and
uvicorn, loaded only when the command runs), never torch, and reaches the server with the same
``--server``, token and TLS options. It listens on loopback unless told otherwise: the page has no
login of its own, and whoever reaches it acts with the studio's token.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import webbrowser
from pathlib import Path

from framecast.client.cli.args import CliError, client_options, connect, non_negative_int

DEFAULT_PORT = 7860


def cmd_studio(args) -> int:
    try:
        from framecast.client.studio.app import make_app
        from framecast.client.studio.server import RunningStudio
    except ImportError as error:
        raise CliError(f"framecast studio needs the studio extra: pip install 'framecast[studio]' ({error})") from None
    client = connect(args)
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="framecast-studio-"))
    try:
        studio = RunningStudio(make_app(client, cache), args.host, args.port)
    except OSError as error:
        raise CliError(f"--host/--port: cannot listen on {args.host}:{args.port}: {error.strerror or error}") from None
    print(f"framecast studio on {studio.url} (server {client.address}); Ctrl-C stops it", file=sys.stderr, flush=True)
    if args.open:
        webbrowser.open(studio.url)
    try:
        while studio.thread.is_alive():
            studio.thread.join(timeout=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        studio.stop()
        client.close()
        if not args.cache:
            shutil.rmtree(cache, ignore_errors=True)
    return 0


def add_parser(commands) -> None:
    """Register ``studio``."""
    studio = commands.add_parser(
        "studio", parents=[client_options()],
        help="a web page to edit clips on a framecast server: upload, mark the region, track, plan, run, review",
        description="Serve the studio's page (docs/studio.md) for the framecast server --server names, with its "
        "token and TLS options. Needs framecast[studio].",
    )  # fmt: skip
    studio.add_argument("--host", default="127.0.0.1", help="address the page listens on (default: %(default)s; the "
                        "page has no login of its own: whoever reaches it uses the studio's token)")  # fmt: skip
    studio.add_argument("--port", type=non_negative_int, default=DEFAULT_PORT,
                        help="port of the page; 0: a free one (default: %(default)s)")  # fmt: skip
    studio.add_argument("--cache", default=None, metavar="DIR", help="keep copies of the media the page plays here "
                        "(default: a temporary folder, removed at exit)")  # fmt: skip
    studio.add_argument("--open", action="store_true", help="open the page in a browser")
    studio.set_defaults(run=cmd_studio)
