import assert from "node:assert/strict";
import { resolveCommand } from "../../lib/session/which.ts";
import { aheadPaths, BIND_DIRS } from "../../lib/session/protocol.ts";
import { removeTree } from "../remove_tree.ts";

Deno.test("resolveCommand: as a shell finds argv[0], as a plain absolute path", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outrun-resolve-" });
  try {
    await Deno.mkdir(`${dir}/a/bin`, { recursive: true });
    await Deno.mkdir(`${dir}/b`);
    await Deno.writeTextFile(`${dir}/run.sh`, "#!/bin/sh\n");
    await Deno.chmod(`${dir}/run.sh`, 0o755);
    await Deno.writeTextFile(`${dir}/b/tool`, "not executable\n");
    await Deno.writeTextFile(`${dir}/a/bin/tool`, "#!/bin/sh\n");
    await Deno.chmod(`${dir}/a/bin/tool`, 0o755);
    // Names with a slash are taken as they are, made absolute and plain (no "." or "..").
    assert.equal(resolveCommand("./run.sh", dir, ""), `${dir}/run.sh`);
    assert.equal(resolveCommand("a/../run.sh", dir, ""), `${dir}/run.sh`);
    assert.equal(resolveCommand(`${dir}/./a/bin/../../run.sh`, "/", ""), `${dir}/run.sh`);
    // Without a slash: the first executable regular file in PATH (relative entries from cwd).
    assert.equal(resolveCommand("tool", dir, `${dir}/b:a/bin`), `${dir}/a/bin/tool`);
    assert.equal(resolveCommand("tool", dir, `${dir}/b`), null, "not executable");
    assert.equal(resolveCommand("a", dir, dir), null, "a directory");
    assert.equal(resolveCommand("nope", dir, "/usr/bin"), null);
    assert.equal(resolveCommand("sh", dir, "/usr/bin:/bin")?.endsWith("/sh"), true);
  } finally {
    await removeTree(dir);
  }
});

Deno.test("ahead: bind points, cwd, the command, and argv[0] along PATH when it is a bare name", () => {
  const req = {
    cwd: "/home/u/src",
    exe: "/usr/bin/gcc",
    argv: ["gcc", "-c", "x.c"],
    env: { PATH: "/home/u/.cargo/bin:relative:/usr/bin/:/home/u/.cargo/bin" },
  };
  assert.deepEqual(aheadPaths(req), [
    ...BIND_DIRS,
    "/home/u/src",
    "/usr/bin/gcc",
    "/home/u/.cargo/bin/gcc",
    "/usr/bin/gcc",
  ]);
  assert.deepEqual(aheadPaths({ ...req, argv: ["./gcc"] }), [...BIND_DIRS, req.cwd, req.exe]);
  assert.deepEqual(aheadPaths({ ...req, exe: null, env: {} }), [...BIND_DIRS, req.cwd]);
});
