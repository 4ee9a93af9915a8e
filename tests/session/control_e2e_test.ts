/**
 * ControlMaster end to end on the test bed (needs root): with `-o ControlMaster=auto`
 * commands share one master (one SSH connection, agent and mounted mirror), still
 * see every change made here between them (under a cached prefix too, where the
 * remote kernel keeps names, attributes and pages), run side by side, and the
 * master ends on `-O exit`, when idle, and takes its commands down with it.
 * Each test has its own HOME (sessions dir, client id).
 */
import assert from "node:assert/strict";
import { sshConfigPath, up } from "../testbed/testbed.ts";
import { removeTree } from "../remove_tree.ts";

import { eventually, finished, OUTRUN, outrunEnv, type Run as OutrunRun } from "./outrun_run.ts";
import { remoteLeftovers } from "./leftovers.ts";

const LIMIT_MS = 120_000;

interface Stats {
  local: Record<string, number>;
  remote: { calls: Record<string, number> };
}

type Run = OutrunRun<Stats>;

interface Bed {
  home: string;
  opt: string;
  run(argv: string[], o?: { flags?: string[]; stdin?: string }): Promise<Run>;
  spawn(argv: string[], flags?: string[]): Deno.ChildProcess;
  cleanup(): Promise<void>;
}

async function bed(host: string, persist = "60"): Promise<Bed> {
  await up();
  const home = await Deno.makeTempDir({ prefix: "outrun-control-e2e-home-" });
  await Deno.mkdir("/opt", { recursive: true });
  const opt = await Deno.makeTempDir({ prefix: "outrun-control-e2e-", dir: "/opt" });
  let n = 0;
  const master = ["-o", "ControlMaster=auto", "-o", `ControlPersist=${persist}`];
  const spawn = (argv: string[], flags: string[] = [], statsFile = "", stdin = false) =>
    new Deno.Command(OUTRUN, {
      args: ["-F", sshConfigPath, ...master, ...flags, host, ...argv],
      cwd: home,
      env: outrunEnv(home, statsFile),
      stdin: stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  return {
    home,
    opt,
    spawn: (argv, flags) => spawn(argv, flags),
    async run(argv, o = {}) {
      const statsFile = `${home}/stats-${n++}.json`;
      const child = spawn(argv, ["--stats", ...(o.flags ?? [])], statsFile, o.stdin !== undefined);
      if (o.stdin !== undefined) {
        const w = child.stdin.getWriter();
        await w.write(new TextEncoder().encode(o.stdin));
        await w.close();
      }
      return await finished<Stats>(child, statsFile, LIMIT_MS);
    },
    async cleanup() {
      // Whatever a test left running.
      await spawn([], ["-O", "exit"]).output();
      await removeTree(home);
      await removeTree(opt);
    },
  };
}

/** The master's pid, from `-O check` (null: none runs). */
async function masterPid(b: Bed): Promise<number | null> {
  const out = await b.spawn([], ["-O", "check"]).output();
  const m = /Master running \(pid=(\d+)\)/.exec(new TextDecoder().decode(out.stderr));
  return out.code === 0 && m ? Number(m[1]) : null;
}

async function remoteFuseMounts(host: string): Promise<number> {
  const out = await new Deno.Command("ssh", {
    args: ["-F", sshConfigPath, host.replace(/-wan$/, ""), "grep -c ' fuse.outrun ' /proc/mounts"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return countFrom(out);
}

/**
 * The count a remote `grep -c`/`pgrep -c` printed: its exit is 1 for none, but
 * empty output means ssh failed, which must not read as 0.
 */
function countFrom(out: Deno.CommandOutput): number {
  const text = new TextDecoder().decode(out.stdout).trim();
  assert.match(text, /^\d+$/, `no count from the remote: ${new TextDecoder().decode(out.stderr)}`);
  return Number(text);
}

Deno.test("control e2e deb-wan: commands share one master; no validation round trip, no connect", async () => {
  const b = await bed("deb-wan");
  try {
    assert.equal(await masterPid(b), null);
    const first = await b.run(["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert.equal(first.code, 3, first.stderr);
    assert.equal(first.text, "out\n");
    assert.match(first.stderr, /^err$/m);
    const pid = await masterPid(b);
    assert.ok(pid, "a master stays");
    const second = await b.run(["cat"], { stdin: "through the master\n" });
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.text, "through the master\n");
    assert.equal(await masterPid(b), pid, "the same master");
    // Nothing of a session's start: no connect, no payload, no validation call.
    assert.equal(second.stats?.local.connect, undefined, JSON.stringify(second.stats));
    assert.equal(second.stats?.remote.calls["cache.validate"], undefined);
    const ffmpeg = await b.run(["ffmpeg", "-version"]);
    assert.match(ffmpeg.text, /^ffmpeg version/, ffmpeg.stderr);
    const again = await b.run(["ffmpeg", "-version"]);
    assert.equal(again.text, ffmpeg.text);
    const calls = Object.values(again.stats!.remote.calls).reduce((n, c) => n + c, 0);
    assert.ok(calls <= 3, `a warm ffmpeg through the master: ${JSON.stringify(again.stats)}`);
    // What ffmpeg used through the master is its profile here, for cold starts elsewhere.
    const exe = new TextEncoder().encode(Deno.realPathSync("/usr/bin/ffmpeg"));
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", exe));
    const name = Array.from(digest, (x) => x.toString(16).padStart(2, "0")).join("").slice(0, 32);
    await eventually("ffmpeg's profile", async () => {
      try {
        const p = JSON.parse(await Deno.readTextFile(`${b.home}/.outrun/profiles/${name}.json`));
        return Object.keys(p.chunks).some((f) => f.includes("libavcodec"));
      } catch {
        return false;
      }
    });
  } finally {
    await b.cleanup();
  }
});

Deno.test("control e2e deb: changes here between commands reach the master's mirror", async () => {
  const b = await bed("deb");
  try {
    await Deno.writeTextFile(`${b.opt}/data`, "one\n");
    await Deno.writeTextFile(`${b.opt}/gone`, "soon gone\n");
    const list = ["sh", "-c", `cat ${b.opt}/data; ls ${b.opt}`];
    let r = await b.run(list);
    assert.equal(r.text, "one\ndata\ngone\n", r.stderr);
    r = await b.run(list);
    assert.equal(r.text, "one\ndata\ngone\n");
    // The remote kernel holds the name, the attributes, the listing and the pages:
    // a same-size rewrite, a removal and a new file must each reach it.
    await Deno.writeTextFile(`${b.opt}/data`, "two\n");
    await Deno.remove(`${b.opt}/gone`);
    await Deno.writeTextFile(`${b.opt}/new`, "new\n");
    r = await b.run(list);
    assert.equal(r.text, "two\ndata\nnew\n", r.stderr);
    r = await b.run(["cat", `${b.opt}/gone`]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /No such file or directory/);
    // What a command writes lands here, and the next command sees it.
    r = await b.run(["sh", "-c", `echo made > ${b.opt}/made`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await Deno.readTextFile(`${b.opt}/made`), "made\n");
    r = await b.run(["cat", `${b.opt}/made`]);
    assert.equal(r.text, "made\n");
  } finally {
    await b.cleanup();
  }
});

Deno.test("control e2e deb-wan: a header edited here while the master is up: the next build there uses it", async () => {
  const b = await bed("deb-wan");
  try {
    // Outside the cached prefixes (the test's HOME): names and attributes kept long
    // there, true because the local side tells of each change.
    const src = `${b.home}/src`;
    await Deno.mkdir(src);
    await Deno.writeTextFile(`${src}/v.h`, "#define V 1\n");
    await Deno.writeTextFile(
      `${src}/main.c`,
      '#include <stdio.h>\n#include "v.h"\n#if __has_include("extra.h")\n#include "extra.h"\n' +
        '#else\n#define EXTRA 0\n#endif\nint main(void) { printf("%d %d\\n", V, EXTRA); }\n',
    );
    const build = ["sh", "-c", `cd ${src} && gcc -o prog main.c && ./prog`];
    let r = await b.run(build);
    assert.equal(r.text, "1 0\n", r.stderr);
    r = await b.run(build);
    assert.equal(r.text, "1 0\n", r.stderr);
    // A longer header (its old size kept there would cut it short) and a header that
    // was not there (a name known absent there).
    await Deno.writeTextFile(`${src}/v.h`, "#define V 22\n");
    await Deno.writeTextFile(`${src}/extra.h`, "#define EXTRA 5\n");
    r = await b.run(build);
    assert.equal(r.text, "22 5\n", r.stderr);
    await Deno.remove(`${src}/extra.h`);
    r = await b.run(build);
    assert.equal(r.text, "22 0\n", r.stderr);
  } finally {
    await b.cleanup();
  }
});

Deno.test("control e2e deb-wan: a file appended here while a command there polls it: the command sees it", async () => {
  const b = await bed("deb-wan");
  try {
    const log = `${b.home}/log`;
    await Deno.writeTextFile(log, "start\n");
    // Reads the file through one open descriptor, as tail -f does, until "done" comes
    // (up to 30 s), having said it started: no open to bring fresh attributes, only
    // the local side's word that the file grew.
    const poll = `exec 3< ${log}; touch ${b.home}/polling; i=0; ` +
      `while [ $i -lt 300 ]; do grep -q done <&3 && exit 0; sleep 0.1; i=$((i+1)); done; exit 1`;
    const running = b.run(["sh", "-c", poll]);
    await eventually("the command polling", async () => {
      try {
        await Deno.stat(`${b.home}/polling`);
        return true;
      } catch {
        return false;
      }
    }, 60_000);
    await new Promise((r) => setTimeout(r, 500)); // a few reads of the old contents first
    await Deno.writeTextFile(log, "done\n", { append: true });
    const r = await running;
    assert.equal(r.code, 0, `the command did not see the append: ${r.stderr}`);
  } finally {
    await b.cleanup();
  }
});

Deno.test("control e2e deb: commands run side by side through one master", async () => {
  const b = await bed("deb");
  try {
    await b.run(["true"]);
    const runs = await Promise.all(
      Array.from({ length: 6 }, (_, i) => b.run(["sh", "-c", `sleep 1; echo ${i}; exit ${i}`])),
    );
    runs.forEach((r, i) => {
      assert.equal(r.code, i, r.stderr);
      assert.equal(r.text, `${i}\n`);
    });
  } finally {
    await b.cleanup();
  }
});

Deno.test("control e2e deb: -O exit ends the master and its commands; the remote is left clean", async () => {
  const b = await bed("deb");
  try {
    await b.run(["true"]);
    const pid = await masterPid(b);
    assert.ok(pid);
    const long = b.spawn(["sleep", "60"]);
    await eventually(
      "the command to run there",
      async () => (await remoteLeftovers("deb", ["sleep"])).endsWith(" named=1"),
    );
    const exit = await b.spawn([], ["-O", "exit"]).output();
    assert.equal(exit.code, 0);
    assert.match(new TextDecoder().decode(exit.stderr), /Exit request sent/);
    const out = await long.output();
    assert.equal(out.code, 255, "the command's connection went with the master");
    assert.match(new TextDecoder().decode(out.stderr), /lost/);
    assert.equal(await masterPid(b), null);
    await eventually(
      "the remote's mirror to go",
      async () => (await remoteFuseMounts("deb")) === 0,
    );
  } finally {
    await b.cleanup();
  }
});

Deno.test("control e2e deb: an idle master ends after ControlPersist", async () => {
  const b = await bed("deb", "1");
  try {
    const r = await b.run(["true"]);
    assert.equal(r.code, 0, r.stderr);
    await eventually("the idle master to end", async () => (await masterPid(b)) === null, 15_000);
    assert.deepEqual([...Deno.readDirSync(`${b.home}/.outrun/sessions`)].map((e) => e.name), []);
  } finally {
    await b.cleanup();
  }
});

Deno.test("control e2e deb: a killed master's socket is taken over by the next command", async () => {
  const b = await bed("deb");
  try {
    await b.run(["true"]);
    const pid = await masterPid(b);
    assert.ok(pid);
    Deno.kill(pid, "SIGKILL");
    await eventually("the killed master to go", async () => (await masterPid(b)) === null);
    const sockets = [...Deno.readDirSync(`${b.home}/.outrun/sessions`)].map((e) => e.name);
    assert.equal(sockets.length, 1, "its socket is left behind");
    const r = await b.run(["echo", "again"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.text, "again\n");
    const next = await masterPid(b);
    assert.ok(next && next !== pid, "a new master");
    await eventually(
      "the killed master's mirror to go",
      async () => (await remoteFuseMounts("deb")) <= 1,
    );
  } finally {
    await b.cleanup();
  }
});

Deno.test("control e2e deb: with [cache] complete = yes an idle master completes files held in part", async () => {
  const b = await bed("deb");
  const emptyRemoteCache = async () => {
    const out = await new Deno.Command("ssh", {
      args: ["-F", sshConfigPath, "deb", "rm -rf ~/.cache/outrun/cache"],
    }).output();
    assert.ok(out.success);
  };
  const chunkCalls = (r: Run) => r.stats?.remote.calls["cache.chunks"] ?? 0;
  try {
    await Deno.mkdir(`${b.home}/.outrun`, { recursive: true });
    // Without it: `-h full` reads parts of the libraries `-version` did not.
    await emptyRemoteCache();
    await b.run(["ffmpeg", "-version"]);
    const partial = await b.run(["ffmpeg", "-h", "full"]);
    assert.equal(partial.code, 0, partial.stderr);
    assert.ok(chunkCalls(partial) > 0, JSON.stringify(partial.stats));
    await b.spawn([], ["-O", "exit"]).output();

    await Deno.writeTextFile(`${b.home}/.outrun/config`, "[cache]\ncomplete = yes\n");
    await emptyRemoteCache();
    const first = await b.run(["ffmpeg", "-version"], { flags: ["-v"] });
    assert.equal(first.code, 0, first.stderr);
    const [log] = [...Deno.readDirSync(`${b.home}/.outrun/sessions`)]
      .filter((e) => e.name.endsWith(".log")).map((e) => `${b.home}/.outrun/sessions/${e.name}`);
    await eventually(
      "the master to complete what the remote holds in part",
      async () => /complete: the remote holds every file/.test(await Deno.readTextFile(log)),
      120_000,
    );
    const whole = await b.run(["ffmpeg", "-h", "full"]);
    assert.equal(whole.text, partial.text);
    assert.equal(chunkCalls(whole), 0, JSON.stringify(whole.stats));
  } finally {
    await b.cleanup();
  }
});

Deno.test("control e2e deb: a command whose outrun is killed is killed there; the master stays", async () => {
  const b = await bed("deb");
  const remoteSleeps = async () => {
    const out = await new Deno.Command("ssh", {
      args: ["-F", sshConfigPath, "deb", "ps -eo args | grep -c '^sleep 4242$' || true"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return countFrom(out);
  };
  try {
    await b.run(["true"]);
    const pid = await masterPid(b);
    const child = b.spawn(["sleep", "4242"]);
    await eventually("the command to run there", async () => (await remoteSleeps()) === 1);
    child.kill("SIGKILL");
    await child.status;
    await eventually("the command to be killed there", async () => (await remoteSleeps()) === 0);
    assert.equal(await masterPid(b), pid, "the master serves on");
    const r = await b.run(["echo", "still"]);
    assert.equal(r.text, "still\n", r.stderr);
  } finally {
    await b.cleanup();
  }
});

Deno.test("control e2e deb: no place for a master's socket: the command runs on its own", async () => {
  const b = await bed("deb");
  try {
    await Deno.mkdir(`${b.home}/.outrun`, { recursive: true });
    await Deno.writeTextFile(`${b.home}/.outrun/sessions`, "a file, not a directory\n");
    const r = await b.run(["echo", "alone"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.text, "alone\n");
    assert.ok(r.stats?.local.connect !== undefined, "a session of its own");
  } finally {
    await Deno.remove(`${b.home}/.outrun/sessions`);
    await b.cleanup();
  }
});
