// ports.js N: prints N ports free for TCP and UDP on loopback, from the
// allocator of the C integration tests (test/integration/thingsd/tdh.c,
// tdh_tcp_port()): a block below the kernel's ephemeral range handed out in
// turn through /tmp/thingsync-tdh-ports-UID. Run under flock(1) on that file
// (site.js does), so that no other test gets the same ports.
// SPDX-License-Identifier: MIT
'use strict';
const fs = require('fs');
const net = require('net');
const dgram = require('dgram');

const LOW = 15000, SPAN = 15000;
const file = `/tmp/thingsync-tdh-ports-${process.getuid()}`;

function tcpFree(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host: '127.0.0.1', exclusive: true }, () => s.close(() => resolve(true)));
  });
}
function udpFree(port) {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.once('error', () => { s.close(); resolve(false); });
    s.bind({ port, address: '127.0.0.1', exclusive: true }, () => s.close(() => resolve(true)));
  });
}

(async () => {
  const n = Number(process.argv[2] || 1);
  let next = 0;
  try { next = parseInt(fs.readFileSync(file, 'utf8'), 10) || 0; } catch (e) { next = 0; }
  if (next < LOW || next >= LOW + SPAN) next = LOW + (process.pid % SPAN);
  const out = [];
  for (let tries = 0; out.length < n && tries < SPAN; tries++) {
    if ((await tcpFree(next)) && (await udpFree(next))) out.push(next);
    next = next + 1 >= LOW + SPAN ? LOW : next + 1;
  }
  fs.writeFileSync(file, `${next}\n`, { mode: 0o600 });
  if (out.length < n) process.exit(1);
  console.log(out.join(' '));
})();
