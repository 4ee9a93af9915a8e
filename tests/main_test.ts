import assert from "node:assert/strict";
import { VERSION } from "../lib/version.ts";

Deno.test("main: --version prints the version deno.json carries", async () => {
  const denoJson = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  assert.equal(VERSION, denoJson.version);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../main.ts", import.meta.url).pathname, "--version"],
  }).output();
  assert.equal(out.code, 0);
  assert.equal(new TextDecoder().decode(out.stdout), `outrun ${VERSION}\n`);
});

Deno.test("main: no host is a usage error with exit 255", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../main.ts", import.meta.url).pathname],
  }).output();
  assert.equal(out.code, 255);
  assert.match(new TextDecoder().decode(out.stderr), /usage: outrun/);
});
