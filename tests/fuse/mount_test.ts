/** Mount lifecycle on real FUSE mounts (needs root): crashes and hangs leave nothing behind. */
import { removeTree } from "../remove_tree.ts";
import assert from "node:assert/strict";
import { clearStaleMounts, parseMountInfo } from "../../lib/fuse/mount.ts";
import { fuseMounted, fuseWaiting, sh, startServer, waitFor } from "../fs/loopback_helper.ts";
import { mountsAt } from "../../lib/fuse/mount.ts";

Deno.test("mount: parses /proc/self/mountinfo, escapes included", () => {
  const text =
    "36 35 0:52 / /tmp/a\\040b rw,nosuid,nodev,relatime shared:1 - fuse.outrun loopback:/x rw,user_id=0\n" +
    "37 1 8:1 / / rw - ext4 /dev/vda rw\n";
  const [m, root] = parseMountInfo(text);
  assert.deepEqual(m, {
    id: 36,
    major: 0,
    minor: 52,
    mountpoint: "/tmp/a b",
    fstype: "fuse.outrun",
    source: "loopback:/x",
  });
  assert.equal(root.fstype, "ext4");
});

async function dirs(): Promise<{ base: string; src: string; mnt: string }> {
  const base = await Deno.makeTempDir({ prefix: "outrun-mount-" });
  await Deno.mkdir(`${base}/src`);
  await Deno.mkdir(`${base}/mnt`);
  await Deno.writeTextFile(`${base}/src/f`, "data\n");
  return { base, src: `${base}/src`, mnt: `${base}/mnt` };
}

/** Whatever happened, leave no mount and no directory behind. */
async function cleanup(base: string, mnt: string, ...servers: Deno.ChildProcess[]) {
  for (const s of servers) {
    try {
      s.kill("SIGKILL");
    } catch { /* gone */ }
    await s.status;
  }
  clearStaleMounts(mnt);
  await removeTree(base);
}

/** True once `mnt` answers a read (a dead or hung mount never does; bounded by timeout). */
async function serves(mnt: string): Promise<boolean> {
  return (await sh(`timeout 2 cat '${mnt}/f'`)).stdout === "data\n";
}

async function waitServes(mnt: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await serves(mnt))) {
    if (Date.now() > deadline) throw new Error(`${mnt} never served`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function stopAndCheck(server: Deno.ChildProcess, mnt: string) {
  server.kill("SIGTERM");
  assert.equal((await server.status).code, 0);
  assert.ok(!fuseMounted(mnt), "unmounted on SIGTERM");
}

Deno.test("mount: a SIGKILLed server's mount fails fast, and the next start clears it", async () => {
  const { base, src, mnt } = await dirs();
  const servers: Deno.ChildProcess[] = [];
  try {
    const first = startServer(src, mnt);
    servers.push(first);
    await waitFor("mount", () => fuseMounted(mnt));
    assert.equal((await sh(`cat '${mnt}/f'`)).stdout, "data\n");
    first.kill("SIGKILL");
    await first.status;
    assert.ok(fuseMounted(mnt), "the kernel keeps a dead mount after SIGKILL");
    const t0 = performance.now();
    const dead = await sh(`timeout 10 stat '${mnt}/f'`);
    assert.match(dead.stderr, /Transport endpoint is not connected/);
    assert.ok(performance.now() - t0 < 5000, "no hang on the dead mount");

    const second = startServer(src, mnt);
    servers.push(second);
    await waitServes(mnt);
    assert.equal(mountsAt(mnt).length, 1, "the stale mount is gone, only the new one is there");
    await stopAndCheck(second, mnt);
  } finally {
    await cleanup(base, mnt, ...servers);
  }
});

Deno.test("mount: a hung (SIGSTOPped) server is aborted, not waited on, by the next start", async () => {
  const { base, src, mnt } = await dirs();
  const servers: Deno.ChildProcess[] = [];
  try {
    const hung = startServer(src, mnt);
    servers.push(hung);
    await waitFor("mount", () => fuseMounted(mnt));
    assert.equal((await sh(`cat '${mnt}/f'`)).stdout, "data\n");
    hung.kill("SIGSTOP");
    // A client now blocks on the hung mount...
    const blocked = new Deno.Command("cat", { args: [`${mnt}/f`], stdout: "null", stderr: "null" })
      .spawn();
    await waitFor("the client to wait on the hung server", () => fuseWaiting(mnt) > 0);
    // ...and a new server clears the mount without stat-ing it.
    const second = startServer(src, mnt);
    servers.push(second);
    await waitServes(mnt);
    assert.equal(mountsAt(mnt).length, 1, "the hung mount is gone, only the new one is there");
    const blockedStatus = await Promise.race([
      blocked.status,
      new Promise<null>((r) => setTimeout(() => r(null), 5000)),
    ]);
    assert.ok(blockedStatus !== null && !blockedStatus.success, "the blocked client got an error");
    assert.equal((await sh(`cat '${mnt}/f'`)).stdout, "data\n");
    hung.kill("SIGCONT");
    const hungStatus = await Promise.race([
      hung.status,
      new Promise<null>((r) => setTimeout(() => r(null), 5000)),
    ]);
    assert.ok(hungStatus !== null, "the old server noticed the abort and exited");
    await stopAndCheck(second, mnt);
  } finally {
    await cleanup(base, mnt, ...servers);
  }
});
