import assert from "node:assert/strict";
import { ElfError, EM_X86_64, loaderRanges, parseElf, resolveClosure } from "../../lib/elf/mod.ts";

/** What binutils' readelf says of the same file: the reference. */
async function readelf(path: string) {
  const run = async (flag: string) =>
    new TextDecoder().decode(
      (await new Deno.Command("readelf", { args: [flag, "-W", path] }).output()).stdout,
    );
  const dyn = await run("-d");
  const pick = (tag: string) =>
    [...dyn.matchAll(new RegExp(`\\(${tag}\\)\\s+.*?\\[(.*)\\]`, "g"))].map((m) => m[1]);
  const phdrs = await run("-l");
  const interp = /Requesting program interpreter: (.*)\]/.exec(phdrs)?.[1] ?? null;
  const flagBits = (f: string) =>
    (f.includes("R") ? 4 : 0) | (f.includes("W") ? 2 : 0) | (f.includes("E") ? 1 : 0);
  const loads = [...phdrs.matchAll(
    /^\s*LOAD\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+([RWE ]+?)\s+0x/gm,
  )].map((m) => ({ offset: Number(m[1]), size: Number(m[2]), flags: flagBits(m[3]) }));
  return {
    loads,
    interp,
    needed: pick("NEEDED"),
    rpath: pick("RPATH")[0] ?? null,
    runpath: pick("RUNPATH")[0] ?? null,
    soname: pick("SONAME")[0] ?? null,
  };
}

/** The one file of `dir` whose name matches `name` (versions differ between releases). */
function versioned(dir: string, name: RegExp): string {
  const found = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => name.test(n));
  assert.equal(found.length, 1, `${name} in ${dir}: ${found}`);
  return `${dir}/${found[0]}`;
}

const FILES = [
  "/bin/ls",
  "/usr/bin/ssh",
  Deno.realPathSync("/usr/bin/python3"), // python3.11 on Debian 12, 3.13 on 13
  "/usr/bin/ffmpeg",
  "/lib/x86_64-linux-gnu/libc.so.6",
  "/lib64/ld-linux-x86-64.so.2",
  versioned("/usr/lib/x86_64-linux-gnu", /^libavcodec\.so\.\d+$/),
];

for (const path of FILES) {
  Deno.test(`elf: ${path} parses as readelf reads it`, async () => {
    const info = parseElf(await Deno.readFile(path));
    assert.equal(info.machine, EM_X86_64);
    assert.equal(info.elfClass, 2);
    const { interp, needed, rpath, runpath, soname, loads } = info;
    assert.deepEqual({ loads, interp, needed, rpath, runpath, soname }, await readelf(path));
  });
}

Deno.test("elf: what ld.so reads of a library to load it: the tables before the code, the writable segments", () => {
  const R = 4, W = 2, X = 1;
  const loads = [
    { offset: 0, size: 0xe49e0, flags: R }, // headers, .dynsym, .dynstr, .rela.dyn
    { offset: 0xe5000, size: 0x8555b5, flags: R | X }, // code
    { offset: 0x93b000, size: 0x1ea068, flags: R }, // .rodata, .eh_frame
    { offset: 0xb25318, size: 0xde448, flags: R | W }, // .data.rel.ro, .got, .data
  ];
  assert.deepEqual(loaderRanges({ loads }), [[0, 0xe49e0], [0xb25318, 0xb25318 + 0xde448]]);
  assert.deepEqual(loaderRanges({ loads: [] }), []);
  // No code at all (a data-only object): its writable segments only.
  assert.deepEqual(loaderRanges({ loads: [loads[0], loads[3]] }), [[0xb25318, 0xc03760]]);
});

Deno.test("elf: a binary with RUNPATH", async () => {
  // deno's npm packages are plain; build one with gcc instead.
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/m.c`, "int main(void) { return 0; }\n");
    const out = await new Deno.Command("gcc", {
      args: [
        `${dir}/m.c`,
        "-o",
        `${dir}/m`,
        "-Wl,-rpath,$ORIGIN/../lib:/opt/x",
        "-Wl,--enable-new-dtags",
      ],
    }).output();
    assert.ok(out.success);
    const info = parseElf(await Deno.readFile(`${dir}/m`));
    assert.equal(info.runpath, "$ORIGIN/../lib:/opt/x");
    assert.equal(info.rpath, null);
    assert.deepEqual(info.needed, ["libc.so.6"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("elf: a static binary has no interpreter and no libraries", async () => {
  const info = parseElf(await Deno.readFile("/bin/busybox"));
  assert.equal(info.interp, null);
  assert.deepEqual(info.needed, []);
});

Deno.test("elf: not ELF, 32-bit, and garbage are typed errors", () => {
  assert.throws(
    () => parseElf(new TextEncoder().encode("#!/bin/sh\necho hi\n")),
    (e) => e instanceof ElfError && e.reason === "not-elf",
  );
  const elf32 = new Uint8Array(64);
  elf32.set([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1]);
  assert.throws(() => parseElf(elf32), (e) => e instanceof ElfError && e.reason === "unsupported");
  assert.throws(() => parseElf(new Uint8Array(0)), ElfError);
});

Deno.test("elf property: every truncation and random corruption of a real binary is handled", async () => {
  const ls = await Deno.readFile("/bin/ls");
  for (let n = 0; n < 4096; n += 7) {
    try {
      parseElf(ls.subarray(0, n));
    } catch (e) {
      assert.ok(e instanceof ElfError, `truncated to ${n}: ${e}`);
    }
  }
  let seed = 7;
  const rand = (k: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % k;
  for (let i = 0; i < 2000; i++) {
    const copy = ls.slice(0, 65536);
    for (let j = 0; j < 8; j++) copy[rand(4096)] = rand(256);
    try {
      const info = parseElf(copy);
      assert.ok(Array.isArray(info.needed));
    } catch (e) {
      assert.ok(e instanceof ElfError, `corruption ${i}: ${e}`);
    }
  }
});

/** `ldd`'s "name => path" lines: the loader's own answer. */
async function ldd(path: string, env: Record<string, string> = {}): Promise<string[]> {
  const out = await new Deno.Command("ldd", { args: [path], env }).output();
  const text = new TextDecoder().decode(out.stdout);
  return [...text.matchAll(/^\s+(\S+) => (\S+)/gm)].map((m) => `${m[1]} => ${m[2]}`).sort();
}

function closureLines(exe: string, ldLibraryPath?: string): string[] {
  return resolveClosure(exe, { ldLibraryPath }).libraries.map((l) => `${l.name} => ${l.path}`)
    .sort();
}

const CLOSURES = ["/usr/bin/ffmpeg", "/usr/bin/python3", "/usr/bin/gcc", "/usr/bin/ssh"];
for (const exe of CLOSURES) {
  Deno.test(`elf resolve: the closure of ${exe} is what ldd lists`, async () => {
    const want = await ldd(exe);
    assert.ok(want.length > 0);
    assert.deepEqual(closureLines(exe), want);
    assert.deepEqual(resolveClosure(exe).missing, []);
  });
}

Deno.test("elf resolve: RPATH, LD_LIBRARY_PATH, RUNPATH with $ORIGIN, missing libraries", async () => {
  const dir = await Deno.makeTempDir();
  const gcc = async (...args: string[]) => {
    const out = await new Deno.Command("gcc", { args, cwd: dir }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
  };
  try {
    await Deno.mkdir(`${dir}/lib`);
    await Deno.mkdir(`${dir}/alt`);
    await Deno.mkdir(`${dir}/bin`);
    await Deno.writeTextFile(`${dir}/a.c`, "int a(void) { return 1; }\n");
    await Deno.writeTextFile(`${dir}/m.c`, "int a(void); int main(void) { return a(); }\n");
    for (const d of ["lib", "alt"]) {
      await gcc("-shared", "-fPIC", "a.c", "-o", `${d}/liba.so`, "-Wl,-soname,liba.so");
    }
    // RUNPATH: LD_LIBRARY_PATH wins over it.
    await gcc(
      "m.c",
      "-o",
      "bin/run",
      "-Llib",
      "-la",
      "-Wl,-rpath,$ORIGIN/../lib",
      "-Wl,--enable-new-dtags",
    );
    // RPATH: it wins over LD_LIBRARY_PATH.
    await gcc(
      "m.c",
      "-o",
      "bin/rp",
      "-Llib",
      "-la",
      "-Wl,-rpath,$ORIGIN/../lib",
      "-Wl,--disable-new-dtags",
    );
    for (const exe of ["run", "rp"]) {
      for (const llp of [undefined, `${dir}/alt`]) {
        const want = await ldd(`${dir}/bin/${exe}`, llp ? { LD_LIBRARY_PATH: llp } : {});
        assert.deepEqual(closureLines(`${dir}/bin/${exe}`, llp), want, `${exe} ${llp}`);
      }
    }
    const liba = (exe: string, llp: string) =>
      closureLines(`${dir}/bin/${exe}`, llp).filter((l) => l.startsWith("liba"));
    assert.deepEqual(liba("run", `${dir}/alt`), [`liba.so => ${dir}/alt/liba.so`]);
    assert.deepEqual(liba("rp", `${dir}/alt`), [`liba.so => ${dir}/bin/../lib/liba.so`]);
    // A missing library is reported, with the paths tried.
    await Deno.remove(`${dir}/lib/liba.so`);
    const c = resolveClosure(`${dir}/bin/run`);
    assert.deepEqual(c.missing, ["liba.so"]);
    assert.ok(c.probes.includes(`${dir}/bin/../lib/liba.so`), c.probes.join("\n"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("elf resolve: a static or non-ELF executable", () => {
  assert.deepEqual(resolveClosure("/bin/busybox").libraries, []);
  assert.throws(() => resolveClosure("/etc/passwd"), ElfError);
  assert.throws(() => resolveClosure("/nonexistent"), ElfError);
});
