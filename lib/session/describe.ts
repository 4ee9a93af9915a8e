/** One line for -v about one RPC call: method, what it is about, time, outcome. */
import type { Value } from "../rpc/mod.ts";

/** `fs.lookup node 1 "usr" 20.31 ms`, `cache.chunks /usr/lib/x chunks 3,4 21.02 ms -> ENOENT`. */
export function describeCall(method: string, args: Value, ms: number, err: unknown): string {
  const outcome = err ? ` -> ${(err as { code?: string }).code ?? err}` : "";
  return `${method} ${describeArgs(args)} ${ms.toFixed(2)} ms${outcome}`.replace("  ", " ");
}

/** A call's arguments in a line: the path or the node and name, not the bytes. */
export function describeArgs(args: Value): string {
  const a = args as Record<string, unknown> | null;
  if (!a || typeof a !== "object") return "";
  const header = a.header as { nodeid?: number } | undefined;
  const parts = [
    header?.nodeid !== undefined ? `node ${header.nodeid}` : "",
    typeof a.path === "string" ? a.path : "",
    typeof a.name === "string" ? JSON.stringify(a.name) : "",
    Array.isArray(a.indices) ? `chunks ${a.indices.join(",")}` : "",
    typeof (a.held as { count?: unknown })?.count === "number"
      ? `${(a.held as { count: number }).count} held`
      : "",
  ];
  return parts.filter(Boolean).join(" ");
}
