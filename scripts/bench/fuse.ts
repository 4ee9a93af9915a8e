/**
 * FUSE layer benchmark (no network): the same workloads on the underlying
 * directory, through `outrun debug loopback`, and through libfuse's C
 * passthrough_ll (built from the example Debian's libfuse3-dev ships).
 * Wall time medians of a few runs; each run on a fresh mount (cold kernel caches
 * for the mount; the underlying files stay in the page cache).
 */
import { clearStaleMounts, mountsAt } from "../../lib/fuse/mount.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const SMALL_TREE = "/usr/include";
const SETTLE_MS = 1500;
const EARLY_FILES = 4000;

export interface FuseBenchOptions {
  files: number;
  bigMiB: number;
  runs: number;
  workDir: string;
}

export interface FuseBenchRow {
  workload: string;
  unit: string;
  native: number | null;
  outrun: number | null;
  libfuse: number | null;
}

async function sh(script: string): Promise<string> {
  const out = await new Deno.Command("bash", { args: ["-euo", "pipefail", "-c", script] }).output();
  if (!out.success) {
    throw new Error(`${script}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** Builds passthrough_ll from Debian's libfuse3-dev examples; null when it cannot. */
async function buildPassthrough(workDir: string): Promise<string | null> {
  const src = "/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c";
  const bin = `${workDir}/passthrough_ll`;
  try {
    await Deno.stat(src);
    await sh(`gcc -O2 -Wall '${src}' -o '${bin}' $(pkg-config fuse3 --cflags --libs)`);
    return bin;
  } catch (err) {
    console.error(`bench: no libfuse passthrough_ll (${err instanceof Error ? err.message : err})`);
    return null;
  }
}

type Server = "outrun" | "libfuse";

async function withMount<T>(
  server: Server,
  src: string,
  mnt: string,
  passthrough: string,
  fn: () => Promise<T>,
  onMounted?: () => Promise<void>,
): Promise<T> {
  await Deno.mkdir(mnt, { recursive: true });
  const child = server === "outrun"
    ? new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        MAIN,
        "debug",
        "loopback",
        src,
        mnt,
        "--attr-timeout",
        "86400",
      ],
      stderr: "null",
    }).spawn()
    : new Deno.Command("bash", {
      // passthrough_ll keeps an O_PATH fd per inode: give it all the fds it may have
      // (the hard limit; here 20000, so the default file counts stay below it).
      args: [
        "-c",
        `ulimit -n "$(ulimit -Hn)" && exec '${passthrough}' -f -o source='${src}',allow_other,cache=always '${mnt}'`,
      ],
      stderr: "null",
    }).spawn();
  const deadline = Date.now() + 10_000;
  while (!mountsAt(mnt).some((m) => m.fstype.startsWith("fuse"))) {
    if (Date.now() > deadline) throw new Error(`${server} never mounted ${mnt}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  await sh(`stat '${mnt}' >/dev/null`);
  if (onMounted) await onMounted();
  // Steady state: both servers get the same settle time (ours warms up its JIT).
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  if (server === "libfuse") {
    // Same readahead as outrun sets for itself.
    const m = mountsAt(mnt).at(-1)!;
    await Deno.writeTextFile(`/sys/class/bdi/${m.major}:${m.minor}/read_ahead_kb`, "1024");
  }
  try {
    return await fn();
  } finally {
    child.kill("SIGTERM");
    if (server === "libfuse") await sh(`umount '${mnt}' 2>/dev/null || true`);
    await child.status;
    clearStaleMounts(mnt, server === "outrun" ? "outrun" : "passthrough_ll");
    await sh(`umount -l '${mnt}' 2>/dev/null || true`);
  }
}

const LSTAT_PY = `
import os, sys, time
root, n, tree = sys.argv[1], int(sys.argv[2]), sys.argv[3]
paths = [f"{root}/{tree}/d{i % 100:02d}/f{i}" for i in range(n)]
t = time.perf_counter()
for p in paths: os.lstat(p)
cold = time.perf_counter() - t
t = time.perf_counter()
for p in paths: os.lstat(p)
warm = time.perf_counter() - t
print(n / cold, n / warm)
`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function timed(script: string): Promise<number> {
  const t = performance.now();
  await sh(script);
  return (performance.now() - t) / 1000;
}

export async function runFuseBench(o: FuseBenchOptions): Promise<FuseBenchRow[]> {
  const src = `${o.workDir}/src`;
  const mnt = `${o.workDir}/mnt`;
  await Deno.mkdir(src, { recursive: true });
  console.error(`bench: preparing ${o.files} files and a ${o.bigMiB} MiB file in ${src}`);
  await sh(`cd '${src}'
    for tree in tree early; do for d in $(seq -w 0 99); do mkdir -p $tree/d$d; done; done
    /usr/bin/python3 -c '
import sys
for tree, n in (("tree", int(sys.argv[1])), ("early", int(sys.argv[2]))):
    for i in range(n): open(f"{tree}/d{i % 100:02d}/f{i}", "w").close()' ${o.files} ${EARLY_FILES}
    dd if=/dev/urandom of=big bs=1M count=${o.bigMiB} status=none && cat big > /dev/null`);
  const passthrough = await buildPassthrough(o.workDir);

  type Sample = {
    lstatCold: number;
    lstatWarm: number;
    read: number;
    write: number;
    find: number;
    findSmall: number;
    lstatEarly: number;
  };
  const measure = async (root: string): Promise<Sample> => {
    const [cold, warm] = await lstatRates(root, o.files, "tree");
    const read = o.bigMiB / await timed(`cat '${root}/big' > /dev/null`);
    const write = o.bigMiB /
      await timed(`dd if=/dev/zero of='${root}/written' bs=1M count=${o.bigMiB} status=none`);
    await sh("sync");
    await Deno.remove(`${src}/written`);
    return {
      lstatCold: cold,
      lstatWarm: warm,
      read,
      write,
      find: NaN,
      findSmall: NaN,
      lstatEarly: NaN,
    };
  };
  const lstatRates = async (root: string, n: number, tree: string) =>
    (await sh(`/usr/bin/python3 -c '${LSTAT_PY}' '${root}' ${n} ${tree}`)).trim().split(" ")
      .map(Number);
  const findTime = (root: string) => timed(`find '${root}' | wc -l > /dev/null`);

  const samples: Record<string, Sample[]> = { native: [], outrun: [], libfuse: [] };
  for (let run = 0; run < o.runs; run++) {
    console.error(`bench: run ${run + 1} of ${o.runs}`);
    const native = await measure(src);
    native.lstatEarly = (await lstatRates(src, EARLY_FILES, "early"))[0];
    native.find = await findTime("/usr");
    native.findSmall = await findTime(SMALL_TREE);
    samples.native.push(native);
    for (const server of ["outrun", "libfuse"] as const) {
      if (server === "libfuse" && !passthrough) continue;
      let early = NaN;
      const s = await withMount(
        server,
        src,
        mnt,
        passthrough ?? "",
        () => measure(mnt),
        async () => void (early = (await lstatRates(mnt, EARLY_FILES, "early"))[0]),
      );
      s.lstatEarly = early;
      // passthrough_ll holds an fd per known inode: /usr (140k) is beyond this machine's
      // 20000-fd hard limit, so the C server gets the smaller tree only.
      if (server === "outrun") {
        s.find = await withMount(server, "/usr", mnt, "", () => findTime(mnt));
      }
      s.findSmall = await withMount(
        server,
        SMALL_TREE,
        mnt,
        passthrough ?? "",
        () => findTime(mnt),
      );
      samples[server].push(s);
    }
  }
  const pick = (who: string, key: keyof Sample) => {
    const xs = samples[who].map((s) => s[key]).filter((x) => !Number.isNaN(x));
    return xs.length ? median(xs) : null;
  };
  const rows: [string, string, keyof Sample][] = [
    [`lstat ${EARLY_FILES} files, server just started`, "ops/s", "lstatEarly"],
    [`lstat ${o.files} distinct files (cold)`, "ops/s", "lstatCold"],
    [`lstat again (kernel cache)`, "ops/s", "lstatWarm"],
    [`sequential read ${o.bigMiB} MiB`, "MiB/s", "read"],
    [`sequential write ${o.bigMiB} MiB`, "MiB/s", "write"],
    ["find /usr", "s", "find"],
    [`find ${SMALL_TREE}`, "s", "findSmall"],
  ];
  return rows.map(([workload, unit, key]) => ({
    workload,
    unit,
    native: pick("native", key),
    outrun: pick("outrun", key),
    libfuse: pick("libfuse", key),
  }));
}

/** outrun relative to libfuse, "higher is better" normalised: >1 means outrun is slower. */
export function slowdown(row: FuseBenchRow): number | null {
  if (row.libfuse === null || row.outrun === null) return null;
  return row.unit === "s" ? row.outrun / row.libfuse : row.libfuse / row.outrun;
}
