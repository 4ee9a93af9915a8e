/**
 * The warden: a shell the agent starts first, which outlives it. The agent names
 * each process group it starts (an exec helper, then the command's group) and each
 * directory it mounts on; when the agent ends without taking a group back (SIGKILL,
 * the OOM killer), the warden's stdin ends and it kills those groups and removes
 * those directories, so that nothing of a session outlives it. The agent's own
 * namespace and mounts go with its processes. A shell rather than a second Deno:
 * it costs a megabyte, and every remote has one (busybox's too).
 */

/**
 * Lines on stdin: `+ PID` a group to kill, `- PID` not any more, `d DIR` an empty
 * directory to remove (rmdir: never what has files or a mount in it). `kill -KILL
 * -N` is the spelling dash, bash and busybox all take for a group; a helper that
 * has not made its group yet is killed by its pid.
 */
const SCRIPT = `
groups=" "
dirs=""
while read -r op arg; do
  case $op in
    +) groups="$groups$arg " ;;
    -) case $groups in *" $arg "*) groups="\${groups%% $arg *} \${groups#* $arg }" ;; esac ;;
    d) dirs="$dirs $arg" ;;
  esac
done
for g in $groups; do kill -KILL -$g 2>/dev/null || kill -KILL $g 2>/dev/null; done
for d in $dirs; do rmdir "$d" 2>/dev/null; done
exit 0
`;

export class Warden {
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #written: Promise<void> = Promise.resolve();

  private constructor(child: Deno.ChildProcess) {
    this.#stdin = child.stdin.getWriter();
    // It must not keep this process alive, nor be waited for: it is meant to outlive it.
    child.unref();
  }

  /** Starts the warden: before the agent takes a mount namespace, so it is in the host's. */
  static start(): Warden {
    return new Warden(
      new Deno.Command("/bin/sh", {
        args: ["-c", SCRIPT, "outrun-warden"],
        clearEnv: true,
        env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
        stdin: "piped",
        stdout: "null",
        stderr: "null",
      }).spawn(),
    );
  }

  /** The process group led by `pid` dies with the agent. */
  guard(pid: number): Promise<void> {
    return this.#say(`+ ${pid}`);
  }

  /** The group led by `pid` is gone (the agent killed and reaped it). */
  release(pid: number): Promise<void> {
    return this.#say(`- ${pid}`);
  }

  /** `dir` (a path without spaces) is removed if the agent dies. */
  removeAfter(dir: string): Promise<void> {
    return this.#say(`d ${dir}`);
  }

  /** Everything said so far has reached the warden's pipe. */
  flushed(): Promise<void> {
    return this.#written;
  }

  #say(line: string): Promise<void> {
    // In order; a warden that died (it should not) costs only its protection.
    this.#written = this.#written
      .then(() => this.#stdin.write(new TextEncoder().encode(`${line}\n`)))
      .catch(() => {});
    return this.#written;
  }
}
