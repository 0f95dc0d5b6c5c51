"""Local activities and patching across a worker restart, with the official Python SDK.

Version 1 of a workflow runs a local activity and waits for a signal. Its worker stops while
orders are in flight; version 2 of the code (a loyalty step behind `workflow.patched`, before
the wait) takes over. The in-flight order replays its version-1 history and keeps the old path; a new order
takes the new one (a patch marker and the TemporalChangeVersion search attribute).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

pytestmark = pytest.mark.asyncio


@activity.defn
async def price(order: str) -> int:
    return 12


@activity.defn
async def add_points(order: str) -> str:
    return "points added"


@workflow.defn(name="Order")
class OrderV1:
    def __init__(self) -> None:
        self.delivered = False

    @workflow.run
    async def run(self, order: str) -> str:
        amount = await workflow.execute_local_activity(
            price, order, start_to_close_timeout=timedelta(seconds=10)
        )
        await workflow.wait_condition(lambda: self.delivered)
        return f"{order}: {amount}"

    @workflow.signal
    def delivered_signal(self) -> None:
        self.delivered = True


@workflow.defn(name="Order")
class OrderV2:
    def __init__(self) -> None:
        self.delivered = False

    @workflow.run
    async def run(self, order: str) -> str:
        amount = await workflow.execute_local_activity(
            price, order, start_to_close_timeout=timedelta(seconds=10)
        )
        extra = ""
        # New in version 2, before the wait: an order already waiting passed this point under
        # version 1, so its replay takes the old path.
        if workflow.patched("loyalty-points"):
            extra = ", " + await workflow.execute_activity(
                add_points, order, start_to_close_timeout=timedelta(seconds=10)
            )
        await workflow.wait_condition(lambda: self.delivered)
        return f"{order}: {amount}{extra}"

    @workflow.signal
    def delivered_signal(self) -> None:
        self.delivered = True


async def _types(handle) -> list:
    return [e.event_type for e in (await handle.fetch_history()).events]


async def test_patched_workflow_replays_old_orders_and_runs_new_ones_on_the_new_path(
    kairos_target: str,
) -> None:
    client = await Client.connect(kairos_target, namespace="default")
    tq = f"orders-{uuid.uuid4()}"
    async with Worker(client, task_queue=tq, workflows=[OrderV1], activities=[price],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        old = await client.start_workflow(OrderV1.run, "order-1", id=f"o1-{uuid.uuid4()}", task_queue=tq)
        # Wait until the local activity's marker is in the history: the order is in flight.
        for _ in range(200):
            if EventType.EVENT_TYPE_MARKER_RECORDED in await _types(old):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the local activity never recorded its marker")
    # Version 2 replaces version 1 (a fresh worker with no cache: it replays the history).
    async with Worker(client, task_queue=tq, workflows=[OrderV2], activities=[price, add_points],
                      workflow_runner=UnsandboxedWorkflowRunner(), max_cached_workflows=0):
        await old.signal("delivered_signal")
        assert await old.result() == "order-1: 12", "the in-flight order keeps the old path"
        new = await client.start_workflow(OrderV2.run, "order-2", id=f"o2-{uuid.uuid4()}", task_queue=tq)
        await new.signal("delivered_signal")
        assert await new.result() == "order-2: 12, points added"
    old_types = await _types(old)
    new_types = await _types(new)
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in old_types
    assert new_types.count(EventType.EVENT_TYPE_MARKER_RECORDED) == 2, "local activity + patch"
    assert EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES in new_types
    assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in old_types, "replay was deterministic"

