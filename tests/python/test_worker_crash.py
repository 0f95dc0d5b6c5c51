"""A worker process SIGKILLed in the middle of an activity.

The activity runs in a separate worker process (activity_worker.py). The test
waits until its first attempt is running, kills that process with SIGKILL,
starts a second worker process, and expects the server to notice the missing
heartbeats (heartbeat timeout), retry the activity on the new worker and let the
workflow finish.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import List

import pytest

from temporalio import workflow
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

HERE = os.path.dirname(os.path.abspath(__file__))
DEADLINE_S = 30.0


@workflow.defn
class CookOrder:
    @workflow.run
    async def run(self, order: str) -> str:
        return await workflow.execute_activity(
            "cook",
            order,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=2),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100)),
            result_type=str,
        )


def _spawn(target: str, tq: str, markers: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, "activity_worker.py"), target, tq, str(markers)],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


async def _wait_for_file(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not path.exists():
        assert proc.poll() is None, f"worker process exited early (code {proc.returncode})"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        await asyncio.sleep(0.05)


pytestmark = pytest.mark.asyncio


async def test_activity_is_retried_after_its_worker_is_killed(
    kairos_target: str, tmp_path: Path
) -> None:
    client = await Client.connect(kairos_target, namespace="default")
    tq = f"tq-cook-{uuid.uuid4()}"
    procs: List[subprocess.Popen] = []
    try:
        async with Worker(client, task_queue=tq, workflows=[CookOrder]):
            handle = await client.start_workflow(
                CookOrder.run, "pizza-42", id=f"cook-{uuid.uuid4()}", task_queue=tq
            )
            first = _spawn(kairos_target, tq, tmp_path, tmp_path / "worker-1.log")
            procs.append(first)
            await _wait_for_file(tmp_path / "attempt-1", first)

            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            assert first.returncode == -signal.SIGKILL

            second = _spawn(kairos_target, tq, tmp_path, tmp_path / "worker-2.log")
            procs.append(second)
            result = await asyncio.wait_for(handle.result(), DEADLINE_S)
            assert result == "pizza-42 cooked on attempt 2"

            history = await handle.fetch_history()
            types = [e.event_type for e in history.events]
            assert types.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 1
            started = [
                e.activity_task_started_event_attributes
                for e in history.events
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            ]
            assert [s.attempt for s in started] == [2]
            # The retry was caused by the missed heartbeats.
            assert started[0].last_failure.timeout_failure_info.timeout_type == TimeoutType.TIMEOUT_TYPE_HEARTBEAT
            assert types[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
