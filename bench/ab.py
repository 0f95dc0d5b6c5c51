#!/usr/bin/env python3
"""Alternating A/B runs of two Kairos builds on SQLite: is B slower or costlier than A?

Each round starts each build on a fresh SQLite file and runs the same `kairos-bench` load
against it (the load generator from B's directory for both, so only the server differs), the
order swapped every round so slow phases of the machine fall on both. Prints every round,
the medians, and in how many rounds B's CPU per workflow was above A's.

    cargo build --release -p kairos-cli -p kairos-bench     # once per build, binaries copied
    .venv/bin/python bench/ab.py --a /tmp/ab/old --b /tmp/ab/new --rounds 8 \\
        --out bench/results/ab-sqlite.json

`--a`/`--b` are directories holding `kairos` (and, for B, `kairos-bench`).
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from compare import Server, free_port, run_bench


def one_run(bin_dir: Path, bench: Path, scratch: Path, label: str, args: argparse.Namespace) -> dict:
    port = free_port()
    db = scratch / f"{label}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    server = Server(label, [str(bin_dir / "kairos"), "server", "start-dev", "--port", str(port),
                            "--db-filename", str(db), "--log-level", "warn"],
                    port, scratch / f"{label}.log", metrics=label in args.metrics)
    try:
        time.sleep(1)
        report = run_bench(bench, server, args.activities, args.concurrency, args.duration, label,
                           args.pollers)
    finally:
        server.stop()
    return {"wf_per_s": report["workflows_per_s"],
            "cpu_ms_per_wf": report["server"]["cpu_ms_per_workflow"],
            "p50_ms": report["latency_ms"]["p50"], "p99_ms": report["latency_ms"]["p99"],
            "store": report.get("store")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, type=Path)
    ap.add_argument("--b", required=True, type=Path)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--activities", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--pollers", type=int, default=None,
                    help="tuned mode (kairos-bench --pollers N); default: the SDK's settings")
    ap.add_argument("--metrics", default="",
                    help="builds that serve /metrics (e.g. 'b'): their syncs per workflow are recorded")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    bench = args.b / "kairos-bench"
    scratch = Path(tempfile.mkdtemp(prefix="kairos-ab-"))
    runs = {"a": [], "b": []}
    for i in range(args.rounds):
        order = [("a", args.a), ("b", args.b)] if i % 2 == 0 else [("b", args.b), ("a", args.a)]
        for label, bin_dir in order:
            r = one_run(bin_dir, bench, scratch, label, args)
            runs[label].append(r)
            syncs = f", {r['store']['syncs_per_workflow']:.2f} syncs/wf" if r["store"] else ""
            print(f"round {i + 1} {label}: {r['wf_per_s']:.1f} wf/s, {r['cpu_ms_per_wf']:.3f} ms CPU/wf, "
                  f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms{syncs}", flush=True)
    above = sum(b["cpu_ms_per_wf"] > a["cpu_ms_per_wf"] for a, b in zip(runs["a"], runs["b"]))
    summary = {}
    for label in ("a", "b"):
        summary[label] = {
            "wf_per_s": statistics.median(r["wf_per_s"] for r in runs[label]),
            "cpu_ms_per_wf": statistics.median(r["cpu_ms_per_wf"] for r in runs[label]),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs[label]),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs[label]),
        }
    change = summary["b"]["cpu_ms_per_wf"] / summary["a"]["cpu_ms_per_wf"] - 1
    print(f"medians: A {summary['a']['wf_per_s']:.1f} wf/s {summary['a']['cpu_ms_per_wf']:.3f} ms; "
          f"B {summary['b']['wf_per_s']:.1f} wf/s {summary['b']['cpu_ms_per_wf']:.3f} ms; "
          f"p50 {summary['a']['p50_ms']:.1f} vs {summary['b']['p50_ms']:.1f} ms, "
          f"p99 {summary['a']['p99_ms']:.1f} vs {summary['b']['p99_ms']:.1f} ms; "
          f"B's CPU/wf {change:+.1%}, above A's in {above} of {args.rounds} rounds")
    if args.out:
        args.out.write_text(json.dumps({"a": str(args.a), "b": str(args.b), "rounds": runs,
                                        "medians": summary, "b_cpu_above_a": above,
                                        "load": {"activities": args.activities,
                                                 "concurrency": args.concurrency,
                                                 "pollers": args.pollers,
                                                 "duration_s": args.duration}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
