"""The toy world as real footage: video files written with PyAV the way cameras and phones write
them (H.264 with AAC at 1080p and 30 fps, a portrait clip with rotation metadata, a variable frame
rate webm with Opus audio, 4K), their content a toy-world scene scaled up, with its ground truth
at the same size. The tests and the benchmarks that run framecast on footage make it here."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from framecast.engine.toy.world import SceneConfig, make_scene


@dataclass
class Footage:
    path: Path
    frames: np.ndarray  # [F, H, W, 3] uint8 as displayed (what a player shows)
    edit_mask: np.ndarray  # [F, H, W] bool, displayed
    edited_first_frame: np.ndarray  # [H, W, 3] uint8, displayed
    times: list[float]  # seconds of each frame
    prompt: str
    edited: np.ndarray | None = None  # [F, H, W, 3] uint8: the true edited video, displayed


def _scaled(frames: np.ndarray, width: int, height: int, nearest: bool = False) -> np.ndarray:
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), resample)) for f in frames])


def scene_frames(seed: int, count: int, width: int, height: int, base: int = 64, truth: bool = False):
    """A toy-world scene rendered small and scaled to ``width`` x ``height``: frames, mask, edited
    first frame, prompt (and, with ``truth``, the true edited video)."""
    side = base if width >= height else base
    small_w, small_h = (side, max(16, round(side * height / width))) if width >= height else (max(16, round(side * width / height)), side)
    scene = make_scene(seed, SceneConfig(frames=count, height=small_h, width=small_w, sprites=1, edit="recolor"))
    frames = _scaled(scene.source, width, height)
    mask = _scaled(scene.edit_mask.astype(np.uint8) * 255, width, height, nearest=True) > 127
    edited = _scaled(scene.edited[:1], width, height)[0]
    if truth:
        return frames, mask, edited, scene.edited_prompt, _scaled(scene.edited, width, height)
    return frames, mask, edited, scene.edited_prompt


def write_video(path: Path, frames: np.ndarray, times: list[float], codec: str = "libx264", audio: str | None = "aac",
                rotation: int = 0, time_base: Fraction = Fraction(1, 15360), fmt: str | None = None) -> None:  # fmt: skip
    """Frames (as displayed) at their ``times``; ``rotation``: the display matrix's counterclockwise
    degrees (stored frames are turned the other way, as a phone stores a portrait clip)."""
    turns = (rotation // 90) % 4
    stored = np.stack([np.rot90(f, -turns) for f in frames]) if turns else frames
    height, width = stored.shape[1:3]
    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=round(len(times) / max(times[-1], 1e-3)) or 30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = time_base
        if codec == "libx264":
            stream.options = {"preset": "ultrafast"}
        if rotation:
            stream.set_display_rotation(rotation)
        sound = None
        if audio is not None:
            sound = container.add_stream(audio, rate=48000)
            sound.layout = "stereo"
        for frame, time in zip(stored, times):
            video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video.pts, video.time_base = round(Fraction(time).limit_denominator(1 << 20) / time_base), time_base
            for packet in stream.encode(video):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            duration = times[-1] + 1 / 30
            samples = np.arange(int(48000 * duration)) / 48000
            tone = (0.2 * np.sin(2 * np.pi * 440 * samples)).astype(np.float32)
            per = sound.codec_context.frame_size or 1024
            for start in range(0, len(tone) - per + 1, per):
                chunk = np.stack([tone[start : start + per]] * 2)
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = 48000, start
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)


def make_footage(path: Path, seed: int, width: int, height: int, times: list[float], **video) -> Footage:
    """A toy-world scene written at ``path`` as ``write_video`` writes it, with its ground truth."""
    frames, mask, edited, prompt, truth = scene_frames(seed, len(times), width, height, truth=True)
    write_video(path, frames, times, **video)
    return Footage(path, frames, mask, edited, times, prompt, truth)
