/**
 * Bounds how many spawn-heavy tests run at once in one file: ava starts every test of a
 * file together, and dozens of node processes starting at once on a small machine would
 * stretch every wait. Waiting for a slot has no time limit of its own; ava's timeout
 * still applies to the test.
 */
export function limiter(max: number): <T>(task: () => Promise<T>) => Promise<T> {
  let running = 0;
  const queue: Array<() => void> = [];
  // A finishing task hands its slot straight to the next one waiting.
  const release = () => {
    const next = queue.shift();
    if (next) next();
    else running--;
  };
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (running >= max) await new Promise<void>((resolve) => queue.push(resolve));
    else running++;
    try {
      return await task();
    } finally {
      release();
    }
  };
}
