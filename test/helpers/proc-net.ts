/**
 * The kernel's view of loopback TCP sockets, for tests that must tell one socket from
 * another across a daemon's reload: /proc/net/tcp (inodes, states, ports) and `ss -i`
 * (bytes each socket received, to see every connection of a load still progressing).
 * Neither is a snapshot: the kernel walks its socket table in chunks, so while other
 * tests open and close many connections a row can be missed (never invented). Callers
 * read again rather than take a missing row for a closed socket.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** 127.0.0.1:port as /proc/net/tcp writes it (little-endian address, big-endian port). */
function loopbackHex(port: number): string {
  return `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** The rows of /proc/net/tcp as fields: [1] local, [2] remote, [3] state, [9] inode. */
function tcpRows(): string[][] {
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .map((row) => row.trim().split(/\s+/))
    .filter((f) => f.length > 9);
}

/**
 * The inode of the socket listening on 127.0.0.1:port (from /proc/net/tcp), read up to
 * `tries` times: a listening socket missing from one read may be a row missed.
 */
export function listeningInode(port: number, tries = 5): string | undefined {
  const local = loopbackHex(port);
  for (let i = 0; i < tries; i++) {
    const inode = tcpRows().find((f) => f[1] === local && f[3] === '0A')?.[9];
    if (inode !== undefined) return inode;
  }
  return undefined;
}

/**
 * Bytes received so far by each client socket connected to 127.0.0.1:port, keyed by their address as
 * the gateway logs peers (`127.0.0.1:PORT`) (from `ss -tni`, iproute2: /proc has no byte counters).
 */
export function bytesReceivedBy(port: number): Map<string, number> {
  const out = execFileSync('ss', ['-tniH', 'state', 'established', 'dst', `127.0.0.1:${port}`], { encoding: 'utf8', timeout: 5000 });
  const received = new Map<string, number>();
  let peer: string | null = null;
  for (const line of out.split('\n')) {
    // A socket is a line "Recv-Q Send-Q local remote", then an indented line of its counters.
    if (/^\S/.test(line)) peer = line.trim().split(/\s+/)[2] ?? null;
    else if (peer !== null) {
      const m = /\bbytes_received:(\d+)/.exec(line);
      received.set(peer, m ? Number(m[1]) : 0);
      peer = null;
    }
  }
  return received;
}
