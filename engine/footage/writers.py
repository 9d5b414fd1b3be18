"""Writing an output file frame by frame (``framecast.engine.footage.output`` says what goes in it):
H.264 in mp4 or Matroska with the source's audio, copied packet for packet or transcoded to AAC,
or a zip of PNG frames with their timestamps.
"""

from __future__ import annotations

import json
import math
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from framecast.common.media import encode_png
from framecast.engine.footage.grid import TIME_EPSILON
from framecast.engine.footage.shots import Shot

# Audio codecs an mp4 carries packet for packet, decoding to the same samples; any other (Opus and
# Vorbis from webm, whose codec delay mp4 records differently) goes into Matroska, or is transcoded
# to AAC for an mp4 asked for by name (Container.MP4).
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac"}
AAC_BITS_PER_CHANNEL = 96_000  # bits a second: 192 kb/s for stereo, transparent for AAC-LC
AAC_FRAME = 1024  # samples an AAC-LC frame holds (the encoder's frame_size, unknown until it opens)


class VideoWriter:
    """H.264 in mp4 or Matroska (by ``path``'s suffix) at the source's size, frame rate and time base,
    with the source's audio; ``lossless``: RGB at QP 0, else CRF ``quality``."""

    def __init__(self, path: Path, shot: Shot, start_time: float, lossless: bool = False, quality: int = 18):
        import av

        info = shot.source.info
        self.container = av.open(str(path), mode="w", format="matroska" if path.suffix == ".mkv" else "mp4")
        self.time_base = Fraction(info.time_base) if info.frame_times else Fraction(1, 1000)
        fps = Fraction(info.fps or shot.grid.fps).limit_denominator(1001)
        stream = self.container.add_stream("libx264rgb" if lossless else "libx264", rate=fps)
        stream.width, stream.height = info.width, info.height
        even = info.width % 2 == 0 and info.height % 2 == 0
        stream.pix_fmt = "rgb24" if lossless else ("yuv420p" if even else "yuv444p")
        stream.options = {"qp": "0", "preset": "medium"} if lossless else {"crf": str(quality), "preset": "medium"}
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        self.stream = stream
        self.audio = None
        if info.audio is not None:
            copied = path.suffix == ".mkv" or info.audio.codec in MP4_AUDIO
            self.audio = (AudioCopy if copied else AudioTranscode)(shot, self.container, start_time)

    def write(self, frame: np.ndarray, time_s: float) -> None:
        import av

        video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video.pts = round(Fraction(time_s).limit_denominator(1 << 40) / self.time_base)
        video.time_base = self.time_base
        if self.audio is not None:
            self.audio.until(time_s + 1.0)
        for packet in self.stream.encode(video):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        if self.audio is not None:
            self.audio.until(math.inf)
            self.audio.close()
        self.container.close()


class AudioCopy:
    """The source's first audio stream, packet for packet, within the shot's time range, moved
    earlier by as much as the video (``start_time``, the part's offset from the first frame)."""

    def __init__(self, shot: Shot, container, start_time: float):
        import av

        self.source = av.open(str(shot.source.path), mode="r")
        stream = self.source.streams.audio[0]
        self.out = self._add_stream(container, stream)
        self.packets = self.source.demux(stream)
        self.time_base = stream.time_base
        grid = shot.grid
        video_origin = shot.source.info.first_pts * Fraction(shot.source.info.time_base)
        self.offset = Fraction(start_time).limit_denominator(1 << 40)
        self.start = video_origin + self.offset  # the shot's first frame, in source time
        self.end = video_origin + Fraction(grid.time(grid.frames)).limit_denominator(1 << 40)
        self.whole = start_time <= TIME_EPSILON and shot.range_indices[1] == shot.source.info.num_frames - 1
        self.shift = round(self.offset / self.time_base) if not self.whole else 0
        self.done = False

    def until(self, time_s: float) -> None:
        """Copy packets up to ``time_s`` of the output."""
        while not self.done:
            packet = next(self.packets, None)
            if packet is None or packet.size == 0:
                if packet is None:
                    self.done = True
                continue
            when = packet.pts * self.time_base if packet.pts is not None else None
            if when is not None and not self.whole and (when < self.start or when >= self.end):
                continue
            if packet.pts is not None:
                packet.pts -= self.shift
            if packet.dts is not None:
                packet.dts -= self.shift
            self._take(packet)
            if when is not None and float(when - self.offset) > time_s:
                return

    def _add_stream(self, container, stream):
        return container.add_stream_from_template(stream)

    def _take(self, packet) -> None:
        packet.stream = self.out
        self._mux(packet)

    def _mux(self, packet) -> None:
        self.out.container.mux(packet)

    def close(self) -> None:
        self.source.close()


class AudioTranscode(AudioCopy):
    """The same packets decoded and encoded again as AAC, for an mp4 asked for by name when the
    source's codec is one mp4 cannot carry as it is (Opus, Vorbis). The samples run on without a
    gap from the first one kept, at the source's rate where AAC has it (48 kHz otherwise)."""

    def _add_stream(self, container, stream):
        import av

        self.decoder = stream.codec_context
        rate = stream.codec_context.sample_rate
        rate = rate if rate in av.codec.Codec("aac", "w").audio_rates else 48_000
        layout = stream.codec_context.layout.name if stream.codec_context.channels <= 2 else "stereo"
        out = container.add_stream("aac", rate=rate)
        out.layout = layout
        out.bit_rate = AAC_BITS_PER_CHANNEL * out.codec_context.channels
        out.time_base = Fraction(1, rate)
        self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self.fifo = av.AudioFifo()
        self.rate, self.samples = rate, None  # samples: the output's next sample, from the first frame decoded
        return out

    def _take(self, packet) -> None:
        for frame in self.decoder.decode(packet):
            if self.samples is None:  # the first sample kept, at its time in the output
                self.samples = round(frame.pts * frame.time_base * self.rate) if frame.pts is not None else 0
            for resampled in self.resampler.resample(frame):
                resampled.pts = None
                self.fifo.write(resampled)
        self._encode(AAC_FRAME)

    def _encode(self, size: int, last: bool = False) -> None:
        while self.fifo.samples >= size or (last and self.fifo.samples):
            frame = self.fifo.read(min(size, self.fifo.samples))
            frame.pts, frame.time_base = self.samples, Fraction(1, self.rate)
            self.samples += frame.samples
            for packet in self.out.encode(frame):
                self._mux(packet)

    def close(self) -> None:
        for frame in self.decoder.decode(None):
            for resampled in self.resampler.resample(frame):
                resampled.pts = None
                self.fifo.write(resampled)
        for resampled in self.resampler.resample(None):
            resampled.pts = None
            self.fifo.write(resampled)
        self._encode(AAC_FRAME, last=True)
        for packet in self.out.encode(None):
            self._mux(packet)
        super().close()


class PngWriter:
    """A zip of lossless PNG frames and ``timestamps.json``, each frame's time in seconds (no audio)."""

    def __init__(self, path: Path):
        self.archive = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED)
        self.times: list[float] = []

    def write(self, frame: np.ndarray, time_s: float) -> None:
        entry = zipfile.ZipInfo(f"{len(self.times):05d}.png", date_time=(1980, 1, 1, 0, 0, 0))
        entry.external_attr = 0o644 << 16
        self.archive.writestr(entry, encode_png(frame))
        self.times.append(round(time_s, 9))

    def close(self) -> None:
        entry = zipfile.ZipInfo("timestamps.json", date_time=(1980, 1, 1, 0, 0, 0))
        entry.external_attr = 0o644 << 16
        self.archive.writestr(entry, json.dumps({"seconds": self.times}))
        self.archive.close()
