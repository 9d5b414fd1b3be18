"""A seeded procedural video world with ground-truth edits.

``make_scene(seed, config)`` renders a short video of one to three textured sprites
moving over a textured, optionally panning background, picks one sprite as the edit
target, and renders the same video a second time with only that sprite recoloured,
retextured or reshaped. The pair gives the demo its inputs (source video, edit mask,
edited first frame) and the benchmark an exact ground truth to score against.

numpy only, on purpose: the client-side demo imports this module and must not need
torch.

Sprite edges are hard (a pixel belongs to a sprite or it does not), so the masks are
exact and the edited video equals the source, bit for bit, outside ``edit_mask``.
Textures inside sprites and the background are smooth.
"""

from __future__ import annotations

import colorsys
import dataclasses
import enum
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["EditKind", "Scene", "SceneConfig", "Shape", "SpriteLook", "Texture", "make_scene"]


class EditKind(str, enum.Enum):
    RECOLOR = "recolor"  # another hue, same pattern and shape
    RETEXTURE = "retexture"  # another pattern, same colour and shape
    RESHAPE = "reshape"  # another shape of the same area, same colour and pattern


class Shape(str, enum.Enum):
    CIRCLE = "circle"
    ELLIPSE = "ellipse"
    SQUARE = "square"
    TRIANGLE = "triangle"
    STAR = "star"
    HEXAGON = "hexagon"


class Texture(str, enum.Enum):
    FLAT = "flat"
    STRIPES = "stripes"
    CHECKER = "checker"
    DOTS = "dots"


# Named hues, in degrees. Prompts use the names; colours are jittered around them.
_HUES: tuple[tuple[str, float], ...] = (
    ("red", 0.0), ("orange", 28.0), ("yellow", 52.0), ("green", 120.0),
    ("teal", 172.0), ("blue", 218.0), ("purple", 272.0), ("pink", 320.0),
)  # fmt: skip
_TEXTURE_WORDS = {Texture.FLAT: "", Texture.STRIPES: "striped", Texture.CHECKER: "checkered", Texture.DOTS: "dotted"}
_BACKGROUND_PATTERNS = ("textured", "striped", "checkered", "wavy")

# Every shape has the area of the unit circle, so a reshape keeps the sprite's size.
# Extent: the farthest point from the centre, in units of that circle's radius.
_SQUARE_HALF_SIDE = math.sqrt(math.pi) / 2
_ELLIPSE_AXES = (1.3, 1 / 1.3)
_HEXAGON_RADIUS = math.sqrt(2 * math.pi / (3 * math.sqrt(3)))
_TRIANGLE_RADIUS = math.sqrt(4 * math.pi / (3 * math.sqrt(3)))
_STAR_INNER_RATIO = 0.5
_STAR_RADIUS = math.sqrt(math.pi / (5 * _STAR_INNER_RATIO * math.sin(math.pi / 5)))
_EXTENT = {
    Shape.CIRCLE: 1.0,
    Shape.ELLIPSE: _ELLIPSE_AXES[0],
    Shape.SQUARE: _SQUARE_HALF_SIDE * math.sqrt(2),
    Shape.TRIANGLE: _TRIANGLE_RADIUS,
    Shape.STAR: _STAR_RADIUS,
    Shape.HEXAGON: _HEXAGON_RADIUS,
}
# A circle and a hexagon of equal area differ by a few edge pixels: not a reshape.
_TOO_SIMILAR = {frozenset({Shape.CIRCLE, Shape.HEXAGON})}

_MIN_VISIBLE = 0.35  # least visible share of the target per frame, without `occlude`
_MIN_VISIBLE_OCCLUDED = 0.2  # the same with `occlude`: partly hidden, never gone


@dataclass(frozen=True)
class SceneConfig:
    frames: int = 17  # video length; framecast uses 4N+1 (9, 17, 33, 49, 81), any >= 1 renders
    height: int = 64  # pixels, >= 16
    width: int = 64  # pixels, >= 16
    sprites: int = 2  # moving sprites, 1..3, the edit target included
    pan: bool = True  # the background drifts by a sub-pixel shift every frame
    occlude: bool = False  # another sprite passes in front of the target mid-clip; needs sprites >= 2
    edit: EditKind | None = None  # None: drawn from the seed
    # Frames per frame of the motion: the clip moves as one of (frames - 1) / fps_multiple + 1 frames
    # does, shown at fps_multiple times its frame rate, so every fps_multiple-th frame is that clip's
    # frame exactly (a source at twice Wan's 16 fps, say, whose ground truth has every frame).
    fps_multiple: int = 1

    def __post_init__(self):
        for name, least in (("frames", 1), ("height", 16), ("width", 16), ("sprites", 1), ("fps_multiple", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an int but is {value!r}")
            if value < least:
                raise ValueError(f"{name} must be >= {least} but is {value}")
            object.__setattr__(self, name, int(value))
        if (self.frames - 1) % self.fps_multiple:
            raise ValueError(f"frames - 1 must be a multiple of fps_multiple ({self.fps_multiple}) but frames is {self.frames}")
        if self.sprites > 3:
            raise ValueError(f"sprites must be <= 3 but is {self.sprites}")
        for name in ("pan", "occlude"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool but is {value!r}")
            object.__setattr__(self, name, bool(value))
        if self.occlude and self.sprites < 2:
            raise ValueError(f"occlude needs sprites >= 2 but sprites is {self.sprites}")
        if self.edit is not None:
            try:
                object.__setattr__(self, "edit", EditKind(self.edit))
            except ValueError:
                choices = ", ".join(kind.value for kind in EditKind)
                raise ValueError(f"edit must be one of {choices} or None but is {self.edit!r}") from None


@dataclass(frozen=True)
class SpriteLook:
    """What a sprite looks like, in words a prompt can use."""

    shape: Shape
    texture: Texture
    colour: str  # a hue name: red, orange, yellow, green, teal, blue, purple, pink

    def describe(self) -> str:
        words = " ".join(w for w in (self.colour, _TEXTURE_WORDS[self.texture], self.shape.value) if w)
        return ("an " if words[0] in "aeiou" else "a ") + words


@dataclass(frozen=True, eq=False)
class Scene:
    source: np.ndarray  # [F, H, W, 3] uint8
    edited: np.ndarray  # [F, H, W, 3] uint8: ground truth, the target edited, all else as in source
    edit_mask: np.ndarray  # [F, H, W] bool: target visible in source | edited target visible in edited
    target_mask: np.ndarray  # [F, H, W] bool: target visible in source
    target_amodal_mask: np.ndarray  # [F, H, W] bool: target silhouette in source, hidden parts included
    sprites: tuple[SpriteLook, ...]  # source sprites in depth order, back to front
    target_index: int  # the target's place in `sprites`
    edited_target: SpriteLook
    edit: EditKind
    seed: int
    prompt: str  # describes the source video, target first
    edited_prompt: str  # the same with the edited target
    config: SceneConfig

    @property
    def edited_first_frame(self) -> np.ndarray:  # [H, W, 3] uint8
        return self.edited[0]


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, eq=False)
class _Path:
    centres: np.ndarray  # [F, 2] float64: (x, y) in pixels
    radii: np.ndarray  # [F] pixels: radius of the circle of equal area
    angles: np.ndarray  # [F] radians


@dataclass(frozen=True, eq=False)
class _Sprite:
    look: SpriteLook
    primary: np.ndarray  # [3] float64 RGB in [0, 1]
    secondary: np.ndarray  # [3] float64: the pattern's second colour
    pattern_period: float  # in units of the sprite radius
    pattern_angle: float  # radians, relative to the sprite
    tone: tuple[float, float, float, bool]  # hue jitter, saturation, value, light secondary: kept by a recolour


@dataclass(frozen=True, eq=False)
class _Noise:
    cell: float  # lattice spacing, pixels
    origin: tuple[float, float]  # world (x, y) of lattice point [0, 0]
    lattice: np.ndarray  # [ny, nx] float64 in [-1, 1]


@dataclass(frozen=True, eq=False)
class _Background:
    pattern: str  # one of _BACKGROUND_PATTERNS
    colour: str
    low: np.ndarray  # [3] RGB at one end of the gradient
    high: np.ndarray  # [3] RGB at the other end
    ramp: tuple[float, float, float]  # gradient position = clip(a*x + b*y + c, 0, 1)
    contrast: float  # how far the pattern moves brightness, as a fraction
    period: float  # pattern period, pixels
    angle: float  # pattern angle, radians
    pan: tuple[float, float]  # world shift per frame, pixels (0, 0) when still
    coarse: _Noise
    fine: tuple[_Noise, _Noise]  # two lattices of unrelated spacing, so no grid shows


def _hue_distance(a: int, b: int) -> int:
    return min((a - b) % len(_HUES), (b - a) % len(_HUES))


def _hsv(hue_deg: float, sat: float, val: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, sat, val))


def _sprite_colours(hue: int, jitter: float, sat: float, val: float, light: bool) -> tuple[np.ndarray, np.ndarray]:
    primary = _hsv(_HUES[hue][1] + jitter, sat, val)
    secondary = primary + 0.65 * (1.0 - primary) if light else primary * 0.4
    return primary, secondary


def _make_noise(rng: np.random.Generator, cell: float, x_range: tuple[float, float], y_range: tuple[float, float]) -> _Noise:
    origin = (x_range[0] - cell, y_range[0] - cell)
    nx = math.ceil((x_range[1] - origin[0]) / cell) + 2
    ny = math.ceil((y_range[1] - origin[1]) / cell) + 2
    return _Noise(cell, origin, rng.uniform(-1.0, 1.0, size=(ny, nx)))


def _plan_background(rng: np.random.Generator, noise_rng: np.random.Generator, config: SceneConfig, hue: int) -> _Background:
    size = min(config.height, config.width)
    jitter, sat, val = rng.uniform(-10, 10), rng.uniform(0.3, 0.55), rng.uniform(0.45, 0.7)
    low = _hsv(_HUES[hue][1] + jitter, sat, val)
    high = _hsv(_HUES[hue][1] + jitter + rng.uniform(-25, 25), sat * rng.uniform(0.7, 1.2), val + rng.uniform(-0.25, 0.25))
    ramp_angle = rng.uniform(0, 2 * math.pi)
    span = math.hypot(config.height, config.width) * rng.uniform(0.7, 1.2)
    a, b = math.cos(ramp_angle) / span, math.sin(ramp_angle) / span
    ramp = (a, b, 0.5 - a * config.width / 2 - b * config.height / 2)
    pattern = _BACKGROUND_PATTERNS[rng.integers(len(_BACKGROUND_PATTERNS))]
    contrast, period, angle = rng.uniform(0.12, 0.22), size * rng.uniform(0.12, 0.25), rng.uniform(0, math.pi)
    pan_angle, pan_speed = rng.uniform(0, 2 * math.pi), size * rng.uniform(0.003, 0.008)
    pan = (pan_speed * math.cos(pan_angle), pan_speed * math.sin(pan_angle)) if config.pan else (0.0, 0.0)
    # The lattices cover every world position any frame shows.
    steps = (config.frames - 1) / config.fps_multiple  # frames of motion the clip spans
    travel = (pan[0] * steps, pan[1] * steps)
    x_range = (min(0.0, travel[0]), config.width + max(0.0, travel[0]))
    y_range = (min(0.0, travel[1]), config.height + max(0.0, travel[1]))
    coarse = _make_noise(noise_rng, size / noise_rng.uniform(2.5, 4.5), x_range, y_range)
    fine_cell = size / noise_rng.uniform(9, 14)
    fine = (_make_noise(noise_rng, fine_cell, x_range, y_range), _make_noise(noise_rng, fine_cell * 0.618, x_range, y_range))
    return _Background(pattern, _HUES[hue][0], low, high, ramp, contrast, period, angle, pan, coarse, fine)


def _plan_sprite(rng: np.random.Generator, hue: int) -> _Sprite:
    tone = (rng.uniform(-8, 8), rng.uniform(0.65, 0.95), rng.uniform(0.75, 0.98), bool(rng.integers(2)))
    shape = list(Shape)[rng.integers(len(Shape))]
    texture = list(Texture)[rng.integers(len(Texture))]
    period, angle = rng.uniform(0.6, 0.8), rng.uniform(0, math.pi)
    primary, secondary = _sprite_colours(hue, *tone)
    return _Sprite(SpriteLook(shape, texture, _HUES[hue][0]), primary, secondary, period, angle, tone)


def _plan_edit(rng: np.random.Generator, target: _Sprite, bg_hue: int, hues: list[int], kind: EditKind) -> _Sprite:
    """The edited target (sprite hues[0]); draws the same numbers whatever `kind` is, so the source stays the same."""
    apart = [h for h in range(len(_HUES)) if _hue_distance(h, bg_hue) >= 2 and _hue_distance(h, hues[0]) >= 2]
    hues = [h for h in apart if h not in hues] or apart  # prefer a hue no other sprite wears
    textures = [t for t in Texture if t != target.look.texture]
    shapes = [s for s in Shape if s != target.look.shape and frozenset({s, target.look.shape}) not in _TOO_SIMILAR]
    new_hue, new_texture, new_shape = (
        hues[rng.integers(len(hues))],
        textures[rng.integers(len(textures))],
        shapes[rng.integers(len(shapes))],
    )
    if kind is EditKind.RECOLOR:
        primary, secondary = _sprite_colours(new_hue, *target.tone)
        look = dataclasses.replace(target.look, colour=_HUES[new_hue][0])
        return dataclasses.replace(target, look=look, primary=primary, secondary=secondary)
    if kind is EditKind.RETEXTURE:
        return dataclasses.replace(target, look=dataclasses.replace(target.look, texture=new_texture))
    return dataclasses.replace(target, look=dataclasses.replace(target.look, shape=new_shape))


def _ease(rng: np.random.Generator, times: np.ndarray) -> np.ndarray:
    # Monotone from 0 to 1 with speed between (1-a) and (1+a) times the mean: speed changes.
    a = rng.uniform(0.4, 0.9) * rng.choice([-1.0, 1.0])
    k = int(rng.integers(1, 3))
    return times + a * np.sin(2 * math.pi * k * times) / (2 * math.pi * k)


def _bezier(points: np.ndarray, s: np.ndarray) -> np.ndarray:
    # points: [4, 2]; s: [F] -> [F, 2]
    s = s[:, None]
    return (1 - s) ** 3 * points[0] + 3 * (1 - s) ** 2 * s * points[1] + 3 * (1 - s) * s**2 * points[2] + s**3 * points[3]


def _centre_box(reach: float, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    half = np.array([width / 2, height / 2])
    lo = np.minimum(reach, half)
    return lo, np.maximum(2 * half - reach, half)


def _plan_path(rng: np.random.Generator, times: np.ndarray, radius: float, extent: float, config: SceneConfig, travel: bool) -> _Path:
    """A curved, eased path with a changing scale and rotation that keeps the sprite in frame."""
    s0 = rng.uniform(0.85, 1.0)
    s1 = s0 * rng.uniform(1.15, 1.35) ** rng.choice([-1.0, 1.0])
    lo, hi = _centre_box(extent * radius * max(s0, s1) + 1.0, config.height, config.width)
    if travel:  # the target crosses the frame, so it surely moves
        direction = rng.uniform(0, 2 * math.pi)
        half = (hi - lo) / 2 * np.array([math.cos(direction), math.sin(direction)])
        ends = [(lo + hi) / 2 - half * rng.uniform(0.6, 1.0), (lo + hi) / 2 + half * rng.uniform(0.6, 1.0)]
        points = np.stack([ends[0], rng.uniform(lo, hi), rng.uniform(lo, hi), ends[1]])
    else:
        points = rng.uniform(lo, hi, size=(4, 2))
    s = _ease(rng, times)
    smooth = times * times * (3 - 2 * times)
    angles = rng.uniform(0, 2 * math.pi) + rng.uniform(-1.2, 1.2) * s
    return _Path(np.clip(_bezier(points, s), lo, hi), radius * (s0 + (s1 - s0) * smooth), angles)


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True, eq=False)
class _Layer:
    y0: int
    x0: int
    inside: np.ndarray  # [h, w] bool
    colour: np.ndarray  # [h, w, 3] uint8


def _inside_polygon(u: np.ndarray, v: np.ndarray, sides: int, radius: float) -> np.ndarray:
    # Vertices at angles 2*pi*k/sides; fold each point onto its wedge and test the wedge's edge.
    wedge = 2 * math.pi / sides
    from_normal = np.mod(np.arctan2(v, u), wedge) - wedge / 2
    return np.hypot(u, v) * np.cos(from_normal) <= radius * math.cos(wedge / 2)


def _inside_star(u: np.ndarray, v: np.ndarray, points: int, radius: float, inner: float) -> np.ndarray:
    # Fold onto [0, pi/points] from a valley; inside = on the origin's side of the valley-tip edge.
    half = math.pi / points
    psi = np.abs(np.mod(np.arctan2(v, u), 2 * half) - half)
    r = np.hypot(u, v)
    qx, qy = r * np.cos(psi), r * np.sin(psi)
    ax, ay = radius * math.cos(half) - inner, radius * math.sin(half)
    return ax * qy - ay * (qx - inner) >= 0


def _inside(shape: Shape, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # u, v: [h, w] sprite coordinates, unit = radius of the equal-area circle
    if shape is Shape.CIRCLE:
        return u * u + v * v <= 1.0
    if shape is Shape.ELLIPSE:
        return (u / _ELLIPSE_AXES[0]) ** 2 + (v / _ELLIPSE_AXES[1]) ** 2 <= 1.0
    if shape is Shape.SQUARE:
        return np.maximum(np.abs(u), np.abs(v)) <= _SQUARE_HALF_SIDE
    if shape is Shape.TRIANGLE:
        return _inside_polygon(u, v, 3, _TRIANGLE_RADIUS)
    if shape is Shape.HEXAGON:
        return _inside_polygon(u, v, 6, _HEXAGON_RADIUS)
    return _inside_star(u, v, 5, _STAR_RADIUS, _STAR_INNER_RATIO * _STAR_RADIUS)


def _pattern_weight(sprite: _Sprite, u: np.ndarray, v: np.ndarray, pixel: float) -> np.ndarray:
    """Share of the secondary colour per pixel, [h, w] in [0, 1], soft over about one pixel."""
    texture, period = sprite.look.texture, sprite.pattern_period
    if texture is Texture.FLAT:
        return np.zeros(u.shape)
    c, s = math.cos(sprite.pattern_angle), math.sin(sprite.pattern_angle)
    a, b = u * c + v * s, v * c - u * s
    if texture is Texture.DOTS:
        da, db = a / period - np.round(a / period), b / period - np.round(b / period)
        distance = period * (0.3 - np.hypot(da, db))  # > 0 inside a dot
    elif texture is Texture.STRIPES:
        distance = np.sin(2 * math.pi * a / period) * period / (2 * math.pi)
    else:
        distance = np.sin(2 * math.pi * a / period) * np.sin(2 * math.pi * b / period) * period / (2 * math.pi)
    return np.clip(0.5 + distance / pixel, 0.0, 1.0)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _render_sprite(sprite: _Sprite, path: _Path, frame: int, height: int, width: int) -> _Layer | None:
    (cx, cy), radius, angle = path.centres[frame], float(path.radii[frame]), float(path.angles[frame])
    reach = _EXTENT[sprite.look.shape] * radius + 1.0
    x0, x1 = max(math.floor(cx - reach), 0), min(math.ceil(cx + reach), width)
    y0, y1 = max(math.floor(cy - reach), 0), min(math.ceil(cy + reach), height)
    if x0 >= x1 or y0 >= y1:
        return None
    dx = (np.arange(x0, x1) + 0.5 - cx)[None, :]  # pixel centres relative to the sprite
    dy = (np.arange(y0, y1) + 0.5 - cy)[:, None]
    c, s = math.cos(angle), math.sin(angle)
    u, v = (dx * c + dy * s) / radius, (dy * c - dx * s) / radius
    weight = _pattern_weight(sprite, u, v, 1.0 / radius)[..., None].astype(np.float32)
    colour = sprite.primary.astype(np.float32) + weight * (sprite.secondary - sprite.primary).astype(np.float32)
    return _Layer(y0, x0, _inside(sprite.look.shape, u, v), _to_uint8(colour))


def _render_path(sprite: _Sprite, path: _Path, config: SceneConfig) -> list[_Layer | None]:
    return [_render_sprite(sprite, path, f, config.height, config.width) for f in range(config.frames)]


def _value_noise(noise: _Noise, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Smooth noise at world columns xs [W] and rows ys [H] -> [H, W] float32.

    Smoothstep interpolation of the lattice is separable: interpolate along x for every
    lattice row ([ny, W]), then along y. Gathers, not matmuls: small matmuls with a huge
    output run badly on some BLAS builds.
    """

    def cells(coords: np.ndarray, origin: float) -> tuple[np.ndarray, np.ndarray]:
        g = (coords - origin) / noise.cell
        i = np.floor(g).astype(np.int64)
        f = g - i
        return i, (f * f * (3 - 2 * f)).astype(np.float32)

    ix, fx = cells(xs, noise.origin[0])
    iy, fy = cells(ys, noise.origin[1])
    lattice = noise.lattice.astype(np.float32)
    rows = lattice[:, ix] + fx * (lattice[:, ix + 1] - lattice[:, ix])  # [ny, W]
    top = rows[iy]
    return top + fy[:, None] * (rows[iy + 1] - top)


def _wave(xs: np.ndarray, ys: np.ndarray, kx: float, ky: float) -> np.ndarray:
    """sin(kx * x + ky * y) on the grid -> [H, W] float32, as a sum of two outer products (no 2-D trig)."""
    sx, cx = np.sin(kx * xs).astype(np.float32), np.cos(kx * xs).astype(np.float32)
    sy, cy = np.sin(ky * ys).astype(np.float32), np.cos(ky * ys).astype(np.float32)
    return np.outer(cy, sx) + np.outer(sy, cx)


def _render_background(bg: _Background, frame: float, height: int, width: int) -> np.ndarray:
    # -> [H, W, 3] uint8; the camera has moved by pan * frame, so the world slides the other way
    xs = np.arange(width) + 0.5 + bg.pan[0] * frame
    ys = np.arange(height) + 0.5 + bg.pan[1] * frame
    k, c, s = 2 * math.pi / bg.period, math.cos(bg.angle), math.sin(bg.angle)
    if bg.pattern == "textured":
        main = _value_noise(bg.coarse, xs, ys)
    elif bg.pattern == "striped":
        main = np.clip(1.5 * _wave(xs, ys, k * c, k * s), -1.0, 1.0)
    elif bg.pattern == "checkered":
        main = np.clip(3.0 * _wave(xs, ys, k * c, k * s) * _wave(xs, ys, -k * s, k * c), -1.0, 1.0)
    else:  # wavy: stripes whose phase wobbles along them
        wobble = 0.3 * bg.period * _wave(xs, ys, -k * s / 1.7, k * c / 1.7)
        along = np.add.outer((ys * s).astype(np.float32), (xs * c).astype(np.float32))
        main = np.sin(k * (along + wobble))
    shade = _value_noise(bg.fine[0], xs, ys) + _value_noise(bg.fine[1], xs, ys)
    shade *= 0.15 * bg.contrast
    shade += 1.0 + 0.7 * bg.contrast * main
    ramp = np.add.outer((bg.ramp[1] * ys).astype(np.float32), (bg.ramp[0] * xs + bg.ramp[2]).astype(np.float32))
    np.clip(ramp, 0.0, 1.0, out=ramp)
    ramp *= shade
    # rgb = (low + ramp * (high - low)) * shade, in 0..255, rounded
    rgb = shade[..., None] * (255.0 * bg.low).astype(np.float32)
    rgb += ramp[..., None] * (255.0 * (bg.high - bg.low)).astype(np.float32)
    rgb += 0.5
    np.clip(rgb, 0.0, 255.0, out=rgb)
    return rgb.astype(np.uint8)


def _visible_share(layers: list[list[_Layer | None]], order: list[int], config: SceneConfig) -> float:
    """Smallest share of the target's (sprite 0's) silhouette that the sprites in front leave visible."""
    front = order[order.index(0) + 1 :]
    least = 1.0
    for f in range(config.frames):
        mine = layers[0][f]
        if mine is None:
            return 0.0
        covered = np.zeros((config.height, config.width), dtype=bool)
        for k in front:
            if (layer := layers[k][f]) is not None:
                h, w = layer.inside.shape
                covered[layer.y0 : layer.y0 + h, layer.x0 : layer.x0 + w] |= layer.inside
        h, w = mine.inside.shape
        visible = mine.inside & ~covered[mine.y0 : mine.y0 + h, mine.x0 : mine.x0 + w]
        least = min(least, visible.sum() / max(mine.inside.sum(), 1))
    return least


def _paint(frame: np.ndarray, owner: np.ndarray, layer: _Layer | None, index: int) -> None:
    # frame: [H, W, 3] uint8, owner: [H, W] int8 (which sprite shows at each pixel, -1 background)
    if layer is None:
        return
    h, w = layer.inside.shape
    frame[layer.y0 : layer.y0 + h, layer.x0 : layer.x0 + w][layer.inside] = layer.colour[layer.inside]
    owner[layer.y0 : layer.y0 + h, layer.x0 : layer.x0 + w][layer.inside] = index


def _describe(looks: list[SpriteLook], bg: _Background, pan: bool) -> str:
    things = [look.describe() for look in looks]
    listed = things[0] if len(things) == 1 else ", ".join(things[:-1]) + " and " + things[-1]
    text = f"{listed} moving over {'an' if bg.colour[0] in 'aeiou' else 'a'} {bg.colour} {bg.pattern} background"
    return text + (" as the camera pans slowly" if pan else "")


def _place_occluder(
    rng: np.random.Generator,
    times: np.ndarray,
    sprites: list[_Sprite],
    paths: list[_Path],
    layers: list[list[_Layer | None]],
    order: list[int],
    config: SceneConfig,
) -> None:
    """Moves sprite 1 (drawn in front of the target) so it sweeps past the target mid-clip.

    Relative to the target the occluder travels in a straight line that passes `gap`
    pixels from the target's centre at time `meet` and is clear of it at both ends; the
    gap grows until the target stays partly visible in every frame. Replaces
    ``paths[1]`` and ``layers[1]`` in place.
    """
    meet, heading, side = rng.uniform(0.35, 0.65), rng.uniform(0, 2 * math.pi), rng.choice([-1.0, 1.0])
    sweep = np.array([math.cos(heading), math.sin(heading)])
    across = side * np.array([-sweep[1], sweep[0]])
    occluder = paths[1]
    reach_sum = _EXTENT[sprites[0].look.shape] * paths[0].radii.max() + _EXTENT[sprites[1].look.shape] * occluder.radii.max()
    speed = 1.1 * reach_sum / min(meet, 1 - meet)
    lo, hi = _centre_box(_EXTENT[sprites[1].look.shape] * occluder.radii.max() + 1.0, config.height, config.width)
    for step in range(10):
        gap = reach_sum * (0.15 + 0.1 * step)
        offsets = gap * across + (times - meet)[:, None] * speed * sweep
        paths[1] = dataclasses.replace(occluder, centres=np.clip(paths[0].centres + offsets, lo, hi))
        layers[1] = _render_path(sprites[1], paths[1], config)
        if _visible_share(layers, order, config) >= _MIN_VISIBLE_OCCLUDED:
            break


def make_scene(seed: int, config: SceneConfig = SceneConfig()) -> Scene:
    """Render one scene and its ground-truth edit; the same seed and config give the same arrays.

    A seed fixes the looks, motion and background. For one seed, changing only
    ``config.edit`` keeps the source video identical and changes only the edit.
    Raises ValueError for a seed that is not a non-negative int.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int but is {seed!r}")
    look_rng, motion_rng, noise_rng = np.random.default_rng(int(seed)).spawn(3)
    count, size = config.sprites, min(config.height, config.width)

    # Looks: sprite hues stand apart from the background's and from each other's.
    bg_hue = int(look_rng.integers(len(_HUES)))
    allowed = [h for h in range(len(_HUES)) if _hue_distance(h, bg_hue) >= 2]
    hues = [int(h) for h in look_rng.choice(allowed, size=3, replace=False)][:count]
    background = _plan_background(look_rng, noise_rng, config, bg_hue)
    sprites = [_plan_sprite(look_rng, hue) for hue in hues]
    drawn_edit = list(EditKind)[look_rng.integers(len(EditKind))]
    edit = config.edit if config.edit is not None else drawn_edit
    edited_target = _plan_edit(look_rng, sprites[0], bg_hue, hues, edit)

    # Motion. Sprite 0 is the target; with `occlude`, sprite 1 is its occluder.
    times = np.arange(config.frames) / max(config.frames - 1, 1)
    radii = [size * motion_rng.uniform(0.12, 0.15)] + [size * motion_rng.uniform(0.08, 0.13) for _ in range(count - 1)]
    reshape_extent = max(_EXTENT.values())  # the target's box fits any shape it may be edited into
    paths = [_plan_path(motion_rng, times, radii[0], reshape_extent, config, travel=True)]
    paths += [_plan_path(motion_rng, times, radii[k], _EXTENT[sprites[k].look.shape], config, travel=False) for k in range(1, count)]
    order = [int(k) for k in motion_rng.permutation(count)]
    if config.occlude:
        order = list(range(2, count)) + [0, 1]
        radii[1] = radii[0] * motion_rng.uniform(0.65, 0.85)
        paths[1] = _plan_path(motion_rng, times, radii[1], _EXTENT[sprites[1].look.shape], config, travel=False)
    layers = [_render_path(sprite, path, config) for sprite, path in zip(sprites, paths)]
    if config.occlude:
        _place_occluder(motion_rng, times, sprites, paths, layers, order, config)
    least = _MIN_VISIBLE_OCCLUDED if config.occlude else _MIN_VISIBLE
    if _visible_share(layers, order, config) < least:
        order = [k for k in order if k != 0] + [0]  # hidden too much: bring the target to the front
    edited_layers = _render_path(edited_target, paths[0], config)

    shape = (config.frames, config.height, config.width)
    source, edited = np.empty(shape + (3,), np.uint8), np.empty(shape + (3,), np.uint8)
    target_mask, edited_visible, amodal = np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape, bool)
    for f in range(config.frames):
        source[f] = edited[f] = _render_background(background, f / config.fps_multiple, config.height, config.width)
        owner_source, owner_edited = np.full(shape[1:], -1, np.int8), np.full(shape[1:], -1, np.int8)
        for k in order:
            _paint(source[f], owner_source, layers[k][f], k)
            _paint(edited[f], owner_edited, edited_layers[f] if k == 0 else layers[k][f], k)
        target_mask[f], edited_visible[f] = owner_source == 0, owner_edited == 0
        if (layer := layers[0][f]) is not None:
            h, w = layer.inside.shape
            amodal[f, layer.y0 : layer.y0 + h, layer.x0 : layer.x0 + w] = layer.inside

    in_depth = [sprites[k].look for k in order]
    others = [sprites[k].look for k in range(1, count)]
    return Scene(
        source=source,
        edited=edited,
        edit_mask=target_mask | edited_visible,
        target_mask=target_mask,
        target_amodal_mask=amodal,
        sprites=tuple(in_depth),
        target_index=order.index(0),
        edited_target=edited_target.look,
        edit=edit,
        seed=int(seed),
        prompt=_describe([sprites[0].look] + others, background, config.pan),
        edited_prompt=_describe([edited_target.look] + others, background, config.pan),
        config=config,
    )
