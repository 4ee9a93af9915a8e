/**
 * Faults (needs root; the test bed): whatever dies or stops mid-command (outrun,
 * the agent, the command, sshd's session process, the link, a ControlMaster),
 * outrun ends with the status ssh would give, within the heartbeat's bound, and
 * nothing of the session is left on either side: no process, mount or mount point.
 * Many clients on one master get what each gets alone.
 */
import assert from "node:assert/strict";
import { pauseWan, sshConfigPath, up } from "../testbed/testbed.ts";
import { removeTree } from "../remove_tree.ts";
import { eventually, OUTRUN, outrunEnv } from "./outrun_run.ts";
import {
  cProject,
  onRemote,
  remoteClean,
  remoteLeftovers,
  remotePids,
  workdir,
} from "./leftovers.ts";

/** Far past every bound here (the heartbeat gives up after 10 s); a hang is longer. */
const LIMIT_MS = 120_000;
/**
 * How long the remote may take to be clean: the heartbeat's 10 s plus a ping's
 * interval and the kill, with room for a loaded machine; without it, sshd would
 * notice a cut link only after hours.
 */
const CLEAN_WITHIN_MS = 30_000;

interface Outcome {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

/** outrun (or any argv) running, its output collected as it comes. */
class Running {
  readonly child: Deno.ChildProcess;
  stdout = "";
  stderr = "";
  readonly #done: Promise<Outcome>;

  constructor(argv: string[], o: { env?: Record<string, string>; stdin?: Uint8Array } = {}) {
    this.child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      env: o.env,
      stdin: o.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (o.stdin) {
      const w = this.child.stdin.getWriter();
      w.write(o.stdin).then(() => w.close()).catch(() => {});
    }
    const collect = async (stream: ReadableStream<Uint8Array>, into: "stdout" | "stderr") => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) this[into] += chunk;
    };
    const timer = setTimeout(() => this.child.kill("SIGKILL"), LIMIT_MS);
    this.#done = Promise.all([
      this.child.status,
      collect(this.child.stdout, "stdout"),
      collect(this.child.stderr, "stderr"),
    ]).then(([status]) => {
      clearTimeout(timer);
      return { ...status, stdout: this.stdout, stderr: this.stderr };
    });
  }

  /** Sends `signal` unless it has ended. */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    try {
      this.child.kill(signal);
    } catch { /* ended */ }
  }

  /** Its end (killed, and failed, past LIMIT_MS). */
  async ended(): Promise<Outcome> {
    const started = Date.now();
    const outcome = await this.#done;
    assert(Date.now() - started < LIMIT_MS, `no end after ${LIMIT_MS / 1000} s`);
    return outcome;
  }
}

function outrun(host: string, command: string[], env?: Record<string, string>): Running {
  return new Running([OUTRUN, "-F", sshConfigPath, host, ...command], { env });
}

/** A command with a process of its own in its group: both must go. */
const SLEEPERS = ["sh", "-c", "sleep 300 & sleep 301"];

async function waitForSleepers(host: string, count: number): Promise<void> {
  await eventually(
    `${count} sleeps on ${host}`,
    async () => (await remoteLeftovers(host, ["sleep"])).endsWith(` named=${count}`),
  );
}

async function only(host: string, part: string): Promise<number> {
  const pids = await remotePids(host, part);
  assert.equal(pids.length, 1, `one process with "${part}" on ${host}: ${pids}`);
  return pids[0];
}

const AGENT = "agent.js agent ";

/** What is killed, how, and what outrun must end with then. */
const KILLS: {
  what: string;
  kill: (host: string, outrun: Running) => Promise<void>;
  expect: (host: string, o: Outcome) => void;
}[] = [
  {
    what: "outrun",
    kill: (_, o) => Promise.resolve(o.kill("SIGKILL")),
    expect: (_, o) => assert.equal(o.signal, "SIGKILL"),
  },
  {
    what: "the agent",
    kill: async (host) => void await onRemote(host, `kill -9 ${await only(host, AGENT)}`),
    expect: (host, o) => {
      assert.equal(o.code, 255, o.stderr);
      assert.match(o.stderr, new RegExp(`^outrun: connection to ${host} lost: `, "m"));
    },
  },
  {
    what: "the command",
    kill: async (host) =>
      void await onRemote(host, `kill -9 ${await only(host, "sh -c sleep 300 & sleep 301")}`),
    // As from ssh: 128 + 9, and no word of outrun's own.
    expect: (_, o) => assert.deepEqual([o.code, o.stderr], [137, ""]),
  },
  {
    what: "sshd's session process",
    kill: async (host) => {
      const agent = await only(host, AGENT);
      await onRemote(host, `kill -9 $(awk '/^PPid:/ { print $2 }' /proc/${agent}/status)`);
    },
    expect: (host, o) => {
      assert.equal(o.code, 255, o.stderr);
      assert.match(o.stderr, new RegExp(`^outrun: connection to ${host} lost: `, "m"));
    },
  },
];

for (const host of ["deb", "deb-wan", "tiny", "tiny-wan"]) {
  for (const k of KILLS) {
    Deno.test(`faults e2e ${host}: kill -9 of ${k.what} mid-command ends it all`, async () => {
      await up();
      const run = outrun(host, SLEEPERS);
      try {
        await waitForSleepers(host, 2);
        await k.kill(host, run);
        k.expect(host, await run.ended());
        await remoteClean(host, CLEAN_WITHIN_MS, ["sleep"]);
      } finally {
        run.kill("SIGKILL");
        await run.ended().catch(() => {});
      }
    });
  }
}

/**
 * Workloads cut off by a pulled cable: `start` prepares and returns the command;
 * `names` are its processes on the remote, seen running before the cut and still
 * there right after it (the cut came mid-work); `inFlight`, what else shows the
 * work under way here.
 */
const CUTS: {
  what: string;
  names: string[];
  start: (dir: string) => Promise<string[]>;
  inFlight?: (dir: string) => Promise<boolean>;
}[] = [
  {
    what: "a large read",
    // (Not cat: the look at the remote runs cat itself.)
    names: ["sha256sum"],
    start: async (dir) => {
      // Far more than every buffer on the way holds (relay, sockets, sshd), and
      // nothing a compressor could shrink.
      const made = await new Deno.Command("sh", {
        args: ["-c", `head -c 256M /dev/urandom > ${dir}/big && chmod 644 ${dir}/big`],
      }).output();
      assert.equal(made.code, 0);
      return ["sha256sum", `${dir}/big`];
    },
  },
  {
    what: "a large write-back",
    names: ["head"],
    start: (dir) => Promise.resolve(["sh", "-c", `head -c 1G /dev/urandom > ${dir}/out`]),
    inFlight: async (dir) => {
      try {
        return (await Deno.stat(`${dir}/out`)).size > (1 << 20);
      } catch {
        return false;
      }
    },
  },
  {
    what: "a build",
    names: ["make", "gcc", "cc1", "as"],
    start: async (dir) => {
      await cProject(dir, 40);
      return ["make", "-C", dir, "-j2", "CC=gcc"];
    },
    inFlight: async (dir) => {
      try {
        await Deno.stat(`${dir}/f0.o`);
        return true;
      } catch {
        return false;
      }
    },
  },
];

for (const host of ["deb-wan", "tiny-wan"]) {
  for (const c of CUTS) {
    Deno.test(`faults e2e ${host}: a link cut during ${c.what} ends both sides`, async () => {
      await up();
      const dir = await workdir("outrun-faults-e2e-");
      let run: Running | null = null;
      try {
        run = outrun(host, await c.start(dir));
        await eventually(
          `${c.what} under way`,
          async () =>
            !(await remoteLeftovers(host, c.names)).endsWith(" named=0") &&
            (await c.inFlight?.(dir) ?? true),
          60_000,
        );
        await pauseWan(true);
        // Seen the direct way, which the cut spares: the work was still going on.
        const during = await remoteLeftovers(host, c.names);
        assert.doesNotMatch(during, / named=0$/, `${c.what} was over before the cut`);
        const o = await run.ended();
        assert.equal(o.code, 255, o.stderr);
        assert.match(
          o.stderr,
          new RegExp(
            `^outrun: connection to ${host} lost: no answer from the agent on ${host} `,
            "m",
          ),
        );
        // While the link is still cut: the agent noticed by itself.
        await remoteClean(host, CLEAN_WITHIN_MS, c.names);
      } finally {
        await pauseWan(false);
        run?.kill("SIGKILL");
        await run?.ended().catch(() => {});
        await removeTree(dir);
      }
    });
  }
}

/** `outrun -O check`: the master's pid. */
async function masterPid(host: string, env: Record<string, string>): Promise<number> {
  const o = await new Running([OUTRUN, "-F", sshConfigPath, "-O", "check", host], { env })
    .ended();
  const m = /Master running \(pid=(\d+)\)/.exec(o.stderr);
  assert(m, o.stderr);
  return Number(m[1]);
}

const MASTER = ["-o", "ControlMaster=auto", "-o", "ControlPersist=60"];

for (const host of ["deb", "deb-wan"]) {
  Deno.test(`faults e2e ${host}: a ControlMaster killed with clients attached ends them all`, async () => {
    await up();
    const home = await workdir("outrun-faults-home-");
    const env = outrunEnv(home);
    const runs: Running[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        runs.push(
          new Running([OUTRUN, "-F", sshConfigPath, ...MASTER, host, ...SLEEPERS], { env }),
        );
        // The first starts the master; the others find it.
        await waitForSleepers(host, 2 * (i + 1));
      }
      const master = await masterPid(host, env);
      Deno.kill(master, "SIGKILL");
      for (const run of runs) {
        const o = await run.ended();
        assert.equal(o.code, 255, o.stderr);
        assert.match(o.stderr, new RegExp(`^outrun: connection to ${host} lost: `, "m"));
      }
      await remoteClean(host, CLEAN_WITHIN_MS, ["sleep"]);
      // Its socket is left; the next command makes a new master there.
      const next = await new Running(
        [OUTRUN, "-F", sshConfigPath, ...MASTER, host, "echo", "again"],
        { env },
      ).ended();
      assert.deepEqual([next.code, next.stdout], [0, "again\n"], next.stderr);
      assert.notEqual(await masterPid(host, env), master);
    } finally {
      for (const run of runs) run.kill("SIGKILL");
      await new Running([OUTRUN, "-F", sshConfigPath, "-O", "exit", host], { env }).ended();
      await removeTree(home);
    }
  });
}

Deno.test("faults e2e deb-wan: a client killed through a ControlMaster takes its command along", async () => {
  await up();
  const home = await workdir("outrun-faults-home-");
  const env = outrunEnv(home);
  const host = "deb-wan";
  const first = new Running([OUTRUN, "-F", sshConfigPath, ...MASTER, host, ...SLEEPERS], { env });
  let second: Running | null = null;
  try {
    await waitForSleepers(host, 2);
    second = new Running([OUTRUN, "-F", sshConfigPath, ...MASTER, host, ...SLEEPERS], { env });
    await waitForSleepers(host, 4);
    second.kill("SIGKILL");
    await second.ended();
    // The other client's command and the master go on.
    await waitForSleepers(host, 2);
    assert.equal(await masterPid(host, env) > 0, true);
    first.kill("SIGTERM");
    assert.equal((await first.ended()).code, 143);
    const exit = await new Running([OUTRUN, "-F", sshConfigPath, "-O", "exit", host], { env })
      .ended();
    assert.equal(exit.code, 0, exit.stderr);
    await remoteClean(host, CLEAN_WITHIN_MS, ["sleep"]);
  } finally {
    first.kill("SIGKILL");
    second?.kill("SIGKILL");
    await new Running([OUTRUN, "-F", sshConfigPath, "-O", "exit", host], { env }).ended();
    await removeTree(home);
  }
});

/** One command of the mix: what it is, and how to run it through outrun with `flags`. */
interface MixCommand {
  what: string;
  run: (flags: string[]) => Promise<Outcome>;
}

/** A minute of the mix on each of 8 clients: each round runs every command once. */
const CLIENTS = 8;
const MIX_MS = 60_000;

function mix(host: string, dir: string, env: Record<string, string>, input: Uint8Array) {
  const through = (flags: string[], command: string[], stdin?: Uint8Array) =>
    new Running([OUTRUN, "-F", sshConfigPath, ...flags, host, ...command], { env, stdin })
      .ended();
  const commands: MixCommand[] = [
    { what: "stdin-fed", run: (f) => through(f, ["sha256sum"], input) },
    {
      what: "failing",
      run: (f) => through(f, ["sh", "-c", "echo out; echo err >&2; exit 3"]),
    },
    { what: "killed", run: (f) => through(f, ["sh", "-c", "echo before; kill -9 $$"]) },
    {
      what: "local files",
      run: (f) => through(f, ["sh", "-c", `cd ${dir} && ls && cat * | sha256sum`]),
    },
    {
      what: "tty",
      // script(1) gives outrun a terminal (of script's own size, the same each time),
      // and may echo a NUL of its own (its stdin's end) before or after the output,
      // as under ssh.
      run: async (f) => {
        const o = await new Running([
          "script",
          "-qec",
          [OUTRUN, "-F", sshConfigPath, ...f, host, "sh", "-c", "'tty >/dev/null && stty size'"]
            .join(" "),
          "/dev/null",
        ], { env }).ended();
        return { ...o, stdout: o.stdout.replace(/^\^@|\^@$/g, "") };
      },
    },
  ];
  return commands;
}

Deno.test(`faults e2e deb-wan: ${CLIENTS} clients on one master for a minute get what each gets alone`, async () => {
  await up();
  const host = "deb-wan";
  const home = await workdir("outrun-faults-home-");
  const dir = await workdir("outrun-faults-mix-");
  const env = outrunEnv(home);
  try {
    for (let i = 0; i < 20; i++) {
      await Deno.writeFile(`${dir}/file${i}`, crypto.getRandomValues(new Uint8Array(20_000)));
      await Deno.chmod(`${dir}/file${i}`, 0o644);
    }
    const input = crypto.getRandomValues(new Uint8Array(65536));
    const commands = mix(host, dir, env, input);
    const show = (o: Outcome) => JSON.stringify([o.code, o.signal, o.stdout, o.stderr]);
    // One by one, each on a connection of its own: what each must give.
    const alone = new Map<string, string>();
    for (const c of commands) alone.set(c.what, show(await c.run([])));
    assert.match(alone.get("failing")!, /^\[3,/);
    assert.match(alone.get("killed")!, /^\[137,/);
    // A master first, then every client through it at once, round after round.
    const started = await commands[0].run(MASTER);
    assert.equal(show(started), alone.get("stdin-fed"));
    const deadline = Date.now() + MIX_MS;
    let runs = 0;
    // One client's failure stops the others: none may go on (and start a master again)
    // after the test has ended.
    let failed = false;
    const client = async (k: number) => {
      do {
        // Each client its own order, so that all kinds overlap.
        for (let i = 0; i < commands.length && !failed; i++) {
          const c = commands[(i + k) % commands.length];
          try {
            assert.equal(show(await c.run(MASTER)), alone.get(c.what), `client ${k}: ${c.what}`);
          } catch (e) {
            failed = true;
            throw e;
          }
          runs++;
        }
      } while (Date.now() < deadline && !failed);
    };
    const ended = await Promise.allSettled([...Array(CLIENTS).keys()].map(client));
    for (const e of ended) if (e.status === "rejected") throw e.reason;
    assert(runs >= CLIENTS * commands.length);
    console.log(`${runs} commands through one master`);
    const exit = await new Running([OUTRUN, "-F", sshConfigPath, "-O", "exit", host], { env })
      .ended();
    assert.equal(exit.code, 0, exit.stderr);
    await remoteClean(host, CLEAN_WITHIN_MS, ["sha256sum"]);
  } finally {
    await new Running([OUTRUN, "-F", sshConfigPath, "-O", "exit", host], { env }).ended();
    await removeTree(dir);
    await removeTree(home);
  }
});
