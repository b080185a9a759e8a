/**
 * The Node flags a daemon runs with, from its script's `#!` line. The daemons' scripts
 * start with `#!/usr/bin/env -S node --max-semi-space-size=2`: V8's young generation
 * (semi-spaces up to 16 MB by default) is capped at 2 MB. Two reasons, both measured
 * (docs/benchmarks.md): a burst of connects otherwise leaves ~40 MB of young generation
 * in RSS (tcpd at 8,000 idle connections: 5.1 KB per connection measured, 3.4 KB capped,
 * when the connections themselves hold ~0.2 KB each), and the JS switches of tlsd and wsd
 * allocate a Buffer per 16 KiB message: with rarer scavenges their backing stores pile
 * up as external memory until V8 runs full mark-compacts for it (wsd rr 64 x 16 KiB:
 * 50+ µs per message with ~25 mark-compacts a second, 29 µs with none).
 *
 * Installed bins (npm's links, systemd's ExecStart) get the flags from the `#!` line;
 * what starts a daemon with `node SCRIPT` (the bench, the demo) puts them before SCRIPT.
 */
import fs from 'node:fs';

const SHEBANG = /^#!\/usr\/bin\/env -S node((?: +--?[\w-]+(?:=\S+)?)*) *$/;

/** The flags after `node` in `script`'s `#!/usr/bin/env -S node ...` line (none for a plain `#!/usr/bin/env node`). */
export function shebangNodeFlags(script: string): string[] {
  const fd = fs.openSync(script, 'r');
  try {
    const head = Buffer.alloc(256);
    const n = fs.readSync(fd, head, 0, head.length, 0);
    const line = head.subarray(0, n).toString('utf8').split('\n', 1)[0]!;
    const match = SHEBANG.exec(line);
    return match ? match[1]!.trim().split(/ +/).filter(Boolean) : [];
  } finally {
    fs.closeSync(fd);
  }
}
