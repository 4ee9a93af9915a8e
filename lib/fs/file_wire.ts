/**
 * The file service's wire contract, shared by both ends (serve.ts, proxy.ts): which
 * Filesystem calls travel as `fs.*`, the calls that bring more than asked (their
 * answers: OpenedFile, Listing, OpenedDir) or are not waited on, and bulk data that
 * may travel packed.
 */
import { RpcError } from "../rpc/mod.ts";
import type { AttrOut, DirEntry, EntryOut, Filesystem, OpenOut, Request } from "../fuse/mod.ts";
import { Errno } from "../sys/errno.ts";

/** Every Filesystem method that answers (init, destroy and forget do not travel as calls). */
export const PROXIED_METHODS = [
  "lookup",
  "getattr",
  "setattr",
  "readlink",
  "symlink",
  "mknod",
  "mkdir",
  "unlink",
  "rmdir",
  "rename",
  "link",
  "open",
  "read",
  "write",
  "statfs",
  "release",
  "fsync",
  "setxattr",
  "getxattr",
  "listxattr",
  "removexattr",
  "flush",
  "opendir",
  "readdir",
  "readdirplus",
  "releasedir",
  "fsyncdir",
  "access",
  "create",
  "fallocate",
  "lseek",
  "copyFileRange",
  "syncfs",
] as const satisfies readonly (keyof Filesystem)[];

export type Proxied = (typeof PROXIED_METHODS)[number];

/**
 * Calls nobody waits on, under names of their own so that they are not counted as
 * round trips: blocks read ahead, writes written behind, directory handles let go.
 */
export const UNWAITED_CALLS = {
  "fs.readAhead": "read",
  "fs.writeBehind": "write",
  "fs.releaseBehind": "release",
  "fs.releasedirBehind": "releasedir",
  "fs.unlinkBehind": "unlink",
} as const;

/** Bulk data packed for the way: `packed` is `rawLength` bytes once unpacked with `codec`. */
export interface PackedBytes {
  packed: Uint8Array;
  rawLength: number;
  codec: string;
}

/** How the session packs bulk data (blocks read ahead, writes written behind). */
export interface BulkCodec {
  /** `data` packed, or null where that does not pay. */
  pack(data: Uint8Array): PackedBytes | null;
  /** The bytes again; throws on data that does not unpack to its length. */
  unpack(p: PackedBytes): Uint8Array;
}

/** Bytes of a regular file that come with its opening to read (`fs.openAhead`). */
export const OPEN_AHEAD = 128 * 1024;

/**
 * `fs.openAhead`'s answer: the handle, and the file's first `size` bytes (all, when
 * fewer; `size` is 0 for an opening to write).
 */
export interface OpenedFile {
  open: OpenOut;
  /** null: not a regular file, or nothing asked (nothing read ahead). */
  head: Uint8Array | PackedBytes | null;
  /** Its attributes at the opening (the kernel asks for them next, for fstat). */
  attr: AttrOut | null;
}

/** Bytes below which data goes as it is. */
export const PACK_MIN = 16 * 1024;
/** Blocks a handle leaves unpacked at most after its data did not pack. */
const PACK_BACKOFF_MAX = 64;

/**
 * A handle's packing: after a block that did not pack, the next `skip` go as they
 * are, twice as many each time it fails again (a file's data is mostly of one kind).
 */
export class Packing {
  #skip = 0;
  #backoff = 1;

  constructor(readonly codec: BulkCodec) {}

  /** `data` as it travels. */
  pack(data: Uint8Array): Uint8Array | PackedBytes {
    if (data.length < PACK_MIN) return data;
    if (this.#skip > 0) {
      this.#skip--;
      return data;
    }
    const p = this.codec.pack(data);
    if (p) {
      this.#backoff = 1;
      return p;
    }
    this.#skip = this.#backoff;
    this.#backoff = Math.min(PACK_BACKOFF_MAX, this.#backoff * 2);
    return data;
  }
}

export function unpacked(codec: BulkCodec | undefined, v: Uint8Array | PackedBytes): Uint8Array {
  if (v instanceof Uint8Array) return v;
  if (!codec) throw new RpcError(Errno.EIO, "packed data, and no codec to unpack it");
  return codec.unpack(v);
}

/** READDIRPLUS bytes of entries that come with a directory's opening (~400 entries). */
export const LIST_FIRST = 64 * 1024;
/** ... and that each later call for more brings. */
export const LIST_MORE = 256 * 1024;

/** `fs.opendirAhead`'s and `fs.readdirAhead`'s answer (entries each with its lookup). */
export interface Listing {
  entries: DirEntry[];
  /** No entry comes after these. */
  end: boolean;
}

/** `fs.opendirAhead`: the handle, the first of its entries, the directory's attributes. */
export interface OpenedDir extends Listing {
  open: OpenOut;
  /** As at its opening (null: not known): the kernel asks for them again after a READDIR. */
  attr: AttrOut | null;
}

/** `fs.readdirAhead`'s arguments: a READDIRPLUS of `size` bytes, told apart from the kernel's. */
export type ListRequest = Request<"READDIRPLUS">;

/** An entry as it travels: with its node's extended attributes' names (see withXattrs). */
export type EntryWithXattrs = EntryOut & { xattrs?: Uint8Array };

/**
 * A local change the remote kernel must learn of (see change_watch.ts): the name
 * `name` in directory `parent` (a node id, or null) and the node `node` (null: none
 * known) are no longer as told.
 */
export interface Invalidation {
  parent: number | null;
  name: string;
  node: number | null;
}

/** The event that carries local changes to the remote: an Invalidation[]. */
export const CHANGED_EVENT = "fs.changed";

/**
 * What a call that adds or removes a name (create, mknod, mkdir, symlink, link, unlink,
 * rmdir, rename) brings besides its answer: the directory's attributes after it
 * (`newParentAttr`: a rename's other directory). The kernel drops a directory's
 * attributes when a name in it changes, and asks again at the next path walk through
 * it (its permission check): a round trip after each file gcc or configure made.
 */
export interface ParentAttrs {
  parentAttr?: AttrOut | null;
  newParentAttr?: AttrOut | null;
}

/** Calls whose answer carries ParentAttrs. */
export const NAME_CHANGING_CALLS = [
  "fs.create",
  "fs.mknod",
  "fs.mkdir",
  "fs.symlink",
  "fs.link",
  "fs.unlink",
  "fs.unlinkBehind",
  "fs.rmdir",
  "fs.rename",
] as const;
