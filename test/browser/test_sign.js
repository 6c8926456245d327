// The pages' signing code (daemons/common/web/sign.js) against node's own
// crypto and the published test vectors: SHA-256, SHA-512 and HMAC-SHA-512
// over lengths around every block boundary, and a request signature as
// tsync_site_sign_request() makes it (the text of thingsd(8), SECURITY).
// No browser needed; the browser tests prove a daemon accepts the result.
// SPDX-License-Identifier: MIT
'use strict';
const crypto = require('crypto');
const path = require('path');

if (!globalThis.crypto) globalThis.crypto = crypto.webcrypto; // node 18
const TS = require(path.resolve(__dirname, '../../daemons/common/web/sign.js'));
const enc = new TextEncoder();
let n = 0;
function eq(what, got, want) {
  n++;
  if (got !== want) {
    console.error(`FAIL: ${what}: ${got} != ${want}`);
    process.exit(1);
  }
}

eq('sha256("abc")', TS.hex(TS.sha256(enc.encode('abc'))),
  'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
eq('sha512("abc")', TS.hex(TS.sha512(enc.encode('abc'))),
  'ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f');
for (let len = 0; len <= 300; len++) {
  const data = crypto.randomBytes(len);
  const key = crypto.randomBytes(len % 3 === 0 ? 32 : len % 200);
  eq(`sha256 of ${len} bytes`, TS.hex(TS.sha256(data)), crypto.createHash('sha256').update(data).digest('hex'));
  eq(`sha512 of ${len} bytes`, TS.hex(TS.sha512(data)), crypto.createHash('sha512').update(data).digest('hex'));
  eq(`hmac-sha512 of ${len} bytes`, TS.hex(TS.hmacSha512(key, data)),
    crypto.createHmac('sha512', key).update(data).digest('hex'));
}

// A request's headers: the signature is HMAC-SHA-512 cut to 32 bytes over the
// documented text, with the body's SHA-256.
const key = crypto.randomBytes(32);
const h = TS.signHeaders(key, 'PI-Light', 'POST', '/things/lamp?wait_ms=1', '{"value":true}', 1700000000);
const sha = crypto.createHash('sha256').update('{"value":true}').digest('hex');
eq('body hash', h['X-Thingsync-Body-SHA256'], sha);
eq('nonce', /^[0-9a-f]{32}$/.test(h['X-Thingsync-Nonce']), true);
const text = ['thingsync-http-1', 'PI-Light', 'POST', '/things/lamp?wait_ms=1', '1700000000', h['X-Thingsync-Nonce'], sha].join('\n');
eq('signature', h['X-Thingsync-Signature'], crypto.createHmac('sha512', key).update(text).digest('hex').slice(0, 64));
eq('to', h['X-Thingsync-To'], 'PI-Light');
console.log(`ok - ${n} checks`);
