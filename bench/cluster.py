#!/usr/bin/env python3
"""Cluster figures: kairos-bench against 1, 2 and 3 `kairos server start` nodes on one
PostgreSQL, and the time from a node's SIGKILL to its shards being served again.

Throughput: for each cluster size, three kairos-bench processes (each its own SDK worker with
the default settings, its own task queue, a third of the concurrency) run at once, bench i
connected to node i mod N: the same load generator whatever the size, so the sizes compare.
Throughput is the sum of the three; p50/p99 are the worst of the three; CPU per workflow counts
every node process and every PostgreSQL process over the run. Each size runs on a schema of
its own, sizes alternating for --rounds rounds.

Kill to serving: a three-node cluster; --kills times, one node (in turn) is killed with SIGKILL
and the time until the survivors hold every shard (their kairos_shards_held gauges sum to the
shard count) is measured; the node is then started again and the cluster left to settle.

usage: bench/cluster.py [--postgres URL] [--seconds 20] [--rounds 2] [--kills 10]
                        [--concurrency 200] [--activities 3] [--out bench/results/cluster.json]
  --kairos-bin / --bench-bin default to target/release/{kairos,kairos-bench}
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).parent))
from compare import cpu_s, free_port, health_check, postgres_cpu_s  # noqa: E402

SHARDS = 16
BENCHES = 3


class Node:
    """One `kairos server start` process, restartable on the same ports and name."""

    def __init__(self, kairos: str, url: str, name: str, logs: Path) -> None:
        self.name = name
        self.port, self.internal, self.metrics = free_port(), free_port(), free_port()
        self.argv = [
            kairos, "server", "start", "--db-url", url, "--port", str(self.port),
            "--internal-port", str(self.internal), "--node-name", name,
            "--num-history-shards", str(SHARDS), "--metrics-port", str(self.metrics),
            "--log-level", "warn",
        ]
        self.logs = logs
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        log = open(self.logs / f"{self.name}.log", "a")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not health_check(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {self.name} did not start; see {self.logs}")
            time.sleep(0.005)

    def gauge(self, name: str) -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics",
                                        timeout=1) as page:
                for line in page.read().decode().splitlines():
                    if line.startswith(name + " "):
                        return int(float(line.split()[1]))
        except OSError:
            return None
        return None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def settled(nodes: List[Node], within: float = 30) -> float:
    """Waits until every node sees them all and they hold every shard; returns the seconds."""
    began = time.monotonic()
    while True:
        members = [n.gauge("kairos_cluster_members") for n in nodes]
        held = [n.gauge("kairos_shards_held") or 0 for n in nodes]
        if all(m == len(nodes) for m in members) and sum(held) == SHARDS:
            return time.monotonic() - began
        if time.monotonic() - began > within:
            raise RuntimeError(f"cluster did not settle: members {members}, shards {held}")
        time.sleep(0.01)


def schema_url(base: str, tag: str) -> str:
    schema = f"kairos_bench_{tag}_{uuid.uuid4().hex[:8]}"
    return f"{base}{'&' if '?' in base else '?'}schema={schema}"


def throughput(args: argparse.Namespace, size: int, logs: Path) -> Dict[str, Any]:
    url = schema_url(args.postgres, f"n{size}")
    nodes = [Node(args.kairos_bin, url, f"n{i}", logs) for i in range(size)]
    try:
        settled(nodes)
        cpu_before = sum(cpu_s(n.proc.pid) for n in nodes)
        pg_before = postgres_cpu_s()
        began = time.monotonic()
        benches = []
        for i in range(BENCHES):
            node = nodes[i % size]
            argv = [
                args.bench_bin, "--address", f"127.0.0.1:{node.port}",
                "--activities", str(args.activities),
                "--concurrency", str(args.concurrency // BENCHES),
                "--workflows", "10000000", "--duration", str(args.seconds),
                "--server-pid", str(node.proc.pid), "--json", "--quiet",
                "--label", f"N{size}_{i}",
            ]
            benches.append(subprocess.Popen(argv, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True))
        reports = []
        for b in benches:
            out, err = b.communicate(timeout=args.seconds + 600)
            if b.returncode != 0:
                raise RuntimeError(f"kairos-bench failed:\n{out}\n{err}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        elapsed = time.monotonic() - began
        nodes_cpu = sum(cpu_s(n.proc.pid) for n in nodes) - cpu_before
        pg_cpu = postgres_cpu_s() - pg_before
        completed = sum(r["completed"] for r in reports)
        return {
            "nodes": size,
            "completed": completed,
            "errors": sum(r["errors"] for r in reports),
            "workflows_per_s": sum(r["workflows_per_s"] for r in reports),
            "p50_ms": max(r["latency_ms"]["p50"] for r in reports),
            "p99_ms": max(r["latency_ms"]["p99"] for r in reports),
            "kairos_cpu_ms_per_workflow": nodes_cpu * 1000 / max(completed, 1),
            "postgres_cpu_ms_per_workflow": pg_cpu * 1000 / max(completed, 1),
            "elapsed_s": elapsed,
        }
    finally:
        for n in nodes:
            n.stop()


def kills(args: argparse.Namespace, logs: Path) -> List[float]:
    url = schema_url(args.postgres, "kill")
    nodes = [Node(args.kairos_bin, url, f"k{i}", logs) for i in range(3)]
    times = []
    try:
        settled(nodes)
        for k in range(args.kills):
            victim = nodes[k % len(nodes)]
            survivors = [n for n in nodes if n is not victim]
            victim.kill()
            began = time.monotonic()
            while sum(n.gauge("kairos_shards_held") or 0 for n in survivors) != SHARDS:
                if time.monotonic() - began > 60:
                    raise RuntimeError("the survivors did not take every shard in 60 s")
                time.sleep(0.005)
            times.append(time.monotonic() - began)
            print(f"kill {k + 1}: {victim.name}'s shards served again after "
                  f"{times[-1] * 1000:.0f} ms", flush=True)
            victim.start()
            settled(nodes)
    finally:
        for n in nodes:
            n.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/test")
    parser.add_argument("--kairos-bin", default="target/release/kairos")
    parser.add_argument("--bench-bin", default="target/release/kairos-bench")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--activities", type=int, default=3)
    parser.add_argument("--out", default="bench/results/cluster.json")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="kairos-cluster-"))
    runs = []
    for r in range(args.rounds):
        for size in (1, 2, 3):
            run = throughput(args, size, logs)
            run["round"] = r
            runs.append(run)
            print(f"round {r} nodes {size}: {run['workflows_per_s']:.1f} wf/s, "
                  f"p50 {run['p50_ms']:.0f} ms, p99 {run['p99_ms']:.0f} ms, CPU/wf "
                  f"{run['kairos_cpu_ms_per_workflow']:.2f} ms + PostgreSQL "
                  f"{run['postgres_cpu_ms_per_workflow']:.2f} ms, errors {run['errors']}",
                  flush=True)
    kill_times = kills(args, logs) if args.kills else []
    result = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "args": vars(args), "runs": runs, "kill_to_serving_s": kill_times}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("\n| nodes | workflows/s | vs 1 node | p50 / p99 ms | Kairos CPU/wf | PostgreSQL CPU/wf |")
    print("|---:|---:|---:|---:|---:|---:|")
    one = statistics.median(r["workflows_per_s"] for r in runs if r["nodes"] == 1)
    for size in (1, 2, 3):
        mine = [r for r in runs if r["nodes"] == size]
        wf = statistics.median(r["workflows_per_s"] for r in mine)
        print(f"| {size} | {wf:.1f} | {wf / one:.2f} | "
              f"{statistics.median(r['p50_ms'] for r in mine):.0f} / "
              f"{statistics.median(r['p99_ms'] for r in mine):.0f} | "
              f"{statistics.median(r['kairos_cpu_ms_per_workflow'] for r in mine):.2f} ms | "
              f"{statistics.median(r['postgres_cpu_ms_per_workflow'] for r in mine):.2f} ms |")
    if kill_times:
        ms = sorted(t * 1000 for t in kill_times)
        print(f"\nSIGKILL to shards served again over {len(ms)} kills: median "
              f"{statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms")
    print(f"logs: {logs}; raw results: {args.out}")


if __name__ == "__main__":
    main()
