// How smooth the dashboard stays with 5,000 jobs in the list and 200 updates/s arriving:
// frame intervals and long tasks measured inside headless Chromium.
//   cd web && JOBTRACK_BIN=../target/release/jobtrack node tests/run.mjs --bench smooth
import { chromium } from "playwright-core";
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { JobService, JobState, JobType } from "../src/gen/jobtrack/v1/jobtrack_pb";
import { startServer } from "./server";

const JOBS = Number(process.env.JOBS ?? 5000);
const RATE = Number(process.env.RATE ?? 200);
const SECONDS = Number(process.env.SECONDS ?? 15);

const server = await startServer();
const api = createClient(JobService, createGrpcWebTransport({ baseUrl: server.url }));
const ids: string[] = [];
for (let i = 0; i < JOBS; i += 50) {
  const batch = await Promise.all(
    Array.from({ length: Math.min(50, JOBS - i) }, (_, k) =>
      api.createJob({ job: { name: `job-${i + k}`, type: JobType.K8S_COPY, state: JobState.RUNNING } }),
    ),
  );
  ids.push(...batch.map((j) => j.id));
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
await page.goto(server.url + "/");
await page.waitForFunction((n) => document.querySelector('.count[data-state="RUNNING"]')?.getAttribute("data-count") === String(n), JOBS, { timeout: 60000 });
await page.evaluate(() => {
  const w = window as any;
  w.frames = [];
  w.longTasks = [];
  let last = performance.now();
  const tick = (t: number) => {
    w.frames.push(t - last);
    last = t;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  new PerformanceObserver((list) => list.getEntries().forEach((e) => w.longTasks.push(e.duration))).observe({ type: "longtask", buffered: false });
});
let sent = 0;
const started = Date.now();
const timer = setInterval(() => {
  const due = Math.floor(((Date.now() - started) / 1000) * RATE) - sent;
  for (let k = 0; k < due; k++, sent++) {
    const id = ids[Math.floor(Math.random() * ids.length)];
    void api.updateJob({ job: { id, message: `update ${sent}`, numBackupResources: BigInt(sent) }, updateMask: { paths: ["message", "num_backup_resources"] } });
  }
}, 10);
await new Promise((r) => setTimeout(r, SECONDS * 1000));
clearInterval(timer);
const { frames, longTasks } = await page.evaluate(() => ({ frames: (window as any).frames as number[], longTasks: (window as any).longTasks as number[] }));
const sorted = [...frames].sort((a, b) => a - b);
const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))].toFixed(1);
const fps = frames.length / SECONDS;
console.log(
  `jobs=${JOBS} updates=${sent} (${(sent / SECONDS).toFixed(0)}/s) frames=${frames.length} (${fps.toFixed(0)} fps) ` +
    `frame p50=${q(0.5)}ms p95=${q(0.95)}ms p99=${q(0.99)}ms max=${sorted[sorted.length - 1].toFixed(1)}ms ` +
    `long_tasks=${longTasks.length} total=${longTasks.reduce((a, b) => a + b, 0).toFixed(0)}ms`,
);
await browser.close();
await server.stop();
