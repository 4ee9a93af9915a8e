/**
 * lib/elf: what the dynamic loader needs to know of an ELF file (its interpreter,
 * DT_NEEDED libraries, RPATH/RUNPATH, SONAME), read by the WebAssembly module built
 * from wasm/elf.ts. Used to ship a runtime's libraries to a remote without glibc,
 * and (issue 6) to prefetch an executable's whole library closure.
 */
import { ELF_WASM_BASE64 } from "./elf_wasm.ts";

export const EM_X86_64 = 62;
export const EM_AARCH64 = 183;

export interface ElfInfo {
  machine: number;
  /** 1: 32-bit, 2: 64-bit. */
  elfClass: number;
  interp: string | null;
  needed: string[];
  rpath: string | null;
  runpath: string | null;
  soname: string | null;
  /** PT_LOAD segments, in file order as the headers list them. */
  loads: LoadSegment[];
}

/** A PT_LOAD segment's bytes in the file, and its PF_* flags (PF_X 1, PF_W 2, PF_R 4). */
export interface LoadSegment {
  offset: number;
  size: number;
  flags: number;
}

export const PF_X = 1;
export const PF_W = 2;

/**
 * The byte ranges of an ELF file ld.so reads to load and relocate it: the segments
 * before its first executable one (headers, symbol and string tables, hash tables,
 * relocations) and its writable ones (what relocation writes: .data.rel.ro, the GOT,
 * .data). Code is read as it runs, and read-only data after the code as it is used.
 */
export function loaderRanges(info: Pick<ElfInfo, "loads">): [start: number, end: number][] {
  const firstCode = info.loads.findIndex((l) => l.flags & PF_X);
  return info.loads
    .filter((l, i) => l.size > 0 && ((firstCode >= 0 && i < firstCode) || (l.flags & PF_W)))
    .map((l) => [l.offset, l.offset + l.size]);
}

export class ElfError extends Error {
  override name = "ElfError";
  constructor(readonly reason: "not-elf" | "unsupported" | "malformed", message: string) {
    super(message);
  }
}

interface ElfExports {
  memory: WebAssembly.Memory;
  alloc(len: number): number;
  parse(handle: number): number;
  resolve(request: number, len: number): number;
  outPtr(): number;
  outLen(): number;
}

/** Where the module reads files from: a real filesystem, or bytes in memory. */
export interface FileSource {
  /** A regular file, or null when there is none (or it is something else). */
  open(path: string): SourceFile | null;
}

export interface SourceFile {
  size: number;
  /** Reads at `offset` into `into`; returns the count (short at the end of the file). */
  read(offset: number, into: Uint8Array): number;
  close?(): void;
}

let compiled: WebAssembly.Module | null = null;

/** A fresh instance per call (its stub runtime never frees), reading through `files`. */
function instantiate(
  files: FileSource,
  bytes?: Uint8Array,
): ElfExports & { closeAll(): void } {
  compiled ??= new WebAssembly.Module(
    Uint8Array.from(atob(ELF_WASM_BASE64), (c) => c.charCodeAt(0)),
  );
  const handles = new Map<number, SourceFile>();
  let next = 1;
  if (bytes) {
    handles.set(0, {
      size: bytes.length,
      read: (offset, into) => {
        const part = bytes.subarray(offset, offset + into.length);
        into.set(part);
        return part.length;
      },
    });
  }
  let memory: WebAssembly.Memory | null = null;
  const mem = () => new Uint8Array(memory!.buffer);
  const env = {
    abort: () => {
      throw new ElfError("malformed", "the ELF module aborted");
    },
    fileOpen: (ptr: number, len: number) => {
      const path = latin1(mem().subarray(ptr, ptr + len));
      const file = files.open(path);
      if (!file) return -1;
      handles.set(next, file);
      return next++;
    },
    fileSize: (h: number) => BigInt(handles.get(h)?.size ?? 0),
    fileRead: (h: number, offset: bigint, dst: number, len: number) => {
      const file = handles.get(h);
      if (!file) return -1;
      return file.read(Number(offset), mem().subarray(dst, dst + len));
    },
    fileClose: (h: number) => {
      handles.get(h)?.close?.();
      handles.delete(h);
    },
  };
  // asc files a `declare`d import under the source file's name ("elf"); abort stays in env.
  const exports = new WebAssembly.Instance(compiled, { env, elf: env })
    .exports as unknown as ElfExports;
  memory = exports.memory;
  const closeAll = () => {
    for (const file of handles.values()) file.close?.();
    handles.clear();
  };
  return { ...exports, closeAll };
}

function latin1(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return s;
}

/** The records the module wrote: [tag, value] pairs. */
function records(elf: ElfExports): [string, string][] {
  const bytes = new Uint8Array(elf.memory.buffer, elf.outPtr(), elf.outLen());
  const text = latin1(bytes);
  const out: [string, string][] = [];
  for (const rec of text.split("\0").slice(0, -1)) out.push([rec[0], rec.slice(1)]);
  return out;
}

/** Parses the dynamic-linking facts of an ELF file (64-bit little-endian). */
export function parseElf(bytes: Uint8Array): ElfInfo {
  const elf = instantiate({ open: () => null }, bytes);
  const rc = elf.parse(0);
  const recs = records(elf);
  const one = (tag: string) => recs.find(([t]) => t === tag)?.[1] ?? null;
  if (rc === -1) throw new ElfError("not-elf", "not an ELF file");
  if (rc === -2) {
    throw new ElfError(
      "unsupported",
      `ELF class ${one("C")} machine ${one("A")}: only 64-bit little-endian`,
    );
  }
  if (rc !== 0) throw new ElfError("malformed", `malformed ELF headers (${rc})`);
  return {
    machine: Number(one("A")),
    elfClass: Number(one("C")),
    interp: one("I"),
    needed: recs.filter(([t]) => t === "N").map(([, v]) => v),
    rpath: one("R"),
    runpath: one("U"),
    soname: one("S"),
    loads: recs.filter(([t]) => t === "G").map(([, v]) => {
      const [offset, size, flags] = v.split(":").map(Number);
      return { offset, size, flags };
    }),
  };
}

/** The local filesystem as a `FileSource` (open follows symlinks, as ld.so's does). */
export const localFiles: FileSource = {
  open(path) {
    let file: Deno.FsFile;
    try {
      file = Deno.openSync(path);
    } catch {
      return null;
    }
    const st = file.statSync();
    if (!st.isFile) {
      file.close();
      return null;
    }
    return {
      size: st.size,
      read(offset, into) {
        file.seekSync(offset, Deno.SeekMode.Start);
        let n = 0;
        while (n < into.length) {
          const got = file.readSync(into.subarray(n));
          if (got === null || got === 0) break;
          n += got;
        }
        return n;
      },
      close: () => file.close(),
    };
  },
};

/** How this machine's ld.so searches (read once from `ld.so --help`). */
export interface LoaderConfig {
  /** Default directories, in order (after ld.so.cache). */
  systemDirs: string[];
  /** glibc-hwcaps subdirectories this CPU supports, best first. */
  hwcaps: string[];
  /** $PLATFORM and $LIB. */
  platform: string;
  lib: string;
  /** ld.so.cache entry flags for this architecture (libc6 + the ABI's bits). */
  cacheFlags: number;
}

const CACHE_FLAGS: Record<string, number> = { x86_64: 0x0303, aarch64: 0x0a03 };

/** Reads the loader's own account of its search (glibc 2.33+ prints it with --help). */
export function loaderConfig(interp: string): LoaderConfig {
  let text = "";
  try {
    const out = new Deno.Command(interp, { args: ["--help"], stderr: "null" }).outputSync();
    text = new TextDecoder().decode(out.stdout);
  } catch { /* not runnable: the defaults below */ }
  const systemDirs = [...text.matchAll(/^\s+(\S+) \(system search path\)$/gm)].map((m) => m[1]);
  const hwcaps = [...text.matchAll(/^\s+(\S+) \(supported, searched\)$/gm)]
    .map((m) => m[1]).filter((d) => !text.includes(`  ${d} (AT_PLATFORM`))
    .filter((d) => text.indexOf(`  ${d} (`) < text.indexOf("Legacy HWCAP"));
  const platform = /^\s+(\S+) \(AT_PLATFORM/m.exec(text)?.[1] ?? Deno.build.arch;
  const dirs = systemDirs.length ? systemDirs : [
    `/lib/${Deno.build.arch}-linux-gnu`,
    `/usr/lib/${Deno.build.arch}-linux-gnu`,
    "/lib",
    "/usr/lib",
  ];
  return {
    systemDirs: dirs,
    hwcaps,
    platform,
    lib: dirs[0].replace(/^\//, ""),
    cacheFlags: CACHE_FLAGS[Deno.build.arch] ?? 0x0303,
  };
}

export interface Closure {
  interp: string | null;
  /** Each library found, in ld.so's load order: the DT_NEEDED name and the path opened. */
  libraries: { name: string; path: string }[];
  /** DT_NEEDED names found nowhere. */
  missing: string[];
  /** Paths the search tried that do not exist (what the loader's open() would miss). */
  probes: string[];
}

export interface ResolveOptions {
  /** LD_LIBRARY_PATH of the command's environment. */
  ldLibraryPath?: string;
  files?: FileSource;
  config?: LoaderConfig;
  /** ld.so.cache to read; /etc/ld.so.cache by default. */
  cachePath?: string;
}

const loaderConfigs = new Map<string, LoaderConfig>();

/** An executable's whole library closure, resolved as glibc's ld.so would (in WebAssembly). */
export function resolveClosure(exe: string, opts: ResolveOptions = {}): Closure {
  const files = opts.files ?? localFiles;
  let realExe = exe;
  try {
    if (files === localFiles) realExe = Deno.realPathSync(exe);
  } catch { /* reported as not found below */ }
  let config = opts.config;
  if (!config) {
    let interp = `/lib64/ld-linux-x86-64.so.2`;
    try {
      interp = parseElfFile(exe, files).interp ?? interp;
    } catch { /* resolve reports it */ }
    config = loaderConfigs.get(interp) ?? loaderConfig(interp);
    loaderConfigs.set(interp, config);
  }
  const elf = instantiate(files);
  try {
    const request = [
      exe,
      realExe,
      opts.ldLibraryPath ?? "",
      config.platform,
      config.lib,
      config.hwcaps.join(":"),
      config.systemDirs.join(":"),
      opts.cachePath ?? "/etc/ld.so.cache",
      String(config.cacheFlags),
    ].join("\0") + "\0";
    const bytes = Uint8Array.from(request, (c) => c.charCodeAt(0) & 0xff);
    const ptr = elf.alloc(bytes.length);
    new Uint8Array(elf.memory.buffer, ptr, bytes.length).set(bytes);
    const rc = elf.resolve(ptr, bytes.length);
    if (rc === -1) throw new ElfError("not-elf", `${exe}: not found or not an ELF file`);
    if (rc !== 0) throw new ElfError("malformed", `${exe}: cannot resolve (${rc})`);
    const recs = records(elf);
    return {
      interp: recs.find(([t]) => t === "I")?.[1] ?? null,
      libraries: recs.flatMap(([t, v], i) => t === "L" ? [{ name: v, path: recs[i + 1][1] }] : []),
      missing: recs.filter(([t]) => t === "M").map(([, v]) => v),
      probes: recs.filter(([t]) => t === "P").map(([, v]) => v),
    };
  } finally {
    elf.closeAll();
  }
}

/** `parseElf` of a file, reading only its headers, dynamic segment and strings. */
export function parseElfFile(path: string, files: FileSource = localFiles): ElfInfo {
  const file = files.open(path);
  if (!file) throw new ElfError("not-elf", `${path}: not a regular file`);
  try {
    const bytes = new Uint8Array(Math.min(file.size, 64 << 10));
    file.read(0, bytes);
    // Small reads first; the whole file only when the dynamic segment lies further.
    try {
      return parseElf(bytes);
    } catch (e) {
      if (!(e instanceof ElfError) || e.reason !== "malformed" || bytes.length === file.size) {
        throw e;
      }
      const all = new Uint8Array(file.size);
      file.read(0, all);
      return parseElf(all);
    }
  } finally {
    file.close?.();
  }
}
