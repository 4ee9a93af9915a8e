/**
 * What a session used of the cached paths, in the order of first use: the metas it
 * looked at, the listings it read, the chunks it read through the agent, and the
 * files the remote kernel read itself (passthrough, whose reads are not seen). It
 * becomes the executable's next profile; a mark lets each command of a shared mount
 * take what it added.
 */
import type { Profile } from "./protocol.ts";

/** A first use: a meta, a chunk, a listing (true) or content the kernel read itself (false). */
type FirstUse =
  | [path: string]
  | [path: string, chunk: number]
  | [path: string, list: true]
  | [path: string, whole: false];

export class UsageRecorder {
  readonly #metas = new Set<string>();
  readonly #listings = new Set<string>();
  readonly #wholes = new Set<string>();
  readonly #chunks = new Map<string, Set<number>>();
  readonly #log: FirstUse[] = [];

  /** The paths whose metas were used so far. */
  get metas(): ReadonlySet<string> {
    return this.#metas;
  }

  meta(path: string): void {
    this.#once(this.#metas, [path]);
  }

  listing(dir: string): void {
    this.#once(this.#listings, [dir, true]);
  }

  /** `path` was handed to the remote kernel to read itself. */
  whole(path: string): void {
    this.#once(this.#wholes, [path, false]);
  }

  /** Chunks `first`..`last` of `path` were read. */
  chunks(path: string, first: number, last: number): void {
    let seen = this.#chunks.get(path);
    if (!seen) this.#chunks.set(path, seen = new Set());
    for (let i = first; i <= last; i++) {
      if (seen.has(i)) continue;
      seen.add(i);
      this.#log.push([path, i]);
    }
  }

  /** A mark for `since`: what was used so far. */
  mark(): number {
    return this.#log.length;
  }

  /** What was first used after `mark` (0: all of it), each chunk list sorted. */
  since(mark: number): Profile {
    const metas: string[] = [];
    const listed: string[] = [];
    const whole: string[] = [];
    const chunkSets = new Map<string, number[]>();
    for (let i = mark; i < this.#log.length; i++) {
      const [path, what] = this.#log[i];
      if (what === undefined) metas.push(path);
      else if (what === true) listed.push(path);
      else if (what === false) whole.push(path);
      else {
        let list = chunkSets.get(path);
        if (!list) chunkSets.set(path, list = []);
        list.push(what);
      }
    }
    const chunks: Record<string, number[]> = {};
    for (const [path, list] of chunkSets) chunks[path] = list.toSorted((a, b) => a - b);
    return { metas, listed, chunks, whole };
  }

  #once(seen: Set<string>, use: FirstUse): void {
    if (seen.has(use[0])) return;
    seen.add(use[0]);
    this.#log.push(use);
  }
}
