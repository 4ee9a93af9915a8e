/**
 * Pseudo-terminals through /dev/ptmx and its ioctls (what posix_openpt, unlockpt
 * and ptsname do in glibc), and the master side's I/O for a Deno process: reads
 * wait in poll() on a worker thread, so the JS thread stays free; writes queue in
 * order and wait for room when the terminal's input buffer is full.
 */
import { Errno } from "./errno.ts";
import { check, close, errno, libc, O, open, pollEvents } from "./libc.ts";

const TIOCSPTLCK = 0x40045431n;
const TIOCGPTN = 0x80045430n;
const TIOCSWINSZ = 0x5414n;
export const TIOCSCTTY = 0x540en;
const POLLIN = 1;
const POLLOUT = 4;

export interface Pty {
  /** The master side's fd (non-blocking, close-on-exec). */
  master: number;
  /** The terminal the command opens: /dev/pts/N. */
  slavePath: string;
}

export function openPty(rows: number, cols: number): Pty {
  const master = open("/dev/ptmx", O.RDWR | O.NOCTTY | O.NONBLOCK | O.CLOEXEC);
  try {
    check("ioctl(TIOCSPTLCK)", libc().ioctl(master, TIOCSPTLCK, new Uint8Array(4)));
    const n = new Uint32Array(1);
    check("ioctl(TIOCGPTN)", libc().ioctl(master, TIOCGPTN, new Uint8Array(n.buffer)));
    setWindowSize(master, rows, cols);
    return { master, slavePath: `/dev/pts/${n[0]}` };
  } catch (err) {
    close(master);
    throw err;
  }
}

export function setWindowSize(fd: number, rows: number, cols: number): void {
  const ws = new Uint16Array([rows, cols, 0, 0]);
  check("ioctl(TIOCSWINSZ)", libc().ioctl(fd, TIOCSWINSZ, new Uint8Array(ws.buffer)));
}

async function pollFor(fd: number, events: number, timeoutMs: number): Promise<boolean> {
  return (await pollEvents(fd, events, timeoutMs)) !== 0;
}

/**
 * What the terminal's programs write, chunk by chunk, until every slave fd is closed
 * (EIO) or `stopped()` turns true (checked every 100 ms while nothing comes).
 */
export async function* readPty(fd: number, stopped: () => boolean): AsyncGenerator<Uint8Array> {
  const buf = new Uint8Array(65536);
  for (;;) {
    const n = Number(libc().read(fd, buf, BigInt(buf.length)));
    if (n > 0) {
      yield buf.slice(0, n);
      continue;
    }
    if (n === 0) return;
    const e = errno();
    if (e !== Errno.EAGAIN && e !== Errno.EINTR) return; // EIO: no slave left
    if (stopped()) return;
    await pollFor(fd, POLLIN, 100);
  }
}

/** Writes to a non-blocking fd in order, each chunk whole (waiting for room as needed). */
export function ptyWriter(fd: number): (data: Uint8Array) => Promise<void> {
  let last: Promise<void> = Promise.resolve();
  const writeAll = async (data: Uint8Array) => {
    let at = 0;
    while (at < data.length) {
      const n = Number(libc().write(fd, data.subarray(at), BigInt(data.length - at)));
      if (n > 0) {
        at += n;
        continue;
      }
      const e = errno();
      if (e !== Errno.EAGAIN && e !== Errno.EINTR) return; // gone: drop, as a closed tty would
      await pollFor(fd, POLLOUT, 1000);
    }
  };
  return (data) => (last = last.then(() => writeAll(data)));
}

/** struct termios as glibc lays it out on Linux (c_oflag at 4). */
const TERMIOS_SIZE = 64;
const OFLAG = 4;
const OPOST = 1;
const TCSANOW = 0;

/**
 * Turns off output processing of the terminal on `fd` (what cfmakeraw does, and
 * Deno's setRaw leaves on): a remote pty already turned "\n" into "\r\n", and
 * this terminal would make it "\r\r\n". Returns the function that puts it back.
 */
export function rawOutput(fd: number): () => void {
  const saved = new Uint8Array(TERMIOS_SIZE);
  if (libc().tcgetattr(fd, saved) !== 0) return () => {};
  const t = saved.slice();
  const v = new DataView(t.buffer);
  v.setUint32(OFLAG, v.getUint32(OFLAG, true) & ~OPOST, true);
  libc().tcsetattr(fd, TCSANOW, t);
  return () => void libc().tcsetattr(fd, TCSANOW, saved);
}
