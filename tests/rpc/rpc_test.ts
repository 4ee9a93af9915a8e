import assert from "node:assert/strict";
import {
  CodecError,
  decodeValue,
  encodeValue,
  LazyBytes,
  type Value,
  VIEW_BYTES,
} from "../../lib/rpc/codec.ts";
import { RpcClosed, RpcError, RpcPeer } from "../../lib/rpc/peer.ts";
import { pipePair } from "./pipe.ts";

Deno.test("codec: round trips every kind of value", () => {
  const values: Value[] = [
    null,
    undefined,
    true,
    false,
    0,
    -1,
    2 ** 31,
    -(2 ** 31),
    1.5,
    Number.MAX_SAFE_INTEGER,
    -(2n ** 63n),
    2n ** 63n - 1n,
    "",
    "héllo \u0000 wörld",
    new Uint8Array([0, 1, 255]),
    [],
    [1, [2, [3]]],
    { a: 1, b: { c: [new Uint8Array(3), "x"] }, "": null },
  ];
  for (const v of values) assert.deepEqual(decodeValue(encodeValue(v)), v);
});

Deno.test("codec: large values, sized before they are written", () => {
  const big = new Uint8Array(1000).map((_, i) => i & 0xff);
  const attr = Object.fromEntries(
    Array.from({ length: 40 }, (_, i) => [`field${i}`, BigInt(i) << 40n]),
  );
  for (const v of [big, { data: big }, [1, "x".repeat(300)], attr, { entry: { attr } }]) {
    assert.deepEqual(decodeValue(encodeValue(v as Value)), v);
  }
});

Deno.test("codec: large byte arrays decode as views of the buffer, small ones as copies", () => {
  const big = new Uint8Array(VIEW_BYTES).fill(9);
  const small = new Uint8Array(VIEW_BYTES - 1).fill(8);
  const bytes = encodeValue({ big, small });
  const v = decodeValue(bytes) as { big: Uint8Array; small: Uint8Array };
  assert.deepEqual(v, { big, small });
  assert.equal(v.big.buffer, bytes.buffer, "no copy of a large array");
  assert.notEqual(v.small.buffer, bytes.buffer, "a small one does not hold the frame");
  bytes.fill(0);
  assert.equal(v.big[0], 0);
  assert.equal(v.small[0], 8);
});

Deno.test("codec: lazy bytes are read into the frame as it is written, and decode as bytes", () => {
  class Counting extends LazyBytes {
    reads = 0;
    constructor(readonly length: number) {
      super();
    }
    readInto(dst: Uint8Array) {
      this.reads++;
      assert.equal(dst.length, this.length);
      for (let i = 0; i < dst.length; i++) dst[i] = i & 0xff;
    }
  }
  const lazy = new Counting(5000);
  const bytes = encodeValue({ a: 1, data: lazy, b: "x" });
  assert.equal(lazy.reads, 1);
  assert.deepEqual(decodeValue(bytes), {
    a: 1,
    data: new Uint8Array(5000).map((_, i) => i & 0xff),
    b: "x",
  });
});

Deno.test("codec: strings short and long, ASCII or not, and broken UTF-8 still refused", () => {
  for (const text of ["", "usr", "x".repeat(128), "y".repeat(129), "café", "日本".repeat(50)]) {
    assert.equal(decodeValue(encodeValue(text)), text);
    assert.deepEqual(decodeValue(encodeValue({ [text]: text })), { [text]: text });
  }
  const bytes = encodeValue("ab");
  bytes.set([0xc3, 0x28], 5); // a 2-byte sequence cut short
  assert.throws(() => decodeValue(bytes), TypeError);
});

Deno.test("codec property: random values round trip, random bytes never crash", () => {
  let seed = 3;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;
  const gen = (depth: number): Value => {
    switch (rand(depth > 3 ? 6 : 8)) {
      case 0:
        return null;
      case 1:
        return rand(2) === 0;
      case 2:
        return rand(1 << 30) - (1 << 29);
      case 3:
        return BigInt(rand(1 << 30)) << 20n;
      case 4:
        // ASCII, two- and three-byte characters, pairs (emoji) and lone surrogates.
        return String.fromCharCode(
          ...Array.from(
            { length: rand(10) },
            () =>
              [32 + rand(95), 128 + rand(2000), 0xd800 + rand(0x800), 0xe000 + rand(0x1fff)][
                rand(4)
              ],
          ),
        ) + (rand(3) ? "" : "\u{1F600}");
      case 5:
        // Sometimes a few kilobytes, sometimes a few bytes.
        return new Uint8Array(
          Array.from({ length: rand(3) ? rand(20) : rand(3000) }, () => rand(256)),
        );
      case 6:
        return Array.from({ length: rand(5) }, () => gen(depth + 1));
      default:
        return Object.fromEntries(
          Array.from({ length: rand(5) }, (_, i) => [`k${i}`, gen(depth + 1)]),
        );
    }
  };
  // What TextEncoder makes of a string (lone surrogates become U+FFFD).
  const utf8 = (v: Value): Value =>
    typeof v === "string"
      ? new TextDecoder().decode(new TextEncoder().encode(v))
      : Array.isArray(v)
      ? v.map(utf8)
      : v && typeof v === "object" && !(v instanceof Uint8Array)
      ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, utf8(x)]))
      : v;
  for (let i = 0; i < 2000; i++) {
    const v = gen(0);
    assert.deepEqual(decodeValue(encodeValue(v)), utf8(v));
    // Room for a frame's header in front, the value right after it, nothing more.
    const framed = encodeValue(v, 9);
    assert.deepEqual(framed.subarray(9), encodeValue(v));
  }
  for (let i = 0; i < 5000; i++) {
    const bytes = new Uint8Array(Array.from({ length: rand(40) }, () => rand(12)));
    try {
      decodeValue(bytes);
    } catch (e) {
      assert.ok(e instanceof CodecError || e instanceof TypeError, String(e));
    }
  }
});

Deno.test("rpc: calls both ways, many in flight, errors keep their errno, events", async () => {
  const [x, y] = pipePair();
  const a = new RpcPeer(x, { program: "a" });
  const b = new RpcPeer(y, { program: "b" });
  b.handle("add", (args) => {
    const [p, q] = args as number[];
    return p + q;
  });
  b.handle("slow", async (args) => {
    await new Promise((r) => setTimeout(r, (args as number) * 2));
    return args;
  });
  b.handle("fail", () => {
    throw Object.assign(new Error("no such file"), { errno: 2 });
  });
  a.handle("ping", () => "pong");
  assert.equal(await a.call("add", [2, 3]), 5);
  assert.equal(await b.call("ping", null), "pong");
  // Later calls answer first: replies are matched by id, not by order.
  const order: number[] = [];
  await Promise.all([5, 1, 3].map(async (n) => order.push(await a.call("slow", n) as number)));
  assert.deepEqual(order, [1, 3, 5]);
  await assert.rejects(a.call("fail", null), (e) => e instanceof RpcError && e.code === "ENOENT");
  await assert.rejects(a.call("nope", null), (e) => e instanceof RpcError && e.code === "ENOSYS");
  const got: Value[] = [];
  b.onEvent("out", (v) => got.push(v));
  a.event("out", new Uint8Array([1, 2]));
  assert.equal(await a.call("add", [0, 0]), 0); // events and calls keep their order
  assert.deepEqual(got, [new Uint8Array([1, 2])]);
  assert.equal((await a.remoteHello).program, "b");
  await a.close();
  await b.closed;
  await assert.rejects(b.call("ping", null), RpcClosed);
});

Deno.test("rpc: a version mismatch fails clearly on both sides", async () => {
  const [x, y] = pipePair();
  const a = new RpcPeer(x, { program: "outrun 0.1.0" });
  // A fake old peer: writes a HELLO with version 0.
  const writer = y.writable.getWriter();
  const body = encodeValue({ protocol: "outrun-rpc", version: 0, program: "outrun 0.0.1" });
  const frame = new Uint8Array(9 + body.length);
  new DataView(frame.buffer).setUint32(0, 5 + body.length, true);
  frame[4] = 1;
  frame.set(body, 9);
  await writer.write(frame);
  await assert.rejects(a.call("x", null), /protocol mismatch.*outrun-rpc v1.*outrun-rpc v0/);
  const reason = await a.closed;
  assert.match(String(reason), /protocol mismatch/);
  await writer.close().catch(() => {});
  await y.readable.cancel().catch(() => {});
});

Deno.test("rpc: a cut stream fails pending calls instead of hanging", async () => {
  const [x, y] = pipePair();
  const a = new RpcPeer(x, { program: "a" });
  const b = new RpcPeer(y, { program: "b" });
  b.handle("never", () => new Promise(() => {}));
  const pending = a.call("never", null);
  await a.remoteHello;
  await b.close();
  await assert.rejects(pending, RpcClosed);
  await a.close();
});

Deno.test("rpc property: frames cut anywhere and glued together arrive whole", async () => {
  // Bytes from each side reach the other in pieces of random sizes: one byte, a few,
  // several frames at once; a large value arrives in many reads.
  let seed = 7;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const rechunk = () => {
    let pending: number[] = [];
    return new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, c) {
        pending.push(...chunk);
        while (pending.length > 0 && rand(3) !== 0) {
          const n = 1 + rand(rand(2) ? 9 : 70_000);
          c.enqueue(new Uint8Array(pending.slice(0, n)));
          pending = pending.slice(n);
        }
      },
      flush(c) {
        if (pending.length) c.enqueue(new Uint8Array(pending));
      },
    });
  };
  const ab = rechunk();
  const ba = rechunk();
  const a = new RpcPeer({ readable: ba.readable, writable: ab.writable }, { program: "a" });
  const b = new RpcPeer({ readable: ab.readable, writable: ba.writable }, { program: "b" });
  b.handle("echo", (v) => v);
  const values: Value[] = [];
  for (let i = 0; i < 40; i++) {
    values.push(
      i % 5 === 0 ? new Uint8Array(50_000 + i).fill(i) : { i, text: "x".repeat(rand(300)) },
    );
  }
  const results = await Promise.all(values.map((v) => a.call("echo", v)));
  assert.deepEqual(results, values);
  await a.close();
  await b.close();
});

/** One way of a byte stream (as stdin is): what is written arrives in pieces of random sizes. */
function bytePipe(rand: (n: number) => number) {
  const t = new TransformStream<Uint8Array, Uint8Array>();
  const from = t.readable.getReader();
  let pending: Uint8Array = new Uint8Array(0);
  const readable = new ReadableStream({
    type: "bytes",
    async pull(c: ReadableByteStreamController) {
      while (!pending.length) {
        const { value, done } = await from.read();
        if (done) {
          c.close();
          c.byobRequest?.respond(0);
          return;
        }
        pending = value;
      }
      const n = Math.min(pending.length, 1 + rand(rand(2) ? 9 : 300_000));
      c.enqueue(pending.slice(0, n));
      pending = pending.subarray(n);
    },
  }) as ReadableStream<Uint8Array>;
  return { readable, writable: t.writable };
}

Deno.test("rpc property: over a byte stream, frames are cut out of one buffer; only transient events get views of it", async () => {
  let seed = 11;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const ab = bytePipe(rand);
  const ba = bytePipe(rand);
  const a = new RpcPeer({ readable: ba.readable, writable: ab.writable }, { program: "a" });
  const b = new RpcPeer({ readable: ab.readable, writable: ba.writable }, { program: "b" });
  b.handle("echo", (v) => v);
  const kept: Uint8Array[] = [];
  const seen: number[] = [];
  let views = 0;
  b.onEvent("keep", (v) => kept.push(v as Uint8Array));
  b.onEvent("look", (v) => {
    const bytes = v as Uint8Array;
    // What a transient handler sees is right while it runs (and is not its own copy
    // when large).
    assert.ok(bytes.every((x) => x === bytes[0]));
    seen.push(bytes.length);
    if (bytes.byteLength < bytes.buffer.byteLength) views++;
  }, { transient: true });
  const values: Value[] = [];
  for (let i = 0; i < 40; i++) {
    // Larger than the first read buffer too: it grows to fit a frame.
    const size = i === 17 ? 3_000_000 : i % 5 === 0 ? 50_000 + i : 0;
    values.push(size ? new Uint8Array(size).fill(i) : { i, text: "x".repeat(rand(300)) });
    a.event("keep", new Uint8Array(10_000 + i).fill(i));
    a.event("look", new Uint8Array(20_000 + i).fill(i));
  }
  const results = await Promise.all(values.map((v) => a.call("echo", v)));
  assert.deepEqual(results, values);
  // Events kept by a handler that is not transient are copies: intact after later reads.
  assert.deepEqual(kept, Array.from({ length: 40 }, (_, i) => new Uint8Array(10_000 + i).fill(i)));
  assert.deepEqual(seen, Array.from({ length: 40 }, (_, i) => 20_000 + i));
  assert.ok(views > 0, "transient events' bytes are views of the read buffer");
  await a.close();
  await b.close();
});

Deno.test("rpc: large frames go out in buffers used again, each only once its write resolved", async () => {
  // A writable that takes each chunk late (as ssh2 does when the window is shut) and
  // copies it only then: a buffer used again too early would be seen here.
  const t = new TransformStream<Uint8Array, Uint8Array>();
  const into = t.writable.getWriter();
  const late = new WritableStream<Uint8Array>({
    async write(chunk) {
      await new Promise((r) => setTimeout(r, 1));
      await into.write(chunk.slice());
    },
  });
  const back = new TransformStream<Uint8Array, Uint8Array>();
  const a = new RpcPeer(
    { readable: back.readable, writable: late, reusable: true },
    { program: "a" },
  );
  const b = new RpcPeer({ readable: t.readable, writable: back.writable }, { program: "b" });
  const got: Uint8Array[] = [];
  b.onEvent("big", (v) => got.push(v as Uint8Array));
  const sizes = [300_000, 1_000_000, 2_500_000, 300_000, 700_000, 1_500_000, 260_000, 3_000_000];
  sizes.forEach((n, i) => a.event("big", new Uint8Array(n).fill(i + 1)));
  await a.drained(0);
  await b.call("ping", null).catch(() => {}); // a round trip: every event is in
  assert.deepEqual(got.map((g) => g.length), sizes);
  got.forEach((g, i) => assert.ok(g.every((x) => x === i + 1), `event ${i} intact`));
  await a.close();
  await b.close();
});

Deno.test("rpc: drained() waits while the transport holds back more than the limit", async () => {
  // A transport that takes each write only when told to, like a channel with no window.
  const release: (() => void)[] = [];
  const writable = new WritableStream<Uint8Array>({
    write: () => new Promise<void>((resolve) => release.push(resolve)),
  });
  const peer = new RpcPeer(
    { readable: new ReadableStream(), writable },
    { program: "test" },
  );
  // The HELLO went first: let it through.
  await new Promise((r) => setTimeout(r, 0));
  while (release.length) release.shift()!();
  await peer.drained(0);
  const limit = 100_000;
  for (let i = 0; i < 4; i++) peer.event("x", new Uint8Array(60_000));
  let drained = false;
  const waiting = peer.drained(limit).then(() => (drained = true));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(drained, false, "240 kB wait, more than 100 kB");
  // Each write taken lets the next one in; below the limit the waiter goes on.
  for (let i = 0; i < 2 && !drained; i++) {
    await new Promise((r) => setTimeout(r, 10));
    release.shift()?.();
  }
  await new Promise((r) => setTimeout(r, 10));
  release.shift()?.();
  await waiting;
  assert.equal(drained, true);
  const soon = new Promise((r) => setTimeout(() => r("later"), 50));
  assert.equal(await Promise.race([peer.drained(limit).then(() => "now"), soon]), "now");
  // A closed connection never keeps a producer waiting.
  for (let i = 0; i < 4; i++) peer.event("x", new Uint8Array(60_000));
  const stuck = peer.drained(0);
  await peer.close();
  await stuck;
});
