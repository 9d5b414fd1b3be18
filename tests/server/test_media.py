"""Stored media over a real port: listing, downloading and deleting (also from the CLI), retention, and restarts."""

from __future__ import annotations

import os
import time

import grpc
import pytest

from framecast.client import cli
from framecast.common.media import encode_png, encode_video
from framecast.engine.errors import InvalidInput
from framecast.server.config import ServerConfig
from framecast.server.media_store import MediaStore
from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc

from .test_bad_requests import expect
from .test_e2e import upload, upload_scene


def test_list_and_delete_media_across_a_restart(start_server_at, tiny_model_dir, scene, tmp_path):
    data_dir = tmp_path / "data"
    server = start_server_at(tiny_model_dir, data_dir)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        source, mask, edited = upload_scene(stub, scene)
        assert source.created_at > 0
        request = pb.PropagateRequest(adapter="", source_id=source.id, mask_id=mask.id, edited_first_frame_id=edited.id,
                                      prompt="p", steps=1)  # fmt: skip
        (result,) = [e.result for e in stub.Propagate(request, timeout=300) if e.WhichOneof("event") == "result"]

        listing = stub.ListMedia(pb.ListMediaRequest(), timeout=10)
        assert {m.id for m in listing.media} == {source.id, mask.id, edited.id, result.video.id}
        assert listing.media[0].id == result.video.id  # newest first
        assert listing.total_bytes == sum(m.size_bytes for m in listing.media) > 0
        assert next(m for m in listing.media if m.id == source.id).filename == "source.mp4"

        assert stub.DeleteMedia(pb.MediaRef(id=source.id), timeout=10).deleted
        expect(grpc.StatusCode.NOT_FOUND, lambda: stub.DownloadMedia(pb.MediaRef(id=source.id), timeout=10), source.id)
        expect(grpc.StatusCode.NOT_FOUND, lambda: stub.DeleteMedia(pb.MediaRef(id=source.id), timeout=10))
        expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.DeleteMedia(pb.MediaRef(id="sha256:xyz"), timeout=10),
               "id", "sha256:xyz")  # fmt: skip
        expect(grpc.StatusCode.NOT_FOUND, lambda: stub.Propagate(request, timeout=60), source.id)
        assert stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).ready  # still serving
    server.stop(grace=5)

    # A delete a crash interrupted: the directory was renamed out of the way, not yet removed.
    leftover = data_dir / "media" / ".deleted-0123-abcd"
    leftover.mkdir()
    (leftover / "data").write_bytes(b"partly removed")
    server = start_server_at(tiny_model_dir, data_dir)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        listing = stub.ListMedia(pb.ListMediaRequest(), timeout=10)
        assert {m.id for m in listing.media} == {mask.id, edited.id, result.video.id}
        assert not leftover.exists()
        again = upload(stub, encode_video(scene.source, 8, lossless=True), "source.mp4")
        assert again.id == source.id and list(stub.DownloadMedia(pb.MediaRef(id=again.id), timeout=10))


def test_cli_lists_and_deletes_media_by_prefix(start_server_at, tiny_model_dir, scene, tmp_path, capsys):
    server = start_server_at(tiny_model_dir, tmp_path / "data")
    address = f"127.0.0.1:{server.port}"
    with grpc.insecure_channel(address) as channel:
        source, mask, edited = upload_scene(framecast_pb2_grpc.FramecastStub(channel), scene)
    assert cli.main(["media", "--server", address]) == 0
    table = capsys.readouterr().out
    assert source.id[:19] + "..." in table and "source.mp4" in table and "3 media" in table
    assert cli.main(["media", "--server", address, "delete", "sha256:"]) == 2
    assert "ID 'sha256:' matches 3 media; give more digits" in capsys.readouterr().err
    assert cli.main(["media", "--server", address, "delete", "sha256:zz"]) == 2
    assert "ID 'sha256:zz' matches no stored media" in capsys.readouterr().err
    assert cli.main(["media", "--server", address, "delete", source.id[:19] + "...", mask.id]) == 0
    assert capsys.readouterr().out.split() == ["deleted", source.id, "deleted", mask.id]
    assert cli.main(["media", "list", "--server", address]) == 0
    assert "1 media" in capsys.readouterr().out


def test_cli_downloads_media_by_prefix(start_server_at, tiny_model_dir, scene, tmp_path, capsys):
    server = start_server_at(tiny_model_dir, tmp_path / "data")
    address = f"127.0.0.1:{server.port}"
    with grpc.insecure_channel(address) as channel:
        source, _, _ = upload_scene(framecast_pb2_grpc.FramecastStub(channel), scene)
    output = tmp_path / "out" / "copy.mp4"  # a missing directory is created
    assert cli.main(["media", "--server", address, "download", source.id[:19] + "...", "--output", str(output)]) == 0
    assert output.read_bytes() == encode_video(scene.source, 8, lossless=True)
    assert capsys.readouterr().out == f"{output} ({source.size_bytes} bytes, {source.id})\n"
    assert [p.name for p in output.parent.iterdir()] == ["copy.mp4"]  # no temporary file left behind

    output.write_bytes(b"older")  # replaced, as propagate and export replace theirs
    assert cli.main(["media", "download", source.id, "--output", str(output), "--server", address]) == 0
    assert output.stat().st_size == source.size_bytes
    capsys.readouterr()

    for prefix, problem in (("sha256:", "matches 3 media; give more digits"), ("sha256:zz", "matches no stored media")):
        assert cli.main(["media", "--server", address, "download", prefix, "--output", str(tmp_path / "x.mp4")]) == 2
        assert capsys.readouterr().err == f"error: ID {prefix!r} {problem}\n"
    assert not (tmp_path / "x.mp4").exists()
    assert cli.main(["media", "--server", address, "download", source.id, "--output", str(output.parent)]) == 2
    assert capsys.readouterr().err == f"error: --output: is a directory: {output.parent}\n"


def test_retention_deletes_media_older_than_the_period(start_server_at, tiny_model_dir, scene, tmp_path):
    with pytest.raises(InvalidInput, match="media_retention_hours.*-1"):
        ServerConfig.build(model_dir=str(tiny_model_dir), data_dir=str(tmp_path), media_retention_hours=-1)

    data_dir = tmp_path / "data"
    store = MediaStore(data_dir / "media", max_pixels=1 << 20, max_frames=33)
    old, again, new = (store.put(encode_png(scene.source[i]), f"{i}.png") for i in (0, 1, 2))
    two_hours_ago = time.time() - 7200
    for info in (old, again):
        os.utime(data_dir / "media" / info.id.removeprefix("sha256:") / "meta.json", (two_hours_ago, two_hours_ago))
    assert store.put(encode_png(scene.source[1])).created_at > time.time() - 60  # uploaded again: young again

    server = start_server_at(tiny_model_dir, data_dir, media_retention_hours=1.0)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        deadline = time.monotonic() + 30
        while old.id in {m.id for m in stub.ListMedia(pb.ListMediaRequest(), timeout=10).media}:
            assert time.monotonic() < deadline, "the retention sweep did not run"
            time.sleep(0.1)
        assert {m.id for m in stub.ListMedia(pb.ListMediaRequest(), timeout=10).media} == {again.id, new.id}
        expect(grpc.StatusCode.NOT_FOUND, lambda: stub.DownloadMedia(pb.MediaRef(id=old.id), timeout=10), old.id)
    # Nothing newer is touched by a direct sweep either.
    assert store.expire(3600) == [] and {m.id for m in store.list()} == {again.id, new.id}


def test_a_png_sequence_of_the_same_frames_is_the_same_media_whenever_it_is_written(scene, tmp_path, monkeypatch):
    """Results are content-addressed: the same frames written an hour apart give the same bytes and id."""
    from framecast.common.media import encode_png_sequence
    from framecast.engine.footage.read import decode_all

    store = MediaStore(tmp_path, max_pixels=1 << 20, max_frames=100)
    first = encode_png_sequence(scene.source)
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    again = encode_png_sequence(scene.source)
    assert again == first
    assert store.put(again, "b.zip").id == store.put(first, "a.zip").id
    assert (decode_all(first).frames == scene.source).all()
