"""Prometheus metrics: what the server does, read over HTTP (``serve --metrics-port``).

Each running server owns a ``Metrics`` with its own registry (never prometheus_client's global
one, so servers in one process keep their counts apart). It is fed by three hooks and read at
scrape time for the rest:

- ``calls.CallInterceptor``: every RPC, its status code and latency (a stream's: to its end),
  and the streams open now;
- the job queue (a ``job.JobObserver``): queue wait, each job's run time and each progress
  phase's, steps per second while training and sampling;
- the engine's adapter caches (``AdapterManager.observe``, a plain callable: the engine never
  imports this): hits, misses and evictions by tier;
- at scrape time: jobs waiting and running, media stored, device memory (CUDA only), the process.

docs/serving.md ("Metrics") lists every metric with its labels.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from framecast.v1 import framecast_pb2 as pb

log = logging.getLogger(__name__)

PREFIX = "framecast"
PHASES = ("decode", "mask", "motion", "appearance", "denoise", "encode", "measure")  # the progress phases jobs report
TRAIN_PHASES = ("motion", "appearance")
SAMPLING_PHASES = ("denoise",)
TIERS = ("device", "host")
# Unary calls take milliseconds, streams follow jobs for minutes: one bucket set spans both.
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


def kind_name(kind: int) -> str:
    return pb.JobKind.Name(kind).removeprefix("JOB_KIND_").lower()


def state_name(state: int) -> str:
    return pb.JobState.Name(state).removeprefix("JOB_STATE_").lower()


@dataclass
class _PhaseClock:
    """Where one running job is: its phase, when that began (the previous phase's last report, or
    the job's start), its first and latest reports (monotonic seconds) and steps."""

    kind: str
    began: float
    phase: str = ""
    first_at: float = 0.0
    first_step: int = 0
    last_at: float = 0.0


class Metrics:
    """The server's metrics in their own registry; ``serve_http`` exposes them."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpcs = Counter(f"{PREFIX}_rpcs", "RPCs handled, by full method name and gRPC status code",
                            ["method", "code"], registry=r)  # fmt: skip
        self.rpc_seconds = Histogram(f"{PREFIX}_rpc_duration_seconds", "RPC latency, for a stream to its end",
                                     ["method"], buckets=RPC_BUCKETS, registry=r)  # fmt: skip
        self.open_streams = Gauge(f"{PREFIX}_open_streams", "Streaming RPCs in progress", ["method"], registry=r)
        self.queue_wait = Histogram(f"{PREFIX}_queue_wait_seconds", "Time jobs waited in the queue before running",
                                    ["kind"], buckets=JOB_BUCKETS, registry=r)  # fmt: skip
        self.jobs = Counter(f"{PREFIX}_jobs", "Jobs ended, by kind and final state", ["kind", "state"], registry=r)
        # A service has nobody looking at each clip: how many edits held, faded or garbled is what it watches.
        self.verdicts = Counter(f"{PREFIX}_edit_verdicts", "Propagations succeeded, by whether their edit held "
                                "(held, faded, garbled, unmeasured)", ["verdict"], registry=r)  # fmt: skip
        self.job_seconds = Histogram(f"{PREFIX}_job_duration_seconds", "Time jobs ran, from start to end",
                                     ["kind", "state"], buckets=JOB_BUCKETS, registry=r)  # fmt: skip
        self.phase_seconds = Histogram(
            f"{PREFIX}_job_phase_duration_seconds",
            "Time a job spent in a progress phase: from the end of the phase before it to its last report",
            ["kind", "phase"], buckets=JOB_BUCKETS, registry=r,
        )  # fmt: skip
        self.train_rate = Gauge(f"{PREFIX}_train_steps_per_second",
                                "Training steps per second in the latest training phase", registry=r)  # fmt: skip
        self.sampling_rate = Gauge(f"{PREFIX}_sampling_steps_per_second",
                                   "Denoising steps per second in the latest propagation", registry=r)  # fmt: skip
        self.cache_hits = Counter(f"{PREFIX}_adapter_cache_hits", "Adapters found in a cache tier when needed",
                                  ["tier"], registry=r)  # fmt: skip
        self.cache_misses = Counter(f"{PREFIX}_adapter_cache_misses", "Adapters not in a cache tier when needed "
                                    "(a host miss reads the file)", ["tier"], registry=r)  # fmt: skip
        self.cache_evictions = Counter(f"{PREFIX}_adapter_cache_evictions", "Adapters evicted from a cache tier "
                                       "to make room", ["tier"], registry=r)  # fmt: skip
        self.affinity = Counter(f"{PREFIX}_cluster_adapter_affinity", "A cluster's jobs naming an adapter, by whether "
                                "the replica that ran them held it in memory (hit) or not (miss)", ["result"],
                                registry=r)  # fmt: skip
        for tier in TIERS:  # shown at 0 before the first event
            for counter in (self.cache_hits, self.cache_misses, self.cache_evictions):
                counter.labels(tier=tier)
        self._cache_counters = {"hit": self.cache_hits, "miss": self.cache_misses, "eviction": self.cache_evictions}
        ProcessCollector(namespace=PREFIX, registry=r)
        self._clocks: dict[str, _PhaseClock] = {}
        self._lock = threading.Lock()
        self._http = None

    def watch(self, queue, media, engine: Callable[[], object | None]) -> None:
        """Read the queue, the media store and the engine (None while loading) at every scrape."""
        self.registry.register(_ServerState(queue, media, engine))

    # --- adapter caches (AdapterManager.observe) --------------------------------------------

    def adapter_cache_event(self, event: str, tier: str) -> None:
        counter = self._cache_counters.get(event)
        if counter is not None and tier in TIERS:
            counter.labels(tier=tier).inc()

    # --- jobs (job.JobObserver) ------------------------------------------------------------

    def job_started(self, job) -> None:
        info = job.info
        kind = kind_name(info.kind)
        self.queue_wait.labels(kind=kind).observe(max(0.0, info.started_at - info.created_at))
        with self._lock:
            self._clocks[info.job_id] = _PhaseClock(kind, began=time.monotonic())

    def job_progress(self, job, progress: pb.Progress) -> None:
        now = time.monotonic()
        phase = progress.phase if progress.phase in PHASES else "other"
        with self._lock:
            clock = self._clocks.get(job.id)
            if clock is None:  # progress from a job this queue did not start: not measured
                return
            if phase != clock.phase:
                if clock.phase:
                    self.phase_seconds.labels(kind=clock.kind, phase=clock.phase).observe(clock.last_at - clock.began)
                    clock.began = clock.last_at
                clock.phase, clock.first_at, clock.first_step = phase, now, progress.step
            clock.last_at = now
            steps, seconds = progress.step - clock.first_step, now - clock.first_at
        if steps > 0 and seconds > 0:  # from the phase's first report: its set-up is not a step
            if phase in TRAIN_PHASES:
                self.train_rate.set(steps / seconds)
            elif phase in SAMPLING_PHASES:
                self.sampling_rate.set(steps / seconds)

    def job_ended(self, job) -> None:
        info = job.info
        kind, state = kind_name(info.kind), state_name(info.state)
        self.jobs.labels(kind=kind, state=state).inc()
        if info.verdict:
            self.verdicts.labels(verdict=pb.EditVerdict.Name(info.verdict).removeprefix("EDIT_VERDICT_").lower()).inc()
        if info.started_at:
            self.job_seconds.labels(kind=kind, state=state).observe(max(0.0, info.finished_at - info.started_at))
        with self._lock:
            clock = self._clocks.pop(info.job_id, None)
        if clock is not None and clock.phase:
            self.phase_seconds.labels(kind=clock.kind, phase=clock.phase).observe(clock.last_at - clock.began)

    # --- HTTP ----------------------------------------------------------------------------------

    def serve_http(self, host: str, port: int) -> int:
        """Serve ``/metrics`` (any path) on ``host:port`` (0: a free port) from a daemon thread;
        returns the port."""
        self._http = start_http_server(port, addr=host.strip("[]"), registry=self.registry)
        return self._http[0].server_port

    def close(self) -> None:
        """Stop serving HTTP (nothing when it was not)."""
        if self._http is not None:
            server, thread = self._http
            self._http = None
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


class _ServerState(Collector):
    """Gauges read at scrape time from what the server holds."""

    def __init__(self, queue, media, engine: Callable[[], object | None]):
        self.queue, self.media, self.engine = queue, media, engine

    def describe(self):
        return [GaugeMetricFamily(name, text) for name, text in _STATE_GAUGES.items()]

    def collect(self):
        gauges = {name: GaugeMetricFamily(name, text, labels=["device"] if "device" in name else None)
                  for name, text in _STATE_GAUGES.items()}  # fmt: skip
        gauges[f"{PREFIX}_queue_depth"].add_metric([], self.queue.waiting)
        gauges[f"{PREFIX}_jobs_running"].add_metric([], self.queue.running)
        try:
            stored = self.media.list()
        except OSError:  # the data dir went away: leave the gauges out of this scrape
            log.warning("metrics: cannot list the media store", exc_info=True)
        else:
            gauges[f"{PREFIX}_media_bytes"].add_metric([], sum(m.size_bytes for m in stored))
            gauges[f"{PREFIX}_media_files"].add_metric([], len(stored))
        engine = self.engine()
        memory = engine.device_memory() if engine is not None else None
        if memory is not None:  # CUDA only: torch keeps no such counts elsewhere
            device = str(engine.device)
            gauges[f"{PREFIX}_device_memory_bytes"].add_metric([device], memory[0])
            gauges[f"{PREFIX}_device_memory_peak_bytes"].add_metric([device], memory[1])
        return list(gauges.values())


_STATE_GAUGES = {
    f"{PREFIX}_queue_depth": "Jobs waiting in the queue (not counting the running one)",
    f"{PREFIX}_jobs_running": "Jobs running now (0 or 1)",
    f"{PREFIX}_media_bytes": "Bytes of media stored (uploads and results)",
    f"{PREFIX}_media_files": "Media stored (uploads and results)",
    f"{PREFIX}_device_memory_bytes": "Device memory torch has allocated now (CUDA only)",
    f"{PREFIX}_device_memory_peak_bytes": "The most device memory torch has had allocated at once (CUDA only)",
}
