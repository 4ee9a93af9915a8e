/** --stats: calls nobody waited on are shown apart, not counted as round trips. */
import assert from "node:assert/strict";
import { formatStats, roundTrips } from "../../lib/session/stats.ts";

Deno.test("stats: reads ahead and writes behind are not round trips", () => {
  const calls = { "fs.lookup": 3, "fs.read": 2, "fs.readAhead": 40, "fs.writeBehind": 300 };
  assert.equal(roundTrips(calls), 5);
  const text = formatStats({
    local: { connect: 300 },
    remote: { calls, validateMs: 1, mountMs: 1, runMs: 1 } as never,
    rpc: { bytesIn: 1, bytesOut: 2, framesIn: 1, framesOut: 1 },
    push: null,
  });
  assert.match(text, /round trips \(blocking calls from the remote\): 5\n/);
  assert.match(text, /not waited on: 300 fs.writeBehind, 40 fs.readAhead/);
  assert.doesNotMatch(text, /^ {4}fs\.readAhead/m);
});
