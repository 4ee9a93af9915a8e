/**
 * Bytes as strings: the byte strings lib/fuse and the file services use for names
 * (one char per byte, whatever the encoding), and lower-case hex.
 */

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

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** `bytes` in lower-case hex (content ids, digests, ids). */
export function hex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += HEX[b];
  return out;
}
