import assert from "node:assert/strict";
import { IN, Inotify, parseEvents } from "../../lib/sys/inotify.ts";
import { eventually } from "../eventually.ts";

/** struct inotify_event as the kernel writes it: the name NUL-padded to `len`. */
function event(wd: number, mask: number, cookie: number, name: string, len: number): Uint8Array {
  const out = new Uint8Array(16 + len);
  const v = new DataView(out.buffer);
  v.setInt32(0, wd, true);
  v.setUint32(4, mask, true);
  v.setUint32(8, cookie, true);
  v.setUint32(12, len, true);
  out.set(new TextEncoder().encode(name), 16);
  return out;
}

Deno.test("inotify: events parsed from the kernel's bytes, names NUL-padded or none", () => {
  const bytes = new Uint8Array([
    ...event(3, IN.CREATE, 0, "a.o", 16),
    ...event(3, IN.ATTRIB | IN.ISDIR, 0, "", 0),
    ...event(7, IN.MOVED_FROM, 42, "\xe9t\xe9", 8), // a name's bytes, one char each
  ]);
  const events = parseEvents(bytes);
  assert.deepEqual(events, [
    { wd: 3, mask: IN.CREATE, cookie: 0, name: "a.o" },
    { wd: 3, mask: IN.ATTRIB | IN.ISDIR, cookie: 0, name: "" },
    { wd: 7, mask: IN.MOVED_FROM, cookie: 42, name: "\xc3\xa9t\xc3\xa9" },
  ]);
  // Only the first `length` bytes count (a read fills part of its buffer).
  assert.equal(parseEvents(bytes, 32).length, 1);
});

Deno.test("inotify: a watched directory's changes are read without waiting", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outrun-inotify-" });
  const watch = new Inotify();
  try {
    assert.deepEqual(watch.read(), [], "nothing yet, and no wait");
    const wd = watch.add(dir, IN.CREATE | IN.MODIFY | IN.DELETE);
    assert.equal(watch.add(dir, IN.CREATE | IN.MODIFY | IN.DELETE), wd, "one watch a directory");
    await Deno.writeTextFile(`${dir}/f`, "x");
    await Deno.remove(`${dir}/f`);
    assert.ok(await watch.readable(1000));
    const events = watch.read();
    assert.deepEqual(
      events.map((e) => [e.wd, e.mask, e.name]),
      [[wd, IN.CREATE, "f"], [wd, IN.MODIFY, "f"], [wd, IN.DELETE, "f"]],
    );
    assert.equal(watch.remove(wd), true);
    await eventually("the IGNORED event", () => watch.read().some((e) => e.mask & IN.IGNORED));
    assert.equal(watch.remove(wd), false, "gone already: no error");
    assert.equal(await watch.readable(50), false, "nothing more");
    assert.throws(() => watch.add(`${dir}/missing`, IN.CREATE), /ENOENT/);
  } finally {
    watch.close();
    await Deno.remove(dir, { recursive: true });
  }
});
