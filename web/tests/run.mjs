// Bundles the TypeScript tests (they import the generated code) with esbuild and runs them with
// Node's test runner. `npm test`; needs a built server: JOBTRACK_BIN (default ../target/debug/jobtrack).
import { build } from "esbuild";
import { readdirSync, rmSync } from "node:fs";
import { spawnSync } from "node:child_process";

// `node tests/run.mjs --bench` runs the *.bench.ts measurements instead of the tests.
const bench = process.argv.includes("--bench");
const only = process.argv.slice(2).filter((a) => a !== "--bench");
const suffix = bench ? ".bench.ts" : ".test.ts";
const tests = readdirSync("tests").filter((f) => f.endsWith(suffix) && (!only.length || only.some((o) => f.includes(o))));
rmSync(".test-build", { recursive: true, force: true });
await build({
  entryPoints: tests.map((t) => `tests/${t}`),
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  outdir: ".test-build",
  outExtension: { ".js": ".mjs" },
  external: ["playwright-core", "esbuild"],
  logLevel: "warning",
});
const files = tests.map((t) => `.test-build/${t.replace(/\.ts$/, ".mjs")}`);
// Every test has a deadline (its waits fail sooner, with a message: tests/wait.ts).
const args = bench ? files : ["--test", "--test-concurrency=1", "--test-timeout=120000", ...files];
const run = spawnSync(process.execPath, args, { stdio: "inherit" });
process.exit(run.status ?? 1);
