// The status page: polls status.json every PERIOD_MS, fills the two tables, and turns
// the change of each counter between two polls into a rate. No framework: the page must
// load from the admin listener alone (its Content-Security-Policy allows only itself).
'use strict';

const PERIOD_MS = 2000;
let previous = null;

function number(n) {
  return Number.isInteger(n) ? n.toLocaleString('en') : n.toFixed(1);
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

/** Per-second change of `field` since the previous poll's row with the same key. */
function rate(row, field, before, seconds) {
  if (!before || seconds <= 0) return '–';
  return number(Math.max(0, (row[field] - before[field]) / seconds));
}

function cell(tr, text, className) {
  const td = document.createElement('td');
  td.textContent = String(text);
  if (className) td.className = className;
  tr.appendChild(td);
}

function fill(tbody, rows, keyOf, cellsOf) {
  const fresh = document.createElement('tbody');
  for (const row of rows) {
    const tr = document.createElement('tr');
    tr.dataset.key = keyOf(row);
    cellsOf(row, tr);
    fresh.appendChild(tr);
  }
  tbody.replaceWith(fresh);
}

function render(status) {
  const seconds = previous ? (status.time - previous.time) / 1000 : 0;
  const beforeListener = new Map((previous?.listeners ?? []).map((l) => [`${l.transport} ${l.listener}`, l]));
  const beforeService = new Map((previous?.services ?? []).map((s) => [s.service, s]));
  document.getElementById('name').textContent = `${status.name} (pid ${status.pid})`;
  const summary = document.getElementById('summary');
  summary.textContent = `${status.ready ? 'ready' : status.draining ? 'draining' : 'not ready'} · up ${status.uptimeSeconds} s · ${status.listeners.length} listeners · ${status.services.length} services`;
  summary.className = status.ready ? 'ready' : 'not-ready';

  fill(document.querySelector('#listeners tbody'), status.listeners, (l) => `${l.transport} ${l.listener}`, (l, tr) => {
    const before = beforeListener.get(`${l.transport} ${l.listener}`);
    tr.className = l.state;
    cell(tr, l.transport);
    cell(tr, l.listener);
    cell(tr, l.state, 'state');
    cell(tr, number(l.open), 'open');
    cell(tr, rate(l, 'connections', before, seconds));
    cell(tr, number(l.connections), 'connections');
    cell(tr, rate(l, 'messagesIn', before, seconds));
    cell(tr, rate(l, 'messagesOut', before, seconds));
    cell(tr, number(l.messagesIn), 'messages-in');
    cell(tr, number(l.messagesOut), 'messages-out');
    cell(tr, bytes(l.bytesIn));
    cell(tr, bytes(l.bytesOut));
    const refusals = Object.entries(l.refusals).map(([code, n]) => `${code.replace(/^IPC_ERR_/, '')} ${n}`);
    cell(tr, refusals.join(', ') || '0', 'refusals');
  });
  fill(document.querySelector('#services tbody'), status.services, (s) => s.service, (s, tr) => {
    const before = beforeService.get(s.service);
    tr.className = s.health === 'down' ? 'down' : s.health === 'up' ? 'up' : '';
    cell(tr, s.service);
    cell(tr, s.health === 'down' ? `down: ${s.reason}` : s.health, 'state');
    cell(tr, number(s.open), 'open');
    cell(tr, rate(s, 'connections', before, seconds));
    cell(tr, number(s.connections), 'connections');
    cell(tr, rate(s, 'messagesIn', before, seconds));
    cell(tr, rate(s, 'messagesOut', before, seconds));
    cell(tr, number(s.messagesIn), 'messages-in');
    cell(tr, number(s.messagesOut), 'messages-out');
    cell(tr, bytes(s.bytesIn));
    cell(tr, bytes(s.bytesOut));
  });
  previous = status;
}

async function poll() {
  try {
    const response = await fetch('status.json', { cache: 'no-store' });
    if (!response.ok) throw new Error(`status.json: HTTP ${response.status}`);
    render(await response.json());
  } catch (err) {
    const summary = document.getElementById('summary');
    summary.textContent = `cannot reach the gateway: ${err.message}`;
    summary.className = 'not-ready';
  } finally {
    setTimeout(poll, PERIOD_MS);
  }
}

document.getElementById('period').textContent = String(PERIOD_MS / 1000);
poll();
