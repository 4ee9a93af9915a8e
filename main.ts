/**
 * outrun: run a local command with the CPU of another Linux machine.
 *
 * The CLI entry point: parses the command line like ssh does and hands over to
 * lib/session/local.ts. Its own failures print one `outrun: ...` line and exit 255.
 */
import { parseCli, USAGE } from "./lib/cli.ts";
import { VERSION } from "./lib/version.ts";
import { settleTimezone } from "./lib/sys/env.ts";

export async function main(args: string[]): Promise<number> {
  settleTimezone(); // before node:fs loads (see lib/sys/env.ts)
  // A ControlMaster, started by an outrun that found none (lib/session/control.ts).
  if (args[0] === "__master") {
    const { runMaster } = await import("./lib/session/master.ts");
    return await runMaster(JSON.parse(args[1]));
  }
  const cli = parseCli(args);
  switch (cli.kind) {
    case "version":
      console.log(`outrun ${VERSION}`);
      return 0;
    case "help":
      console.log(USAGE);
      return 0;
    case "usage":
      console.error(`outrun: ${cli.message}\n${USAGE}`);
      return 255;
    case "debug": {
      const { debugMain } = await import("./lib/debug/mod.ts");
      return await debugMain(cli.args);
    }
    case "run": {
      const { runRemote } = await import("./lib/session/local.ts");
      try {
        return await runRemote(cli.options);
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        console.error(
          message.startsWith("outrun:") || message.startsWith("ssh:")
            ? message.replace(/^ssh: /, "outrun: ")
            : `outrun: ${message}`,
        );
        return 255;
      }
    }
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
