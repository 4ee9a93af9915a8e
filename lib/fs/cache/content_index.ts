/**
 * This machine's memo of content ids (`~/.outrun/content.sqlite`): path and
 * fingerprint -> content id and chunk hashes. A content id covers the whole file,
 * so computing one reads the whole file; with the memo, a cold start (a new
 * remote, or an emptied cache) reads only the chunks it sends. An entry counts
 * only under the fingerprint it was made for (size, times to the nanosecond,
 * inode, mode), the same quick check the remote's validation trusts; and the
 * remote checks every chunk against these hashes anyway.
 */
import { type Database, openDatabase } from "./sqlite.ts";
import { CHUNK_SIZE, type ContentInfo } from "./protocol.ts";

/** The chunk size is part of every content id (protocol.ts). */
const SCHEMA_VERSION = 1000 + CHUNK_SIZE / 1024;

export class ContentIndex {
  readonly #db: Database;

  constructor(path: string) {
    Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")) || "/", { recursive: true, mode: 0o700 });
    this.#db = openDatabase(path);
    this.#db.exec("pragma busy_timeout = 10000");
    this.#db.exec("pragma journal_mode = wal");
    const { user_version } = this.#db.prepare("pragma user_version").get() as {
      user_version: number;
    };
    if (user_version !== SCHEMA_VERSION) {
      this.#db.exec("drop table if exists files");
      this.#db.exec(
        "create table files(path text primary key, fp text not null, hash text not null, " +
          "size integer not null, chunk_hashes blob not null)",
      );
      this.#db.exec(`pragma user_version = ${SCHEMA_VERSION}`);
    }
  }

  get(path: string, fp: string): ContentInfo | null {
    const r = this.#db.prepare(
      "select hash, size, chunk_hashes from files where path = ? and fp = ?",
    ).get(path, fp) as { hash: string; size: number; chunk_hashes: Uint8Array } | undefined;
    return r ? { path, fp, hash: r.hash, size: r.size, chunkHashes: r.chunk_hashes } : null;
  }

  put(info: ContentInfo): void {
    this.#db.prepare(
      `insert into files(path, fp, hash, size, chunk_hashes) values (?, ?, ?, ?, ?)
       on conflict(path) do update set fp = excluded.fp, hash = excluded.hash,
         size = excluded.size, chunk_hashes = excluded.chunk_hashes`,
    ).run(info.path, info.fp, info.hash, info.size, info.chunkHashes);
  }

  close(): void {
    this.#db.close();
  }
}
