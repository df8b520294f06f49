// Starts the real jobtrack binary on a free port with a fresh SQLite database, for the tests.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const BIN = process.env.JOBTRACK_BIN ?? "../target/debug/jobtrack";

export interface Server {
  url: string;
  listen: string;
  database: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

export function freshDatabase(): string {
  return join(mkdtempSync(join(tmpdir(), "jobtrack-web-")), "jobtrack.db");
}

/** Starts `jobtrack serve` on `listen` (default: a free port), with `flags` besides, and waits
 * for its address. */
export function startServer(database = freshDatabase(), listen = "127.0.0.1:0", flags: string[] = []): Promise<Server> {
  return new Promise((resolve, reject) => {
    const args = ["serve", "--listen", listen, "--database", database, "--heartbeat-secs", "1", ...flags];
    const proc = spawn(BIN, args, {
      env: { ...process.env, RUST_LOG: "info", NO_COLOR: "1" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let log = "";
    const timer = setTimeout(() => reject(new Error(`the server did not start:\n${log}`)), 30000);
    proc.stderr!.on("data", (chunk) => {
      log += chunk;
      const m = log.match(/local_addr=(\S+)/);
      if (m && timer) {
        clearTimeout(timer);
        const addr = m[1];
        resolve({
          url: `http://${addr}`,
          listen: addr,
          database,
          proc,
          stop: () =>
            new Promise((done) => {
              proc.once("exit", () => done());
              proc.kill("SIGTERM");
            }),
        });
      }
    });
    proc.once("error", reject);
  });
}
