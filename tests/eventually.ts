/** Waiting on an event the test can only observe, never on a guessed time. */

/** Waits until `f()` holds, asking every `everyMs`; fails after `ms`. */
export async function eventually(
  what: string,
  f: () => boolean | Promise<boolean>,
  ms = 30_000,
  everyMs = 250,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
