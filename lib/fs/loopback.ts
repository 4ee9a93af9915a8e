/**
 * A read-write mirror of a local directory, served through lib/fuse: the way the
 * FUSE layer is tested and benchmarked without any network. Every operation is
 * the matching libc call on the underlying path (or open fd), so errno values
 * are the underlying filesystem's own.
 *
 * Calls are synchronous FFI calls: a local syscall costs about a microsecond,
 * far less than a promise round (the reason `FuseSession` accepts sync answers).
 */
import {
  type AttrOut,
  type DirEntry,
  direntSize,
  type EntryOut,
  FATTR,
  type Filesystem,
  FOPEN,
  FSYNC_FDATASYNC,
  FuseError,
  GETATTR_FH,
  type Node,
  NodeTable,
  type OpenOut,
  type Request,
  type StatfsOut,
  ZERO_ATTR as NO_ATTR,
} from "../fuse/mod.ts";
import { byteString } from "../sys/bytes.ts";
import { bpath, listDir } from "../sys/files.ts";
import { Errno } from "../sys/errno.ts";
import {
  AT_FDCWD,
  AT_SYMLINK_NOFOLLOW,
  check,
  errno,
  libc,
  O,
  RENAME_EXCHANGE,
  SysError,
  UTIME_NOW,
  UTIME_OMIT,
} from "../sys/libc.ts";
import {
  decodeStat,
  decodeStatfs,
  S_IFDIR,
  S_IFMT,
  type Stat,
  STAT_SIZE,
  STATFS_SIZE,
} from "../sys/stat.ts";

export interface LoopbackOptions {
  /** The directory to mirror, as a byte string (see `utf8ByteString`). */
  root: string;
  /** Absolute byte-string paths to leave out (the mount point itself, when it lies inside). */
  hide?: string[];
  /** Seconds the kernel may cache names and attributes. */
  entryTimeout?: number;
  attrTimeout?: number;
  /**
   * Let the kernel keep a file's cached pages across opens (FOPEN_KEEP_CACHE). Right
   * when changes come only through the mount, or are announced with notifications.
   */
  keepCache?: boolean;
}

/** What LoopbackFs asks of a change watch. */
export interface DirectoryWatch {
  /** Watches directory `dir`: whether changes to its entries will be told. */
  cover(dir: Node): boolean;
  /** Seconds names and attributes of a covered directory's entries hold. */
  readonly timeout: number;
}

const DT_UNKNOWN = 0;

interface DirHandle {
  entries: { name: string; ino: bigint; type: number }[];
}

export class LoopbackFs implements Filesystem {
  readonly nodes = new NodeTable();
  readonly #root: string;
  readonly #hide: Set<string>;
  readonly #entryTimeout: number;
  readonly #attrTimeout: number;
  readonly #dirs = new Map<number, DirHandle>();
  #nextDirHandle = 1;
  readonly #statBuf = new Uint8Array(STAT_SIZE);
  readonly #asRoot = Deno.uid() === 0;
  readonly #openFlags: number;
  #watch: DirectoryWatch | null = null;

  constructor(options: LoopbackOptions) {
    this.#root = options.root.length > 1 ? options.root.replace(/\/+$/, "") : options.root;
    this.#hide = new Set(options.hide ?? []);
    this.#entryTimeout = options.entryTimeout ?? 1;
    this.#attrTimeout = options.attrTimeout ?? 1;
    this.#openFlags = options.keepCache ? FOPEN.KEEP_CACHE : 0;
  }

  /**
   * From now on the other side is told of local changes to the directories it looks
   * into (change_watch.ts): their entries' names and attributes are given for
   * `watch.timeout` seconds.
   */
  useWatch(watch: DirectoryWatch): void {
    this.#watch = watch;
  }

  /**
   * Seconds a name in directory `dir` may be kept when changes to it are told; null:
   * as the options say. `attr`: the entry's file; one with more links may change
   * through a name not watched.
   */
  #watchedTimeout(dir: Node | undefined, attr?: Stat): number | null {
    if (!this.#watch || !dir || !this.#watch.cover(dir)) return null;
    if (attr && attr.nlink > 1 && (attr.mode & S_IFMT) !== S_IFDIR) return null;
    return this.#watch.timeout;
  }

  /** Seconds `node`'s attributes `attr` may be kept. */
  #attrTimeoutOf(node: Node, attr: Stat): number {
    const dir = node === this.nodes.root ? node : node.links[0]?.parent;
    return this.#watchedTimeout(dir, attr) ?? this.#attrTimeout;
  }

  /**
   * Modes arrive with the caller's umask already applied: ours must not apply again.
   * umask is per process, so it is 0 only for the one synchronous call.
   */
  #unmasked<T>(create: () => T): T {
    const lib = libc();
    const old = lib.umask(0);
    try {
      return create();
    } finally {
      lib.umask(old);
    }
  }

  #abs(rel: string): string {
    if (rel === "") return this.#root;
    return this.#root === "/" ? `/${rel}` : `${this.#root}/${rel}`;
  }

  #node(id: number): Node {
    const node = this.nodes.get(id);
    if (!node) throw new FuseError(Errno.ESTALE, `unknown node ${id}`);
    return node;
  }

  /** The path node `id` has now (null: unknown, or removed). */
  pathOf(id: number): string | null {
    const node = this.nodes.get(id);
    const rel = node ? this.nodes.path(node) : null;
    return rel === null ? null : this.#abs(rel);
  }

  #pathOf(id: number): string {
    const rel = this.nodes.path(this.#node(id));
    if (rel === null) throw new FuseError(Errno.ENOENT, `node ${id} was removed`);
    return this.#abs(rel);
  }

  #childPath(parentId: number, name: string): string {
    // Watched before the call looks, so that no change after it goes untold.
    this.#watch?.cover(this.#node(parentId));
    const parent = this.#pathOf(parentId);
    const path = parent === "/" ? `/${name}` : `${parent}/${name}`;
    if (this.#hide.has(path)) throw new FuseError(Errno.ENOENT);
    return path;
  }

  #lstat(path: string): Stat {
    check("lstat", libc().lstat(bpath(path), this.#statBuf));
    return decodeStat(this.#statBuf);
  }

  #fstat(fd: number): Stat {
    check("fstat", libc().fstat(fd, this.#statBuf));
    return decodeStat(this.#statBuf);
  }

  #entry(node: Node, attr: Stat): EntryOut {
    const watched = this.#watchedTimeout(node.links[0]?.parent, attr);
    return {
      nodeid: node.id,
      entryTimeout: watched ?? this.#entryTimeout,
      attrTimeout: watched ?? this.#attrTimeout,
      attr,
    };
  }

  /** The node for `name` in `parent`, whose file `st` describes; counts the kernel's reference. */
  #lookupNode(parentId: number, name: string, st: Stat): EntryOut {
    const node = this.nodes.lookup(
      this.#node(parentId),
      name,
      `${st.dev}:${st.ino}`,
      (st.mode & S_IFMT) === S_IFDIR,
    );
    return this.#entry(node, st);
  }

  /** Looks up a name we just created (or linked). */
  #lookupCreated(parentId: number, name: string, path: string): EntryOut {
    return this.#lookupNode(parentId, name, this.#lstat(path));
  }

  /** New files belong to the caller, as they would on a local filesystem. */
  #chownNew(path: string, parentPath: string, uid: number, gid: number): void {
    if (!this.#asRoot) return;
    // In a set-group-ID directory the group is inherited, which the create already did.
    const parentSetgid = (this.#lstat(parentPath).mode & 0o2000) !== 0;
    check("lchown", libc().lchown(bpath(path), uid, parentSetgid ? 0xffffffff : gid));
  }

  /**
   * A name that is not there is a negative entry (node id 0) the kernel may keep as
   * long as a positive one: a program looking for itself or its tools along PATH
   * (gcc: gcc, as, collect2 in each PATH directory, several times) asked again for
   * each over the link, ~20 round trips of a warm `gcc -c` on -wan.
   */
  lookup(req: Request<"LOOKUP">): EntryOut {
    const path = this.#childPath(req.header.nodeid, req.name);
    try {
      return this.#lookupCreated(req.header.nodeid, req.name, path);
    } catch (e) {
      if (!(e instanceof SysError) || e.errno !== Errno.ENOENT) throw e;
      const timeout = this.#watchedTimeout(this.nodes.get(req.header.nodeid)) ??
        this.#entryTimeout;
      return { nodeid: 0, entryTimeout: timeout, attrTimeout: 0, attr: NO_ATTR };
    }
  }

  forget(nodeid: number, nlookup: number): void {
    this.nodes.forget(nodeid, nlookup);
  }

  getattr(req: Request<"GETATTR">): AttrOut {
    const attr = req.flags & GETATTR_FH
      ? this.#fstat(req.fh)
      : this.#lstat(this.#pathOf(req.header.nodeid));
    return { attr, attrTimeout: this.#attrTimeoutOf(this.#node(req.header.nodeid), attr) };
  }

  setattr(req: Request<"SETATTR">): AttrOut {
    const lib = libc();
    const useFd = (req.valid & FATTR.FH) !== 0;
    const path = useFd ? null : this.#pathOf(req.header.nodeid);
    const p = path === null ? null : bpath(path);
    if (req.valid & FATTR.MODE) {
      if (p) check("chmod", lib.chmod(p, req.mode & 0o7777));
      else check("fchmod", lib.fchmod(req.fh, req.mode & 0o7777));
    }
    if (req.valid & (FATTR.UID | FATTR.GID)) {
      const uid = req.valid & FATTR.UID ? req.uid : 0xffffffff;
      const gid = req.valid & FATTR.GID ? req.gid : 0xffffffff;
      if (p) check("lchown", lib.lchown(p, uid, gid));
      else check("fchown", lib.fchown(req.fh, uid, gid));
    }
    if (req.valid & FATTR.SIZE) {
      if (p) check("truncate", lib.truncate(p, req.size));
      else check("ftruncate", lib.ftruncate(req.fh, req.size));
    }
    if (req.valid & (FATTR.ATIME | FATTR.MTIME | FATTR.ATIME_NOW | FATTR.MTIME_NOW)) {
      const ts = new BigInt64Array(4);
      const put = (i: number, set: number, now: number, sec: bigint, nsec: number) => {
        if (req.valid & now) ts[i * 2 + 1] = BigInt(UTIME_NOW);
        else if (req.valid & set) [ts[i * 2], ts[i * 2 + 1]] = [sec, BigInt(nsec)];
        else ts[i * 2 + 1] = BigInt(UTIME_OMIT);
      };
      put(0, FATTR.ATIME, FATTR.ATIME_NOW, req.atimeSec, req.atimeNsec);
      put(1, FATTR.MTIME, FATTR.MTIME_NOW, req.mtimeSec, req.mtimeNsec);
      const bytes = new Uint8Array(ts.buffer);
      if (p) check("utimensat", lib.utimensat(AT_FDCWD, p, bytes, AT_SYMLINK_NOFOLLOW));
      else check("futimens", lib.futimens(req.fh, bytes));
    }
    const attr = path === null ? this.#fstat(req.fh) : this.#lstat(path);
    return { attr, attrTimeout: this.#attrTimeoutOf(this.#node(req.header.nodeid), attr) };
  }

  readlink(req: Request<"READLINK">): string {
    const buf = new Uint8Array(4097);
    const n = Number(check(
      "readlink",
      libc().readlink(bpath(this.#pathOf(req.header.nodeid)), buf, 4097n),
    ));
    return byteString(buf.subarray(0, n));
  }

  symlink(req: Request<"SYMLINK">): EntryOut {
    const path = this.#childPath(req.header.nodeid, req.name);
    check("symlink", libc().symlink(bpath(req.target), bpath(path)));
    this.#chownNew(path, this.#pathOf(req.header.nodeid), req.header.uid, req.header.gid);
    return this.#lookupCreated(req.header.nodeid, req.name, path);
  }

  mknod(req: Request<"MKNOD">): EntryOut {
    const path = this.#childPath(req.header.nodeid, req.name);
    this.#unmasked(() => check("mknod", libc().mknod(bpath(path), req.mode, BigInt(req.rdev))));
    this.#chownNew(path, this.#pathOf(req.header.nodeid), req.header.uid, req.header.gid);
    return this.#lookupCreated(req.header.nodeid, req.name, path);
  }

  mkdir(req: Request<"MKDIR">): EntryOut {
    const path = this.#childPath(req.header.nodeid, req.name);
    this.#unmasked(() => check("mkdir", libc().mkdir(bpath(path), req.mode)));
    this.#chownNew(path, this.#pathOf(req.header.nodeid), req.header.uid, req.header.gid);
    return this.#lookupCreated(req.header.nodeid, req.name, path);
  }

  unlink(req: Request<"UNLINK">): void {
    check("unlink", libc().unlink(bpath(this.#childPath(req.header.nodeid, req.name))));
    this.nodes.remove(this.#node(req.header.nodeid), req.name);
  }

  rmdir(req: Request<"RMDIR">): void {
    check("rmdir", libc().rmdir(bpath(this.#childPath(req.header.nodeid, req.name))));
    this.nodes.remove(this.#node(req.header.nodeid), req.name);
  }

  rename(req: Request<"RENAME" | "RENAME2">): void {
    const from = this.#childPath(req.header.nodeid, req.name);
    const to = this.#childPath(req.newdir, req.newName);
    check(
      "renameat2",
      libc().renameat2(AT_FDCWD, bpath(from), AT_FDCWD, bpath(to), req.flags),
    );
    const [a, b] = [this.#node(req.header.nodeid), this.#node(req.newdir)];
    if (req.flags & RENAME_EXCHANGE) this.nodes.exchange(a, req.name, b, req.newName);
    else this.nodes.rename(a, req.name, b, req.newName);
  }

  link(req: Request<"LINK">): EntryOut {
    const to = this.#childPath(req.header.nodeid, req.newName);
    check("link", libc().link(bpath(this.#pathOf(req.oldNodeid)), bpath(to)));
    return this.#lookupCreated(req.header.nodeid, req.newName, to);
  }

  open(req: Request<"OPEN">): OpenOut {
    const flags = (req.flags & ~(O.CREAT | O.EXCL | O.NOCTTY)) | O.CLOEXEC;
    const fd = check("open", libc().open(bpath(this.#pathOf(req.header.nodeid)), flags, 0));
    return { fh: fd, openFlags: this.#openFlags };
  }

  read(req: Request<"READ">, into: Uint8Array): number {
    return Number(check("pread", libc().pread64(req.fh, into, BigInt(req.size), req.offset)));
  }

  write(req: Request<"WRITE">): number {
    const data = req.data as Uint8Array<ArrayBuffer>;
    return Number(
      check("pwrite", libc().pwrite64(req.fh, data, BigInt(data.length), req.offset)),
    );
  }

  statfs(): StatfsOut {
    const buf = new Uint8Array(STATFS_SIZE);
    check("statfs", libc().statfs(bpath(this.#root), buf));
    return decodeStatfs(buf);
  }

  release(req: Request<"RELEASE">): void {
    check("close", libc().close(req.fh));
  }

  flush(): void {}

  fsync(req: Request<"FSYNC">): void {
    const lib = libc();
    if (req.fsyncFlags & FSYNC_FDATASYNC) check("fdatasync", lib.fdatasync(req.fh));
    else check("fsync", lib.fsync(req.fh));
  }

  setxattr(req: Request<"SETXATTR">): void {
    const value = req.value as Uint8Array<ArrayBuffer>;
    check(
      "lsetxattr",
      libc().lsetxattr(
        bpath(this.#pathOf(req.header.nodeid)),
        bpath(req.name),
        value,
        BigInt(value.length),
        req.flags,
      ),
    );
  }

  /** Calls `get(buf, size)` with size 0 for the length, then for the value; retries a race. */
  #sizedGet(
    call: string,
    get: (buf: Uint8Array<ArrayBuffer> | null, size: bigint) => number | bigint,
  ) {
    for (let attempt = 0; attempt < 5; attempt++) {
      const size = Number(check(call, get(null, 0n)));
      const buf = new Uint8Array(size);
      const n = Number(get(buf, BigInt(size)));
      if (n >= 0) return buf.subarray(0, n);
      const e = errno();
      if (e !== Errno.ERANGE) throw new SysError(call, e); // ERANGE: it grew meanwhile
    }
    throw new FuseError(Errno.ERANGE);
  }

  getxattr(req: Request<"GETXATTR">): Uint8Array {
    const path = bpath(this.#pathOf(req.header.nodeid));
    const name = bpath(req.name);
    return this.#sizedGet("lgetxattr", (buf, size) => libc().lgetxattr(path, name, buf, size));
  }

  listxattr(req: Request<"LISTXATTR">): Uint8Array {
    const path = bpath(this.#pathOf(req.header.nodeid));
    return this.#sizedGet("llistxattr", (buf, size) => libc().llistxattr(path, buf, size));
  }

  removexattr(req: Request<"REMOVEXATTR">): void {
    check(
      "lremovexattr",
      libc().lremovexattr(bpath(this.#pathOf(req.header.nodeid)), bpath(req.name)),
    );
  }

  opendir(req: Request<"OPENDIR">): OpenOut {
    const path = this.#pathOf(req.header.nodeid);
    const entries = listDir(path).filter((e) =>
      !this.#hide.has(path === "/" ? `/${e.name}` : `${path}/${e.name}`)
    );
    const fh = this.#nextDirHandle++;
    this.#dirs.set(fh, { entries });
    return { fh };
  }

  #dir(fh: number): DirHandle {
    const dir = this.#dirs.get(fh);
    if (!dir) throw new FuseError(Errno.EBADF);
    return dir;
  }

  readdir(req: Request<"READDIR">): DirEntry[] {
    const { entries } = this.#dir(req.fh);
    const start = Number(req.offset);
    const end = Math.min(entries.length, start + Math.ceil(req.size / 24) + 1);
    const out: DirEntry[] = [];
    for (let i = start; i < end; i++) {
      const e = entries[i];
      out.push({ name: e.name, ino: e.ino, type: e.type, nextOffset: BigInt(i + 1) });
    }
    return out;
  }

  readdirplus(req: Request<"READDIRPLUS">): DirEntry[] {
    const { entries } = this.#dir(req.fh);
    this.#watch?.cover(this.#node(req.header.nodeid));
    const parentPath = this.#pathOf(req.header.nodeid);
    const out: DirEntry[] = [];
    let used = 0;
    for (let i = Number(req.offset); i < entries.length; i++) {
      const e = entries[i];
      const size = direntSize(e.name.length, true);
      if (used + size > req.size) break;
      used += size;
      let entry: EntryOut;
      let type = e.type;
      if (e.name === "." || e.name === "..") {
        entry = { nodeid: 0, entryTimeout: 0, attrTimeout: 0, attr: ZERO_ATTR };
      } else {
        try {
          const st = this.#lstat(parentPath === "/" ? `/${e.name}` : `${parentPath}/${e.name}`);
          entry = this.#lookupNode(req.header.nodeid, e.name, st);
          if (type === DT_UNKNOWN) type = (st.mode >> 12) & 0xf;
        } catch {
          // Gone since opendir: list it without attributes.
          entry = { nodeid: 0, entryTimeout: 0, attrTimeout: 0, attr: ZERO_ATTR };
        }
      }
      out.push({ name: e.name, ino: e.ino, type, nextOffset: BigInt(i + 1), entry });
    }
    return out;
  }

  releasedir(req: Request<"RELEASEDIR">): void {
    this.#dirs.delete(req.fh);
  }

  fsyncdir(req: Request<"FSYNCDIR">): void {
    const fd = check("open", libc().open(bpath(this.#pathOf(req.header.nodeid)), O.RDONLY, 0));
    try {
      check("fsync", libc().fsync(fd));
    } finally {
      libc().close(fd);
    }
  }

  access(req: Request<"ACCESS">): void {
    check(
      "faccessat",
      libc().faccessat(AT_FDCWD, bpath(this.#pathOf(req.header.nodeid)), req.mask, 0),
    );
  }

  create(req: Request<"CREATE">): { entry: EntryOut; open: OpenOut } {
    const path = this.#childPath(req.header.nodeid, req.name);
    const flags = (req.flags & ~O.NOCTTY) | O.CREAT | O.CLOEXEC;
    const fd = this.#unmasked(() => check("open", libc().open(bpath(path), flags, req.mode)));
    try {
      this.#chownNew(path, this.#pathOf(req.header.nodeid), req.header.uid, req.header.gid);
      return {
        entry: this.#lookupNode(req.header.nodeid, req.name, this.#fstat(fd)),
        open: { fh: fd },
      };
    } catch (err) {
      libc().close(fd);
      throw err;
    }
  }

  fallocate(req: Request<"FALLOCATE">): void {
    check("fallocate", libc().fallocate(req.fh, req.mode, req.offset, req.length));
  }

  lseek(req: Request<"LSEEK">): bigint {
    return check("lseek", libc().lseek(req.fh, req.offset, req.whence));
  }

  copyFileRange(req: Request<"COPY_FILE_RANGE">): number {
    const offIn = new BigInt64Array([req.offIn]);
    const offOut = new BigInt64Array([req.offOut]);
    return Number(check(
      "copy_file_range",
      libc().copy_file_range(
        req.fhIn,
        new Uint8Array(offIn.buffer),
        req.fhOut,
        new Uint8Array(offOut.buffer),
        req.len,
        Number(req.flags),
      ),
    ));
  }
}

const ZERO_ATTR: Stat = {
  dev: 0n,
  ino: 0n,
  nlink: 0,
  mode: S_IFDIR,
  uid: 0,
  gid: 0,
  rdev: 0n,
  size: 0n,
  blksize: 0,
  blocks: 0n,
  atimeSec: 0n,
  atimeNsec: 0,
  mtimeSec: 0n,
  mtimeNsec: 0,
  ctimeSec: 0n,
  ctimeNsec: 0,
};
