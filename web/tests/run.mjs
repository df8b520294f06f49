// Bundles the TypeScript tests (they import the generated code) with esbuild and runs them with
// Node's test runner. `npm test`; needs a built server: JOBTRACK_BIN (default ../target/debug/jobtrack).
import { build } from "esbuild";
import { readdirSync, rmSync } from "node:fs";
import { spawnSync } from "node:child_process";

const only = process.argv.slice(2);
const tests = readdirSync("tests").filter((f) => f.endsWith(".test.ts") && (!only.length || only.some((o) => f.includes(o))));
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
const run = spawnSync(process.execPath, ["--test", "--test-concurrency=1", ...files], { stdio: "inherit" });
process.exit(run.status ?? 1);
