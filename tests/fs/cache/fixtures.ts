/** Values the cache tests build their metas from. */

/** Attributes of a file (or, with its mode, a directory) whose size is also its mtime. */
export function attr(size: number, mode = 0o100644) {
  return {
    ino: 9n,
    size: BigInt(size),
    blocks: 0n,
    atimeSec: 0n,
    atimeNsec: 0,
    mtimeSec: BigInt(size),
    mtimeNsec: 0,
    ctimeSec: 0n,
    ctimeNsec: 0,
    mode,
    nlink: 1,
    uid: 0,
    gid: 0,
    rdev: 0,
    blksize: 4096,
  };
}
