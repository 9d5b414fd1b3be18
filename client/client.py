"""``FramecastClient``: the public Python API of a framecast server.

One class, one channel. Every method takes ``timeout=`` (seconds; ``None`` = the
client's default, itself ``None`` = no deadline) and raises ``FramecastError`` for any
failed call, streams included. Streaming jobs (``train``, ``propagate``, ``watch_job``)
yield the raw ``framecast_pb2.JobEvent`` messages; ``framecast.client.jobs`` (``wait_for_result``,
``run_train``, ``collect_propagation``) consumes such a stream and returns its outcome. ``plan``
answers what a job would do, and every problem of its request, without queueing it.

A job's edit region is a mask (``mask_id``: a mask video, image sequence or one image) or a region
on the shot's first frame that the server tracks (``box=(x, y, w, h)``, ``points=[(x, y), (x, y,
False)]`` or ``mask_frame0``, with ``tracker=``): the job then streams a ``tracked`` event with the
tracked mask (a stored mask video), and ``notice`` events for frames where the region was lost.

Imports neither torch nor diffusers: a client-only install stays small.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from framecast.client.channel import open_channel
from framecast.client.chunks import MiB, OnBytes, adapter_chunks, encode_array, media_chunks, reporting
from framecast.client.errors import FramecastError
from framecast.client.requests import (  # noqa: F401 (part of this module's API since before requests.py)
    MASK_MODES,
    OUTPUT_ENCODINGS,
    TRACKERS,
    enum_value,
    mask_mode_value,
    job_request,
    plan_request,
    sampling_message,
    track_request,
    uint_value,
)
from framecast.client.requests import media_id as media_id_of
from framecast.common import media
from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc as pb_grpc

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
DEFAULT_PORT = 50051
# gRPC target schemes (unix:/path, dns:///host:port, ipv6:[::1]:50051 ...): taken as they are.
_SCHEMES = ("unix:", "unix-abstract:", "vsock:", "dns:", "ipv4:", "ipv6:", "xds:")


def server_address(address: str) -> str:
    """``host[:port]`` with the default port when it has none: ``myhost`` -> ``myhost:50051``,
    ``[::1]`` -> ``[::1]:50051`` (a bare IPv6 address ``::1`` too); a gRPC target with a scheme
    (``unix:/run/framecast.sock``, ``dns:///host:443``) is taken as it is. Raises ValueError for an
    empty address or one with a bad port."""
    address = address.strip()
    if address.startswith(_SCHEMES) or "/" in address:
        return address
    if address.startswith("["):
        host, bracket, port = address[1:].partition("]")
        if not bracket or not host or (port and not port.startswith(":")):
            raise ValueError(f"server address must be host, host:port, [IPv6] or [IPv6]:port but is {address!r}")
        host, port = f"[{host}]", port[1:]
    elif address.count(":") > 1:  # a bare IPv6 address: it has no port
        host, port = f"[{address}]", ""
    else:
        host, _, port = address.partition(":")
    if not host:
        raise ValueError(f"server address must name a host but is {address!r}")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"server address {address!r} has a bad port: {port!r}")
    return f"{host}:{port or DEFAULT_PORT}"


class FramecastClient:
    """A connection to a framecast server.

    ``address`` is ``host:port``; a host alone means port 50051 (``server_address``).

    >>> with FramecastClient("127.0.0.1:50051", timeout=60) as client:
    ...     client.wait_ready(30)
    ...     source = client.upload("source.mp4")

    A server on a network (docs/serving.md#on-a-network) takes a token and TLS:

    >>> FramecastClient("gpu-1.example.com", token=os.environ["FRAMECAST_TOKEN"], tls_ca="ca.pem")
    """

    def __init__(
        self, address: str = "127.0.0.1:50051", timeout: float | None = None, max_message_mb: int = 64, *,
        token: str | None = None, tls: bool = False, tls_ca: str | os.PathLike | None = None,
        tls_cert: str | os.PathLike | None = None, tls_key: str | os.PathLike | None = None,
    ):  # fmt: skip
        """Open the channel (lazily: nothing is dialled before the first call).

        ``token``: a bearer token the server accepts (``serve --auth-tokens``), sent with every call.
        ``tls=True``: connect over TLS, the server's certificate verified against the system's roots,
        or against ``tls_ca`` (a PEM bundle; giving it implies TLS). ``tls_cert`` and ``tls_key``: a
        client certificate and its key, for a server that asks for one (``--tls-client-ca``).

        Raises ValueError for an address ``server_address`` refuses, a certificate without its key
        (or the reverse), an unreadable certificate file or a token with spaces."""
        self.address = server_address(address)
        self.timeout = timeout
        limit = int(max_message_mb * MiB)
        options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
        self._channel = open_channel(self.address, options, token, tls, tls_ca, tls_cert, tls_key)
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

    def health(self, service: str = "readiness", timeout: float | None = None) -> str:
        """The server's health for ``service``: "SERVING" or "NOT_SERVING". ``"liveness"``: the process
        answers; ``"readiness"``: it can run jobs (model loaded, worker alive, device answering);
        ``""``: its model is loaded. Needs no token. Raises FramecastError (NOT_FOUND for an
        unknown service name, UNAVAILABLE when nothing answers)."""
        request = health_pb2.HealthCheckRequest(service=service)
        answer = self._unary(self._health.Check, request, timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)

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
        on_progress: OnBytes | None = None,
    ) -> pb.MediaRef:
        """Upload a file (path) or bytes: a video, a PNG/JPEG image or a zip of frames.

        Streamed in ``chunk_bytes`` pieces; ``on_progress(sent, total)`` is called (from gRPC's
        thread) as each piece is handed to the channel. Returns the stored ``MediaRef`` (id
        ``sha256:<hex>``, kind, frames, size, duration, audio, rotation); the same bytes give the
        same id. Raises FileNotFoundError for a missing path, FramecastError (INVALID_ARGUMENT for
        unreadable media or a source beyond the server's size or duration limits,
        RESOURCE_EXHAUSTED above its upload limit).
        """
        chunks = media_chunks(path_or_bytes, filename, chunk_bytes)
        if on_progress is not None:
            chunks = reporting(chunks, on_progress)
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
            pb.MediaRef(id=media_id_of(media_id, "media_id")), timeout=self._deadline(timeout)
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
        request = pb.MediaRef(id=media_id_of(media_id, "media_id"))
        return self._unary(self._stub.DeleteMedia, request, timeout).deleted

    # ---- jobs ---------------------------------------------------------------------------

    def train(
        self, adapter: str, source_id: str | pb.MediaRef, mask_id: str | pb.MediaRef | None = None,
        prompt: str | None = None, *, timeout: float | None = None, **options,
    ) -> Iterator[pb.JobEvent]:  # fmt: skip
        """Train adapter ``adapter`` on a source video; yields the job's ``JobEvent``s: ``accepted``,
        ``queued``, ``progress`` (phases "decode", "motion", "appearance"; with loss and the server's
        ETA), then ``adapter`` (or ``error``); with a mask prompt also ``tracked`` (the tracked mask)
        and ``notice`` events (``region_lost``; ``region_moves`` for one mask image whose region
        moves out of it).

        The edit region is ``mask_id`` or one of the mask prompt's options: ``box=(x, y, width,
        height)``, ``points=[(x, y), (x, y, False), ...]`` (source pixels of the first frame; a third
        element False marks a point off the region) or ``mask_frame0`` (the media id of a mask image
        for the first frame), tracked by ``tracker`` ("csrt", "flow", "sam2"; ``server_info().trackers``
        lists a server's). ``prompt``, the source's caption, is required (by keyword when ``mask_id``
        is left out: ``client.train("car", source, prompt="a car", box=(40, 30, 64, 48))``).

        ``options`` are ``framecast.client.requests.train_request``'s: steps, rank, learning_rate,
        mask_mode, dilate_px, references (``(frame_index, image_id)`` or ``(time_s, image_id)``),
        seed, loss_weights, appearance_steps, gradient_checkpointing, colour_variants, window_frames,
        overlap_frames, steps_in_all, and the shot: start_s, end_s, fps, source_fps, fit ("fit",
        "crop", "pad"); None leaves a setting to the server, or to ``preset=`` ("quality", "fast":
        ``framecast.client.requests.PRESETS``). ``timeout`` bounds the whole stream. Raises ValueError for no edit region or two
        (naming the arguments), a bad choice or loss_weights, or a count, pixel width, coordinate,
        seed or time below 0 or beyond its field, TypeError for an unknown option or no prompt, at
        call time; FramecastError while iterating (INVALID_ARGUMENT with
        every problem of the request, ALREADY_EXISTS for a taken name, NOT_FOUND for unknown media,
        RESOURCE_EXHAUSTED for a full queue). A failed job ends with an ``error`` event;
        ``run_train`` turns it into a FramecastError. Abandoning the iterator closes the stream;
        the job keeps running (``watch_job`` re-attaches, ``cancel_job`` stops it).
        """
        request = job_request("train", adapter, source_id, mask_id, prompt, **options)
        return self._stream(self._stub.Train(request, timeout=self._deadline(timeout)))

    def propagate(
        self, adapter: str, source_id: str | pb.MediaRef, mask_id: str | pb.MediaRef | None = None,
        edited_first_frame_id: str | pb.MediaRef | None = None, prompt: str | None = None, *,
        timeout: float | None = None, **options,
    ) -> Iterator[pb.JobEvent]:  # fmt: skip
        """Generate the edited video; yields ``accepted``, ``queued``, ``progress`` (phases "decode",
        "denoise", "encode", with the server's ETA), one ``frame`` (PNG, on the working grid) per
        working frame as it is decoded, then ``result`` (or ``error``): the stored video at the
        source's size, frame rate and frame count, with its audio. ``notice`` and ``tracked``
        events come as in ``train``.

        The edit region is ``mask_id`` or a mask prompt (``box``, ``points`` or ``mask_frame0``, with
        ``tracker``), as in ``train``; ``edited_first_frame_id`` and ``prompt`` are required (by
        keyword when ``mask_id`` is left out).

        ``adapter=""`` samples the base model alone; an adapter a queued or running training
        creates may be named, and the job runs after that training. ``options`` are
        ``framecast.client.requests.propagate_request``'s: negative_prompt, steps (default 30),
        guidance_scale, seed, composite, feather_px, mask_mode, dilate_px, output_encoding ("mp4",
        "mp4-lossless", "png-sequence"), container ("mp4", "matroska": the file of an mp4 encoding),
        adapter_strength, quality (H.264 CRF 0-51), interpolation
        ("nearest", "blend", "flow"), guidance_steps, step_cache ("none", "first-block",
        "taylorseer"), cache_threshold, cache_interval, and the shot: start_s, end_s, fps,
        source_fps, fit; None leaves a setting to the server, or to ``preset=`` as in ``train``. ``timeout`` bounds the whole stream. Raises ValueError for
        no edit region or two (naming the arguments), a bad choice, or a count, pixel width,
        coordinate, seed, quality or time below 0 or beyond its field, TypeError for an unknown
        option or no edited first frame or prompt, at call time; FramecastError while iterating
        (INVALID_ARGUMENT with every problem of the request, NOT_FOUND for an unknown adapter or
        media, FAILED_PRECONDITION for an adapter that does not fit the model or whose training
        failed, RESOURCE_EXHAUSTED). ``collect_propagation`` consumes the stream and turns an
        ``error`` event into a FramecastError.
        """
        request = job_request("propagate", adapter, source_id, mask_id, edited_first_frame_id, prompt, **options)
        return self._stream(self._stub.Propagate(request, timeout=self._deadline(timeout)))

    def plan(self, kind: str, *args, timeout: float | None = None, **options) -> pb.PlanResponse:
        """What ``train`` (``kind="train"``) or ``propagate`` (``kind="propagate"``) with the same
        arguments would do, without queueing it: the working grid (``width``, ``height``, ``fps``,
        ``num_frames``), the ``windows``, the estimated peak device memory and seconds, the output's
        frames, and every problem of the request at once (``ok`` is False when there are any; they
        are answered here, not raised). Raises ValueError/TypeError as the job's call, and for
        another ``kind``; FramecastError for a failed call (UNAVAILABLE while the model loads)."""
        return self._unary(self._stub.Plan, plan_request(kind, *args, **options), timeout)

    def plan_train(self, *args, timeout: float | None = None, **options) -> pb.PlanResponse:
        """``plan("train", ...)``: the plan of ``train`` with these arguments. Raises as ``plan``."""
        return self.plan("train", *args, timeout=timeout, **options)

    def plan_propagate(self, *args, timeout: float | None = None, **options) -> pb.PlanResponse:
        """``plan("propagate", ...)``: the plan of ``propagate`` with these arguments. Raises as ``plan``."""
        return self.plan("propagate", *args, timeout=timeout, **options)

    def track(self, source_id: str | pb.MediaRef, *, timeout: float | None = None, **region) -> Iterator[pb.JobEvent]:
        """Track a region on the first frame through the shot, training and generating nothing: yields
        ``accepted``, ``queued``, ``progress`` ("decode"), ``notice`` events (``region_lost``,
        ``box_clipped``...), then ``tracked`` (the final event: the tracked mask, stored, and the frames
        where it was lost), or ``error``. ``region`` is ``box``, ``points`` or ``mask_frame0`` with
        ``tracker``, and the shot options (start_s, end_s, fps, source_fps, fit), as ``train`` takes
        them: a training with the same ones finds the region tracked. Raises ValueError/TypeError at
        call time as ``train``; FramecastError while iterating (INVALID_ARGUMENT, NOT_FOUND)."""
        request = track_request(source_id, **region)
        return self._stream(self._stub.Track(request, timeout=self._deadline(timeout)))

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
        drop_unsupported: bool = False,
        sampling: dict | None = None,
    ) -> pb.AdapterInfo:
        """Add adapter ``name`` from a LoRA safetensors file for the server's base model, in any
        published Wan layout (ComfyUI / original Wan and LightX2V, diffusion-pipe, musubi-tuner,
        VideoX-Fun, DiffSynth-Studio, peft, diffusers). Returns its info, whose ``dropped`` lists
        the entries left out with ``drop_unsupported``. ``sampling``: how to sample with it as an
        accelerator ({"steps": 4, "guidance_scale": 1, "shift": 5}: what ``preset="turbo"`` takes).

        Raises FileNotFoundError for a missing path; ValueError / TypeError for bad ``sampling``;
        FramecastError (INVALID_ARGUMENT for a bad name, a file that is not safetensors or one over
        the upload limit, entries framecast cannot apply unless ``drop_unsupported``, sampling out of
        range; FAILED_PRECONDITION for shapes of another model; ALREADY_EXISTS)."""
        chunks = adapter_chunks(name, path_or_bytes, filename, chunk_bytes, drop_unsupported, sampling_message(sampling))
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
