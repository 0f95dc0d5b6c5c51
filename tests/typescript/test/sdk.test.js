// The official TypeScript SDK against one server (Kairos unless TEST_SERVER=reference): the
// everyday features a TypeScript user reaches for, then a replay of every history produced.
const { describe, it, before, after } = require('node:test');

/** Every case has a deadline: a hang fails the case instead of the suite. */
const test = (name, fn) => it(name, { timeout: 60_000 }, fn);
const assert = require('node:assert/strict');
const path = require('node:path');
const { randomUUID } = require('node:crypto');
const {
  Client,
  WorkflowFailedError,
  WorkflowUpdateFailedError,
  WorkflowExecutionAlreadyStartedError,
  WithStartWorkflowOperation,
} = require('@temporalio/client');
const { Worker, NativeConnection, bundleWorkflowCode, DefaultLogger, Runtime } = require('@temporalio/worker');
const {
  ActivityFailure,
  ApplicationFailure,
  CancelledFailure,
  TimeoutFailure,
  TerminatedFailure,
  ChildWorkflowFailure,
  defineSearchAttributeKey,
} = require('@temporalio/common');
const activities = require('../src/activities');
const { startServer } = require('../lib/server');

Runtime.install({
  logger: new DefaultLogger('ERROR'),
  telemetryOptions: { logging: { filter: 'ERROR', forward: {} } },
});

const TASK_QUEUE = `ts-${randomUUID()}`;
const customerKey = defineSearchAttributeKey('KairosTsCustomer', 'KEYWORD');
const stageKey = defineSearchAttributeKey('KairosTsStage', 'INT');

let server;
let client;
let nativeConnection;
let worker;
let workerRun;
let bundle;
const started = []; // workflow ids whose histories are replayed at the end

function id(name) {
  const workflowId = `${name}-${randomUUID()}`;
  started.push(workflowId);
  return workflowId;
}

async function poll(what, check, deadlineMs = 20_000) {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  server = await startServer();
  client = new Client({ connection: server.connection, namespace: 'default' });
  await server.connection.operatorService.addSearchAttributes({
    namespace: 'default',
    searchAttributes: { KairosTsCustomer: 2 /* KEYWORD */, KairosTsStage: 3 /* INT */ },
  });
  bundle = await bundleWorkflowCode({
    workflowsPath: path.join(__dirname, '../src/workflows.js'),
    logger: new DefaultLogger('WARN'),
  });
  // The SDK's default worker settings: what users run.
  nativeConnection = await NativeConnection.connect({ address: server.address });
  worker = await Worker.create({
    connection: nativeConnection,
    namespace: 'default',
    taskQueue: TASK_QUEUE,
    workflowBundle: bundle,
    activities,
  });
  workerRun = worker.run();
});

after(async () => {
  if (worker) {
    worker.shutdown();
    await workerRun;
  }
  // Every connection closed, or the process would not exit.
  if (nativeConnection) await nativeConnection.close();
  if (server) await server.stop();
});

describe(`TypeScript SDK against ${process.env.TEST_SERVER || 'kairos'}`, { concurrency: false }, () => {
  test('runs an activity hello world without any workflow timeout', async () => {
    const result = await client.workflow.execute('hello', {
      taskQueue: TASK_QUEUE,
      workflowId: id('hello'),
      args: ['Kairos'],
    });
    assert.equal(result, 'Hello, Kairos!');
  });

  test('retries a failing activity under its retry policy', async () => {
    const attempt = await client.workflow.execute('retries', {
      taskQueue: TASK_QUEUE,
      workflowId: id('retries'),
      args: [2],
    });
    assert.equal(attempt, 3);
  });

  test('fails the workflow with a non-retryable activity failure and its cause chain', async () => {
    const err = await client.workflow
      .execute('nonRetryable', { taskQueue: TASK_QUEUE, workflowId: id('non-retryable') })
      .then(() => assert.fail('the workflow should fail'), (e) => e);
    assert.ok(err instanceof WorkflowFailedError, `got ${err}`);
    assert.ok(err.cause instanceof ActivityFailure, `cause ${err.cause}`);
    const app = err.cause.cause;
    assert.ok(app instanceof ApplicationFailure);
    assert.equal(app.type, 'BakeFailed');
    assert.equal(app.nonRetryable, true);
    assert.deepEqual(app.details, ['margherita']);
    assert.ok(app.cause instanceof ApplicationFailure);
    assert.equal(app.cause.message, 'the oven is cold');
    assert.equal(app.cause.type, 'OvenCold');
  });

  test('times out a stalled heartbeat and hands its details to the next attempt', async () => {
    const result = await client.workflow.execute('heartbeatTimeout', {
      taskQueue: TASK_QUEUE,
      workflowId: id('heartbeat'),
    });
    assert.deepEqual(result, { attempt: 2, details: { progress: 42 } });
  });

  test('cancels a workflow and still runs its non-cancellable clean-up', async () => {
    activities.events.length = 0;
    const handle = await client.workflow.start('cancellable', {
      taskQueue: TASK_QUEUE,
      workflowId: id('cancel'),
    });
    await poll('the activity to start', () => activities.events.includes('waiting'));
    await handle.cancel();
    const err = await handle.result().then(() => assert.fail('should be cancelled'), (e) => e);
    assert.ok(err instanceof WorkflowFailedError, `got ${err}`);
    assert.ok(err.cause instanceof CancelledFailure, `cause ${err.cause}`);
    assert.ok(activities.events.includes('activity cancelled'), activities.events.join(','));
    assert.ok(activities.events.includes('cleaned up order-cancelled'), activities.events.join(','));
    const description = await handle.describe();
    assert.equal(description.status.name, 'CANCELLED');
  });

  test('runs a child workflow without timeouts', async () => {
    const result = await client.workflow.execute('parent', {
      taskQueue: TASK_QUEUE,
      workflowId: id('parent'),
      args: ['child'],
    });
    assert.equal(result, 'child said: Hello, child!');
  });

  test('delivers signals and answers queries', async () => {
    const handle = await client.workflow.start('order', { taskQueue: TASK_QUEUE, workflowId: id('order') });
    await handle.signal('addItem', 'margherita');
    await handle.signal('addItem', 'calzone');
    assert.equal(await handle.query('status'), 'open');
    assert.deepEqual(await handle.query('items'), ['margherita', 'calzone']);
    await handle.signal('approve');
    assert.deepEqual(await handle.result(), ['margherita', 'calzone']);
    // A closed workflow still answers queries.
    assert.equal(await handle.query('status'), 'approved');
  });

  test('runs updates and rejects those its validator refuses', async () => {
    const handle = await client.workflow.start('tips', { taskQueue: TASK_QUEUE, workflowId: id('tips') });
    assert.equal(await handle.executeUpdate('setTip', { args: [5] }), 5);
    assert.equal(await handle.executeUpdate('setTip', { args: [2] }), 7);
    const err = await handle
      .executeUpdate('setTip', { args: [-1] })
      .then(() => assert.fail('the validator should refuse'), (e) => e);
    assert.ok(err instanceof WorkflowUpdateFailedError, `got ${err}`);
    assert.match(err.cause.message, /a tip must be positive/);
    await handle.signal('finish');
    assert.equal(await handle.result(), 7);
  });

  test('starts a workflow with an update (update-with-start)', async () => {
    const workflowId = id('update-with-start');
    const startOp = () =>
      new WithStartWorkflowOperation('tips', {
        workflowId,
        taskQueue: TASK_QUEUE,
        workflowIdConflictPolicy: 'USE_EXISTING',
      });
    const first = startOp();
    assert.equal(await client.workflow.executeUpdateWithStart('setTip', { args: [3], startWorkflowOperation: first }), 3);
    const second = startOp();
    assert.equal(await client.workflow.executeUpdateWithStart('setTip', { args: [4], startWorkflowOperation: second }), 7);
    const [h1, h2] = [await first.workflowHandle(), await second.workflowHandle()];
    assert.equal(h1.firstExecutionRunId, h2.firstExecutionRunId, 'the second attached to the same run');
    await h1.signal('finish');
    assert.equal(await h1.result(), 7);
  });

  test('continues as new until done', async () => {
    const handle = await client.workflow.start('countdown', {
      taskQueue: TASK_QUEUE,
      workflowId: id('countdown'),
      args: [0, 3],
    });
    assert.equal(await handle.result(), 3);
    const description = await client.workflow.getHandle(handle.workflowId).describe();
    assert.notEqual(description.runId, handle.firstExecutionRunId, 'the last run is a new one');
  });

  test('terminates a workflow', async () => {
    const handle = await client.workflow.start('waitsForever', { taskQueue: TASK_QUEUE, workflowId: id('terminate') });
    await handle.terminate('duplicate order');
    const err = await handle.result().then(() => assert.fail('should be terminated'), (e) => e);
    assert.ok(err instanceof WorkflowFailedError);
    assert.ok(err.cause instanceof TerminatedFailure, `cause ${err.cause}`);
    assert.equal((await handle.describe()).status.name, 'TERMINATED');
  });

  test('runs local activities', async () => {
    assert.equal(
      await client.workflow.execute('local', { taskQueue: TASK_QUEUE, workflowId: id('local'), args: [20, 22] }),
      42,
    );
  });

  test('records patches', async () => {
    const workflowId = id('patched');
    assert.equal(await client.workflow.execute('patchedWorkflow', { taskQueue: TASK_QUEUE, workflowId }), 'patched');
    const history = await client.workflow.getHandle(workflowId).fetchHistory();
    const markers = history.events.filter((e) => e.markerRecordedEventAttributes);
    assert.equal(markers.length, 1);
    assert.equal(markers[0].markerRecordedEventAttributes.markerName, 'core_patch');
  });

  test('upserts search attributes, then lists and counts by them', async () => {
    const customer = `customer-${randomUUID()}`;
    const handle = await client.workflow.start('tagged', {
      taskQueue: TASK_QUEUE,
      workflowId: id('tagged'),
      args: [customer],
    });
    const query = `KairosTsCustomer = '${customer}' AND KairosTsStage = 2`;
    await poll('the upserted attributes to be listed', async () => (await client.workflow.count(query)).count === 1);
    const listed = [];
    for await (const info of client.workflow.list({ query })) listed.push(info);
    assert.equal(listed.length, 1);
    assert.equal(listed[0].workflowId, handle.workflowId);
    assert.equal(listed[0].typedSearchAttributes.get(customerKey), customer);
    assert.equal(listed[0].typedSearchAttributes.get(stageKey), 2);
    await handle.signal('finish');
    assert.equal(await handle.result(), customer);
    const running = await client.workflow.count(`${query} AND ExecutionStatus = 'Running'`);
    assert.equal(running.count, 0);
  });

  test('describes a workflow', async () => {
    const workflowId = id('describe');
    const handle = await client.workflow.start('order', { taskQueue: TASK_QUEUE, workflowId, memo: { shop: 'north' } });
    const running = await handle.describe();
    assert.equal(running.workflowId, workflowId);
    assert.equal(running.runId, handle.firstExecutionRunId);
    assert.equal(running.type, 'order');
    assert.equal(running.taskQueue, TASK_QUEUE);
    assert.equal(running.status.name, 'RUNNING');
    assert.deepEqual(running.memo, { shop: 'north' });
    assert.ok(running.startTime instanceof Date);
    assert.equal(running.closeTime, undefined);
    await handle.signal('approve');
    await handle.result();
    const closed = await handle.describe();
    assert.equal(closed.status.name, 'COMPLETED');
    assert.ok(closed.closeTime instanceof Date);
    assert.ok(closed.historyLength > 4);
  });

  test('signals with start, on a new and on a running workflow', async () => {
    const workflowId = id('signal-with-start');
    const first = await client.workflow.signalWithStart('order', {
      taskQueue: TASK_QUEUE,
      workflowId,
      signal: 'addItem',
      signalArgs: ['salad'],
    });
    const second = await client.workflow.signalWithStart('order', {
      taskQueue: TASK_QUEUE,
      workflowId,
      signal: 'addItem',
      signalArgs: ['soup'],
    });
    assert.equal(first.signaledRunId, second.signaledRunId, 'the second signal went to the running workflow');
    await second.signal('approve');
    assert.deepEqual(await second.result(), ['salad', 'soup']);
  });

  test('follows the id conflict policies', async () => {
    const workflowId = id('conflict');
    const options = { taskQueue: TASK_QUEUE, workflowId };
    const first = await client.workflow.start('waitsForever', options);
    const err = await client.workflow
      .start('waitsForever', { ...options, workflowIdConflictPolicy: 'FAIL' })
      .then(() => assert.fail('a second start should fail'), (e) => e);
    assert.ok(err instanceof WorkflowExecutionAlreadyStartedError, `got ${err}`);
    const existing = await client.workflow.start('waitsForever', { ...options, workflowIdConflictPolicy: 'USE_EXISTING' });
    assert.equal(existing.firstExecutionRunId, first.firstExecutionRunId);
    const replacing = await client.workflow.start('waitsForever', {
      ...options,
      workflowIdConflictPolicy: 'TERMINATE_EXISTING',
    });
    assert.notEqual(replacing.firstExecutionRunId, first.firstExecutionRunId);
    const old = client.workflow.getHandle(workflowId, first.firstExecutionRunId);
    assert.equal((await old.describe()).status.name, 'TERMINATED');
    const again = await client.workflow
      .start('waitsForever', { ...options, workflowIdReusePolicy: 'REJECT_DUPLICATE' })
      .then(() => assert.fail('a running id refuses a new start'), (e) => e);
    assert.ok(again instanceof WorkflowExecutionAlreadyStartedError);
    await replacing.terminate('done');
  });

  test('replays every history it produced', async () => {
    const histories = [];
    for (const workflowId of started) {
      // Every run of the id (continue-as-new makes several).
      for await (const info of client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) {
        const history = await client.workflow.getHandle(workflowId, info.runId).fetchHistory();
        histories.push({ workflowId, history });
      }
    }
    assert.ok(histories.length >= started.length, `${histories.length} histories for ${started.length} ids`);
    let replayed = 0;
    for await (const result of Worker.runReplayHistories({ workflowBundle: bundle }, histories)) {
      assert.equal(result.error, undefined, `replay of ${result.workflowId} failed: ${result.error}`);
      replayed += 1;
    }
    assert.equal(replayed, histories.length);
  });
});
