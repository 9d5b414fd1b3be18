"""``framecast media`` (list, download, delete): the uploads and results a server stores."""

from __future__ import annotations

from framecast.client.cli.args import CliError, command_with_actions, connect, output_path, resolve_prefix
from framecast.client.display import format_media_table


def resolve_media_ids(prefixes: list[str], stored: list[str]) -> list[str]:
    """Full ids for ids or unique id prefixes (``sha256:4335614be1e6`` as listings show them)."""
    return [resolve_prefix(prefix, stored, "media", "ID") for prefix in prefixes]


def cmd_media(args) -> int:
    output = output_path(args.output, "--output") if args.action == "download" else None
    with connect(args) as client:
        listing = client.list_media()
        if output is not None:
            (media_id,) = resolve_media_ids([args.id], [ref.id for ref in listing.media])
            try:
                client.download_to(media_id, output)
            except OSError as error:  # the write; a refused call is a FramecastError
                raise CliError(f"could not write --output {output}: {error.strerror or error}") from None
            print(f"{output} ({output.stat().st_size} bytes, {media_id})")
        elif args.action == "delete":
            for media_id in resolve_media_ids(args.ids, [ref.id for ref in listing.media]):
                client.delete_media(media_id)
                print(f"deleted {media_id}")
        else:
            print(format_media_table(listing))
    return 0


def add_parsers(commands) -> None:
    """Register ``media`` with its actions."""
    media_command, add_action = command_with_actions(
        commands, "media", "list, download or delete stored uploads and results"
    )
    add_action("list", "stored media, newest first, and the bytes they take (default)")
    media_delete = add_action("delete", "delete stored media by id")
    media_delete.add_argument("ids", nargs="+", metavar="ID", help="media ids, or unique prefixes of them as list shows")
    media_download = add_action("download", "write stored media to a file (an existing one is replaced)")
    media_download.add_argument("id", metavar="ID", help="a media id, or a unique prefix of one as list shows")
    media_download.add_argument("--output", required=True, metavar="FILE", help="the file to write")
    media_command.set_defaults(run=cmd_media)
