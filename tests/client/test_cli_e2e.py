"""The CLI against the real server: real mp4/png files in, real mp4/png/safetensors out."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from framecast.client.cli import main
from framecast.engine.media import decode_media, encode_png, encode_video, mask_to_frames


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
    video = decode_media(output.read_bytes())
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
