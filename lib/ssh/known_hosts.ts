/**
 * known_hosts checking as OpenSSH does it: plain and hashed (`|1|salt|hmac`) host
 * fields, `[host]:port` for non-standard ports, patterns and negations, and
 * `@revoked` keys. `@cert-authority` lines are ignored (no certificates here).
 */
import { createHmac } from "node:crypto";
import { matchPatternList } from "./config.ts";

export type HostKeyVerdict =
  | { kind: "match" }
  | { kind: "unknown" }
  | { kind: "changed"; file: string; line: number }
  | { kind: "revoked"; file: string; line: number };

export interface KnownHostLine {
  file: string;
  line: number;
  marker: "" | "@revoked" | "@cert-authority";
  hosts: string;
  keyType: string;
  key: string; // base64
}

export function parseKnownHosts(text: string, file: string): KnownHostLine[] {
  const out: KnownHostLine[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith("#")) return;
    const parts = line.split(/\s+/);
    let marker: KnownHostLine["marker"] = "";
    if (parts[0] === "@revoked" || parts[0] === "@cert-authority") {
      marker = parts.shift() as KnownHostLine["marker"];
    }
    if (parts.length < 3) return;
    out.push({ file, line: i + 1, marker, hosts: parts[0], keyType: parts[1], key: parts[2] });
  });
  return out;
}

/** The name a host is recorded under: `host` for port 22, `[host]:port` otherwise. */
export function hostKeyName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function hostFieldMatches(field: string, name: string): boolean {
  if (field.startsWith("|1|")) {
    const [, , salt, hash] = field.split("|");
    if (!salt || !hash) return false;
    const mac = createHmac("sha1", Uint8Array.from(atob(salt), (c) => c.charCodeAt(0)))
      .update(name).digest("base64");
    return mac === hash;
  }
  return matchPatternList(field.split(","), name);
}

/** Checks `key` (the server's public key blob) for `host`:`port` against the lines. */
export function checkHostKey(
  lines: KnownHostLine[],
  host: string,
  port: number,
  key: Uint8Array,
): HostKeyVerdict {
  const name = hostKeyName(host, port);
  const b64 = btoa(String.fromCharCode(...key));
  // Revoked wherever it is listed, before or after a line that names it as good.
  const revoked = lines.find((l) => l.marker === "@revoked" && l.key === b64);
  if (revoked) return { kind: "revoked", file: revoked.file, line: revoked.line };
  let changed: HostKeyVerdict | null = null;
  for (const l of lines) {
    if (l.marker !== "" || !hostFieldMatches(l.hosts, name)) continue;
    if (l.key === b64) return { kind: "match" };
    changed ??= { kind: "changed", file: l.file, line: l.line };
  }
  return changed ?? { kind: "unknown" };
}

/** The line to append when a new key is accepted (`accept-new`). */
export function knownHostsLine(host: string, port: number, keyType: string, key: Uint8Array) {
  return `${hostKeyName(host, port)} ${keyType} ${btoa(String.fromCharCode(...key))}\n`;
}
