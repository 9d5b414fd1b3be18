"""Shared fixtures: the built-in tiny model written to disk, and the real server on a real port."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton kernels run on the CPU in tests

import grpc
import numpy as np
import pytest

from framecast.engine.toy.world import SceneConfig, make_scene


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The small random-weight Wan I2V pipeline, saved with save_pretrained (loaded with from_pretrained)."""
    from framecast.engine.toy.architectures import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "wan-tiny")


@pytest.fixture(scope="session")
def scene():
    """A 9-frame 64x64 clip: a moving sprite over a textured background, its mask, its edit."""
    return make_scene(3, SceneConfig(frames=9, height=64, width=64, sprites=1, edit="recolor"))


def _start(model_dir, data_dir, **overrides):
    from framecast.server.app import start_server
    from framecast.server.config import ServerConfig

    config = ServerConfig.build(model_dir=str(model_dir), data_dir=str(data_dir), host="127.0.0.1", port=0, **overrides)
    server = start_server(config)
    assert server.wait_ready(timeout=120), "server did not become ready"
    return server


@pytest.fixture(scope="session")
def grpc_server(tiny_model_dir, tmp_path_factory):
    """The real framecast server on 127.0.0.1:<free port>, shared by the server tests."""
    server = _start(tiny_model_dir, tmp_path_factory.mktemp("server-data"), max_frames=33, max_pixels=128 * 128,
                    max_source_pixels=3840 * 2160)
    yield server
    server.stop(grace=5)


@pytest.fixture()
def start_server_at():
    """Start extra servers (e.g. on a given data dir, to test restarts); all stopped at teardown."""
    started = []

    def start(model_dir, data_dir, **overrides):
        server = _start(model_dir, data_dir, **overrides)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(grace=5)


@pytest.fixture()
def stub(grpc_server):
    from framecast.v1 import framecast_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}")
    yield framecast_pb2_grpc.FramecastStub(channel)
    channel.close()


def as_mask_frames(mask: np.ndarray) -> np.ndarray:
    from framecast.common.media import mask_to_frames

    return mask_to_frames(mask)
