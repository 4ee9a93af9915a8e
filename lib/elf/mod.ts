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
  release(): void;
  parse(): number;
  getMachine(): number;
  getClass(): number;
  getInterp(): bigint;
  getSoname(): bigint;
  getRpath(): bigint;
  getRunpath(): bigint;
  getNeededCount(): number;
  getNeeded(i: number): bigint;
}

let instance: ElfExports | null = null;

function elfModule(): ElfExports {
  if (instance) return instance;
  const bytes = Uint8Array.from(atob(ELF_WASM_BASE64), (c) => c.charCodeAt(0));
  const module = new WebAssembly.Module(bytes);
  const imports = {
    env: {
      abort: () => {
        throw new ElfError("malformed", "the ELF parser aborted");
      },
    },
  };
  instance = new WebAssembly.Instance(module, imports).exports as unknown as ElfExports;
  return instance;
}

/** The NUL-terminated string at `offset` of `bytes`, as a byte string; null for -1. */
function cString(bytes: Uint8Array, offset: bigint): string | null {
  if (offset < 0n) return null;
  const start = Number(offset);
  let end = start;
  while (end < bytes.length && bytes[end] !== 0) end++;
  let s = "";
  for (let i = start; i < end; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

/** Parses the dynamic-linking facts of an ELF file (64-bit little-endian). */
export function parseElf(bytes: Uint8Array): ElfInfo {
  const elf = elfModule();
  const ptr = elf.alloc(bytes.length);
  try {
    new Uint8Array(elf.memory.buffer, ptr, bytes.length).set(bytes);
    const rc = elf.parse();
    if (rc === -1) throw new ElfError("not-elf", "not an ELF file");
    if (rc === -2) {
      throw new ElfError(
        "unsupported",
        `ELF class ${elf.getClass()} machine ${elf.getMachine()}: only 64-bit little-endian`,
      );
    }
    if (rc !== 0) throw new ElfError("malformed", `malformed ELF headers (${rc})`);
    const needed: string[] = [];
    for (let i = 0; i < elf.getNeededCount(); i++) {
      const name = cString(bytes, elf.getNeeded(i));
      if (name === null) throw new ElfError("malformed", "DT_NEEDED outside the string table");
      needed.push(name);
    }
    return {
      machine: elf.getMachine(),
      elfClass: elf.getClass(),
      interp: cString(bytes, elf.getInterp()),
      needed,
      rpath: cString(bytes, elf.getRpath()),
      runpath: cString(bytes, elf.getRunpath()),
      soname: cString(bytes, elf.getSoname()),
    };
  } finally {
    elf.release();
  }
}
