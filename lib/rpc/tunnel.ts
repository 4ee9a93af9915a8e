/**
 * Byte streams inside one RPC connection: the side that opens a tunnel gets a
 * duplex stream, the other side is handed the matching one. outrun's persistent
 * session (ControlMaster) runs each command's own RPC connection through a tunnel
 * of the session's connection, so any sshd that runs the agent will do (no port
 * or socket forwarding, which servers often disable or chroot).
 *
 * Events, one-way, in the connection's order: `tunnel.open` {id}, `tunnel.data`
 * {id, data}, `tunnel.end` {id} (that direction is over; data for a tunnel not
 * open is dropped). There is no flow control of its own: a reader that stops reading makes
 * the writer's side buffer, as with any RPC event.
 */
import type { Transport } from "./peer.ts";
import type { RpcPeer } from "./peer.ts";
import type { Value } from "./codec.ts";

export const TUNNEL_EVENTS = {
  open: "tunnel.open",
  data: "tunnel.data",
  end: "tunnel.end",
} as const;

interface TunnelData {
  id: number;
  data: Uint8Array;
}

/** tunnel.open and tunnel.end. */
interface TunnelEnd {
  id: number;
}

export class Tunnels {
  readonly #peer: RpcPeer;
  readonly #inbound = new Map<number, ReadableStreamDefaultController<Uint8Array>>();
  readonly #onAccept: ((t: Transport) => void) | null;
  #nextId = 1;

  /**
   * `onAccept` set: this side takes tunnels the other opens. Not set: this side
   * opens them (one side opens, so ids never clash).
   */
  constructor(peer: RpcPeer, onAccept?: (t: Transport) => void) {
    this.#peer = peer;
    this.#onAccept = onAccept ?? null;
    peer.onEvent(TUNNEL_EVENTS.open, (args) => {
      const { id } = args as unknown as TunnelEnd;
      if (this.#onAccept && !this.#inbound.has(id)) this.#onAccept(this.#make(id));
    });
    peer.onEvent(TUNNEL_EVENTS.data, (args) => {
      const { id, data } = args as unknown as TunnelData;
      this.#inbound.get(id)?.enqueue(data);
    });
    peer.onEvent(TUNNEL_EVENTS.end, (args) => {
      const { id } = args as unknown as TunnelEnd;
      this.#finish(id, (c) => c.close());
    });
    peer.closed.then((reason) => {
      for (const id of [...this.#inbound.keys()]) this.#finish(id, (c) => c.error(reason));
    });
  }

  /** A new tunnel: bytes written here come out of the other side's one, and back. */
  open(): Transport {
    if (this.#onAccept) throw new Error("this side accepts tunnels; the other opens them");
    const id = this.#nextId++;
    this.#peer.event(TUNNEL_EVENTS.open, { id });
    return this.#make(id);
  }

  /** Tunnels open now. */
  get size(): number {
    return this.#inbound.size;
  }

  #finish(id: number, f: (c: ReadableStreamDefaultController<Uint8Array>) => void): void {
    const c = this.#inbound.get(id);
    if (!c) return;
    this.#inbound.delete(id);
    try {
      f(c);
    } catch { /* the reader cancelled already */ }
  }

  #make(id: number): Transport {
    const peer = this.#peer;
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      peer.event(TUNNEL_EVENTS.end, { id });
    };
    const readable = new ReadableStream<Uint8Array>({
      start: (c) => void this.#inbound.set(id, c),
      // Nobody reads any more: what still comes is dropped, and the other side is told.
      cancel: () => {
        this.#inbound.delete(id);
        end();
      },
    });
    const writable = new WritableStream<Uint8Array>({
      write: (data) => peer.event(TUNNEL_EVENTS.data, { id, data } as unknown as Value),
      close: end,
      abort: end,
    });
    return { readable, writable };
  }
}
