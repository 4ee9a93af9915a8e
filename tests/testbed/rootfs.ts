/**
 * Root filesystems of the test-bed hosts, built once and cached outside the
 * repository as tarballs (plus their unpacked tree, the overlay's lower layer).
 *
 * - `deb`: a Debian suite other than the local one, debootstrap --variant=minbase
 *   with openssh-server, from the Debian mirror this machine's apt already uses.
 * - `tiny`: busybox-static alone: no glibc, no dynamic loader, no python.
 */
import { run } from "./sh.ts";

export const CACHE_DIR = Deno.env.get("OUTRUN_TESTBED_CACHE") ?? "/var/cache/outrun-testbed";
export const DEB_SUITE = Deno.env.get("OUTRUN_TESTBED_SUITE") ?? "trixie";

/** The Debian mirror from apt's own configuration (deb822 .sources or sources.list). */
export async function debianMirror(): Promise<string> {
  const fromEnv = Deno.env.get("OUTRUN_DEBIAN_MIRROR");
  if (fromEnv) return fromEnv;
  const texts: string[] = [];
  for (const dir of ["/etc/apt/sources.list.d"]) {
    try {
      for await (const entry of Deno.readDir(dir)) {
        if (entry.name.endsWith(".sources") || entry.name.endsWith(".list")) {
          texts.push(await Deno.readTextFile(`${dir}/${entry.name}`));
        }
      }
    } catch { /* no such dir */ }
  }
  try {
    texts.push(await Deno.readTextFile("/etc/apt/sources.list"));
  } catch { /* absent */ }
  const mirror = findDebianMirror(texts.join("\n\n"));
  if (!mirror) throw new Error("no Debian mirror in apt's sources; set OUTRUN_DEBIAN_MIRROR");
  return mirror;
}

/**
 * The first `deb` source that signs with Debian's archive keyring (deb822) or serves
 * a Debian main component, and is not the security archive.
 */
export function findDebianMirror(text: string): string | undefined {
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const line of stanza.split("\n")) {
      const m = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
      if (m) fields.set(m[1].toLowerCase(), m[2].trim());
    }
    const uri = fields.get("uris")?.split(/\s+/)[0];
    if (
      uri && (fields.get("types") ?? "").split(/\s+/).includes("deb") &&
      (fields.get("signed-by") ?? "").includes("debian-archive-keyring") &&
      !(fields.get("suites") ?? "").includes("security")
    ) return uri;
  }
  for (const line of text.split("\n")) {
    const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$/.exec(line.trim());
    if (m && !m[2].includes("security") && /\bmain\b/.test(m[3]) && /debian/.test(m[1])) {
      return m[1];
    }
  }
  return undefined;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Builds `name` with `build(dir)` into a tarball once, unpacks it once; returns the tree. */
async function cachedRoot(name: string, build: (dir: string) => Promise<void>): Promise<string> {
  const tarball = `${CACHE_DIR}/${name}.tar.gz`;
  const tree = `${CACHE_DIR}/roots/${name}`;
  if (await exists(`${tree}/.complete`)) return tree;
  await Deno.mkdir(`${CACHE_DIR}/roots`, { recursive: true });
  if (!(await exists(tarball))) {
    const work = `${CACHE_DIR}/build-${name}`;
    await run(["rm", "-rf", work]);
    await Deno.mkdir(work, { recursive: true });
    console.error(`testbed: building root ${name} (once; cached in ${CACHE_DIR})`);
    await build(work);
    await run(["tar", "-C", work, "-I", "gzip -1", "-cf", `${tarball}.tmp`, "."]);
    await Deno.rename(`${tarball}.tmp`, tarball);
    await run(["rm", "-rf", work]);
  }
  await run(["rm", "-rf", tree]);
  await Deno.mkdir(tree, { recursive: true });
  await run(["tar", "-C", tree, "-xzf", tarball]);
  await Deno.writeTextFile(`${tree}/.complete`, "");
  return tree;
}

export async function debRoot(): Promise<string> {
  // The cache's name carries the package list: a root built with fewer is not reused.
  const packages = ["openssh-server", "sudo"];
  return await cachedRoot(`deb-${DEB_SUITE}-${packages.join("+")}`, async (dir) => {
    const mirror = await debianMirror();
    await run([
      "debootstrap",
      "--variant=minbase",
      `--include=${packages.join(",")}`,
      DEB_SUITE,
      dir,
      mirror,
    ], { quiet: true });
    await run(["sh", "-c", `rm -rf ${dir}/var/lib/apt/lists/* ${dir}/var/cache/apt/*`]);
  });
}

export async function tinyRoot(): Promise<string> {
  return await cachedRoot("tiny-busybox", async (dir) => {
    for (const d of ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc", "sys"]) {
      await Deno.mkdir(`${dir}/${d}`, { recursive: true });
    }
    await Deno.copyFile("/bin/busybox", `${dir}/bin/busybox`);
    await Deno.chmod(`${dir}/bin/busybox`, 0o755);
    await run(["chroot", dir, "/bin/busybox", "--install", "-s"]);
    await Deno.writeTextFile(`${dir}/etc/passwd`, "root:x:0:0:root:/root:/bin/sh\n");
    await Deno.writeTextFile(`${dir}/etc/group`, "root:x:0:\n");
    await Deno.chmod(`${dir}/root`, 0o700);
    await Deno.chmod(`${dir}/tmp`, 0o1777);
  });
}
