// Activities of the TypeScript SDK suite. They run in the test process, so they record what
// happened in `events` for the tests to check.
const { Context, ApplicationFailure, CancelledFailure } = require('@temporalio/activity');

const events = [];

async function greet(name) {
  return `Hello, ${name}!`;
}

async function flaky(failures) {
  const { attempt } = Context.current().info;
  if (attempt <= failures) throw new Error(`attempt ${attempt} fails`);
  return attempt;
}

async function failsNonRetryable() {
  const cause = new ApplicationFailure('the oven is cold', 'OvenCold');
  throw ApplicationFailure.create({
    message: 'cannot bake',
    type: 'BakeFailed',
    nonRetryable: true,
    details: ['margherita'],
    cause,
  });
}

async function heartbeatThenStall() {
  const ctx = Context.current();
  if (ctx.info.attempt > 1) {
    return { attempt: ctx.info.attempt, details: ctx.info.heartbeatDetails };
  }
  ctx.heartbeat({ progress: 42 });
  // Stop heartbeating until the server times the attempt out (and cancels it).
  await ctx.sleep(20_000).catch(() => undefined);
  return { attempt: ctx.info.attempt, details: 'stalled attempt finished' };
}

async function waitForCancel() {
  const ctx = Context.current();
  events.push('waiting');
  for (;;) {
    ctx.heartbeat();
    try {
      await ctx.sleep(200);
    } catch (err) {
      if (err instanceof CancelledFailure) events.push('activity cancelled');
      throw err;
    }
  }
}

async function cleanUp(what) {
  events.push(`cleaned up ${what}`);
  return what;
}

async function localAdd(a, b) {
  return a + b;
}

module.exports = { events, greet, flaky, failsNonRetryable, heartbeatThenStall, waitForCancel, cleanUp, localAdd };
