/** Ports for tests that must name a port before the process that binds it starts. */
import net from 'node:net';

/**
 * A loopback port free now (bound to 0 and released): for a configuration that must name
 * it in advance (HAProxy's bind, a page's origin). Another process could take it in
 * between; on loopback in a test run that has not been seen.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
