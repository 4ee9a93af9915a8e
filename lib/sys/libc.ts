/**
 * Deno FFI bindings to the libc calls Deno itself lacks (mount, chroot, xattrs,
 * mknod, pread/pwrite on raw fds, poll, ...). Every wrapper throws `SysError`
 * carrying the errno and its name, read right after the call on the same thread.
 *
 * Calls are synchronous except `poll`, `readElsewhere` and `writeElsewhere`, which
 * run on a thread of Deno's so the event loop stays free while they wait.
 */
import { errnoName } from "./errno.ts";

export class SysError extends Error {
  override name = "SysError";
  readonly code: string;
  constructor(readonly call: string, readonly errno: number, readonly path?: string) {
    super(`${call}${path === undefined ? "" : ` ${path}`}: ${errnoName(errno)}`);
    this.code = errnoName(errno);
  }
}

const symbols = {
  __errno_location: { parameters: [], result: "pointer" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** write(2) on a thread of Deno's: for writes that may wait on this thread's own work. */
  writeElsewhere: {
    name: "write",
    parameters: ["i32", "buffer", "usize"],
    result: "isize",
    nonblocking: true,
  },
  /** read(2) on a thread of Deno's: for reads that may wait on this thread's own work. */
  readElsewhere: {
    name: "read",
    parameters: ["i32", "buffer", "usize"],
    result: "isize",
    nonblocking: true,
  },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  pread64: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  pwrite64: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  poll_sync: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32" },
  lstat: { parameters: ["buffer", "buffer"], result: "i32" },
  stat: { parameters: ["buffer", "buffer"], result: "i32" },
  fstat: { parameters: ["i32", "buffer"], result: "i32" },
  statfs: { parameters: ["buffer", "buffer"], result: "i32" },
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  symlink: { parameters: ["buffer", "buffer"], result: "i32" },
  mknod: { parameters: ["buffer", "u32", "u64"], result: "i32" },
  mkdir: { parameters: ["buffer", "u32"], result: "i32" },
  unlink: { parameters: ["buffer"], result: "i32" },
  rmdir: { parameters: ["buffer"], result: "i32" },
  renameat2: { parameters: ["i32", "buffer", "i32", "buffer", "u32"], result: "i32" },
  link: { parameters: ["buffer", "buffer"], result: "i32" },
  chmod: { parameters: ["buffer", "u32"], result: "i32" },
  fchmod: { parameters: ["i32", "u32"], result: "i32" },
  lchown: { parameters: ["buffer", "u32", "u32"], result: "i32" },
  fchown: { parameters: ["i32", "u32", "u32"], result: "i32" },
  truncate: { parameters: ["buffer", "i64"], result: "i32" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  utimensat: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  futimens: { parameters: ["i32", "buffer"], result: "i32" },
  fsync: { parameters: ["i32"], result: "i32" },
  fdatasync: { parameters: ["i32"], result: "i32" },
  lsetxattr: { parameters: ["buffer", "buffer", "buffer", "usize", "i32"], result: "i32" },
  lgetxattr: { parameters: ["buffer", "buffer", "buffer", "usize"], result: "isize" },
  llistxattr: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  lremovexattr: { parameters: ["buffer", "buffer"], result: "i32" },
  faccessat: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  copy_file_range: {
    parameters: ["i32", "buffer", "i32", "buffer", "usize", "u32"],
    result: "isize",
  },
  opendir: { parameters: ["buffer"], result: "pointer" },
  readdir: { parameters: ["pointer"], result: "pointer" },
  closedir: { parameters: ["pointer"], result: "i32" },
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  chroot: { parameters: ["buffer"], result: "i32" },
  chdir: { parameters: ["buffer"], result: "i32" },
  unshare: { parameters: ["i32"], result: "i32" },
  setns: { parameters: ["i32", "i32"], result: "i32" },
  setgroups: { parameters: ["usize", "buffer"], result: "i32" },
  setresgid: { parameters: ["u32", "u32", "u32"], result: "i32" },
  setresuid: { parameters: ["u32", "u32", "u32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  /** fcntl(2) with an int argument (F_SETPIPE_SZ, F_GETPIPE_SZ, ...). */
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  umask: { parameters: ["u32"], result: "u32" },
  inotify_init1: { parameters: ["i32"], result: "i32" },
  inotify_add_watch: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  inotify_rm_watch: { parameters: ["i32", "i32"], result: "i32" },
  execve: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
  setsid: { parameters: [], result: "i32" },
  signal: { parameters: ["i32", "pointer"], result: "pointer" },
  setpgid: { parameters: ["i32", "i32"], result: "i32" },
  /** prctl(2) with one argument (PR_SET_PDEATHSIG, ...). */
  prctl: { parameters: ["i32", "u64"], result: "i32" },
  dup2: { parameters: ["i32", "i32"], result: "i32" },
  tcgetattr: { parameters: ["i32", "buffer"], result: "i32" },
  tcsetattr: { parameters: ["i32", "i32", "buffer"], result: "i32" },
} as const;

let lib: Deno.DynamicLibrary<typeof symbols> | null = null;

/** The raw symbols; opened on first use so importing this module costs nothing. */
export function libc(): Deno.DynamicLibrary<typeof symbols>["symbols"] {
  if (lib === null) lib = Deno.dlopen("libc.so.6", symbols);
  return lib.symbols;
}

/** errno of the last failed synchronous call on this (the main) thread. */
export function errno(): number {
  const p = libc().__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

const encoder = new TextEncoder();

/** A NUL-terminated copy of `s` for passing as `const char *`. */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(encoder.encode(s).length + 1);
  encoder.encodeInto(s, bytes);
  return bytes;
}

/** Throws `SysError(call)` when `result` is -1; returns it otherwise. */
export function check<T extends number | bigint>(call: string, result: T, path?: string): T {
  if (result === -1 || result === -1n) throw new SysError(call, errno(), path);
  return result;
}

export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  ACCMODE: 3,
  CREAT: 0o100,
  EXCL: 0o200,
  NOCTTY: 0o400,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  NONBLOCK: 0o4000,
  DIRECTORY: 0o200000,
  NOFOLLOW: 0o400000,
  CLOEXEC: 0o2000000,
  PATH: 0o10000000,
} as const;

export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_EACCESS = 0x200;
export const UTIME_NOW = (1 << 30) - 1;
export const UTIME_OMIT = (1 << 30) - 2;
/** renameat2(2): the two names trade files. */
export const RENAME_EXCHANGE = 2;

export function open(path: string, flags: number, mode = 0): number {
  return check("open", libc().open(cstr(path), flags, mode), path);
}

export function close(fd: number): void {
  check("close", libc().close(fd));
}

/** A NULL-terminated array of C strings (argv, envp); keep the result alive across the call. */
export function cStringArray(
  items: string[],
): { array: Uint8Array<ArrayBuffer>; keep: Uint8Array[] } {
  const keep = items.map(cstr);
  const pointers = new BigUint64Array(items.length + 1);
  keep.forEach((
    b,
    i,
  ) => (pointers[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b)))));
  return { array: new Uint8Array(pointers.buffer), keep };
}

/**
 * Waits up to `ms` for `events` (POLLIN 1, POLLOUT 4) on `fd`, on a thread of Deno's;
 * returns the revents (0: the time ran out).
 */
export async function pollEvents(fd: number, events: number, ms: number): Promise<number> {
  const pfd = new Uint8Array(8); // struct pollfd { int fd; short events; short revents; }
  const view = new DataView(pfd.buffer);
  view.setInt32(0, fd, true);
  view.setInt16(4, events, true);
  await libc().poll(pfd, 1n, ms);
  return view.getInt16(6, true);
}

export const CLONE_NEWNS = 0x00020000;
