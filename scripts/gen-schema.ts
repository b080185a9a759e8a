/**
 * gen-schema: writes gatewayd.schema.json (the JSON Schema of gatewayd's configuration
 * file, gateways/config-schema.ts) at the repository root. Run after changing an option
 * or a key of the file; test/config-schema.test.ts fails while the committed file differs.
 *   npm run gen-schema        (node dist/scripts/gen-schema.js [--check])
 * --check: write nothing, exit 1 when the file is out of date.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gatewaydSchemaText } from '../gateways/config-schema.js';

/** From scripts/ under tsx or dist/scripts/ once compiled: the directory with package.json and gateways/. */
function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!(existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'gateways')))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('gen-schema: cannot find the repository root');
    dir = parent;
  }
  return dir;
}

const file = path.join(repoRoot(), 'gatewayd.schema.json');
const text = gatewaydSchemaText();
if (process.argv.includes('--check')) {
  const current = existsSync(file) ? readFileSync(file, 'utf8') : '';
  if (current !== text) {
    process.stderr.write(`${file} is out of date: run npm run gen-schema\n`);
    process.exit(1);
  }
  process.stdout.write(`${file}: up to date\n`);
} else {
  writeFileSync(file, text);
  process.stdout.write(`wrote ${file}\n`);
}
