/**
 * A separate process for the store tests: writes chunks of one blob into a store,
 * from a data file. `deno run -A store_writer.ts STORE DATA HASH FIRST STEP
 * [PAUSE_MS]`: chunks FIRST, FIRST+STEP, ... (so two writers can interleave),
 * "started" after the first, a pause after each (so a test can kill it part way),
 * then "done".
 */
import { CacheStore } from "../../../lib/fs/cache/store.ts";
import { CHUNK_SIZE } from "../../../lib/fs/cache/protocol.ts";

const [dir, dataPath, hash, first, step, pause = "0"] = Deno.args;
const data = Deno.readFileSync(dataPath);
const store = new CacheStore(dir);
const n = Math.ceil(data.length / CHUNK_SIZE);
for (let i = Number(first); i < n; i += Number(step)) {
  if (!store.writeChunk(hash, i, data.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE))) {
    throw new Error(`chunk ${i} refused`);
  }
  if (i === Number(first)) console.log("started");
  if (Number(pause)) await new Promise((r) => setTimeout(r, Number(pause)));
}
store.close();
console.log("done");
