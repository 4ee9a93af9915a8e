/**
 * Pushed names and content ids not yet written to the store's index: writing them
 * waits for the end of the command, while the session has them in memory (storing
 * a cold ffmpeg's 2,600 names while the command waited to start cost its start
 * 0.1-0.2 s). Dropping a path drops what waits for it too.
 */
import type { ContentInfo, MetaRecord } from "./protocol.ts";
import type { CacheStore } from "./store.ts";

export class DeferredIndexWrites {
  #metas: MetaRecord[] = [];
  #links: ContentInfo[] = [];

  constructor(readonly store: CacheStore, readonly client: string) {}

  meta(m: MetaRecord): void {
    this.#metas.push(m);
  }

  link(c: ContentInfo): void {
    this.#links.push(c);
  }

  /** Writes what waits, in one transaction. */
  flush(): void {
    if (!this.#metas.length && !this.#links.length) return;
    this.store.tx(() => {
      this.store.putMetas(this.client, this.#metas);
      this.store.linkContents(this.client, this.#links);
    });
    this.#metas = [];
    this.#links = [];
  }

  /** Drops `paths` from the store's index, and what of them waits to be written. */
  drop(paths: string[]): void {
    if (!paths.length) return;
    const gone = new Set(paths);
    this.forget((p) => gone.has(p));
    this.store.drop(this.client, paths);
  }

  /** Forgets what waits to be written for the paths `gone` says. */
  forget(gone: (path: string) => boolean): void {
    this.#metas = this.#metas.filter((m) => !gone(m.path));
    this.#links = this.#links.filter((c) => !gone(c.path));
  }
}
