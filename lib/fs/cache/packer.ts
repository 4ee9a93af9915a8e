/**
 * Reading and compressing chunks off the main thread. A cold start pushes tens of
 * megabytes the profile lists; read and compressed on the thread that also runs
 * SSH (encrypting, writing, taking the window the remote opens), the link would
 * sit idle while the next megabyte is made. A worker makes them; the main thread
 * sends each as it comes.
 */
import type { ChunkCodec } from "./protocol.ts";
import { CHUNK_SIZE, RUN_CHUNKS } from "./protocol.ts";
import { maybeCompress, sha256 } from "./chunks.ts";
import { type KeptData, PackedStore } from "./packed.ts";
import type { LazyBytes } from "../../rpc/codec.ts";
import { bpath } from "../../sys/files.ts";
import { check, libc, O } from "../../sys/libc.ts";

/** Up to RUN_CHUNKS chunks of one file, joined and compressed together (a ChunkRun's body). */
export interface PackedRun<D extends Uint8Array | LazyBytes = Uint8Array | LazyBytes> {
  indices: number[];
  /** Each chunk's length as read. */
  lengths: number[];
  /**
   * Compressed with the job's codec when `rawLength` > 0, else the joined chunks; a
   * kept run's bytes are read as its frame is written (keptRuns).
   */
  data: D;
  rawLength: number;
  /** The joined chunks' size before compression. */
  size: number;
}

/** A buffer for one run's chunks, read before they are compressed. */
export function runScratch(): Uint8Array {
  return new Uint8Array(RUN_CHUNKS * CHUNK_SIZE);
}

export interface PackJob {
  path: string;
  /** Chunk indices to read, each below the file's chunk count. */
  indices: number[];
  /** The file's size (the last chunk is shorter). */
  size: number;
  codec: ChunkCodec;
  /**
   * With `packed`: the content id and each chunk's sha256 (32 bytes per index, in
   * the order of `indices`). Runs are then taken from that store when there, and
   * kept there when made and every chunk matches its hash.
   */
  hash?: string;
  hashes?: Uint8Array;
  /** A PackedStore's directory. */
  packed?: string;
}

const stores = new Map<string, PackedStore>();

/** The job's PackedStore (one per directory and thread), if it names one it can use. */
function storeOf(job: PackJob): PackedStore | undefined {
  if (!job.packed || !job.hash || job.hashes?.length !== 32 * job.indices.length) return;
  let store = stores.get(job.packed);
  if (!store) stores.set(job.packed, store = new PackedStore(job.packed));
  return store;
}

/**
 * All of `job`'s runs from its store, or null when one is not there (then the job is
 * packed). The file is opened all the same: what this user may no longer read is
 * not sent, and the error is the one reading it would give.
 */
export function keptRuns(job: PackJob): PackedRun<KeptData>[] | null {
  const store = storeOf(job);
  if (!store) return null;
  const runs: PackedRun<KeptData>[] = [];
  const drop = () => {
    for (const r of runs) r.data.close();
  };
  for (let at = 0; at < job.indices.length; at += RUN_CHUNKS) {
    const indices = job.indices.slice(at, at + RUN_CHUNKS);
    const kept = store.lazy(job.hash!, job.codec, indices);
    if (!kept) {
      drop();
      return null;
    }
    runs.push({ indices, ...kept, size: kept.lengths.reduce((n, l) => n + l, 0) });
  }
  try {
    libc().close(check("open", libc().open(bpath(job.path), O.RDONLY | O.CLOEXEC, 0), job.path));
  } catch (e) {
    drop();
    throw e;
  }
  return runs;
}

/** Closes the files of kept runs handed out here and never sent (see PackedStore.lazy). */
export function closeUnreadKept(): void {
  for (const store of stores.values()) store.closeUnread();
}

/**
 * Reads `job`'s chunks and compresses them in runs of up to RUN_CHUNKS, here and now
 * (the worker's work, the fallback's, and that of a push answering a call).
 */
export function packChunks(job: PackJob, scratch = runScratch()): PackedRun<Uint8Array>[] {
  // libc's calls, not Deno's: a failure carries its errno (EACCES reaches the program).
  // Opened even when every run is kept: what this user may no longer read is not sent.
  const fd = check("open", libc().open(bpath(job.path), O.RDONLY | O.CLOEXEC, 0), job.path);
  const store = storeOf(job);
  try {
    const runs: PackedRun<Uint8Array>[] = [];
    for (let at = 0; at < job.indices.length; at += RUN_CHUNKS) {
      const indices = job.indices.slice(at, at + RUN_CHUNKS);
      const kept = store?.get(job.hash!, job.codec, indices);
      if (kept) {
        const size = kept.lengths.reduce((n, l) => n + l, 0);
        runs.push({ indices, ...kept, size });
        continue;
      }
      const lengths: number[] = [];
      let size = 0;
      for (const index of indices) {
        const want = Math.min(CHUNK_SIZE, job.size - index * CHUNK_SIZE);
        let got = 0;
        while (got < want) {
          const n = Number(check(
            "read",
            libc().pread64(
              fd,
              scratch.subarray(size + got, size + want),
              BigInt(want - got),
              BigInt(index * CHUNK_SIZE + got),
            ),
            job.path,
          ));
          if (n === 0) break; // shorter than it was: its hash will not match there
          got += n;
        }
        lengths.push(got);
        size += got;
      }
      const raw = scratch.subarray(0, size);
      const [packed, rawLength] = maybeCompress(raw, job.codec);
      // What is kept must not be the scratch buffer.
      const data = rawLength ? packed : raw.slice();
      runs.push({ indices, lengths, data, rawLength, size });
      if (store && matches(raw, lengths, job.hashes!.subarray(32 * at))) {
        store.put(job.hash!, job.codec, indices, { lengths, data, rawLength });
      }
    }
    return runs;
  } finally {
    libc().close(fd);
  }
}

/** Whether the chunks joined in `raw` have the sha256es `hashes` (32 bytes each, in order). */
function matches(raw: Uint8Array, lengths: number[], hashes: Uint8Array): boolean {
  let at = 0;
  return lengths.every((l, i) => {
    const got = sha256(raw.subarray(at, at += l));
    const want = hashes.subarray(32 * i, 32 * i + 32);
    return want.length === 32 && got.every((b, k) => b === want[k]);
  });
}

/** Worker messages: a job in, its runs (or why not) out. */
export type PackRequest = { id: number; job: PackJob };
export type PackResult = { id: number; runs: PackedRun[] } | { id: number; error: string };

/**
 * Jobs go to one worker in order and come back in order; a job whose runs are all kept
 * (PackedStore) is answered here at once. The worker starts with the first job that is
 * not: a repeated cold start (every run kept) never pays for it (~60 ms of this thread
 * and ~0.2 s of a core to start one here).
 */
export class ChunkPacker {
  #worker: Worker | null = null;
  #started = false;
  #next = 1;
  readonly #waiting = new Map<
    number,
    { resolve(c: PackedRun[]): void; reject(e: Error): void; job: PackJob }
  >();

  #start(): void {
    if (this.#started) return;
    this.#started = true;
    try {
      this.#worker = new Worker(new URL("./packer_worker.ts", import.meta.url), {
        type: "module",
      });
      this.#worker.onmessage = (e: MessageEvent<PackResult>) => this.#onResult(e.data);
      this.#worker.onerror = (e) => {
        e.preventDefault();
        this.#fallBack();
      };
    } catch {
      this.#worker = null; // e.g. a build without the worker's module: the main thread packs
    }
  }

  pack(job: PackJob): Promise<PackedRun[]> {
    try {
      const kept = keptRuns(job);
      if (kept) return Promise.resolve(kept);
    } catch (e) {
      return Promise.reject(e);
    }
    this.#start();
    if (!this.#worker) return Promise.resolve().then(() => packChunks(job));
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject, job });
      this.#worker!.postMessage({ id, job } satisfies PackRequest);
    });
  }

  close(): void {
    this.#worker?.terminate();
    this.#worker = null;
    for (const w of this.#waiting.values()) w.reject(new Error("packer closed"));
    this.#waiting.clear();
  }

  #onResult(r: PackResult): void {
    const w = this.#waiting.get(r.id);
    if (!w) return;
    this.#waiting.delete(r.id);
    if ("error" in r) w.reject(new Error(r.error));
    else w.resolve(r.runs);
  }

  /** The worker died: what it was given is packed here, and so is what comes. */
  #fallBack(): void {
    this.#worker?.terminate();
    this.#worker = null;
    const waiting = [...this.#waiting.values()];
    this.#waiting.clear();
    for (const w of waiting) {
      try {
        w.resolve(packChunks(w.job));
      } catch (e) {
        w.reject(e instanceof Error ? e : new Error(String(e)));
      }
    }
  }
}
