/**
 * Property tests of the text parsers against models: service names (src/rundir.ts),
 * IPC_NETWORK, lookups and targets (src/network.ts), listen addresses (gateways/listen.ts).
 *
 * Not covered here: the byte handshake's name split (the first read up to its first NUL)
 * is inline in gateways/byte-client.ts's data listener, not an exported function.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MAX_SERVICE_NAME_LENGTH, serviceNameProblem } from '../src/rundir.js';
import { formatLookup, parseLookup, parseNetwork, parseTarget, routeFor } from '../src/network.js';
import { parseListenAddress } from '../gateways/listen.js';
import { ErrorCode, IpcError } from '../src/errors.js';

function check(t: ExecutionContext, property: fc.IProperty<any>, numRuns: number): void {
  fc.assert(property, { numRuns, includeErrorInReport: true });
  t.pass();
}

// ---- service names ----------------------------------------------------------------

/**
 * The specification of a service name, written without regular expressions: 1 to `max`
 * characters, each printable ASCII other than space, `/`, `\` and `;`; no leading `.`;
 * no two dots in a row.
 */
function nameAccepted(name: string, max = MAX_SERVICE_NAME_LENGTH): boolean {
  if (name.length === 0 || name.length > max) return false;
  const forbidden = ' /\\;';
  for (let i = 0; i < name.length; i++) {
    const c = name[i]!;
    if (c < '!' || c > '~' || forbidden.includes(c)) return false;
    if (c === '.' && (i === 0 || name[i - 1] === '.')) return false;
  }
  return true;
}

// Characters that matter to the rules, and a few that should not.
const nameAlphabet = fc.constantFrom(
  'a', 'Z', '0', '-', '_', ':', '@', '~', '!', '.', '.', '/', '\\', ';', ' ', '\0', '\n', '\t', '\x7f', '\x1f', '\x80', 'é', '€', '😀', '\ud800',
);
const nameLike = fc.oneof(
  fc.string({ maxLength: 80, unit: nameAlphabet }),
  fc.string({ maxLength: 80 }),
  fc.string({ maxLength: 80, unit: 'binary' }),
  // Around the length limit, valid characters only.
  fc.integer({ min: MAX_SERVICE_NAME_LENGTH - 2, max: MAX_SERVICE_NAME_LENGTH + 2 }).map((n) => 'x'.repeat(n)),
  // 10 KB names, valid characters but one, placed anywhere.
  fc.tuple(fc.nat({ max: 9_999 }), fc.constantFrom('a', '.', '/', '\0', 'é')).map(([at, c]) => `${'a'.repeat(at)}${c}${'a'.repeat(9_999 - at)}`),
  // Absolute paths and traversal.
  fc.string({ maxLength: 20, unit: nameAlphabet }).map((s) => `/${s}`),
  fc.tuple(fc.string({ maxLength: 10 }), fc.string({ maxLength: 10 })).map(([a, b]) => `${a}..${b}`),
);

/** A name the specification accepts (for generating valid targets). */
const validName = fc
  .string({ minLength: 1, maxLength: 20, unit: fc.constantFrom('a', 'b', 'z', '0', '9', '-', '_', '.', ':', '@', '+') })
  .filter((s) => nameAccepted(s));

test('serviceNameProblem accepts exactly the names the specification accepts', (t) => {
  check(
    t,
    fc.property(nameLike, (name) => {
      const problem = serviceNameProblem(name);
      assert.equal(problem === null, nameAccepted(name), `problem: ${problem}`);
      if (problem !== null) assert.ok(problem.length > 0);
    }),
    600,
  );
});

test('serviceNameProblem honours its maxLength', (t) => {
  check(
    t,
    fc.property(fc.string({ maxLength: 40, unit: nameAlphabet }), fc.integer({ min: 0, max: 45 }), (name, max) => {
      assert.equal(serviceNameProblem(name, max) === null, nameAccepted(name, max));
    }),
    500,
  );
});

// ---- IPC_NETWORK ------------------------------------------------------------------

const spaces = fc.string({ maxLength: 3, unit: fc.constantFrom(' ', '\t', '\n', '\r', '\u00a0', '\u2003') });
const token = fc.string({ minLength: 1, maxLength: 6, unit: fc.constantFrom('a', 'b', 'c', '/', ':', '.', '_') });

interface GeneratedEntry {
  service: string;
  target: string | undefined;
  text: string;
}

/** One entry as a user might write it: padding, a service, maybe a target, maybe extra words. */
const entry: fc.Arbitrary<GeneratedEntry> = fc
  .tuple(spaces, fc.constantFrom('a', 'b', 'svc', 'tcp'), spaces, fc.option(token, { nil: undefined }), fc.array(token, { maxLength: 2 }), spaces)
  .map(([lead, service, gap, target, extra, trail]) => {
    const words = target === undefined ? [service] : [service, target, ...extra];
    // At least one blank between words: the gap, or a single space when the gap is empty.
    const sep = gap.length > 0 ? gap : ' ';
    return { service, target, text: `${lead}${words.join(sep)}${trail}` };
  });

/** An IPC_NETWORK string made of entries, empty entries sometimes in between. */
const network = fc.array(fc.oneof({ weight: 5, arbitrary: entry }, { weight: 1, arbitrary: spaces.map((text) => ({ service: '', target: undefined, text })) }), { maxLength: 8 });

test('parseNetwork gives the entries that have a target, trimmed, in order', (t) => {
  check(
    t,
    fc.property(network, (entries) => {
      const text = entries.map((e) => e.text).join(';');
      const expected = entries.filter((e) => e.service !== '' && e.target !== undefined).map((e) => ({ service: e.service, target: e.target }));
      assert.deepEqual(parseNetwork(text), expected);
    }),
    500,
  );
});

test('routeFor gives the target of the last entry naming the service', (t) => {
  check(
    t,
    fc.property(network, fc.constantFrom('a', 'b', 'svc', 'tcp', 'absent'), (entries, service) => {
      const text = entries.map((e) => e.text).join(';');
      let expected: string | null = null;
      for (const e of entries) if (e.service === service && e.target !== undefined) expected = e.target;
      assert.equal(routeFor(service, text), expected);
    }),
    500,
  );
});

test('parseNetwork on any text gives non-empty tokens without blanks or separators', (t) => {
  check(
    t,
    fc.property(fc.oneof(fc.string({ maxLength: 60 }), fc.string({ maxLength: 60, unit: 'binary' })), (text) => {
      for (const e of parseNetwork(text)) {
        for (const word of [e.service, e.target]) {
          assert.ok(word.length > 0);
          assert.ok(!word.includes(';'));
          assert.equal(word.trim(), word);
          assert.ok(!/\s/.test(word));
        }
        // routeFor agrees with the last parsed entry of the same service.
        const last = parseNetwork(text).filter((x) => x.service === e.service).at(-1)!;
        assert.equal(routeFor(e.service, text), last.target);
      }
    }),
    500,
  );
});

// ---- lookups ----------------------------------------------------------------------

test('formatLookup then parseLookup gives the service and network back', (t) => {
  check(
    t,
    fc.property(fc.string({ maxLength: 30 }).filter((s) => !s.includes(';')), fc.string({ maxLength: 60 }), (service, net) => {
      assert.deepEqual(parseLookup(formatLookup(service, net)), { service, network: net });
    }),
    500,
  );
});

test('parseLookup on any text splits at the first ; or throws IPC_ERR_INVALID_URI', (t) => {
  check(
    t,
    fc.property(fc.oneof(fc.string({ maxLength: 40 }), fc.string({ maxLength: 40, unit: 'binary' })), (text) => {
      if (!text.includes(';')) {
        assert.throws(() => parseLookup(text), (err: unknown) => err instanceof IpcError && err.code === ErrorCode.INVALID_URI);
        return;
      }
      const parsed = parseLookup(text);
      assert.ok(!parsed.service.includes(';'));
      assert.equal(formatLookup(parsed.service, parsed.network), text);
    }),
    500,
  );
});

// ---- targets ----------------------------------------------------------------------

type Host = { kind: 'name' | 'v4'; text: string } | { kind: 'v6'; text: string };
const host: fc.Arbitrary<Host> = fc.oneof(
  fc.domain().map((text) => ({ kind: 'name' as const, text })),
  fc.ipV4().map((text) => ({ kind: 'v4' as const, text })),
  fc.ipV6().map((text) => ({ kind: 'v6' as const, text })),
);
const remotePath = fc.string({ minLength: 1, maxLength: 20, unit: 'binary' });

test('parseTarget reads back generated unix:// targets', (t) => {
  check(
    t,
    fc.property(validName, (name) => {
      const uri = `unix://${name}`;
      assert.deepEqual(parseTarget(uri), { scheme: 'unix', name, uri });
    }),
    300,
  );
});

test('parseTarget reads back generated scheme://host:port/path targets', (t) => {
  check(
    t,
    fc.property(
      validName.filter((s) => s !== 'unix'),
      host,
      fc.integer({ min: 1, max: 65535 }),
      fc.integer({ min: 0, max: 4 }),
      remotePath,
      (scheme, h, port, zeros, path) => {
        // Leading zeros are fine while the port fits in 5 digits.
        const portText = String(port).padStart(Math.min(5, String(port).length + zeros), '0');
        const authority = h.kind === 'v6' ? `[${h.text}]` : h.text;
        const uri = `${scheme}://${authority}:${portText}/${path}`;
        assert.deepEqual(parseTarget(uri), { scheme, host: h.text, port, path, uri });
      },
    ),
    500,
  );
});

function targetInvariants(uri: string): void {
  let parsed;
  try {
    parsed = parseTarget(uri);
  } catch (err) {
    assert.ok(err instanceof IpcError, `not an IpcError: ${String(err)}`);
    assert.equal(err.code, ErrorCode.INVALID_URI);
    return;
  }
  assert.equal(parsed.uri, uri);
  assert.equal(serviceNameProblem(parsed.scheme), null);
  if ('name' in parsed) {
    assert.equal(parsed.scheme, 'unix');
    assert.equal(serviceNameProblem(parsed.name), null);
    assert.equal(uri, `unix://${parsed.name}`);
  } else {
    assert.ok(Number.isInteger(parsed.port) && parsed.port >= 1 && parsed.port <= 65535);
    assert.ok(parsed.host.length > 0 && parsed.path.length > 0);
    assert.ok(uri.startsWith(`${parsed.scheme}://`) && uri.endsWith(`/${parsed.path}`));
  }
}

test('parseTarget on any text returns a well-formed target or throws IPC_ERR_INVALID_URI', (t) => {
  const uriAlphabet = fc.constantFrom('t', 'c', 'p', 'u', 'n', 'i', 'x', ':', '/', '/', '[', ']', '1', '8', '0', '.', ' ', '\0', '%', 'é', ';');
  check(
    t,
    fc.property(
      fc.oneof(
        fc.string({ maxLength: 40 }),
        fc.string({ maxLength: 40, unit: 'binary' }),
        fc.string({ maxLength: 30, unit: uriAlphabet }),
        fc.tuple(fc.constantFrom('unix://', 'tcp://', 'ws://[', 'tls://h:'), fc.string({ maxLength: 30, unit: uriAlphabet })).map(([a, b]) => a + b),
      ),
      targetInvariants,
    ),
    600,
  );
});

test('parseTarget on generated targets with one character changed keeps its invariants', (t) => {
  check(
    t,
    fc.property(validName, host, fc.integer({ min: 0, max: 99999 }), remotePath, fc.nat(), fc.string({ maxLength: 2, unit: 'binary' }), (scheme, h, port, path, at, insert) => {
      const uri = `${scheme}://${h.kind === 'v6' ? `[${h.text}]` : h.text}:${port}/${path}`;
      const i = at % (uri.length + 1);
      targetInvariants(uri.slice(0, i) + insert + uri.slice(i + 1));
    }),
    500,
  );
});

// ---- listen addresses -------------------------------------------------------------

/** Writes a listen address the way the CLI documents it. */
function formatListen(hostText: string | undefined, port: number): string {
  if (hostText === undefined) return String(port);
  return hostText.includes(':') ? `[${hostText}]:${port}` : `${hostText}:${port}`;
}

test('parseListenAddress reads back generated addresses', (t) => {
  check(
    t,
    fc.property(
      fc.option(fc.oneof(fc.domain(), fc.ipV4(), fc.ipV6(), fc.constantFrom('localhost', '::', '0.0.0.0', '::1')), { nil: undefined }),
      fc.integer({ min: 0, max: 65535 }),
      spaces,
      spaces,
      (hostText, port, lead, trail) => {
        const text = `${lead}${formatListen(hostText, port)}${trail}`;
        assert.deepEqual(parseListenAddress(text), { host: hostText, port });
      },
    ),
    500,
  );
});

type HostPart =
  | { form: 'none' }
  | { form: 'plain'; text: string }
  | { form: 'bracketed'; text: string }
  | { form: 'bare-v6'; text: string }
  | { form: 'empty' };

/** Listen addresses assembled from parts, valid or not, with what the CLI documents. */
const assembledListen = fc.tuple(
  fc.oneof(
    fc.constant<HostPart>({ form: 'none' }),
    fc.constant<HostPart>({ form: 'empty' }),
    fc.oneof(fc.domain(), fc.ipV4()).map((text): HostPart => ({ form: 'plain', text })),
    fc.ipV6().map((text): HostPart => ({ form: 'bracketed', text })),
    fc.ipV6().map((text): HostPart => ({ form: 'bare-v6', text })),
  ),
  fc.oneof(
    fc.integer({ min: 0, max: 65535 }).map(String),
    fc.integer({ min: 65530, max: 65540 }).map(String),
    fc.integer({ min: 0, max: 65535 }).map((n) => `00${n}`),
    fc.constantFrom('', '-1', '+80', '8 0', '80a', '0x50', '٣', '1e3', '99999999999999999999'),
  ),
);

test('parseListenAddress agrees with the model on addresses assembled from parts', (t) => {
  check(
    t,
    fc.property(assembledListen, ([hostPart, portText]) => {
      // The model: a port is ASCII digits worth at most 65535; the host is absent, a name
      // or IPv4 without ':', or an IPv6 address in brackets; anything else is refused.
      let portOk = portText.length > 0;
      for (const c of portText) if (c < '0' || c > '9') portOk = false;
      portOk &&= Number(portText) <= 65535;
      let text: string;
      let hostOk: boolean;
      let host: string | undefined;
      switch (hostPart.form) {
        case 'none':
          [text, hostOk, host] = [portText, true, undefined];
          break;
        case 'empty':
          [text, hostOk, host] = [`:${portText}`, false, undefined];
          break;
        case 'plain':
          [text, hostOk, host] = [`${hostPart.text}:${portText}`, true, hostPart.text];
          break;
        case 'bracketed':
          [text, hostOk, host] = [`[${hostPart.text}]:${portText}`, true, hostPart.text];
          break;
        case 'bare-v6':
          [text, hostOk, host] = [`${hostPart.text}:${portText}`, false, undefined];
          break;
      }
      if (hostOk && portOk) {
        assert.deepEqual(parseListenAddress(text), { host, port: Number(portText) });
      } else {
        assert.throws(() => parseListenAddress(text), TypeError, text);
      }
    }),
    600,
  );
});

test('parseListenAddress on any text returns a port in range or throws a TypeError', (t) => {
  const listenAlphabet = fc.constantFrom('1', '0', '9', ':', '[', ']', '.', 'a', ' ', '\n', '\0', '٣', 'é');
  check(
    t,
    fc.property(
      fc.oneof(
        fc.string({ maxLength: 30 }),
        fc.string({ maxLength: 30, unit: 'binary' }),
        fc.string({ maxLength: 20, unit: listenAlphabet }),
        fc.string({ minLength: 6, maxLength: 400, unit: fc.constantFrom('9', '0') }),
      ),
      (text) => {
        let parsed;
        try {
          parsed = parseListenAddress(text);
        } catch (err) {
          assert.ok(err instanceof TypeError, `not a TypeError: ${String(err)}`);
          return;
        }
        assert.ok(Number.isInteger(parsed.port) && parsed.port >= 0 && parsed.port <= 65535);
        if (parsed.host !== undefined) assert.ok(parsed.host.length > 0);
        // What was parsed, written back, parses the same.
        assert.deepEqual(parseListenAddress(formatListen(parsed.host, parsed.port)), parsed);
      },
    ),
    600,
  );
});
