// The dashboard in a real browser: headless Chromium (Debian's package) driven by Playwright,
// against the real server. Screenshots go to test-artifacts/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium, type Browser, type Page } from "playwright-core";
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { JobService, JobState, JobType, OpType, PvcState } from "../src/gen/jobtrack/v1/jobtrack_pb";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { startServer, type Server } from "./server";

const ARTIFACTS = "test-artifacts";
let browser: Browser;
let server: Server;

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  server = await startServer();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const api = () => createClient(JobService, createGrpcWebTransport({ baseUrl: server.url }));

async function pct(page: Page, selector: string): Promise<number> {
  return Number(await page.locator(selector).first().getAttribute("data-pct"));
}

test("the dashboard follows jobs live, survives a server restart, and cancels", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(server.url + "/");
  await page.waitForSelector('#status[data-state="live"]');

  // A job created over gRPC appears without a reload.
  const job = await api().createJob({
    job: { name: "nightly-copy", type: JobType.K8S_COPY, state: JobState.RUNNING, cluster: "5f77218d44b03575ec17a5ae", clusterName: "prod-eu-1" },
  });
  const row = page.locator(`tr.job[data-job-id="${job.id}"]`);
  await row.waitFor();
  assert.equal(await row.locator(".state").textContent(), "RUNNING");
  assert.equal(await page.locator('.count[data-state="RUNNING"]').getAttribute("data-count"), "1");

  // Its page: progress bars move as PVC progress is reported.
  await row.click();
  await page.waitForSelector("#job-state");
  const report = (transferred: bigint, files: bigint) =>
    api().reportPvcProgress({
      pvc: { jobId: job.id, namespace: "prod", name: "data-0", opType: OpType.K8S_COPY, state: PvcState.ACTIVE,
        stats: { estimatedSize: 1000n, transferredSize: transferred, estimatedNumberOfFiles: 10n, transferredNumberOfFiles: files } },
    });
  await report(100n, 1n);
  const bytesBar = 'tr.pvc[data-pvc="prod/data-0"] .bar[data-kind="bytes"]';
  await page.waitForFunction((s) => document.querySelector(s)?.getAttribute("data-pct") === "10", bytesBar);
  await report(600n, 6n);
  await page.waitForFunction((s) => document.querySelector(s)?.getAttribute("data-pct") === "60", bytesBar);
  assert.equal(await pct(page, 'tr.pvc[data-pvc="prod/data-0"] .bar[data-kind="files"]'), 60);
  await page.screenshot({ path: `${ARTIFACTS}/job-page.png`, fullPage: true });

  // The server restarts: the page says it is reconnecting, resumes with its token, and shows
  // what changed meanwhile.
  const { database, listen } = server;
  await server.stop();
  await page.waitForSelector('#status[data-state="reconnecting"]');
  await page.screenshot({ path: `${ARTIFACTS}/reconnecting.png` });
  server = await startServer(database, listen);
  await report(900n, 9n);
  await api().updateJob({ job: { id: job.id, message: "almost done" }, updateMask: { paths: ["message"] }, appendActivity: ["changed while the page was away"] });
  await page.waitForSelector('#status[data-state="live"]', { timeout: 20000 });
  await page.waitForFunction((s) => document.querySelector(s)?.getAttribute("data-pct") === "90", bytesBar);
  await page.locator("#activity li", { hasText: "changed while the page was away" }).waitFor();

  // Cancel: the button exists only while cancel is allowed, and turns the job CANCELLED.
  await page.click("#cancel");
  await page.waitForFunction(() => document.querySelector("#job-state")?.textContent === "CANCELLED");
  assert.equal(await page.locator("#cancel").count(), 0);
  assert.equal((await api().getJob({ id: job.id })).state, JobState.CANCELLED);

  // Back to the list: the job is shown CANCELLED there too.
  await page.click("header a");
  await page.locator(`tr.job[data-job-id="${job.id}"] .state`, { hasText: "CANCELLED" }).waitFor();
  await page.screenshot({ path: `${ARTIFACTS}/dashboard.png` });
  assert.deepEqual(errors, []);
});

test("filters by type and state narrow the live list", async () => {
  const page = await browser.newPage();
  const client = api();
  await client.createJob({ job: { name: "a-restore", type: JobType.RESTORE, state: JobState.PENDING } });
  await client.createJob({ job: { name: "a-snap", type: JobType.K8S_SNAP, state: JobState.RUNNING } });
  await page.goto(server.url + "/#/?type=RESTORE");
  await page.waitForSelector('#status[data-state="live"]');
  await page.locator("tr.job", { hasText: "a-restore" }).waitFor();
  assert.equal(await page.locator("tr.job", { hasText: "a-snap" }).count(), 0);
  const later = await client.createJob({ job: { name: "b-restore", type: JobType.RESTORE, state: JobState.RUNNING } });
  await page.locator(`tr.job[data-job-id="${later.id}"]`).waitFor();
  await page.click('.count[data-state="RUNNING"]');
  await page.waitForFunction(() => document.querySelectorAll("tr.job").length === 1);
  assert.equal(await page.locator("tr.job").first().getAttribute("data-job-id"), later.id);
  await page.locator("#status", { hasText: 'jobs where {"type":"RESTORE"}, state RUNNING' }).waitFor();

  // The cluster filter takes the name the table shows; the created column shows the date too.
  const staging = await client.createJob({ job: { name: "c-staging", type: JobType.K8S_COPY, state: JobState.RUNNING, clusterName: "staging" } });
  await client.createJob({ job: { name: "c-prod", type: JobType.K8S_COPY, state: JobState.RUNNING, clusterName: "prod-eu-1" } });
  await page.goto(server.url + "/#/?cluster=staging");
  await page.locator(`tr.job[data-job-id="${staging.id}"]`).waitFor();
  assert.equal(await page.locator("tr.job", { hasText: "c-prod" }).count(), 0);
  await page.locator("#status", { hasText: 'jobs where {"cluster_name":"staging"}' }).waitFor();
  const created = (await page.locator(`tr.job[data-job-id="${staging.id}"] td`).first().textContent()) ?? "";
  assert.match(created, new RegExp(String(new Date().getFullYear())), created);
});

test("with API keys the page asks for one, keeps it for the session, and shows what the role may not do", async () => {
  const { execFileSync } = await import("node:child_process");
  const { freshDatabase, BIN } = await import("./server");
  const database = freshDatabase();
  const make = (role: string) =>
    execFileSync(BIN, ["keys", "create", "--name", `${role}-key`, "--role", role, "--database", database], { stdio: ["ignore", "pipe", "ignore"] })
      .toString()
      .trim();
  const viewer = make("viewer");
  const admin = make("admin");
  const operator = make("operator");
  const keyed = await startServer(database);
  try {
    const asAdmin = createClient(
      JobService,
      createGrpcWebTransport({ baseUrl: keyed.url, interceptors: [(next) => (req) => { req.header.set("authorization", `Bearer ${admin}`); return next(req); }] }),
    );
    const job = await asAdmin.createJob({ job: { name: "guarded", type: JobType.K8S_SNAP, state: JobState.RUNNING } });
    const page = await browser.newPage();
    await page.goto(keyed.url + "/");
    await page.waitForSelector("#key-form");
    await page.fill("#key", viewer);
    await page.click('#key-form button[type="submit"]');
    await page.locator(`tr.job[data-job-id="${job.id}"]`).waitFor();
    // A reload keeps the key (same browser session).
    await page.reload();
    await page.locator(`tr.job[data-job-id="${job.id}"]`).waitFor();
    // The header names the key and what its role may not do, before anything is tried.
    await page.locator("#who", { hasText: "viewer-key" }).waitFor();
    assert.match(await page.locator("#may-not").innerText(), /may not cancel jobs.*create and update jobs.*delete jobs/);
    await page.click(`tr.job[data-job-id="${job.id}"]`);
    // A viewer's Cancel button is disabled and says why.
    await page.locator("#cancel[disabled]").waitFor();
    assert.match(await page.locator("#cancel-denied").innerText(), /role \(viewer\) may not cancel jobs/);
    await page.screenshot({ path: `${ARTIFACTS}/viewer-may-not-cancel.png` });
    assert.equal((await asAdmin.getJob({ id: job.id })).state, JobState.RUNNING);
    // Forgetting the key asks for one again; an operator's key may cancel.
    await page.click("#forget-key");
    await page.waitForSelector("#key-form");
    await page.fill("#key", operator);
    await page.click('#key-form button[type="submit"]');
    await page.locator("#who", { hasText: "operator-key" }).waitFor();
    await page.click("#cancel:not([disabled])");
    await page.locator("#job-state", { hasText: "CANCELLED" }).waitFor();
    const cancelled = await asAdmin.getJob({ id: job.id });
    assert.equal(cancelled.state, JobState.CANCELLED);
    assert.match(cancelled.activity.at(-1) ?? "", /key "operator-key"/);
  } finally {
    await keyed.stop();
  }
});

test("an EventSource follows the jobs over Server-Sent Events and reconnects after a restart without missing one", async () => {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(server.url + "/");
  const cluster = "5f77218d44b03575ec17cccc";
  await page.evaluate((cluster) => {
    const w = window as unknown as { seen: { type: string; id: string; name?: string }[] };
    w.seen = [];
    const where = encodeURIComponent(JSON.stringify({ cluster }));
    const source = new EventSource(`/api/v1/jobs?watch=1&where=${where}`);
    for (const type of ["snapshot", "synced", "created", "updated", "deleted"]) {
      source.addEventListener(type, (e) => {
        const event = e as MessageEvent;
        w.seen.push({ type, id: event.lastEventId, name: JSON.parse(event.data).job?.name });
      });
    }
  }, cluster);
  const seen = () => page.evaluate(() => (window as unknown as { seen: { type: string; name?: string }[] }).seen);
  const waitFor = (type: string, name?: string) =>
    page.waitForFunction(
      ([type, name]) =>
        (window as unknown as { seen: { type: string; name?: string }[] }).seen.some(
          (e) => e.type === type && (name === undefined || e.name === name),
        ),
      [type, name] as const,
      { timeout: 30000 },
    );
  await waitFor("synced");
  await api().createJob({ job: { name: "sse-a", cluster, type: JobType.RESTORE, state: JobState.RUNNING } });
  await waitFor("created", "sse-a");

  // The server restarts; a job is created while the browser is reconnecting (its retry: is 2 s).
  const { database, listen } = server;
  await server.stop();
  server = await startServer(database, listen);
  await api().createJob({ job: { name: "sse-b", cluster, type: JobType.RESTORE, state: JobState.RUNNING } });
  await waitFor("created", "sse-b");
  // Resumed with Last-Event-ID: no snapshot again, each job once.
  const events = await seen();
  assert.deepEqual(
    events.filter((e) => e.type === "created").map((e) => e.name),
    ["sse-a", "sse-b"],
  );
  assert.equal(events.filter((e) => e.type === "snapshot").length, 0, JSON.stringify(events));
  assert.deepEqual(errors, []);
});

test("a job whose executor goes silent shows as stalled, then FAILED, live", async () => {
  // A server of its own, with short durations: stalled after 1 s of silence, FAILED after 3 s.
  const quick = await startServer(undefined, undefined, ["--stall-after", "1s", "--abandon-after", "3s", "--sweep-every", "100ms"]);
  try {
    const quickApi = createClient(JobService, createGrpcWebTransport({ baseUrl: quick.url }));
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(quick.url + "/");
    await page.waitForSelector('#status[data-state="live"]');
    const job = await quickApi.createJob({ job: { name: "silent-copy", type: JobType.K8S_COPY, state: JobState.RUNNING } });
    const row = page.locator(`tr.job[data-job-id="${job.id}"]`);
    await row.locator(".stalled").waitFor();
    assert.equal(await row.locator(".state").textContent(), "RUNNING");
    assert.equal(await page.locator('.count[data-state="STALLED"]').getAttribute("data-count"), "1");
    await row.click();
    await page.locator("#stalled", { hasText: "no report from the executor since" }).waitFor();
    assert.match((await page.locator("#stalled").textContent()) ?? "", /will be FAILED at/);
    await page.screenshot({ path: `${ARTIFACTS}/stalled.png` });
    await page.locator("#job-state", { hasText: "FAILED" }).waitFor();
    await page.locator("#activity li", { hasText: "executor stopped reporting" }).waitFor();
    assert.equal(await page.locator("#stalled").count(), 0, "a FAILED job is no longer stalled");
    await page.close();
  } finally {
    await quick.stop();
  }
});

test("a copying job shows its rate and an ETA that counts down, and each PVC's bytes of its estimate", async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 800 } });
  const job = await api().createJob({ job: { name: "eta-copy", type: JobType.K8S_COPY, state: JobState.RUNNING } });
  const report = (read: bigint) =>
    api().reportPvcProgress({
      pvc: { jobId: job.id, namespace: "prod", name: "data-0", opType: OpType.K8S_COPY, state: PvcState.ACTIVE,
        stats: { estimatedSize: 1_000_000_000_000_000n, ioSize: read, transferredSize: read / 10n, estimatedNumberOfFiles: 100n, ioNumberOfFiles: 10n } },
    });
  // 1% of a petabyte read, then one megabyte more a moment later: a rate, and an ETA days
  // ahead whatever the moment was, so it can be seen counting down.
  await report(10_000_000_000_000n);
  await report(10_000_001_000_000n);
  await page.goto(`${server.url}/#/job/${job.id}`);
  await page.locator("#job-rate .rate").waitFor();
  const left = async () => Number(await page.locator("#job-rate .eta").getAttribute("data-left"));
  const first = await left();
  assert.ok(first > 0, `an ETA ahead: ${first}`);
  await page.waitForFunction(
    (before) => Number(document.querySelector("#job-rate .eta")?.getAttribute("data-left")) < before,
    first,
  );
  // The Volumes table fits 1,400 px, with a long message wrapped rather than cut.
  const message = "Reading the volume through the snapshot of its EBS copy; " + "deduplicated chunks skipped, ".repeat(6);
  await api().reportPvcProgress({ pvc: { jobId: job.id, namespace: "prod", name: "data-0", message } });
  await page.locator('tr.pvc[data-pvc="prod/data-0"] td.muted', { hasText: "deduplicated chunks skipped" }).waitFor();
  const fits = await page.evaluate(() => {
    const doc = document.documentElement;
    const cell = document.querySelector('tr.pvc[data-pvc="prod/data-0"] td.muted') as HTMLElement;
    return { page: doc.scrollWidth <= doc.clientWidth, cell: cell.scrollWidth <= cell.clientWidth };
  });
  assert.deepEqual(fits, { page: true, cell: true }, "no horizontal scrollbar, the message not cut");
  // The PVC row: bytes done (read) of the estimate, files done of the total.
  const row = page.locator('tr.pvc[data-pvc="prod/data-0"]');
  assert.match((await row.textContent()) ?? "", /9\.1 TiB of 909\.5 TiB/);
  assert.match((await row.textContent()) ?? "", /10 of 100/);
  await page.screenshot({ path: `${ARTIFACTS}/eta.png` });
  await page.close();
});

test("the job page shows each activity line with its time, and a finished PVC's duration to the hundredth", async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 800 } });
  const job = await api().createJob({ job: { name: "timed-copy", type: JobType.K8S_COPY, state: JobState.RUNNING, activity: ["Initiating backup process"] } });
  const updated = await api().updateJob({ job: { id: job.id }, appendActivity: ["Transferring data"] });
  const pvc = { jobId: job.id, namespace: "prod", name: "data-1", opType: OpType.K8S_COPY, stats: { estimatedSize: 1000n, ioSize: 10n } };
  await api().reportPvcProgress({ pvc: { ...pvc, state: PvcState.ACTIVE } });
  const finished = await api().reportPvcProgress({ pvc: { ...pvc, state: PvcState.COMPLETED, stats: { ioSize: 1000n } } });
  await page.goto(`${server.url}/#/job/${job.id}`);
  await page.locator("#activity li", { hasText: "Transferring data" }).waitFor();
  const lines = await page.locator("#activity li").allTextContents();
  assert.equal(lines.length, 2);
  const times = await page.locator("#activity li time").allTextContents();
  assert.equal(times.length, 2, `a time on each line: ${lines}`);
  for (const t of times) assert.match(t, /^\d\d:\d\d:\d\d\.\d{3}$/);
  const ms = (t: Timestamp) => String(timestampDate(t).getMilliseconds()).padStart(3, "0");
  assert.deepEqual(times.map((t) => t.slice(-3)), updated.activityTimes.map(ms), "each line's own time, to the millisecond");
  const secs = (t: { seconds: bigint; nanos: number }) => Number(t.seconds) + t.nanos / 1e9;
  const took = (secs(finished.finishTime!) - secs(finished.activeTime!)).toFixed(2);
  await page.locator('tr.pvc[data-pvc="prod/data-1"] .took', { hasText: `took ${took}s` }).waitFor();
  await page.close();
});
