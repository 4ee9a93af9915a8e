/** The packer: chunks read and compressed by a worker, in order, the same as here. */
import assert from "node:assert/strict";
import { decompress } from "../../../lib/fs/cache/chunks.ts";
import { ChunkPacker, packChunks } from "../../../lib/fs/cache/packer.ts";
import { CHUNK_SIZE } from "../../../lib/fs/cache/protocol.ts";

/** A file of text and noise (some chunks compress, some do not), its last chunk short. */
async function fixture(): Promise<{ dir: string; path: string; data: Uint8Array }> {
  const dir = await Deno.makeTempDir({ prefix: "outrun-packer-" });
  const data = new Uint8Array(5 * CHUNK_SIZE + 1234);
  data.set(new TextEncoder().encode("outrun ".repeat(20_000)), 0);
  crypto.getRandomValues(data.subarray(2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 65536));
  const path = `${dir}/lib.so`;
  await Deno.writeFile(path, data);
  return { dir, path, data };
}

Deno.test("packer: the worker packs what packChunks packs, in order, and it unpacks to the file", async () => {
  const { dir, path, data } = await fixture();
  const packer = new ChunkPacker();
  try {
    const size = data.length;
    const jobs = [[5, 0, 2], [1], [3, 4]].map((indices) =>
      packer.pack({ path, indices, size, codec: "zstd" })
    );
    const results = await Promise.all(jobs);
    assert.deepEqual(results.map((r) => r.map((c) => c.index)), [[5, 0, 2], [1], [3, 4]]);
    for (const chunks of results) {
      for (const c of chunks) {
        const want = data.subarray(c.index * CHUNK_SIZE, (c.index + 1) * CHUNK_SIZE);
        assert.equal(c.size, want.length);
        assert.deepEqual(decompress(c.data, c.rawLength, "zstd"), want);
      }
    }
    assert.equal(results[0][0].size, 1234, "the last chunk is short");
    assert.equal(results[0][2].rawLength, 0, "noise travels as is");
    assert.ok(results[0][1].rawLength > 0 && results[0][1].data.length < CHUNK_SIZE / 10);
    const here = packChunks({ path, indices: [5, 0, 2], size, codec: "zstd" });
    assert.deepEqual(results[0], here);
  } finally {
    packer.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("packer: an unreadable file fails its job alone; close fails what waits", async () => {
  const { dir, path, data } = await fixture();
  const packer = new ChunkPacker();
  try {
    const gone = packer.pack({ path: `${dir}/gone`, indices: [0], size: 10, codec: "lz4" });
    const fine = packer.pack({ path, indices: [1], size: data.length, codec: "lz4" });
    await assert.rejects(gone, /No such file|not found/i);
    assert.equal((await fine)[0].index, 1);
    const waiting = packer.pack({
      path,
      indices: [0, 1, 2, 3, 4, 5],
      size: data.length,
      codec: "lz4",
    });
    packer.close();
    await assert.rejects(waiting, /packer closed/);
    // Closed: what comes is packed on this thread.
    assert.equal(
      (await packer.pack({ path, indices: [2], size: data.length, codec: "lz4" }))[0].index,
      2,
    );
  } finally {
    packer.close();
    await Deno.remove(dir, { recursive: true });
  }
});
