"""Client-side fakes of the gRPC layer: a recording stub, a failed call and a server stream.

The client's own code runs for real; only the channel underneath is replaced, so these tests
check the requests it builds and how it reads replies and errors without a server.
"""

from __future__ import annotations

import grpc
import pytest

from framecast.client import FramecastClient

TIMEOUT = 5.0  # the client fixture's default per-call timeout


class RecordingStub:
    """Records (method, request, timeout) and answers from ``replies`` (name -> reply or exception).
    A client-streaming request (any iterator) is drained into a list, as grpc would send it."""

    def __init__(self, **replies):
        self.replies, self.calls = replies, []

    def __getattr__(self, name):
        def method(request, timeout=None):
            if not hasattr(request, "SerializeToString"):
                request = list(request)
            self.calls.append((name, request, timeout))
            reply = self.replies[name]
            if isinstance(reply, Exception):
                raise reply
            return reply

        return method


class RpcFailure(grpc.RpcError):
    """What a failed RPC raises: a grpc.RpcError with .code() and .details()."""

    def __init__(self, code: grpc.StatusCode, details: str):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


class ServerStream:
    """A server-streaming call: yields ``items``, then raises ``error`` if given; cancellable."""

    def __init__(self, items, error=None):
        self.items, self.error, self.cancelled = list(items), error, False

    def __iter__(self):
        yield from self.items
        if self.error is not None:
            raise self.error

    def cancel(self):
        self.cancelled = True
        return True


@pytest.fixture
def client():
    # The channel connects lazily: nothing is dialled unless a real stub is called.
    with FramecastClient("127.0.0.1:1", timeout=TIMEOUT) as c:
        yield c


@pytest.fixture
def fake_stub(client):
    """fake_stub(Method=reply, ...) puts a RecordingStub under ``client`` and returns it."""

    def install(**replies) -> RecordingStub:
        client._stub = RecordingStub(**replies)
        return client._stub

    return install


@pytest.fixture
def rpc_error():
    """rpc_error(code, details): the exception a failed RPC raises."""
    return RpcFailure


@pytest.fixture
def server_stream():
    """server_stream(items, error=None): a server-streaming call's reply."""
    return ServerStream
