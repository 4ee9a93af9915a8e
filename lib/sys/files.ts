/**
 * Synchronous file calls on byte-string paths (one char per byte, as lib/fuse
 * passes names): Deno's own fs API takes UTF-8 strings and would mangle names
 * that are not UTF-8. Each throws `SysError` with the errno name.
 */
import { byteString, stringBytes } from "./bytes.ts";
import { check, libc, O } from "./libc.ts";
import { decodeStat, type Stat, STAT_SIZE } from "./stat.ts";

/** NUL-terminated bytes of a byte-string path. */
export function bpath(path: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(path.length + 1);
  out.set(stringBytes(path));
  return out;
}

const statBuf = new Uint8Array(STAT_SIZE);

export function lstatPath(path: string): Stat {
  check("lstat", libc().lstat(bpath(path), statBuf), path);
  return decodeStat(statBuf);
}

const linkBuf = new Uint8Array(4096);

export function readlinkPath(path: string): string {
  const n = Number(
    check("readlink", libc().readlink(bpath(path), linkBuf, BigInt(linkBuf.length)), path),
  );
  return byteString(linkBuf.subarray(0, n));
}

export interface RawDirent {
  name: string;
  ino: bigint;
  /** DT_* type, 0 when the filesystem does not say. */
  type: number;
}

/** Every entry of a directory, "." and ".." included, in readdir order. */
export function listDir(path: string): RawDirent[] {
  const lib = libc();
  const dir = lib.opendir(bpath(path));
  if (dir === null) check("opendir", -1, path);
  const entries: RawDirent[] = [];
  try {
    while (true) {
      const ent = lib.readdir(dir);
      if (ent === null) break;
      // struct dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name[].
      const view = new Deno.UnsafePointerView(ent);
      const raw = new Uint8Array(view.getArrayBuffer(256, 19));
      entries.push({
        name: byteString(raw.subarray(0, raw.indexOf(0))),
        ino: view.getBigUint64(0),
        type: view.getUint8(18),
      });
    }
  } finally {
    lib.closedir(dir);
  }
  return entries;
}

/** The whole content of a regular file. */
export function readWhole(path: string): Uint8Array<ArrayBuffer> {
  const lib = libc();
  const fd = check("open", lib.open(bpath(path), O.RDONLY | O.CLOEXEC, 0), path);
  try {
    const size = Number(fstatFd(fd).size);
    // One byte more than fstat said, so that reading exactly `size` bytes and then
    // EOF needs no bigger buffer (and no copy); a file that grew meanwhile does.
    let out = new Uint8Array(size + 1);
    let done = 0;
    while (true) {
      if (done === out.length) {
        const bigger = new Uint8Array(out.length * 2);
        bigger.set(out);
        out = bigger;
      }
      const n = Number(
        check(
          "read",
          lib.pread64(fd, out.subarray(done), BigInt(out.length - done), BigInt(done)),
          path,
        ),
      );
      if (n === 0) break;
      done += n;
    }
    return out.subarray(0, done);
  } finally {
    lib.close(fd);
  }
}

/** fstat of an open file. */
export function fstatFd(fd: number): Stat {
  check("fstat", libc().fstat(fd, statBuf));
  return decodeStat(statBuf);
}

const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;

/**
 * Makes the pipe behind `fd` hold up to `bytes` (or the most the kernel allows of
 * smaller sizes tried after it); returns its capacity, or null when `fd` is no pipe.
 *
 * sshd writes a session's input into the command's stdin pipe as the command reads
 * it, at most a pipe's capacity per turn of its loop. With the default 64 KiB, a
 * command that reads megabytes leaves sshd holding most of them in buffers it grows
 * and copies again and again: 25 MB took ~1.1 s to cross on the test bed, 0.45 s
 * with a 1 MiB pipe.
 */
export function growPipe(fd: number, bytes = 1024 * 1024): number | null {
  const now = libc().fcntl(fd, F_GETPIPE_SZ, 0);
  if (now < 0) return null;
  for (let size = bytes; size > now; size >>= 1) {
    const got = libc().fcntl(fd, F_SETPIPE_SZ, size);
    if (got >= size) return got;
  }
  return now;
}
