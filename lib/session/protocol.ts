/**
 * The session's own messages between outrun's local side and the remote agent, on
 * top of lib/rpc (the file service's messages are lib/fs/proxy.ts's).
 */

import type { Profile } from "../fs/cache/protocol.ts";
import { type RpcPeer, TypedPeer } from "../rpc/mod.ts";

/** Local -> agent call "run": what to run, where, as whom. */
export interface RunRequest {
  argv: string[];
  /**
   * argv[0] found through PATH on this machine (the mirror shows the same files),
   * so the remote need not walk PATH over the link; null: not found here.
   */
  exe: string | null;
  cwd: string;
  env: Record<string, string>;
  uid: number;
  gid: number;
  groups: number[];
  /** Set when local stdin and stdout are terminals: the command gets a pty this size. */
  tty: WindowSize | null;
  /** The remote cache's settings, or null (--no-cache): every request crosses. */
  cache: CacheSettings | null;
  /**
   * The remote cache was found empty and the local side pushes the command's profile
   * unasked, then the validation's answer for an empty store (`cache.validated`): the
   * agent waits for it rather than asking, unless it holds something after all.
   */
  validatedAhead?: boolean;
  /** -q: the remote says nothing of its own either (warnings of binds, of the cwd). */
  quiet?: boolean;
}

export interface CacheSettings {
  /** The store's directory on the remote ("~/" is the remote user's home). */
  dir: string;
  /** This machine-and-user's id: the store keeps each client's paths apart. */
  client: string;
  prefixes: string[];
  prefetch: boolean;
  /** Whether the remote kernel may read whole cached files itself (FUSE passthrough). */
  passthrough: boolean;
  maxEntries: number;
  maxBytes: number;
}

/** What the agent measured, for --stats. */
export interface RemoteStats {
  /** Blocking calls the agent made to the local side, by method. */
  calls: Record<string, number>;
  cache: {
    held: number;
    stale: number;
    evicted: number;
    metaHits: number;
    metaMisses: number;
    chunkHits: number;
    /** Opens of whole cached files handed to the remote kernel (their reads are not counted). */
    directOpens: number;
    chunkMisses: number;
    /** Held names checked before the command started (the rest while it ran). */
    checkedFirst: number;
    /** Requests that waited for the rest's answer (validateRest). */
    restWaits: number;
  } | null;
  /** Milliseconds. */
  validateMs: number;
  mountMs: number;
  runMs: number;
}

export interface WindowSize {
  rows: number;
  cols: number;
}

/** Agent -> local answer to "run". */
export interface RunResult {
  code: number | null;
  /** Set when the command was killed by a signal (e.g. "SIGTERM"). */
  signal: string | null;
  stats: RemoteStats;
  /** What the command used of the cached paths (null without the cache). */
  used: Profile | null;
}

/**
 * Local -> agent call "serve" (ControlMaster): mount the mirror once and keep it;
 * each command then comes through a tunnel of this connection as its own "run".
 */
export interface ServeRequest {
  cache: CacheSettings | null;
}

/** The session's calls (local -> agent), with their types. */
export type SessionCalls = {
  "session.run": { args: RunRequest; result: RunResult };
  "session.serve": { args: ServeRequest; result: null };
};

/** `peer` seen through the session's calls (it has no events of its own: EVENTS are raw). */
export function sessionPeer(peer: RpcPeer): TypedPeer<SessionCalls, Record<never, never>> {
  return new TypedPeer(peer);
}

/** What the agent hands its exec helper (on the helper's stdin, see exec_helper.ts). */
export interface ExecPlan extends Omit<RunRequest, "tty" | "cache"> {
  root: string;
  /** The pty's slave (/dev/pts/N) to make the controlling terminal and stdio, or null. */
  tty: string | null;
  /**
   * Without a pty: the pipes the command's stdin, stdout and stderr are, as the
   * agent's /proc/PID/fd paths (its own ends are read and written off its event
   * loop: lib/sys/pipe.ts says why).
   */
  stdio: { stdin: string; stdout: string; stderr: string } | null;
  /** Remote directories bound into the mirror before the chroot. */
  binds: string[];
}

/** The remote's directories bound into the mirror (over the local ones) for a command. */
export const BIND_DIRS = ["/dev", "/proc", "/sys", "/run"];

/** PATH directories whose lookups go along at most. */
const PATH_AHEAD = 32;

/**
 * What the remote looks up outside the cached prefixes as a command starts, for the
 * validation's answer to bring along (ValidateRequest.ahead): the bind mount points,
 * the cwd, the command's path and, when argv[0] is a bare name, it in each PATH
 * directory (a program finding itself or its tools that way, as gcc does, looked up
 * ~10 names in the home directory one round trip each).
 */
export function aheadPaths(r: Pick<RunRequest, "cwd" | "exe" | "argv" | "env">): string[] {
  const out = [...BIND_DIRS, r.cwd, ...(r.exe ? [r.exe] : [])];
  const name = r.argv[0];
  if (!name || name.includes("/")) return out;
  const dirs = new Set((r.env.PATH ?? "").split(":").filter((d) => d.startsWith("/")));
  for (const dir of [...dirs].slice(0, PATH_AHEAD)) out.push(`${dir.replace(/\/+$/, "")}/${name}`);
  return out;
}

/** One-way events. */
export const EVENTS = {
  stdout: "session.stdout",
  stderr: "session.stderr",
  stdin: "session.stdin",
  stdinEof: "session.stdin-eof",
  signal: "session.signal",
  /** New window size (WindowSize) of the local terminal. */
  winch: "session.winch",
  /**
   * "stdout" or "stderr": that output can no longer be written here (its reader went
   * away): the command's end of it is closed, as ssh's would be (EPIPE, SIGPIPE).
   */
  outputClosed: "session.output-closed",
} as const;

/**
 * Forwarded signals that ask the command to end: when it has not ended
 * LEAVE_AFTER_S seconds after one, or when a second comes, outrun leaves (cuts the
 * session, and so kills what runs there) rather than wait for ever.
 */
export const ENDING_SIGNALS = ["SIGTERM", "SIGHUP"] as const;
export const LEAVE_AFTER_S = 10;

export const FORWARDED_SIGNALS = [
  "SIGINT",
  "SIGTERM",
  "SIGHUP",
  "SIGQUIT",
  "SIGUSR1",
  "SIGUSR2",
] as const;
