/**
 * Constants of the Linux FUSE kernel ABI (include/uapi/linux/fuse.h), protocol 7.38.
 * The kernel speaks the lower of its minor and ours; 7.38 has everything a
 * read-mostly mirror wants (max_pages, cache_symlinks, no_opendir, init_ext).
 */

export const FUSE_KERNEL_VERSION = 7;
export const FUSE_KERNEL_MINOR_VERSION = 38;
export const FUSE_ROOT_ID = 1;
export const FUSE_MIN_READ_BUFFER = 8192;

export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
export const ATTR_SIZE = 88;
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE;
export const ATTR_OUT_SIZE = 16 + ATTR_SIZE;
export const DIRENT_HEADER_SIZE = 24;
export const DIRENTPLUS_HEADER_SIZE = ENTRY_OUT_SIZE + DIRENT_HEADER_SIZE;

/** INIT flags (bits 32..63 travel in flags2). */
export const InitFlag = {
  ASYNC_READ: 1n << 0n,
  POSIX_LOCKS: 1n << 1n,
  ATOMIC_O_TRUNC: 1n << 3n,
  EXPORT_SUPPORT: 1n << 4n,
  BIG_WRITES: 1n << 5n,
  DONT_MASK: 1n << 6n,
  SPLICE_WRITE: 1n << 7n,
  SPLICE_MOVE: 1n << 8n,
  SPLICE_READ: 1n << 9n,
  FLOCK_LOCKS: 1n << 10n,
  HAS_IOCTL_DIR: 1n << 11n,
  AUTO_INVAL_DATA: 1n << 12n,
  DO_READDIRPLUS: 1n << 13n,
  READDIRPLUS_AUTO: 1n << 14n,
  ASYNC_DIO: 1n << 15n,
  WRITEBACK_CACHE: 1n << 16n,
  NO_OPEN_SUPPORT: 1n << 17n,
  PARALLEL_DIROPS: 1n << 18n,
  HANDLE_KILLPRIV: 1n << 19n,
  POSIX_ACL: 1n << 20n,
  ABORT_ERROR: 1n << 21n,
  MAX_PAGES: 1n << 22n,
  CACHE_SYMLINKS: 1n << 23n,
  NO_OPENDIR_SUPPORT: 1n << 24n,
  EXPLICIT_INVAL_DATA: 1n << 25n,
  MAP_ALIGNMENT: 1n << 26n,
  SUBMOUNTS: 1n << 27n,
  HANDLE_KILLPRIV_V2: 1n << 28n,
  SETXATTR_EXT: 1n << 29n,
  INIT_EXT: 1n << 30n,
  SECURITY_CTX: 1n << 32n,
  HAS_INODE_DAX: 1n << 33n,
  HAS_EXPIRE_ONLY: 1n << 35n,
  /** Opens may hand reads and mmaps to a backing file (FOPEN.PASSTHROUGH); 6.9+. */
  PASSTHROUGH: 1n << 37n,
} as const;

export function initFlagNames(flags: bigint): string[] {
  return Object.entries(InitFlag).filter(([, bit]) => flags & bit).map(([name]) => name);
}

/** Bits of fuse_setattr_in.valid. */
export const FATTR = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
  KILL_SUIDGID: 1 << 11,
} as const;

/** Flags of fuse_open_out.open_flags. */
export const FOPEN = {
  DIRECT_IO: 1 << 0,
  KEEP_CACHE: 1 << 1,
  NONSEEKABLE: 1 << 2,
  CACHE_DIR: 1 << 3,
  STREAM: 1 << 4,
  NOFLUSH: 1 << 5,
  PARALLEL_DIRECT_WRITES: 1 << 6,
  /** Reads, writes and mmaps go to the backing file `OpenOut.backingId` names. */
  PASSTHROUGH: 1 << 7,
} as const;

export const GETATTR_FH = 1 << 0;
export const FSYNC_FDATASYNC = 1 << 0;

/** ioctl FUSE_DEV_IOC_BACKING_OPEN: _IOW(229, 1, struct fuse_backing_map). */
export const FUSE_DEV_IOC_BACKING_OPEN = 0x4010e501;
/** ioctl FUSE_DEV_IOC_BACKING_CLOSE: _IOW(229, 2, uint32_t). */
export const FUSE_DEV_IOC_BACKING_CLOSE = 0x4004e502;
/**
 * How deep filesystems may stack under a passthrough mount's backing files: 2, the
 * kernel's most, so a backing file may be on overlayfs (a container's root).
 */
export const MAX_STACK_DEPTH = 2;
