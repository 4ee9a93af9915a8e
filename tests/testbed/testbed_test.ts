/**
 * Tests of the test bed itself: every host answers a real OpenSSH client on both
 * paths, the -wan path adds the configured round-trip time, `tiny` has no glibc,
 * and `down` leaves nothing behind. Needs root (namespaces, veths).
 */
import assert from "node:assert/strict";
import { addresses, down, HOSTS, readConfig, STATE_DIR, status, up } from "./testbed.ts";
import { isRunning, run } from "./sh.ts";
import { sshConfigPath } from "./testbed.ts";

function ssh(alias: string, command: string, stdin?: string) {
  return run(["ssh", "-F", sshConfigPath, alias, command], { stdin, allowFail: true });
}

/** Least time for one byte to go to `cat` on the host and come back, through ssh. */
async function echoRoundTripMs(alias: string, samples = 25): Promise<number> {
  const child = new Deno.Command("ssh", {
    args: ["-F", sshConfigPath, alias, "cat"],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = child.stdin.getWriter();
  const reader = child.stdout.getReader();
  const times: number[] = [];
  for (let i = 0; i < samples + 3; i++) {
    const t0 = performance.now();
    await writer.write(new Uint8Array([65]));
    const { value, done } = await reader.read();
    assert.ok(!done && value && value.length === 1, "cat echoed one byte");
    if (i >= 3) times.push(performance.now() - t0);
  }
  await writer.close();
  reader.releaseLock();
  await child.stdout.cancel();
  await child.status;
  // The least: delays only add to it (a loaded machine's show in the others).
  return Math.min(...times);
}

Deno.test("testbed: up is healthy and idempotent", async () => {
  await up();
  const before = await status();
  assert.ok(before.healthy, JSON.stringify(before));
  const again = await up();
  assert.deepEqual(again.hosts.map((h) => h.pid), before.hosts.map((h) => h.pid), "no restart");
});

for (const host of HOSTS) {
  for (const path of ["", "-wan"]) {
    const alias = host.name + path;
    Deno.test(`testbed: ${alias} answers a real ssh client`, async () => {
      await up();
      const out = await ssh(alias, "uname -n; id -u; echo $0");
      assert.equal(out.split("\n")[0], host.name);
      assert.equal(out.split("\n")[1], "0");
      assert.equal(await ssh(alias, "cat", "round trip\n"), "round trip\n");
    });
  }
}

Deno.test("testbed: -wan adds the configured round-trip time", async () => {
  await up();
  const rtt = (await readConfig())!.rttMs;
  for (const host of HOSTS) {
    const direct = await echoRoundTripMs(host.name);
    const wan = await echoRoundTripMs(`${host.name}-wan`);
    const added = wan - direct;
    assert.ok(
      added > rtt * 0.85 && added < rtt * 1.6 + 5,
      `${host.name}: direct ${direct.toFixed(2)} ms, wan ${wan.toFixed(2)} ms, want +${rtt} ms`,
    );
  }
});

Deno.test("testbed: deb is another Debian suite with a dynamic loader", async () => {
  await up();
  const local = (await Deno.readTextFile("/etc/os-release")).match(/VERSION_CODENAME=(\S+)/)?.[1];
  const remote = (await ssh("deb", "cat /etc/os-release")).match(/VERSION_CODENAME=(\S+)/)?.[1];
  assert.ok(remote && remote !== local, `remote ${remote} vs local ${local}`);
  assert.equal((await ssh("deb", "test -c /dev/fuse && echo fuse")).trim(), "fuse");
});

Deno.test("testbed: tiny has no glibc, so a dynamically linked binary fails there", async () => {
  await up();
  const binary = await Deno.readFile("/bin/true");
  const child = new Deno.Command("ssh", {
    args: [
      "-F",
      sshConfigPath,
      "tiny",
      "cat >/tmp/dyn && chmod +x /tmp/dyn && /tmp/dyn; echo rc=$?; ls /lib64 /lib/x86_64-linux-gnu 2>&1",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(binary);
  await w.close();
  const out = new TextDecoder().decode((await child.output()).stdout);
  assert.match(out, /rc=127/);
  assert.match(out, /\/lib64: No such file or directory/);
  assert.equal((await ssh("tiny", "test -c /dev/fuse && echo fuse")).trim(), "fuse");
});

Deno.test("testbed: down leaves no process, mount, namespace or veth; up comes back", async () => {
  await up();
  const pids = (await status()).hosts.map((h) => h.pid!);
  await down();
  const netns = await run(["ip", "netns", "list"]);
  assert.doesNotMatch(netns, /outrun-/);
  const links = await run(["ip", "-o", "link"]);
  for (const host of HOSTS) {
    const a = addresses(
      host,
      (await readConfig()) ?? { rttMs: 20, rate: null, relayBasePort: 42200 },
    );
    assert.ok(!links.includes(a.directVeth) && !links.includes(a.wanVeth), links);
  }
  for (const pid of pids) assert.ok(!isRunning(pid), `pid ${pid} still runs`);
  const mounts = await Deno.readTextFile("/proc/mounts");
  assert.ok(!mounts.includes(STATE_DIR), mounts);
  const procs = await run(["ps", "-eo", "args"]);
  assert.doesNotMatch(procs, /delay_relay\.ts|host-init\.sh/);
  assert.ok((await up()).healthy);
});
