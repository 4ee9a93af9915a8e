/**
 * ssh_config as OpenSSH reads it, for the keys outrun uses: Host blocks with
 * patterns (`*`, `?`, `!negation`, several per line), keywords case-insensitive,
 * `Key value` or `Key=value`, and the first value found for a key wins (so
 * specific Host blocks go first and `Host *` defaults last). `Match` blocks and
 * `Include` are not supported: a Match block's settings are skipped, and a
 * warning names them.
 */

/** The keys outrun reads (lower-case); the others are ignored. */
export const SUPPORTED_KEYS = [
  "hostname",
  "port",
  "user",
  "identityfile",
  "identitiesonly",
  "proxyjump",
  "userknownhostsfile",
  "globalknownhostsfile",
  "stricthostkeychecking",
  "serveraliveinterval",
  "serveralivecountmax",
  "connecttimeout",
  "batchmode",
  "loglevel",
  "controlmaster",
  "controlpath",
  "controlpersist",
] as const;

export type SshKey = (typeof SUPPORTED_KEYS)[number];

export interface ConfigBlock {
  patterns: string[];
  /** `Match` blocks never apply (unsupported). */
  match: boolean;
  entries: [SshKey, string[]][];
}

/** Host settings; IdentityFile may repeat (all values kept, in order). */
export interface HostConfig {
  hostname?: string;
  port?: number;
  user?: string;
  identityFiles: string[];
  identitiesOnly?: boolean;
  proxyJump?: string;
  userKnownHostsFiles?: string[];
  globalKnownHostsFiles?: string[];
  strictHostKeyChecking?: "yes" | "no" | "accept-new" | "ask" | "off";
  serverAliveInterval?: number;
  serverAliveCountMax?: number;
  connectTimeout?: number;
  batchMode?: boolean;
  /** LogLevel, lower case: QUIET, FATAL and ERROR silence ssh's notices (and outrun's). */
  logLevel?: string;
  controlMaster?: "yes" | "no" | "ask" | "auto" | "autoask";
  controlPath?: string;
  /** Seconds an idle master stays (ControlPersist): 0 for "no", Infinity for "yes". */
  controlPersist?: number;
}

/** ControlPersist's value in seconds: yes, no, 30, 30s, 10m, 1h, 1h30m (as ssh reads it). */
export function parsePersist(v: string): number | undefined {
  if (/^(yes|true)$/i.test(v)) return Infinity;
  if (/^(no|false)$/i.test(v)) return 0;
  const m = /^(?:\d+[smhdw]?)+$/i.exec(v);
  if (!m) return undefined;
  const unit: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
  let total = 0;
  for (const [, n, u] of v.matchAll(/(\d+)([smhdw]?)/gi)) {
    total += Number(n) * (u ? unit[u.toLowerCase()] : 1);
  }
  return total;
}

function splitArgs(rest: string): string[] {
  const out: string[] = [];
  for (const m of rest.matchAll(/"([^"]*)"|(\S+)/g)) out.push(m[1] ?? m[2]);
  return out;
}

export function parseSshConfig(text: string): { blocks: ConfigBlock[]; warnings: string[] } {
  const blocks: ConfigBlock[] = [{ patterns: ["*"], match: false, entries: [] }];
  const warnings: string[] = [];
  let lineNo = 0;
  for (const raw of text.split("\n")) {
    lineNo++;
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^(\S+?)(?:\s*=\s*|\s+)(.*)$/.exec(line);
    if (!m) continue;
    const key = m[1].toLowerCase();
    const args = splitArgs(m[2]);
    if (key === "host") {
      blocks.push({ patterns: args, match: false, entries: [] });
    } else if (key === "match") {
      warnings.push(`line ${lineNo}: Match blocks are not supported; their settings are ignored`);
      blocks.push({ patterns: [], match: true, entries: [] });
    } else if (key === "include") {
      warnings.push(`line ${lineNo}: Include is not supported`);
    } else if ((SUPPORTED_KEYS as readonly string[]).includes(key)) {
      blocks.at(-1)!.entries.push([key as SshKey, args]);
    }
  }
  return { blocks, warnings };
}

/** OpenSSH's pattern match: `*` and `?` wildcards, case-insensitive. */
export function matchPattern(pattern: string, host: string): boolean {
  const re = "^" + pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*")
    .replace(/\?/g, ".") +
    "$";
  return new RegExp(re, "i").test(host);
}

/** A pattern list matches when some pattern matches and no negated one does. */
export function matchPatternList(patterns: string[], host: string): boolean {
  let matched = false;
  for (const p of patterns) {
    if (p.startsWith("!")) {
      if (matchPattern(p.slice(1), host)) return false;
    } else if (matchPattern(p, host)) matched = true;
  }
  return matched;
}

function yesNo(v: string): boolean {
  return /^(yes|true)$/i.test(v);
}

/** The settings for `host` from one or more parsed files, first value winning. */
export function resolveHost(host: string, blocks: ConfigBlock[]): HostConfig {
  const seen = new Map<SshKey, string[]>();
  const identityFiles: string[] = [];
  for (const block of blocks) {
    if (block.match || !matchPatternList(block.patterns, host)) continue;
    for (const [key, args] of block.entries) {
      if (key === "identityfile") identityFiles.push(args[0]);
      else if (!seen.has(key)) seen.set(key, args);
    }
  }
  const one = (k: SshKey) => seen.get(k)?.[0];
  const num = (k: SshKey) => (one(k) === undefined ? undefined : Number(one(k)));
  const cfg: HostConfig = { identityFiles };
  if (one("hostname")) cfg.hostname = one("hostname")!.replaceAll("%h", host);
  if (one("port")) cfg.port = num("port");
  if (one("user")) cfg.user = one("user");
  if (one("identitiesonly")) cfg.identitiesOnly = yesNo(one("identitiesonly")!);
  if (one("proxyjump") && one("proxyjump") !== "none") cfg.proxyJump = one("proxyjump");
  if (seen.has("userknownhostsfile")) cfg.userKnownHostsFiles = seen.get("userknownhostsfile");
  if (seen.has("globalknownhostsfile")) {
    cfg.globalKnownHostsFiles = seen.get("globalknownhostsfile");
  }
  if (one("stricthostkeychecking")) {
    cfg.strictHostKeyChecking = one("stricthostkeychecking")!
      .toLowerCase() as HostConfig["strictHostKeyChecking"];
  }
  if (one("serveraliveinterval")) cfg.serverAliveInterval = num("serveraliveinterval");
  if (one("serveralivecountmax")) cfg.serverAliveCountMax = num("serveralivecountmax");
  if (one("connecttimeout")) cfg.connectTimeout = num("connecttimeout");
  if (one("batchmode")) cfg.batchMode = yesNo(one("batchmode")!);
  if (one("loglevel")) cfg.logLevel = one("loglevel")!.toLowerCase();
  const master = one("controlmaster")?.toLowerCase();
  if (master) {
    cfg.controlMaster = master === "true"
      ? "yes"
      : master === "false"
      ? "no"
      : master as HostConfig["controlMaster"];
  }
  if (one("controlpath")) cfg.controlPath = one("controlpath");
  if (one("controlpersist")) cfg.controlPersist = parsePersist(one("controlpersist")!);
  return cfg;
}

/** `~/x` and `%d/x` to the home directory, `%u` to the local user, `%h` to the host. */
export function expandPath(path: string, host: string, home: string, user: string): string {
  return path.replace(/^~(?=\/|$)/, home).replaceAll("%d", home).replaceAll("%u", user)
    .replaceAll("%h", host);
}
