"""Fast client tests that need no server: parsing, enum mapping, error conversion, chunking, strips."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import torch

from framecast.client import (
    FramecastClient,
    FramecastError,
    cli,
    collect_propagation,
    media_chunks,
    run_train,
    wait_for_result,
)
from framecast.client.client import OUTPUT_ENCODINGS, MiB, encode_array, enum_value, mask_mode_value
from framecast.client.progress import JobProgress, follow_job
from framecast.client.strip import GAP, HEADER_HEIGHT, LABEL_WIDTH, build_strip, frame_indices
from framecast.common import media
from framecast.engine.footage.read import decode_all
from framecast.v1 import framecast_pb2 as pb


# ---- import hygiene -------------------------------------------------------------------------


def test_client_imports_neither_torch_nor_diffusers():
    code = (
        "import sys, framecast.client, framecast.client.cli, framecast.client.strip, framecast.engine.toy.demo; "
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, "
        "[m for m in ('torch', 'diffusers') if m in sys.modules]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---- CLI parsing --------------------------------------------------------------------------


def test_parse_serve():
    args = cli.build_parser().parse_args(["serve", "--model", "m", "--data", "d", "--port", "0", "--max-queue", "3"])
    assert (args.model_dir, args.data_dir, args.host, args.port, args.device, args.dtype, args.max_queue) == (
        "m",
        "d",
        "127.0.0.1",
        0,
        "auto",
        "auto",
        3,
    )
    assert args.run is cli.cmd_serve


def test_parse_make_tiny_model():
    args = cli.build_parser().parse_args(["make-tiny-model", "out/model"])
    assert args.dir == "out/model" and args.run is cli.cmd_make_tiny_model


def test_parse_train_with_references_and_defaults():
    args = cli.build_parser().parse_args(
        ["train", "--server", "h:1", "--adapter", "a", "--source", "s.mp4", "--mask", "m.png", "--prompt", "p",
         "--reference", "8:e8.png", "--reference", "16:e16.png", "--loss-weights", "2", "0.5", "--mask-mode", "dilate",
         "--dilate-px", "4"]
    )  # fmt: skip
    assert args.server == "h:1" and args.adapter == "a" and args.prompt == "p"
    assert args.reference == [(8, "e8.png"), (16, "e16.png")]
    assert args.loss_weights == [2.0, 0.5] and args.mask_mode == "dilate" and args.dilate_px == 4
    # left to the server (a --preset's, the model's settings, the method's); the rest sent as shown
    assert (args.train_steps, args.rank, args.lr, args.seed) == (None, None, None, 0)
    assert args.timeout is None and args.run is cli.cmd_train


@pytest.mark.parametrize("spec", ["8", "x:e.png", "-1:e.png", "3:"])
def test_parse_train_rejects_bad_reference(spec, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(
            ["train", "--adapter", "a", "--source", "s", "--mask", "m", "--prompt", "p", f"--reference={spec}"]
        )
    assert exit_info.value.code == 2
    assert "FRAME_INDEX:IMAGE" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option, value",
    [("--steps", "0"), ("--steps", "-3"), ("--steps", "2.5"), ("--rank", "0"), ("--appearance-steps", "0"),
     ("--lr", "0"), ("--lr", "-1e-4"), ("--lr", "nan")],
)  # fmt: skip
def test_parse_train_refuses_counts_the_api_would_read_as_defaults(option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(
            ["train", "--adapter", "a", "--source", "s", "--mask", "m", "--prompt", "p", f"{option}={value}"]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert option in err and repr(value) in err


def test_parse_counts_accept_positive_values(capsys):
    args = cli.build_parser().parse_args(
        ["train", "--adapter", "a", "--source", "s", "--mask", "m", "--prompt", "p", "--steps", "+7", "--lr", "3e-4"]
    )
    assert (args.train_steps, args.lr) == (7, 3e-4)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["propagate", "--adapter", "a", "--source", "s", "--mask", "m",
                                       "--edited-first-frame", "e", "--prompt", "p", "--steps", "0"])  # fmt: skip
    assert "--steps: must be a whole number of at least 1 but got '0'" in capsys.readouterr().err


TRAIN = ["train", "--adapter", "a", "--source", "s", "--mask", "m", "--prompt", "p"]
PROPAGATE = ["propagate", "--adapter", "a", "--source", "s", "--mask", "m", "--edited-first-frame", "e", "--prompt", "p"]


def test_parse_adapter_strength_is_left_to_the_server_unless_given():
    assert cli.build_parser().parse_args(PROPAGATE).adapter_strength is None
    assert cli.build_parser().parse_args([*PROPAGATE, "--adapter-strength", "0.5"]).adapter_strength == 0.5


@pytest.mark.parametrize(
    "argv, option, value",
    [(TRAIN, "--seed", "-1"), (TRAIN, "--seed", "99999999999999999999999"), (TRAIN, "--seed", "1.5"),
     (TRAIN, "--dilate-px", "-5"), (TRAIN, "--colour-variants", "-1"), (TRAIN, "--colour-variants", "17"),
     (TRAIN, "--steps", "4294967296"), (TRAIN, "--rank", "99999999999"), (TRAIN, "--appearance-steps", "-2"),
     (TRAIN, "--loss-weights", "-1"), (TRAIN, "--loss-weights", "nan"), (TRAIN, "--timeout", "0"),
     (TRAIN, "--timeout", "-3"), (TRAIN, "--timeout", "nan"), (TRAIN, "--timeout", "1e10"),
     (PROPAGATE, "--feather-px", "-1"), (PROPAGATE, "--seed", "-1"), (PROPAGATE, "--seed", "18446744073709551616"),
     (PROPAGATE, "--dilate-px", "4294967296"), (PROPAGATE, "--steps", "4294967296"), (PROPAGATE, "--guidance", "-1"),
     (PROPAGATE, "--guidance", "inf"), (PROPAGATE, "--timeout", "0"), (PROPAGATE, "--adapter-strength", "nan"),
     (PROPAGATE, "--adapter-strength", "-0.5"),
     (["demo"], "--seed", "-1"), (["demo"], "--colour-variants", "-1"), (["demo"], "--w-keep", "-0.5"),
     (["demo"], "--adapter-strength", "nan"), (["demo"], "--guidance", "-1"),
     (["demo"], "--steps", "99999999999"), (["adapters", "list"], "--timeout", "0"), (["info"], "--timeout", "-1"),
     (["export", "a"], "--timeout", "0"), (["import", "f"], "--timeout", "0"), (["media"], "--timeout", "0"),
     (["train-toy-model", "out"], "--seed", "-1"), (["train-toy-model", "out"], "--threads", "0"),
     (["train-toy-model", "out"], "--minutes", "-1"), (["train-toy-model", "out"], "--transformer-steps", "-1")],
)  # fmt: skip
def test_parse_refuses_numbers_out_of_the_api_range(argv, option, value, capsys):
    """Values a request field cannot hold (protobuf raises "Value out of range" after the uploads)
    or that mean nothing (nan, a 0 s deadline) are argparse errors naming the option."""
    args = [*argv, f"{option}={value}"] if option != "--loss-weights" else [*argv, option, value, "1"]
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: must be" in err and repr(value) in err


def test_parse_accepts_the_edges_of_the_api_ranges():
    parser = cli.build_parser()
    train = parser.parse_args([*TRAIN, "--seed", str(2**64 - 1), "--dilate-px", "0", "--colour-variants", "16",
                               "--steps", str(2**32 - 1), "--loss-weights", "0", "1", "--timeout", "0.5"])  # fmt: skip
    assert (train.seed, train.dilate_px, train.colour_variants, train.train_steps) == (2**64 - 1, 0, 16, 2**32 - 1)
    assert train.loss_weights == [0.0, 1.0] and train.timeout == 0.5
    prop = parser.parse_args([*PROPAGATE, "--feather-px", "0", "--seed", "+5", "--guidance", "0"])
    assert (prop.feather_px, prop.seed, prop.guidance) == (0, 5, 0.0)
    assert parser.parse_args([*TRAIN, "--reference", f"{2**32 - 1}:e.png"]).reference == [(2**32 - 1, "e.png")]
    with pytest.raises(SystemExit):
        parser.parse_args([*TRAIN, "--reference", f"{2**32}:e.png"])


def test_main_refuses_a_negative_seed_before_uploading(tmp_path, capsys):
    source = tmp_path / "source.mp4"
    source.write_bytes(b"x")
    with pytest.raises(SystemExit) as exit_info:  # 127.0.0.1:1: a call would fail UNAVAILABLE, not exit 2
        cli.main(["train", "--server", "127.0.0.1:1", "--adapter", "a", "--source", str(source), "--mask",
                  str(source), "--prompt", "p", "--seed", "-1"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "argument --seed: must be a whole number of at least 0 but got '-1'" in capsys.readouterr().err


def test_parse_train_rejects_unknown_mask_mode(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(
            ["train", "--adapter", "a", "--source", "s", "--mask", "m", "--prompt", "p", "--mask-mode", "blob"]
        )
    assert "--mask-mode" in capsys.readouterr().err


def test_parse_propagate():
    args = cli.build_parser().parse_args(
        ["propagate", "--adapter", "a", "--source", "s.mp4", "--mask", "m.mp4", "--edited-first-frame", "e.png",
         "--prompt", "p", "--composite", "--guidance", "1", "--output", "o.mp4", "--frames-dir", "fr"]
    )  # fmt: skip
    assert args.composite and args.guidance == 1.0 and args.output == "o.mp4" and args.frames_dir == "fr"
    assert (args.steps, args.seed, args.feather_px, args.output_encoding, args.negative_prompt) == (None, 0, None, "mp4", "")
    from framecast.client.cli.jobs import propagate_kwargs
    from framecast.client.requests import job_request

    # steps left unset on the command line stay unset: the server fills them (a --preset's, the model's, 30)
    assert job_request("propagate", "a", "s", "m", "e", "p", **propagate_kwargs(args)).steps == 0
    assert args.run is cli.cmd_propagate


@pytest.mark.parametrize(
    "argv, action, name",
    [([], None, None), (["list"], "list", None), (["show", "a"], "show", "a"), (["delete", "b"], "delete", "b")],
)
def test_parse_adapters(argv, action, name):
    args = cli.build_parser().parse_args(["adapters", "--server", "h:2", *argv])
    assert args.action == action and getattr(args, "name", None) == name and args.run is cli.cmd_adapters


def test_parse_export_info_demo():
    parser = cli.build_parser()
    export = parser.parse_args(["export", "--server", "h:3", "a", "--output", "a.safetensors"])
    assert (export.name, export.output, export.format, export.server) == ("a", "a.safetensors", "diffusers", "h:3")
    info = parser.parse_args(["info", "--server", "h:4", "--timeout", "2.5"])
    assert info.server == "h:4" and info.timeout == 2.5 and info.run is cli.cmd_info
    demo = parser.parse_args(["demo"])
    assert (demo.out, demo.model, demo.steps, demo.frames, demo.seed) == ("demo-out", None, None, 25, 0)
    assert (demo.width, demo.height, demo.fps) == (128, 128, 24.0)  # a user's clip, not the model's 64x64 at 16 fps
    # Unset, the training and sampling settings are the model's own: the built-in model's are the tuned ones.
    assert (demo.lr, demo.colour_variants, demo.guidance, demo.adapter_strength) == (None, None, None, None)
    from framecast.engine.model import builtin_model_dir
    from framecast.engine.model_settings import ModelSettings

    tuned = ModelSettings.load(builtin_model_dir())
    assert (tuned.train["steps"], tuned.train["learning_rate"], tuned.train["colour_variants"]) == (200, 1e-3, 7)
    assert (tuned.propagate["guidance_scale"], tuned.propagate["adapter_strength"]) == (2.0, 0.6)
    assert demo.first_frame_reference and not parser.parse_args(["demo", "--no-first-frame-reference"]).first_frame_reference


def test_parse_requires_a_command():
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([])


# ---- CLI error handling -------------------------------------------------------------------


def test_main_prints_framecast_error_and_exits_2(monkeypatch, capsys):
    def refuse(self, timeout=None):
        raise FramecastError(grpc.StatusCode.UNAVAILABLE, "the model is still loading")

    monkeypatch.setattr(FramecastClient, "server_info", refuse)
    assert cli.main(["info", "--server", "127.0.0.1:1"]) == 2
    assert capsys.readouterr().err.strip() == "error: UNAVAILABLE: the model is still loading"


def test_main_names_the_flag_of_a_missing_file(tmp_path, capsys):
    source = tmp_path / "source.mp4"
    source.write_bytes(b"x")
    argv = ["propagate", "--server", "127.0.0.1:1", "--source", str(source), "--mask", str(tmp_path / "nope.png"),
            "--edited-first-frame", str(source), "--prompt", "p"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --mask: no such file") and "nope.png" in err


@pytest.mark.parametrize(
    "command, option, target, message",
    [("propagate", "--output", ".", "--output: is a directory: "),
     ("propagate", "--output", "file/out.mp4", "--output: {tmp}/file is not a directory: "),
     ("propagate", "--frames-dir", "file", "--frames-dir: not a directory: "),
     ("export", "--output", ".", "--output: is a directory: "),
     ("media", "--output", ".", "--output: is a directory: "),
     ("media", "--output", "file/out.mp4", "--output: {tmp}/file is not a directory: "),
     ("demo", "--out", "file", "--out: not a directory: ")],
)  # fmt: skip
def test_main_refuses_an_unwritable_output_before_any_call(tmp_path, capsys, command, option, target, message):
    """Checked before anything is uploaded or run: the server address is a dead port, so getting
    this far and no further shows no call was made (a call would fail UNAVAILABLE)."""
    (tmp_path / "file").write_bytes(b"x")
    target = str(tmp_path / target)
    argv = {
        "propagate": ["propagate", "--server", "127.0.0.1:1", "--source", str(tmp_path / "file"), "--mask",
                      str(tmp_path / "file"), "--edited-first-frame", str(tmp_path / "file"), "--prompt", "p"],
        "export": ["export", "--server", "127.0.0.1:1", "a"],
        "media": ["media", "--server", "127.0.0.1:1", "download", "sha256:ab"],
        "demo": ["demo"],
    }[command]  # fmt: skip
    assert cli.main([*argv, option, target]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + message.format(tmp=tmp_path)) and target in err and "UNAVAILABLE" not in err


@pytest.mark.parametrize("failure", ["write", "download"])
def test_a_result_that_cannot_be_saved_is_named_by_its_id(client, fake_stub, server_stream, rpc_error, tmp_path,
                                                          failure):  # fmt: skip
    """The job finished: when its output cannot be written (or downloaded) the error says where the
    result is and how to fetch it, instead of a traceback that loses it."""
    chunks = [pb.MediaChunk(header=pb.MediaRef(id="sha256:0123abcd", size_bytes=3), data=b"abc")]
    if failure == "write":
        fake_stub(DownloadMedia=server_stream(chunks))
        output = tmp_path  # a directory: the atomic write's rename fails
    else:
        fake_stub(DownloadMedia=server_stream([], rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")))
        output = tmp_path / "out.mp4"
    result = pb.PropagateResult(video=pb.MediaRef(id="sha256:0123abcd"))
    with pytest.raises(cli.CliError) as info:
        cli.save_result(client, result, output, timeout=None)
    message = str(info.value)
    expected = "could not write --output" if failure == "write" else "could not download the result into"
    assert message.startswith(f"{expected} {output}: ")
    assert "stored on the server as sha256:0123abcd" in message
    assert "framecast media --server 127.0.0.1:1 download sha256:0123abcd --output FILE" in message
    fake_stub(DownloadMedia=server_stream(chunks))
    cli.save_result(client, result, tmp_path / "new" / "out.mp4", timeout=None)  # parents are created
    assert (tmp_path / "new" / "out.mp4").read_bytes() == b"abc"


def test_media_download_names_an_output_it_could_not_write(monkeypatch, tmp_path, capsys):
    listing = pb.ListMediaResponse(media=[pb.MediaRef(id="sha256:0123abcd")])
    monkeypatch.setattr(FramecastClient, "list_media", lambda self, timeout=None: listing)

    def refuse(self, media_id, path, timeout=None):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(FramecastClient, "download_to", refuse)
    output = tmp_path / "out.mp4"
    assert cli.main(["media", "--server", "127.0.0.1:1", "download", "sha256:01", "--output", str(output)]) == 2
    assert capsys.readouterr().err == f"error: could not write --output {output}: Permission denied\n"


def test_demo_rejects_bad_frame_count(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--frames", "3"]) == 2
    assert "--frames must be at least 5" in capsys.readouterr().err


def test_python_dash_m_reports_errors_of_the_modules_it_runs(tmp_path):
    """``python -m framecast.client.cli``: a CliError raised in demo.py is printed, not a traceback."""
    done = subprocess.run([sys.executable, "-m", "framecast.client.cli", "demo", "--out", str(tmp_path), "--frames",
                           "3"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert (done.returncode, done.stderr) == (2, "error: --frames must be at least 5 but is 3\n")


# ---- enums ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [("exact", pb.MASK_MODE_EXACT), ("bbox", pb.MASK_MODE_BBOX), ("DILATE", pb.MASK_MODE_DILATE),
     (None, pb.MASK_MODE_UNSPECIFIED), (pb.MASK_MODE_BBOX, pb.MASK_MODE_BBOX)],
)  # fmt: skip
def test_mask_mode_mapping(value, expected):
    assert mask_mode_value(value) == expected


@pytest.mark.parametrize("value", ["box", "", 7, True, 1.0])
def test_unknown_mask_mode_is_a_value_error_naming_the_argument(value):
    with pytest.raises(ValueError, match="mask_mode must be one of exact, bbox, dilate"):
        mask_mode_value(value)


def test_output_encoding_mapping():
    assert enum_value("mp4-lossless", OUTPUT_ENCODINGS, "output_encoding") == pb.OUTPUT_ENCODING_MP4_H264_LOSSLESS
    assert enum_value("png_sequence", OUTPUT_ENCODINGS, "output_encoding") == pb.OUTPUT_ENCODING_PNG_SEQUENCE
    with pytest.raises(ValueError, match="output_encoding"):
        enum_value("gif", OUTPUT_ENCODINGS, "output_encoding")


# ---- error conversion ---------------------------------------------------------------------


def test_framecast_error_from_rpc_error(rpc_error):
    error = FramecastError.from_rpc_error(rpc_error(grpc.StatusCode.NOT_FOUND, "adapter 'x' not found"))
    assert error.code is grpc.StatusCode.NOT_FOUND and error.message == "adapter 'x' not found"
    assert str(error) == "NOT_FOUND: adapter 'x' not found"
    bare = FramecastError.from_rpc_error(grpc.RpcError("boom"))  # no .code(): UNKNOWN
    assert bare.code is grpc.StatusCode.UNKNOWN and bare.message == "boom"


def test_unary_rpc_error_becomes_framecast_error_from_none(client, fake_stub, rpc_error):
    fake_stub(GetAdapter=rpc_error(grpc.StatusCode.NOT_FOUND, "adapter 'x' not found"))
    with pytest.raises(FramecastError) as info:
        client.get_adapter("x")
    assert info.value.code is grpc.StatusCode.NOT_FOUND and info.value.message == "adapter 'x' not found"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_timeouts_default_to_the_client_and_can_be_overridden(client, fake_stub):
    fake_stub(GetServerInfo=pb.ServerInfo(version="v"), ListAdapters=pb.ListAdaptersResponse())
    assert client.server_info().version == "v"
    client.list_adapters(timeout=1.5)
    assert [timeout for _, _, timeout in client._stub.calls] == [5.0, 1.5]


def test_stream_error_mid_stream_becomes_framecast_error(client, fake_stub, rpc_error, server_stream):
    accepted = pb.JobEvent(job_id="j", accepted=pb.JobInfo(job_id="j"))
    call = server_stream([accepted], rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "out of memory"))
    fake_stub(Train=call)
    events = client.train("a", "sha256:s", "sha256:m", "p")
    assert next(events) == accepted
    with pytest.raises(FramecastError) as info:
        next(events)
    assert info.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.__suppress_context__
    assert call.cancelled


def test_abandoning_a_stream_cancels_the_call(client, fake_stub, server_stream):
    call = server_stream([pb.JobEvent(job_id="j"), pb.JobEvent(job_id="j")])
    fake_stub(WatchJob=call)
    events = client.watch_job("j")
    next(events)
    events.close()
    assert call.cancelled


def test_job_error_event_raises_with_its_code():
    cancelled = pb.JobError(code="CANCELLED", message="cancelled by its owner")
    events = [pb.JobEvent(job_id="j", progress=pb.Progress(step=1, total=2)), pb.JobEvent(job_id="j", error=cancelled)]
    seen = []
    with pytest.raises(FramecastError) as info:
        run_train(events, seen.append)
    assert info.value.code is grpc.StatusCode.CANCELLED and len(seen) == 2
    with pytest.raises(FramecastError) as info:
        wait_for_result([pb.JobEvent(job_id="j", error=pb.JobError(code="NOT_A_CODE", message="?"))])
    assert info.value.code is grpc.StatusCode.UNKNOWN


def test_stream_that_ends_early_is_an_error():
    with pytest.raises(FramecastError, match="ended before the job finished") as info:
        run_train([pb.JobEvent(job_id="j", accepted=pb.JobInfo(job_id="j"))])
    assert info.value.code is grpc.StatusCode.UNKNOWN


def _deadline_stream(server_stream, rpc_error, accepted=True):
    events = [pb.JobEvent(job_id="j-1", accepted=pb.JobInfo(job_id="j-1"))] if accepted else []
    events.append(pb.JobEvent(job_id="j-1", progress=pb.Progress(phase="motion", step=1, total=100)))
    return server_stream(events, rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))


@pytest.mark.parametrize(
    "state, says",
    [(pb.JobInfo(job_id="j-1", state=pb.JOB_STATE_RUNNING), "timed out after 5 s; cancelled job j-1"),
     (pb.JobInfo(job_id="j-1", state=pb.JOB_STATE_SUCCEEDED, adapter_result=pb.AdapterInfo(name="a")),
      "timed out after 5 s; job j-1 had already finished: adapter a is stored")],
)  # fmt: skip
def test_a_deadline_cancels_the_job(client, fake_stub, server_stream, rpc_error, state, says):
    """A passed deadline ends the stream, not the job: follow_job cancels it, as on Ctrl-C."""
    fake = fake_stub(Train=_deadline_stream(server_stream, rpc_error), CancelJob=state)
    events = client.train("a", "sha256:s", "sha256:m", "p")
    with pytest.raises(FramecastError) as info:
        follow_job(client, run_train, events, JobProgress("train", disable=True))
    assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED and info.value.message == says
    assert fake.calls[1:] == [("CancelJob", pb.JobRef(job_id="j-1"), 10)]


def test_a_deadline_before_the_job_is_named_or_another_error_cancels_nothing(client, fake_stub, server_stream,
                                                                            rpc_error):  # fmt: skip
    fake = fake_stub(Train=_deadline_stream(server_stream, rpc_error, accepted=False), CancelJob=pb.JobInfo())
    with pytest.raises(FramecastError, match="^DEADLINE_EXCEEDED: timed out after 2.5 s, before the server named"):
        follow_job(client, run_train, client.train("a", "s", "m", "p"), JobProgress("train", disable=True), timeout=2.5)
    assert [name for name, *_ in fake.calls] == ["Train"]
    refused = server_stream([], rpc_error(grpc.StatusCode.NOT_FOUND, "no media 's'"))
    fake = fake_stub(Train=refused, CancelJob=pb.JobInfo())
    with pytest.raises(FramecastError, match="^NOT_FOUND: no media 's'$"):
        follow_job(client, run_train, client.train("a", "s", "m", "p"), JobProgress("train", disable=True))
    assert [name for name, *_ in fake.calls] == ["Train"]


def test_collect_propagation_decodes_frames():
    frame = np.arange(16 * 32 * 3, dtype=np.uint8).reshape(16, 32, 3)
    result = pb.PropagateResult(num_frames=2, video=pb.MediaRef(id="sha256:o"))
    events = [pb.JobEvent(job_id="j", frame=pb.Frame(index=i, png=media.encode_png(frame + i))) for i in (1, 0)]
    frames, final = collect_propagation(events + [pb.JobEvent(job_id="j", result=result)])
    assert sorted(frames) == [0, 1] and final == result
    np.testing.assert_array_equal(frames[1], frame + 1)


def test_wait_ready_polls_health_until_serving(client, rpc_error):
    from grpc_health.v1 import health_pb2

    answers = iter(
        [
            rpc_error(grpc.StatusCode.UNAVAILABLE, "connecting"),
            health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING),
            health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING),
        ]
    )

    class Health:
        def Check(self, request, timeout=None):
            assert request.service == "" and timeout <= 5.0
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
            return answer

    client._health = Health()
    assert client.wait_ready(timeout=10) is True


def test_wait_ready_times_out_with_deadline_exceeded(client):
    started = time.monotonic()
    with pytest.raises(FramecastError, match="not ready after 0.3 s") as info:
        client.wait_ready(timeout=0.3)  # nothing listens on port 1
    assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5


# ---- requests -----------------------------------------------------------------------------


def test_train_request_fields(client, fake_stub, server_stream):
    fake_stub(Train=server_stream([]))
    client.train("a", pb.MediaRef(id="sha256:s"), "sha256:m", "p", steps=5, mask_mode="exact",
                 references=[(4, "sha256:r")], loss_weights=(2, 0.5), gradient_checkpointing=False)  # fmt: skip
    ((_, request, _),) = client._stub.calls
    assert request.source_id == "sha256:s" and request.steps == 5 and request.rank == 0  # 0 = server default
    assert request.mask_mode == pb.MASK_MODE_EXACT and request.gradient_checkpointing_off
    assert [(r.frame_index, r.image_id) for r in request.references] == [(4, "sha256:r")]
    assert (request.loss_weights.edit, request.loss_weights.keep) == (2.0, 0.5)
    with pytest.raises(ValueError, match="loss_weights"):
        client.train("a", "s", "m", "p", loss_weights=(1,))
    with pytest.raises(ValueError, match="mask_mode"):
        client.train("a", "s", "m", "p", mask_mode="tight")


def test_propagate_sets_optional_fields_explicitly(client, fake_stub, server_stream):
    fake_stub(Propagate=server_stream([]))
    client.propagate("a", "s", "m", "e", "p", guidance_scale=1.0, feather_px=0, output_encoding="png-sequence",
                     adapter_strength=0.0)  # fmt: skip
    client.propagate("a", "s", "m", "e", "p", guidance_scale=None, feather_px=None)
    (_, explicit, _), (_, unset, _) = client._stub.calls
    assert explicit.HasField("adapter_strength") and explicit.adapter_strength == 0.0
    assert not unset.HasField("adapter_strength")
    assert explicit.HasField("guidance_scale") and explicit.guidance_scale == 1.0
    assert explicit.HasField("feather_px") and explicit.feather_px == 0
    assert explicit.output_encoding == pb.OUTPUT_ENCODING_PNG_SEQUENCE and explicit.steps == 0  # the server's
    assert not unset.HasField("guidance_scale") and not unset.HasField("feather_px")


@pytest.mark.parametrize(
    "call, argument",
    [(lambda c: c.train("a", "s", "m", "p", seed=-1), "seed"),
     (lambda c: c.train("a", "s", "m", "p", seed=2**64), "seed"),
     (lambda c: c.train("a", "s", "m", "p", dilate_px=-5), "dilate_px"),
     (lambda c: c.train("a", "s", "m", "p", colour_variants=-1), "colour_variants"),
     (lambda c: c.train("a", "s", "m", "p", steps=2**32), "steps"),
     (lambda c: c.train("a", "s", "m", "p", rank=-1), "rank"),
     (lambda c: c.train("a", "s", "m", "p", appearance_steps=-1), "appearance_steps"),
     (lambda c: c.train("a", "s", "m", "p", references=[(-1, "sha256:r")]), "references frame_index"),
     (lambda c: c.propagate("a", "s", "m", "e", "p", feather_px=-1), "feather_px"),
     (lambda c: c.propagate("a", "s", "m", "e", "p", seed=-1), "seed"),
     (lambda c: c.propagate("a", "s", "m", "e", "p", dilate_px=2**32), "dilate_px"),
     (lambda c: c.propagate("a", "s", "m", "e", "p", steps=-30), "steps"),
     (lambda c: c.list_jobs(limit=-1), "limit")],
)  # fmt: skip
def test_out_of_range_numbers_are_value_errors_naming_the_parameter(client, fake_stub, server_stream, call, argument):
    fake = fake_stub(Train=server_stream([]), Propagate=server_stream([]), ListJobs=pb.ListJobsResponse())
    with pytest.raises(ValueError, match=rf"^{argument} must be between 0 and \d+ but is -?\d+$"):
        call(client)
    assert fake.calls == []  # refused before any call
    client.train("a", "s", "m", "p", seed=np.uint64(2**64 - 1), colour_variants=np.int32(3))
    ((_, request, _),) = fake.calls
    assert (request.seed, request.colour_variants) == (2**64 - 1, 3)
    with pytest.raises(TypeError, match="seed must be a whole number"):
        client.propagate("a", "s", "m", "e", "p", seed=1.5)


# ---- upload chunking ----------------------------------------------------------------------


def _check_chunks(chunks, data: bytes, filename: str, chunk_bytes: int):
    assert chunks[0].HasField("header")
    assert chunks[0].header.filename == filename and chunks[0].header.size_bytes == len(data)
    assert not any(chunk.HasField("header") for chunk in chunks[1:])
    assert all(len(chunk.data) <= chunk_bytes for chunk in chunks)
    assert b"".join(chunk.data for chunk in chunks) == data


@pytest.mark.parametrize("size, count", [(0, 1), (1, 1), (10, 1), (25, 3), (30, 3)])
def test_media_chunks_from_bytes(size, count):
    data = bytes(range(256))[:size] if size <= 256 else b""
    chunks = list(media_chunks(data, "clip.mp4", chunk_bytes=10))
    assert len(chunks) == count
    _check_chunks(chunks, data, "clip.mp4", 10)


def test_media_chunks_from_a_file(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 2 * MiB + 5, dtype=np.uint8).tobytes()
    path = tmp_path / "source.mp4"
    path.write_bytes(data)
    chunks = list(media_chunks(path))
    assert len(chunks) == 3
    _check_chunks(chunks, data, "source.mp4", MiB)


def test_media_chunks_fail_at_call_time():
    with pytest.raises(FileNotFoundError):
        media_chunks("/nonexistent/clip.mp4")
    with pytest.raises(ValueError, match="chunk_bytes"):
        media_chunks(b"abc", chunk_bytes=0)


def test_upload_streams_the_chunks(client, fake_stub):
    ref = pb.MediaRef(id="sha256:x", num_frames=1)
    fake_stub(UploadMedia=ref)
    assert client.upload(b"a" * 25, filename="e.png", chunk_bytes=10) == ref
    ((_, chunks, timeout),) = client._stub.calls
    _check_chunks(chunks, b"a" * 25, "e.png", 10)
    assert timeout == 5.0


def test_encode_array_picks_png_or_mp4():
    image = np.zeros((32, 48, 3), np.uint8)
    data, name = encode_array(image)
    assert name == "image.png" and decode_all(data).frames.shape == (1, 32, 48, 3)
    mask = np.zeros((5, 32, 48), bool)
    mask[:, 8:16, 8:24] = True
    data, name = encode_array(mask, lossless=True)
    decoded = decode_all(data)
    assert name == "video.mp4" and decoded.frames.shape == (5, 32, 48, 3)
    np.testing.assert_array_equal(media.mask_from_frames(decoded.frames), mask)
    assert encode_array(mask[0])[1] == "image.png"
    with pytest.raises(ValueError):
        encode_array(np.zeros((4, 4), np.float32))


def test_download_checks_size_and_writes_atomically(client, fake_stub, server_stream, tmp_path):
    chunks = [pb.MediaChunk(header=pb.MediaRef(id="sha256:o", size_bytes=6), data=b"abc"), pb.MediaChunk(data=b"def")]
    fake_stub(DownloadMedia=server_stream(chunks))
    assert client.download_to("sha256:o", tmp_path / "out" / "o.mp4").read_bytes() == b"abcdef"
    fake_stub(DownloadMedia=server_stream(chunks[:1]))
    with pytest.raises(FramecastError) as info:
        client.download("sha256:o")
    assert info.value.code is grpc.StatusCode.DATA_LOSS


# ---- strip --------------------------------------------------------------------------------


def test_frame_indices():
    assert frame_indices(17, 5) == [0, 4, 8, 12, 16]
    assert frame_indices(3, 5) == [0, 1, 2]
    assert frame_indices(1, 5) == [0]


def test_build_strip_shape():
    source = np.zeros((9, 32, 48, 3), np.uint8)
    mask = np.zeros((9, 32, 48), bool)
    sheet = build_strip([("source", source), ("mask", mask), ("output", source)], columns=5, scale=2)
    assert sheet.dtype == np.uint8
    assert sheet.shape == (HEADER_HEIGHT + 3 * 64 + 2 * GAP, LABEL_WIDTH + 5 * 96 + 4 * GAP, 3)
    bare = build_strip([("source", source)], columns=3, scale=1, labels=False)
    assert bare.shape == (32, 3 * 48 + 2 * GAP, 3)
    assert build_strip([("source", source)], columns=2).shape[0] == HEADER_HEIGHT + 128  # enlarged to MIN_TILE


def test_build_strip_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="frame size"):
        build_strip([("a", np.zeros((5, 16, 16, 3), np.uint8)), ("b", np.zeros((5, 32, 16, 3), np.uint8))])
    with pytest.raises(ValueError):
        build_strip([])


def test_parse_train_toy_model_schedule():
    parser = cli.build_parser()
    plain = parser.parse_args(["train-toy-model", "out"])
    assert (plain.dir, plain.seed, plain.vae_finetune_steps, plain.transformer_steps) == ("out", 0, None, None)
    longer = parser.parse_args(["train-toy-model", "out", "--vae-finetune-steps", "2000", "--transformer-steps", "5000"])
    assert (longer.vae_finetune_steps, longer.transformer_steps) == (2000, 5000)
    assert plain.vae_dim_mult is None
    assert parser.parse_args(["train-toy-model", "out", "--vae-dim-mult", "1,2,2"]).vae_dim_mult == (1, 2, 2)


@pytest.mark.parametrize("value", ["1,2", "1,0,2", "1,x,2", ""])
def test_parse_refuses_a_vae_dim_mult_without_three_positive_levels(value, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train-toy-model", "out", "--vae-dim-mult", value])
    assert "argument --vae-dim-mult" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="refused only where torch sees no CUDA GPU")
def test_train_toy_model_refuses_cuda_without_a_gpu(tmp_path, capsys):
    assert cli.main(["train-toy-model", str(tmp_path / "out"), "--device", "cuda"]) != 0
    err = capsys.readouterr().err
    assert "--device" in err and "cuda" in err and "no" in err
    assert not (tmp_path / "out").exists()


def test_train_toy_model_refuses_vae_levels_the_class_cannot_build(tmp_path, capsys):
    assert cli.main(["train-toy-model", str(tmp_path / "out"), "--vae-dim-mult", "1,2,4"]) != 0
    err = capsys.readouterr().err
    assert "--vae-dim-mult" in err and "1,2,4" in err and "divisible" in err
    assert not (tmp_path / "out").exists()


def test_train_toy_model_refuses_a_fresh_vae_it_would_not_train(tmp_path, capsys):
    from framecast.engine.model import builtin_model_dir

    argv = ["train-toy-model", str(tmp_path / "out"), "--init-from", str(builtin_model_dir()),
            "--vae-dim-mult", "1,2,2", "--vae-steps", "0"]  # fmt: skip
    assert cli.main(argv) != 0
    err = capsys.readouterr().err
    assert "--vae-steps" in err and "from scratch" in err and "[1, 2, 2]" in err
    assert not (tmp_path / "out").exists()


def test_parse_serve_adapter_cache_flags():
    args = cli.build_parser().parse_args(["serve", "--model", "m", "--data", "d", "--adapter-slots", "3",
                                          "--adapter-host-cache", "0.5", "--adapter-max-rank", "32"])  # fmt: skip
    assert (args.adapter_slots, args.adapter_host_cache_gb, args.adapter_max_rank) == (3, 0.5, 32)
