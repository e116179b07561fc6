"""Load test of ``lrp-onnx serve``: concurrent clients sending explain requests.

    python benchmarks/load_test.py                       # the shipped model and example WAVs
    python benchmarks/load_test.py MODEL.onnx --clients 8 --requests 500 --json result.json
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --model gender_alexnet --token T

Without ``--url`` it starts ``lrp-onnx serve MODEL`` on a free loopback port and stops it
afterwards. It sends ``--warmup`` requests, reads the server's resident memory, sends
``--requests`` explain requests (recordings, round-robin) from ``--clients`` threads, reads
the memory again, and reports throughput, p50/p99 latency, the count of 503s (deliberate
overload answers) and of other errors, and the memory before and after (``--rounds N``
repeats the run to show whether memory keeps growing). Bounded: a fixed request count per
round and ``--max-seconds`` per round; loopback only.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Target:
    """The server under test: started here (``proc``) or given by ``--url``."""

    def __init__(self, args):
        import httpx

        self.args, self.proc = args, None
        self.headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
        if args.url:
            self.url = args.url.rstrip("/")
        else:
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            cmd = [sys.executable, "-m", "lrp_onnx.cli", "serve", str(args.model), "--port", str(port),
                   "--max-batch", str(args.max_batch), "--queue-size", str(args.queue_size)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            env = {**os.environ, **({"LRP_ONNX_TOKEN": args.token} if args.token else {})}
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit("server did not come up within 180 s")
            time.sleep(0.3)
        models = httpx.get(f"{self.url}/v1/models", headers=self.headers, timeout=10).json()["models"]
        self.model = args.name or models[0]["name"]

    def rss(self) -> int | None:
        if self.proc is not None:
            return rss_of(self.proc.pid)
        import httpx

        return httpx.get(f"{self.url}/v1/stats", headers=self.headers, timeout=10).json().get("rss_bytes")

    def stats(self) -> dict:
        import httpx

        return httpx.get(f"{self.url}/v1/stats", headers=self.headers, timeout=10).json()

    def close(self):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def run_load(target: Target, bodies: list[bytes], total: int, clients: int, relevance: str, max_seconds: float):
    """``total`` explain requests from ``clients`` threads; returns (latencies s, statuses, wall s)."""
    import httpx

    url = f"{target.url}/v1/models/{target.model}/explain?relevance={relevance}"
    counter = iter(range(total))
    lock = threading.Lock()
    latencies, statuses = [], []
    deadline = time.monotonic() + max_seconds

    def client():
        with httpx.Client(headers={**target.headers, "content-type": "audio/wav"}, timeout=120) as http:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                try:
                    r = http.post(url, content=bodies[i % len(bodies)])
                    if r.status_code == 200:
                        r.json()  # a client reads what it asked for
                    status = r.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    statuses.append(status)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.array(latencies), statuses, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(ROOT / "models" / "gender_alexnet.onnx"))
    parser.add_argument("--url", help="test a running server instead of starting one")
    parser.add_argument("--name", help="model name on the server (default: its first)")
    parser.add_argument("--token", default=None)
    parser.add_argument("--inputs", nargs="*", help="recordings to send (default: models/examples/*.wav)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the measured run; figures are the last round's, memory after each")
    parser.add_argument("--relevance", choices=("json", "npy", "none"), default="json")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--queue-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=1200)
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    inputs = [Path(p) for p in args.inputs] if args.inputs else sorted((ROOT / "models" / "examples").glob("*.wav"))
    if not inputs:
        raise SystemExit("no recordings: pass --inputs")
    if not args.url and not Path(args.model).is_file():
        raise SystemExit(f"{args.model}: no such model")
    bodies = [p.read_bytes() for p in inputs]

    target = Target(args)
    try:
        run_load(target, bodies, args.warmup, args.clients, args.relevance, args.max_seconds)
        rss_before = target.rss()
        rss_rounds = []
        for _ in range(args.rounds):  # later rounds show whether memory keeps growing
            latencies, statuses, wall = run_load(target, bodies, args.requests, args.clients, args.relevance,
                                                 args.max_seconds)
            time.sleep(1.0)
            rss_rounds.append(target.rss())
        rss_after = rss_rounds[-1]
        stats = target.stats()
    finally:
        target.close()

    ok = sum(1 for s in statuses if s == 200)
    busy = sum(1 for s in statuses if s == 503)
    errors = len(statuses) - ok - busy
    result = {
        "model": target.model, "url": target.url, "clients": args.clients, "requests": len(statuses),
        "relevance": args.relevance, "ok": ok, "busy_503": busy, "errors": errors,
        "error_kinds": sorted({str(s) for s in statuses if s not in (200, 503)}),
        "seconds": round(wall, 2), "throughput_rps": round(len(statuses) / wall, 2),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1) if len(latencies) else None,
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1) if len(latencies) else None,
        "mean_batch": round(stats.get("mean_batch", 0.0), 2), "largest_batch": stats.get("largest_batch"),
        "rss_before_mb": round(rss_before / 2**20, 1) if rss_before else None,
        "rss_after_mb": round(rss_after / 2**20, 1) if rss_after else None,
        "rss_after_each_round_mb": [round(r / 2**20, 1) if r else None for r in rss_rounds],
    }
    print(f"{result['requests']} explain requests from {args.clients} clients to {target.model} "
          f"in {result['seconds']} s: {result['throughput_rps']} requests/s; latency p50 {result['p50_ms']} ms, "
          f"p99 {result['p99_ms']} ms; {ok} ok, {busy} busy (503), {errors} errors; batches: mean "
          f"{result['mean_batch']}, largest {result['largest_batch']}; server RSS {result['rss_before_mb']} MB "
          f"before, {result['rss_after_mb']} MB after"
          + (f" (after each round: {result['rss_after_each_round_mb']})" if args.rounds > 1 else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
