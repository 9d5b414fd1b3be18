"""The server on a network: unary latency and throughput with and without TLS and tokens, and
health and GetServerInfo while hundreds of streams are open (issue 22).

    python3 bench/bench_server.py            # 32 clients x 300 calls per config; 256 WatchJob streams
    python3 bench/bench_server.py --quick    # 32 x 30 calls; 64 streams

Each configuration starts ``framecast serve`` (the built-in model) in a process of its own:

- unary: 32 clients (4 processes of 8 threads, each client its own connection) call ListJobs
  (a unary RPC that does little, so the transport's cost shows) ``--calls`` times each, in four
  configurations: plaintext, TLS, tokens, TLS and tokens. p50/p99 latency, calls per second,
  and each as a ratio to plaintext;
- streams: ``--streams`` WatchJob streams (in a process of their own) follow a training of the
  toy model that reports every step (about 20 a second here), or a job queued behind it (no
  events), while one client probes health's readiness and GetServerInfo every 10 ms: p50/p99.

The server's peak resident memory (VmHWM) is read per configuration. Prints a table and appends
rows to bench/results/server.jsonl.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, append_rows, print_table  # noqa: E402

sys.path.insert(0, str(REPO / "tests" / "server"))
from certs import FULL_TOKEN, make_certificates, write_tokens  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "server.jsonl"
CONFIGS = ("plain", "tls", "tokens", "tls+tokens")
UNARY_COLUMNS = ["config", "clients", "calls", "p50_ms", "p99_ms", "calls_per_s", "p50_ratio", "p99_ratio",
                 "throughput_ratio", "rss_peak_mb"]  # fmt: skip
STREAM_COLUMNS = ["config", "streams", "health_p50_ms", "health_p99_ms", "info_p50_ms", "info_p99_ms", "events_per_s",
                  "rss_peak_mb"]  # fmt: skip


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))


def quantiles(latencies_ms: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return statistics.median(latencies_ms), cuts[98]


def client_options(config: str, certificates) -> dict:
    options = {}
    if "tls" in config:
        options["tls_ca"] = str(certificates.ca)
    if "tokens" in config:
        options["token"] = FULL_TOKEN
    return options


def serve(config: str, folder: Path, port: int, certificates, tokens: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "framecast.server", "--data", str(folder / f"data-{config}"), "--port", str(port),
               "--log-level", "warning"]  # fmt: skip
    if "tls" in config:
        command += ["--tls-cert", str(certificates.server_cert), "--tls-key", str(certificates.server_key)]
    if "tokens" in config:
        command += ["--auth-tokens", str(tokens)]
    return subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)


def _address(port: int, config: str) -> str:
    return f"{'localhost' if 'tls' in config else '127.0.0.1'}:{port}"  # the certificate names localhost


def _unary_worker(address: str, options: dict, threads: int, calls: int, ready, go, out) -> None:
    """``threads`` clients, each its own connection, calling ListJobs ``calls`` times once ``go`` is set."""
    from framecast.client import FramecastClient

    connected = threading.Barrier(threads + 1)

    def one(results: list, span: list) -> None:
        with FramecastClient(address, timeout=30, **options) as client:
            client.list_jobs(limit=1)  # connected (and the TLS handshake done) before the clock starts
            connected.wait()
            go.wait()
            span.append(time.time())
            for _ in range(calls):
                begin = time.perf_counter()
                client.list_jobs(limit=1)
                results.append((time.perf_counter() - begin) * 1e3)
            span.append(time.time())

    per_thread = [([], []) for _ in range(threads)]
    workers = [threading.Thread(target=one, args=pair) for pair in per_thread]
    for worker in workers:
        worker.start()
    connected.wait()
    ready.release()
    for worker in workers:
        worker.join()
    spans = [span for _, span in per_thread]
    out.put((sum((results for results, _ in per_thread), []), min(s[0] for s in spans), max(s[1] for s in spans)))


def measure_unary(address: str, options: dict, clients: int, calls: int, processes: int = 4) -> dict:
    """32 clients in 4 processes (one process's threads would share one interpreter lock)."""
    context = mp.get_context("spawn")
    out, ready, go = context.Queue(), context.Semaphore(0), context.Event()
    spawned = [context.Process(target=_unary_worker, args=(address, options, clients // processes, calls, ready, go, out))
               for _ in range(processes)]  # fmt: skip
    for process in spawned:
        process.start()
    for _ in spawned:  # every client connected before any call is timed
        assert ready.acquire(timeout=600), "a client process did not connect"
    go.set()
    results = [out.get(timeout=1800) for _ in spawned]
    for process in spawned:
        process.join(60)
    latencies = sum((r[0] for r in results), [])
    wall = max(r[2] for r in results) - min(r[1] for r in results)
    p50, p99 = quantiles(latencies)
    return {"clients": clients, "calls": len(latencies), "p50_ms": p50, "p99_ms": p99, "calls_per_s": len(latencies) / wall}


def _watchers(address: str, options: dict, job_id: str, count: int, ready, stop, events) -> None:
    """``count`` WatchJob streams on ``job_id``, each drained by a thread of its own, until ``stop``."""
    from framecast.client import FramecastClient

    client = FramecastClient(address, timeout=3600, **options)
    received = [0] * count

    def drain(index: int, stream) -> None:
        try:
            for _ in stream:
                received[index] += 1
        except Exception:  # cancelled at the end
            pass

    streams = []
    for index in range(count):
        stream = client.watch_job(job_id)
        next(stream)
        streams.append(stream)
        threading.Thread(target=drain, args=(index, stream), daemon=True).start()
    ready.set()
    began = time.monotonic()
    stop.wait()
    events.value = sum(received) / max(time.monotonic() - began, 1e-9)
    client.close()


def measure_streams(address: str, options: dict, count: int, probes: int, follow_running: bool) -> dict:
    from framecast.client import FramecastClient
    from framecast.engine.toy.world import SceneConfig, make_scene

    with FramecastClient(address, timeout=60, **options) as client:
        scene = make_scene(3, SceneConfig(frames=9, height=64, width=64, sprites=1))
        source, mask = client.upload_array(scene.source), client.upload_array(scene.edit_mask)
        training = client.train("bench-long", source, mask, prompt="a sprite", steps=10000, rank=2)
        job_id = next(training).job_id
        if not follow_running:  # a job queued behind the training: its watchers get no events
            job_id = next(client.train("bench-queued", source, mask, prompt="a sprite", steps=1, rank=2)).job_id
        context = mp.get_context("spawn")
        ready, stop, events = context.Event(), context.Event(), context.Value("d", 0.0)
        watchers = context.Process(target=_watchers, args=(address, options, job_id, count, ready, stop, events))
        watchers.start()
        assert ready.wait(600), "the watchers did not open their streams"
        time.sleep(2.0)
        probes_of = {
            "health": lambda: client.health("readiness", timeout=30),
            "info": lambda: client.server_info(timeout=30),
        }
        row = {"streams": count}
        for name, probe in probes_of.items():
            for _ in range(5):
                probe()
            latencies = []
            for _ in range(probes):
                begin = time.perf_counter()
                probe()
                latencies.append((time.perf_counter() - begin) * 1e3)
                time.sleep(0.01)
            row[f"{name}_p50_ms"], row[f"{name}_p99_ms"] = quantiles(latencies)
        row["open_streams"] = client.server_info().open_streams
        stop.set()
        watchers.join(120)
        row["events_per_s"] = events.value
        client.cancel_job(job_id)
        training.close()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 calls a client, 64 streams, 100 probes")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--calls", type=int, default=None, help="calls per client (default: 300; --quick 30)")
    parser.add_argument("--streams", type=int, default=None, help="open WatchJob streams (default: 256; --quick 64)")
    parser.add_argument("--probes", type=int, default=None, help="health and GetServerInfo probes (default: 300)")
    parser.add_argument("--port", type=int, default=50131)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    calls = args.calls or (30 if args.quick else 300)
    streams = args.streams or (64 if args.quick else 256)
    probes = args.probes or (100 if args.quick else 300)
    from framecast.client import FramecastClient

    rows = []
    with tempfile.TemporaryDirectory(prefix="framecast-server-bench-") as tmp:
        folder = Path(tmp)
        certificates = make_certificates(folder / "certificates")
        tokens = write_tokens(folder / "tokens", FULL_TOKEN)
        plans = [(config, "unary") for config in CONFIGS] + [("plain", "streams-running"), ("plain", "streams-queued"),
                                                              ("tls+tokens", "streams-running")]  # fmt: skip
        for index, (config, kind) in enumerate(plans):
            port = args.port + index
            server = serve(config, folder, port, certificates, tokens)
            address, options = _address(port, config), client_options(config, certificates)
            try:
                with FramecastClient(address, timeout=30, **options) as client:
                    client.wait_ready(300)
                if kind == "unary":
                    row = {"config": f"unary/{config}", **measure_unary(address, options, args.clients, calls)}
                else:
                    row = {"config": f"{kind}/{config}",
                           **measure_streams(address, options, streams, probes, kind == "streams-running")}  # fmt: skip
                row["rss_peak_mb"] = peak_rss_mb(server.pid)
            finally:
                server.terminate()
                server.wait(60)
            rows.append(row)
            print(f"{row['config']}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                   for k, v in row.items() if k != "config"), flush=True)  # fmt: skip
    plain = next(r for r in rows if r["config"] == "unary/plain")
    for row in rows:
        if row["config"].startswith("unary/"):
            row["p50_ratio"] = row["p50_ms"] / plain["p50_ms"]
            row["p99_ratio"] = row["p99_ms"] / plain["p99_ms"]
            row["throughput_ratio"] = row["calls_per_s"] / plain["calls_per_s"]
        row.update(bench="server", quick=args.quick, load_average=os.getloadavg()[0])
    print()
    print_table([r for r in rows if r["config"].startswith("unary/")], UNARY_COLUMNS)
    print()
    print_table([r for r in rows if r["config"].startswith("streams")], STREAM_COLUMNS)
    count = append_rows(args.results, rows, device="cpu")
    print(f"\n{count} rows appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
