/**
 * V8's young generation (its semi-spaces) grows when many objects survive its scavenges,
 * as every new connection's state does during a burst of connections, up to 16 MiB per
 * semi-space, and shrinks only at a later GC, which an idle process never runs. Measured
 * on wsd at 8,000 idle connections: ~20 MiB of RSS, 2.5 KiB per connection, a third of
 * the total; tcpd (native data plane) 6.9 KB per connection instead of 4.0, when what a
 * connection keeps is ~0.2 KB (docs/benchmarks.md). A gateway's garbage per message is
 * small (wsd: frames unmasked in place, replies built in one scratch buffer), so every
 * daemon keeps the young generation at its initial size instead; the CPU per message was
 * unchanged (same run). It also spares the JS switches of tlsd and wsd a storm of full
 * GCs: with a large young generation, scavenges are rare, the backing stores of 16 KiB
 * messages pile up as external memory, and V8 frees them with mark-compacts (~25 a
 * second at rr 64 x 16 KiB: wsd 44-57 µs per message, 26-30 with the setting).
 *
 * A V8 flag read when the young generation grows, so setting it at start is enough.
 * A semi-space flag given to node (command line or NODE_OPTIONS) is left alone.
 */
import v8 from 'node:v8';

export function keepYoungGenerationSmall(): void {
  const given = [...process.execArgv, process.env['NODE_OPTIONS'] ?? ''].some((arg) => arg.includes('semi-space'));
  if (!given) v8.setFlagsFromString('--semi-space-growth-factor=1');
}
