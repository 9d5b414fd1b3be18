"""The one place where domain errors become gRPC status codes.

``ErrorInterceptor`` wraps every handler (unary and streaming): a ``FramecastError`` is
sent with its status and message, and logged as a refusal (``log_refusal``: the method, the code,
the fields named; the line carries the request id); anything else is logged with its traceback
and sent as INTERNAL with a generic message, never the traceback. Handlers never abort a call
themselves: they raise, and only this interceptor turns what they raise into a status. A
job that failed carries its ``Status`` (mapped once, when it ended) to every stream
following it as a ``JobFailed``.

Request bytes that do not decode as the method's message are INVALID_ARGUMENT naming the
message, for every service, health and reflection included (grpcio's own answer is INTERNAL,
"Exception deserializing request!", with a traceback in the log). A request stream the
transport ended (a message over the receive limit, which gRPC answers RESOURCE_EXHAUSTED
itself, or a client that went away) is logged as that, not as an internal error.
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
    job's own status, mapped once when the job ended (its job's end line says why). ``refused``: a
    refusal another process made and this one passes on (a cluster's replica refusing what its
    front sent), logged as a refusal here too."""

    def __init__(self, status: Status, refused: bool = False):
        super().__init__(status.message)
        self.status = status
        self.refused = refused


def status_for(exc: BaseException) -> Status:
    """Map an exception to its status and a message safe to send."""
    if isinstance(exc, JobFailed):
        return exc.status
    if type(exc) is grpc.RpcError:  # what a request iterator raises once the transport ended the call
        log.info("the request stream was ended by the transport: the client cancelled, or a message was over the "
                 "server's receive limit (answered RESOURCE_EXHAUSTED by gRPC)")  # fmt: skip
        return Status(grpc.StatusCode.CANCELLED, "the request stream was ended by the transport")
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


def log_refusal(method: str, code: grpc.StatusCode, message: str, fields: tuple[str, ...] = ()) -> None:
    """The line a refused request leaves in the log (in the request's scope: it carries its request id)."""
    named = f" ({'field' if len(fields) == 1 else 'fields'} {', '.join(fields)})" if fields else ""
    log.info("refused %s: %s%s: %s", method.rpartition("/")[2], code.name, named, message)


def _fields(exc: BaseException) -> tuple[str, ...]:
    """The request fields an error names, each once."""
    problems = exc.problems if isinstance(exc, E.InvalidRequest) else [exc] if isinstance(exc, E.InvalidInput) else []
    return tuple(dict.fromkeys(problem.field for problem in problems if problem.field))


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str):
    status = status_for(exc)
    if isinstance(exc, E.FramecastError) or getattr(exc, "refused", False):  # the rest: logged by status_for
        log_refusal(method, status.code, status.message, _fields(exc))
    context.abort(status.code, status.message)


def _wrap_unary(behavior, method: str):
    def handler(request, context):
        try:
            return behavior(request, context)
        except Exception as exc:
            _abort(context, exc, method)

    return handler


def _wrap_stream(behavior, method: str):
    def handler(request, context):
        try:
            yield from behavior(request, context)
        except Exception as exc:
            _abort(context, exc, method)

    return handler


class _Undecodable:
    """What request bytes that do not decode as the method's message become, in place of the
    message: the handler refuses it (``_checked_unary``, ``_checked_stream``) instead of gRPC
    answering INTERNAL."""

    def __init__(self, size: int, message: str, reason: str):
        self.size, self.message, self.reason = size, message, reason


def _tolerant(deserializer):
    """``deserializer`` that returns an ``_Undecodable`` for bytes it cannot decode instead of raising."""
    message = getattr(getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None), "full_name", "its message")

    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except Exception as error:
            reason = str(error).rpartition(": ")[2] or type(error).__name__  # protobuf: "Error parsing message ...: why"
            return _Undecodable(len(data), message, reason)

    return deserialize


def _refusal(request: _Undecodable) -> E.InvalidInput:
    return E.InvalidInput("request", f"<{request.size} bytes>", f"does not decode as {request.message}: "
                          f"{request.reason}; send a serialized {request.message}")  # fmt: skip


def _checked_unary(behavior, method: str):
    def handler(request, context):
        if isinstance(request, _Undecodable):
            _abort(context, _refusal(request), method)
        return behavior(request, context)

    return handler


def _checked_stream(behavior, raising: bool, method: str):
    """A stream of requests whose undecodable one raises InvalidInput where ``raising`` (framecast's
    handlers, inside ``_wrap_*``), else aborts the call itself (reflection's)."""

    def handler(request_iterator, context):
        def decoded():
            for request in request_iterator:
                if isinstance(request, _Undecodable):
                    if raising:
                        raise _refusal(request)
                    _abort(context, _refusal(request), method)
                yield request

        return behavior(decoded(), context)

    return handler


def _refusing_undecodable(handler: grpc.RpcMethodHandler, raising: bool, method: str) -> grpc.RpcMethodHandler:
    """``handler`` with its request deserializer made tolerant, and what did not decode refused with
    INVALID_ARGUMENT before the behaviour sees it."""
    if handler.request_deserializer is None:
        return handler
    handler = handler._replace(request_deserializer=_tolerant(handler.request_deserializer))
    if handler.unary_unary:
        return handler._replace(unary_unary=_checked_unary(handler.unary_unary, method))
    if handler.unary_stream:
        return handler._replace(unary_stream=_checked_unary(handler.unary_stream, method))
    if handler.stream_unary:
        return handler._replace(stream_unary=_checked_stream(handler.stream_unary, raising, method))
    return handler._replace(stream_stream=_checked_stream(handler.stream_stream, raising, method))


class ErrorInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        ours = method.startswith("/framecast.")
        if ours:
            handler = _mapping_errors(handler, method)
        return _refusing_undecodable(handler, raising=ours, method=method)


def _mapping_errors(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    if handler.unary_unary:
        return handler._replace(unary_unary=_wrap_unary(handler.unary_unary, method))
    if handler.stream_unary:
        return handler._replace(stream_unary=_wrap_unary(handler.stream_unary, method))
    if handler.unary_stream:
        return handler._replace(unary_stream=_wrap_stream(handler.unary_stream, method))
    if handler.stream_stream:
        return handler._replace(stream_stream=_wrap_stream(handler.stream_stream, method))
    return handler
