/**
 * A compact, self-describing binary encoding for RPC payloads: null, booleans,
 * numbers, bigints, strings, byte arrays, arrays and plain objects. Bytes travel
 * as bytes (no base64), which is most of what the file service moves.
 * Each value is a tag byte (Tag) and what the tag says follows.
 */

/** The byte before each value: what follows it. */
export const Tag = {
  Null: 0,
  False: 1,
  True: 2,
  F64: 3,
  I32: 4,
  BigInt: 5,
  /** u32 length, then UTF-8. */
  String: 6,
  /** u32 length, then the bytes. */
  Bytes: 7,
  /** u32 count, then the values. */
  Array: 8,
  /** u32 count, then key string and value pairs. */
  Object: 9,
  Undefined: 10,
} as const;

export type Value =
  | null
  | undefined
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | LazyBytes
  | Value[]
  | { [key: string]: Value };

/**
 * Bytes read only as the value that carries them is encoded, straight into the frame
 * (a file's, say: no copy of them in memory first). Encoded as, and decoded to, a byte
 * array. `readInto` fills exactly `length` bytes and does not throw.
 */
export abstract class LazyBytes {
  abstract readonly length: number;
  abstract readInto(dst: Uint8Array): void;
}

export class CodecError extends Error {
  override name = "CodecError";
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Bytes of `s` in UTF-8 (a lone surrogate counts as U+FFFD, as TextEncoder writes it). */
function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (
      c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00
    ) {
      n += 2; // a pair: 4 bytes for 2 units
      i++;
    } else n += 2;
  }
  return n;
}

/** The encoded size of `v`, so that it is written into one buffer, never grown. */
function sizeOf(v: Value, depth: number): number {
  if (depth > 64) throw new CodecError("value nested too deeply");
  if (v === null || v === undefined) return 1;
  switch (typeof v) {
    case "boolean":
      return 1;
    case "number":
      return Number.isInteger(v) && v >= -0x80000000 && v <= 0x7fffffff ? 5 : 9;
    case "bigint":
      return 9;
    case "string":
      return 5 + utf8Length(v);
  }
  if (v instanceof Uint8Array || v instanceof LazyBytes) return 5 + v.length;
  if (Array.isArray(v)) {
    let n = 5;
    for (const item of v) n += sizeOf(item, depth + 1);
    return n;
  }
  if (typeof v === "object") {
    let n = 5;
    for (const k of Object.keys(v)) n += 4 + utf8Length(k) + sizeOf(v[k], depth + 1);
    return n;
  }
  throw new CodecError(`cannot encode ${typeof v}`);
}

/** The size of `v` encoded. */
export function valueSize(v: Value): number {
  return sizeOf(v, 0);
}

/** Writes into a buffer sized beforehand (sizeOf): it never grows. */
class Writer {
  readonly view: DataView;
  constructor(readonly buf: Uint8Array, public length = 0) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  reserve(n: number): number {
    if (this.length + n > this.buf.length) {
      throw new CodecError(`value larger than its size (${this.buf.length} bytes)`);
    }
    const at = this.length;
    this.length += n;
    return at;
  }
  u8(v: number) {
    const at = this.reserve(1);
    this.buf[at] = v;
  }
  u32(v: number) {
    const at = this.reserve(4);
    this.view.setUint32(at, v, true);
  }
  bytes(b: Uint8Array) {
    this.u32(b.length);
    this.buf.set(b, this.reserve(b.length));
  }
  string(s: string) {
    const n = utf8Length(s);
    this.u32(n);
    const at = this.reserve(n);
    if (n === s.length) {
      // ASCII (paths, names, keys): byte by byte beats a call into the encoder.
      const buf = this.buf;
      for (let i = 0; i < n; i++) buf[at + i] = s.charCodeAt(i);
    } else {
      encoder.encodeInto(s, this.buf.subarray(at, at + n));
    }
  }
}

function put(w: Writer, v: Value, depth: number): void {
  if (depth > 64) throw new CodecError("value nested too deeply");
  if (v === null) return w.u8(Tag.Null);
  if (v === undefined) return w.u8(Tag.Undefined);
  switch (typeof v) {
    case "boolean":
      return w.u8(v ? Tag.True : Tag.False);
    case "number":
      if (Number.isInteger(v) && v >= -0x80000000 && v <= 0x7fffffff) {
        w.u8(Tag.I32);
        const at = w.reserve(4);
        w.view.setInt32(at, v, true);
      } else {
        w.u8(Tag.F64);
        const at = w.reserve(8);
        w.view.setFloat64(at, v, true);
      }
      return;
    case "bigint": {
      w.u8(Tag.BigInt);
      const at = w.reserve(8);
      w.view.setBigInt64(at, BigInt.asIntN(64, v), true);
      return;
    }
    case "string":
      w.u8(Tag.String);
      w.string(v);
      return;
  }
  if (v instanceof Uint8Array) {
    w.u8(Tag.Bytes);
    w.bytes(v);
  } else if (v instanceof LazyBytes) {
    w.u8(Tag.Bytes);
    w.u32(v.length);
    const at = w.reserve(v.length);
    v.readInto(w.buf.subarray(at, at + v.length));
  } else if (Array.isArray(v)) {
    w.u8(Tag.Array);
    w.u32(v.length);
    for (const item of v) put(w, item, depth + 1);
  } else if (typeof v === "object") {
    const keys = Object.keys(v);
    w.u8(Tag.Object);
    w.u32(keys.length);
    for (const k of keys) {
      w.string(k);
      put(w, v[k], depth + 1);
    }
  } else {
    throw new CodecError(`cannot encode ${typeof v}`);
  }
}

/**
 * `v` encoded, after `headroom` bytes left for the caller (a frame's header), in
 * one buffer of exactly that size: the start of `into` when it is large enough.
 */
export function encodeValue(
  v: Value,
  headroom = 0,
  into?: Uint8Array<ArrayBuffer>,
  /** valueSize(v), when the caller has it. */
  known?: number,
): Uint8Array<ArrayBuffer> {
  const size = headroom + (known ?? sizeOf(v, 0));
  const buf = into && into.length >= size ? into.subarray(0, size) : new Uint8Array(size);
  const w = new Writer(buf, headroom);
  put(w, v, 0);
  if (w.length !== size) throw new CodecError(`encoded ${w.length} bytes, sized ${size}`);
  return w.buf as Uint8Array<ArrayBuffer>;
}

class Reader {
  at = 0;
  readonly view: DataView;
  constructor(readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  need(n: number): number {
    if (this.at + n > this.buf.length) throw new CodecError("truncated value");
    const at = this.at;
    this.at += n;
    return at;
  }
  u32(): number {
    return this.view.getUint32(this.need(4), true);
  }
  bytes(): Uint8Array {
    const n = this.u32();
    const at = this.need(n);
    // A large array is a view (a copy of a cold start's megabytes cost the agent
    // ~0.15 s, most of it in fresh pages); a small one is copied, so that a hash
    // kept for the session does not hold the whole frame it came in.
    return n >= VIEW_BYTES ? this.buf.subarray(at, at + n) : this.buf.slice(at, at + n);
  }
  /**
   * A string, decoded where it lies (a copy of each first cost more than decoding it:
   * a cold start's names are some 100,000 strings); a short ASCII one without
   * TextDecoder (a call into the runtime each).
   */
  text(): string {
    const n = this.u32();
    const at = this.need(n);
    const bytes = this.buf.subarray(at, at + n);
    if (n <= SHORT_TEXT) {
      let ascii = true;
      for (let i = 0; i < n && ascii; i++) ascii = bytes[i] < 0x80;
      if (ascii) return String.fromCharCode.apply(null, bytes as unknown as number[]);
    }
    return decoder.decode(bytes);
  }
}

function get(r: Reader, depth: number): Value {
  if (depth > 64) throw new CodecError("value nested too deeply");
  const tag = r.buf[r.need(1)];
  switch (tag) {
    case Tag.Null:
      return null;
    case Tag.False:
      return false;
    case Tag.True:
      return true;
    case Tag.F64:
      return r.view.getFloat64(r.need(8), true);
    case Tag.I32:
      return r.view.getInt32(r.need(4), true);
    case Tag.BigInt:
      return r.view.getBigInt64(r.need(8), true);
    case Tag.String:
      return r.text();
    case Tag.Bytes:
      return r.bytes();
    case Tag.Array: {
      const n = r.u32();
      if (n > r.buf.length - r.at) throw new CodecError("array longer than its message");
      const out: Value[] = [];
      for (let i = 0; i < n; i++) out.push(get(r, depth + 1));
      return out;
    }
    case Tag.Object: {
      const n = r.u32();
      if (n > r.buf.length - r.at) throw new CodecError("object longer than its message");
      const out: { [key: string]: Value } = {};
      for (let i = 0; i < n; i++) {
        const key = r.text();
        if (key === "__proto__") throw new CodecError("forbidden key");
        out[key] = get(r, depth + 1);
      }
      return out;
    }
    case Tag.Undefined:
      return undefined;
    default:
      throw new CodecError(`unknown tag ${tag}`);
  }
}

/** Strings up to this many bytes, all ASCII, are decoded without TextDecoder. */
const SHORT_TEXT = 128;

/** Byte arrays at least this long decode as views into the buffer decoded. */
export const VIEW_BYTES = 4096;

/**
 * Decodes exactly one value filling `bytes`; anything else is a CodecError. Byte
 * arrays of VIEW_BYTES or more are views into `bytes`: the caller hands it over.
 */
export function decodeValue(bytes: Uint8Array): Value {
  const r = new Reader(bytes);
  const v = get(r, 0);
  if (r.at !== bytes.length) throw new CodecError(`${bytes.length - r.at} bytes after the value`);
  return v;
}
