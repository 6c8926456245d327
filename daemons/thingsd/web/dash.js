// thingsd's dashboard: the controllers of the site as this one sees them, and
// the things it owns or uses, live (GET /events), with controls that go
// through this controller's API (so a click on a copy reaches its owner over
// the mesh). Every request goes through TS (sign.js): signed when the API
// wants it. The DOM is built with textContent only: nothing a peer sends is
// ever parsed as HTML.
// SPDX-License-Identifier: MIT
'use strict';

(() => {
  const HISTORY_MS = 6 * 3600 * 1000; // the chart's window
  const MAX_POINTS = 2000;            // per thing, in memory
  const STATUS_EVERY_MS = 3000;

  const WORDS = {
    err_ip_in_refused: 'refused by the owner',
    err_ip_in_val: 'not a valid value',
    err_write_crash: 'the owner took it, but its output failed: it may not have happened',
    err_ip_in_io: 'no such thing here',
    err_ip_in_ths_i_use: 'this controller does not use it',
    timeout: 'the owner did not answer in time (is it down?)',
    peer_restarted: 'the owner restarted before it answered; try again',
    canceled: 'canceled; try again',
    busy: 'the controller is busy; try again',
    reloading: 'the controller is reloading site.conf; try again',
    gone: 'the request was dropped; try again',
    cross_origin: 'refused: not from this controller\'s own page',
    unauthorized: 'refused: the request is not signed with the site key',
    bad_signature: 'refused: the site key is wrong',
  };

  const { $, el } = DOM;
  const svgEl = DOM.svg;

  const st = {
    me: '', boot: 0, history: false,
    things: new Map(),  // name -> thing (as GET /things gives it)
    cards: new Map(),   // name -> {card, ...elements}
    series: new Map(),  // name -> [[time_ms, number]]
    peers: new Map(),   // name -> peer (GET /peers)
    busy: new Set(),    // things with a request of ours in flight
  };

  // --- words ---------------------------------------------------------------------------------
  function fmtValue(t, v) {
    if (v === null || v === undefined) return '—';
    if (t.type === 'bool') return v ? 'on' : 'off';
    if (t.type === 'float') return (Math.round(v * 100) / 100).toString();
    return String(v);
  }
  function fmtTime(ms) {
    if (!ms) return '';
    const d = new Date(ms), now = new Date();
    const hm = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
    return d.toDateString() === now.toDateString() ? hm : d.toLocaleDateString() + ' ' + hm;
  }
  function errorWords(ans) {
    const j = ans.json || {};
    const base = WORDS[j.error] || (j.error ? j.error.replace(/_/g, ' ') : 'HTTP ' + ans.status);
    return j.message && !WORDS[j.error] ? base + ': ' + j.message : base;
  }

  // --- controllers ---------------------------------------------------------------------------
  // The reasons of tsync_reject_name(), in words.
  const REJECTED = {
    err_ip_in_json_req: 'not JSON', err_ip_in_req: 'unknown request', err_ip_in_io: 'no such thing',
    err_ip_in_ths_i_use: 'not a thing it shares', err_ip_in_val: 'bad value', err_ip_in_refused: 'not allowed',
    err_ip_in_cmd: 'unknown command', err_ip_in_auth: 'forged or altered', err_ip_in_replay: 'replayed',
    err_ip_in_stale_boot: 'for an old boot', err_ip_in_size: 'too large', err_ip_in_sender: 'unknown sender',
  };
  function rejectedText(rej) {
    const parts = Object.entries(rej || {}).map(([k, n]) => (REJECTED[k] || k.replace(/_/g, ' ')) + ': ' + n);
    return parts.length ? parts.join(', ') : 'none';
  }

  async function refreshStatus() {
    const [s, p] = await Promise.all([TS.request('GET', '/status'), TS.request('GET', '/peers')]);
    if (s.status !== 200 || p.status !== 200) {
      $('#pageerr').textContent = 'cannot read this controller\'s status: ' + errorWords(s.status !== 200 ? s : p);
      return;
    }
    $('#pageerr').textContent = '';
    const me = s.json;
    if (st.boot && me.boot !== st.boot) await loadThings();
    st.boot = me.boot;
    st.history = !!(me.history && me.history.enabled);
    document.title = me.controller + ' · ' + me.site + ' · thingsync';
    $('#title').textContent = me.site;
    $('#sub').textContent = me.controller + ' · thingsd ' + me.version + ' · up ' + dur(me.uptime_s);
    const tb = $('#peers tbody');
    const rows = [peerRow({
      name: me.controller, self: true, up: true, boot: me.boot, pending: me.unsettled,
      rejected: p.json.rejected_unknown,
    })];
    st.peers.clear();
    for (const peer of p.json.peers) {
      st.peers.set(peer.name, peer);
      rows.push(peerRow(peer));
    }
    tb.replaceChildren(...rows);
    for (const name of st.cards.keys()) drawOwnerState(name);
  }

  function dur(s) {
    if (s < 120) return s + ' s';
    if (s < 7200) return Math.round(s / 60) + ' min';
    if (s < 172800) return Math.round(s / 3600) + ' h';
    return Math.round(s / 86400) + ' d';
  }

  function peerRow(p) {
    const heard = p.self ? 'this controller' : p.last_heard_ms !== undefined && p.last_heard_ms >= 0 && p.boot
      ? 'heard ' + dur(Math.round(p.last_heard_ms / 1000)) + ' ago' : 'never heard';
    return el('tr', { 'data-peer': p.name, 'data-up': p.up ? '1' : '0' },
      el('td', {}, el('strong', { text: p.name }), el('div', { class: 'mute', text: heard }),
        el('div', { class: 'mute', text: p.boot ? 'boot ' + p.boot : 'boot unknown' })),
      el('td', {}, el('span', { class: 'badge ' + (p.up ? 'up' : 'down'), text: p.up ? 'up' : 'down' })),
      el('td', { text: p.self ? '—' : p.srtt_ms ? p.srtt_ms.toFixed(1) + ' ms' : '—' }),
      el('td', { text: String(p.pending || 0) }),
      el('td', { text: rejectedText(p.rejected) }));
  }

  // --- things --------------------------------------------------------------------------------
  function groupOf(t) {
    return t.group || t.owner;
  }

  async function loadThings() {
    const a = await TS.request('GET', '/things');
    if (a.status !== 200) {
      $('#pageerr').textContent = 'cannot read the things: ' + errorWords(a);
      return;
    }
    st.me = a.json.controller;
    st.things.clear();
    st.cards.clear();
    for (const t of a.json.things) if (t) st.things.set(t.name, t);
    const groups = new Map();
    for (const t of st.things.values()) {
      const g = groupOf(t);
      if (!groups.has(g)) groups.set(g, []);
      groups.get(g).push(t);
    }
    const root = $('#things');
    const out = [];
    for (const g of [...groups.keys()].sort()) {
      const ts = groups.get(g).sort((x, y) => x.name.localeCompare(y.name));
      const byOwner = !ts[0].group;
      const title = byOwner ? (g === st.me ? g + ' (this controller)' : g) : g;
      out.push(el('h2', { 'data-group': g, text: title + (byOwner ? ' · owner' : '') }));
      out.push(el('div', { class: 'grid' }, ...ts.map(card)));
    }
    if (!out.length) out.push(el('p', { class: 'empty', text: 'This controller owns and uses no things.' }));
    root.replaceChildren(...out);
    for (const t of st.things.values()) {
      draw(t.name);
      if (isNumeric(t)) loadSeries(t);
    }
  }

  const isNumeric = (t) => t.type === 'int' || t.type === 'float';
  const writable = (t) => t.owned || t.settable;

  function card(t) {
    const c = { value: el('div', { class: 'val' }), badge: el('span', { class: 'badge' }),
                meta: el('div', { class: 'mute' }), err: el('div', { class: 'err', role: 'alert' }),
                owner: el('div', { class: 'mute warn' }) };
    const ctl = controls(t, c);
    c.card = el('div', { class: 'card', 'data-thing': t.name, 'data-type': t.type },
      el('h3', {}, el('span', { text: t.name }), c.badge),
      c.value, c.meta, ctl, c.owner, c.err);
    if (isNumeric(t)) {
      c.chart = svgEl('svg', { class: 'chart', viewBox: '0 0 300 56', preserveAspectRatio: 'none', role: 'img' });
      c.card.append(c.chart);
    }
    st.cards.set(t.name, c);
    return c.card;
  }

  function controls(t, c) {
    const row = el('div', { class: 'row' });
    if (writable(t)) {
      if (t.type === 'bool') {
        c.sw = el('button', { class: 'switch', role: 'switch', 'aria-label': 'switch ' + t.name,
          onclick: () => set(t.name, !(st.things.get(t.name).value === true)) });
        row.append(c.sw);
      } else if (isNumeric(t)) {
        const step = t.type === 'int' ? '1' : 'any';
        c.num = el('input', { type: 'number', step, min: t.min, max: t.max, 'aria-label': 'value of ' + t.name,
          onchange: () => setNumber(t, c.num.value) });
        if (t.min !== undefined && t.max !== undefined) {
          c.range = el('input', { type: 'range', min: t.min, max: t.max,
            step: t.type === 'int' ? '1' : String((t.max - t.min) / 200), 'aria-label': 'slider of ' + t.name,
            oninput: () => { c.num.value = c.range.value; },
            onchange: () => setNumber(t, c.range.value) });
          row.append(c.range);
        }
        row.append(c.num);
      } else if (t.allowed) {
        c.sel = el('select', { 'aria-label': 'choice of ' + t.name, onchange: () => set(t.name, c.sel.value) },
          ...t.allowed.map((a) => el('option', { value: a, text: a })));
        row.append(c.sel);
      } else if (t.type === 'string') {
        c.txt = el('input', { type: 'text', 'aria-label': 'text of ' + t.name });
        row.append(c.txt, el('button', { text: 'Set', onclick: () => set(t.name, c.txt.value) }));
      }
    }
    if (t.pulse) {
      c.pulse = el('button', { class: 'pulse', text: 'Pulse ' + (t.pulse_ms / 1000) + ' s', onclick: () => pulse(t.name) });
      row.append(c.pulse);
    }
    return row;
  }

  function setNumber(t, text) {
    const v = Number(text);
    const c = st.cards.get(t.name);
    if (text === '' || !isFinite(v) || (t.type === 'int' && !Number.isInteger(v))) {
      c.err.textContent = 'not ' + (t.type === 'int' ? 'a whole number' : 'a number');
      return;
    }
    if ((t.min !== undefined && v < t.min) || (t.max !== undefined && v > t.max)) {
      c.err.textContent = 'out of range: ' + t.min + ' to ' + t.max;
      return;
    }
    set(t.name, v);
  }

  function draw(name) {
    const t = st.things.get(name), c = st.cards.get(name);
    if (!t || !c) return;
    c.card.dataset.value = JSON.stringify(t.value === undefined ? null : t.value);
    c.value.textContent = fmtValue(t, t.value);
    const pending = st.busy.has(name) || t.settled === false;
    c.card.dataset.settled = pending ? '0' : '1';
    c.badge.className = 'badge ' + (t.pulsing ? 'warn' : pending ? 'pend' : 'ok');
    c.badge.textContent = t.pulsing ? 'pulsing' : pending
      ? (t.owned ? 'pending: ' + (t.users_pending || 0) + ' user(s) to confirm' : 'pending at ' + t.owner)
      : 'settled';
    const who = t.changed_by ? (t.changed_by === st.me ? 'here' : t.changed_by) : '';
    c.meta.textContent = (t.owned ? 'owned here' : 'copy of ' + t.owner + '\'s') +
      (t.changed_ms ? ' · changed ' + fmtTime(t.changed_ms) + (who ? ' by ' + who : '') : '') +
      (t.driver_ok === false ? ' · driver failing: ' + (t.driver_error || '') : '');
    if (c.sw) c.sw.setAttribute('aria-checked', t.value === true ? 'true' : 'false');
    if (c.num && document.activeElement !== c.num && typeof t.value === 'number') c.num.value = t.value;
    if (c.range && document.activeElement !== c.range && typeof t.value === 'number') c.range.value = t.value;
    if (c.sel && document.activeElement !== c.sel && t.value !== null) c.sel.value = t.value;
    drawOwnerState(name);
    if (c.chart) drawChart(name);
  }

  // A copy whose owner is down says so on its control: a change waits.
  function drawOwnerState(name) {
    const t = st.things.get(name), c = st.cards.get(name);
    if (!t || !c || t.owned) return;
    const p = st.peers.get(t.owner);
    const down = p && !p.up;
    c.card.dataset.ownerUp = down ? '0' : '1';
    c.owner.textContent = down ? t.owner + ' is down: the value shown is the last known; a change waits for it' : '';
  }

  // --- acting ------------------------------------------------------------------------------------
  async function act(name, path, body, doneWord) {
    const c = st.cards.get(name);
    c.err.textContent = '';
    st.busy.add(name);
    draw(name);
    let ans;
    try {
      ans = await TS.request('POST', path, body);
    } catch (e) {
      ans = { status: 0, json: { error: 'network', message: String(e.message || e) } };
    }
    st.busy.delete(name);
    const j = ans.json || {};
    // The thing's state comes with the answer (200, 202, a refusal): pending or not.
    if (j.name === name) {
      const { error, message, ...state } = j;
      Object.assign(st.things.get(name), state);
    }
    if (ans.status === 202) c.err.textContent = 'asked; ' + st.things.get(name).owner + ' has not confirmed yet (is it down?)';
    else if (ans.status !== 200) c.err.textContent = errorWords(ans);
    else if (doneWord) c.err.textContent = '';
    c.card.dataset.lastResult = String(ans.status);
    draw(name);
    return ans;
  }

  const set = (name, value) => act(name, '/things/' + encodeURIComponent(name), { value });
  const pulse = (name) => act(name, '/things/' + encodeURIComponent(name) + '/pulse', {}, 'pulsed');

  // --- live ----------------------------------------------------------------------------------------
  const refetch = new Map();
  function refetchSoon(name) {
    // The settled state comes with the acknowledgements, a moment after the change.
    if (refetch.has(name)) return;
    refetch.set(name, setTimeout(async () => {
      refetch.delete(name);
      const a = await TS.request('GET', '/things/' + encodeURIComponent(name));
      if (a.status === 200 && st.things.has(name)) {
        Object.assign(st.things.get(name), a.json);
        draw(name);
      }
    }, 400));
  }

  function onEvent(kind, j) {
    const t = j.thing && st.things.get(j.thing);
    switch (kind) {
      case 'hello':
        if (st.boot && j.boot !== st.boot) loadThings();
        break;
      case 'changed':
        if (!t) return;
        t.value = j.value;
        t.changed_ms = j.time_ms || Date.now();
        t.changed_by = j.from;
        if (t.owned) t.settled = false;
        addPoint(j.thing, t.changed_ms, j.value);
        draw(j.thing);
        refetchSoon(j.thing);
        break;
      case 'pulse':
        if (!t) return;
        t.pulsing = { value: j.value, remaining_ms: j.ms };
        draw(j.thing);
        setTimeout(() => { if (t.pulsing) { t.pulsing = null; draw(j.thing); } }, j.ms + 500);
        break;
      case 'pulse_end':
        if (!t) return;
        t.pulsing = null;
        draw(j.thing);
        break;
      case 'peer_up':
      case 'peer_down':
        refreshStatus();
        break;
      case 'reload':
        loadThings();
        break;
    }
  }

  function onLive(up) {
    $('#live').classList.toggle('live', up);
    $('#livetext').textContent = up ? 'live' : 'reconnecting';
    document.body.dataset.live = up ? '1' : '0';
    if (up) { refreshStatus(); loadThings(); }
  }

  // --- charts ----------------------------------------------------------------------------------------
  function addPoint(name, ms, v) {
    if (typeof v !== 'number') return;
    const s = st.series.get(name) || [];
    s.push([ms, v]);
    if (s.length > MAX_POINTS) s.splice(0, s.length - MAX_POINTS);
    st.series.set(name, s);
  }

  async function loadSeries(t) {
    const now = Date.now();
    const pts = [];
    if (t.owned && st.history) {
      const q = '/history?thing=' + encodeURIComponent(t.name) + '&from=' + (now - HISTORY_MS) * 1000 + '&limit=' + MAX_POINTS;
      const a = await TS.request('GET', q);
      if (a.status === 200) for (const e of a.json.entries) pts.push([e.time_us / 1000, e.value]);
    }
    const seen = st.series.get(t.name) || [];
    const merged = pts.concat(seen.filter((p) => !pts.length || p[0] > pts[pts.length - 1][0]));
    if (!merged.length && typeof t.value === 'number') merged.push([now, t.value]);
    st.series.set(t.name, merged.slice(-MAX_POINTS));
    const c = st.cards.get(t.name);
    if (c) c.card.dataset.history = pts.length ? 'history' : 'seen';
    drawChart(t.name);
  }

  function drawChart(name) {
    const c = st.cards.get(name), t = st.things.get(name);
    const s = (st.series.get(name) || []).slice();
    if (!c || !c.chart) return;
    const now = Date.now();
    if (s.length && typeof t.value === 'number') s.push([now, s[s.length - 1][1]]);
    c.chart.replaceChildren();
    if (s.length < 2) {
      const tx = svgEl('text', { x: 4, y: 30 });
      tx.textContent = 'no changes seen yet';
      c.chart.append(tx);
      return;
    }
    const t0 = Math.max(s[0][0], now - HISTORY_MS), t1 = now;
    let lo = Math.min(...s.map((p) => p[1])), hi = Math.max(...s.map((p) => p[1]));
    if (hi === lo) { hi += 1; lo -= 1; }
    const X = (ms) => ((Math.max(ms, t0) - t0) / Math.max(1, t1 - t0)) * 300;
    const Y = (v) => 50 - ((v - lo) / (hi - lo)) * 44;
    let d = 'M' + X(s[0][0]).toFixed(1) + ' ' + Y(s[0][1]).toFixed(1);
    for (let i = 1; i < s.length; i++) d += ' H' + X(s[i][0]).toFixed(1) + ' V' + Y(s[i][1]).toFixed(1);
    c.chart.append(svgEl('path', { d }));
    const hiT = svgEl('text', { x: 2, y: 9 });
    hiT.textContent = fmtValue(t, hi);
    const loT = svgEl('text', { x: 2, y: 55 });
    loT.textContent = fmtValue(t, lo);
    c.chart.append(hiT, loT);
    c.chart.setAttribute('aria-label', name + ' since ' + fmtTime(t0));
  }

  // --- start -----------------------------------------------------------------------------------------
  async function start() {
    const idx = await TS.request('GET', '/');
    if (idx.status !== 200 || !idx.json) {
      $('#pageerr').textContent = 'this controller does not answer: ' + errorWords(idx);
      setTimeout(start, 3000);
      return;
    }
    TS.setTarget(idx.json.controller);
    if (idx.json.signature_required && !TS.hasKey())
      await TS.askKey('This controller takes signed requests only. ' + TS.KEY_HINT);
    $('#forget').hidden = !TS.hasKey();
    $('#forget').onclick = () => { TS.forgetKey(); location.reload(); };
    await refreshStatus();
    await loadThings();
    TS.stream('/events', onEvent, onLive);
    setInterval(refreshStatus, STATUS_EVERY_MS);
    setInterval(() => { for (const n of st.cards.keys()) drawChart(n); }, 30000);
    document.body.dataset.ready = '1';
  }

  start();
})();
