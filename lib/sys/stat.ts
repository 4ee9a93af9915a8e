/**
 * `struct stat` and `struct statfs` as the x86_64 Linux kernel ABI lays them out
 * (glibc passes them through unchanged), decoded into plain objects.
 */
import { check, cstr, libc } from "./libc.ts";

export const STAT_SIZE = 144;
export const STATFS_SIZE = 120;

export interface Stat {
  dev: bigint;
  ino: bigint;
  nlink: number;
  mode: number;
  uid: number;
  gid: number;
  rdev: bigint;
  size: bigint;
  blksize: number;
  blocks: bigint;
  atimeSec: bigint;
  atimeNsec: number;
  mtimeSec: bigint;
  mtimeNsec: number;
  ctimeSec: bigint;
  ctimeNsec: number;
}

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

export function decodeStat(buf: Uint8Array): Stat {
  const v = new DataView(buf.buffer, buf.byteOffset, STAT_SIZE);
  return {
    dev: v.getBigUint64(0, true),
    ino: v.getBigUint64(8, true),
    nlink: Number(v.getBigUint64(16, true)),
    mode: v.getUint32(24, true),
    uid: v.getUint32(28, true),
    gid: v.getUint32(32, true),
    rdev: v.getBigUint64(40, true),
    size: v.getBigInt64(48, true),
    blksize: Number(v.getBigInt64(56, true)),
    blocks: v.getBigInt64(64, true),
    atimeSec: v.getBigInt64(72, true),
    atimeNsec: Number(v.getBigInt64(80, true)),
    mtimeSec: v.getBigInt64(88, true),
    mtimeNsec: Number(v.getBigInt64(96, true)),
    ctimeSec: v.getBigInt64(104, true),
    ctimeNsec: Number(v.getBigInt64(112, true)),
  };
}

const statBuf = new Uint8Array(STAT_SIZE);

export function stat(path: string): Stat {
  check("stat", libc().stat(cstr(path), statBuf), path);
  return decodeStat(statBuf);
}

/** The fields of `struct statfs` a filesystem reports (shaped as FUSE's statfs reply). */
export interface StatFs {
  bsize: number;
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
  namelen: number;
  frsize: number;
}

export function decodeStatfs(buf: Uint8Array): StatFs {
  const v = new DataView(buf.buffer, buf.byteOffset, STATFS_SIZE);
  const u = (off: number) => v.getBigUint64(off, true);
  return {
    bsize: Number(u(8)),
    blocks: u(16),
    bfree: u(24),
    bavail: u(32),
    files: u(40),
    ffree: u(48),
    namelen: Number(u(64)),
    frsize: Number(u(72)),
  };
}
