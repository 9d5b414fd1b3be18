"""The output's name says what the file is, through the real server (the tiny random model): a
webm with Opus audio edited into ``out.mp4`` is a real mp4 with its audio as AAC, as long as the
source's; into ``out.mkv`` Matroska with the Opus copied; a name that is neither is refused before
anything is uploaded."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from framecast.client.cli import main
from framecast.common.media import encode_png

from ..server.footage import make_footage, read_audio, video_times

TIMES = [0.007, 0.05, 0.1, 0.3, 0.33, 0.6, 0.9, 1.0, 1.5, 2.0]  # variable, the first frame after 0


@pytest.fixture(scope="module")
def webm(tmp_path_factory):
    """A 96x64 variable-frame-rate VP9 webm with Opus audio, its mask and its edited first frame."""
    folder = tmp_path_factory.mktemp("webm")
    footage = make_footage(folder / "clip.webm", 5, 96, 64, TIMES, codec="libvpx-vp9", audio="libopus",
                           time_base=Fraction(1, 1000))  # fmt: skip
    mask = np.zeros((64, 96, 3), np.uint8)
    mask[16:48, 24:72] = 255
    (folder / "mask.png").write_bytes(encode_png(mask))
    (folder / "edited.png").write_bytes(encode_png(footage.edited_first_frame))
    return folder


def _propagate(server, folder, output, *options) -> int:
    return main(["propagate", "--server", server, "--source", str(folder / "clip.webm"), "--mask",
                 str(folder / "mask.png"), "--edited-first-frame", str(folder / "edited.png"), "--prompt", "p",
                 "--steps", "1", "--guidance", "1", "-o", str(output), *options])  # fmt: skip


def _streams(path) -> tuple[str, str, float]:
    """(container format, audio codec, seconds of decoded audio) of a file."""
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        rate = audio.codec_context.sample_rate
        return container.format.name, audio.codec_context.name, read_audio(path).shape[1] / rate


def test_opus_audio_asked_for_as_mp4_is_transcoded_into_a_real_mp4(grpc_server, webm, tmp_path, capsys):
    output = tmp_path / "out.mp4"
    assert _propagate(f"127.0.0.1:{grpc_server.port}", webm, output) == 0
    err = capsys.readouterr().err
    assert "note:" not in err, err
    formats, codec, seconds = _streams(output)
    assert "mp4" in formats.split(",") and codec == "aac", (formats, codec)
    _, source_codec, source_seconds = _streams(webm / "clip.webm")
    assert source_codec == "opus"
    assert seconds == pytest.approx(source_seconds, abs=1024 / 48000), (seconds, source_seconds)  # an AAC frame
    np.testing.assert_allclose(video_times(output), video_times(webm / "clip.webm"), atol=1e-3)


def test_opus_audio_asked_for_as_mkv_is_copied_into_matroska(grpc_server, webm, tmp_path, capsys):
    output = tmp_path / "out.mkv"
    assert _propagate(f"127.0.0.1:{grpc_server.port}", webm, output) == 0
    formats, codec, _ = _streams(output)
    assert "matroska" in formats.split(",") and codec == "opus", (formats, codec)
    np.testing.assert_array_equal(read_audio(output), read_audio(webm / "clip.webm"))


@pytest.mark.parametrize(
    "name, options, message",
    [("out.avi", [], "--output {out}: the video is written as .mp4 (its audio AAC"),
     ("out.mp4", ["--output-encoding", "png-sequence"], "--output {out}: png-sequence writes a zip of PNG frames")],
)  # fmt: skip
def test_a_name_the_output_cannot_have_is_refused_before_any_upload(webm, tmp_path, capsys, name, options, message):
    """The server address is a dead port: getting this far and no further shows no call was made."""
    output = tmp_path / name
    assert _propagate("127.0.0.1:1", webm, output, *options) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + message.format(out=output)), err
    assert not output.exists()


def _first_sound_s(path) -> float:
    """Seconds from the file's 0 to its audio's first loud sample."""
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        first = next(container.decode(audio))
        start, rate = float(first.pts * first.time_base), audio.codec_context.sample_rate
    loud = np.nonzero(np.abs(read_audio(path)[0]) > 0.02)[0]
    return start + loud[0] / rate


def test_a_part_transcoded_to_aac_sounds_when_its_copy_does(grpc_server, webm, tmp_path):
    """From 0.5 s on: the Opus copied into Matroska and the AAC of an mp4 start sounding at the same
    time, both videos starting at the source's first frame's time."""
    server = f"127.0.0.1:{grpc_server.port}"
    mp4, mkv = tmp_path / "part.mp4", tmp_path / "part.mkv"
    assert _propagate(server, webm, mp4, "--start", "0.5") == 0 and _propagate(server, webm, mkv, "--start", "0.5") == 0
    assert video_times(mp4)[0] == pytest.approx(TIMES[0], abs=1e-3) and video_times(mkv)[0] == pytest.approx(TIMES[0], abs=1e-3)
    assert _first_sound_s(mp4) == pytest.approx(_first_sound_s(mkv), abs=0.003), (_first_sound_s(mp4), _first_sound_s(mkv))
