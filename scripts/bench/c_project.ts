/**
 * A generated C project shaped like the small real ones people build: compile units
 * in src/ that include local headers from include/ and src/ and the C library's, a
 * Makefile with objects in obj/, and a `configure` that runs checks the way autoconf's
 * do (a conftest.c written, compiled, removed; a config.h written at the end).
 * Generated, so that its size can be swept and nothing of another project is kept here.
 */

/** make in project `name` (below the cwd), rebuilding every object and the program (-B). */
export function makeArgv(name: string, jobs = 2): string[] {
  return ["make", "-s", "-B", `-j${jobs}`, "--no-print-directory", "-C", name];
}

/** The configure-like script of project `name` (below the cwd). */
export function configureArgv(name: string): string[] {
  return ["sh", "-c", `cd ${name} && sh ./configure`];
}

/** Writes the project into `dir` (its parent must exist): `units` units and main.c. */
export async function writeCProject(dir: string, units: number, checks = 30): Promise<void> {
  for (const d of ["include", "src", "obj"]) await Deno.mkdir(`${dir}/${d}`, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/include/common.h`,
    "#ifndef COMMON_H\n#define COMMON_H\n#include <stddef.h>\n#include <string.h>\n" +
      '#include "config.h"\nstruct buf { char *p; size_t n; };\n' +
      "size_t mix(const struct buf *b, size_t seed);\n#endif\n",
  );
  await Deno.writeTextFile(`${dir}/include/config.h`, "#define PROJECT_UNITS " + units + "\n");
  const calls: string[] = [];
  for (let i = 0; i < units; i++) {
    await Deno.writeTextFile(
      `${dir}/src/u${i}.h`,
      `#ifndef U${i}_H\n#define U${i}_H\nint unit${i}(int x);\n#endif\n`,
    );
    await Deno.writeTextFile(
      `${dir}/src/u${i}.c`,
      `#include <stdio.h>\n#include <stdlib.h>\n#include "common.h"\n#include "u${i}.h"\n` +
        `static int table${i}[64];\n` +
        `int unit${i}(int x) {\n  for (int k = 0; k < 64; k++) table${i}[k] = k * ${i + 1} ^ x;\n` +
        `  char s[32];\n  snprintf(s, sizeof s, "%d", table${i}[x & 63]);\n` +
        `  return (int)strlen(s) + atoi(s);\n}\n`,
    );
    calls.push(`  sum += unit${i}(${i});`);
  }
  await Deno.writeTextFile(
    `${dir}/src/main.c`,
    `#include <stdio.h>\n#include "common.h"\n` +
      Array.from({ length: units }, (_, i) => `#include "u${i}.h"\n`).join("") +
      `size_t mix(const struct buf *b, size_t seed) { return b->n ^ seed; }\n` +
      `int main(void) {\n  long sum = 0;\n${calls.join("\n")}\n` +
      `  printf("%ld %d\\n", sum, PROJECT_UNITS);\n  return 0;\n}\n`,
  );
  const objs = [...Array.from({ length: units }, (_, i) => `obj/u${i}.o`), "obj/main.o"];
  await Deno.writeTextFile(
    `${dir}/Makefile`,
    `CFLAGS = -O1 -Iinclude -Isrc\nOBJS = ${objs.join(" ")}\n\n` +
      `prog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\n` +
      `obj/%.o: src/%.c include/common.h include/config.h\n\t$(CC) $(CFLAGS) -c -o $@ $<\n`,
  );
  const tests = Array.from(
    { length: checks },
    (_, i) =>
      `check "header ${i}" '#include <stdio.h>\n#include <stdlib.h>\nint f${i}(void) { return ${i}; }'`,
  );
  await Deno.writeTextFile(
    `${dir}/configure`,
    `#!/bin/sh\n# Checks as autoconf's: each writes, compiles and removes a conftest.\n` +
      `set -e\n: > config.log\nfound=0\n` +
      `check() {\n  printf '%b\\n' "$2" > conftest.c\n` +
      `  if \${CC:-cc} -c conftest.c -o conftest.o >> config.log 2>&1; then found=$((found+1)); fi\n` +
      `  rm -f conftest.c conftest.o\n}\n` +
      tests.join("\n") +
      `\necho "#define CHECKS_FOUND $found" > config.h.tmp\nmv config.h.tmp config.h\n`,
  );
}
