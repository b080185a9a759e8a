/**
 * The parts of client addresses on their own: trusted-proxy ranges (IPv4-mapped peers
 * included), forwarding headers, and the per-IP table with a clock of the test's (its
 * bound with 10,000 distinct addresses, slots given back, the token bucket).
 */
import test from 'ava';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { ConfigError, loadConfig } from '../gateways/config.js';
import { tempDir } from './helpers/rundir.js';
import { DEFAULT_TRUSTED_PROXIES, TrustedProxies, forwardedClient } from '../gateways/client-address.js';
import { PerIpLimits } from '../gateways/per-ip.js';
import { IpcError } from '../src/errors.js';
import { normalizeGatewayOptions, OptionsError } from '../gateways/options.js';

test('trusted proxies: CIDR ranges and single addresses, IPv4-mapped IPv6 peers seen as IPv4', (t) => {
  const trusted = new TrustedProxies(DEFAULT_TRUSTED_PROXIES);
  t.true(trusted.has('127.0.0.1'));
  t.true(trusted.has('127.255.1.2'));
  t.true(trusted.has('::ffff:127.0.0.1'));
  t.true(trusted.has('::FFFF:127.0.0.2'));
  t.true(trusted.has('::1'));
  t.false(trusted.has('::2'));
  t.false(trusted.has('128.0.0.1'));
  t.false(trusted.has('::ffff:10.0.0.1'));
  t.false(trusted.has(undefined));
  t.false(trusted.has('not an address'));
  const lan = new TrustedProxies(['10.0.0.0/8', '2001:db8::/32', '192.0.2.7']);
  t.true(lan.has('10.200.3.4'));
  t.true(lan.has('2001:db8:1::5'));
  t.true(lan.has('192.0.2.7'));
  t.false(lan.has('192.0.2.8'));
  t.false(lan.has('127.0.0.1'));
  for (const bad of ['10.0.0.0/33', '::1/129', 'example.com', '10.0.0.0/', '1.2.3/8']) {
    t.throws(() => new TrustedProxies([bad]), { instanceOf: TypeError }, bad);
  }
});

test('--trusted-proxies with a bad range is an options error naming the option', (t) => {
  const err = t.throws(() => normalizeGatewayOptions('tcp', { listen: 0, service: 'pong', trustedProxies: '10.0.0.0/8,nonsense' }), {
    instanceOf: OptionsError,
  });
  t.is(err?.path, 'trustedProxies');
  const options = normalizeGatewayOptions('ws', { listen: 0, service: 'pong' });
  t.false(options.trustForwarded, 'the default trusts PROXY headers from loopback, not forwarding headers');
  t.true(normalizeGatewayOptions('ws', { listen: 0, service: 'pong', trustedProxies: '127.0.0.1' }).trustForwarded);
  const server = http.createServer();
  const withServer = t.throws(() => normalizeGatewayOptions('ws', { server, service: 'pong', acceptProxy: true }), { instanceOf: OptionsError });
  t.is(withServer?.path, 'acceptProxy');
});

test('forwarding headers: the first untrusted address from the right; garbage gives nothing', (t) => {
  const trusted = new TrustedProxies(['10.0.0.0/8']);
  t.deepEqual(forwardedClient({ 'x-forwarded-for': '203.0.113.5' }, trusted), { address: '203.0.113.5', port: undefined, header: 'x-forwarded-for' });
  // A client's own forged entry sits left of the one the trusted proxy added: not taken.
  t.deepEqual(forwardedClient({ 'x-forwarded-for': '6.6.6.6, 203.0.113.5, 10.0.0.2' }, trusted)?.address, '203.0.113.5');
  t.deepEqual(forwardedClient({ 'x-forwarded-for': '10.0.0.3, 10.0.0.2' }, trusted)?.address, '10.0.0.3');
  t.deepEqual(forwardedClient({ forwarded: 'for=192.0.2.60;proto=http;by=203.0.113.43' }, trusted, 'forwarded'), {
    address: '192.0.2.60',
    port: undefined,
    header: 'forwarded',
  });
  t.deepEqual(forwardedClient({ forwarded: 'for="[2001:db8:cafe::17]:4711", for=10.1.1.1' }, trusted, 'forwarded'), {
    address: '2001:db8:cafe::17',
    port: 4711,
    header: 'forwarded',
  });
  t.is(forwardedClient({ 'x-forwarded-for': '2001:DB8:0:0::1' }, trusted)?.address, '2001:db8::1', 'one spelling per address');
  t.is(forwardedClient({ forwarded: 'for=unknown' }, trusted, 'forwarded'), null);
  t.is(forwardedClient({ forwarded: 'for=_hidden, for=10.0.0.1' }, trusted, 'forwarded'), null, 'a trusted hop wrote what cannot be read');
  t.is(forwardedClient({ forwarded: 'proto=https' }, trusted, 'forwarded'), null);
  t.is(forwardedClient({ 'x-forwarded-for': '203.0.113.5, <script>' }, trusted), null);
  t.is(forwardedClient({ 'x-forwarded-for': '1.2.3.4:99999' }, trusted), null);
  t.is(forwardedClient({}, trusted), null);
});

test('forwarding headers: only the configured header is read (a client forges the other through a proxy that appends to one), and garbage left of the client entry is the client\'s own', (t) => {
  const trusted = new TrustedProxies(['10.0.0.0/8']);
  // nginx appends to X-Forwarded-For and passes the client's own Forwarded through.
  const viaNginx = { forwarded: 'for=203.0.113.7', 'x-forwarded-for': '198.51.100.9' };
  t.is(forwardedClient(viaNginx, trusted)?.address, '198.51.100.9');
  t.is(forwardedClient({ forwarded: 'for=203.0.113.7' }, trusted), null, 'Forwarded is not read by default');
  // A proxy that writes Forwarded, configured so: a forged X-Forwarded-For is ignored.
  t.is(forwardedClient({ forwarded: 'for=198.51.100.9', 'x-forwarded-for': '203.0.113.7' }, trusted, 'forwarded')?.address, '198.51.100.9');
  // The client wrote `x` first: the real address the proxy appended still counts.
  t.is(forwardedClient({ 'x-forwarded-for': 'x, 198.51.100.9' }, trusted)?.address, '198.51.100.9');
  t.is(forwardedClient({ 'x-forwarded-for': 'x, 198.51.100.9, 10.0.0.2' }, trusted)?.address, '198.51.100.9');
});

/** A clock the test moves. */
function clock(): { now: () => number; advance(ms: number): void } {
  let time = 1000;
  return { now: () => time, advance: (ms) => (time += ms) };
}

test('concurrent connections per address: refused at the limit with its code, the slot comes back on release', (t) => {
  const limits = new PerIpLimits(2, 0, { now: clock().now });
  const a = limits.acquire('10.0.0.1');
  const b = limits.acquire('::ffff:10.0.0.1');
  t.is(typeof a, 'function');
  t.is(typeof b, 'function');
  const refused = limits.acquire('10.0.0.1');
  t.true(refused instanceof IpcError);
  t.is((refused as IpcError).code, 'IPC_ERR_TOO_MANY_CONNECTIONS_PER_IP');
  t.is(typeof limits.acquire('10.0.0.2'), 'function', 'another address is not affected');
  (a as () => void)();
  (a as () => void)(); // twice: counted once
  t.is(typeof limits.acquire('10.0.0.1'), 'function');
  t.true(limits.acquire('10.0.0.1') instanceof IpcError);
  limits.stop();
});

test('connect rate per address: a burst of N, then N per second', (t) => {
  const time = clock();
  const limits = new PerIpLimits(0, 3, { now: time.now });
  for (let i = 0; i < 3; i++) t.is(typeof limits.acquire('192.0.2.1'), 'function');
  const refused = limits.acquire('192.0.2.1');
  t.is((refused as IpcError).code, 'IPC_ERR_CONNECT_RATE_EXCEEDED');
  time.advance(340); // a token: 3 per second
  t.is(typeof limits.acquire('192.0.2.1'), 'function');
  t.true(limits.acquire('192.0.2.1') instanceof IpcError);
  time.advance(5000);
  for (let i = 0; i < 3; i++) t.is(typeof limits.acquire('192.0.2.1'), 'function', 'the bucket holds N, not more');
  t.true(limits.acquire('192.0.2.1') instanceof IpcError);
  limits.stop();
});

test('10,000 distinct addresses: the table empties once they are idle, and never passes its bound', (t) => {
  const time = clock();
  const limits = new PerIpLimits(5, 5, { now: time.now, maxEntries: 4000 });
  const open: Array<() => void> = [];
  let peak = 0;
  for (let i = 0; i < 10_000; i++) {
    const slot = limits.acquire(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    t.is(typeof slot, 'function');
    // A few stay open: those entries must survive every sweep.
    if (i % 1000 === 0) open.push(slot as () => void);
    else (slot as () => void)();
    peak = Math.max(peak, limits.size);
  }
  t.true(peak <= 4000, `peak ${peak}`);
  time.advance(1000);
  limits.sweep();
  t.is(limits.size, open.length, 'only addresses with connections open stay');
  for (const release of open) release();
  limits.sweep();
  t.is(limits.size, 0);
  limits.stop();
});

test('an entry whose bucket is not full again is kept by the sweep (the rate is not reset by waiting less than a second)', (t) => {
  const time = clock();
  const limits = new PerIpLimits(0, 2, { now: time.now });
  (limits.acquire('10.9.9.9') as () => void)();
  (limits.acquire('10.9.9.9') as () => void)();
  time.advance(100);
  limits.sweep();
  t.is(limits.size, 1);
  t.true(limits.acquire('10.9.9.9') instanceof IpcError);
  time.advance(1000);
  limits.sweep();
  t.is(limits.size, 0);
  limits.stop();
});

test('gatewayd config: the new flags are keys of a gateway, send-proxy-v2 a key of outbound', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'gatewayd.yaml');
  const gateway = `gateways:\n  - type: tcp\n    listen: 127.0.0.1:0\n    allow: [pong]\n`;
  writeFileSync(
    file,
    `outbound:\n  tcp:\n    send-proxy-v2: true\n${gateway}    accept-proxy: true\n    trusted-proxies: 10.0.0.0/8, ::1\n    max-connections-per-ip: 3\n    connect-rate-per-ip: 7\n`,
  );
  const config = loadConfig(file);
  const options = config.gateways[0]!;
  t.true(options.acceptProxy);
  t.deepEqual(options.trustedProxies.ranges, ['10.0.0.0/8', '::1']);
  t.is(options.maxConnectionsPerIp, 3);
  t.is(options.connectRatePerIp, 7);
  t.true(config.outbound[0]!.sendProxyV2);
  writeFileSync(file, `${gateway}    trusted-proxies: [10.0.0.0/40]\n`);
  t.throws(() => loadConfig(file), { instanceOf: ConfigError, message: /gateways\[0\]\.trusted-proxies: expected addresses or CIDR ranges/ });
  writeFileSync(file, `${gateway}    send-proxy-v2: true\n`);
  t.throws(() => loadConfig(file), { instanceOf: ConfigError, message: /gateways\[0\]\.send-proxy-v2: expected the outbound side under the top-level outbound/ });
});
