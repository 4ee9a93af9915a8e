/**
 * Questions on the controlling terminal, as OpenSSH asks them (read_passphrase):
 * on /dev/tty, not stdin (which belongs to the command), echo off for secrets.
 * Reading is asynchronous so that the connection's timers keep running while
 * someone types. No terminal: null, and the caller goes on as under BatchMode.
 */
import { cstr, libc, O } from "../sys/libc.ts";

/** struct termios on Linux: c_lflag is the fourth u32; ECHO is 0o10. */
const TERMIOS_SIZE = 64;
const LFLAG = 12;
const ECHO = 0o10;
const ECHONL = 0o100;
const TCSANOW = 0;

let open = 0;
let spentMs = 0;

/**
 * Questions on the terminal now, and the milliseconds spent on them so far: a
 * connection's handshake timeout leaves out the time someone takes to answer.
 */
export function promptWait(): { open: number; spentMs: number } {
  return { open, spentMs };
}

export async function askTerminal(prompt: string, secret: boolean): Promise<string | null> {
  open++;
  const t0 = performance.now();
  try {
    return await ask(prompt, secret);
  } finally {
    open--;
    spentMs += performance.now() - t0;
  }
}

async function ask(prompt: string, secret: boolean): Promise<string | null> {
  let tty: Deno.FsFile;
  try {
    tty = await Deno.open("/dev/tty", { read: true, write: true });
  } catch {
    return null;
  }
  // termios belongs to the device: a second descriptor of it can switch echo.
  const fd = secret ? libc().open(cstr("/dev/tty"), O.RDWR | O.NOCTTY | O.CLOEXEC, 0) : -1;
  const saved = new Uint8Array(TERMIOS_SIZE);
  const quiet = fd >= 0 && libc().tcgetattr(fd, saved) === 0;
  try {
    if (quiet) {
      const t = saved.slice();
      const v = new DataView(t.buffer);
      v.setUint32(LFLAG, (v.getUint32(LFLAG, true) & ~ECHO) | ECHONL, true);
      libc().tcsetattr(fd, TCSANOW, t);
    }
    await tty.write(new TextEncoder().encode(prompt));
    const bytes: number[] = [];
    const buf = new Uint8Array(256);
    reading: while (true) {
      const n = await tty.read(buf);
      if (n === null) return bytes.length ? new TextDecoder().decode(new Uint8Array(bytes)) : null;
      for (let i = 0; i < n; i++) {
        if (buf[i] === 10 || buf[i] === 13) break reading;
        bytes.push(buf[i]);
      }
    }
    return new TextDecoder().decode(new Uint8Array(bytes));
  } finally {
    if (quiet) libc().tcsetattr(fd, TCSANOW, saved);
    if (fd >= 0) libc().close(fd);
    tty.close();
  }
}
