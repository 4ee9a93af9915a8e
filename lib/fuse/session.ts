/**
 * One FUSE connection served over its /dev/fuse fd.
 *
 * The loop reads synchronously from the non-blocking fd; when there is nothing
 * to read it awaits poll() on a worker thread. Each request is dispatched without
 * awaiting its handler: a handler that waits on the network does not hold up the
 * others. A synchronous handler's reply is written at once; an async one's when
 * it settles. Every request that wants a reply gets exactly one.
 */
import {
  FUSE_DEV_IOC_BACKING_CLOSE,
  FUSE_DEV_IOC_BACKING_OPEN,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_MIN_READ_BUFFER,
  InitFlag,
  initFlagNames,
  MAX_STACK_DEPTH,
} from "./abi.ts";
import {
  type BackingFiles,
  type Connection,
  type Filesystem,
  FuseError,
  then,
} from "./filesystem.ts";
import {
  encodeAttr,
  encodeCreate,
  encodeData,
  encodeDirents,
  encodeEmpty,
  encodeEntry,
  encodeError,
  encodeInit,
  encodeLseek,
  encodeNotifyInvalEntry,
  encodeNotifyInvalInode,
  encodeOpen,
  encodeStatfs,
  encodeWrite,
  encodeXattrSize,
} from "./reply.ts";
import { stringBytes } from "../sys/bytes.ts";
import { opcodeInfo, parseRequest, type Request, RequestParseError } from "./request.ts";
import { Errno, errnoName } from "../sys/errno.ts";
import { close, errno, libc, SysError } from "../sys/libc.ts";
import { OUT_HEADER_SIZE } from "./abi.ts";

export interface SessionOptions {
  /**
   * With no async handler in flight, wait for the next request on this thread
   * (blocking the event loop) for up to this long before giving the event loop a
   * turn. Waking the thread that waits, rather than a poll() worker that then
   * wakes this one, halves the cost of a request when they share a CPU
   * (measured: 10.5k -> 21k LOOKUP/s). Once a wait times out, the next waits
   * asynchronously until a request comes. 0 waits only asynchronously. Default 10.
   */
  idleWaitMs?: number;
  /** Largest WRITE the kernel may send (and READ it asks for): up to 1 MiB. */
  maxWrite?: number;
  /** Ask for the writeback cache (buffered writes coalesced in the kernel). */
  writebackCache?: boolean;
  /**
   * AUTO_INVAL_DATA: the kernel checks attributes at open and drops cached pages when
   * mtime or size changed (close-to-open coherence). Default true; a filesystem that
   * announces changes with notifications turns it off and keeps its caches longer.
   */
  autoInvalData?: boolean;
  /**
   * Largest readahead the kernel may do (bytes); less than it offers makes reads of
   * mapped files smaller (a remote cache fetching by chunk moves fewer bytes).
   */
  maxReadahead?: number;
  /**
   * Ask for PASSTHROUGH: the filesystem may then answer an open with a backing file
   * the kernel reads and maps itself (`Connection.backing`). Not with writebackCache
   * (the kernel allows one or the other).
   */
  passthrough?: boolean;
  /**
   * READDIRPLUS_AUTO (default true): the kernel asks for entries with their attributes
   * on a listing's first call and when the program looked at entries since; otherwise
   * without. false: always with them (for a filesystem that has them at hand anyway:
   * `ls -l` then finds each entry's attributes known rather than asking per entry).
   */
  readdirplusAuto?: boolean;
  /** Log each request and the negotiated capabilities to stderr. */
  debug?: boolean;
  /** Where problems (a handler's unexpected exception, a bad request) are reported. */
  log?: (message: string) => void;
}

/** What we ask the kernel for; INIT keeps the part it offers. */
export const WANTED_FLAGS = InitFlag.ASYNC_READ | InitFlag.ATOMIC_O_TRUNC | InitFlag.BIG_WRITES |
  InitFlag.AUTO_INVAL_DATA | InitFlag.DO_READDIRPLUS | InitFlag.READDIRPLUS_AUTO |
  InitFlag.ASYNC_DIO | InitFlag.PARALLEL_DIROPS | InitFlag.MAX_PAGES | InitFlag.CACHE_SYMLINKS |
  InitFlag.NO_OPENDIR_SUPPORT | InitFlag.INIT_EXT;

const PAGE = 4096;
const YIELD_EVERY = 64;

type ReplyBytes = Uint8Array<ArrayBuffer>;
type ResultOf<M extends keyof Filesystem> = NonNullable<Filesystem[M]> extends
  (...a: never[]) => infer R ? Awaited<R>
  : never;
type Handler = (s: FuseSession, req: Request) => ReplyBytes | Promise<ReplyBytes> | null;

/** The errno an error carries (FuseError, SysError, or any error with a numeric errno). */
function errnoOf(err: unknown): number | null {
  if (err instanceof FuseError || err instanceof SysError) return err.errno;
  const errno = (err as { errno?: unknown } | null)?.errno;
  return typeof errno === "number" && errno > 0 ? errno : null;
}

/** Per opcode: how to call the filesystem and encode its answer. */
const HANDLERS: { [K in Request["op"]]?: Handler } = {
  LOOKUP: (s, r) => s.call("lookup", r, (e) => encodeEntry(r.header.unique, e)),
  GETATTR: (s, r) => s.call("getattr", r, (a) => encodeAttr(r.header.unique, a)),
  SETATTR: (s, r) => s.call("setattr", r, (a) => encodeAttr(r.header.unique, a)),
  READLINK: (s, r) =>
    s.call("readlink", r, (target: string) => encodeData(r.header.unique, stringBytes(target))),
  SYMLINK: (s, r) => s.call("symlink", r, (e) => encodeEntry(r.header.unique, e)),
  MKNOD: (s, r) => s.call("mknod", r, (e) => encodeEntry(r.header.unique, e)),
  MKDIR: (s, r) => s.call("mkdir", r, (e) => encodeEntry(r.header.unique, e)),
  UNLINK: (s, r) => s.call("unlink", r, () => encodeEmpty(r.header.unique)),
  RMDIR: (s, r) => s.call("rmdir", r, () => encodeEmpty(r.header.unique)),
  RENAME: (s, r) => s.call("rename", r, () => encodeEmpty(r.header.unique)),
  RENAME2: (s, r) => s.call("rename", r, () => encodeEmpty(r.header.unique)),
  LINK: (s, r) => s.call("link", r, (e) => encodeEntry(r.header.unique, e)),
  OPEN: (s, r) => s.call("open", r, (o) => encodeOpen(r.header.unique, o)),
  READ: (s, r) => {
    const req = r as Request<"READ">;
    if (!s.fs.read) return null;
    const out = s.takeReadBuffer(OUT_HEADER_SIZE + req.size);
    const into = out.subarray(OUT_HEADER_SIZE, OUT_HEADER_SIZE + req.size);
    return then(s.fs.read(req, into), (data) => {
      if (typeof data !== "number") return encodeData(req.header.unique, data);
      const reply = out.subarray(0, OUT_HEADER_SIZE + Math.max(0, Math.min(data, req.size)));
      const v = new DataView(out.buffer);
      v.setUint32(0, reply.length, true);
      v.setBigUint64(8, req.header.unique, true);
      return reply as ReplyBytes;
    });
  },
  WRITE: (s, r) => s.call("write", r, (n: number) => encodeWrite(r.header.unique, n)),
  STATFS: (s, r) => s.call("statfs", r, (st) => encodeStatfs(r.header.unique, st)),
  RELEASE: (s, r) => s.call("release", r, () => encodeEmpty(r.header.unique), true),
  FSYNC: (s, r) => s.call("fsync", r, () => encodeEmpty(r.header.unique)),
  SETXATTR: (s, r) => s.call("setxattr", r, () => encodeEmpty(r.header.unique)),
  GETXATTR: (s, r) =>
    s.call("getxattr", r, (v: Uint8Array) => xattrReply(r as Request<"GETXATTR">, v)),
  LISTXATTR: (s, r) =>
    s.call("listxattr", r, (v: Uint8Array) => xattrReply(r as Request<"LISTXATTR">, v)),
  REMOVEXATTR: (s, r) => s.call("removexattr", r, () => encodeEmpty(r.header.unique)),
  FLUSH: (s, r) => s.call("flush", r, () => encodeEmpty(r.header.unique), true),
  OPENDIR: (s, r) => s.call("opendir", r, (o) => encodeOpen(r.header.unique, o)),
  READDIR: (s, r) =>
    s.call("readdir", r, (entries) => {
      const req = r as Request<"READDIR">;
      return encodeDirents(req.header.unique, entries, req.size, false).bytes;
    }),
  READDIRPLUS: (s, r) =>
    s.call("readdirplus", r, (entries) => {
      const req = r as Request<"READDIRPLUS">;
      const { bytes, count } = encodeDirents(req.header.unique, entries, req.size, true);
      for (const unsent of entries.slice(count)) {
        if (unsent.entry && unsent.entry.nodeid !== 0) s.fs.forget?.(unsent.entry.nodeid, 1);
      }
      return bytes;
    }),
  RELEASEDIR: (s, r) => s.call("releasedir", r, () => encodeEmpty(r.header.unique), true),
  FSYNCDIR: (s, r) => s.call("fsyncdir", r, () => encodeEmpty(r.header.unique)),
  ACCESS: (s, r) => s.call("access", r, () => encodeEmpty(r.header.unique)),
  CREATE: (s, r) => s.call("create", r, (c) => encodeCreate(r.header.unique, c.entry, c.open)),
  FALLOCATE: (s, r) => s.call("fallocate", r, () => encodeEmpty(r.header.unique)),
  LSEEK: (s, r) => s.call("lseek", r, (off: bigint) => encodeLseek(r.header.unique, off)),
  COPY_FILE_RANGE: (s, r) =>
    s.call("copyFileRange", r, (n: number) => encodeWrite(r.header.unique, n)),
  SYNCFS: (s, r) => s.call("syncfs", r, () => encodeEmpty(r.header.unique)),
};

function xattrReply(req: Request<"GETXATTR" | "LISTXATTR">, value: Uint8Array): ReplyBytes {
  if (req.size === 0) return encodeXattrSize(req.header.unique, value.length);
  if (value.length > req.size) return encodeError(req.header.unique, Errno.ERANGE);
  return encodeData(req.header.unique, value);
}

export interface SessionStats {
  requests: number;
  byOp: Record<string, number>;
  errors: number;
  /** Waits for the next request that held this thread (idleWaitMs), and how many timed out. */
  threadWaits: number;
  threadWaitsTimedOut: number;
}

export class FuseSession {
  readonly #fd: number;
  readonly #maxWrite: number;
  readonly #options: SessionOptions;
  readonly #log: (message: string) => void;
  #closed = false;
  /** The fd is closed: nothing may be written to its number any more. */
  #aborted = false;
  #initialized = false;
  /**
   * Reply buffers for READ, reused: a fresh 1 MiB buffer per READ costs little at
   * once but leaves V8 collecting external memory long after (measured: LOOKUP
   * rate halved after serving 1 GiB of reads).
   */
  readonly #freeReadBuffers: Uint8Array<ArrayBuffer>[] = [];
  readonly #readBuffers = new WeakSet<ArrayBuffer>();
  /** Requests whose async handler has not settled yet, by unique id. */
  readonly #inflight = new Set<bigint>();
  connection: Connection | null = null;
  readonly stats: SessionStats = {
    requests: 0,
    byOp: {},
    errors: 0,
    threadWaits: 0,
    threadWaitsTimedOut: 0,
  };

  constructor(fd: number, readonly fs: Filesystem, options: SessionOptions = {}) {
    this.#fd = fd;
    this.#options = options;
    this.#maxWrite = Math.max(PAGE, Math.min(options.maxWrite ?? 1 << 20, 1 << 20));
    this.#log = options.log ?? ((m) => console.error(`fuse: ${m}`));
  }

  /** Serves until the filesystem is unmounted (ENODEV), DESTROY, or `close()`. */
  async serve(): Promise<void> {
    const buf = new Uint8Array(this.#maxWrite + FUSE_MIN_READ_BUFFER);
    const lib = libc();
    const idleWaitMs = Math.max(0, Math.floor(this.#options.idleWaitMs ?? 10));
    const pfd = this.#pollFd();
    let sinceYield = 0;
    /** Requests came since the last wait that timed out: the next is likely near. */
    let busy = true;
    while (!this.#closed) {
      const n = Number(lib.read(this.#fd, buf, BigInt(buf.length)));
      if (n < 0) {
        const e = errno();
        if (e === Errno.EAGAIN) {
          sinceYield = 0;
          if (busy && idleWaitMs > 0 && this.#inflight.size === 0) {
            this.stats.threadWaits++;
            if (lib.poll_sync(pfd, 1n, idleWaitMs) > 0) continue;
            this.stats.threadWaitsTimedOut++;
            // Quiet for that long: wait without holding the thread until a request
            // comes (a command computing for minutes costs no wake-ups).
            busy = false;
            await new Promise((resolve) => setTimeout(resolve, 0));
            continue;
          }
          await this.#waitReadable(pfd);
          continue;
        }
        if (e === Errno.EINTR || e === Errno.ENOENT) continue;
        if (e === Errno.ENODEV) break; // unmounted, or the connection was aborted
        throw new SysError("read /dev/fuse", e);
      }
      if (n === 0) break;
      busy = true;
      this.#dispatch(buf.slice(0, n));
      if (++sinceYield >= YIELD_EVERY) {
        sinceYield = 0;
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    }
    this.#closed = true;
  }

  /** Stops the loop at its next turn (unmounting is the caller's business). */
  close(): void {
    this.#closed = true;
  }

  /**
   * Ends the connection now: every request still waiting for an answer, and every
   * one after, fails (ENOTCONN), so no process stays stuck on a server that will
   * not answer. Closing the last fd of /dev/fuse is what aborts a connection; the
   * served fd is the only one (close-on-exec).
   */
  abort(): void {
    if (this.#aborted) return;
    this.#aborted = this.#closed = true;
    close(this.#fd);
  }

  /** struct pollfd { int fd; short events; short revents; } for POLLIN on our fd. */
  #pollFd(): Uint8Array<ArrayBuffer> {
    const pfd = new Uint8Array(8);
    const v = new DataView(pfd.buffer);
    v.setInt32(0, this.#fd, true);
    v.setInt16(4, 1, true);
    return pfd;
  }

  async #waitReadable(pfd: Uint8Array<ArrayBuffer>): Promise<void> {
    while (!this.#closed) {
      const r = await libc().poll(pfd, 1n, 500);
      if (r !== 0) return; // readable, error or hangup: the next read tells which
    }
  }

  /** A READ reply buffer of at least `size` bytes; it returns to the pool once written. */
  takeReadBuffer(size: number): Uint8Array<ArrayBuffer> {
    const capacity = OUT_HEADER_SIZE + this.#maxWrite;
    if (size > capacity) return new Uint8Array(size);
    const buf = this.#freeReadBuffers.pop() ?? new Uint8Array(capacity);
    this.#readBuffers.add(buf.buffer);
    return buf;
  }

  #write(bytes: Uint8Array<ArrayBuffer>, what: string): number {
    // An answer come after abort(): the fd's number may be another file's by now.
    if (this.#aborted) return Errno.ENODEV;
    const n = Number(libc().write(this.#fd, bytes, BigInt(bytes.length)));
    if (this.#readBuffers.has(bytes.buffer) && this.#freeReadBuffers.length < 16) {
      this.#freeReadBuffers.push(new Uint8Array(bytes.buffer));
    }
    if (n < 0) {
      const e = errno();
      // ENOENT: the request was interrupted and is gone; ENODEV: unmounted meanwhile.
      if (e !== Errno.ENOENT && e !== Errno.ENODEV) this.#log(`write ${what}: ${errnoName(e)}`);
      return e;
    }
    return 0;
  }

  /**
   * Calls `fs[method](req)` and encodes its result; ENOSYS when the method is missing
   * (`optional`: answer success instead, for RELEASE/FLUSH-like calls).
   */
  call<M extends keyof Filesystem>(
    method: M,
    req: Request,
    encode: (result: ResultOf<M>) => ReplyBytes,
    optional = false,
  ): ReplyBytes | Promise<ReplyBytes> | null {
    const f = this.fs[method] as
      | ((req: Request) => ResultOf<M> | Promise<ResultOf<M>>)
      | undefined;
    if (!f) return optional ? encodeEmpty(req.header.unique) : null;
    return then(f.call(this.fs, req), encode);
  }

  #dispatch(bytes: Uint8Array): void {
    const req = parseRequest(bytes);
    if (req instanceof RequestParseError) {
      this.stats.errors++;
      this.#log(`bad request: ${req.kind}: ${req.message}`);
      const h = req.header;
      if (h && (opcodeInfo(h.opcode)?.reply ?? true)) {
        const code = req.kind === "unknown-opcode" ? Errno.ENOSYS : Errno.EIO;
        this.#write(encodeError(h.unique, code), "error");
      }
      return;
    }
    this.stats.requests++;
    this.stats.byOp[req.op] = (this.stats.byOp[req.op] ?? 0) + 1;
    if (this.#options.debug) {
      this.#log(`<- ${req.op} #${req.header.unique} node ${req.header.nodeid}`);
    }
    switch (req.op) {
      case "INIT":
        this.#init(req);
        return;
      case "FORGET":
        this.fs.forget?.(req.header.nodeid, req.nlookup);
        return;
      case "BATCH_FORGET":
        for (const f of req.forgets) this.fs.forget?.(f.nodeid, f.nlookup);
        return;
      case "INTERRUPT":
        // A handler in flight will still answer (a normal reply to an interrupted
        // request is fine); one not read yet makes the kernel resend the interrupt.
        if (!this.#inflight.has(req.target)) {
          this.#write(encodeError(req.header.unique, Errno.EAGAIN), "interrupt");
        }
        return;
      case "DESTROY":
        try {
          this.fs.destroy?.();
        } finally {
          this.#write(encodeEmpty(req.header.unique), "destroy");
          this.#closed = true;
        }
        return;
    }
    if (!this.#initialized) {
      this.#write(encodeError(req.header.unique, Errno.EIO), "before init");
      return;
    }
    const unique = req.header.unique;
    let sent = false;
    const send = (bytes: ReplyBytes) => {
      if (sent) {
        this.#log(`request #${unique} (${req.op}) answered twice: second reply dropped`);
        return;
      }
      sent = true;
      this.#write(bytes, req.op);
    };
    const fail = (err: unknown) => {
      let code = errnoOf(err);
      if (code === null) {
        this.stats.errors++;
        this.#log(
          `${req.op} on node ${req.header.nodeid}: ${err instanceof Error ? err.stack : err}`,
        );
        code = Errno.EIO;
      }
      send(encodeError(unique, code));
    };
    const handler = HANDLERS[req.op];
    let result: ReplyBytes | Promise<ReplyBytes> | null;
    try {
      result = handler ? handler(this, req) : null;
    } catch (err) {
      fail(err);
      return;
    }
    if (result === null) {
      send(encodeError(unique, Errno.ENOSYS));
    } else if (result instanceof Promise) {
      this.#inflight.add(unique);
      result.then(send, fail).finally(() => {
        this.#inflight.delete(unique);
        if (!sent) {
          this.#log(`request #${unique} (${req.op}) was never answered: EIO`);
          send(encodeError(unique, Errno.EIO));
        }
      });
    } else {
      send(result);
    }
  }

  #init(req: Request<"INIT">): void {
    const unique = req.header.unique;
    if (req.major !== FUSE_KERNEL_VERSION) {
      this.#log(`kernel speaks FUSE ${req.major}.${req.minor}, we speak 7.x`);
      this.#write(encodeError(unique, Errno.EPROTO), "init");
      this.#closed = true;
      return;
    }
    let wanted = WANTED_FLAGS;
    if (this.#options.writebackCache) wanted |= InitFlag.WRITEBACK_CACHE;
    if (this.#options.autoInvalData === false) wanted &= ~InitFlag.AUTO_INVAL_DATA;
    if (this.#options.readdirplusAuto === false) wanted &= ~InitFlag.READDIRPLUS_AUTO;
    if (this.#options.passthrough && !this.#options.writebackCache) {
      wanted |= InitFlag.PASSTHROUGH;
    }
    const got = wanted & req.flags;
    const minor = Math.min(req.minor, FUSE_KERNEL_MINOR_VERSION);
    this.connection = {
      major: FUSE_KERNEL_VERSION,
      minor,
      flags: got,
      maxWrite: this.#maxWrite,
      maxReadahead: Math.min(req.maxReadahead, this.#options.maxReadahead ?? Infinity),
      backing: got & InitFlag.PASSTHROUGH ? this.#backingFiles() : null,
    };
    if (this.#options.debug) {
      console.error(`fuse: kernel ${req.major}.${req.minor}, speaking 7.${minor}`);
      console.error(`fuse: wanted  ${initFlagNames(wanted).join(" ")}`);
      console.error(`fuse: offered ${initFlagNames(req.flags).join(" ")}`);
      console.error(`fuse: got     ${initFlagNames(got).join(" ")}`);
    }
    this.fs.init?.(this.connection);
    this.#initialized = true;
    this.#write(
      encodeInit(unique, {
        major: FUSE_KERNEL_VERSION,
        minor: FUSE_KERNEL_MINOR_VERSION,
        maxReadahead: this.connection.maxReadahead,
        flags: got,
        maxBackground: 64,
        congestionThreshold: 48,
        maxWrite: this.#maxWrite,
        timeGran: 1,
        maxPages: Math.ceil(this.#maxWrite / PAGE),
        maxStackDepth: got & InitFlag.PASSTHROUGH ? MAX_STACK_DEPTH : 0,
      }),
      "init",
    );
  }

  /** Backing files registered on this connection's fd (ioctls of /dev/fuse). */
  #backingFiles(): BackingFiles {
    const fd = this.#fd;
    const gone = () => this.#aborted;
    return {
      open(file: number): number {
        if (gone()) throw new SysError("ioctl(FUSE_DEV_IOC_BACKING_OPEN)", Errno.ENODEV);
        // struct fuse_backing_map { s32 fd; u32 flags; u64 padding; }
        const map = new Uint8Array(16);
        new DataView(map.buffer).setInt32(0, file, true);
        const id = libc().ioctl(fd, BigInt(FUSE_DEV_IOC_BACKING_OPEN), map);
        if (id < 0) throw new SysError("ioctl(FUSE_DEV_IOC_BACKING_OPEN)", errno());
        return id;
      },
      close(id: number): void {
        if (gone()) return; // the connection took its backing files with it
        const arg = new Uint8Array(new Uint32Array([id]).buffer);
        if (libc().ioctl(fd, BigInt(FUSE_DEV_IOC_BACKING_CLOSE), arg) < 0) {
          throw new SysError("ioctl(FUSE_DEV_IOC_BACKING_CLOSE)", errno());
        }
      },
    };
  }

  /**
   * Tells the kernel to drop cached data (len 0: all; offset -1: attributes only) of
   * a node. Resolves false when the kernel refused (e.g. it holds nothing of it).
   */
  notifyInvalInode(nodeid: number, offset = 0n, length = 0n): Promise<boolean> {
    return this.#notify(encodeNotifyInvalInode(nodeid, offset, length));
  }

  /** Tells the kernel to forget the name `name` in directory `parent` (see notifyInvalInode). */
  notifyInvalEntry(parent: number, name: string): Promise<boolean> {
    return this.#notify(encodeNotifyInvalEntry(parent, name));
  }

  /**
   * A notification is written from another thread: the kernel may first wait for a
   * lock held by a request this thread has yet to answer (a lookup in the same
   * directory, a read of the same pages), and written from here that is a deadlock.
   */
  async #notify(bytes: Uint8Array<ArrayBuffer>): Promise<boolean> {
    if (this.#aborted) return false;
    const n = await libc().writeElsewhere(this.#fd, bytes, BigInt(bytes.length));
    return Number(n) === bytes.length;
  }
}
