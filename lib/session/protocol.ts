/**
 * The session's own messages between outrun's local side and the remote agent, on
 * top of lib/rpc (the file service's messages are lib/fs/proxy.ts's).
 */

/** Local -> agent call "run": what to run, where, as whom. */
export interface RunRequest {
  argv: string[];
  cwd: string;
  env: Record<string, string>;
  uid: number;
  gid: number;
  groups: number[];
  /** Set when local stdin and stdout are terminals: the command gets a pty this size. */
  tty: WindowSize | null;
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
}

/** What the agent hands its exec helper (as JSON in argv). */
export interface ExecPlan extends Omit<RunRequest, "tty"> {
  root: string;
  /** The pty's slave (/dev/pts/N) to make the controlling terminal and stdio, or null. */
  tty: string | null;
  /** Remote directories bound into the mirror before the chroot. */
  binds: string[];
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
} as const;

export const FORWARDED_SIGNALS = [
  "SIGINT",
  "SIGTERM",
  "SIGHUP",
  "SIGQUIT",
  "SIGUSR1",
  "SIGUSR2",
] as const;
