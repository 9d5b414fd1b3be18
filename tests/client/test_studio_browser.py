"""framecast studio in a real browser (issue 33): headless Chromium drives the page against a real
``framecast serve`` on the built-in model. A clip with sound is uploaded and shown; a box is drawn on
frame 0 with the mouse and tracked, its overlay shown before any training; an edited first frame is
uploaded, the edit planned and run with live progress to its end; the result plays beside the source,
shows its verdict and figures, downloads, and comes back after a reload; the adapter exports and is
deleted. Points are clicked on frame 0 and a run is cancelled from the page. A bad upload shows the
server's own message next to the clip's field. Each step leaves a screenshot.
"""

from __future__ import annotations

import io
import json
import re
import struct

import av
import numpy as np
import pytest
from PIL import Image

from framecast.common.media import encode_png

from ..server.footage import make_footage
from .studio_browser import browser, framecast_server, page, shots, studio  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow
FPS, FRAMES, SIDE = 24, 24, 128  # a 1 s clip, 128x128 at 24 fps with AAC sound: the model works at 64x64, 16 fps


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studio-clip")
    footage = make_footage(folder / "jacket.mp4", 5, SIDE, SIDE, [k / FPS for k in range(FRAMES)])
    (folder / "edited.png").write_bytes(encode_png(footage.edited_first_frame))
    rows, cols = np.nonzero(footage.edit_mask[0])
    box = (int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1))
    return footage, folder / "edited.png", box


def drag_box(page, box: tuple[int, int, int, int]) -> None:
    """Press, move and release the mouse over frame 0, from the box's top left to its bottom right."""
    page.locator("#draw").scroll_into_view_if_needed()
    canvas = page.locator("#draw").bounding_box()
    scale = canvas["width"] / SIDE
    x, y, w, h = box
    page.mouse.move(canvas["x"] + x * scale, canvas["y"] + y * scale)
    page.mouse.down()
    for step in range(1, 6):
        page.mouse.move(canvas["x"] + (x + w * step / 5) * scale, canvas["y"] + (y + h * step / 5) * scale)
    page.mouse.up()


def overlay_box(page, studio) -> tuple[int, int, int, int]:
    """The box of the region in frame 0 of the tracked overlay the page shows, in source pixels."""
    source = page.evaluate("JSON.parse(localStorage.getItem('framecast-studio')).tracked.mask.id")
    png = page.request.get(f"{studio}api/overlay/{source}/0.png").body()
    alpha = np.asarray(Image.open(io.BytesIO(png)))[..., 3]
    scale = SIDE / alpha.shape[1]
    rows, cols = np.nonzero(alpha)
    return tuple(round(v * scale) for v in (cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1))


@pytest.mark.timeout(200)
def test_an_edit_from_the_clip_to_the_exported_adapter(page, studio, clip, shots):
    footage, edited, box = clip
    shots(page, "01-page")

    # A clip with sound: shown with a frame scrubber, its size, rate, length and sound.
    page.set_input_files("#source-file", str(footage.path))
    page.wait_for_selector("#clip-info:has-text('with sound')")
    info = page.inner_text("#clip-info")
    assert re.match(rf"{SIDE}×{SIDE}, 24(\.\d+)? fps, {FRAMES} frames, 1\.00 s, with sound, h264$", info), info
    assert page.get_attribute("#scrubber", "max") == str(FRAMES - 1)
    page.wait_for_function("document.getElementById('source-video').readyState >= 2")  # Chromium decodes it
    page.fill("#scrubber", "12")
    page.wait_for_selector("#frame-label:has-text('frame 12 / 23')")
    shots(page, "02-clip")
    page.fill("#scrubber", "0")

    # A box on frame 0, by mouse; then the region tracked through the shot, before any training.
    drag_box(page, box)
    drawn = json.loads(page.evaluate("JSON.stringify(JSON.parse(localStorage.getItem('framecast-studio')).region.box)"))
    assert all(abs(a - b) <= 1.5 for a, b in zip(drawn, box)), (drawn, box)
    shots(page, "03-box")
    page.click("#track-btn")
    page.wait_for_selector("#region-text:has-text('through 16 working frames')")  # tracked by the server's tracker
    page.wait_for_function("document.getElementById('overlay').complete && document.getElementById('overlay').naturalWidth > 0")
    assert page.is_visible("#overlay")
    assert all(abs(a - b) <= 3 for a, b in zip(overlay_box(page, studio), box))
    page.fill("#scrubber", "20")  # the overlay follows the clip
    page.wait_for_function("document.getElementById('overlay').src.endsWith('/13.png')")
    shots(page, "04-tracked")
    page.fill("#scrubber", "0")

    # The edited first frame, the words, a preset: the plan of both jobs, before anything runs.
    page.set_input_files("#edited-file", str(edited))
    page.wait_for_selector("#edited-preview:not([hidden])")
    page.fill("#prompt", footage.prompt)
    page.select_option("#preset", "fast")
    page.click("#plan-btn")
    page.wait_for_selector("#plan-out pre:has-text('propagate')", timeout=90_000)  # the first plan traces the memory model
    plans = page.inner_text("#plan-out")
    assert "working grid    64x64 at 16 fps" in plans and "problems        none" in plans and "steps           140" in plans
    shots(page, "05-plan")

    # Run: training then propagation, progress per phase to the end, then the result.
    page.click("#run-btn")
    page.wait_for_selector(".phase[data-phase='training']", timeout=60_000)
    shots(page, "06-running")
    page.wait_for_selector("#result:not([hidden])", timeout=180_000)
    for phase in ("training", "denoise", "encode"):
        done = page.eval_on_selector(f".phase[data-phase='{phase}'] progress", "p => p.value === p.max && p.max > 0")
        assert done, phase
    assert page.inner_text("#verdict").startswith("edit ")
    metrics = page.inner_text("#metrics")
    assert "background PSNR" in metrics and "frames              24" in metrics
    assert page.is_visible("#fidelity-plot")

    # Source and output play side by side, together.
    page.click("#pair-play")
    page.wait_for_function("document.getElementById('result-output').currentTime > 0.3")
    page.click("#pair-play")
    times = page.evaluate("[document.getElementById('result-source').currentTime, document.getElementById('result-output').currentTime]")
    assert times[0] > 0.2 and abs(times[0] - times[1]) < 0.25, times
    shots(page, "07-result")
    shots(page, "07-result-section", "#run-section")  # docs/studio.png

    # The edited clip downloads: the source's frames, rate and sound.
    with page.expect_download() as download:
        page.click("#download-link")
    assert download.value.suggested_filename == "jacket-edited.mp4"
    with av.open(download.value.path()) as container:
        assert container.streams.audio and container.streams.video[0].frames in (0, FRAMES)
        assert sum(1 for _ in container.decode(video=0)) == FRAMES

    # The adapter exports as safetensors (diffusers and ComfyUI layouts).
    adapter = page.input_value("#adapter")
    page.click("#adapters-refresh")
    row = page.locator(f"#adapters tr[data-adapter='{adapter}']")
    row.wait_for()
    for layout, name in (("diffusers", f"{adapter}.safetensors"), ("comfyui", f"{adapter}-comfyui.safetensors")):
        row.locator("select").select_option(layout)
        with page.expect_download() as download:
            row.locator("a", has_text="Export").click()
        data = open(download.value.path(), "rb").read()
        header = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
        assert download.value.suggested_filename == name and any("lora" in key for key in header)
    shots(page, "08-adapters")
    page.once("dialog", lambda dialog: dialog.accept())  # "Delete adapter ...?"
    row.locator("button", has_text="Delete").click()
    row.wait_for(state="detached")

    # A reload shows the page as it was: the jobs re-attached, the result back (its adapter deleted meanwhile).
    page.reload()
    page.wait_for_selector("#result:not([hidden])")
    assert page.inner_text("#verdict").startswith("edit ") and page.is_visible("#overlay")


@pytest.mark.timeout(120)
def test_a_bad_upload_shows_the_servers_message(page, framecast_server, tmp_path, shots):
    from framecast.client import FramecastClient, FramecastError

    bad = tmp_path / "holiday.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with FramecastClient(f"127.0.0.1:{framecast_server.port}") as client, pytest.raises(FramecastError) as refused:
        client.upload(bad)
    page.set_input_files("#source-file", str(bad))
    error = page.locator(".error[data-for='source']")
    error.wait_for()
    assert error.inner_text() == f"{refused.value.code.name}: {refused.value.message}"
    assert refused.value.code.name == "INVALID_ARGUMENT" and page.is_hidden("#viewer")
    shots(page, "09-bad-upload")


@pytest.mark.timeout(150)
def test_points_clicked_and_a_run_cancelled(page, clip, shots):
    footage, edited, box = clip
    page.set_input_files("#source-file", str(footage.path))
    page.wait_for_selector("#clip-info:has-text('with sound')")
    page.check("input[name='mode'][value='points']")
    page.locator("#draw").scroll_into_view_if_needed()
    canvas = page.locator("#draw").bounding_box()
    scale = canvas["width"] / SIDE
    x, y, w, h = box
    page.mouse.click(canvas["x"] + (x + w / 2) * scale, canvas["y"] + (y + h / 2) * scale)  # on the region
    page.keyboard.down("Shift")
    page.mouse.click(canvas["x"] + 10 * scale, canvas["y"] + 10 * scale)  # off it
    page.keyboard.up("Shift")
    points = page.evaluate("JSON.parse(localStorage.getItem('framecast-studio')).region.points")
    assert [p[2] for p in points] == [False, True] and abs(points[0][0] - (x + w / 2)) <= 1.5
    assert page.inner_text("#region-text") == "2 points (1 off the region)"

    page.set_input_files("#edited-file", str(edited))
    page.wait_for_selector("#edited-preview:not([hidden])")
    page.fill("#prompt", footage.prompt)
    page.select_option("#preset", "quality")  # 1,600 steps: long enough to cancel
    page.click("#run-btn")
    page.wait_for_selector(".phase[data-phase='training']", timeout=90_000)
    page.click("#cancel-btn")
    error = page.locator(".error[data-for='run']")
    page.wait_for_function("document.querySelector(\".error[data-for='run']\").textContent.includes('CANCELLED')")
    assert "FAILED_PRECONDITION" in error.inner_text() or "CANCELLED" in error.inner_text()
    page.wait_for_selector("#cancel-btn[disabled]")
    shots(page, "10-cancelled")

    # The jobs list says what became of them.
    page.click("#jobs-refresh")
    page.wait_for_selector("#jobs td:has-text('cancelled')")
