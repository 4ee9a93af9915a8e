/**
 * The questions outrun asks on the terminal, as OpenSSH does, driven through a
 * real terminal (tmux) against the test bed (needs root): the passphrase of an
 * encrypted key (echo off, asked again when wrong) and StrictHostKeyChecking=ask.
 * Without a terminal both give up the way ssh under BatchMode does.
 */
import assert from "node:assert/strict";
import { sshConfigPath, up } from "../testbed/testbed.ts";
import { removeTree } from "../remove_tree.ts";

const OUTRUN = new URL("../../outrun", import.meta.url).pathname;

async function run(cmd: string, args: string[], stdin?: string): Promise<Deno.CommandOutput> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  return await child.output();
}

/** A tmux server of its own, one window of a known size. */
function terminal(name: string) {
  const tmux = async (...args: string[]) =>
    new TextDecoder().decode((await run("tmux", ["-L", name, ...args])).stdout);
  const screen = () => tmux("capture-pane", "-p", "-t", "t");
  return {
    start: () =>
      tmux(
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "160",
        "-y",
        "40",
        "env -u SSH_AUTH_SOCK bash --norc",
      ),
    type: (text: string) => tmux("send-keys", "-t", "t", "-l", text),
    enter: () => tmux("send-keys", "-t", "t", "Enter"),
    screen,
    async waitFor(re: RegExp, ms = 60_000): Promise<string> {
      const deadline = Date.now() + ms;
      while (true) {
        const s = await screen();
        if (re.test(s)) return s;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${re} on:\n${s}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    stop: () => tmux("kill-server"),
  };
}

function count(text: string, re: RegExp): number {
  return [...text.matchAll(new RegExp(re.source, "g"))].length;
}

Deno.test("prompt e2e: an encrypted key's passphrase is asked on the terminal, without echo", async () => {
  await up();
  const dir = await Deno.makeTempDir({ prefix: "outrun-prompt-" });
  const t = terminal("outrun-prompt-key");
  try {
    const key = `${dir}/key`;
    assert.ok(
      (await run("ssh-keygen", [
        "-q",
        "-t",
        "ed25519",
        "-N",
        "open sesame",
        "-C",
        "outrun-test",
        "-f",
        key,
      ])).success,
    );
    const authorize = await run("ssh", [
      "-F",
      sshConfigPath,
      "deb",
      "cat >> ~/.ssh/authorized_keys",
    ], await Deno.readTextFile(`${key}.pub`));
    assert.ok(authorize.success, new TextDecoder().decode(authorize.stderr));
    const config = (await Deno.readTextFile(sshConfigPath))
      .replaceAll(/IdentityFile .*/g, `IdentityFile ${key}\n  IdentitiesOnly yes`);
    await Deno.writeTextFile(`${dir}/config`, config);

    await t.start();
    await t.type(`${OUTRUN} -F ${dir}/config deb echo unlocked; echo exit=$?`);
    await t.enter();
    await t.waitFor(/Enter passphrase for key '.*key': ?$/m);
    await t.type("wrong guess");
    await t.enter();
    await t.waitFor(/(Enter passphrase for key[^\n]*\n[^]*){2}/);
    await t.type("open sesame");
    await t.enter();
    const screen = await t.waitFor(/^exit=\d+$/m);
    assert.match(screen, /^unlocked$/m);
    assert.match(screen, /^exit=0$/m);
    assert.equal(count(screen, /Enter passphrase/), 2);
    assert.ok(!screen.includes("wrong guess") && !screen.includes("open sesame"), "no echo");

    // No terminal at all (setsid: no controlling tty): the key is passed over.
    const batch = await run("setsid", ["-w", OUTRUN, "-F", `${dir}/config`, "deb", "true"]);
    assert.equal(batch.code, 255);
    assert.match(new TextDecoder().decode(batch.stderr), /Permission denied \(publickey\)/);
  } finally {
    await t.stop();
    await run("ssh", [
      "-F",
      sshConfigPath,
      "deb",
      "sed -i '/outrun-test$/d' ~/.ssh/authorized_keys",
    ]);
    await removeTree(dir);
  }
});

Deno.test("prompt e2e: StrictHostKeyChecking=ask asks about an unknown host key, as ssh does", async () => {
  await up();
  const dir = await Deno.makeTempDir({ prefix: "outrun-prompt-" });
  const t = terminal("outrun-prompt-host");
  // LogLevel INFO (ssh's default; the test bed says ERROR): the notice of the key added.
  const options =
    `-o LogLevel=INFO -o UserKnownHostsFile=${dir}/known_hosts -o StrictHostKeyChecking=ask`;
  try {
    await t.start();
    await t.type(`${OUTRUN} -F ${sshConfigPath} ${options} deb echo trusted; echo exit=$?`);
    await t.enter();
    let screen = await t.waitFor(/continue connecting \(yes\/no\/\[fingerprint\]\)\? ?$/m);
    assert.match(
      screen,
      /The authenticity of host '10\.213\.1\.2 \(10\.213\.1\.2\)' can't be established\./,
    );
    assert.match(screen, /ED25519 key fingerprint is SHA256:[A-Za-z0-9+/]{43}\./);
    await t.type("maybe");
    await t.enter();
    await t.waitFor(/Please type 'yes', 'no' or the fingerprint: ?$/m);
    await t.type("yes");
    await t.enter();
    screen = await t.waitFor(/^exit=\d+$/m);
    assert.match(screen, /^trusted$/m);
    assert.match(screen, /^exit=0$/m);
    assert.match(screen, /Permanently added '10\.213\.1\.2' \(ssh-ed25519\)/);
    assert.match(await Deno.readTextFile(`${dir}/known_hosts`), /^10\.213\.1\.2 ssh-ed25519 /m);

    // Known now: no question.
    const again = await run(OUTRUN, [
      "-F",
      sshConfigPath,
      ...options.split(" "),
      "deb",
      "echo",
      "again",
    ]);
    assert.equal(new TextDecoder().decode(again.stdout), "again\n");

    // "no": refused.
    await Deno.remove(`${dir}/known_hosts`);
    await t.type("clear");
    await t.enter();
    await t.type(`${OUTRUN} -F ${sshConfigPath} ${options} deb echo trusted; echo exit=$?`);
    await t.enter();
    await t.waitFor(/continue connecting/);
    await t.type("no");
    await t.enter();
    screen = await t.waitFor(/^exit=\d+$/m);
    assert.match(screen, /^outrun: Host key verification failed\.$/m);
    assert.match(screen, /^exit=255$/m);

    // No terminal: refused without asking.
    const batch = await run("setsid", [
      "-w",
      OUTRUN,
      "-F",
      sshConfigPath,
      ...options.split(" "),
      "deb",
      "true",
    ]);
    assert.equal(batch.code, 255);
    assert.match(new TextDecoder().decode(batch.stderr), /Host key verification failed\./);
  } finally {
    await t.stop();
    await removeTree(dir);
  }
});
