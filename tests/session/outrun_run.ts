/** Running outrun in the e2e tests: its own HOME, --stats as JSON, a time limit. */
export { eventually } from "../eventually.ts";

export const OUTRUN = new URL("../../outrun", import.meta.url).pathname;

export interface Run<Stats> {
  code: number;
  text: string;
  stderr: string;
  /** What --stats wrote (null: outrun failed before the end). */
  stats: Stats | null;
}

/** outrun's environment with `home` as HOME (sessions, profiles, client id of its own). */
export function outrunEnv(home: string, statsFile = ""): Record<string, string> {
  return {
    HOME: home,
    // The agent bundle and deno's own cache stay where they are.
    XDG_CACHE_HOME: Deno.env.get("XDG_CACHE_HOME") ?? `${Deno.env.get("HOME")}/.cache`,
    ...(statsFile ? { OUTRUN_STATS_FILE: statsFile } : {}),
  };
}

/** Waits for `child` (killed after `limitMs`) and reads the stats it wrote to `statsFile`. */
export async function finished<Stats>(
  child: Deno.ChildProcess,
  statsFile: string,
  limitMs: number,
): Promise<Run<Stats>> {
  const timer = setTimeout(() => child.kill("SIGKILL"), limitMs);
  const out = await child.output().finally(() => clearTimeout(timer));
  let stats: Stats | null = null;
  try {
    stats = JSON.parse(await Deno.readTextFile(statsFile));
  } catch { /* no stats: outrun failed before the end */ }
  return {
    code: out.code,
    text: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
    stats,
  };
}
