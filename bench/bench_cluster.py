"""A framecast cluster on Ray Serve: throughput of concurrent short jobs on 1 and 2 replicas, and
the adapter affinity hit rate on a skewed (Zipf) mix of adapters (issue 25).

    python bench/bench_cluster.py            # 24 jobs a throughput run, 60 in the Zipf mix
    python bench/bench_cluster.py --quick    # 8 and 20

Each configuration starts a local Ray, the replicas (the tiny random-weight model, one CPU each)
and a front in this process, as ``framecast cluster`` does, and talks to the front over gRPC
with ``FramecastClient``:

- throughput: ``--jobs`` propagations of the 9-frame 64x64 toy clip (``--steps`` denoising
  steps, no adapter), ``--clients`` at a time, on 1 replica and on 2: jobs per second, wall
  clock from the first request to the last result, and the 2-replica figure over the 1-replica one;
- affinity: ``--adapters`` adapters trained first, then ``--mix`` propagations, each naming an
  adapter drawn from a Zipf distribution (exponent ``--zipf``; the most used first), ``--clients``
  at a time, on 2 replicas whose device keeps ``--slots`` adapters each and whose host cache holds
  none, so an adapter not on a replica's device is read from disk. With affinity (the adapter as
  Ray Serve's multiplexed model id, as framecast routes) and without (Ray Serve's plain choice of
  the less loaded replica): the share of jobs whose adapter was already in the replica's device
  memory, and jobs per second.

Prints a table and appends rows to bench/results/cluster.jsonl.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, print_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "cluster.jsonl"


def start(model_dir: Path, data_dir: Path, replicas: int, **settings):
    import ray

    from framecast.server.cluster.launch import ClusterConfig, start_local
    from framecast.server.config import ServerConfig

    ray.init(num_cpus=max(2, replicas), include_dashboard=False, configure_logging=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TRITON_INTERPRET": "1"}})  # fmt: skip
    config = ServerConfig.build(model_dir=str(model_dir), data_dir=str(data_dir), port=0, max_frames=33,
                                max_pixels=128 * 128, max_queue=256, **settings)  # fmt: skip
    return start_local(config, ClusterConfig(replicas=replicas))


def stop(front) -> None:
    import ray
    from ray import serve

    front.stop(grace=5)
    serve.shutdown()
    ray.shutdown()


def upload_scene(client):
    from framecast.common.media import encode_png, encode_video, mask_to_frames
    from framecast.engine.toy.world import SceneConfig, make_scene

    scene = make_scene(3, SceneConfig(frames=9, height=64, width=64, sprites=1, edit="recolor"))
    source = client.upload(encode_video(scene.source, 8, lossless=True), filename="source.mp4")
    mask = client.upload(encode_video(mask_to_frames(scene.edit_mask), 8, lossless=True), filename="mask.mp4")
    edited = client.upload(encode_png(scene.edited_first_frame), filename="edited.png")
    return source, mask, edited


def run_jobs(client, inputs, adapters: list[str], clients: int, steps: int) -> tuple[float, list[str]]:
    """Propagate once per entry of ``adapters`` ('' = none), ``clients`` at a time; (seconds, job ids)."""
    source, mask, edited = inputs
    pending = list(enumerate(adapters))
    job_ids: list[str] = [""] * len(adapters)
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not pending:
                    return
                index, adapter = pending.pop(0)
            events = list(client.propagate(adapter, source, mask, edited_first_frame_id=edited, prompt="p", steps=steps))
            assert events[-1].HasField("result"), events[-1]
            job_ids[index] = events[0].job_id

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, job_ids


def throughput(model_dir: Path, replicas: int, args) -> dict:
    from framecast.client import FramecastClient

    with tempfile.TemporaryDirectory() as data:
        front = start(model_dir, Path(data), replicas)
        try:
            with FramecastClient(f"127.0.0.1:{front.port}", timeout=600) as client:
                inputs = upload_scene(client)
                run_jobs(client, inputs, [""] * replicas * 2, args.clients, args.steps)  # warm every replica
                seconds, _ = run_jobs(client, inputs, [""] * args.jobs, args.clients, args.steps)
        finally:
            stop(front)
    return {"bench": "throughput", "replicas": replicas, "jobs": args.jobs, "clients": args.clients,
            "steps": args.steps, "seconds": round(seconds, 2), "jobs_per_s": round(args.jobs / seconds, 3)}  # fmt: skip


def zipf_mix(names: list[str], count: int, exponent: float, seed: int = 0) -> list[str]:
    weights = [1.0 / (rank + 1) ** exponent for rank in range(len(names))]
    return random.Random(seed).choices(names, weights=weights, k=count)


def affinity(model_dir: Path, args) -> list[dict]:
    from framecast.client import FramecastClient

    rows = []
    names = [f"zipf-{i}" for i in range(args.adapters)]
    mix = zipf_mix(names, args.mix, args.zipf)
    with tempfile.TemporaryDirectory() as data:
        front = start(model_dir, Path(data), 2, adapter_slots=args.slots, adapter_host_cache_gb=0.0)
        try:
            with FramecastClient(f"127.0.0.1:{front.port}", timeout=600) as client:
                inputs = upload_scene(client)
                source, mask, _ = inputs
                for name in names:
                    list(client.train(name, source, mask, prompt="p", steps=1, rank=2))
                for routed in (True, False):
                    front.service.affinity = routed
                    seconds, job_ids = run_jobs(client, inputs, mix, args.clients, args.steps)
                    placements = [front.service.placements[job_id] for job_id in job_ids]
                    hits = sum(1 for p in placements if p["hit"] == "device")
                    replicas_used = len({p["replica"] for p in placements})
                    rows.append({"bench": "affinity", "replicas": 2, "routing": "adapter" if routed else "plain",
                                 "adapters": args.adapters, "zipf": args.zipf, "slots": args.slots, "jobs": args.mix,
                                 "clients": args.clients, "steps": args.steps, "hit_rate": round(hits / len(job_ids), 3),
                                 "replicas_used": replicas_used, "seconds": round(seconds, 2),
                                 "jobs_per_s": round(args.mix / seconds, 3)})  # fmt: skip
        finally:
            stop(front)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer jobs (8 and 20)")
    parser.add_argument("--jobs", type=int, default=24, help="propagations a throughput run")
    parser.add_argument("--mix", type=int, default=60, help="propagations in the Zipf mix")
    parser.add_argument("--clients", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps a propagation")
    parser.add_argument("--adapters", type=int, default=8, help="adapters in the Zipf mix")
    parser.add_argument("--zipf", type=float, default=1.1, help="the Zipf exponent")
    parser.add_argument("--slots", type=int, default=2, help="adapters a replica's device keeps (--adapter-slots)")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.mix = 8, 20

    from framecast.engine.toy.architectures import make_tiny_model

    with tempfile.TemporaryDirectory() as models:
        model_dir = make_tiny_model(Path(models) / "wan-tiny")
        rows = [throughput(model_dir, replicas, args) for replicas in (1, 2)]
        rows[1]["speedup"] = round(rows[1]["jobs_per_s"] / rows[0]["jobs_per_s"], 2)
        rows += affinity(model_dir, args)
    print_table(rows, ["bench", "replicas", "routing", "jobs", "clients", "seconds", "jobs_per_s", "speedup", "hit_rate",
                       "replicas_used"])  # fmt: skip
    print(f"{os.cpu_count()} CPU cores on this machine; each replica takes one")
    count = append_rows(RESULTS, rows, device="cpu")
    print(f"appended {count} rows to {RESULTS}")


if __name__ == "__main__":
    main()
