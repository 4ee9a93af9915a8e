import assert from "node:assert/strict";
import {
  type Attr,
  direntSize,
  encodeAttr,
  encodeDev,
  encodeDirents,
  encodeEntry,
  encodeError,
  encodeInit,
  encodeNotifyInvalEntry,
  encodeNotifyInvalInode,
  encodeOpen,
  encodeStatfs,
} from "../../lib/fuse/reply.ts";

const attr: Attr = {
  ino: 0x0102030405060708n,
  size: 4097n,
  blocks: 16n,
  atimeSec: 1700000000n,
  atimeNsec: 5,
  mtimeSec: 1700000001n,
  mtimeNsec: 6,
  ctimeSec: 1700000002n,
  ctimeNsec: 7,
  mode: 0o100644,
  nlink: 2,
  uid: 1000,
  gid: 100,
  rdev: 0n,
  blksize: 4096,
};

const u32 = (b: Uint8Array, at: number) => new DataView(b.buffer).getUint32(at, true);
const i32 = (b: Uint8Array, at: number) => new DataView(b.buffer).getInt32(at, true);
const u64 = (b: Uint8Array, at: number) => new DataView(b.buffer).getBigUint64(at, true);

Deno.test("reply: error is a bare header with -errno", () => {
  const b = encodeError(9n, 2);
  assert.deepEqual([...b], [16, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 9, 0, 0, 0, 0, 0, 0, 0]);
});

Deno.test("reply: entry_out layout (fuse.h offsets)", () => {
  const b = encodeEntry(3n, { nodeid: 42, entryTimeout: 1.5, attrTimeout: 2, attr });
  assert.equal(b.length, 16 + 128);
  assert.equal(u32(b, 0), b.length);
  assert.equal(i32(b, 4), 0);
  assert.equal(u64(b, 8), 3n);
  assert.equal(u64(b, 16), 42n); // nodeid
  assert.equal(u64(b, 24), 0n); // generation
  assert.equal(u64(b, 32), 1n); // entry_valid
  assert.equal(u64(b, 40), 2n); // attr_valid
  assert.equal(u32(b, 48), 500_000_000); // entry_valid_nsec
  assert.equal(u32(b, 52), 0);
  const a = 56; // struct fuse_attr
  assert.equal(u64(b, a), attr.ino);
  assert.equal(u64(b, a + 8), 4097n);
  assert.equal(u64(b, a + 16), 16n);
  assert.equal(u64(b, a + 32), 1700000001n);
  assert.equal(u32(b, a + 52), 6);
  assert.equal(u32(b, a + 60), 0o100644);
  assert.equal(u32(b, a + 64), 2);
  assert.equal(u32(b, a + 68), 1000);
  assert.equal(u32(b, a + 72), 100);
  assert.equal(u32(b, a + 80), 4096);
});

Deno.test("reply: attr_out, open_out, statfs_out sizes", () => {
  assert.equal(encodeAttr(1n, { attr, attrTimeout: 0 }).length, 16 + 104);
  const o = encodeOpen(1n, { fh: 77, openFlags: 2 });
  assert.equal(o.length, 32);
  assert.equal(u64(o, 16), 77n);
  assert.equal(u32(o, 24), 2);
  const s = encodeStatfs(1n, {
    blocks: 1n,
    bfree: 2n,
    bavail: 3n,
    files: 4n,
    ffree: 5n,
    bsize: 4096,
    namelen: 255,
    frsize: 4096,
  });
  assert.equal(s.length, 16 + 80);
  assert.equal(u32(s, 16 + 44), 255);
});

Deno.test("reply: init_out carries flags2 and max_pages", () => {
  const b = encodeInit(1n, {
    major: 7,
    minor: 38,
    maxReadahead: 131072,
    flags: (1n << 33n) | 1n,
    maxBackground: 64,
    congestionThreshold: 48,
    maxWrite: 1 << 20,
    timeGran: 1,
    maxPages: 256,
  });
  assert.equal(b.length, 16 + 64);
  assert.equal(u32(b, 16 + 12), 1);
  assert.equal(u32(b, 16 + 20), 1 << 20);
  assert.equal(new DataView(b.buffer).getUint16(16 + 28, true), 256);
  assert.equal(u32(b, 16 + 32), 2); // bit 33 -> flags2 bit 1
});

Deno.test("reply: rdev uses the kernel's new_encode_dev", () => {
  // glibc makedev(8, 1) = 0x801; makedev(259, 65537)
  assert.equal(encodeDev(0x801n), 0x801);
  const major = 259n, minor = 65537n;
  const glibc = ((major & 0xfffn) << 8n) | ((major & ~0xfffn) << 32n) | (minor & 0xffn) |
    ((minor & ~0xffn) << 12n);
  assert.equal(
    encodeDev(glibc),
    Number((minor & 0xffn) | (major << 8n) | ((minor & ~0xffn) << 12n)),
  );
});

Deno.test("reply: dirents are 8-byte aligned and packing stops at the buffer size", () => {
  const entries = ["a", "bb", "ccccccccc", "d"].map((name, i) => ({
    name,
    ino: BigInt(100 + i),
    type: 8,
    nextOffset: BigInt(i + 1),
  }));
  assert.equal(direntSize(1, false), 32);
  assert.equal(direntSize(9, false), 40);
  const all = encodeDirents(1n, entries, 4096, false);
  assert.equal(all.count, 4);
  assert.equal(all.bytes.length, 16 + 32 + 32 + 40 + 32);
  assert.equal(u64(all.bytes, 16), 100n);
  assert.equal(u64(all.bytes, 24), 1n);
  assert.equal(u32(all.bytes, 32), 1);
  assert.equal(u32(all.bytes, 36), 8);
  assert.equal(String.fromCharCode(all.bytes[40]), "a");
  const some = encodeDirents(1n, entries, 100, false);
  assert.equal(some.count, 2);
  assert.equal(some.bytes.length, 16 + 64);
  assert.equal(encodeDirents(1n, entries, 10, false).count, 0);
});

Deno.test("reply: direntplus entries carry entry_out first", () => {
  const e = { nodeid: 5, entryTimeout: 1, attrTimeout: 1, attr };
  const r = encodeDirents(
    1n,
    [{ name: "x", ino: 9n, type: 8, nextOffset: 1n, entry: e }],
    4096,
    true,
  );
  assert.equal(r.bytes.length, 16 + direntSize(1, true));
  assert.equal(u64(r.bytes, 16), 5n);
  assert.equal(u64(r.bytes, 16 + 128), 9n);
  assert.throws(() =>
    encodeDirents(1n, [{ name: "x", ino: 9n, type: 8, nextOffset: 1n }], 4096, true)
  );
});

Deno.test("reply: notifications have unique 0 and the notify code as error", () => {
  const inode = encodeNotifyInvalInode(12, 0n, -1n);
  assert.equal(i32(inode, 4), 2);
  assert.equal(u64(inode, 8), 0n);
  assert.equal(u64(inode, 16), 12n);
  const entry = encodeNotifyInvalEntry(1, "name");
  assert.equal(i32(entry, 4), 3);
  assert.equal(u32(entry, 24), 4);
  assert.equal(entry.length, 16 + 16 + 5);
  assert.equal(entry[entry.length - 1], 0);
});
