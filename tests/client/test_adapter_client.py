"""The client's adapter calls and the CLI's adapters/import/export commands, against a fake stub."""

from __future__ import annotations

import grpc
import pytest

from framecast.client import FramecastClient, FramecastError, cli
from framecast.client.client import adapter_chunks
from framecast.client.display import format_adapter, format_adapter_table, format_change, format_targets
from framecast.v1 import framecast_pb2 as pb


def change(action=pb.ADAPTER_ACTION_LOADED, previous=pb.ADAPTER_STATE_READY, state=pb.ADAPTER_STATE_LOADED, **extra):
    return pb.AdapterChange(action=action, previous_state=previous,
                            adapter=pb.AdapterInfo(name="a", state=state, **extra.pop("info", {})), **extra)  # fmt: skip


def test_load_unload_pin_requests(client, fake_stub):
    fake = fake_stub(LoadAdapter=change(), UnloadAdapter=change(), PinAdapter=change())
    client.load_adapter("a")
    client.load_adapter("a", to="host", timeout=2)
    client.unload_adapter("a")
    client.unload_adapter("a", to="host")
    client.pin_adapter("a")
    client.unpin_adapter("a")
    assert [(name, request) for name, request, _ in fake.calls] == [
        ("LoadAdapter", pb.LoadAdapterRequest(name="a", to=pb.ADAPTER_STATE_LOADED)),
        ("LoadAdapter", pb.LoadAdapterRequest(name="a", to=pb.ADAPTER_STATE_CACHED)),
        ("UnloadAdapter", pb.UnloadAdapterRequest(name="a", to=pb.ADAPTER_STATE_READY)),
        ("UnloadAdapter", pb.UnloadAdapterRequest(name="a", to=pb.ADAPTER_STATE_CACHED)),
        ("PinAdapter", pb.PinAdapterRequest(name="a")),
        ("PinAdapter", pb.PinAdapterRequest(name="a", unpin=True)),
    ]
    assert [timeout for *_, timeout in fake.calls] == [5.0, 2, 5.0, 5.0, 5.0, 5.0]
    with pytest.raises(ValueError, match="to must be one of device, host"):
        client.load_adapter("a", to="disk")


def test_refusals_become_framecast_errors(client, fake_stub, rpc_error):
    fake_stub(UnloadAdapter=rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "adapter 'a' is pinned; unpin it first"))
    with pytest.raises(FramecastError) as caught:
        client.unload_adapter("a")
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION and "pinned" in caught.value.message


def test_import_streams_header_then_data(client, fake_stub, tmp_path):
    path = tmp_path / "style.safetensors"
    path.write_bytes(b"0123456789")
    fake = fake_stub(ImportAdapter=pb.AdapterInfo(name="style"))
    assert client.import_adapter("style", path, chunk_bytes=4).name == "style"
    chunks = fake.calls[0][1]
    assert chunks[0].header == pb.ImportAdapterHeader(name="style", filename="style.safetensors")
    assert [c.data for c in chunks] == [b"0123", b"4567", b"89"]
    assert not any(c.HasField("header") for c in chunks[1:])
    with pytest.raises(FileNotFoundError):
        adapter_chunks("x", tmp_path / "missing.safetensors")
    from_bytes = list(adapter_chunks("y", b"abc", filename="y.safetensors"))
    assert from_bytes[0].header.filename == "y.safetensors" and from_bytes[0].data == b"abc"


def test_export_asks_for_the_format_and_checks_the_size(client, fake_stub, server_stream, tmp_path):
    reply = [pb.FileChunk(filename="a.comfyui.safetensors", size_bytes=6, data=b"abc"), pb.FileChunk(data=b"def")]
    fake = fake_stub(ExportAdapter=server_stream(reply))
    assert client.export_adapter("a", tmp_path / "a.safetensors", format="comfyui") == b"abcdef"
    assert fake.calls[0][1] == pb.ExportAdapterRequest(name="a", format=pb.EXPORT_FORMAT_COMFYUI)
    assert (tmp_path / "a.safetensors").read_bytes() == b"abcdef"
    fake_stub(ExportAdapter=server_stream(reply[:1]))
    with pytest.raises(FramecastError) as caught:
        client.export_adapter("a")
    assert caught.value.code is grpc.StatusCode.DATA_LOSS
    with pytest.raises(ValueError, match="format"):
        client.export_adapter("a", format="ckpt")


def test_parse_adapter_commands():
    parser = cli.build_parser()
    load = parser.parse_args(["adapters", "load", "a", "--host"])
    assert (load.action, load.name, load.host, load.run) == ("load", "a", True, cli.cmd_adapters)
    unload = parser.parse_args(["adapters", "unload", "a", "--keep-in-host"])
    assert (unload.action, unload.keep_in_host) == ("unload", True)
    assert parser.parse_args(["adapters", "pin", "a"]).action == "pin"
    assert parser.parse_args(["adapters", "unpin", "a"]).action == "unpin"
    imported = parser.parse_args(["import", "lora.safetensors", "--name", "style"])
    assert (imported.file, imported.name, imported.run) == ("lora.safetensors", "style", cli.cmd_import)
    export = parser.parse_args(["export", "a", "--format", "comfyui"])
    assert (export.format, export.output) == ("comfyui", None)
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "a", "--format", "ckpt"])


@pytest.mark.parametrize(
    "argv, server, timeout",
    [(["adapters", "--server", "a:1", "show", "x"], "a:1", None),
     (["adapters", "show", "x", "--server", "b:2", "--timeout", "3"], "b:2", 3.0),
     (["adapters", "--timeout", "4", "show", "x"], cli.DEFAULT_SERVER, 4.0),
     (["media", "delete", "sha256:ab", "--server", "c:3"], "c:3", None),
     (["media", "download", "sha256:ab", "--output", "f", "--server", "d:4"], "d:4", None),
     (["media"], cli.DEFAULT_SERVER, None)],
)  # fmt: skip
def test_server_options_go_before_or_after_the_action(argv, server, timeout):
    args = cli.build_parser().parse_args(argv)
    assert (args.server, args.timeout) == (server, timeout)


def test_cli_runs_adapter_commands(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(FramecastClient, "pin_adapter", lambda self, name, timeout=None: change(
        pb.ADAPTER_ACTION_PINNED, evicted=["old"], info={"pinned": True}))
    assert cli.main(["adapters", "pin", "a"]) == 0
    assert capsys.readouterr().out.strip() == "a: pinned (ready -> loaded); evicted old"

    asked = {}

    def imported(self, name, path, timeout=None, drop_unsupported=False, sampling=None):
        asked.update(drop_unsupported=drop_unsupported, sampling=sampling)
        return pb.AdapterInfo(name=name, state=pb.ADAPTER_STATE_READY, rank=16, origin="imported from comfyui",
                              dropped=["a.hada_w1_a: a LoHa factor"], changed_parameters=3,
                              sampling=pb.Sampling(**(sampling or {})))  # fmt: skip

    monkeypatch.setattr(FramecastClient, "import_adapter", imported)
    lora = tmp_path / "my_style.v2.safetensors"
    lora.write_bytes(b"x")
    assert cli.main(["import", str(lora)]) == 0
    out = capsys.readouterr().out
    assert "my_style" in out and "imported from comfyui" in out and "ready" in out
    assert asked == {"drop_unsupported": False, "sampling": None}
    assert cli.main(["import", str(lora), "--drop-unsupported", "--sampling", "steps=4,guidance_scale=1,shift=5"]) == 0
    out = capsys.readouterr().out
    assert asked == {"drop_unsupported": True, "sampling": {"steps": 4, "guidance_scale": 1.0, "shift": 5.0}}
    assert "dropped     a.hada_w1_a: a LoHa factor" in out and "steps=4, guidance_scale=1, shift=5" in out
    assert "3 base parameters" in out
    with pytest.raises(SystemExit) as refused:
        cli.main(["import", str(lora), "--sampling", "steps=four"])
    assert refused.value.code == 2 and "'steps=four': 'four' is not a number" in capsys.readouterr().err

    written = {}

    def export(self, name, path=None, format="diffusers", timeout=None):
        written.update(name=name, path=str(path), format=format)
        return b"abc"

    monkeypatch.setattr(FramecastClient, "export_adapter", export)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["export", "a", "--format", "comfyui"]) == 0
    assert written == {"name": "a", "path": "a.comfyui.safetensors", "format": "comfyui"}
    assert cli.main(["import", str(tmp_path / "missing.safetensors")]) == 2


def test_formatting():
    assert format_change(change(pb.ADAPTER_ACTION_NONE, pb.ADAPTER_STATE_LOADED)) == "a: nothing to do (loaded)"
    assert format_change(change(pb.ADAPTER_ACTION_UNLOADED, pb.ADAPTER_STATE_LOADED, pb.ADAPTER_STATE_CACHED)) == (
        "a: unloaded (loaded -> cached)")
    table = format_adapter_table([pb.AdapterInfo(name="a", state=pb.ADAPTER_STATE_CACHED, rank=16, size_bytes=2048, pinned=False),
                                  pb.AdapterInfo(name="b", state=pb.ADAPTER_STATE_FAILED, error="bad file")])  # fmt: skip
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["name", "state", "rank"]
    assert lines[1].split()[:5] == ["a", "cached", "16", "2.0", "KiB"] and lines[2].split()[:2] == ["b", "failed"]
    assert format_adapter_table([]) == "no adapters"
    shown = format_adapter(pb.AdapterInfo(name="b", state=pb.ADAPTER_STATE_FAILED, error="bad file", pinned=True))
    assert "failed, pinned" in shown and "error       bad file" in shown


def test_targets_repeated_in_every_block_are_said_once():
    per_block = ["attn1.to_q", "attn1.to_k", "ffn.net.2"]
    modules = [f"blocks.{i}.{m}" for i in range(40) for m in per_block]
    assert format_targets(modules) == "120 linears: attn1.to_q, attn1.to_k, ffn.net.2 in blocks 0-39"
    uneven = ["blocks.0.attn1.to_q", "blocks.2.attn1.to_q", "blocks.0.ffn.net.2", "proj_out"]
    assert format_targets(uneven) == "4 linears: attn1.to_q in blocks 0, 2; ffn.net.2 in block 0; proj_out"
    assert format_targets([]) == "-"
