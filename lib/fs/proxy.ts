/**
 * A filesystem carried over RPC. The side with the files runs `serveFilesystem`
 * (serve.ts) over any `Filesystem`; the side with the FUSE mount serves `ProxyFs`,
 * which forwards each typed request and returns the typed answer (file_wire.ts).
 * Node ids, handles and errno values pass through unchanged. FORGET travels as a
 * one-way event, like in the kernel protocol.
 *
 * Reads that follow each other on a handle are read ahead (read_ahead.ts). What is
 * kept of the local files between calls has rooms of its own: attributes
 * (kept_attrs.ts), names (known_names.ts), whole small files (kept_files.ts).
 *
 * Writes are written behind (write_behind.ts): answered at once, a failure there
 * reported by the next write, FLUSH (close) or FSYNC on the handle.
 *
 * And before each write the kernel asks whether the file has capabilities to drop
 * (GETXATTR security.capability): a file's "none" is kept here until an xattr of it
 * is set or removed through the mount, so a write costs no round trip at all.
 *
 * A directory's entries come with its opening (`fs.opendirAhead`), with their
 * attributes and as many as LIST_FIRST bytes of READDIRPLUS hold, and whether that is
 * all of them; the kernel's READDIRPLUS and READDIR calls (a page of entries each,
 * then one more for the end) are answered from them, and RELEASEDIR goes without
 * waiting. Listing a directory took four round trips (python's import system lists
 * the cwd at each start); now one. Each entry fetched holds a lookup there: the ones
 * the kernel is not given (a plain READDIR, a handle let go early) are forgotten.
 *
 * Blocks read ahead and writes written behind may travel packed (`BulkCodec`, zstd or
 * LZ4 from the session), each handle trying again less often while its data does not
 * pack (video, archives): `dd` of 50 MB of zeros crossed as 53 MB, now as 0.9 MB.
 *
 * The kernel asks for a node's attributes again after each READ and READDIR (it
 * drops their atime): attributes told here (an entry, a GETATTR) are answered again
 * for as long as they were given for (attrTimeout), until anything changes through
 * the mount (any write, create, rename, chmod ... drops them all). Python's stat of
 * its cwd after listing it was a round trip at every start.
 *
 * A regular file opened to read comes with its first OPEN_AHEAD bytes (`fs.openAhead`):
 * the reads they hold are answered on the remote (a script, a source file, a config:
 * open and read were two round trips).
 *
 * Entries (of a LOOKUP, and of a directory's listing) come with the names of the
 * node's extended attributes, good for as long as its attributes are (attrTimeout):
 * meanwhile a GETXATTR of another name is ENODATA and LISTXATTR is known, without
 * asking. `ls -l` asks for two (ACL, SELinux label) of each file it lists: on 500
 * files over a 20 ms link that was 1,000 round trips of its 1,550 (36 s).
 */
import { RpcError } from "../rpc/mod.ts";
import {
  type AttrOut,
  byteString,
  type DirEntry,
  direntSize,
  type EntryOut,
  FATTR,
  type Filesystem,
  FOPEN,
  GETATTR_FH,
  type OpenOut,
  type Request,
  type StatfsOut,
  ZERO_ATTR,
} from "../fuse/mod.ts";
import type { RpcPeer, Value } from "../rpc/mod.ts";
import {
  type BulkCodec,
  type EntryWithXattrs,
  type Invalidation,
  LIST_FIRST,
  LIST_MORE,
  type Listing,
  OPEN_AHEAD,
  type OpenedDir,
  type OpenedFile,
  type PackedBytes,
  type ParentAttrs,
  type Proxied,
  unpacked,
  type UNWAITED_CALLS,
} from "./file_wire.ts";
import { Errno } from "../sys/errno.ts";
import { O, RENAME_EXCHANGE } from "../sys/libc.ts";
import { S_IFDIR, S_IFMT } from "../sys/stat.ts";
import { KeptAttrs } from "./kept_attrs.ts";
import { KeptFiles } from "./kept_files.ts";
import { KnownNames } from "./known_names.ts";
import { AHEAD_BLOCK, ReadAhead } from "./read_ahead.ts";
import { WriteBehind } from "./write_behind.ts";

const CAPS = "security.capability";

/** Seconds of an attribute timeout that say the local side watches the directory. */
const WATCHED_MIN = 10;

/**
 * Handles of openings answered on the remote (see #kept): far above any local file
 * descriptor and any handle of CachedFs's (from 2^40 up).
 */
const KEPT_FH_BASE = 2 ** 44;

/**
 * A directory handle's entries fetched ahead, those after offset `from`; each with a
 * lookup there that the kernel takes over when given the entry in a READDIRPLUS.
 */
interface DirAhead extends Listing {
  from: bigint;
}

/** The FUSE side: each request goes to the other end and its answer comes back. */
export class ProxyFs implements Filesystem {
  /** Reads in sequence, read ahead (read_ahead.ts). */
  readonly #reads = new ReadAhead({
    once: (req) => this.peer.call("fs.read", req as unknown as Value) as Promise<Uint8Array>,
    block: (req, offset) => {
      const ask = { ...req, offset, size: AHEAD_BLOCK } as unknown as Value;
      return (this.peer.call("fs.readAhead", ask) as Promise<Uint8Array | PackedBytes>)
        .then((v) => unpacked(this.codec, v));
    },
  });
  /** Read-only handles' first bytes, as at their opening (`whole`: all of the file). */
  readonly #heads = new Map<number, { nodeid: number; data: Uint8Array; whole: boolean }>();
  readonly #dirs = new Map<number, DirAhead>();
  /** Writes on their way, by handle (write_behind.ts). */
  readonly #writes: WriteBehind;
  /** Nodes known to have no security.capability (the kernel asks before every write). */
  readonly #noCaps = new Set<number>();
  /** Local nodes' attributes as last told, while they hold (kept_attrs.ts). */
  readonly #attrs = new KeptAttrs();
  /** Nodes' extended attributes' names (LISTXATTR's answer), as told with an entry, and until when. */
  readonly #xattrs = new Map<number, { names: Uint8Array; until: number }>();
  /**
   * Files being written through the mount, by node: their attributes when the writing
   * began, with the size the writes made since, and the handles that wrote. The
   * kernel drops a file's size at each write and asks again before a read past it
   * (`as` writes its object, seeks back and reads a page: a GETATTR a write); answered
   * here until those handles are closed (times and blocks as they were then: a stat
   * after close() asks the local side).
   */
  readonly #writing = new Map<number, { attr: AttrOut["attr"]; handles: Set<number> }>();
  /**
   * Names made through this mount (create, mknod, symlink, link) and neither removed nor
   * moved since, as "parent\0name": removing one goes unwaited (gcc's temporary files,
   * configure's conftest.*), as the local side made it for this same user a moment ago.
   */
  readonly #madeHere = new Set<string>();
  /** What each name told is, which directories are watched there (known_names.ts). */
  readonly #names = new KnownNames();
  /** Counts the local changes told (`changed`). */
  #changes = 0;
  /**
   * Whole small files as read at an opening, by node, while their attributes are kept
   * for long (the local side watches their directory and tells of each change made
   * there by others; a change through the mount drops them): the next opening to read
   * is answered here, with a handle of its own (from KEPT_FH_BASE up) and its pages
   * kept by the kernel. A header every compile unit includes was a round trip each.
   */
  readonly #kept = new KeptFiles();
  #nextKeptFh = KEPT_FH_BASE;
  /** Handles answered here that needed a local one after all (lseek, fsync, ...). */
  readonly #localFhs = new Map<number, Promise<number>>();
  /** Reads ahead: answered from a block fetched ahead, blocks asked for, answers come. */
  get ahead(): ReadAhead["stats"] {
    return this.#reads.stats;
  }

  constructor(
    readonly peer: RpcPeer,
    /**
     * Told of each write that failed after it was answered, as the failure is reported
     * (to the next write, or close()): a program that ignores close()'s errors would
     * otherwise lose data without a word.
     */
    readonly onLateWriteError: (error: Error, what?: string) => void = () => {},
    /** Packs writes written behind, unpacks blocks read ahead (none: all goes raw). */
    readonly codec?: BulkCodec,
  ) {
    this.#writes = new WriteBehind(
      (req, data) =>
        this.peer.call("fs.writeBehind", { ...req, data } as unknown as Value) as Promise<number>,
      (e) => this.onLateWriteError(e),
      codec,
    );
  }

  /** A call to the local file service, its answer as `T` (the one cast of the answers). */
  #ask<T>(name: Proxied, req: Request): Promise<T> {
    return this.peer.call(`fs.${name}`, req as unknown as Value) as Promise<T>;
  }

  /** A call nobody waits on (UNWAITED_CALLS): a failure is told elsewhere, or is nothing. */
  #tell(method: keyof typeof UNWAITED_CALLS, req: Request): void {
    this.peer.call(method, req as unknown as Value).catch(() => {});
  }

  // ---- names: each entry's attributes and xattr names are kept as told ----

  async lookup(req: Request<"LOOKUP">): Promise<EntryOut> {
    const parent = req.header.nodeid;
    const absent = this.#names.absent(parent, req.name);
    if (absent !== null) {
      return { nodeid: 0, entryTimeout: absent, attrTimeout: 0, attr: ZERO_ATTR };
    }
    const gen = this.#attrs.gen;
    const changes = this.#changes;
    const entry = this.#learn(await this.#ask<EntryOut>("lookup", req), gen);
    if (changes !== this.#changes) {
      // A local change was told while this was asked: the answer may be older than it,
      // and the invalidation has already gone to the kernel. Not kept, by anyone.
      return { ...entry, entryTimeout: 0, attrTimeout: 0 };
    }
    this.#names.named(parent, req.name, entry.nodeid);
    if (!entry.nodeid && this.#names.absentAsked(parent)) this.#listNames(parent, req);
    return entry;
  }

  /** What makes a name: the directory's kept attributes go first (see KeptAttrs). */
  async #made(name: "mknod" | "mkdir" | "symlink" | "link", req: Request): Promise<EntryOut> {
    const linked = (req as Partial<Request<"LINK">>).oldNodeid; // its link count changes
    this.#attrs.changed(req.header.nodeid, ...(linked ? [linked] : []));
    const gen = this.#attrs.gen;
    const made = await this.#ask<EntryOut & ParentAttrs>(name, req);
    this.#keepParents(req, made, gen);
    const entry = this.#learn(made, gen);
    const asked = req as { name?: string; newName?: string };
    const madeName = asked.newName ?? asked.name!;
    this.#names.named(req.header.nodeid, madeName, entry.nodeid);
    if (name !== "mkdir") this.#madeHere.add(`${req.header.nodeid}\0${madeName}`);
    return entry;
  }

  mknod(req: Request<"MKNOD">): Promise<EntryOut> {
    return this.#made("mknod", req);
  }

  mkdir(req: Request<"MKDIR">): Promise<EntryOut> {
    return this.#made("mkdir", req);
  }

  symlink(req: Request<"SYMLINK">): Promise<EntryOut> {
    return this.#made("symlink", req);
  }

  link(req: Request<"LINK">): Promise<EntryOut> {
    return this.#made("link", req);
  }

  async create(req: Request<"CREATE">): Promise<{ entry: EntryOut; open: OpenOut }> {
    this.#attrs.changed(req.header.nodeid);
    const gen = this.#attrs.gen;
    const made = await this.#ask<{ entry: EntryOut; open: OpenOut } & ParentAttrs>("create", req);
    this.#keepParents(req, made, gen);
    this.#learn(made.entry, gen);
    this.#names.named(req.header.nodeid, req.name, made.entry.nodeid);
    this.#madeHere.add(`${req.header.nodeid}\0${req.name}`);
    return made;
  }

  readlink(req: Request<"READLINK">): Promise<string> {
    return this.#ask("readlink", req);
  }

  /**
   * A name made through this mount is removed without waiting (see #madeHere): the
   * kernel drops it at once, the local side removes it in order after what came
   * before; should that fail, the user is told, as of a late write error.
   */
  async unlink(req: Request<"UNLINK">): Promise<void> {
    this.#nameChanged(req.header.nodeid, req.name);
    const gen = this.#attrs.gen;
    const key = `${req.header.nodeid}\0${req.name}`;
    if (!this.#madeHere.delete(key)) {
      this.#keepParents(req, await this.#ask<ParentAttrs | null>("unlink", req), gen);
      this.#names.named(req.header.nodeid, req.name, 0);
      return;
    }
    this.#names.named(req.header.nodeid, req.name, 0);
    (this.peer.call("fs.unlinkBehind", req as unknown as Value) as Promise<ParentAttrs | null>)
      .then(
        (done) => this.#keepParents(req, done, gen),
        (e: Error) => this.onLateWriteError(e, `removing ${req.name}`),
      );
  }

  async rmdir(req: Request<"RMDIR">): Promise<void> {
    this.#nameChanged(req.header.nodeid, req.name);
    const gen = this.#attrs.gen;
    this.#keepParents(req, await this.#ask<ParentAttrs | null>("rmdir", req), gen);
    this.#names.named(req.header.nodeid, req.name, 0);
  }

  async rename(req: Request<"RENAME" | "RENAME2">): Promise<void> {
    this.#nameChanged(req.header.nodeid, req.name, req.newdir, req.newName);
    const from = `${req.header.nodeid}\0${req.name}`;
    const to = `${req.newdir}\0${req.newName}`;
    // Both names are as they were until the rename is done there (an exchange swaps them).
    const [fromMade, toMade] = [this.#madeHere.delete(from), this.#madeHere.delete(to)];
    const gen = this.#attrs.gen;
    const moved = this.#names.nodeOf(req.header.nodeid, req.name);
    const replaced = this.#names.nodeOf(req.newdir, req.newName);
    this.#keepParents(req, await this.#ask<ParentAttrs | null>("rename", req), gen);
    // What each name is now: the moved node (and, exchanged, the other), or not known.
    if (moved) this.#names.named(req.newdir, req.newName, moved);
    else this.#names.unnamed(req.newdir, req.newName);
    if (!(req.flags & RENAME_EXCHANGE)) this.#names.named(req.header.nodeid, req.name, 0);
    else if (replaced) this.#names.named(req.header.nodeid, req.name, replaced);
    else this.#names.unnamed(req.header.nodeid, req.name);
    if (fromMade) this.#madeHere.add(to);
    if (toMade && req.flags & RENAME_EXCHANGE) this.#madeHere.add(from);
  }

  // ---- attributes ----

  async getattr(req: Request<"GETATTR">): Promise<AttrOut> {
    const writing = this.#writing.get(req.header.nodeid);
    if (writing) return { attr: { ...writing.attr }, attrTimeout: 0 };
    const known = this.#attrs.get(req.header.nodeid);
    if (known) return { attr: known.attr, attrTimeout: known.left / 1000 };
    const gen = this.#attrs.gen;
    // An opening answered here: by node (GETATTR_FH's fstat is the same file).
    const ask = req.fh >= KEPT_FH_BASE ? { ...req, flags: req.flags & ~GETATTR_FH, fh: 0 } : req;
    const out = await this.#ask<AttrOut>("getattr", ask);
    this.#keepAttr(req.header.nodeid, out.attr, out.attrTimeout, gen);
    return out;
  }

  /** A change of a file's bytes drops what was read ahead of it, on every handle (and a
   * chmod may change its ACL). */
  setattr(req: Request<"SETATTR">): Promise<AttrOut> {
    // On an opening answered here (fchmod, futimens): by node, the same file.
    if (req.valid & FATTR.FH && req.fh >= KEPT_FH_BASE) {
      req = { ...req, valid: req.valid & ~FATTR.FH };
    }
    this.#attrs.changed(req.header.nodeid);
    this.#forgetNode(req.header.nodeid);
    this.#doneWriting(req.header.nodeid, null);
    this.#xattrs.delete(req.header.nodeid);
    return this.#ask("setattr", req);
  }

  fallocate(req: Request<"FALLOCATE">): Promise<void> {
    this.#attrs.changed(req.header.nodeid);
    this.#forgetNode(req.header.nodeid);
    this.#doneWriting(req.header.nodeid, null);
    this.#xattrs.delete(req.header.nodeid);
    return this.#ask("fallocate", req);
  }

  listxattr(req: Request<"LISTXATTR">): Uint8Array | Promise<Uint8Array> {
    const known = this.#xattrsOf(req.header.nodeid);
    return known ? known.slice() : this.#ask("listxattr", req);
  }

  async getxattr(req: Request<"GETXATTR">): Promise<Uint8Array> {
    const caps = req.name === CAPS;
    if (caps && this.#noCaps.has(req.header.nodeid)) {
      throw new RpcError(Errno.ENODATA, "no capabilities");
    }
    const known = this.#xattrsOf(req.header.nodeid);
    if (known && !byteString(known).split("\0").includes(req.name)) {
      throw new RpcError(Errno.ENODATA, "no such attribute");
    }
    try {
      return await this.#ask<Uint8Array>("getxattr", req);
    } catch (e) {
      if (caps && e instanceof RpcError && e.errno === Errno.ENODATA) {
        this.#noCaps.add(req.header.nodeid);
      }
      throw e;
    }
  }

  setxattr(req: Request<"SETXATTR">): Promise<void> {
    this.#attrs.changed(req.header.nodeid);
    this.#noCaps.delete(req.header.nodeid);
    this.#xattrs.delete(req.header.nodeid);
    return this.#ask("setxattr", req);
  }

  removexattr(req: Request<"REMOVEXATTR">): Promise<void> {
    this.#attrs.changed(req.header.nodeid);
    this.#noCaps.delete(req.header.nodeid);
    this.#xattrs.delete(req.header.nodeid);
    return this.#ask("removexattr", req);
  }

  // ---- files: read ahead, written behind ----

  /**
   * Every open comes with the file's attributes (the fstat after it is answered here),
   * one opened to read with its first bytes too; such a handle has nothing to flush:
   * the kernel is told not to send a FLUSH at its close(), which waits for the answer
   * (a round trip per file read).
   */
  async open(req: Request<"OPEN">): Promise<OpenOut> {
    if (req.flags & O.TRUNC) this.#attrs.changed(req.header.nodeid);
    const reading = (req.flags & O.ACCMODE) === O.RDONLY;
    const kept = reading && !(req.flags & O.TRUNC)
      ? this.#kept.get(req.header.nodeid, this.#attrs.get(req.header.nodeid)?.attr)
      : null;
    if (kept) {
      const fh = this.#nextKeptFh++;
      this.#heads.set(fh, { nodeid: req.header.nodeid, data: kept, whole: true });
      this.keptOpens++;
      return { fh, openFlags: FOPEN.NOFLUSH | FOPEN.KEEP_CACHE };
    }
    const args = { ...req, size: reading ? OPEN_AHEAD : 0 } as unknown as Value;
    const gen = this.#attrs.gen;
    const { open, head, attr } = await this.peer.call(
      "fs.openAhead",
      args,
    ) as unknown as OpenedFile;
    if (attr) this.#keepAttr(req.header.nodeid, attr.attr, attr.attrTimeout, gen);
    if (head) {
      const data = unpacked(this.codec, head);
      const whole = data.length < OPEN_AHEAD;
      this.#heads.set(open.fh, { nodeid: req.header.nodeid, data, whole });
      if (
        whole && attr && attr.attrTimeout >= WATCHED_MIN &&
        this.#attrs.unchangedSince(req.header.nodeid, gen)
      ) {
        this.#kept.keep(req.header.nodeid, data, attr.attr);
      }
    }
    return reading ? { ...open, openFlags: (open.openFlags ?? 0) | FOPEN.NOFLUSH } : open;
  }

  /** Openings answered on the remote from kept contents (tests, -v). */
  keptOpens = 0;
  /** Directories' names listed to answer absent names (tests, -v). */
  listings = 0;

  /**
   * `req` with a handle the local side knows: one answered here is opened there
   * (once) when a call needs it.
   */
  async #localFh<T extends { fh: number; header: Request["header"] }>(req: T): Promise<T> {
    if (req.fh < KEPT_FH_BASE) return req;
    let local = this.#localFhs.get(req.fh);
    if (!local) {
      const ask = { header: req.header, flags: O.RDONLY, openFlags: 0, size: 0 };
      local = this.peer.call("fs.openAhead", ask as unknown as Value)
        .then((o) => (o as unknown as OpenedFile).open.fh);
      this.#localFhs.set(req.fh, local);
    }
    return { ...req, fh: await local };
  }

  read(req: Request<"READ">): Promise<Uint8Array> {
    return this.#read(req);
  }

  /** Changes this node's attributes alone: the others' kept stay (see #writing). */
  write(req: Request<"WRITE">): Promise<number> {
    const node = req.header.nodeid;
    let writing = this.#writing.get(node);
    const known = this.#attrs.get(node);
    if (!writing && known) {
      writing = { attr: { ...known.attr }, handles: new Set() };
      this.#writing.set(node, writing);
    }
    this.#attrs.changed(node); // an answer asked for before this write is not kept
    if (writing) {
      writing.handles.add(req.fh);
      const end = req.offset + BigInt(req.data.length);
      if (end > writing.attr.size) writing.attr.size = end;
    }
    return this.#write(req);
  }

  /** Handle `fh` of `node` wrote its last (closed): its size is asked for there again. */
  #doneWriting(node: number, fh: number | null): void {
    const writing = this.#writing.get(node);
    if (!writing) return;
    if (fh !== null) writing.handles.delete(fh);
    if (fh === null || !writing.handles.size) this.#writing.delete(node);
  }

  async copyFileRange(req: Request<"COPY_FILE_RANGE">): Promise<number> {
    this.#attrs.changed(req.nodeidOut);
    this.#forgetNode(req.nodeidOut);
    this.#doneWriting(req.nodeidOut, null);
    const fhIn = (await this.#localFh({ header: req.header, fh: req.fhIn })).fh;
    return await this.#ask("copyFileRange", { ...req, fhIn } as Request);
  }

  /**
   * Written behind: a handle's writes are there before it is flushed, synced or let go,
   * and a failure among them is the answer. A flush is answered here once they are:
   * the local side's does nothing more (LoopbackFs writes each block with pwrite, whose
   * failure is told at once; locks are the remote kernel's), and it cost a round trip
   * at every close() of a file written there.
   */
  async flush(req: Request<"FLUSH">): Promise<void> {
    const failed = await this.#writes.settle(req.fh);
    this.#doneWriting(req.header.nodeid, req.fh);
    if (failed) throw failed;
  }

  async fsync(req: Request<"FSYNC">): Promise<void> {
    if (req.fh >= KEPT_FH_BASE) return; // opened to read, never written through
    const failed = await this.#writes.settle(req.fh);
    await this.#ask("fsync", req);
    if (failed) throw failed;
  }

  /**
   * The kernel does not wait for a RELEASE (close() returned at its FLUSH): it goes
   * unwaited, once the handle's writes are there (a failure was told at the flush).
   */
  async release(req: Request<"RELEASE">): Promise<void> {
    await this.#writes.settle(req.fh);
    this.#doneWriting(req.header.nodeid, req.fh);
    this.#reads.release(req.fh);
    this.#writes.release(req.fh);
    this.#heads.delete(req.fh);
    if (req.fh < KEPT_FH_BASE) return this.#tell("fs.releaseBehind", req);
    const local = this.#localFhs.get(req.fh);
    this.#localFhs.delete(req.fh);
    if (local) this.#tell("fs.releaseBehind", { ...req, fh: await local } as Request);
  }

  async lseek(req: Request<"LSEEK">): Promise<bigint> {
    return await this.#ask("lseek", await this.#localFh(req));
  }

  // ---- directories: listings come with their opening ----

  async opendir(req: Request<"OPENDIR">): Promise<OpenOut> {
    const args = { ...req, size: LIST_FIRST } as unknown as Value;
    const gen = this.#attrs.gen;
    const { open, entries, end, attr } = await this.peer.call(
      "fs.opendirAhead",
      args,
    ) as unknown as OpenedDir;
    if (attr) this.#keepAttr(req.header.nodeid, attr.attr, attr.attrTimeout, gen);
    for (const e of entries) this.#learnListed(req.header.nodeid, e, gen);
    this.#dirs.set(open.fh, { from: 0n, entries, end });
    return open;
  }

  readdir(req: Request<"READDIR">): Promise<DirEntry[]> {
    return this.#readdir(req, false);
  }

  readdirplus(req: Request<"READDIRPLUS">): Promise<DirEntry[]> {
    return this.#readdir(req, true);
  }

  releasedir(req: Request<"RELEASEDIR">): void {
    this.#dropListing(req.fh);
    // Nothing to wait for: what comes after it is handled after it there.
    this.#tell("fs.releasedirBehind", req);
  }

  fsyncdir(req: Request<"FSYNCDIR">): Promise<void> {
    return this.#ask("fsyncdir", req);
  }

  // ---- the rest, as asked ----

  statfs(req: Request<"STATFS">): Promise<StatfsOut> {
    return this.#ask("statfs", req);
  }

  access(req: Request<"ACCESS">): Promise<void> {
    return this.#ask("access", req);
  }

  syncfs(req: Request<"SYNCFS">): Promise<void> {
    return this.#ask("syncfs", req);
  }

  /**
   * A READDIR(PLUS) answered from the entries fetched ahead: as many as fit, each
   * given to the kernel once. A call elsewhere than where the last one ended (a
   * rewind, a seek) lets them go and is asked there.
   */
  async #readdir(req: Request<"READDIR" | "READDIRPLUS">, plus: boolean): Promise<DirEntry[]> {
    let dir = this.#dirs.get(req.fh);
    if (dir && dir.from !== req.offset) {
      this.#dropListing(req.fh);
      dir = undefined;
    }
    if (!dir) {
      return await this.peer.call(
        plus ? "fs.readdirplus" : "fs.readdir",
        req as unknown as Value,
      ) as unknown as DirEntry[];
    }
    if (!dir.entries.length && !dir.end) {
      const more = { ...req, op: "READDIRPLUS", size: LIST_MORE } as unknown as Value;
      const gen = this.#attrs.gen;
      const next = await this.peer.call("fs.readdirAhead", more) as unknown as Listing;
      // Let go meanwhile (or asked elsewhere): nobody takes these.
      if (this.#dirs.get(req.fh) !== dir || dir.from !== req.offset) {
        this.#forgetEntries(next.entries);
        return await this.#readdir(req, plus);
      }
      for (const e of next.entries) this.#learnListed(req.header.nodeid, e, gen);
      dir.entries = next.entries;
      dir.end = next.end || !next.entries.length;
    }
    let size = 0;
    let count = 0;
    for (const e of dir.entries) {
      size += direntSize(e.name.length, plus);
      if (size > req.size) break;
      count++;
    }
    const out = dir.entries.splice(0, count);
    if (out.length) dir.from = out.at(-1)!.nextOffset;
    if (plus) return out;
    // A plain READDIR gives the kernel no lookups: theirs are forgotten there.
    this.#forgetEntries(out);
    return out.map(({ entry: _, ...e }) => e);
  }

  /**
   * A name removed or moved (`newParent`/`newName`: a rename's target, which it may
   * replace): the directories' attributes and the nodes' (their link counts, ctime)
   * go; all of them when a node there is not known by its name here.
   */
  #nameChanged(parent: number, name: string, newParent?: number, newName?: string): void {
    const nodes = [parent];
    const names: [number, string][] = [[parent, name]];
    if (newParent !== undefined && newName !== undefined) {
      nodes.push(newParent);
      names.push([newParent, newName]);
    }
    for (const [dir, n] of names) {
      const node = this.#names.nodeOf(dir, n);
      if (node === undefined) return this.#attrs.changed();
      nodes.push(node);
    }
    this.#attrs.changed(...nodes);
  }

  /** A listed entry of directory `parent`: its attributes and name kept, as a lookup's. */
  #learnListed(parent: number, e: DirEntry, gen: number): void {
    if (!e.entry) return;
    this.#learn(e.entry, gen);
    if (e.entry.nodeid) this.#names.named(parent, e.name, e.entry.nodeid);
  }

  /** Asks for directory `dir`'s names (see KnownNames): names not among them are absent. */
  #listNames(dir: number, req: Request): void {
    const gen = this.#attrs.gen;
    const ask = { header: req.header } as unknown as Value;
    (this.peer.call("fs.names", ask) as Promise<string[] | null>).then((names) => {
      // Changed meanwhile (here or there): listed again at the next names found absent.
      this.#names.listed(dir, names, !this.#attrs.unchangedSince(dir, gen));
      this.listings++;
    }, () => this.#names.listed(dir, null, false));
  }

  /** Keeps attributes told by an answer to a call made in generation `gen`, if still current. */
  #keepAttr(nodeid: number, attr: AttrOut["attr"], attrTimeout: number, gen: number): void {
    if (!nodeid) return;
    // Told for long: the local side watches this directory (change_watch.ts).
    if (attrTimeout >= WATCHED_MIN && (attr.mode & S_IFMT) === S_IFDIR) {
      this.#names.watched(nodeid, attrTimeout);
    }
    this.#attrs.keep(nodeid, attr, attrTimeout, gen);
  }

  /**
   * Keeps the directories' attributes a name's change came with (see ParentAttrs), and
   * takes them off the answer (the kernel is not to see them).
   */
  #keepParents(req: Request, answer: ParentAttrs | null, gen: number): void {
    if (!answer) return;
    const { parentAttr, newParentAttr } = answer;
    delete answer.parentAttr;
    delete answer.newParentAttr;
    if (parentAttr) this.#keepAttr(req.header.nodeid, parentAttr.attr, parentAttr.attrTimeout, gen);
    const newdir = (req as Request<"RENAME">).newdir;
    if (newParentAttr && newdir) {
      this.#keepAttr(newdir, newParentAttr.attr, newParentAttr.attrTimeout, gen);
    }
  }

  /** Keeps the attributes and xattr names an entry came with (and takes the names off it). */
  #learn(entry: EntryOut, gen: number): EntryOut {
    this.#keepAttr(entry.nodeid, entry.attr, entry.attrTimeout, gen);
    const e = entry as EntryWithXattrs;
    if (e.xattrs) {
      if (e.nodeid) {
        this.#xattrs.set(e.nodeid, {
          names: e.xattrs,
          until: performance.now() + e.attrTimeout * 1000,
        });
      }
      delete e.xattrs;
    }
    return entry;
  }

  /** A node's xattr names while they are as fresh as its attributes may be; else undefined. */
  #xattrsOf(nodeid: number): Uint8Array | undefined {
    const known = this.#xattrs.get(nodeid);
    if (!known) return undefined;
    if (performance.now() < known.until) return known.names;
    this.#xattrs.delete(nodeid);
    return undefined;
  }

  #dropListing(fh: number): void {
    const dir = this.#dirs.get(fh);
    if (!dir) return;
    this.#dirs.delete(fh);
    this.#forgetEntries(dir.entries);
  }

  #forgetEntries(entries: DirEntry[]): void {
    for (const e of entries) if (e.entry?.nodeid) this.forget(e.entry.nodeid, 1);
  }

  /**
   * Local changes, told by the local side's change watch: what is kept of those
   * nodes and names is dropped (the kernel's own copies are the caller's to drop).
   */
  changed(changes: Invalidation[]): void {
    this.#changes++;
    // An answer asked for before may tell of these as they were: not kept.
    this.#attrs.changed(
      ...changes.flatMap((c) => [c.parent, c.node]).filter((n): n is number => n !== null),
    );
    for (const c of changes) {
      if (c.parent !== null) this.#names.unnamed(c.parent, c.name); // what the name is: not known now
      if (c.node === null) continue;
      this.#xattrs.delete(c.node);
      this.#noCaps.delete(c.node);
      this.#forgetNode(c.node);
      this.#doneWriting(c.node, null);
    }
  }

  forget(nodeid: number, nlookup: number): void {
    this.#names.forget(nodeid);
    this.#kept.drop(nodeid);
    this.#attrs.forget(nodeid);
    this.#doneWriting(nodeid, null);
    this.#noCaps.delete(nodeid); // the id may name another file later
    this.#xattrs.delete(nodeid);
    this.peer.event("fs.forget", [nodeid, nlookup]);
  }

  #write(req: Request<"WRITE">): Promise<number> {
    this.#forgetNode(req.header.nodeid);
    return this.#writes.write(req);
  }

  #forgetNode(nodeid: number): void {
    this.#kept.drop(nodeid);
    this.#reads.forgetNode(nodeid);
    for (const [fh, h] of this.#heads) if (h.nodeid === nodeid) this.#heads.delete(fh);
  }

  async #read(req: Request<"READ">): Promise<Uint8Array> {
    this.#reads.note(req);
    // Within what came with the opening.
    const offset = Number(req.offset);
    const head = this.#heads.get(req.fh);
    if (head && head.nodeid === req.header.nodeid) {
      const end = offset + req.size;
      if (end <= head.data.length || (head.whole && offset <= head.data.length)) {
        return head.data.subarray(offset, Math.min(end, head.data.length));
      }
    }
    if (req.fh >= KEPT_FH_BASE) req = await this.#localFh(req); // its contents changed
    return await this.#reads.read(req);
  }
}
