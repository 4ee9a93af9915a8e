/** growPipe: a pipe on stdin grows to a megabyte; anything else is left alone. */
import assert from "node:assert/strict";

const PROBE = `
import { growPipe } from "${new URL("../../lib/sys/files.ts", import.meta.url).href}";
console.log(JSON.stringify(growPipe(0)));
`;

async function growStdin(stdin: "piped" | "null"): Promise<number | null> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", PROBE],
    stdin,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  if (stdin === "piped") await child.stdin.close();
  const out = await child.output();
  assert.ok(out.success);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("growPipe: a pipe grows to 1 MiB (or the most allowed), /dev/null is no pipe", async () => {
  const max = Number(Deno.readTextFileSync("/proc/sys/fs/pipe-max-size"));
  assert.equal(await growStdin("piped"), Math.min(1024 * 1024, max));
  assert.equal(await growStdin("null"), null);
});
