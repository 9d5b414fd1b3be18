"""``framecast cluster``: replicas on a local Ray (or a running one), a front on this machine.

    framecast cluster --model DIR --data SHARED_DIR --replicas N [--max-replicas M] [--replica-gpus 1]

Takes every ``serve`` option (each replica runs with them; the front listens on ``--host`` and
``--port`` with them) and the cluster's own. Importing this module is light, as ``serve``'s is:
Ray and the server are imported when the command runs, and a missing ``framecast[cluster]``
extra is said by name.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from framecast.engine.errors import InvalidInput, exit_code
from framecast.server import cli as serve_cli


def add_parser(commands) -> argparse.ArgumentParser:
    """Register ``cluster`` under the ``framecast`` command line's subcommands."""
    parser = commands.add_parser("cluster", help="run replicas on Ray Serve behind one gRPC front (docs/cluster.md)")
    serve_cli.add_options(parser)
    group = parser.add_argument_group("cluster", "replicas on Ray Serve (pip install 'framecast[cluster]')")
    group.add_argument("--replicas", type=int, default=1, metavar="N", help="replicas to start; each loads the model "
                       "(default: 1)")  # fmt: skip
    group.add_argument("--max-replicas", dest="max_replicas", type=int, default=0, metavar="M",
                       help="autoscale between --replicas and M on jobs in flight (default: 0, a fixed count)")
    group.add_argument("--replica-gpus", dest="replica_gpus", type=float, default=None, metavar="G",
                       help="GPUs each replica takes (default: 1 with --device cuda or auto on a machine with CUDA, "
                       "else 0)")  # fmt: skip
    group.add_argument("--replica-cpus", dest="replica_cpus", type=float, default=1.0, metavar="C",
                       help="CPUs each replica takes (default: 1)")  # fmt: skip
    group.add_argument("--ray-address", dest="ray_address", default=None, metavar="ADDRESS",
                       help="join a running Ray cluster ('auto', or host:port) instead of starting a local one")
    parser.set_defaults(run=cmd_cluster)
    return parser


def _replica_gpus(args) -> float:
    if args.replica_gpus is not None:
        return args.replica_gpus
    if args.device.startswith("cuda"):
        return 1.0
    if args.device == "auto":
        import torch

        return 1.0 if torch.cuda.is_available() else 0.0
    return 0.0


@exit_code
def cmd_cluster(args) -> int:
    """Start the replicas and the front, and serve until a signal stops them."""
    serve_cli.require_server("cluster")
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError:
        raise serve_cli.ServeError("cluster needs Ray Serve, which is not installed: pip install 'framecast[cluster]'") from None
    from framecast.server.cluster.launch import ClusterConfig, start_local
    from framecast.server.request_ids import show_request_ids

    show_request_ids()
    try:
        config = serve_cli.server_config(args)
        cluster = ClusterConfig(replicas=args.replicas, max_replicas=args.max_replicas, replica_gpus=_replica_gpus(args),
                                replica_cpus=args.replica_cpus)  # fmt: skip
    except InvalidInput as error:
        option = "--" + error.field.replace("_", "-") if error.field in ClusterConfig.__dataclass_fields__ else \
            serve_cli.option_of(error.field)  # fmt: skip
        raise serve_cli.ServeError(f"{option}: {str(error).removeprefix(error.field + ' ')}") from None
    print(f"framecast cluster: starting {cluster.replicas} replica(s) of {config.engine.model_dir} on data "
          f"{config.data_dir}", flush=True)  # fmt: skip
    try:
        front = start_local(config, cluster, args.ray_address)
    except InvalidInput as error:
        raise serve_cli.ServeError(f"{serve_cli.option_of(error.field)}: {str(error).removeprefix(error.field + ' ')}") from None
    except RuntimeError as error:  # Ray Serve's word that the replicas did not start (a model that does not load)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise serve_cli.ServeError(f"the replicas did not start: {first}; the replicas' log says why") from None
    print(f"framecast cluster ready on {args.host}:{front.port} ({cluster.replicas} replica(s))", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        front.stop()
        from ray import serve

        serve.shutdown()
    print("framecast cluster stopped", file=sys.stderr, flush=True)
    return 0
