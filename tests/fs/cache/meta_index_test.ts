/** The metadata index over a real store: held, pushed, read from the store as checked. */
import assert from "node:assert/strict";
import { MetaIndex } from "../../../lib/fs/cache/meta_index.ts";
import { type MetaRecord, packHeld } from "../../../lib/fs/cache/protocol.ts";
import { CacheStore } from "../../../lib/fs/cache/store.ts";
import { removeTree } from "../../remove_tree.ts";
import { attr } from "./fixtures.ts";

async function withStore(body: (store: CacheStore) => void | Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "outrun-meta-index-" });
  const store = new CacheStore(dir);
  try {
    await body(store);
  } finally {
    store.close();
    await removeTree(dir);
  }
}

const dir = (path: string, children: string[]): MetaRecord => ({
  path,
  attr: attr(0, 0o40755),
  children,
});
const file = (path: string, size: number): MetaRecord => ({ path, attr: attr(size) });

Deno.test("meta index: held metas decode on first use; a pushed one wins; forget drops both", async () => {
  await withStore((store) => {
    store.putMetas("c", [dir("/usr", ["a"]), file("/usr/a", 10)]);
    const index = new MetaIndex(store, "c");
    assert.equal(index.known("/usr/a"), undefined, "not held here, the store not checked");
    for (const row of store.heldMetas("c")) index.hold(row);
    assert.ok(index.has("/usr/a"));
    assert.equal(index.known("/usr/a")?.attr?.size, 10n);
    index.put(file("/usr/a", 20));
    for (const row of store.heldMetas("c")) index.hold(row); // an older one: not taken
    assert.equal(index.known("/usr/a")?.attr?.size, 20n);
    assert.deepEqual([...index.children(index.known("/usr")!)!], ["a"]);
    index.forget(["/usr/a"]);
    assert.equal(index.has("/usr/a"), false);
  });
});

Deno.test("meta index: once checked, the store answers for what is as checked, not for what changed since", async () => {
  await withStore((store) => {
    store.putMetas("c", [file("/usr/x", 1), file("/usr/y", 2), file("/usr/z", 3)]);
    const index = new MetaIndex(store, "c");
    index.setChecked({ gen: store.heldGen("c"), held: packHeld(store.heldState("c")) });
    assert.equal(index.known("/usr/x")?.attr?.size, 1n, "the store unchanged: read from it");
    // Another session changes y and adds w after the check.
    store.putMetas("c", [file("/usr/y", 22), file("/usr/w", 4)]);
    index.loadStored(["/usr/y", "/usr/z", "/usr/w"]);
    assert.equal(index.known("/usr/z")?.attr?.size, 3n, "as checked");
    assert.equal(index.known("/usr/y"), undefined, "changed since the check");
    assert.equal(index.known("/usr/w"), undefined, "added since the check");
  });
});
