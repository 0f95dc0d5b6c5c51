#!/usr/bin/env python3
"""Plot throughput and p99 latency against concurrency for both servers, from the JSON that
bench/compare.py writes.

usage: bench/plot.py [bench/results/compare.json] [docs/bench-scaling.png]
(needs matplotlib: pip install -r bench/requirements.txt)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "bench/results/compare.json"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "docs/bench-scaling.png"
    data = json.loads(src.read_text())
    # The SDK's default worker settings only (tuned runs carry a `_P<pollers>` suffix).
    runs = [r for r in data["runs"] if r["label"].startswith("K3_C") and "_P" not in r["label"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, style in (("kairos", "o-"), ("reference", "s--")):
        # One point per concurrency (the headline C=200 run and the sweep's may both exist).
        by_c = {r["concurrency"]: r for r in runs if r["server_name"] == name}
        pts = sorted(by_c.items(), key=lambda kv: kv[0])
        if not pts:
            continue
        xs = [c for c, _ in pts]
        ax1.plot(xs, [r["workflows_per_s"] for _, r in pts], style, label=name)
        ax2.plot(xs, [r["latency_ms"]["p99"] for _, r in pts], style, label=name)
    for ax, title, unit in ((ax1, "throughput", "workflows/s"), (ax2, "p99 start-to-result", "ms")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("concurrency (workflows in flight)")
        ax.set_ylabel(unit)
        ax.set_title(f"{title}, 3 activities per workflow")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"Kairos (SQLite file, synchronous=FULL) vs {data['reference_version'].splitlines()[0]} "
                 "(in-memory)", fontsize=9)
    fig.tight_layout()
    dst.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dst, dpi=110)
    print(dst)


if __name__ == "__main__":
    main()
