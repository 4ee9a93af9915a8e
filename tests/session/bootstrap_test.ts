/** The probe's answer and the agent's first bytes, however the channel cuts them; the payload. */
import assert from "node:assert/strict";
import { localPayload, readProbe } from "../../lib/session/bootstrap.ts";

function streamOf(pieces: Uint8Array[]): ReadableStreamDefaultReader<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(c) {
      for (const p of pieces) c.enqueue(p);
      c.close();
    },
  }).getReader();
}

Deno.test("bootstrap: the probe's lines end at the mark; what follows is the agent's, cut anywhere", async () => {
  const text = new TextEncoder().encode(
    "x86_64\ngzip=yes\nhave=deno\nstore=yes\noutrun-agent=ready\n",
  );
  const agent = new Uint8Array([0, 1, 10, 255, 10, 7]); // binary, newlines included
  const all = new Uint8Array([...text, ...agent]);
  for (let cut = 1; cut < all.length; cut++) {
    for (const size of [1, 3, cut]) {
      const pieces: Uint8Array[] = [];
      for (let at = 0; at < all.length; at += size) pieces.push(all.slice(at, at + size));
      const reader = streamOf(pieces);
      const { lines, rest } = await readProbe(reader);
      assert.deepEqual(lines, [
        "x86_64",
        "gzip=yes",
        "have=deno",
        "store=yes",
        "outrun-agent=ready",
      ]);
      const after = [...rest];
      for (let r = await reader.read(); !r.done; r = await reader.read()) after.push(...r.value);
      assert.deepEqual(after, [...agent]);
    }
  }
});

Deno.test("bootstrap: a probe that ends without its mark, or never ends a line, fails", async () => {
  await assert.rejects(
    readProbe(streamOf([new TextEncoder().encode("x86_64\nhave=deno\n")])),
    /ended before its last line/,
  );
  await assert.rejects(readProbe(streamOf([new Uint8Array(70_000).fill(65)])), /no end/);
});

Deno.test("bootstrap: the payload is the runtime, its loader and libraries, the agent and libzstd", async () => {
  const payload = await localPayload();
  const names = payload.files.map((f) => f.name);
  assert.deepEqual(names.slice(0, 2), ["deno", "agent.js"]);
  assert.equal(payload.loader, names[2]);
  assert.ok(names.includes("libc.so.6"));
  // This machine has libzstd (ffmpeg needs it): shipped under its soname, which is what
  // the agent opens (lib/sys/zstd.ts).
  const zstd = payload.files.find((f) => f.name === "libzstd.so.1");
  assert.ok(zstd, names.join(" "));
  assert.equal(await Deno.realPath(zstd.path), zstd.path);
  assert.match(payload.dirName, /^\d+\.\d+\.\d+-[0-9a-f]{16}$/);
});
