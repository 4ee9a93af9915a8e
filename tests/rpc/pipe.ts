/** Two transports joined back to back, like the two ends of an SSH channel. */
import type { Transport } from "../../lib/rpc/mod.ts";

export function pipePair(): [Transport, Transport] {
  const a = new TransformStream<Uint8Array, Uint8Array>();
  const b = new TransformStream<Uint8Array, Uint8Array>();
  return [
    { readable: a.readable, writable: b.writable },
    { readable: b.readable, writable: a.writable },
  ];
}
