/**
 * gatewayd.schema.json: the committed file is what the generator makes from the options
 * table and config.ts (regenerate with `npm run gen-schema`), the sample configuration is
 * valid under it, and bad configurations are refused by the schema and by the
 * normaliser alike (every option with a value of the wrong kind, and the file-level cases).
 */
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Ajv } from 'ajv';
import { parse, stringify } from 'yaml';
import { gatewaydSchema, gatewaydSchemaText } from '../gateways/config-schema.js';
import { CONFIG_KEYS, ConfigError, loadConfig } from '../gateways/config.js';
import { OPTION_SPECS, flagOf, type GatewayKind, type OptionSpec } from '../gateways/options.js';
import { REPO_ROOT } from './helpers/paths.js';
import { tempDirSync } from './helpers/rundir.js';

const SAMPLE = path.join(REPO_ROOT, 'gatewayd.example.yaml');
const validate = new Ajv({ allErrors: true, strict: true, strictRequired: false }).compile(gatewaydSchema());

type Config = Record<string, unknown>;

/** What the normaliser says of `config` (written to a file): null when it accepts it. */
function normaliserRefusal(dir: string, config: Config | string): string | null {
  const file = path.join(dir, 'config.yaml');
  writeFileSync(file, typeof config === 'string' ? config : stringify(config));
  try {
    loadConfig(file);
    return null;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.message;
  }
}

function schemaErrors(config: Config): string {
  return validate(config) ? '' : JSON.stringify(validate.errors);
}

test('the committed gatewayd.schema.json is the generated one (npm run gen-schema)', (t) => {
  t.is(readFileSync(path.join(REPO_ROOT, 'gatewayd.schema.json'), 'utf8'), gatewaydSchemaText());
});

test('the schema describes every key config.ts takes and every option a gateway entry takes', (t) => {
  const schema = gatewaydSchema() as { properties: Config; definitions: { gateway: { properties: Config } } };
  t.deepEqual(Object.keys(schema.properties).sort(), [...CONFIG_KEYS.top].sort());
  const gatewayKeys = OPTION_SPECS.map((s) => flagOf(s.key)).filter((f) => !CONFIG_KEYS.perProcess.has(f) && !CONFIG_KEYS.outboundOnly.has(f));
  t.deepEqual(Object.keys(schema.definitions.gateway.properties).sort(), ['type', ...gatewayKeys].sort());
});

test('the sample configuration is valid under the schema, and names it for editors', (t) => {
  const text = readFileSync(SAMPLE, 'utf8');
  t.regex(text, /^# yaml-language-server: \$schema=\.\/gatewayd\.schema\.json$/m);
  t.is(schemaErrors(parse(text) as Config), '');
});

test('configurations both the schema and the normaliser accept', (t) => {
  const dir = tempDirSync(t, 'schema-');
  const accepted: Config[] = [
    { gateways: [{ type: 'tcp', listen: 8998, service: 'pong' }] },
    { gateways: [{ type: 'tcp', listen: ['[::1]:8998', 'unix:/run/gw/tcp.sock', '127.0.0.1:0'], allow: '*', 'max-payload': 0 }] },
    { gateways: [{ type: 'ws', listen: 8080, allow: 'pong,auth', origin: 'http://a', static: false, cert: 'c.pem', key: 'k.pem', 'min-version': 'TLSv1.3' }] },
    { gateways: [{ type: 'tls', listen: 8999, allow: ['pong'], cert: 'c.pem', key: 'k.pem', ca: 'ca.pem', 'require-client-cert': true }] },
    { rundir: '/run/libipc', 'drain-timeout': 0, ipcd: { 'lookup-timeout': 100 }, outbound: { tcp: null, tls: { 'outbound-ca': 'ca.pem' } }, gateways: [] },
    { admin: '127.0.0.1:9100', outbound: { tcp: { 'send-proxy-v2': true } }, gateways: [{ type: 'tcp', listen: 8998, allow: '*', 'accept-proxy': true, 'trusted-proxies': '10.0.0.0/8', 'max-connections-per-ip': 10 }] },
  ];
  for (const config of accepted) {
    t.is(schemaErrors(config), '', stringify(config));
    t.is(normaliserRefusal(dir, config), null, stringify(config));
  }
});

/** A gateway entry of `kind` that both accept, to spoil one key of. */
function goodEntry(kind: GatewayKind): Config {
  return { type: kind, listen: '127.0.0.1:0', allow: ['pong'], ...(kind === 'tls' ? { cert: 'c.pem', key: 'k.pem' } : {}) };
}

/** A value of the wrong kind for `spec`. */
function badValue(spec: OptionSpec): unknown {
  switch (spec.type) {
    case 'integer':
      return spec.max + 1;
    case 'boolean':
      return 'yes';
    case 'enum':
      return 'bogus';
    case 'listen':
      return '127.0.0.1:65536';
    case 'string':
    case 'list':
    case 'allow':
    case 'directory-or-false':
      return { a: 1 };
  }
}

test('every option with a value of the wrong kind, or on a gateway kind that does not take it, is refused by both', (t) => {
  const dir = tempDirSync(t, 'schema-');
  let cases = 0;
  for (const spec of OPTION_SPECS) {
    const flag = flagOf(spec.key);
    if (CONFIG_KEYS.perProcess.has(flag) || CONFIG_KEYS.outboundOnly.has(flag)) continue;
    for (const kind of ['tcp', 'tls', 'ws'] as const) {
      const entry = goodEntry(kind);
      if (flag === 'service') delete entry['allow'];
      // Wrong kind of value where the kind takes the option; any value where it does not.
      entry[flag] = spec.kinds.includes(kind) ? badValue(spec) : (entry[flag] ?? 'x');
      if (!spec.kinds.includes(kind) && spec.type === 'boolean') entry[flag] = true;
      const config = { gateways: [entry] };
      t.not(schemaErrors(config), '', `schema accepted ${stringify(config)}`);
      t.truthy(normaliserRefusal(dir, config), `normaliser accepted ${stringify(config)}`);
      cases++;
    }
  }
  t.true(cases > 40);
});

const refusedByBoth: Array<[string, Config]> = [
  ['an unknown top-level key', { listen: 1, gateways: [] }],
  ['an unknown gateway key', { gateways: [{ ...goodEntry('tcp'), alow: ['pong'] }] }],
  ['an unknown type', { gateways: [{ ...goodEntry('tcp'), type: 'udp' }] }],
  ['a gateway without type', { gateways: [{ listen: 1, allow: ['pong'] }] }],
  ['a port out of range as a number', { gateways: [{ ...goodEntry('tcp'), listen: 70000 }] }],
  ['a port out of range in a list', { gateways: [{ ...goodEntry('tcp'), listen: ['127.0.0.1:1', '[::1]:99999'] }] }],
  ['both service and allow', { gateways: [{ ...goodEntry('tcp'), service: 'pong' }] }],
  ['neither service nor allow', { gateways: [{ type: 'tcp', listen: 1 }] }],
  ['tls without cert and key', { gateways: [{ type: 'tls', listen: 1, allow: ['pong'] }] }],
  ['a key without its cert', { gateways: [{ ...goodEntry('ws'), key: 'k.pem' }] }],
  ['a per-process key in a gateway', { gateways: [{ ...goodEntry('tcp'), 'drain-timeout': 5 }] }],
  ['an outbound key in a gateway', { gateways: [{ ...goodEntry('tcp'), name: 'tcp' }] }],
  ['too many workers', { workers: 1000, gateways: [] }],
  ['a negative drain-timeout', { 'drain-timeout': -1, gateways: [] }],
  ['an unknown outbound scheme', { outbound: { udp: {} }, gateways: [] }],
  ['an unknown outbound key', { outbound: { tcp: { ca: 'x' } }, gateways: [] }],
  ['an unknown ipcd key', { ipcd: { lookups: 1 }, gateways: [] }],
  ['ipcd as a string', { ipcd: 'yes', gateways: [] }],
  ['gateways as a map', { gateways: { tcp: goodEntry('tcp') } }],
];

for (const [title, config] of refusedByBoth) {
  test(`refused by the schema and by the normaliser: ${title}`, (t) => {
    const dir = tempDirSync(t, 'schema-');
    t.not(schemaErrors(config), '', 'the schema accepted it');
    t.truthy(normaliserRefusal(dir, config), 'the normaliser accepted it');
  });
}
