"""A job: one unit of work, its record and the history of its events, which any number of
streams follow (``Job.follow``), so a client that lost its stream re-attaches and misses nothing.

A job carries the request id of the RPC that created it (``request_ids``) and keeps the context it
was made in (``Job.created_in``: its RPC's trace span, for ``tracing``). A ``JobObserver`` (the
server's metrics, its tracing) is told when it starts, reports progress and ends; the log has a
line for each job accepted and each job ended (``describe``, ``log_end``), each naming the job's
request id. The queue that runs jobs and keeps their records is ``framecast.server.jobs``.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Protocol

from framecast.server.errors import Status
from framecast.server.request_ids import NO_REQUEST, current_request_id
from framecast.v1 import framecast_pb2 as pb

# A job's end line is logged under the queue's name, as the server's log has always shown a job's
# lines (accepted, ended) under one name that operators filter on.
log = logging.getLogger("framecast.server.jobs")

TERMINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)
WATCH_PROGRESS_EVERY_S = 0.25  # a watcher's progress at most four times a second (``Job.follow``)


class JobObserver(Protocol):
    """Told about jobs as they run; each call must be quick (it runs on the job's thread)."""

    def job_started(self, job: "Job") -> None: ...
    def job_progress(self, job: "Job", progress: pb.Progress) -> None: ...
    def job_ended(self, job: "Job") -> None: ...  # once, in its terminal state, whether it ran or not


class Unobserved:
    """Told about jobs, and does nothing with it (a queue without an observer)."""

    def job_started(self, job: "Job") -> None:
        pass

    def job_progress(self, job: "Job", progress: pb.Progress) -> None:
        pass

    def job_ended(self, job: "Job") -> None:
        pass


class JobObservers:
    """Several observers told in turn (the metrics, then the tracing)."""

    def __init__(self, *observers: JobObserver):
        self.observers = observers

    def job_started(self, job: "Job") -> None:
        for observer in self.observers:
            observer.job_started(job)

    def job_progress(self, job: "Job", progress: pb.Progress) -> None:
        for observer in self.observers:
            observer.job_progress(job, progress)

    def job_ended(self, job: "Job") -> None:
        for observer in self.observers:
            observer.job_ended(job)


class Job:
    """One unit of work. ``run(job)`` does it, emitting events; its return value is ignored."""

    def __init__(self, kind: int, adapter: str, run: Callable[["Job"], None], uses_adapters: tuple[str, ...] = (),
                 request_id: str | None = None):  # fmt: skip
        """``request_id``: the RPC's that creates it; None takes the current one (``request_ids``)."""
        self.info = pb.JobInfo(
            job_id=uuid.uuid4().hex[:16], kind=kind, state=pb.JOB_STATE_QUEUED, adapter=adapter, created_at=time.time(),
            request_id=current_request_id() if request_id is None else request_id,
        )
        self.run = run
        self.created_in = contextvars.copy_context()  # the creating RPC's context: its trace span (tracing)
        self.uses_adapters = uses_adapters
        self.cancel_requested = threading.Event()
        self._history: list[pb.JobEvent] = []
        lock = threading.RLock()
        self._changed = threading.Condition(lock)
        # Watchers (``follow(coalesce_progress=True)``) wait here: woken by every event but progress,
        # and by progress at most every WATCH_PROGRESS_EVERY_S, so a fast job does not wake hundreds
        # of them at each step. It shares ``_changed``'s lock.
        self._watched = threading.Condition(lock)
        self._watchers_woken_at = float("-inf")
        self._record: Callable[[pb.JobInfo], None] | None = None  # the queue's durable record writer
        self.observer: JobObserver = Unobserved()  # the queue's, once it accepts the job
        self.status: Status | None = None  # how it failed or was cancelled, once it has

    @property
    def id(self) -> str:
        return self.info.job_id

    @property
    def done(self) -> bool:
        return self.info.state in TERMINAL

    def should_cancel(self) -> bool:
        return self.cancel_requested.is_set()

    def snapshot(self) -> pb.JobInfo:
        with self._changed:
            return pb.JobInfo.FromString(self.info.SerializeToString())

    def emit(self, **event) -> None:
        """Append an event (one JobEvent oneof field) and wake followers."""
        message = pb.JobEvent(job_id=self.id, **event)
        with self._changed:
            if "progress" in event:
                self.info.progress.CopyFrom(event["progress"])
            if "queued" in event:
                self.info.queue_position = event["queued"].position
            self._history.append(message)
            self._changed.notify_all()
            now = time.monotonic()
            if "progress" not in event or now - self._watchers_woken_at >= WATCH_PROGRESS_EVERY_S:
                self._watchers_woken_at = now
                self._watched.notify_all()
        if "progress" in event:
            self.observer.job_progress(self, event["progress"])

    def set_state(self, state: int, **fields) -> None:
        with self._changed:
            self.info.state = state
            for name, value in fields.items():
                if isinstance(value, (int, float, str)):
                    setattr(self.info, name, value)
                else:
                    getattr(self.info, name).CopyFrom(value)
            self._changed.notify_all()
            self._watched.notify_all()

    def keep_record(self, write: Callable[[pb.JobInfo], None]) -> None:
        """Called by the queue that accepts the job: from now on ``checkpoint`` writes the job's
        record through ``write``."""
        with self._changed:
            self._record = write

    def checkpoint(self) -> None:
        """Write the job's record as it stands now (state and fields so far) to disk, so a crash
        before the job ends still finds what it had done: a result stored, its metrics."""
        with self._changed:  # under the lock that ``end`` takes: never written over the final record
            if self._record is not None and not self.done:
                self._record(self.snapshot())  # the condition's lock is reentrant

    def end(self, state: int, status: Status | None = None) -> bool:
        """Give the job its terminal ``state`` (and, failed or cancelled, its ``status`` as an ``error``
        event) in one step, so a follower never sees the state without the event. False, changing
        nothing, when it had ended already (a job abandoned at shutdown whose run returns later)."""
        with self._changed:
            if self.done:
                return False
            if status is None:
                self.set_state(state, finished_at=time.time())
            else:
                self.status = status
                error = job_error(status)
                self.set_state(state, finished_at=time.time(), error=error)
                self.emit(error=error)
        self.observer.job_ended(self)
        log_end(self.snapshot())
        return True

    def follow(self, replay_progress: bool = True, alive: Callable[[], bool] | None = None,
               coalesce_progress: bool = False) -> Iterator[pb.JobEvent]:  # fmt: skip
        """Yield this job's events from the start, then live ones until the job ends.

        With ``replay_progress`` off, past progress events are skipped (frames and final
        events are always replayed): a re-attaching client gets the state, not the log.
        ``alive`` (an RPC's ``context.is_active``) is asked about once a second while no event
        comes: once it says False the follow ends, so a stream whose client went away gives its
        thread back without waiting for the job's next event. With ``coalesce_progress``,
        progress comes at most every WATCH_PROGRESS_EVERY_S: a progress event a later one
        supersedes within the interval is skipped, and the latest always goes out before any
        other event (a phase's last step included; in a pause between events, within a second),
        so hundreds of watchers of a fast job cost the server a few messages a second each.
        """
        index = 0
        progress_every_s = WATCH_PROGRESS_EVERY_S if coalesce_progress else 0.0
        changed = self._watched if coalesce_progress else self._changed
        with self._changed:
            skip_before = 0 if replay_progress else len(self._history)
        held, sent_at = None, float("-inf")  # the latest progress not yet sent; when progress last went out
        while True:
            with self._changed:
                while index >= len(self._history) and not self.done:
                    if alive is not None and not alive():
                        return
                    due = 1.0 if held is None else sent_at + progress_every_s - time.monotonic()
                    if due <= 0:
                        break
                    changed.wait(timeout=min(due, 1.0))
                pending = self._history[index:]
                index += len(pending)
                finished = self.done and index >= len(self._history)
            for offset, event in enumerate(pending):
                position = index - len(pending) + offset
                kind = event.WhichOneof("event")
                if position < skip_before and kind in ("progress", "queued"):
                    continue
                if progress_every_s and kind == "progress":
                    if held is not None and held.progress.phase != event.progress.phase:  # a phase's last step
                        sent_at = time.monotonic()
                        yield held
                    held = event
                    continue
                if held is not None:
                    progress, held, sent_at = held, None, time.monotonic()
                    yield progress
                yield event
            if held is not None and (finished or time.monotonic() - sent_at >= progress_every_s):
                progress, held, sent_at = held, None, time.monotonic()
                yield progress
            if finished:
                return


def describe(info: pb.JobInfo) -> str:
    """A job as its log lines name it: its kind, its adapter and the request that made it (named
    in the line itself: a job may end in another request's scope, a CancelJob's, or in none)."""
    kind = pb.JobKind.Name(info.kind).removeprefix("JOB_KIND_").lower()
    adapter = f"adapter {info.adapter!r}" if info.adapter else "no adapter"
    return f"{kind}, {adapter}, request {info.request_id or NO_REQUEST}"


def log_end(info: pb.JobInfo) -> None:
    """The line a job leaves when it ends (a warning when it failed): its state, how long it ran and
    waited, why it failed or was cancelled, and what its result says (``result_summary``)."""
    state = pb.JobState.Name(info.state).removeprefix("JOB_STATE_").lower()
    if info.started_at:
        timing = f"ran {info.finished_at - info.started_at:.2f} s after {info.started_at - info.created_at:.2f} s queued"
    else:
        timing = f"never ran, {info.finished_at - info.created_at:.2f} s queued"
    said = [f"{info.error.code}: {info.error.message}"] if info.error.code else []
    said += [summary] if (summary := result_summary(info)) else []
    level = logging.WARNING if info.state == pb.JOB_STATE_FAILED else logging.INFO
    log.log(level, "job %s %s: %s, %s%s", info.job_id, state, describe(info), timing, "".join(f"; {s}" for s in said))


def result_summary(info: pb.JobInfo) -> str:
    """What a job's result says, for its end line: a training's adapter and final loss, a
    propagation's output, how well it kept the background and whether its edit held ("" without a
    result)."""
    if info.HasField("adapter_result"):
        adapter = info.adapter_result
        return f"adapter {adapter.name!r} rank {adapter.rank}, final loss {adapter.final_loss:.4g}"
    if info.HasField("propagate_result"):
        result = info.propagate_result
        summary = f"output {result.video.id}, {result.num_frames} frames"
        if result.HasField("metrics"):
            summary += f", background PSNR {result.metrics.background_psnr_db:.1f} dB"
        if result.fidelity.verdict:
            summary += f", edit {result.fidelity.summary}"
        return summary
    if info.HasField("track_result"):
        tracked = info.track_result
        return f"tracked mask {tracked.mask.id} ({tracked.tracker}), {len(tracked.lost_frames)} frames lost"
    return ""


def job_error(status: Status) -> pb.JobError:
    """A status as a job record and an ``error`` event carry it (the code by name)."""
    return pb.JobError(code=status.code.name, message=status.message)
