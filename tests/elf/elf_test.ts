import assert from "node:assert/strict";
import { ElfError, EM_X86_64, parseElf } from "../../lib/elf/mod.ts";

/** What binutils' readelf says of the same file: the reference. */
async function readelf(path: string) {
  const run = async (flag: string) =>
    new TextDecoder().decode(
      (await new Deno.Command("readelf", { args: [flag, "-W", path] }).output()).stdout,
    );
  const dyn = await run("-d");
  const pick = (tag: string) =>
    [...dyn.matchAll(new RegExp(`\\(${tag}\\)\\s+.*?\\[(.*)\\]`, "g"))].map((m) => m[1]);
  const interp = /Requesting program interpreter: (.*)\]/.exec(await run("-l"))?.[1] ?? null;
  return {
    interp,
    needed: pick("NEEDED"),
    rpath: pick("RPATH")[0] ?? null,
    runpath: pick("RUNPATH")[0] ?? null,
    soname: pick("SONAME")[0] ?? null,
  };
}

const FILES = [
  "/bin/ls",
  "/usr/bin/ssh",
  "/usr/bin/python3.11",
  "/usr/bin/ffmpeg",
  "/lib/x86_64-linux-gnu/libc.so.6",
  "/lib64/ld-linux-x86-64.so.2",
  "/usr/lib/x86_64-linux-gnu/libavcodec.so.59",
];

for (const path of FILES) {
  Deno.test(`elf: ${path} parses as readelf reads it`, async () => {
    const info = parseElf(await Deno.readFile(path));
    assert.equal(info.machine, EM_X86_64);
    assert.equal(info.elfClass, 2);
    const { interp, needed, rpath, runpath, soname } = info;
    assert.deepEqual({ interp, needed, rpath, runpath, soname }, await readelf(path));
  });
}

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
