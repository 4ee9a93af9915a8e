/**
 * outrun's local side of one command: a session (open.ts: connect, bootstrap, start
 * the agent, serve this machine's files) or this host's ControlMaster (control.ts),
 * then the command: its run request, stdin/stdout/stderr, terminal and signals, and
 * its exit status.
 */
import { type CliOptions, sshOptions } from "../cli.ts";
import type { CacheService } from "../fs/cache/service.ts";
import { DEFAULT_PATH, exePrefix, resolveCommand } from "./which.ts";
import { userEnv } from "../sys/env.ts";
import { rawOutput } from "../sys/pty.ts";
import type { RpcPeer } from "../rpc/mod.ts";
import { SshError } from "../ssh/destination.ts";
import { attachMaster, controlCommand, controlFor } from "./control.ts";
import { libc } from "../sys/libc.ts";
import {
  aheadPaths,
  type CacheSettings,
  ENDING_SIGNALS,
  EVENTS,
  FORWARDED_SIGNALS,
  LEAVE_AFTER_S,
  type RunRequest,
  sessionPeer,
} from "./protocol.ts";
import { formatStats } from "./stats.ts";
import { PING_LIMIT_S, startHeartbeat } from "./heartbeat.ts";

const PR_SET_PDEATHSIG = 1;

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

/**
 * Runs `o.command` on the remote and returns its exit status: through this host's
 * ControlMaster session when ssh_config (or -o) asks for one, else on a
 * connection of its own.
 */
export async function runRemote(o: CliOptions): Promise<number> {
  const t0 = performance.now();
  const clock = laps(t0);
  const log = (line: string) => {
    if (o.verbose > 0) console.error(`debug1: ${(performance.now() - t0).toFixed(0)} ms: ${line}`);
  };
  if (o.controlCommand) {
    const control = (await controlFor(o, log, true))!;
    const { ok, message } = await controlCommand(control, o.controlCommand);
    if (!ok) throw new SshError(`outrun: ${message}`);
    // As ssh says it.
    console.error(
      o.controlCommand === "check"
        ? `Master running (pid=${message.split(" ")[1]})`
        : "Exit request sent.",
    );
    return 0;
  }
  // The command as found here (the remote sees the same files): its profile is looked
  // at while a connection is made.
  const exe = resolveCommand(o.command[0], Deno.cwd(), userEnv().PATH ?? DEFAULT_PATH);
  const control = await controlFor(o, log);
  // No master: this process connects, and begins to now, before the SSH library loads
  // (a master's client loads neither: node:net alone brings the runtime's Node layer).
  const socket = control ? null : (await import("../ssh/tcp.ts")).connectEarly(sshOptions(o));
  if (control) {
    const attached = await attachMaster(control, o, log, exe);
    if (attached) {
      return await runOn(attached.peer, o, {
        exe,
        alias: control.alias,
        cacheSettings: null,
        cache: null,
        storePresent: null,
        agentUp: Promise.resolve(),
        log,
        clock,
        end: attached.close,
        ownSession: false,
      });
    }
  }
  const { readConfig } = await import("../config.ts");
  const config = readConfig(o.outrunConfig);
  const tree = config.cache.exePrefix && !o.noCache
    ? exePrefix(exe, Deno.cwd(), Deno.env.get("HOME"), config.cache.prefixes)
    : null;
  if (tree) {
    config.cache.prefixes = [...config.cache.prefixes, tree];
    log(`cached too: ${tree} (the command's own tree)`);
  }
  const { openSession } = await import("./open.ts");
  // The run request goes out as soon as the agent is started, not after its hello: it
  // waits in the channel while the agent's runtime starts (~0.2 s), and so can the
  // command's profile when the remote cache is empty.
  const session = await openSession(o, config, log, clock.lap, undefined, false, exe, socket);
  return await runOn(session.peer, o, {
    exe,
    alias: session.resolved.alias,
    cacheSettings: session.cacheSettings,
    cache: session.cache,
    storePresent: session.storePresent,
    agentUp: session.agentUp,
    log,
    clock,
    end: session.close,
    ownSession: true,
  });
}

/** Milliseconds of each phase of a run, each from the end of the one before. */
interface Laps {
  times: Record<string, number>;
  lap(name: string): void;
}

function laps(t0: number): Laps {
  const times: Record<string, number> = {};
  let mark = t0;
  return {
    times,
    lap(name) {
      const now = performance.now();
      times[name] = now - mark;
      mark = now;
    },
  };
}

interface RunOptions {
  /** argv[0] as found here (RunRequest.exe). */
  exe: string | null;
  /** The host as typed, for messages. */
  alias: string;
  cacheSettings: CacheSettings | null;
  /** This side's cache service (null through a master: it has its own). */
  cache: CacheService | null;
  /** Whether the remote cache was there (false: empty, so pushes may go unasked). */
  storePresent: boolean | null;
  /** The agent's hello (rejects with why it did not start). */
  agentUp: Promise<void>;
  log: (line: string) => void;
  /** Phases timed so far (connect, bootstrap, ...), for --stats. */
  clock: Laps;
  /** Ends the connection, whatever happened. */
  end(): Promise<void>;
  /** A connection of this process's own (a master watches its agent itself). */
  ownSession: boolean;
}

/**
 * One command on an agent's connection: the run request, its stdin, output,
 * terminal and signals, and its exit status (128 + signal number when killed).
 */
async function runOn(peer: RpcPeer, o: CliOptions, r: RunOptions): Promise<number> {
  const { times, lap } = r.clock;
  const env = userEnv();
  // Through stream writers: in order and whole (Deno.stdout.write may write part of a
  // chunk, and un-awaited calls may interleave). A reader that went away (| head) is
  // not an error of ours: the command's end of it is closed, as ssh's would be.
  const closed = (which: string) => () => peer.event(EVENTS.outputClosed, which);
  const stdout = orderedWriter(Deno.stdout.writable, closed("stdout"));
  const stderr = orderedWriter(Deno.stderr.writable, closed("stderr"));
  peer.onEvent(EVENTS.stdout, (d) => stdout.write(d as Uint8Array));
  peer.onEvent(EVENTS.stderr, (d) => stderr.write(d as Uint8Array));
  let forward: (() => void)[] = [];
  /** Set when outrun gives up on a command that a signal asked to end. */
  let leaving: ((signal: string) => void) | null = null;
  const left = new Promise<string>((resolve) => (leaving = resolve));
  try {
    // From here on signals go to the command (which decides whether to die); before,
    // they end outrun itself as usual. An ending one that the command outlives for
    // long, or a second one, makes outrun leave: a wedged remote never holds it.
    let ending: string | null = null;
    let leaveTimer: ReturnType<typeof setTimeout> | undefined;
    forward = FORWARDED_SIGNALS.map((name) => {
      const handler = () => {
        if (!(ENDING_SIGNALS as readonly string[]).includes(name)) {
          peer.event(EVENTS.signal, name);
          return;
        }
        if (ending) return leaving!(ending);
        ending = name;
        peer.event(EVENTS.signal, name);
        leaveTimer = setTimeout(() => leaving!(name), LEAVE_AFTER_S * 1000);
      };
      Deno.addSignalListener(name, handler);
      return () => Deno.removeSignalListener(name, handler);
    });
    forward.push(() => clearTimeout(leaveTimer));
    // Like ssh, outrun is told when its parent dies (make, distcc killed): SIGHUP,
    // forwarded as any other.
    libc().prctl(PR_SET_PDEATHSIG, BigInt(SIGNAL_NUMBERS.SIGHUP));
    // Both ends terminals: the command gets a pty, this terminal goes raw (keys,
    // Ctrl-C included, travel as bytes) and is restored on every way out.
    const tty = Deno.stdin.isTerminal() && Deno.stdout.isTerminal() ? Deno.consoleSize() : null;
    if (tty) {
      Deno.stdin.setRaw(true);
      const restoreOutput = rawOutput(1);
      const winch = () => {
        const { rows, columns } = Deno.consoleSize();
        peer.event(EVENTS.winch, { rows, cols: columns });
      };
      Deno.addSignalListener("SIGWINCH", winch);
      forward.push(() => {
        Deno.removeSignalListener("SIGWINCH", winch);
        restoreOutput();
        Deno.stdin.setRaw(false);
      });
    }
    pumpStdin(peer);
    // A wedged agent must not hold this side: --timeout, else the agent's own bound.
    if (r.ownSession) {
      startHeartbeat(
        peer,
        `the agent on ${r.alias}`,
        (why) => void peer.close(new Error(why)),
        o.timeout ?? PING_LIMIT_S,
      );
    }
    const cwd = Deno.cwd();
    const req: RunRequest = {
      argv: o.command,
      exe: r.exe,
      cwd,
      env,
      uid: Deno.uid() ?? 0,
      gid: Deno.gid() ?? 0,
      groups: localGroups(),
      tty: tty && { rows: tty.rows, cols: tty.columns },
      cache: r.cacheSettings,
      quiet: o.quiet,
    };
    // An empty remote cache will ask for this command's profile: it goes now, behind the
    // request, while the agent starts, and so does the validation's answer.
    const ahead = r.storePresent === false && req.exe && r.cache ? r.cache : null;
    if (ahead) req.validatedAhead = true;
    lap("start");
    const running = sessionPeer(peer).call(
      "session.run",
      req,
    );
    ahead?.pushAhead(req.exe!, aheadPaths(req));
    const answered = running.then(
      (result) => ({ result }),
      async (err) => {
        await r.agentUp; // the agent never started: say why
        throw new SshError(`outrun: connection to ${r.alias} lost: ${err.message}`);
      },
    );
    answered.catch(() => {}); // when outrun leaves first, the connection's end is no news
    const outcome = await Promise.race([answered, left.then((signal) => ({ signal }))]);
    if ("signal" in outcome) {
      if (!o.quiet) {
        console.error(
          `outrun: ${r.alias}: the command did not end after ${outcome.signal}; leaving it`,
        );
      }
      return 128 + SIGNAL_NUMBERS[outcome.signal];
    }
    const result = outcome.result;
    r.log(
      `command done: ${JSON.stringify(result)}; ${peer.stats.calls} calls from here, ` +
        `${peer.stats.framesIn} frames in (${peer.stats.bytesIn} bytes), ${peer.stats.framesOut} out (${peer.stats.bytesOut} bytes)`,
    );
    lap("command");
    // The agent answers after relaying all output: let it reach the terminal.
    await stdout.flush();
    await stderr.flush();
    if (result.used) {
      await r.cache?.saveProfile(result.used).catch((e) => r.log(`profile not saved: ${e}`));
    }
    await peer.close();
    if (o.stats) {
      lap("teardown");
      const input = {
        local: times,
        remote: result.stats,
        rpc: peer.stats,
        push: r.cache?.stats ?? null,
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
    await r.end();
  }
}

/** Writes in order and whole; `broke` is called once if the stream fails. */
function orderedWriter(stream: WritableStream<Uint8Array>, broke: () => void) {
  const writer = stream.getWriter();
  let last: Promise<void> = Promise.resolve();
  let broken = false;
  return {
    write(chunk: Uint8Array) {
      if (broken) return;
      last = writer.write(chunk).catch(() => {
        if (!broken) broke();
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
