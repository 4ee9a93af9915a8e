/**
 * The interface a filesystem implements to be served by `FuseSession`.
 *
 * It is the raw, inode-based layer (like go-fuse's RawFileSystem or fuser's
 * Filesystem): methods receive the typed request, including its node id, and
 * return the reply's content, synchronously or as a promise. Inode-based because
 * that is what the kernel speaks: lookup counts, open handles and hard links are
 * visible as they are, and a path-based filesystem (the loopback, the remote
 * mirror) layers a node table (`NodeTable`) on top rather than having this layer
 * guess paths for it. A method left out answers ENOSYS; a thrown `FuseError`
 * or `SysError` answers its errno; anything else thrown answers EIO and is logged.
 *
 * Names and symlink targets are byte strings (one char per byte): Linux names
 * are bytes, not UTF-8, and must never be mangled on the way through.
 */
import type { Request } from "./request.ts";
import type { AttrOut, DirEntry, EntryOut, OpenOut, StatfsOut } from "./reply.ts";
import { errnoName } from "../sys/errno.ts";

export type Awaitable<T> = T | Promise<T>;

/** `f(value)`, now when `value` is here, later when it is a promise (no tick lost). */
export function then<T, U>(value: Awaitable<T>, f: (v: T) => U): U | Promise<U> {
  return value instanceof Promise ? value.then(f) : f(value);
}

export class FuseError extends Error {
  override name = "FuseError";
  constructor(readonly errno: number, message?: string) {
    super(message ?? errnoName(errno));
  }
}

/** What INIT settled, handed to `Filesystem.init`. */
export interface Connection {
  major: number;
  minor: number;
  /** Capabilities we got: the kernel's offer masked by what we wanted. */
  flags: bigint;
  maxWrite: number;
  maxReadahead: number;
  /** Backing files for passthrough opens, when the kernel granted PASSTHROUGH. */
  backing: BackingFiles | null;
}

/**
 * Files the kernel reads (and maps) directly for opens answered with
 * FOPEN.PASSTHROUGH: registered once, named by id in `OpenOut.backingId`. The kernel
 * keeps the file open from `open` on; the fd passed may be closed right after.
 */
export interface BackingFiles {
  /** Registers the file open at `fd` (a regular file; needs CAP_SYS_ADMIN). */
  open(fd: number): number;
  /** Drops a registration; files opened through it keep it until they close. */
  close(id: number): void;
}

export interface Filesystem {
  init?(conn: Connection): void;
  destroy?(): void;
  lookup?(req: Request<"LOOKUP">): Awaitable<EntryOut>;
  /** No reply: the kernel dropped `nlookup` references to `nodeid`. */
  forget?(nodeid: number, nlookup: number): void;
  getattr?(req: Request<"GETATTR">): Awaitable<AttrOut>;
  setattr?(req: Request<"SETATTR">): Awaitable<AttrOut>;
  readlink?(req: Request<"READLINK">): Awaitable<string>;
  symlink?(req: Request<"SYMLINK">): Awaitable<EntryOut>;
  mknod?(req: Request<"MKNOD">): Awaitable<EntryOut>;
  mkdir?(req: Request<"MKDIR">): Awaitable<EntryOut>;
  unlink?(req: Request<"UNLINK">): Awaitable<void>;
  rmdir?(req: Request<"RMDIR">): Awaitable<void>;
  /** RENAME arrives here too, as flags 0. */
  rename?(req: Request<"RENAME" | "RENAME2">): Awaitable<void>;
  link?(req: Request<"LINK">): Awaitable<EntryOut>;
  open?(req: Request<"OPEN">): Awaitable<OpenOut>;
  /**
   * Either returns the bytes, or fills `into` (req.size bytes long) and returns the
   * count: the zero-copy path, since `into` is already the reply's buffer.
   */
  read?(req: Request<"READ">, into: Uint8Array): Awaitable<Uint8Array | number>;
  write?(req: Request<"WRITE">): Awaitable<number>;
  statfs?(req: Request<"STATFS">): Awaitable<StatfsOut>;
  release?(req: Request<"RELEASE">): Awaitable<void>;
  fsync?(req: Request<"FSYNC">): Awaitable<void>;
  setxattr?(req: Request<"SETXATTR">): Awaitable<void>;
  /** The whole value; the session answers size queries and ERANGE itself. */
  getxattr?(req: Request<"GETXATTR">): Awaitable<Uint8Array>;
  /** All names, each NUL-terminated. */
  listxattr?(req: Request<"LISTXATTR">): Awaitable<Uint8Array>;
  removexattr?(req: Request<"REMOVEXATTR">): Awaitable<void>;
  flush?(req: Request<"FLUSH">): Awaitable<void>;
  /** Left out: ENOSYS, and with NO_OPENDIR_SUPPORT the kernel stops asking. */
  opendir?(req: Request<"OPENDIR">): Awaitable<OpenOut>;
  /** Entries after `req.offset`; more than fit is fine (the rest is asked for again). */
  readdir?(req: Request<"READDIR">): Awaitable<DirEntry[]>;
  /**
   * Like readdir, each entry with its lookup (counted). Entries that do not fit in
   * req.size are handed back through `forget`, so over-returning never leaks.
   */
  readdirplus?(req: Request<"READDIRPLUS">): Awaitable<DirEntry[]>;
  releasedir?(req: Request<"RELEASEDIR">): Awaitable<void>;
  fsyncdir?(req: Request<"FSYNCDIR">): Awaitable<void>;
  access?(req: Request<"ACCESS">): Awaitable<void>;
  create?(req: Request<"CREATE">): Awaitable<{ entry: EntryOut; open: OpenOut }>;
  fallocate?(req: Request<"FALLOCATE">): Awaitable<void>;
  lseek?(req: Request<"LSEEK">): Awaitable<bigint>;
  copyFileRange?(req: Request<"COPY_FILE_RANGE">): Awaitable<number>;
  syncfs?(req: Request<"SYNCFS">): Awaitable<void>;
}
