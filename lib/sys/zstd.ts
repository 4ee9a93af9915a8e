/**
 * zstd through libzstd (FFI): decompression into a buffer the caller gives, and
 * compression without node:zlib, whose loading (the runtime's Node layer with it)
 * took ~70 ms of a new agent's start and of its first validation. node:zlib
 * hands back fresh memory for every block, and on the machines measured here a page's
 * first touch costs ~10 us: a cold start's 64 MB took the agent ~0.3 s that way, ~0.06 s
 * this way. Optional: the agent ships libzstd when this machine has it (bootstrap.ts);
 * without it, callers fall back to node:zlib.
 */
const symbols = {
  ZSTD_decompress: { parameters: ["buffer", "usize", "buffer", "usize"], result: "usize" },
  ZSTD_compress: { parameters: ["buffer", "usize", "buffer", "usize", "i32"], result: "usize" },
  ZSTD_compressBound: { parameters: ["usize"], result: "usize" },
  ZSTD_isError: { parameters: ["usize"], result: "u32" },
} as const;

let lib: Deno.DynamicLibrary<typeof symbols> | null | undefined;

function libzstd(): Deno.DynamicLibrary<typeof symbols> | null {
  if (lib === undefined) {
    try {
      lib = Deno.dlopen("libzstd.so.1", symbols);
    } catch {
      lib = null;
    }
  }
  return lib;
}

/**
 * Decompresses the zstd frame in `src` into `dst`: the bytes written, or null when
 * there is no libzstd here. A corrupt frame, or one larger than `dst`, throws.
 */
export function zstdDecompressInto(src: Uint8Array, dst: Uint8Array): number | null {
  const z = libzstd();
  if (!z) return null;
  const n = z.symbols.ZSTD_decompress(
    dst as Uint8Array<ArrayBuffer>,
    BigInt(dst.length),
    src as Uint8Array<ArrayBuffer>,
    BigInt(src.length),
  );
  if (z.symbols.ZSTD_isError(n)) throw new Error("zstd: a corrupt block, or larger than said");
  return Number(n);
}

/** Whether libzstd is here (FFI): zstd then needs no node:zlib. */
export function hasLibzstd(): boolean {
  return libzstd() !== null;
}

/** `src` as one zstd frame at `level` (a view of a fresh buffer), or null without libzstd. */
export function zstdCompress(src: Uint8Array, level: number): Uint8Array | null {
  const z = libzstd();
  if (!z) return null;
  const dst = new Uint8Array(Number(z.symbols.ZSTD_compressBound(BigInt(src.length))));
  const n = z.symbols.ZSTD_compress(
    dst,
    BigInt(dst.length),
    src as Uint8Array<ArrayBuffer>,
    BigInt(src.length),
    level,
  );
  if (z.symbols.ZSTD_isError(n)) throw new Error("zstd: compression failed");
  return dst.subarray(0, Number(n));
}
