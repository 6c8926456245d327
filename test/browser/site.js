// site.js: a real thingsync site on loopback for the browser tests: a
// site.conf with a fresh key, one thingsd per controller (each with its state
// directory and log), thingsctl to act at an owner, and everything stopped
// when the test ends, however it ends.
// SPDX-License-Identifier: MIT
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn, spawnSync, execFileSync } = require('child_process');

const BUILD = process.env.THINGSYNC_BUILD || path.resolve(__dirname, '../../build');
const bin = {
  thingsd: path.join(BUILD, 'daemons/thingsd/thingsd'),
  thingsctl: path.join(BUILD, 'tools/thingsctl/thingsctl'),
  collectord: path.join(BUILD, 'daemons/thingsync-collectord/thingsync-collectord'),
  pushd: path.join(BUILD, 'daemons/thingsync-pushd/thingsync-pushd'),
};

const children = new Set();
function stopAll() {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch (e) { /* gone */ }
  }
  children.clear();
}
process.on('exit', stopAll);
for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(s, () => { stopAll(); process.exit(1); });

// N ports from the allocator the C tests use (ports.js, under its lock).
function ports(n) {
  const lock = `/tmp/thingsync-tdh-ports-${process.getuid()}`;
  const r = spawnSync('flock', [lock, process.execPath, path.join(__dirname, 'ports.js'), String(n)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error('no free ports: ' + (r.stderr || r.error));
  return r.stdout.trim().split(' ').map(Number);
}

// The test's directory: ARTIFACT_DIR/TAG (the last run's, kept in the build
// directory for a look afterwards: screenshots, logs), else a new one in /tmp.
function workdir(tag) {
  if (!process.env.ARTIFACT_DIR) return fs.mkdtempSync(path.join(os.tmpdir(), `thingsync-${tag}-`));
  const dir = path.join(process.env.ARTIFACT_DIR, tag);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Calls fn until it returns a true value; throws with `what` after `ms`
// (a generous give-up limit, not a measurement).
async function until(what, fn, ms = 60000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`gave up waiting for ${what} (last: ${last && last.message ? last.message : JSON.stringify(last)})`);
    await sleep(100);
  }
}

class Site {
  // controllers: [{name, roles, history, args}], things: site.conf text of the [thing] sections
  // (with @DIR@ for the site's directory).
  constructor(tag, controllers, thingsText) {
    this.dir = workdir(tag);
    this.controllers = new Map();
    const p = ports(controllers.length * 2);
    const key = path.join(this.dir, 'site.key');
    execFileSync(bin.thingsctl, ['keygen', key]);
    this.key = fs.readFileSync(key, 'utf8').replace(/\s+/g, '');
    let conf = '[site]\nname = browser\nkey_file = site.key\nretry_min_ms = 20\nretry_max_ms = 1000\ndown_after_ms = 1500\n\n';
    controllers.forEach((c, i) => {
      const cc = { ...c, udp: p[2 * i], tcp: p[2 * i + 1], state: path.join(this.dir, 'state-' + c.name),
                   log: path.join(this.dir, c.name + '.log'), proc: null };
      this.controllers.set(c.name, cc);
      conf += `[controller ${c.name}]\nhost = 127.0.0.1\nudp_port = ${cc.udp}\ntcp_port = ${cc.tcp}\n`;
      if (c.roles) conf += `roles = ${c.roles}\n`;
      if (c.history) conf += 'history = yes\n';
      conf += '\n';
    });
    conf += thingsText.replace(/@DIR@/g, this.dir);
    this.conf = path.join(this.dir, 'site.conf');
    fs.writeFileSync(this.conf, conf);
    this.token = execFileSync(bin.thingsctl, ['-c', this.conf, 'token'], { encoding: 'utf8' }).trim();
  }

  url(name) {
    return `http://127.0.0.1:${this.controllers.get(name).tcp}/`;
  }

  // Starts a controller's daemon: thingsd, or what its `argv(c, site)` gives.
  start(name) {
    const c = this.controllers.get(name);
    const argv = c.argv ? c.argv(c, this) : [bin.thingsd, '-c', this.conf, '-n', name, '-s', c.state, ...(c.args || [])];
    const log = fs.openSync(c.log, 'a');
    c.proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    children.add(c.proc);
    c.proc.on('exit', () => children.delete(c.proc));
  }

  kill(name, signal = 'SIGKILL') {
    const c = this.controllers.get(name);
    if (c.proc) c.proc.kill(signal);
    c.proc = null;
  }

  // thingsctl against controller `name`: {code, out}.
  ctl(name, ...args) {
    const r = spawnSync(bin.thingsctl, ['-c', this.conf, '-n', name, '--json', ...args], { encoding: 'utf8', timeout: 20000 });
    let json = null;
    try { json = JSON.parse(r.stdout); } catch (e) { json = null; }
    return { code: r.status, out: r.stdout + r.stderr, json };
  }

  // Starts the thingsd daemons (not the controllers with an `argv` or
  // `manual`), and waits until their APIs answer.
  async startAll() {
    const tds = [...this.controllers.values()].filter((c) => !c.argv && !c.manual).map((c) => c.name);
    for (const name of tds) this.start(name);
    for (const name of tds)
      await until(`${name}'s API`, () => this.ctl(name, 'status').code === 0, 30000);
  }

  // Stops every daemon still running with SIGTERM, as systemd does, and
  // says which did not exit 0 (a sanitizer's report at exit counts).
  async stop() {
    const bad = [];
    for (const [name, c] of this.controllers) {
      if (!c.proc) continue;
      const p = c.proc;
      const done = new Promise((resolve) => p.once('exit', (code, sig) => resolve({ code, sig })));
      p.kill('SIGTERM');
      const { code, sig } = p.exitCode !== null ? { code: p.exitCode, sig: p.signalCode } : await done;
      c.proc = null;
      if (code !== 0) bad.push(`${name} exited ${code === null ? 'on ' + sig : code} (log: ${c.log})`);
    }
    return bad;
  }

  // After a test that passed: the bulky parts go (state stores, the browser's
  // profile); screenshots, logs and site.conf stay.
  tidy() {
    for (const c of this.controllers.values()) fs.rmSync(c.state, { recursive: true, force: true });
    fs.rmSync(path.join(this.dir, 'chromium-profile'), { recursive: true, force: true });
  }

  logOf(name) {
    return fs.readFileSync(this.controllers.get(name).log, 'utf8');
  }
}

module.exports = { Site, bin, BUILD, until, sleep, workdir, ports, children, stopAll };
