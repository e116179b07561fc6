"""Start-up of `lrp-onnx explain` on the shipped model and an example recording (no --plot).

    python benchmarks/bench_startup.py [--runs 7] [--model M] [--input WAV]

Runs the command once to fill a fresh on-disk explainer cache, then ``--runs`` times with
the cache warm, and prints the median and minimum wall time of a whole process (Python
start-up, imports, cache look-up, session creation, features, one explanation) and its CPU
time (user + system: on a loaded machine, a better guide than wall time). Target: <= 1.0 s
warm. Also prints the cold (compiling) time and where a warm run spends its
import time (``python -X importtime``, top entries).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


CPU: list[float] = []


def run(cmd: list[str], env: dict) -> float:
    """Wall seconds of one process; its CPU seconds (user + system) go to CPU."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--model", default=str(ROOT / "models" / "gender_alexnet.onnx"))
    parser.add_argument("--input", default=str(ROOT / "models" / "examples" / "female_slt_three.wav"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "LRP_ONNX_CACHE": cache}
        cmd = [sys.executable, "-m", "lrp_onnx.cli", "explain", args.model, args.input]
        cold = run(cmd, env)
        warm = [run(cmd, env) for _ in range(args.runs)]
        imports = subprocess.run([sys.executable, "-X", "importtime", *cmd[1:]], env=env, capture_output=True,
                                 text=True).stderr.splitlines()
    rows = []
    for line in imports:
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    print(f"explain start-up, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"  cold (compiles, fills the cache): {cold:.2f} s")
    print(f"  warm: median {statistics.median(warm):.2f} s, min {min(warm):.2f} s over {len(warm)} runs "
          f"(target <= 1.0 s); CPU time (user + system) median {statistics.median(CPU[1:]):.2f} s "
          f"(less sensitive to other load on the machine)")
    print("  largest cumulative imports (ms):")
    for us, name in sorted(rows, reverse=True)[:12]:
        print(f"    {us / 1000:8.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
