/** settleTimezone / userEnv: TZ=UTC for this process only where nothing says otherwise. */
import assert from "node:assert/strict";

const MODULE = new URL("../../lib/sys/env.ts", import.meta.url).href;

/** [TZ as this process has it, TZ in userEnv()] in a fresh process with `env`. */
async function probe(env: Record<string, string>): Promise<[string, string]> {
  const code = `import { settleTimezone, userEnv } from "${MODULE}";
settleTimezone();
console.log(JSON.stringify([Deno.env.get("TZ") ?? "-", userEnv().TZ ?? "-"]));`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      HOME: Deno.env.get("HOME") ?? "/",
      ...env,
    },
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("env: a TZ given is kept; none given is UTC here (without /etc/localtime) and not passed on", async () => {
  assert.deepEqual(await probe({ TZ: "Asia/Tokyo" }), ["Asia/Tokyo", "Asia/Tokyo"]);
  assert.deepEqual(await probe({ TZ: "" }), ["", ""], "an empty TZ is the user's too");
  let localtime = true;
  try {
    Deno.lstatSync("/etc/localtime");
  } catch {
    localtime = false;
  }
  assert.deepEqual(await probe({}), [localtime ? "-" : "UTC", "-"]);
});
