/** The cache protocol's pure parts: the held list as the validation sends it. */
import assert from "node:assert/strict";
import { type HeldEntry, packHeld, unpackHeld } from "../../../lib/fs/cache/protocol.ts";
import { bulkCodec } from "../../../lib/fs/cache/chunks.ts";
import { decodeValue, encodeValue, type Value } from "../../../lib/rpc/codec.ts";

function randomRows(n: number, seed: number): HeldEntry[] {
  let x = seed;
  const next = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0);
  const names = ["usr", "lib", "x86_64-linux-gnu", "libc.so.6", "é n\nx", "a:b", "ζ"];
  return Array.from({ length: n }, (_, i) => {
    const parts = Array.from({ length: 1 + (next() % 4) }, () => names[next() % names.length]);
    const hasContent = next() % 2 === 0;
    const hash = hasContent
      ? Array.from({ length: 32 }, () => (next() % 256).toString(16).padStart(2, "0")).join("")
      : "";
    const present = hasContent
      ? Uint8Array.from({ length: next() % 5 }, () => next() % 256)
      : new Uint8Array(0);
    return [`/${parts.join("/")}/${i}`, `100644:${next()}:${i}.5`, hash, present, next() % 3 === 0];
  });
}

Deno.test("protocol: held rows packed in columns come back the same through the codec", () => {
  for (const [n, seed] of [[0, 1], [1, 2], [2, 3], [37, 4], [2000, 5]]) {
    const rows = randomRows(n, seed);
    for (const codec of [undefined, bulkCodec("zstd"), bulkCodec("lz4")]) {
      const held = packHeld(rows, codec);
      // Names compress: a codec packs them once there are enough to pay.
      assert.equal(held.text instanceof Uint8Array, !codec || n < 1000, `n=${n}`);
      const wire = decodeValue(encodeValue(held as unknown as Value));
      assert.deepEqual(unpackHeld(wire as never, bulkCodec()), rows, `n=${n}`);
    }
  }
  assert.throws(() => unpackHeld(packHeld(randomRows(2000, 1), bulkCodec())), /no codec/);
});

Deno.test("protocol: held columns that do not fit together are refused", () => {
  const good = packHeld(randomRows(10, 7));
  const bad = [
    { ...good, count: 11 },
    { ...good, count: 9 },
    { ...good, text: (good.text as Uint8Array).subarray(0, (good.text as Uint8Array).length - 1) },
    { ...good, listed: new Uint8Array([255, 0, 0, 0]) },
    { ...good, listed: new Uint8Array(3) },
    { ...good, hashes: good.hashes.subarray(32) },
    { ...good, present: good.present.subarray(0, good.present.length - 1) },
  ];
  for (const c of bad) assert.throws(() => unpackHeld(c), /held:/);
  for (const bad of ["not hex", "A".repeat(64), "0".repeat(62), "g".repeat(64), "é".repeat(64)]) {
    assert.throws(() => packHeld([["/a", "fp", bad, new Uint8Array(0), false]]), /content id/);
  }
});
