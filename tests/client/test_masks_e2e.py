"""Masks from a box on the first frame through the real server (the tiny random model): ``framecast
edit --box`` writes the output and, with ``--tracked-mask``, the tracked mask, which follows a
square moving across the frame; ``framecast propagate --mask`` with one still mask of that square
warns that the region moves out of it."""

from __future__ import annotations

import re

import numpy as np
import pytest

from framecast.client.cli import main
from framecast.common.media import encode_png

from ..server.footage import read_video, write_video

FRAMES, FPS, WIDTH, HEIGHT = 20, 24, 96, 64
SIDE, TOP, START, SPEED = 16, 24, 8, 3  # the square: its side, top, first left edge and pixels a frame
FAST = ["--steps", "1", "--guidance", "1"]


def _square(frame: np.ndarray, left: int) -> None:
    frame[TOP : TOP + SIDE, left : left + SIDE] = (230, 40, 40)
    frame[TOP + 5 : TOP + 10, left + 5 : left + 10] = 255  # a mark inside it, for the tracker


@pytest.fixture(scope="module")
def moving(tmp_path_factory):
    """A 96x64 24 fps clip of a red square crossing a still textured background from left to right
    (3 px a frame), its first frame edited (the square turned blue), and one still mask of the square
    where it starts."""
    folder = tmp_path_factory.mktemp("moving")
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack([40 + rows * 2, 60 + cols, 90 + 30 * ((rows // 8 + cols // 8) % 2)], -1).astype(np.uint8)
    frames = np.repeat(background[None], FRAMES, axis=0)
    for index, frame in enumerate(frames):
        _square(frame, START + SPEED * index)
    write_video(folder / "moving.mp4", frames, [index / FPS for index in range(FRAMES)], audio=None)
    edited = frames[0].copy()
    edited[TOP : TOP + SIDE, START : START + SIDE] = (40, 40, 230)
    (folder / "edited.png").write_bytes(encode_png(edited))
    still = np.zeros((HEIGHT, WIDTH), np.uint8)
    still[TOP : TOP + SIDE, START : START + SIDE] = 255
    (folder / "still.png").write_bytes(encode_png(np.repeat(still[..., None], 3, -1)))
    return folder


def test_edit_with_a_box_writes_the_output_and_the_tracked_mask(grpc_server, moving, tmp_path, capsys):
    output, tracked = tmp_path / "out.mp4", tmp_path / "tracked.mp4"
    assert main(["edit", str(moving / "moving.mp4"), "--server", f"127.0.0.1:{grpc_server.port}",
                 "--box", f"{START},{TOP},{SIDE},{SIDE}", "--tracker", "csrt", "--edited-first-frame",
                 str(moving / "edited.png"), "--prompt", "a blue square", "--train-steps", "1", "--rank", "2", *FAST,
                 "--tracked-mask", str(tracked), "-o", str(output)]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    assert read_video(output)[0].shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert f"tracked mask        {tracked}" in out.splitlines()
    said = re.findall(r"^tracked mask (sha256:[0-9a-f]{64}) \(csrt, (\d+) working frames\)$", err, re.MULTILINE)
    assert len(said) == 1, err  # the training and the propagation track once, and it is said once
    masks = read_video(tracked)[0].mean(-1) > 127
    assert masks.shape == (int(said[0][1]), HEIGHT, WIDTH)
    for working, mask in enumerate(masks):  # at 16 fps: working frame k shows source frame k * 24 / 16
        left = START + SPEED * round(working * FPS / 16)
        cols = np.nonzero(mask.any(0))[0]
        assert abs((cols.min() + cols.max()) / 2 - (left + SIDE / 2)) <= 4, (working, cols)
    # nothing said of the inputs (the tiny random model's edit is judged too, but that is the result's)
    assert re.findall(r"^warning: (?!edit_).*$", err, re.MULTILINE) == []


def test_a_still_mask_the_square_moves_out_of_is_warned_about(grpc_server, moving, capsys):
    assert main(["propagate", "--server", f"127.0.0.1:{grpc_server.port}", "--source", str(moving / "moving.mp4"),
                 "--mask", str(moving / "still.png"), "--edited-first-frame", str(moving / "edited.png"),
                 "--prompt", "a blue square", *FAST, "-o", str(moving / "still-out.mp4")]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    (warning,) = re.findall(r"^warning: region_moves: .*$", err, re.MULTILINE)
    assert "the region moves out of the single mask" in warning and warning.endswith(
        "(on the command line: --box, --points or --mask-frame0 instead of --mask)")
    assert "tracked mask" not in err + out  # a mask is used as it is, not tracked


def _edit(server: str, moving, box: str, *options: str) -> list[str]:
    return ["edit", str(moving / "moving.mp4"), "--server", server, "--box", box, "--edited-first-frame",
            str(moving / "edited.png"), "--prompt", "a blue square", "--train-steps", "1", "--rank", "2", *FAST,
            *options]  # fmt: skip


def test_a_box_off_the_left_edge_is_clipped_and_said_once(grpc_server, moving, tmp_path, capsys):
    """The square starts at x=8: a box from -8 covers it, hanging off the left edge (written as
    ``--box -8,...``, a value starting with a minus)."""
    output = tmp_path / "left.mp4"
    assert main(_edit(f"127.0.0.1:{grpc_server.port}", moving, f"-8,{TOP},32,{SIDE}", "-o", str(output))) == 0
    err = capsys.readouterr().err
    warnings = re.findall(r"^warning: (?!edit_).*$", err, re.MULTILINE)  # of the inputs, not the result's verdict
    assert warnings == [f"warning: box_clipped: mask_prompt.box -8,{TOP},32,{SIDE} reaches outside the 96x64 first "
                        f"frame: clipped to 0,{TOP},24,{SIDE} (x, y, width, height in source pixels) (on the command "
                        "line: --box)"], err  # fmt: skip
    assert read_video(output)[0].shape == (FRAMES, HEIGHT, WIDTH, 3)


def test_plan_warns_of_a_box_over_most_of_the_frame(grpc_server, moving, capsys):
    plan = ["plan" if word == "edit" else word for word in _edit(f"127.0.0.1:{grpc_server.port}", moving, "0,0,90,60")]
    assert main(plan) == 0
    out = capsys.readouterr().out
    assert out.count("  warning: box_large: mask_prompt.box 0,0,90,60 covers 88% of the 96x64 first frame") == 2, out


def test_a_bad_box_is_one_problem_of_an_edit_not_one_per_job(grpc_server, moving, tmp_path, capsys):
    """The training and the propagation both refuse a box outside the frame: one problem to fix."""
    output = tmp_path / "outside.mp4"
    assert main(_edit(f"127.0.0.1:{grpc_server.port}", moving, "200,10,20,20", "-o", str(output))) == 2
    err = capsys.readouterr().err
    assert err.count("mask_prompt.box lies entirely outside the 96x64 first frame") == 1, err
    assert "error: 1 problem (above); nothing was queued" in err, err
    assert not output.exists()
