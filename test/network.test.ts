import test from 'ava';
import { ErrorCode, IpcError } from '../src/errors.js';
import { formatLookup, isUriError, parseLookup, parseNetwork, parseTarget, routeFor } from '../src/network.js';
import { loadVector } from './helpers/chain-net.js';

/** Asserts `fn` throws an IpcError IPC_ERR_INVALID_URI whose message matches `message`. */
function throwsUri(t: import('ava').ExecutionContext, fn: () => unknown, message: RegExp): void {
  const err = t.throws(fn, { instanceOf: IpcError, message });
  t.is(err?.code, ErrorCode.INVALID_URI);
  t.true(isUriError(err));
}

// parseNetwork / routeFor ---------------------------------------------------------------

test('parseNetwork splits entries on ; into service and target, in order', (t) => {
  t.deepEqual(parseNetwork('pong tcp://127.0.0.1:19102/pong;audio unix://audio'), [
    { service: 'pong', target: 'tcp://127.0.0.1:19102/pong' },
    { service: 'audio', target: 'unix://audio' },
  ]);
});

test('parseNetwork trims whitespace around entries and between tokens', (t) => {
  const expected = [
    { service: 'audio', target: 'unix://nothing' },
    { service: 'pong', target: 'unix://pong' },
  ];
  t.deepEqual(parseNetwork('audio unix://nothing; pong unix://pong'), expected);
  t.deepEqual(parseNetwork('audio unix://nothing ;pong unix://pong'), expected);
  t.deepEqual(parseNetwork('  audio \t unix://nothing \n;\t pong   unix://pong  '), expected);
});

test('parseNetwork ignores tokens after the target', (t) => {
  t.deepEqual(parseNetwork('pong unix://pong extra tokens here'), [{ service: 'pong', target: 'unix://pong' }]);
});

test('parseNetwork skips empty entries and entries without a target', (t) => {
  t.deepEqual(parseNetwork(''), []);
  t.deepEqual(parseNetwork(' ; ;;'), []);
  t.deepEqual(parseNetwork('lonely;pong unix://pong;'), [{ service: 'pong', target: 'unix://pong' }]);
});

test('routeFor: the last matching entry wins', (t) => {
  t.is(routeFor('pong', 'pong unix://nothing;pong unix://pong'), 'unix://pong');
  // Even when the earlier one would have worked: no fallback to earlier entries.
  t.is(routeFor('pong', 'pong unix://pong;pong unix://nothing'), 'unix://nothing');
  t.is(routeFor('pong', 'pong unix://a;audio unix://b;pong unix://c;other unix://d'), 'unix://c');
});

test('routeFor matches trimmed entries (the original does not)', (t) => {
  t.is(routeFor('pong', 'audio unix://nothing; pong unix://pong'), 'unix://pong');
  t.is(routeFor('audio', 'audio unix://nothing ;pong unix://pong'), 'unix://nothing');
});

test('routeFor returns null without a matching entry, and compares names exactly', (t) => {
  t.is(routeFor('pong', 'other unix://pong'), null);
  t.is(routeFor('pong', ''), null);
  t.is(routeFor('pong', 'Pong unix://pong'), null);
  t.is(routeFor('pong', 'pongd unix://pong'), null);
  t.is(routeFor('pong', 'pong'), null);
});

// parseLookup / formatLookup -------------------------------------------------------------

test('parseLookup splits at the first ; into the service and the whole IPC_NETWORK', (t) => {
  t.deepEqual(parseLookup('pong;pong tcp://127.0.0.1:19102/pong'), {
    service: 'pong',
    network: 'pong tcp://127.0.0.1:19102/pong',
  });
  t.deepEqual(parseLookup('pong;a unix://a;pong unix://pong'), { service: 'pong', network: 'a unix://a;pong unix://pong' });
  t.deepEqual(parseLookup('pong;'), { service: 'pong', network: '' });
});

test('parseLookup without ; throws IPC_ERR_INVALID_URI', (t) => {
  throwsUri(t, () => parseLookup('pong'), /without ';'/);
  throwsUri(t, () => parseLookup(''), /without ';'/);
});

test('formatLookup is what parseLookup reads back', (t) => {
  const payload = formatLookup('pong', 'audio unix://nothing; pong unix://pong');
  t.is(payload, 'pong;audio unix://nothing; pong unix://pong');
  t.deepEqual(parseLookup(payload), { service: 'pong', network: 'audio unix://nothing; pong unix://pong' });
});

test('the recorded lookups parse into the recorded service and IPC_NETWORK', (t) => {
  const scenarios = [
    'chain_tcp_basic',
    'chain_unix_scheme',
    'chain_multi_entries_space_after_semicolon',
    'chain_multi_entries_space_before_semicolon',
    'chain_multi_match_last_wins',
    'chain_no_match',
    'chain_no_uri',
    'chain_uri_without_path',
    'chain_uri_nested_path',
  ];
  for (const scenario of scenarios) {
    const vector = loadVector(scenario);
    const wire = vector.wire?.find((w) => w.dir === 'pong->ipcd');
    if (!wire || vector.ipc_network === undefined) {
      t.fail(`${scenario}: no recorded lookup`);
      continue;
    }
    const bytes = Buffer.from(wire.hex, 'hex');
    t.is(bytes.readUInt32BE(0), bytes.length - 4, scenario);
    const lookup = parseLookup(bytes.subarray(4).toString('latin1'));
    t.deepEqual(lookup, { service: 'pong', network: vector.ipc_network }, scenario);
    t.is(formatLookup('pong', vector.ipc_network), bytes.subarray(4).toString('latin1'), scenario);
  }
});

// parseTarget ------------------------------------------------------------------------------

test('parseTarget reads unix://NAME', (t) => {
  t.deepEqual(parseTarget('unix://pong'), { scheme: 'unix', name: 'pong', uri: 'unix://pong' });
});

test('parseTarget refuses unix:// with an invalid service name', (t) => {
  throwsUri(t, () => parseTarget('unix://'), /bad service name \(empty name\)/);
  throwsUri(t, () => parseTarget('unix://../pong'), /bad service name/);
  throwsUri(t, () => parseTarget('unix://a/pong'), /bad service name \(path separator\)/);
  throwsUri(t, () => parseTarget('unix://po ng'), /bad service name/);
});

for (const scheme of ['tcp', 'tls', 'ws', 'wss']) {
  test(`parseTarget reads ${scheme}://host:port/path`, (t) => {
    const uri = `${scheme}://127.0.0.1:19102/pong`;
    t.deepEqual(parseTarget(uri), { scheme, host: '127.0.0.1', port: 19102, path: 'pong', uri });
  });
}

test('parseTarget reads a host name and the port bounds 1 and 65535', (t) => {
  t.like(parseTarget('tcp://localhost:1/pong'), { host: 'localhost', port: 1, path: 'pong' });
  t.like(parseTarget('tcp://gateway.example:65535/pong'), { host: 'gateway.example', port: 65535 });
});

test('parseTarget reads a bracketed IPv6 host without the brackets', (t) => {
  t.deepEqual(parseTarget('tcp://[::1]:8998/pong'), {
    scheme: 'tcp',
    host: '::1',
    port: 8998,
    path: 'pong',
    uri: 'tcp://[::1]:8998/pong',
  });
});

test('parseTarget passes a nested path through whole (the remote gateway validates it)', (t) => {
  t.like(parseTarget('tcp://127.0.0.1:19102/../run-remote/pong'), { path: '../run-remote/pong' });
});

test('parseTarget refuses a URI without a path', (t) => {
  throwsUri(t, () => parseTarget('tcp://127.0.0.1:19102'), /no \/path/);
  throwsUri(t, () => parseTarget('ws://[::1]:8080'), /no \/path/);
});

test('parseTarget refuses an empty path', (t) => {
  throwsUri(t, () => parseTarget('tcp://127.0.0.1:19102/'), /empty path/);
});

test('parseTarget refuses a port that is not a number, or missing', (t) => {
  throwsUri(t, () => parseTarget('tcp://127.0.0.1:notaport/pong'), /expected host:port/);
  throwsUri(t, () => parseTarget('tcp://127.0.0.1/pong'), /expected host:port/);
  throwsUri(t, () => parseTarget('tcp://127.0.0.1:/pong'), /expected host:port/);
  throwsUri(t, () => parseTarget('tcp://127.0.0.1:-1/pong'), /expected host:port/);
  throwsUri(t, () => parseTarget('tcp://127.0.0.1:123456/pong'), /expected host:port/);
  throwsUri(t, () => parseTarget('tcp://[::1]/pong'), /expected host:port/);
});

test('parseTarget refuses a port out of range', (t) => {
  throwsUri(t, () => parseTarget('tcp://127.0.0.1:0/pong'), /port out of range/);
  throwsUri(t, () => parseTarget('tcp://127.0.0.1:65536/pong'), /port out of range/);
  throwsUri(t, () => parseTarget('tcp://127.0.0.1:99999/pong'), /port out of range/);
});

test('parseTarget refuses an empty host and an unbracketed IPv6 address', (t) => {
  throwsUri(t, () => parseTarget('tcp://:19102/pong'), /expected host:port/);
  throwsUri(t, () => parseTarget('tcp://::1:19102/pong'), /expected host:port/);
});

test('parseTarget refuses a target without <scheme>://', (t) => {
  throwsUri(t, () => parseTarget('pong'), /no '<scheme>:\/\/'/);
  throwsUri(t, () => parseTarget('hello'), /no '<scheme>:\/\/'/);
  throwsUri(t, () => parseTarget('127.0.0.1:19102/pong'), /no '<scheme>:\/\/'/);
  throwsUri(t, () => parseTarget('://127.0.0.1:19102/pong'), /no '<scheme>:\/\/'/);
  throwsUri(t, () => parseTarget(''), /no '<scheme>:\/\/'/);
});

test('parseTarget refuses a scheme that is not a valid service name', (t) => {
  throwsUri(t, () => parseTarget('t/cp://127.0.0.1:1/pong'), /bad scheme/);
  throwsUri(t, () => parseTarget('..://127.0.0.1:1/pong'), /bad scheme/);
});

test('the error names the URI', (t) => {
  const err = t.throws(() => parseTarget('tcp://127.0.0.1:notaport/pong'), { instanceOf: IpcError });
  t.true(err?.message.includes('"tcp://127.0.0.1:notaport/pong"'));
});

test('isUriError is false for other errors', (t) => {
  t.false(isUriError(new Error('x')));
  t.false(isUriError(new IpcError(ErrorCode.NO_ROUTE, 'x')));
  t.false(isUriError(undefined));
});
