"""Fast tests of the framecast command line that need no server: parsing options, refusing what a
request could not carry before any call, and how errors end a command."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
import torch

from framecast.client import FramecastClient, FramecastError, cli
from framecast.v1 import framecast_pb2 as pb


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
