/**
 * `outrun debug ...`: tools for developing outrun itself.
 *
 * `debug loopback SRC MOUNTPOINT [--debug] [--writeback]` mirrors SRC at MOUNTPOINT
 * through lib/fuse and stays in the foreground until SIGINT/SIGTERM, then unmounts.
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

export async function debugMain(args: string[]): Promise<number> {
  if (args[0] === "loopback") return await loopbackMain(args.slice(1));
  console.error(USAGE);
  return 2;
}

const USAGE = "usage: outrun debug loopback SRC MOUNTPOINT [--debug] [--writeback] " +
  "[--attr-timeout S] [--delay-ms N] [--stats FILE]";

async function loopbackMain(args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      debug: { type: "boolean" },
      writeback: { type: "boolean" },
      "attr-timeout": { type: "string" },
      "delay-ms": { type: "string" },
      stats: { type: "string" },
    },
  });
  if (positionals.length !== 2) {
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
  const fs = delayed?.fs ?? loopback;
  const mount = mountFuse(mountpoint, { fsName: `loopback:${src}`, subtype: "outrun" });
  const session = new FuseSession(mount.fd, fs, {
    debug: values.debug,
    writebackCache: values.writeback,
  });
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    unmountFuse(mount);
    session.close();
  };
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
  if (values.stats) {
    const stats = { session: session.stats, delayed: delayed?.stats ?? null };
    Deno.writeTextFileSync(values.stats, JSON.stringify(stats) + "\n");
  }
  return 0;
}
