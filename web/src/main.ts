// The jobtrack dashboard: a live job list (WatchJobs) and a live job page (WatchJob), talking to
// the server only through gRPC-web (connect-web) with messages generated from proto/.
//
// Rendering is batched: stream events only change the in-memory state and mark it dirty; the
// page is drawn at most once per animation frame, and the list draws at most ROWS rows, so a
// list of thousands of jobs with hundreds of updates a second stays smooth.

import { createClient, ConnectError, Code, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  AccessService,
  JobService,
  JobEventType,
  JobState,
  JobType,
  PvcState,
  OpType,
  type Caller,
  type Job,
  type PvcProgress,
} from "./gen/jobtrack/v1/jobtrack_pb";

const ROWS = 200;
// The API key, when the server requires one: asked for once, kept only for this browser session.
const KEY = "jobtrack.key";
const withKey: Interceptor = (next) => async (req) => {
  const key = sessionStorage.getItem(KEY);
  if (key) req.header.set("authorization", `Bearer ${key}`);
  return next(req);
};
const transport = createGrpcWebTransport({ baseUrl: location.origin, interceptors: [withKey] });
const client = createClient(JobService, transport);
const access = createClient(AccessService, transport);

// Who the key is and what its role may not do (GetCaller), asked once per key.
let caller: Caller | undefined;
const mayNot = (permission: string) => caller?.denied.find((p) => p.name === permission);

/** Shows the key's name and role, and what the role may not do, in the header. */
function showCaller() {
  const who = document.getElementById("who")!;
  if (!caller?.keysRequired) {
    who.innerHTML = "";
    return;
  }
  const denied = caller.denied.map((p) => p.description).join("; ");
  who.innerHTML = `key <b>${esc(caller.keyName)}</b> · ${esc(caller.role)}${
    denied ? ` · <span id="may-not">may not ${esc(denied)}</span>` : ""
  } <button id="forget-key" type="button">forget key</button>`;
  (document.getElementById("forget-key") as HTMLButtonElement).onclick = () => {
    sessionStorage.removeItem(KEY);
    caller = undefined;
    showCaller();
    askForKey("");
  };
}

/** Replaces the page with a form asking for an API key; `why` says what went wrong. */
function askForKey(why: string) {
  generation++;
  setStatus("error", "API key needed");
  app.innerHTML = `<form id="key-form" class="fields" style="max-width:40rem">
    <div class="muted">API key</div><div><input id="key" type="password" size="60" autocomplete="off" placeholder="jt_..."></div>
    <div></div><div><button type="submit">Use this key</button> <span class="muted">kept for this browser session only</span></div>
    <div></div><div id="error">${esc(why)}</div></form>`;
  (document.getElementById("key-form") as HTMLFormElement).onsubmit = (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, (document.getElementById("key") as HTMLInputElement).value.trim());
    caller = undefined;
    route();
  };
}

const app = document.getElementById("app")!;
const statusEl = document.getElementById("status")!;
const whereEl = document.getElementById("where")!;

type Status = "connecting" | "live" | "reconnecting" | "error" | "finished";
function setStatus(state: Status, text: string) {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
}

const stateName = (s: JobState) => JobState[s] ?? String(s);
const typeName = (t: JobType) => (t ? JobType[t] : "");
const pvcStateName = (s: PvcState) => (PvcState[s] ?? String(s)).replace(/_/g, "-");
const esc = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
const created = (j: Job) => (j.created ? timestampDate(j.created).getTime() : 0);
const fmtTime = (secs?: bigint) => (secs === undefined ? "" : new Date(Number(secs) * 1000).toLocaleString());
const clock = (t?: Job["created"]) => (t ? timestampDate(t).toLocaleTimeString() : "?");

/** Bytes and files done, as the server's estimates count them: the larger of read and sent. */
function done(s?: { ioSize?: bigint; transferredSize?: bigint; ioNumberOfFiles?: bigint; transferredNumberOfFiles?: bigint }) {
  const most = (a?: bigint, b?: bigint) => ((a ?? 0n) > (b ?? 0n) ? (a ?? 0n) : (b ?? 0n));
  return { bytes: most(s?.ioSize, s?.transferredSize), files: most(s?.ioNumberOfFiles, s?.transferredNumberOfFiles) };
}

/** `21:22:41.802`: a time of day to the millisecond, in the browser's zone. */
const clockMs = (t: Job["created"]) => {
  const d = timestampDate(t);
  return `${d.toLocaleTimeString([], { hour12: false })}.${String(d.getMilliseconds()).padStart(3, "0")}`;
};

/** A duration between two timestamps: `0.42s`, `12.4s`, then as `span`. */
function spanBetween(from: Job["created"], to: Job["created"]): string {
  const secs = Math.max(0, (timestampDate(to!).getTime() - timestampDate(from!).getTime()) / 1000);
  if (secs < 10) return `${secs.toFixed(2)}s`;
  if (secs < 60) return `${secs.toFixed(1)}s`;
  return span(secs);
}

/** The activity log, each line with the time it came (times align with the last lines: a job
 * from before they were kept has fewer times than lines). */
function activityItems(j: Job): string {
  const untimed = j.activity.length - j.activityTimes.length;
  return j.activity
    .map((line, i) => {
      const at = i >= untimed ? j.activityTimes[i - untimed] : undefined;
      return `<li>${at ? `<time class="muted">${clockMs(at)}</time> ` : ""}${esc(line)}</li>`;
    })
    .join("");
}

/** `1h02m`, `3m12s`, `45s`. */
function span(secs: number): string {
  const s = Math.max(0, Math.round(secs));
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

/** `150.3 MiB/s · 1m29s left`: the server's rate and ETA, counting down; empty without a rate. */
function rateText(bytesPerSecond?: bigint, eta?: Job["created"]): string {
  if (bytesPerSecond === undefined) return "";
  const left = eta ? ` · <span class="eta" data-left="${Math.max(0, Math.round((timestampDate(eta).getTime() - Date.now()) / 1000))}">${span((timestampDate(eta).getTime() - Date.now()) / 1000)} left</span>` : "";
  return `<span class="rate">${bytes(bytesPerSecond)}/s</span>${left}`;
}

/** The "stalled" badge of a job whose executor has gone silent (its `stalled_since` is set). */
function stalledBadge(j: Job): string {
  if (!j.stalledSince) return "";
  return ` <span class="stalled" title="no report from the executor since ${clock(j.lastReportTime)}">stalled</span>`;
}

/** What the job page says of a stalled job: since when, and when it will be given up on. */
function stalledNote(j: Job): string {
  if (!j.stalledSince) return "";
  const fails = j.abandonTime ? `; it will be FAILED at ${clock(j.abandonTime)} if it stays silent` : "";
  return `<p id="stalled" class="stalled-note">Stalled: no report from the executor since ${clock(
    j.lastReportTime,
  )} (marked at ${clock(j.stalledSince)})${fails}.</p>`;
}

function bytes(n: bigint | undefined): string {
  let v = Number(n ?? 0n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function bar(kind: string, done: bigint | number | undefined, total: bigint | number | undefined): string {
  const t = Number(total ?? 0);
  const pct = t > 0 ? Math.min(100, Math.round((Number(done ?? 0) / t) * 100)) : 0;
  return `<span class="bar" data-kind="${kind}" data-pct="${pct}"><span style="width:${pct}%"></span></span> ${pct}%`;
}

/** Runs a watch stream for as long as `active()`, resuming with the last token after errors. */
async function follow(
  open: (token: string) => AsyncIterable<{ type: JobEventType; resumeToken: string }>,
  onEvent: (event: any) => void,
  active: () => boolean,
  label: string,
): Promise<void> {
  let token = "";
  let attempt = 0;
  while (active()) {
    setStatus(attempt ? "reconnecting" : "connecting", attempt ? `reconnecting (attempt ${attempt})…` : "connecting…");
    try {
      for await (const event of open(token)) {
        if (!active()) return;
        if (event.type === JobEventType.SYNCED) {
          attempt = 0;
          setStatus("live", `live · ${label}`);
        }
        token = event.resumeToken || token;
        onEvent(event);
      }
      // The stream ended OK: a job page's job is finished.
      setStatus("finished", "finished");
      return;
    } catch (e) {
      if (!active()) return;
      const err = ConnectError.from(e);
      if (err.code === Code.Unauthenticated) {
        askForKey(err.rawMessage);
        return;
      }
      if (err.code === Code.NotFound || err.code === Code.InvalidArgument || err.code === Code.PermissionDenied) {
        setStatus("error", err.rawMessage);
        return;
      }
      attempt++;
      setStatus("reconnecting", `reconnecting (attempt ${attempt})…`);
      await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** Math.min(attempt, 5))));
    }
  }
}

let generation = 0;
let dirty = false;
let draw: () => void = () => {};
function schedule() {
  if (!dirty) {
    dirty = true;
    requestAnimationFrame(() => {
      dirty = false;
      draw();
    });
  }
}

// ---- the job list -------------------------------------------------------------------------

interface ListFilter {
  state: string;
  type: string;
  cluster: string;
}

function listView(filter: ListFilter) {
  const gen = ++generation;
  const jobs = new Map<string, Job>();
  const where: Record<string, string> = {};
  if (filter.type) where.type = filter.type;
  // The cluster by the name the table shows, or by its 24-hex id.
  if (filter.cluster) {
    if (/^[0-9a-f]{24}$/.test(filter.cluster)) where.cluster = filter.cluster;
    else where.cluster_name = filter.cluster;
  }
  const whereText = Object.keys(where).length ? JSON.stringify(where) : "";
  whereEl.textContent = whereText;
  app.innerHTML = `
    <div class="filters">
      <label>type <select id="f-type"><option value="">any</option>${Object.keys(JobType)
        .filter((k) => isNaN(Number(k)) && k !== "UNSPECIFIED")
        .map((k) => `<option ${k === filter.type ? "selected" : ""}>${k}</option>`)
        .join("")}</select></label>
      <label>cluster <input id="f-cluster" size="26" placeholder="name (or 24-hex id)" value="${esc(filter.cluster)}"></label>
      <span class="muted" id="shown"></span>
    </div>
    <div class="counts" id="counts"></div>
    <table><thead><tr><th>created</th><th>name</th><th>type</th><th>state</th><th>cluster</th><th>copy</th><th>message</th></tr></thead>
    <tbody id="rows"></tbody></table>`;
  const go = (f: Partial<ListFilter>) => {
    const next = { ...filter, ...f };
    const q = new URLSearchParams(Object.entries(next).filter(([, v]) => v) as [string, string][]);
    location.hash = `#/?${q}`;
  };
  (document.getElementById("f-type") as HTMLSelectElement).onchange = (e) =>
    go({ type: (e.target as HTMLSelectElement).value });
  (document.getElementById("f-cluster") as HTMLInputElement).onchange = (e) =>
    go({ cluster: (e.target as HTMLInputElement).value.trim() });
  const rowsEl = document.getElementById("rows")!;
  const countsEl = document.getElementById("counts")!;
  const shownEl = document.getElementById("shown")!;
  countsEl.onclick = (e) => {
    const state = (e.target as HTMLElement).closest<HTMLElement>(".count")?.dataset.state;
    if (state !== undefined) go({ state: state === filter.state ? "" : state });
  };
  rowsEl.onclick = (e) => {
    const id = (e.target as HTMLElement).closest<HTMLElement>("tr.job")?.dataset.jobId;
    if (id) location.hash = `#/job/${id}`;
  };

  // Kept incrementally, so a frame costs the same with 5,000 jobs as with 50: the order
  // (newest first; `created` never changes, so updates keep their place) and the counts.
  const order: Job[] = [];
  const counts = new Map<string, number>();
  let rowsDirty = true;
  const newer = (a: Job, b: Job) => created(b) - created(a) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
  const position = (j: Job) => {
    let lo = 0;
    let hi = order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (newer(order[mid], j) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  const count = (j: Job, by: number) => {
    counts.set(stateName(j.state), (counts.get(stateName(j.state)) ?? 0) + by);
    if (j.stalledSince) counts.set("STALLED", (counts.get("STALLED") ?? 0) + by);
  };
  // "STALLED" is not a state but a mark on PENDING and RUNNING jobs; it filters alike.
  const shows = (j: Job) =>
    !filter.state || (filter.state === "STALLED" ? !!j.stalledSince : stateName(j.state) === filter.state);
  const put = (j: Job) => {
    const old = jobs.get(j.id);
    const at = position(j);
    if (old) {
      count(old, -1);
      order[at] = j;
    } else {
      order.splice(at, 0, j);
    }
    count(j, 1);
    jobs.set(j.id, j);
    if (!old || filter.state || at < ROWS) rowsDirty = true;
  };
  const remove = (id: string) => {
    const old = jobs.get(id);
    if (!old) return;
    order.splice(position(old), 1);
    count(old, -1);
    jobs.delete(id);
    rowsDirty = true;
  };

  draw = () => {
    countsEl.innerHTML = [`<span class="count" data-state="" aria-pressed="${!filter.state}">all ${jobs.size}</span>`]
      .concat(
        ["PENDING", "RUNNING", "COMPLETED", "FAILED", "PARTIAL", "SKIPPED", "CANCELLED", "STALLED"].map(
          (s) =>
            `<span class="count" data-state="${s}" data-count="${counts.get(s) ?? 0}" aria-pressed="${filter.state === s}">${s.toLowerCase()} ${counts.get(s) ?? 0}</span>`,
        ),
      )
      .join("");
    if (!rowsDirty) return;
    rowsDirty = false;
    const total = filter.state ? (counts.get(filter.state) ?? 0) : jobs.size;
    const visible: Job[] = [];
    for (const j of order) {
      if (visible.length === ROWS) break;
      if (shows(j)) visible.push(j);
    }
    shownEl.textContent = `${visible.length} of ${total} shown, newest first`;
    rowsEl.innerHTML = visible
      .map((j) => {
        const cp = j.kubeCopyProgress;
        const copy = cp ? `${bar("bytes", done(cp.stats).bytes, cp.stats?.estimatedSize)} ${rateText(j.bytesPerSecond, j.eta)}` : "";
        return `<tr class="job" data-job-id="${j.id}"><td>${new Date(created(j)).toLocaleString()}</td><td>${esc(
          j.name ?? "",
        )}</td><td>${typeName(j.type)}</td><td><span class="state ${stateName(j.state)}">${stateName(j.state)}</span>${stalledBadge(
          j,
        )}</td><td>${esc(
          j.clusterName ?? j.cluster ?? "",
        )}</td><td>${copy}</td><td class="muted">${esc(j.message ?? "")}</td></tr>`;
      })
      .join("");
  };
  schedule();

  void follow(
    (token) => client.watchJobs({ where: whereText, resumeToken: token }),
    (event) => {
      if (event.type === JobEventType.HEARTBEAT || event.type === JobEventType.SYNCED || !event.job) return;
      if (event.type === JobEventType.DELETED) remove(event.job.id);
      else put(event.job);
      schedule();
    },
    () => gen === generation,
    // The badge says which jobs are live: all, or those the filters pick.
    filter.state || whereText
      ? `jobs where ${[whereText, filter.state ? `state ${filter.state}` : ""].filter(Boolean).join(", ")}`
      : "all jobs",
  );
}

// ---- one job --------------------------------------------------------------------------------

function cancellable(j: Job) {
  return j.state === JobState.RUNNING && (j.type === JobType.K8S_SNAP || j.type === JobType.K8S_COPY);
}

/** The Cancel button of a cancellable job; disabled, saying why, when the key's role may not. */
function cancelButton(j: Job) {
  if (!cancellable(j)) return "";
  const denied = mayNot("cancel");
  if (!denied) return '<button id="cancel">Cancel</button>';
  const why = `your key's role (${caller?.role}) may not ${denied.description}`;
  return `<button id="cancel" disabled title="${esc(why)}">Cancel</button> <span class="muted" id="cancel-denied">${esc(why)}</span>`;
}

function jobView(id: string) {
  const gen = ++generation;
  whereEl.textContent = "";
  let job: Job | undefined;
  const pvcs = new Map<string, PvcProgress>();
  let error = "";
  app.innerHTML = `<p><a href="#/">← all jobs</a></p><div id="job"></div>`;
  const el = document.getElementById("job")!;
  el.onclick = async (e) => {
    if ((e.target as HTMLElement).id !== "cancel" || !job) return;
    try {
      job = await client.cancelJob({ id: job.id });
      error = "";
    } catch (err) {
      const e = ConnectError.from(err);
      // A role without the permission: say what it may not do.
      error = e.code === Code.PermissionDenied ? `not allowed: ${e.rawMessage}` : e.rawMessage;
    }
    schedule();
  };
  draw = () => {
    if (!job) {
      el.innerHTML = error ? `<p id="error">${esc(error)}</p>` : "<p class='muted'>loading…</p>";
      return;
    }
    const j = job;
    const field = (k: string, v: string | undefined) => (v ? `<div class="muted">${k}</div><div>${esc(v)}</div>` : "");
    const cp = j.kubeCopyProgress;
    const sp = j.kubeSnapshotProgress;
    el.innerHTML = `
      <h2>${esc(j.name ?? j.id)} <span class="state ${stateName(j.state)}" id="job-state">${stateName(j.state)}</span>
        ${stalledBadge(j)} ${cancelButton(j)}</h2>
      ${error ? `<p id="error">${esc(error)}</p>` : ""}
      ${stalledNote(j)}
      <div class="fields">
        ${field("id", j.id)}${field("type", typeName(j.type))}${field("message", j.message)}
        ${field("cluster", [j.clusterName, j.cluster].filter(Boolean).join(" · "))}
        ${field("backup", [j.backupdefName, j.backupdef].filter(Boolean).join(" · "))}
        ${field("started", fmtTime(j.startTime))}${field("ended", fmtTime(j.endTime))}
        ${j.startTime !== undefined && j.endTime === undefined ? `<div class="muted">elapsed</div><div id="elapsed">${span(Date.now() / 1000 - Number(j.startTime))}</div>` : ""}
        ${j.durationSeconds !== undefined ? `<div class="muted">took</div><div id="duration">${span(Number(j.durationSeconds))}${j.averageBytesPerSecond !== undefined ? `, ${bytes(j.averageBytesPerSecond)}/s on average` : ""}</div>` : ""}
        ${j.bytesPerSecond !== undefined ? `<div class="muted">rate</div><div id="job-rate">${rateText(j.bytesPerSecond, j.eta)}</div>` : ""}
        ${field("resources", j.numTotalResources !== undefined ? `${j.numBackupResources ?? 0n} of ${j.numTotalResources}` : "")}
        ${cp ? `<div class="muted">copy</div><div>${cp.completedPvs}/${cp.totalPvs} PVCs · ${bar("bytes", done(cp.stats).bytes, cp.stats?.estimatedSize)} ${bytes(done(cp.stats).bytes)} of ${bytes(cp.stats?.estimatedSize)}</div>` : ""}
        ${sp ? `<div class="muted">snapshots</div><div>${sp.completedPvs}/${sp.totalPvs} done${sp.skippedPvs ? `, ${sp.skippedPvs} skipped` : ""}</div>` : ""}
      </div>
      <h3>Volumes</h3>
      <table><thead><tr><th>namespace/name</th><th>op</th><th>state</th><th>bytes</th><th>files</th><th>rate · took</th><th>snapshot</th><th>message</th></tr></thead><tbody>
      ${[...pvcs.values()]
        .map(
          (p) => `<tr class="pvc" data-pvc="${esc(p.namespace)}/${esc(p.name)}"><td>${esc(p.namespace)}/${esc(p.name)}</td>
          <td>${p.opType ? OpType[p.opType] : ""}</td><td>${pvcStateName(p.state)}</td>
          <td>${bar("bytes", done(p.stats).bytes, p.stats?.estimatedSize)} ${bytes(done(p.stats).bytes)} of ${bytes(p.stats?.estimatedSize)}</td>
          <td>${bar("files", done(p.stats).files, p.stats?.estimatedNumberOfFiles)} ${done(p.stats).files} of ${p.stats?.estimatedNumberOfFiles ?? 0n}</td>
          <td>${p.activeTime && p.finishTime ? `<span class="took">took ${spanBetween(p.activeTime, p.finishTime)}</span>` : rateText(p.bytesPerSecond, p.eta)}</td>
          <td>${p.snapshotProgressPercentage !== undefined ? bar("snapshot", p.snapshotProgressPercentage, 100) : ""}</td>
          <td class="muted">${esc(p.message ?? "")}</td></tr>`,
        )
        .join("")}
      </tbody></table>
      <h3>Activity</h3>
      <ol class="activity" id="activity">${activityItems(j)}</ol>`;
  };
  schedule();
  // Elapsed time and the ETA count down between events.
  const tick = setInterval(() => (gen === generation ? schedule() : clearInterval(tick)), 1000);
  void follow(
    (token) => client.watchJob({ id, resumeToken: token }),
    (event) => {
      if (event.job) job = event.job;
      if (event.pvc) pvcs.set(`${event.pvc.namespace}/${event.pvc.name}`, event.pvc);
      schedule();
    },
    () => gen === generation,
    "this job",
  ).then(() => {
    if (gen === generation && statusEl.dataset.state === "error") {
      error = statusEl.textContent ?? "";
      schedule();
    }
  });
}

async function route() {
  if (!caller) {
    const gen = ++generation;
    try {
      caller = await access.getCaller({});
    } catch (e) {
      const err = ConnectError.from(e);
      if (err.code === Code.Unauthenticated) return askForKey(err.rawMessage);
      // The server may be older or unreachable: carry on; the calls themselves will say.
    }
    if (gen !== generation) return;
    showCaller();
  }
  const hash = location.hash.replace(/^#/, "") || "/";
  const job = hash.match(/^\/job\/([0-9a-fA-F]{24})$/);
  if (job) return jobView(job[1]);
  const q = new URLSearchParams(hash.split("?")[1] ?? "");
  listView({ state: q.get("state") ?? "", type: q.get("type") ?? "", cluster: q.get("cluster") ?? "" });
}

window.addEventListener("hashchange", () => void route());
void route();
