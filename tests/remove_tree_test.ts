/**
 * The test helper that removes test directories must never delete through a live
 * mount (needs root: a real FUSE mirror).
 */
import assert from "node:assert/strict";
import { fuseMounted, startServer, waitFor } from "./fs/loopback_helper.ts";
import { mountsUnder, removeTree } from "./remove_tree.ts";

Deno.test("removeTree: a live read-write mirror inside the tree is detached, what it shows survives", async () => {
  const precious = await Deno.makeTempDir({ prefix: "outrun-precious-" });
  const base = await Deno.makeTempDir({ prefix: "outrun-rmtree-" });
  await Deno.writeTextFile(`${precious}/keep`, "still here\n");
  await Deno.mkdir(`${precious}/dir`);
  await Deno.writeTextFile(`${precious}/dir/keep2`, "me too\n");
  await Deno.mkdir(`${base}/mnt`);
  const server = startServer(precious, `${base}/mnt`);
  try {
    await waitFor("the mount", () => fuseMounted(`${base}/mnt`));
    assert.equal(await Deno.readTextFile(`${base}/mnt/keep`), "still here\n");
    await removeTree(base); // the server is still serving
    await assert.rejects(Deno.stat(base), Deno.errors.NotFound);
    assert.equal(await Deno.readTextFile(`${precious}/keep`), "still here\n");
    assert.equal(await Deno.readTextFile(`${precious}/dir/keep2`), "me too\n");
    assert.deepEqual(mountsUnder(base), []);
  } finally {
    try {
      server.kill("SIGTERM");
    } catch { /* it ended with its mount */ }
    await server.status;
    await Deno.remove(precious, { recursive: true });
  }
});

Deno.test("removeTree: refuses / and top-level directories; a missing tree is fine", async () => {
  await assert.rejects(removeTree("/"), /refusing/);
  await assert.rejects(removeTree("/tmp"), /refusing/);
  await removeTree("/tmp/outrun-no-such-dir-here");
});
