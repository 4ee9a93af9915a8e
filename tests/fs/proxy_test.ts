/**
 * ProxyFs's read-ahead: a real directory served by LoopbackFs over a real RPC
 * connection, each answer 5 ms late; the reads are the kernel's, as it asks them.
 */
import assert from "node:assert/strict";
import { delayedFilesystem, type DelayStats } from "../../lib/fs/delayed.ts";
import { LoopbackFs } from "../../lib/fs/loopback.ts";
import { ProxyFs } from "../../lib/fs/proxy.ts";
import { AHEAD_BLOCK } from "../../lib/fs/read_ahead.ts";
import { type BulkCodec, LIST_FIRST, OPEN_AHEAD } from "../../lib/fs/file_wire.ts";
import { serveFilesystem } from "../../lib/fs/serve.ts";
import { bulkCodec } from "../../lib/fs/cache/chunks.ts";
import {
  type DirEntry,
  direntSize,
  type Filesystem,
  FOPEN,
  type Request,
} from "../../lib/fuse/mod.ts";
import { RpcError, RpcPeer } from "../../lib/rpc/mod.ts";
import { pipePair } from "../rpc/pipe.ts";
import { eventually } from "../eventually.ts";

/** What one-way messages do, once they have landed (asked every 5 ms). */
const landed = (what: string, f: () => boolean) => eventually(what, f, 10_000, 5);

/** The proxy as the FUSE session sees it (every method optional), with its counters. */
type Proxied = Filesystem & {
  ahead: ProxyFs["ahead"];
  /** Writes told as failed late (the agent prints them). */
  late: Error[];
  /** The local side's answers: how many were under way at once. */
  served: DelayStats;
};

const header = (nodeid: number) => ({ nodeid, uid: 0, gid: 0, pid: 1, unique: 0n });

async function withProxy(
  body: (
    p: Proxied,
    dir: string,
    open: (name: string) => Promise<[number, number]>,
    loopback: LoopbackFs,
  ) => Promise<void>,
  /** The local side's attribute timeout (seconds): how long entries' xattr names hold. */
  attrTimeout = 1,
  /** How bulk data is packed both ways (none: raw). */
  codec?: BulkCodec,
) {
  const dir = await Deno.makeTempDir({ prefix: "outrun-proxy-" });
  const [a, b] = pipePair();
  const local = new RpcPeer(a, { program: "local" });
  const remote = new RpcPeer(b, { program: "remote" });
  const loopback = new LoopbackFs({ root: dir, attrTimeout });
  const delayed = delayedFilesystem(loopback, 5);
  serveFilesystem(local, delayed.fs, { codec });
  const late: Error[] = [];
  const proxy = Object.assign(new ProxyFs(remote, (e) => late.push(e), codec), {
    late,
    served: delayed.stats,
  }) as unknown as Proxied;
  const open = async (name: string): Promise<[number, number]> => {
    const e = await proxy.lookup!({ header: header(1), name } as unknown as Request<"LOOKUP">);
    const o = await proxy.open!(
      { header: header(e.nodeid), flags: 2, /* O_RDWR */ openFlags: 0 } as unknown as Request<
        "OPEN"
      >,
    );
    return [e.nodeid, o.fh];
  };
  try {
    await body(proxy, dir, open, loopback);
  } finally {
    await local.close();
    await remote.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Byte equality with a short message (a diff of megabytes takes minutes to print). */
function same(got: Uint8Array, want: Uint8Array, what: string): void {
  const at = got.findIndex((b, i) => b !== want[i]);
  assert.ok(
    got.length === want.length && at < 0,
    `${what}: ${got.length} bytes for ${want.length}, first difference at ${at}`,
  );
}

function read(p: Proxied, nodeid: number, fh: number, offset: number, size: number) {
  return p.read!(
    {
      header: header(nodeid),
      fh,
      offset: BigInt(offset),
      size,
      readFlags: 0,
      flags: 0,
    } as unknown as Request<"READ">,
    new Uint8Array(size),
  ) as Promise<Uint8Array>;
}

Deno.test("proxy: reads in sequence are read ahead, several at once, and give the file's bytes", async () => {
  await withProxy(async (proxy, dir, open) => {
    const data = new Uint8Array(3 * 1024 * 1024 + 12345);
    for (let i = 0; i < data.length; i += 65536) {
      crypto.getRandomValues(data.subarray(i, Math.min(i + 65536, data.length)));
    }
    await Deno.writeFile(`${dir}/in.mp4`, data);
    const [node, fh] = await open("in.mp4");
    const size = 128 * 1024;
    // Two at a time, as the kernel does with its async readahead.
    const got: Uint8Array[] = [];
    for (let at = 0; at < data.length; at += 2 * size) {
      got.push(
        ...await Promise.all([
          read(proxy, node, fh, at, size),
          read(proxy, node, fh, at + size, size),
        ]),
      );
    }
    const joined = new Uint8Array(got.reduce((n, g) => n + g.length, 0));
    let at = 0;
    for (const g of got) joined.set(g, (at += g.length) - g.length);
    assert.equal(joined.length, data.length, "short reads only at the end");
    same(joined, data, "the file");
    assert.ok(proxy.ahead.hits > 20, JSON.stringify(proxy.ahead));
    assert.ok(proxy.ahead.blocks <= Math.ceil(data.length / AHEAD_BLOCK) + 20);
    // Blocks are asked for ahead, several at once (the kernel here asks two at a time).
    assert.ok(proxy.served.maxInFlight >= 4, JSON.stringify(proxy.served));
    // Not counted as round trips: nobody waits on a block before it is needed.
    const calls = (proxy as unknown as ProxyFs).peer.callsByMethod;
    assert.equal(calls["fs.readAhead"], proxy.ahead.blocks);
  });
});

Deno.test("proxy: jumps are not read ahead; a write drops what was read ahead", async () => {
  await withProxy(async (proxy, dir, open) => {
    const data = new Uint8Array(2 * 1024 * 1024).map((_, i) => i % 251);
    await Deno.writeFile(`${dir}/f`, data);
    const [node, fh] = await open("f");
    for (const at of [900_000, 10, 500_000, 1_500_000, 7]) {
      same(await read(proxy, node, fh, at, 4096), data.subarray(at, at + 4096), `at ${at}`);
    }
    assert.equal(proxy.ahead.blocks, 0, "random reads fetch only what is asked");
    for (let at = 0; at < 4 * 65536; at += 65536) await read(proxy, node, fh, at, 65536);
    assert.ok(proxy.ahead.blocks > 0);
    const ahead = proxy.ahead;
    await landed("what was read ahead", () => ahead.settled === ahead.blocks);
    // Changed through the mount (a write on any handle of the file): read again.
    const patch = new Uint8Array(65536).fill(7);
    await proxy.write!(
      {
        header: header(node),
        fh,
        offset: BigInt(4 * 65536),
        writeFlags: 0,
        flags: 0,
        data: patch,
      } as unknown as Request<"WRITE">,
    );
    same(await read(proxy, node, fh, 4 * 65536, 65536), patch, "after the write");
    // Past the end: nothing, not an error.
    assert.equal((await read(proxy, node, fh, data.length, 65536)).length, 0);
  });
});

Deno.test("proxy: writes are answered at once, land in order, and a failure is told at the flush", async () => {
  await withProxy(async (proxy, dir, open) => {
    await Deno.writeFile(`${dir}/out.mp4`, new Uint8Array(0));
    const [node, fh] = await open("out.mp4");
    const write = (p: Proxied, fh: number, at: number, data: Uint8Array) =>
      p.write!(
        {
          header: header(node),
          fh,
          offset: BigInt(at),
          writeFlags: 0,
          flags: 0,
          data,
        } as unknown as Request<"WRITE">,
      ) as Promise<number>;
    const want = new Uint8Array(300 * 32768).map((_, i) => (i * 7) % 256);
    for (let at = 0; at < want.length; at += 32768) {
      // The request's buffer is the FUSE session's: it is used again for the next one.
      const buf = want.slice(at, at + 32768);
      assert.equal(await write(proxy, fh, at, buf), 32768);
      buf.fill(0);
    }
    assert.equal((proxy as unknown as ProxyFs).peer.callsByMethod["fs.writeBehind"], 300);
    // A read after the writes sees them (calls are handled in order there).
    same(await read(proxy, node, fh, 100_000, 5000), want.subarray(100_000, 105_000), "read back");
    await proxy.flush!({ header: header(node), fh, lockOwner: 0n } as unknown as Request<"FLUSH">);
    same(await Deno.readFile(`${dir}/out.mp4`), want, "the local file");
    const calls = (proxy as unknown as ProxyFs).peer.callsByMethod;
    assert.equal(calls["fs.flush"], undefined, "a flush waits for the writes, not a round trip");
    // A write that fails there (the handle is read-only): answered here, told at close.
    await Deno.writeTextFile(`${dir}/ro`, "x");
    const e = await proxy.lookup!(
      { header: header(1), name: "ro" } as unknown as Request<"LOOKUP">,
    );
    const ro = await proxy.open!(
      { header: header(e.nodeid), flags: 0, /* O_RDONLY */ openFlags: 0 } as unknown as Request<
        "OPEN"
      >,
    );
    assert.equal(await write(proxy, ro.fh, 0, new Uint8Array(10)), 10);
    await assert.rejects(
      proxy.flush!({ header: header(e.nodeid), fh: ro.fh, lockOwner: 0n } as unknown as Request<
        "FLUSH"
      >) as Promise<void>,
      (err: unknown) => err instanceof RpcError && err.errno === 9, // EBADF
    );
    assert.equal(proxy.late.length, 1, "told on stderr too (the agent's callback)");
    // Told once: the next flush is clean.
    await proxy.flush!({ header: header(e.nodeid), fh: ro.fh, lockOwner: 0n } as unknown as Request<
      "FLUSH"
    >);
  });
});

Deno.test("proxy: a file's lack of capabilities is asked once, until an xattr of it changes", async () => {
  await withProxy(async (proxy, dir, open) => {
    await Deno.writeTextFile(`${dir}/f`, "x");
    const [node] = await open("f");
    const ask = (name = "security.capability") =>
      proxy.getxattr!(
        { header: header(node), size: 0, name } as unknown as Request<"GETXATTR">,
      ) as Promise<Uint8Array>;
    const calls = () => (proxy as unknown as ProxyFs).peer.callsByMethod["fs.getxattr"] ?? 0;
    const isNoData = (e: unknown) => e instanceof RpcError && e.errno === 61;
    await assert.rejects(ask(), isNoData);
    const after = calls();
    for (let i = 0; i < 5; i++) await assert.rejects(ask(), isNoData);
    assert.equal(calls(), after, "answered here");
    await assert.rejects(ask("user.other"), isNoData);
    assert.equal(calls(), after + 1, "other names are asked each time");
    await setxattr(proxy, node, "user.x", new Uint8Array([1]));
    await assert.rejects(ask(), isNoData);
    assert.equal(calls(), after + 2, "asked again after a change");
  }, 0); // entries' xattr names not kept: each name is asked for
});

Deno.test("proxy: an entry's xattr names come with it: other names are not asked for while its attributes hold", async () => {
  await withProxy(async (proxy, dir, open) => {
    await Deno.writeTextFile(`${dir}/f`, "x");
    const [node] = await open("f"); // a LOOKUP: the names come with it
    const ask = (name: string) =>
      proxy.getxattr!(
        { header: header(node), size: 0, name } as unknown as Request<"GETXATTR">,
      ) as Promise<Uint8Array>;
    const list = () =>
      proxy.listxattr!({ header: header(node), size: 0 } as unknown as Request<"LISTXATTR">);
    const before = { ...(proxy as unknown as ProxyFs).peer.callsByMethod };
    const isNoData = (e: unknown) => e instanceof RpcError && e.errno === 61;
    await assert.rejects(ask("system.posix_acl_access"), isNoData);
    await assert.rejects(ask("security.selinux"), isNoData);
    assert.deepEqual(await list(), new Uint8Array(0));
    assert.deepEqual(callsSince(proxy, before), {}, "all answered here");
    // A name set through the mount: known no more, asked; then the next entry tells it.
    await setxattr(proxy, node, "user.x", new Uint8Array([7]));
    assert.deepEqual(await ask("user.x"), new Uint8Array([7]));
    assert.equal(callsSince(proxy, before)["fs.getxattr"], 1);
    await open("f");
    assert.deepEqual(await ask("user.x"), new Uint8Array([7]), "a name it has is asked for");
    await assert.rejects(ask("user.y"), isNoData);
    assert.equal(callsSince(proxy, before)["fs.getxattr"], 2, "only the one it has");
    assert.deepEqual(
      new TextDecoder().decode(await list() as Uint8Array),
      "user.x\0",
    );
    // Set here behind the mount's back: seen once the attributes' time is up (1 s here).
    const xattr = new Deno.Command("setfattr", { args: ["-n", "user.z", "-v", "1", `${dir}/f`] });
    assert.ok((await xattr.output()).success, "setfattr");
    await assert.rejects(ask("user.z"), isNoData, "within the second: as the entry said");
    await new Promise((r) => setTimeout(r, 1100));
    assert.deepEqual(await ask("user.z"), new TextEncoder().encode("1"));
  });
});

/** Sets extended attribute `name` of `node` through the proxy. */
function setxattr(p: Proxied, node: number, name: string, value: Uint8Array) {
  return p.setxattr!(
    { header: header(node), flags: 0, name, value } as unknown as Request<"SETXATTR">,
  );
}

/** Calls the proxy made, by method, since `before` (a snapshot of the same). */
function callsSince(p: Proxied, before: Record<string, number>): Record<string, number> {
  const now = (p as unknown as ProxyFs).peer.callsByMethod;
  return Object.fromEntries(
    Object.entries(now).map(([k, v]) => [k, v - (before[k] ?? 0)]).filter(([, v]) => v),
  );
}

function list(p: Proxied, fh: number, offset: bigint, plus: boolean, size = 4096) {
  const req = { header: header(1), fh, offset, size } as unknown as Request<"READDIRPLUS">;
  return (plus ? p.readdirplus!(req) : p.readdir!(req as unknown as Request<"READDIR">)) as Promise<
    DirEntry[]
  >;
}

/** Reads a directory handle to its end as the kernel does: plus first, then plain pages. */
async function readAll(p: Proxied, fh: number, from = 0n): Promise<DirEntry[][]> {
  const pages: DirEntry[][] = [];
  for (let offset = from, plus = true;; plus = false) {
    const page = await list(p, fh, offset, plus);
    if (!page.length) return pages;
    const bytes = page.reduce((n, e) => n + direntSize(e.name.length, plus), 0);
    assert.ok(bytes <= 4096, `a page fits the kernel's buffer (${bytes} bytes)`);
    pages.push(page);
    offset = page.at(-1)!.nextOffset;
  }
}

Deno.test("proxy: a directory comes with its opening; its pages and its end cost no more calls", async () => {
  await withProxy(async (proxy, dir, _open, loopback) => {
    for (let i = 0; i < 40; i++) await Deno.writeTextFile(`${dir}/f${i}`, "");
    const before = { ...(proxy as unknown as ProxyFs).peer.callsByMethod };
    const { fh } = await proxy.opendir!({ header: header(1) } as unknown as Request<"OPENDIR">);
    const pages = await readAll(proxy, fh);
    // The stat that follows a listing (the kernel dropped the atime): as at the opening.
    await proxy.getattr!({ header: header(1) } as unknown as Request<"GETATTR">);
    await proxy.releasedir!({ header: header(1), fh } as unknown as Request<"RELEASEDIR">);
    const names = pages.flat().map((e) => e.name).filter((n) => n !== "." && n !== "..");
    assert.deepEqual(names.sort(), [...Array(40)].map((_, i) => `f${i}`).sort());
    assert.ok(pages.length >= 2, "more than one page");
    assert.ok(pages[0].every((e) => e.entry), "the first page (READDIRPLUS) has lookups");
    assert.ok(pages[1].every((e) => !e.entry), "plain pages have none");
    assert.deepEqual(callsSince(proxy, before), { "fs.opendirAhead": 1, "fs.releasedirBehind": 1 });
    // The lookups given to the kernel stay (it forgets them later); the others went
    // (forgets are one-way: waited for as they land).
    const given = pages[0].filter((e) => e.entry?.nodeid).length;
    await landed("root + the first page's entries", () => loopback.nodes.size === 1 + given);
    for (const e of pages[0]) if (e.entry?.nodeid) proxy.forget!(e.entry.nodeid, 1);
    await landed("nothing left behind", () => loopback.nodes.size === 1);
  });
});

Deno.test("proxy: a large directory is fetched in batches; a rewind asks there; a handle let go early leaves no lookups", async () => {
  await withProxy(async (proxy, dir, _open, loopback) => {
    // More entries than LIST_FIRST holds.
    const n = Math.ceil(LIST_FIRST / direntSize(6, true)) + 300;
    for (let i = 0; i < n; i++) {
      await Deno.writeTextFile(`${dir}/${String(i).padStart(6, "0")}`, "");
    }
    const before = { ...(proxy as unknown as ProxyFs).peer.callsByMethod };
    const { fh } = await proxy.opendir!({ header: header(1) } as unknown as Request<"OPENDIR">);
    const pages = await readAll(proxy, fh);
    assert.equal(pages.flat().filter((e) => e.name !== "." && e.name !== "..").length, n);
    assert.deepEqual(callsSince(proxy, before), { "fs.opendirAhead": 1, "fs.readdirAhead": 1 });
    // Back to the start (rewinddir): asked there, the same names.
    const again = await list(proxy, fh, 0n, true);
    assert.deepEqual(again.map((e) => e.name), pages[0].map((e) => e.name));
    assert.equal(callsSince(proxy, before)["fs.readdirplus"], 1);
    for (const e of [...pages[0], ...again]) if (e.entry?.nodeid) proxy.forget!(e.entry.nodeid, 1);
    await proxy.releasedir!({ header: header(1), fh } as unknown as Request<"RELEASEDIR">);

    // Opened, one page read, let go: the entries fetched and not given are forgotten.
    const second = await proxy.opendir!({ header: header(1) } as unknown as Request<"OPENDIR">);
    const page = await list(proxy, second.fh, 0n, true);
    await proxy.releasedir!(
      { header: header(1), fh: second.fh } as unknown as Request<"RELEASEDIR">,
    );
    for (const e of page) if (e.entry?.nodeid) proxy.forget!(e.entry.nodeid, 1);
    await landed("only the root left", () => loopback.nodes.size === 1);
  });
});

Deno.test("proxy: a handle opened to read asks for no FLUSH; a RELEASE is not waited for", async () => {
  await withProxy(async (proxy, dir) => {
    await Deno.writeTextFile(`${dir}/f`, "x");
    const e = await proxy.lookup!({ header: header(1), name: "f" } as unknown as Request<"LOOKUP">);
    const open = (flags: number) =>
      proxy.open!(
        { header: header(e.nodeid), flags, openFlags: 0 } as unknown as Request<"OPEN">,
      ) as Promise<{ fh: number; openFlags?: number }>;
    const reading = await open(0); // O_RDONLY
    assert.ok((reading.openFlags ?? 0) & FOPEN.NOFLUSH, "read-only: no FLUSH at close");
    const writing = await open(2); // O_RDWR
    assert.equal((writing.openFlags ?? 0) & FOPEN.NOFLUSH, 0, "writable: flushed at close");
    // Its attributes came with it: the fstat after the opening is answered here.
    const opened = { ...(proxy as unknown as ProxyFs).peer.callsByMethod };
    const attr = await proxy.getattr!(
      { header: header(e.nodeid), fh: writing.fh } as unknown as Request<"GETATTR">,
    );
    assert.equal(attr.attr.size, 1n);
    assert.deepEqual(callsSince(proxy, opened), {});
    const before = { ...(proxy as unknown as ProxyFs).peer.callsByMethod };
    for (const { fh } of [reading, writing]) {
      await proxy.release!(
        { header: header(e.nodeid), fh, flags: 0, releaseFlags: 0 } as unknown as Request<
          "RELEASE"
        >,
      );
    }
    // Not waited for: the releases land after their calls returned.
    await landed(
      "both releases there",
      () => callsSince(proxy, before)["fs.releaseBehind"] === 2,
    );
    assert.deepEqual(callsSince(proxy, before), { "fs.releaseBehind": 2 });
  });
});

/** Reads `size` bytes of a file from its start, 128 KiB at a time, as the kernel would. */
async function readAllOf(p: Proxied, node: number, fh: number, size: number): Promise<Uint8Array> {
  const out = new Uint8Array(size);
  for (let at = 0; at < size;) {
    const got = await read(p, node, fh, at, 128 * 1024);
    if (!got.length) break;
    out.set(got, at);
    at += got.length;
  }
  return out;
}

Deno.test("proxy: bulk data that packs travels packed both ways; data that does not goes raw, tried less and less", async () => {
  for (const codec of ["zstd", "lz4"] as const) {
    await withProxy(
      async (proxy, dir, open) => {
        const peer = (proxy as unknown as ProxyFs).peer;
        const n = 4 * 1024 * 1024;
        // Text-like data: packs.
        const text = new TextEncoder().encode("outrun ".repeat(n / 7 + 1)).subarray(0, n);
        await Deno.writeFile(`${dir}/log`, text);
        let before = peer.stats.bytesIn;
        const [node, fh] = await open("log");
        same(await readAllOf(proxy, node, fh, n), text, "read back");
        assert.ok(
          peer.stats.bytesIn - before < n / 10,
          `${codec}: ${peer.stats.bytesIn - before} in`,
        );
        // Random data: raw, the same bytes.
        const noise = new Uint8Array(n);
        for (let i = 0; i < n; i += 65536) crypto.getRandomValues(noise.subarray(i, i + 65536));
        await Deno.writeFile(`${dir}/noise`, noise);
        before = peer.stats.bytesIn;
        const triesBefore = tries.count;
        const [node2, fh2] = await open("noise");
        same(await readAllOf(proxy, node2, fh2, n), noise, "random read back");
        assert.ok(peer.stats.bytesIn - before < n * 1.01, "no worse than raw");
        const blocks = n / AHEAD_BLOCK;
        assert.ok(tries.count - triesBefore <= blocks / 2, `${tries.count - triesBefore} tries`);
        // Writes: zeros written behind cross packed and land whole.
        const outBefore = peer.stats.bytesOut;
        await Deno.writeFile(`${dir}/out`, new Uint8Array(0));
        const [node3, fh3] = await open("out");
        const zeros = new Uint8Array(128 * 1024);
        for (let at = 0; at < n; at += zeros.length) {
          await proxy.write!({
            header: header(node3),
            fh: fh3,
            offset: BigInt(at),
            data: zeros,
            writeFlags: 0,
            flags: 0,
          } as unknown as Request<"WRITE">);
        }
        await proxy.flush!({ header: header(node3), fh: fh3 } as unknown as Request<"FLUSH">);
        assert.ok(
          peer.stats.bytesOut - outBefore < n / 10,
          `${codec}: ${peer.stats.bytesOut - outBefore} out`,
        );
        same(await Deno.readFile(`${dir}/out`), new Uint8Array(n), "written");
      },
      1,
      counted(bulkCodec(codec)),
    );
  }
});

/** Packing attempts, counted. */
const tries = { count: 0 };
function counted(codec: BulkCodec): BulkCodec {
  return {
    pack: (data) => {
      tries.count++;
      return codec.pack(data);
    },
    unpack: (p) => codec.unpack(p),
  };
}

Deno.test("proxy: what CREATE and MKDIR make comes with its xattr names: the kernel's capability check before a first write is answered here", async () => {
  await withProxy(async (proxy) => {
    const before = { ...(proxy as unknown as ProxyFs).peer.callsByMethod };
    const made = await proxy.create!(
      {
        header: header(1),
        name: "new",
        flags: 0o1 | 0o100, // O_WRONLY | O_CREAT
        mode: 0o100644,
        umask: 0o022,
        openFlags: 0,
      } as unknown as Request<"CREATE">,
    );
    const dir = await proxy.mkdir!(
      { header: header(1), name: "sub", mode: 0o755, umask: 0o022 } as unknown as Request<"MKDIR">,
    );
    const isNoData = (e: unknown) => e instanceof RpcError && e.errno === 61;
    for (const node of [made.entry.nodeid, dir.nodeid]) {
      await assert.rejects(
        proxy.getxattr!(
          { header: header(node), size: 0, name: "security.capability" } as unknown as Request<
            "GETXATTR"
          >,
        ) as Promise<unknown>,
        isNoData,
      );
    }
    assert.equal(callsSince(proxy, before)["fs.getxattr"], undefined, "answered here");
    assert.ok(!("xattrs" in made.entry) && !("xattrs" in dir), "the names do not reach the kernel");
  });
});

Deno.test("proxy: attributes told are answered again while they hold, until they change through the mount", async () => {
  await withProxy(async (proxy, dir, open) => {
    await Deno.writeTextFile(`${dir}/f`, "abc");
    const [node, fh] = await open("f"); // a LOOKUP: its entry has the attributes
    const getattr = (n = node) =>
      proxy.getattr!({ header: header(n), getattrFlags: 0, fh: 0 } as unknown as Request<
        "GETATTR"
      >) as Promise<{ attr: { size: bigint }; attrTimeout: number }>;
    const asked = () => (proxy as unknown as ProxyFs).peer.callsByMethod["fs.getattr"] ?? 0;
    const before = asked();
    const a = await getattr();
    assert.equal(a.attr.size, 3n);
    assert.ok(a.attrTimeout > 0 && a.attrTimeout <= 1, "for what is left of the second");
    await read(proxy, node, fh, 0, 3); // the kernel asks again after a read (atime)
    await getattr();
    assert.equal(asked(), before, "answered here");
    // A write through the mount: the size it made is answered here while the handle
    // writes (the kernel asks before each read past the size it knew)...
    await proxy.write!({
      header: header(node),
      fh,
      offset: 3n,
      data: new TextEncoder().encode("de"),
      writeFlags: 0,
      flags: 0,
    } as unknown as Request<"WRITE">);
    assert.equal((await getattr()).attr.size, 5n);
    assert.equal(asked(), before, "the size the write made, answered here");
    // ...and asked there once it is closed (the times are the local side's).
    await proxy.flush!({ header: header(node), fh, lockOwner: 0n } as unknown as Request<"FLUSH">);
    assert.equal((await getattr()).attr.size, 5n);
    assert.equal(asked(), before + 1);
    // Changed here behind the mount's back: seen once the second is over.
    await Deno.writeTextFile(`${dir}/f`, "abcdefgh");
    assert.equal((await getattr()).attr.size, 5n, "within the second: as told");
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await getattr()).attr.size, 8n);
    // An answer asked for before a change is not kept past it.
    const inFlight = getattr();
    await proxy.setattr!({
      header: header(node),
      valid: 1 << 3, // FATTR_SIZE
      size: 2n,
      fh: 0,
      lockOwner: 0n,
      atime: 0n,
      mtime: 0n,
      ctime: 0n,
      atimeNsec: 0,
      mtimeNsec: 0,
      ctimeNsec: 0,
      mode: 0,
      uid: 0,
      gid: 0,
    } as unknown as Request<"SETATTR">);
    await inFlight;
    assert.equal((await getattr()).attr.size, 2n, "the size after the truncate");
  });
});

Deno.test("proxy: a regular file opened to read comes with its first bytes; reads within them cost no call", async () => {
  await withProxy(async (proxy, dir) => {
    const openRead = async (name: string, flags = 0) => {
      const e = await proxy.lookup!({ header: header(1), name } as unknown as Request<"LOOKUP">);
      const o = await proxy.open!(
        { header: header(e.nodeid), flags, openFlags: 0 } as unknown as Request<"OPEN">,
      );
      return [e.nodeid, o.fh] as const;
    };
    const calls = () => {
      const c = (proxy as unknown as ProxyFs).peer.callsByMethod;
      return (c["fs.read"] ?? 0) + (c["fs.readAhead"] ?? 0);
    };
    // A small file: all of it.
    await Deno.writeTextFile(`${dir}/s.py`, "print(42)\n");
    const [small, fh] = await openRead("s.py");
    let before = calls();
    assert.equal(new TextDecoder().decode(await read(proxy, small, fh, 0, 4096)), "print(42)\n");
    assert.equal((await read(proxy, small, fh, 10, 4096)).length, 0, "its end");
    assert.equal(calls(), before, "no read crossed");
    // Its attributes came too (the kernel asks for them after the open, for fstat).
    const getattrs = (proxy as unknown as ProxyFs).peer.callsByMethod["fs.getattr"] ?? 0;
    await proxy.getattr!({ header: header(small) } as unknown as Request<"GETATTR">);
    assert.equal((proxy as unknown as ProxyFs).peer.callsByMethod["fs.getattr"] ?? 0, getattrs);
    // A large one: its head here, the rest asked for; the bytes as in the file.
    const big = new Uint8Array(OPEN_AHEAD * 3 + 100);
    for (let i = 0; i < big.length; i += 65536) {
      crypto.getRandomValues(big.subarray(i, Math.min(i + 65536, big.length)));
    }
    await Deno.writeFile(`${dir}/big`, big);
    const [node, fh2] = await openRead("big");
    before = calls();
    same(await read(proxy, node, fh2, 0, 65536), big.subarray(0, 65536), "head");
    same(await read(proxy, node, fh2, 65536, 65536), big.subarray(65536, 131072), "head");
    assert.equal(calls(), before, "the head answered here");
    const out = new Uint8Array(big.length);
    for (let at = 0; at < big.length; at += 65536) {
      out.set(await read(proxy, node, fh2, at, 65536), at);
    }
    same(out, big, "the whole file");
    assert.ok(calls() > before, "the rest crossed");
    // A device (or a FIFO) is not read at its opening: that would take its data, or wait.
    const mknod = await new Deno.Command("mknod", { args: [`${dir}/zero`, "c", "1", "5"] })
      .output();
    assert.ok(mknod.success, "mknod (the tests run as root)");
    const inBefore = (proxy as unknown as ProxyFs).peer.stats.bytesIn;
    await openRead("zero");
    const came = (proxy as unknown as ProxyFs).peer.stats.bytesIn - inBefore;
    assert.ok(came < 4096, `${came} bytes came with a device's opening`);
  });
});

Deno.test("proxy: a name made through the mount is removed without waiting; one that was there waits; a late failure is told", async () => {
  await withProxy(async (proxy, dir) => {
    const calls = () => ({ ...(proxy as unknown as ProxyFs).peer.callsByMethod });
    const create = (name: string) =>
      proxy.create!(
        {
          header: header(1),
          name,
          flags: 0o1 | 0o100, // O_WRONLY | O_CREAT
          mode: 0o100644,
          umask: 0o022,
          openFlags: 0,
        } as unknown as Request<"CREATE">,
      ) as Promise<{ entry: { nodeid: number }; open: { fh: number } }>;
    const unlink = (name: string) =>
      proxy.unlink!({ header: header(1), name } as unknown as Request<"UNLINK">) as Promise<void>;
    const exists = (name: string) => {
      try {
        Deno.statSync(`${dir}/${name}`);
        return true;
      } catch {
        return false;
      }
    };
    await create("cc1.s");
    const before = calls();
    await unlink("cc1.s");
    assert.equal(calls()["fs.unlink"], before["fs.unlink"], "not waited for");
    assert.equal(calls()["fs.unlinkBehind"], (before["fs.unlinkBehind"] ?? 0) + 1);
    await landed("cc1.s removed here", () => !exists("cc1.s"));
    // A name that was there before (not made through the mount) waits for its answer.
    await Deno.writeTextFile(`${dir}/old`, "x");
    await unlink("old");
    assert.equal(calls()["fs.unlink"], (before["fs.unlink"] ?? 0) + 1);
    assert.equal(exists("old"), false);
    // Made, moved, removed: its new name goes unwaited too; the old one is not "made".
    await create("a.tmp");
    await proxy.rename!(
      {
        header: header(1),
        name: "a.tmp",
        newdir: 1,
        newName: "a.o",
        flags: 0,
      } as unknown as Request<"RENAME">,
    );
    await unlink("a.o");
    assert.equal(calls()["fs.unlink"], (before["fs.unlink"] ?? 0) + 1, "a.o went unwaited");
    await landed("a.o removed here", () => !exists("a.o"));
    // Removed here behind the mount's back first: the removal there fails late, and is told.
    await create("gone");
    await Deno.remove(`${dir}/gone`);
    await unlink("gone");
    await landed("the late failure told", () => proxy.late.length === 1);
    assert.match(proxy.late[0].message, /ENOENT|No such file/);
  });
});

Deno.test("proxy: a name made, removed or moved drops the attributes of what it changes, and no others", async () => {
  await withProxy(async (proxy, dir) => {
    for (const name of ["a", "b", "c"]) await Deno.writeTextFile(`${dir}/${name}`, name);
    const lookup = async (name: string) =>
      (await proxy.lookup!({ header: header(1), name } as unknown as Request<"LOOKUP">)).nodeid;
    const [a, b, c] = [await lookup("a"), await lookup("b"), await lookup("c")];
    assert.equal(await lookup("b2"), 0); // the kernel looks a rename's target up first
    const getattr = (n: number) =>
      proxy.getattr!({ header: header(n), getattrFlags: 0, fh: 0 } as unknown as Request<
        "GETATTR"
      >) as Promise<{ attr: { nlink: number } }>;
    const asked = () => (proxy as unknown as ProxyFs).peer.callsByMethod["fs.getattr"] ?? 0;
    const before = asked();
    await proxy.unlink!({ header: header(1), name: "c" } as unknown as Request<"UNLINK">);
    await proxy.rename!(
      { header: header(1), name: "b", newdir: 1, newName: "b2", flags: 0 } as unknown as Request<
        "RENAME"
      >,
    );
    await getattr(a); // untouched
    await getattr(1); // the directory: its attributes came with each answer
    assert.equal(asked(), before, "answered here");
    await getattr(b); // moved: its ctime changed there
    assert.equal(asked(), before + 1);
    // A hard link: its answer is the linked node's entry, with its new link count.
    await proxy.link!(
      { header: header(1), oldNodeid: a, newName: "a2" } as unknown as Request<"LINK">,
    );
    assert.equal((await getattr(a)).attr.nlink, 2);
    assert.equal(asked(), before + 1);
    // An answer in flight while another node changes is kept (another compile job's).
    await Deno.writeTextFile(`${dir}/d`, "d");
    const d = lookup("d");
    await proxy.unlink!({ header: header(1), name: "a2" } as unknown as Request<"UNLINK">);
    await getattr(await d);
    assert.equal(asked(), before + 1, "d's attributes, as its lookup told them");
    void c;
  });
});

Deno.test("proxy: in a watched directory a name known absent is answered here, until a change there is told", async () => {
  await withProxy(async (proxy, dir) => {
    await Deno.mkdir(`${dir}/sub`);
    await Deno.writeTextFile(`${dir}/sub/x`, "x");
    const lookup = async (parent: number, name: string) =>
      (await proxy.lookup!({ header: header(parent), name } as unknown as Request<"LOOKUP">))
        .nodeid;
    const asked = () => (proxy as unknown as ProxyFs).peer.callsByMethod["fs.lookup"] ?? 0;
    const sub = await lookup(1, "sub"); // its attributes told for 60 s: watched there
    assert.ok(await lookup(sub, "x"));
    await proxy.unlink!({ header: header(sub), name: "x" } as unknown as Request<"UNLINK">);
    const before = asked();
    assert.equal(await lookup(sub, "x"), 0, "removed through the mount");
    assert.equal(asked(), before, "answered here");
    assert.equal(await lookup(sub, "y"), 0);
    assert.equal(await lookup(sub, "y"), 0);
    assert.equal(asked(), before + 1, "asked once");
    // Made here by someone else: the local side tells, and the name is asked again.
    await Deno.writeTextFile(`${dir}/sub/y`, "y");
    (proxy as unknown as ProxyFs).changed([{ parent: sub, name: "y", node: null }]);
    assert.ok(await lookup(sub, "y"));
    assert.equal(asked(), before + 2);
  }, 60);
});

Deno.test("proxy: a small file opened to read again while watched is answered here, until it changes", async () => {
  await withProxy(async (proxy, dir) => {
    await Deno.writeTextFile(`${dir}/common.h`, "#define A 1\n");
    const fs = proxy as unknown as ProxyFs;
    const node = (await proxy.lookup!({ header: header(1), name: "common.h" } as unknown as Request<
      "LOOKUP"
    >)).nodeid;
    const open = async () => {
      const o = await proxy.open!(
        { header: header(node), flags: 0, openFlags: 0 } as unknown as Request<"OPEN">,
      );
      const data = new TextDecoder().decode(await read(proxy, node, o.fh, 0, 4096));
      await proxy.release!(
        {
          header: header(node),
          fh: o.fh,
          flags: 0,
          releaseFlags: 0,
          lockOwner: 0n,
        } as unknown as Request<"RELEASE">,
      );
      return { data, flags: o.openFlags ?? 0 };
    };
    const asked = () => fs.peer.callsByMethod["fs.openAhead"] ?? 0;
    assert.equal((await open()).data, "#define A 1\n");
    const before = asked();
    const again = await open();
    assert.equal(again.data, "#define A 1\n");
    assert.equal(asked(), before, "answered here");
    assert.ok(again.flags & FOPEN.KEEP_CACHE, "the kernel keeps its pages");
    assert.equal(fs.keptOpens, 1);
    // Changed here: the local side tells; the next opening asks there.
    await Deno.writeTextFile(`${dir}/common.h`, "#define A 22\n");
    fs.changed([{ parent: null, name: "", node }]);
    assert.equal((await open()).data, "#define A 22\n");
    assert.equal(asked(), before + 1);
    // Changed through the mount: the same.
    await open();
    assert.equal(asked(), before + 1, "kept again");
    await proxy.setattr!({
      header: header(node),
      valid: 1 << 3, // FATTR_SIZE
      size: 3n,
      fh: 0,
    } as unknown as Request<"SETATTR">);
    assert.equal((await open()).data, "#de");
    assert.equal(asked(), before + 2);
  }, 60);
});

Deno.test("proxy: at the second name found absent in a watched directory its names are listed; others are then answered here", async () => {
  await withProxy(async (proxy, dir) => {
    await Deno.mkdir(`${dir}/src`);
    await Deno.writeTextFile(`${dir}/src/u0.c`, "int x;\n");
    const fs = proxy as unknown as ProxyFs;
    const lookup = async (parent: number, name: string) =>
      (await proxy.lookup!({ header: header(parent), name } as unknown as Request<"LOOKUP">))
        .nodeid;
    const asked = () => fs.peer.callsByMethod["fs.lookup"] ?? 0;
    const src = await lookup(1, "src");
    assert.equal(await lookup(src, "u0.c.gch"), 0);
    assert.equal(fs.peer.callsByMethod["fs.names"], undefined, "not at the first");
    assert.equal(await lookup(src, "u1.c.gch"), 0);
    await landed("the names listed", () => fs.listings === 1);
    assert.equal(fs.peer.callsByMethod["fs.names"], 1);
    const before = asked();
    assert.equal(await lookup(src, "u2.c.gch"), 0);
    assert.equal(asked(), before, "answered here");
    assert.ok(await lookup(src, "u0.c"), "a listed name is asked for");
    assert.equal(asked(), before + 1);
    // Made here by someone else, and told: asked for again.
    await Deno.writeTextFile(`${dir}/src/u2.c.gch`, "");
    fs.changed([{ parent: src, name: "u2.c.gch", node: null }]);
    assert.ok(await lookup(src, "u2.c.gch"));
    assert.equal(asked(), before + 2);
  }, 60);
});
