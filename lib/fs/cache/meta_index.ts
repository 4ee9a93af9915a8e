/**
 * What the remote knows of the cached paths' metadata in one session: metas pushed
 * this session (decoded), metas held from earlier sessions (still encoded, decoded
 * on first use), each path's content id, and, once the whole of what the store holds
 * has been checked (validateRest), the store itself: a name not known here is read
 * from it when it is as it was checked. One synchronous question, `known`.
 */
import { bulkCodec } from "./chunks.ts";
import { type HeldColumns, type MetaRecord, unpackHeld } from "./protocol.ts";
import { type CacheStore, decodeMeta, type HeldMeta } from "./store.ts";

/** All the store held for a client when it was checked, and its change count then. */
export interface CheckedList {
  gen: number;
  held: HeldColumns;
}

export class MetaIndex {
  readonly #metas = new Map<string, MetaRecord>();
  /** Metas held from earlier sessions, still encoded: decoded on first use. */
  readonly #encoded = new Map<string, Uint8Array>();
  readonly #hashes = new Map<string, string>();
  readonly #childSets = new WeakMap<MetaRecord, Set<string>>();
  /**
   * All the store held, as checked: a name not known here is read from the store when
   * used, if it is as checked there (the store unchanged since, or its fingerprint the
   * one checked: a name another session added since would never be checked again by
   * this one, whose ControlMaster revalidates what it checked). Names not taken from
   * the store are not looked for there again.
   */
  #checked: CheckedList | null = null;
  /** `#checked`'s fingerprints by path, read when the store changed since. */
  #checkedFps: Map<string, string> | null = null;
  readonly #notStored = new Set<string>();

  constructor(readonly store: CacheStore, readonly client: string) {}

  /** The meta of `path` if known here (pushed this session, or held and decoded now). */
  known(path: string): MetaRecord | undefined {
    let m = this.#metas.get(path);
    if (m) return m;
    let bytes = this.#encoded.get(path);
    if (bytes) {
      this.#encoded.delete(path);
    } else {
      if (!this.#checked || this.#notStored.has(path)) return undefined;
      const row = this.store.heldMeta(this.client, path);
      if (!row || !this.#asChecked([row])[0]) {
        this.#notStored.add(path);
        return undefined;
      }
      if (row[2]) this.#hashes.set(path, row[2]);
      bytes = row[1];
    }
    m = decodeMeta(bytes);
    this.#metas.set(path, m);
    return m;
  }

  /** Whether a meta of `path` is here (decoded or not): no wait for the store's check. */
  has(path: string): boolean {
    return this.#metas.has(path) || this.#encoded.has(path);
  }

  /** The paths whose metas are here. */
  paths(): string[] {
    return [...this.#metas.keys(), ...this.#encoded.keys()];
  }

  /** A meta held from an earlier session, kept encoded; a fresher one here stays. */
  hold([path, meta, hash]: HeldMeta): void {
    if (this.#metas.has(path)) return;
    this.#encoded.set(path, meta);
    if (hash) this.#hashes.set(path, hash);
  }

  /** A meta pushed this session: its content id comes with its own push, if any. */
  put(m: MetaRecord): void {
    this.#metas.set(m.path, m);
    this.#hashes.delete(m.path);
  }

  hash(path: string): string | undefined {
    return this.#hashes.get(path);
  }

  setHash(path: string, hash: string): void {
    this.#hashes.set(path, hash);
  }

  /** A directory meta's names as a set (made once per meta), or null without a listing. */
  children(m: MetaRecord): Set<string> | null {
    if (!m.children) return null;
    let s = this.#childSets.get(m);
    if (!s) this.#childSets.set(m, s = new Set(m.children));
    return s;
  }

  /** From now on, what the store holds as `list` had it is known too. */
  setChecked(list: CheckedList): void {
    this.#checked = list;
  }

  /** Reads in one query the metas of `paths` the store holds and are not here yet. */
  loadStored(paths: readonly string[]): void {
    if (!this.#checked) return;
    const left = paths.filter((p) => !this.has(p) && !this.#notStored.has(p));
    if (left.length < 2) return;
    const rows = this.store.heldMetas(this.client, left);
    const ok = this.#asChecked(rows);
    rows.forEach((row, i) => {
      if (!ok[i]) return this.#notStored.add(row[0]);
      this.hold(row);
    });
  }

  forget(paths: Iterable<string>): void {
    for (const p of paths) {
      this.#encoded.delete(p);
      this.#metas.delete(p);
      this.#hashes.delete(p);
    }
  }

  /** Whether each row is as the checked list had it (all are, if the store is unchanged). */
  #asChecked(rows: HeldMeta[]): boolean[] {
    const list = this.#checked!;
    if (this.store.heldGen(this.client) === list.gen) return rows.map(() => true);
    this.#checkedFps ??= new Map(unpackHeld(list.held, bulkCodec()).map((r) => [r[0], r[1]]));
    return rows.map(([path, , , fp]) => this.#checkedFps!.get(path) === fp);
  }
}
