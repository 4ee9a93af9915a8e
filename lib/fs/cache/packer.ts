/**
 * Reading and compressing chunks off the main thread. A cold start pushes tens of
 * megabytes the profile lists; read and compressed on the thread that also runs
 * SSH (encrypting, writing, taking the window the remote opens), the link would
 * sit idle while the next megabyte is made. A worker makes them; the main thread
 * sends each as it comes.
 */
import type { ChunkCodec } from "./protocol.ts";
import { CHUNK_SIZE, RUN_CHUNKS } from "./protocol.ts";
import { maybeCompress } from "./chunks.ts";
import { bpath } from "../../sys/files.ts";
import { check, libc, O } from "../../sys/libc.ts";

/** Up to RUN_CHUNKS chunks of one file, joined and compressed together (a ChunkRun's body). */
export interface PackedRun {
  indices: number[];
  /** Each chunk's length as read. */
  lengths: number[];
  /** Compressed with the job's codec when `rawLength` > 0, else the joined chunks. */
  data: Uint8Array;
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
}

/**
 * Reads `job`'s chunks and compresses them in runs of up to RUN_CHUNKS, here and now
 * (the worker's work, the fallback's, and that of a push answering a call).
 */
export function packChunks(job: PackJob, scratch = runScratch()): PackedRun[] {
  // libc's calls, not Deno's: a failure carries its errno (EACCES reaches the program).
  const fd = check("open", libc().open(bpath(job.path), O.RDONLY | O.CLOEXEC, 0), job.path);
  try {
    const runs: PackedRun[] = [];
    for (let at = 0; at < job.indices.length; at += RUN_CHUNKS) {
      const indices = job.indices.slice(at, at + RUN_CHUNKS);
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
      runs.push({ indices, lengths, data: rawLength ? packed : raw.slice(), rawLength, size });
    }
    return runs;
  } finally {
    libc().close(fd);
  }
}

/** Worker messages: a job in, its runs (or why not) out. */
export type PackRequest = { id: number; job: PackJob };
export type PackResult = { id: number; runs: PackedRun[] } | { id: number; error: string };

/** Jobs go to one worker in order and come back in order. */
export class ChunkPacker {
  #worker: Worker | null = null;
  #next = 1;
  readonly #waiting = new Map<
    number,
    { resolve(c: PackedRun[]): void; reject(e: Error): void; job: PackJob }
  >();

  constructor() {
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
