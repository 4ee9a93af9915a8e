/**
 * `outrun debug ...`: tools for developing outrun itself.
 *
 * `debug loopback SRC MOUNTPOINT [--debug] [--writeback]` mirrors SRC at MOUNTPOINT
 * through lib/fuse and stays in the foreground until SIGINT/SIGTERM, then unmounts.
 *
 * `debug cached / MOUNTPOINT --store DIR --prefix P [--prefix P] [--no-prefetch]
 * [--stats FILE]` is outrun's whole cached data path without SSH: this process
 * serves the FUSE mount with the remote's CachedFs and CacheStore, a `serve-fs
 * --cache` child answers as the local side does.
 */
import { parseArgs } from "node:util";
import {
  clearStaleMounts,
  FuseSession,
  mountFuse,
  setReadAhead,
  unmountFuse,
  utf8ByteString,
} from "../fuse/mod.ts";
import { LoopbackFs } from "../fs/loopback.ts";
import { delayedFilesystem } from "../fs/delayed.ts";
import { ProxyFs } from "../fs/proxy.ts";
import { serveFilesystem } from "../fs/serve.ts";
import { RpcClosed, RpcPeer } from "../rpc/mod.ts";
import type { Filesystem } from "../fuse/mod.ts";
import { VERSION } from "../version.ts";
import { CachedFs } from "../fs/cache/mirror.ts";
import { CacheService } from "../fs/cache/service.ts";
import { CacheStore, DEFAULT_LIMITS } from "../fs/cache/store.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

export async function debugMain(args: string[]): Promise<number> {
  if (args[0] === "loopback") return await loopbackMain(args.slice(1));
  if (args[0] === "proxy") return await loopbackMain(args.slice(1), true);
  if (args[0] === "cached") return await loopbackMain(args.slice(1), true, true);
  if (args[0] === "serve-fs") return await serveFsMain(args.slice(1));
  console.error(USAGE);
  return 2;
}

const USAGE = "usage: outrun debug loopback SRC MOUNTPOINT [--debug] [--writeback] " +
  "[--attr-timeout S] [--delay-ms N] [--stats FILE]";

/**
 * `debug serve-fs ROOT`: the file service of ROOT on stdin/stdout (RPC), as outrun's
 * local side serves "/" to the remote agent. Ends when the other side closes.
 */
async function serveFsMain(args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      hide: { type: "string", multiple: true },
      cache: { type: "boolean" },
      prefix: { type: "string", multiple: true },
      "no-prefetch": { type: "boolean" },
      "profile-dir": { type: "string" },
    },
  });
  const root = Deno.realPathSync(positionals[0] ?? "/");
  const peer = new RpcPeer(
    { readable: Deno.stdin.readable, writable: Deno.stdout.writable },
    { program: `outrun ${VERSION}` },
  );
  const hide = (values.hide ?? []).map(utf8ByteString);
  const files = new LoopbackFs({ root: utf8ByteString(root), hide });
  serveFilesystem(peer, files);
  if (values.cache) {
    // The cache reads absolute paths of this machine: only a mirror of "/" can have one.
    if (root !== "/") throw new Error("serve-fs --cache serves / only");
    const service = new CacheService(peer, {
      prefixes: (values.prefix ?? []).map(utf8ByteString),
      prefetch: !values["no-prefetch"],
      profileDir: values["profile-dir"] ?? null,
      env: {},
      fs: files,
      contentIndex: null,
    });
    peer.handle("debug.saveProfile", async (used) => {
      await service.saveProfile(used as never);
      return null;
    });
  }
  const reason = await peer.closed;
  if (reason && !(reason instanceof RpcClosed)) {
    console.error(`outrun: serve-fs: ${reason.message}`);
  }
  return 0;
}

/**
 * `debug loopback` serves the mirror in this process; `debug proxy` starts
 * `debug serve-fs SRC` as a child and forwards every request to it over RPC on the
 * child's stdin/stdout: outrun's whole data path except SSH.
 */
async function loopbackMain(args: string[], proxy = false, cached = false): Promise<number> {
  const { positionals, values } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      debug: { type: "boolean" },
      writeback: { type: "boolean" },
      "attr-timeout": { type: "string" },
      "delay-ms": { type: "string" },
      stats: { type: "string" },
      store: { type: "string" },
      prefix: { type: "string", multiple: true },
      "no-prefetch": { type: "boolean" },
      "profile-dir": { type: "string" },
      exe: { type: "string" },
    },
  });
  if (positionals.length !== 2 || (cached && (!values.store || !values.prefix?.length))) {
    console.error(USAGE);
    return 2;
  }
  const src = Deno.realPathSync(positionals[0]);
  const mountpoint = Deno.realPathSync(positionals[1]);
  const cleared = clearStaleMounts(mountpoint);
  if (cleared) console.error(`outrun: cleared ${cleared} stale mount(s) at ${mountpoint}`);
  const timeout = values["attr-timeout"] === undefined ? 1 : Number(values["attr-timeout"]);
  const loopback = new LoopbackFs({
    root: utf8ByteString(src),
    hide: [utf8ByteString(mountpoint)],
    entryTimeout: timeout,
    attrTimeout: timeout,
  });
  // --delay-ms: every answer comes that late, asynchronously (a stand-in for a network).
  const delayed = values["delay-ms"]
    ? delayedFilesystem(loopback, Number(values["delay-ms"]))
    : null;
  let fs: Filesystem = delayed?.fs ?? loopback;
  let server: Deno.ChildProcess | null = null;
  let peer: RpcPeer | null = null;
  if (proxy) {
    server = new Deno.Command(Deno.execPath(), {
      // The mount point must stay hidden: looking it up would re-enter the mount.
      args: [
        "run",
        "-A",
        "--quiet",
        MAIN,
        "debug",
        "serve-fs",
        src,
        "--hide",
        mountpoint,
        ...(cached ? ["--cache", ...(values.prefix ?? []).flatMap((p) => ["--prefix", p])] : []),
        ...(values["no-prefetch"] ? ["--no-prefetch"] : []),
        ...(values["profile-dir"] ? ["--profile-dir", values["profile-dir"]] : []),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    peer = new RpcPeer(
      { readable: server.stdout, writable: server.stdin },
      { program: `outrun ${VERSION}` },
    );
    await peer.remoteHello;
    fs = new ProxyFs(peer);
    peer.closed.then(() => stop());
  }
  let cache: { fs: CachedFs; store: CacheStore } | null = null;
  if (cached && peer) {
    const store = new CacheStore(values.store!);
    const cachedFs = new CachedFs({
      peer,
      inner: fs,
      store,
      client: "debug",
      prefixes: (values.prefix ?? []).map(utf8ByteString),
      log: (line) => console.error(`outrun: ${line}`),
    });
    await cachedFs.validate({
      exe: values.exe ?? null,
      prefetch: !values["no-prefetch"],
      ahead: [],
    });
    cache = { fs: cachedFs, store };
    fs = cachedFs;
  }
  const mount = mountFuse(mountpoint, { fsName: `loopback:${src}`, subtype: "outrun" });
  const session = new FuseSession(mount.fd, fs, {
    debug: values.debug,
    writebackCache: values.writeback,
  });
  let stopping = false;
  function stop() {
    if (stopping) return;
    stopping = true;
    unmountFuse(mount);
    session.close();
  }
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  const serving = session.serve();
  // Readahead is set on the bdi the mount created; INIT has been answered by then or soon.
  setReadAhead(mountpoint, 1024);
  console.error(`outrun: ${src} mirrored at ${mountpoint} (pid ${Deno.pid})`);
  try {
    await serving;
  } finally {
    stop();
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
  }
  if (cache && peer) {
    cache.fs.finish();
    await peer.call("debug.saveProfile", cache.fs.used() as never).catch(() => {});
    cache.fs.end();
    cache.store.evict(DEFAULT_LIMITS);
    cache.store.close();
  }
  if (server && peer) {
    // Closing our end is the child's signal to finish; it gets 5 s before SIGKILL.
    await peer.close();
    const timer = setTimeout(() => server.kill("SIGKILL"), 5000);
    await server.status;
    clearTimeout(timer);
  }
  if (values.stats) {
    const stats = {
      session: session.stats,
      delayed: delayed?.stats ?? null,
      calls: peer?.callsByMethod ?? null,
      cache: cache && { hits: cache.fs.hits, misses: cache.fs.misses },
    };
    Deno.writeTextFileSync(values.stats, JSON.stringify(stats) + "\n");
  }
  return 0;
}
