/** Typed RPC: calls, handlers and events checked against a schema at compile time. */
import assert from "node:assert/strict";
import { RpcPeer, TypedPeer } from "../../lib/rpc/mod.ts";
import { pipePair } from "./pipe.ts";

type Calls = {
  "t.add": { args: { a: number; b: number }; result: number };
  "t.name": { args: { id: bigint }; result: string | null };
};
type Events = { "t.note": { text: string } };

Deno.test("typed rpc: what the schema says goes through as it is; the rest does not compile", async () => {
  const [a, b] = pipePair();
  const here = new TypedPeer<Calls, Events>(new RpcPeer(a, { program: "here" }));
  const there = new TypedPeer<Calls, Events>(new RpcPeer(b, { program: "there" }));
  const notes: string[] = [];
  there.handle("t.add", ({ a, b }) => a + b);
  there.handle("t.name", ({ id }) => Promise.resolve(id === 7n ? "seven" : null));
  there.onEvent("t.note", ({ text }) => void notes.push(text));
  assert.equal(await here.call("t.add", { a: 2, b: 3 }), 5);
  assert.equal(await here.call("t.name", { id: 7n }), "seven");
  assert.equal(await here.call("t.name", { id: 8n }), null);
  here.event("t.note", { text: "hi" });
  assert.equal(await here.call("t.add", { a: 0, b: 0 }), 0); // after the event, in order
  assert.deepEqual(notes, ["hi"]);
  if (notes.length < 0) {
    // Never run: what the type checker refuses (deno check fails if it accepts any).
    // @ts-expect-error an unknown method
    await here.call("t.sub", { a: 1, b: 2 });
    // @ts-expect-error a wrong argument
    await here.call("t.add", { a: "1", b: 2 });
    // @ts-expect-error a wrong result
    there.handle("t.add", () => "five");
    // @ts-expect-error a wrong payload
    here.event("t.note", { text: 1 });
  }
  here.peer.close();
  there.peer.close();
});
