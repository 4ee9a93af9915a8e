/**
 * outrun end to end on the test bed: each workload run natively here, through
 * `ssh true` (the floor: one connection and one command), and through outrun
 * first (nothing cached there, no profile here), cold (the remote cache emptied,
 * this machine's profile kept: what a new remote or a wiped cache costs) and
 * warm, and warm through a ControlMaster (`-o ControlMaster=auto`: the session, its
 * agent and mount already there; the same command run once through it before the
 * measured runs). Wall times are medians; round trips and bytes are exact counts: outrun's
 * own (blocking calls from the remote, RPC bytes inside the SSH channel) and the
 * bytes on the wire (the host's veth counters: SSH and TCP included).
 */
import {
  addresses,
  DEFAULT_CONFIG,
  HOSTS,
  readConfig,
  sshConfigPath,
  up,
} from "../../tests/testbed/testbed.ts";

import { roundTrips } from "../../lib/session/stats.ts";
import { configureArgv, makeArgv, writeCProject } from "./c_project.ts";

const OUTRUN = new URL("../../outrun", import.meta.url).pathname;

export interface Workload {
  name: string;
  argv: string[];
}

/** Compile units of the generated project (scripts/bench/c_project.ts), main.c included. */
export const PROJECT_UNITS = 33;

export const WORKLOADS: Workload[] = [
  { name: "echo hi", argv: ["echo", "hi"] },
  // The system python by path: a PATH that finds a python under $HOME (pyenv) would
  // measure that setup (not a cached prefix), not outrun.
  {
    name: "python3 imports",
    argv: ["/usr/bin/python3", "-c", "import json,email,http.client"],
  },
  { name: "ffmpeg -version", argv: ["ffmpeg", "-version"] },
  { name: "gcc -c small.c", argv: ["gcc", "-c", "small.c", "-o", "small.o"] },
  // The main job's own files: an input read and an output written in the cwd (outside
  // the cached prefixes: through the proxy, read ahead and written behind).
  { name: "md5sum 50 MB in", argv: ["md5sum", "in.bin"] },
  {
    name: "dd 50 MB out",
    argv: ["dd", "if=/dev/zero", "of=out.bin", "bs=32k", "count=1600", "status=none"],
  },
  // A build in the cwd: sources, local headers, objects, gcc's temporary files.
  { name: `make -j2 (${PROJECT_UNITS} units)`, argv: makeArgv("proj") },
  { name: "configure (30 checks)", argv: configureArgv("proj") },
];

/**
 * first: no profile here, the remote cache empty; cold: the remote cache empty, the
 * profile and its packed runs here (a new remote); cold unpacked: the same with no
 * packed run kept here (each compressed again); warm: all there; master: through a
 * ControlMaster.
 */
export type Mode =
  | "native"
  | "ssh true"
  | "first"
  | "cold"
  | "cold unpacked"
  | "warm"
  | "master";

const MODES: Mode[] = ["native", "ssh true", "first", "cold", "cold unpacked", "warm", "master"];
const MASTER = ["-o", "ControlMaster=auto", "-o", "ControlPersist=600"];

export interface RemoteBenchRow {
  host: string;
  workload: string;
  mode: Mode;
  /** Median seconds. */
  seconds: number;
  /** Blocking calls from the remote (outrun modes), median. */
  roundTrips: number | null;
  /** RPC bytes inside the SSH channel, both ways, median. */
  rpcBytes: number | null;
  /** Bytes through the host's veth, both ways, median. */
  wireBytes: number | null;
  runs: number;
  /** Blocking calls from the remote by name, of the last run (outrun modes). */
  calls?: Record<string, number>;
}

/**
 * A path's link as ssh sees it: its round trip (the test bed's relay) and the rate of
 * 50 MB sent through `ssh host 'cat > /dev/null'` beyond `ssh true` (this machine to
 * the remote, the way a cold start's bytes go).
 */
export interface Link {
  host: string;
  rttMs: number;
  /** Bytes a second, median. */
  upRate: number;
}

interface OneRun {
  calls?: Record<string, number>;
  seconds: number;
  roundTrips: number | null;
  rpcBytes: number | null;
  wireBytes: number | null;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function vethBytes(veth: string): number {
  const read = (what: string) =>
    Number(Deno.readTextFileSync(`/sys/class/net/${veth}/statistics/${what}_bytes`).trim());
  return read("rx") + read("tx");
}

async function ssh(host: string, command: string): Promise<void> {
  const out = await new Deno.Command("ssh", {
    args: ["-F", sshConfigPath, host, command],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`ssh ${host} ${command}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

async function timed(
  argv: string[],
  cwd: string,
  env: Record<string, string>,
  veth: string | null,
  /** A file for its standard input. */
  input?: string,
) {
  const before = veth ? vethBytes(veth) : 0;
  const t0 = performance.now();
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    cwd,
    env,
    stdin: input ? "piped" : "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  if (input) await (await Deno.open(input)).readable.pipeTo(child.stdin);
  const out = await child.output();
  const seconds = (performance.now() - t0) / 1000;
  if (!out.success) {
    throw new Error(`${argv.join(" ")}: exit ${out.code}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return { seconds, wireBytes: veth ? vethBytes(veth) - before : null };
}

export interface RemoteBenchOptions {
  hosts: string[];
  workloads: Workload[];
  runs: number;
  workDir: string;
  log: (line: string) => void;
}

export async function runRemoteBench(
  o: RemoteBenchOptions,
): Promise<{ rows: RemoteBenchRow[]; links: Link[] }> {
  await up();
  const rttMs = ((await readConfig()) ?? DEFAULT_CONFIG).rttMs;
  const links: Link[] = [];
  const home = `${o.workDir}/home`; // profiles and client id of the benchmark alone
  const statsFile = `${o.workDir}/stats.json`;
  await Deno.mkdir(home, { recursive: true });
  await Deno.writeTextFile(`${o.workDir}/small.c`, "int square(int x) { return x * x; }\n");
  await writeCProject(`${o.workDir}/proj`, PROJECT_UNITS - 1);
  const input = new Uint8Array(50e6);
  for (let i = 0; i < input.length; i += 65536) {
    crypto.getRandomValues(input.subarray(i, i + 65536));
  }
  await Deno.writeFile(`${o.workDir}/in.bin`, input);
  const env = {
    ...Deno.env.toObject(),
    HOME: home,
    // The agent bundle and deno's own cache stay where they are.
    XDG_CACHE_HOME: Deno.env.get("XDG_CACHE_HOME") ?? `${Deno.env.get("HOME")}/.cache`,
    OUTRUN_STATS_FILE: statsFile,
  };
  // The runs packed on this machine (lib/fs/cache/packed.ts): emptied for "cold unpacked".
  const packedDir = `${env.XDG_CACHE_HOME}/outrun/packed`;
  const rows: RemoteBenchRow[] = [];
  for (const host of o.hosts) {
    const spec = HOSTS.find((h) => host.replace(/-wan$/, "") === h.name);
    if (!spec) throw new Error(`bench: no test-bed host ${host}`);
    const a = addresses(spec, DEFAULT_CONFIG);
    const veth = host.endsWith("-wan") ? a.wanVeth : a.directVeth;
    const base = host.replace(/-wan$/, "");
    const emptyRemoteCache = () => ssh(base, "rm -rf ~/.cache/outrun/cache");
    const outrun = async (argv: string[], flags: string[] = []): Promise<OneRun> => {
      await Deno.remove(statsFile).catch(() => {});
      const r = await timed(
        [OUTRUN, "-F", sshConfigPath, "--stats", ...flags, host, ...argv],
        o.workDir,
        env,
        veth,
      );
      const s = JSON.parse(await Deno.readTextFile(statsFile));
      const calls = s.remote.calls as Record<string, number>;
      return {
        ...r,
        roundTrips: roundTrips(calls),
        rpcBytes: s.rpc.bytesIn + s.rpc.bytesOut,
        calls,
      };
    };
    // The payload is uploaded once per host before anything is measured.
    await outrun(["true"]);
    const floor: OneRun[] = [];
    const upRates: number[] = [];
    for (let i = 0; i < o.runs; i++) {
      const r = await timed(["ssh", "-F", sshConfigPath, host, "true"], o.workDir, env, veth);
      floor.push({ ...r, roundTrips: null, rpcBytes: null });
      const sent = await timed(
        ["ssh", "-F", sshConfigPath, host, "cat > /dev/null"],
        o.workDir,
        env,
        null,
        `${o.workDir}/in.bin`,
      );
      upRates.push(input.length / Math.max(sent.seconds - r.seconds, 1e-3));
    }
    links.push({ host, rttMs: host.endsWith("-wan") ? rttMs : 0, upRate: median(upRates) });
    o.log(`${host} link: ${(median(upRates) / 1e6).toFixed(1)} MB/s up`);
    for (const w of o.workloads) {
      const runs: Record<Mode, OneRun[]> = {
        native: [],
        "ssh true": floor,
        first: [],
        cold: [],
        "cold unpacked": [],
        warm: [],
        master: [],
      };
      for (let i = 0; i < o.runs; i++) {
        const r = await timed(w.argv, o.workDir, env, null);
        runs.native.push({ ...r, roundTrips: null, rpcBytes: null });
      }
      for (let i = 0; i < o.runs; i++) {
        await Deno.remove(`${home}/.outrun/profiles`, { recursive: true }).catch(() => {});
        await emptyRemoteCache();
        runs.first.push(await outrun(w.argv));
      }
      for (let i = 0; i < o.runs; i++) {
        await emptyRemoteCache();
        runs.cold.push(await outrun(w.argv));
      }
      for (let i = 0; i < o.runs; i++) {
        await emptyRemoteCache();
        await Deno.remove(packedDir, { recursive: true }).catch(() => {});
        runs["cold unpacked"].push(await outrun(w.argv));
      }
      for (let i = 0; i < o.runs; i++) runs.warm.push(await outrun(w.argv));
      await outrun(w.argv, MASTER); // starts the master (first workload), loads its caches
      for (let i = 0; i < o.runs; i++) runs.master.push(await outrun(w.argv, MASTER));
      for (const mode of MODES) {
        const rs = runs[mode];
        const med = (f: (r: OneRun) => number | null) => {
          const xs = rs.map(f).filter((x): x is number => x !== null);
          return xs.length ? median(xs) : null;
        };
        const row: RemoteBenchRow = {
          host,
          workload: w.name,
          mode,
          seconds: med((r) => r.seconds)!,
          roundTrips: med((r) => r.roundTrips),
          rpcBytes: med((r) => r.rpcBytes),
          wireBytes: med((r) => r.wireBytes),
          runs: rs.length,
          ...(rs.at(-1)?.calls ? { calls: rs.at(-1)!.calls } : {}),
        };
        rows.push(row);
        o.log(`${host} ${w.name} ${mode}: ${row.seconds.toFixed(2)} s`);
      }
    }
    await timed([OUTRUN, "-F", sshConfigPath, ...MASTER, "-O", "exit", host], o.workDir, env, null);
  }
  return { rows, links };
}

function mb(n: number | null): string {
  return n === null ? "-" : (n / 1e6).toFixed(2);
}

export function remoteTable(rows: RemoteBenchRow[]): string {
  const head = ["host", "workload", "mode", "median s", "round trips", "RPC MB", "wire MB"];
  const body = rows.map((r) => [
    r.host,
    r.workload,
    r.mode,
    r.seconds.toFixed(2),
    r.roundTrips === null ? "-" : String(r.roundTrips),
    mb(r.rpcBytes),
    mb(r.wireBytes),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i < 3 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

/** The targets, as measured (lines to read, not assertions). */
export function targets(rows: RemoteBenchRow[], links: Link[] = []): string[] {
  const get = (host: string, workload: string, mode: Mode) =>
    rows.find((r) => r.host === host && r.workload === workload && r.mode === mode);
  const out: string[] = [];
  // The same runs for each workload of a host.
  const floor = rows.find((r) => r.host === "deb-wan" && r.mode === "ssh true");
  const warm = get("deb-wan", "ffmpeg -version", "warm");
  const cold = get("deb-wan", "ffmpeg -version", "cold");
  const unpacked = get("deb-wan", "ffmpeg -version", "cold unpacked");
  const master = get("deb-wan", "ffmpeg -version", "master");
  for (const [what, r] of [["warm", warm], ["warm through a ControlMaster", master]] as const) {
    if (!floor || !r) continue;
    out.push(
      `${what} ffmpeg -version on -wan: ${r.seconds.toFixed(2)} s = ${
        (r.seconds / floor.seconds).toFixed(2)
      }x ssh true (${floor.seconds.toFixed(2)} s); target 1.5x`,
    );
  }
  if (cold) {
    out.push(
      `cold ffmpeg -version on -wan: ${cold.seconds.toFixed(2)} s, ${
        mb(cold.wireBytes)
      } MB on the wire, ` +
        `${cold.roundTrips} round trips; target < 2 s and < 40 MB` +
        (unpacked ? ` (with nothing packed here: ${unpacked.seconds.toFixed(2)} s)` : ""),
    );
    const link = links.find((l) => l.host === "deb-wan");
    if (link && cold.wireBytes !== null && floor && warm) {
      // What the bytes and ten round trips take on this link, against what being cold
      // costs beyond a warm start (its validation round trip included), and beyond
      // `ssh true` (the connection, which no start avoids).
      const bound = cold.wireBytes / link.upRate + 10 * link.rttMs / 1000;
      out.push(
        `cold ffmpeg -version on -wan against bytes/link + 10 round trips: ${
          mb(cold.wireBytes)
        } MB / ${(link.upRate / 1e6).toFixed(1)} MB/s + 10 x ${link.rttMs} ms = ${
          bound.toFixed(2)
        } s; cold - warm = ${(cold.seconds - warm.seconds).toFixed(2)} s, cold - ssh true = ${
          (cold.seconds - floor.seconds).toFixed(2)
        } s`,
      );
    }
  }
  for (const host of new Set(rows.map((r) => r.host))) {
    const build = (workload: string, target: number, perUnit: boolean) => {
      const native = get(host, workload, "native");
      for (const mode of ["warm", "master"] as const) {
        const r = get(host, workload, mode);
        if (!native || !r) continue;
        const units = perUnit && r.roundTrips !== null
          ? `, ${(r.roundTrips / PROJECT_UNITS).toFixed(1)} round trips a compile unit (target 2)`
          : "";
        out.push(
          `${mode} ${workload} on ${host}: ${r.seconds.toFixed(2)} s = ${
            (r.seconds / native.seconds).toFixed(1)
          }x native (${native.seconds.toFixed(2)} s; target ${target}x)${units}`,
        );
      }
    };
    build(`make -j2 (${PROJECT_UNITS} units)`, 1.3, true);
    build("configure (30 checks)", 2, false);
  }
  const warmTrips = rows.filter((r) => r.mode === "warm").map((r) =>
    `${r.host} ${r.workload}: ${r.roundTrips}`
  );
  out.push(`warm round trips: ${warmTrips.join("; ")}; target 1 (validation)`);
  return out;
}
