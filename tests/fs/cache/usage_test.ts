/** The usage recorder: first uses only, in order; a mark splits what came after. */
import assert from "node:assert/strict";
import { UsageRecorder } from "../../../lib/fs/cache/usage.ts";

Deno.test("usage: each first use once, chunks sorted per path, whole files and listings apart", () => {
  const u = new UsageRecorder();
  u.meta("/usr/bin/x");
  u.meta("/usr/bin/x");
  u.chunks("/usr/lib/a", 3, 4);
  u.listing("/usr/lib");
  u.chunks("/usr/lib/a", 1, 3);
  u.whole("/usr/lib/b");
  u.whole("/usr/lib/b");
  u.listing("/usr/lib");
  assert.deepEqual(u.since(0), {
    metas: ["/usr/bin/x"],
    listed: ["/usr/lib"],
    chunks: { "/usr/lib/a": [1, 2, 3, 4] },
    whole: ["/usr/lib/b"],
  });
  assert.deepEqual([...u.metas], ["/usr/bin/x"]);
});

Deno.test("usage: since a mark, only what no use before it had", () => {
  const u = new UsageRecorder();
  u.meta("/a");
  u.chunks("/f", 0, 1);
  const mark = u.mark();
  u.meta("/a"); // used before the mark: not again
  u.meta("/b");
  u.chunks("/f", 1, 2); // 1 was used before the mark
  assert.deepEqual(u.since(mark), { metas: ["/b"], listed: [], chunks: { "/f": [2] }, whole: [] });
  assert.equal(u.since(u.mark()).metas.length, 0);
});
