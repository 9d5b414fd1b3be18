"""Separate budgets for calls that stay open and calls that answer at once (issue 22: no stalls).

gRPC's synchronous server runs each call on a thread of its pool for as long as the call lasts,
so open streams used to take every thread of one 16-thread pool and the server stopped answering
anything else: 16 open streams made it look dead to a load balancer. Now:

- streaming calls (every call with a stream either way: Train, Propagate, WatchJob, UploadMedia,
  DownloadMedia, ImportAdapter, ExportAdapter, health's Watch, reflection) are capped at
  ``max_streams`` open at once (``StreamCap``); one more is refused with RESOURCE_EXHAUSTED,
  naming the cap, before its handler runs;
- the pool has ``max_streams + unary_workers`` threads (``rpc_pool``), so ``unary_workers`` are
  always left to unary calls (GetServerInfo, GetJob, Plan...) whatever the streams do;
- health's Check runs on a small pool of its own (``HealthLane``, grpcio's per-behaviour
  ``experimental_thread_pool``), so a probe is answered even while every unary thread is busy.

A stream that waits for a job's next event notices within a second that its client went away
(``Job.follow(alive=...)``), so a cancelled stream gives its thread and its place back.
"""

from __future__ import annotations

import threading
from concurrent import futures

import grpc

from framecast.server.errors import log_refusal

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_THREADS = 4  # probes are answered in microseconds: a few threads never queue


def rpc_pool(unary_workers: int, max_streams: int) -> futures.ThreadPoolExecutor:
    """The server's pool: a thread for every stream the cap allows, and ``unary_workers`` more."""
    return futures.ThreadPoolExecutor(max_workers=unary_workers + max_streams, thread_name_prefix="framecast-rpc")


class HealthLane(grpc.ServerInterceptor):
    """Runs health's Check on its own threads. Register it first (outermost): grpcio reads the pool
    from the behaviour it finally gets."""

    def __init__(self):
        self.pool = futures.ThreadPoolExecutor(max_workers=HEALTH_THREADS, thread_name_prefix="framecast-health")

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method != HEALTH_CHECK or not handler.unary_unary:
            return handler
        inner = handler.unary_unary

        def check(request, context):
            return inner(request, context)

        check.experimental_thread_pool = self.pool
        return handler._replace(unary_unary=check)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class StreamCap(grpc.ServerInterceptor):
    """At most ``max_streams`` streaming calls open at once; the next is refused RESOURCE_EXHAUSTED.
    Register it outside ``ErrorInterceptor`` (it aborts the call itself)."""

    def __init__(self, max_streams: int):
        self.max_streams = max_streams
        self._open = 0
        self._lock = threading.Lock()

    @property
    def open_streams(self) -> int:
        return self._open

    def _admit(self, method: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            if self._open < self.max_streams:
                self._open += 1
                return
        name = method.rpartition("/")[2]
        message = (f"{name}: {self.max_streams} streams are open, this server's limit (serve --max-streams "
                   f"{self.max_streams}); close streams you no longer follow (a WatchJob), retry later, or start "
                   "the server with a higher --max-streams")  # fmt: skip
        log_refusal(method, grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    def _leave(self) -> None:
        with self._lock:
            self._open -= 1

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        method = handler_call_details.method
        if handler.unary_stream:
            return handler._replace(unary_stream=self._responses(handler.unary_stream, method))
        if handler.stream_stream:
            return handler._replace(stream_stream=self._responses(handler.stream_stream, method))
        return handler._replace(stream_unary=self._response(handler.stream_unary, method))

    def _responses(self, behavior, method: str):
        def handler(request, context):
            self._admit(method, context)
            try:
                yield from behavior(request, context)
            finally:  # also when gRPC closes the stream because its client went away
                self._leave()

        return handler

    def _response(self, behavior, method: str):
        def handler(request_iterator, context):
            self._admit(method, context)
            try:
                return behavior(request_iterator, context)
            finally:
                self._leave()

        return handler
