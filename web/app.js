// The wsd page: connects to ws(s)://<this host>/<service>, sends each typed message as
// one WebSocket message (one libipc message) and lists the replies.
const $ = (id) => document.getElementById(id);
const state = $('state');
const replies = $('replies');
const decoder = new TextDecoder();
let socket = null;

function setState(text, connected) {
  state.textContent = text;
  $('connect').disabled = connected;
  $('disconnect').disabled = !connected;
  $('message').disabled = !connected;
  $('send').disabled = !connected;
  $('service').disabled = connected;
}

function addReply(text, isError = false) {
  const item = document.createElement('li');
  item.textContent = text;
  if (isError) item.className = 'error';
  replies.append(item);
}

$('connect-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const service = $('service').value.trim();
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  setState('connecting', true);
  socket = new WebSocket(`${scheme}://${location.host}/${encodeURIComponent(service)}`);
  socket.binaryType = 'arraybuffer';
  socket.addEventListener('open', () => {
    setState(`connected to ${service}`, true);
    $('message').focus();
  });
  socket.addEventListener('message', (msg) => {
    addReply(typeof msg.data === 'string' ? msg.data : decoder.decode(msg.data));
  });
  socket.addEventListener('close', (ev) => {
    const why = ev.code === 1006 ? 'connection failed or refused' : `code ${ev.code}${ev.reason ? `: ${ev.reason}` : ''}`;
    setState(`disconnected (${why})`, false);
    socket = null;
  });
});

$('disconnect').addEventListener('click', () => socket?.close(1000, 'closed by the page'));

$('send-form').addEventListener('submit', (event) => {
  event.preventDefault();
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  socket.send(new TextEncoder().encode($('message').value));
});
