"""The real-footage commands against the real server (the tiny random model): ``framecast edit`` on
a clip that is not model-shaped, ``plan``, ``--detach`` then ``jobs watch``, ``jobs list`` and
``cancel``, a mask given as a folder of PNGs."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from PIL import Image

from framecast.client import FramecastClient
from framecast.client.cli import main
from framecast.common.media import encode_png
from framecast.v1 import framecast_pb2 as pb

from ..server.footage import make_footage, read_audio, read_video

FRAMES, FPS, WIDTH, HEIGHT = 20, 24, 96, 64  # not the model's shape: 3:2, 24 fps, 20 frames (not 4N+1)
FAST = ["--train-steps", "1", "--steps", "1", "--rank", "2"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 96x64 24 fps H.264 clip with AAC audio, its mask as a folder of PNGs, its edited first frame."""
    folder = tmp_path_factory.mktemp("clip")
    footage = make_footage(folder / "clip.mp4", 5, WIDTH, HEIGHT, [i / FPS for i in range(FRAMES)])
    masks = folder / "masks"
    masks.mkdir()
    for index, mask in enumerate(footage.edit_mask):  # names that sort wrongly as text: 2 before 10
        Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"mask{index}.png")
    (folder / "edited.png").write_bytes(encode_png(footage.edited_first_frame))
    return footage, masks, folder / "edited.png"


def _edit(server: str, clip, *options: str) -> list[str]:
    footage, masks, edited = clip
    return ["edit", str(footage.path), "--server", server, "--mask", str(masks), "--edited-first-frame", str(edited),
            "--prompt", footage.prompt, *FAST, *options]  # fmt: skip


def _snapshot(folder) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


def test_edit_restores_the_source_size_frames_and_audio(grpc_server, clip, tmp_path, capsys):
    footage, masks, _ = clip
    before = _snapshot(masks)
    output, frames_dir = tmp_path / "out.mp4", tmp_path / "frames"
    server = f"127.0.0.1:{grpc_server.port}"
    assert main(_edit(server, clip, "-o", str(output), "--frames-dir", str(frames_dir), "--quality", "10")) == 0
    out, err = capsys.readouterr()
    frames, times, _ = read_video(output)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert times[-1] == pytest.approx((FRAMES - 1) / FPS, abs=1e-3)
    assert read_audio(output).shape == read_audio(footage.path).shape
    assert _snapshot(masks) == before  # the folder was zipped, not touched
    assert re.search(r"^train job [0-9a-f]{16} accepted$", err, re.MULTILINE), err
    assert re.search(r"^propagate job [0-9a-f]{16} accepted$", err, re.MULTILINE), err
    assert re.search(r"^train motion 1/1 loss \d+\.\d{4}$", err, re.MULTILINE), err  # plain lines: not a terminal
    assert re.search(r"^propagate encode \d+/\d+", err, re.MULTILINE), err
    adapter = re.search(r"^adapter +(edit-[0-9a-f]{8})$", out, re.MULTILINE).group(1)
    assert f"output              {output}" in out and f"frames              {FRAMES}" in out
    working = int(re.search(r"^working grid +\d+x\d+, (\d+) frames", out, re.MULTILINE).group(1))
    assert len(list(frames_dir.glob("frame_*.png"))) == working
    with FramecastClient(server, timeout=10) as client:
        assert client.get_adapter(adapter).state != pb.ADAPTER_STATE_FAILED


def test_edit_names_what_each_time_it_reports_measured(grpc_server, clip, tmp_path, capsys):
    """Not a bare 'elapsed': the generation (denoising), the job (reading, generating, writing, and
    its wait in the queue) and the whole command with its uploads, each within the next."""
    started = time.monotonic()
    assert main(_edit(f"127.0.0.1:{grpc_server.port}", clip, "-o", str(tmp_path / "timed.mp4"))) == 0
    took = time.monotonic() - started
    out = capsys.readouterr().out
    assert "elapsed" not in out
    generation = float(re.search(r"^generation +(\d+\.\d) s \(denoising every window, on the server\)$", out,
                                 re.MULTILINE).group(1))  # fmt: skip
    job, queued = map(float, re.search(r"^job +(\d+\.\d) s running \(reading, generation, writing\), (\d+\.\d) s "
                                       r"queued$", out, re.MULTILINE).groups())  # fmt: skip
    command, uploads = map(float, re.search(r"^command +(\d+\.\d) s \(uploads (\d+\.\d) s\)$", out,
                                            re.MULTILINE).groups())  # fmt: skip
    assert generation <= job + 0.1 and job + queued <= command + 0.1 and uploads <= command <= took + 0.1, out


def test_plan_prints_the_grid_and_exits_2_with_every_problem(grpc_server, clip, capsys):
    server = f"127.0.0.1:{grpc_server.port}"
    plan = ["plan" if arg == "edit" else arg for arg in _edit(server, clip)]
    assert main(plan) == 0
    out = capsys.readouterr().out
    assert out.startswith("train\n") and "\npropagate\n" in out
    assert re.search(r"working grid +\d+x\d+ at 16 fps", out) and "windows         1 (" in out
    assert f"output          {FRAMES} frames" in out and out.count("problems        none") == 2

    assert main([*plan, "--start", "5", "--adapter", "bad name!", "--job", "train"]) == 2
    out, err = capsys.readouterr()
    assert "problems        2" in out and "propagate" not in out
    assert "- shot.start_s must be in [0, 0.833) s" in out and "- adapter must be" in out
    assert "error: 2 problems; framecast train would be refused" in err
    with FramecastClient(server, timeout=10) as client:  # nothing was queued
        assert not any(job.adapter == "bad name!" for job in client.list_jobs())


def test_detach_then_watch_reattaches(grpc_server, clip, tmp_path, capsys):
    server = f"127.0.0.1:{grpc_server.port}"
    assert main(_edit(server, clip, "--detach", "--adapter", "detached-edit")) == 0
    out, err = capsys.readouterr()
    train_id, propagate_id = out.split()
    assert f"train job {train_id} accepted" in err and f"framecast jobs --server {server} watch {propagate_id}" in err

    output = tmp_path / "watched.mp4"
    assert main(["jobs", "watch", propagate_id, "--server", server, "-o", str(output)]) == 0
    out, err = capsys.readouterr()
    assert read_video(output)[0].shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert f"propagate job {propagate_id} (detached-edit)" in err and f"output              {output}" in out
    assert main(["jobs", "watch", train_id[:6], "--server", server]) == 0  # a prefix, a finished job
    assert "adapter     detached-edit" in capsys.readouterr().out


def test_jobs_list_and_cancel(grpc_server, clip, capsys):
    footage, masks, _ = clip
    server = f"127.0.0.1:{grpc_server.port}"
    assert main(["train", "--server", server, "--adapter", "to-cancel", "--source", str(footage.path), "--mask",
                 str(masks), "--prompt", "p", "--steps", "10000", "--rank", "2", "--detach"]) == 0  # fmt: skip
    job_id = capsys.readouterr().out.strip()
    assert main(["jobs", "cancel", job_id, "--server", server]) == 0
    assert capsys.readouterr().out == f"cancelled job {job_id}\n"
    with FramecastClient(server, timeout=10) as client:
        deadline = time.monotonic() + 60
        while client.get_job(job_id).state != pb.JOB_STATE_CANCELLED:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert main(["jobs", "list", "--state", "cancelled", "--server", server]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["id", "kind", "state", "adapter"]
    assert any(line.split()[:4] == [job_id, "train", "cancelled", "to-cancel"] for line in lines[1:])
    assert main(["jobs", "--server", server, "watch", "no-such-job"]) == 2
    assert "JOB_ID 'no-such-job' matches no stored jobs" in capsys.readouterr().err
