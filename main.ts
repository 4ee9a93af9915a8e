/**
 * outrun: run a local command with the CPU of another Linux machine.
 *
 * The CLI entry point. Everything it does lives under lib/; this file only
 * parses the first word and dispatches.
 */
import { VERSION } from "./lib/version.ts";

const USAGE = `usage: outrun [options] [user@]host command [args...]
       outrun --version
       outrun debug loopback SRC MOUNTPOINT`;

export async function main(args: string[]): Promise<number> {
  if (args[0] === "--version" || args[0] === "-V") {
    console.log(`outrun ${VERSION}`);
    return 0;
  }
  if (args[0] === "--help" || args[0] === "-h") {
    console.log(USAGE);
    return 0;
  }
  if (args[0] === "debug") {
    const { debugMain } = await import("./lib/debug/mod.ts");
    return await debugMain(args.slice(1));
  }
  console.error(USAGE);
  console.error("outrun: remote execution is not implemented yet");
  return 255;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
