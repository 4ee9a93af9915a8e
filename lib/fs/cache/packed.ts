/**
 * Compressed runs kept on this machine: a cold start on one more remote (a new host,
 * a host whose cache was emptied) sends what an earlier one packed, without reading
 * and compressing the same megabytes again (for a cold `ffmpeg -version`, 64 MB
 * read and compressed to 24 MB: ~0.25 s of a core alone, ~0.7 s beside SSH here).
 *
 * A run is named by its content id, codec and chunk indices, so a changed file (a new
 * content id) never finds an old run. The bytes are not checked here: the remote
 * checks each chunk against its hash and asks again for one that does not match.
 * Least recently used runs go once the directory holds more than its limit.
 */
import type { ChunkCodec } from "./protocol.ts";
import { LazyBytes } from "../../rpc/codec.ts";
import { bpath, fstatFd } from "../../sys/files.ts";
import { libc, O } from "../../sys/libc.ts";

/** A run as packed: each chunk's length, the block and its size before compression. */
export interface PackedBlock {
  lengths: number[];
  data: Uint8Array;
  /** 0: `data` is the chunks as they are. */
  rawLength: number;
}

const MAGIC = 0x3150524f; // "ORP1", little-endian
const HEADER = 12;

/** Bytes of runs kept unless told otherwise. */
export const PACKED_MAX_BYTES = 512 * 1024 * 1024;

/** A kept run whose bytes stay in their file until a frame is written (see `lazy`). */
export interface KeptBlock {
  lengths: number[];
  data: KeptData;
  rawLength: number;
}

/**
 * A kept run's block, read from its file straight into the frame being written, and
 * the file closed then. A read cut short (a disk error) leaves zeros: the remote checks
 * each chunk against its hash, refuses them, and asks again.
 */
export class KeptData extends LazyBytes {
  #fd: number | null;

  constructor(
    fd: number,
    readonly offset: number,
    readonly length: number,
    private readonly closed: (d: KeptData) => void,
  ) {
    super();
    this.#fd = fd;
  }

  readInto(dst: Uint8Array): void {
    let got = 0;
    const fd = this.#fd;
    while (fd !== null && got < this.length) {
      const n = Number(
        libc().pread64(
          fd,
          dst.subarray(got) as Uint8Array<ArrayBuffer>,
          BigInt(this.length - got),
          BigInt(this.offset + got),
        ),
      );
      if (n <= 0) break;
      got += n;
    }
    if (got < this.length) dst.fill(0, got, this.length);
    this.close();
  }

  close(): void {
    if (this.#fd === null) return;
    libc().close(this.#fd);
    this.#fd = null;
    this.closed(this);
  }
}

export class PackedStore {
  /** Bytes in the directory, counted once this process first writes to it. */
  #bytes: number | null = null;
  #serial = 0;
  /** Kept runs handed out and not read yet (their files are open). */
  readonly #open = new Set<KeptData>();

  constructor(readonly dir: string, readonly maxBytes = PACKED_MAX_BYTES) {}

  #path(hash: string, codec: ChunkCodec, indices: number[]): string {
    return `${this.dir}/${hash}.${codec}.${indices.join("_")}`;
  }

  /** The run, or null when it is not here (or not whole). */
  get(hash: string, codec: ChunkCodec, indices: number[]): PackedBlock | null {
    const path = this.#path(hash, codec, indices);
    let bytes: Uint8Array;
    try {
      bytes = Deno.readFileSync(path);
    } catch {
      return null;
    }
    const block = decodeBlock(bytes, indices.length);
    if (!block) return null;
    touch(path);
    return block;
  }

  /**
   * The run as `get` finds it, its bytes left in the file until a frame is written
   * (no copy in memory first: fresh memory costs more than reading, here), or null.
   */
  lazy(hash: string, codec: ChunkCodec, indices: number[]): KeptBlock | null {
    const path = this.#path(hash, codec, indices);
    const fd = libc().open(bpath(path), O.RDONLY | O.CLOEXEC, 0);
    if (fd < 0) return null;
    let size: number;
    const head = new Uint8Array(HEADER + 4 * indices.length);
    try {
      size = Number(fstatFd(fd).size);
      const n = Number(libc().pread64(fd, head, BigInt(head.length), 0n));
      if (n !== head.length) throw new Error("short");
    } catch {
      libc().close(fd);
      return null;
    }
    const block = decodeHeader(head, indices.length, size - head.length);
    if (!block) {
      libc().close(fd);
      return null;
    }
    touch(path);
    const data = new KeptData(fd, head.length, size - head.length, (d) => this.#open.delete(d));
    this.#open.add(data);
    return { lengths: block.lengths, rawLength: block.rawLength, data };
  }

  /** Closes the files of kept runs handed out and never read (a push that did not go). */
  closeUnread(): void {
    for (const d of [...this.#open]) d.close();
  }

  /** Keeps a run (best effort: a full disk or a read-only home only costs the saving). */
  put(hash: string, codec: ChunkCodec, indices: number[], block: PackedBlock): void {
    const bytes = encodeBlock(block);
    const path = this.#path(hash, codec, indices);
    const tmp = `${this.dir}/.tmp.${Deno.pid}.${++this.#serial}`;
    try {
      if (this.#bytes === null) {
        Deno.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
        this.#bytes = this.#entries().reduce((n, e) => n + e.size, 0);
      }
      Deno.writeFileSync(tmp, bytes, { mode: 0o600 });
      Deno.renameSync(tmp, path);
      this.#bytes += bytes.length;
      if (this.#bytes > this.maxBytes) this.#trim();
    } catch (e) {
      try {
        Deno.removeSync(tmp);
      } catch { /* never made */ }
      // What the filesystem refuses is not this caller's problem; anything else is a bug.
      if (!(e instanceof Error && "code" in e)) throw e;
    }
  }

  #entries(): { path: string; size: number; used: number }[] {
    const out = [];
    for (const e of Deno.readDirSync(this.dir)) {
      if (!e.isFile || e.name.startsWith(".")) continue;
      const path = `${this.dir}/${e.name}`;
      try {
        const st = Deno.statSync(path);
        out.push({ path, size: st.size, used: st.mtime?.getTime() ?? 0 });
      } catch { /* removed meanwhile */ }
    }
    return out;
  }

  /** Removes the least recently used runs until a quarter of the limit is free. */
  #trim(): void {
    const entries = this.#entries().sort((a, b) => a.used - b.used);
    let total = entries.reduce((n, e) => n + e.size, 0);
    for (const e of entries) {
      if (total <= this.maxBytes * 0.75) break;
      try {
        Deno.removeSync(e.path);
      } catch { /* another session took it */ }
      total -= e.size;
    }
    this.#bytes = total;
  }
}

/** Marks a run recently used: kept longest (one removed meanwhile is still good this time). */
function touch(path: string): void {
  try {
    const now = new Date();
    Deno.utimeSync(path, now, now);
  } catch { /* removed meanwhile */ }
}

/** "ORP1", raw length, chunk count, each chunk's length, then the block. */
export function encodeBlock(b: PackedBlock): Uint8Array {
  const out = new Uint8Array(HEADER + 4 * b.lengths.length + b.data.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, MAGIC, true);
  v.setUint32(4, b.rawLength, true);
  v.setUint32(8, b.lengths.length, true);
  b.lengths.forEach((l, i) => v.setUint32(HEADER + 4 * i, l, true));
  out.set(b.data, HEADER + 4 * b.lengths.length);
  return out;
}

/** The block in `bytes`, or null when they are not one of `chunks` chunks. */
export function decodeBlock(bytes: Uint8Array, chunks: number): PackedBlock | null {
  const at = HEADER + 4 * chunks;
  if (bytes.length < at) return null;
  const head = decodeHeader(bytes.subarray(0, at), chunks, bytes.length - at);
  return head && { ...head, data: bytes.subarray(at) };
}

/** A block's header (`head`: its first 12 + 4 * `chunks` bytes), followed by `dataLength` bytes. */
function decodeHeader(
  head: Uint8Array,
  chunks: number,
  dataLength: number,
): { lengths: number[]; rawLength: number } | null {
  if (head.length < HEADER + 4 * chunks || dataLength < 0) return null;
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
  if (v.getUint32(0, true) !== MAGIC || v.getUint32(8, true) !== chunks) return null;
  const lengths = Array.from({ length: chunks }, (_, i) => v.getUint32(HEADER + 4 * i, true));
  const rawLength = v.getUint32(4, true);
  const size = lengths.reduce((n, l) => n + l, 0);
  // Stored as they are, the chunks are exactly their lengths; compressed, they are not
  // longer than what they stand for.
  if (rawLength ? rawLength !== size : dataLength !== size) return null;
  return { lengths, rawLength };
}
