/**
 * The remote cache end to end on the test bed (needs root): round trips counted
 * by outrun itself (--stats, as JSON through OUTRUN_STATS_FILE), and what a run
 * sees after files under a cached prefix (/opt) change here between runs.
 * Each test has its own HOME (profiles, client id), so it starts from nothing.
 */
import { roundTrips } from "../../lib/session/stats.ts";
import assert from "node:assert/strict";
import { sshConfigPath, up } from "../testbed/testbed.ts";
import { removeTree } from "../remove_tree.ts";

import { finished, OUTRUN, outrunEnv, type Run as OutrunRun } from "./outrun_run.ts";

const LIMIT_MS = 240_000;

interface Stats {
  remote: {
    calls: Record<string, number>;
    cache: {
      held: number;
      checkedFirst: number;
      restWaits: number;
      directOpens: number;
      chunkHits: number;
    } | null;
  };
  rpc: { bytesIn: number; bytesOut: number };
  push: { early: number; prefetched: number; asked: number } | null;
}

type Run = OutrunRun<Stats>;

interface Bed {
  home: string;
  /** A directory under /opt: a cached prefix. */
  opt: string;
  run(host: string, argv: string[], flags?: string[]): Promise<Run>;
  cleanup(): Promise<void>;
}

async function bed(): Promise<Bed> {
  await up();
  const home = await Deno.makeTempDir({ prefix: "outrun-cache-e2e-home-" });
  await Deno.mkdir("/opt", { recursive: true });
  const opt = await Deno.makeTempDir({ prefix: "outrun-cache-e2e-", dir: "/opt" });
  const statsFile = `${home}/stats.json`;
  return {
    home,
    opt,
    async run(host, argv, flags = []) {
      await Deno.remove(statsFile).catch(() => {});
      const child = new Deno.Command(OUTRUN, {
        args: ["-F", sshConfigPath, "--stats", ...flags, host, ...argv],
        cwd: home,
        env: outrunEnv(home, statsFile),
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      return await finished<Stats>(child, statsFile, LIMIT_MS);
    },
    async cleanup() {
      await removeTree(home);
      await removeTree(opt);
    },
  };
}

function cacheCalls(r: Run): Record<string, number> {
  return Object.fromEntries(
    Object.entries(r.stats?.remote.calls ?? {}).filter(([k]) => k.startsWith("cache.")),
  );
}

function trips(s: Stats | null): number {
  return roundTrips(s?.remote.calls ?? {});
}

/**
 * A warm start's one round trip: the validation (the held names its command did not use
 * last time go with it, answered while it runs), and nothing waited for them.
 */
function oneTrip(r: Run): void {
  const calls = r.stats?.remote.calls ?? {};
  assert.equal(calls["cache.validate"], 1, r.stderr);
  assert.deepEqual(
    Object.keys(calls).filter((k) => k !== "cache.validate" && k !== "cache.validateRest"),
    [],
    r.stderr,
  );
  assert.equal(trips(r.stats), 1, r.stderr);
  assert.equal(r.stats?.remote.cache?.restWaits ?? 0, 0, r.stderr);
}

async function emptyRemoteCache(host: string): Promise<void> {
  const out = await new Deno.Command("ssh", {
    args: ["-F", sshConfigPath, host.replace(/-wan$/, ""), "rm -rf ~/.cache/outrun/cache"],
  }).output();
  assert.ok(out.success);
}

for (const host of ["deb", "tiny-wan"]) {
  Deno.test(`cache e2e ${host}: a warm start is one round trip; --no-cache makes none of the cache's`, async () => {
    const b = await bed();
    try {
      const first = await b.run(host, ["echo", "hi"]);
      assert.equal(first.code, 0, first.stderr);
      assert.equal(first.text, "hi\n");
      const warm = await b.run(host, ["echo", "hi"]);
      assert.equal(warm.text, "hi\n");
      oneTrip(warm);
      // Another command: what it used last time is checked first, the rest (echo's, and
      // what other tests left) while it runs.
      const other = await b.run(host, ["printf", "%s\n", "hi"]);
      assert.equal(other.text, "hi\n");
      const again = await b.run(host, ["printf", "%s\n", "hi"]);
      assert.equal(again.text, "hi\n");
      oneTrip(again);
      assert.equal(again.stats?.remote.calls["cache.validateRest"], 1, again.stderr);
      const c = again.stats!.remote.cache!;
      assert.ok(c.checkedFirst > 0 && c.checkedFirst < c.held, JSON.stringify(c));
      const off = await b.run(host, ["echo", "hi"], ["--no-cache"]);
      assert.equal(off.text, "hi\n");
      const cacheCalls = Object.keys(off.stats!.remote.calls).filter((k) => k.startsWith("cache."));
      assert.deepEqual(cacheCalls, []);
      assert.ok(
        trips(off.stats) > 5,
        `without the cache each file crosses: ${JSON.stringify(off.stats)}`,
      );
    } finally {
      await b.cleanup();
    }
  });
}

Deno.test("cache e2e deb: files under a cached prefix changed here are seen by the next run", async () => {
  const b = await bed();
  try {
    await Deno.writeTextFile(`${b.opt}/data`, "one\n");
    await Deno.writeTextFile(`${b.opt}/gone`, "soon gone\n");
    const list = ["sh", "-c", `cat ${b.opt}/data; ls ${b.opt}`];
    let r = await b.run("deb", list);
    assert.equal(r.text, "one\ndata\ngone\n", r.stderr);
    r = await b.run("deb", list);
    assert.equal(r.text, "one\ndata\ngone\n");
    await Deno.writeTextFile(`${b.opt}/data`, "two, longer\n");
    await Deno.remove(`${b.opt}/gone`);
    await Deno.writeTextFile(`${b.opt}/new`, "new\n");
    r = await b.run("deb", list);
    assert.equal(r.text, "two, longer\ndata\nnew\n", r.stderr);
    // Same size, new bytes: the fingerprint has the modification time in nanoseconds.
    await Deno.writeTextFile(`${b.opt}/data`, "TWO, LONGER\n");
    r = await b.run("deb", ["cat", `${b.opt}/data`]);
    assert.equal(r.text, "TWO, LONGER\n");
  } finally {
    await b.cleanup();
  }
});

Deno.test("cache e2e deb: --no-prefetch sends nothing ahead; --no-passthrough reads cached files through the agent", async () => {
  const b = await bed();
  try {
    const data = crypto.getRandomValues(new Uint8Array(65_536));
    await Deno.writeFile(`${b.opt}/data`, data);
    const sum = async () =>
      new TextDecoder().decode(
        (await new Deno.Command("sha256sum", { args: [`${b.opt}/data`] }).output()).stdout,
      );
    const argv = ["sha256sum", `${b.opt}/data`];
    let r = await b.run("deb", argv);
    assert.equal(r.text, await sum(), r.stderr);
    // Changed here: the next start finds it stale, and its command used it last time.
    const next = async (flags: string[]) => {
      await Deno.writeFile(`${b.opt}/data`, crypto.getRandomValues(data));
      const run = await b.run("deb", argv, flags);
      assert.equal(run.text, await sum(), run.stderr);
      return run.stats!;
    };
    const ahead = await next([]);
    assert.ok(ahead.push!.prefetched > 0, `sent ahead: ${JSON.stringify(ahead.push)}`);
    const asked = await next(["--no-prefetch"]);
    assert.equal(asked.push!.prefetched, 0, JSON.stringify(asked.push));
    assert.ok(asked.push!.asked > 0, "asked for instead");
    // Held whole now: the remote kernel reads it itself, unless told not to.
    r = await b.run("deb", argv);
    assert.equal(r.text, await sum());
    assert.ok(r.stats!.remote.cache!.directOpens > 0, JSON.stringify(r.stats!.remote.cache));
    r = await b.run("deb", argv, ["--no-passthrough"]);
    assert.equal(r.text, await sum());
    assert.equal(r.stats!.remote.cache!.directOpens, 0, JSON.stringify(r.stats!.remote.cache));
    assert.ok(r.stats!.remote.cache!.chunkHits > 0, "read from the store by the agent");
  } finally {
    await b.cleanup();
  }
});

Deno.test("cache e2e deb: what a command writes under a cached prefix lands here", async () => {
  const b = await bed();
  try {
    await Deno.writeTextFile(`${b.opt}/data`, "kept\n");
    await b.run("deb", ["cat", `${b.opt}/data`]); // cached first
    const r = await b.run("deb", [
      "sh",
      "-c",
      `cd ${b.opt} && echo made > made && mv data moved && echo more >> moved && ` +
      `chmod 600 made && cat moved && ls`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.text, "kept\nmore\nmade\nmoved\n");
    assert.equal(await Deno.readTextFile(`${b.opt}/made`), "made\n");
    assert.equal(await Deno.readTextFile(`${b.opt}/moved`), "kept\nmore\n");
    assert.equal((await Deno.stat(`${b.opt}/made`)).mode! & 0o777, 0o600);
    await assert.rejects(Deno.stat(`${b.opt}/data`), Deno.errors.NotFound);
    // And the next run sees that state.
    const next = await b.run("deb", ["sh", "-c", `cat ${b.opt}/moved; ls ${b.opt}`]);
    assert.equal(next.text, "kept\nmore\nmade\nmoved\n");
  } finally {
    await b.cleanup();
  }
});

Deno.test("cache e2e deb-wan: ls -l of a local directory of 500 files is 4 round trips and the way there, xattrs as they are", async () => {
  const b = await bed();
  try {
    const dir = `${b.home}/many`;
    await Deno.mkdir(dir);
    for (let i = 0; i < 500; i++) await Deno.writeTextFile(`${dir}/f${i}`, `${i}\n`);
    const mark = new Deno.Command("setfattr", {
      args: ["-n", "user.mark", "-v", "m7", `${dir}/f7`],
    });
    assert.ok((await mark.output()).success);
    const list = ["sh", "-c", `ls -l ${dir} | wc -l`];
    await b.run("deb-wan", list); // the cache warm: what is counted below is the directory's
    const r = await b.run("deb-wan", list);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.text, "501\n");
    // The README's figure, each part named (before entries came with their opening,
    // attributes and xattr names: ~1,500 round trips, a lookup and two GETXATTRs a file).
    const calls = r.stats!.remote.calls;
    const what = JSON.stringify(calls);
    assert.equal(calls["cache.validate"], 1, what); // the start's one
    // The way there, /tmp/<home>/many: at most a lookup per name (fewer when the
    // profile's lookups came with the validation, as they do when the run before
    // made the same ones).
    const way = `${dir}`.split("/").filter(Boolean).length;
    assert.ok(calls["fs.lookup"] >= 1 && calls["fs.lookup"] <= way, what);
    assert.equal(calls["fs.readlink"], 1, what); // ls's one link outside the cache
    assert.equal(calls["fs.opendirAhead"], 1, what); // the opening, with the first entries
    assert.equal(calls["fs.readdirAhead"], 1, what); // the rest, in one batch
    assert.equal(calls["fs.getxattr"] ?? 0, 0, what); // xattr names came with the entries
    assert.equal(trips(r.stats), 4 + calls["fs.lookup"], what);
    // And an xattr that is there is read as it is.
    const x = await b.run("deb-wan", ["getfattr", "--only-values", "-n", "user.mark", `${dir}/f7`]);
    assert.equal(x.text, "m7");
  } finally {
    await b.cleanup();
  }
});

Deno.test("cache e2e deb: a command installed outside the cached prefixes has its own tree cached (exe_prefix)", async () => {
  const b = await bed();
  const tool = await Deno.makeTempDir({ prefix: "outrun-tool-" });
  try {
    await Deno.mkdir(`${tool}/bin`);
    await Deno.mkdir(`${tool}/share`);
    for (let i = 0; i < 20; i++) await Deno.writeTextFile(`${tool}/share/part${i}`, `${i}\n`);
    // As a runtime reads its library: file after file of its own tree.
    await Deno.writeTextFile(
      `${tool}/bin/prog`,
      '#!/bin/sh\nhere=$(dirname "$0")/..\ncat "$here"/share/part* | wc -l\n',
    );
    await Deno.chmod(`${tool}/bin/prog`, 0o755);
    const off = `${b.home}/off.conf`;
    await Deno.writeTextFile(off, "[cache]\nexe_prefix = no\n");
    const fsCalls = (r: Run) =>
      Object.entries(r.stats?.remote.calls ?? {})
        .filter(([k]) => ["fs.open", "fs.openAhead", "fs.read"].includes(k))
        .reduce((n, [, c]) => n + c, 0);
    await b.run("deb", [`${tool}/bin/prog`]);
    const warm = await b.run("deb", [`${tool}/bin/prog`]);
    assert.equal(warm.code, 0, warm.stderr);
    assert.equal(warm.text.trim(), "20");
    assert.equal(fsCalls(warm), 0, JSON.stringify(warm.stats?.remote.calls));
    const uncached = await b.run("deb", [`${tool}/bin/prog`], ["--config", off]);
    assert.equal(uncached.text.trim(), "20");
    assert.ok(fsCalls(uncached) >= 21, JSON.stringify(uncached.stats?.remote.calls));
    // A change here is seen by the next run.
    await Deno.writeTextFile(`${tool}/share/part20`, "20\n");
    const changed = await b.run("deb", [`${tool}/bin/prog`]);
    assert.equal(changed.text.trim(), "21");
  } finally {
    await b.cleanup();
    await removeTree(tool);
  }
});

Deno.test("cache e2e deb-wan: ffmpeg's profile makes a cold start a handful of round trips", async () => {
  const b = await bed();
  try {
    await emptyRemoteCache("deb-wan");
    const first = await b.run("deb-wan", ["ffmpeg", "-version"]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.text, /^ffmpeg version/);
    await emptyRemoteCache("deb-wan");
    const cold = await b.run("deb-wan", ["ffmpeg", "-version"], ["-v"]);
    assert.equal(cold.text, first.text);
    // The probe that starts the agent saw the remote cache gone: the profile went out
    // behind the run request, unasked, and the validation's answer with it (no round
    // trip for it).
    assert.match(cold.stderr, /the remote cache is empty/);
    assert.ok(cold.stats!.push!.early > 0, "the profile's chunks went unasked");
    // Not exact, as they depend on timing: a chunk or two the kernel's readahead asks
    // for at other offsets than last time, and a few lookups in / (selinux probes) once
    // the local side's 1 s entry timeout runs out before ffmpeg is done.
    const calls = (r: Run) => JSON.stringify(r.stats?.remote.calls);
    const asked = (r: Run) => Object.values(cacheCalls(r)).reduce((n, c) => n + c, 0);
    assert.equal(cacheCalls(cold)["cache.validate"], undefined, calls(cold));
    assert.ok(asked(cold) <= 3, calls(cold));
    assert.ok(trips(cold.stats) <= 10, calls(cold));
    assert.ok(
      trips(first.stats) > 20 * trips(cold.stats),
      "the first run paid for what the profile saves",
    );
    assert.equal(first.stats!.push!.early, 0, "no profile yet: nothing to send unasked");
    const warm = await b.run("deb-wan", ["ffmpeg", "-version"], ["-v"]);
    assert.equal(warm.text, first.text);
    assert.doesNotMatch(warm.stderr, /the remote cache is empty/);
    assert.equal(warm.stats!.push!.early, 0);
    // What it holds beyond what ffmpeg used (the closure's other names) is checked while
    // it runs, with no round trip of its own: one round trip, the validation. The few
    // names it touches outside the cache (3, in /) come with it, each kept by the
    // remote for the 1 s the local side allows: a run slower than that (the suite
    // under load) asks again, a lookup and a getattr each at most.
    assert.equal(cacheCalls(warm)["cache.validate"], 1, calls(warm));
    const beyond = Object.entries(warm.stats!.remote.calls).filter(([m]) =>
      !["cache.validate", "cache.validateRest", "fs.lookup", "fs.getattr"].includes(m)
    );
    assert.deepEqual(beyond, [], calls(warm));
    assert.ok(trips(warm.stats) <= 1 + 2 * 3, calls(warm));
    assert.ok(
      warm.stats!.rpc.bytesIn + warm.stats!.rpc.bytesOut < 2e6,
      "warm moves metadata only",
    );
  } finally {
    await b.cleanup();
  }
});
