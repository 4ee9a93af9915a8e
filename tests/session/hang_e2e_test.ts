/**
 * Never hang (needs root; the test bed): a command's stdio never stops the agent
 * from serving the mirror, and a real distcc build through outrun (distccd from
 * this machine, nothing installed on the remote) ends with the objects a local
 * build makes, with and without a ControlMaster.
 */
import assert from "node:assert/strict";
import { sshConfigPath, up } from "../testbed/testbed.ts";
import { removeTree } from "../remove_tree.ts";
import { eventually, OUTRUN, outrunEnv } from "./outrun_run.ts";
import { cProject, localPids, remoteClean, remoteLeftovers, workdir } from "./leftovers.ts";

/** Long enough for the slowest run here on a loaded machine; a hang is far longer. */
const LIMIT_MS = 180_000;

interface Output {
  code: number;
  stdout: Uint8Array<ArrayBuffer>;
  stderr: Uint8Array<ArrayBuffer>;
  /** stderr as text, for messages. */
  errors: string;
}

/** Runs `argv` to its end, or kills it after LIMIT_MS and fails. */
async function run(
  argv: string[],
  o: { cwd?: string; env?: Record<string, string>; stdin?: Uint8Array } = {},
): Promise<Output> {
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    cwd: o.cwd,
    env: o.env,
    stdin: o.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let hung = false;
  const timer = setTimeout(() => {
    hung = true;
    child.kill("SIGKILL");
  }, LIMIT_MS);
  try {
    if (o.stdin) {
      const w = child.stdin.getWriter();
      await w.write(o.stdin).catch(() => {});
      await w.close().catch(() => {});
    }
    const out = await child.output();
    assert(!hung, `${argv.join(" ")}: no end after ${LIMIT_MS / 1000} s`);
    const errors = new TextDecoder().decode(out.stderr);
    return { code: out.code, stdout: out.stdout, stderr: out.stderr, errors };
  } finally {
    clearTimeout(timer);
  }
}

async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Copies `path` to stdout (or stderr) with sendfile(2), as distccd sends its
 * compiler's output: the kernel then waits for the file's pages, from the mirror,
 * with the pipe locked.
 */
const SENDFILE = `
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
out = int(sys.argv[2])
size = os.fstat(fd).st_size
at = 0
while at < size:
    at += os.sendfile(out, fd, at, size - at)
`;

for (const host of ["deb", "deb-wan"]) {
  for (const [stream, fd] of [["stdout", 1], ["stderr", 2]] as const) {
    Deno.test(`hang e2e ${host}: sendfile of a local file into the command's ${stream} ends, bytes intact`, async () => {
      await up();
      const dir = await workdir("outrun-hang-e2e-");
      try {
        // Files not read before: each of their pages is a FUSE READ the agent answers.
        const data = crypto.getRandomValues(new Uint8Array(65536));
        const whole = new Uint8Array(4 << 20);
        for (let at = 0; at < whole.length; at += data.length) {
          whole.set(crypto.getRandomValues(data), at);
        }
        await Deno.writeFile(`${dir}/input`, whole);
        await Deno.chmod(`${dir}/input`, 0o644);
        const argv = ["python3", "-c", SENDFILE, `${dir}/input`, String(fd)];
        const r = await run([OUTRUN, "-F", sshConfigPath, host, ...argv]);
        assert.equal(r.code, 0, r.errors.slice(0, 2000));
        assert.equal(await sha256(fd === 1 ? r.stdout : r.stderr), await sha256(whole));
      } finally {
        await removeTree(dir);
      }
    });
  }
}

/** 64 KiB of random bytes in `dir`/input, readable by all; returns them. */
async function inputFile(dir: string): Promise<Uint8Array<ArrayBuffer>> {
  const data = crypto.getRandomValues(new Uint8Array(65536));
  await Deno.writeFile(`${dir}/input`, data);
  await Deno.chmod(`${dir}/input`, 0o644);
  return data;
}

const SOURCES = 12;

const distccCases: [string, boolean][] = [["deb", false], ["deb", true], ["deb-wan", true]];
for (const [host, master] of distccCases) {
  const how = master ? "through a ControlMaster" : "a session each";
  Deno.test(`hang e2e ${host}: make -j4 CC='distcc gcc' with DISTCC_SSH=outrun, ${how}, builds what gcc builds here`, async () => {
    await up();
    const dir = await workdir("outrun-distcc-e2e-");
    const home = await workdir("outrun-distcc-home-");
    try {
      await Deno.mkdir(`${dir}/local`);
      await Deno.mkdir(`${dir}/remote`);
      const objects = await cProject(`${dir}/local`, SOURCES);
      await cProject(`${dir}/remote`, SOURCES);
      const local = await run(["make", "-j2", "CC=gcc"], { cwd: `${dir}/local` });
      assert.equal(local.code, 0, local.errors);
      // distcc runs `$DISTCC_SSH HOST distccd --inetd ...`: one program, so a wrapper.
      const flags = master ? "-o ControlMaster=auto -o ControlPersist=60" : "";
      await Deno.writeTextFile(
        `${home}/outrun-ssh`,
        `#!/bin/sh\nexec ${OUTRUN} -F ${sshConfigPath} ${flags} "$@"\n`,
      );
      await Deno.chmod(`${home}/outrun-ssh`, 0o755);
      await Deno.mkdir(`${home}/.distcc`);
      const env = {
        ...outrunEnv(home),
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
        DISTCC_SSH: `${home}/outrun-ssh`,
        DISTCC_HOSTS: `@${host}/4`,
        // A job that cannot be sent fails the build instead of compiling here.
        DISTCC_FALLBACK: "0",
        DISTCC_SKIP_LOCAL_RETRY: "1",
        DISTCC_DIR: `${home}/.distcc`,
      };
      const built = await run(["make", "-j4", "CC=distcc gcc"], { cwd: `${dir}/remote`, env });
      assert.equal(built.code, 0, built.errors);
      // The warnings came back as the remote gcc wrote them.
      assert.equal(built.errors.match(/unused variable/g)?.length, SOURCES, built.errors);
      for (const o of objects) {
        const [a, b] = await Promise.all([
          Deno.readFile(`${dir}/local/${o}`),
          Deno.readFile(`${dir}/remote/${o}`),
        ]);
        assert.equal(await sha256(b), await sha256(a), o);
      }
      if (master) {
        const exit = await run([OUTRUN, "-F", sshConfigPath, "-O", "exit", host], {
          env: outrunEnv(home),
        });
        assert.equal(exit.code, 0, exit.errors);
      }
      await remoteClean(host, 30_000, ["distccd"]);
    } finally {
      await removeTree(dir);
      await removeTree(home);
    }
  });
}

for (const host of ["deb", "deb-wan"]) {
  Deno.test(`hang e2e ${host}: a command that never reads its stdin still reads and writes files`, async () => {
    await up();
    const dir = await workdir("outrun-hang-e2e-");
    try {
      const data = await inputFile(dir);
      // 16 MB waits for a reader that never comes, far past every pipe's room.
      const r = await run(
        [OUTRUN, "-F", sshConfigPath, host, "sh", "-c", `cp ${dir}/input ${dir}/copy; echo copied`],
        { stdin: new Uint8Array(16 << 20) },
      );
      assert.equal(r.code, 0, r.errors);
      assert.equal(new TextDecoder().decode(r.stdout), "copied\n");
      assert.equal(await sha256(await Deno.readFile(`${dir}/copy`)), await sha256(data));
    } finally {
      await removeTree(dir);
    }
  });

  Deno.test(`hang e2e ${host}: output nobody reads here yet does not stop the command's files`, async () => {
    await up();
    const dir = await workdir("outrun-hang-e2e-");
    try {
      const data = await inputFile(dir);
      // The reader starts only once the copy made after 16 MB of output is here.
      const r = await run([
        "bash",
        "-c",
        `${OUTRUN} -F ${sshConfigPath} ${host} sh -c ` +
        `'head -c 16M /dev/zero; cp ${dir}/input ${dir}/copy; mv ${dir}/copy ${dir}/done' | ` +
        `{ until [ -e ${dir}/done ]; do sleep 0.1; done; wc -c; }; echo "status \${PIPESTATUS[0]}"`,
      ]);
      assert.equal(new TextDecoder().decode(r.stdout), `${16 << 20}\nstatus 0\n`, r.errors);
      assert.equal(await sha256(await Deno.readFile(`${dir}/done`)), await sha256(data));
    } finally {
      await removeTree(dir);
    }
  });

  Deno.test(`hang e2e ${host}: a closed stdout here ends the command as ssh's would (| head -1)`, async () => {
    await up();
    const r = await run([
      "bash",
      "-c",
      `${OUTRUN} -F ${sshConfigPath} ${host} yes | head -1; echo "status \${PIPESTATUS[0]}"`,
    ]);
    // yes died of SIGPIPE there: 128 + 13.
    assert.equal(new TextDecoder().decode(r.stdout), "y\nstatus 141\n", r.errors);
    await remoteClean(host, 30_000, ["yes"]);
  });
}

Deno.test("hang e2e deb: outrun whose parent dies ends its command there and exits", async () => {
  await up();
  const marker = `outrun-orphan-${crypto.randomUUID().slice(0, 8)}`;
  const parent = new Deno.Command("bash", {
    args: ["-c", `${OUTRUN} -F ${sshConfigPath} deb sh -c 'sleep 300' ${marker}; true`],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await eventually(
      "the command to run there",
      async () => / named=1$/.test(await remoteLeftovers("deb", ["sleep"])),
    );
    assert.equal((await localPids(`main.ts.*${marker}`)).length, 1);
    parent.kill("SIGKILL");
    await parent.status;
    await eventually(
      "outrun to exit",
      async () => (await localPids(`main.ts.*${marker}`)).length === 0,
    );
    await remoteClean("deb", 30_000, ["sleep"]);
  } finally {
    await new Deno.Command("pkill", { args: ["-9", "-f", marker] }).output();
  }
});

Deno.test("hang e2e deb: a command that ignores SIGTERM is left behind, with nothing left there", async () => {
  await up();
  const r = await run([
    "timeout",
    "--kill-after=60s",
    "2s",
    OUTRUN,
    "-F",
    sshConfigPath,
    "deb",
    "sh",
    "-c",
    "trap '' TERM; sleep 300",
  ]);
  // 124: outrun left by itself (LEAVE_AFTER_S after the TERM); 137 would be the kill.
  assert.equal(r.code, 124, r.errors);
  assert.match(r.errors, /did not end after SIGTERM/);
  await remoteClean("deb", 30_000, ["sleep"]);
});
