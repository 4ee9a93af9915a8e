/**
 * Builds requests byte by byte as the kernel lays them out (fuse.h), independently
 * of the parser under test.
 */
export class Bytes {
  #parts: number[] = [];
  u16(v: number): this {
    this.#parts.push(v & 0xff, (v >> 8) & 0xff);
    return this;
  }
  u32(v: number): this {
    for (let i = 0; i < 4; i++) this.#parts.push((v >>> (8 * i)) & 0xff);
    return this;
  }
  u64(v: number | bigint): this {
    const b = BigInt.asUintN(64, BigInt(v));
    for (let i = 0n; i < 8n; i++) this.#parts.push(Number((b >> (8n * i)) & 0xffn));
    return this;
  }
  raw(bytes: ArrayLike<number>): this {
    for (let i = 0; i < bytes.length; i++) this.#parts.push(bytes[i]);
    return this;
  }
  /** A NUL-terminated name. */
  name(s: string): this {
    for (let i = 0; i < s.length; i++) this.#parts.push(s.charCodeAt(i));
    this.#parts.push(0);
    return this;
  }
  get length(): number {
    return this.#parts.length;
  }
  bytes(): Uint8Array {
    return new Uint8Array(this.#parts);
  }
}

export interface HeaderFields {
  unique?: bigint;
  nodeid?: number;
  uid?: number;
  gid?: number;
  pid?: number;
  /** Override the length field (for malformed fixtures). */
  len?: number;
}

/** fuse_in_header + body. */
export function request(opcode: number, body: Bytes | Uint8Array, h: HeaderFields = {}) {
  const b = body instanceof Bytes ? body.bytes() : body;
  return new Bytes()
    .u32(h.len ?? 40 + b.length)
    .u32(opcode)
    .u64(h.unique ?? 7n)
    .u64(h.nodeid ?? 1)
    .u32(h.uid ?? 1000)
    .u32(h.gid ?? 100)
    .u32(h.pid ?? 4242)
    .u16(0)
    .u16(0)
    .raw(b)
    .bytes();
}
