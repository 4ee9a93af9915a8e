/**
 * FuseSession on a socket pair instead of /dev/fuse: this test plays the kernel,
 * byte by byte (fixtures.ts), to check what no real mount lets a test choose: the
 * answer to a throwing handler, to INTERRUPT, to a request before INIT, and what
 * happens to READDIRPLUS entries that do not fit.
 */
import assert from "node:assert/strict";
import { FuseError, FuseSession, ZERO_ATTR } from "../../lib/fuse/mod.ts";
import type { DirEntry, EntryOut, Filesystem, Request } from "../../lib/fuse/mod.ts";
import { Errno } from "../../lib/sys/errno.ts";
import { check, close, libc } from "../../lib/sys/libc.ts";
import { Bytes, request } from "./fixtures.ts";

const AF_UNIX = 1;
/** One message per read, as /dev/fuse gives one request per read. */
const SOCK_SEQPACKET = 5;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;

const OP = { LOOKUP: 1, GETATTR: 3, INIT: 26, INTERRUPT: 36, BATCH_FORGET: 42, READDIRPLUS: 44 };

interface Reply {
  unique: bigint;
  /** 0, or a negative errno. */
  error: number;
  body: Uint8Array;
}

function entry(nodeid: number): EntryOut {
  const attr = { ...ZERO_ATTR, ino: BigInt(nodeid), mode: 0o100644, nlink: 1, blksize: 4096 };
  return { nodeid, entryTimeout: 1, attrTimeout: 1, attr };
}

/** A session serving `fs` on one end of a socket pair; the test is the kernel at the other. */
class Wire {
  readonly session: FuseSession;
  readonly logs: string[] = [];
  readonly #kernel: number;
  readonly #served: number;
  readonly #serving: Promise<void>;

  constructor(fs: Filesystem) {
    const fds = new Int32Array(2);
    check(
      "socketpair",
      libc().socketpair(
        AF_UNIX,
        SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC,
        0,
        new Uint8Array(fds.buffer),
      ),
    );
    [this.#served, this.#kernel] = fds;
    this.session = new FuseSession(this.#served, fs, {
      idleWaitMs: 0,
      log: (m) => this.logs.push(m),
    });
    this.#serving = this.session.serve();
  }

  send(bytes: Uint8Array): void {
    const n = Number(libc().write(this.#kernel, bytes, BigInt(bytes.length)));
    assert.equal(n, bytes.length, "request written whole");
  }

  /** The next reply (failing after 10 s: one that never comes is a bug). */
  async reply(): Promise<Reply> {
    const pfd = new Uint8Array(8);
    new DataView(pfd.buffer).setInt32(0, this.#kernel, true);
    new DataView(pfd.buffer).setInt16(4, 1, true); // POLLIN
    assert.ok((await libc().poll(pfd, 1n, 10_000)) > 0, "a reply within 10 s");
    const buf = new Uint8Array(1 << 21);
    const n = Number(libc().read(this.#kernel, buf, BigInt(buf.length)));
    assert.ok(n >= 16, `a reply header (${n})`);
    const v = new DataView(buf.buffer);
    assert.equal(v.getUint32(0, true), n, "its length field is its length");
    return { error: v.getInt32(4, true), unique: v.getBigUint64(8, true), body: buf.slice(16, n) };
  }

  async init(): Promise<void> {
    this.send(request(
      OP.INIT,
      new Bytes().u32(7).u32(45).u32(131072).u32(0).u32(0).raw(new Uint8Array(44)),
      { unique: 1n },
    ));
    const r = await this.reply();
    assert.deepEqual([r.unique, r.error], [1n, 0]);
  }

  lookup(unique: bigint, name = "f"): void {
    this.send(request(OP.LOOKUP, new Bytes().name(name), { unique }));
  }

  async close(): Promise<void> {
    // A closed peer reads as 0 bytes: the session's loop ends.
    close(this.#kernel);
    await this.#serving;
    close(this.#served);
  }
}

async function withWire(fs: Filesystem, body: (w: Wire) => Promise<void>): Promise<void> {
  const w = new Wire(fs);
  try {
    await body(w);
  } finally {
    await w.close();
  }
}

Deno.test("session wire: a request before INIT is answered EIO", async () => {
  await withWire({ lookup: () => entry(2) }, async (w) => {
    w.lookup(5n);
    assert.deepEqual(await w.reply(), { unique: 5n, error: -Errno.EIO, body: new Uint8Array() });
    await w.init();
    w.lookup(6n);
    assert.deepEqual((({ unique, error }) => [unique, error])(await w.reply()), [6n, 0]);
  });
});

Deno.test("session wire: a thrown errno is the answer; any other throw is EIO, logged", async () => {
  const fs: Filesystem = {
    lookup(req: Request<"LOOKUP">) {
      switch (req.name) {
        case "missing":
          throw new FuseError(Errno.ENOENT);
        case "bug":
          throw new TypeError("a bug in the filesystem");
        case "late-bug":
          return Promise.reject(new RangeError("a later bug"));
        default:
          return Promise.reject(Object.assign(new Error("from below"), { errno: Errno.EACCES }));
      }
    },
  };
  await withWire(fs, async (w) => {
    await w.init();
    const answers: [string, number][] = [
      ["missing", -Errno.ENOENT],
      ["bug", -Errno.EIO],
      ["late-bug", -Errno.EIO],
      ["denied", -Errno.EACCES],
    ];
    for (const [i, [name, error]] of answers.entries()) {
      w.lookup(BigInt(10 + i), name);
      const r = await w.reply();
      assert.deepEqual([r.unique, r.error], [BigInt(10 + i), error], name);
    }
    assert.equal(w.session.stats.errors, 2, "the two bugs counted");
    assert.ok(w.logs.some((l) => l.includes("a bug in the filesystem")), w.logs.join("\n"));
    assert.ok(w.logs.some((l) => l.includes("a later bug")), w.logs.join("\n"));
  });
});

Deno.test("session wire: what is not implemented or not understood is ENOSYS; a short request EIO", async () => {
  await withWire({ lookup: () => entry(2) }, async (w) => {
    await w.init();
    w.send(request(OP.GETATTR, new Bytes().u32(0).u32(0).u64(0), { unique: 20n }));
    assert.equal((await w.reply()).error, -Errno.ENOSYS, "no getattr");
    w.send(request(4099, new Bytes(), { unique: 21n }));
    const unknown = await w.reply();
    assert.deepEqual([unknown.unique, unknown.error], [21n, -Errno.ENOSYS]);
    // A GETATTR body cut short.
    w.send(request(OP.GETATTR, new Bytes().u32(0), { unique: 22n }));
    const short = await w.reply();
    assert.deepEqual([short.unique, short.error], [22n, -Errno.EIO]);
  });
});

Deno.test("session wire: INTERRUPT of a request not in flight is EAGAIN; of one in flight, no answer of its own", async () => {
  const pending = Promise.withResolvers<EntryOut>();
  await withWire(
    { lookup: (req) => req.name === "slow" ? pending.promise : entry(3) },
    async (w) => {
      await w.init();
      w.lookup(30n, "slow");
      // In flight: the interrupt gets no answer (the request's own comes, as the
      // kernel allows); shown by the next request's answer coming first.
      w.send(request(OP.INTERRUPT, new Bytes().u64(30), { unique: 31n }));
      w.lookup(32n);
      assert.equal((await w.reply()).unique, 32n);
      pending.resolve(entry(4));
      const slow = await w.reply();
      assert.deepEqual([slow.unique, slow.error], [30n, 0]);
      // Not in flight (never read, or answered): EAGAIN, so the kernel sends it again.
      w.send(request(OP.INTERRUPT, new Bytes().u64(99), { unique: 33n }));
      const again = await w.reply();
      assert.deepEqual([again.unique, again.error], [33n, -Errno.EAGAIN]);
    },
  );
});

Deno.test("session wire: READDIRPLUS entries that do not fit are forgotten; BATCH_FORGET has no answer", async () => {
  const forgotten: [number, number][] = [];
  const entries: DirEntry[] = Array.from({ length: 60 }, (_, i) => ({
    name: `file-${i}`,
    ino: BigInt(100 + i),
    type: 8,
    nextOffset: BigInt(i + 1),
    entry: entry(100 + i),
  }));
  const fs: Filesystem = {
    readdirplus: () => entries,
    forget: (nodeid, nlookup) => void forgotten.push([nodeid, nlookup]),
    lookup: () => entry(2),
  };
  await withWire(fs, async (w) => {
    await w.init();
    w.send(request(
      OP.READDIRPLUS,
      new Bytes().u64(1).u64(0).u32(4096).u32(0).u64(0).u32(0).u32(0),
      { unique: 40n },
    ));
    const r = await w.reply();
    assert.equal(r.error, 0);
    assert.ok(r.body.length <= 4096, "within the kernel's buffer");
    // Each fuse_direntplus: a 128-byte entry_out, a 24-byte dirent, the name, padded to 8.
    let sent = 0;
    for (let at = 0; at < r.body.length; sent++) {
      const nameLength = new DataView(r.body.buffer).getUint32(at + 128 + 16, true);
      at += 128 + 24 + Math.ceil(nameLength / 8) * 8;
    }
    assert.ok(sent > 0 && sent < entries.length, `${sent} of ${entries.length} fit`);
    assert.deepEqual(
      forgotten,
      entries.slice(sent).map((e) => [e.entry!.nodeid, 1]),
      "each one not sent is forgotten once",
    );
    forgotten.length = 0;
    w.send(request(
      OP.BATCH_FORGET,
      new Bytes().u32(2).u32(0).u64(5).u64(1).u64(6).u64(2),
      { unique: 41n },
    ));
    w.lookup(42n);
    assert.equal((await w.reply()).unique, 42n, "the next answer is the lookup's");
    assert.deepEqual(forgotten, [[5, 1], [6, 2]]);
  });
});
