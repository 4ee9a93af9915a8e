/**
 * Finding the command on this machine, as the shell would: the remote sees the
 * same files through the mirror, so it need not walk PATH over the link.
 */
import { join, resolveLink } from "../fs/cache/protocol.ts";

/** Where a command is looked for when the environment has no PATH. */
export const DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin";

/**
 * argv[0] as a shell would find it: a name with a slash as is (made absolute), else
 * the first executable regular file of that name in PATH; null when there is none.
 */
export function resolveCommand(argv0: string, cwd: string, path: string): string | null {
  const candidates = argv0.includes("/")
    ? [argv0.startsWith("/") ? argv0 : join(cwd, argv0)]
    : path.split(":").map((d) =>
      join(d === "" ? cwd : d.startsWith("/") ? d : join(cwd, d), argv0)
    );
  for (const candidate of candidates) {
    // "./x" and "a/../b" made plain: the remote looks the path up name by name.
    const c = resolveLink("/", candidate);
    try {
      const st = Deno.statSync(c);
      if (st.isFile && (st.mode! & 0o111) !== 0) return c;
    } catch { /* next */ }
  }
  return null;
}
