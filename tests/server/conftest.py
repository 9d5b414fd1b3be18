"""The real server on the built-in model, shared by the server tests that need a trained model."""

from __future__ import annotations

import grpc
import pytest

from framecast.v1 import framecast_pb2_grpc


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """A stub of the real server on the built-in (trained toy) model: its native size is 64x64."""
    from framecast.engine.model import builtin_model_dir
    from framecast.server.app import start_server
    from framecast.server.config import ServerConfig

    config = ServerConfig.build(model_dir=str(builtin_model_dir()), data_dir=str(tmp_path_factory.mktemp("toy-data")),
                                port=0, max_source_pixels=3840 * 2160)  # fmt: skip
    server = start_server(config)
    assert server.wait_ready(timeout=120), server.load_error
    with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        yield framecast_pb2_grpc.FramecastStub(channel)
    server.stop(grace=5)
