/**
 * A TCP relay that adds a fixed one-way delay in each direction, standing in for
 * netem (absent from this kernel) on the test bed's `-wan` paths.
 *
 * Each chunk read from one side is written to the other side no earlier than
 * `delayMs` after it was read. Chunks of one direction are written in the order
 * they were read, so the byte stream is unchanged; only its timing is. Each
 * direction buffers at most `maxQueuedBytes` before it stops reading, which is
 * how a real link with a full pipe pushes back on the sender.
 *
 * Usage: deno run -A delay_relay.ts --delay-ms 10 LISTEN_HOST:PORT=TARGET_HOST:PORT ...
 */

export interface RelayRoute {
  listenHost: string;
  listenPort: number;
  targetHost: string;
  targetPort: number;
}

export interface RelayOptions {
  /** One-way delay added to every byte, in each direction. */
  delayMs: number;
  maxQueuedBytes?: number;
}

const CHUNK_BYTES = 256 * 1024;

interface QueuedChunk {
  due: number;
  data: Uint8Array;
}

/** One waiter at a time, woken by `wake()`; a wake with no waiter is dropped. */
class Wakeup {
  #resolve: (() => void) | null = null;
  wait(): Promise<void> {
    return new Promise((resolve) => (this.#resolve = resolve));
  }
  wake(): void {
    const resolve = this.#resolve;
    this.#resolve = null;
    resolve?.();
  }
}

/** Moves bytes from `from` to `to`, each chunk held until `delayMs` after it arrived. */
async function pumpDelayed(
  from: Deno.TcpConn,
  to: Deno.TcpConn,
  delayMs: number,
  maxQueuedBytes: number,
): Promise<void> {
  const queue: QueuedChunk[] = [];
  let queuedBytes = 0;
  let readerDone = false;
  const writerWake = new Wakeup();
  const readerWake = new Wakeup();

  const reader = (async () => {
    try {
      while (true) {
        while (queuedBytes >= maxQueuedBytes) {
          await readerWake.wait();
        }
        const buf = new Uint8Array(CHUNK_BYTES);
        const n = await from.read(buf);
        if (n === null) break;
        queue.push({ due: performance.now() + delayMs, data: buf.subarray(0, n) });
        queuedBytes += n;
        writerWake.wake();
      }
    } catch {
      // A reset from the peer ends this direction like an EOF.
    } finally {
      readerDone = true;
      writerWake.wake();
    }
  })();

  try {
    while (true) {
      const chunk = queue.shift();
      if (chunk === undefined) {
        if (readerDone) break;
        await writerWake.wait();
        continue;
      }
      const wait = chunk.due - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      let written = 0;
      while (written < chunk.data.length) {
        written += await to.write(chunk.data.subarray(written));
      }
      queuedBytes -= chunk.data.length;
      readerWake.wake();
    }
    await to.closeWrite().catch(() => {});
  } catch {
    // The other side went away: stop reading too.
    try {
      from.close();
    } catch { /* already closed */ }
  }
  await reader;
}

async function relayConnection(
  client: Deno.TcpConn,
  route: RelayRoute,
  options: RelayOptions,
): Promise<void> {
  let target: Deno.TcpConn;
  try {
    target = await Deno.connect({ hostname: route.targetHost, port: route.targetPort });
  } catch (err) {
    console.error(`relay: connect ${route.targetHost}:${route.targetPort}: ${err}`);
    client.close();
    return;
  }
  client.setNoDelay(true);
  target.setNoDelay(true);
  const max = options.maxQueuedBytes ?? 16 * 1024 * 1024;
  await Promise.all([
    pumpDelayed(client, target, options.delayMs, max),
    pumpDelayed(target, client, options.delayMs, max),
  ]);
  for (const conn of [client, target]) {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}

/** Serves every route until the returned listeners are closed. */
export function startRelay(routes: RelayRoute[], options: RelayOptions): Deno.TcpListener[] {
  return routes.map((route) => {
    const listener = Deno.listen({ hostname: route.listenHost, port: route.listenPort });
    (async () => {
      try {
        for await (const conn of listener) relayConnection(conn, route, options);
      } catch {
        // listener closed
      }
    })();
    return listener;
  });
}

export function parseRoute(spec: string): RelayRoute {
  const match = /^([^=]+):(\d+)=([^=]+):(\d+)$/.exec(spec);
  if (!match) throw new Error(`bad route ${JSON.stringify(spec)}: want HOST:PORT=HOST:PORT`);
  return {
    listenHost: match[1],
    listenPort: Number(match[2]),
    targetHost: match[3],
    targetPort: Number(match[4]),
  };
}

if (import.meta.main) {
  const args = [...Deno.args];
  let delayMs = 10;
  const routes: RelayRoute[] = [];
  while (args.length) {
    const arg = args.shift()!;
    if (arg === "--delay-ms") delayMs = Number(args.shift());
    else routes.push(parseRoute(arg));
  }
  if (!routes.length || !(delayMs >= 0)) {
    console.error("usage: delay_relay.ts --delay-ms N LISTEN_HOST:PORT=TARGET_HOST:PORT ...");
    Deno.exit(2);
  }
  startRelay(routes, { delayMs });
  console.error(`relay: ${routes.length} route(s), ${delayMs} ms each way`);
}
