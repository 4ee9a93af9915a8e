/** The `--stats` report printed on stderr at exit. */
import type { PushStats } from "../fs/cache/service.ts";
import type { RemoteStats } from "./protocol.ts";
import { UNWAITED_CALLS } from "../fs/file_wire.ts";

export interface StatsInput {
  /** Local phases in milliseconds: connect, bootstrap, start, command, teardown. */
  local: Record<string, number>;
  remote: RemoteStats;
  /** The local RPC endpoint's counters (bytes each way inside the SSH channel). */
  rpc: { bytesIn: number; bytesOut: number; framesIn: number; framesOut: number };
  push: PushStats | null;
}

function mb(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)} MB` : `${(n / 1e3).toFixed(1)} kB`;
}

/**
 * Calls the remote makes without waiting on them (see lib/fs/proxy.ts); and the rest
 * of a validation, asked for with it (no round trip of its own) and answered while the
 * command runs (what waited for it is counted: restWaits).
 */
const UNWAITED = new Set<string>([
  ...Object.keys(UNWAITED_CALLS),
  "cache.validateRest",
  // A directory's names, asked for beside a lookup that goes on without them.
  "fs.names",
]);

/** Blocking calls from the remote (what the command waited a round trip for). */
export function roundTrips(calls: Record<string, number>): number {
  return Object.entries(calls).reduce((n, [m, c]) => n + (UNWAITED.has(m) ? 0 : c), 0);
}

export function formatStats(s: StatsInput): string {
  const all = Object.entries(s.remote.calls).sort((a, b) => b[1] - a[1]);
  const calls = all.filter(([m]) => !UNWAITED.has(m));
  const unwaited = all.filter(([m]) => UNWAITED.has(m));
  const lines = [
    "outrun stats:",
    `  round trips (blocking calls from the remote): ${roundTrips(s.remote.calls)}`,
    ...calls.map(([m, n]) => `    ${m.padEnd(18)} ${n}`),
    ...(unwaited.length
      ? [`  not waited on: ${unwaited.map(([m, n]) => `${n} ${m}`).join(", ")}`]
      : []),
    `  bytes: ${mb(s.rpc.bytesOut)} sent, ${
      mb(s.rpc.bytesIn)
    } received (${s.rpc.framesOut}/${s.rpc.framesIn} frames)`,
  ];
  if (s.push) {
    const p = s.push;
    lines.push(
      `  pushed: ${p.metas} metas, ${p.contents} content ids, ${p.chunks} chunks ` +
        `(${mb(p.chunkBytes)} raw, ${
          mb(p.wireBytes)
        } compressed); ${p.asked} asked, ${p.prefetched} sent ahead` +
        (p.early ? ` (${p.early} unasked: the remote's cache was empty)` : ""),
    );
  }
  const c = s.remote.cache;
  if (c) {
    lines.push(
      `  cache: ${c.held} held` +
        (c.checkedFirst
          ? ` (${c.checkedFirst} checked first, ${c.restWaits} requests waited for the rest)`
          : "") +
        `, ${c.stale} stale, ${c.evicted} evicted; metadata ${c.metaHits} hits / ` +
        `${c.metaMisses} misses; chunks ${c.chunkHits} hits / ${c.chunkMisses} misses; ` +
        `${c.directOpens} opens read by the remote kernel`,
    );
  } else lines.push("  cache: off");
  const ms = (n: number) => `${n.toFixed(0)} ms`;
  const l = s.local;
  lines.push(
    `  time: connect ${ms(l.connect ?? 0)}, bootstrap ${ms(l.bootstrap ?? 0)}, start ${
      ms(l.start ?? 0)
    }, ` +
      `validate ${ms(s.remote.validateMs)}, mount ${ms(s.remote.mountMs)}, run ${
        ms(s.remote.runMs)
      }, ` +
      `command total ${ms(l.command ?? 0)}, teardown ${ms(l.teardown ?? 0)}`,
  );
  return lines.join("\n");
}
