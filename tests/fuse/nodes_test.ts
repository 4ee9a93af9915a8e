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
    // Parents: the root and every node the kernel holds that still has a path.
    const dirs = [t.root, ...[...kernelRefs.keys()].map((id) => t.get(id)!)]
      .filter((n) => t.path(n) !== null);
    const parent = dirs[rand(dirs.length)];
    const name = names[rand(names.length)];
    switch (rand(4)) {
      case 0: {
        const n = t.lookup(parent, name);
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
      case 3:
        t.rename(parent, name, dirs[rand(dirs.length)], names[rand(names.length)]);
        break;
    }
    // Every node the kernel still references is in the table with the same count.
    for (const [id, refs] of kernelRefs) assert.equal(t.get(id)?.lookups, refs, `node ${id}`);
    // Every attached node's path resolves back to it through the children maps.
    for (const id of kernelRefs.keys()) {
      const n = t.get(id)!;
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
