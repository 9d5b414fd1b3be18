"""Consuming a job's ``JobEvent`` stream: wait for its outcome, raise its error."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import grpc
import numpy as np

from framecast.client.errors import FramecastError
from framecast.common import media
from framecast.v1 import framecast_pb2 as pb

OnEvent = Callable[[pb.JobEvent], None]

FINISHED = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


def accepted(events: Iterator[pb.JobEvent]) -> pb.JobEvent:
    """The first event of a Train, Propagate or WatchJob stream: ``accepted``, the job as the server
    took it. The rest of the stream is left to follow. Raises FramecastError for a refused request
    (the server refuses before it accepts: INVALID_ARGUMENT with every problem, NOT_FOUND...) and
    (UNKNOWN) for a stream that ends or starts otherwise."""
    first = next(iter(events), None)
    if first is None or first.WhichOneof("event") != "accepted":
        kind = "nothing" if first is None else f"a {first.WhichOneof('event')} event"
        raise FramecastError(grpc.StatusCode.UNKNOWN, f"the job's event stream began with {kind}, not 'accepted'")
    return first


def wait_for_result(events: Iterable[pb.JobEvent], on_event: OnEvent | None = None) -> pb.JobEvent:
    """Consume a job's event stream and return its final event (``adapter`` or ``result``).

    ``on_event`` sees every event first (progress bars, frames). A stream that ends after an
    ``accepted`` event showing a finished job (``watch_job`` on a job that ended before the server
    restarted) ends as that job did. Raises FramecastError for a failed or cancelled job (the
    ``error`` event's code and message), for a failed stream, and (UNKNOWN) for a stream that ends
    without a final event.
    """
    last_job, last_info = "", None
    for event in events:
        last_job = event.job_id or last_job
        if on_event is not None:
            on_event(event)
        kind = event.WhichOneof("event")
        if kind == "accepted":
            last_info = event.accepted
        if kind == "error":
            raise FramecastError.from_job_error(event.error.code, event.error.message)
        if kind in ("adapter", "result") or (kind == "tracked" and last_info is not None
                                             and last_info.kind == pb.JOB_KIND_TRACK):  # fmt: skip
            return event  # a Track's tracked region ends it; a training's or propagation's does not
    if last_info is not None and last_info.state in FINISHED:
        return _final_event(last_info)
    raise FramecastError(grpc.StatusCode.UNKNOWN, f"the event stream of job {last_job!r} ended before the job finished")


def _final_event(info: pb.JobInfo) -> pb.JobEvent:
    """The final event of a finished job, from its record."""
    if info.state != pb.JOB_STATE_SUCCEEDED:
        raise FramecastError.from_job_error(info.error.code or "CANCELLED", info.error.message or "job cancelled")
    if info.HasField("adapter_result"):
        return pb.JobEvent(job_id=info.job_id, adapter=info.adapter_result)
    if info.HasField("track_result"):
        return pb.JobEvent(job_id=info.job_id, tracked=info.track_result)
    return pb.JobEvent(job_id=info.job_id, result=info.propagate_result)


def run_train(events: Iterable[pb.JobEvent], on_event: OnEvent | None = None) -> pb.AdapterInfo:
    """Consume a ``train`` stream; return the new adapter's ``AdapterInfo``. Raises as ``wait_for_result``."""
    return _final(events, on_event, "adapter").adapter


def collect_propagation(
    events: Iterable[pb.JobEvent], on_event: OnEvent | None = None
) -> tuple[dict[int, np.ndarray], pb.PropagateResult]:
    """Consume a ``propagate`` stream; return ``({working frame index: [H, W, 3] uint8}, PropagateResult)``.

    Raises as ``wait_for_result``.
    """
    frames: dict[int, np.ndarray] = {}

    def collect(event: pb.JobEvent) -> None:
        if event.WhichOneof("event") == "frame":
            frames[event.frame.index] = media.decode_image(event.frame.png)
        if on_event is not None:
            on_event(event)

    return frames, _final(events, collect, "result").result


def run_track(events: Iterable[pb.JobEvent], on_event: OnEvent | None = None) -> pb.TrackedMask:
    """Consume a ``track`` stream (or a watch of a Track job); return its tracked region. Raises as
    ``wait_for_result``."""
    return _final(events, on_event, "tracked").tracked


def _final(events: Iterable[pb.JobEvent], on_event: OnEvent | None, expected: str) -> pb.JobEvent:
    final = wait_for_result(events, on_event)
    if (kind := final.WhichOneof("event")) != expected:
        wanted = {"adapter": "an adapter", "tracked": "a tracked region"}.get(expected, "a result")
        raise FramecastError(grpc.StatusCode.UNKNOWN, f"job {final.job_id!r} ended with a {kind}, not {wanted}")
    return final
