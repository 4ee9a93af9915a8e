/**
 * outrun's command line, read like ssh's: options come before the destination,
 * and everything after the destination is the command and its arguments.
 */

import type { SshOptions } from "./ssh/destination.ts";

export interface CliOptions {
  destination: string;
  command: string[];
  port?: number;
  user?: string;
  identityFiles: string[];
  configFile?: string;
  jump?: string;
  sshOptions: string[];
  verbose: number;
  quiet: boolean;
  noCache: boolean;
  noPrefetch: boolean;
  /** Cached files the remote holds whole are read through its agent, not by its kernel. */
  noPassthrough: boolean;
  /** Print round trips, requests, bytes, cache hits and a time split at exit. */
  stats: boolean;
  timeout?: number;
  outrunConfig?: string;
  /** `-O check|exit`: a request to this host's ControlMaster instead of a command. */
  controlCommand?: "check" | "exit";
}

/** What of the command line says where and how to connect, as lib/ssh takes it. */
export function sshOptions(o: CliOptions): SshOptions {
  return {
    destination: o.destination,
    port: o.port,
    user: o.user,
    identityFiles: o.identityFiles,
    configFile: o.configFile,
    // --timeout first: the first value of a key wins, as in ssh.
    options: o.timeout ? [`ConnectTimeout=${o.timeout}`, ...o.sshOptions] : o.sshOptions,
    jump: o.jump,
    verbose: o.verbose,
    quiet: o.quiet,
  };
}

export type CliResult =
  | { kind: "run"; options: CliOptions }
  | { kind: "version" }
  | { kind: "help" }
  | { kind: "debug"; args: string[] }
  | { kind: "usage"; message: string };

export const USAGE =
  `usage: outrun [-qv] [-F ssh_config] [-i identity_file] [-J destination] [-l login_name]
              [-o option] [-p port] [--no-cache] [--no-prefetch] [--no-passthrough]
              [--stats] [--timeout seconds] [--config file] destination command [argument ...]
       outrun -O check|exit [options] destination
       outrun --version | --help`;

/** Options taking a value, as ssh spells them. */
const WITH_VALUE = new Set(["-p", "-l", "-i", "-F", "-J", "-o", "-O", "--timeout", "--config"]);

export function parseCli(args: string[]): CliResult {
  const o: CliOptions = {
    destination: "",
    command: [],
    identityFiles: [],
    sshOptions: [],
    verbose: 0,
    quiet: false,
    noCache: false,
    noPrefetch: false,
    noPassthrough: false,
    stats: false,
  };
  let i = 0;
  if (args[0] === "debug") return { kind: "debug", args: args.slice(1) };
  while (i < args.length) {
    let arg = args[i];
    if (arg === "--") {
      i++;
      break;
    }
    if (!arg.startsWith("-") || arg === "-") break;
    if (arg === "--version" || arg === "-V") return { kind: "version" };
    if (arg === "--help" || arg === "-h") return { kind: "help" };
    if (arg === "--no-cache") o.noCache = true;
    else if (arg === "--no-prefetch") o.noPrefetch = true;
    else if (arg === "--no-passthrough") o.noPassthrough = true;
    else if (arg === "--stats") o.stats = true;
    else if (/^-[vq]+$/.test(arg)) {
      for (const c of arg.slice(1)) c === "v" ? o.verbose++ : (o.quiet = true);
    } else {
      // -p22 and -p 22, --timeout=5 and --timeout 5
      let value: string | undefined;
      const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
      if (eq > 0) [arg, value] = [arg.slice(0, eq), arg.slice(eq + 1)];
      else if (!arg.startsWith("--") && arg.length > 2) {
        [arg, value] = [arg.slice(0, 2), arg.slice(2)];
      }
      if (!WITH_VALUE.has(arg)) {
        return { kind: "usage", message: `unknown option -- ${arg.replace(/^-+/, "")}` };
      }
      if (value === undefined) {
        if (i + 1 >= args.length) {
          return {
            kind: "usage",
            message: `option requires an argument -- ${arg.replace(/^-+/, "")}`,
          };
        }
        value = args[++i];
      }
      switch (arg) {
        case "-p":
        case "--timeout": {
          const n = Number(value);
          if (!Number.isInteger(n) || n <= 0 || (arg === "-p" && n > 65535)) {
            return {
              kind: "usage",
              message: `Bad ${arg === "-p" ? "port" : "timeout"} '${value}'`,
            };
          }
          if (arg === "-p") o.port = n;
          else o.timeout = n;
          break;
        }
        case "-l":
          o.user = value;
          break;
        case "-i":
          o.identityFiles.push(value);
          break;
        case "-F":
          o.configFile = value;
          break;
        case "-J":
          o.jump = value;
          break;
        case "-o":
          if (!/^\s*\w+\s*[= ]\s*\S/.test(value)) {
            return { kind: "usage", message: `bad -o option '${value}'` };
          }
          o.sshOptions.push(value);
          break;
        case "--config":
          o.outrunConfig = value;
          break;
        case "-O":
          if (value !== "check" && value !== "exit") {
            return { kind: "usage", message: `Invalid multiplex command '${value}'` };
          }
          o.controlCommand = value;
          break;
      }
    }
    i++;
  }
  if (i >= args.length) return { kind: "usage", message: "no destination given" };
  o.destination = args[i++];
  o.command = args.slice(i);
  if (o.controlCommand) {
    if (o.command.length) return { kind: "usage", message: "-O takes no command" };
    return { kind: "run", options: o };
  }
  if (o.command.length === 0) return { kind: "usage", message: "no command given" };
  return { kind: "run", options: o };
}
