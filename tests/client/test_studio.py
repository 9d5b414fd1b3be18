"""framecast studio without a browser: ``framecast studio --server`` serves the page for a real server,
its process needs no torch, and what the page sends becomes the client's arguments (problems named
by the page's fields)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import pytest

from framecast.client.studio.views import PageError, edit_kwargs, page_field, region_kwargs
from .studio_browser import framecast_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(120)


def test_framecast_studio_serves_the_page_for_a_server(framecast_server):
    command = [sys.executable, "-m", "framecast.client.cli", "studio", "--server", f"127.0.0.1:{framecast_server.port}",
               "--port", "0"]  # fmt: skip
    studio = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        line = studio.stderr.readline()
        assert line.startswith("framecast studio on http://127.0.0.1:"), line
        url = line.split()[3]
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "<title>framecast studio</title>" in page and "/static/studio.js" in page
        assert "https://" not in page and "http://" not in page  # nothing fetched from elsewhere
        for name in ("studio.js", "results.js", "studio.css"):
            text = urllib.request.urlopen(f"{url}static/{name}", timeout=10).read().decode()
            assert "https://" not in text and "http://" not in text and "@import" not in text
        server = json.loads(urllib.request.urlopen(f"{url}api/server", timeout=30).read())
        assert server["ready"] and server["model"].startswith("toy-wan-i2v") and "fast" in server["presets"]
        assert server["first_frame_reference"] and {"csrt", "flow"} <= set(server["trackers"])
    finally:
        studio.send_signal(signal.SIGINT)
        assert studio.wait(timeout=30) == 0


def test_the_studio_loads_neither_torch_nor_the_engine():
    check = ("import sys; import framecast.client.cli.studio, framecast.client.studio.app, framecast.client.studio.server; "
             "loaded = [m for m in sys.modules if m in ('torch', 'diffusers', 'framecast.engine.engine', 'framecast.server.service')]; "
             "print(loaded); sys.exit(bool(loaded))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_problems_go_next_to_the_page_field_they_name():
    assert page_field("mask_prompt.box") == "region" and page_field("references[1].image_id") == "references"
    assert page_field("edited_first_frame_id") == "edited" and page_field("shot.start_s") == "source"
    assert page_field("", "prompt: is 600 tokens long, at most 512") == "prompt"
    assert page_field("", "the queue is full") == "run"


def test_the_page_s_edit_becomes_the_client_s_arguments():
    body = {"source": "sha256:s", "edited": "sha256:e", "prompt": " a green jacket ", "region": {"points": [[3, 4, False], [5, 6, True]]},
            "tracker": "", "shot": {"start_s": "0.5", "end_s": ""}, "preset": "fast", "references": [{"id": "sha256:r", "frame": "8"}]}  # fmt: skip
    train, propagate = edit_kwargs(body, first_frame_reference=True)
    assert train["points"] == [(3.0, 4.0, True), (5.0, 6.0, False)] and train["tracker"] is None
    assert train["references"] == [(0, "sha256:e"), (8, "sha256:r")] and train["prompt"] == "a green jacket"
    assert train["start_s"] == 0.5 and train["end_s"] is None and train["preset"] == "fast"
    assert propagate["edited_first_frame_id"] == "sha256:e" and propagate["composite"] and "references" not in propagate
    train, _ = edit_kwargs(dict(body, first_frame_reference=False), first_frame_reference=True)
    assert train["references"] == [(8, "sha256:r")]
    assert region_kwargs({"region": {"box": [1, 2, 3, 4]}, "tracker": "flow"}) == {"box": (1.0, 2.0, 3.0, 4.0), "tracker": "flow"}

    for missing, field in (("source", "source"), ("edited", "edited"), ("prompt", "prompt"), ("region", "region")):
        with pytest.raises(PageError) as refused:
            edit_kwargs(dict(body, **{missing: None}), first_frame_reference=False)
        assert refused.value.field == field
