/**
 * Waiting for something a stream of events brings: `wake()` at every event re-runs the
 * pending checks; every wait is bounded.
 */

/** What a check found: a value to resolve, or an error to reject with. */
export type Outcome<T> = { value: T } | { error: Error };

export class Waiters {
  private readonly checks = new Set<() => void>();

  /** Re-runs every pending check (call it whenever something happened). */
  wake(): void {
    for (const check of [...this.checks]) check();
  }

  /**
   * Runs `probe` now and at every wake until it returns an outcome; rejects with `late()`
   * after `timeout` ms.
   */
  wait<T>(probe: () => Outcome<T> | undefined, timeout: number, late: () => Error): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const outcome = probe();
        if (outcome === undefined) return;
        done();
        if ('error' in outcome) reject(outcome.error);
        else resolve(outcome.value);
      };
      const timer = setTimeout(() => {
        done();
        reject(late());
      }, timeout);
      const done = () => {
        clearTimeout(timer);
        this.checks.delete(check);
      };
      this.checks.add(check);
      check();
    });
  }

  /** Resolves once `condition()` holds; rejects with `late()` after `timeout` ms. */
  until(condition: () => boolean, timeout: number, late: () => Error): Promise<void> {
    return this.wait(() => (condition() ? { value: undefined } : undefined), timeout, late);
  }
}
