"""The one place where domain errors become gRPC status codes.

``ErrorInterceptor`` wraps every handler (unary and streaming): a ``FramecastError`` is
sent with its status and message; anything else is logged with its traceback and sent as
INTERNAL with a generic message, never the traceback.
"""

from __future__ import annotations

import logging

import grpc

from framecast.engine import errors as E

log = logging.getLogger(__name__)

_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (E.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (E.NotFound, grpc.StatusCode.NOT_FOUND),
    (E.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (E.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (E.OutOfMemory, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (E.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (E.Cancelled, grpc.StatusCode.CANCELLED),
]


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Map an exception to (status code, message safe to send)."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code, str(exc)
    if _is_out_of_memory(exc):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"out of device memory: {str(exc).splitlines()[0]}"
    if (message := E.storage_full(exc)) is not None:
        log.error("out of storage space", exc_info=exc)
        return grpc.StatusCode.RESOURCE_EXHAUSTED, message
    log.error("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"


def _is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(exc, MemoryError)


def _abort(context: grpc.ServicerContext, exc: BaseException):
    code, message = status_for(exc)
    context.abort(code, message)


def _wrap_unary(behavior):
    def handler(request, context):
        try:
            return behavior(request, context)
        except Exception as exc:
            if _is_grpc_abort(exc):
                raise
            _abort(context, exc)

    return handler


def _wrap_stream(behavior):
    def handler(request, context):
        try:
            yield from behavior(request, context)
        except Exception as exc:
            if _is_grpc_abort(exc):
                raise
            _abort(context, exc)

    return handler


def _is_grpc_abort(exc: BaseException) -> bool:
    # context.abort raises a plain Exception subclass that grpc recognises; let it through.
    return type(exc) is Exception and not exc.args


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
