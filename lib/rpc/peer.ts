/**
 * One RPC endpoint over a byte stream (an SSH channel, a pipe): typed, versioned,
 * multiplexed. Either side may call the other; many calls may be in flight.
 *
 * Frame: u32 length of what follows, u8 kind, u32 id, then a codec Value.
 *   HELLO    {protocol, version, program}: first frame each way; a mismatch ends
 *            the connection with a clear error on both sides.
 *   CALL     id, [method, args]          RESULT id, value
 *   ERROR    id, {errno, message}        (errno 0: not a system error)
 *   EVENT    0, [name, args]             one-way (stdout bytes, exit status, forget, ...)
 */
import { decodeValue, encodeValue, Tag, type Value, valueSize } from "./codec.ts";
import { Errno, errnoName } from "../sys/errno.ts";

export const RPC_PROTOCOL = "outrun-rpc";
export const RPC_VERSION = 1;

const enum Kind {
  Hello = 1,
  Call = 2,
  Result = 3,
  Error = 4,
  Event = 5,
}

/** Largest frame accepted: a 1 MiB READ or WRITE plus its header, with room to spare. */
export const MAX_FRAME = 4 * 1024 * 1024;

export class RpcError extends Error {
  override name = "RpcError";
  constructor(readonly errno: number, message: string, readonly method?: string) {
    super(message);
  }
  get code(): string {
    return errnoName(this.errno);
  }
}

/** The connection is gone or broken: every pending call fails with this. */
export class RpcClosed extends Error {
  override name = "RpcClosed";
}

export type Handler = (args: Value) => Value | Promise<Value>;
export type EventHandler = (args: Value) => void;

export interface Transport {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
  /**
   * The writable is done with a chunk once its write resolves (it sent or copied
   * it): large frames are then encoded into buffers used again.
   */
  reusable?: boolean;
}

/** Frames at least this large go into reused buffers (Transport.reusable). */
const POOLED_FRAME = 256 * 1024;
/** Buffers kept for them, each at least this large. */
const FRAME_POOL = 4;
const POOL_BUFFER = 2 * 1024 * 1024;

export interface PeerOptions {
  /** This program's version, sent in HELLO (informational). */
  program: string;
  /** Errors thrown by handlers that carry no errno are reported here. */
  log?: (message: string) => void;
  /** Called as each call this side answered is answered (for -vv). */
  trace?: (method: string, args: Value, ms: number, error: unknown) => void;
  /** Called as each call this side made is answered: its round trip (for -v). */
  traceCalls?: (method: string, args: Value, ms: number, error: unknown) => void;
}

export interface Hello {
  protocol: string;
  version: number;
  program: string;
}

/** First size of the buffer a byte stream is read into (it grows to fit a frame). */
const READ_BUFFER = 1024 * 1024;
/** Least room a read is given: less, and the buffer is compacted or grown first. */
const MIN_READ = 64 * 1024;

export class RpcPeer {
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array> | ReadableStreamBYOBReader;
  /** Names (UTF-8) of events whose handlers keep nothing of their arguments' bytes. */
  readonly #transient: Uint8Array[] = [];
  readonly #handlers = new Map<string, Handler>();
  readonly #events = new Map<string, EventHandler>();
  readonly #pending = new Map<
    number,
    { resolve(v: Value): void; reject(e: Error): void; method: string }
  >();
  readonly #log: (message: string) => void;
  #nextId = 1;
  #closed: Error | null = null;
  #helloResolve!: (h: Hello) => void;
  #helloReject!: (e: Error) => void;
  /** The other side's HELLO, once it came and matched ours. */
  readonly remoteHello: Promise<Hello>;
  /**
   * Resolves (with the reason) as soon as the connection is over: the stream ended
   * (RpcClosed), broke, or `close()` was called. Never waits on a stuck write.
   */
  readonly closed: Promise<Error>;
  #resolveClosed!: (reason: Error) => void;
  /** Bytes and frames each way, for --stats. */
  readonly stats = { framesOut: 0, framesIn: 0, bytesOut: 0, bytesIn: 0, calls: 0 };
  /** Calls made from this side, by method. */
  readonly callsByMethod: Record<string, number> = {};
  /** Bytes handed to the writer that the transport has not taken yet. */
  #unwritten = 0;
  #drainWaiters: { limit: number; resolve(): void }[] = [];
  /** Buffers for large frames, back once written (null: the transport may keep chunks). */
  readonly #pool: Uint8Array<ArrayBuffer>[] | null;

  constructor(transport: Transport, readonly options: PeerOptions) {
    this.#writer = transport.writable.getWriter();
    this.#pool = transport.reusable ? [] : null;
    // A byte stream (stdin, a pipe) is read into one buffer, used again and again:
    // a new chunk per read, and a copy of every frame that spans two, were most of the
    // fresh memory a cold start's push cost the agent (~10 us a page on this test bed).
    let byob: ReadableStreamBYOBReader | null = null;
    try {
      byob = transport.readable.getReader({ mode: "byob" });
    } catch { /* not a byte stream: chunks as they come */ }
    this.#reader = byob ?? transport.readable.getReader();
    this.#log = options.log ?? ((m) => console.error(`outrun: rpc: ${m}`));
    this.remoteHello = new Promise((resolve, reject) => {
      this.#helloResolve = resolve;
      this.#helloReject = reject;
    });
    this.remoteHello.catch(() => {});
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    this.#send(Kind.Hello, 0, {
      protocol: RPC_PROTOCOL,
      version: RPC_VERSION,
      program: options.program,
    });
    if (byob) this.#readInto(byob);
    else this.#readLoop(this.#reader as ReadableStreamDefaultReader<Uint8Array>);
  }

  /** Registers the function that answers calls of `method`. */
  handle(method: string, handler: Handler): void {
    this.#handlers.set(method, handler);
  }

  /** The function that answers calls of `method`, if any. */
  handlerOf(method: string): Handler | undefined {
    return this.#handlers.get(method);
  }

  /**
   * Registers the handler of event `name`. `transient`: it keeps nothing of the byte
   * arrays in its arguments once it returns, so they may be views of the buffer the
   * stream is read into (no copy of the frame).
   */
  onEvent(name: string, handler: EventHandler, o: { transient?: boolean } = {}): void {
    this.#events.set(name, handler);
    if (o.transient) this.#transient.push(new TextEncoder().encode(name));
  }

  /**
   * Calls `method` on the other side. Sent at once, not after the other side's HELLO
   * (a round trip): frames are handled in order there, and a HELLO that does not
   * match fails this call like every other pending one.
   */
  async call(method: string, args: Value): Promise<Value> {
    if (this.#closed) throw this.#closed;
    const id = this.#nextId++;
    this.stats.calls++;
    this.callsByMethod[method] = (this.callsByMethod[method] ?? 0) + 1;
    const result = new Promise<Value>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, method });
    });
    this.#send(Kind.Call, id, [method, args]);
    const traceCalls = this.options.traceCalls;
    if (!traceCalls) return await result;
    const t0 = performance.now();
    try {
      const value = await result;
      traceCalls(method, args, performance.now() - t0, null);
      return value;
    } catch (err) {
      traceCalls(method, args, performance.now() - t0, err);
      throw err;
    }
  }

  /**
   * Resolves once at most `limit` bytes sent from here wait for the transport (or
   * the connection is over): a producer of many messages awaits it between them, so
   * they go out as they are made, not after all of them are made.
   */
  drained(limit = 1024 * 1024): Promise<void> {
    if (this.#unwritten <= limit || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push({ limit, resolve }));
  }

  #wrote(n: number): void {
    this.#unwritten -= n;
    if (!this.#drainWaiters.length) return;
    this.#drainWaiters = this.#drainWaiters.filter((w) => {
      if (this.#unwritten > w.limit && !this.#closed) return true;
      w.resolve();
      return false;
    });
  }

  /** A one-way message; dropped silently once the connection is closed. */
  event(name: string, args: Value): void {
    if (!this.#closed) this.#send(Kind.Event, 0, [name, args]);
  }

  /** Ends the connection: pending calls fail, the stream is closed. */
  async close(reason: Error = new RpcClosed("connection closed")): Promise<void> {
    this.#fail(reason);
    // Never wait on the writer: a write stuck on a dead link (or a transport whose
    // close never settles) must not keep anyone waiting. The reader gets a second.
    this.#writer.close().catch(() => {});
    await Promise.race([
      this.#reader.cancel().catch(() => {}),
      new Promise((r) => setTimeout(r, 1000)),
    ]);
  }

  #send(kind: Kind, id: number, value: Value): void {
    // The header goes in front of the value, in the same buffer: no copy of a megabyte.
    // A large one goes into a buffer written before (fresh memory is dear: a cold
    // start pushes tens of megabytes a frame at a time).
    const size = valueSize(value);
    let pooled: Uint8Array<ArrayBuffer> | undefined;
    if (this.#pool && size + 9 >= POOLED_FRAME) {
      const i = this.#pool.findIndex((b) => b.length >= size + 9);
      pooled = i >= 0
        ? this.#pool.splice(i, 1)[0]
        : new Uint8Array(Math.max(size + 9, POOL_BUFFER));
    }
    const frame = encodeValue(value, 9, pooled, size);
    const v = new DataView(frame.buffer, frame.byteOffset);
    v.setUint32(0, frame.length - 4, true);
    frame[4] = kind;
    v.setUint32(5, id, true);
    this.stats.framesOut++;
    this.stats.bytesOut += frame.length;
    this.#unwritten += frame.length;
    this.#writer.write(frame).then(
      () => {
        if (pooled && this.#pool!.length < FRAME_POOL) this.#pool!.push(pooled);
        this.#wrote(frame.length);
      },
      (err) => {
        this.#fail(new RpcClosed(`write: ${err}`));
        this.#wrote(frame.length);
      },
    );
  }

  #fail(reason: Error): void {
    if (this.#closed) return;
    this.#closed = reason;
    this.#helloReject(reason);
    this.#wrote(0); // every waiter for a drain goes on
    for (const p of this.#pending.values()) p.reject(reason);
    this.#pending.clear();
    this.#resolveClosed(reason);
  }

  /** The frame `buf[at, end)` is an event whose handler is transient (see onEvent). */
  #isTransient(buf: Uint8Array, at: number, end: number): boolean {
    // kind, id, then the value [name, args]: array tag and count, string tag and length.
    if (!this.#transient.length || end - at < 15 || buf[at] !== Kind.Event) return false;
    if (buf[at + 5] !== Tag.Array || buf[at + 10] !== Tag.String) return false;
    const n = buf[at + 11] | buf[at + 12] << 8 | buf[at + 13] << 16 | buf[at + 14] << 24;
    if (end - at - 15 < n) return false;
    return this.#transient.some((t) => t.length === n && t.every((b, i) => b === buf[at + 15 + i]));
  }

  /** #readLoop for a byte stream: frames are cut out of one buffer, read into again. */
  async #readInto(reader: ReadableStreamBYOBReader): Promise<void> {
    let buf = new Uint8Array(READ_BUFFER);
    let start = 0; // the next frame's first byte
    let end = 0; // after the last byte read
    try {
      while (true) {
        if (start === end) start = end = 0;
        if (buf.length - end < MIN_READ) {
          const need = end - start >= 4
            ? 4 + new DataView(buf.buffer, start, 4).getUint32(0, true)
            : 4;
          if (start > 0) {
            buf.copyWithin(0, start, end);
            end -= start;
            start = 0;
          }
          if (buf.length - end < MIN_READ && need + MIN_READ > buf.length) {
            const grown = new Uint8Array(Math.min(need, MAX_FRAME + 4) + MIN_READ);
            grown.set(buf.subarray(0, end));
            buf = grown;
          }
        }
        // The buffer is handed over and comes back as a new view of the same memory:
        // views of it given out before (transient events) are detached from here on.
        const { value, done } = await reader.read(new Uint8Array(buf.buffer, end));
        if (value) buf = new Uint8Array(value.buffer);
        if (done) break;
        end += value!.length;
        this.stats.bytesIn += value!.length;
        while (end - start >= 4) {
          const need = new DataView(buf.buffer, start, 4).getUint32(0, true);
          if (need < 5 || need > MAX_FRAME) throw new RpcClosed(`bad frame length ${need}`);
          if (end - start - 4 < need) break;
          const at = start + 4;
          start = at + need;
          this.#onFrame(
            this.#isTransient(buf, at, start) ? buf.subarray(at, start) : buf.slice(at, start),
          );
        }
      }
      if (end > start) throw new RpcClosed("stream ended inside a frame");
      this.#fail(new RpcClosed("the other side closed the connection"));
    } catch (err) {
      this.#fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  async #readLoop(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
    // What came and is not a whole frame yet, in pieces: a large frame arrives in many
    // reads, and joining each one to all before it would copy it over and over.
    const pieces: Uint8Array[] = [];
    let held = 0;
    /** The next frame's length, once its 4 bytes are here. */
    let need = -1;
    const take = (n: number): Uint8Array => {
      const first = pieces[0];
      if (first.length >= n) {
        pieces[0] = first.subarray(n);
        if (!pieces[0].length) pieces.shift();
        held -= n;
        return first.subarray(0, n);
      }
      const out = new Uint8Array(n);
      for (let at = 0; at < n;) {
        const p = pieces[0];
        const k = Math.min(p.length, n - at);
        out.set(p.subarray(0, k), at);
        at += k;
        if (k === p.length) pieces.shift();
        else pieces[0] = p.subarray(k);
      }
      held -= n;
      return out;
    };
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        this.stats.bytesIn += value.length;

        if (value.length) pieces.push(value);
        held += value.length;
        while (true) {
          if (need < 0) {
            if (held < 4) break;
            const h = take(4);
            need = new DataView(h.buffer, h.byteOffset, 4).getUint32(0, true);
            if (need < 5 || need > MAX_FRAME) throw new RpcClosed(`bad frame length ${need}`);
          }
          if (held < need) break;
          const frame = take(need);
          need = -1;
          this.#onFrame(frame);
        }
      }
      if (held || need >= 0) throw new RpcClosed("stream ended inside a frame");
      this.#fail(new RpcClosed("the other side closed the connection"));
    } catch (err) {
      this.#fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  #onFrame(frame: Uint8Array): void {
    this.stats.framesIn++;
    const kind = frame[0];
    const id = new DataView(frame.buffer, frame.byteOffset + 1, 4).getUint32(0, true);
    const value = decodeValue(frame.subarray(5));
    switch (kind) {
      case Kind.Hello:
        return this.#onHello(value);
      case Kind.Call:
        return this.#onCall(id, value);
      case Kind.Result:
      case Kind.Error: {
        const p = this.#pending.get(id);
        if (!p) return;
        this.#pending.delete(id);
        if (kind === Kind.Result) return p.resolve(value);
        const e = value as { errno: number; message: string };
        return p.reject(new RpcError(e.errno, `${p.method}: ${e.message}`, p.method));
      }
      case Kind.Event: {
        const [name, args] = value as [string, Value];
        this.#events.get(name)?.(args);
        return;
      }
      default:
        throw new RpcClosed(`unknown frame kind ${kind}`);
    }
  }

  #onHello(value: Value): void {
    const h = value as unknown as Hello;
    if (h?.protocol !== RPC_PROTOCOL || h.version !== RPC_VERSION) {
      const theirs = `${h?.protocol ?? "?"} v${h?.version ?? "?"} (${h?.program ?? "?"})`;
      const ours = `${RPC_PROTOCOL} v${RPC_VERSION} (${this.options.program})`;
      throw new RpcClosed(`protocol mismatch: this side speaks ${ours}, the other ${theirs}`);
    }
    this.#helloResolve(h);
  }

  #onCall(id: number, value: Value): void {
    const [method, args] = value as [string, Value];
    const handler = this.#handlers.get(method);
    if (!handler) {
      this.#send(Kind.Error, id, { errno: Errno.ENOSYS, message: `no method ${method}` });
      return;
    }
    const trace = this.options.trace;
    const t0 = trace ? performance.now() : 0;
    const reply = (v: Value) => {
      trace?.(method, args, performance.now() - t0, null);
      if (!this.#closed) this.#send(Kind.Result, id, v);
    };
    const fail = (err: unknown) => {
      trace?.(method, args, performance.now() - t0, err);
      if (this.#closed) return;
      const errno = typeof (err as { errno?: unknown })?.errno === "number"
        ? (err as { errno: number }).errno
        : 0;
      if (!errno) this.#log(`${method}: ${err instanceof Error ? err.stack : err}`);
      this.#send(Kind.Error, id, {
        errno: errno || 5,
        message: String((err as Error)?.message ?? err),
      });
    };
    try {
      const result = handler(args);
      if (result instanceof Promise) result.then(reply, fail);
      else reply(result);
    } catch (err) {
      fail(err);
    }
  }
}
