/** The kernel's nodes for cached paths: lookup counts, detached paths, renames. */
import assert from "node:assert/strict";
import { CACHE_BASE, CachedNodes } from "../../../lib/fs/cache/nodes.ts";
import type { FuseError } from "../../../lib/fuse/mod.ts";

Deno.test("cached nodes: one per path, counted lookups, gone at the last forget, ids never reused", () => {
  const t = new CachedNodes();
  const a = t.enter("/usr/a");
  assert.ok(a.id >= CACHE_BASE);
  assert.equal(t.enter("/usr/a"), a);
  assert.equal(a.nlookup, 2);
  assert.equal(t.forget(a.id, 1), null, "one lookup left");
  assert.equal(t.forget(a.id, 1), a, "the last");
  assert.equal(t.idOf("/usr/a"), undefined);
  assert.throws(() => t.node(a.id), (e: FuseError) => e.errno === 116); // ESTALE
  const again = t.enter("/usr/a");
  assert.ok(again.id > a.id, "a new id");
});

Deno.test("cached nodes: a detached path gets a new node; the old one lives until forgotten", () => {
  const t = new CachedNodes();
  const old = t.enter("/usr/f");
  t.detach("/usr/f");
  const fresh = t.enter("/usr/f");
  assert.notEqual(fresh.id, old.id);
  assert.equal(t.node(old.id).path, "/usr/f");
  assert.equal(t.forget(old.id, 1), old);
  assert.equal(t.idOf("/usr/f"), fresh.id, "forgetting the old leaves the new");
});

Deno.test("cached nodes: a rename moves the tree under it; the file it replaced keeps no path", () => {
  const t = new CachedNodes();
  const dir = t.enter("/opt/d");
  const inner = t.enter("/opt/d/x");
  const target = t.enter("/opt/e");
  t.move("/opt/d", "/opt/e", false);
  assert.deepEqual([dir.path, inner.path, target.path], ["/opt/e", "/opt/e/x", ""]);
  assert.equal(t.idOf("/opt/e"), dir.id);
  assert.equal(t.idOf("/opt/d"), undefined);
  // Exchanged: each takes the other's path.
  const p = t.enter("/opt/p");
  const q = t.enter("/opt/q");
  t.move("/opt/p", "/opt/q", true);
  assert.deepEqual([p.path, q.path], ["/opt/q", "/opt/p"]);
  assert.deepEqual([t.idOf("/opt/p"), t.idOf("/opt/q")], [q.id, p.id]);
});
