/**
 * Per-IP admission (`--max-connections-per-ip N`, `--connect-rate-per-ip N`): concurrent
 * connections per client address, and new connections per second as a token bucket
 * (burst N, refilled at N per second). Checked once per connection, when its address is
 * known (after a PROXY header, or at the upgrade for a wsd behind an HTTP proxy): nothing
 * of it runs per message.
 *
 * Memory is bounded: an address's entry lives while it has connections open or its bucket
 * is not full again (at most one second after its last connect), and a sweep drops the
 * rest. Past {@link PerIpLimits.maxEntries} entries, idle ones are dropped oldest first
 * (their buckets forgotten: at worst a burst more for an address, never a memory leak).
 */
import { ErrorCode, ipcError, type IpcError } from '../src/errors.js';
import { unmapIpv4 } from './client-address.js';

interface Entry {
  open: number;
  tokens: number;
  /** performance.now() when `tokens` was last brought up to date. */
  at: number;
}

/** Default bound of the table, whatever the traffic. */
export const MAX_PER_IP_ENTRIES = 100_000;

export class PerIpLimits {
  readonly maxConnections: number;
  readonly rate: number;
  readonly maxEntries: number;
  private readonly entries = new Map<string, Entry>();
  private readonly now: () => number;
  private sweepTimer: NodeJS.Timeout | null = null;

  /**
   * @param maxConnections concurrent connections per address (0: no limit)
   * @param rate new connections per second per address, burst as many (0: no limit)
   * @param now the clock (tests pass their own)
   */
  constructor(maxConnections: number, rate: number, options: { maxEntries?: number; now?: () => number } = {}) {
    this.maxConnections = maxConnections;
    this.rate = rate;
    this.maxEntries = options.maxEntries ?? MAX_PER_IP_ENTRIES;
    this.now = options.now ?? (() => performance.now());
  }

  /** Addresses tracked now. */
  get size(): number {
    return this.entries.size;
  }

  /**
   * Takes a slot for a new connection from `address`: a release function (call it once,
   * when the connection is gone), or the refusal.
   */
  acquire(address: string): (() => void) | IpcError {
    const key = unmapIpv4(address);
    const now = this.now();
    let entry = this.entries.get(key);
    if (entry === undefined) {
      if (this.entries.size >= this.maxEntries) this.sweep(true);
      entry = { open: 0, tokens: this.rate, at: now };
      this.entries.set(key, entry);
      this.startSweep();
    } else if (this.rate > 0) {
      entry.tokens = Math.min(this.rate, entry.tokens + ((now - entry.at) * this.rate) / 1000);
      entry.at = now;
    }
    if (this.maxConnections > 0 && entry.open >= this.maxConnections) {
      return ipcError(ErrorCode.TOO_MANY_CONNECTIONS_PER_IP, `limit of ${this.maxConnections} connections from ${key} reached`);
    }
    if (this.rate > 0) {
      if (entry.tokens < 1) return ipcError(ErrorCode.CONNECT_RATE_EXCEEDED, `more than ${this.rate} connections per second from ${key}`);
      entry.tokens -= 1;
    }
    entry.open++;
    const held = entry;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      held.open--;
    };
  }

  /** True when an entry carries nothing: no connection open and its bucket full again. */
  private idle(entry: Entry, now: number): boolean {
    if (entry.open > 0) return false;
    return this.rate === 0 || entry.tokens + ((now - entry.at) * this.rate) / 1000 >= this.rate;
  }

  /**
   * Drops idle entries. With `full` (the table is at its bound), also drops the oldest
   * entries without open connections until there is room.
   */
  sweep(full = false): void {
    const now = this.now();
    for (const [key, entry] of this.entries) if (this.idle(entry, now)) this.entries.delete(key);
    if (!full) return;
    for (const [key, entry] of this.entries) {
      if (this.entries.size < this.maxEntries) break;
      if (entry.open === 0) this.entries.delete(key);
    }
  }

  /** One timer per table (not per entry), never keeping the process alive, stopped when empty. */
  private startSweep(): void {
    if (this.sweepTimer !== null) return;
    this.sweepTimer = setInterval(() => {
      this.sweep();
      if (this.entries.size === 0) this.stop();
    }, 1000);
    this.sweepTimer.unref();
  }

  stop(): void {
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
  }
}
