// Marks the compiled daemons executable (tsc does not), so `bin` entries and direct
// `./dist/gateways/cli/tcpd.js` calls work.
import { chmodSync, readdirSync } from 'node:fs';

const dir = new URL('../dist/gateways/cli/', import.meta.url);
for (const file of readdirSync(dir)) {
  if (file.endsWith('.js')) chmodSync(new URL(file, dir), 0o755);
}
