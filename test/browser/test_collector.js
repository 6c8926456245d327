// thingsync-collectord's pages in a real headless Chromium, against a real
// site on loopback: PI-Climate (thingsd) owns a temperature read from a
// file, PUSH (thingsync-pushd) receives it and pushes it to the collector;
// PUSH-2, a source that never pushes, is silent.
//   - the sources page lists both, PUSH pushing and PUSH-2 silent;
//   - a value changed at the owner reaches the measurements page's chart;
//   - the alarms page shows PUSH-2's source_silent alarm; PUSH killed, its
//     alarm appears active; PUSH back, it moves to the cleared ones.
// Screenshots are kept in the test's directory (ARTIFACT_DIR).
// SPDX-License-Identifier: MIT
'use strict';
const fs = require('fs');
const path = require('path');
const { Site, bin, until } = require('./site');
const { launch, open, finish, run } = require('./browser');

const THINGS = `
[thing temp_living]
owner = PI-Climate
type = float
users = PUSH, PUSH-2
settable = no
min = -40
max = 85
group = Living room
driver = file:@DIR@/temp interval=100

[thing heating_mode]
owner = PI-Climate
type = string
users = PUSH
allowed = off, eco, comfort
initial = eco
`;

let step = 0;
function ok(what) {
  step++;
  console.log(`ok ${step} - ${what}`);
}

async function main() {
  const site = new Site('collector', [
    { name: 'PI-Climate', roles: 'climate' },
    { name: 'PUSH', roles: 'push', manual: true, argv: (c, s) => [bin.pushd, '--site', s.conf, '--controller', 'PUSH',
      '--state-dir', c.state, '--collector', `http://127.0.0.1:${s.controllers.get('SRV').tcp}/v1/push`,
      '--http', `127.0.0.1:${c.tcp}`, '--retry-min-ms', '20', '--retry-max-ms', '300', '--heartbeat-ms', '300'] },
    { name: 'PUSH-2', roles: 'push', manual: true },
    { name: 'SRV', roles: 'collector', manual: true, argv: (c, s) => [bin.collectord, '--site', s.conf, '--controller', 'SRV',
      '--db', `sqlite:${s.dir}/collector.db`, '--silent-after', '2'] },
  ], THINGS);
  const dir = site.dir;
  fs.writeFileSync(path.join(dir, 'temp'), '20.5\n');
  console.log('# site in ' + dir);
  await site.startAll();
  site.start('SRV');
  site.start('PUSH');
  const url = site.url('SRV');
  await until('the collector answers', async () => (await fetch(url + 'health')).status === 200);

  const errors = [];
  const browser = await launch(dir);
  const page = await open(browser, url + '#sources', errors);
  const attr = (s, a) => page.$eval(s, (e, a) => e.getAttribute(a), a).catch(() => null);
  const text = (s) => page.$eval(s, (e) => e.textContent).catch(() => '');
  await page.waitForSelector('body[data-ready="1"]', { timeout: 30000 });
  if ((await page.$('#keybox:not([hidden])')) !== null) throw new Error('a loopback collector asked for a key');

  // Sources: PUSH pushes, PUSH-2 is silent.
  await until('PUSH pushing, PUSH-2 silent', async () =>
    (await attr('tr[data-source="PUSH"]', 'data-silent')) === '0' &&
    (await attr('tr[data-source="PUSH-2"]', 'data-silent')) === '1' &&
    /ago/.test(await text('tr[data-source="PUSH"]')) && /never/.test(await text('tr[data-source="PUSH-2"]')));
  ok('the sources page shows PUSH pushing (last seen) and PUSH-2 silent (never seen)');
  await page.screenshot({ path: path.join(dir, 'collector-sources.png'), fullPage: true });

  // Measurements: a change at the owner reaches the chart.
  await page.goto(url + '#measurements/temp_living', { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('body[data-view="measurements"]', { timeout: 30000 });
  await until('20.5 on the measurements page', async () =>
    (await page.$eval('#view-measurements', (e) => e.dataset.last).catch(() => '')) === '20.5');
  fs.writeFileSync(path.join(dir, 'temp'), '23.25\n');
  await until('23.25 on the measurements page', async () =>
    (await page.$eval('#view-measurements', (e) => e.dataset.last).catch(() => '')) === '23.25');
  const d = await page.$eval('#chart path', (e) => e.getAttribute('d'));
  if (!/V/.test(d)) throw new Error('the chart has no step: ' + d);
  if ((await page.$eval('#thing', (e) => e.value)) !== 'temp_living') throw new Error('the thing was not chosen from the address');
  ok('a value changed at its owner reaches the collector\'s chart');
  // A range that ends before the change: only the first value.
  await page.$eval('#to', (e, t) => { e.value = t; e.dispatchEvent(new Event('change')); },
    await page.evaluate(() => { const d = new Date(Date.now() - 3600e3); d.setMinutes(d.getMinutes() - d.getTimezoneOffset()); return d.toISOString().slice(0, 19); }));
  await until('nothing in a range an hour ago', async () =>
    (await page.$eval('#view-measurements', (e) => e.dataset.count).catch(() => '')) === '0');
  await page.select('#range', '21600');
  await page.$eval('#range', (e) => e.dispatchEvent(new Event('change')));
  await until('back to the last 6 hours', async () =>
    (await page.$eval('#view-measurements', (e) => e.dataset.last).catch(() => '')) === '23.25');
  ok('a range chosen with from/to is what is drawn: none in a range that ended an hour ago');
  await page.screenshot({ path: path.join(dir, 'collector-measurements.png'), fullPage: true });

  // Alarms: PUSH-2 silent is active; PUSH killed raises one, PUSH back clears it.
  await page.goto(url + '#alarms', { waitUntil: 'domcontentloaded' });
  await until('PUSH-2\'s silent alarm', async () =>
    (await attr('#active tr[data-alarm="source_silent"][data-subject="PUSH-2"]', 'data-active')) === '1');
  site.kill('PUSH');
  await until('PUSH\'s silent alarm active', async () =>
    (await attr('#active tr[data-alarm="source_silent"][data-subject="PUSH"]', 'data-active')) === '1');
  ok('a source killed raises its source_silent alarm on the alarms page');
  await page.screenshot({ path: path.join(dir, 'collector-alarms-active.png'), fullPage: true });
  site.start('PUSH');
  await until('PUSH\'s alarm cleared', async () =>
    (await page.$('#active tr[data-subject="PUSH"]')) === null &&
    (await attr('#cleared tr[data-alarm="source_silent"][data-subject="PUSH"]', 'data-active')) === '0');
  if ((await attr('#active tr[data-subject="PUSH-2"]', 'data-active')) !== '1') throw new Error('PUSH-2\'s alarm went away');
  if (!/Alarms \(1\)/.test(await text('#nav-alarms'))) throw new Error('the tab does not count 1 active alarm: ' + await text('#nav-alarms'));
  ok('the source back, its alarm moves to the cleared ones; the other stays active');
  await page.screenshot({ path: path.join(dir, 'collector-alarms.png'), fullPage: true });

  // A phone's screen.
  await page.setViewport({ width: 390, height: 844, isMobile: true, hasTouch: true });
  const wide = await page.evaluate(() => document.body.scrollWidth);
  if (wide > 400) throw new Error(`the page is ${wide}px wide on a 390px phone`);
  ok('it fits a phone (tables scroll inside their box)');

  await finish(browser, errors, site, ok);
}

run(main);
