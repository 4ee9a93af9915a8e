/**
 * The remote mirror with a cache: a `Filesystem` that answers reads under the
 * cached prefixes (/usr, /lib*, /etc, ...) from what the local side pushed (kept in
 * a `CacheStore` across sessions, validated once at session start) and passes
 * everything else to the plain proxy (`inner`, node ids and handles of the local
 * side) unchanged.
 *
 * Cached paths get node ids and handles of their own, from CACHE_BASE up, so the
 * two id spaces never meet. The kernel may keep what it learns of them for the
 * whole session (long entry/attr timeouts, kept page cache): a session sees the
 * local files as they were when it started, like a snapshot of system dirs.
 * A change under a cached path (write, create, rename, chmod, ...) is made on the
 * local file through the proxy: the cached node is first resolved to its local
 * node by path, and what the change touched is dropped from the cache.
 */
import {
  type Attr,
  type AttrOut,
  type DirEntry,
  type EntryOut,
  type Filesystem,
  FOPEN,
  FuseError,
  type OpenOut,
  type Request,
  type StatfsOut,
} from "../../fuse/mod.ts";
import type { RpcPeer, Value } from "../../rpc/mod.ts";
import { Errno } from "../../sys/errno.ts";
import { S_IFDIR, S_IFMT, S_IFREG } from "../../sys/stat.ts";
import { decompress } from "./chunks.ts";
import {
  CACHE_CALLS,
  CACHE_EVENTS,
  CHUNK_SIZE,
  type ChunkRequest,
  fingerprint,
  type HeldEntry,
  isCachedPath,
  type MetaRecord,
  type Push,
  type ValidateReply,
  type ValidateRequest,
} from "./protocol.ts";
import { type BlobRow, CacheCorrupt, type CacheStore } from "./store.ts";

/** Node ids and handles of cached paths start here (the local side's stay below). */
export const CACHE_BASE = 2 ** 40;
/** Seconds the kernel may keep cached names and attributes: the whole session. */
const LONG = 24 * 3600;

const O_ACCMODE = 3;
const O_TRUNC = 0o1000;

const ZERO_ATTR: Attr = {
  ino: 0n,
  size: 0n,
  blocks: 0n,
  atimeSec: 0n,
  atimeNsec: 0,
  mtimeSec: 0n,
  mtimeNsec: 0,
  ctimeSec: 0n,
  ctimeNsec: 0,
  mode: 0,
  nlink: 0,
  uid: 0,
  gid: 0,
  rdev: 0,
  blksize: 0,
};

interface CacheNode {
  id: number;
  path: string;
  nlookup: number;
  /** The local side's node for the same path, once a change needed it (one lookup held). */
  localId?: number;
}

export interface CachedFsOptions {
  peer: RpcPeer;
  inner: Filesystem;
  store: CacheStore;
  client: string;
  prefixes: readonly string[];
  log?: (line: string) => void;
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

function join(dir: string, name: string): string {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}

function isDir(m: MetaRecord): boolean {
  return m.attr !== null && (m.attr.mode & S_IFMT) === S_IFDIR;
}

export class CachedFs implements Filesystem {
  readonly hits = { meta: 0, chunk: 0 };
  readonly misses = { meta: 0, chunk: 0 };
  readonly #peer: RpcPeer;
  readonly #inner: Filesystem;
  readonly #store: CacheStore;
  readonly #client: string;
  readonly #prefixes: readonly string[];
  readonly #metas = new Map<string, MetaRecord>();
  readonly #childSets = new WeakMap<MetaRecord, Set<string>>();
  readonly #hashes = new Map<string, string>();
  readonly #nodes = new Map<number, CacheNode>();
  readonly #ids = new Map<string, number>();
  /** Local nodes whose path leads to a cached prefix ("/" and its ancestors' chain). */
  readonly #ancestors = new Map<number, string>([[1, "/"]]);
  readonly #files = new Map<number, { path: string; blob: BlobRow }>();
  readonly #dirs = new Map<number, DirEntry[]>();
  readonly #inflight = new Map<string, Promise<void>>();
  readonly #used = new Set<string>();
  #nextId = CACHE_BASE;
  #pendingMetas: MetaRecord[] = [];
  readonly #logTo?: (line: string) => void;

  constructor(o: CachedFsOptions) {
    this.#peer = o.peer;
    this.#inner = o.inner;
    this.#store = o.store;
    this.#client = o.client;
    this.#prefixes = o.prefixes;
    this.#logTo = o.log;
    this.#peer.onEvent(CACHE_EVENTS.push, (p) => this.#onPush(p as unknown as Push));
  }

  /**
   * The session's first exchange: tell the local side what is held, drop what
   * changed, and take whatever it pushes for the command about to run.
   */
  async validate(req: Omit<ValidateRequest, "held">): Promise<{ held: number; stale: number }> {
    const rows = this.#store.held(this.#client);
    const held: HeldEntry[] = rows.map((r) => {
      const blob = r.hash ? this.#store.blob(r.hash) : null;
      return [
        r.path,
        r.fp,
        blob ? r.hash! : "",
        blob ? blob.present.bits : new Uint8Array(0),
        !!r.meta.children,
      ];
    });
    for (const r of rows) {
      this.#metas.set(r.path, r.meta);
      if (r.hash) this.#hashes.set(r.path, r.hash);
    }
    const reply = await this.#call(
      CACHE_CALLS.validate,
      { ...req, held } as unknown as Value,
    ) as unknown as ValidateReply;
    this.#forgetPaths(reply.stale);
    this.#store.drop(this.#client, reply.stale);
    this.#flushMetas();
    return { held: rows.length, stale: reply.stale.length };
  }

  /** At the end of the session: mark what was used (for LRU eviction). */
  finish(): void {
    this.#flushMetas();
    const hashes = new Set<string>();
    for (const p of this.#used) {
      const h = this.#hashes.get(p);
      if (h) hashes.add(h);
    }
    this.#store.touch(this.#client, this.#used, hashes);
  }

  #call(method: string, args: Value): Promise<Value> {
    return this.#peer.call(method, args);
  }

  #onPush(p: Push): void {
    for (const m of p.metas ?? []) {
      const old = this.#metas.get(m.path);
      // A listing arrives with a directory asked for; the same directory pushed again as
      // some other directory's child comes without one: keep the listing.
      if (
        !m.children && old?.children &&
        fingerprint(old.attr, old.target) === fingerprint(m.attr, m.target)
      ) {
        continue;
      }
      this.#metas.set(m.path, m);
      this.#hashes.delete(m.path);
      this.#pendingMetas.push(m);
    }
    if (p.contents?.length) this.#flushMetas();
    for (const c of p.contents ?? []) {
      try {
        this.#store.putContent(this.#client, c);
        this.#hashes.set(c.path, c.hash);
      } catch (e) {
        this.#log(`cache: ${e}`);
      }
    }
    for (const c of p.chunks ?? []) {
      let data: Uint8Array;
      try {
        data = decompress(c.data, c.rawLength);
      } catch (e) {
        this.#log(`cache: chunk ${c.index} of ${c.hash}: ${e}`);
        continue;
      }
      if (!this.#store.writeChunk(c.hash, c.index, data)) {
        this.#log(`cache: chunk ${c.index} of ${c.hash} does not match its hash: dropped`);
      }
    }
  }

  #flushMetas(): void {
    if (!this.#pendingMetas.length) return;
    this.#store.putMetas(this.#client, this.#pendingMetas);
    this.#pendingMetas = [];
  }

  #log(line: string): void {
    this.#logTo?.(line);
  }

  // ---- metadata ----

  /** One fetch at a time per key; later askers wait for the same answer. */
  #once(key: string, f: () => Promise<unknown>): Promise<void> {
    let p = this.#inflight.get(key);
    if (!p) {
      p = f().then(() => {}).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, p);
    }
    return p;
  }

  #children(m: MetaRecord): Set<string> | null {
    if (!m.children) return null;
    let s = this.#childSets.get(m);
    if (!s) this.#childSets.set(m, s = new Set(m.children));
    return s;
  }

  async #meta(path: string): Promise<MetaRecord> {
    this.#used.add(path);
    let m = this.#metas.get(path);
    if (m) {
      this.hits.meta++;
      return m;
    }
    const parent = dirname(path);
    if (isCachedPath(parent, this.#prefixes)) {
      let pm = await this.#meta(parent);
      if (isDir(pm) && !pm.children) {
        await this.#once(`meta:${parent}`, () => this.#call(CACHE_CALLS.meta, { path: parent }));
        pm = this.#metas.get(parent) ?? pm;
      }
      const names = this.#children(pm);
      if (
        !pm.attr || (names && !names.has(path.slice(parent.length === 1 ? 1 : parent.length + 1)))
      ) {
        this.hits.meta++;
        return { path, attr: null }; // not in the listing (or no parent): no such file
      }
      m = this.#metas.get(path);
      if (m) {
        this.hits.meta++;
        return m;
      }
    }
    this.misses.meta++;
    await this.#once(`meta:${path}`, () => this.#call(CACHE_CALLS.meta, { path }));
    m = this.#metas.get(path);
    if (!m) throw new FuseError(Errno.EIO, `cache: no answer for ${path}`);
    return m;
  }

  #node(id: number): CacheNode {
    const n = this.#nodes.get(id);
    if (!n) throw new FuseError(Errno.ESTALE, `unknown cached node ${id}`);
    return n;
  }

  #entryFor(path: string, m: MetaRecord): EntryOut {
    if (!m.attr) return { nodeid: 0, entryTimeout: LONG, attrTimeout: LONG, attr: ZERO_ATTR };
    let id = this.#ids.get(path);
    let node = id === undefined ? undefined : this.#nodes.get(id);
    if (!node) {
      id = this.#nextId++;
      node = { id, path, nlookup: 0 };
      this.#nodes.set(id, node);
      this.#ids.set(path, id);
    }
    node.nlookup++;
    return { nodeid: node.id, entryTimeout: LONG, attrTimeout: LONG, attr: m.attr };
  }

  #forgetPaths(paths: Iterable<string>): void {
    for (const p of paths) {
      this.#metas.delete(p);
      this.#hashes.delete(p);
    }
  }

  // ---- Filesystem ----

  async lookup(req: Request<"LOOKUP">): Promise<EntryOut> {
    const parentId = req.header.nodeid;
    let path: string;
    if (parentId >= CACHE_BASE) {
      path = join(this.#node(parentId).path, req.name);
    } else {
      const parent = this.#ancestors.get(parentId);
      if (parent === undefined) return await this.#inner.lookup!(req);
      path = join(parent, req.name);
      if (!isCachedPath(path, this.#prefixes)) {
        const entry = await this.#inner.lookup!(req);
        if (entry.nodeid && this.#prefixes.some((p) => p.startsWith(`${path}/`))) {
          this.#ancestors.set(entry.nodeid, path);
        }
        return entry;
      }
    }
    return this.#entryFor(path, await this.#meta(path));
  }

  forget(nodeid: number, nlookup: number): void {
    if (nodeid < CACHE_BASE) return this.#inner.forget?.(nodeid, nlookup);
    const node = this.#nodes.get(nodeid);
    if (!node) return;
    node.nlookup -= nlookup;
    if (node.nlookup > 0) return;
    this.#nodes.delete(nodeid);
    if (this.#ids.get(node.path) === nodeid) this.#ids.delete(node.path);
    if (node.localId !== undefined) this.#inner.forget?.(node.localId, 1);
  }

  async getattr(req: Request<"GETATTR">): Promise<AttrOut> {
    if (req.header.nodeid < CACHE_BASE) return await this.#inner.getattr!(req);
    const m = await this.#meta(this.#node(req.header.nodeid).path);
    if (!m.attr) throw new FuseError(Errno.ENOENT);
    return { attr: m.attr, attrTimeout: LONG };
  }

  async readlink(req: Request<"READLINK">): Promise<string> {
    if (req.header.nodeid < CACHE_BASE) return await this.#inner.readlink!(req);
    const m = await this.#meta(this.#node(req.header.nodeid).path);
    if (m.target === undefined) throw new FuseError(Errno.EINVAL);
    return m.target;
  }

  async open(req: Request<"OPEN">): Promise<OpenOut> {
    if (req.header.nodeid < CACHE_BASE) return await this.#inner.open!(req);
    if ((req.flags & O_ACCMODE) !== 0 || (req.flags & O_TRUNC)) {
      return await this.#escape("open", req);
    }
    const path = this.#node(req.header.nodeid).path;
    const m = await this.#meta(path);
    if (!m.attr) throw new FuseError(Errno.ENOENT);
    if ((m.attr.mode & S_IFMT) !== S_IFREG) return await this.#escape("open", req);
    let hash = this.#hashes.get(path);
    let blob = hash ? this.#store.blob(hash) : null;
    if (!blob) {
      this.misses.chunk++;
      await this.#once(`content:${path}`, () => this.#call(CACHE_CALLS.content, { path }));
      hash = this.#hashes.get(path);
      blob = hash ? this.#store.blob(hash) : null;
      if (!blob) throw new FuseError(Errno.EIO, `cache: no content for ${path}`);
    }
    const fh = this.#nextId++;
    this.#files.set(fh, { path, blob });
    return { fh, openFlags: FOPEN.KEEP_CACHE };
  }

  async read(req: Request<"READ">, into: Uint8Array): Promise<Uint8Array | number> {
    const file = this.#files.get(req.fh);
    if (!file) return await this.#inner.read!(await this.#translated(req), into);
    const { blob } = file;
    const start = Number(req.offset);
    const end = Math.min(start + req.size, blob.size);
    if (start >= end) return 0;
    const first = Math.floor(start / CHUNK_SIZE);
    const last = Math.floor((end - 1) / CHUNK_SIZE);
    for (let attempt = 0;; attempt++) {
      const missing: number[] = [];
      for (let i = first; i <= last; i++) if (!blob.present.has(i)) missing.push(i);
      if (missing.length) {
        this.misses.chunk += missing.length;
        await this.#fetchChunks(file.path, blob, missing);
        if (missing.some((i) => !blob.present.has(i))) {
          throw new FuseError(Errno.EIO, `cache: chunks of ${file.path} did not arrive`);
        }
      } else this.hits.chunk += last - first + 1;
      try {
        for (let i = first; i <= last; i++) {
          const chunk = this.#store.readChunk(blob, i);
          const from = Math.max(start, i * CHUNK_SIZE);
          const to = Math.min(end, (i + 1) * CHUNK_SIZE);
          into.set(chunk.subarray(from - i * CHUNK_SIZE, to - i * CHUNK_SIZE), from - start);
        }
        return end - start;
      } catch (e) {
        if (!(e instanceof CacheCorrupt) || attempt > 0) throw e;
        this.#log(`cache: ${e.message}: fetching it again`);
      }
    }
  }

  async #fetchChunks(path: string, blob: BlobRow, indices: number[]): Promise<void> {
    const waits: Promise<void>[] = [];
    const ask: number[] = [];
    for (const i of indices) {
      const p = this.#inflight.get(`chunk:${blob.hash}:${i}`);
      if (p) waits.push(p);
      else ask.push(i);
    }
    if (ask.length) {
      const req: ChunkRequest = { path, hash: blob.hash, indices: ask };
      const p = this.#call(CACHE_CALLS.chunks, req as unknown as Value).then(() => {
        const fresh = this.#store.blob(blob.hash);
        if (fresh) blob.present.bits.set(fresh.present.bits);
      });
      const done = p.then(() => {}).finally(() => {
        for (const i of ask) this.#inflight.delete(`chunk:${blob.hash}:${i}`);
      });
      for (const i of ask) this.#inflight.set(`chunk:${blob.hash}:${i}`, done);
      waits.push(done);
    }
    await Promise.all(waits);
    const fresh = this.#store.blob(blob.hash);
    if (fresh) blob.present.bits.set(fresh.present.bits);
  }

  release(req: Request<"RELEASE">): void | Promise<void> {
    if (this.#files.delete(req.fh)) return;
    return this.#translated(req).then((r) => this.#inner.release!(r));
  }

  flush(req: Request<"FLUSH">): void | Promise<void> {
    if (this.#files.has(req.fh)) return;
    return this.#translated(req).then((r) => this.#inner.flush!(r));
  }

  async opendir(req: Request<"OPENDIR">): Promise<OpenOut> {
    if (req.header.nodeid < CACHE_BASE) return await this.#inner.opendir!(req);
    const path = this.#node(req.header.nodeid).path;
    let m = await this.#meta(path);
    if (isDir(m) && !m.children) {
      await this.#once(`meta:${path}`, () => this.#call(CACHE_CALLS.meta, { path }));
      m = this.#metas.get(path) ?? m;
    }
    if (!m.children) return await this.#escape("opendir", req); // too big to list: ask there
    const entries: DirEntry[] = [];
    const names = [".", "..", ...m.children];
    for (let i = 0; i < names.length; i++) {
      const name = names[i];
      const child = name === "." ? m : name === ".." ? null : this.#metas.get(join(path, name));
      const attr = child?.attr;
      entries.push({
        name,
        ino: attr?.ino ?? 0n,
        type: attr ? (attr.mode >> 12) & 0xf : 4,
        nextOffset: BigInt(i + 1),
      });
    }
    const fh = this.#nextId++;
    this.#dirs.set(fh, entries);
    return { fh, openFlags: FOPEN.KEEP_CACHE | FOPEN.CACHE_DIR };
  }

  async readdir(req: Request<"READDIR">): Promise<DirEntry[]> {
    const entries = this.#dirs.get(req.fh);
    if (!entries) return await this.#inner.readdir!(await this.#translated(req));
    return entries.slice(Number(req.offset));
  }

  async readdirplus(req: Request<"READDIRPLUS">): Promise<DirEntry[]> {
    const entries = this.#dirs.get(req.fh);
    if (!entries) return await this.#inner.readdirplus!(await this.#translated(req));
    const dir = this.#node(req.header.nodeid).path;
    return entries.slice(Number(req.offset)).map((e) => {
      if (e.name === "." || e.name === "..") {
        return { ...e, entry: { nodeid: 0, entryTimeout: 0, attrTimeout: 0, attr: ZERO_ATTR } };
      }
      const path = join(dir, e.name);
      const m = this.#metas.get(path);
      if (!m?.attr) {
        return { ...e, entry: { nodeid: 0, entryTimeout: 0, attrTimeout: 0, attr: ZERO_ATTR } };
      }
      return { ...e, entry: this.#entryFor(path, m) };
    });
  }

  releasedir(req: Request<"RELEASEDIR">): void | Promise<void> {
    if (this.#dirs.delete(req.fh)) return;
    return this.#translated(req).then((r) => this.#inner.releasedir!(r));
  }

  getxattr(req: Request<"GETXATTR">): Uint8Array | Promise<Uint8Array> {
    // Extended attributes of cached files are not carried (ls and cp ask for ACLs
    // and SELinux labels of every file: a round trip each would undo the cache).
    if (req.header.nodeid >= CACHE_BASE) throw new FuseError(Errno.ENODATA);
    return this.#inner.getxattr!(req);
  }

  listxattr(req: Request<"LISTXATTR">): Uint8Array | Promise<Uint8Array> {
    if (req.header.nodeid >= CACHE_BASE) return new Uint8Array(0);
    return this.#inner.listxattr!(req);
  }

  async statfs(req: Request<"STATFS">): Promise<StatfsOut> {
    return await this.#inner.statfs!({ ...req, header: { ...req.header, nodeid: 1 } });
  }

  async lseek(req: Request<"LSEEK">): Promise<bigint> {
    const file = this.#files.get(req.fh);
    if (!file) return await this.#inner.lseek!(await this.#translated(req));
    const SEEK_DATA = 3, SEEK_HOLE = 4;
    const size = BigInt(file.blob.size);
    if (req.offset >= size) throw new FuseError(Errno.ENXIO);
    if (req.whence === SEEK_DATA) return req.offset;
    if (req.whence === SEEK_HOLE) return size;
    throw new FuseError(Errno.EINVAL);
  }

  // ---- changes: made on the local file, then forgotten here ----

  /** The local side's node for a cached node (resolved by path once, then kept). */
  async #localId(id: number): Promise<number> {
    if (id < CACHE_BASE) return id;
    const node = this.#node(id);
    if (node.localId === undefined) {
      const entry = await this.#call(CACHE_CALLS.lookupPath, {
        path: node.path,
      }) as unknown as EntryOut;
      if (!entry?.nodeid) throw new FuseError(Errno.ENOENT);
      if (node.localId === undefined) node.localId = entry.nodeid;
      else this.#inner.forget?.(entry.nodeid, 1);
    }
    return node.localId;
  }

  async #translated<R extends Request>(req: R): Promise<R> {
    const out = {
      ...req,
      header: { ...req.header, nodeid: await this.#localId(req.header.nodeid) },
    } as R;
    const r = out as unknown as { newdir?: number; oldNodeid?: number; nodeidOut?: number };
    if (r.newdir !== undefined) r.newdir = await this.#localId(r.newdir);
    if (r.oldNodeid !== undefined) r.oldNodeid = await this.#localId(r.oldNodeid);
    if (r.nodeidOut !== undefined) r.nodeidOut = await this.#localId(r.nodeidOut);
    return out;
  }

  /** Paths of cached nodes a change to `req` may make stale. */
  #touched(req: Request): string[] {
    const out: string[] = [];
    const add = (id: number | undefined, name?: string) => {
      if (id === undefined || id < CACHE_BASE) return;
      const node = this.#nodes.get(id);
      if (!node) return;
      out.push(node.path, dirname(node.path));
      if (name !== undefined) out.push(join(node.path, name));
    };
    const r = req as unknown as {
      name?: string;
      newName?: string;
      newdir?: number;
      oldNodeid?: number;
    };
    add(req.header.nodeid, r.name);
    add(r.newdir, r.newName);
    add(r.oldNodeid);
    return out;
  }

  async #escape<M extends keyof Filesystem>(method: M, req: Request): Promise<never> {
    const translated = await this.#translated(req);
    const f = this.#inner[method] as unknown as (r: Request) => unknown;
    if (!f) throw new FuseError(Errno.ENOSYS);
    try {
      return await f.call(this.#inner, translated) as never;
    } finally {
      const stale = this.#touched(req);
      this.#forgetPaths(stale);
      this.#store.drop(this.#client, stale);
    }
  }

  setattr(req: Request<"SETATTR">) {
    return this.#escape("setattr", req) as Promise<AttrOut>;
  }
  symlink(req: Request<"SYMLINK">) {
    return this.#escape("symlink", req) as Promise<EntryOut>;
  }
  mknod(req: Request<"MKNOD">) {
    return this.#escape("mknod", req) as Promise<EntryOut>;
  }
  mkdir(req: Request<"MKDIR">) {
    return this.#escape("mkdir", req) as Promise<EntryOut>;
  }
  unlink(req: Request<"UNLINK">) {
    return this.#escape("unlink", req) as Promise<void>;
  }
  rmdir(req: Request<"RMDIR">) {
    return this.#escape("rmdir", req) as Promise<void>;
  }
  rename(req: Request<"RENAME" | "RENAME2">) {
    return this.#escape("rename", req) as Promise<void>;
  }
  link(req: Request<"LINK">) {
    return this.#escape("link", req) as Promise<EntryOut>;
  }
  create(req: Request<"CREATE">) {
    return this.#escape("create", req) as Promise<{ entry: EntryOut; open: OpenOut }>;
  }
  setxattr(req: Request<"SETXATTR">) {
    return this.#escape("setxattr", req) as Promise<void>;
  }
  removexattr(req: Request<"REMOVEXATTR">) {
    return this.#escape("removexattr", req) as Promise<void>;
  }
  access(req: Request<"ACCESS">) {
    return this.#translated(req).then((r) => this.#inner.access!(r));
  }
  async write(req: Request<"WRITE">): Promise<number> {
    if (this.#files.has(req.fh)) throw new FuseError(Errno.EBADF);
    return await this.#inner.write!(await this.#translated(req));
  }
  async fsync(req: Request<"FSYNC">): Promise<void> {
    if (this.#files.has(req.fh)) return;
    return await this.#inner.fsync!(await this.#translated(req));
  }
  async fsyncdir(req: Request<"FSYNCDIR">): Promise<void> {
    if (this.#dirs.has(req.fh)) return;
    return await this.#inner.fsyncdir!(await this.#translated(req));
  }
  async fallocate(req: Request<"FALLOCATE">): Promise<void> {
    if (this.#files.has(req.fh)) throw new FuseError(Errno.EBADF);
    return await this.#inner.fallocate!(await this.#translated(req));
  }
  async copyFileRange(req: Request<"COPY_FILE_RANGE">): Promise<number> {
    // A cached file as the source: let the kernel fall back to read + write.
    if (this.#files.has(req.fhIn) || req.nodeidOut >= CACHE_BASE) throw new FuseError(Errno.EXDEV);
    return await this.#inner.copyFileRange!(await this.#translated(req));
  }
  async syncfs(req: Request<"SYNCFS">): Promise<void> {
    return await this.#inner.syncfs?.({ ...req, header: { ...req.header, nodeid: 1 } });
  }
}
