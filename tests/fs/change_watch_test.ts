/**
 * The change watch over a real LoopbackFs (no mount: the calls as the remote's would
 * come): what the remote looks into is watched and given long, a change made here by
 * anyone else is told with the node and name it is about, and the calls' own changes
 * are not told.
 */
import assert from "node:assert/strict";
import type { EntryOut, Request } from "../../lib/fuse/mod.ts";
import { ChangeWatch, WATCHED_TIMEOUT } from "../../lib/fs/change_watch.ts";
import type { Invalidation } from "../../lib/fs/file_wire.ts";
import { LoopbackFs } from "../../lib/fs/loopback.ts";
import { utf8ByteString } from "../../lib/sys/bytes.ts";
import { O } from "../../lib/sys/libc.ts";
import { eventually } from "../eventually.ts";

interface Bed {
  dir: string;
  fs: LoopbackFs;
  watch: ChangeWatch;
  told: Invalidation[];
  /** The node id of the test's directory, looked up from the root. */
  top: number;
  lookup(parent: number, name: string): EntryOut;
  /** A call as the remote makes it, with the watch's turn after it. */
  call<T>(req: Request, run: () => T): T;
}

async function withBed(test: (b: Bed) => void | Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "outrun-change-watch-" });
  const fs = new LoopbackFs({ root: utf8ByteString(dir) });
  const told: Invalidation[] = [];
  const watch = new ChangeWatch(fs.nodes, (id) => fs.pathOf(id), (c) => told.push(...c));
  fs.useWatch(watch);
  const call = <T>(req: Request, run: () => T): T => {
    const out = run();
    watch.afterCall(req);
    return out;
  };
  const lookup = (parent: number, name: string) => {
    const req = { op: "LOOKUP", header: { nodeid: parent }, name } as unknown as Request<"LOOKUP">;
    return call(req, () => fs.lookup(req));
  };
  try {
    await Deno.mkdir(`${dir}/src`);
    await Deno.writeTextFile(`${dir}/src/a.h`, "#define A 1\n");
    const top = lookup(1, "src").nodeid;
    await test({ dir, fs, watch, told, top, lookup, call });
  } finally {
    watch.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("change watch: names and attributes in a watched directory are given long", async () => {
  await withBed(({ lookup, top }) => {
    const a = lookup(top, "a.h");
    assert.equal(a.entryTimeout, WATCHED_TIMEOUT);
    assert.equal(a.attrTimeout, WATCHED_TIMEOUT);
    const none = lookup(top, "b.h");
    assert.equal(none.nodeid, 0);
    assert.equal(none.entryTimeout, WATCHED_TIMEOUT, "a name that is not there, as long");
  });
});

Deno.test("change watch: a file with a second link elsewhere keeps the short timeout", async () => {
  await withBed(async ({ dir, lookup, top }) => {
    await Deno.link(`${dir}/src/a.h`, `${dir}/a-link.h`);
    assert.equal(lookup(top, "a.h").attrTimeout, 1);
  });
});

Deno.test("change watch: changes made here are told: contents, a new name, a removed one, a move", async () => {
  await withBed(async ({ dir, told, lookup, top }) => {
    const a = lookup(top, "a.h").nodeid;
    lookup(top, "b.h"); // negative
    await Deno.writeTextFile(`${dir}/src/a.h`, "#define A 22\n");
    await eventually("the edit told", () => told.some((c) => c.node === a));
    told.length = 0;
    await Deno.writeTextFile(`${dir}/src/b.h`, "new\n");
    await eventually(
      "the new name told",
      () => told.some((c) => c.parent === top && c.name === "b.h"),
    );
    told.length = 0;
    await Deno.rename(`${dir}/src/a.h`, `${dir}/src/c.h`);
    await eventually(
      "both names of the move told",
      () =>
        told.some((c) => c.parent === top && c.name === "a.h" && c.node === a) &&
        told.some((c) => c.parent === top && c.name === "c.h"),
    );
    told.length = 0;
    await Deno.chmod(`${dir}/src`, 0o700);
    await eventually("the directory's own change told", () => told.some((c) => c.node === top));
  });
});

Deno.test("change watch: what the calls change themselves is not told; a change between them is, first", async () => {
  await withBed(({ dir, fs, watch, told, call, lookup, top }) => {
    const header = (nodeid: number) => ({ nodeid, uid: Deno.uid(), gid: Deno.gid(), pid: 0 });
    const create = {
      op: "CREATE",
      header: header(top),
      name: "x.o",
      flags: O.WRONLY | O.CREAT,
      mode: 0o644,
      umask: 0,
    } as unknown as Request<"CREATE">;
    const made = call(create, () => fs.create(create));
    const write = {
      op: "WRITE",
      header: header(made.entry.nodeid),
      fh: made.open.fh,
      offset: 0n,
      data: new Uint8Array(100),
      size: 100,
      writeFlags: 0,
      lockOwner: 0n,
      flags: 0,
    } as unknown as Request<"WRITE">;
    call(write, () => fs.write(write));
    const unlink = { op: "UNLINK", header: header(top), name: "x.o" } as unknown as Request<
      "UNLINK"
    >;
    call(unlink, () => fs.unlink(unlink));
    const rel = {
      op: "RELEASE",
      header: header(made.entry.nodeid),
      fh: made.open.fh,
      flags: 0,
      releaseFlags: 0,
      lockOwner: 0n,
    } as unknown as Request<"RELEASE">;
    call(rel, () => fs.release(rel));
    // Whatever is queued is read now: nothing of the calls' own.
    watch.afterCall({ op: "GETATTR", header: header(top) } as unknown as Request);
    assert.deepEqual(told, []);
    assert.ok(watch.stats.own >= 3, JSON.stringify(watch.stats));
    // A change made here between two calls goes with the next call, before its answer.
    const a = lookup(top, "a.h").nodeid;
    Deno.writeTextFileSync(`${dir}/src/a.h`, "changed\n");
    lookup(top, "a.h");
    const after: Invalidation[] = told; // (deepEqual above narrowed told to never[])
    assert.ok(after.some((c) => c.node === a), JSON.stringify(after));
  });
});
