"""A server you can put on a network (issue 22): malformed bytes, health, streams, tokens, TLS.

Every test runs the real server on a loopback port; certificates are made here with cryptography.
"""

from __future__ import annotations

import logging
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["Framecast"]
GARBAGE = b"\xff\xff\xff"  # a field tag whose varint never ends: no message decodes from it


def raw_call(channel: grpc.Channel, method, payload: bytes, timeout: float = 10, metadata=None):
    """Call ``method`` (a MethodDescriptor) with ``payload`` as its serialized request, unchecked;
    returns the responses (raw bytes)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    if method.client_streaming and method.server_streaming:
        return list(channel.stream_stream(path)(iter([payload]), timeout=timeout, metadata=metadata))
    if method.client_streaming:
        return channel.stream_unary(path)(iter([payload]), timeout=timeout, metadata=metadata)
    if method.server_streaming:
        return list(channel.unary_stream(path)(payload, timeout=timeout, metadata=metadata))
    return channel.unary_unary(path)(payload, timeout=timeout, metadata=metadata)


def rpc_code(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


# ---- defect 6: bytes that do not decode ------------------------------------------------------


@pytest.mark.parametrize("method", SERVICE.methods, ids=lambda m: m.name)
def test_request_bytes_that_do_not_decode_are_invalid_argument(grpc_server, method):
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            raw_call(channel, method, GARBAGE)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert f"does not decode as {method.input_type.full_name}" in caught.value.details()
        assert framecast_pb2_grpc.FramecastStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=10).ready


def test_health_bytes_that_do_not_decode_are_invalid_argument(grpc_server):
    check = health_pb2.DESCRIPTOR.services_by_name["Health"].methods_by_name["Check"]
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            raw_call(channel, check, GARBAGE)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "grpc.health.v1.HealthCheckRequest" in caught.value.details()


def test_an_oversize_message_is_logged_as_what_it_is(grpc_server, caplog):
    upload = SERVICE.methods_by_name["UploadMedia"]
    caplog.set_level(logging.INFO, logger="framecast")
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}", options=[("grpc.max_send_message_length", -1)]) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            raw_call(channel, upload, bytes(pb.MediaChunk(data=b"\0" * (65 << 20)).SerializeToString()))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    deadline = time.monotonic() + 10
    while "over the server's receive limit" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "over the server's receive limit" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
