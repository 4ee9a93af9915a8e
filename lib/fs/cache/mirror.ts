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
  type AttrOut,
  type BackingFiles,
  type Connection,
  type DirEntry,
  type EntryOut,
  type Filesystem,
  FOPEN,
  FuseError,
  type OpenOut,
  type Request,
  type StatfsOut,
  then,
  ZERO_ATTR,
} from "../../fuse/mod.ts";
import type { BulkCodec, Invalidation } from "../file_wire.ts";
import { type RpcPeer, TypedPeer } from "../../rpc/mod.ts";
import { Errno } from "../../sys/errno.ts";
import { libc, O, RENAME_EXCHANGE } from "../../sys/libc.ts";
import { S_IFMT, S_IFREG } from "../../sys/stat.ts";
import { bulkCodec, RunUnpacker } from "./chunks.ts";
import {
  CACHE_CALLS,
  CACHE_EVENTS,
  type CacheCalls,
  type CacheEvents,
  CHUNK_SIZE,
  type ChunkRequest,
  dirname,
  fingerprint,
  type HeldColumns,
  isCachedPath,
  isDir,
  join,
  type MetaRecord,
  packHeld,
  type Profile,
  type Push,
  unpackMeta,
  type ValidateReply,
  type ValidateRequest,
} from "./protocol.ts";
import { type BlobRow, CacheCorrupt, type CacheStore, type HeldMeta } from "./store.ts";
import { UsageRecorder } from "./usage.ts";
import { CACHE_BASE, CachedNodes, movedPath } from "./nodes.ts";
import { MetaIndex } from "./meta_index.ts";
import { DeferredIndexWrites } from "./index_writes.ts";

/** All the store holds for a client as a validation sends it, and its change count then. */
interface HeldList {
  gen: number;
  held: HeldColumns;
  /** Keeps it in the store for the next start (a turn later). */
  keep(): void;
}

/** Seconds the kernel may keep cached names and attributes: the whole session. */
const LONG = 24 * 3600;

export interface CachedFsOptions {
  peer: RpcPeer;
  /** `changed`: told of local changes outside the cache (ProxyFs has it). */
  inner: Filesystem & { changed?(changes: Invalidation[]): void };
  store: CacheStore;
  client: string;
  prefixes: readonly string[];
  /**
   * Makes the kernel drop what it keeps of paths found stale: a mount shared by many
   * commands (ControlMaster) revalidates before each, with its kernel caches full.
   * `node` is the path's node id if the kernel knows one, `parent` its directory's.
   */
  invalidate?: (stale: Invalidation[]) => Promise<void>;
  /**
   * Let the kernel read whole cached files from the store itself (FUSE passthrough,
   * when the connection has it). Default true.
   */
  passthrough?: boolean;
  log?: (line: string) => void;
}

/** What readdirplus gives for "." and "..", or a name gone since: no entry (not counted). */
const NO_ENTRY: EntryOut = { nodeid: 0, entryTimeout: 0, attrTimeout: 0, attr: ZERO_ATTR };

/** Names a command's start checks first at most (its own and earlier runs'). */
const HOT_MAX = 4096;

export class CachedFs implements Filesystem {
  /** `direct`: opens handed to the kernel (passthrough), whose reads are not seen. */
  readonly hits = { meta: 0, chunk: 0, direct: 0 };
  readonly misses = { meta: 0, chunk: 0 };
  /** The last validation: paths held (as far as known here) and found stale. */
  readonly validation = { held: 0, stale: 0, checkedFirst: 0, restWaits: 0 };
  readonly #peer: RpcPeer;
  /** The cache's calls and events on it, typed. */
  readonly #rpc: TypedPeer<CacheCalls, CacheEvents>;
  readonly #inner: CachedFsOptions["inner"];
  readonly #store: CacheStore;
  readonly #client: string;
  readonly #prefixes: readonly string[];
  /** The metas and content ids known here: pushed, held, or read from the store. */
  readonly #index: MetaIndex;
  /** The kernel's nodes for cached paths. */
  readonly #nodes = new CachedNodes();
  /** Local nodes whose path leads to a cached prefix ("/" and its ancestors' chain). */
  readonly #ancestors = new Map<number, string>([[1, "/"]]);
  readonly #files = new Map<number, { path: string; blob: BlobRow; direct: boolean }>();
  /**
   * Open handles of each cached node, by kind: passthrough ones (`direct`) and the
   * others. The kernel refuses (EIO) an open of the other kind while one is open.
   */
  readonly #opens = new Map<number, { direct: number; cached: number }>();
  /**
   * Blobs that got chunks this session: read through here (what the command reads of
   * them is its profile; a library pushed whole ahead of being read would otherwise
   * count as wholly used), never by the kernel itself.
   */
  readonly #filledHere = new Set<string>();
  /** The kernel's ids of blobs it reads itself (registered once a session). */
  readonly #backingIds = new Map<string, number>();
  #backing: BackingFiles | null = null;
  readonly #passthrough: boolean;
  readonly #dirs = new Map<number, DirEntry[]>();
  readonly #inflight = new Map<string, Promise<void>>();
  /** What this session used: its executable's next profile. */
  readonly #usage = new UsageRecorder();
  /** Handles of cached files and listings (from CACHE_BASE up, as their nodes). */
  #nextHandle = CACHE_BASE;
  /** Pushed names and content ids, written to the store's index at `finish`. */
  readonly #deferred: DeferredIndexWrites;
  /** Lookups of local nodes answered ahead: "parent/name" -> entry (used once). */
  readonly #ahead = new Map<string, EntryOut>();
  #rootAttr: AttrOut | null = null;
  /**
   * Chunks a validation's answer said follow it (hash -> indices), until the local side
   * says all are sent: a read that needs one waits for a push instead of asking.
   */
  #incoming = new Map<string, Set<number>>();
  /** Decompresses a push's runs (a view each, until the next push). */
  readonly #runs = new RunUnpacker();
  #finished = false;
  /** Resolves at the next push (or the end of the announced ones), then is replaced. */
  #arrival = Promise.withResolvers<void>();
  readonly #logTo?: (line: string) => void;
  readonly #invalidate?: (stale: Invalidation[]) => Promise<void>;
  /**
   * Paths pushed while a validation's answer is awaited: the local side pushes what
   * changed of the profile before answering, and its answer then lists those paths as
   * stale (what the store held of them); the fresh pushes are kept.
   */
  #pushedSince: Set<string> | null = null;
  /** The validation's answer, when the local side sends it unasked (an empty store). */
  readonly #answered = Promise.withResolvers<ValidateReply>();
  /**
   * What the command used last time is checked before it starts, all the store holds
   * (validateRest) while it runs. Until that answer is here, a name not checked first
   * (held, or not: the command's profile comes with that answer) waits for it.
   */
  #restChecked: Promise<void> | null = null;
  /** The command validated for (one-command sessions), and its names checked first. */
  #exe: string | null = null;
  #checkedFirst: string[] = [];
  /** Resolves when the kernel has dropped what the last validation found stale. */
  settled: Promise<void> = Promise.resolve();

  constructor(o: CachedFsOptions) {
    this.#invalidate = o.invalidate;
    this.#peer = o.peer;
    this.#rpc = new TypedPeer(o.peer);
    this.#inner = o.inner;
    this.#store = o.store;
    this.#client = o.client;
    this.#index = new MetaIndex(o.store, o.client);
    this.#deferred = new DeferredIndexWrites(o.store, o.client);
    this.#prefixes = o.prefixes;
    this.#logTo = o.log;
    this.#passthrough = o.passthrough ?? true;
    // Transient: a push's chunks are written to the store (and its other bytes copied
    // into it) before the handler returns, so they may be views of the read buffer.
    this.#rpc.onEvent(CACHE_EVENTS.push, (p) => {
      // A command may end before its profile's last chunks come: what follows the end
      // of the session is dropped (its store is closed by then).
      if (this.#finished) return;
      this.#onPush(p);
      this.#arrived();
    }, { transient: true });
    this.#rpc.onEvent(CACHE_EVENTS.pushed, () => {
      this.#incoming.clear();
      this.#arrived();
    });
    this.#rpc.onEvent(CACHE_EVENTS.validated, (r) => this.#answered.resolve(r));
    this.#rpc.onEvent(CACHE_EVENTS.revalidated, (reply) => {
      this.#apply(reply);
      this.#log(`cache: revalidated: ${reply.stale.length} stale, ${reply.ahead.length} ahead`);
    });
  }

  /**
   * The session's first exchange: tell the local side what is held, drop what
   * changed, and take whatever it pushes for the command about to run. A mount
   * shared by many commands calls it again before each: a changed path then also
   * gets a new node id, so the kernel (once its short timeout is over) sees a new
   * inode, not the old one's pages.
   */
  async validate(
    req: Omit<ValidateRequest, "held" | "rest">,
    /** The local side sends the answer for an empty store unasked (RunRequest.validatedAhead). */
    answeredAhead = false,
  ): Promise<{ held: number; stale: number }> {
    // What this command used in its last runs here is checked before it starts; the
    // rest is asked for right after and checked while it runs: each held name costs
    // ~50 us a start, and a client holds thousands (other commands' names).
    const used = !answeredAhead && req.exe ? this.#store.hotPaths(this.#client, req.exe) : null;
    const codec = bulkCodec();
    const pushed = this.#pushedSince = new Set<string>();
    const turn = () => new Promise((resolve) => setTimeout(resolve, 0));
    let held: number;
    let answer: Promise<ValidateReply>;
    let restAnswer: Promise<{ reply: ValidateReply; list: HeldList }> | null = null;
    let metas: () => HeldMeta[] = () => [];
    // The metas checked first are read while the answer comes, once the request has
    // left (a stream's write goes in a later microtask: what this turn does holds it).
    const metasRead = turn().then(() => {
      for (const row of metas()) this.#index.hold(row);
    });
    const hot = used ? this.#store.heldState(this.#client, used) : null;
    this.#checkedFirst = hot?.map((r) => r[0]) ?? [];
    const count = hot ? this.#store.heldCount(this.#client) : 0;
    // All it holds is what the command used: checked at once, as without a record.
    if (hot && hot.length < count) {
      held = count;
      answer = this.#rpc.call(CACHE_CALLS.validate, {
        ...req,
        held: packHeld(hot, codec),
        rest: true,
      });
      metas = () => this.#store.heldMetas(this.#client, this.#checkedFirst);
      // Then the whole list; the other names' metas stay in the store until used.
      restAnswer = metasRead.then(() => {
        const list = this.#heldList(codec);
        const reply = this.#rpc.call(CACHE_CALLS.validateRest, {
          held: list.held,
          exe: req.exe,
          prefetch: req.prefetch,
        });
        list.keep();
        return reply.then((r) => ({ reply: r, list }));
      });
      restAnswer.catch(() => {}); // waited for below, unless the first answer fails
    } else {
      const list = this.#heldList(codec);
      held = list.held.count;
      // Holding something after all (another session filled the store meanwhile): that
      // must be checked, so asked as usual (the answer sent ahead is then not used).
      answer = answeredAhead && !held
        ? Promise.race([
          this.#answered.promise,
          this.#peer.closed.then((e) => Promise.reject(e)),
        ])
        : this.#rpc.call(CACHE_CALLS.validate, { ...req, held: list.held });
      list.keep();
      metas = () => this.#store.heldMetas(this.#client);
    }
    this.#exe = req.exe;
    let reply: ValidateReply;
    try {
      reply = await answer;
      await metasRead;
    } finally {
      if (!restAnswer) this.#pushedSince = null;
    }
    const first = restAnswer ? this.#checkedFirst.length : 0;
    this.validation.held = held;
    this.validation.checkedFirst = first;
    this.validation.restWaits = 0;
    this.#apply(reply, pushed);
    this.#expect(reply.incoming);
    this.#log(
      `cache: validate: ${held} held${restAnswer ? ` (${first} checked first)` : ""}, ` +
        `${reply.stale.length} stale, ${reply.ahead.length} ahead`,
    );
    if (restAnswer) {
      this.#restChecked = restAnswer.then(
        ({ reply, list }) => {
          // After the session's end (a short command) the store is closed: what it found
          // stale stays held, and the next start finds it stale again before any use.
          if (this.#finished) return;
          this.validation.stale += reply.stale.length;
          this.#dropStale(reply.stale, pushed);
          this.#expect(reply.incoming);
          this.#index.setChecked(list); // its stale names gone from the store first
          this.#log(`cache: validate: the other ${held - first}: ${reply.stale.length} stale`);
        },
      ).catch((e) => this.#log(`cache: validateRest: ${e}`)).finally(() => {
        this.#restChecked = null;
        this.#pushedSince = null;
      });
    }
    return { held, stale: reply.stale.length };
  }

  /**
   * All the store holds for this client as a validation sends it: as kept from an
   * earlier start if no name changed since, else read and packed (~100 ms for 6,500
   * names in a new agent), and then kept (`keep`: a turn later, the request gone).
   */
  #heldList(codec: BulkCodec): HeldList {
    const kept = this.#store.heldSnapshot(this.#client);
    if (kept) return { ...kept, keep() {} };
    const { gen, rows } = this.#store.heldNow(this.#client);
    const held = packHeld(rows, codec);
    const keep = () => {
      if (this.#finished) return;
      try {
        this.#store.keepHeldSnapshot(this.#client, gen, held);
      } catch (e) {
        this.#log(`cache: keeping the held list: ${e}`);
      }
    };
    return { gen, held, keep: () => setTimeout(keep, 0) };
  }

  /** Chunks announced by an answer: a read that needs one waits for it, not asks. */
  #expect(incoming: ValidateReply["incoming"]): void {
    for (const { hash, indices } of incoming ?? []) {
      let set = this.#incoming.get(hash);
      if (!set) this.#incoming.set(hash, set = new Set());
      for (const i of indices) set.add(i);
    }
  }

  /**
   * A validation's answer, asked for (validate) or sent ahead of a command (revalidated).
   * `pushed`: paths pushed since it was asked for, whose fresh metas and content ids
   * stand (what is stale is what the store held of them).
   */
  #apply(reply: ValidateReply, pushed?: Set<string>): void {
    // Answers ahead are for the command they came with: the local side's lookups
    // an earlier one left unused are given back.
    for (const entry of this.#ahead.values()) {
      if (entry.nodeid) this.#inner.forget?.(entry.nodeid, 1);
    }
    this.#ahead.clear();
    for (const [parent, name, entry] of reply.ahead) this.#ahead.set(`${parent}/${name}`, entry);
    this.#rootAttr = reply.root;
    this.validation.stale = reply.stale.length;
    this.#dropStale(reply.stale, pushed);
  }

  /** Forgets what changed there (the kernel too, on a shared mount), but fresh pushes. */
  #dropStale(staleList: string[], pushed?: Set<string>): void {
    if (this.#invalidate && staleList.length) {
      const stale = staleList.map((p) => ({
        parent: this.#nodeOfPath(dirname(p)),
        name: p.slice(p.lastIndexOf("/") + 1),
        node: this.#nodes.idOf(p) ?? null,
      }));
      const invalidate = this.#invalidate;
      this.settled = this.settled.then(() => invalidate(stale)).catch((e) =>
        this.#log(`cache: invalidate: ${e}`)
      );
    }
    const gone = pushed ? staleList.filter((p) => !pushed.has(p)) : staleList;
    this.#index.forget(gone);
    for (const p of staleList) this.#nodes.detach(p);
    // A fresh push's row is written over the stale one (putMetas) at the end.
    this.#deferred.drop(gone);
  }

  /** What this session used of the cached paths (the executable's next profile). */
  used(): Profile {
    return this.#usage.since(0);
  }

  /** A mark for `usedSince`: what was used so far. */
  usedMark(): number {
    return this.#usage.mark();
  }

  /**
   * What was first used after `mark`. For a command on a shared mount: what it used
   * that no command before it had, plus what others running beside it did.
   */
  usedSince(mark: number): Profile {
    return this.#usage.since(mark);
  }

  /** The session is over (its store is about to close): pushes from here on are dropped. */
  end(): void {
    this.#finished = true;
  }

  /** At the end of the session: mark what was used (for LRU eviction). */
  finish(): void {
    this.#deferred.flush();
    const hashes = new Set<string>();
    const used = this.#usage.metas;
    for (const p of used) {
      const h = this.#index.hash(p);
      if (h) hashes.add(h);
    }
    this.#store.touch(this.#client, used, hashes);
    this.#store.stampChecked();
    // What the next start of this command checks first: what it used now and before
    // (its runs differ: another script, other modules), unless that grew too large.
    if (this.#exe) {
      const first = new Set([...this.#checkedFirst, ...used]);
      this.#store.setHot(this.#client, this.#exe, first.size > HOT_MAX ? used : first);
    }
  }

  /** Wakes the reads waiting for announced chunks (each checks whether its came). */
  #arrived(): void {
    this.#arrival.resolve();
    this.#arrival = Promise.withResolvers<void>();
  }

  #onPush(p: Push): void {
    for (const packed of p.metas ?? []) {
      const m = unpackMeta(packed);
      this.#pushedSince?.add(m.path);
      const old = this.#index.known(m.path);
      // A listing arrives with a directory asked for; the same directory pushed again as
      // some other directory's child comes without one: keep the listing.
      if (
        !m.children && old?.children &&
        fingerprint(old.attr, old.target) === fingerprint(m.attr, m.target)
      ) {
        continue;
      }
      this.#index.put(m);
      this.#deferred.meta(m);
    }
    if (p.contents?.length) {
      try {
        // The blobs now (their chunks follow); which path has which, with the names.
        this.#store.putContents(this.#client, p.contents, false).forEach((error, i) => {
          if (error) return this.#log(`cache: ${error}`);
          this.#index.setHash(p.contents![i].path, p.contents![i].hash);
          this.#pushedSince?.add(p.contents![i].path);
          this.#deferred.link(p.contents![i]);
        });
      } catch (e) {
        this.#log(`cache: ${e}`);
      }
    }
    // Views into the runs: each is checked against its hash before it is kept.
    const chunks = this.#runs.unpack(p.runs ?? [], (line) => this.#log(line));
    for (const c of chunks) this.#filledHere.add(c.hash);
    this.#store.writeChunks(chunks).forEach((stored, i) => {
      if (stored) return;
      this.#log(
        `cache: chunk ${chunks[i].index} of ${chunks[i].hash} does not match its hash: dropped`,
      );
    });
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

  /**
   * The meta of `path` from what is here (a listing answers for absent names too), or
   * undefined when only the local side can say. Synchronous: the FUSE session writes a
   * synchronous answer at once, without a trip through the event loop.
   */
  #metaNow(path: string): MetaRecord | undefined {
    this.#usage.meta(path);
    const m = this.#index.known(path);
    if (m) {
      this.hits.meta++;
      return m;
    }
    const parent = dirname(path);
    if (!isCachedPath(parent, this.#prefixes)) return undefined;
    const pm = this.#metaNow(parent);
    if (!pm || (isDir(pm) && !pm.children)) return undefined;
    return this.#absentFrom(parent, pm, path);
  }

  /**
   * A negative entry for `path` when its parent's meta says there is no such name
   * (not in its listing, or no parent at all); else undefined.
   */
  #absentFrom(parent: string, pm: MetaRecord, path: string): MetaRecord | undefined {
    const names = this.#index.children(pm);
    if (names) this.#usage.listing(parent);
    const name = path.slice(parent.length === 1 ? 1 : parent.length + 1);
    if (pm.attr && (!names || names.has(name))) return undefined;
    this.hits.meta++;
    return { path, attr: null };
  }

  /** A directory's meta with its listing, asked for when only the meta is here. */
  async #withListing(path: string): Promise<MetaRecord> {
    const m = await this.#meta(path);
    if (!isDir(m) || m.children) return m;
    await this.#once(`meta:${path}`, () => this.#rpc.call(CACHE_CALLS.meta, { path }));
    return this.#index.known(path) ?? m;
  }

  async #meta(path: string): Promise<MetaRecord> {
    let m = this.#metaNow(path);
    if (m) return m;
    if (this.#restChecked) {
      this.validation.restWaits++;
      await this.#restChecked;
      return await this.#meta(path);
    }
    const parent = dirname(path);
    if (isCachedPath(parent, this.#prefixes)) {
      const absent = this.#absentFrom(parent, await this.#withListing(parent), path);
      if (absent) return absent;
      m = this.#index.known(path);
      if (m) {
        this.hits.meta++;
        return m;
      }
    }
    this.misses.meta++;
    await this.#once(`meta:${path}`, () => this.#rpc.call(CACHE_CALLS.meta, { path }));
    m = this.#index.known(path);
    if (!m) throw new FuseError(Errno.EIO, `cache: no answer for ${path}`);
    return m;
  }

  #entryFor(path: string, m: MetaRecord): EntryOut {
    if (!m.attr) return { nodeid: 0, entryTimeout: LONG, attrTimeout: LONG, attr: ZERO_ATTR };
    const node = this.#nodes.enter(path);
    return { nodeid: node.id, entryTimeout: LONG, attrTimeout: LONG, attr: m.attr };
  }

  /** The node id the kernel knows `path` by, if any: a cached one, or a local ancestor. */
  #nodeOfPath(path: string): number | null {
    const id = this.#nodes.idOf(path);
    if (id !== undefined) return id;
    for (const [node, p] of this.#ancestors) if (p === path) return node;
    return null;
  }

  // ---- Filesystem ----

  lookup(req: Request<"LOOKUP">): EntryOut | Promise<EntryOut> {
    const parentId = req.header.nodeid;
    let path: string;
    if (parentId >= CACHE_BASE) {
      path = join(this.#nodes.node(parentId).path, req.name);
    } else {
      const parent = this.#ancestors.get(parentId);
      if (parent === undefined) return this.#localLookup(req);
      path = join(parent, req.name);
      if (!isCachedPath(path, this.#prefixes)) {
        const leads = this.#prefixes.some((p) => p.startsWith(`${path}/`));
        return then(this.#localLookup(req), (entry) => {
          if (entry.nodeid && leads) this.#ancestors.set(entry.nodeid, path);
          return entry;
        });
      }
    }
    const m = this.#metaNow(path);
    if (m) return this.#entryFor(path, m);
    return this.#meta(path).then((m) => this.#entryFor(path, m));
  }

  #localLookup(req: Request<"LOOKUP">): EntryOut | Promise<EntryOut> {
    const key = `${req.header.nodeid}/${req.name}`;
    const entry = this.#ahead.get(key);
    if (!entry) return this.#inner.lookup!(req);
    this.#ahead.delete(key);
    return entry;
  }

  /**
   * Local changes (change_watch.ts) to paths outside the cache: a lookup answered
   * ahead for a changed name is dropped, and the proxy drops what it keeps.
   */
  changed(changes: Invalidation[]): void {
    for (const c of changes) {
      if (c.parent === null) continue;
      const key = `${c.parent}/${c.name}`;
      const entry = this.#ahead.get(key);
      if (!entry) continue;
      this.#ahead.delete(key);
      if (entry.nodeid) this.#inner.forget?.(entry.nodeid, 1);
    }
    this.#inner.changed?.(changes);
  }

  forget(nodeid: number, nlookup: number): void {
    if (nodeid < CACHE_BASE) return this.#inner.forget?.(nodeid, nlookup);
    const gone = this.#nodes.forget(nodeid, nlookup);
    if (gone?.localId !== undefined) this.#inner.forget?.(gone.localId, 1);
  }

  getattr(req: Request<"GETATTR">): AttrOut | Promise<AttrOut> {
    if (req.header.nodeid === 1 && this.#rootAttr) {
      const attr = this.#rootAttr;
      this.#rootAttr = null;
      return attr;
    }
    if (req.header.nodeid < CACHE_BASE) return this.#inner.getattr!(req);
    return then(this.#metaOf(req.header.nodeid), (m) => {
      if (!m.attr) throw new FuseError(Errno.ENOENT);
      return { attr: m.attr, attrTimeout: LONG };
    });
  }

  /** The meta of a cached node: synchronously when it is here. */
  #metaOf(nodeid: number): MetaRecord | Promise<MetaRecord> {
    const path = this.#nodes.node(nodeid).path;
    return this.#metaNow(path) ?? this.#meta(path);
  }

  readlink(req: Request<"READLINK">): string | Promise<string> {
    if (req.header.nodeid < CACHE_BASE) return this.#inner.readlink!(req);
    return then(this.#metaOf(req.header.nodeid), (m) => {
      if (m.target === undefined) throw new FuseError(Errno.EINVAL);
      return m.target;
    });
  }

  init(conn: Connection): void {
    if (this.#passthrough) this.#backing = conn.backing;
    this.#inner.init?.(conn);
  }

  open(req: Request<"OPEN">): OpenOut | Promise<OpenOut> {
    if (req.header.nodeid < CACHE_BASE) return this.#inner.open!(req);
    if ((req.flags & O.ACCMODE) !== O.RDONLY || (req.flags & O.TRUNC)) return this.#escapeOpen(req);
    const path = this.#nodes.node(req.header.nodeid).path;
    const m = this.#metaNow(path);
    const hash = this.#index.hash(path);
    const blob = m?.attr && (m.attr.mode & S_IFMT) === S_IFREG && hash
      ? this.#store.blob(hash)
      : null;
    if (blob) return this.#openBlob(req.header.nodeid, path, blob);
    return this.#openSlow(req, path);
  }

  /** An open the local side answers (for writing): its handle is not a passthrough one. */
  async #escapeOpen(req: Request<"OPEN">): Promise<OpenOut> {
    const out = await this.#escape("open", req) as OpenOut;
    this.#openCount(req.header.nodeid).cached++;
    return out;
  }

  #openCount(nodeid: number): { direct: number; cached: number } {
    let n = this.#opens.get(nodeid);
    if (!n) this.#opens.set(nodeid, n = { direct: 0, cached: 0 });
    return n;
  }

  /**
   * A handle for reading a blob: a whole one (every chunk here and checked) is read
   * by the kernel from the store's file itself, with no request for its reads and
   * its pages kept for the next session; one still in part is read through here.
   */
  #openBlob(nodeid: number, path: string, blob: BlobRow): OpenOut {
    const fh = this.#nextHandle++;
    const count = this.#openCount(nodeid);
    const backingId = count.cached || this.#filledHere.has(blob.hash)
      ? null
      : this.#backingId(blob);
    if (backingId !== null) {
      count.direct++;
      this.hits.direct++;
      this.#files.set(fh, { path, blob, direct: true });
      // Its reads are not seen here (Profile.whole): the local side keeps what the
      // profile has of it (or takes all of it, when the profile has none).
      this.#usage.whole(path);
      return { fh, openFlags: FOPEN.PASSTHROUGH | FOPEN.NOFLUSH, backingId };
    }
    if (count.direct) {
      // Open for passthrough, yet no longer whole here (dropped as damaged): the
      // kernel takes no other kind of open of the node until those close.
      throw new FuseError(Errno.EIO, `cache: ${path} is no longer whole here`);
    }
    count.cached++;
    this.#files.set(fh, { path, blob, direct: false });
    // Read-only and answered here: a close has nothing to flush.
    return { fh, openFlags: FOPEN.KEEP_CACHE | FOPEN.NOFLUSH };
  }

  /** The kernel's id for a whole blob's file, or null (not whole, or no passthrough). */
  #backingId(blob: BlobRow): number | null {
    if (!this.#backing) return null;
    const known = this.#backingIds.get(blob.hash);
    if (known !== undefined) return known;
    const fd = this.#store.backingFd(blob);
    if (fd === null) return null;
    try {
      const id = this.#backing.open(fd);
      this.#backingIds.set(blob.hash, id);
      return id;
    } catch (e) {
      // EPERM (no CAP_SYS_ADMIN in the init namespace), ELOOP (the store is on a
      // filesystem stacked too deep): the same for every file, so asked no more.
      this.#log(`cache: passthrough off: ${e instanceof Error ? e.message : e}`);
      this.#backing = null;
      return null;
    } finally {
      libc().close(fd);
    }
  }

  async #openSlow(req: Request<"OPEN">, path: string): Promise<OpenOut> {
    const m = await this.#meta(path);
    if (!m.attr) throw new FuseError(Errno.ENOENT);
    if ((m.attr.mode & S_IFMT) !== S_IFREG) return await this.#escapeOpen(req);
    let hash = this.#index.hash(path);
    let blob = hash ? this.#store.blob(hash) : null;
    if (!blob) {
      this.misses.chunk++;
      await this.#once(`content:${path}`, () => this.#rpc.call(CACHE_CALLS.content, { path }));
      hash = this.#index.hash(path);
      blob = hash ? this.#store.blob(hash) : null;
      if (!blob) throw new FuseError(Errno.EIO, `cache: no content for ${path}`);
    }
    return this.#openBlob(req.header.nodeid, path, blob);
  }

  read(req: Request<"READ">, into: Uint8Array): Uint8Array | number | Promise<Uint8Array | number> {
    const file = this.#files.get(req.fh);
    if (!file) return this.#translated(req).then((r) => this.#inner.read!(r, into));
    const { blob } = file;
    const start = Number(req.offset);
    const end = Math.min(start + req.size, blob.size);
    if (start >= end) return 0;
    const first = Math.floor(start / CHUNK_SIZE);
    const last = Math.floor((end - 1) / CHUNK_SIZE);
    this.#usage.chunks(file.path, first, last);
    let present = true;
    for (let i = first; i <= last && present; i++) present = blob.present.has(i);
    if (present) {
      try {
        this.hits.chunk += last - first + 1;
        return this.#store.readRange(blob, start, end, into);
      } catch (e) {
        if (!(e instanceof CacheCorrupt)) throw e;
        this.#log(`cache: ${e.message}: fetching it again`);
      }
    }
    return this.#readSlow(file.path, blob, start, end, into);
  }

  async #readSlow(
    path: string,
    blob: BlobRow,
    start: number,
    end: number,
    into: Uint8Array,
  ): Promise<number> {
    const first = Math.floor(start / CHUNK_SIZE);
    const last = Math.floor((end - 1) / CHUNK_SIZE);
    // The handle's bitmap is as of its open: pushed since (pushes come in the order
    // the command read its chunks, so files are open before their last chunks come)?
    const now = this.#store.blob(blob.hash);
    if (now) blob.present.bits.set(now.present.bits);
    let missing: number[] = [];
    for (let i = first; i <= last; i++) if (!blob.present.has(i)) missing.push(i);
    if (!missing.length) return this.#store.readRange(blob, start, end, into);
    // Announced and on the way (the command started before its profile's chunks came):
    // waited for, not asked for.
    while (missing.some((i) => this.#incoming.get(blob.hash)?.has(i))) {
      await this.#arrival.promise;
      const fresh = this.#store.blob(blob.hash);
      if (fresh) blob.present.bits.set(fresh.present.bits);
      missing = missing.filter((i) => !blob.present.has(i));
    }
    if (!missing.length) return this.#store.readRange(blob, start, end, into);
    this.misses.chunk += missing.length;
    await this.#fetchChunks(path, blob, missing);
    if (missing.some((i) => !blob.present.has(i))) {
      throw new FuseError(Errno.EIO, `cache: chunks of ${path} did not arrive`);
    }
    return this.#store.readRange(blob, start, end, into);
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
      const p = this.#rpc.call(CACHE_CALLS.chunks, req).then(() => {
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
    const nodeid = req.header.nodeid;
    const file = this.#files.get(req.fh);
    const count = nodeid >= CACHE_BASE ? this.#opens.get(nodeid) : undefined;
    if (count) {
      if (file?.direct) count.direct = Math.max(0, count.direct - 1);
      else count.cached = Math.max(0, count.cached - 1);
      if (!count.direct && !count.cached) this.#opens.delete(nodeid);
    }
    if (this.#files.delete(req.fh)) return;
    return this.#translated(req).then((r) => this.#inner.release!(r));
  }

  flush(req: Request<"FLUSH">): void | Promise<void> {
    if (this.#files.has(req.fh)) return;
    return this.#translated(req).then((r) => this.#inner.flush!(r));
  }

  async opendir(req: Request<"OPENDIR">): Promise<OpenOut> {
    if (req.header.nodeid < CACHE_BASE) return await this.#inner.opendir!(req);
    const path = this.#nodes.node(req.header.nodeid).path;
    const m = await this.#withListing(path);
    if (!m.children) return await this.#escape("opendir", req); // too big to list: ask there
    // Its entries' types come from their metas: names not checked yet are waited for.
    const checked = (name: string) => {
      const child = join(path, name);
      return this.#index.has(child);
    };
    if (this.#restChecked && !m.children.every(checked)) {
      this.validation.restWaits++;
      await this.#restChecked;
    }
    this.#usage.listing(path);
    this.#index.loadStored(m.children.map((name) => join(path, name)));
    const entries: DirEntry[] = [];
    const names = [".", "..", ...m.children];
    for (let i = 0; i < names.length; i++) {
      const name = names[i];
      const child = name === "."
        ? m
        : this.#index.known(name === ".." ? dirname(path) : join(path, name));
      const attr = child?.attr;
      entries.push({
        name,
        // readdir(3) skips an entry whose inode is 0.
        ino: attr?.ino ?? 1n,
        type: attr ? (attr.mode >> 12) & 0xf : 4,
        nextOffset: BigInt(i + 1),
      });
    }
    const fh = this.#nextHandle++;
    this.#dirs.set(fh, entries);
    return { fh, openFlags: FOPEN.KEEP_CACHE | FOPEN.CACHE_DIR };
  }

  readdir(req: Request<"READDIR">): DirEntry[] | Promise<DirEntry[]> {
    const entries = this.#dirs.get(req.fh);
    if (!entries) return this.#translated(req).then((r) => this.#inner.readdir!(r));
    return entries.slice(Number(req.offset));
  }

  readdirplus(req: Request<"READDIRPLUS">): DirEntry[] | Promise<DirEntry[]> {
    const entries = this.#dirs.get(req.fh);
    if (!entries) return this.#translated(req).then((r) => this.#inner.readdirplus!(r));
    const dir = this.#nodes.node(req.header.nodeid).path;
    return entries.slice(Number(req.offset)).map((e) => {
      const path = join(dir, e.name);
      const m = e.name === "." || e.name === ".." ? undefined : this.#index.known(path);
      return { ...e, entry: m?.attr ? this.#entryFor(path, m) : NO_ENTRY };
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
    const node = this.#nodes.node(id);
    if (node.localId === undefined) {
      const entry = await this.#rpc.call(CACHE_CALLS.lookupPath, { path: node.path });
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
      this.#index.forget(stale);
      this.#deferred.drop(stale);
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
  async rename(req: Request<"RENAME" | "RENAME2">): Promise<void> {
    const from = this.#childPathOf(req.header.nodeid, req.name);
    const to = this.#childPathOf(req.newdir, req.newName);
    await this.#escape("rename", req);
    // The kernel keeps the moved inode (and what lies below it): its path follows.
    if (from !== null && to !== null) {
      this.#movePaths(from, to, (req.flags & RENAME_EXCHANGE) !== 0);
    }
  }

  /** The path of `name` in a directory node, when that node is a cached one. */
  #childPathOf(dir: number, name: string): string | null {
    const node = dir >= CACHE_BASE ? this.#nodes.get(dir) : undefined;
    return node ? join(node.path, name) : null;
  }

  #movePaths(from: string, to: string, exchange: boolean): void {
    this.#nodes.move(from, to, exchange);
    const under = (p: string) => movedPath(p, from, from) !== null || movedPath(p, to, to) !== null;
    this.#index.forget(this.#index.paths().filter(under));
    // From the store too, what was not read here included, and from what waits for it.
    this.#deferred.forget(under);
    for (const p of [from, to]) this.#store.dropTree(this.#client, p);
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
