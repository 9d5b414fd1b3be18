"""Health is NOT_SERVING until the model is loaded; a model that fails to load leaves the
server up, saying why, instead of crashing it."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from framecast.server.app import start_server
from framecast.server.config import ServerConfig
from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc


def test_unloadable_model_keeps_serving_errors(tmp_path):
    empty_model = tmp_path / "not-a-model"
    empty_model.mkdir()
    server = start_server(ServerConfig(model_dir=str(empty_model), data_dir=str(tmp_path / "data"), port=0))
    try:
        assert not server.wait_ready(timeout=10)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
            stub = framecast_pb2_grpc.FramecastStub(channel)
            info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
            assert not info.ready and info.version
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.Train(pb.TrainRequest(adapter="a"), timeout=10))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "model_index.json" in caught.value.details()
    finally:
        server.stop(grace=1)


def test_config_refuses_a_missing_model_dir(tmp_path):
    from framecast.engine.errors import InvalidInput

    with pytest.raises(InvalidInput, match="model"):
        ServerConfig(model_dir=str(tmp_path / "nowhere"), data_dir=str(tmp_path))


@pytest.mark.parametrize(
    ("field", "value"), [("adapter_slots", 0), ("adapter_host_cache_gb", -1.0), ("adapter_max_rank", 0)]
)
def test_config_refuses_bad_adapter_cache_sizes(tmp_path, field, value):
    from framecast.engine.errors import InvalidInput

    with pytest.raises(InvalidInput, match=f"{field}.*{value}"):
        ServerConfig(model_dir=str(tmp_path), data_dir=str(tmp_path), **{field: value})


@pytest.mark.parametrize("window", [6, 3, -5])
def test_config_refuses_a_window_that_is_not_4n_plus_1(tmp_path, window):
    from framecast.engine.errors import InvalidInput

    with pytest.raises(InvalidInput, match=f"window_frames.*{window}"):
        ServerConfig(model_dir=str(tmp_path), data_dir=str(tmp_path), window_frames=window)


def test_a_port_in_use_is_refused(grpc_server, tmp_path, tiny_model_dir):
    """gRPC would share a port through SO_REUSEPORT; two servers answering on one port must not happen."""
    config = ServerConfig(model_dir=str(tiny_model_dir), data_dir=str(tmp_path), port=grpc_server.port)
    with pytest.raises(OSError, match=f"could not bind 127.0.0.1:{grpc_server.port}"):
        start_server(config)
