// The committed build must be what the committed sources produce: generated code from proto/
// and the embedded bundle in dist/. Fails when either is stale (run scripts/build_web.sh).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

test("the generated message code matches proto/", () => {
  const out = mkdtempSync(join(tmpdir(), "jobtrack-gen-"));
  execFileSync("npx", ["buf", "generate", "../proto", "--template",
    JSON.stringify({ version: "v2", plugins: [{ local: "protoc-gen-es", out, opt: "target=ts" }] })], { stdio: "pipe" });
  const fresh = files(out).map((f) => relative(out, f)).sort();
  const committed = files("src/gen").map((f) => relative("src/gen", f)).sort();
  assert.deepEqual(committed, fresh);
  for (const f of fresh) {
    assert.equal(readFileSync(join("src/gen", f), "utf8"), readFileSync(join(out, f), "utf8"),
      `src/gen/${f} is stale: run scripts/build_web.sh`);
  }
});

test("the embedded bundle matches the sources", () => {
  const out = mkdtempSync(join(tmpdir(), "jobtrack-dist-"));
  execFileSync("npx", ["esbuild", "src/main.ts", "--bundle", "--minify", "--format=esm", "--target=es2022",
    `--outfile=${join(out, "app.js")}`], { stdio: "pipe" });
  assert.equal(readFileSync("dist/app.js", "utf8"), readFileSync(join(out, "app.js"), "utf8"),
    "web/dist/app.js is stale: run scripts/build_web.sh");
  assert.equal(readFileSync("dist/index.html", "utf8"), readFileSync("src/index.html", "utf8"),
    "web/dist/index.html is stale: run scripts/build_web.sh");
});
