/**
 * The kernel's nodes for cached paths: their ids start at CACHE_BASE (below it are
 * the local side's, passed through), one node per path the kernel was given, with
 * its lookup count, the path it has now (a rename moves it) and, once a change
 * needed it, the local side's node for the same file. Ids are never reused.
 */
import { FuseError } from "../../fuse/mod.ts";
import { Errno } from "../../sys/errno.ts";

/** Node ids and handles of cached paths start here (the local side's stay below). */
export const CACHE_BASE = 2 ** 40;

export interface CacheNode {
  id: number;
  /** "" once another file took its place (it lives until the kernel forgets it). */
  path: string;
  nlookup: number;
  /** The local side's node for the same path, once a change needed it (one lookup held). */
  localId?: number;
}

/** `path` with `from` (itself or a directory above it) renamed to `to`, or null if not under it. */
export function movedPath(path: string, from: string, to: string): string | null {
  return path === from ? to : path.startsWith(`${from}/`) ? to + path.slice(from.length) : null;
}

export class CachedNodes {
  readonly #byId = new Map<number, CacheNode>();
  readonly #byPath = new Map<string, number>();
  #nextId = CACHE_BASE;

  /** The node the kernel knows by `id`, if it still does. */
  get(id: number): CacheNode | undefined {
    return this.#byId.get(id);
  }

  /** The node of a request: one the kernel forgot is ESTALE. */
  node(id: number): CacheNode {
    const n = this.#byId.get(id);
    if (!n) throw new FuseError(Errno.ESTALE, `unknown cached node ${id}`);
    return n;
  }

  /** The id the kernel knows `path` by, if any. */
  idOf(path: string): number | undefined {
    return this.#byPath.get(path);
  }

  /** `path`'s node, with one more lookup (made when there is none). */
  enter(path: string): CacheNode {
    const id = this.#byPath.get(path);
    let node = id === undefined ? undefined : this.#byId.get(id);
    if (!node) {
      node = { id: this.#nextId++, path, nlookup: 0 };
      this.#byId.set(node.id, node);
      this.#byPath.set(path, node.id);
    }
    node.nlookup++;
    return node;
  }

  /** The kernel forgot `count` lookups of `id`: the node, when that was its last. */
  forget(id: number, count: number): CacheNode | null {
    const node = this.#byId.get(id);
    if (!node) return null;
    node.nlookup -= count;
    if (node.nlookup > 0) return null;
    this.#byId.delete(id);
    if (this.#byPath.get(node.path) === id) this.#byPath.delete(node.path);
    return node;
  }

  /** `path` changed: its next lookup gets a new node (the old lives until forgotten). */
  detach(path: string): void {
    this.#byPath.delete(path);
  }

  /**
   * A rename moved `from` to `to`, or exchanged them: the nodes at and under the
   * moved paths follow, and one that `to` replaced keeps no path.
   */
  move(from: string, to: string, exchange: boolean): void {
    const updates: [CacheNode, string][] = [];
    for (const node of this.#byId.values()) {
      const next = movedPath(node.path, from, to) ??
        (exchange ? movedPath(node.path, to, from) : null);
      if (next !== null) updates.push([node, next]);
      else if (!exchange && movedPath(node.path, to, to) !== null) updates.push([node, ""]); // replaced
    }
    for (const [node] of updates) {
      if (this.#byPath.get(node.path) === node.id) this.#byPath.delete(node.path);
    }
    for (const [node, next] of updates) {
      node.path = next;
      if (next) this.#byPath.set(next, node.id);
    }
  }
}
