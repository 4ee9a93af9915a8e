/** The heartbeat over two RPC peers back to back (no SSH: its logic alone). */
import assert from "node:assert/strict";
import { RpcPeer, type Value } from "../../lib/rpc/mod.ts";
import { PING, startHeartbeat } from "../../lib/session/heartbeat.ts";
import { pipePair } from "../rpc/pipe.ts";

function peers(): [RpcPeer, RpcPeer] {
  const [a, b] = pipePair();
  const quiet = () => {};
  return [
    new RpcPeer(a, { program: "here", log: quiet }),
    new RpcPeer(b, { program: "there", log: quiet }),
  ];
}

/** Pings every 20 ms until `there` has had `pings` of them, or `late` is called. */
async function beat(there: () => Value, pings: number): Promise<string> {
  const [here, other] = peers();
  let count = 0;
  let reached = () => {};
  other.handle(PING, () => {
    if (++count >= pings) reached();
    return there();
  });
  try {
    return await new Promise<string>((resolve) => {
      reached = () => resolve("");
      // A limit far above what an answer takes even on a loaded machine.
      startHeartbeat(here, "the other side", resolve, 5, 0.02);
    });
  } finally {
    here.close();
    other.close();
  }
}

Deno.test("heartbeat: an answering side is never late", async () => {
  assert.equal(await beat(() => null, 10), "");
});

Deno.test("heartbeat: a silent side is late once, with the limit named", async () => {
  const [here, there] = peers();
  there.handle(PING, () => new Promise(() => {})); // an answer that never comes
  let calls = 0;
  const why = await new Promise<string>((resolve) => {
    startHeartbeat(here, "the other side", (w) => (calls++, resolve(w)), 0.2, 0.02);
  });
  assert.equal(why, "no answer from the other side for 0.2 s");
  await new Promise((r) => setTimeout(r, 300)); // (to see that no second call comes)
  assert.equal(calls, 1);
  here.close();
  there.close();
});

Deno.test("heartbeat: an error for an answer keeps the pings going", async () => {
  // Before, a rejected ping left the heartbeat waiting for ever: one ping, then none.
  assert.equal(
    await beat(() => {
      throw new Error("not a ping this side knows");
    }, 10),
    "",
  );
});
