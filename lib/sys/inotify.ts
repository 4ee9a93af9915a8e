/**
 * inotify(7): the kernel tells of changes to the entries of watched directories (and
 * to the directories themselves) as they happen, whichever process makes them.
 * Names are byte strings (see bytes.ts), as lib/fuse has them.
 */
import { byteString } from "./bytes.ts";
import { bpath } from "./files.ts";
import { check, close, libc, O, pollEvents } from "./libc.ts";

/** Event bits (linux/inotify.h). */
export const IN = {
  MODIFY: 0x2,
  ATTRIB: 0x4,
  CLOSE_WRITE: 0x8,
  MOVED_FROM: 0x40,
  MOVED_TO: 0x80,
  CREATE: 0x100,
  DELETE: 0x200,
  DELETE_SELF: 0x400,
  MOVE_SELF: 0x800,
  UNMOUNT: 0x2000,
  Q_OVERFLOW: 0x4000,
  IGNORED: 0x8000,
  ONLYDIR: 0x01000000,
  DONT_FOLLOW: 0x02000000,
  EXCL_UNLINK: 0x04000000,
  ISDIR: 0x40000000,
} as const;

export interface InotifyEvent {
  /** The watch it is about (-1 with Q_OVERFLOW: events were lost). */
  wd: number;
  mask: number;
  /** Pairs a MOVED_FROM with its MOVED_TO. */
  cookie: number;
  /** The entry's name in the watched directory; "" for the directory itself. */
  name: string;
}

/** struct inotify_event { int wd; u32 mask, cookie, len; char name[len]; } */
const HEADER = 16;

/** The events in the first `length` bytes of a read(2) of an inotify fd. */
export function parseEvents(bytes: Uint8Array, length = bytes.length): InotifyEvent[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, length);
  const events: InotifyEvent[] = [];
  for (let at = 0; at + HEADER <= length;) {
    const len = view.getUint32(at + 12, true);
    const raw = bytes.subarray(at + HEADER, at + HEADER + len);
    const nul = raw.indexOf(0); // the name is padded with NULs to an alignment
    events.push({
      wd: view.getInt32(at, true),
      mask: view.getUint32(at + 4, true),
      cookie: view.getUint32(at + 8, true),
      name: byteString(nul < 0 ? raw : raw.subarray(0, nul)),
    });
    at += HEADER + len;
  }
  return events;
}

const IN_NONBLOCK = O.NONBLOCK;
const IN_CLOEXEC = 0o2000000;
const POLLIN = 0x1;

/** One inotify instance, read without blocking. */
export class Inotify {
  readonly #buf = new Uint8Array(64 * 1024);
  #fd: number;

  constructor() {
    this.#fd = check("inotify_init1", libc().inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  }

  /**
   * Watches byte-string `path` for `mask`; the watch descriptor (the same one again
   * for a path already watched). Throws SysError (ENOSPC: the user's watches are used up).
   */
  add(path: string, mask: number): number {
    return check("inotify_add_watch", libc().inotify_add_watch(this.#fd, bpath(path), mask), path);
  }

  /**
   * Stops watch `wd` (an IGNORED event follows). Whether it was there: one gone already
   * (EINVAL) is the only way this fails, and is no error to whoever lets it go.
   */
  remove(wd: number): boolean {
    return libc().inotify_rm_watch(this.#fd, wd) === 0;
  }

  /** The events queued now (none: an empty list), without waiting. */
  read(): InotifyEvent[] {
    const events: InotifyEvent[] = [];
    for (;;) {
      const n = Number(libc().read(this.#fd, this.#buf, BigInt(this.#buf.length)));
      if (n <= 0) return events; // EAGAIN: nothing more queued
      events.push(...parseEvents(this.#buf, n));
    }
  }

  /** Resolves true once events are queued, false after `ms` without (or once closed). */
  async readable(ms: number): Promise<boolean> {
    if (this.#fd < 0) return false;
    return ((await pollEvents(this.#fd, POLLIN, ms)) & POLLIN) !== 0;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  close(): void {
    if (this.#fd < 0) return;
    close(this.#fd);
    this.#fd = -1;
  }
}
