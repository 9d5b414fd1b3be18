"""Request ids: one per RPC, carried into its job and into every log record made on its behalf.

A caller may name its request with ``x-request-id`` metadata (letters, digits and ``._:/-``, at
most 128 characters, as load balancers and tracing proxies write them); anything else, or
nothing, gets a generated id (32 hex digits). The id is sent back as ``x-request-id`` initial
metadata (``calls.CallInterceptor``), stored in the job the RPC creates (``JobInfo.request_id``)
and set, while the RPC's handler or its job runs, in a context variable that every log record
reads (``install_log_records``: ``%(request_id)s`` in a log format; ``-`` outside any request).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import uuid
from collections.abc import Iterator

HEADER = "x-request-id"  # metadata key, lower case as gRPC requires
NO_REQUEST = "-"  # what log records carry outside any request
_ACCEPTED = re.compile(r"[A-Za-z0-9._:/-]{1,128}")

_current: contextvars.ContextVar[str] = contextvars.ContextVar("framecast_request_id", default="")


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_from(metadata) -> str:
    """The caller's ``x-request-id`` from invocation metadata (pairs), when it is one we keep; else a new id."""
    for key, value in metadata or ():
        if key == HEADER:
            if isinstance(value, str) and _ACCEPTED.fullmatch(value):
                return value
            break
    return new_request_id()


def current_request_id() -> str:
    """The id of the request being handled on this thread ("" outside any)."""
    return _current.get()


@contextlib.contextmanager
def request_scope(request_id: str) -> Iterator[None]:
    """Make ``request_id`` the current one for the block (an RPC's handler, a job's run)."""
    token = _current.set(request_id)
    try:
        yield
    finally:
        _current.reset(token)


_installed = False


def install_log_records() -> None:
    """Give every log record a ``request_id`` attribute: the current request's id, or ``-``.

    Done once per process by wrapping the log record factory (so it holds for every logger and
    handler, whoever configured them); calling it again changes nothing."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = _current.get() or NO_REQUEST
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def show_request_ids(logger: logging.Logger | None = None) -> None:
    """Have the handlers of ``logger`` (the root logger's) write each line with its request id
    (``LOG_FORMAT``); ``serve`` does this once logging is configured."""
    install_log_records()
    for handler in (logger or logging.getLogger()).handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
