/**
 * Keeps what the remote kernel holds of local names and attributes true while it
 * holds them long. Each directory the remote has looked into is watched here with
 * inotify; a change made to it by anyone but the remote (an editor, a local build, a
 * `git checkout`) becomes an Invalidation sent to the remote, which drops the name,
 * the attributes and the cached pages it held. Changes the remote itself made through
 * the mount are left out: its kernel already knows them, and dropping what it just
 * learnt (an object file make will stat next) would cost the round trips saved.
 *
 * Order: a call through the mount is answered only after the changes seen until then
 * are sent (the same stream, so the remote applies them first); changes made while no
 * call is being answered are sent as soon as inotify has them.
 *
 * What is not seen: writes through a shared mapping (inotify has no event for them),
 * changes another machine makes to a network filesystem, and a file changed through a
 * hard link in an unwatched directory. Those hold for the timeout given with the
 * entry, as long as a local program on NFS may see stale attributes itself; files with
 * more than one link get the short timeout.
 */
import type { Node, NodeTable, Request } from "../fuse/mod.ts";
import { IN, Inotify, type InotifyEvent } from "../sys/inotify.ts";
import { O, SysError } from "../sys/libc.ts";
import type { Invalidation } from "./file_wire.ts";
import type { DirectoryWatch } from "./loopback.ts";

/** Seconds the remote may keep a name or attributes of a watched directory's entry. */
export const WATCHED_TIMEOUT = 60;

/** What a directory's watch reports: changes of its entries' names, contents, attributes. */
const MASK = IN.MODIFY | IN.ATTRIB | IN.CREATE | IN.DELETE | IN.MOVED_FROM | IN.MOVED_TO |
  IN.DELETE_SELF | IN.MOVE_SELF | IN.ONLYDIR | IN.DONT_FOLLOW | IN.EXCL_UNLINK;
const NAMES = IN.CREATE | IN.DELETE | IN.MOVED_FROM | IN.MOVED_TO;
const CONTENTS = IN.MODIFY | IN.ATTRIB;
/** How long the background wait for events lasts before it looks whether it should stop. */
const WAIT_MS = 250;

/** The events a call through the mount makes itself: "dir\0name" -> bits. */
type Own = Map<string, number>;

export class ChangeWatch implements DirectoryWatch {
  readonly timeout = WATCHED_TIMEOUT;
  readonly #inotify: Inotify | null;
  /** Watch descriptor -> the directory's node id. */
  readonly #dirOf = new Map<number, number>();
  /** Directory node id -> its watch descriptor. */
  readonly #wdOf = new Map<number, number>();
  /** Set when a watch could not be added (the user's inotify watches used up). */
  #full = false;
  #stopped = false;
  /** Invalidations told, and events of the remote's own calls left out (tests, -v). */
  readonly stats = { told: 0, own: 0, watches: 0 };

  constructor(
    readonly nodes: NodeTable,
    /** A node's absolute local path (a byte string), null once it has none. */
    readonly pathOf: (id: number) => string | null,
    /** Sends invalidations to the remote, in order with the answers to its calls. */
    readonly send: (changes: Invalidation[]) => void,
    readonly log: (line: string) => void = () => {},
  ) {
    let inotify: Inotify | null = null;
    try {
      inotify = new Inotify();
    } catch (e) {
      // EMFILE: the user's inotify instances used up. Names get the short timeout.
      log(`no change watch (${(e as Error).message}): names and attributes kept 1 s there`);
    }
    this.#inotify = inotify;
    if (inotify) this.#waitForEvents(inotify);
  }

  /** Watches directory `dir`: whether changes to its entries will be told. */
  cover(dir: Node): boolean {
    if (this.#wdOf.has(dir.id)) return true;
    if (!this.#inotify || this.#full || this.#stopped) return false;
    const path = this.pathOf(dir.id);
    if (path === null) return false;
    let wd: number;
    try {
      wd = this.#inotify.add(path, MASK);
    } catch (e) {
      if (e instanceof SysError && e.code === "ENOSPC") {
        this.#full = true;
        this.log(`change watch: inotify watches used up at ${this.#wdOf.size}; the rest kept 1 s`);
      }
      return false;
    }
    const before = this.#dirOf.get(wd);
    if (before !== undefined) this.#wdOf.delete(before); // the same directory, a new node
    this.#dirOf.set(wd, dir.id);
    this.#wdOf.set(dir.id, wd);
    this.stats.watches = this.#wdOf.size;
    return true;
  }

  /**
   * After a call through the mount (`req`, answered next): sends what changed meanwhile,
   * without the changes the call made itself.
   */
  afterCall(req: Request): void {
    const events = this.#inotify?.read() ?? [];
    // What the call changed itself is worked out only when there is something to sift.
    if (events.length) this.#tell(events, this.#own(req));
  }

  stop(): void {
    this.#stopped = true;
    this.#inotify?.close();
  }

  /** Changes made while no call is being answered: sent as inotify has them. */
  async #waitForEvents(inotify: Inotify): Promise<void> {
    while (!this.#stopped) {
      if (await inotify.readable(WAIT_MS) && !this.#stopped) this.#tell(inotify.read(), null);
    }
  }

  #tell(events: InotifyEvent[], own: Own | null): void {
    if (!events.length) return;
    const out: Invalidation[] = [];
    const seen = new Set<string>();
    const add = (parent: number | null, name: string, node: number | null) => {
      const key = `${parent}\0${name}\0${node}`;
      if (seen.has(key)) return;
      seen.add(key);
      out.push({ parent, name, node });
    };
    for (const e of events) {
      if (e.mask & IN.Q_OVERFLOW) {
        this.#overflowed(add);
        continue;
      }
      const dirId = this.#dirOf.get(e.wd);
      if (dirId === undefined) continue;
      if (e.mask & IN.IGNORED) { // the directory is gone, or unwatched
        this.#dirOf.delete(e.wd);
        if (this.#wdOf.get(dirId) === e.wd) this.#wdOf.delete(dirId);
        continue;
      }
      const dir = this.nodes.get(dirId);
      if (!dir) { // the remote forgot it: nothing of it to keep true
        this.#inotify?.remove(e.wd);
        continue;
      }
      const bits = own?.get(`${dirId}\0${e.name}`) ?? 0;
      if ((e.mask & ~IN.ISDIR & ~bits) === 0) {
        this.stats.own++;
        continue;
      }
      if (e.name === "") {
        add(null, "", dirId);
        continue;
      }
      const child = this.nodes.child(dir, e.name);
      if (e.mask & NAMES) add(dirId, e.name, child?.id ?? null);
      else if (child) add(null, "", child.id);
    }
    if (!out.length) return;
    this.stats.told += out.length;
    this.send(out);
  }

  /** Events were lost: everything known may have changed. */
  #overflowed(add: (parent: number | null, name: string, node: number | null) => void): void {
    this.log("change watch: inotify queue overflowed; every name and attribute dropped there");
    const walk = (node: Node) => {
      add(null, "", node.id);
      for (const [name, child] of node.children ?? []) {
        add(node.id, name, child.id);
        walk(child);
      }
    };
    walk(this.nodes.root);
  }

  /** The events `req` itself makes: "dir\0name" -> bits (the entry's, or the dir's own with ""). */
  #own(req: Request): Own {
    const own: Own = new Map();
    const put = (dir: number, name: string, bits: number) =>
      own.set(`${dir}\0${name}`, (own.get(`${dir}\0${name}`) ?? 0) | bits);
    /** A node's contents or attributes: the events on each of its names, and its own. */
    const node = (id: number) => {
      const n = this.nodes.get(id);
      if (!n) return;
      for (const link of n.links) put(link.parent.id, link.name, CONTENTS);
      put(id, "", IN.ATTRIB);
    };
    const h = req.header;
    switch (req.op) {
      case "WRITE":
      case "SETATTR":
      case "FALLOCATE":
      case "SETXATTR":
      case "REMOVEXATTR":
        node(h.nodeid);
        break;
      case "COPY_FILE_RANGE":
        node((req as Request<"COPY_FILE_RANGE">).nodeidOut);
        break;
      case "OPEN":
        if ((req as Request<"OPEN">).flags & O.TRUNC) node(h.nodeid);
        break;
      case "CREATE":
      case "MKNOD":
      case "MKDIR":
      case "SYMLINK":
        // ATTRIB: made as root here, the new file is given to its owner (lchown).
        put(h.nodeid, (req as Request<"MKDIR">).name, IN.CREATE | IN.ATTRIB);
        put(h.nodeid, "", IN.ATTRIB);
        break;
      case "LINK":
        node((req as Request<"LINK">).oldNodeid);
        put(h.nodeid, (req as Request<"LINK">).newName, IN.CREATE);
        break;
      case "UNLINK":
      case "RMDIR": {
        const name = (req as Request<"UNLINK">).name;
        put(h.nodeid, name, IN.DELETE | CONTENTS);
        const gone = this.nodes.get(h.nodeid);
        const child = gone && this.nodes.child(gone, name);
        if (child) put(child.id, "", IN.DELETE_SELF | IN.ATTRIB);
        break;
      }
      case "RENAME":
      case "RENAME2": {
        const r = req as Request<"RENAME">;
        put(h.nodeid, r.name, IN.MOVED_FROM | IN.MOVED_TO);
        put(r.newdir, r.newName, IN.MOVED_FROM | IN.MOVED_TO);
        // The table has the move already: the node is under its new name.
        const to = this.nodes.get(r.newdir);
        const moved = to && this.nodes.child(to, r.newName);
        if (moved) put(moved.id, "", IN.MOVE_SELF);
        break;
      }
    }
    return own;
  }
}
