/**
 * ProxyFs's read-ahead: a real directory served by LoopbackFs over a real RPC
 * connection, each answer 5 ms late; the reads are the kernel's, as it asks them.
 */
import assert from "node:assert/strict";
import { delayedFilesystem, type DelayStats } from "../../lib/fs/delayed.ts";
import { LoopbackFs } from "../../lib/fs/loopback.ts";
import { AHEAD_BLOCK, ProxyFs, serveFilesystem } from "../../lib/fs/proxy.ts";
import type { Filesystem, Request } from "../../lib/fuse/mod.ts";
import { RpcError, RpcPeer } from "../../lib/rpc/mod.ts";
import { pipePair } from "../rpc/pipe.ts";

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
  ) => Promise<void>,
) {
  const dir = await Deno.makeTempDir({ prefix: "outrun-proxy-" });
  const [a, b] = pipePair();
  const local = new RpcPeer(a, { program: "local" });
  const remote = new RpcPeer(b, { program: "remote" });
  const delayed = delayedFilesystem(new LoopbackFs({ root: dir }), 5);
  serveFilesystem(local, delayed.fs);
  const late: Error[] = [];
  const proxy = Object.assign(new ProxyFs(remote, (e) => late.push(e)), {
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
    await body(proxy, dir, open);
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
    await new Promise((r) => setTimeout(r, 50)); // what was read ahead is here by now
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
    await proxy.setxattr!(
      {
        header: header(node),
        flags: 0,
        name: "user.x",
        value: new Uint8Array([1]),
      } as unknown as Request<"SETXATTR">,
    );
    await assert.rejects(ask(), isNoData);
    assert.equal(calls(), after + 2, "asked again after a change");
  });
});
