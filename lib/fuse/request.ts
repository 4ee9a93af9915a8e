/**
 * FUSE requests: one table of opcodes (name, how the body is parsed, whether a
 * reply is sent), and `parseRequest`, which turns the bytes of one read from
 * /dev/fuse into a typed value or a typed error. Byte fixtures for every opcode
 * sit in tests/fuse/request_test.ts.
 */
import { IN_HEADER_SIZE } from "./abi.ts";
import { Cursor, ShortRequest } from "./cursor.ts";

export interface RequestHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: number;
  uid: number;
  gid: number;
  pid: number;
}

/** Fields of fuse_setattr_in, each present only when its FATTR bit is in `valid`. */
export interface SetattrIn {
  valid: number;
  fh: number;
  size: bigint;
  atimeSec: bigint;
  atimeNsec: number;
  mtimeSec: bigint;
  mtimeNsec: number;
  ctimeSec: bigint;
  ctimeNsec: number;
  mode: number;
  uid: number;
  gid: number;
}

/** Each opcode's body, keyed by the opcode's name. */
export interface Bodies {
  LOOKUP: { name: string };
  FORGET: { nlookup: number };
  GETATTR: { flags: number; fh: number };
  SETATTR: SetattrIn;
  READLINK: Record<never, never>;
  SYMLINK: { name: string; target: string };
  MKNOD: { mode: number; rdev: number; umask: number; name: string };
  MKDIR: { mode: number; umask: number; name: string };
  UNLINK: { name: string };
  RMDIR: { name: string };
  RENAME: { newdir: number; name: string; newName: string; flags: number };
  LINK: { oldNodeid: number; newName: string };
  OPEN: { flags: number; openFlags: number };
  READ: { fh: number; offset: bigint; size: number; readFlags: number; flags: number };
  WRITE: { fh: number; offset: bigint; writeFlags: number; flags: number; data: Uint8Array };
  STATFS: Record<never, never>;
  RELEASE: { fh: number; flags: number; releaseFlags: number };
  FSYNC: { fh: number; fsyncFlags: number };
  SETXATTR: { flags: number; name: string; value: Uint8Array };
  GETXATTR: { size: number; name: string };
  LISTXATTR: { size: number };
  REMOVEXATTR: { name: string };
  FLUSH: { fh: number; lockOwner: bigint };
  INIT: { major: number; minor: number; maxReadahead: number; flags: bigint };
  OPENDIR: { flags: number; openFlags: number };
  READDIR: { fh: number; offset: bigint; size: number };
  RELEASEDIR: { fh: number; flags: number; releaseFlags: number };
  FSYNCDIR: { fh: number; fsyncFlags: number };
  ACCESS: { mask: number };
  CREATE: { flags: number; mode: number; umask: number; openFlags: number; name: string };
  INTERRUPT: { target: bigint };
  DESTROY: Record<never, never>;
  BATCH_FORGET: { forgets: { nodeid: number; nlookup: number }[] };
  FALLOCATE: { fh: number; offset: bigint; length: bigint; mode: number };
  READDIRPLUS: { fh: number; offset: bigint; size: number };
  RENAME2: { newdir: number; name: string; newName: string; flags: number };
  LSEEK: { fh: number; offset: bigint; whence: number };
  COPY_FILE_RANGE: {
    fhIn: number;
    offIn: bigint;
    nodeidOut: number;
    fhOut: number;
    offOut: bigint;
    len: bigint;
    flags: bigint;
  };
  POLL: { fh: number; kh: bigint; flags: number; events: number };
  SYNCFS: Record<never, never>;
  GETLK: Record<never, never>;
  SETLK: Record<never, never>;
  SETLKW: Record<never, never>;
  BMAP: Record<never, never>;
  IOCTL: Record<never, never>;
  TMPFILE: Record<never, never>;
  STATX: Record<never, never>;
}

export type OpName = keyof Bodies;

/** A parsed request: the header plus the body of its opcode. */
export type Request<K extends OpName = OpName> = K extends OpName
  ? { op: K; header: RequestHeader } & Bodies[K]
  : never;

export interface OpcodeInfo<K extends OpName = OpName> {
  code: number;
  name: K;
  /** false for FORGET, BATCH_FORGET (and INTERRUPT, answered only in special cases). */
  reply: boolean;
  parse(c: Cursor, h: RequestHeader): Bodies[K];
}

const empty = (): Record<never, never> => ({});

function op<K extends OpName>(
  code: number,
  name: K,
  parse: (c: Cursor, h: RequestHeader) => Bodies[K],
  reply = true,
): OpcodeInfo<K> {
  return { code, name, parse, reply };
}

function releaseBody(c: Cursor) {
  const fh = c.id();
  const flags = c.u32();
  const releaseFlags = c.u32();
  c.skip(8); // lock_owner
  return { fh, flags, releaseFlags };
}

function openBody(c: Cursor) {
  return { flags: c.u32(), openFlags: c.u32() };
}

function readBody(c: Cursor) {
  const fh = c.id();
  const offset = c.u64();
  const size = c.u32();
  const readFlags = c.u32();
  c.skip(8); // lock_owner
  const flags = c.u32();
  c.skip(4);
  return { fh, offset, size, readFlags, flags };
}

function fsyncBody(c: Cursor) {
  const fh = c.id();
  const fsyncFlags = c.u32();
  c.skip(4);
  return { fh, fsyncFlags };
}

/** The opcode table: dispatch, debug names and size checks all come from here. */
export const OPCODES: readonly OpcodeInfo[] = [
  op(1, "LOOKUP", (c) => ({ name: c.name() })),
  op(2, "FORGET", (c) => ({ nlookup: Number(c.u64()) }), false),
  op(3, "GETATTR", (c) => {
    const flags = c.u32();
    c.skip(4);
    return { flags, fh: c.id() };
  }),
  op(4, "SETATTR", (c) => {
    const valid = c.u32();
    c.skip(4);
    const fh = c.id();
    const size = c.u64();
    c.skip(8); // lock_owner
    const atimeSec = c.i64();
    const mtimeSec = c.i64();
    const ctimeSec = c.i64();
    const atimeNsec = c.u32();
    const mtimeNsec = c.u32();
    const ctimeNsec = c.u32();
    const mode = c.u32();
    c.skip(4);
    const uid = c.u32();
    const gid = c.u32();
    c.skip(4);
    return {
      valid,
      fh,
      size,
      atimeSec,
      atimeNsec,
      mtimeSec,
      mtimeNsec,
      ctimeSec,
      ctimeNsec,
      mode,
      uid,
      gid,
    };
  }),
  op(5, "READLINK", empty),
  op(6, "SYMLINK", (c) => ({ name: c.name(), target: c.name() })),
  op(8, "MKNOD", (c) => {
    const mode = c.u32();
    const rdev = c.u32();
    const umask = c.u32();
    c.skip(4);
    return { mode, rdev, umask, name: c.name() };
  }),
  op(9, "MKDIR", (c) => ({ mode: c.u32(), umask: c.u32(), name: c.name() })),
  op(10, "UNLINK", (c) => ({ name: c.name() })),
  op(11, "RMDIR", (c) => ({ name: c.name() })),
  op(12, "RENAME", (c) => ({ newdir: c.id(), name: c.name(), newName: c.name(), flags: 0 })),
  op(13, "LINK", (c) => ({ oldNodeid: c.id(), newName: c.name() })),
  op(14, "OPEN", openBody),
  op(15, "READ", readBody),
  op(16, "WRITE", (c) => {
    const fh = c.id();
    const offset = c.u64();
    const size = c.u32();
    const writeFlags = c.u32();
    c.skip(8); // lock_owner
    const flags = c.u32();
    c.skip(4);
    return { fh, offset, writeFlags, flags, data: c.bytesN(size) };
  }),
  op(17, "STATFS", empty),
  op(18, "RELEASE", releaseBody),
  op(20, "FSYNC", fsyncBody),
  op(21, "SETXATTR", (c) => {
    // Without FUSE_SETXATTR_EXT (we never ask for it) the struct is the 8-byte compat one.
    const size = c.u32();
    const flags = c.u32();
    return { flags, name: c.name(), value: c.bytesN(size) };
  }),
  op(22, "GETXATTR", (c) => {
    const size = c.u32();
    c.skip(4);
    return { size, name: c.name() };
  }),
  op(23, "LISTXATTR", (c) => {
    const size = c.u32();
    c.skip(4);
    return { size };
  }),
  op(24, "REMOVEXATTR", (c) => ({ name: c.name() })),
  op(25, "FLUSH", (c) => {
    const fh = c.id();
    c.skip(8);
    return { fh, lockOwner: c.u64() };
  }),
  op(26, "INIT", (c) => {
    const start = c.offset;
    const major = c.u32();
    const minor = c.u32();
    if (major !== 7 || minor < 6) return { major, minor, maxReadahead: 0, flags: 0n };
    const maxReadahead = c.u32();
    let flags = BigInt(c.u32());
    if (c.remaining >= 4 && minor >= 36) flags |= BigInt(c.u32()) << 32n;
    c.offset = Math.min(c.end, Math.max(c.offset, start));
    return { major, minor, maxReadahead, flags };
  }),
  op(27, "OPENDIR", openBody),
  op(28, "READDIR", (c) => {
    const r = readBody(c);
    return { fh: r.fh, offset: r.offset, size: r.size };
  }),
  op(29, "RELEASEDIR", releaseBody),
  op(30, "FSYNCDIR", fsyncBody),
  op(31, "GETLK", empty),
  op(32, "SETLK", empty),
  op(33, "SETLKW", empty),
  op(34, "ACCESS", (c) => {
    const mask = c.u32();
    c.skip(4);
    return { mask };
  }),
  op(35, "CREATE", (c) => ({
    flags: c.u32(),
    mode: c.u32(),
    umask: c.u32(),
    openFlags: c.u32(),
    name: c.name(),
  })),
  op(36, "INTERRUPT", (c) => ({ target: c.u64() }), false),
  op(37, "BMAP", empty),
  op(38, "DESTROY", empty),
  op(39, "IOCTL", empty),
  op(40, "POLL", (c) => ({ fh: c.id(), kh: c.u64(), flags: c.u32(), events: c.u32() })),
  op(42, "BATCH_FORGET", (c) => {
    const count = c.u32();
    c.skip(4);
    if (count * 16 > c.remaining) throw new ShortRequest(`BATCH_FORGET: ${count} entries`);
    const forgets = [];
    for (let i = 0; i < count; i++) forgets.push({ nodeid: c.id(), nlookup: Number(c.u64()) });
    return { forgets };
  }, false),
  op(43, "FALLOCATE", (c) => {
    const fh = c.id();
    const offset = c.u64();
    const length = c.u64();
    const mode = c.u32();
    c.skip(4);
    return { fh, offset, length, mode };
  }),
  op(44, "READDIRPLUS", (c) => {
    const r = readBody(c);
    return { fh: r.fh, offset: r.offset, size: r.size };
  }),
  op(45, "RENAME2", (c) => {
    const newdir = c.id();
    const flags = c.u32();
    c.skip(4);
    return { newdir, flags, name: c.name(), newName: c.name() };
  }),
  op(46, "LSEEK", (c) => {
    const fh = c.id();
    const offset = c.u64();
    const whence = c.u32();
    c.skip(4);
    return { fh, offset, whence };
  }),
  op(47, "COPY_FILE_RANGE", (c) => ({
    fhIn: c.id(),
    offIn: c.u64(),
    nodeidOut: c.id(),
    fhOut: c.id(),
    offOut: c.u64(),
    len: c.u64(),
    flags: c.u64(),
  })),
  op(50, "SYNCFS", empty),
  // Protocol 7.39+; kernels send it whatever minor we answered. ENOSYS makes them stop.
  op(51, "TMPFILE", empty),
  op(52, "STATX", empty),
] as OpcodeInfo[];

const BY_CODE = new Map<number, OpcodeInfo>(OPCODES.map((o) => [o.code, o]));

export function opcodeInfo(code: number): OpcodeInfo | undefined {
  return BY_CODE.get(code);
}

export type ParseErrorKind = "short" | "unknown-opcode" | "length-mismatch";

/** A request that could not be parsed; `header` is there when at least the header was. */
export class RequestParseError extends Error {
  override name = "RequestParseError";
  constructor(
    readonly kind: ParseErrorKind,
    message: string,
    readonly header?: RequestHeader,
  ) {
    super(message);
  }
}

export function parseHeader(c: Cursor): RequestHeader {
  const len = c.u32();
  const opcode = c.u32();
  const unique = c.u64();
  const nodeid = c.id();
  const uid = c.u32();
  const gid = c.u32();
  const pid = c.u32();
  c.skip(4); // total_extlen, padding
  return { len, opcode, unique, nodeid, uid, gid, pid };
}

/** Parses one request (exactly the bytes of one read). Never throws: errors are returned. */
export function parseRequest(bytes: Uint8Array): Request | RequestParseError {
  if (bytes.length < IN_HEADER_SIZE) {
    return new RequestParseError("short", `request of ${bytes.length} bytes has no header`);
  }
  let header: RequestHeader;
  try {
    header = parseHeader(new Cursor(bytes));
  } catch (err) {
    return new RequestParseError("short", String(err));
  }
  if (header.len !== bytes.length) {
    return new RequestParseError(
      "length-mismatch",
      `header says ${header.len} bytes, read ${bytes.length}`,
      header,
    );
  }
  const info = BY_CODE.get(header.opcode);
  if (!info) {
    return new RequestParseError("unknown-opcode", `opcode ${header.opcode}`, header);
  }
  try {
    const body = info.parse(new Cursor(bytes, IN_HEADER_SIZE, header.len), header);
    return { op: info.name, header, ...body } as Request;
  } catch (err) {
    if (err instanceof ShortRequest) {
      return new RequestParseError("short", `${info.name}: ${err.message}`, header);
    }
    throw err;
  }
}
