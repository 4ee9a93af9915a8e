/** The packer's worker: reads and compresses chunk runs, one job at a time, in order. */
import { packChunks, type PackRequest, type PackResult, runScratch } from "./packer.ts";

const scratch = runScratch();
/** The worker's global scope (this file is type-checked with the main thread's lib). */
const scope = self as unknown as {
  onmessage: ((e: MessageEvent<PackRequest>) => void) | null;
  postMessage(message: PackResult, transfer: ArrayBuffer[]): void;
};

scope.onmessage = (e) => {
  const { id, job } = e.data;
  let result: PackResult;
  let transfer: ArrayBuffer[] = [];
  try {
    const runs = packChunks(job, scratch);
    result = { id, runs };
    transfer = runs.map((r) => r.data.buffer as ArrayBuffer);
  } catch (err) {
    result = { id, error: err instanceof Error ? err.message : String(err) };
  }
  // Transferring moves each run's buffer without a copy; a buffer shared by many
  // views cannot be transferred twice, so only distinct ones go.
  scope.postMessage(result, [...new Set(transfer)]);
};
