/**
 * Pure helpers of the cache's data path: chunk hashes and the content id built
 * from them, chunk bitmaps, and compression applied only where it pays: zstd
 * (node:zlib, native) where the runtime has it, else LZ4 (npm:lz4-wasm).
 */
import * as lz4 from "lz4-wasm";
import { CHUNK_SIZE, type ChunkCodec, chunkCount, type ChunkRun } from "./protocol.ts";
import { hex } from "../../sys/bytes.ts";
import { hasLibzstd, zstdCompress, zstdDecompressInto } from "../../sys/zstd.ts";
import type { BulkCodec } from "../file_wire.ts";

type CreateHash = (algorithm: string) => {
  update(b: Uint8Array): { digest(): Uint8Array };
};
let createHash: CreateHash | null = null;

/**
 * node:crypto and node:zlib are loaded when first needed, not as the agent starts,
 * through the runtime's `process` (touching it loads the runtime's Node layer: ~45 ms
 * of a new agent's start when node:process was imported). zstd goes through libzstd
 * where it is here, so that a warm start needs none of them.
 */
function builtin<T>(id: string): T {
  return (globalThis as unknown as { process: { getBuiltinModule(id: string): T } }).process
    .getBuiltinModule(id);
}

export function sha256(bytes: Uint8Array): Uint8Array {
  createHash ??= builtin<{ createHash: CreateHash }>("node:crypto").createHash;
  return new Uint8Array(createHash("sha256").update(bytes).digest());
}

/** The sha256 of each CHUNK_SIZE piece of `content`, concatenated. */
export function chunkHashesOf(content: Uint8Array): Uint8Array {
  const n = chunkCount(content.length);
  const out = new Uint8Array(n * 32);
  for (let i = 0; i < n; i++) {
    out.set(sha256(content.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE)), i * 32);
  }
  return out;
}

/** The content id: sha256 over the chunk hashes (so one chunk can be checked alone). */
export function contentHash(chunkHashes: Uint8Array): string {
  return hex(sha256(chunkHashes));
}

/** Whether `data` is chunk `index` of content whose chunk hashes are `chunkHashes`. */
export function chunkMatches(chunkHashes: Uint8Array, index: number, data: Uint8Array): boolean {
  const want = chunkHashes.subarray(index * 32, index * 32 + 32);
  if (want.length !== 32) return false;
  const got = sha256(data);
  for (let i = 0; i < 32; i++) if (got[i] !== want[i]) return false;
  return true;
}

/** Below this saving a compressed block is not worth its decompression. */
const MIN_SAVING = 1 / 16;

interface NodeZstd {
  zstdCompressSync?: (b: Uint8Array, o: unknown) => Uint8Array;
  zstdDecompressSync?: (b: Uint8Array, o?: unknown) => Uint8Array;
  constants: Record<string, number>;
}

let nodeZstd: NodeZstd | null = null;

/** node:zlib (loaded when first needed: the agent decompresses with libzstd). */
function zstd(): NodeZstd {
  return nodeZstd ??= builtin<NodeZstd>("node:zlib");
}

/**
 * node:zlib's options for an output of at most `bound` bytes: one output buffer a
 * little larger than that. Its default (16 KiB pieces joined at the end) made
 * compressing a cold ffmpeg's chunks take 0.38 s instead of 0.25; and a buffer the
 * output fills exactly makes node:zlib allocate another before it sees the end.
 * Fresh memory is dear (on this test bed's VMs a page's first touch costs ~10 us,
 * 2.8 ms a MiB): a decompressed run paid for two megabytes where it needs one.
 */
const ZSTD_LEVEL = 3;

function zstdOptions(bound: number) {
  // zstd level 3: on the chunks a cold `ffmpeg -version` needs (64 MB), 24 MB in
  // ~0.25 s on one core here, where LZ4 makes 33.5 MB in about the same time.
  const level = zstd().constants.ZSTD_c_compressionLevel ?? 100;
  return { params: { [level]: ZSTD_LEVEL }, chunkSize: Math.max(bound + 64, 1024) };
}

/** What this runtime compresses with unless told otherwise. */
export function defaultCodec(): ChunkCodec {
  if (hasLibzstd()) return "zstd";
  const z = zstd();
  return z.zstdCompressSync && z.zstdDecompressSync ? "zstd" : "lz4";
}

/**
 * `[data, rawLength]`: the block compressed with `codec` and the original length,
 * or the data and 0 where compressing does not pay.
 */
export function maybeCompress(
  data: Uint8Array,
  codec: ChunkCodec = "lz4",
): [Uint8Array, number] {
  if (data.length < 512) return [data, 0];
  const block = codec === "zstd"
    ? zstdCompress(data, ZSTD_LEVEL) ??
      new Uint8Array(zstd().zstdCompressSync!(data, zstdOptions(data.length)))
    : lz4.compress(data);
  if (block.length > data.length * (1 - MIN_SAVING)) return [data, 0];
  return [block, data.length];
}

export function decompress(
  data: Uint8Array,
  rawLength: number,
  codec: ChunkCodec = "lz4",
): Uint8Array {
  if (rawLength === 0) return data;
  let out: Uint8Array;
  if (codec === "zstd") {
    if (hasLibzstd()) return libzstdInto(data, new Uint8Array(rawLength));
    const z = zstd();
    if (!z.zstdDecompressSync) throw new Error("zstd: not in this runtime");
    const b = z.zstdDecompressSync(data, {
      maxOutputLength: rawLength,
      chunkSize: zstdOptions(rawLength).chunkSize,
    });
    out = new Uint8Array(b.buffer, b.byteOffset, b.length); // a plain array, not a Buffer
  } else {
    out = lz4.decompress(data);
  }
  if (out.length !== rawLength) {
    throw new Error(`${codec}: ${out.length} bytes, expected ${rawLength}`);
  }
  return out;
}

/**
 * `decompress`, into the start of `into` when it can (zstd through libzstd, and room
 * enough): the result is then a view of `into`, valid until it is written again.
 */
export function decompressInto(
  data: Uint8Array,
  rawLength: number,
  codec: ChunkCodec,
  into: Uint8Array,
): Uint8Array {
  if (rawLength > 0 && codec === "zstd" && into.length >= rawLength && hasLibzstd()) {
    return libzstdInto(data, into.subarray(0, rawLength));
  }
  return decompress(data, rawLength, codec);
}

/** The zstd frame `data` decompressed by libzstd into all of `out` (it must be here). */
function libzstdInto(data: Uint8Array, out: Uint8Array): Uint8Array {
  const n = zstdDecompressInto(data, out);
  if (n !== out.length) throw new Error(`zstd: ${n} bytes, expected ${out.length}`);
  return out;
}

/** A set of chunk indices as bits. */
export class ChunkBitmap {
  constructor(readonly bits: Uint8Array) {}

  static empty(chunks: number): ChunkBitmap {
    return new ChunkBitmap(new Uint8Array(Math.ceil(chunks / 8)));
  }

  has(i: number): boolean {
    return (this.bits[i >> 3] & (1 << (i & 7))) !== 0;
  }

  add(i: number): void {
    this.bits[i >> 3] |= 1 << (i & 7);
  }

  delete(i: number): void {
    this.bits[i >> 3] &= ~(1 << (i & 7));
  }

  /** Indices in [0, n) not set. */
  missing(n: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < n; i++) if (!this.has(i)) out.push(i);
    return out;
  }

  count(n: number): number {
    return n - this.missing(n).length;
  }
}

/**
 * The proxy's packing of bulk data (blocks read ahead, writes written behind) with
 * `codec`, or the runtime's own choice, made when first needed (node:zlib loads then,
 * not as the agent starts).
 */
export function bulkCodec(codec?: ChunkCodec): BulkCodec {
  return {
    pack(data) {
      codec ??= defaultCodec();
      const [packed, rawLength] = maybeCompress(data, codec);
      return rawLength ? { packed, rawLength, codec } : null;
    },
    unpack({ packed, rawLength, codec: c }) {
      if (c !== "zstd" && c !== "lz4") throw new Error(`unknown codec ${c}`);
      return decompress(packed, rawLength, c);
    },
  };
}

/** A chunk of a pushed run: a view into the decompressed run, not checked yet. */
export interface RunChunk {
  hash: string;
  index: number;
  data: Uint8Array;
}

/** Room to decompress a push's runs into (a push is about 1 MiB compressed). */
const ARENA_BYTES = 8 * 1024 * 1024;

/**
 * Unpacks the chunks of pushed runs, decompressing into one arena reused from push to
 * push (the views are valid until the next call). A run that does not decode is left
 * out and told to `log`; each chunk is still to be checked against its hash.
 */
export class RunUnpacker {
  #arena: Uint8Array | null = null;

  unpack(runs: readonly ChunkRun[], log: (line: string) => void): RunChunk[] {
    const chunks: RunChunk[] = [];
    if (!runs.length) return chunks;
    const arena = this.#arena ??= new Uint8Array(ARENA_BYTES);
    let used = 0;
    for (const r of runs) {
      try {
        const total = r.lengths.reduce((n, l) => n + l, 0);
        if (r.indices.length !== r.lengths.length || r.lengths.some((l) => l > CHUNK_SIZE)) {
          throw new Error("lengths do not fit the indices");
        }
        const data = decompressInto(r.data, r.rawLength, r.codec ?? "lz4", arena.subarray(used));
        if (data.buffer === arena.buffer) used += data.length;
        if (data.length !== total) throw new Error(`${data.length} bytes for ${total}`);
        let at = 0;
        r.indices.forEach((index, i) => {
          chunks.push({ hash: r.hash, index, data: data.subarray(at, at += r.lengths[i]) });
        });
      } catch (e) {
        log(`cache: chunks ${r.indices.join(",")} of ${r.hash}: ${e}`);
      }
    }
    return chunks;
  }
}
