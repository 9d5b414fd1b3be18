"""A fidelity curve as a picture: ``framecast edit --fidelity-plot`` and the docs' figures.

Drawn with Pillow (the client's own dependency): the share of the edited pixels each output frame
carries, the threshold as a dashed line, frames below it in red, the verdict as the title.
Torch-free.
"""

from __future__ import annotations

import math
from pathlib import Path

WIDTH, HEIGHT, MARGIN = 720, 300, 44
CURVE, LOW, AXIS, GRID, TEXT = (40, 110, 200), (210, 50, 40), (60, 60, 60), (225, 225, 225), (20, 20, 20)


def fidelity_png(curves: list[tuple[str, list[float]]], threshold: float, title: str) -> bytes:
    """A PNG of one or more ``(label, curve)`` fidelity curves (0 to 1 per frame; NaN where a frame
    tells nothing) on one axis, with ``threshold`` dashed."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    frames = max((len(c) for _, c in curves), default=1)
    left, right, top, bottom = MARGIN, WIDTH - 16, 28, HEIGHT - MARGIN + 8

    def x_of(frame: float) -> float:
        return left + (right - left) * frame / max(frames - 1, 1)

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * value

    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        draw.line([(left, y_of(tick)), (right, y_of(tick))], fill=GRID)
        draw.text((6, y_of(tick) - 6), f"{tick:.2f}", fill=TEXT)
    for frame in range(0, frames, max(1, frames // 10)):
        draw.text((x_of(frame) - 4, bottom + 6), str(frame), fill=TEXT)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=AXIS)
    for start in range(int(left), int(right), 12):  # the threshold, dashed
        draw.line([(start, y_of(threshold)), (min(start + 6, right), y_of(threshold))], fill=LOW)
    for number, (label, curve) in enumerate(curves):
        colour = CURVE if number == 0 else (120, 120, 120)
        points = [(x_of(i), y_of(v)) for i, v in enumerate(curve) if not math.isnan(v)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for i, value in enumerate(curve):
            if not math.isnan(value):
                dot = LOW if value < threshold and i else colour
                draw.ellipse([x_of(i) - 2.5, y_of(value) - 2.5, x_of(i) + 2.5, y_of(value) + 2.5], fill=dot)
        draw.text((right - 170, top + 4 + 14 * number), f"- {label}", fill=colour)
    draw.text((left, 8), title, fill=TEXT)
    draw.text((right - 90, HEIGHT - 16), "output frame", fill=TEXT)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def write_fidelity_plot(path: str | Path, result, title: str = "") -> Path:
    """Write a PropagateResult's fidelity curve as a PNG at ``path``."""
    from framecast.client.display import verdict_line

    fidelity = result.fidelity
    path = Path(path)
    path.write_bytes(fidelity_png([("fidelity", list(fidelity.curve))], fidelity.threshold,
                                  title or f"edit {verdict_line(result)}"))  # fmt: skip
    return path
