"""A worker process for the worker-crash test (run as a script, killed with SIGKILL).

usage: activity_worker.py TARGET TASK_QUEUE MARKER_DIR

Hosts one activity, `cook`. Its first attempt writes MARKER_DIR/attempt-1 and then
heartbeats forever, so the test can kill this process while the activity runs;
later attempts write their own marker and finish.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker


def main() -> None:
    target, task_queue, marker_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])

    @activity.defn
    async def cook(order: str) -> str:
        attempt = activity.info().attempt
        (marker_dir / f"attempt-{attempt}").write_text(str(attempt))
        if attempt == 1:
            while True:
                activity.heartbeat("cooking")
                await asyncio.sleep(0.2)
        return f"{order} cooked on attempt {attempt}"

    async def run() -> None:
        client = await Client.connect(target, namespace="default")
        worker = Worker(client, task_queue=task_queue, activities=[cook])
        (marker_dir / "ready").write_text("ready")
        await worker.run()

    asyncio.run(run())


if __name__ == "__main__":
    main()
