/**
 * Reading and compressing chunks off the main thread. A cold start pushes tens of
 * megabytes the profile lists; read and compressed on the thread that also runs
 * SSH (encrypting, writing, taking the window the remote opens), the link would
 * sit idle while the next megabyte is made. A worker makes them; the main thread
 * sends each as it comes.
 */
import type { ChunkCodec } from "./protocol.ts";
import { CHUNK_SIZE } from "./protocol.ts";
import { maybeCompress } from "./chunks.ts";

export interface PackedChunk {
  index: number;
  /** Compressed with the job's codec when `rawLength` > 0, else the chunk itself. */
  data: Uint8Array;
  rawLength: number;
  /** The chunk's size before compression. */
  size: number;
}

export interface PackJob {
  path: string;
  /** Chunk indices to read, each below the file's chunk count. */
  indices: number[];
  /** The file's size (the last chunk is shorter). */
  size: number;
  codec: ChunkCodec;
}

/** Reads and compresses `job`'s chunks here and now (the worker's work, and the fallback). */
export function packChunks(job: PackJob, scratch = new Uint8Array(CHUNK_SIZE)): PackedChunk[] {
  const file = Deno.openSync(job.path);
  try {
    return job.indices.map((index) => {
      const want = Math.min(CHUNK_SIZE, job.size - index * CHUNK_SIZE);
      file.seekSync(index * CHUNK_SIZE, Deno.SeekMode.Start);
      let got = 0;
      while (got < want) {
        const n = file.readSync(scratch.subarray(got, want));
        if (n === null) break; // shorter than it was: its hash will not match there
        got += n;
      }
      const raw = scratch.subarray(0, got);
      const [packed, rawLength] = maybeCompress(raw, job.codec);
      // What is kept must not be the scratch buffer.
      return { index, data: rawLength ? packed : raw.slice(), rawLength, size: got };
    });
  } finally {
    file.close();
  }
}

/** Worker messages: a job in, its chunks (or why not) out. */
export type PackRequest = { id: number; job: PackJob };
export type PackResult = { id: number; chunks: PackedChunk[] } | { id: number; error: string };

/** Jobs go to one worker in order and come back in order. */
export class ChunkPacker {
  #worker: Worker | null = null;
  #next = 1;
  readonly #waiting = new Map<
    number,
    { resolve(c: PackedChunk[]): void; reject(e: Error): void; job: PackJob }
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

  pack(job: PackJob): Promise<PackedChunk[]> {
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
    else w.resolve(r.chunks);
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
