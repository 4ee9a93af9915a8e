/**
 * Where a destination leads, read the way OpenSSH reads it, without connecting:
 * `user@host`, -l, -p, -o and ssh_config (-F, else ~/.ssh/config then
 * /etc/ssh/ssh_config). Kept apart from connect.ts so that what only needs a
 * host's settings (a ControlMaster client) does not load the SSH library.
 */
import type { Socket } from "node:net";
import { type ConfigBlock, type HostConfig, parseSshConfig, resolveHost } from "./config.ts";

export class SshError extends Error {
  override name = "SshError";
}

export interface SshOptions {
  /** What the user typed: `host` or `user@host`. */
  destination: string;
  port?: number;
  user?: string;
  identityFiles?: string[];
  configFile?: string;
  /** `-o Key=Value` pairs, applied before any file. */
  options?: string[];
  jump?: string;
  verbose?: number;
  /** -q: no warnings or notices of outrun's own (errors still). */
  quiet?: boolean;
  log?: (line: string) => void;
  /** A TCP connection to the destination begun before (tcp.ts connectEarly). */
  socket?: Promise<Socket>;
}

export interface Resolved {
  alias: string;
  hostname: string;
  port: number;
  user: string;
  config: HostConfig;
}

export function home(): string {
  return Deno.env.get("HOME") ?? "/";
}

export function localUser(): string {
  return Deno.env.get("USER") ?? Deno.env.get("LOGNAME") ?? "root";
}

export function readIfExists(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null;
  }
}

export function loadConfigBlocks(options: SshOptions): ConfigBlock[] {
  const blocks: ConfigBlock[] = [];
  if (options.options?.length) {
    const text = options.options.map((o) => o.replace("=", " ")).join("\n");
    blocks.push(...parseSshConfig(text).blocks);
  }
  const files = options.configFile
    ? [options.configFile]
    : [`${home()}/.ssh/config`, "/etc/ssh/ssh_config"];
  for (const file of files) {
    const text = readIfExists(file);
    if (text === null) {
      if (options.configFile) {
        throw new SshError(`Can't open user config file ${file}: No such file or directory`);
      }
      continue;
    }
    const parsed = parseSshConfig(text);
    for (const w of parsed.warnings) options.log?.(`${file}: ${w}`);
    blocks.push(...parsed.blocks);
  }
  return blocks;
}

export function resolveDestination(options: SshOptions, blocks: ConfigBlock[]): Resolved {
  let alias = options.destination;
  let user = options.user;
  const at = alias.lastIndexOf("@");
  if (at >= 0) {
    user ??= alias.slice(0, at);
    alias = alias.slice(at + 1);
  }
  if (!alias) throw new SshError("ssh: no host given");
  const config = resolveHost(alias, blocks);
  return {
    alias,
    hostname: config.hostname ?? alias,
    port: options.port ?? config.port ?? 22,
    user: user ?? config.user ?? localUser(),
    config,
  };
}
