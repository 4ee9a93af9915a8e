/**
 * The remote's persistent cache: an SQLite index (node:sqlite, WAL) and
 * content-addressed blobs stored sparsely, chunk by chunk.
 *
 * - `blobs`: one row per content id (sha256 over the chunk hashes, so the same
 *   glibc from two machines or two paths is stored once), with its chunk hashes
 *   and a bitmap of the chunks present in `blobs/xx/<hash>`.
 * - `entries`: per client and path, the fingerprint, the MetaRecord and the
 *   content id once known.
 *
 * A chunk is written (pwrite) before its bit is committed, and is checked against
 * its hash on the way in and again the first time a process reads it, so a
 * session killed mid-write, two sessions writing the same blob, or a damaged
 * file never serve wrong bytes: at worst a chunk is fetched again.
 */
import { type Database, openDatabase, type SqlValue, type Statement } from "./sqlite.ts";
import { decodeValue, encodeValue, type Value } from "../../rpc/mod.ts";
import { check, libc, O, open } from "../../sys/libc.ts";
import { fstatFd } from "../../sys/files.ts";
import type { Stat } from "../../sys/stat.ts";
import { ChunkBitmap, chunkMatches, contentHash } from "./chunks.ts";
import {
  CHUNK_SIZE,
  chunkCount,
  type ContentInfo,
  fingerprint,
  type HeldColumns,
  type HeldEntry,
  type MetaRecord,
  type PackedMeta,
  packMeta,
  unpackMeta,
} from "./protocol.ts";

export interface StoreLimits {
  /** Blobs (cached file contents) kept at most. */
  maxEntries: number;
  /** Bytes of blob data kept at most. */
  maxBytes: number;
}

export const DEFAULT_LIMITS: StoreLimits = { maxEntries: 4096, maxBytes: 20 * 1024 ** 3 };

/**
 * Names (paths' metas) one client keeps at most. Each is checked at every session's
 * start (~50 us a name on the test bed, both sides together): without a bound they
 * only grew, with every directory listed and every program run.
 */
export const MAX_HELD = 16384;

/** A held path's encoded meta (decodeMeta), content id and fingerprint. */
export type HeldMeta = [path: string, meta: Uint8Array, hash: string | null, fp: string];

/** HeldMeta's columns, of `entries e`. */
const HELD_META = "e.path, e.meta, e.hash, e.fp";

/** Keeps the rows of `entries e` whose path is in a JSON list (the query's second parameter). */
const ONLY_PATHS = " and e.path in (select value from json_each(?))";

export function decodeMeta(bytes: Uint8Array): MetaRecord {
  return unpackMeta(decodeValue(bytes) as unknown as PackedMeta);
}

export interface BlobRow {
  hash: string;
  size: number;
  chunkHashes: Uint8Array;
  present: ChunkBitmap;
  /**
   * The blob file's `fileStamp` when every chunk then present was known to match its
   * hash (checked, or written by a process that checked what it wrote), or null. A
   * chunk written since moved the file's ctime, so the stamp no longer matches.
   */
  checked: string | null;
}

/**
 * What changes when a file's contents may have: any write or truncation moves its
 * ctime, which nobody can set back; a new file at the path has another inode.
 */
export function fileStamp(st: Stat): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeSec}.${st.mtimeNsec}:${st.ctimeSec}.${st.ctimeNsec}`;
}

export class CacheCorrupt extends Error {
  override name = "CacheCorrupt";
}

/** Commands whose used names a client keeps (hotPaths), least recently run first out. */
export const HOT_KEPT = 128;

/** Entries written by one statement at most. */
const PUT_BATCH = 64;

/** Bumped when the tables change: an older store is emptied and made anew (it is a cache). */
const SCHEMA_VERSION = 4000 + CHUNK_SIZE / 1024;

/**
 * Added to a store of this version as it is opened (a table more, nothing changed):
 * the names each command used, per client (hotPaths).
 */
const HOT_SCHEMA = `
create table if not exists hot(
  client text not null, exe text not null, paths blob not null, last_used integer not null,
  primary key (client, exe));
`;

/**
 * The held list as a validation sends it, kept packed per client (`heldSnapshot`), and
 * a count of the changes to each client's names that tells whether it still is: every
 * insert, delete and change of a name's row but its last use moves `gen` (triggers, so
 * that no writer, of this version or another, can leave it behind). Chunks a blob
 * gains or loses do not: what the list says of them only steers what is pushed.
 */
const HELD_SCHEMA = `
create table if not exists held_gen(client text primary key, gen integer not null);
create table if not exists held_packed(
  client text primary key, gen integer not null, schema integer not null, packed blob not null);
create trigger if not exists held_gen_insert after insert on entries begin
  insert into held_gen(client, gen) values (new.client, 1)
    on conflict(client) do update set gen = gen + 1;
end;
create trigger if not exists held_gen_update after update of fp, meta, listed, hash on entries begin
  insert into held_gen(client, gen) values (new.client, 1)
    on conflict(client) do update set gen = gen + 1;
end;
create trigger if not exists held_gen_delete after delete on entries begin
  insert into held_gen(client, gen) values (old.client, 1)
    on conflict(client) do update set gen = gen + 1;
end;
`;

const SCHEMA = `
create table if not exists blobs(
  hash text primary key, size integer not null, chunk_hashes blob not null,
  present blob not null, checked text, last_used integer not null);
create table if not exists entries(
  client text not null, path text not null, fp text not null, meta blob not null,
  listed integer not null, hash text, last_used integer not null, primary key (client, path));
create index if not exists entries_hash on entries(hash);
create index if not exists blobs_lru on blobs(last_used);
`;

/**
 * A file's stamp is recorded only once it has not changed for this long: its
 * timestamps move in clock ticks (coarse ones before Linux 6.13's multigrain
 * timestamps), so a write in the tick of the look would leave a stamp that still
 * matches the changed file (git's "racily clean" entries).
 */
export const SETTLED_S = 1;

export interface CacheStoreOptions {
  /** Milliseconds since the epoch, as Date.now (tests move it). */
  clock?: () => number;
}

export class CacheStore {
  readonly db: Database;
  readonly #fds = new Map<string, number>();
  /** Chunks this process has checked on read, or written: "hash:index". */
  readonly #verified = new Set<string>();
  /**
   * Blobs whose files matched their `checked` stamp when this process first looked:
   * none of their present chunks is checked again (a chunk added since was checked
   * by the process that wrote it, before it set its bit).
   */
  readonly #trusted = new Set<string>();
  /** Blobs whose stamp this process has compared with their file. */
  readonly #stampSeen = new Set<string>();
  /** Blobs whose `checked` stamp is their file as it is (this process has not written since). */
  readonly #stampCurrent = new Set<string>();
  /** Chunks of a blob this process had checked when `stampChecked` last looked at it. */
  readonly #stampLooked = new Map<string, number>();
  readonly #scratch = new Uint8Array(CHUNK_SIZE);
  readonly #now = Math.floor(Date.now() / 1000);
  #inTx = false;
  /** Upserts of `n` entries at once, by n (a statement per row cost ~3x as much). */
  readonly #putEntries = new Map<number, Statement>();
  /** `blob`'s query, made once: every open of a cached file asks it. */
  #blobQuery: Statement | null = null;
  /** `heldMeta`'s, made once. */
  #metaQuery: Statement | null = null;

  readonly #clock: () => number;

  constructor(readonly dir: string, options: CacheStoreOptions = {}) {
    this.#clock = options.clock ?? Date.now;
    Deno.mkdirSync(`${dir}/blobs`, { recursive: true, mode: 0o700 });
    this.db = openDatabase(`${dir}/index.sqlite`);
    this.db.exec("pragma busy_timeout = 10000");
    this.db.exec("pragma journal_mode = wal");
    this.db.exec("pragma synchronous = normal");
    // Pages mapped rather than read one syscall each: a new agent's first query of
    // 4,000 held rows 34 -> 21-26 ms.
    this.db.exec("pragma mmap_size = 268435456");
    this.tx(() => {
      const { user_version } = this.db.prepare("pragma user_version").get() as {
        user_version: number;
      };
      if (user_version !== SCHEMA_VERSION) {
        this.db.exec("drop table if exists entries; drop table if exists blobs;");
        this.db.exec("drop table if exists hot;");
        this.db.exec(SCHEMA);
        this.db.exec(`pragma user_version = ${SCHEMA_VERSION}`);
      }
      this.db.exec(HOT_SCHEMA);
      this.db.exec(HELD_SCHEMA);
    });
  }

  close(): void {
    for (const fd of this.#fds.values()) libc().close(fd);
    this.#fds.clear();
    this.db.close();
  }

  /**
   * Runs `f` in one write transaction (taken up front: no upgrade deadlocks); within
   * another, as part of it.
   */
  tx<T>(f: () => T): T {
    if (this.#inTx) return f();
    this.db.exec("begin immediate");
    this.#inTx = true;
    try {
      const r = f();
      this.db.exec("commit");
      return r;
    } catch (e) {
      this.db.exec("rollback");
      throw e;
    } finally {
      this.#inTx = false;
    }
  }

  /**
   * What a validation sends (HeldEntry: path, fingerprint, content id or "", present
   * chunks, listed), each path's meta apart (`heldMetas`).
   */
  heldState(client: string, only?: readonly string[]): HeldEntry[] {
    // One query for all: a statement per row's blob cost ~0.1 ms each, thousands a run;
    // the rows as SQLite gives them, arrays in the entries' order: as objects, and then
    // entries, 6,500 rows took ~25 ms more in a new agent (~25 ms for the query).
    const query = this.db.prepare(
      `select e.path, e.fp, coalesce(b.hash, ''), coalesce(b.present, x''), e.listed
       from entries e left join blobs b on b.hash = e.hash where e.client = ?` +
        (only ? ONLY_PATHS : ""),
    );
    query.setReturnArrays(true);
    const rows = (only ? query.all(client, JSON.stringify(only)) : query.all(client)) as [
      string,
      string,
      string,
      Uint8Array,
      number | boolean,
    ][];
    for (const row of rows) row[4] = row[4] !== 0;
    return rows as HeldEntry[];
  }

  /**
   * What `client` holds as a validation sends it, packed, made when the store was as it
   * is now (no name changed since), or null. A table dropped and made again (by an
   * outrun of another schema) moves SQLite's schema version, which the snapshot keeps.
   */
  heldSnapshot(client: string): { gen: number; held: HeldColumns } | null {
    const row = this.db.prepare(
      `select p.gen, p.packed from held_packed p where p.client = ? and p.schema = ? and
         p.gen = coalesce((select gen from held_gen where client = p.client), 0)`,
    ).get(client, this.#schemaVersion()) as { gen: number; packed: Uint8Array } | undefined;
    return row ? { gen: row.gen, held: decodeValue(row.packed) as unknown as HeldColumns } : null;
  }

  /** What `client` holds (heldState) and the change count it was read at, at once. */
  heldNow(client: string): { gen: number; rows: HeldEntry[] } {
    if (this.#inTx) return { gen: this.heldGen(client), rows: this.heldState(client) };
    this.db.exec("begin"); // one read: the count and the rows agree
    try {
      return { gen: this.heldGen(client), rows: this.heldState(client) };
    } finally {
      this.db.exec("commit");
    }
  }

  /** Keeps `held` (as read at `gen`) for the next validations while nothing changes. */
  keepHeldSnapshot(client: string, gen: number, held: HeldColumns): void {
    const packed = encodeValue(held as unknown as Value);
    this.tx(() =>
      this.db.prepare(
        `insert into held_packed(client, gen, schema, packed) values (?, ?, ?, ?)
         on conflict(client) do update set gen = excluded.gen, schema = excluded.schema,
           packed = excluded.packed`,
      ).run(client, gen, this.#schemaVersion(), packed)
    );
  }

  /** The count of changes to `client`'s names (heldSnapshot's). */
  heldGen(client: string): number {
    const row = this.db.prepare("select gen from held_gen where client = ?").get(client) as
      | { gen: number }
      | undefined;
    return row?.gen ?? 0;
  }

  #schemaVersion(): number {
    return (this.db.prepare("pragma schema_version").get() as { schema_version: number })
      .schema_version;
  }

  /** How many names `client` holds. */
  heldCount(client: string): number {
    return (this.db.prepare("select count(*) as n from entries where client = ?").get(client) as {
      n: number;
    }).n;
  }

  /**
   * The names `exe` used in its last runs here (what a start checks before the command
   * runs; the rest is checked while it runs), or null when it has not run here.
   */
  hotPaths(client: string, exe: string): string[] | null {
    const row = this.db.prepare("select paths from hot where client = ? and exe = ?")
      .get(client, exe) as { paths: Uint8Array } | undefined;
    if (!row) return null;
    const text = new TextDecoder().decode(row.paths);
    return text ? text.split("\0") : [];
  }

  /** Keeps the names `exe` used (hotPaths); a client keeps HOT_KEPT commands' at most. */
  setHot(client: string, exe: string, paths: Iterable<string>): void {
    const bytes = new TextEncoder().encode([...paths].join("\0"));
    this.tx(() => {
      this.db.prepare(
        `insert into hot(client, exe, paths, last_used) values (?, ?, ?, ?)
         on conflict(client, exe) do update set paths = excluded.paths, last_used = excluded.last_used`,
      ).run(client, exe, bytes, this.#now);
      // This one stays, and the others most recently run (seconds: ties are common).
      this.db.prepare(
        `delete from hot where client = ? and exe != ? and exe not in
           (select exe from hot where client = ? and exe != ? order by last_used desc limit ?)`,
      ).run(client, exe, client, exe, HOT_KEPT - 1);
    });
  }

  /**
   * Each held path's encoded meta (decodeMeta), content id and fingerprint, or those
   * of `only`.
   */
  heldMetas(client: string, only?: readonly string[]): HeldMeta[] {
    const query = this.db.prepare(
      `select ${HELD_META} from entries e where e.client = ?` + (only ? ONLY_PATHS : ""),
    );
    query.setReturnArrays(true);
    return (only ? query.all(client, JSON.stringify(only)) : query.all(client)) as HeldMeta[];
  }

  /** One held path's, as `heldMetas`, or null. */
  heldMeta(client: string, path: string): HeldMeta | null {
    if (!this.#metaQuery) {
      this.#metaQuery = this.db.prepare(
        `select ${HELD_META} from entries e where e.client = ? and e.path = ?`,
      );
      this.#metaQuery.setReturnArrays(true);
    }
    return (this.#metaQuery.get(client, path) as HeldMeta | undefined) ?? null;
  }

  putMetas(client: string, metas: MetaRecord[]): void {
    if (!metas.length) return;
    this.tx(() => {
      for (let i = 0; i < metas.length; i += PUT_BATCH) {
        const part = metas.slice(i, i + PUT_BATCH);
        const args: SqlValue[] = [];
        for (const m of part) {
          args.push(
            client,
            m.path,
            fingerprint(m.attr, m.target),
            encodeValue(packMeta(m) as unknown as Value),
            m.children ? 1 : 0,
            this.#now,
          );
        }
        this.#putEntriesOf(part.length).run(...args);
      }
    });
  }

  #putEntriesOf(n: number): Statement {
    let put = this.#putEntries.get(n);
    if (!put) {
      put = this.db.prepare(
        `insert into entries(client, path, fp, meta, listed, hash, last_used) values ${
          Array(n).fill("(?, ?, ?, ?, ?, null, ?)").join(", ")
        } on conflict(client, path) do update set
         hash = case when fp = excluded.fp then hash else null end, fp = excluded.fp,
         meta = excluded.meta, listed = excluded.listed, last_used = excluded.last_used`,
      );
      this.#putEntries.set(n, put);
    }
    return put;
  }

  /** Records a file's content id (checked against its chunk hashes) for a path. */
  putContent(client: string, info: ContentInfo): void {
    const [error] = this.putContents(client, [info]);
    if (error) throw error;
  }

  /**
   * `putContent` for many, in one transaction (a push carries hundreds); returns, for
   * each, null or why it was refused (its chunk hashes do not make its content id).
   */
  putContents(client: string, infos: ContentInfo[], link = true): (CacheCorrupt | null)[] {
    const errors = infos.map((info) => {
      if (contentHash(info.chunkHashes) !== info.hash) {
        return new CacheCorrupt(`${info.path}: chunk hashes do not match content id ${info.hash}`);
      }
      if (info.chunkHashes.length !== chunkCount(info.size) * 32) {
        return new CacheCorrupt(
          `${info.path}: ${info.chunkHashes.length / 32} chunk hashes for ${info.size} bytes`,
        );
      }
      return null;
    });
    if (errors.every((e) => e)) return errors;
    const blob = this.db.prepare(
      `insert into blobs(hash, size, chunk_hashes, present, last_used) values (?, ?, ?, ?, ?)
       on conflict(hash) do update set last_used = excluded.last_used`,
    );
    this.tx(() => {
      infos.forEach((info, i) => {
        if (errors[i]) return;
        const bits = ChunkBitmap.empty(chunkCount(info.size)).bits;
        blob.run(info.hash, info.size, info.chunkHashes, bits, this.#now);
      });
      if (link) this.linkContents(client, infos.filter((_, i) => !errors[i]));
    });
    return errors;
  }

  /**
   * Records which content each path has (its blob put before), for the entries
   * whose meta has the same fingerprint: the path's name is written first.
   */
  linkContents(client: string, infos: ContentInfo[]): void {
    if (!infos.length) return;
    const entry = this.db.prepare(
      "update entries set hash = ? where client = ? and path = ? and fp = ?",
    );
    this.tx(() => {
      for (const info of infos) entry.run(info.hash, client, info.path, info.fp);
    });
  }

  /** Drops `path` and every name below it. */
  dropTree(client: string, path: string): void {
    // Below: from "path/" up to "path0" ("0" follows "/"), on the index's order.
    const below = path === "/" ? "/" : `${path}/`;
    const end = path === "/" ? "0" : `${path}0`;
    this.tx(() =>
      this.db.prepare(
        "delete from entries where client = ? and (path = ? or (path >= ? and path < ?))",
      ).run(client, path, below, end)
    );
  }

  drop(client: string, paths: string[]): void {
    if (!paths.length) return;
    const del = this.db.prepare("delete from entries where client = ? and path = ?");
    this.tx(() => {
      for (const p of paths) del.run(client, p);
    });
  }

  blob(hash: string): BlobRow | null {
    this.#blobQuery ??= this.db.prepare(
      "select size, chunk_hashes, present, checked from blobs where hash = ?",
    );
    const r = this.#blobQuery.get(hash) as
      | { size: number; chunk_hashes: Uint8Array; present: Uint8Array; checked: string | null }
      | undefined;
    if (!r) return null;
    return {
      hash,
      size: r.size,
      chunkHashes: r.chunk_hashes,
      present: new ChunkBitmap(r.present),
      checked: r.checked,
    };
  }

  #blobPath(hash: string): string {
    return `${this.dir}/blobs/${hash.slice(0, 2)}/${hash}`;
  }

  #fd(hash: string): number {
    let fd = this.#fds.get(hash);
    if (fd === undefined) {
      const path = this.#blobPath(hash);
      Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
      fd = open(path, O.RDWR | O.CREAT | O.CLOEXEC, 0o600);
      this.#fds.set(hash, fd);
    }
    return fd;
  }

  /**
   * Stores chunk `index` of blob `hash` after checking it. Returns false (and stores
   * nothing) when the bytes are not that chunk.
   */
  writeChunk(hash: string, index: number, data: Uint8Array): boolean {
    return this.writeChunks([{ hash, index, data }])[0];
  }

  /**
   * `writeChunk` for many: each blob's row read once, and one transaction for all the
   * bits (a push carries a megabyte of chunks; a transaction each cost more than the
   * writes). Returns, for each chunk, whether it was stored.
   */
  writeChunks(chunks: { hash: string; index: number; data: Uint8Array }[]): boolean[] {
    const blobs = new Map<string, BlobRow | null>();
    const written = new Map<string, number[]>();
    const ok = chunks.map(({ hash, index, data }) => {
      if (!blobs.has(hash)) blobs.set(hash, this.blob(hash));
      const blob = blobs.get(hash)!;
      if (!blob || !chunkMatches(blob.chunkHashes, index, data)) return false;
      if (blob.present.has(index)) return true;
      const fd = this.#fd(hash);
      const buf = data.buffer instanceof ArrayBuffer
        ? data as Uint8Array<ArrayBuffer>
        : new Uint8Array(data);
      let done = 0;
      while (done < buf.length) {
        done += Number(check(
          "pwrite",
          libc().pwrite64(
            fd,
            buf.subarray(done),
            BigInt(buf.length - done),
            BigInt(index * CHUNK_SIZE + done),
          ),
        ));
      }
      this.#verified.add(`${hash}:${index}`);
      this.#stampCurrent.delete(hash);
      let list = written.get(hash);
      if (!list) written.set(hash, list = []);
      list.push(index);
      return true;
    });
    // Bits are set after the writes.
    this.#changePresent(written, (present, i) => present.add(i));
    return ok;
  }

  /**
   * Changes the chunk bitmaps of blobs in one transaction, each read afresh inside
   * it: another process may have changed other bits meanwhile.
   */
  #changePresent(
    chunks: Map<string, number[]>,
    change: (present: ChunkBitmap, index: number) => void,
  ): void {
    if (!chunks.size) return;
    const get = this.db.prepare("select present from blobs where hash = ?");
    const set = this.db.prepare("update blobs set present = ? where hash = ?");
    this.tx(() => {
      for (const [hash, indices] of chunks) {
        const row = get.get(hash) as { present: Uint8Array } | undefined;
        if (!row) continue;
        const present = new ChunkBitmap(row.present);
        for (const i of indices) change(present, i);
        set.run(present.bits, hash);
      }
    });
  }

  /**
   * Reads chunk `index` of a blob whose bit is set, checking it the first time this
   * process reads it. A chunk that fails the check loses its bit (CacheCorrupt). The
   * bytes are valid until the next call (this store's buffer): copy what is kept.
   */
  readChunk(blob: BlobRow, index: number): Uint8Array {
    const fd = this.#fd(blob.hash);
    this.#lookAtStamp(fd, blob);
    return this.#readChecked(fd, blob, index);
  }

  /**
   * Bytes [start, end) of a blob whose chunks there are all present, into `into`. A
   * blob this process trusts (its stamp) or whose chunks there it has checked is read
   * with one pread straight into `into`: a warm ffmpeg start reads ~70 MB of libraries
   * held in part this way, and hashing them again took ~60 ms of each start. Otherwise
   * chunk by chunk, each checked first (CacheCorrupt when one fails).
   */
  readRange(blob: BlobRow, start: number, end: number, into: Uint8Array): number {
    const fd = this.#fd(blob.hash);
    this.#lookAtStamp(fd, blob);
    const first = Math.floor(start / CHUNK_SIZE);
    const last = Math.floor((end - 1) / CHUNK_SIZE);
    if (this.#trusted.has(blob.hash) || this.#allVerified(blob.hash, first, last)) {
      const out = into.subarray(0, end - start);
      for (let done = 0; done < out.length;) {
        const n = Number(
          check(
            "pread",
            libc().pread64(fd, out.subarray(done), BigInt(out.length - done), BigInt(start + done)),
          ),
        );
        // Shorter than the index says: the file was cut; its chunks are not here after all.
        if (n === 0) throw this.#corrupt(blob, Math.floor((start + done) / CHUNK_SIZE));
        done += n;
      }
      return out.length;
    }
    for (let i = first; i <= last; i++) {
      const chunk = this.#readChecked(fd, blob, i);
      const from = Math.max(start, i * CHUNK_SIZE);
      const to = Math.min(end, (i + 1) * CHUNK_SIZE);
      into.set(chunk.subarray(from - i * CHUNK_SIZE, to - i * CHUNK_SIZE), from - start);
    }
    return end - start;
  }

  #allVerified(hash: string, first: number, last: number): boolean {
    for (let i = first; i <= last; i++) if (!this.#verified.has(`${hash}:${i}`)) return false;
    return true;
  }

  /** Once a process: whether the blob's file is as its `checked` stamp says. */
  #lookAtStamp(fd: number, blob: BlobRow): void {
    if (this.#stampSeen.has(blob.hash)) return;
    this.#stampSeen.add(blob.hash);
    if (blob.checked !== null && blob.checked === fileStamp(fstatFd(fd))) {
      this.#stamped(blob.hash);
    }
  }

  /** The blob's file is as its `checked` stamp says: its present chunks are trusted. */
  #stamped(hash: string): void {
    this.#trusted.add(hash);
    this.#stampCurrent.add(hash);
  }

  /** Drops a chunk that failed its check (its bit here and in the index). */
  #corrupt(blob: BlobRow, index: number): CacheCorrupt {
    this.#changePresent(new Map([[blob.hash, [index]]]), (present, i) => present.delete(i));
    blob.present.delete(index);
    this.#trusted.delete(blob.hash);
    return new CacheCorrupt(`blob ${blob.hash} chunk ${index} does not match its hash`);
  }

  /** `readChunk` from `fd`, an fd of the blob's file. */
  #readChecked(fd: number, blob: BlobRow, index: number): Uint8Array {
    const len = Math.min(CHUNK_SIZE, blob.size - index * CHUNK_SIZE);
    // One buffer for all reads: a fresh 64 KiB array per read cost a new process
    // ~0.25 ms each in page faults (a warm ffmpeg start reads ~1,100 chunks).
    const out = this.#scratch.subarray(0, len);
    const n = Number(libc().pread64(fd, out, BigInt(len), BigInt(index * CHUNK_SIZE)));
    const key = `${blob.hash}:${index}`;
    if (!this.#trusted.has(blob.hash) && !this.#verified.has(key)) {
      if (n !== len || !chunkMatches(blob.chunkHashes, index, out)) {
        throw this.#corrupt(blob, index);
      }
      this.#verified.add(key);
    }
    return out;
  }

  /** Whether every chunk of the blob is here. */
  static complete(blob: BlobRow): boolean {
    const n = chunkCount(blob.size);
    for (let i = 0; i < n; i++) if (!blob.present.has(i)) return false;
    return true;
  }

  /**
   * A new read-only fd of a complete blob's file for the kernel to read itself
   * (FUSE passthrough: no process here sees those reads). Every chunk this process
   * has not checked yet is checked first, as `readChunk` would have one by one,
   * unless the file is as it was when all of it was last known good (its `checked`
   * stamp): hashing a warm ffmpeg's libraries whole took ~200 ms of each start.
   * null, and nothing open, when the file is not whole or a chunk fails its check
   * (that chunk loses its bit, so it is fetched again).
   */
  backingFd(blob: BlobRow): number | null {
    if (!blob.size || !CacheStore.complete(blob)) return null;
    const fd = open(this.#blobPath(blob.hash), O.RDONLY | O.CLOEXEC);
    try {
      const st = fstatFd(fd);
      // Longer than the blob (a damaged file): the kernel would read past its end.
      if (Number(st.size) !== blob.size) return this.#close(fd);
      // Taken before the reads: a write meanwhile leaves a stamp that will not match.
      const stamp = fileStamp(st);
      if (blob.checked === stamp) {
        this.#stamped(blob.hash);
        return fd;
      }
      const n = chunkCount(blob.size);
      for (let i = 0; i < n; i++) {
        if (!this.#verified.has(`${blob.hash}:${i}`)) this.#readChecked(fd, blob, i);
      }
      if (this.#settled(st)) this.#setChecked(blob, stamp);
      return fd;
    } catch (e) {
      this.#close(fd);
      if (e instanceof CacheCorrupt) return null;
      throw e;
    }
  }

  /** Unchanged for SETTLED_S: no later write can leave its stamp as it is. */
  #settled(st: Stat): boolean {
    const changed = Number(st.ctimeSec) * 1000 + st.ctimeNsec / 1e6;
    return this.#clock() - changed >= SETTLED_S * 1000;
  }

  #setChecked(blob: BlobRow, stamp: string): void {
    this.db.prepare("update blobs set checked = ? where hash = ?").run(stamp, blob.hash);
    blob.checked = stamp;
    this.#stamped(blob.hash);
  }

  /**
   * Stamps the files of the blobs this process wrote or read, when it has checked
   * every chunk they hold (on arrival or on read), so that later processes need not
   * hash them again (`backingFd` for whole ones, `readRange` for all). At the end of a
   * session: a cold start's blobs are not handed to the kernel in the session that
   * fills them. The file is looked at before its bitmap: a chunk written after the
   * look moves the ctime past the stamp; one written before it and marked after the
   * bitmap was read was checked by its writer.
   */
  stampChecked(): void {
    const counts = new Map<string, number>();
    for (const key of this.#verified) {
      const hash = key.slice(0, key.indexOf(":"));
      counts.set(hash, (counts.get(hash) ?? 0) + 1);
    }
    const stamps: [string, string][] = [];
    for (const [hash, count] of counts) {
      // Stamped as it is, or looked at with as many chunks (a master ends many commands).
      if (this.#stampCurrent.has(hash) || this.#stampLooked.get(hash) === count) continue;
      this.#stampLooked.set(hash, count);
      let st: Stat;
      try {
        st = fstatFd(this.#fd(hash));
      } catch {
        continue;
      }
      const blob = this.blob(hash);
      if (!blob || Number(st.size) > blob.size) continue;
      const n = chunkCount(blob.size);
      // Trusted: what it held was sound when this process looked, and what came since
      // was checked by the process that wrote it.
      let all = true;
      for (let i = 0; i < n && all && !this.#trusted.has(hash); i++) {
        all = !blob.present.has(i) || this.#verified.has(`${hash}:${i}`);
      }
      const stamp = fileStamp(st);
      if (all && blob.checked !== stamp && this.#settled(st)) stamps.push([stamp, hash]);
    }
    if (!stamps.length) return;
    const set = this.db.prepare("update blobs set checked = ? where hash = ?");
    this.tx(() => {
      for (const [stamp, hash] of stamps) set.run(stamp, hash);
    });
    for (const [, hash] of stamps) this.#stamped(hash);
  }

  #close(fd: number): null {
    libc().close(fd);
    return null;
  }

  /** Marks what a session used, so eviction takes the least recently used first. */
  touch(client: string, paths: Iterable<string>, hashes: Iterable<string>): void {
    const e = this.db.prepare("update entries set last_used = ? where client = ? and path = ?");
    const b = this.db.prepare("update blobs set last_used = ? where hash = ?");
    this.tx(() => {
      for (const p of paths) e.run(this.#now, client, p);
      for (const h of hashes) b.run(this.#now, h);
    });
  }

  /**
   * Drops `client`'s least recently used names beyond `max` (their contents stay, for
   * other names and clients, until evicted). Returns how many went.
   */
  trimHeld(client: string, max = MAX_HELD): number {
    const n = this.heldCount(client);
    if (n <= max) return 0;
    this.tx(() =>
      this.db.prepare(
        `delete from entries where client = ? and path in
           (select path from entries where client = ? order by last_used asc limit ?)`,
      ).run(client, client, n - max)
    );
    return n - max;
  }

  /** Drops least recently used blobs until both limits hold. Returns how many went. */
  evict(limits: StoreLimits): number {
    const rows = this.db.prepare("select hash, size, present from blobs order by last_used desc")
      .all() as { hash: string; size: number; present: Uint8Array }[];
    let count = 0;
    let bytes = 0;
    const victims: string[] = [];
    for (const r of rows) {
      const stored = Math.min(
        r.size,
        new ChunkBitmap(r.present).count(chunkCount(r.size)) * CHUNK_SIZE,
      );
      if (count + 1 > limits.maxEntries || bytes + stored > limits.maxBytes) {
        victims.push(r.hash);
        continue;
      }
      count++;
      bytes += stored;
    }
    if (!victims.length) return 0;
    this.tx(() => {
      for (const h of victims) {
        this.db.prepare("delete from blobs where hash = ?").run(h);
        this.db.prepare("update entries set hash = null where hash = ?").run(h);
      }
    });
    for (const h of victims) {
      const fd = this.#fds.get(h);
      if (fd !== undefined) libc().close(fd);
      this.#fds.delete(h);
      try {
        Deno.removeSync(this.#blobPath(h));
      } catch { /* never written */ }
    }
    return victims.length;
  }

  stats(): { blobs: number; entries: number; bytes: number } {
    const b = this.db.prepare("select count(*) n from blobs").get() as { n: number };
    const e = this.db.prepare("select count(*) n from entries").get() as { n: number };
    let bytes = 0;
    for (const h of this.#blobHashes()) {
      try {
        bytes += Deno.statSync(this.#blobPath(h)).blocks! * 512;
      } catch { /* none yet */ }
    }
    return { blobs: b.n, entries: e.n, bytes };
  }

  #blobHashes(): string[] {
    return (this.db.prepare("select hash from blobs").all() as { hash: string }[]).map((r) =>
      r.hash
    );
  }
}
