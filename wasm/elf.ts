// ELF dynamic-linking facts in WebAssembly (AssemblyScript): the program interpreter
// (PT_INTERP) and the dynamic section's DT_NEEDED, DT_RPATH, DT_RUNPATH and DT_SONAME
// strings of a 64-bit little-endian ELF file. The file's bytes are copied into this
// module's memory (alloc), parse() reads them with every offset bounds-checked, and
// the results are offsets of NUL-terminated strings inside those same bytes.
// Built by `deno task build:wasm`; loaded by lib/elf.

const MAX_NEEDED: i32 = 256;

let base: usize = 0;
let size: u64 = 0;
let machine: i32 = 0;
let elfClass: i32 = 0;
let interp: i64 = -1;
let soname: i64 = -1;
let rpath: i64 = -1;
let runpath: i64 = -1;
let neededCount: i32 = 0;
const needed = new StaticArray<i64>(MAX_NEEDED);

export function alloc(len: i32): usize {
  base = heap.alloc(<usize> len);
  size = <u64> len;
  return base;
}

export function release(): void {
  if (base != 0) heap.free(base);
  base = 0;
  size = 0;
}

function inside(off: u64, n: u64): bool {
  return off <= size && n <= size - off;
}

function u16at(off: u64): u32 {
  return <u32> load<u16>(base + <usize> off);
}
function u32at(off: u64): u32 {
  return load<u32>(base + <usize> off);
}
function u64at(off: u64): u64 {
  return load<u64>(base + <usize> off);
}

/** File offset of virtual address `addr`, through the PT_LOAD segments; -1 if none. */
function vaddrToOffset(addr: u64, phoff: u64, phentsize: u64, phnum: u64): i64 {
  for (let i: u64 = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (u32at(ph) != 1) continue; // PT_LOAD
    const offset = u64at(ph + 8);
    const vaddr = u64at(ph + 16);
    const filesz = u64at(ph + 32);
    if (addr >= vaddr && addr - vaddr < filesz) return <i64> (addr - vaddr + offset);
  }
  return -1;
}

/** A string offset inside the file, or -1 when it would point outside. */
function stringAt(strtab: i64, strsz: u64, index: u64): i64 {
  if (strtab < 0 || index >= strsz) return -1;
  const off = <u64> strtab + index;
  if (!inside(off, 1)) return -1;
  return <i64> off;
}

/**
 * 0: parsed. Negative: -1 not ELF, -2 not 64-bit little-endian (class and machine
 * are still set), -3 truncated or inconsistent headers, -4 too many DT_NEEDED.
 */
export function parse(): i32 {
  machine = 0;
  elfClass = 0;
  interp = -1;
  soname = -1;
  rpath = -1;
  runpath = -1;
  neededCount = 0;
  if (!inside(0, 64)) return -1;
  if (u32at(0) != 0x464c457f) return -1;
  elfClass = <i32> load<u8>(base + 4);
  machine = <i32> u16at(18);
  if (elfClass != 2 || load<u8>(base + 5) != 1) return -2;
  const phoff = u64at(32);
  const phentsize = <u64> u16at(54);
  const phnum = <u64> u16at(56);
  if (phentsize < 56 || phnum > 4096 || !inside(phoff, phentsize * phnum)) return -3;

  let dynOff: u64 = 0;
  let dynSize: u64 = 0;
  for (let i: u64 = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    const type = u32at(ph);
    const offset = u64at(ph + 8);
    const filesz = u64at(ph + 32);
    if (type == 3) { // PT_INTERP
      if (!inside(offset, filesz) || filesz == 0) return -3;
      interp = <i64> offset;
    } else if (type == 2) { // PT_DYNAMIC
      if (!inside(offset, filesz)) return -3;
      dynOff = offset;
      dynSize = filesz;
    }
  }
  if (dynSize == 0) return 0; // static: no dynamic section

  let strtabAddr: u64 = 0;
  let strsz: u64 = 0;
  for (let at: u64 = 0; at + 16 <= dynSize; at += 16) {
    const tag = u64at(dynOff + at);
    if (tag == 0) break;
    if (tag == 5) strtabAddr = u64at(dynOff + at + 8);
    if (tag == 10) strsz = u64at(dynOff + at + 8);
  }
  const strtab = vaddrToOffset(strtabAddr, phoff, phentsize, phnum);
  if (strtab < 0 || !inside(<u64> strtab, strsz)) return -3;

  for (let at: u64 = 0; at + 16 <= dynSize; at += 16) {
    const tag = u64at(dynOff + at);
    const val = u64at(dynOff + at + 8);
    if (tag == 0) break;
    if (tag == 1) { // DT_NEEDED
      if (neededCount >= MAX_NEEDED) return -4;
      needed[neededCount++] = stringAt(strtab, strsz, val);
    } else if (tag == 14) {
      soname = stringAt(strtab, strsz, val);
    } else if (tag == 15) {
      rpath = stringAt(strtab, strsz, val);
    } else if (tag == 29) {
      runpath = stringAt(strtab, strsz, val);
    }
  }
  return 0;
}

export function getMachine(): i32 {
  return machine;
}
export function getClass(): i32 {
  return elfClass;
}
export function getInterp(): i64 {
  return interp;
}
export function getSoname(): i64 {
  return soname;
}
export function getRpath(): i64 {
  return rpath;
}
export function getRunpath(): i64 {
  return runpath;
}
export function getNeededCount(): i32 {
  return neededCount;
}
export function getNeeded(i: i32): i64 {
  return i >= 0 && i < neededCount ? needed[i] : -1;
}
