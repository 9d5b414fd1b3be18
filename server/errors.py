"""The one place where domain errors become gRPC status codes.

``ErrorInterceptor`` wraps every handler (unary and streaming): a ``FramecastError`` is
sent with its status and message; anything else is logged with its traceback and sent as
INTERNAL with a generic message, never the traceback. Handlers never abort a call
themselves: they raise, and only this interceptor turns what they raise into a status. A
job that failed carries its ``Status`` (mapped once, when it ended) to every stream
following it as a ``JobFailed``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from framecast.engine import errors as E

log = logging.getLogger(__name__)

_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (E.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (E.NotFound, grpc.StatusCode.NOT_FOUND),
    (E.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (E.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (E.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (E.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (E.Cancelled, grpc.StatusCode.CANCELLED),
]


@dataclass(frozen=True)
class Status:
    code: grpc.StatusCode
    message: str  # safe to send: never a traceback


class JobFailed(Exception):
    """Raised by a stream that follows a job which ended FAILED or CANCELLED: the call ends with the
    job's own status, mapped once when the job ended."""

    def __init__(self, status: Status):
        super().__init__(status.message)
        self.status = status


def status_for(exc: BaseException) -> Status:
    """Map an exception to its status and a message safe to send."""
    if isinstance(exc, JobFailed):
        return exc.status
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return Status(code, str(exc))
    if _is_out_of_memory(exc):
        return Status(grpc.StatusCode.RESOURCE_EXHAUSTED, f"out of device memory: {str(exc).splitlines()[0]}")
    if (message := E.storage_full(exc)) is not None:
        log.error("out of storage space", exc_info=exc)
        return Status(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
    log.error("internal error", exc_info=exc)
    return Status(grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log")


def _is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(exc, MemoryError)


def _abort(context: grpc.ServicerContext, exc: BaseException):
    status = status_for(exc)
    context.abort(status.code, status.message)


def _wrap_unary(behavior):
    def handler(request, context):
        try:
            return behavior(request, context)
        except Exception as exc:
            _abort(context, exc)

    return handler


def _wrap_stream(behavior):
    def handler(request, context):
        try:
            yield from behavior(request, context)
        except Exception as exc:
            _abort(context, exc)

    return handler


class ErrorInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith("/framecast."):
            return handler
        if handler.unary_unary:
            return handler._replace(unary_unary=_wrap_unary(handler.unary_unary))
        if handler.stream_unary:
            return handler._replace(stream_unary=_wrap_unary(handler.stream_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=_wrap_stream(handler.unary_stream))
        if handler.stream_stream:
            return handler._replace(stream_stream=_wrap_stream(handler.stream_stream))
        return handler
