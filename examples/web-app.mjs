// A Node app that serves its own page and libipc services on one port, plus a TCP
// gateway: the gateways as a library (README, "Gateways as a library").
//   RUNDIR=/tmp/.libipc-run/ node examples/web-app.mjs      (pongd serving `pong`)
import http from 'node:http';
import { createTcpGateway, createWsGateway } from 'libipc-gateways';

const port = Number(process.env.PORT ?? 8080);

// The application owns the HTTP server and its pages...
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' }).end('hello from the app\n');
});
// ...and the gateway takes its WebSocket upgrades: ws://host:PORT/pong reaches $RUNDIR/pong,
// with the gateway's limits, origin check and upgrade deadline.
const ws = createWsGateway({ server, allow: ['pong'], handshakeTimeout: 5000 });

// A TCP gateway beside it (libipc's name handshake), options named after tcpd's flags.
const tcp = createTcpGateway({ listen: ['127.0.0.1:0'], allow: ['pong'], maxConnections: 1000 });
const [tcpAddress] = await tcp.listen();

server.listen(port, '127.0.0.1', () => {
  console.log(JSON.stringify({ http: server.address().port, tcp: tcpAddress.port }));
});

process.once('SIGTERM', async () => {
  server.close();
  await Promise.all([ws.close(), tcp.close()]);
  process.exit(0);
});
