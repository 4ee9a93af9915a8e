/**
 * Whole small local files as read at an opening, kept on the remote by node while the
 * local side watches their directory (change_watch.ts): ProxyFs answers the next
 * opening to read one from here. A header every compile unit includes was a round
 * trip each. Kept while the node's attributes, as ProxyFs keeps them now, still say
 * the size and mtime the contents were read with.
 */
import type { AttrOut } from "../fuse/mod.ts";

/** Bytes kept at most (each file is small: under OPEN_AHEAD). */
export const KEPT_MAX_BYTES = 64 * 1024 * 1024;

type Attr = AttrOut["attr"];

export class KeptFiles {
  readonly #files = new Map<number, { data: Uint8Array; attr: Attr }>();
  #bytes = 0;

  constructor(readonly maxBytes = KEPT_MAX_BYTES) {}

  get bytes(): number {
    return this.#bytes;
  }

  /** Keeps `data`, all of node `node`'s file as `attr` describes it; the oldest go first. */
  keep(node: number, data: Uint8Array, attr: Attr): void {
    if (BigInt(data.length) !== attr.size) return;
    this.drop(node);
    this.#files.set(node, { data, attr });
    this.#bytes += data.length;
    for (const [old, k] of this.#files) {
      if (this.#bytes <= this.maxBytes) break;
      this.#files.delete(old);
      this.#bytes -= k.data.length;
    }
  }

  drop(node: number): void {
    const k = this.#files.get(node);
    if (!k) return;
    this.#files.delete(node);
    this.#bytes -= k.data.length;
  }

  /** The node's contents if `now` (its attributes kept now) is as they were read with. */
  get(node: number, now: Attr | undefined): Uint8Array | null {
    const k = this.#files.get(node);
    if (!k) return null;
    const same = now && now.size === k.attr.size && now.mtimeSec === k.attr.mtimeSec &&
      now.mtimeNsec === k.attr.mtimeNsec;
    if (same) return k.data;
    this.drop(node);
    return null;
  }
}
