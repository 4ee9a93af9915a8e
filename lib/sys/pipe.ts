/**
 * Pipes whose every read and write happens on a thread of Deno's, never on the
 * event loop's own.
 *
 * Why: a pipe's reader and writer take the pipe's mutex, and a process may hold
 * it for as long as a FUSE request takes (splice or sendfile of a file on the
 * mount into the pipe waits, lock held, for the file's pages). A FUSE server that
 * reads that pipe on its serving thread, even without blocking, waits for the
 * mutex in uninterruptible sleep, and the request that would free it is never
 * answered: distccd's sendfile() of its stderr file hung that way. poll(2) takes
 * no such lock, so readiness is waited for with poll, and the read or write
 * itself, which may wait for the lock, runs elsewhere.
 */
import { check, close, libc, O, pollEvents } from "./libc.ts";

export interface Pipe {
  /** Non-blocking, close-on-exec: only this process uses these two descriptions. */
  read: number;
  write: number;
}

/** A new pipe; another process takes an end through `/proc/<this pid>/fd/<fd>`. */
export function openPipe(): Pipe {
  const fds = new Int32Array(2);
  check("pipe2", libc().pipe2(new Uint8Array(fds.buffer), O.CLOEXEC | O.NONBLOCK));
  return { read: fds[0], write: fds[1] };
}

/** The path by which another process opens `fd` of this one: a pipe end opens anew. */
export function procFdPath(fd: number): string {
  return `/proc/${Deno.pid}/fd/${fd}`;
}

export function closeQuietly(fd: number): void {
  try {
    close(fd);
  } catch { /* closed already */ }
}

const POLLIN = 0x1;
const POLLOUT = 0x4;
const POLLERR = 0x8;
const POLLNVAL = 0x20;
const POLL_SLICE_MS = 100;

/**
 * The bytes written to a non-blocking pipe's read end `fd`, chunk by chunk, until
 * every writer has closed it or `stopped()` turns true (asked before each read,
 * and every POLL_SLICE_MS while the pipe is empty).
 */
export async function* readPipe(
  fd: number,
  stopped: () => boolean,
): AsyncGenerator<Uint8Array<ArrayBuffer>> {
  while (!stopped()) {
    const buf = new Uint8Array(65536);
    const n = Number(await libc().readElsewhere(fd, buf, BigInt(buf.length)));
    if (n > 0) {
      yield buf.subarray(0, n);
      continue;
    }
    if (n === 0) return;
    // -1: EAGAIN but in broken cases (errno is the other thread's to read).
    if ((await pollEvents(fd, POLLIN, POLL_SLICE_MS)) & POLLNVAL) return;
  }
}

export interface PipeWriter {
  /** Queues `data` after what came before; it is written whole unless the reader goes. */
  write(data: Uint8Array): void;
  /** Closes the write end once what was queued is written (the reader then sees EOF). */
  end(): void;
  /** Closes it now: what is queued is dropped. */
  abort(): void;
}

/** Writes to a non-blocking pipe's write end `fd`, in order; owns and closes it. */
export function pipeWriter(fd: number): PipeWriter {
  let queue: Promise<void> = Promise.resolve();
  let state: "open" | "ending" | "closed" = "open";
  let broken = false;
  const writeAll = async (data: Uint8Array) => {
    let at = 0;
    while (at < data.length && !broken && state !== "closed") {
      // A copy: it stays alive and unchanged while the other thread writes it.
      const part = data.slice(at);
      const n = Number(await libc().writeElsewhere(fd, part, BigInt(part.length)));
      if (n > 0) {
        at += n;
        continue;
      }
      // -1: the pipe is full, or its reader is gone for good (POLLERR).
      const revents = await pollEvents(fd, POLLOUT, POLL_SLICE_MS);
      if (revents & (POLLERR | POLLNVAL)) broken = true;
    }
  };
  const closeNow = () => {
    if (state === "closed") return;
    state = "closed";
    closeQuietly(fd);
  };
  return {
    write(data) {
      if (state !== "open") return;
      queue = queue.then(() => writeAll(data));
    },
    end() {
      if (state !== "open") return;
      state = "ending";
      queue = queue.then(closeNow);
    },
    abort: closeNow,
  };
}
