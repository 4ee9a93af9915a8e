/**
 * outrun end to end on the test bed (needs root): real sshd in a network
 * namespace, real FUSE mount on the remote, real chroot, real programs from this
 * machine. `deb` is Debian trixie, `tiny` a busybox-only root without glibc; each
 * is reached directly and through the 20 ms-RTT relay (`-wan`). This machine's
 * programs and files are what the commands see.
 */
import assert from "node:assert/strict";
import { clientKeyPath, sshConfigPath, up } from "../testbed/testbed.ts";

import { eventually, OUTRUN } from "./outrun_run.ts";

interface Result {
  code: number;
  stdout: Uint8Array;
  stderr: string;
  text: string;
}

async function outrun(
  args: string[],
  options: { stdin?: Uint8Array; cwd?: string; prefix?: string[]; env?: Record<string, string> } =
    {},
): Promise<Result> {
  const argv = [...(options.prefix ?? []), OUTRUN, "-F", sshConfigPath, ...args];
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    cwd: options.cwd,
    env: options.env,
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // A hung run fails its test instead of holding the whole suite (and CI) hostage.
  let hung = false;
  const timer = setTimeout(() => {
    hung = true;
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, RUN_LIMIT_MS);
  try {
    if (options.stdin) {
      const w = child.stdin.getWriter();
      await w.write(options.stdin).catch(() => {});
      await w.close().catch(() => {});
    }
    const out = await child.output();
    if (hung) throw new Error(`outrun ${args.join(" ")}: no end after ${RUN_LIMIT_MS / 1000} s`);
    return {
      code: out.code,
      stdout: out.stdout,
      stderr: new TextDecoder().decode(out.stderr),
      text: new TextDecoder().decode(out.stdout),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Longest a single outrun run may take in these tests (the slowest, ffmpeg on -wan, ~1 min cold). */
const RUN_LIMIT_MS = 240_000;

async function remote(alias: string, command: string): Promise<string> {
  const out = await new Deno.Command("ssh", { args: ["-F", sshConfigPath, alias, command] })
    .output();
  // A failed ssh prints nothing, which must not read as "nothing there".
  assert.equal(out.code, 0, `ssh ${alias}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

/**
 * Outrun FUSE mounts seen from any process (one mount shows once per namespace view:
 * at the agent's path and as `/` of the chrooted command) and processes named `name`.
 */
async function remoteClean(alias: string, name: string): Promise<string> {
  return (await remote(
    alias,
    `echo "mounts=$(cat /proc/[0-9]*/mounts 2>/dev/null | grep -c fuse.outrun) ` +
      `procs=$(cat /proc/[0-9]*/comm 2>/dev/null | grep -cx ${name})"`,
  )).trim();
}

const HOSTS = ["deb", "deb-wan", "tiny", "tiny-wan"];
/** The test bed's hosts reached directly (the -wan aliases go to the same machines). */
const DIRECT = ["deb", "tiny"];
const IFACE: Record<string, string> = { deb: "ortb1d", tiny: "ortb2d" };

/** `outrun HOST sleep 300`, once the remote has it running under a mount. */
async function remoteSleep(host: string, stderr: "null" | "piped"): Promise<Deno.ChildProcess> {
  const child = new Deno.Command(OUTRUN, {
    args: ["-F", sshConfigPath, host, "sleep", "300"],
    stdout: "null",
    stderr,
  }).spawn();
  await eventually(
    "the command to start",
    async () => /^mounts=[1-9]\d* procs=1$/.test(await remoteClean(host, "sleep")),
  );
  return child;
}

async function workdir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "outrun-e2e-" });
  await Deno.chmod(dir, 0o755);
  return dir;
}

for (const host of HOSTS) {
  Deno.test(`e2e ${host}: echo hi prints hi, on the remote's CPU with this machine's files`, async () => {
    await up();
    const r = await outrun([host, "sh", "-c", "echo hi; uname -n; head -1 /etc/os-release"]);
    assert.equal(r.code, 0, r.stderr);
    const local = (await Deno.readTextFile("/etc/os-release")).split("\n")[0];
    assert.equal(r.text, `hi\n${host.replace("-wan", "")}\n${local}\n`);
  });

  Deno.test(`e2e ${host}: exit statuses come back exactly`, async () => {
    await up();
    for (
      const [script, code] of [["exit 0", 0], ["exit 1", 1], ["exit 255", 255], [
        "kill -TERM $$",
        143,
      ]] as const
    ) {
      assert.equal((await outrun([host, "sh", "-c", script])).code, code, script);
    }
    const missing = await outrun([host, "no-such-command-here"]);
    assert.equal(missing.code, 127);
    assert.match(missing.stderr, /no-such-command-here: command not found/);
  });

  Deno.test(`e2e ${host}: stdin is streamed (base64 of foobar, 50 MB through cat)`, async () => {
    await up();
    const b64 = await outrun([host, "base64"], { stdin: new TextEncoder().encode("foobar") });
    assert.equal(b64.text, "Zm9vYmFy\n");
    const big = new Uint8Array(50 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 65536) crypto.getRandomValues(big.subarray(i, i + 65536));
    const cat = await outrun([host, "cat"], { stdin: big });
    assert.equal(cat.code, 0, cat.stderr);
    assert.equal(cat.stdout.length, big.length);
    assert.ok(cat.stdout.every((b, i) => b === big[i]), "byte-identical");
  });

  Deno.test(`e2e ${host}: what the command writes lands here; scripts read local files`, async () => {
    await up();
    const dir = await workdir();
    try {
      await Deno.writeTextFile(`${dir}/data.txt`, "42\n");
      await Deno.writeTextFile(`${dir}/s.py`, 'print(int(open("data.txt").read()) * 2)\n');
      await Deno.writeTextFile(
        `${dir}/s.sh`,
        '#!/bin/sh\nread x < data.txt; echo "sh $((x + 1))"\n',
      );
      await Deno.chmod(`${dir}/s.sh`, 0o755);
      assert.equal((await outrun([host, "touch", "foo"], { cwd: dir })).code, 0);
      assert.ok((await Deno.stat(`${dir}/foo`)).isFile, "foo exists locally");
      assert.equal((await outrun([host, "python3", "s.py"], { cwd: dir })).text, "84\n");
      assert.equal((await outrun([host, "./s.sh"], { cwd: dir })).text, "sh 43\n");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`e2e ${host}: ffmpeg from this machine runs there; a transcode is byte-identical`, async () => {
    await up();
    const help = await outrun([host, "ffmpeg", "-hide_banner", "-h"]);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.text, /Getting help:/);
    const dir = await workdir();
    try {
      const run = (cmd: string) =>
        new Deno.Command("bash", { args: ["-c", cmd], cwd: dir, stderr: "null" }).output();
      await run(
        "ffmpeg -f lavfi -i testsrc=duration=2:size=160x120:rate=15 -pix_fmt yuv420p in.y4m",
      );
      const args = [
        "-i",
        "in.y4m",
        "-c:v",
        "mpeg4",
        "-threads",
        "1",
        "-fflags",
        "+bitexact",
        "-flags:v",
        "+bitexact",
      ];
      await run(`ffmpeg ${args.join(" ")} local.avi`);
      const r = await outrun([host, "ffmpeg", "-loglevel", "error", ...args, "remote.avi"], {
        cwd: dir,
      });
      assert.equal(r.code, 0, r.stderr);
      const [a, b] = [
        await Deno.readFile(`${dir}/local.avi`),
        await Deno.readFile(`${dir}/remote.avi`),
      ];
      assert.ok(a.length > 1000);
      assert.deepEqual(b, a);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

for (const host of HOSTS) {
  Deno.test(`e2e ${host}: the command runs as the local user (root, and nobody)`, async () => {
    await up();
    assert.equal((await outrun([host, "id", "-u"])).text, `${Deno.uid()}\n`);
    // A non-root local user with its own copy of the key and config.
    const dir = await workdir();
    try {
      await Deno.copyFile(`${sshConfigPath.replace(/ssh_config$/, "id_ed25519")}`, `${dir}/key`);
      const config = (await Deno.readTextFile(sshConfigPath)).replace(
        /IdentityFile .*/,
        `IdentityFile ${dir}/key`,
      );
      await Deno.writeTextFile(`${dir}/config`, config);
      await new Deno.Command("chown", { args: ["-R", "65534:65534", dir] }).output();
      await Deno.chmod(`${dir}/key`, 0o600);
      const out = await new Deno.Command("setpriv", {
        args: [
          "--reuid=65534",
          "--regid=65534",
          "--clear-groups",
          OUTRUN,
          "-F",
          `${dir}/config`,
          host,
          "sh",
          "-c",
          "id -u; id -g; touch mine; cat /etc/shadow",
        ],
        cwd: dir,
        env: { HOME: dir, XDG_CACHE_HOME: `${dir}/cache`, DENO_DIR: `${dir}/deno` },
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.equal(text, "65534\n65534\n", new TextDecoder().decode(out.stderr));
      assert.match(new TextDecoder().decode(out.stderr), /shadow: Permission denied/);
      assert.equal((await Deno.stat(`${dir}/mine`)).uid, 65534, "created as nobody, here");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("e2e deb: a login that is not root goes through sudo -n; one without sudo is told so", async () => {
  await up();
  // alice may sudo without a password (the test bed makes her so): the agent is root.
  const alice = await outrun(["alice@deb", "sh", "-c", "id -u; cat /proc/self/status | grep -c ."]);
  assert.equal(alice.code, 0, alice.stderr);
  assert.equal(alice.text.split("\n")[0], `${Deno.uid()}`, "the command is the local user");
  // bob may not: one line, exit 255.
  const bob = await outrun(["bob@deb", "true"]);
  assert.equal(bob.code, 255);
  assert.match(bob.stderr, /^outrun: bob@10\.213\.1\.2 needs root for mounts, and sudo -n failed/m);
  assert.equal(bob.stderr.trim().split("\n").length, 1, bob.stderr);
});

Deno.test("e2e deb: -J through a jump host, with -i and -o, to a host only it can reach", async () => {
  await up();
  const dir = await workdir();
  try {
    // 127.0.0.1 seen from deb is deb's own sshd; from here it is nothing of the test bed's.
    const r = await outrun([
      "-J",
      "deb",
      "-i",
      clientKeyPath,
      "-o",
      "StrictHostKeyChecking=accept-new",
      "-o",
      `UserKnownHostsFile=${dir}/known_hosts`,
      "root@127.0.0.1",
      "sh",
      "-c",
      "echo jumped; uname -n",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.text, "jumped\ndeb\n");
    assert.match(await Deno.readTextFile(`${dir}/known_hosts`), /^127\.0\.0\.1 ssh-ed25519 /m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// (How long the answer takes is the resolver's business: no bound on it here.)
Deno.test("e2e: a host that does not resolve fails with one line and exit 255", async () => {
  const r = await outrun(["nonexistent-host", "true"]);
  assert.equal(r.code, 255);
  assert.match(r.stderr, /^outrun: Could not resolve hostname nonexistent-host/);
  assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
});

Deno.test("e2e: a port nobody listens on is one line as ssh says it, exit 255", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = l.addr as Deno.NetAddr;
  l.close();
  const r = await outrun(["-p", String(port), "root@127.0.0.1", "true"]);
  assert.equal(r.code, 255);
  assert.equal(r.stderr, `outrun: connect to host 127.0.0.1 port ${port}: Connection refused\n`);
});

Deno.test("e2e: bad usage is a usage message and exit 255", async () => {
  for (
    const args of [[], ["deb"], ["-p"], ["--bogus", "deb", "true"], ["-p", "99999", "deb", "true"]]
  ) {
    const r = await outrun(args);
    assert.equal(r.code, 255, args.join(" "));
    assert.match(r.stderr, /usage: outrun/);
  }
});

for (const host of HOSTS) {
  Deno.test(`e2e ${host}: SIGINT from timeout reaches the command, which says so`, async () => {
    await up();
    const out = await new Deno.Command("timeout", {
      args: [
        "--signal=INT",
        "--kill-after=60s",
        // Long enough for the command to start on any host here, warm or not.
        "8s",
        OUTRUN,
        "-F",
        sshConfigPath,
        host,
        "sh",
        "-c",
        // `wait` returns when a trapped signal comes; sleep alone would not run the trap.
        "trap 'echo got INT; exit 3' INT; echo ready; sleep 60 & wait",
      ],
    }).output();
    assert.equal(new TextDecoder().decode(out.stdout), "ready\ngot INT\n");
    assert.equal(out.code, 124, "137 would mean the kill was needed");
    assert.equal(await remoteClean(host, "sleep"), "mounts=0 procs=0");
  });
}

for (const host of HOSTS) {
  Deno.test(`e2e ${host}: two sessions at once both succeed`, async () => {
    await up();
    const [a, b] = await Promise.all([
      outrun([host, "sh", "-c", "sleep 1; echo a"]),
      outrun([host, "sh", "-c", "sleep 1; echo b"]),
    ]);
    assert.deepEqual([a.code, a.text, b.code, b.text], [0, "a\n", 0, "b\n"]);
  });
}

for (const host of DIRECT) {
  Deno.test(`e2e ${host}: killing outrun mid-run leaves the remote clean`, async () => {
    await up();
    const child = await remoteSleep(host, "null");
    // The launcher execs deno, so this pid is outrun itself.
    child.kill("SIGKILL");
    await child.status;
    await eventually(
      "the remote to clean up",
      async () => (await remoteClean(host, "sleep")) === "mounts=0 procs=0",
    );
  });
}

for (const host of DIRECT) {
  Deno.test(`e2e ${host}: a cut link ends both sides (keepalive here, heartbeat there)`, async () => {
    await up();
    const child = await remoteSleep(host, "piped");
    await new Deno.Command("ip", { args: ["link", "set", IFACE[host], "down"] }).output();
    try {
      const t0 = performance.now();
      const status = await child.status;
      const waited = (performance.now() - t0) / 1000;
      assert.equal(status.code, 255);
      // ServerAliveInterval 5 s x ServerAliveCountMax 3, plus slack.
      assert.ok(waited < 30, `local side exited after ${waited.toFixed(1)} s`);
      assert.match(
        new TextDecoder().decode((await child.stderr.getReader().read()).value),
        /outrun: /,
      );
    } finally {
      await new Deno.Command("ip", { args: ["link", "set", IFACE[host], "up"] }).output();
    }
    await eventually(
      "the remote to clean up",
      async () => (await remoteClean(host, "sleep")) === "mounts=0 procs=0",
    );
  });
}

/** tmux on its own socket: a real terminal to drive outrun from. */
async function tmux(...args: string[]): Promise<string> {
  const out = await new Deno.Command("tmux", { args: ["-L", "outrun-e2e", ...args] }).output();
  return new TextDecoder().decode(out.stdout);
}

for (const host of HOSTS) {
  Deno.test(`e2e ${host}: under a terminal: stty size matches, a resize is seen, Ctrl-C interrupts`, async () => {
    await up();
    const dir = await workdir();
    const screen = () => tmux("capture-pane", "-p", "-t", "e2e");
    const waitFor = (re: RegExp) =>
      eventually(`${re} on the terminal`, async () => re.test(await screen()), 60_000);
    try {
      await tmux("new-session", "-d", "-s", "e2e", "-x", "100", "-y", "30", "bash --norc");
      const script = `trap 'echo size=$(stty size)' WINCH; echo size=$(stty size); tty; ` +
        `echo ready; while :; do sleep 0.1; done`;
      await Deno.writeTextFile(`${dir}/run.sh`, script);
      await tmux(
        "send-keys",
        "-t",
        "e2e",
        `cd ${dir}; stty -g > before; ${OUTRUN} -F ${sshConfigPath} ${host} sh run.sh; ` +
          `echo exit=$?; stty -g > after`,
        "Enter",
      );
      await waitFor(/^ready$/m);
      assert.match(await screen(), /^size=30 100$/m);
      assert.match(await screen(), /^\/dev\/pts\/\d+$/m);
      await tmux("resize-window", "-t", "e2e", "-x", "80", "-y", "20");
      await waitFor(/^size=20 80$/m);
      await tmux("send-keys", "-t", "e2e", "C-c");
      // sh killed by the SIGINT the remote terminal sent, which echoed ^C first.
      await waitFor(/^(\^C)?exit=130$/m);
      await eventually("the local terminal's mode to be saved", async () => {
        try {
          return (await Deno.readTextFile(`${dir}/after`)).length > 0;
        } catch {
          return false;
        }
      });
      assert.equal(
        await Deno.readTextFile(`${dir}/after`),
        await Deno.readTextFile(`${dir}/before`),
        "local terminal mode restored",
      );
    } finally {
      await tmux("kill-server");
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("e2e deb: under a terminal the bytes are the remote terminal's, as with ssh -t", async () => {
  await up();
  // script(1) gives outrun a terminal and records what reaches it byte for byte.
  const run = async (command: string) => {
    const out = await new Deno.Command("script", {
      args: ["-qec", command, "/dev/null"],
      stdin: "null",
      stdout: "piped",
    }).output();
    // (script echoes a NUL of its own first, under ssh too.)
    return new TextDecoder().decode(out.stdout).replace(/^\^@/, "");
  };
  const ssh = await run(`ssh -tt -F ${sshConfigPath} deb seq 2`);
  assert.equal(ssh, "1\r\n2\r\n", "the reference");
  const ours = await run(`${OUTRUN} -F ${sshConfigPath} deb seq 2`);
  assert.equal(JSON.stringify(ours), JSON.stringify(ssh), "no \\r\\r\\n");
});
