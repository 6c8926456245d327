// thingsync-collectord's pages: sources (last seen, silent or not, gaps),
// active and cleared alarms, and the measurements of a thing over a range as
// a chart, from the read API (/v1/...), refreshed every few seconds. Requests
// go through TS (sign.js), signed where the collector wants it (off
// loopback). The DOM is built with textContent only.
// SPDX-License-Identifier: MIT
'use strict';

(() => {
  const EVERY_MS = 3000;
  const { $, el } = DOM;
  const svgEl = DOM.svg;
  const fmtTime = (us) => {
    if (!us) return '—';
    const d = new Date(us / 1000);
    return d.toLocaleDateString() + ' ' + d.toLocaleTimeString();
  };
  const ago = (us, now) => {
    if (!us) return 'never';
    const s = Math.max(0, Math.round((now - us) / 1e6));
    return s < 120 ? s + ' s ago' : s < 7200 ? Math.round(s / 60) + ' min ago' : Math.round(s / 3600) + ' h ago';
  };
  const words = (a) => (a.json && (a.json.message || a.json.error)) || 'HTTP ' + a.status;

  let view = 'sources', things = [];

  // --- sources -----------------------------------------------------------------------------
  async function sources() {
    const a = await TS.request('GET', '/v1/sources');
    if (a.status !== 200) throw new Error('sources: ' + words(a));
    const now = a.json.now_us;
    const rows = a.json.sources.sort((x, y) => x.source.localeCompare(y.source)).map((s) => {
      const gaps = (s.gaps || []).map((g) => g[0] === g[1] ? String(g[0]) : g[0] + '–' + g[1]);
      return el('tr', { 'data-source': s.source, 'data-silent': s.silent ? '1' : '0' },
        el('td', {}, el('strong', { text: s.source }),
          el('div', { class: 'mute', text: s.stream ? 'stream ' + s.stream.slice(0, 8) + '…' : 'no stream yet' })),
        el('td', {}, el('span', { class: 'badge ' + (s.silent ? 'bad' : 'ok'), text: s.silent ? 'silent' : 'pushing' }),
          el('div', { class: 'mute', text: s.period_s ? 'alarm after ' + s.period_s + ' s' : '' })),
        el('td', { text: ago(s.last_seen_us, now), title: fmtTime(s.last_seen_us) }),
        el('td', { text: String(s.stored) }),
        el('td', { class: s.missing ? 'warn' : '', text: String(s.missing) }),
        el('td', { text: String(s.rejected) }),
        el('td', { text: gaps.length ? gaps.join(', ') : 'none' }));
    });
    $('#sources tbody').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: 7, class: 'empty', text: 'No source: no controller has the push role.' }))]));
  }

  // --- alarms ------------------------------------------------------------------------------
  function alarmRow(al, cleared) {
    return el('tr', { 'data-alarm': al.kind, 'data-subject': al.subject, 'data-active': al.active ? '1' : '0' },
      el('td', {}, el('span', { class: 'badge ' + (al.active ? 'bad' : 'ok'), text: al.kind.replace(/_/g, ' ') })),
      el('td', { text: al.subject || '—' }),
      el('td', { text: al.message }),
      el('td', { text: fmtTime(al.raised) }),
      el('td', { text: cleared ? fmtTime(al.cleared) : String(al.count) }));
  }
  async function alarms() {
    const a = await TS.request('GET', '/v1/alarms');
    if (a.status !== 200) throw new Error('alarms: ' + words(a));
    const act = a.json.active.map((al) => alarmRow(al, false));
    const old = a.json.cleared.map((al) => alarmRow(al, true));
    $('#active tbody').replaceChildren(...(act.length ? act : [el('tr', {}, el('td', { colspan: 5, class: 'empty', text: 'No active alarm.' }))]));
    $('#cleared tbody').replaceChildren(...(old.length ? old : [el('tr', {}, el('td', { colspan: 5, class: 'empty', text: 'None.' }))]));
    $('#nav-alarms').textContent = 'Alarms' + (act.length ? ' (' + act.length + ')' : '');
  }

  // --- measurements --------------------------------------------------------------------------
  async function loadThings() {
    const a = await TS.request('GET', '/v1/things');
    if (a.status !== 200) throw new Error('things: ' + words(a));
    things = a.json.things;
    const sel = $('#thing');
    const cur = sel.value || (location.hash.split('/')[1] || '');
    sel.replaceChildren(...things.map((t) => el('option', { value: t.name, text: t.name + (t.group ? ' (' + t.group + ')' : '') })));
    if (cur && things.some((t) => t.name === cur)) sel.value = cur;
  }

  async function measurements() {
    if (!things.length) await loadThings();
    const name = $('#thing').value;
    const t = things.find((x) => x.name === name);
    if (!t) {
      $('#mstat').textContent = 'No thing reaches this collector.';
      return;
    }
    // The range: from..to when given (local time), else the last hour, day...
    const fromIn = Date.parse($('#from').value), toIn = Date.parse($('#to').value);
    const now = (isNaN(toIn) ? Date.now() : toIn) * 1000;
    const from = isNaN(fromIn) ? now - Number($('#range').value) * 1e6 : fromIn * 1000;
    if (from >= now) {
      $('#mstat').textContent = 'the range ends before it starts';
      return;
    }
    const limit = 10000;
    const a = await TS.request('GET', '/v1/measurements?thing=' + encodeURIComponent(name) + '&from=' + from +
      '&to=' + now + '&limit=' + limit);
    if (a.status !== 200) throw new Error('measurements: ' + words(a));
    // The same value may come from several sources: one point per (boot, version).
    const seen = new Map();
    for (const m of a.json.measurements) seen.set(m.owner_boot + ':' + m.version, m);
    const ms = [...seen.values()].sort((x, y) => x.time - y.time);
    drawChart(t, ms, from, now);
    $('#mstat').textContent = ms.length + ' value(s) from ' + fmtTime(from) + ' to ' + fmtTime(now) +
      (a.json.count >= limit ? ' (the first ' + limit + ' only)' : '');
    $('#latest tbody').replaceChildren(...ms.slice(-10).reverse().map((m) =>
      el('tr', { 'data-version': String(m.version) }, el('td', { text: fmtTime(m.time) }), el('td', { class: 'v', text: JSON.stringify(m.value) }),
        el('td', { text: m.source }), el('td', { text: m.owner_boot + '.' + m.version }))));
    $('#view-measurements').dataset.count = String(ms.length);
    $('#view-measurements').dataset.last = ms.length ? JSON.stringify(ms[ms.length - 1].value) : '';
  }

  function drawChart(t, ms, t0, t1) {
    const svg = $('#chart');
    svg.replaceChildren();
    const pts = ms.filter((m) => typeof m.value === 'number' || typeof m.value === 'boolean')
      .map((m) => [m.time, Number(m.value)]);
    if (!pts.length) {
      svg.append(svgEl('text', { x: 10, y: 110 }, t.type === 'string' ? 'a string thing: see the values below' : 'no values in this range'));
      return;
    }
    let lo = Math.min(...pts.map((p) => p[1])), hi = Math.max(...pts.map((p) => p[1]));
    if (hi === lo) { hi += 1; lo -= 1; }
    const X = (us) => 40 + ((us - t0) / (t1 - t0)) * 555;
    const Y = (v) => 200 - ((v - lo) / (hi - lo)) * 185;
    let d = 'M' + X(pts[0][0]).toFixed(1) + ' ' + Y(pts[0][1]).toFixed(1);
    for (let i = 1; i < pts.length; i++) d += ' H' + X(pts[i][0]).toFixed(1) + ' V' + Y(pts[i][1]).toFixed(1);
    d += ' H' + X(t1).toFixed(1);
    svg.append(svgEl('path', { d }));
    svg.append(svgEl('text', { x: 2, y: 18 }, String(Math.round(hi * 100) / 100)));
    svg.append(svgEl('text', { x: 2, y: 203 }, String(Math.round(lo * 100) / 100)));
    svg.append(svgEl('text', { x: 40, y: 216 }, new Date(t0 / 1000).toLocaleTimeString()));
    svg.append(svgEl('text', { x: 530, y: 216 }, 'now'));
    for (const p of pts) svg.append(svgEl('circle', { cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1), r: 2 }));
  }

  // --- the views -----------------------------------------------------------------------------
  const views = { sources, alarms, measurements };
  async function refresh() {
    try {
      await views[view]();
      $('#pageerr').textContent = '';
      $('#updated').textContent = 'updated ' + new Date().toLocaleTimeString();
      document.body.dataset.view = view;
    } catch (e) {
      $('#pageerr').textContent = 'cannot read the collector: ' + e.message;
    }
    $('#forget').hidden = !TS.hasKey();
  }
  function show() {
    view = (location.hash.slice(1).split('/')[0]) || 'sources';
    if (!views[view]) view = 'sources';
    for (const v of Object.keys(views)) {
      $('#view-' + v).hidden = v !== view;
      $('#nav-' + v).classList.toggle('on', v === view);
    }
    document.body.dataset.view = '';
    refresh();
  }

  TS.setTarget('collector');
  $('#forget').onclick = () => { TS.forgetKey(); location.reload(); };
  $('#thing').onchange = refresh;
  $('#range').onchange = () => { $('#from').value = ''; $('#to').value = ''; refresh(); };
  $('#from').onchange = refresh;
  $('#to').onchange = refresh;
  window.addEventListener('hashchange', show);
  show();
  setInterval(refresh, EVERY_MS);
  alarms().catch(() => {});
  document.body.dataset.ready = '1';
})();
