"""The front's job records: every job of the cluster it accepted, followed on its replica.

``FrontJobs`` is the single server's ``JobQueue`` (its records, lookup, listing, cancel and
shutdown rules) with one difference: a job does not wait for a worker of the front's, it runs on
a replica already, and a thread of the front follows it there (``relay``), copying the replica's
events into the front's ``Job``. So GetJob, ListJobs and WatchJob answer from the front, a client
that re-attaches misses nothing, and the records under ``<data>/cluster/fronts/<front id>/jobs``
survive the front.

A job ends FAILED with UNAVAILABLE when its replica stops under it (killed, out of host memory,
its node gone): the stream from the replica breaks, and the job's own record says what to do
(submit it again). CancelJob leaves a marker, ``<data>/cluster/cancel/<job id>``, that the replica
running the job looks for (``cancel_requested``): the job stops at its next step there and its
stream ends with its CANCELLED error, so the front's job ends when the replica's has, and a name
it was training is free from that moment. (A Ray Serve handle cannot address one replica.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from google.protobuf import json_format

from framecast.engine.errors import Cancelled, FramecastError, JobNotFound, Unavailable
from framecast.server.errors import JobFailed, Status
from framecast.server.job import TERMINAL, Job, JobObserver
from framecast.server.jobs import JobQueue
from framecast.v1 import framecast_pb2 as pb

log = logging.getLogger(__name__)

CANCEL_DIR = "cluster/cancel"  # under the data directory: jobs a front asked to cancel
FRONTS_DIR = "cluster/fronts"  # under the data directory: each front's job records, <front id>/jobs
CANCEL_POLL_S = 0.1  # how often a replica looks for them


def remote_failure(item: dict, refused: bool = False) -> JobFailed:
    """A replica's ``{"status", "message"}`` as the exception that ends the front's call or job with it;
    ``refused``: the replica refused the call (logged as the front's refusal)."""
    return JobFailed(Status(grpc.StatusCode[item["status"]], item["message"]), refused)


def replica_lost(job_id: str, error: BaseException) -> Unavailable:
    return Unavailable(f"the replica running job {job_id} stopped ({type(error).__name__}); what it stored is kept: "
                       "submit the job again")  # fmt: skip


class FrontJobs(JobQueue):
    """Jobs running on replicas, each followed by a thread of the front (``submit``).

    Each front keeps its records in a folder of its own, ``<fronts_dir>/<front id>/jobs``, so a
    front starting marks only its own jobs a restart interrupted, never another's live ones; a job
    another front recorded is found in that front's folder (GetJob, ListJobs, CancelJob)."""

    def __init__(self, fronts_dir, front_id: str, cancel_dir, on_interrupted: Callable[[pb.JobInfo], None] | None = None,
                 observer: JobObserver | None = None):  # fmt: skip
        self.fronts_dir = Path(fronts_dir)
        self.cancel_dir = Path(cancel_dir)
        self.cancel_dir.mkdir(parents=True, exist_ok=True)
        self._following: dict[str, Job] = {}
        self._streams: dict[str, object] = {}  # job id -> the replica's stream (a DeploymentResponseGenerator)
        super().__init__(self.fronts_dir / front_id / "jobs", max_queue=1, on_interrupted=on_interrupted, observer=observer)

    def _work(self) -> None:
        """No worker: each job is followed by a thread of its own."""

    def submit(self, job: Job, stream=None) -> Job:
        """Record ``job``, which a replica accepted (its ``info`` is the replica's), and follow it:
        ``job.run`` reads the replica's ``stream`` (kept so that ``cancel`` can cancel it)."""
        with self._lock:
            if self._closing:
                raise Unavailable("server is shutting down")
            self._following[job.id] = job
            if stream is not None:
                self._streams[job.id] = stream
            self._accept(job)
        threading.Thread(target=self._follow, args=(job,), name=f"framecast-follow-{job.id}", daemon=True).start()
        return job

    def _follow(self, job: Job) -> None:
        try:
            self._run(job)
        finally:
            (self.cancel_dir / job.id).unlink(missing_ok=True)
            with self._lock:
                self._following.pop(job.id, None)
                self._streams.pop(job.id, None)
                self._lock.notify_all()

    def _begin(self, job: Job) -> None:
        """Nothing yet: the job is RUNNING once its replica starts it (``relay`` says so)."""

    def _live(self) -> list[Job]:
        with self._lock:
            return [job for job in self._following.values() if not job.done]

    @property
    def running(self) -> int:
        return sum(1 for job in self._live() if job.info.state == pb.JOB_STATE_RUNNING)

    @property
    def waiting(self) -> int:
        return sum(1 for job in self._live() if job.info.state == pb.JOB_STATE_QUEUED)

    def _recorded(self, job_id: str) -> pb.JobInfo | None:
        """Another front's record of ``job_id``, or None."""
        for path in self.fronts_dir.glob(f"*/jobs/{job_id}.json"):
            try:
                return json_format.Parse(path.read_text(), pb.JobInfo(), ignore_unknown_fields=True)
            except (OSError, json_format.ParseError):
                continue
        return None

    def get(self, job_id: str) -> Job | pb.JobInfo:
        try:
            return super().get(job_id)
        except JobNotFound:
            if (info := self._recorded(job_id)) is None:
                raise
            return info

    def list(self, state: int = 0, limit: int = 100) -> list[pb.JobInfo]:
        """This front's jobs and the other fronts' records, most recent first."""
        ours = super().list(state, 1 << 30)
        known = {info.job_id for info in ours}
        theirs = []
        for path in self.fronts_dir.glob("*/jobs/*.json"):
            if path.parent == self.records_dir or path.stem in known:
                continue
            try:
                info = json_format.Parse(path.read_text(), pb.JobInfo(), ignore_unknown_fields=True)
            except (OSError, json_format.ParseError):  # being replaced, or half a crash's write
                continue
            if not state or info.state == state:
                theirs.append(info)
        return sorted(ours + theirs, key=lambda info: info.created_at, reverse=True)[: limit or 100]

    def cancel(self, job_id: str) -> pb.JobInfo:
        """As the queue's; the replica running the job (this front's or another's) cancels it."""
        info = super().cancel(job_id)
        if info.state not in TERMINAL:
            (self.cancel_dir / job_id).touch()  # the replica running it cancels it (``cancel_requested``)
        return info

    def shutdown(self, grace_s: float) -> None:
        """Refuse new jobs and stop following: each live job's stream is cancelled, which Ray Serve
        turns into a cancellation on its replica (``Replica.job``)."""
        with self._lock:
            self._closing = True
            live = list(self._following)
            streams = [self._streams[job_id] for job_id in live if job_id in self._streams]
        for job_id in live:
            self.cancel(job_id)
        for stream in streams:
            stream.cancel()
        deadline = time.monotonic() + max(grace_s, 1.0)
        with self._lock:
            while self._following and time.monotonic() < deadline:
                self._lock.wait(timeout=0.1)

    def is_over(self, job_id: str) -> bool | None:
        """Whether a job this front or another knows has ended; None: no front knows it."""
        try:
            job = self.get(job_id)
        except JobNotFound:
            return None
        return job.done if isinstance(job, Job) else job.state in TERMINAL


def cancel_requested(cancel_dir: Path, job_id: str) -> bool:
    """Whether a front asked for ``job_id`` to be cancelled (``FrontJobs.cancel``)."""
    return (cancel_dir / job_id).exists()


def relay(events: Iterator, on_end: Callable[[Job], None] = lambda job: None) -> Callable[[Job], None]:
    """A front job's ``run``: copy a replica's serialized events (after its ``accepted``) into the
    job, as the single server's job would have emitted them, until the replica's stream ends;
    then ``on_end(job)``, before the job takes its final state."""

    def run(job: Job) -> None:
        try:
            _copy(events, job)
        finally:
            on_end(job)

    return run


def _copy(events: Iterator, job: Job) -> None:
    started = False
    try:
        for item in events:
            if isinstance(item, dict):
                if item["status"] == "CANCELLED":
                    raise Cancelled(item["message"])
                raise remote_failure(item)
            event = pb.JobEvent.FromString(item)
            kind = event.WhichOneof("event")
            if kind in ("accepted", "error"):  # the front's own (the error when the job ends here)
                continue
            if not started and kind != "queued":  # the replica's worker took it
                started = True
                job.set_state(pb.JOB_STATE_RUNNING, started_at=time.time())
                job.checkpoint()
                job.observer.job_started(job)
            if kind == "adapter":
                job.set_state(job.info.state, adapter_result=event.adapter)
            elif kind == "result":
                job.set_state(job.info.state, propagate_result=event.result)
                job.checkpoint()  # a front that crashes from here on still finds the result
            job.emit(**{kind: getattr(event, kind)})
    except (FramecastError, JobFailed):
        raise
    except Exception as error:  # the stream broke: the replica died, or the front stopped following
        if job.should_cancel():
            raise Cancelled("job cancelled") from None
        log.warning("job %s: its replica's stream broke: %s: %s", job.id, type(error).__name__, error)
        raise replica_lost(job.id, error) from None
