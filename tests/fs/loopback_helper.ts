/**
 * Runs `outrun debug loopback SRC MNT` as its own process for tests (a process
 * must never make blocking calls into a FUSE mount it serves itself) and runs
 * shell commands against the mount.
 */
import { removeTree } from "../remove_tree.ts";
import { mountsAt } from "../../lib/fuse/mount.ts";
import { eventually } from "../eventually.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

export interface Loopback {
  src: string;
  mnt: string;
  server: Deno.ChildProcess;
  stop(): Promise<void>;
}

export function fuseMounted(mnt: string): boolean {
  return mountsAt(mnt).some((m) => m.fstype === "fuse.outrun");
}

export function waitFor(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  return eventually(what, cond, ms, 20);
}

/**
 * Requests the kernel has sent to the FUSE server at `mnt` and not had answered
 * (fusectl's `waiting` of its connection, named by the mount's device minor):
 * how a test knows a client is blocked on the mount, without touching it.
 */
export function fuseWaiting(mnt: string): number {
  const m = mountsAt(mnt).filter((m) => m.fstype === "fuse.outrun").at(-1);
  if (!m) throw new Error(`no FUSE mount at ${mnt}`);
  mountFusectl();
  return Number(Deno.readTextFileSync(`/sys/fs/fuse/connections/${m.minor}/waiting`));
}

/** fusectl where a machine has not mounted it (systemd does; a bare boot may not). */
function mountFusectl(): void {
  const at = "/sys/fs/fuse/connections";
  if (mountsAt(at).some((m) => m.fstype === "fusectl")) return;
  const out = new Deno.Command("mount", { args: ["-t", "fusectl", "none", at] }).outputSync();
  if (!out.success) throw new Error(`mount fusectl: ${new TextDecoder().decode(out.stderr)}`);
}

/**
 * How a test mirror is served: `loopback` in one process; `proxy` forwards every
 * request over RPC to a `serve-fs` child (outrun's data path without SSH).
 */
export type Mode = "loopback" | "proxy";
export const MODES: readonly Mode[] = ["loopback", "proxy"];

export function startServer(
  src: string,
  mnt: string,
  extra: string[] = [],
  mode: Mode = "loopback",
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN, "debug", mode, src, mnt, ...extra],
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
}

/** A fresh src dir (or `src` given) mirrored at a fresh mount point. */
export async function startLoopback(
  src?: string,
  extra: string[] = [],
  mode: Mode = "loopback",
): Promise<Loopback> {
  const base = await Deno.makeTempDir({ prefix: "outrun-lb-" });
  await Deno.chmod(base, 0o755); // other users' tests walk into it
  const source = src ?? `${base}/src`;
  if (!src) await Deno.mkdir(source);
  const mnt = `${base}/mnt`;
  await Deno.mkdir(mnt);
  const server = startServer(source, mnt, extra, mode);
  await waitFor(`mount at ${mnt}`, () => fuseMounted(mnt));
  // The mount is there before INIT is answered; a stat waits for INIT, so this is ready.
  await Deno.stat(mnt);
  let stopped = false;
  return {
    src: source,
    mnt,
    server,
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        server.kill("SIGTERM");
      } catch { /* already gone */ }
      const status = await server.status;
      if (!status.success && status.signal !== "SIGKILL") {
        throw new Error(`loopback server exited with ${JSON.stringify(status)}`);
      }
      if (fuseMounted(mnt)) throw new Error(`${mnt} still mounted after stop`);
      await removeTree(base);
    },
  };
}

export interface ShellResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function sh(script: string, env: Record<string, string> = {}): Promise<ShellResult> {
  const out = await new Deno.Command("bash", {
    args: ["-euo", "pipefail", "-c", script],
    env,
    stdin: "null",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** Runs `script`, failing the test with its output when it exits non-zero. */
export async function shOk(script: string, env: Record<string, string> = {}): Promise<string> {
  const r = await sh(script, env);
  if (r.code !== 0) throw new Error(`exit ${r.code}: ${script}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** Runs `fn` against a fresh loopback, always stopping it (and checking it unmounted). */
export async function withLoopback(
  fn: (lb: Loopback) => Promise<void>,
  options: { src?: string; extra?: string[]; mode?: Mode } = {},
): Promise<void> {
  const lb = await startLoopback(options.src, options.extra, options.mode);
  try {
    await fn(lb);
  } finally {
    await lb.stop();
  }
}

/** One test per mode: the same checks through the loopback and through the RPC proxy. */
export function fsTest(
  name: string,
  body: (lb: Loopback) => Promise<void>,
  options: { src?: string; extra?: string[] } = {},
): void {
  for (const mode of MODES) {
    Deno.test(`${mode}: ${name}`, () => withLoopback(body, { ...options, mode }));
  }
}
