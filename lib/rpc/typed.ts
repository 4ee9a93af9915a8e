/**
 * RPC with types: a schema names each call's argument and result and each event's
 * payload, so a wrong call, handler or event does not compile. The casts between a
 * message's type and the codec's Value are made here, once, at the boundary.
 */
import type { Value } from "./codec.ts";
import type { RpcPeer } from "./peer.ts";

/** Method name -> its argument and result. */
export type CallSchema = Record<string, { args: unknown; result: unknown }>;
/** Event name -> its payload. */
export type EventSchema = Record<string, unknown>;

type Awaitable<T> = T | Promise<T>;

/** An RpcPeer seen through the schemas `C` (calls) and `E` (events). */
export class TypedPeer<C extends CallSchema, E extends EventSchema> {
  constructor(readonly peer: RpcPeer) {}

  call<M extends keyof C & string>(method: M, args: C[M]["args"]): Promise<C[M]["result"]> {
    return this.peer.call(method, args as Value) as Promise<C[M]["result"]>;
  }

  handle<M extends keyof C & string>(
    method: M,
    handler: (args: C[M]["args"]) => Awaitable<C[M]["result"]>,
  ): void {
    this.peer.handle(method, (args) => handler(args as C[M]["args"]) as Awaitable<Value>);
  }

  event<N extends keyof E & string>(name: N, args: E[N]): void {
    this.peer.event(name, args as Value);
  }

  /** `transient`: the payload may be a view of the read buffer (see RpcPeer.onEvent). */
  onEvent<N extends keyof E & string>(
    name: N,
    handler: (args: E[N]) => void,
    o: { transient?: boolean } = {},
  ): void {
    this.peer.onEvent(name, (args) => handler(args as E[N]), o);
  }
}
