// browser.js: Debian's chromium, headless, driven over the DevTools protocol
// by puppeteer-core (which downloads nothing). A browser that cannot start is
// a failure, said loudly: these tests are never skipped.
// SPDX-License-Identifier: MIT
'use strict';
const fs = require('fs');
const path = require('path');

let puppeteer;
try {
  puppeteer = require('puppeteer-core');
} catch (e) {
  console.error('FAIL: puppeteer-core is not installed: run `npm ci` in test/browser (scripts/test.sh does)');
  process.exit(1);
}

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

async function launch(workdir) {
  if (!fs.existsSync(CHROMIUM)) {
    console.error(`FAIL: no browser at ${CHROMIUM}: install Debian's chromium (scripts/setup.sh --test)`);
    process.exit(1);
  }
  const userDir = path.join(workdir, 'chromium-profile');
  fs.mkdirSync(userDir, { recursive: true });
  try {
    return await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: 60000,
      protocolTimeout: 120000,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
             '--disable-background-networking', '--disable-component-update', '--disable-sync',
             '--disable-dev-shm-usage', `--user-data-dir=${userDir}`],
    });
  } catch (e) {
    console.error(`FAIL: chromium (${CHROMIUM}) did not start: ${e.message}`);
    process.exit(1);
  }
}

// A page that fails the test on any script error or refused resource.
async function open(browser, url, errors, viewport = { width: 1100, height: 900 }) {
  const page = await browser.newPage();
  await page.setViewport(viewport);
  page.on('pageerror', (e) => errors.push('page error: ' + e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 40[13]|status of 50[34]|Failed to load resource/.test(m.text()))
      errors.push('console: ' + m.text());
  });
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  return page;
}

// The end of a test: the browser closed, no script error seen, and every
// daemon of the site stopped cleanly with SIGTERM (a sanitizer's report at
// exit fails it). `ok(what)` reports each.
async function finish(browser, errors, site, ok) {
  await browser.close();
  if (errors.length) throw new Error('script errors on the page:\n' + errors.join('\n'));
  ok('no script errors');
  const bad = await site.stop();
  if (bad.length) throw new Error('daemons that did not stop cleanly:\n' + bad.join('\n'));
  ok('the daemons stopped cleanly');
  site.tidy();
  console.log(`# screenshots in ${site.dir}`);
}

// Runs a test's main() and exits 0, or 1 saying why.
function run(main) {
  main().then(() => process.exit(0), (e) => {
    console.error('FAIL: ' + (e && e.stack ? e.stack : e));
    process.exit(1);
  });
}

module.exports = { launch, open, finish, run, CHROMIUM };
