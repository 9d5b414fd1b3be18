"""Bounded work per refused upload, through the real server: an image or archive that would inflate
far beyond its size is refused from its declared sizes, and the server's peak memory for it stays
under twice the upload's size plus a fixed margin (issue 22: "bounded work per request")."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import grpc
import pytest

from framecast.v1 import framecast_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
MiB = 1 << 20
MARGIN = 16 * MiB  # gRPC's buffers, the stub's chunks, the interpreter: what any upload costs


def png_bomb(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` RGB whose rows are all zeros: a few hundred KiB that
    decode to ``3 * width * height`` bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    deflate, row = zlib.compressobj(9), b"\0" * (1 + 3 * width)
    pixels = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def zipped(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _peak_rss_since_reset() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))


def _reset_peak() -> int:
    """Reset this process's peak resident memory (Linux: clear_refs 5); returns the resident memory now."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError as error:
        pytest.skip(f"cannot reset the peak resident memory here: {error}")
    return _peak_rss_since_reset()


@pytest.fixture(scope="module")
def bombs():
    png = png_bomb(10_000, 10_000)  # 300 MB of pixels
    return {
        "png": png,
        "zip-of-pngs": zipped({f"{i:05d}.png": png for i in range(4)}),
        "zip-of-zeros": zipped({f"{i:05d}.png": b"\0" * (30 * MiB) for i in range(4)}),  # each under the entry limit
        "zip-declaring-512MiB": zipped({"00000.png": b"\0" * (512 * MiB)}),
        "not-media": bytes(range(256)) * (32 * MiB // 256),  # spooled to disk as it arrives, never held whole
    }


@pytest.mark.parametrize("kind", ["png", "zip-of-pngs", "zip-of-zeros", "zip-declaring-512MiB", "not-media"])
def test_a_refused_bomb_costs_at_most_twice_its_size(grpc_server, stub, bombs, kind):
    data = bombs[kind]
    chunks = [pb.MediaChunk(header=pb.MediaRef(filename=f"bomb.{kind[:3]}"), data=data[:MiB])]
    chunks += [pb.MediaChunk(data=data[start : start + MiB]) for start in range(MiB, len(data), MiB)]
    before = _reset_peak()
    with pytest.raises(grpc.RpcError) as caught:
        stub.UploadMedia(iter(chunks), timeout=60)
    grown = _peak_rss_since_reset() - before
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert "data" in caught.value.details() and grpc_server.config.data_dir not in caught.value.details()
    assert grown < 2 * len(data) + MARGIN, f"{kind} of {len(data)} bytes grew the peak by {grown} bytes"
    assert stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).ready
