/**
 * Whole-machine CPU use, to tell how much of it went to processes other than the ones
 * measured: on a shared 2-core box, another job's load moves every figure.
 */
import fs from 'node:fs';
import os from 'node:os';

/** Linux's USER_HZ: /proc/stat counts in 1/100 s. */
const USER_HZ = 100;

export interface CpuSample {
  /** Busy CPU time summed over all cores, ms. */
  busyMs: number;
  at: number;
}

export function sampleCpu(): CpuSample {
  // /proc/stat counts softirq time (loopback networking runs there), which os.cpus() drops.
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const [, user, nice, system, , , irq, softirq] = line.trim().split(/\s+/).map(Number);
    if (line.startsWith('cpu ') && softirq !== undefined) {
      return { busyMs: ((user! + nice! + system! + irq! + softirq) * 1000) / USER_HZ, at: performance.now() };
    }
  } catch {
    // not Linux
  }
  let busyMs = 0;
  for (const c of os.cpus()) busyMs += c.times.user + c.times.nice + c.times.sys + c.times.irq;
  return { busyMs, at: performance.now() };
}

/** Cores busy on average between two samples. */
export function busyCores(from: CpuSample, to: CpuSample): number {
  const wall = to.at - from.at;
  return wall > 0 ? (to.busyMs - from.busyMs) / wall : 0;
}

/** Cores busy over the next `ms` milliseconds (nothing of ours running). */
export async function idleLoad(ms = 1000): Promise<number> {
  const a = sampleCpu();
  await new Promise((r) => setTimeout(r, ms));
  return busyCores(a, sampleCpu());
}

/**
 * CPU time (user + system, all threads) a process has used so far, in seconds, from
 * /proc/PID/stat (10 ms resolution); null when the process is gone or not on Linux.
 */
export function processCpuSeconds(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces and parentheses): state is
    // field 3, utime 14, stime 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    return Number.isFinite(utime) && Number.isFinite(stime) ? (utime + stime) / USER_HZ : null;
  } catch {
    return null;
  }
}
