"""The one error the client raises for anything the server (or the channel) refused."""

from __future__ import annotations

import grpc


class FramecastError(Exception):
    """A failed call: the gRPC status ``code`` and the server's ``message``.

    Raised for every ``grpc.RpcError`` (unary calls and streams alike) and for the
    ``JobEvent.error`` that ends a failed or cancelled job.
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        self.code = code
        self.message = message
        super().__init__(f"{code.name}: {message}")

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> FramecastError:
        """Convert a ``grpc.RpcError`` (normally a ``grpc.Call``) to a FramecastError."""
        code = error.code() if callable(getattr(error, "code", None)) else None
        details = error.details() if callable(getattr(error, "details", None)) else None
        if not isinstance(code, grpc.StatusCode):
            code = grpc.StatusCode.UNKNOWN
        return cls(code, details if details else str(error) or code.name)

    @classmethod
    def from_job_error(cls, code_name: str, message: str) -> FramecastError:
        """Convert a ``JobError`` (status code *name*, message) to a FramecastError."""
        return cls(status_code(code_name), message)


def status_code(name: str) -> grpc.StatusCode:
    """``"NOT_FOUND"`` -> ``grpc.StatusCode.NOT_FOUND``; unknown names -> UNKNOWN."""
    try:
        return grpc.StatusCode[name.strip().upper()]
    except KeyError:
        return grpc.StatusCode.UNKNOWN
