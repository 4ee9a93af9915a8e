/**
 * A filesystem that answers like another one, each answer `delayMs` late and
 * asynchronous: a stand-in for a network backend, used to measure that slow
 * handlers do not hold up other requests (and how many run at once).
 */
import type { Filesystem } from "../fuse/mod.ts";

export interface DelayStats {
  /** Most handlers in flight at the same moment. */
  maxInFlight: number;
  calls: number;
}

/** Methods answered late; forget/init/destroy pass straight through. */
const DELAYED = [
  "lookup",
  "getattr",
  "readlink",
  "open",
  "read",
  "release",
  "opendir",
  "readdir",
  "readdirplus",
  "releasedir",
  "statfs",
  "access",
  "flush",
] as const;

export function delayedFilesystem(
  inner: Filesystem,
  delayMs: number,
): { fs: Filesystem; stats: DelayStats } {
  const stats: DelayStats = { maxInFlight: 0, calls: 0 };
  let inFlight = 0;
  const delayed: Record<string, unknown> = {};
  // The rest are `inner`'s own, called on it (its private fields need that receiver).
  const fs = new Proxy(inner, {
    get(target, prop) {
      if (typeof prop === "string" && prop in delayed) return delayed[prop];
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  for (const name of DELAYED) {
    const method = inner[name] as ((...args: unknown[]) => unknown) | undefined;
    if (!method) continue;
    delayed[name] = async (...args: unknown[]) => {
      stats.calls++;
      stats.maxInFlight = Math.max(stats.maxInFlight, ++inFlight);
      try {
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        return await method.apply(inner, args);
      } finally {
        inFlight--;
      }
    };
  }
  return { fs, stats };
}
