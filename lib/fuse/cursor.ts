/**
 * Bounds-checked little-endian reads over a request buffer. Running past the end
 * throws `ShortRequest`, which the parser turns into a typed error: a malformed or
 * truncated request is never a crash deep inside a handler.
 */

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

/** Bytes to a string of the same length, char code = byte. */
export function byteString(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    s += String.fromCharCode(...bytes.subarray(i, Math.min(i + 8192, bytes.length)));
  }
  return s;
}

/** The inverse of `byteString`; chars above 0xff are a programming error. */
export function stringBytes(s: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new RangeError(`not a byte string: char ${c} at ${i}`);
    out[i] = c;
  }
  return out;
}

/** A UTF-8 JS string (a command-line path) as the byte string lib/fuse uses for names. */
export function utf8ByteString(s: string): string {
  return byteString(new TextEncoder().encode(s));
}
