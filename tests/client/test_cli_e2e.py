"""The CLI against the real server: real mp4/png files in, real mp4/png/safetensors out."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from framecast.client import FramecastClient
from framecast.client.cli import main
from framecast.common.media import encode_png, encode_video, mask_to_frames
from framecast.engine.footage.read import decode_all
from framecast.v1 import framecast_pb2 as pb


@pytest.fixture()
def files(tmp_path, scene):
    paths = {
        "source": tmp_path / "source.mp4",
        "mask": tmp_path / "mask.mp4",
        "edited": tmp_path / "edited.png",
    }
    paths["source"].write_bytes(encode_video(scene.source, 8, lossless=True))
    paths["mask"].write_bytes(encode_video(mask_to_frames(scene.edit_mask), 8, lossless=True))
    paths["edited"].write_bytes(encode_png(scene.edited_first_frame))
    return paths


def test_train_propagate_export_info(grpc_server, files, tmp_path, capsys):
    server = f"127.0.0.1:{grpc_server.port}"
    assert main(["train", "--server", server, "--adapter", "cli-e2e", "--source", str(files["source"]),
                 "--mask", str(files["mask"]), "--prompt", "a sprite", "--steps", "3", "--rank", "2"]) == 0
    output, frames_dir = tmp_path / "out.mp4", tmp_path / "frames"
    assert main(["propagate", "--server", server, "--adapter", "cli-e2e", "--source", str(files["source"]),
                 "--mask", str(files["mask"]), "--edited-first-frame", str(files["edited"]), "--prompt", "a sprite",
                 "--steps", "2", "--composite", "--output", str(output), "--frames-dir", str(frames_dir)]) == 0
    video = decode_all(output.read_bytes())
    assert video.frames.shape == (9, 64, 64, 3)
    pngs = sorted(frames_dir.glob("*.png"))
    assert len(pngs) == 9 and np.asarray(Image.open(pngs[0])).shape == (64, 64, 3)

    exported = tmp_path / "cli-e2e.safetensors"
    assert main(["export", "--server", server, "cli-e2e", "--output", str(exported)]) == 0
    from safetensors.torch import load_file

    assert any(k.startswith("transformer.blocks.0.") for k in load_file(exported))
    assert main(["info", "--server", server]) == 0
    assert "sdpa" in capsys.readouterr().out


def test_errors_exit_2_with_the_status(grpc_server, files, capsys):
    server = f"127.0.0.1:{grpc_server.port}"
    code = main(["propagate", "--server", server, "--adapter", "no-such-adapter", "--source", str(files["source"]),
                 "--mask", str(files["mask"]), "--edited-first-frame", str(files["edited"]), "--prompt", "p"])
    assert code == 2
    assert "NOT_FOUND" in capsys.readouterr().err
    code = main(["train", "--server", server, "--adapter", "x", "--source", "/nonexistent.mp4",
                 "--mask", str(files["mask"]), "--prompt", "p"])
    assert code == 2
    assert "--source" in capsys.readouterr().err


def test_a_timeout_cancels_the_job_and_names_it(grpc_server, files, capsys):
    """--timeout shorter than the training: the job is cancelled on the server, not left running
    unwatched, and the error names it."""
    server = f"127.0.0.1:{grpc_server.port}"
    code = main(["train", "--server", server, "--adapter", "cli-timeout", "--source", str(files["source"]),
                 "--mask", str(files["mask"]), "--prompt", "a sprite", "--steps", "10000", "--rank", "2",
                 "--timeout", "4"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    found = re.search(r"^error: DEADLINE_EXCEEDED: timed out after 4 s; cancelled job (\S+)$", err, re.MULTILINE)
    assert found, err
    with FramecastClient(server, timeout=10) as client:
        deadline = time.monotonic() + 60
        while (info := client.get_job(found.group(1))).state != pb.JOB_STATE_CANCELLED:
            assert info.state == pb.JOB_STATE_RUNNING and time.monotonic() < deadline, info
            time.sleep(0.1)


@pytest.mark.parametrize("argv", [["info"], ["adapters", "list"]])
def test_a_closed_pipe_ends_the_output_quietly(grpc_server, argv):
    """``framecast info | head -1``: the reader went away before the output was written. The CLI
    stops with the status SIGPIPE would give (141), without a BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "framecast.client.cli", argv[0], "--server",
                               f"127.0.0.1:{grpc_server.port}", *argv[1:]],
                              stdout=write_end, stderr=subprocess.PIPE, timeout=120)  # fmt: skip
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr.decode()) == (141, "")
