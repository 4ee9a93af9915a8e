/**
 * outrun's local side: connect, bootstrap, start the agent, serve this machine's
 * files to it, relay stdin/stdout/stderr and signals, and come back with the
 * command's exit status. One SSH connection; the RPC runs inside its exec channel.
 */
import { Readable, Writable } from "node:stream";
import type { CliOptions } from "../cli.ts";
import { LoopbackFs } from "../fs/loopback.ts";
import { serveFilesystem } from "../fs/proxy.ts";
import { CacheService, resolveCommand } from "../fs/cache/service.ts";
import { ContentIndex } from "../fs/cache/content_index.ts";
import { clientId, outrunHome, readConfig } from "../config.ts";
import { RpcPeer, type Value } from "../rpc/mod.ts";
import { connect, SshError } from "../ssh/connect.ts";
import { VERSION } from "../version.ts";
import { agentCommand, ensurePayload, localPayload } from "./bootstrap.ts";
import { EVENTS, FORWARDED_SIGNALS, type RunRequest, type RunResult } from "./protocol.ts";
import { formatStats } from "./stats.ts";

export const SIGNAL_NUMBERS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGABRT: 6,
};

function localGroups(): number[] {
  const status = Deno.readTextFileSync("/proc/self/status");
  // [ \t], not \s: an empty Groups: line must not run on into the next line.
  const line = /^Groups:[ \t]*(.*)$/m.exec(status)?.[1] ?? "";
  return line.split(/\s+/).filter(Boolean).map(Number);
}

export async function runRemote(o: CliOptions): Promise<number> {
  const t0 = performance.now();
  const config = readConfig(o.outrunConfig);
  const times: Record<string, number> = {};
  let mark = t0;
  const lap = (name: string) => {
    const now = performance.now();
    times[name] = now - mark;
    mark = now;
  };
  const log = (line: string) => {
    if (o.verbose > 0) console.error(`debug1: ${(performance.now() - t0).toFixed(0)} ms: ${line}`);
  };
  const { client, resolved } = await connect({
    destination: o.destination,
    port: o.port,
    user: o.user,
    identityFiles: o.identityFiles,
    configFile: o.configFile,
    options: o.sshOptions,
    jump: o.jump,
    verbose: o.verbose,
    log,
  });
  const closed = new Promise<void>((resolve) => client.once("close", () => resolve()));
  log("connected");
  lap("connect");
  try {
    const payload = await localPayload();
    log(`payload ${payload.dirName}`);
    const dir = await ensurePayload(client, payload, log);
    log("payload present");
    lap("bootstrap");
    const command = agentCommand(payload, dir, resolved.user !== "root");
    const channel = await new Promise<import("ssh2").ClientChannel>((resolve, reject) =>
      client.exec(
        command,
        (err, ch) => (err ? reject(new SshError(`outrun: ${err.message}`)) : resolve(ch)),
      )
    );
    let agentStderr = "";
    channel.stderr.on("data", (d: Uint8Array) => {
      agentStderr += new TextDecoder().decode(d);
      if (o.verbose > 0) Deno.stderr.writeSync(d);
    });
    const peer = new RpcPeer(
      {
        readable: Readable.toWeb(channel) as unknown as ReadableStream<Uint8Array>,
        writable: Writable.toWeb(channel) as unknown as WritableStream<Uint8Array>,
      },
      {
        program: `outrun ${VERSION}`,
        trace: o.verbose >= 2
          ? (method, args, ms, err) =>
            log(`${method} ${describe(args)} ${ms.toFixed(2)} ms${err ? ` -> ${err}` : ""}`)
          : undefined,
      },
    );
    peer.handle("session.ping", () => null);
    // The agent exiting (or sshd closing the channel) ends the RPC stream, whatever
    // the stream adapters make of it.
    channel.once("close", () => void peer.close(new Error("the remote agent exited")));
    // This machine's files, as this user: the local kernel decides what may be read.
    const files = new LoopbackFs({ root: "/" });
    serveFilesystem(peer, files);
    const env = Deno.env.toObject();
    const cache = o.noCache ? null : new CacheService(peer, {
      prefixes: config.cache.prefixes,
      prefetch: !o.noPrefetch,
      profileDir: `${outrunHome()}/profiles`,
      env,
      fs: files,
      contentIndex: openContentIndex(log),
    });
    // Through stream writers: in order and whole (Deno.stdout.write may write part of a
    // chunk, and un-awaited calls may interleave). A reader that went away (| head) is
    // not an error of ours: its output is dropped, as ssh would.
    const stdout = orderedWriter(Deno.stdout.writable);
    const stderr = orderedWriter(Deno.stderr.writable);
    peer.onEvent(EVENTS.stdout, (d) => stdout.write(d as Uint8Array));
    peer.onEvent(EVENTS.stderr, (d) => stderr.write(d as Uint8Array));
    let forward: (() => void)[] = [];
    try {
      await peer.remoteHello.catch((err) => {
        const hint = agentStderr.trim() ? `: ${agentStderr.trim().split("\n").at(-1)}` : "";
        throw new SshError(
          /sudo/.test(agentStderr)
            ? `outrun: ${resolved.user}@${resolved.hostname} needs root for mounts, and sudo -n failed${hint}`
            : `outrun: the remote agent did not start (${err.message})${hint}`,
        );
      });
      log("agent up");
      // From here on signals go to the command (which decides whether to die); before,
      // they end outrun itself as usual.
      forward = FORWARDED_SIGNALS.map((name) => {
        const handler = () => peer.event(EVENTS.signal, name);
        Deno.addSignalListener(name, handler);
        return () => Deno.removeSignalListener(name, handler);
      });
      // Both ends terminals: the command gets a pty, this terminal goes raw (keys,
      // Ctrl-C included, travel as bytes) and is restored on every way out.
      const tty = Deno.stdin.isTerminal() && Deno.stdout.isTerminal() ? Deno.consoleSize() : null;
      if (tty) {
        Deno.stdin.setRaw(true);
        const winch = () => {
          const { rows, columns } = Deno.consoleSize();
          peer.event(EVENTS.winch, { rows, cols: columns });
        };
        Deno.addSignalListener("SIGWINCH", winch);
        forward.push(() => {
          Deno.removeSignalListener("SIGWINCH", winch);
          Deno.stdin.setRaw(false);
        });
      }
      pumpStdin(peer);
      const cwd = Deno.cwd();
      const req: RunRequest = {
        argv: o.command,
        exe: resolveCommand(o.command[0], cwd, env.PATH ?? "/usr/local/bin:/usr/bin:/bin"),
        cwd,
        env,
        uid: Deno.uid() ?? 0,
        gid: Deno.gid() ?? 0,
        groups: localGroups(),
        tty: tty && { rows: tty.rows, cols: tty.columns },
        cache: cache && {
          dir: config.cache.path,
          client: clientId(),
          prefixes: config.cache.prefixes,
          prefetch: !o.noPrefetch,
          maxEntries: config.cache.maxEntries,
          maxBytes: config.cache.maxBytes,
        },
      };
      lap("start");
      const result = await peer.call("session.run", req as unknown as Value).catch((err) => {
        throw new SshError(`outrun: connection to ${resolved.alias} lost: ${err.message}`);
      }) as unknown as RunResult;
      log(
        `command done: ${JSON.stringify(result)}; ${peer.stats.calls} calls from here, ` +
          `${peer.stats.framesIn} frames in (${peer.stats.bytesIn} bytes), ${peer.stats.framesOut} out (${peer.stats.bytesOut} bytes)`,
      );
      lap("command");
      // The agent answers after relaying all output: let it reach the terminal.
      await stdout.flush();
      await stderr.flush();
      if (result.used) {
        await cache?.saveProfile(result.used).catch((e) => log(`profile not saved: ${e}`));
      }
      await peer.close();
      if (o.stats) {
        lap("teardown");
        const input = {
          local: times,
          remote: result.stats,
          rpc: peer.stats,
          push: cache?.stats ?? null,
        };
        console.error(formatStats(input));
        // The same as JSON, for scripts (the benchmark).
        const file = Deno.env.get("OUTRUN_STATS_FILE");
        if (file) await Deno.writeTextFile(file, JSON.stringify(input) + "\n");
      }
      if (result.signal) return 128 + (SIGNAL_NUMBERS[result.signal] ?? 0);
      return result.code ?? 255;
    } finally {
      for (const remove of forward) remove();
    }
  } finally {
    client.end();
    await Promise.race([closed, new Promise((r) => setTimeout(r, 1000))]);
  }
}

/** A call's arguments in a line: the path or the node and name, not the bytes. */
function describe(args: Value): string {
  const a = args as Record<string, unknown> | null;
  if (!a || typeof a !== "object") return "";
  const header = a.header as { nodeid?: number } | undefined;
  const parts = [
    header?.nodeid !== undefined ? `node ${header.nodeid}` : "",
    typeof a.path === "string" ? a.path : "",
    typeof a.name === "string" ? JSON.stringify(a.name) : "",
    Array.isArray(a.indices) ? `chunks ${a.indices.join(",")}` : "",
    Array.isArray(a.held) ? `${a.held.length} held` : "",
  ];
  return parts.filter(Boolean).join(" ");
}

/** The content-id memo, or null when it cannot be opened (a read-only home: no memo). */
function openContentIndex(log: (line: string) => void): ContentIndex | null {
  try {
    return new ContentIndex(`${outrunHome()}/content.sqlite`);
  } catch (e) {
    log(`no content-id memo: ${e}`);
    return null;
  }
}

function orderedWriter(stream: WritableStream<Uint8Array>) {
  const writer = stream.getWriter();
  let last: Promise<void> = Promise.resolve();
  let broken = false;
  return {
    write(chunk: Uint8Array) {
      if (broken) return;
      last = writer.write(chunk).catch(() => {
        broken = true;
      });
    },
    async flush() {
      await last;
    },
  };
}

function pumpStdin(peer: RpcPeer): void {
  (async () => {
    try {
      for await (const chunk of Deno.stdin.readable) peer.event(EVENTS.stdin, chunk);
    } catch { /* stdin closed */ }
    peer.event(EVENTS.stdinEof, null);
  })();
}
