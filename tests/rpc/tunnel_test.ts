/** Tunnels: byte streams inside one RPC connection, both ways, ended either way. */
import assert from "node:assert/strict";
import { RpcPeer, type Transport, Tunnels } from "../../lib/rpc/mod.ts";
import { pipePair } from "./pipe.ts";

async function readAll(r: ReadableStream<Uint8Array>): Promise<string> {
  return await new Response(r).text();
}

Deno.test("tunnel: many tunnels at once carry their own bytes both ways, in order", async () => {
  const [x, y] = pipePair();
  const local = new RpcPeer(x, { program: "local" });
  const remote = new RpcPeer(y, { program: "remote" });
  // The remote side echoes each tunnel back, upper-cased, with its own prefix.
  new Tunnels(remote, (t) => {
    (async () => {
      const w = t.writable.getWriter();
      await w.write(new TextEncoder().encode("hello:"));
      for await (const chunk of t.readable) {
        await w.write(new TextEncoder().encode(new TextDecoder().decode(chunk).toUpperCase()));
      }
      await w.close();
    })();
  });
  const tunnels = new Tunnels(local);
  const results = await Promise.all(
    Array.from({ length: 5 }, async (_, i) => {
      const t = tunnels.open();
      const w = t.writable.getWriter();
      for (let j = 0; j < 20; j++) await w.write(new TextEncoder().encode(`t${i}.${j} `));
      await w.close();
      return await readAll(t.readable);
    }),
  );
  results.forEach((text, i) => {
    const want = Array.from({ length: 20 }, (_, j) => `T${i}.${j} `).join("");
    assert.equal(text, `hello:${want}`);
  });
  assert.equal(tunnels.size, 0, "every tunnel ended");
  await local.close();
  await remote.close();
});

Deno.test("tunnel: an RPC connection inside a tunnel; the outer one's end ends it", async () => {
  const [x, y] = pipePair();
  const local = new RpcPeer(x, { program: "local" });
  const remote = new RpcPeer(y, { program: "remote" });
  new Tunnels(remote, (t) => {
    const inner = new RpcPeer(t, { program: "inner-remote" });
    inner.handle("add", (args) => (args as number[]).reduce((a, b) => a + b, 0));
  });
  const t = new Tunnels(local).open();
  const inner = new RpcPeer(t, { program: "inner-local" });
  assert.equal(await inner.call("add", [1, 2, 3]), 6);
  assert.equal((await inner.remoteHello).program, "inner-remote");
  await remote.close();
  // The outer connection is gone: the inner one fails instead of hanging.
  await assert.rejects(inner.call("add", [1]));
  await inner.closed;
  await local.close();
});

Deno.test("tunnel: only one side opens", () => {
  const [x] = pipePair();
  const peer = new RpcPeer(x, { program: "p" });
  assert.throws(() => new Tunnels(peer, () => {}).open(), /the other opens/);
  peer.close();
});

Deno.test("tunnel: a tunnel written first before an older one still gets all its bytes", async () => {
  const [x, y] = pipePair();
  const local = new RpcPeer(x, { program: "local" });
  const remote = new RpcPeer(y, { program: "remote" });
  const got: Promise<string>[] = [];
  new Tunnels(remote, (t) => got.push(readAll(t.readable)));
  const tunnels = new Tunnels(local);
  const older = tunnels.open();
  const newer = tunnels.open();
  const say = async (t: Transport, text: string) => {
    const w = t.writable.getWriter();
    await w.write(new TextEncoder().encode(text));
    await w.close();
  };
  await say(newer, "newer");
  await say(older, "older");
  assert.deepEqual(await Promise.all(got), ["older", "newer"]);
  await local.close();
  await remote.close();
});
