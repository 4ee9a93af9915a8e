import assert from "node:assert/strict";
import {
  ChunkBitmap,
  chunkHashesOf,
  chunkMatches,
  contentHash,
  decompress,
  defaultCodec,
  maybeCompress,
  RunUnpacker,
  sha256,
} from "../../../lib/fs/cache/chunks.ts";
import {
  CHUNK_SIZE,
  fingerprint,
  isCachedPath,
  type MetaRecord,
  packMeta,
  unpackMeta,
} from "../../../lib/fs/cache/protocol.ts";
import { decodeValue, encodeValue, type Value } from "../../../lib/rpc/mod.ts";
import { hex } from "../../../lib/sys/bytes.ts";

function random(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

Deno.test("chunks: sha256 of known input (byte fixture)", () => {
  assert.equal(
    hex(sha256(new TextEncoder().encode("abc"))),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

Deno.test("chunks: chunk hashes cover every chunk, the last one short; the content id is their hash", () => {
  const data = random(2 * CHUNK_SIZE + 100);
  const hashes = chunkHashesOf(data);
  assert.equal(hashes.length, 3 * 32);
  assert.deepEqual(hashes.subarray(64, 96), sha256(data.subarray(2 * CHUNK_SIZE)));
  assert.equal(contentHash(hashes), hex(sha256(hashes)));
  assert.equal(chunkHashesOf(new Uint8Array(0)).length, 0, "an empty file has no chunks");
});

Deno.test("chunks property: a chunk matches only its own hash; any one-byte change is caught", () => {
  for (let round = 0; round < 20; round++) {
    const size = 1 + Math.floor(Math.random() * 3 * CHUNK_SIZE);
    const data = random(size);
    const hashes = chunkHashesOf(data);
    const n = Math.ceil(size / CHUNK_SIZE);
    const i = Math.floor(Math.random() * n);
    const chunk = data.slice(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE);
    assert.ok(chunkMatches(hashes, i, chunk));
    assert.ok(!chunkMatches(hashes, n, chunk), "an index past the end never matches");
    const bad = chunk.slice();
    bad[Math.floor(Math.random() * bad.length)] ^= 1 + Math.floor(Math.random() * 255);
    assert.ok(!chunkMatches(hashes, i, bad));
    assert.ok(!chunkMatches(hashes, i, chunk.subarray(0, chunk.length - 1)), "a short chunk");
    // Same bytes, same id: what content addressing rests on.
    assert.equal(contentHash(chunkHashesOf(data.slice())), contentHash(hashes));
  }
});

Deno.test("chunks: LZ4 only where it pays, and it round trips", () => {
  const text = new TextEncoder().encode("hello outrun ".repeat(10_000));
  const [block, raw] = maybeCompress(text);
  assert.equal(raw, text.length);
  assert.ok(block.length < text.length / 10);
  assert.deepEqual(decompress(block, raw), text);
  const noise = random(CHUNK_SIZE);
  const [same, zero] = maybeCompress(noise);
  assert.equal(zero, 0, "incompressible data travels as is");
  assert.equal(same, noise);
  assert.deepEqual(decompress(same, 0), noise);
  assert.throws(() => decompress(block, raw + 1), /lz4/);
});

Deno.test("chunks: zstd where the runtime has it, smaller than LZ4 on an ELF file's chunks", () => {
  // The shipped Deno has zstd in node:zlib; the agent runs that same runtime.
  assert.equal(defaultCodec(), "zstd");
  const elf = Deno.readFileSync("/usr/bin/ssh").subarray(0, 4 * CHUNK_SIZE);
  let lz4 = 0;
  let zstd = 0;
  for (let i = 0; i < elf.length; i += CHUNK_SIZE) {
    const chunk = elf.subarray(i, i + CHUNK_SIZE);
    const [a, rawA] = maybeCompress(chunk, "lz4");
    const [z, rawZ] = maybeCompress(chunk, "zstd");
    assert.deepEqual(decompress(z, rawZ, "zstd"), chunk);
    assert.deepEqual(decompress(a, rawA, "lz4"), chunk);
    lz4 += a.length;
    zstd += z.length;
  }
  assert.ok(zstd < lz4, `zstd ${zstd} < lz4 ${lz4}`);
  const text = new TextEncoder().encode("hello outrun ".repeat(10_000));
  const [block, raw] = maybeCompress(text, "zstd");
  assert.throws(() => decompress(block, raw + 1, "zstd"), /zstd/);
  // A block that claims less than it holds is refused, not inflated without bound.
  assert.throws(() => decompress(block, 1000, "zstd"));
  assert.throws(() => decompress(block, raw, "lz4"), "a block read with the wrong codec");
});

Deno.test("chunks property: LZ4 and zstd round trip random mixes of text and noise", () => {
  for (let round = 0; round < 30; round++) {
    const parts: Uint8Array[] = [];
    let size = 0;
    while (size < 4096 + Math.random() * CHUNK_SIZE) {
      const p = Math.random() < 0.5
        ? random(1 + Math.floor(Math.random() * 2000))
        : new Uint8Array(1 + Math.floor(Math.random() * 5000)).fill(
          Math.floor(Math.random() * 256),
        );
      parts.push(p);
      size += p.length;
    }
    const data = new Uint8Array(size);
    let at = 0;
    for (const p of parts) data.set(p, (at += p.length) - p.length);
    for (const codec of ["lz4", "zstd"] as const) {
      const [block, raw] = maybeCompress(data, codec);
      assert.deepEqual(decompress(block, raw, codec), data);
    }
  }
});

Deno.test("chunks: bitmaps", () => {
  const b = ChunkBitmap.empty(20);
  assert.equal(b.bits.length, 3);
  for (const i of [0, 7, 8, 19]) b.add(i);
  assert.deepEqual([0, 7, 8, 19].map((i) => b.has(i)), [true, true, true, true]);
  assert.equal(b.count(20), 4);
  b.delete(7);
  assert.deepEqual(b.missing(10), [1, 2, 3, 4, 5, 6, 7, 9]);
});

Deno.test("protocol: cached prefixes match whole path components", () => {
  const p = ["/usr", "/lib", "/opt/tools"];
  for (const yes of ["/usr", "/usr/bin/ls", "/lib/x", "/opt/tools", "/opt/tools/a"]) {
    assert.ok(isCachedPath(yes, p), yes);
  }
  for (const no of ["/", "/usrx", "/library", "/opt", "/opt/toolsbox", "/home/usr"]) {
    assert.ok(!isCachedPath(no, p), no);
  }
});

Deno.test("protocol: fingerprints change with size, times, inode, mode and link target", () => {
  const attr = {
    ino: 5n,
    size: 10n,
    blocks: 0n,
    atimeSec: 1n,
    atimeNsec: 0,
    mtimeSec: 2n,
    mtimeNsec: 3,
    ctimeSec: 4n,
    ctimeNsec: 5,
    mode: 0o100644,
    nlink: 1,
    uid: 0,
    gid: 0,
    rdev: 0,
    blksize: 4096,
  };
  const base = fingerprint(attr);
  assert.equal(fingerprint(null), "-");
  assert.equal(
    fingerprint({ ...attr, atimeSec: 99n }),
    base,
    "reading a file does not make it stale",
  );
  for (
    const changed of [
      { ...attr, size: 11n },
      { ...attr, mtimeNsec: 4 },
      { ...attr, ctimeSec: 5n },
      { ...attr, ino: 6n },
      { ...attr, mode: 0o100755 },
    ]
  ) assert.notEqual(fingerprint(changed), base);
  assert.notEqual(fingerprint(attr, "a"), fingerprint(attr, "b"));
});

Deno.test("protocol: a meta packed by position unpacks to itself; what is not one is refused", () => {
  const attr = {
    ino: 123456789012n,
    size: 2n ** 40n,
    blocks: 8n,
    atimeSec: -5n,
    atimeNsec: 999_999_999,
    mtimeSec: 1_700_000_000n,
    mtimeNsec: 1,
    ctimeSec: 1_700_000_001n,
    ctimeNsec: 2,
    mode: 0o120777,
    nlink: 3,
    uid: 1000,
    gid: 100,
    rdev: 0n,
    blksize: 4096,
  };
  const metas: MetaRecord[] = [
    { path: "/usr/lib/x", attr },
    { path: "/usr/lib/link", attr, target: "x" },
    { path: "/usr", attr: { ...attr, mode: 0o40755 }, children: ["bin", "l\xe9b"] },
    { path: "/usr/none", attr: null },
  ];
  for (const m of metas) {
    const packed = packMeta(m);
    // Through the codec, as it crosses and is stored.
    const back = unpackMeta(decodeValue(encodeValue(packed as unknown as Value)) as never);
    assert.deepEqual(back, m);
    assert.equal(fingerprint(back.attr, back.target), fingerprint(m.attr, m.target));
  }
  const full = encodeValue({ metas } as unknown as Value).length;
  const small = encodeValue({ metas: metas.map(packMeta) } as unknown as Value).length;
  assert.ok(small < full / 2, `${small} bytes packed, ${full} as objects`);
  for (const bad of [null, {}, [], [1, null, null, null], ["/p", [1, 2], null, null]]) {
    assert.throws(() => unpackMeta(bad as never), TypeError, JSON.stringify(bad));
  }
});

Deno.test("chunks: pushed runs unpack into their chunks; a run that does not fit is left out, said", () => {
  const a = new TextEncoder().encode("a".repeat(CHUNK_SIZE));
  const b = new TextEncoder().encode("b".repeat(1000));
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a);
  joined.set(b, a.length);
  const [data, rawLength] = maybeCompress(joined);
  assert.ok(rawLength > 0, "compressed");
  const said: string[] = [];
  const runs = new RunUnpacker();
  const chunks = runs.unpack([
    { hash: "h1", indices: [0, 1], lengths: [a.length, b.length], data, rawLength },
    { hash: "h2", indices: [0, 1], lengths: [10], data: new Uint8Array(10), rawLength: 0 },
    { hash: "h3", indices: [4], lengths: [3], data: new Uint8Array([7, 8, 9]), rawLength: 0 },
  ], (line) => said.push(line));
  assert.deepEqual(chunks.map((c) => [c.hash, c.index, c.data.length]), [
    ["h1", 0, a.length],
    ["h1", 1, b.length],
    ["h3", 4, 3],
  ]);
  assert.deepEqual(chunks[1].data, b);
  assert.equal(said.length, 1);
  assert.match(said[0], /chunks 0,1 of h2: .*do not fit/);
});
