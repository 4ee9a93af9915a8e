/** Running the system tools the test bed is made of, with errors that say which one failed. */

export interface RunOptions {
  /** Keep the command's stdout/stderr unless it fails. */
  quiet?: boolean;
  /** Do not throw on a non-zero exit. */
  allowFail?: boolean;
  stdin?: string;
}

export class CommandError extends Error {
  override name = "CommandError";
  constructor(readonly argv: string[], readonly code: number, readonly output: string) {
    super(`${argv.join(" ")}: exit ${code}${output ? `\n${output.trimEnd()}` : ""}`);
  }
}

export async function run(argv: string[], options: RunOptions = {}): Promise<string> {
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const out = await child.output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success && !options.allowFail) {
    throw new CommandError(argv, out.code, stdout + stderr);
  }
  if (!options.quiet && stderr && out.success) Deno.stderr.writeSync(out.stderr);
  return stdout;
}

/** Starts `argv` in its own session, detached, output to `logFile`; returns its pid. */
export function spawnDetached(argv: string[], logFile: string): number {
  const quoted = argv.map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");
  const child = new Deno.Command("bash", {
    args: ["-c", `exec setsid ${quoted} >>'${logFile}' 2>&1 </dev/null`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  child.unref();
  return child.pid;
}

/** True while `pid` exists and is not a zombie (a zombie is dead, only not yet reaped). */
export function isRunning(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return false;
  }
}
