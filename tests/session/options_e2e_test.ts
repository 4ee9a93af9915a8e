/**
 * outrun's own options end to end (needs root; the test bed): --timeout bounds the
 * connection's start and how long a silent agent may hold this side, -q silences
 * outrun's notices.
 */
import assert from "node:assert/strict";
import { sshConfigPath, up } from "../testbed/testbed.ts";
import { removeTree } from "../remove_tree.ts";
import { eventually, OUTRUN } from "./outrun_run.ts";

/** A hang would be far longer; the slowest run here takes seconds. */
const LIMIT_MS = 120_000;

async function outrun(args: string[]): Promise<{ code: number; stderr: string; text: string }> {
  const child = new Deno.Command(OUTRUN, {
    args: ["-F", sshConfigPath, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), LIMIT_MS);
  const out = await child.output().finally(() => clearTimeout(timer));
  return {
    code: out.code,
    stderr: new TextDecoder().decode(out.stderr),
    text: new TextDecoder().decode(out.stdout),
  };
}

async function onRemote(command: string): Promise<string> {
  const out = await new Deno.Command("ssh", { args: ["-F", sshConfigPath, "deb", command] })
    .output();
  return new TextDecoder().decode(out.stdout).trim();
}

Deno.test("options e2e: --timeout bounds a connection whose server never speaks", async () => {
  // Accepts, then says nothing: no SSH version line ever comes.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn);
  })();
  try {
    const { port } = listener.addr as Deno.NetAddr;
    const r = await outrun(["--timeout", "1", "-p", String(port), "127.0.0.1", "true"]);
    assert.equal(r.code, 255);
    assert.match(
      r.stderr,
      /^outrun: connect to host 127\.0\.0\.1 port \d+: Connection timed out\n$/,
    );
  } finally {
    listener.close();
    await accepting.catch(() => {});
    for (const c of held) c.close();
  }
});

const AGENT = "'agent\\.js agent'";

Deno.test("options e2e deb: --timeout ends a run whose agent stops answering", async () => {
  await up();
  const child = new Deno.Command(OUTRUN, {
    args: ["-F", sshConfigPath, "--timeout", "3", "deb", "sleep", "300"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    await eventually("the command to run there", async () => {
      return (await onRemote("pgrep -cx sleep")) === "1";
    });
    await onRemote(`pkill -STOP -f ${AGENT}`);
    const timer = setTimeout(() => child.kill("SIGKILL"), LIMIT_MS);
    const out = await child.output().finally(() => clearTimeout(timer));
    assert.equal(out.code, 255);
    assert.match(
      new TextDecoder().decode(out.stderr),
      /^outrun: connection to deb lost: no answer from the agent on deb for 3 s\n$/,
    );
  } finally {
    await onRemote(`pkill -CONT -f ${AGENT}`);
  }
  await eventually("the remote to be left clean", async () => {
    return (await onRemote("echo $(pgrep -cx sleep) $(grep -c fuse.outrun /proc/mounts)")) ===
      "0 0";
  });
});

Deno.test("options e2e deb: -q says nothing of a host key it adds; without it, one line", async () => {
  await up();
  const dir = await Deno.makeTempDir({ prefix: "outrun-options-e2e-" });
  try {
    // The test bed's config says LogLevel ERROR, which is quiet too; INFO is ssh's default.
    const known = (name: string) => [
      "-o",
      "LogLevel=INFO",
      "-o",
      `UserKnownHostsFile=${dir}/${name}`,
      "-o",
      "StrictHostKeyChecking=accept-new",
    ];
    const loud = await outrun([...known("a"), "deb", "true"]);
    assert.equal(loud.code, 0, loud.stderr);
    assert.match(
      loud.stderr,
      /^Warning: Permanently added '[^']+' \(ssh-ed25519\) to the list of known hosts\.\n$/,
    );
    const quiet = await outrun(["-q", ...known("b"), "deb", "true"]);
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.equal(quiet.stderr, "");
    // Added all the same.
    assert.equal((await Deno.readTextFile(`${dir}/b`)).split("\n").filter(Boolean).length, 1);
  } finally {
    await removeTree(dir);
  }
});
