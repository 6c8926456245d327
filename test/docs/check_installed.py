#!/usr/bin/env python3
"""Every program `meson install` puts in bin/ or sbin/ has a man page that is
installed with it (doc/NAME.SECTION.scd, listed in doc/meson.build) and
answers --help with a usage text and exit status 0.

Usage: check_installed.py SOURCE_ROOT BUILD_ROOT
Reads BUILD_ROOT/meson-info/intro-installed.json (what `meson install` would
install), so a new `install: true` without its page fails here.
"""
import json
import os
import re
import subprocess
import sys


def main():
    src, build = sys.argv[1], sys.argv[2]
    with open(os.path.join(build, 'meson-info', 'intro-installed.json')) as f:
        installed = json.load(f)
    with open(os.path.join(src, 'doc', 'meson.build')) as f:
        listed = set(re.findall(r"'([^']+\.[1-8])'", f.read()))
    pages = {os.path.basename(dest) for dest in installed.values() if re.search(r'/man[1-8]/', dest)}
    programs = sorted((os.path.basename(dest), built) for built, dest in installed.items()
                      if os.path.basename(os.path.dirname(dest)) in ('bin', 'sbin'))
    failures = []
    if not programs:
        failures.append('no installed program found in intro-installed.json')
    for name, built in programs:
        page = next((name + '.' + s for s in '18' if os.path.exists(os.path.join(src, 'doc', name + '.' + s + '.scd'))),
                    None)
        if page is None:
            failures.append(f'{name}: no man page (doc/{name}.1.scd or doc/{name}.8.scd)')
        elif page not in listed:
            failures.append(f'{name}: doc/{page}.scd is not listed in doc/meson.build')
        elif pages and page not in pages:
            # pages is empty when scdoc was not found (-Ddocs=auto): nothing is installed then.
            failures.append(f'{name}: {page} is not installed')
        argv = [built, '--help']
        if not os.access(built, os.X_OK):
            argv = ['sh'] + argv
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            failures.append(f'{name} --help: {e}')
            continue
        if r.returncode != 0 or 'usage' not in r.stdout.lower():
            failures.append(f'{name} --help: exit {r.returncode}, no usage text on standard output '
                            f'(stderr: {r.stderr.strip()[:200]!r})')
        else:
            print(f'ok {name}: {page}, --help')
    for f in failures:
        print('FAIL ' + f)
    print(f'{len(programs)} programs, {len(failures)} failures')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
