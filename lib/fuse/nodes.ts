/**
 * The node table a path-based filesystem keeps on top of the kernel's inodes:
 * node id <-> the names it has (parent, name), the kernel's lookup count, and the
 * identity of the underlying file (device and inode number).
 *
 * One node per underlying file, as the kernel expects: a hard link's LOOKUP or
 * LINK answers the node the other name already has, so link counts and page
 * cache stay coherent. A node can therefore have several names (`links`); its
 * path is the first one still attached. Renames move a name, so open handles and
 * cached dentries stay right; a node whose last name is unlinked lives on without
 * a path until the kernel forgets it. Node ids are never reused.
 */
import { FUSE_ROOT_ID } from "./abi.ts";

export interface NodeLink {
  parent: Node;
  name: string;
}

export interface Node {
  readonly id: number;
  /** Identity of the underlying file ("dev:ino"), or null when unknown. */
  key: string | null;
  isDir: boolean;
  links: NodeLink[];
  lookups: number;
  children: Map<string, Node> | null;
}

export class NodeTable {
  readonly root: Node;
  readonly #byId = new Map<number, Node>();
  readonly #byKey = new Map<string, Node>();
  #nextId = FUSE_ROOT_ID + 1;

  constructor() {
    this.root = { id: FUSE_ROOT_ID, key: null, isDir: true, links: [], lookups: 1, children: null };
    this.#byId.set(FUSE_ROOT_ID, this.root);
  }

  get size(): number {
    return this.#byId.size;
  }

  get(id: number): Node | undefined {
    return this.#byId.get(id);
  }

  /** The path below the root ("" for the root, "a/b" below it), or null when it has none. */
  path(node: Node): string | null {
    const parts: string[] = [];
    for (let n = node; n !== this.root;) {
      const link = n.links[0];
      if (!link) return null;
      parts.push(link.name);
      n = link.parent;
    }
    return parts.reverse().join("/");
  }

  child(parent: Node, name: string): Node | undefined {
    return parent.children?.get(name);
  }

  #attach(node: Node, parent: Node, name: string): void {
    (parent.children ??= new Map()).set(name, node);
    node.links.push({ parent, name });
  }

  #detach(parent: Node, name: string): Node | undefined {
    const node = parent.children?.get(name);
    if (!node) return undefined;
    parent.children!.delete(name);
    node.links = node.links.filter((l) => !(l.parent === parent && l.name === name));
    return node;
  }

  /**
   * Finds or makes the node for `name` in `parent`, whose underlying file is `key`,
   * and counts one kernel lookup.
   */
  lookup(parent: Node, name: string, key: string | null = null, isDir = false): Node {
    let node = parent.children?.get(name);
    if (node && key !== null && node.key !== null && node.key !== key) {
      // Replaced underneath us: the old node keeps its other names, if any.
      this.#detach(parent, name);
      this.#reap(node);
      node = undefined;
    }
    if (!node && key !== null) {
      const known = this.#byKey.get(key);
      if (known && known.links.length > 0) {
        // Another name of a file we know: a hard link, or a directory moved behind our back.
        if (known.isDir) {
          const old = known.links[0];
          this.#detach(old.parent, old.name);
          this.#reap(old.parent);
        }
        node = known;
        this.#attach(node, parent, name);
      }
    }
    if (!node) {
      node = { id: this.#nextId++, key, isDir, links: [], lookups: 0, children: null };
      this.#byId.set(node.id, node);
      if (key !== null) this.#byKey.set(key, node);
      this.#attach(node, parent, name);
    }
    node.lookups++;
    return node;
  }

  /** The kernel dropped `count` lookups of node `id`. */
  forget(id: number, count: number): void {
    const node = this.#byId.get(id);
    if (!node || node === this.root) return;
    node.lookups = Math.max(0, node.lookups - count);
    this.#reap(node);
  }

  /** Drops nodes nobody needs: no kernel lookups and no known children. */
  #reap(start: Node): void {
    const pending = [start];
    while (pending.length) {
      const node = pending.pop()!;
      if (node === this.root || node.lookups > 0 || node.children?.size) continue;
      if (!this.#byId.has(node.id)) continue;
      this.#byId.delete(node.id);
      if (node.key !== null && this.#byKey.get(node.key) === node) this.#byKey.delete(node.key);
      for (const link of node.links) {
        if (link.parent.children?.get(link.name) === node) link.parent.children.delete(link.name);
        pending.push(link.parent);
      }
      node.links = [];
    }
  }

  /** `name` in `parent` is gone (unlink, rmdir). */
  remove(parent: Node, name: string): void {
    const node = this.#detach(parent, name);
    if (node) this.#reap(node);
    this.#reap(parent);
  }

  /** Moves the name (parent, name) to (newParent, newName), dropping what was there. */
  rename(parent: Node, name: string, newParent: Node, newName: string): void {
    if (parent === newParent && name === newName) return;
    const node = parent.children?.get(name);
    const replaced = this.#detach(newParent, newName);
    if (replaced && replaced !== node) this.#reap(replaced);
    if (node) {
      this.#detach(parent, name);
      this.#attach(node, newParent, newName);
    }
    this.#reap(parent);
  }

  /** RENAME_EXCHANGE: the two names trade files. */
  exchange(parent: Node, name: string, newParent: Node, newName: string): void {
    const a = this.#detach(parent, name);
    const b = this.#detach(newParent, newName);
    if (a) this.#attach(a, newParent, newName);
    if (b) this.#attach(b, parent, name);
  }
}
