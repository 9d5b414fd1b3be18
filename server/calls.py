"""The outermost interceptor: each RPC gets its request id, and is counted and timed.

It wraps every handler, framecast's, health's and reflection's, outside ``ErrorInterceptor``,
so it sees the status code that interceptor gave. The request id (``request_ids``) is sent back
at once as ``x-request-id`` initial metadata and is the current one while the handler runs (and
in the job it creates). With tracing on (``tracing.Tracing``) each RPC has a span, the current
one while the handler runs, ended with the call's code as the metrics count it. A stream is timed to its end; one the client cancels or whose deadline
passes ends when gRPC says the call has terminated, so ``framecast_open_streams`` always comes
back down.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import grpc

from framecast.server.metrics import Metrics
from framecast.server.request_ids import HEADER, request_id_from, request_scope


class _Call:
    """One RPC being handled: ends once, whichever of the handler or gRPC's termination says so first."""

    def __init__(self, method: str, context: grpc.ServicerContext, metrics: Metrics, streaming: bool, tracing=None):
        self.method, self.context, self.metrics, self.streaming = method, context, metrics, streaming
        self.request_id = request_id_from(context.invocation_metadata())
        # tracing.RpcSpan; None with tracing off (``tracing`` is not imported then) or for health's calls
        self.span = tracing.rpc_span(method, context.invocation_metadata(), self.request_id) if tracing is not None else None
        self.started = time.perf_counter()
        self._ended = False
        self._lock = threading.Lock()
        if streaming:
            metrics.open_streams.labels(method=method).inc()
        context.send_initial_metadata(((HEADER, self.request_id),))
        if not context.add_callback(self._terminated):  # already over (cancelled before it started)
            self._terminated()

    def _terminated(self) -> None:
        """gRPC's word that the call is over: for a call the handler did not finish, cancelled or timed out."""
        self.end(self._gone())

    def _gone(self) -> grpc.StatusCode:
        remaining = self.context.time_remaining()
        return grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else grpc.StatusCode.CANCELLED

    def end(self, code: grpc.StatusCode) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        self.metrics.rpcs.labels(method=self.method, code=code.name).inc()
        self.metrics.rpc_seconds.labels(method=self.method).observe(time.perf_counter() - self.started)
        if self.streaming:
            self.metrics.open_streams.labels(method=self.method).dec()
        if self.span is not None:
            self.span.end(code, self._details() if code != grpc.StatusCode.OK else "")

    def _details(self) -> str:
        """The message the call ends with (an abort's), as text; "" when there is none."""
        details = self.context.details()
        return details.decode("utf-8", "replace") if isinstance(details, bytes) else details or ""

    def scope(self) -> contextlib.AbstractContextManager[None]:
        """The call's request id, and its span, current for the block (the handler's code)."""
        return request_scope(self.request_id) if self.span is None else self._traced_scope()

    @contextlib.contextmanager
    def _traced_scope(self) -> Iterator[None]:
        with request_scope(self.request_id), self.span.current():
            yield

    def code(self, default: grpc.StatusCode) -> grpc.StatusCode:
        """The code the call ends with: the one set on the context (an abort, health's NOT_FOUND), else
        ``default``, unless the client has gone (a stream that stopped following its job when it saw so)."""
        code = self.context.code()
        if isinstance(code, grpc.StatusCode):
            return code
        return default if self.context.is_active() else self._gone()


def _wrap_unary(behavior, method: str, metrics: Metrics, streaming: bool, tracing):
    def handler(request, context):
        call = _Call(method, context, metrics, streaming, tracing)
        with call.scope():
            try:
                response = behavior(request, context)
            except BaseException:
                call.end(call.code(grpc.StatusCode.UNKNOWN))
                raise
        call.end(call.code(grpc.StatusCode.OK))
        return response

    return _keep_pool(behavior, handler)


def _wrap_stream(behavior, method: str, metrics: Metrics, tracing):
    def handler(request, context):
        call = _Call(method, context, metrics, True, tracing)
        responses = None
        try:
            with call.scope():
                responses = iter(behavior(request, context))
            while True:
                # Current only while the handler's own code runs, so no code of gRPC's (nor a
                # later call on this thread, if this generator is never closed) carries it.
                with call.scope():
                    try:
                        response = next(responses)
                    except StopIteration:
                        break
                yield response
        except GeneratorExit:  # gRPC closed the stream: the client went away
            call.end(grpc.StatusCode.CANCELLED)
            close = getattr(responses, "close", None)
            if close is not None:
                with call.scope():
                    close()
            raise
        except BaseException:
            call.end(call.code(grpc.StatusCode.UNKNOWN))
            raise
        call.end(call.code(grpc.StatusCode.OK))

    return _keep_pool(behavior, handler)


def _keep_pool(behavior, handler):
    """The wrapper runs on the pool grpcio would have run ``behavior`` on (health's own, streams.HealthLane)."""
    pool = getattr(behavior, "experimental_thread_pool", None)
    if pool is not None:
        handler.experimental_thread_pool = pool
    return handler


class CallInterceptor(grpc.ServerInterceptor):
    """Request ids, RPC metrics and, given a ``tracing.Tracing``, spans for every method; register
    it first (outermost)."""

    def __init__(self, metrics: Metrics, tracing=None):
        self.metrics, self.tracing = metrics, tracing

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED itself
            return None
        method, metrics, tracing = handler_call_details.method, self.metrics, self.tracing
        if handler.unary_unary:
            return handler._replace(unary_unary=_wrap_unary(handler.unary_unary, method, metrics, False, tracing))
        if handler.stream_unary:
            return handler._replace(stream_unary=_wrap_unary(handler.stream_unary, method, metrics, True, tracing))
        if handler.unary_stream:
            return handler._replace(unary_stream=_wrap_stream(handler.unary_stream, method, metrics, tracing))
        if handler.stream_stream:
            return handler._replace(stream_stream=_wrap_stream(handler.stream_stream, method, metrics, tracing))
        return handler
