#!/usr/bin/env node
// Measures where tcpd's collected RSS goes after batches of concurrent handshakes (the
// hostile catalogue's "2000 concurrent handshakes"), js vs native data plane.
// Usage: node scripts/rss-probe.mjs <js|native> [rounds=6] [clients=2000] [--malloc]
// Needs `npm run build`. --malloc: after each round, gdb calls malloc_stats() in tcpd
// (glibc arenas, printed on tcpd's stderr) and the totals are summarized.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const plane = process.argv[2] ?? 'native';
const rounds = Number(process.argv[3] ?? 6);
const clients = Number(process.argv[4] ?? 2000);
const withMalloc = process.argv.includes('--malloc');
const dir = mkdtempSync(path.join(os.tmpdir(), 'rss-probe-'));
const children = [];

function spawnCli(name, args, nodeArgs = []) {
  const child = spawn(process.execPath, [...nodeArgs, path.join(root, 'dist/gateways/cli', `${name}.js`), ...args], {
    env: { ...process.env, RUNDIR: dir, LIBIPC_DATA_PLANE: plane },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const lines = [];
  const waiters = [];
  let buf = '';
  child.stdout.setEncoding('utf8').on('data', (s) => {
    buf += s;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const text = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        const l = JSON.parse(text);
        lines.push(l);
        for (const w of [...waiters]) if (w.pred(l)) waiters.splice(waiters.indexOf(w), 1), w.resolve(l);
      } catch {}
    }
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s) => (stderr += s));
  const waitFor = (pred, ms = 20000) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name}: timeout`)), ms);
      waiters.push({ pred, resolve: (l) => (clearTimeout(timer), resolve(l)) });
    });
  return { child, lines, waitFor, stderr: () => stderr, clearStderr: () => (stderr = '') };
}

/** One client: name, ok, one frame echoed, FIN, end. */
function client(port, i) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const payload = Buffer.from(`client ${i}`);
    const f = Buffer.alloc(4 + payload.length);
    f.writeUInt32BE(payload.length, 0);
    payload.copy(f, 4);
    let got = Buffer.alloc(0);
    let stage = 0;
    const timer = setTimeout(() => s.destroy(), 30000);
    s.on('connect', () => s.write('pong'));
    s.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (stage === 0 && got.length >= 2) {
        got = got.subarray(2);
        stage = 1;
        s.write(f);
      }
      if (stage === 1 && got.length >= f.length) {
        stage = 2;
        s.end();
      }
    });
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve(stage === 2);
    });
  });
}

async function batch(port, count) {
  let next = 0;
  let served = 0;
  const all = [];
  // 256 connecting at a time, like the catalogue's limiter (all handshakes overlap).
  let active = 0;
  await new Promise((done) => {
    const pump = () => {
      while (active < 256 && next < count) {
        const i = next++;
        active++;
        const p = client(port, i).then((ok) => {
          if (ok) served++;
          active--;
          if (next < count) pump();
          else if (active === 0) done();
        });
        all.push(p);
      }
    };
    pump();
  });
  await Promise.all(all);
  return served;
}

function smaps(pid) {
  const text = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  const out = { heapBrk: 0, arenaHeaps: 0, anonOther: 0, file: 0 };
  let cur = null;
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (m) {
      const start = BigInt('0x' + m[1]);
      const end = BigInt('0x' + m[2]);
      const name = m[5];
      const size = end - start;
      // glibc non-main arena heaps: 64 MiB-aligned mappings of at most 64 MiB.
      const arena = !name && start % (64n << 20n) === 0n && size <= 64n << 20n;
      cur = name === '[heap]' ? 'heapBrk' : name && !name.startsWith('[') ? 'file' : arena ? 'arenaHeaps' : 'anonOther';
      continue;
    }
    const r = /^Rss:\s+(\d+) kB/.exec(line);
    if (r && cur) out[cur] += Number(r[1]) * 1024;
  }
  return out;
}

async function mallocStats(d) {
  d.clearStderr();
  // gdb exits 1 ("Couldn't write extended state status") after a successful call.
  spawnSync('gdb', ['-p', String(d.child.pid), '-batch', '-ex', 'call (void)malloc_stats()'], { stdio: 'ignore' });
  await new Promise((res) => setTimeout(res, 500)); // its stderr, read by this event loop
  const text = d.stderr();
  const arenas = [...text.matchAll(/Arena (\d+):\nsystem bytes\s+=\s+(\d+)\nin use bytes\s+=\s+(\d+)/g)].map((m) => ({ arena: +m[1], system: +m[2], inUse: +m[3] }));
  const mmap = /max mmap regions = (\d+)[\s\S]*?max mmap bytes\s+=\s+(\d+)/.exec(text);
  return { arenas, total: /Total \(incl\. mmap\):\nsystem bytes\s+=\s+(\d+)\nin use bytes\s+=\s+(\d+)/.exec(text)?.slice(1).map(Number) };
}

const mb = (n) => (n / 1048576).toFixed(1);

async function main() {
  const pongd = spawnCli('pongd', ['--service', 'pong']);
  await pongd.waitFor((l) => l.msg === 'listening' || typeof l.path === 'string');
  const tcpd = spawnCli('tcpd', ['--listen', '127.0.0.1:0', '--no-outbound', '--handshake-timeout', '2000', '--allow', '*', '--log-level', 'info'], ['--expose-gc', ...(process.env.PROBE_NODE_ARGS ?? '').split(' ').filter(Boolean)]);
  const line = await tcpd.waitFor((l) => typeof l.port === 'number');
  const port = line.port;
  const usage = (l) => l.msg === 'native data plane unavailable: the JS switch carries every connection';
  const measure = async (label) => {
    const before = tcpd.lines.length;
    tcpd.child.kill('SIGUSR2');
    const m = await tcpd.waitFor((l) => l.msg === 'memory' && tcpd.lines.indexOf(l) >= before);
    // VmRSS after the logged value, every 100 ms for 2 s: does it still fall (memory freed
    // by background threads after the GC: V8's unmapper, the data plane's quiet trim)?
    const trail = [];
    for (let i = 0; i < 20; i++) {
      const st = readFileSync(`/proc/${tcpd.child.pid}/status`, 'utf8');
      trail.push(Number(/^VmRSS:\s+(\d+)/m.exec(st)[1]) * 1024);
      await new Promise((res) => setTimeout(res, 100));
    }
    console.log(`   VmRSS after the line (MiB, every 100 ms): ${trail.filter((_, i) => i % 2 === 0).map(mb).join(' ')}`);
    const s = smaps(tcpd.child.pid);
    let extra = '';
    if (withMalloc) {
      const st = await mallocStats(tcpd);
      extra = ` malloc: ${st.arenas.map((a) => `a${a.arena} sys ${mb(a.system)} used ${mb(a.inUse)}`).join(', ')} total sys ${mb(st.total?.[0] ?? 0)} used ${mb(st.total?.[1] ?? 0)}`;
    }
    console.log(`${plane} ${label}: rss ${mb(m.rss)} heapUsed ${mb(m.heapUsed)} heapTotal ${mb(m.heapTotal)} ext ${mb(m.external)} | smaps brk ${mb(s.heapBrk)} arenaHeaps ${mb(s.arenaHeaps)} anonOther ${mb(s.anonOther)} file ${mb(s.file)}${extra}`);
    return m.rss;
  };
  if (tcpd.lines.some(usage)) console.log('WARNING: native unavailable');
  await batch(port, 1);
  const base = await measure('start');
  for (let r = 1; r <= rounds; r++) {
    const served = await batch(port, clients);
    await new Promise((res) => setTimeout(res, 1500)); // let the thread's quiet trim run
    const rss = await measure(`round ${r} (${served}/${clients} served)`);
    console.log(`   delta vs start ${mb(rss - base)} MiB`);
  }
}

main()
  .catch((e) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(() => {
    for (const c of children) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
