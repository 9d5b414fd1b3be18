"""A cluster's front: framecast's own gRPC service, answering from replicas on Ray Serve.

Clients talk to the front exactly as to one server (``framecast.v1.Framecast``, health,
reflection, tokens, TLS, request ids, metrics: the same port set-up, ``app.open_port``). Ray
Serve's own gRPC proxy is not used: releases before 2026 took unary and server-streaming calls
only (UploadMedia and ImportAdapter stream from the client), and even with its newer client
streaming it maps each call to one deployment method, while a framecast job outlives its call:
the cluster's job records, adapter claims and the stores are one process's to keep.

- Media are the shared directory's, through the single server's ``MediaStore``: the front
  stores uploads and serves downloads itself.
- Train goes to the less loaded replica, Propagate to one holding its adapter (the adapter's name
  as Ray Serve's multiplexed model id: ``replica``); the replica's first answer is either a refusal
  (the RPC fails with its status, as on one server) or the job it accepted, which the front records
  and follows (``front_jobs``). A Train first claims its adapter's name for the cluster
  (``claims``); a Propagate naming an adapter still training waits for that training to end, then
  goes where the adapter is.
- The other adapter RPCs and Plan go to a replica (LoadAdapter and the like to one that holds
  the adapter); GetJob, ListJobs, WatchJob and CancelJob are the front's (``FrontJobs``).
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from pathlib import Path

from grpc_health.v1 import health_pb2_grpc

from framecast.engine.adapters.store import AdapterStore, check_adapter_name
from framecast.engine.errors import FailedPrecondition, InvalidInput, Unavailable
from framecast.engine.footage.grid import WAN_FPS
from framecast.server import convert
from framecast.server.adapter_rpcs import settle_interrupted_training
from framecast.server.app import SERVICE_NAME, GracefulStop, enable_reflection, lock_data_dir, open_port, tracing_for
from framecast.server.cluster.claims import CLAIMS_DIR, AdapterClaims
from framecast.server.cluster.front_jobs import CANCEL_DIR, FRONTS_DIR, FrontJobs, relay, remote_failure
from framecast.server.config import ServerConfig
from framecast.server.health import Health
from framecast.server.job import Job, JobObservers
from framecast.server.jobs import ensure_not_in_use
from framecast.server.media_store import MediaStore
from framecast.server.metrics import Metrics
from framecast.server.request_ids import current_request_id, install_log_records
from framecast.server.service import FramecastService, check_trained, settle_interrupted_propagation
from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 600.0  # a unary call on a replica (an import or export of a large adapter included)
DISPATCH_TRIES = 3  # a replica that died before it answered: the call goes to another
READINESS_EVERY_S = 5.0  # how often readiness asks a replica
WAIT_POLL_S = 0.2  # a Propagate waiting for another front's training looks at its claim this often


class ClusterService(FramecastService):
    """The Framecast servicer of a front: media and jobs here, the engine's work on replicas."""

    def __init__(self, config: ServerConfig, media: MediaStore, queue: FrontJobs, claims: AdapterClaims, replicas,
                 metrics: Metrics, open_streams=lambda: 0, authenticated=lambda context: False):  # fmt: skip
        super().__init__(config, media, queue, open_streams=open_streams, authenticated=authenticated)
        self.claims = claims
        self.replicas = replicas  # the replicas' DeploymentHandle
        self.metrics = metrics
        self.affinity = True  # route by adapter (multiplexed model id); False: Ray Serve's plain choice (benchmarks)
        self.placements: collections.OrderedDict[str, dict] = collections.OrderedDict()  # job id -> its replica
        self._placements_lock = threading.Lock()

    # --- calling replicas -------------------------------------------------------------------

    def _handle(self, method_name: str, adapter: str = "", stream: bool = False):
        options = {"method_name": method_name, "stream": stream}
        if adapter and self.affinity:
            options["multiplexed_model_id"] = adapter
        return self.replicas.options(**options)

    def _retrying(self, attempt):
        """``attempt()``, again on another replica when the one it reached died before answering."""
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import DeploymentUnavailableError

        for tries in range(1, DISPATCH_TRIES + 1):
            try:
                return attempt()
            except TimeoutError:  # what DeploymentResponse.result raises past its timeout_s
                raise Unavailable(f"the replica did not answer within {CALL_TIMEOUT_S:g} s; retry later") from None
            except (RayActorError, DeploymentUnavailableError) as error:
                if tries == DISPATCH_TRIES:
                    raise Unavailable(f"no replica answered ({type(error).__name__}); retry when the cluster's "
                                      "readiness is SERVING") from None  # fmt: skip
                log.warning("a replica died before answering (%s); trying another", type(error).__name__)
                time.sleep(0.5 * tries)

    def _call(self, method: str, request, adapter: str = ""):
        """A unary RPC (or ImportAdapter's chunks, ExportAdapter's) on a replica; its reply."""
        data = [m.SerializeToString() for m in request] if isinstance(request, list) else request.SerializeToString()
        training = tuple(sorted(self.queued_training()))

        def attempt():
            response = self._handle("call", adapter).remote(method, data, current_request_id(), training)
            return response.result(timeout_s=CALL_TIMEOUT_S)

        answer = self._retrying(attempt)
        if "status" in answer:
            raise remote_failure(answer, refused=True)
        return answer["reply"]

    def _dispatch(self, method: str, request, adapter: str):
        """Send a job to a replica; (its placement, the job it accepted, the rest of its stream).
        A refusal raises with the replica's status, as the single server's RPC does."""

        def attempt():
            stream = self._handle("job", adapter, stream=True).remote(method, request.SerializeToString(),
                                                                      current_request_id())  # fmt: skip
            return stream, next(stream), next(stream)

        stream, placement, first = self._retrying(attempt)
        if isinstance(first, dict):
            raise remote_failure(first, refused=True)
        return placement, pb.JobEvent.FromString(first).accepted, stream

    def _start(self, method: str, request, adapter: str, uses_adapters: tuple[str, ...], on_end=lambda job: None) -> Job:
        placement, accepted, stream = self._dispatch(method, request, adapter)
        job = Job(accepted.kind, accepted.adapter, relay(stream, on_end), uses_adapters, request_id=accepted.request_id)
        job.info.CopyFrom(accepted)
        self._place(job.id, placement, adapter)
        return self.queue.submit(job, stream)

    def _place(self, job_id: str, placement: dict, adapter: str) -> None:
        with self._placements_lock:
            self.placements[job_id] = placement
            while len(self.placements) > 10_000:
                self.placements.popitem(last=False)
        if placement.get("hit"):
            result = "miss" if placement["hit"] == "miss" else "hit"
            self.metrics.affinity.labels(result=result).inc()
            log.info("job %s on replica %s: adapter %r %s", job_id, placement["replica"], adapter,
                     result if result == "miss" else f"hit ({placement['hit']})")  # fmt: skip
        else:
            log.info("job %s on replica %s", job_id, placement["replica"])

    # --- jobs -------------------------------------------------------------------------------

    def Train(self, request, context):
        name = check_adapter_name(request.adapter)
        claim = f"claiming-{time.time_ns()}"
        self.claims.claim(name, claim)
        try:  # the claim is the job's once a replica accepted it, and goes when the job ends there
            # Routed by load; the replica it lands on takes the adapter's name as one it serves.
            job = self._start("Train", request, "", (name,), on_end=lambda job: self.claims.release(name, job.id))
            self.claims.relabel(name, claim, job.id)
        finally:
            self.claims.release(name, claim)  # refused, or relabelled already
        yield from self._stream(job, alive=context.is_active)

    def Propagate(self, request, context):
        if request.adapter:
            self._wait_for_training(request.adapter, context)
        adapters = (request.adapter,) if request.adapter else ()
        job = self._start("Propagate", request, request.adapter, adapters)
        yield from self._stream(job, alive=context.is_active)

    def _wait_for_training(self, adapter: str, context) -> None:
        """A propagation naming an adapter that is still training waits for it here, then goes to
        the replica that trained it; FailedPrecondition when that training failed."""
        training = self.queue.training(adapter)
        if training is not None:
            for _ in training.follow(replay_progress=False, alive=context.is_active):
                pass
            if not context.is_active():
                raise Unavailable("the client went away")
            check_trained(training)
            return
        while self.claims.held(adapter) and context.is_active():  # trained through another front
            time.sleep(WAIT_POLL_S)

    def Plan(self, request, context):
        return pb.PlanResponse.FromString(self._call("Plan", request))

    # --- adapters ---------------------------------------------------------------------------

    def ListAdapters(self, request, context):
        return pb.ListAdaptersResponse.FromString(self._call("ListAdapters", request))

    def GetAdapter(self, request, context):
        return pb.AdapterInfo.FromString(self._call("GetAdapter", request))

    def LoadAdapter(self, request, context):
        return pb.AdapterChange.FromString(self._call("LoadAdapter", request, check_adapter_name(request.name, "name")))

    def UnloadAdapter(self, request, context):
        return pb.AdapterChange.FromString(self._call("UnloadAdapter", request, check_adapter_name(request.name, "name")))

    def PinAdapter(self, request, context):
        return pb.AdapterChange.FromString(self._call("PinAdapter", request, check_adapter_name(request.name, "name")))

    def DeleteAdapter(self, request, context):
        name = check_adapter_name(request.name, "name")
        ensure_not_in_use(self.queue, name)
        if self.claims.held(name):
            raise FailedPrecondition(f"adapter {name!r} is being trained by job {self.claims.holder(name)}; cancel it or wait")
        return pb.DeleteAdapterResponse.FromString(self._call("DeleteAdapter", request, name))

    def ImportAdapter(self, request_iterator, context):
        chunks, size, limit = [], 0, self.config.max_upload_bytes
        for chunk in request_iterator:
            size += len(chunk.data)
            if size > limit:
                raise InvalidInput("data", f"> {limit} bytes", "exceeds the upload limit")
            chunks.append(chunk)
        if not chunks:
            raise InvalidInput("data", "no chunks", "is empty: send the header, then the file")
        name = check_adapter_name(chunks[0].header.name, "header.name")
        claim = f"import-{time.time_ns()}"
        self.claims.claim(name, claim, "header.name")
        try:
            return pb.AdapterInfo.FromString(self._call("ImportAdapter", chunks, name))
        finally:
            self.claims.release(name, claim)

    def ExportAdapter(self, request, context):
        for chunk in self._call("ExportAdapter", request, check_adapter_name(request.name, "name")):
            yield pb.FileChunk.FromString(chunk)

    # --- server -----------------------------------------------------------------------------

    def GetServerInfo(self, request, context):
        info = pb.ServerInfo.FromString(self._call("GetServerInfo", request))
        info.open_streams = self._open_streams()
        info.queue_length = self.queue.waiting
        if not self._authenticated(context):
            convert.hide_paths(info, self.config)
        return info


class ClusterFront:
    """A front on a port: the servicer, health, reflection and metrics, over the replicas' handle."""

    def __init__(self, config: ServerConfig, replicas, log_request_ids: bool = True, front_id: str = ""):
        """``log_request_ids``: give log records the request id (``install_log_records``); off inside a
        Ray Serve replica, whose access log sets its own ``request_id`` on records. ``front_id``
        names this front's job records folder (default: host name and port, the same after a
        restart, so the front settles the jobs its restart interrupted)."""
        if log_request_ids:
            install_log_records()
        self.config = config
        data = Path(config.data_dir)
        self._data_lock = lock_data_dir(data, shared=True)  # no single server sweeping it meanwhile
        self.metrics = Metrics()
        self.metrics_port: int | None = None
        self.tracing = None  # the front's RPC and job spans with --otel-endpoint (the replicas trace nothing)
        try:
            self.tracing = tracing_for(config)
            port = open_port(config, self.metrics, self.tracing)
        except BaseException:
            if self.tracing is not None:
                self.tracing.close()
            self._data_lock.close()
            raise
        self._server, self.port, self._health_lane, self.streams = port.server, port.port, port.health_lane, port.streams
        self.media = MediaStore(data / "media", max_pixels=config.max_source_pixels, max_duration_s=config.max_duration_s,
                                max_frames=int(config.max_duration_s * WAN_FPS), sweep=False)  # fmt: skip
        adapters = AdapterStore(data / "adapters")

        def settle_interrupted(info: pb.JobInfo) -> None:
            settle_interrupted_training(adapters, info)
            settle_interrupted_propagation(self.media, info)

        self.front_id = front_id or f"{socket.gethostname()}-{self.port}"
        observer = self.metrics if self.tracing is None else JobObservers(self.metrics, self.tracing)
        self.queue = FrontJobs(data / FRONTS_DIR, self.front_id, data / CANCEL_DIR, on_interrupted=settle_interrupted,
                               observer=observer)  # fmt: skip
        self.claims = AdapterClaims(data / CLAIMS_DIR, is_over=self.queue.is_over)
        self.replicas = replicas
        self.metrics.watch(self.queue, self.media, lambda: None)
        self.service = ClusterService(config, self.media, self.queue, self.claims, replicas, self.metrics,
                                      open_streams=lambda: self.streams.open_streams, authenticated=port.auth.authenticated)  # fmt: skip
        self.health = Health(loaded=("", SERVICE_NAME), why_not_ready=self._why_not_ready)
        pb_grpc.add_FramecastServicer_to_server(self.service, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self._server)
        enable_reflection(self._server)
        self._stop = GracefulStop(self.health, self.queue, self._server, self._health_lane, self.metrics, self.tracing,
                                  self._data_lock, config.grace_s, "cluster front stopped")  # fmt: skip
        self._readiness: tuple[float, str | None] = (float("-inf"), None)  # when last asked, and the answer

    def replica_stats(self, timeout_s: float = 10.0) -> dict:
        """One replica's ``stats`` (which one is Ray Serve's choice)."""
        return self.replicas.options(method_name="stats").remote().result(timeout_s=timeout_s)

    def _why_not_ready(self) -> str | None:
        """Readiness: a replica answers. Asked every READINESS_EVERY_S at most (each ask is a line in a
        replica's access log), the answer kept in between."""
        now = time.monotonic()
        if now - self._readiness[0] < READINESS_EVERY_S:
            return self._readiness[1]
        try:
            self.replica_stats(timeout_s=5.0)
            why = None
        except Exception as error:
            why = f"no replica answers: {type(error).__name__}"
        self._readiness = (time.monotonic(), why)
        return why

    def start(self) -> ClusterFront:
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve_http(self.config.host, self.config.metrics_port)
        self._server.start()
        self.health.start()
        self.health.set_loaded(True)
        log.info("cluster front listening on %s:%d", self.config.host, self.port)
        return self

    def wait(self) -> None:
        self._stop.stopped.wait()

    def stop(self, grace: float | None = None) -> None:
        """The single server's graceful stop (``GracefulStop``), done once however many ask."""
        self._stop(grace)
