/**
 * Entry point of the remote payload (bundled into one JS file by `deno bundle`):
 * `agent DIR` serves a session over stdin/stdout; `exec -` is the exec helper (its
 * plan comes on stdin).
 */
import { runAgent } from "./agent.ts";
import { execHelper, readPlan } from "./exec_helper.ts";

if (import.meta.main) {
  if (Deno.args[0] === "exec") execHelper(readPlan());
  // `agent DIR`: DIR holds the runtime, its loader and libraries (bootstrap.ts's
  // payload); children are started the same way, through the loader.
  const dir = Deno.args[1];
  const loader = [...Deno.readDirSync(dir)].find((e) => e.name.startsWith("ld-"))?.name;
  const runtime = loader
    ? [`${dir}/${loader}`, "--library-path", dir, `${dir}/deno`]
    : [Deno.execPath()];
  Deno.exit(await runAgent(new URL(import.meta.url).pathname, runtime));
}
