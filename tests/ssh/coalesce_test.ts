/** coalesceWrites: what ssh2 writes in one turn reaches the socket as one write, in order. */
import assert from "node:assert/strict";
import { coalesceWrites } from "../../lib/ssh/connect.ts";

/** A stand-in for the socket: it records each write it is given. */
function recorder() {
  const writes: { bytes: number[]; rest: unknown[] }[] = [];
  let ended: unknown[] | null = null;
  const sock = {
    write(chunk: unknown, ...rest: unknown[]): boolean {
      writes.push({ bytes: [...(chunk as Uint8Array)], rest });
      return true;
    },
    end(...args: unknown[]) {
      ended = args;
    },
  };
  return { sock, writes, ended: () => ended };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

Deno.test("coalesceWrites: one turn's writes go as one, in order; the next turn's apart", async () => {
  const { sock, writes } = recorder();
  coalesceWrites(sock);
  assert.equal(sock.write(new Uint8Array([1, 2])), true);
  sock.write(new Uint8Array([3]));
  sock.write(new Uint8Array([4, 5, 6]));
  assert.equal(writes.length, 0, "nothing before the turn ends");
  await tick();
  sock.write(new Uint8Array([7]));
  await tick();
  assert.deepEqual(writes.map((w) => w.bytes), [[1, 2, 3, 4, 5, 6], [7]]);
});

Deno.test("coalesceWrites: a write past the cap, a callback, a string or end() sends what waits", async () => {
  const { sock, writes, ended } = recorder();
  coalesceWrites(sock, 4);
  sock.write(new Uint8Array([1, 2]));
  sock.write(new Uint8Array([3, 4, 5])); // 5 bytes >= 4: out at once
  assert.deepEqual(writes.map((w) => w.bytes), [[1, 2, 3, 4, 5]]);
  sock.write(new Uint8Array([6]));
  const cb = () => {};
  sock.write(new Uint8Array([7]), cb);
  assert.deepEqual(writes.slice(1).map((w) => w.bytes), [[6], [7]]);
  assert.deepEqual(writes[2].rest, [cb], "the callback goes with its own write");
  sock.write(new Uint8Array([8]));
  sock.write("x" as unknown as Uint8Array);
  assert.deepEqual(writes[3].bytes, [8], "waiting bytes before a string");
  sock.write(new Uint8Array([9]));
  sock.end();
  assert.deepEqual(writes.at(-1)!.bytes, [9]);
  assert.deepEqual(ended(), []);
  await tick();
  assert.equal(writes.length, 6, "nothing written twice");
});

Deno.test("coalesceWrites: a joined buffer is used again only once the socket wrote it", async () => {
  const given: { chunk: Uint8Array; done?: () => void }[] = [];
  const sock = {
    write(chunk: unknown, ...rest: unknown[]): boolean {
      given.push({ chunk: chunk as Uint8Array, done: rest[0] as (() => void) | undefined });
      return true;
    },
    end() {},
  };
  coalesceWrites(sock);
  const joined = async (a: number, b: number) => {
    sock.write(new Uint8Array([a]));
    sock.write(new Uint8Array([b]));
    await tick();
    return given.at(-1)!;
  };
  const first = await joined(1, 2);
  const second = await joined(3, 4);
  assert.notEqual(second.chunk.buffer, first.chunk.buffer, "the first is still being written");
  assert.deepEqual([...first.chunk], [1, 2], "and is left alone");
  first.done!();
  const third = await joined(5, 6);
  assert.equal(third.chunk.buffer, first.chunk.buffer, "written: used again");
  assert.deepEqual([...third.chunk], [5, 6]);
});
