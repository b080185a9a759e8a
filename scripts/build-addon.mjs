#!/usr/bin/env node
// npm's install step for the fdpass addon (native/fdpass.cc, SCM_RIGHTS for ipcd and
// connectIpc). Where there is no C++ toolchain (slim images, CI runners without
// build-essential) the build fails: that must not fail the whole install, since
// everything else works without the addon. It warns, says what needs the addon and how
// to get it, and exits 0. `node-gyp` is the one npm puts on PATH for install scripts.
import { spawnSync } from 'node:child_process';

const result = spawnSync('node-gyp', ['rebuild'], { stdio: 'inherit' });
if (result.status === 0) process.exit(0);
const why = result.error ? result.error.message : `node-gyp exited with ${result.status ?? result.signal}`;
process.stderr.write(
  `\nlibipc-gateways: WARNING: the fdpass addon was not built (${why}).\n` +
    'Everything works without it except descriptor passing: ipcd and connectIpc (IPC_NETWORK)\n' +
    'fail with IPC_ERR_FD_PASSING, and the native data plane of tcp gateways falls back to the JS switch.\n' +
    'To build it, install a C++ toolchain\n' +
    '(Debian: apt-get install g++ make python3) and run `npm rebuild libipc-gateways`\n' +
    '(in this repository: `npm run install`).\n\n',
);
process.exit(0);
