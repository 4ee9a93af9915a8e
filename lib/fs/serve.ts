/**
 * The side with the files: answers the other side's `fs.*` calls with a Filesystem
 * (outrun's local side: a LoopbackFs of "/", as the invoking user, so the local
 * kernel enforces permissions). Entries go with their xattr names; an opening to
 * read with its first bytes, a directory's with its entries (see proxy.ts for why).
 */
import type { RpcPeer, Value } from "../rpc/mod.ts";
import type { AttrOut, EntryOut, Filesystem, Request } from "../fuse/mod.ts";
import {
  type BulkCodec,
  type EntryWithXattrs,
  type Listing,
  type ListRequest,
  NAME_CHANGING_CALLS,
  type OpenedDir,
  type OpenedFile,
  PACK_MIN,
  type PackedBytes,
  Packing,
  type ParentAttrs,
  PROXIED_METHODS,
  unpacked,
  UNWAITED_CALLS,
} from "./file_wire.ts";
import { S_IFMT, S_IFREG } from "../sys/stat.ts";

type AnyMethod = (req: Request, into?: Uint8Array) => unknown;

/** Names of a directory sent at most by `fs.names`. */
const NAMES_MAX = 10_000;

/** Methods whose answer is an entry (CREATE's: with its handle): it carries xattr names. */
const ENTRY_METHODS = new Set<string>(["lookup", "mknod", "mkdir", "symlink", "link", "create"]);

/**
 * `entry` with the names of its node's extended attributes (as LISTXATTR gives them),
 * when `fs` tells them at once; as it is otherwise.
 */
function withXattrs(fs: Filesystem, entry: EntryOut): EntryOut {
  if (!entry.nodeid || !fs.listxattr) return entry;
  try {
    const names = fs.listxattr({ header: { nodeid: entry.nodeid } } as Request<"LISTXATTR">);
    if (names instanceof Uint8Array) (entry as EntryWithXattrs).xattrs = names;
  } catch { /* not known: asked when wanted */ }
  return entry;
}

/** The entries of `req`'s directory handle from req.offset on, `req.size` bytes' worth. */
async function listAhead(fs: Filesystem, req: ListRequest): Promise<Listing> {
  const entries = await fs.readdirplus!(req);
  for (const e of entries) if (e.entry) withXattrs(fs, e.entry);
  const last = entries.at(-1)?.nextOffset ?? req.offset;
  // Whether the next call would come back empty: a READDIR (no lookups) asks.
  const after = await fs.readdir!(
    { ...req, op: "READDIR", offset: last, size: 64 } as Request<"READDIR">,
  );
  return { entries, end: after.length === 0 };
}

export interface ServeOptions {
  /** Told of each LOOKUP asked (the directory's node and the name). */
  onLookup?: (parent: number, name: string) => void;
  /** Packs blocks read ahead, unpacks writes written behind (none: all goes raw). */
  codec?: BulkCodec;
  /**
   * Called after each call, before its answer goes (or its error): a change watch
   * sends what changed meanwhile (change_watch.ts), so that it arrives first.
   */
  afterCall?: (req: Request) => void;
}

/** Answers the other side's calls with `fs` (which may be synchronous). */
export function serveFilesystem(peer: RpcPeer, fs: Filesystem, options: ServeOptions = {}): void {
  const { onLookup, codec } = options;
  /**
   * The attributes of the node `req` is about, or null. By its node: an OPEN's flags
   * are not a GETATTR's (O_WRONLY's bit is GETATTR_FH).
   */
  const attrOf = async (req: Request): Promise<AttrOut | null> => {
    const ask = { header: req.header, flags: 0, fh: 0 } as unknown as Request<"GETATTR">;
    return await Promise.resolve(fs.getattr?.(ask)).catch(() => null) ?? null;
  };
  for (const name of PROXIED_METHODS) {
    const method = fs[name] as AnyMethod | undefined;
    if (!method) continue; // the caller gets ENOSYS, as from a kernel
    peer.handle(`fs.${name}`, (args) => {
      const req = args as unknown as Request;
      if (name === "read") {
        const size = (req as Request<"READ">).size;
        const into = new Uint8Array(size);
        const bytes = (n: Uint8Array | number) => typeof n === "number" ? into.subarray(0, n) : n;
        const n = method.call(fs, req, into) as Uint8Array | number | Promise<Uint8Array | number>;
        return n instanceof Promise ? n.then(bytes) : bytes(n);
      }
      if (name === "lookup") onLookup?.(req.header.nodeid, (req as Request<"LOOKUP">).name);
      if (ENTRY_METHODS.has(name)) {
        // The entry with its xattr names (a new file's "none" saves the GETXATTR of
        // security.capability the kernel makes before its first write).
        const add = (r: EntryOut | { entry: EntryOut }) => {
          withXattrs(fs, "entry" in r ? r.entry : r);
          return r as unknown as Value;
        };
        const r = method.call(fs, req) as EntryOut | { entry: EntryOut } | Promise<EntryOut>;
        return r instanceof Promise ? r.then(add) : add(r);
      }
      const result = method.call(fs, req) as Value | Promise<Value>;
      return result === undefined ? null : result;
    });
  }
  for (const [alias, name] of Object.entries(UNWAITED_CALLS)) {
    const handler = peer.handlerOf(`fs.${name}`);
    if (handler) peer.handle(alias, handler);
  }
  // Blocks read ahead go packed when that pays (the handle's Packing says when to try);
  // writes written behind come packed so.
  const packings = new Map<number, Packing>();
  const read = peer.handlerOf("fs.read");
  if (read && fs.open && fs.getattr) {
    peer.handle("fs.openAhead", async (args) => {
      const { size, ...req } = args as unknown as Request<"OPEN"> & { size: number };
      const open = await fs.open!(req);
      // Only a regular file: reading a FIFO or a device here would take its data, or wait.
      const attr = await attrOf(req);
      let head: Uint8Array | PackedBytes | null = null;
      if (size > 0 && attr && (attr.attr.mode & S_IFMT) === S_IFREG) {
        const ask = { ...req, op: "READ", fh: open.fh, offset: 0n, size, readFlags: 0 };
        const bytes = await Promise.resolve(read!(ask as unknown as Value)).catch(() => null) as
          | Uint8Array
          | null;
        if (bytes) head = (bytes.length >= PACK_MIN && codec?.pack(bytes)) || bytes;
      }
      return { open, head, attr } satisfies OpenedFile as unknown as Value;
    });
  }
  if (read && codec) {
    peer.handle("fs.readAhead", async (args) => {
      const fh = (args as unknown as Request<"READ">).fh;
      const bytes = await read(args) as Uint8Array;
      let p = packings.get(fh);
      if (!p) packings.set(fh, p = new Packing(codec));
      return p.pack(bytes) as unknown as Value;
    });
  }
  const write = peer.handlerOf("fs.write");
  if (write) {
    peer.handle("fs.writeBehind", (args) => {
      const req = args as unknown as Request<"WRITE"> & { data: Uint8Array | PackedBytes };
      return write({ ...req, data: unpacked(codec, req.data) } as unknown as Value);
    });
  }
  const release = peer.handlerOf("fs.release");
  if (release) {
    peer.handle("fs.releaseBehind", (args) => {
      packings.delete((args as unknown as Request<"RELEASE">).fh);
      return release(args);
    });
  }
  if (fs.opendir && fs.readdir && fs.readdirplus) {
    peer.handle("fs.opendirAhead", async (args) => {
      const { size, ...req } = args as unknown as Request<"OPENDIR"> & { size: number };
      const open = await fs.opendir!(req);
      const list = { ...req, fh: open.fh, offset: 0n, size } as unknown as ListRequest;
      const listing = await listAhead(fs, list).catch(() => ({ entries: [], end: false }));
      const attr = await attrOf(req);
      return { open, ...listing, attr } satisfies OpenedDir as unknown as Value;
    });
    peer.handle(
      "fs.readdirAhead",
      async (args) => await listAhead(fs, args as unknown as ListRequest) as unknown as Value,
    );
  }
  // A name added or removed: the directory's attributes after it go with the answer.
  for (const name of NAME_CHANGING_CALLS) {
    const handler = peer.handlerOf(name);
    if (!handler) continue;
    peer.handle(name, async (args) => {
      const req = args as unknown as Request<"RENAME">;
      const result = await handler(args);
      const out = (result ?? {}) as ParentAttrs;
      out.parentAttr = await attrOf(req);
      if (name === "fs.rename" && req.newdir !== req.header.nodeid) {
        out.newParentAttr = await attrOf({ ...req, header: { ...req.header, nodeid: req.newdir } });
      }
      return out as unknown as Value;
    });
  }
  const afterCall = options.afterCall;
  if (afterCall) {
    const names = [
      ...PROXIED_METHODS.map((name) => `fs.${name}`),
      ...Object.keys(UNWAITED_CALLS),
      ...["fs.openAhead", "fs.readAhead", "fs.writeBehind", "fs.releaseBehind"],
      ...["fs.opendirAhead", "fs.readdirAhead"],
    ];
    for (const name of new Set(names)) {
      const handler = peer.handlerOf(name);
      if (!handler) continue;
      peer.handle(name, (args) => {
        const after = () => afterCall(args as unknown as Request);
        let result;
        try {
          result = handler(args);
        } catch (e) {
          after();
          throw e;
        }
        if (result instanceof Promise) return result.finally(after);
        after();
        return result;
      });
    }
  }
  // A directory's names alone (null: more than NAMES_MAX): the remote answers names
  // not among them as absent, for as long as the directory is watched here.
  if (fs.opendir && fs.readdir && fs.releasedir) {
    peer.handle("fs.names", async (args) => {
      const req = args as unknown as Request<"OPENDIR">;
      const open = await fs.opendir!({ ...req, flags: 0 } as Request<"OPENDIR">);
      const dir = { ...req, fh: open.fh } as unknown as Request<"READDIR">;
      try {
        const names: string[] = [];
        for (let offset = 0n;;) {
          const page = await fs.readdir!({ ...dir, offset, size: 65536 });
          if (!page.length) return names as unknown as Value;
          for (const e of page) if (e.name !== "." && e.name !== "..") names.push(e.name);
          if (names.length > NAMES_MAX) return null;
          offset = page.at(-1)!.nextOffset;
        }
      } finally {
        await fs.releasedir!(dir as unknown as Request<"RELEASEDIR">);
      }
    });
  }
  peer.onEvent("fs.forget", (args) => {
    const [nodeid, nlookup] = args as [number, number];
    fs.forget?.(nodeid, nlookup);
  });
}
