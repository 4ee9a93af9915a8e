/**
 * The cache's messages between outrun's local side (which has the files) and the
 * remote mirror (which keeps them across sessions). Data only ever flows as
 * `cache.push` events, local -> remote, in stream order; calls only ask for
 * pushes and answer when they are all sent. So a push may arrive unasked
 * (prefetch) and the remote handles every push the same way, whichever call
 * caused it: by the time a call's answer arrives, what it pushed is stored.
 *
 * Paths and symlink targets are byte strings (one char per byte), like lib/fuse's.
 */
import type { Attr, AttrOut, EntryOut } from "../../fuse/mod.ts";
import type { BulkCodec, PackedBytes } from "../file_wire.ts";
import { hex } from "../../sys/bytes.ts";
import { S_IFDIR, S_IFMT } from "../../sys/stat.ts";

export const CACHE_EVENTS = {
  push: "cache.push",
  /**
   * ValidateReply, unasked: a session that stays (ControlMaster) revalidates on the
   * local side before each command; sent before that command's pushes.
   */
  revalidated: "cache.revalidated",
  /**
   * null: the chunks a validation's answer announced (`incoming`) are all sent (or
   * will not be: unreadable now); what did not come is asked for.
   */
  pushed: "cache.pushed",
  /**
   * UsedReport, remote -> local: what a command through a shared mount used first, for
   * the local side to keep as (part of) its executable's profile.
   */
  used: "cache.used",
  /**
   * ValidateReply, unasked: the validation's answer for a remote that holds nothing
   * (the local side pushed the command's profile ahead, `RunRequest.validatedAhead`),
   * sent after the profile's names and content ids, before its chunks.
   */
  validated: "cache.validated",
} as const;

export interface UsedReport {
  exe: string;
  used: Profile;
}

export const CACHE_CALLS = {
  /** ValidateRequest -> ValidateReply: the one round trip of a warm start. */
  validate: "cache.validate",
  /**
   * ValidateRestRequest -> ValidateReply (its `ahead` empty, its `root` null): all the
   * held names (those `validate` checked first again among them), asked for right after
   * `validate` and answered while the command runs.
   */
  validateRest: "cache.validateRest",
  /** {path} -> null, after pushing its MetaRecord (and what will be asked next). */
  meta: "cache.meta",
  /** {path} -> null, after pushing its ContentInfo (and what will be asked next). */
  content: "cache.content",
  /** ChunkRequest -> null, after pushing those chunks (and readahead). */
  chunks: "cache.chunks",
  /** {path} -> EntryOut of the local file service: a cached path's own node there. */
  lookupPath: "fs.lookupPath",
} as const;

/** The cache's calls (remote -> local), as CACHE_CALLS names them, with their types. */
export type CacheCalls = {
  "cache.validate": { args: ValidateRequest; result: ValidateReply };
  "cache.validateRest": { args: ValidateRestRequest; result: ValidateReply };
  "cache.meta": { args: { path: string }; result: null };
  "cache.content": { args: { path: string }; result: null };
  "cache.chunks": { args: ChunkRequest; result: null };
  "fs.lookupPath": { args: { path: string }; result: EntryOut | null };
};

/** The cache's events, as CACHE_EVENTS names them, with their payloads. */
export type CacheEvents = {
  "cache.push": Push;
  "cache.revalidated": ValidateReply;
  "cache.pushed": null;
  "cache.used": UsedReport;
  "cache.validated": ValidateReply;
};

/**
 * Bytes per chunk: the unit of transfer, verification and sparse storage. It is
 * part of every content id: stores made with another size are rebuilt (their
 * schema versions include it).
 */
export const CHUNK_SIZE = 64 * 1024;

/** One path as the local side sees it. */
export interface MetaRecord {
  path: string;
  /** null: no such file (a negative entry). */
  attr: Attr | null;
  /** Symlinks: the target. */
  target?: string;
  /** Directories that were listed: every name in them ("." and ".." left out). */
  children?: string[];
}

/**
 * A MetaRecord as it crosses and as the store keeps it: by position, not as an object.
 * A cold ffmpeg pushes 2,600 of them; as objects, their 15 attribute names were most
 * of their bytes (840 KB against 370) and of the time to encode and decode them
 * (~3x). [path, attr, symlink target, listing]; attr as in `PackedAttr`.
 */
export type PackedMeta = [string, PackedAttr | null, string | null, string[] | null];

/** Attr by position: ino size blocks atime(s, ns) mtime(s, ns) ctime(s, ns) mode nlink uid gid rdev blksize. */
export type PackedAttr = [
  bigint,
  bigint,
  bigint,
  bigint,
  number,
  bigint,
  number,
  bigint,
  number,
  number,
  number,
  number,
  number,
  bigint | number,
  number,
];

export function packMeta(m: MetaRecord): PackedMeta {
  const a = m.attr;
  return [
    m.path,
    a && [
      a.ino,
      a.size,
      a.blocks,
      a.atimeSec,
      a.atimeNsec,
      a.mtimeSec,
      a.mtimeNsec,
      a.ctimeSec,
      a.ctimeNsec,
      a.mode,
      a.nlink,
      a.uid,
      a.gid,
      a.rdev,
      a.blksize,
    ],
    m.target ?? null,
    m.children ?? null,
  ];
}

/** The MetaRecord a PackedMeta stands for; throws on what is not one (a damaged store row). */
export function unpackMeta(p: PackedMeta): MetaRecord {
  if (!Array.isArray(p) || typeof p[0] !== "string" || (p[1] !== null && p[1]?.length !== 15)) {
    throw new TypeError("not a packed meta");
  }
  const a = p[1];
  const m: MetaRecord = {
    path: p[0],
    attr: a && {
      ino: a[0],
      size: a[1],
      blocks: a[2],
      atimeSec: a[3],
      atimeNsec: a[4],
      mtimeSec: a[5],
      mtimeNsec: a[6],
      ctimeSec: a[7],
      ctimeNsec: a[8],
      mode: a[9],
      nlink: a[10],
      uid: a[11],
      gid: a[12],
      rdev: a[13],
      blksize: a[14],
    },
  };
  if (p[2] !== null) m.target = p[2];
  if (p[3] !== null) m.children = p[3];
  return m;
}

/** A regular file's content identity: sha256 over the sha256 of each chunk. */
export interface ContentInfo {
  path: string;
  /** The fingerprint of the file this was read from (see `fingerprint`). */
  fp: string;
  hash: string;
  size: number;
  /** 32 bytes per chunk, in order. */
  chunkHashes: Uint8Array;
}

/** How a chunk's bytes are compressed on the way. */
export type ChunkCodec = "lz4" | "zstd";

/**
 * Chunks of one content travelling together: their bytes joined in the order of
 * `indices`, compressed as one block (one call each way instead of one per chunk,
 * and a block's own window: ~0.25 s less CPU on a cold ffmpeg's 1,100 chunks).
 */
export interface ChunkRun {
  hash: string;
  indices: number[];
  /** Each chunk's length (CHUNK_SIZE but for a file's last chunk). */
  lengths: number[];
  /** A block compressed with `codec` (LZ4 when absent) when `rawLength` > 0, else the bytes. */
  data: Uint8Array;
  rawLength: number;
  codec?: ChunkCodec;
}

/** Chunks joined into one run at most (a megabyte: pushes stay about that size). */
export const RUN_CHUNKS = 16;

export interface Push {
  metas?: PackedMeta[];
  contents?: ContentInfo[];
  runs?: ChunkRun[];
}

/**
 * What the remote has for this client: [path, fingerprint, content hash or "",
 * present chunks, whether it holds the directory's listing].
 */
export type HeldEntry = [string, string, string, Uint8Array, boolean];

/**
 * What the remote holds as the validation sends it: column by column, a row per path
 * in the same order in each. As a list of rows (five values each, the content id in
 * hex) 2,600 rows took a new agent ~27 ms to encode and this side ~33 ms to decode,
 * and 30% more bytes.
 */
export interface HeldColumns {
  count: number;
  /**
   * The paths, then their fingerprints, each ended by "\0" (which no path holds), as
   * UTF-8: packed with the session's codec when that pays (~5x for a system's names).
   */
  text: Uint8Array | PackedBytes;
  /** The rows whose directory listing is held: indices, u32 little-endian. */
  listed: Uint8Array;
  /** The rows with content: indices, u32 little-endian. */
  content: Uint8Array;
  /** Those rows' content ids, 32 bytes each. */
  hashes: Uint8Array;
  /** Those rows' present-chunk bitmaps, each after its length (u32 little-endian). */
  present: Uint8Array;
}

/** Each hex digit's value by character code (lower case), 255 for any other character. */
const HEX_VALUE = new Uint8Array(128).fill(255);
for (let i = 0; i < 16; i++) HEX_VALUE["0123456789abcdef".charCodeAt(i)] = i;

/** A content id's 32 bytes, into `out` at `at` (a regex and parseInt per byte took ~25 ms for 3,000). */
function putHash(hash: string, out: Uint8Array, at: number): void {
  if (hash.length !== 64) throw new Error(`held: bad content id ${hash}`);
  for (let j = 0; j < 32; j++) {
    const hi = HEX_VALUE[hash.charCodeAt(2 * j)] ?? 255;
    const lo = HEX_VALUE[hash.charCodeAt(2 * j + 1)] ?? 255;
    if ((hi | lo) > 15) throw new Error(`held: bad content id ${hash}`);
    out[at + j] = (hi << 4) | lo;
  }
}

function u32s(values: number[]): Uint8Array {
  return new Uint8Array(Uint32Array.from(values).buffer);
}

function readU32s(bytes: Uint8Array): number[] {
  if (bytes.length % 4) throw new Error("held: a u32 column of odd length");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const out: number[] = new Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getUint32(i * 4, true);
  return out;
}

export function packHeld(rows: readonly HeldEntry[], codec?: BulkCodec): HeldColumns {
  const listed: number[] = [];
  const content: number[] = [];
  let presentBytes = 0;
  rows.forEach(([, , hash, present, isListed], i) => {
    if (isListed) listed.push(i);
    if (hash) {
      content.push(i);
      presentBytes += 4 + present.length;
    }
  });
  const hashes = new Uint8Array(content.length * 32);
  const present = new Uint8Array(presentBytes);
  const view = new DataView(present.buffer);
  let at = 0;
  content.forEach((row, k) => {
    const [, , hash, bits] = rows[row];
    putHash(hash, hashes, k * 32);
    view.setUint32(at, bits.length, true);
    present.set(bits, at + 4);
    at += 4 + bits.length;
  });
  const text = rows.length
    ? `${rows.map((r) => r[0]).join("\0")}\0${rows.map((r) => r[1]).join("\0")}\0`
    : "";
  const bytes = new TextEncoder().encode(text);
  return {
    count: rows.length,
    text: (bytes.length >= 16 * 1024 && codec?.pack(bytes)) || bytes,
    listed: u32s(listed),
    content: u32s(content),
    hashes,
    present,
  };
}

/** The rows again; throws on columns that do not fit together. */
export function unpackHeld(c: HeldColumns, codec?: BulkCodec): HeldEntry[] {
  const n = c.count;
  let bytes: Uint8Array;
  if (c.text instanceof Uint8Array) bytes = c.text;
  else if (codec) bytes = codec.unpack(c.text);
  else throw new Error("held: packed, and no codec to unpack it");
  const words = new TextDecoder().decode(bytes).split("\0");
  if (words.length !== 2 * n + 1 || words[2 * n] !== "") {
    throw new Error("held: columns of other lengths");
  }
  const rows: HeldEntry[] = new Array(n);
  for (let i = 0; i < n; i++) rows[i] = [words[i], words[n + i], "", EMPTY, false];
  for (const i of readU32s(c.listed)) {
    if (i >= n) throw new Error("held: a listed row out of range");
    rows[i][4] = true;
  }
  const content = readU32s(c.content);
  if (c.hashes.length !== content.length * 32) throw new Error("held: content ids missing");
  const view = new DataView(c.present.buffer, c.present.byteOffset, c.present.length);
  let at = 0;
  content.forEach((i, k) => {
    if (i >= n || at + 4 > c.present.length) throw new Error("held: a content row out of range");
    const hash = hex(c.hashes.subarray(k * 32, k * 32 + 32));
    const length = view.getUint32(at, true);
    if (at + 4 + length > c.present.length) throw new Error("held: a bitmap past the end");
    rows[i][2] = hash;
    rows[i][3] = c.present.subarray(at + 4, at + 4 + length);
    at += 4 + length;
  });
  return rows;
}

const EMPTY = new Uint8Array(0);

export interface ValidateRequest {
  held: HeldColumns;
  /**
   * The command about to run, as the local side found it through its PATH
   * (RunRequest.exe): its profile is pushed. null: not found there.
   */
  exe: string | null;
  /** Whether the local side should push what this command used last time. */
  prefetch: boolean;
  /**
   * Paths outside the cached prefixes the remote is about to look up (bind mount
   * points, the cwd, the command): answered ahead, one lookup each.
   */
  ahead: string[];
  /**
   * All the held names follow (validateRest): `held` is only what this command used
   * last time, and the profile is pushed with the rest's answer, when all is known of
   * what the remote holds.
   */
  rest?: boolean;
}

export interface ValidateRestRequest {
  held: HeldColumns;
  exe: string | null;
  prefetch: boolean;
}

/** A lookup answered ahead: the local parent node, the name, the local answer. */
export type AheadEntry = [number, string, EntryOut];

export interface ValidateReply {
  /** Held paths that changed or vanished here: drop them. */
  stale: string[];
  ahead: AheadEntry[];
  /** The mirror root's attributes (the kernel asks for them first). */
  root: AttrOut | null;
  /**
   * Chunks pushed after this answer (a profile's): a read that needs one waits for it
   * rather than asking, until the `cache.pushed` event.
   */
  incoming?: ChunkPlan[];
}

/** Chunks of one content, by index. */
export interface ChunkPlan {
  hash: string;
  indices: number[];
}

export interface ChunkRequest {
  path: string;
  hash: string;
  indices: number[];
}

/**
 * What a run used of the cached paths, as the remote saw it: kept by the local side
 * per executable and pushed at the start of its next run.
 */
export interface Profile {
  metas: string[];
  /** Directories whose listing was consulted. */
  listed: string[];
  /** path -> chunk indices read. */
  chunks: Record<string, number[]>;
  /**
   * Files the remote kernel read itself (FUSE passthrough), whose reads are not known:
   * the profile keeps what it has of them, or takes them whole.
   */
  whole?: string[];
  /**
   * Paths outside the cached prefixes the remote looked up here, the latest runs' first
   * (LOOKUPS_KEPT at most): the validation's answer brings them (ValidateReply.ahead).
   */
  lookups?: string[];
}

/** Lookups a profile keeps (a run's temporary names come and go among them). */
export const LOOKUPS_KEPT = 128;

/** Where names are temporary (made and removed by each run): not kept as lookups. */
export const SCRATCH_DIRS = ["/tmp", "/var/tmp", "/dev/shm", "/run"];

/** What identifies a version of a file without reading it: rsync's quick check plus identity. */
export function fingerprint(attr: Attr | null, target?: string): string {
  if (!attr) return "-";
  const a = attr;
  return `${
    a.mode.toString(8)
  }:${a.size}:${a.mtimeSec}.${a.mtimeNsec}:${a.ctimeSec}.${a.ctimeNsec}:${a.ino}` +
    (target !== undefined ? `:${target}` : "");
}

/** Chunks of a file of `size` bytes. */
export function chunkCount(size: number): number {
  return Math.ceil(size / CHUNK_SIZE);
}

export const DEFAULT_PREFIXES = [
  "/usr",
  "/lib",
  "/lib32",
  "/lib64",
  "/libx32",
  "/bin",
  "/sbin",
  "/etc",
  "/opt",
];

/** The directory part of an absolute byte-string path ("/" for a top-level name). */
export function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

export function join(dir: string, name: string): string {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}

/** Whether `path` lies in (or is) one of the cached prefixes. */
export function isCachedPath(path: string, prefixes: readonly string[]): boolean {
  for (const p of prefixes) {
    if (path === p || (path.startsWith(p) && path.charCodeAt(p.length) === 47)) return true;
  }
  return false;
}

/** Where a symlink at `link` with `target` points, as a plain absolute path. */
export function resolveLink(link: string, target: string): string {
  const abs = target.startsWith("/") ? target : join(dirname(link), target);
  const out: string[] = [];
  for (const part of abs.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return `/${out.join("/")}`;
}

/** Whether `m` is a directory's. */
export function isDir(m: MetaRecord): boolean {
  return m.attr !== null && (m.attr.mode & S_IFMT) === S_IFDIR;
}
