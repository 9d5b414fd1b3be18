"""The queue that runs jobs (``framecast.server.job``) one at a time on the device.

Job records are persisted as JSON on every state change; jobs a crash or restart interrupted
are marked failed when the server comes back. A job runs with the request id of the RPC that
created it as the current one (``request_ids``), so its log lines say which request they belong
to; the queue tells its ``JobObserver`` (the server's metrics, its tracing) about every job it
accepts, and logs a line for each (``describe``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from google.protobuf import json_format

from framecast.common.media import atomic_write, remove_interrupted_writes
from framecast.engine.errors import Cancelled, FailedPrecondition, JobNotFound, QueueFull, Unavailable
from framecast.server.errors import status_for
from framecast.server.job import TERMINAL, Job, JobObserver, Unobserved, describe, job_error
from framecast.server.request_ids import request_scope
from framecast.v1 import framecast_pb2 as pb

log = logging.getLogger(__name__)


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
        self.observer: JobObserver = observer or Unobserved()
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


def ensure_not_in_use(queue: JobQueue, name: str) -> None:
    if queue.adapter_in_use(name):
        raise FailedPrecondition(f"adapter {name!r} is used by a queued or running job; cancel it or wait")
