/**
 * The remote agent: started by outrun's local side over SSH (as root), it speaks
 * RPC on its stdin/stdout. For a "run" call it enters a private mount namespace,
 * mounts the FUSE mirror of the local `/` (each request forwarded to the local
 * side), and starts the exec helper: a second process that binds the remote's
 * /dev, /proc, /sys and /run into the mirror, chroots into it, takes the local
 * user's uid/gid/groups and execs the command. Output goes back as events; the
 * exit status is the call's answer. When the connection ends, for whatever
 * reason, the command is killed and the namespace (with every mount) goes with
 * this process.
 */
import { FuseSession, mountFuse, MS_PRIVATE, MS_REC, sysMount, unmountFuse } from "../fuse/mod.ts";
import { ProxyFs } from "../fs/proxy.ts";
import { CachedFs } from "../fs/cache/mirror.ts";
import { CacheStore } from "../fs/cache/store.ts";
import { CHUNK_SIZE } from "../fs/cache/protocol.ts";
import type { Filesystem } from "../fuse/mod.ts";
import { RpcPeer, type Value } from "../rpc/mod.ts";
import { check, CLONE_NEWNS, close, libc } from "../sys/libc.ts";
import { VERSION } from "../version.ts";
import {
  EVENTS,
  type ExecPlan,
  type RemoteStats,
  type RunRequest,
  type RunResult,
  type WindowSize,
} from "./protocol.ts";
import { openPty, ptyWriter, readPty, setWindowSize } from "../sys/pty.ts";

const BINDS = ["/dev", "/proc", "/sys", "/run"];
const DEBUG = Deno.env.get("OUTRUN_DEBUG") === "1";
const t0 = performance.now();

/** With OUTRUN_DEBUG=1: a timestamped line in /tmp/outrun-agent.log on the remote. */
export function trace(line: string): void {
  if (!DEBUG) return;
  Deno.writeTextFileSync(
    "/tmp/outrun-agent.log",
    `${(performance.now() - t0).toFixed(1)} ms ${line}\n`,
    {
      append: true,
    },
  );
}

export async function runAgent(agentScript: string, runtime: string[]): Promise<number> {
  const peer = new RpcPeer(
    { readable: Deno.stdin.readable, writable: Deno.stdout.writable },
    { program: `outrun-agent ${VERSION}` },
  );
  let cleanup: (() => Promise<void>) | null = null;
  peer.handle("session.run", async (args) => {
    const req = args as unknown as RunRequest;
    // From here on, what the local side sends for the command (stdin, its end,
    // signals, window sizes) is kept until the command exists: the cache's
    // validation round trip comes first.
    const events = new HeldEvents(peer, [
      EVENTS.stdin,
      EVENTS.stdinEof,
      EVENTS.signal,
      EVENTS.winch,
    ]);
    const stats: RemoteStats = { calls: {}, cache: null, validateMs: 0, mountMs: 0, runMs: 0 };
    const cache = req.cache ? await openCache(peer, req, stats) : null;
    try {
      const run = startRun(
        peer,
        req,
        events,
        cache?.fs ?? new ProxyFs(peer),
        agentScript,
        runtime,
        stats,
      );
      cleanup = run.cleanup;
      try {
        const result = await run.done;
        stats.calls = { ...peer.callsByMethod };
        delete stats.calls["session.ping"];
        return { ...result, stats, used: cache?.fs.used() ?? null } as unknown as Value;
      } finally {
        await run.cleanup();
        cleanup = null;
      }
    } finally {
      if (cache) {
        stats.cache = {
          ...stats.cache!,
          metaHits: cache.fs.hits.meta,
          metaMisses: cache.fs.misses.meta,
          chunkHits: cache.fs.hits.chunk,
          chunkMisses: cache.fs.misses.chunk,
        };
        try {
          cache.fs.finish();
          stats.cache.evicted = cache.store.evict({
            maxEntries: req.cache!.maxEntries,
            maxBytes: req.cache!.maxBytes,
          });
        } catch (e) {
          trace(`cache: ${e}`);
        }
        cache.store.close();
      }
    }
  });
  const heartbeat = startHeartbeat(peer);
  await peer.closed;
  clearInterval(heartbeat);
  if (cleanup) await (cleanup as () => Promise<void>)();
  return 0;
}

/** Events kept in order until a sink is attached, then handed to it as they come. */
class HeldEvents {
  #queue: [string, Value][] = [];
  #sink: ((name: string, args: Value) => void) | null = null;

  constructor(peer: RpcPeer, names: string[]) {
    for (const name of names) {
      peer.onEvent(name, (args) => {
        if (this.#sink) this.#sink(name, args);
        else this.#queue.push([name, args]);
      });
    }
  }

  attach(sink: (name: string, args: Value) => void): void {
    this.#sink = sink;
    for (const [name, args] of this.#queue.splice(0)) sink(name, args);
  }
}

/** Seconds between pings, and how long an unanswered one may take before we give up. */
const PING_EVERY_S = 3;
const PING_LIMIT_S = 10;

/**
 * sshd alone notices a silently cut link only after hours (TCP keepalive); the agent
 * pings the local side and ends the session (killing the command, dropping the
 * mounts) when an answer is late.
 */
function startHeartbeat(peer: RpcPeer): ReturnType<typeof setInterval> {
  let waiting = false;
  return setInterval(() => {
    if (waiting) return;
    waiting = true;
    const late = setTimeout(() => {
      trace("heartbeat: no answer, closing");
      peer.close(new Error(`no answer from the local side for ${PING_LIMIT_S} s`));
    }, PING_LIMIT_S * 1000);
    peer.call("session.ping", null).then(() => {
      clearTimeout(late);
      waiting = false;
    }, () => clearTimeout(late));
  }, PING_EVERY_S * 1000);
}

/** Opens the store and validates what it holds for this client: one round trip. */
async function openCache(peer: RpcPeer, req: RunRequest, stats: RemoteStats) {
  const settings = req.cache!;
  const t = performance.now();
  const dir = settings.dir.replace(/^~(?=\/|$)/, Deno.env.get("HOME") ?? "/root");
  const store = new CacheStore(dir);
  try {
    const fs = new CachedFs({
      peer,
      inner: new ProxyFs(peer),
      store,
      client: settings.client,
      prefixes: settings.prefixes,
      log: trace,
    });
    const { held, stale } = await fs.validate({
      exe: req.exe,
      prefetch: settings.prefetch,
      ahead: [...BINDS, req.cwd, ...(req.exe ? [req.exe] : [])],
    });
    stats.validateMs = performance.now() - t;
    stats.cache = {
      held,
      stale,
      evicted: 0,
      metaHits: 0,
      metaMisses: 0,
      chunkHits: 0,
      chunkMisses: 0,
    };
    trace(`cache: ${held} held, ${stale} stale, validated in ${stats.validateMs.toFixed(1)} ms`);
    return { fs, store };
  } catch (e) {
    store.close();
    throw e;
  }
}

function startRun(
  peer: RpcPeer,
  req: RunRequest,
  events: HeldEvents,
  fs: Filesystem,
  agentScript: string,
  runtime: string[],
  stats: RemoteStats,
) {
  // Only this (the main) thread moves to the new namespace; the mounts below are made
  // from it, and children it spawns start in it.
  trace("run: unshare");
  check("unshare", libc().unshare(CLONE_NEWNS));
  sysMount("none", "/", null, MS_REC | MS_PRIVATE, null);
  const tMount = performance.now();
  const root = Deno.makeTempDirSync({ prefix: "outrun-root-" });
  const mount = mountFuse(root, { fsName: "outrun", subtype: "outrun" });
  stats.mountMs = performance.now() - tMount;
  const session = new FuseSession(mount.fd, fs, {
    // Reads of mapped libraries no bigger than a cache chunk: what is fetched is used.
    maxReadahead: CHUNK_SIZE,
    idleWaitMs: 0,
    debug: DEBUG,
    log: (m) => trace(m),
  });
  const serving = session.serve().catch((err) => console.error(`outrun-agent: fuse: ${err}`));

  trace("mounted; spawning the exec helper");
  const pty = req.tty ? openPty(req.tty.rows, req.tty.cols) : null;
  const { cache: _, ...what } = req;
  const plan: ExecPlan = { ...what, root, binds: BINDS, tty: pty?.slavePath ?? null };
  const tRun = performance.now();
  const child = new Deno.Command(runtime[0], {
    args: [
      ...runtime.slice(1),
      "run",
      "-A",
      "--quiet",
      "--no-config",
      agentScript,
      "exec",
      JSON.stringify(plan),
    ],
    clearEnv: true,
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", DENO_NO_UPDATE_CHECK: "1" },
    // With a pty the helper's stdin and stdout become the terminal; its stderr stays
    // a pipe until then, for errors before it gets there.
    stdin: pty ? "null" : "piped",
    stdout: pty ? "null" : "piped",
    stderr: "piped",
  }).spawn();

  let exited = false;
  const relay = async (stream: AsyncIterable<Uint8Array>, event: string) => {
    for await (const chunk of stream) peer.event(event, chunk);
  };
  let relays: Promise<unknown>;
  const on: Partial<Record<string, (args: Value) => void>> = {
    [EVENTS.signal]: (name) => {
      try {
        child.kill(name as Deno.Signal);
      } catch { /* already gone */ }
    },
  };
  if (pty) {
    const write = ptyWriter(pty.master);
    on[EVENTS.stdin] = (data) => void write(data as Uint8Array);
    on[EVENTS.winch] = (size) => {
      const { rows, cols } = size as unknown as WindowSize;
      setWindowSize(pty.master, rows, cols);
    };
    relays = Promise.all([
      relay(readPty(pty.master, () => exited), EVENTS.stdout),
      relay(child.stderr, EVENTS.stderr),
    ]);
  } else {
    const stdin = child.stdin.getWriter();
    on[EVENTS.stdin] = (data) => void stdin.write(data as Uint8Array).catch(() => {});
    on[EVENTS.stdinEof] = () => void stdin.close().catch(() => {});
    relays = Promise.all([
      relay(child.stdout, EVENTS.stdout),
      relay(child.stderr, EVENTS.stderr),
    ]);
  }
  events.attach((name, args) => on[name]?.(args));

  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    exited = true;
    await relays.catch(() => {});
    // The master's close hangs up whatever still holds the terminal.
    if (pty) closeQuietly(pty.master);
    unmountFuse(mount);
    session.close();
    await serving;
    try {
      Deno.removeSync(root);
    } catch { /* still busy: the namespace goes with this process anyway */ }
  };
  peer.closed.then(cleanup);

  const done = (async (): Promise<Omit<RunResult, "stats" | "used">> => {
    const status = await child.status;
    stats.runMs = performance.now() - tRun;
    trace(`helper exited ${JSON.stringify(status)}`);
    exited = true;
    await relays;
    return { code: status.signal ? null : status.code, signal: status.signal ?? null };
  })();
  return { done, cleanup };
}

function closeQuietly(fd: number): void {
  try {
    close(fd);
  } catch { /* closed */ }
}
