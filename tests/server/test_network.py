"""A server you can put on a network (issue 22): malformed bytes, health, streams, tokens, TLS.

Every test runs the real server on a loopback port; certificates are made here with cryptography.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc

from .certs import FULL_TOKEN, READ_TOKEN, make_certificates, write_tokens

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
    # gRPC refuses the message itself; a handler that was already reading the stream says so in the
    # log (one that had not started says nothing), never as an internal error.
    deadline = time.monotonic() + 3
    while "over the server's receive limit" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


# ---- health that means something, no stalls (defect 4) ---------------------------------------


def health_status(channel: grpc.Channel, service: str, timeout: float = 5) -> int:
    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return answer.status


@pytest.fixture()
def held_job(grpc_server):
    """A job the real queue runs until the test lets it end: streams following it stay open."""
    from framecast.server.job import Job

    release = threading.Event()
    job = grpc_server.queue.submit(Job(pb.JOB_KIND_TRAIN, "", lambda handle: release.wait(120)))
    yield job
    release.set()


def open_watchers(channel: grpc.Channel, job_id: str, count: int) -> list:
    """``count`` WatchJob streams on ``job_id``, each with its first event read (so each is open on the server)."""
    stub = framecast_pb2_grpc.FramecastStub(channel)
    streams = []
    for _ in range(count):
        stream = stub.WatchJob(pb.JobRef(job_id=job_id), timeout=120)
        assert next(stream).WhichOneof("event") == "accepted"
        streams.append(stream)
    return streams


def test_liveness_and_readiness_are_health_names(grpc_server):
    from framecast.server.health import LIVENESS, READINESS

    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        for name in ("", "framecast.v1.Framecast", LIVENESS, READINESS):
            assert health_status(channel, name) == health_pb2.HealthCheckResponse.SERVING, name


def test_readiness_says_no_while_a_model_cannot_run_jobs(tiny_model_dir, tmp_path):
    """A model that fails to load: live (the process answers), never ready."""
    from framecast.server.app import start_server
    from framecast.server.config import ServerConfig

    from .test_startup import hollow_model

    model = hollow_model(tiny_model_dir, tmp_path / "hollow")
    server = start_server(ServerConfig.build(model_dir=str(model), data_dir=str(tmp_path / "data"), port=0))
    try:
        assert not server.wait_ready(120)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            assert health_status(channel, "liveness") == health_pb2.HealthCheckResponse.SERVING
            assert health_status(channel, "readiness") == health_pb2.HealthCheckResponse.NOT_SERVING
            assert health_status(channel, "") == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        server.stop(grace=1)


def test_open_streams_never_starve_health_or_unary_calls(grpc_server, held_job):
    """256 open WatchJob streams (16 stalled the server before): health and GetServerInfo still answer,
    each within a loose 5 s (bench/bench_server.py measures the p99 against the 50 ms goal)."""
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        streams = open_watchers(channel, held_job.id, 256)
        stub = framecast_pb2_grpc.FramecastStub(channel)
        for _ in range(20):
            assert health_status(channel, "readiness", timeout=5) == health_pb2.HealthCheckResponse.SERVING
            info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5)
        assert info.open_streams >= 256 and info.max_streams >= 256 and info.unary_workers >= 1
        for stream in streams:
            stream.cancel()


def test_a_stream_beyond_the_cap_is_resource_exhausted(start_server_at, tiny_model_dir, tmp_path):
    from framecast.server.job import Job

    server = start_server_at(tiny_model_dir, tmp_path, max_streams=4)
    release = threading.Event()
    job = server.queue.submit(Job(pb.JOB_KIND_TRAIN, "", lambda handle: release.wait(120)))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            streams = open_watchers(channel, job.id, 4)
            stub = framecast_pb2_grpc.FramecastStub(channel)
            info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5)
            assert (info.max_streams, info.open_streams, info.max_message_bytes) == (4, 4, 64 << 20)
            with pytest.raises(grpc.RpcError) as caught:
                next(stub.WatchJob(pb.JobRef(job_id=job.id), timeout=10))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "4 streams are open" in caught.value.details() and "--max-streams" in caught.value.details()
            assert health_status(channel, "readiness") == health_pb2.HealthCheckResponse.SERVING
            streams[0].cancel()  # its place comes back once the server sees the client gone (within a second)
            deadline = time.monotonic() + 10
            while stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5).open_streams > 3:
                assert time.monotonic() < deadline, "a cancelled stream kept its place"
                time.sleep(0.1)
            assert next(stub.WatchJob(pb.JobRef(job_id=job.id), timeout=10)).WhichOneof("event") == "accepted"
    finally:
        release.set()


def test_a_watcher_gets_progress_coalesced_and_every_other_event(tmp_path):
    """Watchers get progress at most every WATCH_PROGRESS_EVERY_S, the latest before any other event; a
    job's own stream gets every event."""
    from framecast.server.job import WATCH_PROGRESS_EVERY_S, Job
    from framecast.server.jobs import JobQueue

    queue = JobQueue(tmp_path, max_queue=4)
    go = threading.Event()

    def run(handle):
        go.wait(30)
        for phase, steps in (("motion", 50), ("appearance", 30)):
            for step in range(1, steps + 1):
                handle.emit(progress=pb.Progress(phase=phase, step=step, total=steps))
                time.sleep(0.002)
        handle.emit(frame=pb.Frame(index=0))

    job = queue.submit(Job(pb.JOB_KIND_TRAIN, "", run))
    watched = []
    watcher = threading.Thread(target=lambda: watched.extend(job.follow(replay_progress=False, coalesce_progress=True)))
    watcher.start()
    time.sleep(0.1)
    started = time.monotonic()
    go.set()
    everything = list(job.follow())
    watcher.join(30)
    elapsed = time.monotonic() - started
    progress = [(e.progress.phase, e.progress.step) for e in everything if e.WhichOneof("event") == "progress"]
    assert len(progress) == 80
    seen = [(e.progress.phase, e.progress.step) for e in watched if e.WhichOneof("event") == "progress"]
    assert len(seen) <= elapsed / WATCH_PROGRESS_EVERY_S + 3, seen
    assert ("motion", 50) in seen and seen[-1] == ("appearance", 30)  # each phase's last step, in order
    assert [e.WhichOneof("event") for e in watched][-1] == "frame"
    queue.shutdown(1)


# ---- tokens, TLS, mutual TLS ------------------------------------------------------------------


@contextlib.contextmanager
def running(model_dir, data_dir, **settings):
    """The real server on a free loopback port with ``settings``, ready; stopped on leaving."""
    from framecast.server.app import start_server
    from framecast.server.config import ServerConfig

    server = start_server(ServerConfig.build(model_dir=str(model_dir), data_dir=str(data_dir), port=0, **settings))
    try:
        assert server.wait_ready(120), server.load_error
        yield server
    finally:
        server.stop(grace=1)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module")
def secured(tiny_model_dir, tmp_path_factory, certificates):
    """A server with TLS and tokens: a full one and a read-only one."""
    folder = tmp_path_factory.mktemp("secured")
    tokens = write_tokens(folder / "tokens", FULL_TOKEN, f"read:{READ_TOKEN}  ")
    with running(tiny_model_dir, folder / "data", auth_tokens=str(tokens), tls_cert=str(certificates.server_cert),
                 tls_key=str(certificates.server_key)) as server:  # fmt: skip
        yield server


def tls_channel(server, certificates, client_cert: bool = False) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        certificates.ca.read_bytes(),
        certificates.client_key.read_bytes() if client_cert else None,
        certificates.client_cert.read_bytes() if client_cert else None,
    )
    return grpc.secure_channel(f"localhost:{server.port}", credentials)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_every_rpc_needs_a_token(secured, certificates, caplog):
    """Iterates over the service's methods, so a new RPC cannot be missed: none answers without a
    token or with a wrong one; with the right one each reaches its handler (which refuses the
    empty request in its own way)."""
    caplog.set_level(logging.DEBUG)
    with tls_channel(secured, certificates) as channel:
        for method in SERVICE.methods:
            for metadata in (None, bearer("not-a-token-of-the-server"), [("authorization", FULL_TOKEN)]):
                with pytest.raises(grpc.RpcError) as caught:
                    raw_call(channel, method, b"", metadata=metadata)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, (method.name, caught.value.details())
                assert "--token" in caught.value.details() and "FRAMECAST_TOKEN" in caught.value.details()
            code = rpc_code(lambda: raw_call(channel, method, b"", metadata=bearer(FULL_TOKEN)))
            assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), method.name
        # Health needs no token: a load balancer's probe carries none.
        assert health_status(channel, "readiness") == health_pb2.HealthCheckResponse.SERVING
        stub = framecast_pb2_grpc.FramecastStub(channel)
        assert stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10, metadata=bearer(FULL_TOKEN)).ready
    assert FULL_TOKEN not in caplog.text and READ_TOKEN not in caplog.text and "not-a-token" not in caplog.text


def test_a_read_only_token_cannot_change_anything(secured, certificates):
    from framecast.server.security import READ_ONLY_RPCS

    with tls_channel(secured, certificates) as channel:
        for method in SERVICE.methods:
            code = rpc_code(lambda: raw_call(channel, method, b"", metadata=bearer(READ_TOKEN)))
            if method.name in READ_ONLY_RPCS:
                assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), method.name
                continue
            with pytest.raises(grpc.RpcError) as caught:
                raw_call(channel, method, b"", metadata=bearer(READ_TOKEN))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, method.name
            assert caught.value.details().startswith(f"{method.name} changes") and "read-only" in caught.value.details()
    assert {"Train", "Propagate", "ImportAdapter", "DeleteAdapter", "LoadAdapter", "UnloadAdapter", "PinAdapter",
            "UploadMedia", "DeleteMedia", "CancelJob"}.isdisjoint(READ_ONLY_RPCS)  # fmt: skip


def test_the_client_speaks_tls_with_a_token(secured, certificates):
    from framecast.client import FramecastClient, FramecastError

    address = f"localhost:{secured.port}"
    with FramecastClient(address, timeout=10, token=FULL_TOKEN, tls_ca=certificates.ca) as client:
        assert client.wait_ready(30) and client.server_info().ready
        assert client.list_jobs() is not None
    with FramecastClient(address, timeout=10, tls_ca=certificates.ca) as client, pytest.raises(FramecastError) as caught:
        assert client.health("liveness") == client.health("readiness") == "SERVING"  # no token needed
        client.server_info()
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED and "--token" in caught.value.message
    for plain in ({}, {"tls": True}):  # plaintext; TLS trusting only the system's roots
        with FramecastClient(address, timeout=5, token=FULL_TOKEN, **plain) as client, pytest.raises(FramecastError) as caught:
            client.server_info()
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_asks_for_a_certificate_the_ca_signed(tiny_model_dir, tmp_path, certificates):
    from framecast.client import FramecastClient, FramecastError

    with running(tiny_model_dir, tmp_path, tls_cert=str(certificates.server_cert), tls_key=str(certificates.server_key),
                 tls_client_ca=str(certificates.ca)) as server:  # fmt: skip
        address = f"127.0.0.1:{server.port}"
        with FramecastClient(address, timeout=10, tls_ca=certificates.ca, tls_cert=certificates.client_cert,
                             tls_key=certificates.client_key) as client:  # fmt: skip
            info = client.server_info()
            assert info.ready and info.model_dir == str(tiny_model_dir)  # a certified caller is an authenticated one
        for cert, key in ((None, None), (certificates.stranger_cert, certificates.stranger_key)):
            with FramecastClient(address, timeout=5, tls_ca=certificates.ca, tls_cert=cert, tls_key=key) as client:
                with pytest.raises(FramecastError) as caught:
                    client.server_info()
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_the_tokens_file_is_read_again_when_it_changes(tiny_model_dir, tmp_path, caplog):
    tokens = write_tokens(tmp_path / "tokens", FULL_TOKEN)
    new_token = "new-token-abcdefghijklmnop"
    with running(tiny_model_dir, tmp_path / "data", auth_tokens=str(tokens)) as server:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = framecast_pb2_grpc.FramecastStub(channel)

            def code(token: str) -> grpc.StatusCode:
                return rpc_code(lambda: stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10, metadata=bearer(token)))

            assert (code(FULL_TOKEN), code(new_token)) == (grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED)
            replacement = tmp_path / "tokens.new"
            write_tokens(replacement, new_token)
            os.replace(replacement, tokens)  # as an editor saves: a new file under the old name
            assert (code(FULL_TOKEN), code(new_token)) == (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.OK)
            write_tokens(tokens, new_token, "short")  # a bad line: the tokens before stay in force
            assert code(new_token) == grpc.StatusCode.OK
            assert "line 4" in caplog.text and "stay in force" in caplog.text
            tokens.unlink()  # being replaced: still the tokens before
            assert code(new_token) == grpc.StatusCode.OK
    assert new_token not in caplog.text and FULL_TOKEN not in caplog.text


@pytest.mark.parametrize("settings, option, words", [
    ({"host": "0.0.0.0"}, "--host", ["no TLS", "--insecure"]),
    ({"host": "0.0.0.0", "tls": True}, "--host", ["no caller authentication", "--auth-tokens"]),
    ({"host": "0.0.0.0", "tokens": True}, "--host", ["no TLS (--tls-cert and --tls-key)"]),
    ({"tls_cert_only": True}, "--tls-key", ["is required with --tls-cert"]),
])  # fmt: skip
def test_serve_refuses_a_network_host_without_tls_and_tokens(tiny_model_dir, tmp_path, certificates, capsys, settings,
                                                             option, words):  # fmt: skip
    from framecast.server import cli as server_cli

    argv = ["--model", str(tiny_model_dir), "--data", str(tmp_path), "--port", "0", "--host", settings.get("host", "127.0.0.1")]
    if settings.get("tls") or settings.get("tls_cert_only"):
        argv += ["--tls-cert", str(certificates.server_cert)]
    if settings.get("tls"):
        argv += ["--tls-key", str(certificates.server_key)]
    if settings.get("tokens"):
        argv += ["--auth-tokens", str(write_tokens(tmp_path / "tokens", FULL_TOKEN))]
    assert server_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option}: ") and all(word in err for word in words), err


def test_insecure_or_tls_with_tokens_may_serve_a_network_host(tiny_model_dir, tmp_path, certificates):
    from framecast.engine.errors import InvalidInput
    from framecast.server.config import ServerConfig

    common = {"model_dir": str(tiny_model_dir), "data_dir": str(tmp_path), "host": "0.0.0.0"}
    tls = {"tls_cert": str(certificates.server_cert), "tls_key": str(certificates.server_key)}
    ServerConfig.build(**common, insecure=True)
    ServerConfig.build(**common, **tls, auth_tokens=str(write_tokens(tmp_path / "tokens", FULL_TOKEN)))
    ServerConfig.build(**common, **tls, tls_client_ca=str(certificates.ca))
    with pytest.raises(InvalidInput, match="host is reachable from other machines"):
        ServerConfig.build(**common)
    ServerConfig.build(**{**common, "host": "localhost"})  # loopback: as the README's plain `framecast serve`
    ServerConfig.build(**{**common, "host": "::1"})


def test_a_tokens_file_without_a_token_or_with_a_bad_one_is_refused(tiny_model_dir, tmp_path, capsys):
    from framecast.server import cli as server_cli

    base = ["--model", str(tiny_model_dir), "--data", str(tmp_path / "data"), "--port", "0", "--auth-tokens"]
    assert server_cli.main(base + [str(write_tokens(tmp_path / "empty"))]) == 2
    assert "error: --auth-tokens: holds no tokens" in capsys.readouterr().err
    assert server_cli.main(base + [str(write_tokens(tmp_path / "short", "read:tiny"))]) == 2
    err = capsys.readouterr().err
    assert "error: --auth-tokens: must hold one token of at least 16 characters" in err and "line 3" in err
    assert "tiny" not in err.replace("--auth-tokens", "")


# ---- no server paths to callers nobody vouches for ---------------------------------------------


def test_server_info_shows_no_absolute_path_to_an_unauthenticated_caller(grpc_server, secured, certificates):
    """Without tokens or client certificates nobody is authenticated: the model directory by its name
    only. A caller with a token (or a client certificate, above) sees the path."""
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        info = framecast_pb2_grpc.FramecastStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    model_dir = grpc_server.config.engine.model_dir
    assert info.model_dir == os.path.basename(model_dir) and "/" not in info.model_dir
    with tls_channel(secured, certificates) as channel:
        stub = framecast_pb2_grpc.FramecastStub(channel)
        assert stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10, metadata=bearer(READ_TOKEN)).model_dir == model_dir


def test_a_load_error_names_no_server_path_to_an_unauthenticated_caller(tiny_model_dir, tmp_path):
    from framecast.server.app import start_server
    from framecast.server.config import ServerConfig

    from .test_startup import hollow_model

    model = hollow_model(tiny_model_dir, tmp_path / "hollow")
    server = start_server(ServerConfig.build(model_dir=str(model), data_dir=str(tmp_path / "data"), port=0))
    try:
        assert not server.wait_ready(120)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            info = framecast_pb2_grpc.FramecastStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
        assert info.load_error and str(tmp_path) not in info.load_error and info.model_dir == "hollow"
    finally:
        server.stop(grace=1)
