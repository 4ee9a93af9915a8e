/**
 * Entry point of the remote payload (bundled into one JS file by `deno bundle`):
 * `agent` serves a session over stdin/stdout; `exec PLAN` is the exec helper.
 */
import { runAgent } from "./agent.ts";
import { execHelper } from "./exec_helper.ts";

if (import.meta.main) {
  if (Deno.args[0] === "exec") execHelper(JSON.parse(Deno.args[1]));
  Deno.exit(await runAgent(new URL(import.meta.url).pathname));
}
