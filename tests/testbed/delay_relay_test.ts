/** The delay relay on loopback: order kept, many connections, delay in both directions. */
import assert from "node:assert/strict";
import { parseRoute, startRelay } from "./delay_relay.ts";

function echoServer(): Deno.TcpListener {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    try {
      for await (const conn of listener) {
        (async () => {
          try {
            await conn.readable.pipeTo(conn.writable);
          } catch { /* peer gone */ }
        })();
      }
    } catch { /* closed */ }
  })();
  return listener;
}

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(out.subarray(got));
    if (r === null) throw new Error(`EOF after ${got} of ${n} bytes`);
    got += r;
  }
  return out;
}

Deno.test("delay relay: parses routes", () => {
  assert.deepEqual(parseRoute("127.0.0.1:42201=10.214.1.2:22"), {
    listenHost: "127.0.0.1",
    listenPort: 42201,
    targetHost: "10.214.1.2",
    targetPort: 22,
  });
  assert.throws(() => parseRoute("127.0.0.1=10.0.0.1:22"), /bad route/);
});

Deno.test("delay relay: adds the delay each way and keeps every stream intact", async () => {
  const echo = echoServer();
  const targetPort = (echo.addr as Deno.NetAddr).port;
  const delayMs = 15;
  const [relay] = startRelay(
    [{ listenHost: "127.0.0.1", listenPort: 0, targetHost: "127.0.0.1", targetPort }],
    { delayMs, maxQueuedBytes: 256 * 1024 },
  );
  const port = (relay.addr as Deno.NetAddr).port;
  try {
    // Round trips of one small message: two one-way delays each. Never less (the
    // relay's promise); the least of several is what it adds, whatever else the
    // machine is doing at the time.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(new Uint8Array([1]));
    await readExactly(conn, 1); // first byte also pays the upstream connect
    const rtts: number[] = [];
    for (let i = 0; i < 8; i++) {
      const t0 = performance.now();
      await conn.write(new Uint8Array([2]));
      await readExactly(conn, 1);
      rtts.push(performance.now() - t0);
    }
    const least = Math.min(...rtts);
    assert.ok(least >= 2 * delayMs - 1 && least < 2 * delayMs + 25, `rtts ${rtts} ms`);
    conn.close();

    // 16 connections at once, 2 MiB each of a per-connection pattern: nothing reordered.
    await Promise.all(Array.from({ length: 16 }, async (_, id) => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      const data = new Uint8Array(2 * 1024 * 1024);
      for (let i = 0; i < data.length; i++) data[i] = (i * 31 + id * 7 + (i >> 10)) & 0xff;
      const [, back] = await Promise.all([
        (async () => {
          for (let off = 0; off < data.length; off += 100_000) {
            await c.write(data.subarray(off, Math.min(off + 100_000, data.length)));
          }
        })(),
        readExactly(c, data.length),
      ]);
      assert.deepEqual(back, data, `connection ${id}`);
      c.close();
    }));
  } finally {
    relay.close();
    echo.close();
  }
});
