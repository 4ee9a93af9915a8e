import assert from "node:assert/strict";
import { exePrefix, resolveCommand } from "../../lib/session/which.ts";
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

Deno.test("exePrefix: the tree a command outside the cached prefixes was installed in, not the user's own files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outrun-exeprefix-" });
  try {
    const home = `${dir}/home/u`;
    for (
      const d of [
        `${home}/.pyenv/shims`,
        `${home}/bin`,
        `${home}/src/proj/venv/bin`,
        `${dir}/usr/bin`,
      ]
    ) {
      await Deno.mkdir(d, { recursive: true });
    }
    const exe = async (path: string) => {
      await Deno.writeTextFile(path, "#!/bin/sh\n");
      await Deno.chmod(path, 0o755);
      return path;
    };
    const shim = await exe(`${home}/.pyenv/shims/python3`);
    const mine = await exe(`${home}/bin/tool`);
    const venv = await exe(`${home}/src/proj/venv/bin/python`);
    const sys = await exe(`${dir}/usr/bin/ls`);
    await Deno.symlink(shim, `${home}/bin/py`);
    const prefixes = [`${dir}/usr`];
    const at = (path: string | null, cwd = `${home}/src/proj`) =>
      exePrefix(path, cwd, home, prefixes);
    assert.equal(at(shim), `${home}/.pyenv`);
    assert.equal(at(`${home}/bin/py`), `${home}/.pyenv`, "through a symlink: where it really is");
    assert.equal(at(mine), null, "the home directory itself");
    assert.equal(at(venv), `${home}/src/proj/venv`, "a project's venv");
    assert.equal(at(shim, home), `${home}/.pyenv`, "run from the home directory");
    assert.equal(at(venv, `${home}/src/proj/venv/lib`), null, "it holds the cwd");
    assert.equal(at(shim, `${home}/.pyenv`), null, "the cwd is it");
    assert.equal(at(sys), null, "under a cached prefix already");
    assert.equal(at(null), null);
    assert.equal(at(`${dir}/gone/bin/x`), null, "not there");
    assert.equal(exePrefix("/x/bin/tool", "/tmp", "/home/u", []), null, "a top directory");
  } finally {
    await removeTree(dir);
  }
});
