/**
 * The main job: pongd, and the gateways in front of it.
 *   tcpd 127.0.0.1:8998 (admin 127.0.0.1:9100)   tlsd 127.0.0.1:8999 (dev certificates)   wsd 127.0.0.1:8080 (page)
 * Generates the development certificates when missing, runs every daemon as its real
 * CLI, prints how to reach each, and stops them all on Ctrl-C (SIGINT) or SIGTERM.
 * Ports and host come from DEMO_HOST, TCP_PORT, TLS_PORT, WS_PORT; RUNDIR as usual.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const cli = (name: string) => path.join(root, 'dist/gateways/cli', `${name}.js`);
const host = process.env['DEMO_HOST'] ?? '127.0.0.1';
const ports = {
  tcp: process.env['TCP_PORT'] ?? '8998',
  tls: process.env['TLS_PORT'] ?? '8999',
  ws: process.env['WS_PORT'] ?? '8080',
  admin: process.env['ADMIN_PORT'] ?? '9100',
};
const certs = path.join(root, 'certs');
const children: ChildProcess[] = [];
let stopping = false;

/**
 * Starts a daemon; resolves once it serves: pongd's `listening` line, or for a gateway the
 * `listening` line of its first TCP port (its outbound Unix service logs `listening` first).
 */
function start(name: string, args: string[]): Promise<void> {
  const serving = (line: string) => line.includes('"msg":"listening"') && (name === 'pongd' || line.includes('"port":'));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli(name), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      process.stdout.write(`${name.padEnd(5)} ${line}\n`);
      if (serving(line)) resolve();
    });
    child.on('exit', (code) => {
      if (!stopping) {
        reject(new Error(`${name} exited with code ${code}`));
        shutdown(1);
      }
    });
  });
}

function shutdown(code: number): void {
  stopping = true;
  for (const child of children) child.kill('SIGTERM');
  setTimeout(() => process.exit(code), 1500).unref();
  Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r))))).then(() => process.exit(code));
}

process.on('SIGINT', () => shutdown(0));
process.on('SIGTERM', () => shutdown(0));

const gen = spawnSync(process.execPath, [path.join(root, 'dist/scripts/gen-certs.js'), '--dir', certs], { stdio: 'inherit' });
if (gen.status !== 0) {
  process.stderr.write('demo: could not generate the development certificates\n');
  process.exit(1);
}

try {
  await start('pongd', ['--service', 'pong']);
  await Promise.all([
    start('tcpd', ['--listen', `${host}:${ports.tcp}`, '--allow', 'pong', '--admin', `${host}:${ports.admin}`]),
    start('tlsd', ['--listen', `${host}:${ports.tls}`, '--allow', 'pong', '--cert', `${certs}/server.pem`, '--key', `${certs}/server-key.pem`]),
    start('wsd', ['--listen', `${host}:${ports.ws}`, '--allow', 'pong', '--text', '--origin', `http://${host}:${ports.ws}`]),
  ]);
} catch (err) {
  process.stderr.write(`demo: ${(err as Error).message}\n`);
  shutdown(1);
}

process.stdout.write(`
libipc gateways in front of pongd (RUNDIR ${process.env['RUNDIR'] ?? '/tmp/.libipc-run/'}):
  page (wsd):  http://${host}:${ports.ws}/
  WebSocket:   ws://${host}:${ports.ws}/pong
  TCP (tcpd):  ${host}:${ports.tcp}   send "pong", read "ok", then frames
  TLS (tlsd):  ${host}:${ports.tls}   CA ${certs}/ca.pem
  tcpd status: http://${host}:${ports.admin}/   (/metrics, /readyz, /healthz)
Ctrl-C stops everything.
`);
