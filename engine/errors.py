"""Domain errors raised by the engine and the server's stores.

Each carries the offending field and value in its message, so a caller can act on it
without reading a traceback. The server maps these classes to gRPC status codes in one
place (``framecast.server.errors``); nothing here knows about gRPC. A command line run in process
(``framecast serve``, the toy lab's commands) turns them into its exit code (``run_command``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import sys
from collections.abc import Callable


class FramecastError(Exception):
    """Base class of every error framecast raises on purpose."""


class InvalidInput(FramecastError):
    """A request field has a value the engine cannot work with."""

    def __init__(self, field: str, value: object, reason: str):
        self.field = field
        self.value = value
        self.reason = reason
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"{field} {reason} (got {shown})")


class InvalidRequest(InvalidInput):
    """Several fields of one request are wrong: every problem is reported at once."""

    def __init__(self, problems: list[InvalidInput]):
        self.problems = list(problems)
        first = self.problems[0]
        self.field, self.value, self.reason = first.field, first.value, first.reason
        if len(self.problems) == 1:
            FramecastError.__init__(self, str(first))
        else:
            FramecastError.__init__(self, f"{len(self.problems)} problems: " + "; ".join(str(p) for p in self.problems))


class Problems:
    """Collects the InvalidInput of several checks, so a request hears of all its problems at once:
    ``with problems.check(): ...`` around each check, then ``raise_if_any()``. Other errors (a
    missing media, a taken name) are not collected: they end the request at once."""

    def __init__(self):
        self.found: list[InvalidInput] = []

    @contextlib.contextmanager
    def check(self):
        try:
            yield
        except InvalidRequest as exc:
            self.found.extend(exc.problems)
        except InvalidInput as exc:
            self.found.append(exc)

    def add(self, problem: InvalidInput) -> None:
        self.found.append(problem)

    def raise_if_any(self) -> None:
        if self.found:
            raise InvalidRequest(self.found)


class NotFound(FramecastError):
    """An id names nothing the server holds."""

    kind = "object"

    def __init__(self, ident: str):
        self.ident = ident
        super().__init__(f"{self.kind} {ident!r} not found")


class AdapterNotFound(NotFound):
    kind = "adapter"


class MediaNotFound(NotFound):
    kind = "media"


class JobNotFound(NotFound):
    kind = "job"


class FailedPrecondition(FramecastError):
    """The request is well formed but the server's state does not allow it now."""


class AlreadyExists(FramecastError):
    """A name the request wants to create is taken."""


class AdapterExists(AlreadyExists):
    """An adapter name a training or an import wants is taken."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(f"adapter {name!r} already exists; delete it first or pick another name")


class AdapterFailed(FailedPrecondition):
    """An adapter whose training failed: only its error is kept, until it is trained again or deleted."""

    def __init__(self, name: str, error: str):
        self.name = name
        self.error = error
        reason = error.removeprefix("training failed: ")
        super().__init__(f"adapter {name!r} failed to train: {reason}; train it again or delete it")


class IncompatibleAdapter(FailedPrecondition):
    """An adapter does not fit the loaded base model."""


class TrainingDiverged(FailedPrecondition):
    """The training loss became NaN or infinite; nothing was stored."""


class ResourceExhausted(FramecastError):
    """A limit of the server's resources was reached; the same request may succeed later."""


class OutOfMemory(ResourceExhausted):
    """The device, a configured memory budget or a memory cache cannot hold what the request needs."""


class QueueFull(ResourceExhausted):
    """The job queue holds as many waiting jobs as it may."""

    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(f"queue is full ({limit} jobs waiting); try again later")


class Unavailable(FramecastError):
    """The server is not ready (model still loading) or is shutting down."""


class Cancelled(FramecastError):
    """A job was cancelled by its owner."""


_STORAGE_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def storage_full(exc: BaseException) -> str | None:
    """Why a write failed, for the client, when ``exc`` says that the disk, a quota or a file size
    limit is full; None for any other error."""
    if isinstance(exc, OSError) and exc.errno in _STORAGE_FULL:
        return f"out of storage space for the server's data: {exc.strerror}; free some (delete media or adapters) and retry"
    return None


def public_message(exc: BaseException) -> str:
    """What a client may read about ``exc``: a domain error's message, else only its type (the
    traceback belongs in the server log)."""
    if isinstance(exc, FramecastError):
        return str(exc)
    return storage_full(exc) or f"{type(exc).__name__} (see the server log)"


def run_command(command: Callable[[], int]) -> int:
    """Run a command and return its exit code: its own, 2 when a setting or request is refused
    (``error: <message>`` on stderr), 130 when interrupted."""
    try:
        return command()
    except FramecastError as error:
        print(f"error: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 2


def exit_code(command: Callable[..., int]) -> Callable[..., int]:
    """A command (``cmd_serve(args)``) whose refusals and interrupts end as ``run_command`` ends them,
    wherever it is called from: the client's ``framecast`` command line runs the server's and the
    toy lab's commands without knowing their error classes."""

    @functools.wraps(command)
    def run(*args, **kwargs) -> int:
        return run_command(lambda: command(*args, **kwargs))

    return run
