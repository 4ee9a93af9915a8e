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
import {
  type FuseMount,
  FuseSession,
  mountFuse,
  MS_PRIVATE,
  MS_REC,
  sysMount,
  unmountFuse,
} from "../fuse/mod.ts";
import { ProxyFs } from "../fs/proxy.ts";
import { bulkCodec } from "../fs/cache/chunks.ts";
import { CachedFs } from "../fs/cache/mirror.ts";
import { CHANGED_EVENT, type Invalidation } from "../fs/file_wire.ts";
import { CacheStore } from "../fs/cache/store.ts";
import {
  CACHE_EVENTS,
  type CacheCalls,
  type CacheEvents,
  CHUNK_SIZE,
  type UsedReport,
} from "../fs/cache/protocol.ts";
import type { Filesystem } from "../fuse/mod.ts";
import { RpcPeer, Tunnels, TypedPeer, type Value } from "../rpc/mod.ts";
import { check, CLONE_NEWNS, libc } from "../sys/libc.ts";
import {
  closeQuietly,
  openPipe,
  type Pipe,
  type PipeWriter,
  pipeWriter,
  procFdPath,
  readPipe,
} from "../sys/pipe.ts";
import { growPipe } from "../sys/files.ts";
import { VERSION } from "../version.ts";
import {
  aheadPaths,
  BIND_DIRS as BINDS,
  type CacheSettings,
  EVENTS,
  type ExecPlan,
  type RemoteStats,
  type RunRequest,
  type RunResult,
  sessionPeer,
  type WindowSize,
} from "./protocol.ts";
import { openPty, ptyWriter, readPty, setWindowSize } from "../sys/pty.ts";
import { describeCall } from "./describe.ts";
import { PING, startHeartbeat } from "./heartbeat.ts";
import { Warden } from "./warden.ts";

const DEBUG = Deno.env.get("OUTRUN_DEBUG") === "1";
const VERBOSE = Number(Deno.env.get("OUTRUN_VERBOSE") ?? 0) > 0;
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
  // First, in the host's mount namespace: what this process starts dies with it.
  const warden = Warden.start();
  // Pushes of megabytes come through stdin: see growPipe (sshd otherwise holds them).
  const pipes = [0, 1].map((fd) => growPipe(fd));
  trace(`pipes: stdin ${pipes[0]}, stdout ${pipes[1]} bytes`);
  const peer = new RpcPeer(
    // Each write to stdout is done when it resolves: frames may use buffers again.
    { readable: Deno.stdin.readable, writable: Deno.stdout.writable, reusable: true },
    {
      program: `outrun-agent ${VERSION}`,
      // -v: each call to the local side, with its round trip, on stderr (the local
      // side shows it among its own -v lines).
      traceCalls: VERBOSE
        ? (method, args, ms, err) => {
          if (method !== PING) {
            console.error(
              `remote: ${describeCall(method, args, ms, err)}`,
            );
          }
        }
        : undefined,
    },
  );
  const spawnHelper = () => startHelper(agentScript, runtime, warden);
  /** Runs in progress: each one's cleanup (kill the command, stop relaying). */
  const runs = new Set<() => Promise<void>>();
  let mirror: Mirror | null = null;
  let cache: Cache | null = null;

  // One command per connection, outrun's usual way: validate, mount, run, unmount.
  const session = sessionPeer(peer);
  session.handle("session.run", async (req) => {
    // From here on, what the local side sends for the command (stdin, its end,
    // signals, window sizes) is kept until the command exists: the cache's
    // validation round trip comes first.
    const events = new HeldEvents(peer, COMMAND_EVENTS);
    const stats = emptyStats();
    cache = req.cache ? openCache(peer, req.cache) : null;
    try {
      // The helper (a second Deno process) starts while the cache validates.
      const fs = cache?.fs ?? proxyFs(peer);
      mirror = Mirror.open(fs, spawnHelper, false);
      followChanges(peer, fs, mirror);
      warden.removeAfter(mirror.root);
      stats.mountMs = mirror.mountMs;
      return await runCommand({ peer, main: peer, req, events, mirror, cache, stats, runs });
    } finally {
      await mirror?.close();
      mirror = null;
      const evicted = closeCache(cache, req.cache);
      if (stats.cache) stats.cache.evicted = evicted;
      cache = null;
    }
  });

  // Many commands through one connection (ControlMaster): the mirror stays mounted
  // and a helper stays ready; each command comes through a tunnel as its own "run".
  session.handle("session.serve", async (req) => {
    if (mirror) throw new Error("already serving");
    // The kernel keeps what it learns across commands: what a command's validation
    // finds stale is dropped from its caches before that command starts.
    let shared: Mirror | null = null;
    const invalidate = (stale: Invalidation[]) => shared?.invalidate(stale) ?? Promise.resolve();
    cache = req.cache ? openCache(peer, req.cache, invalidate) : null;
    const fs = cache?.fs ?? proxyFs(peer);
    mirror = shared = Mirror.open(fs, spawnHelper, true);
    followChanges(peer, fs, shared);
    warden.removeAfter(shared.root);
    if (cache) await validate(cache.fs, null, emptyStats());
    const sharedCache = cache;
    new Tunnels(peer, (transport) => {
      const run = new RpcPeer(transport, { program: `outrun-agent ${VERSION}` });
      const events = new HeldEvents(run, COMMAND_EVENTS);
      sessionPeer(run).handle("session.run", async (req) => {
        const stats = emptyStats();
        try {
          return await runCommand({
            peer: run,
            main: peer,
            req,
            events,
            mirror: shared,
            cache: sharedCache,
            stats,
            runs,
          });
        } finally {
          // The answer goes out before the tunnel closes.
          setTimeout(() => run.close(), 0);
        }
      });
    });
    return null;
  });

  // First of all when the connection ends: requests the mirror has not answered fail
  // at once, so that nothing waits on them, killed or not (a process in a page's
  // wait does not even die until then).
  peer.closed.then(() => (mirror as Mirror | null)?.abort());

  peer.handle(PING, () => null);
  // Ends the session (killing the command, dropping the mounts) when the local side
  // goes silent.
  startHeartbeat(peer, "the local side", (why) => {
    trace(`heartbeat: ${why}, closing`);
    peer.close(new Error(why));
  });
  await peer.closed;
  await Promise.all([...runs].map((cleanup) => cleanup()));
  await (mirror as Mirror | null)?.close();
  closeCache(cache, null);
  await warden.flushed();
  return 0;
}

const COMMAND_EVENTS = [
  EVENTS.stdin,
  EVENTS.stdinEof,
  EVENTS.signal,
  EVENTS.winch,
  EVENTS.outputClosed,
];

function emptyStats(): RemoteStats {
  return { calls: {}, cache: null, validateMs: 0, mountMs: 0, runMs: 0 };
}

function emptyCacheStats(): NonNullable<RemoteStats["cache"]> {
  return {
    held: 0,
    stale: 0,
    evicted: 0,
    metaHits: 0,
    metaMisses: 0,
    chunkHits: 0,
    directOpens: 0,
    chunkMisses: 0,
    checkedFirst: 0,
    restWaits: 0,
  };
}

interface Cache {
  fs: CachedFs;
  store: CacheStore;
}

/** The local files through `peer`; a write or removal that fails late is told on stderr. */
function proxyFs(peer: RpcPeer): ProxyFs {
  return new ProxyFs(peer, (e, what) => {
    const line = what
      ? `outrun: ${what} failed after the program was told it was done (${e.message})\n`
      : `outrun: a write failed after write() had returned (${e.message}); ` +
        `the program is told by its next write or close() of the file\n`;
    peer.event(EVENTS.stderr, new TextEncoder().encode(line));
  }, bulkCodec());
}

/**
 * Local changes the local side's watch tells of (lib/fs/change_watch.ts): the file
 * system's copies of them go, then the kernel's.
 */
function followChanges(peer: RpcPeer, fs: CachedFs | ProxyFs, mirror: Mirror): void {
  peer.onEvent(CHANGED_EVENT, (args) => {
    const changes = args as unknown as Invalidation[];
    fs.changed(changes);
    mirror.invalidate(changes).catch(() => {});
  });
}

/** Opens the store; `validate` then says what of it still holds. */
function openCache(
  peer: RpcPeer,
  settings: CacheSettings,
  invalidate?: (stale: Invalidation[]) => Promise<void>,
): Cache {
  const dir = settings.dir.replace(/^~(?=\/|$)/, Deno.env.get("HOME") ?? "/root");
  const store = new CacheStore(dir);
  try {
    const fs = new CachedFs({
      peer,
      inner: proxyFs(peer),
      store,
      client: settings.client,
      prefixes: settings.prefixes,
      invalidate,
      passthrough: settings.passthrough ?? true,
      log: trace,
    });
    return { fs, store };
  } catch (e) {
    store.close();
    throw e;
  }
}

/** Marks what was used (LRU), evicts down to the limits (when given), closes the store. */
function closeCache(cache: Cache | null, settings: CacheSettings | null): number {
  if (!cache) return 0;
  let evicted = 0;
  cache.fs.end();
  try {
    cache.fs.finish();
    if (settings) {
      evicted = cache.store.evict({
        maxEntries: settings.maxEntries,
        maxBytes: settings.maxBytes,
      });
      cache.store.trimHeld(settings.client);
    }
  } catch (e) {
    trace(`cache: ${e}`);
  }
  cache.store.close();
  return evicted;
}

/** What the store holds for this client, checked in one round trip (and pushes taken). */
async function validate(fs: CachedFs, req: RunRequest | null, stats: RemoteStats): Promise<void> {
  const t = performance.now();
  const { held, stale } = await fs.validate({
    exe: req?.exe ?? null,
    prefetch: req?.cache?.prefetch ?? true,
    ahead: req ? aheadPaths(req) : BINDS,
  }, req?.validatedAhead ?? false);
  stats.validateMs = performance.now() - t;
  stats.cache = { ...emptyCacheStats(), held, stale };
  trace(`cache: ${held} held, ${stale} stale, validated in ${stats.validateMs.toFixed(1)} ms`);
}

interface RunContext {
  /** The command's own connection: its events and its answer. */
  peer: RpcPeer;
  /** The session's connection: the files (the same as `peer` without ControlMaster). */
  main: RpcPeer;
  req: RunRequest;
  events: HeldEvents;
  mirror: Mirror;
  cache: Cache | null;
  stats: RemoteStats;
  runs: Set<() => Promise<void>>;
}

/** Validates (with the cache), runs the command in the mirror and answers with how it ended. */
async function runCommand(c: RunContext): Promise<RunResult> {
  const { main, cache, stats } = c;
  const callsBefore = { ...main.callsByMethod };
  const usedMark = cache?.fs.usedMark() ?? 0;
  const hitsBefore = cache && { ...cache.fs.hits };
  const missesBefore = cache && { ...cache.fs.misses };
  // A shared mirror was revalidated by the local side ahead of this command.
  if (cache && !c.mirror.shared) await validate(cache.fs, c.req, stats);
  else if (cache) stats.cache = { ...emptyCacheStats(), ...cache.fs.validation };
  await cache?.fs.settled;
  const run = startRun(c);
  c.runs.add(run.cleanup);
  try {
    const result = await run.done;
    stats.calls = {};
    for (const [method, n] of Object.entries(main.callsByMethod)) {
      const d = n - (callsBefore[method] ?? 0);
      if (d && method !== PING) stats.calls[method] = d;
    }
    if (cache) {
      stats.cache = {
        ...stats.cache!,
        metaHits: cache.fs.hits.meta - hitsBefore!.meta,
        metaMisses: cache.fs.misses.meta - missesBefore!.meta,
        chunkHits: cache.fs.hits.chunk - hitsBefore!.chunk,
        directOpens: cache.fs.hits.direct - hitsBefore!.direct,
        chunkMisses: cache.fs.misses.chunk - missesBefore!.chunk,
        // One-command sessions: the rest's answer came while the command ran.
        ...(c.mirror.shared ? {} : {
          stale: cache.fs.validation.stale,
          checkedFirst: cache.fs.validation.checkedFirst,
          restWaits: cache.fs.validation.restWaits,
        }),
      };
    }
    const used = cache && !c.mirror.shared ? cache.fs.used() : null;
    if (cache && c.mirror.shared) {
      // To the session's local side (the command's own may not be there any more).
      const report: UsedReport = { exe: c.req.exe ?? "", used: cache.fs.usedSince(usedMark) };
      if (report.exe) new TypedPeer<CacheCalls, CacheEvents>(main).event(CACHE_EVENTS.used, report);
      cache.fs.finish();
    }
    return { ...result, stats, used };
  } finally {
    await run.cleanup();
    c.runs.delete(run.cleanup);
  }
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

/**
 * The exec helper, started ahead: it waits for its plan on stdin (exec_helper.ts).
 * The group it makes (the command's) is the warden's until it is killed and reaped.
 */
function startHelper(agentScript: string, runtime: string[], warden: Warden): Deno.ChildProcess {
  const child = new Deno.Command(runtime[0], {
    args: [...runtime.slice(1), "run", "-A", "--quiet", "--no-config", agentScript, "exec", "-"],
    clearEnv: true,
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", DENO_NO_UPDATE_CHECK: "1" },
    // With a pty the helper makes the terminal its stdin, stdout and stderr; the pipes
    // then just end. Its stderr stays a pipe until then, for errors before it gets there.
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  warden.guard(child.pid);
  child.status.then(() => {
    // What the command left running in its group goes with it.
    killGroup(child.pid);
    warden.release(child.pid);
  });
  return child;
}

/**
 * The FUSE mirror of the local `/`, mounted in this process's private mount
 * namespace, and an exec helper started ahead of the command that will use it.
 */
class Mirror {
  #spare: Deno.ChildProcess | null;
  #closed = false;

  private constructor(
    readonly root: string,
    readonly mountMs: number,
    /** Many commands use it (ControlMaster): a helper is kept ready for the next. */
    readonly shared: boolean,
    readonly mount: FuseMount,
    readonly session: FuseSession,
    readonly serving: Promise<void>,
    readonly spawn: () => Deno.ChildProcess,
  ) {
    this.#spare = spawn();
  }

  static open(fs: Filesystem, spawn: () => Deno.ChildProcess, shared: boolean): Mirror {
    // Only this (the main) thread moves to the new namespace; the mount below is made
    // from it, and children it spawns start in it.
    trace("mirror: unshare");
    check("unshare", libc().unshare(CLONE_NEWNS));
    sysMount("none", "/", null, MS_REC | MS_PRIVATE, null);
    const t = performance.now();
    const root = Deno.makeTempDirSync({ prefix: "outrun-root-" });
    const mount = mountFuse(root, { fsName: "outrun", subtype: "outrun" });
    const mountMs = performance.now() - t;
    const session = new FuseSession(mount.fd, fs, {
      // Reads of mapped libraries no bigger than a cache chunk: what is fetched is used.
      maxReadahead: CHUNK_SIZE,
      // Whole cached files are read by the kernel from the store (CachedFs decides).
      passthrough: true,
      // Listings come whole with their attributes (cached ones, and local ones with
      // their opening: ProxyFs): each page with them, so stats of the entries that
      // follow (ls -l, find) are the kernel's.
      readdirplusAuto: false,
      // Local changes are told (lib/fs/change_watch.ts) and a file's pages go at each
      // open anyway: a read of a file being written need not ask for its attributes
      // and drop what it just wrote (\`as\` reads back its object: a getattr and a read
      // a write).
      autoInvalData: false,
      // A command's requests come in bursts (ld.so, imports): waiting a little on this
      // thread for the next one, rather than through a poll() worker, took a warm
      // ffmpeg -version's 2,400 requests from ~0.6 to ~0.5 s on -wan. Other events
      // (RPC, the command's output) wait at most this long meanwhile.
      idleWaitMs: 2,
      debug: DEBUG,
      log: (m) => trace(m),
    });
    const serving = session.serve().catch((err) => console.error(`outrun-agent: fuse: ${err}`));
    trace("mirror: mounted");
    return new Mirror(root, mountMs, shared, mount, session, serving, spawn);
  }

  /** Fails every request not answered yet, and all after (see FuseSession.abort). */
  abort(): void {
    this.session.abort();
  }

  /** Makes the kernel drop names, attributes and pages it keeps of changed paths. */
  async invalidate(stale: Invalidation[]): Promise<void> {
    const done: Promise<boolean>[] = [];
    for (const s of stale) {
      if (s.node !== null) done.push(this.session.notifyInvalInode(s.node));
      if (s.parent !== null) done.push(this.session.notifyInvalEntry(s.parent, s.name));
    }
    // false: the kernel held nothing of it, which is as good.
    await Promise.all(done);
    trace(`mirror: ${stale.length} stale paths dropped from the kernel's caches`);
  }

  /** A helper for the next command (a shared mirror starts the one after it). */
  helper(): Deno.ChildProcess {
    const h = this.#spare ?? this.spawn();
    this.#spare = this.shared && !this.#closed ? this.spawn() : null;
    return h;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const spare = this.#spare;
    this.#spare = null;
    if (spare) {
      try {
        spare.kill("SIGKILL");
      } catch { /* gone */ }
      await spare.status;
    }
    unmountFuse(this.mount);
    this.session.abort();
    await this.serving;
    try {
      Deno.removeSync(this.root);
    } catch { /* still busy: the namespace goes with this process anyway */ }
  }
}

/** Writes the plan to a helper's stdin: 8 hex digits of length, then the JSON. */
function sendPlan(stdin: WritableStreamDefaultWriter<Uint8Array>, plan: ExecPlan): Promise<void> {
  const json = new TextEncoder().encode(JSON.stringify(plan));
  const head = new TextEncoder().encode(json.length.toString(16).padStart(8, "0"));
  const frame = new Uint8Array(head.length + json.length);
  frame.set(head);
  frame.set(json, head.length);
  return stdin.write(frame);
}

function startRun(c: RunContext) {
  const { peer, req, events, mirror, stats } = c;
  const pty = req.tty ? openPty(req.tty.rows, req.tty.cols) : null;
  const pipes = pty ? null : { stdin: openPipe(), stdout: openPipe(), stderr: openPipe() };
  const { cache: _, ...what } = req;
  const plan: ExecPlan = {
    ...what,
    root: mirror.root,
    binds: BINDS,
    tty: pty?.slavePath ?? null,
    stdio: pipes && {
      stdin: procFdPath(pipes.stdin.read),
      stdout: procFdPath(pipes.stdout.write),
      stderr: procFdPath(pipes.stderr.write),
    },
  };
  const tRun = performance.now();
  const child = mirror.helper();
  const planWriter = child.stdin.getWriter();
  // A helper that died before its plan came shows as the command's failure below.
  sendPlan(planWriter, plan).then(() => planWriter.close()).catch(() => {});
  trace("run: plan sent");

  let exited = false;
  /** The session ended: stop relaying even what a leftover process still holds open. */
  let cut = false;
  const relay = async (stream: AsyncIterable<Uint8Array>, event: string) => {
    for await (const chunk of stream) peer.event(event, chunk);
  };
  const on: Partial<Record<string, (args: Value) => void>> = {
    [EVENTS.signal]: (name) => {
      try {
        child.kill(name as Deno.Signal);
      } catch { /* already gone */ }
    },
  };
  // The helper's own pipes carry its errors until it takes the terminal or the pipes.
  const relays: Promise<unknown>[] = [
    relay(child.stdout, EVENTS.stdout),
    relay(child.stderr, EVENTS.stderr),
  ];
  let stdin: PipeWriter | null = null;
  /** Once the helper is gone: the ends it opened for the command are the command's alone. */
  let dropHelperEnds = () => {};
  if (pty) {
    const write = ptyWriter(pty.master);
    on[EVENTS.stdin] = (data) => void write(data as Uint8Array);
    on[EVENTS.winch] = (size) => {
      const { rows, cols } = size as unknown as WindowSize;
      setWindowSize(pty.master, rows, cols);
    };
    relays.push(relay(readPty(pty.master, () => exited), EVENTS.stdout));
  } else if (pipes) {
    const input = stdin = pipeWriter(pipes.stdin.write);
    on[EVENTS.stdin] = (data) => input.write(data as Uint8Array);
    on[EVENTS.stdinEof] = () => input.end();
    const unwanted = new Set<unknown>();
    on[EVENTS.outputClosed] = (which) => void unwanted.add(which);
    const output = (pipe: Pipe, which: string, event: string) =>
      relay(readPipe(pipe.read, () => cut || unwanted.has(which)), event)
        .finally(() => closeQuietly(pipe.read));
    relays.push(
      output(pipes.stdout, "stdout", EVENTS.stdout),
      output(pipes.stderr, "stderr", EVENTS.stderr),
    );
    let dropped = false;
    dropHelperEnds = () => {
      if (dropped) return;
      dropped = true;
      for (const fd of [pipes.stdin.read, pipes.stdout.write, pipes.stderr.write]) {
        closeQuietly(fd);
      }
    };
  }
  const relayed = Promise.all(relays);
  events.attach((name, args) => on[name]?.(args));

  /**
   * Once the command is gone (its group killed with it: startHelper): the ends the
   * helper opened are the command's alone, and stdin has no reader left.
   */
  const afterExit = () => {
    exited = true;
    dropHelperEnds();
    stdin?.abort();
  };
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    cut = true;
    killGroup(child.pid);
    // Not in a group of its own yet: the helper itself.
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    afterExit();
    await relayed.catch(() => {});
    // The master's close hangs up whatever still holds the terminal.
    if (pty) closeQuietly(pty.master);
  };
  peer.closed.then(cleanup);

  const done = (async (): Promise<Omit<RunResult, "stats" | "used">> => {
    const status = await child.status;
    stats.runMs = performance.now() - tRun;
    trace(`helper exited ${JSON.stringify(status)}`);
    afterExit(); // its output pipes then end too
    await relayed;
    return { code: status.signal ? null : status.code, signal: status.signal ?? null };
  })();
  return { done, cleanup };
}

/**
 * SIGKILL to the command's process group: the helper made one with the command's
 * pid as its id (or a session, with a pty). Never to `pid` alone: once reaped, it
 * may be another process's.
 */
function killGroup(pid: number): void {
  try {
    Deno.kill(-pid, "SIGKILL");
  } catch { /* no such group (yet), or gone */ }
}
