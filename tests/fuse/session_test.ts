/** FuseSession on real mounts (needs root): concurrency and kernel notifications. */
import { removeTree } from "../remove_tree.ts";
import assert from "node:assert/strict";
import { eventually } from "../eventually.ts";
import {
  type BackingFiles,
  type Connection,
  type EntryOut,
  type Filesystem,
  FOPEN,
  FuseSession,
  mountFuse,
  type OpenOut,
  type Request,
  unmountFuse,
  utf8ByteString,
} from "../../lib/fuse/mod.ts";
import { LoopbackFs } from "../../lib/fs/loopback.ts";
import { shOk, withLoopback } from "../fs/loopback_helper.ts";

Deno.test("session: slow async handlers run side by side, not one after another", async () => {
  const base = await Deno.makeTempDir({ prefix: "outrun-delay-" });
  try {
    await withLoopback(async ({ mnt, src }) => {
      await shOk(`cd '${src}' && for i in $(seq 0 63); do echo $i > f$i; done`);
      // 64 threads released together, each stat-ing and reading its own file.
      const out = await shOk(`/usr/bin/python3 - '${mnt}' <<'EOF'
import os, sys, threading
root = sys.argv[1]
barrier = threading.Barrier(64)
results = [None] * 64
def work(i):
    barrier.wait()
    os.stat(f"{root}/f{i}")
    with open(f"{root}/f{i}") as f:
        results[i] = int(f.read())
threads = [threading.Thread(target=work, args=(i,)) for i in range(64)]
for t in threads: t.start()
for t in threads: t.join()
print(results == list(range(64)))
EOF`);
      assert.equal(out, "True\n");
    }, { extra: ["--delay-ms", "50", "--stats", `${base}/stats.json`] });
    const stats = JSON.parse(await Deno.readTextFile(`${base}/stats.json`));
    // Serialised handlers would never have more than one in flight.
    assert.ok(stats.delayed.maxInFlight >= 16, JSON.stringify(stats));
    assert.equal(stats.session.errors, 0);
  } finally {
    await removeTree(base);
  }
});

/** A directory to serve and one to mount it on, under a base others may enter. */
async function sourceAndMountpoint(): Promise<{ base: string; src: string; mnt: string }> {
  const base = await Deno.makeTempDir({ prefix: "outrun-notify-" });
  await Deno.chmod(base, 0o755);
  const src = `${base}/src`;
  const mnt = `${base}/mnt`;
  await Deno.mkdir(src);
  await Deno.mkdir(mnt);
  return { base, src, mnt };
}

Deno.test("session: INVAL_INODE and INVAL_ENTRY make the kernel drop what it cached", async () => {
  const { base, src, mnt } = await sourceAndMountpoint();
  await Deno.writeTextFile(`${src}/f`, "version one\n");
  await Deno.writeTextFile(`${src}/g`, "g\n");
  // Served from this process: every client below is a subprocess, awaited asynchronously.
  const fs = new LoopbackFs({
    root: utf8ByteString(src),
    entryTimeout: 3600,
    attrTimeout: 3600,
    keepCache: true,
  });
  const mount = mountFuse(mnt, { subtype: "outrun" });
  // Without AUTO_INVAL_DATA the kernel trusts its caches until told otherwise.
  const session = new FuseSession(mount.fd, fs, { idleWaitMs: 0, autoInvalData: false });
  const serving = session.serve();
  const umask = Deno.umask();
  try {
    assert.equal(await shOk(`cat '${mnt}/f'`), "version one\n");
    // Changed behind the kernel's back: with hour-long timeouts and kept pages it still
    // shows the old file (same size, so nothing but a notification can tell).
    await Deno.writeTextFile(`${src}/f`, "version TWO\n");
    assert.equal(await shOk(`cat '${mnt}/f'`), "version one\n");
    const f = fs.nodes.child(fs.nodes.root, "f")!;
    assert.equal(await session.notifyInvalInode(f.id, 0n, 0n), true);
    assert.equal(await shOk(`cat '${mnt}/f'`), "version TWO\n");

    assert.equal(await shOk(`stat -c %s '${mnt}/g'`), "2\n");
    await Deno.remove(`${src}/g`);
    assert.equal(await shOk(`stat -c %s '${mnt}/g'`), "2\n", "the dentry is still cached");
    assert.equal(await session.notifyInvalEntry(fs.nodes.root.id, "g"), true);
    const gone = await new Deno.Command("stat", { args: [`${mnt}/g`], stderr: "piped" }).output();
    assert.match(new TextDecoder().decode(gone.stderr), /No such file or directory/);
    await shOk(`mkdir '${mnt}/made-here'`);
    assert.equal(Deno.umask(), umask, "serving left this process's umask alone");
  } finally {
    unmountFuse(mount);
    await serving;
    await removeTree(base);
  }
});

Deno.test("session: waiting on its thread for the next request stops once a wait times out", async () => {
  const { base, src, mnt } = await sourceAndMountpoint();
  await Deno.writeTextFile(`${src}/f`, "f\n");
  const fs = new LoopbackFs({ root: utf8ByteString(src) });
  const mount = mountFuse(mnt, { subtype: "outrun" });
  // Each wait on this thread holds the event loop up to 200 ms.
  const session = new FuseSession(mount.fd, fs, { idleWaitMs: 200 });
  const serving = session.serve();
  try {
    const timedOut = session.stats.threadWaitsTimedOut;
    assert.equal(await shOk(`cat '${mnt}/f'`), "f\n");
    // Quiet from here on: a wait on this thread times out, then the loop waits
    // asynchronously (were it to wait on its thread again and again, the event
    // loop would turn only between 200 ms waits).
    await eventually(
      "a wait to time out",
      () => session.stats.threadWaitsTimedOut > timedOut,
      10_000,
      5,
    );
    const { threadWaits, requests } = session.stats;
    for (let i = 0; i < 30; i++) await new Promise((r) => setTimeout(r, 1));
    // Only a request coming meanwhile (a late FORGET, say) may start another.
    assert.ok(
      session.stats.threadWaits - threadWaits <= session.stats.requests - requests,
      JSON.stringify(session.stats),
    );
    // And it still answers.
    assert.equal(await shOk(`cat '${mnt}/f'`), "f\n");
  } finally {
    unmountFuse(mount);
    await serving;
    await removeTree(base);
  }
});

Deno.test("session: a notification while a lookup in that directory waits does not deadlock", async () => {
  const { base, src, mnt } = await sourceAndMountpoint();
  await Deno.writeTextFile(`${src}/g`, "g\n");
  await Deno.writeTextFile(`${src}/slow`, "slow\n");
  let lookupStarted!: () => void;
  const started = new Promise<void>((r) => (lookupStarted = r));
  // The kernel holds the directory's lock while this lookup is out; an INVAL_ENTRY in
  // the same directory waits for it. Written from this thread, that would wait forever.
  const inner = new LoopbackFs({ root: utf8ByteString(src), entryTimeout: 3600 });
  const slowLookup = (req: Request<"LOOKUP">) => {
    if (req.name !== "slow") return inner.lookup(req);
    lookupStarted();
    return new Promise<EntryOut>((resolve) => setTimeout(() => resolve(inner.lookup(req)), 300));
  };
  const fs = new Proxy(inner, {
    get(target, key) {
      if (key === "lookup") return slowLookup;
      const v = Reflect.get(target, key);
      return typeof v === "function" ? v.bind(target) : v;
    },
  }) as Filesystem;
  const mount = mountFuse(mnt, { subtype: "outrun" });
  const session = new FuseSession(mount.fd, fs, { idleWaitMs: 0 });
  const serving = session.serve();
  try {
    assert.equal(await shOk(`cat '${mnt}/g'`), "g\n");
    const slow = shOk(`cat '${mnt}/slow'`);
    await started;
    const notified = await Promise.race([
      session.notifyInvalEntry(1, "g"),
      new Promise((r) => setTimeout(() => r("timed out"), 5000)),
    ]);
    assert.equal(notified, true);
    assert.equal(await slow, "slow\n");
  } finally {
    unmountFuse(mount);
    await serving;
    await removeTree(base);
  }
});

/** FUSE passthrough came with Linux 6.9 (Debian's kernels have it built). */
const KERNEL_PASSTHROUGH = (() => {
  const [major, minor] = Deno.osRelease().split(".").map((n) => parseInt(n));
  return major > 6 || (major === 6 && minor >= 9);
})();

/** A loopback whose opens of names starting "pt" hand their file to the kernel. */
class PassthroughLoopback extends LoopbackFs {
  reads = 0;
  backing: BackingFiles | null = null;
  readonly #ids = new Map<number, number>();
  init(conn: Connection): void {
    this.backing = conn.backing;
  }
  override open(req: Request<"OPEN">): OpenOut {
    const out = super.open(req);
    const node = this.nodes.get(req.header.nodeid);
    const path = node ? this.nodes.path(node) : null;
    if (!this.backing || !path?.split("/").at(-1)?.startsWith("pt")) return out;
    const id = this.backing.open(out.fh);
    this.#ids.set(out.fh, id);
    return { fh: out.fh, openFlags: FOPEN.PASSTHROUGH, backingId: id };
  }
  override read(req: Request<"READ">, into: Uint8Array): number {
    this.reads++;
    return super.read(req, into);
  }
  override release(req: Request<"RELEASE">): void {
    const id = this.#ids.get(req.fh);
    this.#ids.delete(req.fh);
    if (id !== undefined) this.backing!.close(id);
    super.release(req);
  }
}

Deno.test("session: with PASSTHROUGH (where the kernel has it), reads and mmaps of a backed file never reach the server", async () => {
  const { base, src, mnt } = await sourceAndMountpoint();
  const data = new Uint8Array(3 * 1024 * 1024 + 123);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 12)) & 0xff;
  await Deno.writeFile(`${src}/pt-data`, data);
  await Deno.writeFile(`${src}/plain-data`, data);
  const sum = (await shOk(`sha256sum '${src}/pt-data'`)).split(" ")[0];
  const mapped = (f: string) =>
    shOk(`/usr/bin/python3 -c '
import mmap, hashlib, sys
with open(sys.argv[1], "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
    print(hashlib.sha256(m[:]).hexdigest())' '${f}'`);
  for (const passthrough of [true, false]) {
    const fs = new PassthroughLoopback({ root: utf8ByteString(src) });
    const mount = mountFuse(mnt, { subtype: "outrun" });
    const session = new FuseSession(mount.fd, fs, { idleWaitMs: 0, passthrough });
    const serving = session.serve();
    try {
      // A read and a mapping of the same file, then of one served the usual way.
      assert.equal((await shOk(`sha256sum '${mnt}/pt-data'`)).split(" ")[0], sum);
      assert.equal((await mapped(`${mnt}/pt-data`)).trim(), sum);
      if (passthrough && KERNEL_PASSTHROUGH) {
        assert.ok(fs.backing, "the kernel granted PASSTHROUGH");
        assert.equal(fs.reads, 0, "no READ for the backed file");
      } else {
        // Not asked for, or a kernel without it: not granted, read through the server.
        assert.equal(fs.backing, null, "not granted");
        assert.ok(fs.reads > 0);
      }
      const before = fs.reads;
      assert.equal((await shOk(`sha256sum '${mnt}/plain-data'`)).split(" ")[0], sum);
      assert.ok(fs.reads > before, "a file opened without it is read through the server");
    } finally {
      unmountFuse(mount);
      await serving;
    }
  }
  await removeTree(base);
});

Deno.test("session: a name that is not there is a negative entry the kernel keeps", async () => {
  const { base, src, mnt } = await sourceAndMountpoint();
  let lookups = 0;
  class Counting extends LoopbackFs {
    override lookup(req: Request<"LOOKUP">) {
      if (req.name === "nope") lookups++;
      return super.lookup(req);
    }
  }
  const fs = new Counting({ root: utf8ByteString(src), entryTimeout: 3600 });
  const mount = mountFuse(mnt, { subtype: "outrun" });
  const session = new FuseSession(mount.fd, fs, { idleWaitMs: 0 });
  const serving = session.serve();
  try {
    // A PATH-like search: the same missing name asked for again and again.
    const out = await shOk(
      `for i in 1 2 3 4 5; do test -e '${mnt}/nope' && echo there; done; echo done`,
    );
    assert.equal(out, "done\n");
    assert.equal(lookups, 1, "asked once, then kept by the kernel");
    // Made through the mount, it is there at once (the kernel replaces the entry).
    await shOk(`touch '${mnt}/nope'`);
    assert.equal(await shOk(`test -e '${mnt}/nope' && echo there`), "there\n");
  } finally {
    unmountFuse(mount);
    await serving;
    await removeTree(base);
  }
});
