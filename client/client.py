"""``FramecastClient``: the public Python API of a framecast server.

One class, one channel. Every method takes ``timeout=`` (seconds; ``None`` = the
client's default, itself ``None`` = no deadline) and raises ``FramecastError`` for any
failed call, streams included. Streaming jobs (``train``, ``propagate``, ``watch_job``)
yield the raw ``framecast_pb2.JobEvent`` messages; ``framecast.client.jobs`` (``wait_for_result``,
``run_train``, ``collect_propagation``) consumes such a stream and returns its outcome.

Imports neither torch nor diffusers: a client-only install stays small.
"""

from __future__ import annotations

import operator
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from framecast.client.errors import FramecastError
from framecast.engine import media
from framecast.engine.config import field_default
from framecast.engine.requests import PropagateJob
from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc as pb_grpc

MiB = 1 << 20

MASK_MODES = {"exact": pb.MASK_MODE_EXACT, "bbox": pb.MASK_MODE_BBOX, "dilate": pb.MASK_MODE_DILATE}
OUTPUT_ENCODINGS = {
    "mp4": pb.OUTPUT_ENCODING_MP4_H264,
    "mp4-lossless": pb.OUTPUT_ENCODING_MP4_H264_LOSSLESS,
    "png-sequence": pb.OUTPUT_ENCODING_PNG_SEQUENCE,
}
JOB_STATES = {
    "queued": pb.JOB_STATE_QUEUED,
    "running": pb.JOB_STATE_RUNNING,
    "succeeded": pb.JOB_STATE_SUCCEEDED,
    "failed": pb.JOB_STATE_FAILED,
    "cancelled": pb.JOB_STATE_CANCELLED,
}
EXPORT_FORMATS = {"diffusers": pb.EXPORT_FORMAT_DIFFUSERS, "comfyui": pb.EXPORT_FORMAT_COMFYUI}
LOAD_TARGETS = {"device": pb.ADAPTER_STATE_LOADED, "host": pb.ADAPTER_STATE_CACHED}
UNLOAD_TARGETS = {"disk": pb.ADAPTER_STATE_READY, "host": pb.ADAPTER_STATE_CACHED}

# Health statuses that mean "not yet": the server may still be starting or loading its model.
_RETRY_HEALTH = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.NOT_FOUND)


def enum_value(value: str | int | None, choices: dict[str, int], argument: str) -> int:
    """Map a choice name (``"bbox"``, case and ``_``/``-`` insensitive) or a proto enum number to
    the number; ``None`` -> 0 (UNSPECIFIED, the server's default). Raises ValueError naming ``argument``."""
    if value is None:
        return 0
    if isinstance(value, str):
        key = value.strip().lower().replace("_", "-")
        if key in choices:
            return choices[key]
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool) and int(value) in (0, *choices.values()):
        return int(value)
    raise ValueError(f"{argument} must be one of {', '.join(choices)} but is {value!r}")


def mask_mode_value(mask_mode: str | int | None) -> int:
    """``"exact" | "bbox" | "dilate"`` (or ``None`` = server default, bbox) -> ``framecast_pb2.MaskMode``."""
    return enum_value(mask_mode, MASK_MODES, "mask_mode")


def media_chunks(
    source: str | os.PathLike | bytes, filename: str | None = None, chunk_bytes: int = MiB
) -> Iterator[pb.MediaChunk]:
    """The ``MediaChunk`` stream of an upload: the header (filename, size) rides on the first
    chunk only; an empty payload is still one chunk. Raises FileNotFoundError for a missing
    path and ValueError for ``chunk_bytes < 1`` at call time, not mid-stream."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1 but is {chunk_bytes}")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = memoryview(source).cast("B")
        header = pb.MediaRef(filename=filename or "", size_bytes=len(data))
        return _chunks_of_bytes(data, header, chunk_bytes)
    path = Path(source)
    size = path.stat().st_size  # FileNotFoundError here, before any RPC starts
    if not path.is_file():
        raise IsADirectoryError(f"{path} is not a file")
    header = pb.MediaRef(filename=filename or path.name, size_bytes=size)
    return _chunks_of_file(path, header, chunk_bytes)


def adapter_chunks(
    name: str, source: str | os.PathLike | bytes, filename: str | None = None, chunk_bytes: int = MiB
) -> Iterator[pb.ImportAdapterChunk]:
    """The ``ImportAdapterChunk`` stream of an adapter import: the header (name, filename) on the
    first chunk only. Raises FileNotFoundError / ValueError at call time, as ``media_chunks``."""
    media = media_chunks(source, filename, chunk_bytes)  # validates now
    header = pb.ImportAdapterHeader(name=name, filename=filename or ("" if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).name))

    def chunks() -> Iterator[pb.ImportAdapterChunk]:
        for index, chunk in enumerate(media):
            yield pb.ImportAdapterChunk(header=header if index == 0 else None, data=chunk.data)

    return chunks()


def _chunks_of_bytes(data: memoryview, header: pb.MediaRef, chunk_bytes: int) -> Iterator[pb.MediaChunk]:
    yield pb.MediaChunk(header=header, data=bytes(data[:chunk_bytes]))
    for start in range(chunk_bytes, len(data), chunk_bytes):
        yield pb.MediaChunk(data=bytes(data[start : start + chunk_bytes]))


def _chunks_of_file(path: Path, header: pb.MediaRef, chunk_bytes: int) -> Iterator[pb.MediaChunk]:
    with open(path, "rb") as f:
        yield pb.MediaChunk(header=header, data=f.read(chunk_bytes))
        while piece := f.read(chunk_bytes):
            yield pb.MediaChunk(data=piece)


def encode_array(frames: np.ndarray, fps: float = 16, lossless: bool = True) -> tuple[bytes, str]:
    """Frames or a mask as uploadable bytes and a file name.

    ``[H, W, 3]`` uint8 or ``[H, W]`` bool -> PNG; ``[F, H, W, 3]`` uint8 or ``[F, H, W]`` bool
    -> H.264 mp4 (lossless: yuv444p CRF 0). Bool arrays are masks (True = edit region, white).
    Raises ValueError for any other shape or dtype.
    """
    frames = np.asarray(frames)
    if frames.dtype == bool:
        if frames.ndim not in (2, 3):
            raise ValueError(f"a mask must be [H, W] or [F, H, W] bool but has shape {frames.shape}")
        image = frames.ndim == 2
        frames = media.mask_to_frames(frames[None] if image else frames)
        frames = frames[0] if image else frames
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (or bool for a mask) but are {frames.dtype}")
    if frames.ndim == 3 and frames.shape[-1] == 3:
        return media.encode_png(frames), "image.png"
    if frames.ndim == 4 and frames.shape[-1] == 3:
        return media.encode_video(frames, fps, lossless=lossless), "video.mp4"
    raise ValueError(f"frames must be [H, W, 3] or [F, H, W, 3] but have shape {frames.shape}")


def uint_value(value, argument: str, bits: int = 32) -> int:
    """``value`` as an int for a ``uint32`` (or ``bits=64``) request field. Raises ValueError naming
    ``argument`` for a value out of the field's range (protobuf's own says only "Value out of
    range: -1"), TypeError for a value that is not a whole number."""
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{argument} must be a whole number but is {value!r}") from None
    if not 0 <= number < 1 << bits:
        raise ValueError(f"{argument} must be between 0 and {(1 << bits) - 1} but is {value!r}")
    return number


def _media_id(value: str | pb.MediaRef, argument: str) -> str:
    if isinstance(value, pb.MediaRef):
        return value.id
    if isinstance(value, str):
        return value
    raise TypeError(f"{argument} must be a media id (str) or a MediaRef but is {type(value).__name__}")


class FramecastClient:
    """A connection to a framecast server.

    >>> with FramecastClient("127.0.0.1:50051", timeout=60) as client:
    ...     client.wait_ready(30)
    ...     source = client.upload("source.mp4")
    """

    def __init__(self, address: str = "127.0.0.1:50051", timeout: float | None = None, max_message_mb: int = 64):
        self.address = address
        self.timeout = timeout
        limit = int(max_message_mb * MiB)
        self._channel = grpc.insecure_channel(
            address, options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
        )
        self._stub = pb_grpc.FramecastStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    # ---- plumbing -----------------------------------------------------------------------

    def __enter__(self) -> FramecastClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FramecastClient({self.address!r}, timeout={self.timeout!r})"

    def close(self) -> None:
        """Close the channel; streams still open are cancelled. Idempotent; raises nothing."""
        self._channel.close()

    def _deadline(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def _unary(self, method, request, timeout: float | None):
        try:
            return method(request, timeout=self._deadline(timeout))
        except grpc.RpcError as error:
            raise FramecastError.from_rpc_error(error) from None

    @staticmethod
    def _stream(call) -> Iterator:
        # The RPC is started by the caller, so argument errors surface at call time; status
        # errors surface while iterating. Abandoning the iterator cancels the RPC.
        try:
            yield from call
        except grpc.RpcError as error:
            raise FramecastError.from_rpc_error(error) from None
        finally:
            call.cancel()

    # ---- health and info ----------------------------------------------------------------

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Poll the standard ``grpc.health.v1`` Health service (service ``""``) until it reports
        SERVING, i.e. the server is up and its model is loaded. Returns True.

        Raises FramecastError(DEADLINE_EXCEEDED) when not SERVING within ``timeout`` seconds,
        and FramecastError for errors other than "not up yet" (e.g. UNIMPLEMENTED).
        """
        deadline = time.monotonic() + timeout
        last, pause = "no answer", 0.05
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                answer = self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=min(remaining, 5.0))
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
                last = f"health status {health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)}"
            except grpc.RpcError as error:
                if error.code() not in _RETRY_HEALTH:
                    raise FramecastError.from_rpc_error(error) from None
                last = f"{error.code().name}: {error.details()}"
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, 1.0)
        raise FramecastError(
            grpc.StatusCode.DEADLINE_EXCEEDED, f"server at {self.address} not ready after {timeout:g} s ({last})"
        )

    def server_info(self, timeout: float | None = None) -> pb.ServerInfo:
        """The server's model, device, limits and queue. Raises FramecastError."""
        return self._unary(self._stub.GetServerInfo, pb.GetServerInfoRequest(), timeout)

    # ---- media --------------------------------------------------------------------------

    def upload(
        self,
        path_or_bytes: str | os.PathLike | bytes,
        filename: str | None = None,
        chunk_bytes: int = MiB,
        timeout: float | None = None,
    ) -> pb.MediaRef:
        """Upload a file (path) or bytes: a video, a PNG/JPEG image or a zip of frames.

        Streamed in ``chunk_bytes`` pieces. Returns the stored ``MediaRef`` (id ``sha256:<hex>``,
        kind, frames, size); the same bytes give the same id. Raises FileNotFoundError for a
        missing path, FramecastError (INVALID_ARGUMENT for unreadable media, RESOURCE_EXHAUSTED
        above the server's upload limit).
        """
        chunks = media_chunks(path_or_bytes, filename, chunk_bytes)
        return self._unary(self._stub.UploadMedia, chunks, timeout)

    def upload_array(
        self,
        frames: np.ndarray,
        fps: float = 16,
        lossless: bool = True,
        filename: str | None = None,
        timeout: float | None = None,
    ) -> pb.MediaRef:
        """Encode and upload frames: ``[F, H, W, 3]`` uint8 as mp4, ``[H, W, 3]`` uint8 as PNG; bool
        ``[F, H, W]`` / ``[H, W]`` masks (True = edit) likewise, white on black.

        Raises ValueError for other shapes/dtypes, FramecastError as ``upload``.
        """
        data, default_name = encode_array(frames, fps, lossless)
        return self.upload(data, filename=filename or default_name, timeout=timeout)

    def _download(self, media_id: str | pb.MediaRef, timeout: float | None) -> tuple[pb.MediaRef, bytes]:
        call = self._stub.DownloadMedia(
            pb.MediaRef(id=_media_id(media_id, "media_id")), timeout=self._deadline(timeout)
        )
        header, parts = pb.MediaRef(), []
        for index, chunk in enumerate(self._stream(call)):
            if index == 0 and chunk.HasField("header"):
                header = chunk.header
            parts.append(chunk.data)
        data = b"".join(parts)
        if header.size_bytes and header.size_bytes != len(data):
            raise FramecastError(
                grpc.StatusCode.DATA_LOSS, f"media {header.id!r}: got {len(data)} bytes of {header.size_bytes}"
            )
        return header, data

    def download(self, media_id: str | pb.MediaRef, timeout: float | None = None) -> bytes:
        """The stored bytes of a media id (an upload or a result video). Raises FramecastError
        (NOT_FOUND for an unknown id, DATA_LOSS for a truncated stream)."""
        return self._download(media_id, timeout)[1]

    def download_to(self, media_id: str | pb.MediaRef, path: str | os.PathLike, timeout: float | None = None) -> Path:
        """Download a media id into ``path``, written atomically (a crash leaves no half file).
        Returns the path. Raises FramecastError as ``download``, OSError for the write."""
        data = self.download(media_id, timeout)
        media.atomic_write(path, data)
        return Path(path)

    def list_media(self, timeout: float | None = None) -> pb.ListMediaResponse:
        """Stored media (uploads and results), newest first, with ``total_bytes``. Raises FramecastError."""
        return self._unary(self._stub.ListMedia, pb.ListMediaRequest(), timeout)

    def delete_media(self, media_id: str | pb.MediaRef, timeout: float | None = None) -> bool:
        """Delete stored media; returns whether it was deleted. Raises FramecastError (NOT_FOUND
        for an unknown id, INVALID_ARGUMENT for a malformed one)."""
        request = pb.MediaRef(id=_media_id(media_id, "media_id"))
        return self._unary(self._stub.DeleteMedia, request, timeout).deleted

    # ---- jobs ---------------------------------------------------------------------------

    def train(
        self,
        adapter: str,
        source_id: str | pb.MediaRef,
        mask_id: str | pb.MediaRef,
        prompt: str,
        *,
        steps: int | None = None,
        rank: int | None = None,
        learning_rate: float | None = None,
        mask_mode: str | int | None = None,
        dilate_px: int | None = None,
        references: Iterable[tuple[int, str | pb.MediaRef]] = (),
        seed: int = 0,
        loss_weights: tuple[float, float] | None = None,
        appearance_steps: int | None = None,
        gradient_checkpointing: bool = True,
        colour_variants: int = 0,
        timeout: float | None = None,
    ) -> Iterator[pb.JobEvent]:
        """Train adapter ``adapter`` on a source video; yields the job's ``JobEvent``s: ``accepted``,
        ``queued``, ``progress`` (with loss), then ``adapter`` (or ``error``).

        ``None`` leaves a setting to the server's default: steps 100, rank 16, learning_rate 1e-4,
        mask_mode "bbox", appearance_steps 100, loss_weights (edit 1.0, keep 1.0).
        ``colour_variants``: recoloured copies of the source trained alongside it (0: none).
        ``references``: ``(frame_index, image_id)`` pairs of edited frames (appearance phase).
        ``timeout`` bounds the whole stream. Raises ValueError for a bad mask_mode or
        loss_weights, or a count, pixel width or seed below 0 or beyond its field, at call
        time; FramecastError while iterating (INVALID_ARGUMENT, ALREADY_EXISTS for a taken
        name, NOT_FOUND for unknown media, RESOURCE_EXHAUSTED for a full queue). A failed job
        ends with an ``error`` event; ``run_train`` turns it into a FramecastError. Abandoning
        the iterator closes the stream; the job keeps running (``watch_job`` re-attaches,
        ``cancel_job`` stops it).
        """
        request = pb.TrainRequest(
            adapter=adapter,
            source_id=_media_id(source_id, "source_id"),
            mask_id=_media_id(mask_id, "mask_id"),
            prompt=prompt,
            rank=uint_value(rank or 0, "rank"),
            steps=uint_value(steps or 0, "steps"),
            appearance_steps=uint_value(appearance_steps or 0, "appearance_steps"),
            learning_rate=learning_rate or 0.0,
            mask_mode=mask_mode_value(mask_mode),
            dilate_px=uint_value(dilate_px or 0, "dilate_px"),
            seed=uint_value(seed, "seed", bits=64),
            gradient_checkpointing_off=not gradient_checkpointing,
            colour_variants=uint_value(colour_variants, "colour_variants"),
        )
        for frame_index, image_id in references:
            index = uint_value(int(frame_index), "references frame_index")
            request.references.add(frame_index=index, image_id=_media_id(image_id, "references"))
        if loss_weights is not None:
            try:
                edit, keep = (float(w) for w in loss_weights)
            except (TypeError, ValueError):
                raise ValueError(f"loss_weights must be (edit, keep) floats but is {loss_weights!r}") from None
            request.loss_weights.CopyFrom(pb.LossWeights(edit=edit, keep=keep))
        return self._stream(self._stub.Train(request, timeout=self._deadline(timeout)))

    def propagate(
        self,
        adapter: str,
        source_id: str | pb.MediaRef,
        mask_id: str | pb.MediaRef,
        edited_first_frame_id: str | pb.MediaRef,
        prompt: str,
        *,
        negative_prompt: str = "",
        steps: int = field_default(PropagateJob, "steps"),
        guidance_scale: float | None = None,
        seed: int = 0,
        composite: bool = False,
        feather_px: int | None = None,
        mask_mode: str | int | None = None,
        dilate_px: int | None = None,
        output_encoding: str | int | None = None,
        adapter_strength: float | None = None,
        timeout: float | None = None,
    ) -> Iterator[pb.JobEvent]:
        """Generate the edited video; yields ``accepted``, ``queued``, ``progress``, one ``frame``
        (PNG) per output frame as it is decoded, then ``result`` (or ``error``).

        ``adapter=""`` samples the base model alone; an adapter a queued or running training
        creates may be named, and the job runs after that training. ``None`` leaves a setting to
        the server's default: guidance_scale 5.0, feather_px 3, adapter_strength 1.0
        (0 to 2: scales the adapter's effect), mask_mode "bbox". ``output_encoding``: "mp4" (default),
        "mp4-lossless" or "png-sequence". ``timeout`` bounds the whole stream. Raises ValueError
        for a bad mask_mode/output_encoding, or a count, pixel width or seed below 0 or beyond its
        field, at call time; FramecastError while iterating
        (INVALID_ARGUMENT, NOT_FOUND for an unknown adapter or media, FAILED_PRECONDITION for an
        adapter that does not fit the model or whose training failed, RESOURCE_EXHAUSTED). ``collect_propagation``
        consumes the stream and turns an ``error`` event into a FramecastError.
        """
        request = pb.PropagateRequest(
            adapter=adapter,
            source_id=_media_id(source_id, "source_id"),
            mask_id=_media_id(mask_id, "mask_id"),
            edited_first_frame_id=_media_id(edited_first_frame_id, "edited_first_frame_id"),
            prompt=prompt,
            negative_prompt=negative_prompt,
            steps=uint_value(steps or 0, "steps"),
            seed=uint_value(seed, "seed", bits=64),
            composite=composite,
            mask_mode=mask_mode_value(mask_mode),
            dilate_px=uint_value(dilate_px or 0, "dilate_px"),
            output_encoding=enum_value(output_encoding, OUTPUT_ENCODINGS, "output_encoding"),
        )
        if guidance_scale is not None:
            request.guidance_scale = float(guidance_scale)
        if feather_px is not None:
            request.feather_px = uint_value(int(feather_px), "feather_px")
        if adapter_strength is not None:
            request.adapter_strength = float(adapter_strength)
        return self._stream(self._stub.Propagate(request, timeout=self._deadline(timeout)))

    def watch_job(self, job_id: str, timeout: float | None = None) -> Iterator[pb.JobEvent]:
        """Re-attach to a job: yields its current state (``accepted``), then its events to the end.
        Raises FramecastError while iterating (NOT_FOUND for an unknown job)."""
        return self._stream(self._stub.WatchJob(pb.JobRef(job_id=job_id), timeout=self._deadline(timeout)))

    def get_job(self, job_id: str, timeout: float | None = None) -> pb.JobInfo:
        """A job's state, progress and result. Raises FramecastError (NOT_FOUND)."""
        return self._unary(self._stub.GetJob, pb.JobRef(job_id=job_id), timeout)

    def list_jobs(
        self, state: str | int | None = None, limit: int | None = None, timeout: float | None = None
    ) -> list[pb.JobInfo]:
        """Jobs, most recent first; ``state`` filters ("queued", "running", "succeeded", "failed",
        "cancelled"); ``limit`` None = server default (100). Raises ValueError for a bad state,
        FramecastError."""
        request = pb.ListJobsRequest(state=enum_value(state, JOB_STATES, "state"), limit=uint_value(limit or 0, "limit"))
        return list(self._unary(self._stub.ListJobs, request, timeout).jobs)

    def cancel_job(self, job_id: str, timeout: float | None = None) -> pb.JobInfo:
        """Stop a job at its next step (idempotent); returns its state. Raises FramecastError (NOT_FOUND)."""
        return self._unary(self._stub.CancelJob, pb.JobRef(job_id=job_id), timeout)

    # ---- adapters -----------------------------------------------------------------------

    def list_adapters(self, timeout: float | None = None) -> list[pb.AdapterInfo]:
        """Every stored adapter, and those being trained or whose training failed, each with its
        ``state`` (TRAINING, READY, CACHED, LOADED, FAILED), ``pinned`` and ``last_used_at``.
        Raises FramecastError."""
        return list(self._unary(self._stub.ListAdapters, pb.ListAdaptersRequest(), timeout).adapters)

    def get_adapter(self, name: str, timeout: float | None = None) -> pb.AdapterInfo:
        """One adapter's info. Raises FramecastError (NOT_FOUND)."""
        return self._unary(self._stub.GetAdapter, pb.AdapterRef(name=name), timeout)

    def load_adapter(self, name: str, to: str | int = "device", timeout: float | None = None) -> pb.AdapterChange:
        """Bring an adapter into ``to`` = "device" memory (default) or "host" memory now, so the next
        job using it swaps fast; least recently used unpinned adapters make room. Idempotent:
        the reply's ``action`` is ADAPTER_ACTION_NONE when it already was there, ``evicted`` names
        what was moved down. Raises ValueError for a bad ``to``; FramecastError (NOT_FOUND;
        FAILED_PRECONDITION while it is trained or when its file does not fit the model;
        RESOURCE_EXHAUSTED when every device slot holds a pinned or in-use adapter)."""
        request = pb.LoadAdapterRequest(name=name, to=enum_value(to, LOAD_TARGETS, "to"))
        return self._unary(self._stub.LoadAdapter, request, timeout)

    def unload_adapter(self, name: str, to: str | int = "disk", timeout: float | None = None) -> pb.AdapterChange:
        """Take an adapter off the device: ``to`` = "disk" (out of memory, default) or "host" (kept
        in host memory). Idempotent. Raises ValueError for a bad ``to``; FramecastError
        (NOT_FOUND; FAILED_PRECONDITION when it is pinned or a running job uses it)."""
        request = pb.UnloadAdapterRequest(name=name, to=enum_value(to, UNLOAD_TARGETS, "to"))
        return self._unary(self._stub.UnloadAdapter, request, timeout)

    def pin_adapter(self, name: str, timeout: float | None = None) -> pb.AdapterChange:
        """Load an adapter onto the device and keep it there (never evicted). Idempotent. Raises
        FramecastError as ``load_adapter``."""
        return self._unary(self._stub.PinAdapter, pb.PinAdapterRequest(name=name), timeout)

    def unpin_adapter(self, name: str, timeout: float | None = None) -> pb.AdapterChange:
        """Let a pinned adapter be evicted again (it stays loaded for now). Idempotent. Raises
        FramecastError (NOT_FOUND)."""
        return self._unary(self._stub.PinAdapter, pb.PinAdapterRequest(name=name, unpin=True), timeout)

    def import_adapter(
        self,
        name: str,
        path_or_bytes: str | os.PathLike | bytes,
        filename: str | None = None,
        chunk_bytes: int = MiB,
        timeout: float | None = None,
    ) -> pb.AdapterInfo:
        """Add adapter ``name`` from a LoRA safetensors file for the server's base model, in
        diffusers/peft, original-Wan/ComfyUI or kohya/musubi layout. Returns its info.

        Raises FileNotFoundError for a missing path; FramecastError (INVALID_ARGUMENT for a bad
        name, a file that is not safetensors or one over the upload limit; FAILED_PRECONDITION,
        listing them, for keys or shapes that do not fit the model; ALREADY_EXISTS)."""
        chunks = adapter_chunks(name, path_or_bytes, filename, chunk_bytes)
        return self._unary(self._stub.ImportAdapter, chunks, timeout)

    def delete_adapter(self, name: str, timeout: float | None = None) -> bool:
        """Delete an adapter from disk and memory; returns whether it was deleted. Raises
        FramecastError (NOT_FOUND, FAILED_PRECONDITION while a job uses it)."""
        return self._unary(self._stub.DeleteAdapter, pb.AdapterRef(name=name), timeout).deleted

    def export_adapter(
        self,
        name: str,
        path: str | os.PathLike | None = None,
        format: str | int = "diffusers",
        timeout: float | None = None,
    ) -> bytes:
        """An adapter as one safetensors file: ``format="diffusers"`` (loadable with
        ``WanImageToVideoPipeline.load_lora_weights``) or ``"comfyui"`` (original Wan key names under
        ``diffusion_model.``, with alphas); written atomically to ``path`` when given.
        Returns the bytes. Raises ValueError for a bad format, FramecastError (NOT_FOUND,
        DATA_LOSS for a truncated stream), OSError for the write."""
        request = pb.ExportAdapterRequest(name=name, format=enum_value(format, EXPORT_FORMATS, "format"))
        expected, parts = 0, []
        for index, chunk in enumerate(self._stream(self._stub.ExportAdapter(request, timeout=self._deadline(timeout)))):
            if index == 0:
                expected = chunk.size_bytes
            parts.append(chunk.data)
        data = b"".join(parts)
        if expected and expected != len(data):
            raise FramecastError(grpc.StatusCode.DATA_LOSS, f"adapter {name!r}: got {len(data)} bytes of {expected}")
        if path is not None:
            media.atomic_write(path, data)
        return data
