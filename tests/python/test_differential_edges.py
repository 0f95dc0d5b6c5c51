"""Differential test at the edges: the same raw requests to Kairos and to the reference server,
with durations up to `i64::MAX` seconds, retry policies past what the reference can hold, and
long polls whose deadline is near. Both servers must answer with the same status and message,
neither may fire anything early, and a task queue must keep serving after such a task.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any, Dict, List, Tuple

import pytest
from google.protobuf.duration_pb2 import Duration

from temporalio.api.command.v1 import (
    Command,
    ScheduleActivityTaskCommandAttributes,
    StartTimerCommandAttributes,
)
from temporalio.api.common.v1 import (
    ActivityType,
    RetryPolicy,
    WorkflowExecution,
    WorkflowType,
)
from temporalio.api.enums.v1 import CommandType, EventType
from temporalio.api.failure.v1 import ApplicationFailureInfo, Failure
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeWorkflowExecutionRequest,
    GetWorkflowExecutionHistoryRequest,
    PollActivityTaskQueueRequest,
    PollWorkflowTaskQueueRequest,
    RespondActivityTaskFailedRequest,
    RespondWorkflowTaskCompletedRequest,
    StartWorkflowExecutionRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError

pytestmark = pytest.mark.asyncio

I64_MAX = 2**63 - 1
DURATIONS: Dict[str, Tuple[int, int]] = {
    "protobuf max": (315_576_000_000, 0),
    "protobuf max plus nanos": (315_576_000_000, 999_999_999),
    "i64 max": (I64_MAX, 0),
    "5e16 s": (50_000_000_000_000_000, 0),
    "negative": (-1, 0),
    "nanos out of range": (1, 2_000_000_000),
}
START_FIELDS = [
    "workflow_execution_timeout",
    "workflow_run_timeout",
    "workflow_task_timeout",
    "workflow_start_delay",
    "retry_policy.initial_interval",
    "retry_policy.maximum_interval",
]
RETRY_POLICIES: Dict[str, RetryPolicy] = {
    "maximum under initial": RetryPolicy(
        initial_interval=Duration(seconds=10), maximum_interval=Duration(seconds=5)
    ),
    "coefficient under 1": RetryPolicy(backoff_coefficient=0.5),
    "coefficient NaN": RetryPolicy(backoff_coefficient=float("nan")),
    "coefficient infinite": RetryPolicy(backoff_coefficient=float("inf")),
    "negative attempts": RetryPolicy(maximum_attempts=-1),
    "initial 1e8 s": RetryPolicy(initial_interval=Duration(seconds=100_000_000)),
    "initial 9e7 s": RetryPolicy(initial_interval=Duration(seconds=90_000_000)),
    "initial 1e8 s with a maximum": RetryPolicy(
        initial_interval=Duration(seconds=100_000_000),
        maximum_interval=Duration(seconds=315_576_000_000),
    ),
}


async def _answer(call: Any) -> str:
    try:
        await call
        return "OK"
    except RPCError as e:
        return f"{e.status.name}: {e.message}"


def _start(tq: str, **fields: Any) -> StartWorkflowExecutionRequest:
    return StartWorkflowExecutionRequest(
        namespace="default",
        workflow_id=f"edge-{uuid.uuid4()}",
        workflow_type=WorkflowType(name="Edge"),
        task_queue=TaskQueue(name=tq),
        request_id=str(uuid.uuid4()),
        identity="edge-test",
        **fields,
    )


async def _start_answers(target: str) -> Dict[str, str]:
    client = await Client.connect(target, namespace="default")
    svc = client.workflow_service
    tq = f"edge-nobody-{uuid.uuid4()}"
    answers = {}
    for field in START_FIELDS:
        for name, (seconds, nanos) in DURATIONS.items():
            req = _start(tq)
            value = Duration(seconds=seconds, nanos=nanos)
            if field.startswith("retry_policy."):
                getattr(req.retry_policy, field.split(".")[1]).CopyFrom(value)
            else:
                getattr(req, field).CopyFrom(value)
            answers[f"{field} = {name}"] = await _answer(svc.start_workflow_execution(req))
    for name, policy in RETRY_POLICIES.items():
        answers[f"retry policy: {name}"] = await _answer(
            svc.start_workflow_execution(_start(tq, retry_policy=policy))
        )
    return answers


async def test_starts_with_extreme_durations_answer_as_the_reference(
    kairos_target: str, reference_target: str
) -> None:
    ours = await _start_answers(kairos_target)
    theirs = await _start_answers(reference_target)
    differ = [f"{k}:\n  kairos:    {ours[k]}\n  reference: {theirs[k]}" for k in theirs if ours[k] != theirs[k]]
    assert not differ, "\n".join(differ)


async def test_long_polls_answer_before_the_callers_deadline_as_the_reference(
    kairos_target: str, reference_target: str
) -> None:
    async def run(target: str) -> List[Tuple[str, float, str]]:
        client = await Client.connect(target, namespace="default")
        svc = client.workflow_service
        tq = TaskQueue(name=f"edge-empty-{uuid.uuid4()}")
        seen = []
        polls = {
            "workflow": lambda t: svc.poll_workflow_task_queue(
                PollWorkflowTaskQueueRequest(namespace="default", task_queue=tq), timeout=t
            ),
            "activity": lambda t: svc.poll_activity_task_queue(
                PollActivityTaskQueueRequest(namespace="default", task_queue=tq), timeout=t
            ),
        }
        for kind, call in polls.items():
            for seconds in (1.5, 2.0, 3.0):
                began = time.monotonic()
                answer = await _answer(call(timedelta(seconds=seconds)))
                seen.append((f"{kind} poll, {seconds} s deadline", time.monotonic() - began, answer))
        start = _start(tq.name)
        await svc.start_workflow_execution(start)
        for seconds in (0.5, 3.0):
            began = time.monotonic()
            page = await svc.get_workflow_execution_history(
                GetWorkflowExecutionHistoryRequest(
                    namespace="default",
                    execution=WorkflowExecution(workflow_id=start.workflow_id),
                    wait_new_event=True,
                    history_event_filter_type=2,  # the close event only
                ),
                timeout=timedelta(seconds=seconds),
            )
            answer = "OK, nothing yet, a token" if page.next_page_token and not page.history.events else "OK, other"
            seen.append((f"history long poll, {seconds} s deadline", time.monotonic() - began, answer))
        return seen

    ours, theirs = await asyncio.gather(run(kairos_target), run(reference_target))
    for (what, our_time, our_answer), (_, their_time, their_answer) in zip(ours, theirs):
        assert our_answer == their_answer, f"{what}: kairos {our_answer!r}, reference {their_answer!r}"
        # Answered a second before the deadline (or at once when that has passed), as the
        # reference: same moment within a few hundred milliseconds.
        assert abs(our_time - their_time) < 0.4, f"{what}: kairos after {our_time:.2f} s, reference {their_time:.2f} s"


def _dur(seconds: int, nanos: int = 0) -> Duration:
    return Duration(seconds=seconds, nanos=nanos)


async def _history_types(svc: Any, workflow_id: str) -> List[str]:
    page = await svc.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace="default", execution=WorkflowExecution(workflow_id=workflow_id)
        )
    )
    return [EventType.Name(e.event_type) for e in page.history.events]


async def _extreme_commands(target: str, tq_name: str, workflow_id: str) -> Dict[str, Any]:
    """A workflow task that starts timers of 5e16 s and i64::MAX s beside a 1 s one, and an
    activity whose every timeout and retry interval is i64::MAX s; the activity then fails
    asking for a retry in i64::MAX s. Returns what each step answered and the history once the
    1 s timer fired."""
    client = await Client.connect(target, namespace="default")
    svc = client.workflow_service
    tq = TaskQueue(name=tq_name)
    seen: Dict[str, Any] = {}
    await svc.start_workflow_execution(
        StartWorkflowExecutionRequest(
            namespace="default",
            workflow_id=workflow_id,
            workflow_type=WorkflowType(name="Edge"),
            task_queue=tq,
            request_id=str(uuid.uuid4()),
            workflow_run_timeout=_dur(I64_MAX),
        )
    )
    poll_wft = PollWorkflowTaskQueueRequest(namespace="default", task_queue=tq, identity="edge")
    task = await svc.poll_workflow_task_queue(poll_wft)

    def timer(timer_id: str, d: Duration) -> Command:
        return Command(
            command_type=CommandType.COMMAND_TYPE_START_TIMER,
            start_timer_command_attributes=StartTimerCommandAttributes(
                timer_id=timer_id, start_to_fire_timeout=d
            ),
        )

    huge = _dur(I64_MAX)
    activity = Command(
        command_type=CommandType.COMMAND_TYPE_SCHEDULE_ACTIVITY_TASK,
        schedule_activity_task_command_attributes=ScheduleActivityTaskCommandAttributes(
            activity_id="forever",
            activity_type=ActivityType(name="slow"),
            task_queue=tq,
            schedule_to_close_timeout=huge,
            schedule_to_start_timeout=huge,
            start_to_close_timeout=huge,
            heartbeat_timeout=huge,
            retry_policy=RetryPolicy(initial_interval=huge, maximum_interval=huge),
        ),
    )
    seen["complete with extreme commands"] = await _answer(
        svc.respond_workflow_task_completed(
            RespondWorkflowTaskCompletedRequest(
                namespace="default",
                task_token=task.task_token,
                identity="edge",
                commands=[
                    timer("5e16", _dur(50_000_000_000_000_000)),
                    timer("i64max", huge),
                    timer("control", _dur(1)),
                    activity,
                ],
            )
        )
    )
    poll_activity = PollActivityTaskQueueRequest(namespace="default", task_queue=tq, identity="edge")
    task = await svc.poll_activity_task_queue(poll_activity, timeout=timedelta(seconds=10))
    seen["activity dispatched"] = task.activity_id
    failure = Failure(
        message="try again much later",
        application_failure_info=ApplicationFailureInfo(type="Later", next_retry_delay=huge),
    )
    seen["fail asking for a retry in i64::MAX s"] = await _answer(
        svc.respond_activity_task_failed(
            RespondActivityTaskFailedRequest(
                namespace="default", task_token=task.task_token, failure=failure, identity="edge"
            )
        )
    )
    # Workflow tasks are answered with no commands until the 1 s timer fires; nothing else may
    # have fired by then.
    deadline = time.monotonic() + 20
    while True:
        assert time.monotonic() < deadline, "the control timer never fired"
        task = await svc.poll_workflow_task_queue(poll_wft, timeout=timedelta(seconds=5))
        if not task.task_token:
            continue
        history = await _history_types(svc, workflow_id)
        if "EVENT_TYPE_TIMER_FIRED" in history:
            break
        await svc.respond_workflow_task_completed(
            RespondWorkflowTaskCompletedRequest(
                namespace="default", task_token=task.task_token, identity="edge"
            )
        )
    seen["history when the 1 s timer fired"] = history
    # The queue keeps serving after such a task: an empty poll answers empty, not an error.
    seen["activity queue after"] = await _answer(
        svc.poll_activity_task_queue(poll_activity, timeout=timedelta(seconds=3))
    )
    described = await svc.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(
            namespace="default", execution=WorkflowExecution(workflow_id=workflow_id)
        )
    )
    seen["pending activity attempt"] = [a.attempt for a in described.pending_activities]
    return seen


async def test_extreme_durations_inside_commands_never_fire_early(
    kairos_target: str, reference_target: str
) -> None:
    tq = f"edge-{uuid.uuid4()}"
    workflow_id = f"edge-{uuid.uuid4()}"
    ours, theirs = await asyncio.gather(
        _extreme_commands(kairos_target, tq, workflow_id),
        _extreme_commands(reference_target, tq, workflow_id),
    )
    assert ours == theirs, f"kairos:\n{ours}\nreference:\n{theirs}"
    fired = ours["history when the 1 s timer fired"]
    assert fired.count("EVENT_TYPE_TIMER_FIRED") == 1, fired
    assert "EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT" not in fired, fired


async def _run_timeout_with_a_far_retry(target: str, tq_name: str, workflow_id: str) -> List[str]:
    """A run with a 2 s run timeout whose activity fails and is retried in i64::MAX s: the run
    must still time out at 2 s. Returns its history's event types."""
    client = await Client.connect(target, namespace="default")
    svc = client.workflow_service
    tq = TaskQueue(name=tq_name)
    await svc.start_workflow_execution(
        StartWorkflowExecutionRequest(
            namespace="default",
            workflow_id=workflow_id,
            workflow_type=WorkflowType(name="Edge"),
            task_queue=tq,
            request_id=str(uuid.uuid4()),
            workflow_run_timeout=_dur(2),
        )
    )
    task = await svc.poll_workflow_task_queue(
        PollWorkflowTaskQueueRequest(namespace="default", task_queue=tq, identity="edge")
    )
    huge = _dur(I64_MAX)
    await svc.respond_workflow_task_completed(
        RespondWorkflowTaskCompletedRequest(
            namespace="default",
            task_token=task.task_token,
            identity="edge",
            commands=[
                Command(
                    command_type=CommandType.COMMAND_TYPE_SCHEDULE_ACTIVITY_TASK,
                    schedule_activity_task_command_attributes=ScheduleActivityTaskCommandAttributes(
                        activity_id="far",
                        activity_type=ActivityType(name="slow"),
                        task_queue=tq,
                        start_to_close_timeout=_dur(30),
                        retry_policy=RetryPolicy(initial_interval=huge, maximum_interval=huge),
                    ),
                )
            ],
        )
    )
    activity = await svc.poll_activity_task_queue(
        PollActivityTaskQueueRequest(namespace="default", task_queue=tq, identity="edge"),
        timeout=timedelta(seconds=10),
    )
    await svc.respond_activity_task_failed(
        RespondActivityTaskFailedRequest(
            namespace="default",
            task_token=activity.task_token,
            failure=Failure(message="retry me", application_failure_info=ApplicationFailureInfo(type="Again")),
            identity="edge",
        )
    )
    deadline = time.monotonic() + 20
    while True:
        history = await _history_types(svc, workflow_id)
        if "EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT" in history:
            return history
        assert time.monotonic() < deadline, f"the run never timed out: {history}"
        await asyncio.sleep(0.1)


async def test_a_run_times_out_while_its_activity_waits_for_a_far_retry(
    kairos_target: str, reference_target: str
) -> None:
    tq = f"edge-{uuid.uuid4()}"
    workflow_id = f"edge-{uuid.uuid4()}"
    ours, theirs = await asyncio.gather(
        _run_timeout_with_a_far_retry(kairos_target, tq, workflow_id),
        _run_timeout_with_a_far_retry(reference_target, tq, workflow_id),
    )
    assert ours == theirs, f"kairos:\n{ours}\nreference:\n{theirs}"
