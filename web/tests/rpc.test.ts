// Every RPC of jobtrack.v1.JobService through the gRPC-web client library the dashboard uses
// (connect-web), against the real server: unary calls, both server streams, and errors.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import {
  JobService,
  JobEventType,
  JobState,
  JobType,
  OpType,
  PvcState,
} from "../src/gen/jobtrack/v1/jobtrack_pb";
import { startServer, type Server } from "./server";
import { each } from "./wait";

let server: Server;
let client: ReturnType<typeof createClient<typeof JobService>>;

before(async () => {
  server = await startServer();
  client = createClient(JobService, createGrpcWebTransport({ baseUrl: server.url }));
});
after(async () => server.stop());

async function code(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (e) {
    return ConnectError.from(e).code;
  }
}

test("unary calls: create, get, list, update, report, get/list PVC progress, cancel, delete", async () => {
  const job = await client.createJob({
    job: { name: "web-1", type: JobType.K8S_COPY, state: JobState.RUNNING, cluster: "5f77218d44b03575ec17a5ae" },
  });
  assert.equal(job.state, JobState.RUNNING);
  assert.match(job.id, /^[0-9a-f]{24}$/);
  assert.equal((await client.getJob({ id: job.id })).name, "web-1");

  const list = await client.listJobs({ where: '{"cluster":"5f77218d44b03575ec17a5ae"}', sort: "-_created", pageSize: 10 });
  assert.equal(list.total, 1n);
  assert.equal(list.jobs[0].id, job.id);

  const updated = await client.updateJob({
    job: { id: job.id, numBackupResources: 7n },
    updateMask: { paths: ["num_backup_resources"] },
    appendActivity: ["from the browser client"],
  });
  assert.equal(updated.numBackupResources, 7n);
  assert.deepEqual(updated.activity, ["from the browser client"]);

  const pvc = await client.reportPvcProgress({
    pvc: {
      jobId: job.id,
      namespace: "prod",
      name: "data-0",
      state: PvcState.ACTIVE,
      opType: OpType.K8S_COPY,
      stats: { estimatedSize: 100n, transferredSize: 40n },
    },
  });
  assert.equal(pvc.state, PvcState.ACTIVE);
  assert.equal((await client.getPvcProgress({ id: pvc.id })).name, "data-0");
  const pvcs = await client.listPvcProgress({ jobId: job.id });
  assert.equal(pvcs.total, 1n);
  assert.equal((await client.getJob({ id: job.id })).kubeCopyProgress?.stats?.transferredSize, 40n);

  const cancelled = await client.cancelJob({ id: job.id });
  assert.equal(cancelled.state, JobState.CANCELLED);
  assert.equal(await code(client.cancelJob({ id: job.id })), "ok", "cancelling again is safe");

  await client.deleteJob({ id: job.id });
  assert.equal(await code(client.getJob({ id: job.id })), Code.NotFound);
});

test("errors arrive as gRPC status codes", async () => {
  assert.equal(await code(client.getJob({ id: "nope" })), Code.InvalidArgument);
  assert.equal(await code(client.getJob({ id: "5f431ef6a7690b60975f6664" })), Code.NotFound);
  assert.equal(await code(client.listJobs({ where: '{"nmae":1}' })), Code.InvalidArgument);
  const pending = await client.createJob({ job: { type: JobType.K8S_SNAP } });
  assert.equal(await code(client.cancelJob({ id: pending.id })), Code.FailedPrecondition);
});

/** Heartbeats (every second on the test server) are not changes. */
const isHeartbeat = (event: { type: JobEventType }) => event.type === JobEventType.HEARTBEAT;

test("WatchJob streams the snapshot, SYNCED, each change, and ends after the terminal one", async () => {
  const job = await client.createJob({ job: { type: JobType.K8S_SNAP, state: JobState.RUNNING } });
  const kinds: JobEventType[] = [];
  let last;
  const stream = client.watchJob({ id: job.id });
  for await (const event of each("WatchJob", stream, isHeartbeat)) {
    kinds.push(event.type);
    last = event;
    if (event.type === JobEventType.SYNCED) {
      await client.updateJob({ job: { id: job.id, message: "half way" }, updateMask: { paths: ["message"] } });
      await client.updateJob({ job: { id: job.id, state: JobState.COMPLETED }, updateMask: { paths: ["state"] } });
    }
  }
  assert.deepEqual(kinds, [JobEventType.SNAPSHOT, JobEventType.SYNCED, JobEventType.UPDATED, JobEventType.UPDATED]);
  assert.equal(last!.job!.state, JobState.COMPLETED);
  assert.ok(last!.resumeToken.length > 0);
});

test("WatchJobs streams every matching job and resumes from a token", async () => {
  const cluster = "5f77218d44b03575ec17aaaa";
  const where = JSON.stringify({ cluster });
  const abort = new AbortController();
  const seen: string[] = [];
  let token = "";
  const first = client.watchJobs({ where }, { signal: abort.signal });
  const created = [];
  for await (const event of each("WatchJobs", first, isHeartbeat)) {
    if (event.type === JobEventType.SYNCED) {
      created.push(await client.createJob({ job: { name: "a", cluster, type: JobType.RESTORE } }));
      continue;
    }
    if (event.type === JobEventType.CREATED) {
      seen.push(event.job!.name!);
      token = event.resumeToken;
      abort.abort();
      break;
    }
  }
  await client.createJob({ job: { name: "b", cluster, type: JobType.RESTORE } });
  for await (const event of each("the resumed WatchJobs", client.watchJobs({ where, resumeToken: token }), isHeartbeat)) {
    if (event.type === JobEventType.CREATED) seen.push(event.job!.name!);
    if (event.type === JobEventType.SYNCED) break;
  }
  assert.deepEqual(seen, ["a", "b"]);
});
