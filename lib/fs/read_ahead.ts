/**
 * Reads that follow each other on a handle (a file read from start to end: an input
 * video, an archive) are read ahead, in blocks, as many at once as the link holds: the
 * kernel's own readahead (64 KiB, kept small for mapped libraries) left a 20 ms link
 * moving 7 MB/s. ProxyFs says how a read and a block are fetched; this keeps, per
 * handle, where the next read would start, how far to read ahead, and the blocks.
 */
import type { Request } from "../fuse/mod.ts";

/** Read-ahead blocks: the unit fetched ahead of sequential reads. */
export const AHEAD_BLOCK = 256 * 1024;
/** The most read ahead of a handle's last read (a 20 ms link at ~100 MB/s holds 2 MB). */
export const AHEAD_MAX = 4 * 1024 * 1024;
/** Reads in sequence before reading ahead starts (a header read, then a seek, is not). */
const AHEAD_AFTER = 2;

/** A handle's reads: where the next one would start if they follow each other. */
interface ReadState {
  nodeid: number;
  /** Where the next read starts if it follows the last one asked for. */
  next: number;
  streak: number;
  /** Bytes to keep in flight past the last read (doubles with each read in sequence). */
  window: number;
  /** Block index -> its bytes (short at the end of the file). */
  blocks: Map<number, Promise<Uint8Array>>;
}

export interface ReadWays {
  /** The read as asked. */
  once(req: Request<"READ">): Promise<Uint8Array>;
  /** AHEAD_BLOCK bytes of the handle's file from `offset` (fewer at its end). */
  block(req: Request<"READ">, offset: bigint): Promise<Uint8Array>;
}

export class ReadAhead {
  readonly #reads = new Map<number, ReadState>();
  /** Reads answered from blocks fetched ahead, blocks asked for, answers come. */
  readonly stats = { hits: 0, blocks: 0, settled: 0 };

  constructor(readonly ways: ReadWays) {}

  /**
   * Notes read `req` (before it is answered in any way: the kernel may ask for the
   * next range before this one is answered).
   */
  note(req: Request<"READ">): void {
    const offset = Number(req.offset);
    let s = this.#reads.get(req.fh);
    if (!s || s.nodeid !== req.header.nodeid) {
      s = { nodeid: req.header.nodeid, next: -1, streak: 0, window: 0, blocks: new Map() };
      this.#reads.set(req.fh, s);
    }
    const follows = offset === s.next;
    s.next = offset + req.size;
    if (!follows) {
      s.streak = 0;
      s.window = 0;
      s.blocks.clear();
    } else s.streak++;
  }

  /** Answers read `req` (noted before): at once, or from blocks read ahead. */
  async read(req: Request<"READ">): Promise<Uint8Array> {
    const s = this.#reads.get(req.fh);
    if (!s || s.streak < AHEAD_AFTER) return await this.ways.once(req);
    const offset = Number(req.offset);
    s.window = Math.min(AHEAD_MAX, Math.max(2 * AHEAD_BLOCK, s.window * 2));
    const end = offset + req.size;
    const first = Math.floor(offset / AHEAD_BLOCK);
    // Everything up to the window's end is asked for now; what is behind is let go.
    const last = Math.floor((end + s.window - 1) / AHEAD_BLOCK);
    for (let b = first; b <= last; b++) {
      if (!s.blocks.has(b)) s.blocks.set(b, this.#fetch(req, b));
    }
    for (const b of s.blocks.keys()) if (b < first) s.blocks.delete(b);
    const out = new Uint8Array(req.size);
    let got = 0;
    for (let b = first; got < req.size; b++) {
      const block = s.blocks.get(b) ?? this.#fetch(req, b);
      let bytes: Uint8Array;
      try {
        bytes = await block;
      } catch (e) {
        s.blocks.clear(); // asked again next time, each error in its place
        s.streak = 0;
        if (got) break; // what came before the error is the answer, as with read(2)
        throw e;
      }
      const from = offset + got - b * AHEAD_BLOCK;
      const piece = bytes.subarray(from, from + (req.size - got));
      out.set(piece, got);
      got += piece.length;
      if (bytes.length < AHEAD_BLOCK) break; // the end of the file
    }
    this.stats.hits++;
    return out.subarray(0, got);
  }

  /** The file of `node` changed: what was read ahead of it goes, on every handle. */
  forgetNode(node: number): void {
    for (const [fh, s] of this.#reads) if (s.nodeid === node) this.#reads.delete(fh);
  }

  release(fh: number): void {
    this.#reads.delete(fh);
  }

  #fetch(req: Request<"READ">, block: number): Promise<Uint8Array> {
    this.stats.blocks++;
    const p = this.ways.block(req, BigInt(block * AHEAD_BLOCK));
    // A block nobody waits for fails quietly.
    p.then(() => this.stats.settled++, () => this.stats.settled++);
    return p;
  }
}
