/**
 * `deno task bench [fuse|remote] [--runs N] [--json FILE]` (fuse: `--files N
 * --big-mib N`; remote: `--hosts deb,deb-wan --workloads NAME,...` (names as in the
 * table, or a part of one)): benchmarks that print a table
 * and write JSON. Wall times here are measurements to read, never assertions.
 */
import { parseArgs } from "node:util";
import { type FuseBenchRow, runFuseBench, slowdown } from "./bench/fuse.ts";
import { remoteTable, runRemoteBench, targets, WORKLOADS } from "./bench/remote.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    files: { type: "string", default: "12000" },
    "big-mib": { type: "string", default: "1024" },
    runs: { type: "string", default: "3" },
    json: { type: "string" },
    hosts: { type: "string", default: "deb,deb-wan" },
    workloads: { type: "string" },
    dir: { type: "string", default: "/dev/shm" },
  },
});

function fmt(n: number | null, unit: string): string {
  if (n === null) return "-";
  if (unit === "s") return n.toFixed(2);
  return n >= 100 ? Math.round(n).toLocaleString("en") : n.toFixed(1);
}

function table(rows: FuseBenchRow[]): string {
  const head = ["workload", "unit", "native", "outrun", "libfuse C", "outrun vs C"];
  const body = rows.map((r) => {
    const s = slowdown(r);
    return [
      r.workload,
      r.unit,
      fmt(r.native, r.unit),
      fmt(r.outrun, r.unit),
      fmt(r.libfuse, r.unit),
      s === null ? "-" : `${s.toFixed(2)}x slower`,
    ];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

const which = positionals[0] ?? "fuse";
if (which !== "fuse" && which !== "remote") {
  console.error(`bench: unknown benchmark ${which} (have: fuse, remote)`);
  Deno.exit(2);
}

async function writeJson(rows: unknown[], extra: Record<string, unknown> = {}): Promise<void> {
  const json = values.json ?? `dist/bench/${which}.json`;
  await Deno.mkdir(json.replace(/\/[^/]*$/, ""), { recursive: true });
  const doc = { benchmark: which, date: new Date().toISOString(), ...extra, rows };
  await Deno.writeTextFile(json, JSON.stringify(doc, null, 2) + "\n");
  console.error(`bench: JSON in ${json}`);
}

if (which === "remote") {
  const workDir = await Deno.makeTempDir({ prefix: "outrun-bench-remote-" });
  try {
    const { rows, links } = await runRemoteBench({
      hosts: values.hosts!.split(","),
      workloads: values.workloads
        ? WORKLOADS.filter((w) => values.workloads!.split(",").some((n) => w.name.includes(n)))
        : WORKLOADS,
      runs: Number(values.runs),
      workDir,
      log: (line) => console.error(`bench: ${line}`),
    });
    console.log(remoteTable(rows));
    const checks = targets(rows, links);
    console.log(checks.join("\n"));
    await writeJson(rows, { links, targets: checks });
  } finally {
    await Deno.remove(workDir, { recursive: true });
  }
  Deno.exit(0);
}
// On tmpfs: the rows then measure the FUSE path, not this VM's disk writeback.
const workDir = await Deno.makeTempDir({ prefix: "outrun-bench-", dir: values.dir });
try {
  const rows = await runFuseBench({
    files: Number(values.files),
    bigMiB: Number(values["big-mib"]),
    runs: Number(values.runs),
    workDir,
  });
  console.log(table(rows));
  await writeJson(rows);
} finally {
  await Deno.remove(workDir, { recursive: true });
}
