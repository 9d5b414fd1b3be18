"""Putting a cluster on Ray Serve: the replicas' deployment, a front, and both as one application.

- ``replica_deployment``: the ``Replica`` deployment with its placement (one GPU a replica, or
  CPUs), its replica count or autoscaling (Ray Serve's, on ongoing requests: a job holds one for
  as long as it runs, so ``target_ongoing_requests`` 1 asks for a replica per running job), and
  health checks;
- ``start_local``: what ``framecast cluster`` runs: a local Ray, Ray Serve without its HTTP proxy,
  the replicas, and a front in this process;
- ``build_app``: the application a Ray Serve config file names (``import_path:
  framecast.server.cluster.launch:build_app``), the replicas and a ``Front`` deployment that
  serves the gRPC port from inside the cluster (docs/cluster/serve-config.yaml, and a KubeRay
  RayService in docs/cluster/rayservice.yaml).
"""

from __future__ import annotations

import dataclasses

import logging
import os
from dataclasses import dataclass

from ray import serve

from framecast.server.cluster.front import ClusterFront
from framecast.server.cluster.replica import Replica
from framecast.server.config import ServerConfig

log = logging.getLogger(__name__)

APP_NAME = "framecast"
REPLICA_DEPLOYMENT = "FramecastReplica"


@dataclass(frozen=True)
class ClusterConfig:
    replicas: int = 1  # replicas at start (min_replicas when autoscaling)
    max_replicas: int = 0  # > replicas: autoscale between the two on ongoing requests; 0 = a fixed count
    replica_gpus: float = 0.0  # GPUs a replica takes (1 on GPU nodes); 0 = CPU only
    replica_cpus: float = 1.0  # CPUs a replica takes
    target_ongoing_requests: float = 1.0  # autoscaling's target: jobs (and calls) in flight per replica
    health_check_period_s: float = 2.0

    def __post_init__(self):
        from framecast.engine.errors import InvalidInput

        if self.replicas < 1:
            raise InvalidInput("replicas", self.replicas, "must be >= 1")
        if self.max_replicas and self.max_replicas < self.replicas:
            raise InvalidInput("max_replicas", self.max_replicas, f"must be >= --replicas ({self.replicas}), or 0 "
                               "for a fixed number of replicas")  # fmt: skip
        if self.replica_gpus < 0 or self.replica_cpus < 0:
            raise InvalidInput("replica_gpus" if self.replica_gpus < 0 else "replica_cpus",
                               min(self.replica_gpus, self.replica_cpus), "must be >= 0")  # fmt: skip


def replica_options(config: ServerConfig, cluster: ClusterConfig) -> dict:
    """The replicas' Ray Serve deployment options for ``cluster``."""
    options = {
        "name": REPLICA_DEPLOYMENT,
        "ray_actor_options": {"num_cpus": cluster.replica_cpus, "num_gpus": cluster.replica_gpus},
        # A job's stream is a request for as long as the job runs: a replica takes its queue's worth.
        "max_ongoing_requests": config.max_queue + 1 + config.max_workers,
        "health_check_period_s": cluster.health_check_period_s,
        "health_check_timeout_s": 30.0,
        "graceful_shutdown_timeout_s": config.grace_s,
    }
    if cluster.max_replicas > cluster.replicas:
        options["autoscaling_config"] = {"min_replicas": cluster.replicas, "max_replicas": cluster.max_replicas,
                                         "target_ongoing_requests": cluster.target_ongoing_requests}  # fmt: skip
    else:
        options["num_replicas"] = cluster.replicas
    return options


def replica_deployment(config: ServerConfig, cluster: ClusterConfig):
    """The replicas' deployment, bound to ``config`` (the serve settings every replica runs with; the
    front alone traces, so the replicas' copy has no OpenTelemetry settings)."""
    untraced = dataclasses.replace(config, otel_endpoint="", otel_exporter=None)
    return serve.deployment(Replica).options(**replica_options(config, cluster)).bind(untraced)


def start_local(config: ServerConfig, cluster: ClusterConfig, ray_address: str | None = None) -> ClusterFront:
    """Start (or join, with ``ray_address``) Ray, run the replicas on Ray Serve and a front on
    ``config``'s port in this process; returns the started front once every replica has loaded."""
    import ray

    if not ray.is_initialized():
        if ray_address:
            ray.init(address=ray_address)
        else:
            cpus = max(os.cpu_count() or 1, int(cluster.replicas * cluster.replica_cpus + 0.999))
            ray.init(num_cpus=cpus, include_dashboard=False, configure_logging=False)
    serve.start(proxy_location="Disabled")  # the front is framecast's own gRPC server; no HTTP proxy
    handle = serve.run(replica_deployment(config, cluster), name=APP_NAME, route_prefix=None)
    return ClusterFront(config, handle).start()


class Front:
    """A front as a Ray Serve deployment (``build_app``): its gRPC server listens on its node (the
    head) at ``config.port``."""

    def __init__(self, replicas, config: ServerConfig):
        self.front = ClusterFront(config, replicas, log_request_ids=False).start()

    def __del__(self):
        front = getattr(self, "front", None)
        if front is not None:
            front.stop(grace=5)


def build_app(args: dict):
    """A Ray Serve application builder: ``args`` are the serve settings (``model_dir``,
    ``data_dir``, ``host``, ``port``... as ``ServerConfig.build`` takes them) plus ``replicas``,
    ``max_replicas``, ``replica_gpus``, ``replica_cpus`` and ``target_ongoing_requests``."""
    settings = dict(args)
    cluster = ClusterConfig(**{key: settings.pop(key) for key in list(settings) if key in ClusterConfig.__dataclass_fields__})
    config = ServerConfig.build(**settings)
    # On the head node, where a Kubernetes Service (docs/cluster/rayservice.yaml) sends clients.
    head = {"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}}
    front = serve.deployment(Front).options(name="FramecastFront", num_replicas=1, ray_actor_options=head)
    return front.bind(replica_deployment(config, cluster), config)
