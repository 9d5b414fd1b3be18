"""A contact sheet of a few frames of several videos, one video per row: ``source | mask | output``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from framecast.common import media

LABEL_WIDTH = 96  # pixels of the left column that holds the row names
HEADER_HEIGHT = 16  # pixels of the top row that holds the frame numbers
GAP = 2  # pixels between tiles
MIN_TILE = 128  # small frames are enlarged (nearest neighbour) to at least this height


def frame_indices(num_frames: int, columns: int) -> list[int]:
    """``columns`` evenly spaced frame indices in ``[0, num_frames)``, first and last included, no repeats."""
    if num_frames < 1 or columns < 1:
        raise ValueError(f"need num_frames >= 1 and columns >= 1 but got {num_frames} and {columns}")
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, min(columns, num_frames))})


def _as_rgb(frames: np.ndarray) -> np.ndarray:
    # [F, H, W, 3] uint8 or [F, H, W] bool (a mask, white = edit) -> [F, H, W, 3] uint8
    frames = np.asarray(frames)
    if frames.dtype == bool:
        return media.mask_to_frames(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"a row must be [F, H, W, 3] uint8 or [F, H, W] bool but is {frames.shape} {frames.dtype}")
    return frames


def build_strip(
    rows: Sequence[tuple[str, np.ndarray]], columns: int = 5, scale: int | None = None, labels: bool = True
) -> np.ndarray:
    """Lay out ``columns`` evenly spaced frames of each named video as one image, -> [H, W, 3] uint8.

    ``rows``: ``(name, frames)`` with frames ``[F, H, W, 3]`` uint8 or ``[F, H, W]`` bool, all of
    one frame size; the shortest row sets F. ``scale``: integer enlargement (default: enough
    for tiles at least ``MIN_TILE`` pixels high). ``labels`` adds row names and frame numbers.
    Raises ValueError for no rows, mismatched frame sizes or bad arrays.
    """
    if not rows:
        raise ValueError("build_strip needs at least one row")
    videos = [(name, _as_rgb(frames)) for name, frames in rows]
    sizes = {frames.shape[1:3] for _, frames in videos}
    if len(sizes) != 1:
        raise ValueError(f"rows must share one frame size but have {sorted(sizes)}")
    ((height, width),) = sizes
    scale = scale or max(1, -(-MIN_TILE // height))
    indices = frame_indices(min(frames.shape[0] for _, frames in videos), columns)
    tile_h, tile_w = height * scale, width * scale
    left, top = (LABEL_WIDTH, HEADER_HEIGHT) if labels else (0, 0)
    sheet = np.full(
        (top + len(videos) * (tile_h + GAP) - GAP, left + len(indices) * (tile_w + GAP) - GAP, 3), 255, np.uint8
    )
    for r, (_, frames) in enumerate(videos):
        for c, index in enumerate(indices):
            tile = frames[index].repeat(scale, axis=0).repeat(scale, axis=1)
            y, x = top + r * (tile_h + GAP), left + c * (tile_w + GAP)
            sheet[y : y + tile_h, x : x + tile_w] = tile
    if labels:
        sheet = _draw_labels(sheet, [name for name, _ in videos], indices, tile_h, tile_w)
    return sheet


def _draw_labels(sheet: np.ndarray, names: list[str], indices: list[int], tile_h: int, tile_w: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for r, name in enumerate(names):
        draw.text((4, HEADER_HEIGHT + r * (tile_h + GAP) + tile_h // 2 - 6), name[:14], fill=(0, 0, 0), font=font)
    for c, index in enumerate(indices):
        draw.text((LABEL_WIDTH + c * (tile_w + GAP) + 2, 2), f"frame {index}", fill=(0, 0, 0), font=font)
    return np.asarray(image)


def write_strip(path, rows: Sequence[tuple[str, np.ndarray]], columns: int = 5) -> None:
    """``build_strip`` saved as a PNG at ``path`` (written atomically)."""
    media.atomic_write(path, media.encode_png(build_strip(rows, columns)))
