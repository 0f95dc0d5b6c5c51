"""End-to-end tests: the official temporalio Python SDK against a Kairos server.

Every test connects its own client, runs an in-process Worker on a task queue of
its own, and is bounded by TEST_TIMEOUT_S so that a broken server makes the test
fail instead of hanging.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from datetime import timedelta
from typing import Any, Awaitable, Callable, Dict, List, Sequence, TypeVar

import pytest

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    TerminatedError,
    WorkflowAlreadyStartedError,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

TEST_TIMEOUT_S = 30.0

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def bounded(fn: F) -> F:
    """Run an async test under asyncio.wait_for(TEST_TIMEOUT_S)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.wait_for(fn(*args, **kwargs), TEST_TIMEOUT_S)

    return wrapper  # type: ignore[return-value]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


async def connect(target: str) -> Client:
    return await Client.connect(target, namespace="default")


async def event_types(handle: WorkflowHandle) -> List[int]:
    history = await handle.fetch_history()
    return [e.event_type for e in history.events]


async def wait_for_event(handle: WorkflowHandle, event_type: int) -> None:
    """Poll the history (bounded by the test's timeout) until event_type shows up."""
    while event_type not in await event_types(handle):
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------
# Activities
# --------------------------------------------------------------------------


@activity.defn
async def say_hello(name: str) -> str:
    return f"Hello, {name}!"


@activity.defn
async def shout(text: str) -> str:
    return text.upper()


@activity.defn
async def square(n: int) -> int:
    await asyncio.sleep(0.05)
    return n * n


@activity.defn
async def flaky() -> int:
    attempt = activity.info().attempt
    if attempt < 3:
        raise ApplicationError(f"flaky failure on attempt {attempt}")
    return attempt


@activity.defn
async def fail_for_good() -> str:
    raise ApplicationError("permanent failure", "some detail", non_retryable=True)


@activity.defn
async def heartbeat_then_resume() -> Dict[str, Any]:
    info = activity.info()
    if info.attempt == 1:
        activity.heartbeat("progress", 42)
        raise ApplicationError("fail after heartbeat")
    return {"attempt": info.attempt, "details": list(info.heartbeat_details)}


# --------------------------------------------------------------------------
# Workflows
# --------------------------------------------------------------------------


@workflow.defn
class SequenceWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        greeting = await workflow.execute_activity(
            say_hello, name, start_to_close_timeout=timedelta(seconds=10)
        )
        loud = await workflow.execute_activity(
            shout, greeting, start_to_close_timeout=timedelta(seconds=10)
        )
        await workflow.sleep(0.3)
        return f"{loud} (slept)"


@workflow.defn
class ParallelWorkflow:
    @workflow.run
    async def run(self, numbers: Sequence[int]) -> List[int]:
        return list(
            await asyncio.gather(
                *(
                    workflow.execute_activity(
                        square, n, start_to_close_timeout=timedelta(seconds=10)
                    )
                    for n in numbers
                )
            )
        )


@workflow.defn
class FlakyWorkflow:
    @workflow.run
    async def run(self) -> int:
        return await workflow.execute_activity(
            flaky,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=0.1), maximum_attempts=5
            ),
        )


@workflow.defn
class NonRetryableWorkflow:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(
            fail_for_good,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=0.1), maximum_attempts=5
            ),
        )


@workflow.defn
class SleepyWorkflow:
    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(3600)
        return "woke up"


@workflow.defn
class HeartbeatWorkflow:
    @workflow.run
    async def run(self) -> Dict[str, Any]:
        return await workflow.execute_activity(
            heartbeat_then_resume,
            start_to_close_timeout=timedelta(seconds=10),
            heartbeat_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=0.1), maximum_attempts=3
            ),
        )


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------

pytestmark = pytest.mark.asyncio


@bounded
async def test_sequential_activities_then_timer(kairos_target: str) -> None:
    client = await connect(kairos_target)
    tq = unique("tq-seq")
    async with Worker(
        client,
        task_queue=tq,
        workflows=[SequenceWorkflow],
        activities=[say_hello, shout],
    ):
        handle = await client.start_workflow(
            SequenceWorkflow.run, "Kairos", id=unique("wf-seq"), task_queue=tq
        )
        assert await handle.result() == "HELLO, KAIROS! (slept)"

        types = await event_types(handle)
        assert types[0] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
        assert types[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
        assert types.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 2
        assert types.count(EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED) == 2
        assert types.count(EventType.EVENT_TYPE_TIMER_STARTED) == 1
        assert types.count(EventType.EVENT_TYPE_TIMER_FIRED) == 1
        # The timer comes after both activities completed.
        last_activity = max(
            i
            for i, t in enumerate(types)
            if t == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        )
        assert types.index(EventType.EVENT_TYPE_TIMER_STARTED) > last_activity

        desc = await handle.describe()
        assert desc.status is not None and desc.status.name == "COMPLETED"


@bounded
async def test_parallel_activities(kairos_target: str) -> None:
    client = await connect(kairos_target)
    tq = unique("tq-par")
    numbers = [1, 2, 3, 4, 5]
    async with Worker(
        client, task_queue=tq, workflows=[ParallelWorkflow], activities=[square]
    ):
        handle = await client.start_workflow(
            ParallelWorkflow.run, numbers, id=unique("wf-par"), task_queue=tq
        )
        assert await handle.result() == [n * n for n in numbers]

        types = await event_types(handle)
        assert types.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == len(
            numbers
        )
        assert types.count(EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED) == len(
            numbers
        )
        # All activities were scheduled by the first workflow task, before any
        # of them completed.
        first_completed = types.index(EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
        assert (
            types[:first_completed].count(
                EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            )
            == len(numbers)
        )


@bounded
async def test_activity_retries_until_success(kairos_target: str) -> None:
    client = await connect(kairos_target)
    tq = unique("tq-flaky")
    async with Worker(
        client, task_queue=tq, workflows=[FlakyWorkflow], activities=[flaky]
    ):
        handle = await client.start_workflow(
            FlakyWorkflow.run, id=unique("wf-flaky"), task_queue=tq
        )
        assert await handle.result() == 3

        # Server-side retries: one scheduled event, no failed events, and the
        # started event records the final attempt.
        history = await handle.fetch_history()
        types = [e.event_type for e in history.events]
        assert types.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 1
        assert types.count(EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED) == 0
        started = [
            e
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        ]
        assert len(started) == 1
        assert started[0].activity_task_started_event_attributes.attempt == 3


@bounded
async def test_non_retryable_activity_failure_fails_workflow(
    kairos_target: str,
) -> None:
    client = await connect(kairos_target)
    tq = unique("tq-nonretry")
    async with Worker(
        client,
        task_queue=tq,
        workflows=[NonRetryableWorkflow],
        activities=[fail_for_good],
    ):
        handle = await client.start_workflow(
            NonRetryableWorkflow.run, id=unique("wf-nonretry"), task_queue=tq
        )
        with pytest.raises(WorkflowFailureError) as exc_info:
            await handle.result()

        activity_err = exc_info.value.cause
        assert isinstance(activity_err, ActivityError), repr(activity_err)
        app_err = activity_err.cause
        assert isinstance(app_err, ApplicationError), repr(app_err)
        assert app_err.message == "permanent failure"
        assert app_err.non_retryable
        assert list(app_err.details) == ["some detail"]

        history = await handle.fetch_history()
        types = [e.event_type for e in history.events]
        assert types[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
        failed = [
            e
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        ]
        # Non-retryable: only the first attempt ran.
        assert [e.activity_task_started_event_attributes.attempt for e in failed] == [
            1
        ]


@bounded
async def test_cancel_sleeping_workflow(kairos_target: str) -> None:
    client = await connect(kairos_target)
    tq = unique("tq-cancel")
    async with Worker(client, task_queue=tq, workflows=[SleepyWorkflow]):
        handle = await client.start_workflow(
            SleepyWorkflow.run, id=unique("wf-cancel"), task_queue=tq
        )
        await wait_for_event(handle, EventType.EVENT_TYPE_TIMER_STARTED)
        await handle.cancel()

        with pytest.raises(WorkflowFailureError) as exc_info:
            await handle.result()
        assert isinstance(exc_info.value.cause, CancelledError), repr(
            exc_info.value.cause
        )

        types = await event_types(handle)
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED in types
        assert types[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED
        desc = await handle.describe()
        assert desc.status is not None and desc.status.name == "CANCELED"


@bounded
async def test_terminate_workflow(kairos_target: str) -> None:
    client = await connect(kairos_target)
    tq = unique("tq-term")
    async with Worker(client, task_queue=tq, workflows=[SleepyWorkflow]):
        handle = await client.start_workflow(
            SleepyWorkflow.run, id=unique("wf-term"), task_queue=tq
        )
        await wait_for_event(handle, EventType.EVENT_TYPE_TIMER_STARTED)
        await handle.terminate("detail-1", 7, reason="enough sleeping")

        with pytest.raises(WorkflowFailureError) as exc_info:
            await handle.result()
        cause = exc_info.value.cause
        assert isinstance(cause, TerminatedError), repr(cause)
        assert cause.message == "enough sleeping"
        assert list(cause.details) == ["detail-1", 7]

        types = await event_types(handle)
        assert types[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED
        desc = await handle.describe()
        assert desc.status is not None and desc.status.name == "TERMINATED"


@bounded
async def test_heartbeat_details_reach_next_attempt(kairos_target: str) -> None:
    client = await connect(kairos_target)
    tq = unique("tq-hb")
    async with Worker(
        client,
        task_queue=tq,
        workflows=[HeartbeatWorkflow],
        activities=[heartbeat_then_resume],
    ):
        handle = await client.start_workflow(
            HeartbeatWorkflow.run, id=unique("wf-hb"), task_queue=tq
        )
        result = await handle.result()
        assert result == {"attempt": 2, "details": ["progress", 42]}


@bounded
async def test_duplicate_workflow_id_rejected(kairos_target: str) -> None:
    client = await connect(kairos_target)
    tq = unique("tq-dup")
    wf_id = unique("wf-dup")
    # No worker needed: the first run simply stays open.
    handle = await client.start_workflow(SleepyWorkflow.run, id=wf_id, task_queue=tq)
    try:
        with pytest.raises(WorkflowAlreadyStartedError) as exc_info:
            await client.start_workflow(SleepyWorkflow.run, id=wf_id, task_queue=tq)
        assert exc_info.value.workflow_id == wf_id
        assert exc_info.value.workflow_type == "SleepyWorkflow"
        assert (await handle.describe()).run_id == handle.result_run_id
    finally:
        await handle.terminate(reason="test cleanup")


@workflow.defn
class TipJar:
    """Collects tips by update; a validator refuses absurd ones."""

    def __init__(self) -> None:
        self.tips = 0
        self.done = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.done)
        return self.tips

    @workflow.update
    def add_tip(self, amount: int) -> int:
        self.tips += amount
        return self.tips

    @add_tip.validator
    def check_tip(self, amount: int) -> None:
        if amount < 0 or amount > 100:
            raise ValueError(f"refusing a tip of {amount}")

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def total(self) -> int:
        return self.tips


@bounded
async def test_updates_signals_and_queries(kairos_target: str) -> None:
    client = await connect(kairos_target)
    tq = unique("tq-tips")
    async with Worker(client, task_queue=tq, workflows=[TipJar]):
        handle = await client.start_workflow(TipJar.run, id=unique("wf-tips"), task_queue=tq)
        assert await handle.execute_update(TipJar.add_tip, 3) == 3
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(TipJar.add_tip, -5)
        assert "refusing a tip of -5" in str(refused.value.cause)
        update = await handle.start_update(
            TipJar.add_tip, 4, wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
        assert await update.result() == 7
        assert await handle.query(TipJar.total) == 7
        await handle.signal(TipJar.finish)
        assert await handle.result() == 7
        types = await event_types(handle)
        assert types.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED) == 2
        assert types.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED) == 2
        assert types.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) == 1


@workflow.defn
class Counter:
    """Counts signals and updates; finishes when told."""

    def __init__(self) -> None:
        self.signals = 0
        self.updates = 0
        self.done = False

    @workflow.run
    async def run(self) -> List[int]:
        await workflow.wait_condition(lambda: self.done)
        return [self.signals, self.updates]

    @workflow.signal
    def bump(self) -> None:
        self.signals += 1

    @workflow.update
    def add(self) -> int:
        self.updates += 1
        return self.updates

    @workflow.signal
    def finish(self) -> None:
        self.done = True


@bounded
async def test_updates_racing_signals_lose_nothing(kairos_target: str) -> None:
    client = await connect(kairos_target)
    tq = unique("tq-race")
    async with Worker(client, task_queue=tq, workflows=[Counter]):
        handle = await client.start_workflow(Counter.run, id=unique("wf-race"), task_queue=tq)
        rounds = 20
        results = await asyncio.gather(
            *[handle.signal(Counter.bump) for _ in range(rounds)],
            *[handle.execute_update(Counter.add) for _ in range(rounds)],
        )
        update_results = sorted(r for r in results if r is not None)
        assert update_results == list(range(1, rounds + 1)), "each update saw its own count"
        await handle.signal(Counter.finish)
        assert await handle.result() == [rounds, rounds]
        types = await event_types(handle)
        assert types.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) == rounds + 1
        assert types.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED) == rounds


@workflow.defn
class AlwaysBroken:
    """A deployed bug: every workflow task fails."""

    @workflow.run
    async def run(self) -> str:
        raise RuntimeError("bug in the new release")

    @workflow.query
    def status(self) -> str:
        return "never answered"


@bounded
async def test_a_query_to_a_workflow_whose_task_keeps_failing_fails_fast(kairos_target: str) -> None:
    client = await connect(kairos_target)
    tq = unique("tq-broken")
    async with Worker(client, task_queue=tq, workflows=[AlwaysBroken]):
        handle = await client.start_workflow(
            AlwaysBroken.run, id=unique("wf-broken"), task_queue=tq,
            task_timeout=timedelta(seconds=1),
        )
        # The SDK reports the first failure and lets later attempts time out; after two
        # failed attempts the third waits for its backoff.
        failed = {EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED, EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT}
        for _ in range(400):
            if sum(t in failed for t in await event_types(handle)) >= 2:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the workflow task did not fail twice")
        with pytest.raises(RPCError) as not_ready:
            await handle.query(AlwaysBroken.status)
        assert not_ready.value.status == RPCStatusCode.FAILED_PRECONDITION
        # The history stays short: no third attempt until the backoff (5 s) passes.
        types = await event_types(handle)
        assert sum(t in failed for t in types) == 2
        assert types[-1] in failed
        await handle.terminate("fix deployed later")


@workflow.defn
class Renewer:
    """Generation 0 continues as new while an update it accepted is still running; the
    caller's update then lands on generation 1, which answers it."""

    def __init__(self) -> None:
        self.generation = 0
        self.renew = False
        self.done = False

    @workflow.run
    async def run(self, generation: int) -> int:
        self.generation = generation
        if generation == 0:
            await workflow.wait_condition(lambda: self.renew)
            workflow.continue_as_new(1)
        await workflow.wait_condition(lambda: self.done)
        return generation

    @workflow.update
    async def ping(self) -> int:
        if self.generation == 0:
            self.renew = True
            await workflow.wait_condition(lambda: False)
        return self.generation

    @workflow.signal
    def finish(self) -> None:
        self.done = True


@bounded
async def test_an_update_caught_by_continue_as_new_is_retried_on_the_new_run(
    kairos_target: str,
) -> None:
    client = await connect(kairos_target)
    tq = unique("tq-renew")
    async with Worker(client, task_queue=tq, workflows=[Renewer]):
        handle = await client.start_workflow(Renewer.run, 0, id=unique("wf-renew"), task_queue=tq)
        # The first run answers BUSY_WORKFLOW when it continues as new; the client retries and
        # the second run completes the update.
        assert await handle.execute_update(Renewer.ping) == 1
        current = client.get_workflow_handle(handle.id)
        await current.signal(Renewer.finish)
        assert await current.result() == 1
        first = [e.event_type for e in (await client.get_workflow_handle(
            handle.id, run_id=handle.first_execution_run_id).fetch_history()).events]
        assert first[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED in first
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED not in first


@workflow.defn
class Idle:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


@bounded
async def test_a_list_right_after_a_start_or_a_close_sees_it(kairos_target: str) -> None:
    """Visibility is written in the transaction of the change: no waiting, no polling."""
    client = await connect(kairos_target)
    tq = unique("tq-visible")
    # No worker: the workflow stays running with its first task scheduled.
    handle = await client.start_workflow(Idle.run, id=unique("wf-visible"), task_queue=tq)
    listed = [w async for w in client.list_workflows(f"TaskQueue = '{tq}'")]
    assert [(w.id, w.status.name) for w in listed] == [(handle.id, "RUNNING")]
    await handle.terminate(reason="seen")
    listed = [w async for w in client.list_workflows(f"TaskQueue = '{tq}'")]
    assert [(w.id, w.status.name) for w in listed] == [(handle.id, "TERMINATED")]
    assert listed[0].close_time is not None
    count = await client.count_workflows(f"TaskQueue = '{tq}' AND ExecutionStatus = 'Terminated'")
    assert count.count == 1
    # The legacy lists see the same, through their own filters.
    from temporalio.api.filter.v1 import StatusFilter, WorkflowExecutionFilter
    from temporalio.api.workflowservice.v1 import (
        ListClosedWorkflowExecutionsRequest,
        ListOpenWorkflowExecutionsRequest,
    )
    closed = await client.workflow_service.list_closed_workflow_executions(
        ListClosedWorkflowExecutionsRequest(
            namespace="default",
            execution_filter=WorkflowExecutionFilter(workflow_id=handle.id),
        )
    )
    assert [e.execution.workflow_id for e in closed.executions] == [handle.id]
    terminated = await client.workflow_service.list_closed_workflow_executions(
        ListClosedWorkflowExecutionsRequest(
            namespace="default", status_filter=StatusFilter(status=5), maximum_page_size=1000
        )
    )
    assert handle.id in [e.execution.workflow_id for e in terminated.executions]
    still_open = await client.workflow_service.list_open_workflow_executions(
        ListOpenWorkflowExecutionsRequest(
            namespace="default",
            execution_filter=WorkflowExecutionFilter(workflow_id=handle.id),
        )
    )
    assert list(still_open.executions) == []
    # Paging: many small pages cover everything exactly once.
    tq2 = unique("tq-paged")
    ids = [
        (await client.start_workflow(Idle.run, id=unique("wf-page"), task_queue=tq2)).id
        for _ in range(7)
    ]
    paged = [w.id async for w in client.list_workflows(f"TaskQueue = '{tq2}'", page_size=2)]
    assert len(paged) == 7 and sorted(paged) == sorted(ids)
    for wf_id in ids:
        await client.get_workflow_handle(wf_id).terminate()
