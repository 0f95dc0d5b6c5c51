#!/usr/bin/env python3
"""Memory and restart time with many open (sleeping) workflows in Kairos.

Starts `kairos server start-dev` on a fresh SQLite file, fills it with N workflows
that each sleep for a day on a durable timer (kairos-bench --start-only), reads the
server's RSS, stops it, starts it again on the same file and measures the time to
a SERVING health check and the RSS after the restart. Repeats for each N.

usage: bench/open_workflows.py [--counts 10000,100000] [--out bench/results/open_workflows.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import REPO, Server, free_port, rss_mib  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kairos-bin", default=str(REPO / "target/release/kairos"))
    ap.add_argument("--bench-bin", default=str(REPO / "target/release/kairos-bench"))
    ap.add_argument("--counts", default="10000,100000")
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--out", default=str(REPO / "bench/results/open_workflows.json"))
    args = ap.parse_args()

    rows = []
    for n in [int(x) for x in args.counts.split(",")]:
        scratch = Path(tempfile.mkdtemp(prefix="kairos-open-"))
        db = scratch / "kairos.db"
        port = free_port()
        argv = [args.kairos_bin, "server", "start-dev", "--port", str(port), "--db-filename", str(db),
                "--log-level", "warn"]
        server = Server("kairos", argv, port, scratch / "fill.log")
        idle = rss_mib(server.proc.pid)
        began = time.monotonic()
        fill = subprocess.run(
            [args.bench_bin, "--address", server.target, "--activities", "0", "--sleep-secs", "86400",
             "--start-only", "--workflows", str(n), "--concurrency", str(args.concurrency),
             "--server-pid", str(server.proc.pid), "--json", "--quiet"],
            capture_output=True, text=True)
        if fill.returncode != 0:
            raise SystemExit(f"fill failed: {fill.stdout}\n{fill.stderr}")
        report = json.loads(fill.stdout.strip().splitlines()[-1])
        fill_s = time.monotonic() - began
        time.sleep(2)
        after_fill = rss_mib(server.proc.pid)
        server.stop()
        restarted = Server("kairos", argv, port, scratch / "restart.log")
        time.sleep(2)
        row = {
            "open_workflows": report["completed"],
            "errors": report["errors"],
            "fill_s": round(fill_s, 1),
            "rss_idle_empty_mib": round(idle, 1),
            "rss_after_fill_mib": round(after_fill, 1),
            "rss_peak_during_fill_mib": round(report["server"]["rss_peak_mib"], 1),
            "restart_to_serving_ms": round(restarted.cold_start_ms, 1),
            "rss_after_restart_mib": round(rss_mib(restarted.proc.pid), 1),
            "db_mib": round(sum(p.stat().st_size for p in scratch.glob("kairos.db*")) / 2**20, 1),
        }
        restarted.stop()
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
