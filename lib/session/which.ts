/**
 * Finding the command on this machine, as the shell would: the remote sees the
 * same files through the mirror, so it need not walk PATH over the link.
 */
import { dirname, isCachedPath, join, resolveLink } from "../fs/cache/protocol.ts";

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

/** `a` is `b` or lies under it. */
function within(a: string, b: string): boolean {
  return a === b || b === "/" || a.startsWith(`${b}/`);
}

/**
 * The tree the command was installed in, when it lies outside the cached prefixes:
 * the parent of the directory its executable is in (~/.pyenv for the shim
 * ~/.pyenv/shims/python3, ~/.cargo for ~/.cargo/bin/rg, the version's directory for
 * an nvm node). A session caches it as it does the system directories: a python
 * under pyenv read its standard library one round trip per file, every run (38 s for
 * a script on a 20 ms link; 2.4 s with the tree cached). Not "/" or a top directory,
 * not the home directory or one that holds it, and not a tree that holds the cwd
 * (where the command's own files are). What the command writes into it lands here
 * as anywhere; what changes here while it runs is seen by the next session.
 */
export function exePrefix(
  exe: string | null,
  cwd: string,
  home: string | undefined,
  prefixes: readonly string[],
): string | null {
  if (!exe) return null;
  let real: string;
  try {
    real = Deno.realPathSync(exe);
  } catch {
    return null;
  }
  if (isCachedPath(real, prefixes)) return null;
  const root = dirname(dirname(real));
  if (root.split("/").filter(Boolean).length < 2) return null;
  if (home && within(home, root)) return null;
  if (within(cwd, root)) return null;
  return root;
}
