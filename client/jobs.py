"""Consuming a job's ``JobEvent`` stream: wait for its outcome, raise its error."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import grpc
import numpy as np

from framecast.client.errors import FramecastError
from framecast.engine import media
from framecast.v1 import framecast_pb2 as pb

OnEvent = Callable[[pb.JobEvent], None]


def wait_for_result(events: Iterable[pb.JobEvent], on_event: OnEvent | None = None) -> pb.JobEvent:
    """Consume a job's event stream and return its final event (``adapter`` or ``result``).

    ``on_event`` sees every event first (progress bars, frames). Raises FramecastError for
    a failed or cancelled job (the ``error`` event's code and message), for a failed
    stream, and (UNKNOWN) for a stream that ends without a final event.
    """
    last_job = ""
    for event in events:
        last_job = event.job_id or last_job
        if on_event is not None:
            on_event(event)
        kind = event.WhichOneof("event")
        if kind == "error":
            raise FramecastError.from_job_error(event.error.code, event.error.message)
        if kind in ("adapter", "result"):
            return event
    raise FramecastError(grpc.StatusCode.UNKNOWN, f"the event stream of job {last_job!r} ended before the job finished")


def run_train(events: Iterable[pb.JobEvent], on_event: OnEvent | None = None) -> pb.AdapterInfo:
    """Consume a ``train`` stream; return the new adapter's ``AdapterInfo``. Raises as ``wait_for_result``."""
    final = wait_for_result(events, on_event)
    if final.WhichOneof("event") != "adapter":
        raise FramecastError(
            grpc.StatusCode.UNKNOWN, f"job {final.job_id!r} ended with a {final.WhichOneof('event')}, not an adapter"
        )
    return final.adapter


def collect_propagation(
    events: Iterable[pb.JobEvent], on_event: OnEvent | None = None
) -> tuple[dict[int, np.ndarray], pb.PropagateResult]:
    """Consume a ``propagate`` stream; return ``({frame index: [H, W, 3] uint8}, PropagateResult)``.

    Raises as ``wait_for_result``.
    """
    frames: dict[int, np.ndarray] = {}

    def collect(event: pb.JobEvent) -> None:
        if event.WhichOneof("event") == "frame":
            frames[event.frame.index] = media.decode_image(event.frame.png)
        if on_event is not None:
            on_event(event)

    final = wait_for_result(events, collect)
    if final.WhichOneof("event") != "result":
        raise FramecastError(
            grpc.StatusCode.UNKNOWN, f"job {final.job_id!r} ended with a {final.WhichOneof('event')}, not a result"
        )
    return frames, final.result
