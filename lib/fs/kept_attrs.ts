/**
 * Local nodes' attributes as told to the remote (an entry, a GETATTR, a directory's
 * with a change of its names), kept for as long as they were given for, with what
 * keeps them true: every change counts a generation, and an answer asked for before a
 * change of its own node is not kept (another node's change, another compile job's,
 * leaves it be).
 */
import type { AttrOut } from "../fuse/mod.ts";

type Attr = AttrOut["attr"];

export class KeptAttrs {
  readonly #attrs = new Map<number, { attr: Attr; until: number }>();
  #gen = 0;
  /** The generation each node last changed at, and all of them. */
  readonly #changedAt = new Map<number, number>();
  #allChangedAt = 0;

  /** The generation now: what an answer asked for now is kept against. */
  get gen(): number {
    return this.#gen;
  }

  /** A node's attributes and the milliseconds they still hold, while they do. */
  get(node: number): { attr: Attr; left: number } | undefined {
    const known = this.#attrs.get(node);
    const left = known ? known.until - performance.now() : 0;
    return known && left > 0 ? { attr: known.attr, left } : undefined;
  }

  /** Keeps attributes told by an answer asked for at generation `gen`, if still current. */
  keep(node: number, attr: Attr, timeout: number, gen: number): void {
    if (node && timeout > 0 && this.unchangedSince(node, gen)) {
      this.#attrs.set(node, { attr, until: performance.now() + timeout * 1000 });
    }
  }

  /**
   * `nodes` changed (all of them when none is named): theirs go, and an answer asked for
   * before is not kept for them. Called before each call that may change them.
   */
  changed(...nodes: number[]): void {
    const gen = ++this.#gen;
    if (!nodes.length) {
      this.#attrs.clear();
      this.#changedAt.clear();
      this.#allChangedAt = gen;
    }
    for (const n of nodes) {
      this.#attrs.delete(n);
      this.#changedAt.set(n, gen);
    }
  }

  /** Whether nothing changed node `node` since generation `gen`. */
  unchangedSince(node: number, gen: number): boolean {
    return gen >= this.#allChangedAt && (this.#changedAt.get(node) ?? 0) <= gen;
  }

  /** The kernel let the node go: nothing is asked of it any more. */
  forget(node: number): void {
    this.#attrs.delete(node);
  }
}
