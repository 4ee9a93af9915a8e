import assert from "node:assert/strict";
import { chunkHashesOf, contentHash } from "../../../lib/fs/cache/chunks.ts";
import { ContentIndex } from "../../../lib/fs/cache/content_index.ts";
import { removeTree } from "../../remove_tree.ts";

Deno.test("content index: content ids by path and fingerprint, across reopening", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outrun-content-index-" });
  try {
    const data = new TextEncoder().encode("some library\n".repeat(50_000));
    const chunkHashes = chunkHashesOf(data);
    const info = {
      path: "/usr/lib/x.so",
      fp: "100644:1:2.3:4.5:6",
      hash: contentHash(chunkHashes),
      size: data.length,
      chunkHashes,
    };
    let index = new ContentIndex(`${dir}/sub/content.sqlite`);
    assert.equal(index.get(info.path, info.fp), null);
    index.put(info);
    index.close();
    index = new ContentIndex(`${dir}/sub/content.sqlite`);
    assert.deepEqual(index.get(info.path, info.fp), info);
    assert.equal(
      index.get(info.path, "100644:1:2.3:4.5:7"),
      null,
      "another fingerprint: not this entry",
    );
    assert.equal(index.get("/usr/lib/y.so", info.fp), null);
    index.put({ ...info, fp: "new" });
    assert.equal(index.get(info.path, info.fp), null, "one entry per path: the newest");
    index.close();
  } finally {
    await removeTree(dir);
  }
});
