import assert from "node:assert/strict";
import { NodeTable } from "../../lib/fuse/nodes.ts";

Deno.test("nodes: lookup, path, forget", () => {
  const t = new NodeTable();
  const a = t.lookup(t.root, "a");
  const b = t.lookup(a, "b");
  assert.equal(t.path(b), "a/b");
  assert.equal(t.lookup(t.root, "a"), a, "same name, same node");
  assert.equal(a.lookups, 2);
  t.forget(b.id, 1);
  assert.equal(t.get(b.id), undefined);
  t.forget(a.id, 2);
  assert.equal(t.get(a.id), undefined);
  assert.equal(t.size, 1);
});

Deno.test("nodes: a parent outlives its forgotten lookups while a child is known", () => {
  const t = new NodeTable();
  const a = t.lookup(t.root, "a");
  const b = t.lookup(a, "b");
  t.forget(a.id, 1);
  assert.equal(t.get(a.id), a);
  assert.equal(t.path(b), "a/b");
  t.forget(b.id, 1);
  assert.equal(t.size, 1);
});

Deno.test("nodes: rename moves, replaces and keeps ids", () => {
  const t = new NodeTable();
  const d = t.lookup(t.root, "d");
  const x = t.lookup(d, "x");
  const y = t.lookup(t.root, "y");
  t.rename(d, "x", t.root, "y");
  assert.equal(t.path(x), "y");
  assert.equal(t.path(y), null, "the replaced node has no path");
  assert.equal(t.child(t.root, "y"), x);
  t.rename(t.root, "d", t.root, "e");
  assert.equal(t.path(d), "e");
});

Deno.test("nodes: exchange swaps", () => {
  const t = new NodeTable();
  const a = t.lookup(t.root, "a");
  const b = t.lookup(t.root, "b");
  t.exchange(t.root, "a", t.root, "b");
  assert.equal(t.path(a), "b");
  assert.equal(t.path(b), "a");
});

Deno.test("nodes: a hard link is the same node with two names", () => {
  const t = new NodeTable();
  const d = t.lookup(t.root, "d", "1:10", true);
  const a = t.lookup(t.root, "a", "1:20");
  const h = t.lookup(d, "h", "1:20");
  assert.equal(h, a);
  assert.equal(a.lookups, 2);
  assert.equal(t.path(a), "a");
  t.remove(t.root, "a");
  assert.equal(t.path(a), "d/h", "still reachable by its other name");
  t.remove(d, "h");
  assert.equal(t.path(a), null);
  // A new file that reuses the inode number is a new node, not the unlinked one.
  const b = t.lookup(t.root, "b", "1:20");
  assert.notEqual(b.id, a.id);
});

Deno.test("nodes: a name whose file was replaced underneath gets a new node", () => {
  const t = new NodeTable();
  const a = t.lookup(t.root, "a", "1:20");
  const again = t.lookup(t.root, "a", "1:21");
  assert.notEqual(again.id, a.id);
  assert.equal(t.path(a), null);
  assert.equal(t.path(again), "a");
});

Deno.test("nodes: a directory seen under a new name is moved, not aliased", () => {
  const t = new NodeTable();
  const d = t.lookup(t.root, "d", "1:5", true);
  const moved = t.lookup(t.root, "e", "1:5", true);
  assert.equal(moved, d);
  assert.equal(t.path(d), "e");
  assert.equal(t.child(t.root, "d"), undefined);
});

Deno.test("nodes: unlinked node keeps its id until forgotten", () => {
  const t = new NodeTable();
  const a = t.lookup(t.root, "a");
  t.remove(t.root, "a");
  assert.equal(t.get(a.id), a);
  assert.equal(t.path(a), null);
  const again = t.lookup(t.root, "a");
  assert.notEqual(again.id, a.id);
  t.forget(a.id, 1);
  assert.equal(t.get(a.id), undefined);
  assert.equal(t.child(t.root, "a"), again);
});

Deno.test("nodes property: random operations keep the table consistent", () => {
  let s = 99;
  const rand = (n: number) => {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    return s % n;
  };
  const t = new NodeTable();
  const names = ["a", "b", "c"];
  const kernelRefs = new Map<number, number>(); // what the kernel would still hold
  for (let i = 0; i < 5000; i++) {
    // As on a real filesystem: only directories are parents, and only files (a small
    // key pool, so hard links happen) have several names.
    const dirs = [t.root, ...[...kernelRefs.keys()].map((id) => t.get(id)!)]
      .filter((n) => n.isDir && t.path(n) !== null);
    const parent = dirs[rand(dirs.length)];
    const name = names[rand(names.length)];
    switch (rand(4)) {
      case 0: {
        // Files share a small key space, so hard links (same key, two names) happen.
        const existing = t.child(parent, name);
        const isDir = existing ? existing.isDir : rand(2) === 0;
        const key = existing?.key ?? (isDir ? `d:${i}` : `f:${rand(6)}`);
        const n = t.lookup(parent, name, key, isDir);
        kernelRefs.set(n.id, (kernelRefs.get(n.id) ?? 0) + 1);
        break;
      }
      case 1: {
        const ids = [...kernelRefs.keys()];
        if (!ids.length) break;
        const id = ids[rand(ids.length)];
        const k = 1 + rand(kernelRefs.get(id)!);
        t.forget(id, k);
        const left = kernelRefs.get(id)! - k;
        if (left) kernelRefs.set(id, left);
        else kernelRefs.delete(id);
        break;
      }
      case 2:
        t.remove(parent, name);
        break;
      case 3: {
        // rename(2) refuses to move a directory into itself (EINVAL): so do we.
        const to = dirs[rand(dirs.length)];
        const moving = t.child(parent, name);
        const into = moving?.isDir && (t.path(to) + "/").startsWith(t.path(moving) + "/");
        if (!into) t.rename(parent, name, to, names[rand(names.length)]);
        break;
      }
    }
    // Every node the kernel still references is in the table with the same count.
    for (const [id, refs] of kernelRefs) assert.equal(t.get(id)?.lookups, refs, `node ${id}`);
    // Every name of every node resolves back to it through the children maps.
    for (const id of kernelRefs.keys()) {
      const n = t.get(id)!;
      for (const link of n.links) assert.equal(t.child(link.parent, link.name), n);
      const p = t.path(n);
      if (p === null) continue;
      let cur = t.root;
      for (const part of p.split("/")) cur = t.child(cur, part)!;
      assert.equal(cur, n);
    }
  }
  for (const [id, refs] of kernelRefs) t.forget(id, refs);
  assert.equal(t.size, 1, "everything reaped once the kernel forgot all");
});
