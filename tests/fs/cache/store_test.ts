/** The remote's persistent store: SQLite index and sparse, checked blobs. */
import assert from "node:assert/strict";
import { chunkHashesOf, contentHash } from "../../../lib/fs/cache/chunks.ts";
import {
  CHUNK_SIZE,
  type ContentInfo,
  fingerprint,
  type MetaRecord,
  packHeld,
  unpackHeld,
} from "../../../lib/fs/cache/protocol.ts";
import {
  CacheCorrupt,
  CacheStore,
  decodeMeta,
  fileStamp,
  HOT_KEPT,
  SETTLED_S,
} from "../../../lib/fs/cache/store.ts";
import { openDatabase } from "../../../lib/fs/cache/sqlite.ts";
import { libc, O, open } from "../../../lib/sys/libc.ts";
import { fstatFd } from "../../../lib/sys/files.ts";
import { removeTree } from "../../remove_tree.ts";

const WRITER = new URL("./store_writer.ts", import.meta.url).pathname;

function random(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/** A store whose clock runs ahead: every file looks settled (SETTLED_S), so stamps are recorded. */
const SETTLED = { clock: () => Date.now() + 2 * SETTLED_S * 1000 };

/**
 * Writes `byte` at `at` in the file at `path` until its stamp shows it: where
 * timestamps move in coarse ticks, a write in the tick of the last one shows not.
 */
async function writeSeen(path: string, at: number, byte: number): Promise<void> {
  const before = stampOf(path);
  do {
    const f = await Deno.open(path, { write: true });
    await f.seek(at, Deno.SeekMode.Start);
    await f.write(new Uint8Array([byte]));
    f.close();
  } while (stampOf(path) === before);
}

/** The `fileStamp` of the file at `path` as it is now. */
function stampOf(path: string): string {
  const fd = open(path, O.RDONLY);
  try {
    return fileStamp(fstatFd(fd));
  } finally {
    libc().close(fd);
  }
}

function infoOf(path: string, data: Uint8Array, fp = "fp"): ContentInfo {
  const chunkHashes = chunkHashesOf(data);
  return { path, fp, hash: contentHash(chunkHashes), size: data.length, chunkHashes };
}

function fileMeta(path: string, size: number): MetaRecord {
  return {
    path,
    attr: {
      ino: 7n,
      size: BigInt(size),
      blocks: 0n,
      atimeSec: 0n,
      atimeNsec: 0,
      mtimeSec: 1n,
      mtimeNsec: 0,
      ctimeSec: 1n,
      ctimeNsec: 0,
      mode: 0o100644,
      nlink: 1,
      uid: 0,
      gid: 0,
      rdev: 0,
      blksize: 4096,
    },
  };
}

async function withStore(f: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "outrun-store-test-" });
  try {
    await f(dir);
  } finally {
    await removeTree(dir);
  }
}

/** What the store holds for `client`, a row each, with its encoded meta. */
function held(store: CacheStore, client: string) {
  const metas = new Map(store.heldMetas(client).map(([path, meta]) => [path, meta]));
  return store.heldState(client).map(([path, fp, hash, present, listed]) => ({
    path,
    fp,
    hash: hash || null,
    present,
    listed,
    meta: metas.get(path)!,
  }));
}

/** Stores `data` under `path` for `client` the way a session does: meta, content id. */
function put(store: CacheStore, client: string, path: string, data: Uint8Array): ContentInfo {
  const meta = fileMeta(path, data.length);
  store.putMetas(client, [meta]);
  const row = held(store, client).find((r) => r.path === path)!;
  const info = infoOf(path, data, row.fp);
  store.putContent(client, info);
  return info;
}

Deno.test("store: metas, listings and content ids per client, across reopening", async () => {
  await withStore((dir) => {
    let store = new CacheStore(dir);
    const dirMeta: MetaRecord = { ...fileMeta("/usr", 0), children: ["bin", "lib"] };
    dirMeta.attr!.mode = 0o40755;
    store.putMetas("a", [dirMeta, { path: "/usr/nope", attr: null }]);
    const data = random(1000);
    const info = put(store, "a", "/usr/f", data);
    store.close();
    store = new CacheStore(dir);
    const rows = Object.fromEntries(held(store, "a").map((r) => [r.path, r]));
    assert.deepEqual(Object.keys(rows).sort(), ["/usr", "/usr/f", "/usr/nope"]);
    assert.equal(rows["/usr"].listed, true);
    assert.deepEqual(decodeMeta(rows["/usr"].meta).children, ["bin", "lib"]);
    assert.equal(rows["/usr/nope"].fp, "-");
    assert.equal(rows["/usr/f"].hash, info.hash);
    assert.deepEqual(held(store, "b"), [], "another client sees nothing of a's");
    // A changed meta (new fingerprint) forgets the content id recorded for the old one.
    store.putMetas("a", [fileMeta("/usr/f", 1001)]);
    assert.equal(held(store, "a").find((r) => r.path === "/usr/f")!.hash, null);
    store.close();
  });
});

Deno.test("store: the held list kept packed stands while no name changes; any change, by any writer, ends it", async () => {
  await withStore((dir) => {
    let store = new CacheStore(dir);
    store.putMetas("a", [fileMeta("/usr/f", 1), fileMeta("/usr/g", 2)]);
    store.putMetas("b", [fileMeta("/usr/f", 1)]);
    assert.equal(store.heldSnapshot("a"), null);
    const keep = () => {
      const { gen, rows } = store.heldNow("a");
      store.keepHeldSnapshot("a", gen, packHeld(rows));
    };
    keep();
    const kept = store.heldSnapshot("a")!;
    assert.deepEqual(unpackHeld(kept.held).map((r) => r[0]).sort(), ["/usr/f", "/usr/g"]);
    // A use, another client's change, reopening: it stands.
    store.touch("a", ["/usr/f"], new Set());
    store.putMetas("b", [fileMeta("/usr/h", 3)]);
    store.close();
    store = new CacheStore(dir);
    assert.deepEqual(store.heldSnapshot("a")?.held, kept.held);
    // Each change to a's names ends it: a new name, a changed one, content, a drop.
    const changes: (() => void)[] = [
      () => store.putMetas("a", [fileMeta("/usr/new", 1)]),
      () => store.putMetas("a", [fileMeta("/usr/f", 5)]),
      () => put(store, "a", "/usr/g", random(10)),
      () => store.drop("a", ["/usr/new"]),
      () => store.dropTree("a", "/usr"),
      // Another writer's, with its own connection, SQL of its own.
      () => {
        const db = openDatabase(`${dir}/index.sqlite`);
        db.exec("delete from entries where client = 'a'");
        db.close();
      },
    ];
    for (const change of changes) {
      store.putMetas("a", [fileMeta("/usr/f", 1)]);
      keep();
      assert.ok(store.heldSnapshot("a"));
      change();
      assert.equal(store.heldSnapshot("a"), null, change.toString());
    }
    // A table made again (an outrun of another schema) ends it too.
    keep();
    store.db.exec("drop table hot");
    store.close();
    store = new CacheStore(dir);
    assert.equal(store.heldSnapshot("a"), null);
    store.close();
  });
});

Deno.test("store: content ids and chunks are checked on the way in", async () => {
  await withStore((dir) => {
    const store = new CacheStore(dir);
    const data = random(CHUNK_SIZE * 2 + 5);
    const info = infoOf("/f", data);
    assert.throws(() => store.putContent("a", { ...info, hash: "0".repeat(64) }), CacheCorrupt);
    assert.throws(
      () => store.putContent("a", { ...info, size: info.size + CHUNK_SIZE }),
      CacheCorrupt,
      "chunk count must fit the size",
    );
    // Many at once: each refused alone, the others recorded.
    const other = infoOf("/g", random(100));
    const errors = store.putContents("a", [{ ...info, hash: "1".repeat(64) }, other]);
    assert.ok(errors[0] instanceof CacheCorrupt);
    assert.equal(errors[1], null);
    assert.equal(store.blob(other.hash)?.size, 100);
    assert.equal(store.blob("1".repeat(64)), null);
    store.putContent("a", info);
    assert.equal(
      store.writeChunk(info.hash, 1, data.subarray(0, CHUNK_SIZE)),
      false,
      "wrong chunk",
    );
    assert.equal(
      store.writeChunk("f".repeat(64), 0, data.subarray(0, CHUNK_SIZE)),
      false,
      "no blob",
    );
    assert.equal(store.writeChunk(info.hash, 2, data.subarray(2 * CHUNK_SIZE)), true);
    const blob = store.blob(info.hash)!;
    assert.deepEqual(blob.present.missing(3), [0, 1]);
    assert.deepEqual(store.readChunk(blob, 2), data.subarray(2 * CHUNK_SIZE));
    store.close();
  });
});

Deno.test("store: one blob for the same content from two clients and two paths", async () => {
  await withStore((dir) => {
    const store = new CacheStore(dir);
    const data = random(5000);
    const a = put(store, "a", "/lib/libc.so.6", data);
    const b = put(store, "b", "/usr/lib/x86_64-linux-gnu/libc.so.6", data);
    assert.equal(a.hash, b.hash);
    assert.equal(store.stats().blobs, 1);
    store.writeChunk(a.hash, 0, data);
    assert.ok(store.blob(b.hash)!.present.has(0), "b gets a's chunk");
    store.close();
  });
});

Deno.test("store: a damaged chunk is caught on first read by a new process, and its bit dropped", async () => {
  await withStore(async (dir) => {
    let store = new CacheStore(dir);
    const data = random(CHUNK_SIZE * 2);
    const info = put(store, "a", "/f", data);
    store.writeChunk(info.hash, 0, data.subarray(0, CHUNK_SIZE));
    store.writeChunk(info.hash, 1, data.subarray(CHUNK_SIZE));
    store.close();
    const path = `${dir}/blobs/${info.hash.slice(0, 2)}/${info.hash}`;
    const f = await Deno.open(path, { write: true });
    await f.seek(CHUNK_SIZE + 10, Deno.SeekMode.Start);
    await f.write(new Uint8Array([1, 2, 3]));
    f.close();
    store = new CacheStore(dir);
    const blob = store.blob(info.hash)!;
    assert.deepEqual(store.readChunk(blob, 0), data.subarray(0, CHUNK_SIZE));
    assert.throws(() => store.readChunk(blob, 1), CacheCorrupt);
    assert.deepEqual(store.blob(info.hash)!.present.missing(2), [1], "dropped in the index too");
    store.close();
  });
});

Deno.test("store: a whole blob's file is handed out for the kernel to read once every chunk checks out", async () => {
  await withStore(async (dir) => {
    let store = new CacheStore(dir);
    const data = random(CHUNK_SIZE * 2 + 5);
    const info = put(store, "a", "/f", data);
    store.writeChunk(info.hash, 0, data.subarray(0, CHUNK_SIZE));
    assert.equal(store.backingFd(store.blob(info.hash)!), null, "not whole yet");
    store.writeChunk(info.hash, 1, data.subarray(CHUNK_SIZE, 2 * CHUNK_SIZE));
    store.writeChunk(info.hash, 2, data.subarray(2 * CHUNK_SIZE));
    const fd = store.backingFd(store.blob(info.hash)!);
    assert.ok(fd !== null && fd >= 0);
    const back = new Uint8Array(data.length);
    assert.equal(Number(libc().pread64(fd, back, BigInt(back.length), 0n)), data.length);
    assert.deepEqual(back, data);
    libc().close(fd);
    store.close();
    // Damaged since: a new process checks before handing it out, and drops the chunk.
    const f = await Deno.open(`${dir}/blobs/${info.hash.slice(0, 2)}/${info.hash}`, {
      write: true,
    });
    await f.seek(CHUNK_SIZE + 10, Deno.SeekMode.Start);
    await f.write(new Uint8Array([1, 2, 3]));
    f.close();
    store = new CacheStore(dir);
    assert.equal(store.backingFd(store.blob(info.hash)!), null);
    assert.deepEqual(store.blob(info.hash)!.present.missing(3), [1], "dropped in the index too");
    store.close();
  });
});

Deno.test("store: a blob file as it was when last wholly checked is handed out without hashing it again", async () => {
  await withStore(async (dir) => {
    let store = new CacheStore(dir, SETTLED);
    const data = random(CHUNK_SIZE * 3 + 5);
    const info = put(store, "a", "/f", data);
    for (let i = 0; i < 4; i++) {
      store.writeChunk(info.hash, i, data.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE));
    }
    assert.equal(store.blob(info.hash)!.checked, null);
    // The session's end stamps what it wrote (each chunk was checked on arrival).
    store.stampChecked();
    const path = `${dir}/blobs/${info.hash.slice(0, 2)}/${info.hash}`;
    const stampNow = () => stampOf(path);
    assert.equal(store.blob(info.hash)!.checked, stampNow());
    store.close();

    // Changed in a way its stamp cannot see (here: the stamp forged after a write):
    // a new process trusts the stamp, which shows it hashes nothing.
    const f = await Deno.open(path, { write: true });
    await f.seek(10, Deno.SeekMode.Start);
    await f.write(new Uint8Array([1, 2, 3]));
    f.close();
    const db = openDatabase(`${dir}/index.sqlite`);
    db.prepare("update blobs set checked = ? where hash = ?").run(stampNow(), info.hash);
    db.close();
    store = new CacheStore(dir);
    const fd = store.backingFd(store.blob(info.hash)!);
    assert.ok(fd !== null, "handed out on the stamp's word");
    libc().close(fd);
    // Its chunks read through the agent are not checked either (this process trusts the file).
    assert.equal(store.readChunk(store.blob(info.hash)!, 0)[10], 1);
    store.close();

    // A write the stamp sees: checked again, caught, the chunk dropped.
    await writeSeen(path, CHUNK_SIZE * 2, 9);
    store = new CacheStore(dir);
    assert.equal(store.backingFd(store.blob(info.hash)!), null);
    assert.deepEqual(store.blob(info.hash)!.present.missing(4), [0], "the first bad chunk");
    store.close();
  });
});

Deno.test("store: a file changed within SETTLED_S of the look is not stamped (a write in its tick would not show)", async () => {
  await withStore((dir) => {
    const data = random(CHUNK_SIZE + 5);
    const store = new CacheStore(dir);
    const info = put(store, "a", "/f", data);
    store.writeChunk(info.hash, 0, data.subarray(0, CHUNK_SIZE));
    store.writeChunk(info.hash, 1, data.subarray(CHUNK_SIZE));
    store.stampChecked();
    assert.equal(store.blob(info.hash)!.checked, null, "just written: not stamped");
    const fd = store.backingFd(store.blob(info.hash)!);
    assert.ok(fd !== null, "handed out, checked");
    libc().close(fd);
    assert.equal(store.blob(info.hash)!.checked, null, "checked, yet not stamped");
    store.close();
  });
});

Deno.test("store: a blob checked whole on hand-out is stamped; one held in part is stamped once all it holds is checked", async () => {
  await withStore((dir) => {
    let store = new CacheStore(dir);
    const whole = random(CHUNK_SIZE + 1);
    const part = random(CHUNK_SIZE * 3);
    const a = put(store, "a", "/a", whole);
    const b = put(store, "a", "/b", part);
    store.writeChunk(a.hash, 0, whole.subarray(0, CHUNK_SIZE));
    store.writeChunk(a.hash, 1, whole.subarray(CHUNK_SIZE));
    store.writeChunk(b.hash, 0, part.subarray(0, CHUNK_SIZE));
    store.writeChunk(b.hash, 2, part.subarray(2 * CHUNK_SIZE));
    store.close();
    // A new process: nothing checked yet, nothing stamped (the writer never ended its session).
    store = new CacheStore(dir, SETTLED);
    assert.equal(store.blob(a.hash)!.checked, null);
    const fd = store.backingFd(store.blob(a.hash)!);
    assert.ok(fd !== null);
    libc().close(fd);
    assert.notEqual(store.blob(a.hash)!.checked, null, "stamped once checked");
    assert.equal(store.backingFd(store.blob(b.hash)!), null, "not whole: not handed out");
    store.readChunk(store.blob(b.hash)!, 0);
    store.stampChecked();
    assert.equal(store.blob(b.hash)!.checked, null, "chunk 2 held and not checked here");
    store.readChunk(store.blob(b.hash)!, 2);
    store.stampChecked();
    assert.notEqual(store.blob(b.hash)!.checked, null, "all it holds checked: stamped");
    store.close();
  });
});

Deno.test("store: ranges of a blob held in part: checked chunk by chunk, then read on the stamp's word, then checked again once the file changes", async () => {
  await withStore(async (dir) => {
    const data = random(CHUNK_SIZE * 4);
    let store = new CacheStore(dir);
    const info = put(store, "a", "/f", data);
    for (const i of [0, 1, 3]) {
      store.writeChunk(info.hash, i, data.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE));
    }
    store.close();
    const path = `${dir}/blobs/${info.hash.slice(0, 2)}/${info.hash}`;
    const poke = async (at: number, byte: number) => {
      const f = await Deno.open(path, { write: true });
      await f.seek(at, Deno.SeekMode.Start);
      await f.write(new Uint8Array([byte]));
      f.close();
    };
    const range = (s: CacheStore, start: number, end: number) => {
      const into = new Uint8Array(end - start + 7);
      assert.equal(s.readRange(s.blob(info.hash)!, start, end, into), end - start);
      return into.subarray(0, end - start);
    };
    // Unstamped: a range across chunks 0 and 1 is checked; a damaged chunk 3 is caught.
    await poke(3 * CHUNK_SIZE + 5, data[3 * CHUNK_SIZE + 5] ^ 0xff);
    store = new CacheStore(dir, SETTLED);
    assert.deepEqual(range(store, 100, CHUNK_SIZE + 100), data.subarray(100, CHUNK_SIZE + 100));
    assert.throws(() => range(store, 3 * CHUNK_SIZE, 3 * CHUNK_SIZE + 10), CacheCorrupt);
    assert.deepEqual(store.blob(info.hash)!.present.missing(4), [2, 3]);
    // What it holds now (0 and 1) is checked: stamped at the session's end.
    store.stampChecked();
    assert.notEqual(store.blob(info.hash)!.checked, null);
    // A chunk that arrives afterwards (checked on its way in) leaves the stamp stale
    // for others; this process stamps the file anew at its next end.
    store.writeChunk(info.hash, 2, data.subarray(2 * CHUNK_SIZE, 3 * CHUNK_SIZE));
    store.stampChecked();
    assert.equal(store.blob(info.hash)!.checked, stampOf(path), "stamped again after its write");
    store.close();

    // Changed in a way its stamp cannot see (the stamp forged after a write): a new
    // process reads on the stamp's word, which shows it hashes nothing.
    await poke(10, data[10] ^ 0xff);
    const stampNow = () => stampOf(path);
    const db = openDatabase(`${dir}/index.sqlite`);
    db.prepare("update blobs set checked = ? where hash = ?").run(stampNow(), info.hash);
    db.close();
    store = new CacheStore(dir);
    assert.equal(range(store, 0, 3 * CHUNK_SIZE)[10], data[10] ^ 0xff, "trusted");
    store.close();

    // A write the stamp sees: checked again, caught, the chunk dropped.
    await writeSeen(path, 11, data[11]);
    store = new CacheStore(dir);
    assert.throws(() => range(store, 0, 20), CacheCorrupt);
    assert.deepEqual(store.blob(info.hash)!.present.missing(4), [0, 3]);
    assert.deepEqual(
      range(store, CHUNK_SIZE, 3 * CHUNK_SIZE),
      data.subarray(CHUNK_SIZE, 3 * CHUNK_SIZE),
    );
    store.close();
  });
});

Deno.test("store: two processes writing one blob at once lose no chunk; a killed writer leaves only sound chunks", async () => {
  await withStore(async (dir) => {
    const data = random(CHUNK_SIZE * 64 + 77);
    const dataPath = `${dir}/data`;
    await Deno.writeFile(dataPath, data);
    const store = new CacheStore(`${dir}/store`);
    const info = put(store, "a", "/big", data);
    store.close();
    const writer = (first: number, step: number) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--quiet",
          WRITER,
          `${dir}/store`,
          dataPath,
          info.hash,
          `${first}`,
          `${step}`,
        ],
        stdout: "piped",
        stderr: "inherit",
      });
    const [a, b] = await Promise.all([writer(0, 2).output(), writer(1, 2).output()]);
    assert.ok(a.success && b.success);
    let s = new CacheStore(`${dir}/store`);
    assert.deepEqual(s.blob(info.hash)!.present.missing(65), [], "every chunk's bit is set");
    s.close();

    // Again from empty, killing the writer part way.
    const fresh = `${dir}/store2`;
    s = new CacheStore(fresh);
    put(s, "a", "/big", data);
    s.close();
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", WRITER, fresh, dataPath, info.hash, "0", "1", "10"],
      stdout: "piped",
    }).spawn();
    // Killed part way: after its first chunk, well before its last (10 ms apart).
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    assert.match(new TextDecoder().decode(value), /started/);
    await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
    child.kill("SIGKILL");
    await child.status;
    reader.releaseLock();
    await child.stdout.cancel();
    s = new CacheStore(fresh);
    const blob = s.blob(info.hash)!;
    const kept = blob.present.count(65);
    assert.ok(kept >= 1 && kept < 65, `killed part way: ${kept} of 65 chunks kept`);
    for (let i = 0; i < 65; i++) {
      if (!blob.present.has(i)) continue;
      assert.deepEqual(
        s.readChunk(blob, i),
        data.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE),
        `chunk ${i}`,
      );
    }
    s.close();
  });
});

Deno.test("store: LRU eviction by count and by bytes drops blobs and their content ids", async () => {
  await withStore((dir) => {
    const store = new CacheStore(dir);
    const infos: ContentInfo[] = [];
    for (let i = 0; i < 4; i++) {
      const data = random(CHUNK_SIZE);
      const info = put(store, "a", `/f${i}`, data);
      store.writeChunk(info.hash, 0, data);
      infos.push(info);
    }
    // Oldest first: f0 used long ago, f3 just now.
    for (let i = 0; i < 4; i++) {
      store.db.prepare("update blobs set last_used = ? where hash = ?").run(
        1000 + i,
        infos[i].hash,
      );
    }
    assert.equal(store.evict({ maxEntries: 3, maxBytes: 1e12 }), 1);
    assert.equal(store.blob(infos[0].hash), null, "the least recently used went");
    assert.equal(held(store, "a").find((r) => r.path === "/f0")!.hash, null);
    assert.ok(store.blob(infos[3].hash));
    assert.equal(store.evict({ maxEntries: 100, maxBytes: 2 * CHUNK_SIZE }), 1);
    assert.equal(store.blob(infos[1].hash), null);
    assert.deepEqual(
      [...Deno.readDirSync(`${dir}/blobs/${infos[1].hash.slice(0, 2)}`)].filter((e) =>
        e.name === infos[1].hash
      ),
      [],
      "its file is gone",
    );
    assert.equal(store.stats().blobs, 2);
    store.close();
  });
});

Deno.test("store: a client's least recently used names beyond the bound go; other clients' stay", async () => {
  await withStore((dir) => {
    const store = new CacheStore(dir);
    for (const client of ["a", "b"]) {
      store.putMetas(client, [...Array(10)].map((_, i) => fileMeta(`/f${i}`, 1)));
    }
    // f0..f9 used in that order, long ago; f2 again just now.
    for (let i = 0; i < 10; i++) {
      store.db.prepare("update entries set last_used = ? where client = 'a' and path = ?").run(
        1000 + i,
        `/f${i}`,
      );
    }
    store.touch("a", ["/f2"], []);
    assert.equal(store.trimHeld("a", 10), 0, "within the bound");
    assert.equal(store.trimHeld("a", 4), 6);
    assert.deepEqual(
      held(store, "a").map((r) => r.path).sort(),
      ["/f2", "/f7", "/f8", "/f9"],
      "the most recently used",
    );
    assert.equal(held(store, "b").length, 10, "another client's are its own");
    store.close();
  });
});

Deno.test("store: an index of another schema version is made anew", async () => {
  await withStore((dir) => {
    const db = openDatabase(`${dir}/index.sqlite`);
    db.exec(
      "create table entries(client, path, meta); insert into entries values ('a', '/x', 'y');",
    );
    db.exec("pragma user_version = 1");
    db.close();
    const store = new CacheStore(dir);
    assert.deepEqual(held(store, "a"), []);
    put(store, "a", "/f", random(10));
    assert.equal(held(store, "a").length, 1);
    store.close();
  });
});

Deno.test("store: many metas at once (several batches), and content ids linked after their names", async () => {
  await withStore((dir) => {
    const store = new CacheStore(dir);
    // 150 names: three statements' worth, the last one short.
    const metas = Array.from({ length: 150 }, (_, i) => fileMeta(`/usr/f${i}`, i));
    const data = random(70_000);
    const heldAt = (path: string) => held(store, "a").find((r) => r.path === path);
    // A session stores a content id's blob at once and which path has it with the names,
    // later: linked before its name is there, a path gets none.
    const info = infoOf("/usr/f7", data, fingerprint(metas[7].attr));
    assert.deepEqual(store.putContents("a", [info], false), [null]);
    assert.ok(store.blob(info.hash), "the blob is there for its chunks");
    store.tx(() => {
      store.putMetas("a", metas);
      store.linkContents("a", [info]);
    });
    assert.equal(held(store, "a").length, 150);
    for (const m of metas) assert.deepEqual(decodeMeta(heldAt(m.path)!.meta), m, m.path);
    assert.equal(heldAt("/usr/f7")!.hash, info.hash);
    assert.equal(heldAt("/usr/f8")!.hash, null);
    // A fingerprint that is not the name's: not linked.
    store.linkContents("a", [{ ...info, path: "/usr/f9" }]);
    assert.equal(heldAt("/usr/f9")!.hash, null);
    store.close();
  });
});

Deno.test("store: the names each command used, per client; the least recently run beyond the bound go", async () => {
  await withStore((dir) => {
    const store = new CacheStore(dir);
    assert.equal(store.hotPaths("a", "/usr/bin/x"), null, "never run here");
    store.setHot("a", "/usr/bin/x", ["/usr", "/usr/lib/é n\nx"]);
    store.setHot("b", "/usr/bin/x", []);
    assert.deepEqual(store.hotPaths("a", "/usr/bin/x"), ["/usr", "/usr/lib/é n\nx"]);
    assert.deepEqual(store.hotPaths("b", "/usr/bin/x"), [], "run, and used nothing held");
    for (let i = 0; i < HOT_KEPT + 5; i++) store.setHot("a", `/bin/c${i}`, [`/c${i}`]);
    const kept = store.db.prepare("select count(*) as n from hot where client = 'a'").get() as {
      n: number;
    };
    assert.equal(kept.n, HOT_KEPT);
    assert.deepEqual(
      store.hotPaths("a", `/bin/c${HOT_KEPT + 4}`),
      [`/c${HOT_KEPT + 4}`],
      "the last",
    );
    assert.deepEqual(store.hotPaths("b", "/usr/bin/x"), [], "another client's stay");
    store.close();
  });
});
