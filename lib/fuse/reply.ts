/**
 * Encoding of FUSE replies: each function returns the complete bytes to write to
 * /dev/fuse for one request (out header included), so a reply is one write.
 */
import {
  ATTR_OUT_SIZE,
  ATTR_SIZE,
  DIRENT_HEADER_SIZE,
  DIRENTPLUS_HEADER_SIZE,
  ENTRY_OUT_SIZE,
  OUT_HEADER_SIZE,
} from "./abi.ts";

/** File attributes as the kernel wants them (lib/sys's Stat is one). */
export interface Attr {
  ino: bigint;
  size: bigint;
  blocks: bigint;
  atimeSec: bigint;
  atimeNsec: number;
  mtimeSec: bigint;
  mtimeNsec: number;
  ctimeSec: bigint;
  ctimeNsec: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: bigint | number;
  blksize: number;
}

/** The attributes a negative entry (nodeid 0) carries: none. */
export const ZERO_ATTR: Attr = {
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

export interface EntryOut {
  /** 0 means a negative entry: "no such name", cached for `entryTimeout`. */
  nodeid: number;
  generation?: number;
  /** Seconds the kernel may cache the name and the attributes. */
  entryTimeout: number;
  attrTimeout: number;
  attr: Attr;
}

export interface AttrOut {
  attr: Attr;
  attrTimeout: number;
}

export interface OpenOut {
  fh: number;
  /** FOPEN_* bits. */
  openFlags?: number;
  /** With FOPEN.PASSTHROUGH: the backing file's id (`Connection.backing.open`). */
  backingId?: number;
}

export interface StatfsOut {
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
  bsize: number;
  namelen: number;
  frsize: number;
}

export interface InitOut {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: bigint;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  timeGran: number;
  maxPages: number;
  /** With PASSTHROUGH: how deep filesystems may stack under backing files. */
  maxStackDepth?: number;
}

/** One directory entry; `nextOffset` is what the kernel passes back to continue after it. */
export interface DirEntry {
  name: string;
  ino: bigint;
  /** DT_* type (mode >> 12). */
  type: number;
  nextOffset: bigint;
  /** READDIRPLUS only: the lookup result (nodeid 0 for "." and ".."). */
  entry?: EntryOut;
}

function header(buf: Uint8Array, error: number, unique: bigint): DataView {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  v.setUint32(0, buf.length, true);
  v.setInt32(4, error, true);
  v.setBigUint64(8, unique, true);
  return v;
}

function reply(unique: bigint, size: number): [Uint8Array<ArrayBuffer>, DataView] {
  const buf = new Uint8Array(OUT_HEADER_SIZE + size);
  return [buf, header(buf, 0, unique)];
}

/** An error reply: `errno` positive (ENOENT = 2), sent negated. */
export function encodeError(unique: bigint, errno: number): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(OUT_HEADER_SIZE);
  header(buf, -Math.abs(errno), unique);
  return buf;
}

export function encodeEmpty(unique: bigint): Uint8Array<ArrayBuffer> {
  return reply(unique, 0)[0];
}

/** Whole seconds and nanoseconds of a timeout given in seconds. */
function splitSeconds(seconds: number): [bigint, number] {
  if (!(seconds > 0)) return [0n, 0];
  const whole = Math.floor(seconds);
  return [BigInt(whole), Math.min(999_999_999, Math.round((seconds - whole) * 1e9))];
}

function putAttr(v: DataView, at: number, a: Attr): void {
  v.setBigUint64(at + 0, a.ino, true);
  v.setBigUint64(at + 8, BigInt.asUintN(64, a.size), true);
  v.setBigUint64(at + 16, BigInt.asUintN(64, a.blocks), true);
  v.setBigUint64(at + 24, BigInt.asUintN(64, a.atimeSec), true);
  v.setBigUint64(at + 32, BigInt.asUintN(64, a.mtimeSec), true);
  v.setBigUint64(at + 40, BigInt.asUintN(64, a.ctimeSec), true);
  v.setUint32(at + 48, a.atimeNsec, true);
  v.setUint32(at + 52, a.mtimeNsec, true);
  v.setUint32(at + 56, a.ctimeNsec, true);
  v.setUint32(at + 60, a.mode, true);
  v.setUint32(at + 64, a.nlink, true);
  v.setUint32(at + 68, a.uid, true);
  v.setUint32(at + 72, a.gid, true);
  v.setUint32(at + 76, encodeDev(a.rdev), true);
  v.setUint32(at + 80, a.blksize, true);
  v.setUint32(at + 84, 0, true);
}

/** Linux's 64-bit dev_t to the kernel's 32-bit new_encode_dev form used by FUSE. */
export function encodeDev(dev: bigint | number): number {
  const d = BigInt(dev);
  const major = Number(((d >> 32n) & 0xfffff000n) | ((d >> 8n) & 0xfffn));
  const minor = Number(((d >> 12n) & 0xffffff00n) | (d & 0xffn));
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

function putEntry(v: DataView, at: number, e: EntryOut): void {
  const [entrySec, entryNsec] = splitSeconds(e.entryTimeout);
  const [attrSec, attrNsec] = splitSeconds(e.attrTimeout);
  v.setBigUint64(at + 0, BigInt(e.nodeid), true);
  v.setBigUint64(at + 8, BigInt(e.generation ?? 0), true);
  v.setBigUint64(at + 16, entrySec, true);
  v.setBigUint64(at + 24, attrSec, true);
  v.setUint32(at + 32, entryNsec, true);
  v.setUint32(at + 36, attrNsec, true);
  putAttr(v, at + 40, e.attr);
}

export function encodeEntry(unique: bigint, e: EntryOut): Uint8Array<ArrayBuffer> {
  const [buf, v] = reply(unique, ENTRY_OUT_SIZE);
  putEntry(v, OUT_HEADER_SIZE, e);
  return buf;
}

export function encodeAttr(unique: bigint, a: AttrOut): Uint8Array<ArrayBuffer> {
  const [buf, v] = reply(unique, ATTR_OUT_SIZE);
  const [sec, nsec] = splitSeconds(a.attrTimeout);
  v.setBigUint64(OUT_HEADER_SIZE, sec, true);
  v.setUint32(OUT_HEADER_SIZE + 8, nsec, true);
  putAttr(v, OUT_HEADER_SIZE + 16, a.attr);
  return buf;
}

export function encodeOpen(unique: bigint, o: OpenOut): Uint8Array<ArrayBuffer> {
  const [buf, v] = reply(unique, 16);
  v.setBigUint64(OUT_HEADER_SIZE, BigInt(o.fh), true);
  v.setUint32(OUT_HEADER_SIZE + 8, o.openFlags ?? 0, true);
  v.setInt32(OUT_HEADER_SIZE + 12, o.backingId ?? 0, true);
  return buf;
}

export function encodeCreate(unique: bigint, e: EntryOut, o: OpenOut): Uint8Array<ArrayBuffer> {
  const [buf, v] = reply(unique, ENTRY_OUT_SIZE + 16);
  putEntry(v, OUT_HEADER_SIZE, e);
  v.setBigUint64(OUT_HEADER_SIZE + ENTRY_OUT_SIZE, BigInt(o.fh), true);
  v.setUint32(OUT_HEADER_SIZE + ENTRY_OUT_SIZE + 8, o.openFlags ?? 0, true);
  v.setInt32(OUT_HEADER_SIZE + ENTRY_OUT_SIZE + 12, o.backingId ?? 0, true);
  return buf;
}

/** fuse_write_out (and the u32 count of COPY_FILE_RANGE). */
export function encodeWrite(unique: bigint, size: number): Uint8Array<ArrayBuffer> {
  const [buf, v] = reply(unique, 8);
  v.setUint32(OUT_HEADER_SIZE, size, true);
  return buf;
}

/** fuse_getxattr_out: the size a GETXATTR/LISTXATTR with size 0 asks for. */
export function encodeXattrSize(unique: bigint, size: number): Uint8Array<ArrayBuffer> {
  return encodeWrite(unique, size);
}

export function encodeLseek(unique: bigint, offset: bigint): Uint8Array<ArrayBuffer> {
  const [buf, v] = reply(unique, 8);
  v.setBigUint64(OUT_HEADER_SIZE, BigInt.asUintN(64, offset), true);
  return buf;
}

export function encodeData(unique: bigint, data: Uint8Array): Uint8Array<ArrayBuffer> {
  const [buf] = reply(unique, data.length);
  buf.set(data, OUT_HEADER_SIZE);
  return buf;
}

export function encodeStatfs(unique: bigint, s: StatfsOut): Uint8Array<ArrayBuffer> {
  const [buf, v] = reply(unique, 80);
  const at = OUT_HEADER_SIZE;
  v.setBigUint64(at + 0, s.blocks, true);
  v.setBigUint64(at + 8, s.bfree, true);
  v.setBigUint64(at + 16, s.bavail, true);
  v.setBigUint64(at + 24, s.files, true);
  v.setBigUint64(at + 32, s.ffree, true);
  v.setUint32(at + 40, s.bsize, true);
  v.setUint32(at + 44, s.namelen, true);
  v.setUint32(at + 48, s.frsize, true);
  return buf;
}

export function encodeInit(unique: bigint, o: InitOut): Uint8Array<ArrayBuffer> {
  const [buf, v] = reply(unique, 64);
  const at = OUT_HEADER_SIZE;
  v.setUint32(at + 0, o.major, true);
  v.setUint32(at + 4, o.minor, true);
  v.setUint32(at + 8, o.maxReadahead, true);
  v.setUint32(at + 12, Number(o.flags & 0xffffffffn), true);
  v.setUint16(at + 16, o.maxBackground, true);
  v.setUint16(at + 18, o.congestionThreshold, true);
  v.setUint32(at + 20, o.maxWrite, true);
  v.setUint32(at + 24, o.timeGran, true);
  v.setUint16(at + 28, o.maxPages, true);
  v.setUint16(at + 30, 0, true); // map_alignment
  v.setUint32(at + 32, Number((o.flags >> 32n) & 0xffffffffn), true);
  v.setUint32(at + 36, o.maxStackDepth ?? 0, true);
  return buf;
}

const align8 = (n: number) => (n + 7) & ~7;

/** Bytes one entry takes in a READDIR (plus=false) or READDIRPLUS reply. */
export function direntSize(nameLength: number, plus: boolean): number {
  return align8((plus ? DIRENTPLUS_HEADER_SIZE : DIRENT_HEADER_SIZE) + nameLength);
}

/**
 * Packs as many entries as fit in `maxSize` bytes (the kernel's buffer); returns the
 * reply and how many entries went in. Entries that did not fit are asked for again.
 */
export function encodeDirents(
  unique: bigint,
  entries: readonly DirEntry[],
  maxSize: number,
  plus: boolean,
): { bytes: Uint8Array<ArrayBuffer>; count: number } {
  let total = 0;
  let count = 0;
  for (const e of entries) {
    const size = direntSize(e.name.length, plus);
    if (total + size > maxSize) break;
    total += size;
    count++;
  }
  const [buf, v] = reply(unique, total);
  let at = OUT_HEADER_SIZE;
  for (let i = 0; i < count; i++) {
    const e = entries[i];
    const start = at;
    if (plus) {
      if (!e.entry) throw new Error(`READDIRPLUS entry ${JSON.stringify(e.name)} has no lookup`);
      putEntry(v, at, e.entry);
      at += ENTRY_OUT_SIZE;
    }
    v.setBigUint64(at, e.ino, true);
    v.setBigUint64(at + 8, e.nextOffset, true);
    v.setUint32(at + 16, e.name.length, true);
    v.setUint32(at + 20, e.type, true);
    for (let j = 0; j < e.name.length; j++) buf[at + 24 + j] = e.name.charCodeAt(j);
    at = start + direntSize(e.name.length, plus);
  }
  return { bytes: buf, count };
}

/** A notification (unique 0, error = notify code): INVAL_INODE. */
export function encodeNotifyInvalInode(
  ino: number,
  offset: bigint,
  length: bigint,
): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(OUT_HEADER_SIZE + 24);
  const v = header(buf, 2, 0n);
  v.setBigUint64(OUT_HEADER_SIZE, BigInt(ino), true);
  v.setBigInt64(OUT_HEADER_SIZE + 8, offset, true);
  v.setBigInt64(OUT_HEADER_SIZE + 16, length, true);
  return buf;
}

/** INVAL_ENTRY: drop `name` under `parent` from the kernel's dentry cache. */
export function encodeNotifyInvalEntry(parent: number, name: string): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(OUT_HEADER_SIZE + 16 + name.length + 1);
  const v = header(buf, 3, 0n);
  v.setBigUint64(OUT_HEADER_SIZE, BigInt(parent), true);
  v.setUint32(OUT_HEADER_SIZE + 8, name.length, true);
  v.setUint32(OUT_HEADER_SIZE + 12, 0, true);
  for (let j = 0; j < name.length; j++) buf[OUT_HEADER_SIZE + 16 + j] = name.charCodeAt(j);
  return buf;
}

export { ATTR_SIZE };
