// thingsync's pages: requests to the daemon's API, signed with the site key
// where the daemon requires it (thingsd(8), SECURITY), and server-sent events.
//
// The signature is tsync_site_sign_request()'s: the hex HMAC-SHA-512-256
// (HMAC-SHA-512 cut to 32 bytes, libsodium crypto_auth) with the site key of
//   "thingsync-http-1\n" TO "\n" METHOD "\n" TARGET "\n" TIME "\n" NONCE "\n" BODY_SHA256
// It is computed here in plain JavaScript: WebCrypto exists only in a secure
// context (https or localhost), and a controller off loopback is plain http.
// The key is the dashboard token (thingsctl token; the server lets it read,
// set and pulse, nothing more) or the site key itself. It is kept in this
// tab's sessionStorage (gone when the tab closes) and never leaves the
// browser: only signatures do.
// SPDX-License-Identifier: MIT
'use strict';

const TS = (() => {
  const M64 = (1n << 64n) - 1n;

  // The constants of SHA-2: the fractional bits of the square roots (H) and
  // cube roots (K) of the first primes; SHA-256's are the top halves of
  // SHA-512's.
  function primes(n) {
    const out = [];
    for (let c = 2; out.length < n; c++) if (out.every((p) => c % p)) out.push(c);
    return out;
  }
  function iroot(x, k) {
    // floor(x ** (1/k)) for a BigInt, by Newton's method.
    let r = 1n << BigInt(Math.ceil(x.toString(2).length / Number(k)));
    for (;;) {
      const n = ((k - 1n) * r + x / r ** (k - 1n)) / k;
      if (n >= r) return r;
      r = n;
    }
  }
  const P = primes(80);
  const K512 = P.map((p) => iroot(BigInt(p) << 192n, 3n) & M64);
  const H512 = P.slice(0, 8).map((p) => iroot(BigInt(p) << 128n, 2n) & M64);
  const K256 = K512.slice(0, 64).map((k) => Number(k >> 32n));
  const H256 = H512.map((h) => Number(h >> 32n));

  function pad(bytes, block, lenBytes) {
    const n = bytes.length;
    const total = Math.ceil((n + 1 + lenBytes) / block) * block;
    const out = new Uint8Array(total);
    out.set(bytes);
    out[n] = 0x80;
    let bits = BigInt(n) * 8n;
    for (let i = total - 1; bits > 0n; i--, bits >>= 8n) out[i] = Number(bits & 0xffn);
    return out;
  }

  function sha256(bytes) {
    const m = pad(bytes, 64, 8);
    const h = H256.slice();
    const w = new Array(64);
    const rotr = (x, n) => (x >>> n) | (x << (32 - n));
    for (let o = 0; o < m.length; o += 64) {
      for (let i = 0; i < 16; i++)
        w[i] = (m[o + 4 * i] << 24) | (m[o + 4 * i + 1] << 16) | (m[o + 4 * i + 2] << 8) | m[o + 4 * i + 3];
      for (let i = 16; i < 64; i++) {
        const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
        const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
      }
      let [a, b, c, d, e, f, g, hh] = h;
      for (let i = 0; i < 64; i++) {
        const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i]) | 0;
        const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        hh = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      [a, b, c, d, e, f, g, hh].forEach((x, i) => { h[i] = (h[i] + x) | 0; });
    }
    const out = new Uint8Array(32);
    h.forEach((x, i) => { for (let k = 0; k < 4; k++) out[4 * i + k] = (x >>> (24 - 8 * k)) & 0xff; });
    return out;
  }

  function sha512(bytes) {
    const m = pad(bytes, 128, 16);
    const h = H512.slice();
    const w = new Array(80);
    const rotr = (x, n) => ((x >> n) | (x << (64n - n))) & M64;
    for (let o = 0; o < m.length; o += 128) {
      for (let i = 0; i < 16; i++) {
        let x = 0n;
        for (let k = 0; k < 8; k++) x = (x << 8n) | BigInt(m[o + 8 * i + k]);
        w[i] = x;
      }
      for (let i = 16; i < 80; i++) {
        const s0 = rotr(w[i - 15], 1n) ^ rotr(w[i - 15], 8n) ^ (w[i - 15] >> 7n);
        const s1 = rotr(w[i - 2], 19n) ^ rotr(w[i - 2], 61n) ^ (w[i - 2] >> 6n);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) & M64;
      }
      let [a, b, c, d, e, f, g, hh] = h;
      for (let i = 0; i < 80; i++) {
        const t1 = (hh + (rotr(e, 14n) ^ rotr(e, 18n) ^ rotr(e, 41n)) + ((e & f) ^ (~e & M64 & g)) + K512[i] + w[i]) & M64;
        const t2 = ((rotr(a, 28n) ^ rotr(a, 34n) ^ rotr(a, 39n)) + ((a & b) ^ (a & c) ^ (b & c))) & M64;
        hh = g; g = f; f = e; e = (d + t1) & M64; d = c; c = b; b = a; a = (t1 + t2) & M64;
      }
      [a, b, c, d, e, f, g, hh].forEach((x, i) => { h[i] = (h[i] + x) & M64; });
    }
    const out = new Uint8Array(64);
    h.forEach((x, i) => { for (let k = 0; k < 8; k++) out[8 * i + k] = Number((x >> BigInt(56 - 8 * k)) & 0xffn); });
    return out;
  }

  function hmacSha512(key, msg) {
    if (key.length > 128) key = sha512(key);
    const ipad = new Uint8Array(128 + msg.length), opad = new Uint8Array(128 + 64);
    for (let i = 0; i < 128; i++) {
      ipad[i] = (key[i] || 0) ^ 0x36;
      opad[i] = (key[i] || 0) ^ 0x5c;
    }
    ipad.set(msg, 128);
    opad.set(sha512(ipad), 128);
    return sha512(opad);
  }

  const enc = new TextEncoder();
  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  const unhex = (s) => Uint8Array.from(s.match(/../g) || [], (x) => parseInt(x, 16));

  // The headers that sign METHOD TARGET with BODY (a string) for `to`.
  function signHeaders(key, to, method, target, body, timeS) {
    const nonce = hex(crypto.getRandomValues(new Uint8Array(16)));
    const sha = hex(sha256(enc.encode(body)));
    const text = ['thingsync-http-1', to, method, target, String(timeS), nonce, sha].join('\n');
    const sig = hex(hmacSha512(key, enc.encode(text)).slice(0, 32));
    return {
      'X-Thingsync-To': to, 'X-Thingsync-Time': String(timeS), 'X-Thingsync-Nonce': nonce,
      'X-Thingsync-Body-SHA256': sha, 'X-Thingsync-Signature': sig,
    };
  }

  // --- the key, and asking for it ------------------------------------------------------------
  // The dashboard token (thingsctl token: reads, sets and pulses) or the site key (everything).
  const KEY_HINT = 'Paste the dashboard token (`thingsctl token` prints it) or the site key.';
  const store = 'thingsync.key.' + (typeof location !== 'undefined' ? location.host : '');
  let to = '', skewMs = 0, asking = null;
  const key = () => {
    const k = sessionStorage.getItem(store);
    return k ? unhex(k) : null;
  };

  // The key dialog (#keybox), made the first time it is needed.
  function keyBox() {
    let box = document.getElementById('keybox');
    if (box) return box;
    const { el } = DOM;
    box = el('div', { id: 'keybox', hidden: true },
      el('form', { id: 'keyform', autocomplete: 'off' },
        el('strong', { text: 'Dashboard token or site key' }),
        el('p', { class: 'mute', id: 'keywhy' }),
        el('input', { id: 'keyinput', type: 'password', spellcheck: 'false', placeholder: '64 hexadecimal characters',
                      'aria-label': 'dashboard token or site key' }),
        el('p', { class: 'mute', text: 'Kept in this tab only; the key itself is never sent, only signatures made with it.' }),
        el('button', { type: 'submit', id: 'keyok', text: 'Use this key' })));
    document.body.append(box);
    return box;
  }

  // Shows the key dialog and resolves once a key is given.
  function askKey(why) {
    if (asking) return asking;
    const box = keyBox();
    const input = document.getElementById('keyinput');
    const msg = document.getElementById('keywhy');
    msg.textContent = why;
    box.hidden = false;
    input.value = '';
    input.focus();
    asking = new Promise((resolve) => {
      document.getElementById('keyform').onsubmit = (ev) => {
        ev.preventDefault();
        const k = input.value.replace(/\s+/g, '').toLowerCase();
        if (!/^[0-9a-f]{64}$/.test(k)) {
          msg.textContent = 'A key is 64 hexadecimal characters: the dashboard token (thingsctl token) or the site key.';
          return;
        }
        sessionStorage.setItem(store, k);
        box.hidden = true;
        const forget = document.getElementById('forget'); // the page's "Forget key", if any
        if (forget) forget.hidden = false;
        asking = null;
        resolve();
      };
    });
    return asking;
  }

  function forgetKey() {
    sessionStorage.removeItem(store);
  }

  function headersFor(method, target, body) {
    const h = {};
    const k = key();
    if (method === 'POST') h['Content-Type'] = 'application/json';
    if (k && to) Object.assign(h, signHeaders(k, to, method, target, body, Math.floor((Date.now() + skewMs) / 1000)));
    return h;
  }

  function learnClock(res) {
    const d = Date.parse(res.headers.get('Date') || '');
    if (!isNaN(d) && Math.abs(d - Date.now()) > 5000) skewMs = d - Date.now();
  }

  // One request; JSON in and out. Resolves {status, json}; asks for the key
  // and tries again when the server wants a signature.
  async function request(method, target, bodyObj) {
    const body = bodyObj === undefined ? '' : JSON.stringify(bodyObj);
    for (let tries = 0; ; tries++) {
      const res = await fetch(target, {
        method, headers: headersFor(method, target, body), body: method === 'POST' ? body : undefined,
        credentials: 'omit', cache: 'no-store',
      });
      learnClock(res);
      let json = null;
      try { json = await res.json(); } catch (e) { json = null; }
      if (res.status === 401 && tries < 3) {
        const err = json && json.error;
        if (err === 'stale') continue; // the clock was learnt from this answer
        if (key()) forgetKey();
        await askKey(err === 'bad_signature' ? 'That key does not sign for this site. Paste it again.'
          : 'This API takes signed requests only. ' + KEY_HINT);
        continue;
      }
      return { status: res.status, json };
    }
  }

  // Server-sent events over fetch (EventSource cannot sign). Calls
  // onEvent(name, data) for each event and onState(true|false) as the stream
  // opens and drops; reconnects after a pause. Returns a stop function.
  function stream(target, onEvent, onState) {
    let stopped = false, ctl = null;
    async function once() {
      ctl = new AbortController();
      const res = await fetch(target, { headers: headersFor('GET', target, ''), signal: ctl.signal, cache: 'no-store' });
      learnClock(res);
      if (res.status === 401) {
        if (key()) forgetKey();
        await askKey('This API takes signed requests only. ' + KEY_HINT);
        return;
      }
      if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
      onState(true);
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const chunk = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let name = 'message', data = '';
          for (const line of chunk.split('\n')) {
            if (line.startsWith('event: ')) name = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (data) {
            let j = null;
            try { j = JSON.parse(data); } catch (e) { j = null; }
            if (j) onEvent(name, j);
          }
        }
      }
    }
    (async () => {
      while (!stopped) {
        try { await once(); } catch (e) { /* dropped: try again */ }
        onState(false);
        if (!stopped) await new Promise((r) => setTimeout(r, 1500));
      }
    })();
    return () => { stopped = true; if (ctl) ctl.abort(); };
  }

  return {
    sha256, sha512, hmacSha512, hex, unhex, signHeaders, request, stream, askKey, forgetKey, KEY_HINT,
    setTarget: (name) => { to = name; },
    hasKey: () => key() !== null,
  };
})();

if (typeof module !== 'undefined') module.exports = TS;
