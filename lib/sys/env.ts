/**
 * This process's environment, and the time zone settled before anything asks.
 *
 * With no TZ and no /etc/localtime (a container; this test bed), V8 finds the local
 * zone the first time one is needed (node:fs's module does, as it loads) by reading
 * every file under /usr/share/zoneinfo: 3,725 opens, ~30 ms of each start here, to
 * conclude UTC. outrun shows no local times; TZ=UTC says the same at once. What it
 * passes on (a command's environment) is the environment as it was: userEnv().
 */

let setHere = false;

/** Sets TZ=UTC when neither TZ nor /etc/localtime says otherwise (before node:fs loads). */
export function settleTimezone(): void {
  if (Deno.env.get("TZ") !== undefined) return;
  try {
    Deno.lstatSync("/etc/localtime");
    return;
  } catch { /* none: UTC, found the slow way */ }
  Deno.env.set("TZ", "UTC");
  setHere = true;
}

/** The environment this process was given (without a TZ that settleTimezone set). */
export function userEnv(): Record<string, string> {
  const env = Deno.env.toObject();
  if (setHere) delete env.TZ;
  return env;
}
