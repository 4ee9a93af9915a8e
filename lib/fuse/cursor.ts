/**
 * Bounds-checked little-endian reads over a request buffer. Running past the end
 * throws `ShortRequest`, which the parser turns into a typed error: a malformed or
 * truncated request is never a crash deep inside a handler.
 */
import { byteString } from "../sys/bytes.ts";

export class ShortRequest extends Error {
  override name = "ShortRequest";
}

export class Cursor {
  readonly view: DataView;
  offset: number;
  constructor(readonly bytes: Uint8Array, offset = 0, readonly end = bytes.length) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.offset = offset;
  }

  get remaining(): number {
    return this.end - this.offset;
  }

  #need(n: number, what: string): number {
    if (this.offset + n > this.end) {
      throw new ShortRequest(`${what}: need ${n} bytes at ${this.offset}, have ${this.remaining}`);
    }
    const at = this.offset;
    this.offset += n;
    return at;
  }

  u16(): number {
    return this.view.getUint16(this.#need(2, "u16"), true);
  }
  u32(): number {
    return this.view.getUint32(this.#need(4, "u32"), true);
  }
  i32(): number {
    return this.view.getInt32(this.#need(4, "i32"), true);
  }
  u64(): bigint {
    return this.view.getBigUint64(this.#need(8, "u64"), true);
  }
  i64(): bigint {
    return this.view.getBigInt64(this.#need(8, "i64"), true);
  }
  /** A u64 the kernel echoes back from us (node ids, handles): always below 2^53 in practice. */
  id(): number {
    const v = this.u64();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ShortRequest(`id ${v} out of range`);
    return Number(v);
  }
  skip(n: number): void {
    this.#need(n, "padding");
  }
  /** Skips a struct whose size grew across protocol versions, keeping what we did not read. */
  skipTo(structStart: number, size: number): void {
    const end = structStart + size;
    if (end > this.end) throw new ShortRequest(`struct: need ${end - this.offset} more bytes`);
    if (end > this.offset) this.offset = end;
  }
  bytesN(n: number): Uint8Array {
    const at = this.#need(n, "data");
    return this.bytes.subarray(at, at + n);
  }
  /** A NUL-terminated name, returned as a byte string (one char per byte: never mangled). */
  name(): string {
    const start = this.offset;
    let end = start;
    while (end < this.end && this.bytes[end] !== 0) end++;
    if (end >= this.end) throw new ShortRequest("name without NUL terminator");
    this.offset = end + 1;
    return byteString(this.bytes.subarray(start, end));
  }
}
