/** The remote's copies of local metadata, as pure logic: names, attributes, small files. */
import assert from "node:assert/strict";
import { KeptAttrs } from "../../lib/fs/kept_attrs.ts";
import { KeptFiles } from "../../lib/fs/kept_files.ts";
import { KnownNames } from "../../lib/fs/known_names.ts";
import { ZERO_ATTR } from "../../lib/fuse/mod.ts";

const attr = (size: number, mtimeSec = 1n) => ({ ...ZERO_ATTR, size: BigInt(size), mtimeSec });

Deno.test("known names: absent only in a watched directory, known absent or not listed", () => {
  const n = new KnownNames();
  n.named(5, "gone", 0);
  assert.equal(n.absent(5, "gone"), null, "not watched: ask");
  n.watched(5, 60);
  assert.equal(n.absent(5, "gone"), 60);
  assert.equal(n.absent(5, "other"), null, "not known: ask");
  assert.equal(n.absentAsked(5), false);
  assert.equal(n.absentAsked(5), true, "the second asked: list it");
  n.listed(5, ["a.c", "b.c"], false);
  assert.equal(n.absentAsked(5), false, "listed once");
  assert.equal(n.absent(5, "a.c.gch"), 60);
  assert.equal(n.absent(5, "a.c"), null);
  n.unnamed(5, "new.h"); // told changed: may be there now
  assert.equal(n.absent(5, "new.h"), null);
  n.named(5, "made.o", 9); // made through the mount
  assert.equal(n.absent(5, "made.o"), null);
  assert.equal(n.nodeOf(5, "made.o"), 9);
  n.forget(9);
  assert.equal(n.nodeOf(5, "made.o"), undefined);
  n.forget(5);
  assert.equal(n.absent(5, "a.c.gch"), null, "a forgotten directory: ask");
});

Deno.test("known names: a listing taken while the directory changed is not used", () => {
  const n = new KnownNames();
  n.watched(5, 60);
  n.absentAsked(5);
  assert.equal(n.absentAsked(5), true);
  n.listed(5, ["a"], true);
  assert.equal(n.absent(5, "b"), null);
  n.absentAsked(5);
  assert.equal(n.absentAsked(5), true, "asked again at the next two");
  n.listed(5, null, false); // too many names
  assert.equal(n.absent(5, "b"), null);
});

Deno.test("known names: at the most kept, all go (a name not known drops all attributes)", () => {
  const n = new KnownNames(3);
  for (const name of ["a", "b", "c"]) n.named(1, name, 10);
  n.named(1, "a", 11); // known: replaced, nothing dropped
  assert.equal(n.nodeOf(1, "b"), 10);
  n.named(1, "d", 12);
  assert.equal(n.nodeOf(1, "b"), undefined);
  assert.equal(n.nodeOf(1, "d"), 12);
});

Deno.test("kept attributes: an answer is kept unless its own node changed while it was asked", () => {
  const a = new KeptAttrs();
  const gen = a.gen;
  a.changed(7); // another node
  a.keep(3, attr(1), 60, gen);
  assert.equal(a.get(3)?.attr.size, 1n);
  const gen2 = a.gen;
  a.changed(3);
  a.keep(3, attr(2), 60, gen2);
  assert.equal(a.get(3), undefined, "its own node changed meanwhile");
  const gen3 = a.gen;
  a.changed(); // everything
  a.keep(4, attr(1), 60, gen3);
  assert.equal(a.get(4), undefined);
  a.keep(4, attr(1), 0, a.gen);
  assert.equal(a.get(4), undefined, "told for no time");
});

Deno.test("kept files: kept while the attributes say the same size and mtime; the oldest go first", () => {
  const k = new KeptFiles(10);
  const data = new Uint8Array(4);
  k.keep(1, data, attr(4));
  assert.equal(k.get(1, attr(4)), data);
  assert.equal(k.get(1, undefined), null, "attributes not kept: dropped");
  k.keep(1, data, attr(4));
  assert.equal(k.get(1, attr(4, 2n)), null, "another mtime");
  k.keep(1, data, attr(5));
  assert.equal(k.bytes, 0, "not all of the file");
  k.keep(1, data, attr(4));
  k.keep(2, data, attr(4));
  k.keep(3, data, attr(4));
  assert.equal(k.bytes, 8);
  assert.equal(k.get(1, attr(4)), null, "the oldest went");
  assert.equal(k.get(3, attr(4)), data);
});
