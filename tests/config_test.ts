import assert from "node:assert/strict";
import { ConfigError, parseConfig, parseSize } from "../lib/config.ts";
import { DEFAULT_PREFIXES } from "../lib/fs/cache/protocol.ts";

Deno.test("config: defaults when empty", () => {
  const c = parseConfig("");
  assert.equal(c.cache.path, "~/.cache/outrun/cache");
  assert.equal(c.cache.maxEntries, 4096);
  assert.equal(c.cache.maxBytes, 20 * 1024 ** 3);
  assert.deepEqual(c.cache.prefixes, DEFAULT_PREFIXES);
  assert.equal(c.cache.complete, false);
  assert.equal(c.cache.exePrefix, true);
  assert.equal(c.cache.compression, "zstd");
});

Deno.test("config: the [cache] keys", () => {
  const c = parseConfig(
    "; comment\n[cache]\npath = /srv/outrun\nmax_entries = 1024\nmax_size = 1.5G\n" +
      "prefixes = /usr, /opt/tools/ ,/nix\ncomplete = yes\ncompression = lz4\nexe_prefix = no\n",
  );
  assert.deepEqual(c.cache, {
    path: "/srv/outrun",
    maxEntries: 1024,
    maxBytes: Math.round(1.5 * 1024 ** 3),
    prefixes: ["/usr", "/opt/tools", "/nix"],
    exePrefix: false,
    complete: true,
    compression: "lz4",
  });
});

Deno.test("config: bad values name the key", () => {
  for (
    const [text, re] of [
      ["[cache]\nmax_entries = many", /max_entries: not a positive whole number/],
      ["[cache]\nmax_entries = 0", /max_entries/],
      ["[cache]\nmax_size = big", /max_size: bad size 'big'/],
      ["[cache]\nprefixes = usr", /prefixes: not an absolute path: 'usr'/],
      ["[cache]\nprefixes = /usr/../etc", /prefixes/],
      ["[cache]\nmax_entires = 5", /max_entires: unknown key/],
      ["[cache]\ncomplete = later", /complete: not yes or no: 'later'/],
      ["[cache]\nexe_prefix = maybe", /exe_prefix: not yes or no: 'maybe'/],
      ["[cache]\ncompression = gzip", /compression: not zstd or lz4: 'gzip'/],
    ] as const
  ) {
    assert.throws(
      () => parseConfig(text, "cfg"),
      (e: unknown) => e instanceof ConfigError && re.test(e.message),
    );
  }
});

Deno.test("config: sizes", () => {
  assert.equal(parseSize("4096"), 4096);
  assert.equal(parseSize("20G"), 20 * 1024 ** 3);
  assert.equal(parseSize("512m"), 512 * 1024 ** 2);
  assert.equal(parseSize("2KiB"), 2048);
  assert.equal(parseSize("1T"), 1024 ** 4);
  assert.throws(() => parseSize("-1G"), ConfigError);
  assert.throws(() => parseSize("G"), ConfigError);
});
