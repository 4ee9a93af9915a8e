/**
 * Removing a test's directory tree, never through a mount. A test mirror may show
 * this machine's whole `/` read-write: a recursive remove that walked into a live
 * mount would delete the real files behind it (it once took /etc). So whatever is
 * mounted at or below the directory is aborted (FUSE) and detached first, and if
 * a mount is still there after that, nothing is removed and the test fails.
 */
import {
  abortConnection,
  MNT_DETACH,
  type MountInfo,
  parseMountInfo,
  sysUmount,
} from "../lib/fuse/mount.ts";

/** Mounts at `dir` or below it, deepest first. */
export function mountsUnder(dir: string): MountInfo[] {
  const all = parseMountInfo(Deno.readTextFileSync("/proc/self/mountinfo"));
  return all
    .filter((m) => m.mountpoint === dir || m.mountpoint.startsWith(`${dir}/`))
    .sort((a, b) => b.mountpoint.length - a.mountpoint.length);
}

export async function removeTree(dir: string): Promise<void> {
  let real: string;
  try {
    real = Deno.realPathSync(dir);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  if (real === "/" || real.split("/").filter(Boolean).length < 2) {
    throw new Error(`removeTree: refusing to remove ${real}`);
  }
  for (const m of mountsUnder(real)) {
    if (m.fstype.startsWith("fuse")) abortConnection(m);
    try {
      sysUmount(m.mountpoint, MNT_DETACH);
    } catch { /* checked below */ }
  }
  const left = mountsUnder(real);
  if (left.length) {
    throw new Error(
      `removeTree: ${real} still has mounts (${
        left.map((m) => m.mountpoint).join(", ")
      }): not removed`,
    );
  }
  await Deno.remove(real, { recursive: true });
}
