/** libzstd through FFI: the same bytes as node:zlib's zstd, into the caller's buffer. */
import assert from "node:assert/strict";
import * as zlib from "node:zlib";
import { zstdCompress, zstdDecompressInto } from "../../lib/sys/zstd.ts";
import { decompressInto, maybeCompress } from "../../lib/fs/cache/chunks.ts";

const zstd = zlib as unknown as {
  zstdCompressSync(b: Uint8Array): Uint8Array;
  zstdDecompressSync(b: Uint8Array): Uint8Array;
};

function sample(n: number): Uint8Array {
  const text = new TextEncoder().encode("outrun moves the bytes that are used ".repeat(n / 30 + 1));
  const out = text.subarray(0, n);
  crypto.getRandomValues(out.subarray(0, Math.min(4096, n))); // some noise too
  return out;
}

Deno.test("zstd: libzstd decodes node:zlib's blocks into the given buffer", () => {
  const raw = sample(300_000);
  const block = new Uint8Array(zstd.zstdCompressSync(raw));
  const buf = new Uint8Array(400_000).fill(0xee);
  // This machine has libzstd (Debian's libzstd1 is everywhere ffmpeg is). zstd may use
  // all of the room it is given (literals go at its end), so give it exactly the size.
  const n = zstdDecompressInto(block, buf.subarray(0, raw.length));
  assert.equal(n, raw.length);
  assert.deepEqual(buf.subarray(0, n!), raw);
  assert.ok(buf.subarray(raw.length).every((b) => b === 0xee), "nothing written past it");
  const dst = new Uint8Array(400_000);
  assert.throws(() => zstdDecompressInto(block, new Uint8Array(1000)), /zstd/, "too small");
  const bad = block.slice();
  bad[bad.length >> 1] ^= 0xff;
  bad[4] ^= 0xff;
  assert.throws(() => zstdDecompressInto(bad, dst), /zstd/, "corrupt");
});

Deno.test("zstd: decompressInto gives a view of the buffer when it can, fresh bytes otherwise", () => {
  const raw = sample(200_000);
  const [block, rawLength] = maybeCompress(raw, "zstd");
  assert.ok(rawLength > 0);
  const arena = new Uint8Array(1 << 20);
  const out = decompressInto(block, rawLength, "zstd", arena);
  assert.equal(out.buffer, arena.buffer);
  assert.deepEqual(out, raw);
  const small = decompressInto(block, rawLength, "zstd", new Uint8Array(10));
  assert.notEqual(small.buffer, arena.buffer);
  assert.deepEqual(small, raw, "no room: fresh bytes");
  const [lz, lzLength] = maybeCompress(raw, "lz4");
  assert.deepEqual(decompressInto(lz, lzLength, "lz4", arena), raw);
  assert.equal(decompressInto(raw, 0, "zstd", arena), raw, "stored as is");
});

Deno.test("zstd: libzstd's frames are node:zlib's to decode, and the other way round", () => {
  for (const n of [0, 1, 4095, 65_536, 300_000]) {
    const raw = sample(n);
    const frame = zstdCompress(raw, 3)!;
    assert.ok(frame, "libzstd is here");
    assert.deepEqual(new Uint8Array(zstd.zstdDecompressSync(frame)), raw, `n=${n}`);
    if (n > 10_000) assert.ok(frame.length < n / 2, "text packs");
    const theirs = new Uint8Array(zstd.zstdCompressSync(raw));
    const back = new Uint8Array(n);
    assert.equal(zstdDecompressInto(theirs, back), n);
    assert.deepEqual(back, raw);
  }
});
