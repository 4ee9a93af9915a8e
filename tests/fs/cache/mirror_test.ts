/**
 * The cached data path on real FUSE mounts (needs root): `outrun debug cached`
 * serves a mirror of / with one temporary directory as the cached prefix, its
 * CacheStore in another; a `serve-fs --cache` child answers as outrun's local
 * side does. Several sessions in a row share the store, like outrun runs do.
 */
import assert from "node:assert/strict";
import { mountsAt } from "../../../lib/fuse/mount.ts";
import { fuseMounted, fuseWaiting, waitFor } from "../loopback_helper.ts";
import { removeTree } from "../../remove_tree.ts";
import { attr } from "./fixtures.ts";
import { pipePair } from "../../rpc/pipe.ts";
import { CachedFs } from "../../../lib/fs/cache/mirror.ts";
import { CacheStore } from "../../../lib/fs/cache/store.ts";
import {
  CACHE_CALLS,
  CACHE_EVENTS,
  type MetaRecord,
  packMeta,
  unpackHeld,
  type ValidateRequest,
  type ValidateRestRequest,
} from "../../../lib/fs/cache/protocol.ts";
import type { EntryOut, Request } from "../../../lib/fuse/mod.ts";
import { RpcPeer, type Value } from "../../../lib/rpc/mod.ts";

const MAIN = new URL("../../../main.ts", import.meta.url).pathname;

interface SessionStats {
  calls: Record<string, number>;
  cache: { hits: { meta: number; chunk: number }; misses: { meta: number; chunk: number } };
}

interface Bed {
  src: string;
  mnt: string;
  store: string;
  /** The mirror's view of `src`. */
  view: string;
  /** Servers still running (a failed assertion skips their stop). */
  live: Set<Deno.ChildProcess>;
  cleanup(): Promise<void>;
}

async function bed(): Promise<Bed> {
  const src = await Deno.makeTempDir({ prefix: "outrun-cache-src-" });
  const mnt = await Deno.makeTempDir({ prefix: "outrun-cache-mnt-" });
  const store = await Deno.makeTempDir({ prefix: "outrun-cache-store-" });
  const live = new Set<Deno.ChildProcess>();
  return {
    src,
    mnt,
    store,
    view: `${mnt}${src}`,
    live,
    async cleanup() {
      for (const server of live) {
        server.kill("SIGTERM"); // it unmounts on the way out
        await server.status;
      }
      for (const d of [src, mnt, store]) await removeTree(d);
    },
  };
}

interface Session {
  server: Deno.ChildProcess;
  stop(): Promise<SessionStats>;
}

async function session(b: Bed, extra: string[] = [], mnt = b.mnt): Promise<Session> {
  // In the store's directory, so that the bed's cleanup takes it whatever happens.
  const statsFile = await Deno.makeTempFile({ prefix: "stats-", dir: b.store });
  const server = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      MAIN,
      "debug",
      "cached",
      "/",
      mnt,
      "--store",
      b.store,
      "--prefix",
      b.src,
      "--stats",
      statsFile,
      ...extra,
    ],
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  b.live.add(server);
  // This server's own mount (a dead one may still be there until it clears it).
  await waitFor(
    "the mount",
    () => mountsAt(mnt).some((m) => m.source.includes(`#${server.pid}.`)),
  );
  return {
    server,
    async stop() {
      server.kill("SIGTERM");
      const status = await server.status;
      b.live.delete(server);
      assert.equal(status.code, 0, "server exit");
      assert.ok(!fuseMounted(mnt), "unmounted");
      const stats = JSON.parse(await Deno.readTextFile(statsFile)) as SessionStats;
      await Deno.remove(statsFile);
      return stats;
    },
  };
}

function random(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

async function sh(cmd: string): Promise<string> {
  const out = await new Deno.Command("sh", { args: ["-c", cmd], stderr: "piped" }).output();
  assert.equal(out.code, 0, `${cmd}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

async function fill(src: string): Promise<Uint8Array> {
  await Deno.mkdir(`${src}/sub/deeper`, { recursive: true });
  await Deno.writeTextFile(`${src}/small.txt`, "small\n");
  const big = random(3 * 1024 * 1024 + 12345); // several chunks and a short last one
  await Deno.writeFile(`${src}/big.bin`, big);
  await Deno.writeTextFile(`${src}/sub/deeper/x.txt`, "x\n");
  await Deno.symlink("sub/deeper/x.txt", `${src}/link`);
  await Deno.writeFile(`${src}/empty`, new Uint8Array(0));
  return big;
}

const FILES = ["small.txt", "big.bin", "sub/deeper/x.txt", "link", "empty"];

/** Reads through the mirror and compares with the source (names, attributes, bytes). */
async function checkSame(b: Bed, files = FILES): Promise<void> {
  const lsSrc = await sh(`cd ${b.src} && ls -laR --time-style=full-iso . | grep -v ' \\.$'`);
  const lsView = await sh(`cd ${b.view} && ls -laR --time-style=full-iso . | grep -v ' \\.$'`);
  assert.equal(lsView, lsSrc, "listing and attributes");
  for (const f of files) {
    assert.deepEqual(
      await Deno.readFile(`${b.view}/${f}`),
      await Deno.readFile(`${b.src}/${f}`),
      f,
    );
  }
  assert.equal(await Deno.readLink(`${b.view}/link`), await Deno.readLink(`${b.src}/link`));
  await assert.rejects(Deno.stat(`${b.view}/no-such-file`), Deno.errors.NotFound);
}

/** A store in a temporary directory and an RPC pair whose local end the test answers. */
async function withPeers(
  f: (p: { local: RpcPeer; remote: RpcPeer; store: CacheStore }) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "outrun-mirror-" });
  const [x, y] = pipePair();
  const local = new RpcPeer(x, { program: "local" });
  const remote = new RpcPeer(y, { program: "remote" });
  const store = new CacheStore(dir);
  try {
    await f({ local, remote, store });
  } finally {
    store.close();
    await local.close();
    await remote.close();
    await removeTree(dir);
  }
}

function cacheCalls(s: SessionStats): Record<string, number> {
  return Object.fromEntries(Object.entries(s.calls).filter(([k]) => k.startsWith("cache.")));
}

Deno.test("cache mirror: cold, then warm in one round trip; local changes are seen", async () => {
  const b = await bed();
  try {
    await fill(b.src);
    let s = await session(b);
    await checkSame(b);
    const cold = await s.stop();
    assert.ok(
      cold.calls["cache.meta"] >= 1 && cold.calls["cache.content"] >= 1,
      JSON.stringify(cold),
    );

    s = await session(b);
    await checkSame(b);
    const warm = await s.stop();
    assert.deepEqual(cacheCalls(warm), { "cache.validate": 1 }, JSON.stringify(warm));
    assert.equal(warm.cache.misses.meta + warm.cache.misses.chunk, 0);
    // Outside the prefix, only the way to it: "tmp" (and nothing under the prefix).
    assert.ok((warm.calls["fs.lookup"] ?? 0) <= 2, JSON.stringify(warm.calls));

    // Changed between sessions: new bytes in place, a grown file, a new and a removed name.
    const f = await Deno.open(`${b.src}/big.bin`, { write: true });
    await f.seek(2 * 1024 * 1024 + 7, Deno.SeekMode.Start);
    await f.write(new TextEncoder().encode("changed here"));
    f.close();
    await Deno.writeTextFile(`${b.src}/small.txt`, "small, and longer now\n");
    await Deno.writeTextFile(`${b.src}/sub/new.txt`, "new\n");
    await Deno.remove(`${b.src}/sub/deeper/x.txt`);
    await Deno.writeTextFile(`${b.src}/sub/deeper/y.txt`, "y\n");
    s = await session(b);
    await checkSame(b, ["small.txt", "big.bin", "sub/new.txt", "sub/deeper/y.txt", "empty"]);
    await assert.rejects(Deno.readFile(`${b.view}/link`), Deno.errors.NotFound, "dangling now");
    await assert.rejects(Deno.stat(`${b.view}/sub/deeper/x.txt`), Deno.errors.NotFound);
    await s.stop();
  } finally {
    await b.cleanup();
  }
});

Deno.test("cache mirror: changes under a cached prefix are made on the local files", async () => {
  const b = await bed();
  try {
    await fill(b.src);
    const s = await session(b);
    try {
      await checkSame(b); // everything cached first
      await sh(
        `cd ${b.view} && echo appended >> small.txt && echo made > sub/made.txt && ` +
          `mv sub/deeper/x.txt sub/moved.txt && rm empty && chmod 600 big.bin && mkdir newdir && ` +
          `ln -s small.txt link2 && truncate -s 10 sub/made.txt`,
      );
      assert.equal(await Deno.readTextFile(`${b.src}/small.txt`), "small\nappended\n");
      assert.equal((await Deno.readFile(`${b.src}/sub/made.txt`)).length, 10);
      assert.equal(await Deno.readTextFile(`${b.src}/sub/moved.txt`), "x\n");
      await assert.rejects(Deno.stat(`${b.src}/empty`), Deno.errors.NotFound);
      assert.equal((await Deno.stat(`${b.src}/big.bin`)).mode! & 0o777, 0o600);
      assert.ok((await Deno.stat(`${b.src}/newdir`)).isDirectory);
      // And the mirror shows the same thing after the changes.
      assert.equal(await Deno.readTextFile(`${b.view}/small.txt`), "small\nappended\n");
      assert.equal(await Deno.readTextFile(`${b.view}/sub/moved.txt`), "x\n");
      await assert.rejects(Deno.stat(`${b.view}/empty`), Deno.errors.NotFound);
    } finally {
      await s.stop();
    }
    // A later session starts from what the changes left.
    const again = await session(b);
    await checkSame(b, ["small.txt", "big.bin", "sub/made.txt", "sub/moved.txt", "link2"]);
    await again.stop();
  } finally {
    await b.cleanup();
  }
});

Deno.test("cache mirror: a damaged blob is detected and fetched again", async () => {
  const b = await bed();
  try {
    const big = await fill(b.src);
    let s = await session(b);
    assert.deepEqual(await Deno.readFile(`${b.view}/big.bin`), big);
    await s.stop();
    let damaged = 0;
    for await (const d of Deno.readDir(`${b.store}/blobs`)) {
      for await (const f of Deno.readDir(`${b.store}/blobs/${d.name}`)) {
        const path = `${b.store}/blobs/${d.name}/${f.name}`;
        if ((await Deno.stat(path)).size < 1024 * 1024) continue;
        const file = await Deno.open(path, { write: true });
        await file.seek(200_000, Deno.SeekMode.Start);
        await file.write(new TextEncoder().encode("garbage garbage"));
        file.close();
        damaged++;
      }
    }
    assert.equal(damaged, 1);
    s = await session(b);
    assert.deepEqual(await Deno.readFile(`${b.view}/big.bin`), big);
    const stats = await s.stop();
    assert.equal(stats.calls["cache.chunks"], 1, "the damaged chunk, fetched once");
  } finally {
    await b.cleanup();
  }
});

Deno.test("cache mirror: a session killed mid-read, and two sessions at once, leave a sound store", async () => {
  const b = await bed();
  const mnt2 = await Deno.makeTempDir({ prefix: "outrun-cache-mnt-" });
  try {
    const big = await fill(b.src);
    const killed = await session(b, ["--no-prefetch"]);
    // Part of the file fetched and stored, then a read the server never answers:
    // stopped, so that the kill comes with that read waiting (fusectl says so).
    await sh(`head -c 1000000 ${b.view}/big.bin > /dev/null`);
    killed.server.kill("SIGSTOP");
    const reader = new Deno.Command("cat", {
      args: [`${b.view}/big.bin`],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await waitFor("the read to wait on the server", () => fuseWaiting(b.mnt) > 0);
    } finally {
      killed.server.kill("SIGKILL"); // stopped, it would wait forever for the cleanup
    }
    await killed.server.status;
    b.live.delete(killed.server);
    assert.equal((await reader.status).success, false, "the read was cut off");
    // The next server clears the dead mount and finds a store it can use.
    const [s1, s2] = [await session(b), await session(b, [], mnt2)];
    const [a, c] = await Promise.all([
      Deno.readFile(`${b.view}/big.bin`),
      Deno.readFile(`${mnt2}${b.src}/big.bin`),
    ]);
    assert.deepEqual(a, big);
    assert.deepEqual(c, big);
    await s1.stop();
    await s2.stop();
    // What the two wrote (big.bin) is all there for the next one.
    const s3 = await session(b);
    assert.deepEqual(await Deno.readFile(`${b.view}/big.bin`), big);
    const warm = await s3.stop();
    assert.deepEqual(cacheCalls(warm), { "cache.validate": 1 }, JSON.stringify(warm));
    assert.equal(warm.cache.misses.chunk, 0, JSON.stringify(warm));
    const s4 = await session(b);
    await checkSame(b);
    await s4.stop();
  } finally {
    await removeTree(mnt2);
    await b.cleanup();
  }
});

Deno.test("cache mirror: what changed here comes before the validation's answer and is kept, not asked again", async () => {
  await withPeers(async ({ local, remote, store }) => {
    const usr: MetaRecord = { path: "/usr", attr: attr(0, 0o40755), children: ["f", "g"] };
    const old: MetaRecord = { path: "/usr/f", attr: attr(10) };
    const changed: MetaRecord = { path: "/usr/f", attr: attr(20) };
    const gone: MetaRecord = { path: "/usr/g", attr: attr(30) };
    // Held from an earlier session: /usr (listed), /usr/f as it was, /usr/g since removed.
    store.putMetas("c", [usr, old, gone]);
    let asked = 0;
    local.handle(CACHE_CALLS.meta, () => {
      asked++;
      local.event(CACHE_EVENTS.push, { metas: [packMeta(changed)] } as unknown as Value);
      return null;
    });
    // As the local side answers: what changed of the profile is pushed, then the answer.
    local.handle(CACHE_CALLS.validate, () => {
      local.event(CACHE_EVENTS.push, { metas: [packMeta(changed)] } as unknown as Value);
      return {
        stale: ["/usr/f", "/usr/g"],
        ahead: [],
        root: null,
        incoming: [],
      } as unknown as Value;
    });
    const fs = new CachedFs({ peer: remote, inner: {}, store, client: "c", prefixes: ["/usr"] });
    try {
      assert.equal((await fs.validate({ exe: null, prefetch: false, ahead: [] })).held, 3);
      // What the answer found stale went from the store (what came pushed is seen below).
      assert.equal(store.heldMeta("c", "/usr/g"), null, "stale, not pushed: dropped");
      const lookup = (nodeid: number, name: string) =>
        fs.lookup({ header: { nodeid }, name } as unknown as Request<"LOOKUP">);
      const dirEntry = await lookup(1, "usr");
      const entry = await lookup(dirEntry.nodeid, "f");
      assert.equal(entry.attr.size, 20n, "the fresh meta");
      assert.equal(asked, 0, "not asked for again");
    } finally {
      fs.end();
    }
  });
});

Deno.test("cache mirror: names checked while the command runs are read from the store when used, as checked; what changed since or was moved is not", async () => {
  await withPeers(async ({ local, remote, store }) => {
    const dir = (path: string, children: string[]): MetaRecord => ({
      path,
      attr: attr(0, 0o40755),
      children,
    });
    const file = (path: string, size: number): MetaRecord => ({ path, attr: attr(size) });
    store.putMetas("c", [
      dir("/usr", ["a", "lib", "c", "d"]),
      dir("/usr/lib", ["x", "y", "z", "sub"]),
      dir("/usr/lib/sub", ["deep"]),
      file("/usr/lib/sub/deep", 30),
      file("/usr/lib/x", 20),
      file("/usr/lib/y", 21),
      file("/usr/lib/z", 22),
      file("/usr/a", 10),
      file("/usr/c", 12),
      file("/usr/d", 15),
    ]);
    store.setHot("c", "/usr/bin/x", ["/usr", "/usr/a"]);
    const metaCalls: string[] = [];
    local.handle(
      CACHE_CALLS.validate,
      () => ({ stale: [], ahead: [], root: null, incoming: [] }) as unknown as Value,
    );
    local.handle(
      CACHE_CALLS.validateRest,
      () => ({ stale: [], ahead: [], root: null, incoming: [] }) as unknown as Value,
    );
    // After the move: /usr lists "old" and a new "lib" with an empty "sub".
    const now: Record<string, MetaRecord> = {
      "/usr": dir("/usr", ["a", "c", "d", "lib", "old"]),
      "/usr/c": file("/usr/c", 14),
      "/usr/lib": dir("/usr/lib", ["sub"]),
      "/usr/lib/sub": dir("/usr/lib/sub", []),
    };
    local.handle(CACHE_CALLS.meta, (args) => {
      const { path } = args as { path: string };
      metaCalls.push(path);
      const m = now[path] ?? { path, attr: null };
      local.event(CACHE_EVENTS.push, { metas: [packMeta(m)] } as Value);
      return null;
    });
    local.handle(CACHE_CALLS.lookupPath, () => ({ nodeid: 5 }) as unknown as Value);
    const inner = { rename: () => {} };
    const fs = new CachedFs({ peer: remote, inner, store, client: "c", prefixes: ["/usr"] });
    const lookup = (nodeid: number, name: string) =>
      fs.lookup({ header: { nodeid }, name } as Request<"LOOKUP">) as Promise<EntryOut>;
    try {
      await fs.validate({ exe: "/usr/bin/x", prefetch: true, ahead: [] });
      const usr = (await lookup(1, "usr")).nodeid;
      const lib = await lookup(usr, "lib");
      assert.equal(lib.attr.mode, 0o40755, "from the store, once all it holds was checked");
      // A listing's entries are read at once, with their types.
      const opened = await fs.opendir({ header: { nodeid: lib.nodeid } } as Request<"OPENDIR">);
      const entries = await fs.readdir({ fh: opened.fh, offset: 0n } as Request<"READDIR">);
      assert.deepEqual(
        entries.filter((e) => !e.name.startsWith(".")).map((e) => [e.name, e.type]),
        [["x", 8], ["y", 8], ["z", 8], ["sub", 4]],
      );
      assert.deepEqual(metaCalls, [], "no call for what the store holds as checked");
      // Written since by another session: not what was checked (a ControlMaster would
      // never check it again), asked for; what did not change is still taken.
      store.putMetas("c", [file("/usr/c", 13)]);
      assert.equal((await lookup(usr, "c")).attr.size, 14n);
      assert.equal((await lookup(usr, "d")).attr.size, 15n);
      assert.deepEqual(metaCalls, ["/usr/c"]);
      // Moved through the mount: what the store held below the old name is not used.
      await fs.rename(
        {
          header: { nodeid: usr },
          name: "lib",
          newdir: usr,
          newName: "old",
          flags: 0,
        } as unknown as Request<"RENAME2">,
      );
      const sub = await lookup((await lookup(usr, "lib")).nodeid, "sub");
      assert.deepEqual(metaCalls, ["/usr/c", "/usr", "/usr/lib", "/usr/lib/sub"]);
      assert.equal((await lookup(sub.nodeid, "deep")).nodeid, 0, "not the moved one's");
    } finally {
      fs.end();
    }
  });
});

Deno.test("cache mirror: a start checks first what its command used last time; the rest is checked while it runs, and its names wait for that", async () => {
  await withPeers(async ({ local, remote, store }) => {
    const usr: MetaRecord = { path: "/usr", attr: attr(0, 0o40755), children: ["a", "b"] };
    const a: MetaRecord = { path: "/usr/a", attr: attr(10) };
    const b: MetaRecord = { path: "/usr/b", attr: attr(11) };
    const bNow: MetaRecord = { path: "/usr/b", attr: attr(22) };
    store.putMetas("c", [usr, a, b]);
    store.setHot("c", "/usr/bin/x", ["/usr", "/usr/a"]);
    const asked: { method: string; paths: string[]; rest?: boolean }[] = [];
    const restReply = Promise.withResolvers<void>();
    local.handle(CACHE_CALLS.validate, (args) => {
      const req = args as unknown as ValidateRequest;
      asked.push({
        method: "validate",
        paths: unpackHeld(req.held).map((r) => r[0]),
        ...(req.rest ? { rest: true } : {}),
      });
      return { stale: [], ahead: [], root: null, incoming: [] } as unknown as Value;
    });
    local.handle(CACHE_CALLS.validateRest, async (args) => {
      const req = args as unknown as ValidateRestRequest;
      asked.push({ method: "validateRest", paths: unpackHeld(req.held).map((r) => r[0]) });
      await restReply.promise;
      // As the local side answers: what changed is pushed, then the answer.
      local.event(CACHE_EVENTS.push, { metas: [packMeta(bNow)] } as unknown as Value);
      return { stale: ["/usr/b"], ahead: [], root: null, incoming: [] } as unknown as Value;
    });
    const lookup = (fs: CachedFs, nodeid: number, name: string) =>
      fs.lookup({ header: { nodeid }, name } as unknown as Request<"LOOKUP">);
    let fs = new CachedFs({ peer: remote, inner: {}, store, client: "c", prefixes: ["/usr"] });
    try {
      assert.deepEqual(await fs.validate({ exe: "/usr/bin/x", prefetch: true, ahead: [] }), {
        held: 3,
        stale: 0,
      });
      await waitFor("the rest asked for", () => asked.length === 2);
      assert.deepEqual(asked, [
        { method: "validate", paths: ["/usr", "/usr/a"], rest: true },
        // All it holds (as kept from the last start if nothing changed since).
        { method: "validateRest", paths: ["/usr", "/usr/a", "/usr/b"] },
      ]);
      // Checked first: answered at once, from the store.
      const dirEntry = lookup(fs, 1, "usr") as EntryOut;
      assert.equal((lookup(fs, dirEntry.nodeid, "a") as EntryOut).attr.size, 10n);
      // Not checked yet: waits for the rest's answer, then has what is there now.
      let got: EntryOut | null = null;
      const pending = Promise.resolve(lookup(fs, dirEntry.nodeid, "b")).then((e) => (got = e));
      // And so does a listing holding such a name (its entries' types come from metas).
      let listed = false;
      const opened = Promise.resolve(
        fs.opendir({ header: { nodeid: dirEntry.nodeid } } as Request<"OPENDIR">),
      ).then(() => listed = true);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(got, null, "waits");
      assert.equal(listed, false, "waits too");
      restReply.resolve();
      await Promise.all([pending, opened]);
      assert.equal(got!.attr.size, 22n, "the fresh meta, not the stale one held");
      assert.equal(fs.validation.restWaits, 2);
      fs.finish();
      fs.end();
      // What it used is checked first next time; a command never run here checks all at once.
      assert.deepEqual(store.hotPaths("c", "/usr/bin/x")?.sort(), ["/usr", "/usr/a", "/usr/b"]);
      asked.length = 0;
      fs = new CachedFs({ peer: remote, inner: {}, store, client: "c", prefixes: ["/usr"] });
      await fs.validate({ exe: "/usr/bin/y", prefetch: true, ahead: [] });
      assert.deepEqual(asked, [{ method: "validate", paths: ["/usr", "/usr/a", "/usr/b"] }]);
    } finally {
      fs.end();
    }
  });
});
