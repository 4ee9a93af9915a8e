/**
 * `deno task bench [fuse] [--files N] [--big-mib N] [--runs N] [--json FILE]`:
 * benchmarks that print a table and write JSON. Wall times here are
 * measurements to read, never assertions.
 */
import { parseArgs } from "node:util";
import { type FuseBenchRow, runFuseBench, slowdown } from "./bench/fuse.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    files: { type: "string", default: "12000" },
    "big-mib": { type: "string", default: "1024" },
    runs: { type: "string", default: "3" },
    json: { type: "string", default: "dist/bench/fuse.json" },
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
if (which !== "fuse") {
  console.error(`bench: unknown benchmark ${which} (have: fuse)`);
  Deno.exit(2);
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
  const json = values.json!;
  await Deno.mkdir(json.replace(/\/[^/]*$/, ""), { recursive: true });
  await Deno.writeTextFile(
    json,
    JSON.stringify({ benchmark: "fuse", date: new Date().toISOString(), rows }, null, 2) + "\n",
  );
  console.error(`bench: JSON in ${json}`);
} finally {
  await Deno.remove(workDir, { recursive: true });
}
