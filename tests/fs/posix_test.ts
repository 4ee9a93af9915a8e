/**
 * POSIX conformance of the loopback: the same sequence of calls (tests/fs/posix_ops.py),
 * as root and then as an unprivileged user, on a plain directory and through a
 * loopback mount of an identical one; every result and errno must be the same.
 */
import { removeTree } from "../remove_tree.ts";
import assert from "node:assert/strict";
import { MODES, shOk, withLoopback } from "./loopback_helper.ts";

const PROBE = new URL("./posix_ops.py", import.meta.url).pathname;
const AS_NOBODY = "setpriv --reuid=65534 --regid=65534 --clear-groups";

async function probe(dir: string, phase: "root" | "user"): Promise<string[]> {
  const prefix = phase === "user" ? AS_NOBODY : "";
  return (await shOk(`${prefix} /usr/bin/python3 '${PROBE}' '${dir}' ${phase}`)).trimEnd().split(
    "\n",
  );
}

for (const mode of MODES) {
  Deno.test(`posix: every call answers the same through the ${mode} as on the directory`, async () => {
    const plain = await Deno.makeTempDir({ prefix: "outrun-posix-" });
    await Deno.chmod(plain, 0o755);
    try {
      await withLoopback(async ({ src, mnt }) => {
        await Deno.chmod(src, 0o755);
        for (const phase of ["root", "user"] as const) {
          const expected = await probe(plain, phase);
          const actual = await probe(mnt, phase);
          assert.ok(expected.length > 20, `${phase}: the probe ran (${expected.length} results)`);
          for (let i = 0; i < expected.length; i++) {
            assert.equal(actual[i], expected[i], `${phase} call ${i}`);
          }
          assert.equal(actual.length, expected.length);
        }
      }, { mode });
    } finally {
      await removeTree(plain);
    }
  });
}
