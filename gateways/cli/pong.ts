#!/usr/bin/env node
/**
 * pong: sends one message to a service, prints the echo, exits 0. With IPC_NETWORK set
 * it reaches the service through ipcd, as libipc clients do.
 *   pong [--service pong] [message]      (default message: "bounce me", as the original)
 */
import { Command } from 'commander';
import { connectIpc } from '../../src/client.js';
import { encodeFrame, FrameDecoder } from '../../src/frame.js';
import { resolveRundir } from '../../src/rundir.js';

const program = new Command('pong')
  .description('send one message to a libipc service and print the reply')
  .argument('[message]', 'message to send', 'bounce me')
  .option('--service <name>', 'service name', 'pong')
  .option('--rundir <dir>', 'run directory (default $RUNDIR or /tmp/.libipc-run/)')
  .option('--timeout <ms>', 'time to wait for the reply', '5000')
  .parse();
const opts = program.opts<{ service: string; rundir?: string; timeout: string }>();
const message = program.processedArgs[0] as string;

function die(text: string): never {
  process.stderr.write(`pong: ${text}\n`);
  process.exit(1);
}

let socket;
try {
  socket = await connectIpc(opts.service, { rundir: opts.rundir ?? resolveRundir() });
} catch (err) {
  die((err as Error).message);
}
const decoder = new FrameDecoder();
const timer = setTimeout(() => die(`no reply from '${opts.service}' within ${opts.timeout} ms`), Number(opts.timeout));
socket.on('error', (err) => die(`connection to '${opts.service}' failed: ${err.message}`));
socket.on('data', (chunk: Buffer) => {
  let replies: Buffer[];
  try {
    replies = decoder.push(chunk);
  } catch (err) {
    die((err as Error).message);
  }
  const reply = replies[0];
  if (reply === undefined) return;
  clearTimeout(timer);
  process.stdout.write(`${reply.toString()}\n`);
  socket.destroy();
});
socket.on('end', () => die(`'${opts.service}' closed the connection without a reply`));
socket.write(encodeFrame(message));
