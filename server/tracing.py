"""OpenTelemetry traces (``serve --otel-endpoint``): a span per RPC, per job and per job phase.

Off by default; this module, and OpenTelemetry with it, is imported only when a server is
configured to trace (``app.tracing_for``). Each server has its own ``TracerProvider``, never
installed as OpenTelemetry's global one (as each has its own metrics registry), exporting over
OTLP/gRPC to the collector at ``otel_endpoint`` (or to a test's exporter). It is fed at the two
places the metrics are:

- ``calls.CallInterceptor``: ``rpc_span`` for every RPC but health's, a SERVER span named by its
  method (``framecast.v1.Framecast/Train``), a child of the caller's W3C ``traceparent``
  metadata when it sends one, current while the handler runs and ended with the call's status
  code (a stream's: at its end);
- the job queue (a ``job.JobObserver``): a span per job, a child of the span of the RPC that
  created it (the context the job was made in, ``Job.created_in``), from its creation to its
  end, with a child span per progress phase (decode, motion, appearance, denoise, encode),
  each from the end of the phase before it (or the job's start) to its last report, the
  phases' bounds the metrics use.

docs/serving.md ("Tracing") lists the spans and their attributes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from framecast.server.config import OTEL_ENDPOINT_FROM_ENV
from framecast.server.metrics import PHASES, kind_name, state_name
from framecast.v1 import framecast_pb2 as pb

UNTRACED_SERVICES = ("/grpc.health.v1.Health/",)  # a load balancer's probe every second would bury the traces
REQUEST_ID = "framecast.request_id"


def otlp_exporter(endpoint: str) -> SpanExporter:
    """The OTLP/gRPC exporter to ``endpoint`` (``http://`` plaintext, ``https://`` TLS, whatever
    OTEL_EXPORTER_OTLP_INSECURE says), or, for "env", to what the standard OTEL_EXPORTER_OTLP_*
    variables say. Headers, certificates and the timeout come from those variables either way."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    if endpoint == OTEL_ENDPOINT_FROM_ENV:
        return OTLPSpanExporter()
    return OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))


class RpcSpan:
    """One RPC's span: ``current()`` around the handler's code, ``end(code, details)`` once."""

    def __init__(self, span: trace.Span):
        self.span = span

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        # The interceptor sets the status from the call's code: an exception here is already one.
        with trace.use_span(self.span, record_exception=False, set_status_on_exception=False):
            yield

    def end(self, code: grpc.StatusCode, details: str = "") -> None:
        self.span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code != grpc.StatusCode.OK:  # any code but OK, INVALID_ARGUMENT and CANCELLED too
            self.span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details}" if details else code.name))
        self.span.end()


@dataclass
class _JobTrace:
    """A running job's span, its current phase's span and when that phase was last reported (ns)."""

    span: trace.Span
    phase: str = ""
    phase_span: trace.Span | None = None
    last_at: int = 0


class Tracing:
    """A server's tracer: RPC spans for ``CallInterceptor``, job and phase spans as a ``JobObserver``."""

    def __init__(self, service_name: str, endpoint: str = "", exporter: SpanExporter | None = None):
        """Spans go to ``exporter`` as each ends (a test's in-memory one), else in batches to
        ``otlp_exporter(endpoint)``."""
        processor = SimpleSpanProcessor(exporter) if exporter is not None else BatchSpanProcessor(otlp_exporter(endpoint))
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}), shutdown_on_exit=False)
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("framecast.server")
        self._jobs: dict[str, _JobTrace] = {}
        self._lock = threading.Lock()

    # --- RPCs (calls.CallInterceptor) -------------------------------------------------------

    def rpc_span(self, method: str, metadata, request_id: str) -> RpcSpan | None:
        """The span of the RPC ``method`` (``/package.Service/Method``) called with ``metadata``;
        None for the methods not traced (health's)."""
        if method.startswith(UNTRACED_SERVICES):
            return None
        # The caller's traceparent (and baggage), by the propagators OTEL_PROPAGATORS names (W3C's by default).
        carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
        service, _, name = method.lstrip("/").rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name, REQUEST_ID: request_id}
        span = self.tracer.start_span(method.lstrip("/"), context=propagate.extract(carrier), kind=SpanKind.SERVER,
                                      attributes=attributes)  # fmt: skip
        return RpcSpan(span)

    # --- jobs (job.JobObserver) ------------------------------------------------------------

    def _job_span(self, job) -> trace.Span:
        info = job.info
        # The span current where the job was made: its RPC's (Train, Propagate).
        parent = job.created_in.run(otel_context.get_current)
        attributes = {"framecast.job_id": info.job_id, "framecast.job.kind": kind_name(info.kind),
                      "framecast.adapter": info.adapter, REQUEST_ID: info.request_id}  # fmt: skip
        return self.tracer.start_span(f"{kind_name(info.kind)} job", context=parent, start_time=_ns(info.created_at),
                                      attributes=attributes)  # fmt: skip

    def job_started(self, job) -> None:
        span = self._job_span(job)
        info = job.info
        span.set_attribute("framecast.job.queue_wait_s", max(0.0, info.started_at - info.created_at))
        with self._lock:
            self._jobs[info.job_id] = _JobTrace(span, last_at=_ns(info.started_at))

    def job_progress(self, job, progress: pb.Progress) -> None:
        now = time.time_ns()
        phase = progress.phase if progress.phase in PHASES else "other"
        with self._lock:
            traced = self._jobs.get(job.id)
            if traced is None:  # progress from a job this queue did not start
                return
            if phase != traced.phase:
                if traced.phase_span is not None:
                    traced.phase_span.end(end_time=traced.last_at)
                parent = trace.set_span_in_context(traced.span)
                traced.phase_span = self.tracer.start_span(phase, context=parent, start_time=traced.last_at,
                                                           attributes={"framecast.phase": phase})  # fmt: skip
                traced.phase = phase
            traced.last_at = now
            traced.phase_span.set_attribute("framecast.steps", progress.step)
            if progress.total:
                traced.phase_span.set_attribute("framecast.total_steps", progress.total)

    def job_ended(self, job) -> None:
        info = job.info
        with self._lock:
            traced = self._jobs.pop(info.job_id, None)
        if traced is None:  # ended before it ran (cancelled while waiting): a span for its wait
            span = self._job_span(job)
        else:
            span = traced.span
            if traced.phase_span is not None:
                traced.phase_span.end(end_time=traced.last_at)
        span.set_attribute("framecast.job.state", state_name(info.state))
        if info.state == pb.JOB_STATE_FAILED:
            span.set_status(Status(StatusCode.ERROR, f"{info.error.code}: {info.error.message}"))
        if info.error.code:
            span.set_attribute("framecast.job.error_code", info.error.code)
        span.end()  # now: just after the job's end (``Job.end``), and after its last phase's

    # --- the end -------------------------------------------------------------------------------

    def close(self) -> None:
        """Export what is left and stop (bounded by the exporter's timeout when the collector is gone)."""
        self.provider.shutdown()


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)
