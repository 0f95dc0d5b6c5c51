// Starts the server the suite runs against: Kairos (KAIROS_BIN, a fresh SQLite file, a free
// port), or with TEST_SERVER=reference the reference `temporal server start-dev` (TEMPORAL_CLI or
// `temporal` on PATH), in memory on a free port. TEMPORAL_ADDRESS instead uses a running server.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { Connection } = require('@temporalio/client');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** The reference server's start-dev flags, as ../../shared/tools/reference-server.sh sets them. */
const REFERENCE_DYNAMIC_CONFIG = [
  'frontend.enableUpdateWorkflowExecution=true',
  'frontend.enableUpdateWorkflowExecutionAsyncAccepted=true',
  'frontend.enableExecuteMultiOperation=true',
  'system.forceSearchAttributesCacheRefreshOnRead=true',
  'frontend.workerVersioningWorkflowAPIs=true',
  'frontend.workerVersioningDataAPIs=true',
];

async function waitUntilServing(address, child, log, deadlineMs) {
  const deadline = Date.now() + deadlineMs;
  let lastError;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) {
      throw new Error(`server exited with ${child.exitCode}:\n${fs.readFileSync(log, 'utf8')}`);
    }
    try {
      const connection = await Connection.connect({ address, connectTimeout: 1000 });
      await connection.workflowService.getSystemInfo({});
      return connection;
    } catch (err) {
      lastError = err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`server at ${address} not serving after ${deadlineMs} ms: ${lastError}`);
}

/** Starts the server; returns { address, kind, connection, stop() }. */
async function startServer() {
  if (process.env.TEMPORAL_ADDRESS) {
    const address = process.env.TEMPORAL_ADDRESS;
    const connection = await waitUntilServing(address, null, null, 10_000);
    return { address, kind: 'external', connection, stop: async () => connection.close() };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kairos-ts-'));
  const log = path.join(dir, 'server.log');
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  let command;
  let args;
  let kind;
  if (process.env.TEST_SERVER === 'reference') {
    kind = 'reference';
    command = process.env.TEMPORAL_CLI || 'temporal';
    const uiPort = await freePort();
    args = ['server', 'start-dev', '--headless', '--ip', '127.0.0.1', '--port', String(port),
      '--ui-port', String(uiPort), '--log-level', 'error'];
    for (const kv of REFERENCE_DYNAMIC_CONFIG) args.push('--dynamic-config-value', kv);
  } else {
    kind = 'kairos';
    command = process.env.KAIROS_BIN;
    if (!command) throw new Error('set KAIROS_BIN to the kairos binary (./scripts/test does)');
    args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port),
      '--db-filename', path.join(dir, 'kairos.db'), '--log-level', 'warn'];
  }
  const out = fs.openSync(log, 'w');
  const child = spawn(command, args, { stdio: ['ignore', out, out] });
  const connection = await waitUntilServing(address, child, log, 60_000);
  return {
    address,
    kind,
    connection,
    log,
    async stop() {
      await connection.close();
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
      const text = fs.readFileSync(log, 'utf8');
      fs.rmSync(dir, { recursive: true, force: true });
      // A panic in a request handler must never pass unnoticed.
      if (/panicked/.test(text)) throw new Error(`the server panicked:\n${text}`);
    },
  };
}

module.exports = { startServer };
