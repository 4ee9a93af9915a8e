/** The packer: chunk runs read and compressed by a worker, in order, the same as here. */
import assert from "node:assert/strict";
import { chunkHashesOf, contentHash, decompress } from "../../../lib/fs/cache/chunks.ts";
import {
  ChunkPacker,
  closeUnreadKept,
  keptRuns,
  packChunks,
  type PackedRun,
} from "../../../lib/fs/cache/packer.ts";
import { CHUNK_SIZE, RUN_CHUNKS } from "../../../lib/fs/cache/protocol.ts";
import type { LazyBytes } from "../../../lib/rpc/codec.ts";
import { SysError } from "../../../lib/sys/libc.ts";

/** A file of text and noise (some chunks compress, some do not), its last chunk short. */
async function fixture(chunks = 6): Promise<{ dir: string; path: string; data: Uint8Array }> {
  const dir = await Deno.makeTempDir({ prefix: "outrun-packer-" });
  const data = new Uint8Array((chunks - 1) * CHUNK_SIZE + 1234);
  data.set(new TextEncoder().encode("outrun ".repeat(20_000)), 0);
  for (let i = 2; i < chunks - 1; i += 3) {
    crypto.getRandomValues(data.subarray(i * CHUNK_SIZE, i * CHUNK_SIZE + 65536));
  }
  const path = `${dir}/lib.so`;
  await Deno.writeFile(path, data);
  return { dir, path, data };
}

/** A run's bytes: those of a kept run are read from its file now (as a frame would). */
function bytesOf(data: Uint8Array | LazyBytes): Uint8Array {
  if (data instanceof Uint8Array) return data;
  const out = new Uint8Array(data.length);
  data.readInto(out);
  return out;
}

/** Each run unpacked and cut back into its chunks, checked against the file. */
function checkRuns(runs: PackedRun[], data: Uint8Array, codec: "zstd" | "lz4"): number[] {
  const seen: number[] = [];
  for (const r of runs) {
    const joined = decompress(bytesOf(r.data), r.rawLength, codec);
    assert.equal(joined.length, r.size);
    let at = 0;
    r.indices.forEach((index, i) => {
      const want = data.subarray(index * CHUNK_SIZE, (index + 1) * CHUNK_SIZE);
      assert.equal(r.lengths[i], want.length);
      assert.deepEqual(joined.subarray(at, at += r.lengths[i]), want);
      seen.push(index);
    });
  }
  return seen;
}

Deno.test("packer: the worker packs what packChunks packs, in order, in runs that unpack to the file", async () => {
  const { dir, path, data } = await fixture(40);
  const packer = new ChunkPacker();
  try {
    const size = data.length;
    const many = [39, ...Array.from({ length: 20 }, (_, i) => i)];
    const jobs = [many, [21], [30, 31]].map((indices) =>
      packer.pack({ path, indices, size, codec: "zstd" })
    );
    const results = await Promise.all(jobs);
    assert.deepEqual(results.map((rs) => checkRuns(rs, data, "zstd")), [many, [21], [30, 31]]);
    assert.deepEqual(results[0].map((r) => r.indices.length), [RUN_CHUNKS, 21 - RUN_CHUNKS]);
    assert.equal(results[0][0].lengths[0], 1234, "the last chunk is short");
    assert.ok(results[0][0].rawLength > 0 && results[0][0].data.length < results[0][0].size / 2);
    const noise = await packer.pack({ path, indices: [2], size, codec: "zstd" });
    assert.equal(noise[0].rawLength, 0, "noise travels as is");
    assert.deepEqual(results[0], packChunks({ path, indices: many, size, codec: "zstd" }));
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
    await assert.rejects(gone, /ENOENT/);
    assert.deepEqual(checkRuns(await fine, data, "lz4"), [1]);
    const all = [0, 1, 2, 3, 4, 5];
    const waiting = packer.pack({ path, indices: all, size: data.length, codec: "lz4" });
    packer.close();
    await assert.rejects(waiting, /packer closed/);
    // Closed: what comes is packed on this thread.
    const here = await packer.pack({ path, indices: [2], size: data.length, codec: "lz4" });
    assert.deepEqual(checkRuns(here, data, "lz4"), [2]);
    // Here, a failure keeps its errno (a call's answer carries it to the program).
    assert.throws(
      () => packChunks({ path: `${dir}/gone`, indices: [0], size: 10, codec: "lz4" }),
      (e: unknown) => e instanceof SysError && e.errno === 2,
    );
  } finally {
    packer.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("packer: runs are kept when every chunk matches its hash, and found again", async () => {
  const { dir, path, data } = await fixture(20);
  const packer = new ChunkPacker();
  try {
    const all = chunkHashesOf(data);
    const hash = contentHash(all);
    const indices = [0, 1, 2, 3, 19, ...Array.from({ length: 14 }, (_, i) => i + 4)];
    const hashes = new Uint8Array(32 * indices.length);
    indices.forEach((index, i) => hashes.set(all.subarray(32 * index, 32 * index + 32), 32 * i));
    const job = { path, indices, size: data.length, codec: "zstd" as const, hash, hashes };
    const packed = `${dir}/packed`;
    assert.equal(keptRuns({ ...job, packed }), null, "nothing kept yet");
    // Hashes that do not match (the file changed after its id was taken): not kept.
    const wrong = hashes.slice();
    wrong[0] ^= 1;
    packChunks({ ...job, hashes: wrong, packed });
    assert.equal(keptRuns({ ...job, packed }), null);
    const made = await packer.pack({ ...job, packed });
    assert.deepEqual(checkRuns(made, data, "zstd"), indices);
    // Only the fds on the kept runs' files: the process's others come and go (the
    // runtime's own, another test's) and made this count flaky.
    const fds = () =>
      [...Deno.readDirSync("/proc/self/fd")].filter((e) => {
        try {
          return Deno.readLinkSync(`/proc/self/fd/${e.name}`).startsWith(`${packed}/`);
        } catch {
          return false; // closed meanwhile (the directory's own fd, for one)
        }
      }).length;
    const before = fds();
    const kept = keptRuns({ ...job, packed });
    assert.ok(kept);
    assert.equal(fds(), before + kept.length, "each kept run's file open until it is read");
    assert.deepEqual(checkRuns(kept, data, "zstd"), indices);
    assert.equal(fds(), before, "read: closed");
    keptRuns({ ...job, packed });
    closeUnreadKept(); // a push that did not go
    assert.equal(fds(), before);
    assert.deepEqual(kept.map((r) => r.indices), made.map((r) => r.indices));
    // Found by content id: what the file holds now is not read again (a changed file
    // has another id, so never finds these).
    await Deno.writeFile(path, new Uint8Array(data.length));
    assert.deepEqual(checkRuns(await packer.pack({ ...job, packed }), data, "zstd"), indices);
    // The file is still opened: one this user can no longer read is not sent.
    await Deno.remove(path);
    assert.throws(() => keptRuns({ ...job, packed }), /ENOENT/);
    await assert.rejects(packer.pack({ ...job, packed }), /ENOENT/);
  } finally {
    packer.close();
    await Deno.remove(dir, { recursive: true });
  }
});
