/**
 * The local side of the cache: answers the remote mirror's `cache.*` calls from
 * this machine's files, and pushes with each answer what will be asked next:
 *
 * - a directory comes with its listing and every entry's attributes (so lookups
 *   of names in it, present or absent, need no further round trip);
 * - a symlink with its target's path resolved the same way;
 * - an ELF file's content with its whole library closure (resolved in
 *   WebAssembly by lib/elf the way ld.so does): the metadata of every path on the
 *   way, small files whole, of large ones what ld.so reads (loaderRanges);
 * - a chunk with the chunks after it (readahead);
 * - at session start, everything the same executable used last time (its
 *   profile, kept under ~/.outrun/profiles), minus what the remote already holds.
 *
 * What the remote holds is learnt from its validate request and updated as
 * pushes go out, so nothing is sent twice in a session.
 */
import type { AttrOut, EntryOut, Filesystem, Request } from "../../fuse/mod.ts";
import { loaderRanges, parseElfFile, resolveClosure } from "../../elf/mod.ts";
import { type LazyBytes, type RpcPeer, TypedPeer } from "../../rpc/mod.ts";
import { bpath, listDir, lstatPath, readlinkPath, readWhole } from "../../sys/files.ts";
import { libc, O, SysError } from "../../sys/libc.ts";
import { Errno } from "../../sys/errno.ts";
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from "../../sys/stat.ts";
import { hex } from "../../sys/bytes.ts";
import type { ContentIndex } from "./content_index.ts";
import {
  bulkCodec,
  ChunkBitmap,
  chunkHashesOf,
  contentHash,
  defaultCodec,
  sha256,
} from "./chunks.ts";
import { ChunkPacker, closeUnreadKept, packChunks, type PackedRun, runScratch } from "./packer.ts";
import {
  type AheadEntry,
  CACHE_CALLS,
  CACHE_EVENTS,
  type CacheCalls,
  type CacheEvents,
  CHUNK_SIZE,
  type ChunkCodec,
  chunkCount,
  type ChunkPlan,
  type ChunkRequest,
  type ChunkRun,
  type ContentInfo,
  dirname,
  fingerprint,
  type HeldColumns,
  type HeldEntry,
  isCachedPath,
  isDir,
  join,
  LOOKUPS_KEPT,
  type MetaRecord,
  packMeta,
  type Profile,
  type Push,
  resolveLink,
  SCRATCH_DIRS,
  unpackHeld,
  type ValidateReply,
  type ValidateRequest,
  type ValidateRestRequest,
} from "./protocol.ts";

/** Files up to this size travel whole the first time they are opened. */
export const WHOLE_FILE_LIMIT = 1024 * 1024;
/** Chunks pushed after each one asked for. */
export const READAHEAD_CHUNKS = 7;
/** Directories with more entries are not listed (each name is looked up alone). */
export const MAX_LISTING = 20_000;
/** A push event is sent once it holds this many bytes of chunk data. */
const PUSH_BYTES = 1024 * 1024;
/** Chunks a profile's replay has the packer read and compress ahead of the link. */
const PACK_AHEAD = 64;
/** A `__pycache__` whose files together are no bigger travels whole with its listing. */
const BYTECODE_WHOLE = 512 * 1024;

export interface CacheServiceOptions {
  prefixes: readonly string[];
  /** Push what will be asked next (closure, readahead, profile); off for comparison. */
  prefetch: boolean;
  /** Where per-executable profiles are kept (null: none). */
  profileDir: string | null;
  /** The command's environment (LD_LIBRARY_PATH for the closure). */
  env: Record<string, string>;
  /** Resolves a path to a node of the served filesystem (for writes under cached paths). */
  fs: Filesystem;
  /** This machine's memo of content ids (null: each is computed by reading the file). */
  contentIndex: ContentIndex | null;
  /** How chunks travel (LZ4 where this runtime has no zstd); zstd unless told. */
  compression?: ChunkCodec;
  /**
   * Where a profile's replay keeps the runs it packs and finds those packed before
   * (a PackedStore: packed.ts); none when absent.
   */
  packedDir?: string;
  /**
   * The command's profile looked at already (while the connection was being made):
   * its paths' metas and content ids, used by the session's first validation or
   * replay in place of looking again.
   */
  warmup?: ProfileWarmup | null;
}

/** How long a warm-up works before it lets the event loop (the handshake) run. */
const WARMUP_SLICE_MS = 4;

/** How long the check of a held list works before requests waiting are answered. */
const CHECK_SLICE_MS = 4;

/**
 * A command's profile looked at before its session exists: the metas of the paths it
 * lists (the listed directories' entries too) and the content ids of its files, taken
 * a few milliseconds at a time while the SSH handshake waits on the network. The
 * session's first validation or replay then finds them here (it would otherwise
 * take them when it is waited for: ~0.2 s for a cold ffmpeg's 2,600 names).
 * What they show is the files as they were when outrun started, as a session's
 * snapshot of the cached prefixes is anyway.
 */
export class ProfileWarmup {
  readonly metas = new Map<string, MetaRecord>();
  /** A directory's names (null: too many to send, or unreadable). */
  readonly listings = new Map<string, string[] | null>();
  readonly infos = new Map<string, ContentInfo>();
  readonly done: Promise<void>;
  #stopped = false;

  constructor(
    exe: string | null,
    o: Pick<CacheServiceOptions, "profileDir" | "prefixes" | "contentIndex">,
  ) {
    this.done = this.#run(exe, o).catch(() => {}); // what it missed is looked at later
  }

  /** Stops it where it is (the session looks at the rest itself). */
  stop(): void {
    this.#stopped = true;
  }

  async #run(
    exe: string | null,
    o: Pick<CacheServiceOptions, "profileDir" | "prefixes" | "contentIndex">,
  ): Promise<void> {
    const real = o.profileDir ? realPath(exe) : null;
    const profile = real ? readProfile(profileFile(o.profileDir!, real)) : null;
    if (!profile) return;
    const work: (() => void)[] = [];
    const meta = (path: string) => {
      if (isCachedPath(path, o.prefixes) && !this.metas.has(path)) {
        this.metas.set(path, metaOf(path));
      }
    };
    for (const dir of profile.listed) {
      work.push(() => {
        meta(dir);
        const names = listingOf(dir);
        this.listings.set(dir, names);
        for (const name of names ?? []) work.push(() => meta(join(dir, name)));
      });
    }
    for (const path of profile.metas) work.push(() => meta(path));
    for (const path of Object.keys(profile.chunks)) {
      work.push(() => {
        meta(path);
        const attr = this.metas.get(path)?.attr;
        const info = attr && o.contentIndex?.get(path, fingerprint(attr));
        if (info) this.infos.set(path, info);
      });
    }
    libc(); // loaded now (~20 ms), in the first slice
    for (let i = 0; i < work.length && !this.#stopped;) {
      const until = performance.now() + WARMUP_SLICE_MS;
      while (i < work.length && performance.now() < until) work[i++]();
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }
}

/** `path`'s meta now (no listing): attributes, and a symlink's target. */
function metaOf(path: string): MetaRecord {
  try {
    const attr = lstatPath(path);
    const m: MetaRecord = { path, attr };
    if ((attr.mode & S_IFMT) === S_IFLNK) m.target = readlinkPath(path);
    return m;
  } catch (e) {
    if (!(e instanceof SysError)) throw e;
    return { path, attr: null };
  }
}

/** A directory's names, "." and ".." left out; null when too many to send, or unreadable. */
function listingOf(path: string): string[] | null {
  try {
    const names = listDir(path).map((e) => e.name).filter((n) => n !== "." && n !== "..");
    return names.length <= MAX_LISTING ? names : null;
  } catch (e) {
    if (!(e instanceof SysError)) throw e;
    return null;
  }
}

/** A ChunkRun as sent: a kept run's bytes are read as its frame is written. */
type OutgoingRun = Omit<ChunkRun, "data"> & { data: Uint8Array | LazyBytes };
type OutgoingPush = Omit<Push, "runs"> & { runs?: OutgoingRun[] };

/** A profile's push: the chunks it will send (once the names are out), and its end. */
interface Replay {
  incoming: ChunkPlan[];
  done: Promise<void>;
}

export interface PushStats {
  metas: number;
  contents: number;
  chunks: number;
  /** Chunk bytes before and after compression. */
  chunkBytes: number;
  wireBytes: number;
  /** Pushes the remote asked for, and those sent ahead of asking. */
  asked: number;
  prefetched: number;
  /** Chunks sent unasked because the remote's cache was empty (pushAhead). */
  early: number;
}

export class CacheService {
  readonly stats: PushStats = {
    metas: 0,
    contents: 0,
    chunks: 0,
    chunkBytes: 0,
    wireBytes: 0,
    asked: 0,
    prefetched: 0,
    early: 0,
  };
  /** path -> fingerprint of the meta the remote holds. */
  readonly #held = new Map<string, string>();
  /** Directories whose listing the remote holds (under the fingerprint in #held). */
  readonly #listed = new Set<string>();
  /** path -> content id the remote holds for it. */
  readonly #heldContent = new Map<string, string>();
  /** content id -> chunks the remote holds. */
  readonly #chunks = new Map<string, ChunkBitmap>();
  /** path -> content info computed here, for the fingerprint it was read at. */
  readonly #infos = new Map<string, ContentInfo>();
  readonly #closures = new Set<string>();
  /** Profiles replayed this session (or being replayed). */
  readonly #replays = new Map<string, Replay>();
  /** Whether the remote's list of what it holds came (validate): revalidate needs it. */
  #checked = false;
  /** Metas looked at during one synchronous pass (`#atOnce`), by path. */
  #seen: Map<string, MetaRecord> | null = null;
  /** The profile looked at before the session (until the first pass is over). */
  #warm: ProfileWarmup | null;
  #profilePath: string | null = null;
  /** Paths outside the cached prefixes the remote looked up here since the last profile save. */
  readonly #lookedUp = new Set<string>();
  /** Profiles as read once a session, by file (the replay and the lookups ahead share it). */
  readonly #profilesRead = new Map<string, Profile | null>();
  readonly #saving = new Map<string, Promise<void>>();
  /** Chunks read for a push answering a call (a fresh buffer each time costs page faults). */
  readonly #scratch = runScratch();
  #pending: OutgoingPush = {};
  #pendingBytes = 0;
  readonly #codec: ChunkCodec;
  /** Reads and compresses a replayed profile's chunks off this thread. */
  #packer: ChunkPacker | null = null;
  /** The cache's calls and events on `peer`, typed. */
  readonly #rpc: TypedPeer<CacheCalls, CacheEvents>;

  constructor(readonly peer: RpcPeer, readonly options: CacheServiceOptions) {
    this.#codec = options.compression === "lz4" ? "lz4" : defaultCodec();
    this.#warm = options.warmup ?? null;
    libc(); // loaded now (~20 ms), not when the first call is waiting
    const rpc = this.#rpc = new TypedPeer(peer);
    rpc.handle(CACHE_CALLS.validate, (req) => this.validate(req));
    rpc.handle(CACHE_CALLS.validateRest, (req) => this.validateRest(req));
    rpc.handle(CACHE_CALLS.meta, ({ path }) => this.#answer(() => this.meta(path)));
    rpc.handle(CACHE_CALLS.content, ({ path }) => this.#answer(() => this.content(path)));
    rpc.handle(CACHE_CALLS.chunks, (req) => this.#answer(() => this.chunks(req)));
    // What a command through a master used first: its executable's profile grows.
    rpc.onEvent(CACHE_EVENTS.used, ({ exe, used }) => {
      const real = this.options.profileDir ? realPath(exe) : null;
      if (real) this.saveProfile(used, this.#profileFile(real)).catch(() => {});
    });
    rpc.handle(CACHE_CALLS.lookupPath, ({ path }) => this.lookupPath(path));
  }

  #answer(f: () => void): null {
    f();
    this.#flush();
    return null;
  }

  // ---- calls ----

  validate(req: ValidateRequest): ValidateReply {
    return this.#atOnce(() => {
      const stale = this.#checkHeld(req.held);
      // The answer goes once the names and content ids are out; the chunks follow it,
      // announced, so that the command starts while they come. With more held names
      // to come, the profile waits for them (what the remote holds decides what goes).
      const incoming = req.prefetch && !req.rest ? this.#prefetchFor(req.exe).incoming : [];
      const ahead = this.#lookupsAhead(req.ahead, req.prefetch ? req.exe : null);
      this.#flush();
      return { stale, ahead, root: this.#rootAttr(), incoming };
    }, !req.rest);
  }

  /**
   * All the remote holds, after the names `validate` checked first; the command's
   * profile is pushed here. Checked a few milliseconds at a time (thousands of names,
   * ~200 ms in a new process), while the command runs: what it asks of this side's
   * files meanwhile is answered between them.
   */
  async validateRest(req: ValidateRestRequest): Promise<ValidateReply> {
    const stale: string[] = [];
    this.#checked = true;
    const rows = unpackHeld(req.held, bulkCodec());
    for (let i = 0; i < rows.length;) {
      const until = performance.now() + CHECK_SLICE_MS;
      while (i < rows.length && performance.now() < until) this.#checkRow(rows[i++], stale);
      if (i < rows.length) await new Promise((resolve) => setTimeout(resolve, 0));
    }
    return this.#atOnce(() => {
      const incoming = req.prefetch ? this.#prefetchFor(req.exe).incoming : [];
      this.#flush();
      return { stale, ahead: [], root: null, incoming };
    });
  }

  /** Takes what the remote says it holds; returns the names that changed here since. */
  #checkHeld(held: HeldColumns): string[] {
    const stale: string[] = [];
    this.#checked = true;
    for (const row of unpackHeld(held, bulkCodec())) this.#checkRow(row, stale);
    return stale;
  }

  /** One name the remote holds: taken if it is as here, else added to `stale`. */
  #checkRow([path, fp, hash, present, listed]: HeldEntry, stale: string[]): void {
    // Checked a moment ago (the names a start checks first come again with the rest).
    if (this.#held.get(path) === fp) return;
    if (this.#fingerprintNow(path) !== fp) {
      stale.push(path);
      return;
    }
    this.#held.set(path, fp);
    if (listed) this.#listed.add(path);
    if (hash) {
      this.#heldContent.set(path, hash);
      this.#chunks.set(hash, new ChunkBitmap(present));
    }
  }

  /**
   * `validate` for a session that stays (ControlMaster), before each of its commands
   * and with no round trip: what the remote holds is what it said at the session's
   * start plus what this side pushed since (it drops only what this side is told
   * of, or asks for again), so it is checked here; the answer goes out as an event
   * ahead of the command's pushes, which the remote handles in order.
   */
  async revalidate(
    req: Omit<ValidateRequest, "held">,
  ): Promise<{ held: number; stale: number }> {
    if (!this.#checked) throw new Error("revalidate before validate");
    const stale: string[] = [];
    const done = this.#atOnce(() => {
      for (const [path, fp] of this.#held) {
        if (this.#fingerprintNow(path) !== fp) stale.push(path);
      }
      for (const path of stale) {
        this.#forgetHeld(path);
        this.#heldContent.delete(path);
      }
      const reply: ValidateReply = {
        stale,
        ahead: this.#lookupsAhead(req.ahead, req.prefetch ? req.exe : null),
        root: this.#rootAttr(),
      };
      this.#rpc.event(CACHE_EVENTS.revalidated, reply);
      return req.prefetch ? this.#prefetchFor(req.exe).done : null;
    });
    await done;
    this.#flush();
    return { held: this.#held.size, stale: stale.length };
  }

  /**
   * What the profile of `exe` lists (the executable's earlier runs used) and the remote
   * lacks: pushed once a session (what it pushed is then among what each revalidation
   * checks); one under way (pushAhead) is the same one.
   */
  #prefetchFor(exe: string | null): Replay {
    const none = { incoming: [], done: Promise.resolve() };
    if (!this.options.profileDir) return none;
    const real = realPath(exe);
    if (!real) return none;
    this.#profilePath = this.#profileFile(real);
    let replay = this.#replays.get(this.#profilePath);
    if (!replay) {
      this.#replays.set(this.#profilePath, replay = this.#replayProfile(!this.#checked));
    }
    return replay;
  }

  /**
   * For a remote known to hold nothing: pushes `exe`'s profile now, while the agent
   * starts, and then the validation's answer for an empty store, unasked
   * (`cache.validated`), ahead of the profile's chunks: the command starts as soon as
   * the names are in, not a round trip later behind megabytes of chunks. `ahead`: the
   * paths the remote would ask to have looked up (ValidateRequest.ahead). The answer
   * goes whatever happens: the remote waits for it.
   */
  pushAhead(exe: string, ahead: string[]): void {
    let incoming: ChunkPlan[] = [];
    try {
      if (this.options.prefetch) {
        const replay = this.#atOnce(() => this.#prefetchFor(exe));
        replay.done.catch(() => {});
        incoming = replay.incoming;
      }
    } catch {
      // Not all of it went: the remote asks for what it lacks.
    } finally {
      // What the remote holds is nothing (or it asks after all: validate).
      this.#checked = true;
      const reply: ValidateReply = {
        stale: [],
        ahead: this.#lookupsAhead(ahead, this.options.prefetch ? exe : null),
        root: this.#rootAttr(),
        incoming,
      };
      this.#flush();
      this.#rpc.event(CACHE_EVENTS.validated, reply);
    }
  }

  /** The served root's attributes (the kernel asks for them first), or null. */
  #rootAttr(): AttrOut | null {
    try {
      const r = this.options.fs.getattr?.(
        { header: { nodeid: 1 } } as unknown as Request<"GETATTR">,
      );
      return r instanceof Promise ? null : r ?? null;
    } catch {
      return null; // asked again later
    }
  }

  /**
   * Each component of each path outside the cached prefixes, looked up in the served
   * filesystem (one lookup count each, the remote's to use or to let go with the
   * session), until a cached prefix, a symlink or a missing name.
   */
  #lookupsAhead(asked: string[], exe: string | null): AheadEntry[] {
    // And those the command's earlier runs made (Profile.lookups).
    const paths = exe ? [...asked, ...this.#profileLookups(exe)] : asked;
    const out: AheadEntry[] = [];
    const seen = new Map<string, number>();
    const fs = this.options.fs;
    for (const path of paths) {
      let nodeid = 1;
      let at = "/";
      for (const name of path.split("/").filter(Boolean)) {
        // The kernel never looks up "." or ".." in a FUSE directory; nor do we.
        if (name === "." || name === "..") break;
        at = join(at, name);
        if (isCachedPath(at, this.options.prefixes)) break;
        const known = seen.get(at);
        if (known !== undefined) {
          nodeid = known;
          continue;
        }
        let entry;
        try {
          entry = fs.lookup!({ header: { nodeid }, name } as unknown as Request<"LOOKUP">);
        } catch {
          break;
        }
        if (entry instanceof Promise) break;
        out.push([nodeid, name, entry]);
        seen.set(at, entry.nodeid);
        if (!entry.nodeid || (entry.attr.mode & S_IFMT) !== S_IFDIR) break;
        nodeid = entry.nodeid;
      }
    }
    return out;
  }

  meta(path: string): void {
    this.stats.asked++;
    // Asked for: the remote lacks it, whatever was believed (it drops what a change
    // made through the mirror touched).
    this.#forgetHeld(path);
    this.#pushMeta(path, true);
    if (this.options.prefetch) {
      const m = this.#metaNow(path, false);
      if (m.target !== undefined) this.#pushChain(resolveLink(path, m.target));
    }
  }

  content(path: string): void {
    this.stats.asked++;
    this.#forgetHeld(path);
    this.#heldContent.delete(path);
    this.#pushContent(path, firstChunks(path, this.#info(path)));
    if (this.options.prefetch && !this.#closures.has(path) && isElf(path)) {
      this.#closures.add(path);
      this.#pushClosure(path);
    }
  }

  chunks(req: ChunkRequest): void {
    this.stats.asked++;
    const info = this.#info(req.path);
    if (info.hash !== req.hash) {
      throw new SysError("read", Errno.ESTALE, `${req.path} changed during the session`);
    }
    // Asked for: the remote lacks them, whatever was believed (a chunk it found damaged).
    const have = this.#chunks.get(info.hash);
    for (const i of req.indices) have?.delete(i);
    const want = new Set(req.indices);
    if (this.options.prefetch) {
      const n = chunkCount(info.size);
      for (const i of req.indices) {
        for (let j = i + 1; j <= i + READAHEAD_CHUNKS && j < n; j++) want.add(j);
      }
    }
    this.#pushContent(req.path, [...want].sort((a, b) => a - b));
  }

  /** The served filesystem's node for `path` (one lookup count, kept by the caller). */
  lookupPath(path: string): EntryOut | null {
    const fs = this.options.fs;
    let nodeid = 1;
    let entry: EntryOut | null = null;
    for (const name of path.split("/").filter(Boolean)) {
      const req = { op: "LOOKUP", header: { nodeid }, name } as unknown as Request<"LOOKUP">;
      const e = fs.lookup!(req);
      if (e instanceof Promise) throw new Error("lookupPath needs a synchronous filesystem");
      if (nodeid !== 1) fs.forget?.(nodeid, 1);
      // Not there (a negative entry): as a failed lookup.
      if (!e.nodeid) throw new SysError("lookup", Errno.ENOENT, path);
      nodeid = e.nodeid;
      entry = e;
    }
    return entry;
  }

  /** The lookups `exe`'s profile lists (Profile.lookups). */
  #profileLookups(exe: string): string[] {
    const real = this.options.profileDir ? realPath(exe) : null;
    if (!real) return [];
    return this.#profileRead(this.#profileFile(real))?.lookups ?? [];
  }

  /** The profile in `file` as this session first read it. */
  #profileRead(file: string): Profile | null {
    if (!this.#profilesRead.has(file)) this.#profilesRead.set(file, readProfile(file));
    return this.#profilesRead.get(file)!;
  }

  /**
   * The remote looked up `name` in the directory at `dir` here (outside the cached
   * prefixes): kept for the command's profile (Profile.lookups), unless in a scratch
   * directory, where names are a run's own.
   */
  noteLookup(dir: string | null, name: string): void {
    if (dir === null || this.#lookedUp.size >= LOOKUPS_KEPT) return;
    const path = join(dir, name);
    // A name in a scratch directory (not the directory itself) is a run's own.
    if (isCachedPath(path, this.options.prefixes) || isCachedPath(dir, SCRATCH_DIRS)) return;
    this.#lookedUp.add(path);
  }

  /**
   * Keeps what this run used (as the remote saw it) as the executable's profile,
   * together with what earlier runs used: runs with other arguments use other parts.
   * The lookups noted since the last save go with it.
   */
  saveProfile(used: Profile, file = this.#profilePath): Promise<void> {
    if (!file) return Promise.resolve();
    used = { ...used, lookups: [...this.#lookedUp, ...(used.lookups ?? [])] };
    this.#lookedUp.clear();
    // One at a time per file: commands through a master may end together.
    const saved = (this.#saving.get(file) ?? Promise.resolve())
      .then(() => this.#mergeProfile(file, used));
    this.#saving.set(file, saved.catch(() => {}));
    return saved;
  }

  /**
   * Pushes chunks the remote lacks of files it holds in part (large files travel in
   * the chunks that are read), about `budget` bytes on the wire at most. Returns
   * whether some are left. For a ControlMaster while idle, when configured.
   */
  completeSome(budget: number): boolean {
    const start = this.stats.wireBytes;
    for (const [path, hash] of this.#heldContent) {
      const have = this.#chunks.get(hash);
      if (!have) continue;
      let info: ContentInfo;
      try {
        info = this.#info(path);
      } catch {
        continue; // gone since
      }
      if (info.hash !== hash) continue; // changed: the next validation drops it
      const missing = have.missing(chunkCount(info.size));
      if (!missing.length) continue;
      const room = Math.max(1, Math.ceil((budget - (this.stats.wireBytes - start)) / CHUNK_SIZE));
      this.#pushContent(path, missing.slice(0, room), true);
      if (this.stats.wireBytes - start >= budget) {
        this.#flush();
        return true;
      }
    }
    this.#flush();
    return false;
  }

  /** Resolves once every profile being saved is on disk. */
  async profilesSaved(): Promise<void> {
    await Promise.all(this.#saving.values());
  }

  /** Where `exe`'s (a real path) profile lives. */
  #profileFile(exe: string): string {
    return profileFile(this.options.profileDir!, exe);
  }

  async #mergeProfile(file: string, used: Profile): Promise<void> {
    const merged = readProfile(file) ?? { metas: [], listed: [], chunks: {} };
    const union = (a: string[], b: string[]) => [...new Set([...a, ...b])];
    merged.metas = union(merged.metas, used.metas);
    merged.listed = union(merged.listed, used.listed);
    // The latest run's first: a name a run no longer looks up here (answered ahead, or
    // gone) stays until newer ones push it out.
    merged.lookups = union(used.lookups ?? [], merged.lookups ?? []).slice(0, LOOKUPS_KEPT);
    for (const [path, indices] of Object.entries(used.chunks)) {
      merged.chunks[path] = [...new Set([...(merged.chunks[path] ?? []), ...indices])].sort((
        a,
        b,
      ) => a - b);
    }
    // Read by the remote kernel itself (which reads are not known): what the profile
    // has of them stands; of a file it has nothing of, its first chunk (every reader
    // reads the header) and its content id. Not all of it: a profile only grows, and
    // one made against a remote that held ffmpeg's libraries whole had 198 MB of them
    // where ffmpeg -version reads 25; a cold start that lacks more asks for it (its
    // reads then go through the agent and are learnt exactly).
    for (const path of used.whole ?? []) {
      if (merged.chunks[path]?.length) continue;
      try {
        if (!lstatPath(path).size) continue;
      } catch {
        continue; // gone since
      }
      merged.chunks[path] = [0];
    }
    const tmp = `${file}.${Deno.pid}.tmp`;
    await Deno.mkdir(dirname(file), { recursive: true });
    await Deno.writeTextFile(tmp, JSON.stringify(merged));
    await Deno.rename(tmp, file);
  }

  // ---- what is pushed ----

  /**
   * Pushes what the profile lists that the remote lacks: the names and content ids
   * now (`incoming`: the chunks still to come, for a validation's answer to
   * announce), then the chunks, each push going out as soon as it is made
   * (the link works while the next is read and compressed), and last the
   * `cache.pushed` event (the remote asks for what was announced and did not come).
   */
  #replayProfile(unasked: boolean): Replay {
    const plan: { path: string; info: ContentInfo; missing: number[] }[] = [];
    const saved = this.#profileRead(this.#profilePath!);
    if (saved) {
      for (const path of saved.listed) this.#pushMeta(path, true, true);
      for (const path of saved.metas) this.#pushMeta(path, false, true);
      // The names first, on their own: they cross while the contents are planned.
      this.#flush();
      for (const [path, indices] of Object.entries(saved.chunks)) {
        try {
          const p = this.#planContent(path, indices, true);
          if (p) plan.push({ path, ...p });
        } catch {
          continue; // gone since
        }
      }
      this.#flush();
    }
    const incoming = plan.map(({ info, missing }) => ({ hash: info.hash, indices: missing }));
    const jobs = plan.map(({ path, info, missing }) => ({ path, info, indices: missing }));
    const done = this.#sendPlanned(jobs, unasked).finally(() => {
      this.#flush();
      this.#rpc.event(CACHE_EVENTS.pushed, null);
    });
    return { incoming, done };
  }

  /** `unasked`: for a remote that holds nothing (pushAhead), counted as `early`. */
  async #sendPlanned(plan: PlannedJob[], unasked: boolean) {
    if (!plan.length) return;
    const packer = this.#packer ??= new ChunkPacker();
    const ahead: { hash: string; missing: number[]; packed: Promise<PackedRun[]> }[] = [];
    let aheadChunks = 0;
    const sendOldest = async () => {
      const job = ahead.shift()!;
      aheadChunks -= job.missing.length;
      let runs: PackedRun[];
      try {
        runs = await job.packed;
      } catch {
        // Unreadable now: the remote asks for what it needs.
        const have = this.#chunks.get(job.hash);
        for (const i of job.missing) have?.delete(i);
        return;
      }
      for (const r of runs) this.#queueRun(job.hash, r, true);
      if (unasked) this.stats.early += job.missing.length;
      // The link takes each push as it is made; the packer works meanwhile.
      await this.peer.drained();
    };
    for (const { path, info, indices: missing } of plan) {
      ahead.push({
        hash: info.hash,
        missing,
        packed: packer.pack({
          path,
          indices: missing,
          size: info.size,
          codec: this.#codec,
          hash: info.hash,
          hashes: chunkHashesAt(info.chunkHashes, missing),
          packed: this.options.packedDir,
        }),
      });
      aheadChunks += missing.length;
      while (aheadChunks > PACK_AHEAD) await sendOldest();
    }
    while (ahead.length) await sendOldest();
  }

  /** Ends what this service started (the packer's worker, files of runs not sent). */
  close(): void {
    this.#packer?.close();
    this.#packer = null;
    closeUnreadKept();
  }

  /**
   * Runs `f` (synchronous: one turn) with each path looked at once: a validation
   * checks every held path, then its profile's replay and the lookups ahead look
   * at many of them again, and the answer is waited for.
   */
  #atOnce<T>(f: () => T, last = true): T {
    this.#seen = new Map();
    try {
      return f();
    } finally {
      this.#seen = null;
      // The session's first look is over: from here on, paths are looked at afresh.
      if (last) {
        this.#warm?.stop();
        this.#warm = null;
      }
    }
  }

  #fingerprintNow(path: string): string {
    const m = this.#metaNow(path, false);
    return fingerprint(m.attr, m.target);
  }

  /** The path's meta now (a directory's names too with `list`); not to be changed. */
  #metaNow(path: string, list: boolean): MetaRecord {
    let m = this.#seen?.get(path) ?? this.#warm?.metas.get(path);
    if (!m) {
      m = metaOf(path);
      this.#seen?.set(path, m);
    }
    if (!list || !isDir(m)) return m;
    const names = this.#warm?.listings.has(path) ? this.#warm.listings.get(path)! : listingOf(path);
    return names ? { ...m, children: names } : m;
  }

  /** Pushes `path`'s meta unless the remote holds it; a listed directory brings its entries. */
  #forgetHeld(path: string): void {
    this.#held.delete(path);
    this.#listed.delete(path);
  }

  #pushMeta(path: string, list: boolean, prefetched = false): MetaRecord {
    if (!isCachedPath(path, this.options.prefixes)) return { path, attr: null };
    const bare = this.#metaNow(path, false);
    const held = this.#held.get(path) === fingerprint(bare.attr, bare.target);
    // Held (and listed, when a listing is wanted): nothing to send, nothing to list.
    if (held && (!list || !isDir(bare) || this.#listed.has(path))) return bare;
    const m = list ? this.#metaNow(path, true) : bare;
    const wantList = list && isDir(m) && m.children !== undefined;
    if (held && !wantList) return m;
    this.#queueMeta(wantList ? m : bare, prefetched);
    if (wantList) {
      this.#listed.add(path);
      for (const name of m.children!) {
        const child = join(path, name);
        const cm = this.#metaNow(child, false);
        const cfp = fingerprint(cm.attr, cm.target);
        if (this.#held.get(child) !== cfp) this.#queueMeta(cm, true);
      }
      if (this.options.prefetch) this.#pushBytecode(path, m.children!);
    }
    return m;
  }

  /**
   * A listed directory of Python modules: Python looks for each module it imports
   * from there in `__pycache__/` (a name, then its bytes). Its listing goes along,
   * so every name there (and every absent one) is answered remotely, and so do its
   * files when they are few (a package's: json's are 68 KB), not when they are
   * many (the standard library's own, 3.3 MB, of which an import uses a few).
   */
  #pushBytecode(dir: string, names: string[]): void {
    if (!names.includes("__pycache__") || !names.some((n) => n.endsWith(".py"))) return;
    const cache = join(dir, "__pycache__");
    let m = this.#pushMeta(cache, true, true);
    // Held and listed: its names were not read, and its files may still be wanted.
    if (isDir(m) && !m.children) m = this.#metaNow(cache, true);
    if (!isDir(m) || !m.children) return;
    const files: string[] = [];
    let bytes = 0;
    for (const name of m.children) {
      if (!name.endsWith(".pyc")) continue;
      const attr = this.#metaNow(join(cache, name), false).attr;
      if (!attr || (attr.mode & S_IFMT) !== S_IFREG) continue;
      files.push(join(cache, name));
      bytes += Number(attr.size);
    }
    if (bytes > BYTECODE_WHOLE) return;
    for (const file of files) {
      try {
        this.#pushContent(file, firstChunks(file, this.#info(file)), true);
      } catch { /* gone since */ }
    }
  }

  #queueMeta(m: MetaRecord, prefetched: boolean): void {
    this.#held.set(m.path, fingerprint(m.attr, m.target));
    (this.#pending.metas ??= []).push(packMeta(m));
    this.#pendingBytes += 64 + m.path.length;
    this.stats.metas++;
    if (prefetched) this.stats.prefetched++;
  }

  /** Every directory and symlink on the way to `path` (listed), then `path` itself. */
  #pushChain(path: string, depth = 0): string | null {
    if (depth > 40) return null;
    const parts = path.split("/").filter(Boolean);
    let at = "/";
    for (let i = 0; i < parts.length; i++) {
      const next = join(at, parts[i]);
      if (!isCachedPath(next, this.options.prefixes)) {
        at = next;
        continue;
      }
      const m = this.#pushMeta(next, true, true);
      if (!m.attr) return null;
      if (m.target !== undefined) {
        const rest = parts.slice(i + 1).join("/");
        const target = resolveLink(next, m.target);
        return this.#pushChain(rest ? join(target, rest) : target, depth + 1);
      }
      at = next;
    }
    return at;
  }

  #pushClosure(exe: string): void {
    let closure;
    try {
      closure = resolveClosure(exe, { ldLibraryPath: this.options.env.LD_LIBRARY_PATH });
    } catch {
      return; // not something ld.so would load: nothing to prefetch
    }
    const files = [
      ...(closure.interp ? [closure.interp] : []),
      "/etc/ld.so.cache",
      ...closure.libraries.map((l) => l.path),
    ];
    for (const probe of closure.probes) this.#pushChain(dirname(probe));
    for (const file of files) {
      const real = this.#pushChain(file);
      if (!real || !isCachedPath(real, this.options.prefixes)) continue;
      try {
        this.#pushContent(real, firstChunks(real, this.#info(real)), true);
      } catch { /* unreadable: the loader will say */ }
    }
  }

  #info(path: string): ContentInfo {
    // As looked at in this pass (or by the warm-up); gone: lstat says how.
    const attr = this.#metaNow(path, false).attr ?? lstatPath(path);
    if ((attr.mode & S_IFMT) !== S_IFREG) throw new SysError("open", Errno.EISDIR, path);
    const fp = fingerprint(attr);
    const known = this.#infos.get(path) ?? this.#warm?.infos.get(path) ??
      this.options.contentIndex?.get(path, fp);
    if (known && known.fp === fp) {
      this.#infos.set(path, known);
      return known;
    }
    const data = readWhole(path);
    const chunkHashes = chunkHashesOf(data);
    const info: ContentInfo = {
      path,
      fp,
      hash: contentHash(chunkHashes),
      size: data.length,
      chunkHashes,
    };
    this.#infos.set(path, info);
    // Only what was read under that fingerprint: a file that changed while being read
    // gets a new fingerprint and is read again next time.
    if (fingerprint(lstatPath(path)) === fp) this.options.contentIndex?.put(info);
    return info;
  }

  /** Pushes the content id (unless held) and those of `indices` the remote lacks. */
  #pushContent(path: string, indices: number[], prefetched = false): void {
    const plan = this.#planContent(path, indices, prefetched);
    if (!plan) return;
    const { info, missing } = plan;
    const job = { path, indices: missing, size: info.size, codec: this.#codec };
    for (const run of packChunks(job, this.#scratch)) this.#queueRun(info.hash, run, prefetched);
  }

  /**
   * Queues the content id of `path` unless the remote holds it, and returns the chunks
   * of `indices` it lacks, counted from here on as the remote's (null: none to send).
   */
  #planContent(
    path: string,
    indices: number[],
    prefetched: boolean,
  ): { info: ContentInfo; missing: number[] } | null {
    if (!isCachedPath(path, this.options.prefixes)) return null;
    // Held content under a fingerprint validated this session: trusted without
    // reading the file, as long as the remote has every chunk asked for.
    const heldHash = this.#heldContent.get(path);
    const heldChunks = heldHash ? this.#chunks.get(heldHash) : undefined;
    if (heldChunks && indices.every((i) => heldChunks.has(i))) {
      const { attr } = this.#metaNow(path, false);
      if (attr && this.#held.get(path) === fingerprint(attr)) {
        const n = chunkCount(Number(attr.size));
        if (indices.every((i) => i >= n || heldChunks.has(i))) return null;
      }
    }
    const info = this.#info(path);
    if (this.#heldContent.get(path) !== info.hash) {
      // The meta first: the remote files content under the path's current fingerprint.
      this.#pushMeta(path, false, prefetched);
      (this.#pending.contents ??= []).push(info);
      this.#heldContent.set(path, info.hash);
      this.stats.contents++;
    }
    let have = this.#chunks.get(info.hash);
    if (!have) this.#chunks.set(info.hash, have = ChunkBitmap.empty(chunkCount(info.size)));
    const missing = indices.filter((i) => i < chunkCount(info.size) && !have!.has(i));
    if (!missing.length) return null;
    for (const i of missing) have.add(i);
    return { info, missing };
  }

  /** Adds a run of chunks to the next push (sent once it holds PUSH_BYTES). */
  #queueRun(hash: string, r: PackedRun, prefetched: boolean): void {
    const run: OutgoingRun = {
      hash,
      indices: r.indices,
      lengths: r.lengths,
      data: r.data,
      rawLength: r.rawLength,
    };
    if (r.rawLength && this.#codec !== "lz4") run.codec = this.#codec;
    (this.#pending.runs ??= []).push(run);
    this.stats.chunks += r.indices.length;
    this.stats.chunkBytes += r.size;
    this.stats.wireBytes += r.data.length;
    if (prefetched) this.stats.prefetched += r.indices.length;
    this.#pendingBytes += r.data.length;
    if (this.#pendingBytes >= PUSH_BYTES) this.#flush();
  }

  #flush(): void {
    if (!this.#pending.metas && !this.#pending.contents && !this.#pending.runs) return;
    // Its LazyBytes go on the wire as the bytes a Push has.
    this.#rpc.event(CACHE_EVENTS.push, this.#pending as Push);
    this.#pending = {};
    this.#pendingBytes = 0;
  }
}

/** The sha256es of chunks `indices` out of all of a content's (32 bytes each). */
function chunkHashesAt(all: Uint8Array, indices: number[]): Uint8Array {
  const out = new Uint8Array(32 * indices.length);
  indices.forEach((index, i) => out.set(all.subarray(32 * index, 32 * index + 32), 32 * i));
  return out;
}

/**
 * What travels on a file's first open: a small file whole; of a large ELF file what
 * ld.so reads to load and relocate it (`loaderRanges`: its tables and writable
 * segments; a first `ffmpeg -version` asked for them one round trip at a time, 200 in
 * all); of another large file, its first chunk.
 */
function firstChunks(path: string, info: ContentInfo): number[] {
  const n = chunkCount(info.size);
  if (info.size <= WHOLE_FILE_LIMIT) return range(0, n);
  const chunks = new Set([0]);
  try {
    for (const [start, end] of loaderRanges(parseElfFile(path))) {
      const last = Math.min(n - 1, Math.floor((end - 1) / CHUNK_SIZE));
      for (let i = Math.floor(start / CHUNK_SIZE); i <= last; i++) chunks.add(i);
    }
  } catch { /* not ELF, or not one ld.so loads: its first chunk */ }
  return [...chunks].sort((a, b) => a - b);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
}

function isElf(path: string): boolean {
  try {
    const fd = libc().open(bpath(path), O.RDONLY | O.CLOEXEC, 0);
    if (fd < 0) return false;
    const head = new Uint8Array(4);
    const n = Number(libc().pread64(fd, head, 4n, 0n));
    libc().close(fd);
    return n === 4 && head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46;
  } catch {
    return false;
  }
}

/** The path with every symlink resolved (a profile is per file), or null. */
/** Chunks of one file a replay reads and sends (in runs of RUN_CHUNKS at most). */
interface PlannedJob {
  path: string;
  info: ContentInfo;
  indices: number[];
}

/** Where the profile of `exe` (a real path) lives in `dir`. */
export function profileFile(dir: string, exe: string): string {
  return `${dir}/${hex(sha256(new TextEncoder().encode(exe))).slice(0, 32)}.json`;
}

function readProfile(file: string): Profile | null {
  try {
    const p = JSON.parse(Deno.readTextFileSync(file));
    return {
      metas: p.metas ?? [],
      listed: p.listed ?? [],
      chunks: p.chunks ?? {},
      lookups: Array.isArray(p.lookups) ? p.lookups : [],
    };
  } catch {
    return null; // none yet (or unreadable: started afresh)
  }
}

function realPath(path: string | null): string | null {
  if (path === null) return null;
  try {
    return Deno.realPathSync(path);
  } catch {
    return null; // gone since it was found
  }
}
