"""Real footage for tests: the toy world's footage writers (``framecast.engine.toy.footage``) and
readers of what the server sends back."""

from __future__ import annotations

import av
import numpy as np

from framecast.engine.toy.footage import Footage, make_footage, scene_frames, write_video  # noqa: F401 (the tests' names)


def read_video(data_or_path) -> tuple[np.ndarray, list[float], int]:
    """(frames [F, H, W, 3] as stored, times in seconds, display rotation) of a video."""
    import io

    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else str(data_or_path)
    with av.open(source) as container:
        stream = container.streams.video[0]
        frames, times, rotation = [], [], 0
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * stream.time_base))
            rotation = frame.rotation
    start = times[0]
    return np.stack(frames), [t - start for t in times], rotation


def video_times(data_or_path) -> list[float]:
    """Each decoded video frame's presentation time in seconds, as a player places it (not rebased
    to the first frame: a stream may start later than 0)."""
    import io

    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else str(data_or_path)
    with av.open(source) as container:
        stream = container.streams.video[0]
        return [float(frame.pts * stream.time_base) for frame in container.decode(stream)]


def read_audio(data_or_path) -> np.ndarray:
    """Every decoded audio sample of the first audio stream, [channels, samples] float32."""
    import io

    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else str(data_or_path)
    with av.open(source) as container:
        if not container.streams.audio:
            return np.zeros((0, 0), np.float32)
        chunks = [frame.to_ndarray() for frame in container.decode(container.streams.audio[0])]
    return np.concatenate(chunks, axis=1)
