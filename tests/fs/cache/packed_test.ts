/** Packed runs kept on this machine: the block format, the store and its limit. */
import assert from "node:assert/strict";
import {
  decodeBlock,
  encodeBlock,
  type PackedBlock,
  PackedStore,
} from "../../../lib/fs/cache/packed.ts";

const HASH = "ab".repeat(32);

function block(n: number, fill: number, lengths = [n]): PackedBlock {
  return { lengths, data: new Uint8Array(n).fill(fill), rawLength: 0 };
}

Deno.test("packed: a block decodes to what was encoded, and nothing else decodes", () => {
  const stored = block(300, 7, [100, 200]);
  assert.deepEqual(decodeBlock(encodeBlock(stored), 2), stored);
  const compressed = { lengths: [65536, 10], data: new Uint8Array([1, 2, 3]), rawLength: 65546 };
  assert.deepEqual(decodeBlock(encodeBlock(compressed), 2), compressed);
  const bytes = encodeBlock(stored);
  assert.equal(decodeBlock(bytes, 3), null, "another chunk count");
  assert.equal(decodeBlock(bytes.subarray(0, bytes.length - 1), 2), null, "cut short");
  assert.equal(decodeBlock(bytes.subarray(0, 11), 2), null, "no whole header");
  const wrongMagic = bytes.slice();
  wrongMagic[0] ^= 1;
  assert.equal(decodeBlock(wrongMagic, 2), null);
  const lying = encodeBlock({ ...compressed, rawLength: 5 });
  assert.equal(decodeBlock(lying, 2), null, "a raw length that is not the chunks' sum");
});

Deno.test("packed: runs are found by content id, codec and indices; a bad file is a miss", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outrun-packed-" });
  try {
    const store = new PackedStore(`${dir}/packed`);
    assert.equal(store.get(HASH, "zstd", [0, 1]), null, "nothing yet (no directory either)");
    const b = block(1000, 3, [500, 500]);
    store.put(HASH, "zstd", [0, 1], b);
    assert.deepEqual(store.get(HASH, "zstd", [0, 1]), b);
    assert.equal(store.get(HASH, "lz4", [0, 1]), null);
    assert.equal(store.get(HASH, "zstd", [0, 2]), null);
    assert.equal(store.get("cd".repeat(32), "zstd", [0, 1]), null);
    // Another process of this user (a second store on the directory) finds it too.
    assert.deepEqual(new PackedStore(`${dir}/packed`).get(HASH, "zstd", [0, 1]), b);
    // A file cut short (a crash while copying a home, say) is not a run.
    const [file] = [...Deno.readDirSync(`${dir}/packed`)].map((e) => `${dir}/packed/${e.name}`);
    Deno.truncateSync(file, 20);
    assert.equal(store.get(HASH, "zstd", [0, 1]), null);
    // A directory that cannot be made costs the saving, nothing else: no throw, a miss.
    Deno.writeTextFileSync(`${dir}/file`, "");
    const unmade = new PackedStore(`${dir}/file/packed`);
    assert.doesNotThrow(() => unmade.put(HASH, "zstd", [0], block(10, 1)));
    assert.equal(unmade.get(HASH, "zstd", [0]), null);
    assert.equal(Deno.statSync(`${dir}/file`).isFile, true, "the file in the way is left as it is");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("packed: over its limit the store drops the least recently used runs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outrun-packed-" });
  try {
    // Each file is 10,000 bytes of block + 16 of header: the limit holds four.
    const store = new PackedStore(dir, 4 * 10_016 + 100);
    const pathOf = (i: number) => `${dir}/${HASH}.zstd.${i}`;
    for (let i = 0; i < 4; i++) {
      store.put(HASH, "zstd", [i], block(10_000, i));
      Deno.utimeSync(pathOf(i), 1000 + i, 1000 + i); // used in the order 0, 1, 2, 3
    }
    assert.ok(store.get(HASH, "zstd", [0]), "0 is used again: now the most recent");
    store.put(HASH, "zstd", [4], block(10_000, 4));
    const left = [0, 1, 2, 3, 4].filter((i) => store.get(HASH, "zstd", [i]) !== null);
    // Down to three quarters of the limit: the two least recently used (1, 2) went.
    assert.deepEqual(left, [0, 3, 4]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
