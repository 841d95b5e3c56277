/** Polls `predicate` every `everyMs` until it holds; past `timeoutMs` throws with what `describe` says. */
export async function pollUntil(predicate: () => boolean, o: { timeoutMs: number; everyMs: number; describe: () => string }): Promise<void> {
  const deadline = Date.now() + o.timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${o.timeoutMs} ms: ${o.describe()}`);
    await new Promise((r) => setTimeout(r, o.everyMs));
  }
}
