/** CacheService's prefetch decisions, seen as the pushes a remote would get. */
import assert from "node:assert/strict";
import {
  CacheService,
  type CacheServiceOptions,
  profileFile,
  ProfileWarmup,
} from "../../../lib/fs/cache/service.ts";
import {
  CACHE_EVENTS,
  CHUNK_SIZE,
  fingerprint,
  type HeldEntry,
  packHeld,
  type Profile,
  type Push,
  RUN_CHUNKS,
  unpackMeta,
  type ValidateReply,
} from "../../../lib/fs/cache/protocol.ts";
import { decompress } from "../../../lib/fs/cache/chunks.ts";
import { lstatPath } from "../../../lib/sys/files.ts";
import { LoopbackFs } from "../../../lib/fs/loopback.ts";
import { RpcPeer, type Value } from "../../../lib/rpc/mod.ts";
import { removeTree } from "../../remove_tree.ts";
import { pipePair } from "../../rpc/pipe.ts";

/** Writes `exe`'s profile where a service with `dir`/profiles looks for it. */
async function writeProfile(dir: string, exe: string, profile: Profile): Promise<void> {
  await Deno.mkdir(`${dir}/profiles`, { recursive: true });
  const file = profileFile(`${dir}/profiles`, await Deno.realPath(exe));
  await Deno.writeTextFile(file, JSON.stringify(profile));
}

/** Two RPC ends joined by a pipe: this machine's side and the remote's. */
function rpcPair(): [local: RpcPeer, remote: RpcPeer] {
  const [x, y] = pipePair();
  return [new RpcPeer(x, { program: "local" }), new RpcPeer(y, { program: "remote" })];
}

/** A service's options for files under `prefix`, profiles under `dir`/profiles (null: none). */
function serviceOptions(prefix: string, dir: string | null): CacheServiceOptions {
  return {
    prefixes: [prefix],
    prefetch: true,
    profileDir: dir === null ? null : `${dir}/profiles`,
    env: {},
    fs: new LoopbackFs({ root: "/" }),
    contentIndex: null,
  };
}

/** A service for `prefix` and what it pushes when the remote asks for `path`'s meta. */
async function pushesFor(prefix: string, path: string): Promise<Push[]> {
  const [local, remote] = rpcPair();
  const pushes: Push[] = [];
  remote.onEvent(CACHE_EVENTS.push, (p) => pushes.push(p as unknown as Push));
  new CacheService(local, serviceOptions(prefix, null));
  await remote.call("cache.meta", { path });
  await local.close();
  await remote.close();
  return pushes;
}

/** What the local side pushes to `remote`, and when it says all has gone (how many then). */
function collectPushes(remote: RpcPeer): { pushes: Push[]; allSent: Promise<number> } {
  const pushes: Push[] = [];
  remote.onEvent(CACHE_EVENTS.push, (p) => pushes.push(p as unknown as Push));
  const { promise: allSent, resolve } = Promise.withResolvers<number>();
  remote.onEvent(CACHE_EVENTS.pushed, () => resolve(pushes.length));
  return { pushes, allSent };
}

/** A validation's arguments as the remote sends them: `held`, then the command. */
function validateArgs(held: HeldEntry[], exe: string): Value {
  return { held: packHeld(held), exe, prefetch: true, ahead: [] } as unknown as Value;
}

Deno.test("service: a listed directory of Python modules brings its __pycache__ along", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outrun-pyc-" });
  try {
    const pkg = `${dir}/pkg`;
    await Deno.mkdir(`${pkg}/__pycache__`, { recursive: true });
    await Deno.writeTextFile(`${pkg}/__init__.py`, "");
    await Deno.writeTextFile(`${pkg}/mod.py`, "x = 1\n");
    await Deno.writeFile(`${pkg}/__pycache__/mod.cpython-311.pyc`, new Uint8Array(3000).fill(7));
    // Many modules: their bytecode is listed but not sent (an import uses a few).
    const big = `${dir}/big`;
    await Deno.mkdir(`${big}/__pycache__`, { recursive: true });
    for (let i = 0; i < 12; i++) {
      await Deno.writeTextFile(`${big}/m${i}.py`, "");
      await Deno.writeFile(`${big}/__pycache__/m${i}.cpython-311.pyc`, new Uint8Array(50_000));
    }
    // No .py: no reason to look there.
    await Deno.mkdir(`${dir}/data/__pycache__`, { recursive: true });

    const small = await pushesFor(dir, pkg);
    const metas = small.flatMap((p) => (p.metas ?? []).map(unpackMeta));
    // (Pushed twice: first as one of pkg's entries, then with its listing.)
    const cache = metas.find((m) => m.path === `${pkg}/__pycache__` && m.children);
    assert.deepEqual(cache?.children, ["mod.cpython-311.pyc"], "its listing");
    assert.ok(metas.some((m) => m.path === `${pkg}/__pycache__/mod.cpython-311.pyc`));
    const contents = small.flatMap((p) => p.contents ?? []).map((c) => c.path);
    assert.deepEqual(contents, [`${pkg}/__pycache__/mod.cpython-311.pyc`], "and its bytes");
    assert.deepEqual(small.flatMap((p) => p.runs ?? []).map((r) => r.indices), [[0]]);

    const many = await pushesFor(dir, big);
    const manyMetas = many.flatMap((p) => (p.metas ?? []).map(unpackMeta));
    assert.equal(
      manyMetas.find((m) => m.path === `${big}/__pycache__` && m.children)?.children?.length,
      12,
      "listed",
    );
    assert.deepEqual(many.flatMap((p) => p.contents ?? []), [], "600 KB stay here");

    const none = await pushesFor(dir, `${dir}/data`);
    assert.ok(
      !none.flatMap((p) => (p.metas ?? []).map(unpackMeta)).some((m) =>
        m.path === `${dir}/data/__pycache__` && m.children
      ),
    );
  } finally {
    await removeTree(dir);
  }
});

Deno.test("service: a profile's names go before the validation's answer, its chunks after it, announced", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outrun-replay-" });
  const [local, remote] = rpcPair();
  let service: CacheService | null = null;
  try {
    const prefix = `${dir}/usr`;
    await Deno.mkdir(`${prefix}/bin`, { recursive: true });
    const exe = `${prefix}/bin/tool`;
    // Text in ~45 chunks: the profile's 22 go in two runs; chunk 99 is past the end (a
    // profile of an older, longer version of the file).
    const data = new TextEncoder().encode(
      Array.from({ length: 120_000 }, (_, i) => `line ${i} of the tool\n`).join(""),
    );
    await Deno.writeFile(exe, data);
    const chunks = Math.ceil(data.length / CHUNK_SIZE);
    const wanted = [...Array(20).keys(), 25, 30, 99];
    await writeProfile(dir, exe, {
      metas: [`${prefix}/bin`, exe],
      listed: [],
      chunks: { [exe]: wanted },
    });
    const { pushes, allSent } = collectPushes(remote);
    service = new CacheService(local, serviceOptions(prefix, dir));
    const reply = await remote.call(
      "cache.validate",
      validateArgs([], exe),
    ) as unknown as ValidateReply;
    // Taken as the answer came: the names and the content id are there, and the answer
    // announces the chunks that follow it (the command starts meanwhile).
    const before = pushes.slice();
    assert.ok(before.some((p) => p.metas?.map(unpackMeta).some((m) => m.path === exe)));
    const content = before.find((p) => p.contents?.some((c) => c.path === exe))?.contents?.[0];
    assert.ok(content, "the content id before the answer");
    assert.deepEqual(reply.incoming, [{
      hash: content.hash,
      indices: wanted.filter((i) => i < chunks),
    }]);
    // Then every chunk, and the event that says so last.
    assert.equal(await allSent, pushes.length, "nothing after cache.pushed");
    const runs = pushes.flatMap((p) => p.runs ?? []);
    assert.deepEqual(
      runs.flatMap((r) => r.indices),
      wanted.filter((i) => i < chunks),
      "what the profile lists, once each",
    );
    assert.deepEqual(runs.map((r) => r.indices.length), [RUN_CHUNKS, 6]);
    for (const r of runs) {
      assert.equal(r.codec, "zstd");
      const joined = decompress(r.data, r.rawLength, r.codec);
      let at = 0;
      r.indices.forEach((index, i) => {
        assert.deepEqual(
          joined.subarray(at, at += r.lengths[i]),
          data.subarray(index * CHUNK_SIZE, (index + 1) * CHUNK_SIZE),
        );
      });
      assert.equal(at, joined.length);
    }
    assert.equal(service.stats.chunks, runs.flatMap((r) => r.indices).length);
  } finally {
    service?.close();
    await local.close();
    await remote.close();
    await removeTree(dir);
  }
});

Deno.test("service: a validation sends again only what changed of what the remote holds", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outrun-held-" });
  const prefix = `${dir}/usr`;
  const exe = `${prefix}/bin/tool`;
  const lib = `${prefix}/lib`;
  await Deno.mkdir(`${prefix}/bin`, { recursive: true });
  await Deno.mkdir(`${lib}/__pycache__`, { recursive: true });
  await Deno.writeTextFile(exe, "#!/bin/sh\n");
  await Deno.writeTextFile(`${lib}/a.py`, "a = 1\n");
  await Deno.writeTextFile(`${lib}/b.py`, "b = 1\n");
  await Deno.writeFile(`${lib}/__pycache__/a.cpython-311.pyc`, new Uint8Array(500).fill(1));
  await writeProfile(dir, exe, {
    metas: [exe, `${lib}/a.py`],
    listed: [lib],
    chunks: { [exe]: [0] },
  });
  /** One session: validates with `held`, returns its answer and what it pushed. */
  const session = async (held: HeldEntry[]) => {
    const [local, remote] = rpcPair();
    const { pushes, allSent } = collectPushes(remote);
    const service = new CacheService(local, serviceOptions(prefix, dir));
    try {
      const reply = await remote.call(
        "cache.validate",
        validateArgs(held, exe),
      ) as unknown as ValidateReply;
      await allSent;
      return { reply, pushes };
    } finally {
      service.close();
      await local.close();
      await remote.close();
    }
  };
  try {
    const first = await session([]);
    const metas = first.pushes.flatMap((p) => (p.metas ?? []).map(unpackMeta));
    const contents = first.pushes.flatMap((p) => p.contents ?? []);
    assert.deepEqual(
      metas.find((m) => m.path === lib && m.children)?.children?.sort(),
      ["__pycache__", "a.py", "b.py"],
    );
    assert.ok(contents.some((c) => c.path === `${lib}/__pycache__/a.cpython-311.pyc`));
    // What the remote holds after it: every name as pushed (the listed ones listed),
    // every content with all its chunks.
    const held: HeldEntry[] = [...new Map(metas.map((m) => [m.path, m])).values()].map((m) => {
      const c = contents.find((c) => c.path === m.path);
      return [
        m.path,
        fingerprint(m.attr, m.target),
        c?.hash ?? "",
        c ? new Uint8Array([0xff]) : new Uint8Array(0),
        metas.some((x) => x.path === m.path && x.children),
      ];
    });
    const unchanged = await session(held);
    assert.deepEqual(unchanged.reply.stale, []);
    assert.deepEqual(unchanged.reply.incoming, []);
    assert.deepEqual(unchanged.pushes, [], "nothing crosses for what is held unchanged");

    await Deno.writeTextFile(`${lib}/a.py`, "a = 2 # changed\n");
    const changed = await session(held);
    assert.deepEqual(changed.reply.stale, [`${lib}/a.py`]);
    assert.deepEqual(
      changed.pushes.flatMap((p) => (p.metas ?? []).map(unpackMeta)).map((m) => m.path),
      [`${lib}/a.py`],
      "the changed name alone, once",
    );

    // Checked in two parts: the names the command used last time first (its profile
    // waits: what goes depends on all the remote holds), then the rest with the pushes.
    await Deno.writeTextFile(`${lib}/a.py`, "a = 3 # changed again\n");
    const [local, remote] = rpcPair();
    const { pushes, allSent } = collectPushes(remote);
    const service = new CacheService(local, serviceOptions(prefix, dir));
    try {
      const first = await remote.call("cache.validate", {
        ...validateArgs(held.filter((r) => r[0] === exe), exe) as Record<string, Value>,
        rest: true,
      }) as unknown as ValidateReply;
      assert.deepEqual(first.stale, []);
      assert.equal(pushes.length, 0, "nothing pushed before the rest is known");
      const rest = await remote.call("cache.validateRest", {
        held: packHeld(held.filter((r) => r[0] !== exe)),
        exe,
        prefetch: true,
      } as unknown as Value) as unknown as ValidateReply;
      await allSent;
      assert.deepEqual(rest.stale, [`${lib}/a.py`]);
      assert.deepEqual(
        pushes.flatMap((p) => (p.metas ?? []).map(unpackMeta)).map((m) => m.path),
        [`${lib}/a.py`],
      );
    } finally {
      service.close();
      await local.close();
      await remote.close();
    }
  } finally {
    await removeTree(dir);
  }
});

Deno.test("service: for an empty remote, the validation's answer goes unasked, after the names, before the chunks", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outrun-ahead-" });
  const [local, remote] = rpcPair();
  let service: CacheService | null = null;
  try {
    const prefix = `${dir}/usr`;
    await Deno.mkdir(`${prefix}/bin`, { recursive: true });
    const exe = `${prefix}/bin/tool`;
    await Deno.writeFile(exe, new Uint8Array(5 * CHUNK_SIZE).map((_, i) => i * 7));
    await writeProfile(dir, exe, { metas: [exe], listed: [], chunks: { [exe]: [0, 1, 4] } });
    // Everything the remote gets, in order.
    const got: string[] = [];
    let answer: ValidateReply | null = null;
    remote.onEvent(CACHE_EVENTS.push, (p) => {
      const push = p as unknown as Push;
      if (push.metas?.length) got.push("names");
      if (push.contents?.length) got.push("contents");
      if (push.runs?.length) got.push("chunks");
    });
    remote.onEvent(CACHE_EVENTS.validated, (r) => {
      got.push("answer");
      answer = r as unknown as ValidateReply;
    });
    const { promise: allSent, resolve: sent } = Promise.withResolvers<void>();
    remote.onEvent(CACHE_EVENTS.pushed, () => sent());
    service = new CacheService(local, serviceOptions(prefix, dir));
    service.pushAhead(exe, ["/dev", dir]);
    await allSent;
    assert.deepEqual([...new Set(got)], ["names", "contents", "answer", "chunks"]);
    const reply = answer as ValidateReply | null;
    assert.deepEqual(reply?.stale, []);
    assert.deepEqual(reply?.incoming?.map((c) => c.indices), [[0, 1, 4]], "the chunks announced");
    assert.ok(reply!.ahead.some(([, name]) => name === "dev"), "the lookups ahead");
    assert.equal(service.stats.early, 3);
  } finally {
    service?.close();
    await local.close();
    await remote.close();
    await removeTree(dir);
  }
});

Deno.test("service: a profile looked at while connecting is what the session's first replay sends", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outrun-warmup-" });
  const [local, remote] = rpcPair();
  let service: CacheService | null = null;
  try {
    const prefix = `${dir}/usr`;
    await Deno.mkdir(`${prefix}/bin`, { recursive: true });
    await Deno.mkdir(`${prefix}/lib`, { recursive: true });
    const exe = `${prefix}/bin/tool`;
    await Deno.writeTextFile(exe, "#!/bin/sh\n");
    await Deno.writeTextFile(`${prefix}/lib/a`, "a\n");
    await writeProfile(dir, exe, {
      metas: [exe, `${prefix}/lib/a`],
      listed: [`${prefix}/lib`],
      chunks: {},
    });
    const options = serviceOptions(prefix, dir);
    const warmup = new ProfileWarmup(exe, options);
    await warmup.done;
    assert.ok(warmup.metas.get(`${prefix}/lib/a`)?.attr, "looked at");
    assert.deepEqual(warmup.listings.get(`${prefix}/lib`), ["a"], "listed");
    // Changed after: the session sends the files as they were when it started.
    await Deno.remove(`${prefix}/lib/a`);
    await Deno.writeTextFile(`${prefix}/lib/b`, "b\n");
    const pushes: Push[] = [];
    remote.onEvent(CACHE_EVENTS.push, (p) => pushes.push(p as unknown as Push));
    const { promise: answered, resolve } = Promise.withResolvers<void>();
    remote.onEvent(CACHE_EVENTS.validated, () => resolve());
    service = new CacheService(local, { ...options, warmup });
    service.pushAhead(exe, []);
    await answered;
    const metas = pushes.flatMap((p) => (p.metas ?? []).map(unpackMeta));
    assert.ok(metas.find((m) => m.path === `${prefix}/lib/a`)?.attr, "as it was");
    assert.deepEqual(metas.find((m) => m.path === `${prefix}/lib`)?.children, ["a"]);
    // Once the first look is over, paths are looked at afresh.
    const later: Push[] = [];
    remote.onEvent(CACHE_EVENTS.push, (p) => later.push(p as unknown as Push));
    await remote.call("cache.meta", { path: `${prefix}/lib/a` });
    const now = later.flatMap((p) => (p.metas ?? []).map(unpackMeta));
    assert.equal(now.find((m) => m.path === `${prefix}/lib/a`)?.attr, null, "gone now");
  } finally {
    service?.close();
    await local.close();
    await remote.close();
    await removeTree(dir);
  }
});

Deno.test("service: of a file the remote kernel read itself a profile keeps what it had, or takes its first chunk", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outrun-merge-" });
  const [local, remote] = rpcPair();
  const service = new CacheService(local, serviceOptions(dir, dir));
  try {
    const [a, b] = [`${dir}/a`, `${dir}/b`];
    await Deno.writeFile(a, new Uint8Array(8 * CHUNK_SIZE));
    await Deno.writeFile(b, new Uint8Array(2 * CHUNK_SIZE + 1)); // 3 chunks
    const file = `${dir}/profiles/p.json`;
    const read = () => JSON.parse(Deno.readTextFileSync(file));
    const used = (chunks: Record<string, number[]>, whole: string[]) => ({
      metas: [],
      listed: [],
      chunks,
      whole,
    });
    await service.saveProfile(used({ [a]: [0, 7] }, [b, `${dir}/gone`]), file);
    assert.deepEqual(read().chunks, { [a]: [0, 7], [b]: [0] }, "b: none of it known, its header");
    assert.equal(read().whole, undefined, "kept as chunks");
    await service.saveProfile(used({ [a]: [1] }, [a, b]), file);
    assert.deepEqual(read().chunks, { [a]: [0, 1, 7], [b]: [0] }, "what it has stands");
    await service.saveProfile(used({ [b]: [2] }, []), file);
    assert.deepEqual(read().chunks[b], [0, 2], "read through the agent: learnt");
  } finally {
    service.close();
    await local.close();
    await remote.close();
    await removeTree(dir);
  }
});

Deno.test("service: lookups made here outside the cached prefixes go into the profile and come ahead with the next validation", async () => {
  // Not under /tmp: names there are a run's own, not kept.
  const dir = await Deno.makeTempDir({ prefix: "outrun-lookups-", dir: Deno.env.get("HOME") });
  const prefix = `${dir}/usr`;
  const exe = `${prefix}/bin/tool`;
  await Deno.mkdir(`${prefix}/bin`, { recursive: true });
  await Deno.mkdir(`${dir}/home/.config`, { recursive: true });
  await Deno.writeTextFile(exe, "#!/bin/sh\n");
  await Deno.writeTextFile(`${dir}/home/.config/tool.conf`, "x\n");
  await writeProfile(dir, exe, { metas: [exe], listed: [], chunks: {} });
  const session = async (
    f: (service: CacheService, validate: () => Promise<ValidateReply>) => Promise<void>,
  ) => {
    const [local, remote] = rpcPair();
    const service = new CacheService(local, serviceOptions(prefix, dir));
    const validate = () =>
      remote.call("cache.validate", validateArgs([], exe)) as unknown as Promise<
        ValidateReply
      >;
    try {
      await f(service, validate);
    } finally {
      service.close();
      await local.close();
      await remote.close();
    }
  };
  try {
    await session(async (service, validate) => {
      const first = await validate();
      assert.equal(first.ahead.length, 0, "no lookups known yet");
      // What the remote asked for here during the run (the kernel's LOOKUPs).
      service.noteLookup(`${dir}/home/.config`, "tool.conf");
      service.noteLookup(`${dir}/home`, "missing");
      service.noteLookup("/tmp", "cc1234.s"); // scratch: a run's own name
      service.noteLookup("/", "tmp"); // the scratch directory itself stays
      service.noteLookup(`${prefix}/bin`, "tool"); // cached: the validation has it
      await service.saveProfile({ metas: [], listed: [], chunks: {} });
    });
    const profile = JSON.parse(
      await Deno.readTextFile(profileFile(`${dir}/profiles`, await Deno.realPath(exe))),
    );
    assert.deepEqual(profile.lookups, [
      `${dir}/home/.config/tool.conf`,
      `${dir}/home/missing`,
      "/tmp",
    ]);
    await session(async (_service, validate) => {
      const next = await validate();
      const names = next.ahead.map(([, name, entry]) => [name, entry.nodeid !== 0]);
      // Each component down from "/" (the temp dir's own included), found or not.
      assert.deepEqual(names.slice(-5), [
        ["home", true],
        [".config", true],
        ["tool.conf", true],
        ["missing", false],
        ["tmp", true],
      ]);
    });
  } finally {
    await removeTree(dir);
  }
});

Deno.test("service: the check of all the remote holds lets other requests through while it works", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outrun-rest-" });
  const prefix = `${dir}/usr`;
  await Deno.mkdir(prefix);
  const paths: string[] = [];
  // Enough that their check takes several of its slices (CHECK_SLICE_MS) on any machine.
  for (let i = 0; i < 10_000; i++) {
    paths.push(`${prefix}/f${i}`);
    await Deno.writeTextFile(paths[i], `${i}`);
  }
  const [local, remote] = rpcPair();
  const service = new CacheService(local, serviceOptions(prefix, null));
  try {
    const held: HeldEntry[] = paths.map((
      p,
    ) => [p, fingerprint(lstatPath(p)), "", new Uint8Array(0), false]);
    held[7][1] = "changed";
    const answers: string[] = [];
    const rest = remote.call(
      "cache.validateRest",
      { held: packHeld(held), exe: null, prefetch: false } as unknown as Value,
    ).then((r) => {
      answers.push("rest");
      return r as unknown as ValidateReply;
    });
    // Asked right behind it (the wire keeps their order): answered while the check
    // goes on, not after it.
    const meta = remote.call("cache.meta", { path: paths[1] }).then(() => answers.push("meta"));
    const reply = await rest;
    await meta;
    assert.deepEqual(reply.stale, [paths[7]]);
    assert.deepEqual(answers, ["meta", "rest"]);
  } finally {
    service.close();
    await local.close();
    await remote.close();
    await removeTree(dir);
  }
});
