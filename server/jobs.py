"""Jobs and the queue that runs them one at a time on the device.

A job's events (protobuf ``JobEvent``s) are kept in an append-only history that any number
of streams follow, so a client that lost its stream re-attaches and misses nothing. Job
records are persisted as JSON on every state change; jobs a crash or restart interrupted
are marked failed when the server comes back.

A job carries the request id of the RPC that created it, and runs with it as the current one
(``request_ids``), so its log lines say which request they belong to; it keeps the context it was
made in (``Job.created_in``: its RPC's trace span, for ``tracing``). A ``JobObserver`` (the
server's metrics, its tracing) is told when each job starts, reports progress and ends. The log
has a line for each job accepted and each job ended (``describe``, ``log_end``), each naming the
job's request id.
"""

from __future__ import annotations

import collections
import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from google.protobuf import json_format

from framecast.common.media import atomic_write, remove_interrupted_writes
from framecast.engine.errors import Cancelled, FailedPrecondition, JobNotFound, QueueFull, Unavailable
from framecast.server.errors import Status, status_for
from framecast.server.request_ids import NO_REQUEST, current_request_id, request_scope
from framecast.v1 import framecast_pb2 as pb

log = logging.getLogger(__name__)

TERMINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)
WATCH_PROGRESS_EVERY_S = 0.25  # a watcher's progress at most four times a second (``Job.follow``)


class JobObserver(Protocol):
    """Told about jobs as they run; each call must be quick (it runs on the job's thread)."""

    def job_started(self, job: "Job") -> None: ...
    def job_progress(self, job: "Job", progress: pb.Progress) -> None: ...
    def job_ended(self, job: "Job") -> None: ...  # once, in its terminal state, whether it ran or not


class _Unobserved:
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
        self.observer: JobObserver = _Unobserved()  # the queue's, once it accepts the job
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


class JobQueue:
    """FIFO of jobs run by one worker thread."""

    def __init__(
        self,
        records_dir: str | Path,
        max_queue: int,
        keep_finished: int = 500,
        on_interrupted: Callable[[pb.JobInfo], None] | None = None,
        observer: JobObserver | None = None,
    ):
        """``on_interrupted`` sees each job a crash or restart interrupted, marked failed, before
        its record is rewritten: it may settle what the job left (and change the record).
        ``observer`` is told about every job this queue accepts (``JobObserver``)."""
        self.records_dir = Path(records_dir)
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.max_queue = max_queue
        self.keep_finished = keep_finished
        self.observer: JobObserver = observer or _Unobserved()
        self._jobs: collections.OrderedDict[str, Job | pb.JobInfo] = collections.OrderedDict()
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: Job | None = None
        self._lock = threading.Condition()
        self._closing = False
        self._load_records(on_interrupted)
        self._worker = threading.Thread(target=self._work, name="framecast-worker", daemon=True)
        self._worker.start()

    # --- records --------------------------------------------------------------------------

    def _load_records(self, on_interrupted: Callable[[pb.JobInfo], None] | None) -> None:
        remove_interrupted_writes(self.records_dir)
        paths = sorted(self.records_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for path in paths[-self.keep_finished :]:
            try:
                info = json_format.Parse(path.read_text(), pb.JobInfo())
            except (OSError, json_format.ParseError):
                continue
            if info.state not in TERMINAL:
                info.state = pb.JOB_STATE_FAILED
                info.finished_at = time.time()
                info.error.CopyFrom(job_error(status_for(Unavailable("interrupted by a server restart; submit it again"))))
                if on_interrupted is not None:
                    on_interrupted(info)
                self._persist(info)
            self._jobs[info.job_id] = info

    def _persist(self, info: pb.JobInfo) -> None:
        text = json_format.MessageToJson(info, preserving_proto_field_name=True)
        atomic_write(self.records_dir / f"{info.job_id}.json", text.encode())

    # --- submitting and inspecting --------------------------------------------------------

    def submit(self, job: Job) -> Job:
        """Queue ``job``. Raises Unavailable while shutting down, QueueFull when the queue is full
        and FailedPrecondition for a training of an adapter another queued or running job trains
        (checked under the queue's lock, so of two such requests at once exactly one is queued)."""
        with self._lock:
            if self._closing:
                raise Unavailable("server is shutting down")
            if job.info.kind == pb.JOB_KIND_TRAIN and (other := self.training(job.info.adapter)) is not None:
                raise FailedPrecondition(f"adapter {job.info.adapter!r} is already being trained by job {other.id}")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(self.max_queue)
            position = len(self._waiting) + (1 if self._running is not None else 0)
            self._waiting.append(job)
            self._accept(job)
            job.emit(queued=pb.Queued(position=position))
            self._lock.notify_all()
        return job

    def _accept(self, job: Job) -> None:
        """Hold ``job`` (under the queue's lock), keep its record from now on and tell its followers."""
        self._jobs[job.id] = job
        self._trim()
        job.keep_record(self._persist)
        job.observer = self.observer
        self._persist(job.info)
        job.emit(accepted=job.snapshot())
        log.info("job %s accepted: %s", job.id, describe(job.info))

    def get(self, job_id: str) -> Job | pb.JobInfo:
        with self._lock:
            try:
                return self._jobs[job_id]
            except KeyError:
                raise JobNotFound(job_id) from None

    def info(self, job_id: str) -> pb.JobInfo:
        job = self.get(job_id)
        return job.snapshot() if isinstance(job, Job) else job

    def list(self, state: int = 0, limit: int = 100) -> list[pb.JobInfo]:
        with self._lock:
            items = list(self._jobs.values())
        infos = [j.snapshot() if isinstance(j, Job) else j for j in reversed(items)]
        return [i for i in infos if not state or i.state == state][: limit or 100]

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    @property
    def worker_alive(self) -> bool:
        """Whether the thread that runs the jobs is running (readiness reports it)."""
        return self._worker.is_alive()

    @property
    def running(self) -> int:
        """Jobs running now: 0 or 1 (one worker)."""
        with self._lock:
            return int(self._running is not None and not self._running.done)

    def _live(self) -> list[Job]:
        """The queued and running jobs. A finished job stays _running for a moment after its last
        event: it no longer counts."""
        with self._lock:
            jobs = list(self._waiting) + ([self._running] if self._running else [])
        return [job for job in jobs if not job.done]

    def adapter_in_use(self, name: str) -> bool:
        return any(name in job.uses_adapters or name == job.info.adapter for job in self._live())

    def training(self, name: str) -> Job | None:
        """The queued or running job that trains adapter ``name``, if any."""
        return next((j for j in self._live() if j.info.kind == pb.JOB_KIND_TRAIN and j.info.adapter == name), None)

    def cancel(self, job_id: str) -> pb.JobInfo:
        job = self.get(job_id)
        if not isinstance(job, Job) or job.done:
            return self.info(job_id)
        with self._lock:
            if job in self._waiting:
                self._waiting.remove(job)
                self._finish(job, Cancelled("job cancelled before it started"))
                self._announce_positions()
                return job.snapshot()
        job.cancel_requested.set()
        return job.snapshot()

    # --- running ----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closing:
                    self._lock.wait()
                if not self._waiting:
                    return
                job = self._waiting.popleft()
                self._running = job
                self._announce_positions()
            self._run(job)
            with self._lock:
                self._running = None
                self._lock.notify_all()

    def _run(self, job: Job) -> None:
        with request_scope(job.info.request_id):  # its log lines name the request that made it
            self._run_job(job)

    def _run_job(self, job: Job) -> None:
        self._begin(job)
        try:
            job.run(job)
            if job.should_cancel():
                raise Cancelled("job cancelled")
        except BaseException as exc:  # the worker must survive any job
            self._finish(job, exc)
        else:
            if job.end(pb.JOB_STATE_SUCCEEDED):
                self._persist(job.snapshot())

    def _begin(self, job: Job) -> None:
        """The job starts running now (a cluster's front says so when the replica starts it)."""
        job.set_state(pb.JOB_STATE_RUNNING, started_at=time.time())
        self._persist(job.snapshot())
        job.observer.job_started(job)

    def _finish(self, job: Job, exc: BaseException) -> None:
        status = status_for(exc)
        state = pb.JOB_STATE_CANCELLED if isinstance(exc, Cancelled) else pb.JOB_STATE_FAILED
        if job.end(state, status):
            self._persist(job.snapshot())

    def _announce_positions(self) -> None:
        offset = 1 if self._running is not None else 0
        for position, waiting in enumerate(self._waiting):
            waiting.emit(queued=pb.Queued(position=position + offset))

    def _trim(self) -> None:
        finished = [k for k, j in self._jobs.items() if (j.done if isinstance(j, Job) else True)]
        for key in finished[: max(0, len(self._jobs) - self.keep_finished)]:
            del self._jobs[key]

    # --- shutdown ---------------------------------------------------------------------------

    def shutdown(self, grace_s: float) -> None:
        """Refuse new jobs, cancel waiting ones, give the running one ``grace_s`` to finish,
        then cancel it at its next step and wait ``grace_s`` more for the worker.

        A job still running then (stuck inside a step) is abandoned: it ends FAILED with
        UNAVAILABLE, as a crash would leave it, so every stream following it ends and the
        process can exit; its worker thread is a daemon."""
        with self._lock:
            self._closing = True
            while self._waiting:
                self._finish(self._waiting.popleft(), Cancelled("server shutting down"))
            running = self._running
            self._lock.notify_all()
        if running is not None:
            deadline = time.monotonic() + grace_s
            while not running.done and time.monotonic() < deadline:
                time.sleep(0.05)
            running.cancel_requested.set()
        self._worker.join(timeout=max(grace_s, 1.0))
        if running is not None and not running.done:
            abandoned = Unavailable("the server shut down before the job reached a step where it could stop; submit it again")
            if running.end(pb.JOB_STATE_FAILED, status_for(abandoned)):
                self._persist(running.snapshot())
                log.warning("job %s abandoned at shutdown: still running %g s after it was cancelled", running.id,
                            max(grace_s, 1.0))


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
    return ""


def job_error(status: Status) -> pb.JobError:
    """A status as a job record and an ``error`` event carry it (the code by name)."""
    return pb.JobError(code=status.code.name, message=status.message)


def ensure_not_in_use(queue: JobQueue, name: str) -> None:
    if queue.adapter_in_use(name):
        raise FailedPrecondition(f"adapter {name!r} is used by a queued or running job; cancel it or wait")
