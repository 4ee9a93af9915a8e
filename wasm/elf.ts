// ELF dynamic linking in WebAssembly (AssemblyScript): reading an ELF file's program
// interpreter (PT_INTERP) and dynamic section (DT_NEEDED, DT_RPATH, DT_RUNPATH,
// DT_SONAME), reading /etc/ld.so.cache, and resolving an executable's whole library
// closure the way glibc's ld.so does.
//
// Files are read through four host functions (open, size, pread, close), so only
// the headers, the dynamic segment and the string table of each file cross into
// this module, never a whole library. Every offset is bounds-checked. Strings are
// byte strings (one char per byte): ELF names are bytes. Results are written as
// records into an output buffer (see `emit`) that the host reads after each call.
// Built by `deno task build:wasm`; loaded by lib/elf. The host makes a fresh
// instance per call (the stub runtime never frees). The four imports below come
// from module "elf" (asc names it after this file).

declare function fileOpen(path: usize, len: i32): i32;

declare function fileSize(handle: i32): i64;

declare function fileRead(handle: i32, offset: u64, dst: usize, len: i32): i32;

declare function fileClose(handle: i32): void;

const MAX_SEGMENT: u64 = 16 << 20;

// ---- output records: one tag byte, the bytes, a NUL ----

let out = new Array<u8>();

function emit(tag: string, value: string): void {
  out.push(<u8> tag.charCodeAt(0));
  for (let i = 0; i < value.length; i++) out.push(<u8> value.charCodeAt(i));
  out.push(0);
}

let outBuf: Uint8Array = new Uint8Array(0);

export function outPtr(): usize {
  outBuf = new Uint8Array(out.length);
  for (let i = 0; i < out.length; i++) outBuf[i] = out[i];
  return outBuf.dataStart;
}
export function outLen(): i32 {
  return out.length;
}

/** Room for the host to put a request into. */
export function alloc(len: i32): usize {
  return heap.alloc(<usize> len);
}

// ---- files ----

function bytesOf(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = <u8> s.charCodeAt(i);
  return b;
}

function openPath(path: string): i32 {
  const b = bytesOf(path);
  return fileOpen(b.dataStart, b.length);
}

/** `len` bytes at `offset`, or null when the file is shorter. */
function readAt(h: i32, offset: u64, len: u64): Uint8Array | null {
  if (len > MAX_SEGMENT) return null;
  const buf = new Uint8Array(<i32> len);
  if (len == 0) return buf;
  const n = fileRead(h, offset, buf.dataStart, <i32> len);
  return n == <i32> len ? buf : null;
}

function rd16(b: Uint8Array, at: i32): u32 {
  return <u32> b[at] | (<u32> b[at + 1] << 8);
}
function rd32(b: Uint8Array, at: i32): u32 {
  return load<u32>(b.dataStart + <usize> at);
}
function rd64(b: Uint8Array, at: i32): u64 {
  return load<u64>(b.dataStart + <usize> at);
}

/** The NUL-terminated byte string at `at` of `b` (to the end when unterminated). */
function cString(b: Uint8Array, at: i32): string {
  let end = at;
  while (end < b.length && b[end] != 0) end++;
  const codes = new Array<i32>(end - at);
  for (let i = at; i < end; i++) codes[i - at] = b[i];
  return String.fromCharCodes(codes);
}

// ---- ELF ----

class Elf {
  status: i32 = 0;
  machine: i32 = 0;
  elfClass: i32 = 0;
  interp: string | null = null;
  soname: string | null = null;
  rpath: string | null = null;
  runpath: string | null = null;
  needed: string[] = [];
  /** PT_LOAD segments: "offset:filesz:flags" (decimal; flags PF_X 1, PF_W 2, PF_R 4). */
  loads: string[] = [];
}

/**
 * status 0: parsed. Negative: -1 not ELF, -2 not 64-bit little-endian (class and
 * machine are still set), -3 truncated or inconsistent headers.
 */
function readElf(h: i32): Elf {
  const e = new Elf();
  const size = <u64> fileSize(h);
  const header = size >= 64 ? readAt(h, 0, 64) : null;
  if (header == null || rd32(header, 0) != 0x464c457f) {
    e.status = -1;
    return e;
  }
  e.elfClass = header[4];
  e.machine = <i32> rd16(header, 18);
  if (e.elfClass != 2 || header[5] != 1) {
    e.status = -2;
    return e;
  }
  const phoff = rd64(header, 32);
  const phentsize = <u64> rd16(header, 54);
  const phnum = <u64> rd16(header, 56);
  const phdrs = phentsize >= 56 && phnum <= 4096 && phoff <= size &&
      phentsize * phnum <= size - phoff
    ? readAt(h, phoff, phentsize * phnum)
    : null;
  if (phdrs == null) {
    e.status = -3;
    return e;
  }
  let dyn: Uint8Array | null = null;
  for (let i: u64 = 0; i < phnum; i++) {
    const ph = <i32> (i * phentsize);
    const type = rd32(phdrs, ph);
    const offset = rd64(phdrs, ph + 8);
    const filesz = rd64(phdrs, ph + 32);
    if (type == 1) {
      const flags = rd32(phdrs, ph + 4);
      e.loads.push(offset.toString() + ":" + filesz.toString() + ":" + flags.toString());
    }
    if (type != 2 && type != 3) continue;
    const bytes = offset <= size && filesz <= size - offset ? readAt(h, offset, filesz) : null;
    if (bytes == null || (type == 3 && filesz == 0)) {
      e.status = -3;
      return e;
    }
    if (type == 3) e.interp = cString(bytes, 0); // PT_INTERP
    else dyn = bytes; // PT_DYNAMIC
  }
  if (dyn == null) return e; // static: no dynamic section

  let strtabAddr: u64 = 0;
  let strsz: u64 = 0;
  for (let at = 0; at + 16 <= dyn.length; at += 16) {
    const tag = rd64(dyn, at);
    if (tag == 0) break;
    if (tag == 5) strtabAddr = rd64(dyn, at + 8);
    if (tag == 10) strsz = rd64(dyn, at + 8);
  }
  // The string table's file offset, through the PT_LOAD segment holding its address.
  let strtab: i64 = -1;
  for (let i: u64 = 0; i < phnum; i++) {
    const ph = <i32> (i * phentsize);
    if (rd32(phdrs, ph) != 1) continue; // PT_LOAD
    const offset = rd64(phdrs, ph + 8);
    const vaddr = rd64(phdrs, ph + 16);
    const filesz = rd64(phdrs, ph + 32);
    if (strtabAddr >= vaddr && strtabAddr - vaddr < filesz) {
      strtab = <i64> (strtabAddr - vaddr + offset);
      break;
    }
  }
  const strings = strtab >= 0 && <u64> strtab <= size && strsz <= size - <u64> strtab
    ? readAt(h, <u64> strtab, strsz)
    : null;
  if (strings == null) {
    e.status = -3;
    return e;
  }
  for (let at = 0; at + 16 <= dyn.length; at += 16) {
    const tag = rd64(dyn, at);
    const val = rd64(dyn, at + 8);
    if (tag == 0) break;
    if (tag != 1 && tag != 14 && tag != 15 && tag != 29) continue;
    if (val >= <u64> strings.length) {
      e.status = -3;
      return e;
    }
    const s = cString(strings, <i32> val);
    if (tag == 1) e.needed.push(s); // DT_NEEDED
    else if (tag == 14) e.soname = s;
    else if (tag == 15) e.rpath = s;
    else e.runpath = s;
  }
  return e;
}

/**
 * Parses the ELF file behind host handle `h`. Records: C class, A machine (decimal),
 * then I interp, S soname, R rpath, U runpath, N needed (each only when present), G
 * each PT_LOAD segment ("offset:filesz:flags"). Returns the status of `readElf`.
 */
export function parse(h: i32): i32 {
  out = new Array<u8>();
  const e = readElf(h);
  emit("C", e.elfClass.toString());
  emit("A", e.machine.toString());
  if (e.status != 0) return e.status;
  const interp = e.interp;
  if (interp != null) emit("I", interp);
  const soname = e.soname;
  if (soname != null) emit("S", soname);
  const rpath = e.rpath;
  if (rpath != null) emit("R", rpath);
  const runpath = e.runpath;
  if (runpath != null) emit("U", runpath);
  for (let i = 0; i < e.needed.length; i++) emit("N", e.needed[i]);
  for (let i = 0; i < e.loads.length; i++) emit("G", e.loads[i]);
  return 0;
}

// ---- /etc/ld.so.cache ----

class CacheEntry {
  constructor(public key: string, public value: string, public priority: i32) {}
}

/**
 * The entries of an ld.so.cache (glibc's "glibc-ld.so.cache1.1" format, alone or
 * after the old "ld.so-1.7.0" table) whose flags equal `wantFlags`. glibc-hwcaps
 * entries get the priority of their subdirectory in `hwcaps` (0 best); those for a
 * subdirectory not listed are left out; plain entries come after all of them.
 */
function readCache(path: string, wantFlags: u32, hwcaps: string[]): CacheEntry[] {
  const entries = new Array<CacheEntry>();
  const h = openPath(path);
  if (h < 0) return entries;
  const size = <u64> fileSize(h);
  const data = readAt(h, 0, size);
  fileClose(h);
  if (data == null) return entries;
  let base = 0;
  if (data.length >= 16 && cString(data, 0).startsWith("ld.so-1.7.0")) {
    const old = <i32> rd32(data, 12);
    base = (16 + old * 12 + 7) & ~7;
  }
  if (base + 48 > data.length) return entries;
  let magic = "";
  for (let i = 0; i < 20; i++) magic += String.fromCharCode(data[base + i]);
  if (magic != "glibc-ld.so.cache1.1") return entries;
  const nlibs = <i32> rd32(data, base + 20);
  const extOffset = <i32> rd32(data, base + 32);
  if (nlibs < 0 || nlibs > (data.length - base - 48) / 24) return entries;

  // The glibc-hwcaps subdirectory names, from the extension section.
  const subdirs = new Array<string>();
  if (extOffset > 0 && extOffset + 8 <= data.length && rd32(data, extOffset) == 0xeaa42174) {
    const count = <i32> rd32(data, extOffset + 4);
    for (let s = 0; s < count && extOffset + 8 + (s + 1) * 16 <= data.length; s++) {
      const sec = extOffset + 8 + s * 16;
      if (rd32(data, sec) != 1) continue; // tag: glibc-hwcaps
      const off = <i32> rd32(data, sec + 8);
      const len = <i32> rd32(data, sec + 12);
      for (let k = 0; k + 4 <= len && off + k + 4 <= data.length; k += 4) {
        const str = <i32> rd32(data, off + k) + base;
        subdirs.push(str < data.length ? cString(data, str) : "");
      }
    }
  }
  for (let i = 0; i < nlibs; i++) {
    const at = base + 48 + i * 24;
    if (<u32> rd32(data, at) != wantFlags) continue;
    const key = <i32> rd32(data, at + 4) + base;
    const value = <i32> rd32(data, at + 8) + base;
    const hwcap = rd64(data, at + 16);
    if (key >= data.length || value >= data.length) continue;
    let priority = hwcaps.length;
    if ((hwcap & (<u64> 1 << 62)) != 0) {
      const index = <i32> (hwcap & 0xffffffff);
      priority = index < subdirs.length ? hwcaps.indexOf(subdirs[index]) : -1;
      if (priority < 0) continue;
    } else if (hwcap != 0) {
      continue; // legacy hwcap bits: not used by a modern ld.so on these platforms
    }
    entries.push(new CacheEntry(cString(data, key), cString(data, value), priority));
  }
  return entries;
}

// ---- the resolver ----

class Obj {
  constructor(
    public name: string,
    public path: string,
    public elf: Elf,
    public loader: i32,
  ) {}
}

let objects = new Array<Obj>();
let cacheEntries = new Array<CacheEntry>();
let wantMachine: i32 = 0;
let hwcapDirs = new Array<string>();
let platform = "";
let libDir = "";
let probed = new Set<string>();

function dirname(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash <= 0 ? (slash == 0 ? "/" : ".") : path.substring(0, slash);
}

/** $ORIGIN, $LIB and $PLATFORM (also as ${...}) in a search path or name. */
function expand(s: string, origin: string): string {
  return s.replaceAll("${ORIGIN}", origin).replaceAll("$ORIGIN", origin)
    .replaceAll("${LIB}", libDir).replaceAll("$LIB", libDir)
    .replaceAll("${PLATFORM}", platform).replaceAll("$PLATFORM", platform);
}

/** The ELF at `path` when it exists and suits (64-bit, this machine); null else. */
function tryLoad(path: string): Elf | null {
  const h = openPath(path);
  if (h < 0) {
    if (!probed.has(path)) {
      probed.add(path);
      emit("P", path);
    }
    return null;
  }
  const e = readElf(h);
  fileClose(h);
  return e.status == 0 && e.machine == wantMachine ? e : null;
}

/** Tries `name` in each directory of a colon-separated list (glibc-hwcaps first). */
function searchDirs(list: string, origin: string, name: string, loader: i32): bool {
  if (list.length == 0) return false;
  const dirs = expand(list, origin).split(":");
  for (let d = 0; d < dirs.length; d++) {
    let dir = dirs[d];
    if (dir.length == 0) dir = "."; // an empty element is the cwd, as in ld.so
    while (dir.length > 1 && dir.endsWith("/")) dir = dir.substring(0, dir.length - 1);
    const prefix = dir == "/" ? "" : dir;
    for (let k = 0; k <= hwcapDirs.length; k++) {
      const path = k < hwcapDirs.length
        ? prefix + "/glibc-hwcaps/" + hwcapDirs[k] + "/" + name
        : prefix + "/" + name;
      const e = tryLoad(path);
      if (e != null) {
        objects.push(new Obj(name, path, e, loader));
        return true;
      }
    }
  }
  return false;
}

function loadedAs(name: string): bool {
  for (let i = 0; i < objects.length; i++) {
    const o = objects[i];
    if (o.name == name || o.path == name) return true;
    const soname = o.elf.soname;
    if (soname != null && soname == name) return true;
  }
  return false;
}

function origin(o: Obj): string {
  return dirname(o.path);
}

function findLibrary(name: string, loader: i32, ldLibraryPath: string, defaults: string): bool {
  const requester = objects[loader];
  if (name.includes("/")) {
    const path = expand(name, origin(requester));
    const e = tryLoad(path);
    if (e == null) return false;
    objects.push(new Obj(name, path, e, loader));
    return true;
  }
  // DT_RPATH of the requester and of each object that loaded it, up to the
  // executable: only when the requester has no DT_RUNPATH.
  if (requester.elf.runpath == null) {
    for (let l = loader; l >= 0; l = objects[l].loader) {
      const rpath = objects[l].elf.rpath;
      if (rpath != null && searchDirs(rpath, origin(objects[l]), name, loader)) return true;
      if (objects[l].loader == l) break;
    }
  }
  if (searchDirs(ldLibraryPath, origin(requester), name, loader)) return true;
  const runpath = requester.elf.runpath;
  if (runpath != null && searchDirs(runpath, origin(requester), name, loader)) return true;
  let best: CacheEntry | null = null;
  for (let i = 0; i < cacheEntries.length; i++) {
    const c = cacheEntries[i];
    if (c.key == name && (best == null || c.priority < best.priority)) best = c;
  }
  if (best != null) {
    const e = tryLoad(best.value);
    if (e != null) {
      objects.push(new Obj(name, best.value, e, loader));
      return true;
    }
  }
  return searchDirs(defaults, "", name, loader);
}

/**
 * Resolves the closure of the executable named in the request (in `alloc`ed memory,
 * NUL-separated fields: executable path, its real path, LD_LIBRARY_PATH, $PLATFORM,
 * $LIB, glibc-hwcaps subdirectories by priority (colon-separated), default
 * directories (colon-separated), ld.so.cache path, cache entry flags (decimal)).
 * Records, in ld.so's breadth-first load order: I the interpreter, L name then F path
 * of each object found, M each name not found, P each path probed and
 * missing. Returns 0, or the executable's `readElf` status.
 */
export function resolve(request: usize, len: i32): i32 {
  out = new Array<u8>();
  objects = new Array<Obj>();
  probed = new Set<string>();
  const fields = new Array<string>();
  let start = 0;
  for (let i = 0; i < len; i++) {
    if (load<u8>(request + <usize> i) != 0) continue;
    const codes = new Array<i32>(i - start);
    for (let k = start; k < i; k++) codes[k - start] = load<u8>(request + <usize> k);
    fields.push(String.fromCharCodes(codes));
    start = i + 1;
  }
  if (fields.length < 9) return -5;
  const exe = fields[0];
  const realExe = fields[1];
  const ldLibraryPath = fields[2];
  platform = fields[3];
  libDir = fields[4];
  hwcapDirs = fields[5].length > 0 ? fields[5].split(":") : new Array<string>();
  const defaults = fields[6];
  const flags = <u32> I32.parseInt(fields[8]);

  const h = openPath(exe);
  if (h < 0) return -1;
  const main = readElf(h);
  fileClose(h);
  if (main.status != 0) return main.status;
  wantMachine = main.machine;
  // $ORIGIN of the executable is the directory of its real path (/proc/self/exe).
  objects.push(new Obj(exe, realExe, main, 0));
  const interp = main.interp;
  if (interp != null) {
    emit("I", interp);
    const e = tryLoad(interp);
    if (e != null) objects.push(new Obj(interp, interp, e, 0));
  }
  cacheEntries = readCache(fields[7], flags, hwcapDirs);
  // Breadth first: each object's DT_NEEDED in order, appended to the same queue.
  for (let q = 0; q < objects.length; q++) {
    const needed = objects[q].elf.needed;
    for (let i = 0; i < needed.length; i++) {
      const name = needed[i];
      if (loadedAs(name)) continue;
      if (findLibrary(name, q, ldLibraryPath, defaults)) {
        const o = objects[objects.length - 1];
        emit("L", name);
        emit("F", o.path);
      } else {
        emit("M", name);
      }
    }
  }
  return 0;
}
