// Workflows of the TypeScript SDK suite. The worker bundles this file (and only this file) into
// its deterministic sandbox, so it may import only @temporalio/workflow.
const wf = require('@temporalio/workflow');
const { defineSearchAttributeKey } = require('@temporalio/common');

const { greet, flaky, failsNonRetryable, heartbeatThenStall, waitForCancel, cleanUp, localAdd } =
  wf.proxyActivities({
    startToCloseTimeout: '10s',
    retry: { initialInterval: '50ms', backoffCoefficient: 1, maximumAttempts: 5 },
  });

const { heartbeatThenStall: stallsWithHeartbeatTimeout } = wf.proxyActivities({
  startToCloseTimeout: '30s',
  heartbeatTimeout: '1s',
  retry: { initialInterval: '50ms', maximumAttempts: 3 },
});

const { waitForCancel: cancellableWait } = wf.proxyActivities({
  startToCloseTimeout: '60s',
  heartbeatTimeout: '2s',
  cancellationType: wf.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
});

const { localAdd: addLocally } = wf.proxyLocalActivities({ startToCloseTimeout: '5s' });

const approve = wf.defineSignal('approve');
const addItem = wf.defineSignal('addItem');
const status = wf.defineQuery('status');
const items = wf.defineQuery('items');
const setTip = wf.defineUpdate('setTip');
const finish = wf.defineSignal('finish');

/** The standard hello world: one activity with only a start-to-close timeout. */
async function hello(name) {
  return await greet(name);
}

/** An activity that fails on its first attempts and then succeeds under the retry policy. */
async function retries(failures) {
  return await flaky(failures);
}

/** An activity that fails with a non-retryable error carrying a cause. */
async function nonRetryable() {
  return await failsNonRetryable();
}

/** An activity that heartbeats details, then stops, and is retried after its heartbeat timeout. */
async function heartbeatTimeout() {
  return await stallsWithHeartbeatTimeout();
}

/** Waits on a cancellable activity; when cancelled, runs a clean-up that cannot be cancelled. */
async function cancellable() {
  try {
    await cancellableWait();
    return 'not cancelled';
  } catch (err) {
    if (wf.isCancellation(err)) {
      await wf.CancellationScope.nonCancellable(() => cleanUp('order-cancelled'));
    }
    throw err;
  }
}

/** Starts a child workflow without any timeout and returns its result. */
async function parent(name) {
  const child = await wf.executeChild(hello, { args: [name] });
  return `child said: ${child}`;
}

/** Collects signalled items until approved; queries read its state. */
async function order() {
  const collected = [];
  let approved = false;
  wf.setHandler(addItem, (item) => void collected.push(item));
  wf.setHandler(approve, () => void (approved = true));
  wf.setHandler(status, () => (approved ? 'approved' : 'open'));
  wf.setHandler(items, () => collected);
  await wf.condition(() => approved);
  return collected;
}

/** Takes tips through an update with a validator until told to finish. */
async function tips() {
  let total = 0;
  let finished = false;
  wf.setHandler(
    setTip,
    (amount) => {
      total += amount;
      return total;
    },
    {
      validator: (amount) => {
        if (typeof amount !== 'number' || amount <= 0) throw new Error('a tip must be positive');
      },
    },
  );
  wf.setHandler(finish, () => void (finished = true));
  await wf.condition(() => finished);
  await wf.condition(wf.allHandlersFinished);
  return total;
}

/** Continues as new until the counter reaches `until`. */
async function countdown(counter, until) {
  if (counter >= until) return counter;
  await wf.continueAsNew(counter + 1, until);
}

/** Waits forever (to be terminated or signalled). */
async function waitsForever() {
  await wf.condition(() => false);
}

/** Adds with a local activity. */
async function local(a, b) {
  return await addLocally(a, b);
}

/** Takes the patched branch on new runs. */
async function patchedWorkflow() {
  if (wf.patched('kairos-ts-patch')) return 'patched';
  return 'old';
}

const customerKey = defineSearchAttributeKey('KairosTsCustomer', 'KEYWORD');
const stageKey = defineSearchAttributeKey('KairosTsStage', 'INT');

/** Upserts search attributes, then waits for a finish signal. */
async function tagged(customer) {
  wf.upsertSearchAttributes([
    { key: customerKey, value: customer },
    { key: stageKey, value: 2 },
  ]);
  let finished = false;
  wf.setHandler(finish, () => void (finished = true));
  await wf.condition(() => finished);
  return wf.workflowInfo().typedSearchAttributes.get(customerKey);
}

module.exports = {
  hello,
  retries,
  nonRetryable,
  heartbeatTimeout,
  cancellable,
  parent,
  order,
  tips,
  countdown,
  waitsForever,
  local,
  patchedWorkflow,
  tagged,
};
