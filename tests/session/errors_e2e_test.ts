/**
 * Failures on the way to a command (needs root; the test bed): each is one line
 * naming what went wrong, exit 255, the command never run, nothing left behind.
 * Remote programs are shadowed through /usr/local/bin (first in sshd's PATH) for
 * the length of a test.
 */
import assert from "node:assert/strict";
import { knownHostsPath, sshConfigPath, up } from "../testbed/testbed.ts";
import { removeTree } from "../remove_tree.ts";
import { OUTRUN } from "./outrun_run.ts";
import { onRemote, workdir } from "./leftovers.ts";

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

async function outrun(args: string[], env?: Record<string, string>): Promise<Outcome> {
  const out = await new Deno.Command(OUTRUN, {
    args: ["-F", sshConfigPath, ...args],
    env,
    stdin: "null",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** Asserts one line of outrun's own on stderr, matching `line`, and exit 255. */
function failedWith(o: Outcome, line: RegExp): void {
  assert.equal(o.code, 255, o.stderr);
  assert.equal(o.stdout, "", "the command never ran");
  const lines = o.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, o.stderr);
  assert.match(lines[0], line);
}

/** `s` as one word for sh. */
function shellWord(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** Runs `body` with `program` on `host` shadowed by a shell script. */
async function shadowed(
  host: string,
  program: string,
  script: string,
  body: () => Promise<void>,
): Promise<void> {
  const path = `/usr/local/bin/${program}`;
  await onRemote(
    host,
    `mkdir -p /usr/local/bin && printf '%s\\n' '#!/bin/sh' ${
      shellWord(script)
    } > ${path} && chmod 755 ${path}`,
  );
  try {
    await body();
  } finally {
    await onRemote(host, `rm -f ${path}`);
  }
}

/** A known_hosts file holding `lines`, in a directory of its own. */
async function knownHosts(lines: string[]): Promise<{ path: string; dir: string }> {
  const dir = await workdir("outrun-errors-");
  await Deno.writeTextFile(`${dir}/known_hosts`, lines.join("\n") + "\n");
  return { path: `${dir}/known_hosts`, dir };
}

/** deb's host key line in the test bed's known_hosts. */
async function debKey(): Promise<string> {
  const line = (await Deno.readTextFile(knownHostsPath)).split("\n")
    .find((l) => l.startsWith("10.213.1.2 "));
  assert.ok(line, "deb in the test bed's known_hosts");
  return line.split(" ").slice(1).join(" ");
}

Deno.test("errors e2e deb: a changed host key is refused; the command never runs", async () => {
  await up();
  // Another key for deb's address: tiny's.
  const tiny = (await Deno.readTextFile(knownHostsPath)).split("\n")
    .find((l) => l.startsWith("10.213.2.2 "))!.split(" ").slice(1).join(" ");
  const k = await knownHosts([`10.213.1.2 ${tiny}`]);
  try {
    const o = await outrun(["-o", `UserKnownHostsFile=${k.path}`, "deb", "touch", `${k.dir}/ran`]);
    failedWith(o, /^outrun: .*(IDENTIFICATION HAS CHANGED|Host key verification failed)/);
    await assert.rejects(Deno.stat(`${k.dir}/ran`), Deno.errors.NotFound);
  } finally {
    await removeTree(k.dir);
  }
});

Deno.test("errors e2e deb: a revoked host key is refused, whatever else vouches for it", async () => {
  await up();
  const key = await debKey();
  const k = await knownHosts([`10.213.1.2 ${key}`, `@revoked * ${key}`]);
  try {
    const o = await outrun(["-o", `UserKnownHostsFile=${k.path}`, "deb", "touch", `${k.dir}/ran`]);
    failedWith(o, /^outrun: Host key for .* was revoked \(.*known_hosts:2\)/);
    await assert.rejects(Deno.stat(`${k.dir}/ran`), Deno.errors.NotFound);
  } finally {
    await removeTree(k.dir);
  }
});

Deno.test("errors e2e deb: a remote of another architecture is one line before anything is sent", async () => {
  await up();
  await shadowed("deb", "uname", "echo aarch64", async () => {
    const o = await outrun(["deb", "true"]);
    failedWith(o, /^outrun: the remote is aarch64, this machine is x86_64: /);
  });
});

Deno.test("errors e2e deb: a probe that dies midway is one line with what the remote said", async () => {
  await up();
  // The probe's shell goes down at its first step, saying why on stderr.
  await shadowed("deb", "uname", "echo 'probe: out of luck' >&2; kill -9 $PPID", async () => {
    const o = await outrun(["deb", "true"]);
    failedWith(o, /^outrun: the remote's probe failed \(.*\): probe: out of luck$/);
  });
});

Deno.test("errors e2e deb: an upload that does not verify there is refused and leaves no file", async () => {
  await up();
  // The payload is there (earlier tests): take one file away so it goes up again.
  const dir = (await onRemote("deb", "ls -d /root/.cache/outrun/*/agent.js")).split("\n")
    .map((p) => p.replace(/\/agent\.js$/, ""));
  assert.ok(dir.length >= 1, "a payload on deb");
  await onRemote("deb", dir.map((d) => `rm -f ${d}/agent.js`).join("; "));
  await shadowed("deb", "sha256sum", `echo "0000  $1"`, async () => {
    const o = await outrun(["deb", "true"]);
    failedWith(o, /^outrun: uploading agent\.js failed: verification failed$/);
    const left = await onRemote("deb", `ls -A /root/.cache/outrun/*/ | grep -c '^\\.' || true`);
    assert.equal(left, "0", "no temporary file left");
  });
  // And with the real sha256sum, it goes up and runs.
  const o = await outrun(["deb", "echo", "ok"]);
  assert.deepEqual([o.code, o.stdout], [0, "ok\n"], o.stderr);
});

Deno.test("errors e2e deb: an agent that cannot start says so, with its last words", async () => {
  await up();
  // -v starts the agent through env(1): shadowed, it fails as a broken runtime would.
  await shadowed("deb", "env", "echo 'runtime: cannot map memory' >&2; exit 1", async () => {
    const o = await outrun(["-v", "deb", "true"]);
    assert.equal(o.code, 255, o.stderr);
    assert.equal(o.stdout, "");
    assert.match(
      o.stderr,
      /^outrun: the remote agent did not start \(.*\): runtime: cannot map memory$/m,
    );
  });
});

Deno.test("errors e2e deb: a write that cannot land here fails the command's write, not later", async () => {
  await up();
  const dir = await workdir("outrun-errors-full-");
  const mounted = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "size=1m,mode=0755", "outrun-full", dir],
  }).output();
  assert.equal(mounted.code, 0, new TextDecoder().decode(mounted.stderr));
  try {
    // 4 MB into 1 MB: the writes go behind (not waited for), so the failure comes
    // back on a later write or at the close; either way dd fails, as it would here.
    const o = await outrun([
      "deb",
      "sh",
      "-c",
      `dd if=/dev/zero of=${dir}/f bs=64k count=64 2>/dev/null; echo "dd $?"; ` +
      `dd if=/dev/zero of=${dir}/g bs=64k count=64 conv=fsync 2>&1 | grep -q 'No space left' && ` +
      "echo said",
    ]);
    assert.equal(o.code, 0, o.stderr);
    assert.equal(o.stdout, "dd 1\nsaid\n");
  } finally {
    await new Deno.Command("umount", { args: [dir] }).output();
    await removeTree(dir);
  }
});
