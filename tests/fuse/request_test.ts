import assert from "node:assert/strict";
import { OPCODES, parseRequest, type Request, RequestParseError } from "../../lib/fuse/request.ts";
import { Bytes, request } from "./fixtures.ts";

function parse(bytes: Uint8Array): Request {
  const r = parseRequest(bytes);
  if (r instanceof RequestParseError) throw r;
  return r;
}

/** Strips `header` and `op` for comparing bodies. */
function body(r: Request): Record<string, unknown> {
  const { header: _h, op: _o, ...rest } = r as Request & Record<string, unknown>;
  return rest;
}

Deno.test("request: header fields", () => {
  const r = parse(request(1, new Bytes().name("x"), {
    unique: 0x1122334455n,
    nodeid: 99,
    uid: 1001,
    gid: 1002,
    pid: 1003,
  }));
  assert.equal(r.op, "LOOKUP");
  assert.deepEqual(r.header, {
    len: 42,
    opcode: 1,
    unique: 0x1122334455n,
    nodeid: 99,
    uid: 1001,
    gid: 1002,
    pid: 1003,
  });
});

Deno.test("request: a literal LOOKUP as the kernel sent it", () => {
  // Captured shape: len 46, opcode 1, unique 2, nodeid 1, uid 0, gid 0, pid 123, name "a.txt".
  const hex = "2e000000" + "01000000" + "0200000000000000" + "0100000000000000" +
    "00000000" + "00000000" + "7b000000" + "00000000" + "612e74787400";
  const bytes = new Uint8Array(hex.match(/../g)!.map((h) => parseInt(h, 16)));
  const r = parse(bytes);
  assert.equal(r.op, "LOOKUP");
  assert.equal((r as Request<"LOOKUP">).name, "a.txt");
  assert.equal(r.header.pid, 123);
});

const fixtures: [string, number, Bytes, Record<string, unknown>][] = [
  ["LOOKUP", 1, new Bytes().name("file\xff\x01"), { name: "file\xff\x01" }],
  ["FORGET", 2, new Bytes().u64(3), { nlookup: 3 }],
  ["GETATTR", 3, new Bytes().u32(1).u32(0).u64(17), { flags: 1, fh: 17 }],
  [
    "SETATTR",
    4,
    new Bytes().u32(0x3f).u32(0).u64(5).u64(4096).u64(0).u64(11).u64(22).u64(33)
      .u32(1).u32(2).u32(3).u32(0o100644).u32(0).u32(1000).u32(100).u32(0),
    {
      valid: 0x3f,
      fh: 5,
      size: 4096n,
      atimeSec: 11n,
      mtimeSec: 22n,
      ctimeSec: 33n,
      atimeNsec: 1,
      mtimeNsec: 2,
      ctimeNsec: 3,
      mode: 0o100644,
      uid: 1000,
      gid: 100,
    },
  ],
  ["READLINK", 5, new Bytes(), {}],
  ["SYMLINK", 6, new Bytes().name("l").name("../target"), { name: "l", target: "../target" }],
  [
    "MKNOD",
    8,
    new Bytes().u32(0o10644).u32(0x0801).u32(0o22).u32(0).name("fifo"),
    { mode: 0o10644, rdev: 0x0801, umask: 0o22, name: "fifo" },
  ],
  ["MKDIR", 9, new Bytes().u32(0o755).u32(0o22).name("d"), { mode: 0o755, umask: 0o22, name: "d" }],
  ["UNLINK", 10, new Bytes().name("u"), { name: "u" }],
  ["RMDIR", 11, new Bytes().name("r"), { name: "r" }],
  ["RENAME", 12, new Bytes().u64(9).name("a").name("b"), {
    newdir: 9,
    name: "a",
    newName: "b",
    flags: 0,
  }],
  ["LINK", 13, new Bytes().u64(44).name("hard"), { oldNodeid: 44, newName: "hard" }],
  ["OPEN", 14, new Bytes().u32(0o100002).u32(0), { flags: 0o100002, openFlags: 0 }],
  [
    "READ",
    15,
    new Bytes().u64(3).u64(8192).u32(4096).u32(0).u64(0).u32(0o100000).u32(0),
    { fh: 3, offset: 8192n, size: 4096, readFlags: 0, flags: 0o100000 },
  ],
  [
    "WRITE",
    16,
    new Bytes().u64(3).u64(10).u32(3).u32(1).u64(0).u32(2).u32(0).raw([7, 8, 9]),
    { fh: 3, offset: 10n, writeFlags: 1, flags: 2, data: new Uint8Array([7, 8, 9]) },
  ],
  ["STATFS", 17, new Bytes(), {}],
  ["RELEASE", 18, new Bytes().u64(3).u32(2).u32(1).u64(0), { fh: 3, flags: 2, releaseFlags: 1 }],
  ["FSYNC", 20, new Bytes().u64(3).u32(1).u32(0), { fh: 3, fsyncFlags: 1 }],
  ["SETXATTR", 21, new Bytes().u32(2).u32(1).name("user.k").raw([0x68, 0x69]), {
    flags: 1,
    name: "user.k",
    value: new Uint8Array([0x68, 0x69]),
  }],
  ["GETXATTR", 22, new Bytes().u32(64).u32(0).name("user.k"), { size: 64, name: "user.k" }],
  ["LISTXATTR", 23, new Bytes().u32(0).u32(0), { size: 0 }],
  ["REMOVEXATTR", 24, new Bytes().name("user.k"), { name: "user.k" }],
  ["FLUSH", 25, new Bytes().u64(3).u32(0).u32(0).u64(77), { fh: 3, lockOwner: 77n }],
  [
    "INIT",
    26,
    new Bytes().u32(7).u32(45).u32(131072).u32(0x73fffffb).u32(0x1).raw(new Uint8Array(44)),
    { major: 7, minor: 45, maxReadahead: 131072, flags: 0x73fffffbn | (1n << 32n) },
  ],
  ["OPENDIR", 27, new Bytes().u32(0o200000).u32(0), { flags: 0o200000, openFlags: 0 }],
  [
    "READDIR",
    28,
    new Bytes().u64(1).u64(5).u32(4096).u32(0).u64(0).u32(0).u32(0),
    { fh: 1, offset: 5n, size: 4096 },
  ],
  ["RELEASEDIR", 29, new Bytes().u64(1).u32(0).u32(0).u64(0), {
    fh: 1,
    flags: 0,
    releaseFlags: 0,
  }],
  ["FSYNCDIR", 30, new Bytes().u64(1).u32(0).u32(0), { fh: 1, fsyncFlags: 0 }],
  ["ACCESS", 34, new Bytes().u32(4).u32(0), { mask: 4 }],
  [
    "CREATE",
    35,
    new Bytes().u32(0o101).u32(0o100644).u32(0o22).u32(0).name("new"),
    { flags: 0o101, mode: 0o100644, umask: 0o22, openFlags: 0, name: "new" },
  ],
  ["INTERRUPT", 36, new Bytes().u64(40), { target: 40n }],
  ["DESTROY", 38, new Bytes(), {}],
  ["POLL", 40, new Bytes().u64(3).u64(9).u32(1).u32(1), { fh: 3, kh: 9n, flags: 1, events: 1 }],
  [
    "BATCH_FORGET",
    42,
    new Bytes().u32(2).u32(0).u64(5).u64(1).u64(6).u64(2),
    { forgets: [{ nodeid: 5, nlookup: 1 }, { nodeid: 6, nlookup: 2 }] },
  ],
  [
    "FALLOCATE",
    43,
    new Bytes().u64(3).u64(0).u64(1 << 20).u32(1).u32(0),
    { fh: 3, offset: 0n, length: 1048576n, mode: 1 },
  ],
  [
    "READDIRPLUS",
    44,
    new Bytes().u64(2).u64(0).u32(8192).u32(0).u64(0).u32(0).u32(0),
    { fh: 2, offset: 0n, size: 8192 },
  ],
  ["RENAME2", 45, new Bytes().u64(9).u32(2).u32(0).name("a").name("b"), {
    newdir: 9,
    flags: 2,
    name: "a",
    newName: "b",
  }],
  ["LSEEK", 46, new Bytes().u64(3).u64(100).u32(3).u32(0), { fh: 3, offset: 100n, whence: 3 }],
  [
    "COPY_FILE_RANGE",
    47,
    new Bytes().u64(3).u64(0).u64(12).u64(4).u64(10).u64(4096).u64(0),
    { fhIn: 3, offIn: 0n, nodeidOut: 12, fhOut: 4, offOut: 10n, len: 4096n, flags: 0n },
  ],
  ["SYNCFS", 50, new Bytes().u64(0), {}],
];

for (const [name, code, bytes, expected] of fixtures) {
  Deno.test(`request: ${name} (${code}) parses from its byte fixture`, () => {
    const r = parse(request(code, bytes));
    assert.equal(r.op, name);
    assert.deepEqual(body(r), expected);
  });

  if (bytes.length > 0) {
    Deno.test(`request: ${name} truncated by one byte is a typed error`, () => {
      const full = request(code, bytes);
      const short = full.slice(0, full.length - 1);
      new DataView(short.buffer).setUint32(0, short.length, true);
      const r = parseRequest(short);
      // A name losing its NUL, or a struct losing its tail: never a crash.
      if (!(r instanceof RequestParseError)) {
        // Only variable-length payloads (WRITE data, SETXATTR value, INIT's tail) may shrink.
        assert.ok(["INIT", "SYNCFS"].includes(name), `${name} accepted a truncated body`);
      } else {
        assert.equal(r.kind, "short");
      }
    });
  }
}

Deno.test("request: the opcode table covers every opcode a real program needs", () => {
  const names = new Set(OPCODES.map((o) => o.name));
  for (
    const n of [
      "LOOKUP FORGET GETATTR SETATTR READLINK SYMLINK MKNOD MKDIR UNLINK RMDIR RENAME RENAME2",
      "LINK OPEN READ WRITE STATFS RELEASE FSYNC SETXATTR GETXATTR LISTXATTR REMOVEXATTR FLUSH",
      "OPENDIR READDIR READDIRPLUS RELEASEDIR FSYNCDIR ACCESS CREATE FALLOCATE LSEEK",
      "COPY_FILE_RANGE POLL DESTROY INIT INTERRUPT BATCH_FORGET",
    ].join(" ").split(" ")
  ) assert.ok(names.has(n as never), n);
  assert.deepEqual(
    OPCODES.filter((o) => !o.reply).map((o) => o.name).sort(),
    ["BATCH_FORGET", "FORGET", "INTERRUPT"],
  );
  assert.equal(new Set(OPCODES.map((o) => o.code)).size, OPCODES.length, "codes are unique");
});

Deno.test("request: malformed input is a typed error", () => {
  assert.equal((parseRequest(new Uint8Array(10)) as RequestParseError).kind, "short");
  const unknown = parseRequest(request(9999, new Bytes()));
  assert.ok(unknown instanceof RequestParseError);
  assert.equal(unknown.kind, "unknown-opcode");
  assert.equal(unknown.header?.unique, 7n);
  const lying = parseRequest(request(1, new Bytes().name("x"), { len: 100 }));
  assert.equal((lying as RequestParseError).kind, "length-mismatch");
  const noNul = parseRequest(request(1, new Bytes().raw([0x61, 0x62])));
  assert.equal((noNul as RequestParseError).kind, "short");
  const hugeBatch = parseRequest(request(42, new Bytes().u32(0xffffffff).u32(0)));
  assert.equal((hugeBatch as RequestParseError).kind, "short");
  const hugeWrite = parseRequest(
    request(16, new Bytes().u64(1).u64(0).u32(1 << 30).u32(0).u64(0).u32(0).u32(0)),
  );
  assert.equal((hugeWrite as RequestParseError).kind, "short");
});

/** A small deterministic PRNG so property failures reproduce. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 0x100000000;
  };
}

Deno.test("request property: random bytes never throw, whatever the opcode", () => {
  const rand = rng(12345);
  const codes = OPCODES.map((o) => o.code).concat([0, 7, 19, 41, 4096, 0xffffffff]);
  for (let i = 0; i < 20_000; i++) {
    const len = Math.floor(rand() * 120);
    const body = new Uint8Array(len);
    for (let j = 0; j < len; j++) body[j] = rand() < 0.3 ? 0 : Math.floor(rand() * 256);
    const bytes = request(codes[Math.floor(rand() * codes.length)], body);
    if (rand() < 0.1) new DataView(bytes.buffer).setUint32(0, Math.floor(rand() * 200), true);
    const r = parseRequest(bytes);
    assert.ok(r instanceof RequestParseError || typeof r.op === "string");
  }
});

Deno.test("request property: every prefix of every fixture parses or fails cleanly", () => {
  for (const [, code, bytes] of fixtures) {
    const full = request(code, bytes);
    for (let n = 0; n <= full.length; n++) {
      const prefix = full.slice(0, n);
      if (n >= 4) new DataView(prefix.buffer).setUint32(0, n, true);
      const r = parseRequest(prefix);
      assert.ok(r instanceof RequestParseError || r.header.len === n);
    }
  }
});
