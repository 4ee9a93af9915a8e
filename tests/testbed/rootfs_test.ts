import assert from "node:assert/strict";
import { findDebianMirror } from "./rootfs.ts";

Deno.test("rootfs: finds the Debian mirror in deb822 sources, skipping security", () => {
  const text = [
    "Types: deb",
    "URIs: http://mirror.example/debian-security",
    "Suites: bookworm-security",
    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg",
    "",
    "Types: deb",
    "URIs: http://mirror.example/debian",
    "Suites: bookworm bookworm-updates",
    "Components: main",
    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg",
  ].join("\n");
  assert.equal(findDebianMirror(text), "http://mirror.example/debian");
});

Deno.test("rootfs: finds the Debian mirror in a one-line sources.list", () => {
  const text = "deb http://m.example/debian-security bookworm-security main\n" +
    "deb [arch=amd64] http://m.example/debian bookworm main contrib\n";
  assert.equal(findDebianMirror(text), "http://m.example/debian");
  assert.equal(findDebianMirror("deb http://other.example/apt stable main\n"), undefined);
});
