/**
 * ControlMaster, the master's side: a process that holds one session with a host
 * (open.ts: the SSH connection, the agent, this machine's files and cache service)
 * and lends it to the commands that connect to its socket (control.ts). The agent
 * keeps the mirror mounted and a helper ready; before each command this side
 * checks what the remote holds (no round trip) and pushes what the command will
 * need, then the command's own RPC connection runs through a tunnel.
 *
 * It ends when it has been idle for ControlPersist seconds, on `-O exit`, on
 * SIGTERM, or when the link or the agent goes; its socket goes with it.
 */
import type { CliOptions } from "../cli.ts";
import { readConfig } from "../config.ts";
import { Tunnels } from "../rpc/mod.ts";
import { aheadPaths, type ServeRequest, sessionPeer } from "./protocol.ts";
import { readLine, type RunHeader } from "./control.ts";
import { openSession, type Session } from "./open.ts";
import { PING, startHeartbeat } from "./heartbeat.ts";

export interface MasterSpec {
  options: CliOptions;
  socket: string;
  /** Seconds to stay once idle (Infinity: until told to go). */
  persist: number;
}

/** Bytes pushed between two round trips when completing files while idle. */
const COMPLETE_SLICE = 1024 * 1024;
/** A new master waits this long for its first command, whatever ControlPersist says. */
const FIRST_WAIT_S = 10;

export async function runMaster(spec: MasterSpec): Promise<number> {
  const o = spec.options;
  const t0 = performance.now();
  const encoder = new TextEncoder();
  // Until it serves, it speaks to the command that started it (stderr); after,
  // -v goes to a log file next to the socket.
  let logFile: Deno.FsFile | null = null;
  const log = (line: string) => {
    if (o.verbose === 0) return;
    const text = encoder.encode(
      `debug1: master ${(performance.now() - t0).toFixed(0)} ms: ${line}\n`,
    );
    try {
      if (logFile) logFile.writeSync(text);
      else Deno.stderr.writeSync(text);
    } catch { /* nobody listens */ }
  };
  // The terminal's Ctrl-C and hangup are meant for the command in front, not for the
  // session behind it.
  for (const sig of ["SIGINT", "SIGHUP", "SIGQUIT"] as const) Deno.addSignalListener(sig, () => {});

  const listener = await claim(spec.socket);
  if (!listener) {
    say("busy");
    return 0;
  }
  let session: Session | null = null;
  let ending = false;
  let active = 0;
  let idle: ReturnType<typeof setTimeout> | undefined;
  const end = async (why: string) => {
    if (ending) return;
    ending = true;
    log(`ending: ${why}`);
    clearTimeout(idle);
    try {
      listener.close();
    } catch { /* closed */ }
    try {
      Deno.removeSync(spec.socket);
    } catch { /* gone */ }
    await session?.cache?.profilesSaved();
    await session?.close();
    logFile?.close();
    Deno.exit(0);
  };
  const armIdle = (seconds: number) => {
    clearTimeout(idle);
    if (seconds === Infinity || ending) return;
    idle = setTimeout(() => active === 0 && end("idle"), seconds * 1000);
  };
  Deno.addSignalListener("SIGTERM", () => void end("SIGTERM"));

  let complete = false;
  const ready = (async () => {
    const config = readConfig(o.outrunConfig);
    complete = config.cache.complete && !o.noCache;
    const s = await openSession(o, config, log);
    session = s;
    s.peer.closed.then((reason) => end(`the session ended: ${reason.message}`));
    const req: ServeRequest = { cache: s.cacheSettings };
    await sessionPeer(s.peer).call("session.serve", req);
    // The agent pings this side; this side pings it too, so a silent cut ends both.
    startHeartbeat(s.peer, "the agent", (why) => void end(why));
    return { session: s, tunnels: new Tunnels(s.peer) };
  })();
  ready.catch(() => {});
  (async () => {
    for await (const conn of listener) {
      serveClient(conn).catch((e) => log(`client: ${e}`));
    }
  })();

  async function serveClient(conn: Deno.UnixConn): Promise<void> {
    const reply = async (line: string) => {
      const w = conn.writable.getWriter();
      await w.write(encoder.encode(`${line}\n`));
      w.releaseLock();
    };
    const { line, rest } = await readLine(conn);
    if (line === "check") {
      await reply(`ok ${Deno.pid}`);
      return conn.close();
    }
    if (line === "exit") {
      await reply("ok");
      conn.close();
      return end("-O exit");
    }
    let header: RunHeader;
    try {
      if (!line.startsWith("run ")) throw new Error(line);
      header = JSON.parse(line.slice(4));
    } catch {
      await reply("error bad request");
      return conn.close();
    }
    active++;
    clearTimeout(idle);
    try {
      let r;
      try {
        r = await ready;
      } catch (e) {
        await reply(`error ${e instanceof Error ? e.message : e}`);
        return;
      }
      const t = performance.now();
      const check = await r.session.cache?.revalidate({
        exe: header.exe,
        prefetch: !o.noPrefetch,
        ahead: aheadPaths({
          cwd: header.cwd,
          exe: header.exe,
          argv: typeof header.argv0 === "string" ? [header.argv0] : [],
          env: typeof header.path === "string" ? { PATH: header.path } : {},
        }),
      });
      if (check) {
        log(
          `run ${header.exe}: ${check.held} held, ${check.stale} stale, checked in ${
            (performance.now() - t).toFixed(1)
          } ms`,
        );
      }
      const tunnel = r.tunnels.open();
      await reply("ok");
      if (rest.length) {
        const w = tunnel.writable.getWriter();
        await w.write(rest);
        w.releaseLock();
      }
      await Promise.all([
        conn.readable.pipeTo(tunnel.writable).catch(() => {}),
        tunnel.readable.pipeTo(conn.writable).catch(() => {}),
      ]);
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
      active--;
      if (active === 0) {
        armIdle(spec.persist);
        if (complete) completeWhileIdle();
      }
    }
  }

  /**
   * `[cache] complete = yes`: while no command runs, the files the remote holds in part
   * are completed, a megabyte at a time, each followed by a round trip (so it goes at
   * the link's pace, and a command that comes waits for one megabyte at most).
   */
  let completing = false;
  async function completeWhileIdle(): Promise<void> {
    if (completing) return;
    completing = true;
    try {
      const r = await ready;
      const cache = r.session.cache;
      while (cache && active === 0 && !ending) {
        const more = cache.completeSome(COMPLETE_SLICE);
        await r.session.peer.call(PING, null);
        if (!more) {
          log("complete: the remote holds every file it has in part whole");
          break;
        }
      }
    } catch (e) {
      log(`complete: ${e}`);
    } finally {
      completing = false;
    }
  }

  try {
    await ready;
  } catch (e) {
    say(`error ${e instanceof Error ? e.message : e}`);
    await end("no session");
    return 255;
  }
  armIdle(Math.max(spec.persist, FIRST_WAIT_S));
  if (o.verbose > 0) logFile = Deno.openSync(`${spec.socket}.log`, { append: true, create: true });
  log(`serving ${spec.socket}`);
  say("ready");
  // Nothing more goes to the starter's pipes: it stops reading them.
  await new Promise(() => {});
  return 0;
}

/** One line to the command that started this master (its only way to hear back). */
function say(line: string): void {
  try {
    Deno.stdout.writeSync(new TextEncoder().encode(`${line}\n`));
  } catch { /* it went away */ }
}

/**
 * Listens on `path`, unless another master does. A socket nobody listens on is a
 * dead master's: taken over.
 */
async function claim(path: string): Promise<Deno.UnixListener | null> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const listener = Deno.listen({ transport: "unix", path });
      Deno.chmodSync(path, 0o600);
      return listener;
    } catch (e) {
      if (!(e instanceof Deno.errors.AddrInUse)) throw e;
    }
    try {
      (await Deno.connect({ transport: "unix", path })).close();
      return null; // alive
    } catch {
      Deno.removeSync(path);
    }
  }
  return null;
}
