"""The method's conditioning: edit masks, the 4-channel spatiotemporal mask, the greyed
condition video, and the latent-resolution loss weight (docs/method.md, "The four mask channels", "What the method changes").

Conventions: a pixel ``edit_mask`` is ``[F, H, W] bool`` with True = the region to edit;
a latent ``keep_mask`` is 1 = known/keep, 0 = to be generated, as diffusers builds it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from framecast.common.requests import MaskMode
from framecast.engine.errors import InvalidInput
from framecast.engine.method.windows import VAE_TEMPORAL, check_frame_count, latent_frames  # noqa: F401 (the conditioning's frame rules)

VAE_SPATIAL = 8  # Wan2.1's; a pipeline's own is pipe.vae_scale_factor_spatial
BBOX_MIN_AREA = 50  # px at 832x480: smaller components are dropped, as the public preprocessing does
BBOX_REFERENCE_PIXELS = 832 * 480  # the minimum area scales with the frame's area
BBOX_GROWTH = 0.10  # each box grows by 10% of its size, half on each side


def check_frame_size(height: int, width: int, field: str = "video") -> None:
    if height % 16 or width % 16:
        raise InvalidInput(field, f"{width}x{height}", "width and height must be multiples of 16")


# --- pixel-space edit masks ---------------------------------------------------------------


def prepare_edit_mask(edit_mask: np.ndarray, mode: MaskMode = MaskMode.BBOX, dilate_px: int = 0) -> np.ndarray:
    """Turn the user's mask into the one the method uses. [F, H, W] bool -> [F, H, W] bool."""
    mode = MaskMode(mode)
    if mode is MaskMode.EXACT:
        return edit_mask.copy()
    if mode is MaskMode.DILATE:
        if dilate_px < 0:
            raise InvalidInput("dilate_px", dilate_px, "must be >= 0")
        return _dilate(edit_mask, dilate_px)
    return _bounding_boxes(edit_mask)


def _dilate(edit_mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow by ``radius`` px: a pixel is set when any pixel within a (2r+1)-square around it is.
    The square is separable (rows, then columns), each pass a difference of running sums, so
    the cost does not grow with the radius."""
    if radius == 0:
        return edit_mask.copy()
    return _any_within(_any_within(edit_mask, radius, axis=2), radius, axis=1)


def _any_within(mask: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Whether any of mask[i - radius .. i + radius] along ``axis`` is set (clipped at the ends)."""
    length = mask.shape[axis]
    counts = np.cumsum(mask, axis=axis, dtype=np.int32)
    counts = np.concatenate([np.zeros_like(np.take(counts, [0], axis=axis)), counts], axis=axis)  # counts[i] = sum of mask[:i]
    index = np.arange(length)
    upper = np.minimum(index + radius + 1, length)
    lower = np.maximum(index - radius, 0)
    return np.take(counts, upper, axis=axis) > np.take(counts, lower, axis=axis)


def _components(edit_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of each frame of [F, H, W] bool (never joined across frames):
    (labels [F, H, W], 0 = background, 1..N; areas [N + 1], areas[0] the background's)."""
    from scipy import ndimage

    within_frame = np.zeros((3, 3, 3), dtype=bool)
    within_frame[1] = True  # the 3x3 neighbourhood in the same frame
    labels, count = ndimage.label(edit_mask, structure=within_frame)
    return labels, np.bincount(labels.ravel(), minlength=count + 1)


def bbox_min_area(height: int, width: int) -> int:
    """Components smaller than this many pixels are dropped by the bbox mode."""
    return max(1, round(BBOX_MIN_AREA * height * width / BBOX_REFERENCE_PIXELS))


def _bounding_boxes(edit_mask: np.ndarray) -> np.ndarray:
    """Each component's bounding box (components >= 50 px at 832x480, scaled by area), grown by 10%, filled."""
    from scipy import ndimage

    height, width = edit_mask.shape[1:]
    min_area = bbox_min_area(height, width)
    labels, areas = _components(edit_mask)
    out = np.zeros_like(edit_mask)
    for label, (frame, rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        if areas[label] < min_area:
            continue
        grow_y = round((rows.stop - rows.start) * BBOX_GROWTH / 2)
        grow_x = round((cols.stop - cols.start) * BBOX_GROWTH / 2)
        out[frame, max(0, rows.start - grow_y) : min(height, rows.stop + grow_y),
            max(0, cols.start - grow_x) : min(width, cols.stop + grow_x)] = True  # fmt: skip
    return out


# --- latent-space conditioning ------------------------------------------------------------


def latent_keep_mask(edit_mask: np.ndarray, first_frame_known: bool = True, spatial: int = VAE_SPATIAL) -> torch.Tensor:
    """The transformer's 4 mask channels. [F, H, W] bool -> [1, 4, F_lat, H/s, W/s] float32, for
    a VAE that shrinks space ``spatial`` (s) times.

    keep = 1 outside the edit region, 0 inside; frame 0 is all keep when it is given in full.
    Frame 0 is repeated four times so the frame axis divides into groups of 4, one group per
    latent frame, and each group becomes the 4 channels of that latent frame.
    """
    frames, height, width = edit_mask.shape
    keep = torch.from_numpy(~edit_mask).float()[None, None]  # [1, 1, F, H, W]
    keep = F.interpolate(keep, size=(frames, height // spatial, width // spatial), mode="nearest")
    if first_frame_known:
        keep[:, :, 0] = 1.0
    keep = torch.cat([keep[:, :, :1].repeat(1, 1, VAE_TEMPORAL, 1, 1), keep[:, :, 1:]], dim=2)  # [1, 1, F+3, h, w]
    keep = keep.view(1, -1, VAE_TEMPORAL, height // spatial, width // spatial)  # [1, F_lat, 4, h, w]
    return keep.transpose(1, 2).contiguous()  # [1, 4, F_lat, h, w]


def condition_video(first_frame: np.ndarray | None, source: np.ndarray, edit_mask: np.ndarray) -> torch.Tensor:
    """Frame 0 in full, later frames with the edit region painted mid-grey.

    first_frame: [H, W, 3] uint8, or None to grey frame 0 too (single-frame appearance
    samples); source: [F, H, W, 3] uint8; edit_mask: [F, H, W] bool.
    Returns [1, 3, F, H, W] float32 in [-1, 1]; grey is exactly 0.0.
    """
    video = unit_range(source)  # [F, H, W, 3]
    video = video.masked_fill(torch.from_numpy(edit_mask)[..., None], 0.0)
    if first_frame is not None:
        video[0] = unit_range(first_frame)
    return video.permute(3, 0, 1, 2)[None].contiguous()


def loss_weight(
    edit_mask: np.ndarray, w_edit: float = 1.0, w_keep: float = 1.0, spatial: int = VAE_SPATIAL
) -> torch.Tensor:
    """Per-latent weight of the flow-matching loss. [F, H, W] bool -> [1, 1, F_lat, H/s, W/s],
    s = ``spatial``, the VAE's spatial factor.

    A latent cell is in the edit region when any pixel of any frame it encodes is: latent
    frame 0 covers pixel frame 0, latent frame j >= 1 covers pixel frames 4j-3 .. 4j.
    """
    edit = torch.from_numpy(edit_mask).float()[None, None]  # [1, 1, F, H, W]
    edit = torch.cat([edit[:, :, :1].repeat(1, 1, VAE_TEMPORAL, 1, 1), edit[:, :, 1:]], dim=2)
    edit = F.max_pool3d(edit, kernel_size=(VAE_TEMPORAL, spatial, spatial))
    return torch.where(edit > 0, torch.tensor(float(w_edit)), torch.tensor(float(w_keep)))


def unit_range(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1], same layout; mid-grey 127.5 is 0.0 (the VAE's input range)."""
    return torch.from_numpy(np.require(pixels, requirements=("C", "W"))).float().div(127.5).sub(1.0)


def to_unit_range(frames: np.ndarray) -> torch.Tensor:
    """[F, H, W, 3] uint8 -> [1, 3, F, H, W] float32 in [-1, 1]."""
    return unit_range(frames).permute(3, 0, 1, 2)[None].contiguous()


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """[..., 3, F, H, W] in [-1, 1] -> [..., F, H, W, 3] uint8, rounding as diffusers' postprocessing
    does (x/2 + 0.5, clamp to [0, 1], then x255 rounded)."""
    frames = (video.float() / 2 + 0.5).clamp(0, 1)
    return (frames.movedim(-4, -1) * 255).round().to(torch.uint8).cpu().numpy()


# --- training-time colour variants --------------------------------------------------------


def colour_variant(frames: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``frames`` with the colours inside ``region`` changed the same way in every frame.

    The change is a random rotation of hue (about the grey axis of RGB, 60 to 300 degrees) and
    a brightness gain in [0.8, 1.2]. Training on such variants teaches an adapter that the
    region's look comes from the first frame while its motion is the clip's.
    frames: [F, H, W, 3] uint8; region: [F, H, W] bool. Returns a new [F, H, W, 3] uint8 array.
    """
    angle = np.deg2rad(rng.uniform(60.0, 300.0))
    gain = rng.uniform(0.8, 1.2)
    axis = np.full(3, 1.0 / np.sqrt(3.0))
    cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    rotation = np.cos(angle) * np.eye(3) + np.sin(angle) * cross + (1.0 - np.cos(angle)) * np.outer(axis, axis)
    out = frames.copy()
    pixels = frames[region].astype(np.float32) / 255.0  # [N, 3]
    out[region] = np.clip(pixels @ (gain * rotation).T.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out
