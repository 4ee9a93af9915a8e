/**
 * What the remote knows of local names, as answers told them: which node a name in a
 * directory is (0: none), so that removing or moving it drops that node's kept
 * attributes alone; which directories the local side watches (their attributes were
 * told for long: change_watch.ts tells of every change made there by others); and, in
 * those, which names are absent: those known absent (removed through the mount, or
 * asked) and, once a directory's names were listed, every name not among them. Kept
 * true by the caller: each name made, removed or moved through the mount, and each
 * name the local side tells changed.
 */

/** Names kept at most: negative ones are never forgotten by the kernel. */
export const MAX_NAMES = 200_000;

export class KnownNames {
  /** "parent\0name" -> node id (0: absent). */
  readonly #nodes = new Map<string, number>();
  /** Node id -> its keys in #nodes, for forgetting. */
  readonly #keysOf = new Map<number, Set<string>>();
  /** Watched directories, by node -> the seconds their names may be kept. */
  readonly #watched = new Map<number, number>();
  /** Watched directories' names as listed (null: too many to list). */
  readonly #listed = new Map<number, Set<string> | null>();
  /** Names found absent by asking, by watched directory, until it is listed. */
  readonly #absentAsked = new Map<number, number>();

  constructor(readonly maxNames = MAX_NAMES) {}

  /** The node `name` in `parent` is, as told (0: absent; undefined: not known). */
  nodeOf(parent: number, name: string): number | undefined {
    return this.#nodes.get(`${parent}\0${name}`);
  }

  /** Notes that `name` in `parent` is node `node` (0: absent). */
  named(parent: number, name: string, node: number): void {
    const key = `${parent}\0${name}`;
    this.#unlink(key);
    // Known absent (0) too: a rename's target is looked up first, and is usually that.
    if (this.#nodes.size >= this.maxNames && !this.#nodes.has(key)) {
      this.#nodes.clear(); // names not known drop all kept attributes: safe, if slower
      this.#keysOf.clear();
    }
    this.#nodes.set(key, node);
    if (!node) return;
    this.#listed.get(parent)?.add(name);
    let keys = this.#keysOf.get(node);
    if (!keys) this.#keysOf.set(node, keys = new Set());
    keys.add(key);
  }

  /** Forgets what `name` in `parent` is: it may be there now. */
  unnamed(parent: number, name: string): void {
    this.#listed.get(parent)?.add(name);
    const key = `${parent}\0${name}`;
    this.#unlink(key);
    this.#nodes.delete(key);
  }

  #unlink(key: string): void {
    const before = this.#nodes.get(key);
    if (before) this.#keysOf.get(before)?.delete(key);
  }

  /** Directory `dir`'s attributes were told for `seconds`: watched there if that is long. */
  watched(dir: number, seconds: number): void {
    this.#watched.set(dir, seconds);
  }

  isWatched(dir: number): boolean {
    return this.#watched.has(dir);
  }

  /**
   * Seconds `name` in `parent` may be answered absent here, or null: ask there. Absent
   * when the directory is watched and the name is known absent or not among its names.
   */
  absent(parent: number, name: string): number | null {
    const watched = this.#watched.get(parent);
    if (!watched) return null;
    if (this.nodeOf(parent, name) === 0) return watched;
    const listed = this.#listed.get(parent);
    return listed && !listed.has(name) ? watched : null;
  }

  /**
   * A name was found absent by asking in `dir`: whether to list its names now (at the
   * second, in a watched directory not listed yet).
   */
  absentAsked(dir: number): boolean {
    if (!this.#watched.has(dir) || this.#listed.has(dir)) return false;
    const n = (this.#absentAsked.get(dir) ?? 0) + 1;
    this.#absentAsked.set(dir, n);
    return n === 2;
  }

  /** `dir`'s names as listed there (null: too many); `stale`: it changed meanwhile. */
  listed(dir: number, names: string[] | null, stale: boolean): void {
    if (stale || !this.#watched.has(dir)) {
      this.#absentAsked.delete(dir); // listed again at its next names found absent
      return;
    }
    this.#listed.set(dir, names && new Set(names));
  }

  /** The kernel let node `node` go: its names, and as a directory, all it knew of it. */
  forget(node: number): void {
    this.#watched.delete(node);
    this.#listed.delete(node);
    this.#absentAsked.delete(node);
    for (const key of this.#keysOf.get(node) ?? []) this.#nodes.delete(key);
    this.#keysOf.delete(node);
  }
}
