"""What the command line says of an edit's verdict and the model's settings, from the server's
replies (the client's own code, the channel underneath replaced)."""

from __future__ import annotations

import json
import math

from framecast.client import cli
from framecast.client.display import format_metrics, verdict_line
from framecast.client.plot import fidelity_png
from framecast.engine.model import builtin_model_dir
from framecast.engine.model_settings import ModelSettings
from framecast.v1 import framecast_pb2 as pb

from .conftest import RecordingStub


def test_framecast_info_shows_the_model_settings(monkeypatch, capsys):
    settings = json.dumps(ModelSettings.load(builtin_model_dir()).to_json())
    stub = RecordingStub(GetServerInfo=pb.ServerInfo(ready=True, model_settings_json=settings))
    monkeypatch.setattr("framecast.client.client.pb_grpc.FramecastStub", lambda channel: stub)
    assert cli.main(["info", "--server", "h:1"]) == 0
    out = capsys.readouterr().out
    assert "model settings   framecast.json; fidelity threshold 0.35, the edited first frame as a reference" in out
    assert "  train          learning_rate 0.001, steps 200, colour_variants 7, w_keep 0.25" in out
    assert "  preset fast    train: steps 40; propagate: steps 15, guidance_steps 5" in out


def test_the_verdict_is_said_first_and_loud_when_the_edit_did_not_hold():
    held = pb.PropagateResult(fidelity=pb.Fidelity(verdict=pb.EDIT_VERDICT_HELD, summary="held (fidelity mean 0.80)"))
    faded = pb.PropagateResult(fidelity=pb.Fidelity(verdict=pb.EDIT_VERDICT_FADED, summary="faded from frame 9 (...)"))
    assert verdict_line(held) == "held (fidelity mean 0.80)"
    assert verdict_line(faded) == "FADED from frame 9 (...)"
    assert verdict_line(pb.PropagateResult()) == "not judged (no edited first frame)"
    assert format_metrics(faded).splitlines()[1] == "edit                FADED from frame 9 (...)"


def test_the_fidelity_plot_is_a_png_with_the_curve():
    from io import BytesIO

    from PIL import Image

    png = fidelity_png([("fidelity", [1.0, 0.9, 0.8, math.nan, 0.2, 0.1])], 0.35, "edit FADED from frame 4")
    image = Image.open(BytesIO(png))
    assert image.format == "PNG" and image.size == (720, 300)
    pixels = image.convert("RGB").getcolors(1 << 20)
    assert any(colour == (210, 50, 40) for _, colour in pixels)  # the frames below the threshold, in red
