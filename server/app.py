"""Starting and stopping the framecast server.

The gRPC port opens at once with health NOT_SERVING; the model loads in the background and
health turns SERVING when it is ready. SIGINT/SIGTERM stop it gracefully: no new jobs,
waiting jobs cancelled, the running job given ``grace_s`` to finish and ``grace_s`` more to stop
at its next step (else abandoned), records flushed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from framecast.engine.adapters.store import AdapterStore
from framecast.engine.engine import Engine
from framecast.engine.errors import InvalidInput, Unavailable
from framecast.engine.footage.grid import WAN_FPS
from framecast.server.adapter_rpcs import settle_interrupted_training
from framecast.server.calls import CallInterceptor
from framecast.server.config import MAX_MESSAGE_BYTES, ServerConfig
from framecast.server.errors import ErrorInterceptor
from framecast.server.health import Health, device_problem
from framecast.server.job import JobObservers
from framecast.server.jobs import JobQueue
from framecast.server.media_store import MediaStore
from framecast.server.metrics import Metrics
from framecast.server.request_ids import install_log_records
from framecast.server.security import AuthInterceptor, TokenFile, describe_access, server_credentials
from framecast.server.service import FramecastService, settle_interrupted_propagation
from framecast.server.streams import HealthLane, StreamCap, rpc_pool
from framecast.v1 import framecast_pb2, framecast_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = framecast_pb2.DESCRIPTOR.services_by_name["Framecast"].full_name
LOCK_FILE = "server.lock"  # in the data dir, locked by the server that uses it
CLUSTER_HOLDER = "cluster"  # what server.lock says while a cluster's processes share it


class RunningServer:
    def __init__(self, config: ServerConfig):
        self.config = config
        data = Path(config.data_dir)
        # Before the stores read the data dir: a second server on it would take the first one's
        # running jobs for ones a crash interrupted and mark them failed.
        self._data_lock = lock_data_dir(data)
        install_log_records()  # every log record carries the request id it was made for
        self.metrics = Metrics()  # this server's own registry, served by start() with --metrics-port
        self.metrics_port: int | None = None  # the port /metrics is served on, once started; None: off
        self.engine: Engine | None = None  # once loaded
        self.tracing = None  # tracing.Tracing with --otel-endpoint (or a test's exporter); None: off
        try:
            self.tracing = tracing_for(config)
            self._server = self._open_port()
        except BaseException:
            if self.tracing is not None:
                self.tracing.close()
            self._data_lock.close()
            raise
        self.media = MediaStore(data / "media", max_pixels=config.max_source_pixels, max_duration_s=config.max_duration_s,
                                max_frames=int(config.max_duration_s * WAN_FPS))  # fmt: skip
        adapters = AdapterStore(data / "adapters")
        adapters.remove_interrupted_writes()

        def settle_interrupted(info: framecast_pb2.JobInfo) -> None:
            settle_interrupted_training(adapters, info)
            settle_interrupted_propagation(self.media, info)

        observer = self.metrics if self.tracing is None else JobObservers(self.metrics, self.tracing)
        self.queue = JobQueue(data / "jobs", config.max_queue, on_interrupted=settle_interrupted, observer=observer)
        self.metrics.watch(self.queue, self.media, lambda: self.engine)
        self.service = FramecastService(config, self.media, self.queue, open_streams=lambda: self.streams.open_streams,
                                        authenticated=self.auth.authenticated)  # fmt: skip
        self.health = Health(loaded=("", SERVICE_NAME), why_not_ready=self._why_not_ready)
        framecast_pb2_grpc.add_FramecastServicer_to_server(self.service, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self._server)
        enable_reflection(self._server)
        self._stop = GracefulStop(self.health, self.queue, self._server, self._health_lane, self.metrics, self.tracing,
                                  self._data_lock, config.grace_s, "stopped")  # fmt: skip
        self._ready = threading.Event()
        self._load_ended = threading.Event()  # loaded or failed
        self._loader: threading.Thread | None = None

    def _open_port(self) -> grpc.Server:
        """A gRPC server bound to the configured address; ``self.port`` is the port it got."""
        port = open_port(self.config, self.metrics, self.tracing)
        self.streams, self._health_lane, self.auth, self.port = port.streams, port.health_lane, port.auth, port.port
        return port.server

    def _why_not_ready(self) -> str | None:
        """Why jobs cannot run now (the readiness health name's NOT_SERVING); None when they can."""
        try:
            engine = self.service.engine
        except Unavailable as why:
            return str(why)
        if not self.queue.worker_alive:
            return "the job worker thread has stopped; restart the server"
        return device_problem(engine.device)

    def start(self) -> "RunningServer":
        if self.config.metrics_port is not None:
            try:
                self.metrics_port = self.metrics.serve_http(self.config.host, self.config.metrics_port)
            except OSError as error:  # nothing started yet: leave nothing behind
                self.queue.shutdown(0)
                self._server.stop(None)
                if self.tracing is not None:
                    self.tracing.close()
                self._data_lock.close()
                raise InvalidInput("metrics_port", self.config.metrics_port,
                                   f"cannot be opened on {self.config.host}: {error.strerror or error}") from None  # fmt: skip
            log.info("metrics on http://%s:%d/metrics", self.config.host, self.metrics_port)
        self._server.start()
        self.health.start()
        config = self.config
        access = describe_access(bool(config.tls_cert), bool(config.tls_client_ca), bool(config.auth_tokens))
        log.info("listening on %s:%d (%s); loading %s", config.host, self.port, access, config.engine.model_dir)
        self._loader = threading.Thread(target=self._load_engine, name="framecast-loader", daemon=True)
        self._loader.start()
        if self.config.media_retention_hours > 0:
            threading.Thread(target=self._expire_media, name="framecast-retention", daemon=True).start()
        return self

    def _expire_media(self) -> None:
        """Delete media older than the retention period: at start, then every tenth of it (at most hourly)."""
        max_age_s = self.config.media_retention_hours * 3600.0
        while not self._stop.stopped.is_set():
            try:
                deleted = self.media.expire(max_age_s)
            except Exception:
                log.exception("media retention sweep failed")
            else:
                if deleted:
                    log.info("retention: deleted %d media older than %g h", len(deleted), self.config.media_retention_hours)
            self._stop.stopped.wait(min(3600.0, max_age_s / 10))

    def _load_engine(self) -> None:
        config = self.config
        try:
            engine = Engine(config.engine, config.data_dir)
        except Exception as exc:
            log.exception("model failed to load")
            self.service.set_engine(None, f"{type(exc).__name__}: {exc}")
            self._load_ended.set()
            return
        engine.adapters.observe(self.metrics.adapter_cache_event)
        self.engine = engine
        self.service.set_engine(engine)
        self.health.set_loaded(True)
        self._ready.set()
        self._load_ended.set()
        log.info("ready: %s on %s", engine.base_model, engine.device)

    @property
    def load_error(self) -> str | None:
        """Why the model failed to load (also in GetServerInfo); None while loading or once ready."""
        return self.service.load_error

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once the model is loaded; False on timeout or as soon as loading failed."""
        self._load_ended.wait(timeout)
        return self._ready.is_set()

    def wait(self) -> None:
        self._stop.stopped.wait()

    def stop(self, grace: float | None = None) -> None:
        """Graceful stop: refuse new RPCs and jobs, finish or cancel running work, flush records
        (``GracefulStop``). Bounded: a job stuck in a step is abandoned after about twice ``grace``
        (JobQueue.shutdown), so no RPC handler is left following it and the process can exit."""
        self._stop(grace)


class GracefulStop:
    """The stop of a port serving a queue's jobs, a single server's or a cluster front's, done once.

    Not ready, the queue shut down (``JobQueue.shutdown``: ``grace`` to finish, then cancelled),
    the port closed after ``grace`` more for open calls, health's threads and the metrics page
    stopped, the spans of the calls and jobs just ended sent (``tracing``, or None), and the data
    directory's lock released last: another server may use the directory from then on. Then
    ``stopped`` is set and ``stopped_line`` logged. A second call (a second signal) waits for the
    first to finish and returns, instead of running into a stop half done."""

    def __init__(self, health: Health, queue: JobQueue, server: grpc.Server, health_lane: HealthLane, metrics: Metrics,
                 tracing, data_lock, grace_s: float, stopped_line: str):  # fmt: skip
        self.health, self.queue, self.server, self.health_lane = health, queue, server, health_lane
        self.metrics, self.tracing, self.data_lock = metrics, tracing, data_lock
        self.grace_s = grace_s  # the configured grace, for a call that names none
        self.stopped_line = stopped_line
        self.stopped = threading.Event()
        self._stopping = threading.Lock()

    def __call__(self, grace: float | None = None) -> None:
        with self._stopping:
            if self.stopped.is_set():
                return
            try:
                self._stop(self.grace_s if grace is None else grace)
            finally:
                self.stopped.set()
                log.info(self.stopped_line)

    def _stop(self, grace: float) -> None:
        self.health.stopping()
        try:
            self.queue.shutdown(grace)
        finally:
            try:
                self.server.stop(grace).wait()
                self.health_lane.close()
                self.metrics.close()
            finally:
                if self.tracing is not None:
                    self.tracing.close()
                self.data_lock.close()


def enable_reflection(server: grpc.Server) -> None:
    """Reflection of the Framecast service, health and reflection itself."""
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )


@dataclass
class Port:
    """A gRPC server bound to its address, with the interceptors it was made with."""

    server: grpc.Server
    port: int  # the port it got (``config.port`` 0 picks one)
    streams: StreamCap
    health_lane: HealthLane
    auth: AuthInterceptor


def tracing_for(config: ServerConfig):
    """The server's ``tracing.Tracing`` with ``otel_endpoint`` or a test's ``otel_exporter``; None
    otherwise, when neither it nor OpenTelemetry is imported."""
    if not config.otel_endpoint and config.otel_exporter is None:
        return None
    from framecast.server.tracing import Tracing

    return Tracing(config.otel_service_name, config.otel_endpoint, config.otel_exporter)


def open_port(config: ServerConfig, metrics: Metrics, tracing=None) -> Port:
    """A gRPC server bound to ``config``'s address with framecast's interceptors (health's own
    threads, request ids, metrics and spans, tokens, the stream cap, the error mapping), not started.
    InvalidInput naming ``port`` when the address cannot be bound. The single server and a
    cluster's front (``framecast.server.cluster.front``) open their ports with it."""
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),  # a second server on a port in use fails to bind instead of sharing it
    ]
    streams = StreamCap(config.max_streams)
    health_lane = HealthLane()
    auth = AuthInterceptor(TokenFile(config.auth_tokens) if config.auth_tokens else None, bool(config.tls_client_ca))
    credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca) if config.tls_cert else None
    # Outermost first: health's pool, request ids and metrics, tokens, the stream cap, then the error mapping.
    interceptors = [health_lane, CallInterceptor(metrics, tracing), auth, streams, ErrorInterceptor()]
    server = grpc.server(rpc_pool(config.max_workers, config.max_streams), interceptors=interceptors, options=options)
    try:
        if credentials is None:
            port = server.add_insecure_port(config.address)
        else:
            port = server.add_secure_port(config.address, credentials)
    except RuntimeError:  # what grpcio raises for an address in use
        port = 0
    if port == 0:
        health_lane.close()
        why = _bind_failure(config.host, config.port)
        raise InvalidInput("port", config.port, f"cannot be opened on {config.host}: {why}")
    return Port(server, port, streams, health_lane, auth)


def lock_data_dir(data: Path, shared: bool = False) -> TextIO:
    """Take the data dir for this process: an exclusive advisory lock on ``data/server.lock``,
    held while the returned file stays open. The kernel drops it when the process ends, so a
    crashed server never leaves the directory locked. InvalidInput naming ``data`` when another
    server holds it or the directory cannot be used. ``shared``: a shared lock, which a cluster's
    fronts and replicas all hold at once (and a single server's exclusive one excludes)."""
    path = data / LOCK_FILE
    try:
        data.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
    except OSError as error:
        raise InvalidInput("data", str(data), f"cannot be used: {error.strerror or error}") from None
    try:
        fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as error:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        if isinstance(error, BlockingIOError):
            owner = f"pid {holder}" if holder.isdigit() else "a process"
            if holder == CLUSTER_HOLDER:
                raise InvalidInput("data", str(data), f"is used by a framecast cluster (its fronts and replicas hold "
                                   f"{path})") from None  # fmt: skip
            raise InvalidInput("data", str(data), f"is used by another framecast server ({owner} holds {path})") from None
        raise InvalidInput("data", str(data), f"cannot be locked ({path}): {error.strerror or error}") from None
    holder = CLUSTER_HOLDER if shared else str(os.getpid())
    handle.seek(0)
    if handle.read().strip() != holder:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{holder}\n")  # who holds it, for the message a second server prints
        handle.flush()
    return handle


def _bind_failure(host: str, port: int) -> str:
    """Why ``host:port`` cannot be bound: gRPC only says that it could not, a plain socket bound
    the same way says why (in use, not an address of this machine, ...)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address)
    except OSError as error:
        return error.strerror or str(error)
    return "in use, or not an address of this machine"


def start_server(config: ServerConfig, handle_signals: bool = False) -> RunningServer:
    """Open the port and start loading the model; returns at once (see ``wait_ready``)."""
    server = RunningServer(config).start()
    if handle_signals:
        def on_signal(signum, frame):
            log.info("signal %d: shutting down", signum)
            threading.Thread(target=server.stop, name="framecast-stop", daemon=True).start()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    return server
