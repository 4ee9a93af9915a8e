/**
 * Mounting and unmounting a FUSE filesystem with mount(2) on an fd of /dev/fuse
 * (no fusermount, no libfuse), and clearing a mount whose server died.
 */
import { check, close, cstr, libc, O, open, SysError } from "../sys/libc.ts";
import { Errno } from "../sys/errno.ts";
import { stat } from "../sys/stat.ts";

export const MS_RDONLY = 1;
export const MS_NOSUID = 2;
export const MS_NODEV = 4;
export const MS_BIND = 4096;
export const MS_REC = 16384;
export const MS_PRIVATE = 1 << 18;
export const MNT_FORCE = 1;
export const MNT_DETACH = 2;

export interface MountOptions {
  /** Shown as the mount's source in /proc/mounts. */
  fsName?: string;
  /** The type is `fuse.<subtype>`. */
  subtype?: string;
  /** Let users other than the mounting one in (the remote command runs as the local uid). */
  allowOther?: boolean;
  /** The kernel checks permissions from the attributes we return. */
  defaultPermissions?: boolean;
  readOnly?: boolean;
  /** 1 MiB readahead (the kernel's default is 128 KiB): fewer, larger READs. */
  readAheadKb?: number;
}

export interface FuseMount {
  fd: number;
  mountpoint: string;
  /**
   * The mount's source in /proc/mounts, unique to this mount ("NAME#pid.n"): it tells
   * our mount from a later one at the same path (mount ids and device minors are
   * reused as soon as they are freed).
   */
  source: string;
}

let mountsMade = 0;

export function openFuseDevice(): number {
  return open("/dev/fuse", O.RDWR | O.CLOEXEC | O.NONBLOCK);
}

export function sysMount(
  source: string,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null,
): void {
  const lib = libc();
  check(
    "mount",
    lib.mount(
      cstr(source),
      cstr(target),
      fstype === null ? null : cstr(fstype),
      BigInt(flags),
      data === null ? null : cstr(data),
    ),
    target,
  );
}

export function sysUmount(target: string, flags = 0): void {
  check("umount2", libc().umount2(cstr(target), flags), target);
}

/** Mounts a FUSE filesystem at `mountpoint`; serve the returned fd with `FuseSession`. */
export function mountFuse(mountpoint: string, options: MountOptions = {}): FuseMount {
  const st = stat(mountpoint);
  const fd = openFuseDevice();
  const data = [
    `fd=${fd}`,
    `rootmode=${(st.mode & 0o170000).toString(8)}`,
    `user_id=${Deno.uid() ?? 0}`,
    `group_id=${Deno.gid() ?? 0}`,
    ...(options.allowOther ?? true ? ["allow_other"] : []),
    ...(options.defaultPermissions ?? true ? ["default_permissions"] : []),
  ].join(",");
  const flags = MS_NOSUID | MS_NODEV | (options.readOnly ? MS_RDONLY : 0);
  const source = `${options.fsName ?? "outrun"}#${Deno.pid}.${++mountsMade}`.replaceAll(" ", "_");
  try {
    sysMount(
      source,
      mountpoint,
      `fuse.${options.subtype ?? "outrun"}`,
      flags,
      data,
    );
  } catch (err) {
    close(fd);
    throw err;
  }
  return { fd, mountpoint, source };
}

export interface MountInfo {
  id: number;
  major: number;
  minor: number;
  mountpoint: string;
  fstype: string;
  source: string;
}

function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMountInfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const fields = line.split(" ");
    const dash = fields.indexOf("-");
    if (dash < 6) continue;
    const [major, minor] = fields[2].split(":").map(Number);
    out.push({
      id: Number(fields[0]),
      major,
      minor,
      mountpoint: unescapeMountPath(fields[4]),
      fstype: fields[dash + 1],
      source: unescapeMountPath(fields[dash + 2]),
    });
  }
  return out;
}

export function mountsAt(mountpoint: string): MountInfo[] {
  const all = parseMountInfo(Deno.readTextFileSync("/proc/self/mountinfo"));
  return all.filter((m) => m.mountpoint === mountpoint);
}

/** Raises the readahead of the FUSE mount at `mountpoint` (its bdi is named major:minor). */
export function setReadAhead(mountpoint: string, kb: number): void {
  const m = mountsAt(mountpoint).at(-1);
  if (!m) return;
  try {
    Deno.writeTextFileSync(`/sys/class/bdi/${m.major}:${m.minor}/read_ahead_kb`, `${kb}\n`);
  } catch {
    // Not fatal: the kernel's default readahead still works.
  }
}

const FUSECTL = "/sys/fs/fuse/connections";

/** Aborts the FUSE connection behind a mount, so nothing waits on a dead or hung server. */
export function abortConnection(m: MountInfo): boolean {
  try {
    Deno.statSync(`${FUSECTL}/${m.minor}`);
  } catch {
    try {
      sysMount("fusectl", FUSECTL, "fusectl", 0, null);
    } catch { /* already mounted, or not available */ }
  }
  try {
    Deno.writeTextFileSync(`${FUSECTL}/${m.minor}/abort`, "1");
    return true;
  } catch {
    return false;
  }
}

/**
 * Removes every FUSE mount stacked on `mountpoint` whose fstype is `fuse.<subtype>`:
 * left behind by a server that was killed (SIGKILL) or hung. Never stats the mount
 * itself (that would hang on a hung server): it aborts the connection, then
 * detaches. Returns how many were removed.
 */
export function clearStaleMounts(mountpoint: string, subtype = "outrun"): number {
  let cleared = 0;
  for (const m of mountsAt(mountpoint).reverse()) {
    if (m.fstype !== `fuse.${subtype}`) continue;
    abortConnection(m);
    try {
      sysUmount(mountpoint, MNT_DETACH);
      cleared++;
    } catch (err) {
      if (!(err instanceof SysError && err.errno === Errno.EINVAL)) throw err;
    }
  }
  return cleared;
}

/**
 * Unmounts our mount (the server's loop then sees ENODEV and returns), only if it
 * is still the top mount at its path: after an abort, another server may have
 * mounted there since, and that mount is not ours to remove.
 */
export function unmountFuse(mount: FuseMount): void {
  const top = mountsAt(mount.mountpoint).at(-1);
  if (!top || top.source !== mount.source) return;
  try {
    sysUmount(mount.mountpoint, MNT_DETACH);
  } catch (err) {
    if (!(err instanceof SysError && err.errno === Errno.EINVAL)) throw err;
  }
}
