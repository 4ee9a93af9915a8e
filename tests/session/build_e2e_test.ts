/**
 * Builds through outrun on the test bed (needs root): what the issue of builds asks of
 * the working tree kept on the remote. Two builds side by side in one tree, from two
 * sessions (each keeping names and attributes long, each told of the other's changes by
 * its local side's watch, each waiting on a file the other makes), then a link: the
 * objects and the program are byte-identical to those built here.
 */
import assert from "node:assert/strict";
import { sshConfigPath, up } from "../testbed/testbed.ts";
import { removeTree } from "../remove_tree.ts";
import { finished, OUTRUN, outrunEnv } from "./outrun_run.ts";
import { writeCProject } from "../../scripts/bench/c_project.ts";

const LIMIT_MS = 180_000;
const UNITS = 16;

function outrun(home: string, cwd: string, host: string, argv: string[]) {
  const child = new Deno.Command(OUTRUN, {
    args: ["-F", sshConfigPath, host, ...argv],
    cwd,
    env: outrunEnv(home),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return finished<unknown>(child, `${home}/no-stats`, LIMIT_MS);
}

async function make(cwd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command("make", { args, cwd, stdout: "null", stderr: "piped" })
    .output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

Deno.test("build e2e: two builds side by side in one tree, then a link: byte-identical to a local build", async () => {
  await up();
  const home = await Deno.makeTempDir({ prefix: "outrun-build-e2e-home-" });
  const work = await Deno.makeTempDir({ prefix: "outrun-build-e2e-" });
  try {
    await writeCProject(`${work}/proj`, UNITS);
    await writeCProject(`${work}/here`, UNITS);
    const objects = (from: number, to: number) =>
      Array.from({ length: to - from }, (_, i) => `obj/u${from + i}.o`);
    // Each session waits on a file the other makes, having looked for it first (a name
    // known absent there, kept 60 s): seen only because its local side tells of it.
    const wait = (file: string) =>
      `i=0; until [ -e ${file} ]; do sleep 0.1; i=$((i+1)); [ $i -lt 300 ] || exit 9; done`;
    const first = [
      "! [ -e obj/b.done ]", // not there yet: known absent there from now on
      "touch obj/a.started",
      `make -s -j2 ${objects(0, UNITS / 2).join(" ")}`,
      wait("obj/b.done"),
      "make -s && make -q", // the link sees every object, and nothing is made again
    ].join(" && ");
    const second = [
      wait("obj/a.started"),
      `make -s -j2 ${objects(UNITS / 2, UNITS).join(" ")}`,
      "touch obj/b.done",
    ].join(" && ");
    const [a, b] = await Promise.all([
      outrun(home, `${work}/proj`, "deb-wan", ["sh", "-c", first]),
      outrun(home, `${work}/proj`, "deb", ["sh", "-c", second]),
    ]);
    assert.equal(b.code, 0, b.stderr);
    assert.equal(a.code, 0, a.stderr);
    await make(`${work}/here`, ["-s", "-j2"]);
    const names = ["prog", ...objects(0, UNITS), "obj/main.o"];
    for (const name of names) {
      assert.deepEqual(
        await Deno.readFile(`${work}/proj/${name}`),
        await Deno.readFile(`${work}/here/${name}`),
        `${name} differs from the one built here`,
      );
    }
  } finally {
    await removeTree(work);
    await removeTree(home);
  }
});
