/**
 * The node table a path-based filesystem keeps on top of the kernel's inodes:
 * node id <-> (parent, name), with the kernel's lookup count per node.
 *
 * Each name gets its own node (hard links included: the kernel sees one inode
 * per name, with the same st_ino, which is what tar and cp -a key on). Renames
 * move the node, so open handles and cached dentries stay right; a name that is
 * unlinked or renamed over detaches its node, which lives on (without a path)
 * until the kernel forgets it. Node ids are never reused.
 */
import { FUSE_ROOT_ID } from "./abi.ts";

export interface Node {
  readonly id: number;
  parent: Node | null;
  name: string;
  lookups: number;
  children: Map<string, Node> | null;
  /** False once unlinked or replaced: it has no path any more. */
  attached: boolean;
}

export class NodeTable {
  readonly root: Node;
  readonly #byId = new Map<number, Node>();
  #nextId = FUSE_ROOT_ID + 1;

  constructor() {
    this.root = {
      id: FUSE_ROOT_ID,
      parent: null,
      name: "",
      lookups: 1,
      children: null,
      attached: true,
    };
    this.#byId.set(FUSE_ROOT_ID, this.root);
  }

  get size(): number {
    return this.#byId.size;
  }

  get(id: number): Node | undefined {
    return this.#byId.get(id);
  }

  /** The path below the root ("" for the root, "a/b" below it), or null when detached. */
  path(node: Node): string | null {
    if (node === this.root) return "";
    const parts: string[] = [];
    for (let n: Node | null = node; n !== this.root; n = n.parent) {
      if (n === null || !n.attached) return null;
      parts.push(n.name);
    }
    return parts.reverse().join("/");
  }

  child(parent: Node, name: string): Node | undefined {
    return parent.children?.get(name);
  }

  /** Finds or makes the node for `name` in `parent` and counts one kernel lookup. */
  lookup(parent: Node, name: string): Node {
    let node = parent.children?.get(name);
    if (!node) {
      node = { id: this.#nextId++, parent, name, lookups: 0, children: null, attached: true };
      (parent.children ??= new Map()).set(name, node);
      this.#byId.set(node.id, node);
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

  #reap(node: Node | null): void {
    while (node && node !== this.root && node.lookups === 0 && !node.children?.size) {
      this.#byId.delete(node.id);
      const parent = node.parent;
      if (node.attached && parent?.children?.get(node.name) === node) {
        parent.children.delete(node.name);
      }
      node.parent = null;
      node = parent;
    }
  }

  /** `name` in `parent` is gone (unlink, rmdir): its node, if any, loses its path. */
  remove(parent: Node, name: string): void {
    const node = parent.children?.get(name);
    if (!node) return;
    parent.children!.delete(name);
    node.attached = false;
    this.#reap(node.lookups === 0 ? node : parent);
  }

  /** Moves the node at (parent, name) to (newParent, newName), detaching what was there. */
  rename(parent: Node, name: string, newParent: Node, newName: string): void {
    const node = parent.children?.get(name);
    if (parent === newParent && name === newName) return;
    this.remove(newParent, newName);
    if (!node) return;
    parent.children!.delete(name);
    node.parent = newParent;
    node.name = newName;
    (newParent.children ??= new Map()).set(newName, node);
    this.#reap(parent);
  }

  /** RENAME_EXCHANGE: the two nodes trade places. */
  exchange(parent: Node, name: string, newParent: Node, newName: string): void {
    const a = parent.children?.get(name);
    const b = newParent.children?.get(newName);
    parent.children?.delete(name);
    newParent.children?.delete(newName);
    if (a) {
      a.parent = newParent;
      a.name = newName;
      (newParent.children ??= new Map()).set(newName, a);
    }
    if (b) {
      b.parent = parent;
      b.name = name;
      (parent.children ??= new Map()).set(name, b);
    }
  }
}
