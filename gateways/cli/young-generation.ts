/**
 * V8's young generation (its semi-spaces) grows when many objects survive its scavenges,
 * as every new connection's state does during a burst of connections, up to 16 MiB per
 * semi-space, and shrinks only at a later GC, which an idle process never runs. Measured
 * on wsd at 8,000 idle connections: ~20 MiB of RSS, 2.5 KiB per connection, a third of
 * the total (docs/benchmarks.md). A gateway's garbage per message is small (wsd: frames
 * unmasked in place, replies built in one scratch buffer), so the daemon keeps the young
 * generation at its initial size instead; the CPU per message was unchanged (same run).
 *
 * A V8 flag read when the young generation grows, so setting it at start is enough.
 * A semi-space flag given to node (command line or NODE_OPTIONS) is left alone.
 */
import v8 from 'node:v8';

export function keepYoungGenerationSmall(): void {
  const given = [...process.execArgv, process.env['NODE_OPTIONS'] ?? ''].some((arg) => arg.includes('semi-space'));
  if (!given) v8.setFlagsFromString('--semi-space-growth-factor=1');
}
