/**
 * `deno task testbed up|down|status [--rtt-ms N] [--rate R]`: the test bed by hand.
 */
import { parseArgs } from "node:util";
import { down, sshConfigPath, status, up } from "./testbed.ts";

const { positionals, values } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: { "rtt-ms": { type: "string" }, rate: { type: "string" } },
});
const command = positionals[0] ?? "status";
try {
  if (command === "up") {
    const s = await up({
      ...(values["rtt-ms"] ? { rttMs: Number(values["rtt-ms"]) } : {}),
      ...(values.rate ? { rate: values.rate } : {}),
    });
    console.log(JSON.stringify(s, null, 2));
    console.error(`testbed: up; try: ssh -F ${sshConfigPath} deb-wan uname -a`);
  } else if (command === "down") {
    await down();
  } else if (command === "status") {
    const s = await status();
    console.log(JSON.stringify(s, null, 2));
    Deno.exit(s.healthy ? 0 : 1);
  } else {
    console.error("usage: testbed up|down|status [--rtt-ms N] [--rate R]");
    Deno.exit(2);
  }
} catch (err) {
  console.error(err instanceof Error ? err.message : String(err));
  Deno.exit(1);
}
