import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import {
  matchPatternList,
  parsePersist,
  parseSshConfig,
  resolveHost,
} from "../../lib/ssh/config.ts";
import { checkHostKey, parseKnownHosts } from "../../lib/ssh/known_hosts.ts";
import { parseCli, sshOptions } from "../../lib/cli.ts";
import { loadConfigBlocks, resolveDestination } from "../../lib/ssh/destination.ts";

Deno.test("ssh_config: host patterns, first value wins, IdentityFile accumulates", () => {
  const { blocks, warnings } = parseSshConfig([
    "# comment",
    "Host web-* !web-old",
    "  HostName %h.example.invalid",
    "  Port=2222",
    "  IdentityFile ~/.ssh/web",
    "Host web-1",
    "  Port 22",
    "Match user root",
    "  Port 1",
    "Host *",
    "  User admin",
    "  IdentityFile ~/.ssh/default",
    "  StrictHostKeyChecking accept-new",
    '  UserKnownHostsFile "/tmp/a b" /tmp/c',
  ].join("\n"));
  assert.equal(warnings.length, 1);
  const web = resolveHost("web-1", blocks);
  assert.equal(web.hostname, "web-1.example.invalid");
  assert.equal(web.port, 2222, "the first Port seen wins");
  assert.equal(web.user, "admin");
  assert.deepEqual(web.identityFiles, ["~/.ssh/web", "~/.ssh/default"]);
  assert.equal(web.strictHostKeyChecking, "accept-new");
  assert.deepEqual(web.userKnownHostsFiles, ["/tmp/a b", "/tmp/c"]);
  const old = resolveHost("web-old", blocks);
  assert.equal(old.hostname, undefined, "negated pattern excludes");
  assert.equal(old.port, undefined, "Match blocks never apply");
  assert.ok(matchPatternList(["10.0.0.?"], "10.0.0.7"));
  assert.ok(!matchPatternList(["10.0.0.?"], "10.0.0.17"));
});

const KEY = new Uint8Array([
  0,
  0,
  0,
  11,
  ...new TextEncoder().encode("ssh-ed25519"),
  0,
  0,
  0,
  1,
  7,
]);
const B64 = btoa(String.fromCharCode(...KEY));
const OTHER = btoa("other");

Deno.test("known_hosts: plain, [host]:port, hashed, changed, revoked, unknown", () => {
  const salt = new Uint8Array(20).fill(3);
  const hash = createHmac("sha1", salt).update("[h.example]:2200").digest("base64");
  const text = [
    `a.example,b.example ssh-ed25519 ${B64}`,
    `[c.example]:2222 ssh-ed25519 ${B64}`,
    `|1|${btoa(String.fromCharCode(...salt))}|${hash} ssh-ed25519 ${B64}`,
    `d.example ssh-ed25519 ${OTHER}`,
    `@revoked * ssh-ed25519 ${btoa("bad")}`,
  ].join("\n");
  const lines = parseKnownHosts(text, "kh");
  assert.deepEqual(checkHostKey(lines, "b.example", 22, KEY), { kind: "match" });
  assert.deepEqual(checkHostKey(lines, "c.example", 2222, KEY), { kind: "match" });
  assert.deepEqual(checkHostKey(lines, "c.example", 22, KEY), { kind: "unknown" });
  assert.deepEqual(checkHostKey(lines, "h.example", 2200, KEY), { kind: "match" });
  assert.deepEqual(checkHostKey(lines, "d.example", 22, KEY), {
    kind: "changed",
    file: "kh",
    line: 4,
  });
  assert.equal(
    checkHostKey(lines, "a.example", 22, new TextEncoder().encode("bad")).kind,
    "revoked",
  );
});

Deno.test("cli: options end at the host, everything after belongs to the command", () => {
  const r = parseCli([
    "-p2222",
    "-l",
    "me",
    "-i",
    "k",
    "-o",
    "ConnectTimeout=5",
    "-vv",
    "--timeout=9",
    "h",
    "ls",
    "-p",
    "--",
    "x",
  ]);
  assert.equal(r.kind, "run");
  if (r.kind !== "run") return;
  assert.equal(r.options.port, 2222);
  assert.equal(r.options.user, "me");
  assert.deepEqual(r.options.identityFiles, ["k"]);
  assert.deepEqual(r.options.sshOptions, ["ConnectTimeout=5"]);
  assert.equal(r.options.verbose, 2);
  assert.equal(r.options.timeout, 9);
  assert.equal(r.options.destination, "h");
  assert.deepEqual(r.options.command, ["ls", "-p", "--", "x"]);
  for (
    const bad of [[], ["h"], ["-p"], ["-x", "h", "ls"], ["-p", "0", "h", "ls"], [
      "-o",
      "junk",
      "h",
      "ls",
    ]]
  ) {
    assert.equal(parseCli(bad).kind, "usage", bad.join(" "));
  }
  assert.equal(parseCli(["--version"]).kind, "version");
});

Deno.test("cli: --timeout is the connection's ConnectTimeout, ahead of -o and the files; -q is quiet", () => {
  const file = Deno.makeTempFileSync();
  Deno.writeTextFileSync(file, "Host h\n  ConnectTimeout 20\n");
  const r = parseCli(["-q", "--timeout", "3", "-F", file, "-o", "ConnectTimeout=5", "h", "true"]);
  assert.equal(r.kind, "run");
  if (r.kind !== "run") return;
  const ssh = sshOptions(r.options);
  assert.deepEqual(ssh.options, ["ConnectTimeout=3", "ConnectTimeout=5"]);
  assert.equal(ssh.quiet, true);
  assert.equal(resolveDestination(ssh, loadConfigBlocks(ssh)).config.connectTimeout, 3);
  Deno.removeSync(file);
  const plain = parseCli(["h", "true"]);
  assert.ok(plain.kind === "run" && sshOptions(plain.options).quiet === false);
});

Deno.test("ssh_config: ControlMaster, ControlPath and ControlPersist as ssh reads them", () => {
  const { blocks } = parseSshConfig(
    "Host shared\n  ControlMaster auto\n  ControlPersist 10m\n" +
      "Host off\n  ControlMaster yes\n  ControlPath none\n" +
      "Host *\n  ControlPersist yes\n",
  );
  const shared = resolveHost("shared", blocks);
  assert.equal(shared.controlMaster, "auto");
  assert.equal(shared.controlPersist, 600);
  const off = resolveHost("off", blocks);
  assert.equal(off.controlPath, "none");
  assert.equal(off.controlPersist, Infinity);
  assert.equal(resolveHost("other", blocks).controlMaster, undefined);
  assert.equal(parsePersist("no"), 0);
  assert.equal(parsePersist("30"), 30);
  assert.equal(parsePersist("1h30m"), 5400);
  assert.equal(parsePersist("2d"), 172800);
  assert.equal(parsePersist("soon"), undefined);
});

Deno.test("cli: -O check|exit takes a destination and no command", () => {
  const r = parseCli(["-O", "check", "-F", "cfg", "host"]);
  assert.equal(r.kind, "run");
  if (r.kind === "run") {
    assert.equal(r.options.controlCommand, "check");
    assert.deepEqual(r.options.command, []);
  }
  assert.equal(parseCli(["-O", "stop", "host"]).kind, "usage");
  assert.equal(parseCli(["-O", "exit", "host", "ls"]).kind, "usage");
  assert.equal(parseCli(["host"]).kind, "usage", "a command is still needed without -O");
});
