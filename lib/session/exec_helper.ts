/**
 * The exec helper: started by the agent inside its mount namespace, as root, ahead
 * of the command (a Deno start takes a while): it waits for its plan on stdin,
 * then takes a mount namespace of its own (the binds go with the command, and many
 * commands may share one mirror), binds the remote's /dev, /proc, /sys and /run
 * into the mirror (from this process: a mount on a path inside the FUSE mount
 * makes the kernel ask the agent, which must be free to answer), chroots, changes
 * to the local cwd, takes the local user's groups, gid and uid (in that order:
 * after setresuid nothing else is allowed), and execs the command found through
 * PATH. It never returns on success.
 */
import { MS_BIND, MS_REC, sysMount } from "../fuse/mod.ts";
import {
  check,
  CLONE_NEWNS,
  close,
  cstr,
  cStringArray,
  errno,
  libc,
  O,
  open,
} from "../sys/libc.ts";
import { Errno, errnoName } from "../sys/errno.ts";
import type { ExecPlan } from "./protocol.ts";
import { DEFAULT_PATH } from "./which.ts";

const SIGPIPE = 13;

function warn(plan: ExecPlan, message: string): void {
  if (!plan.quiet) Deno.stderr.writeSync(new TextEncoder().encode(`outrun: warning: ${message}\n`));
}

function fail(message: string, code: number): never {
  Deno.stderr.writeSync(new TextEncoder().encode(`outrun: ${message}\n`));
  Deno.exit(code);
}

/** Exactly `n` bytes of stdin: not one more (the plan is all it carries). */
function readExactly(n: number): Uint8Array {
  const buf = new Uint8Array(n);
  for (let at = 0; at < n;) {
    const got = Deno.stdin.readSync(buf.subarray(at));
    // The agent went away before the plan came: nothing to run.
    if (got === null) Deno.exit(255);
    at += got;
  }
  return buf;
}

/** The plan as the agent writes it: 8 hex digits of length, then that much JSON. */
export function readPlan(): ExecPlan {
  const length = parseInt(new TextDecoder().decode(readExactly(8)), 16);
  if (!Number.isInteger(length)) fail("bad plan from the agent", 255);
  return JSON.parse(new TextDecoder().decode(readExactly(length)));
}

function findInPath(command: string, path: string): string | null {
  if (command.includes("/")) return command;
  for (const dir of path.split(":")) {
    const candidate = `${dir || "."}/${command}`;
    try {
      const st = Deno.statSync(candidate);
      if (st.isFile && (st.mode ?? 0) & 0o111) return candidate;
    } catch { /* not here */ }
  }
  return null;
}

/**
 * Makes the pty's slave the controlling terminal and stdin/stdout/stderr: a new
 * session (setsid), then the first terminal its leader opens becomes its own. The
 * slave belongs to the user, mode 0620, as sshd leaves it.
 */
function takeTerminal(path: string, uid: number): void {
  const lib = libc();
  check("setsid", lib.setsid());
  const fd = open(path, O.RDWR);
  check("fchown", lib.fchown(fd, uid, 0xffffffff));
  check("fchmod", lib.fchmod(fd, 0o620));
  for (const target of [0, 1, 2]) check("dup2", lib.dup2(fd, target));
  if (fd > 2) close(fd);
}

/** Makes the agent's pipes stdin, stdout and stderr (each opened anew, blocking). */
function takePipes(stdio: NonNullable<ExecPlan["stdio"]>): void {
  const lib = libc();
  const ends: [string, number, number][] = [
    [stdio.stdin, O.RDONLY, 0],
    [stdio.stdout, O.WRONLY, 1],
    [stdio.stderr, O.WRONLY, 2],
  ];
  for (const [path, flags, target] of ends) {
    const fd = open(path, flags);
    check("dup2", lib.dup2(fd, target));
    if (fd > 2) close(fd);
  }
}

export function execHelper(plan: ExecPlan): never {
  const lib = libc();
  check("unshare", lib.unshare(CLONE_NEWNS));
  if (plan.tty) takeTerminal(plan.tty, plan.uid);
  else {
    // A process group of its own: what the command starts ends with the session.
    check("setpgid", lib.setpgid(0, 0));
    if (plan.stdio) takePipes(plan.stdio);
  }
  for (const dir of plan.binds) {
    try {
      sysMount(dir, `${plan.root}${dir}`, null, MS_BIND | MS_REC, null);
    } catch (err) {
      // The local machine has no such directory to mount on: run without it.
      warn(plan, `bind ${dir}: ${err}`);
    }
  }
  check("chroot", lib.chroot(cstr(plan.root)));
  if (lib.chdir(cstr(plan.cwd)) !== 0) {
    warn(plan, `cd ${plan.cwd} failed; running in /`);
    check("chdir", lib.chdir(cstr("/")));
  }
  const groups = new Uint32Array(plan.groups);
  check("setgroups", lib.setgroups(BigInt(groups.length), new Uint8Array(groups.buffer)));
  check("setresgid", lib.setresgid(plan.gid, plan.gid, plan.gid));
  check("setresuid", lib.setresuid(plan.uid, plan.uid, plan.uid));
  const command = plan.argv[0];
  const path = plan.exe ?? findInPath(command, plan.env.PATH ?? DEFAULT_PATH);
  if (path === null) fail(`${command}: command not found`, 127);
  // Deno ignores SIGPIPE, and an ignored signal stays ignored across execve: the
  // command gets the default, as from sshd (`yes | head -1` ends yes by SIGPIPE).
  lib.signal(SIGPIPE, null);
  const argv = cStringArray(plan.argv);
  const envp = cStringArray(Object.entries(plan.env).map(([k, v]) => `${k}=${v}`));
  lib.execve(cstr(path), argv.array, envp.array);
  // Only a failed execve returns. Like a shell: 127 when there is no such file, 126 else.
  const e = errno();
  fail(`${command}: ${errnoName(e)}`, e === Errno.ENOENT ? 127 : 126);
}
