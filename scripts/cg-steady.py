#!/usr/bin/env python3
# scripts/cg-steady.py DIR [N]: what scripts/cg-steady.sh measured, per update.
# The owner (the smallest zeroed pid) per update it saw acknowledged (its calls
# of engine__set_acked), its loop and sets (tsync_node_run_for +
# tsync_node_set, inclusive: the raw-UDP part of the bench that follows is
# left out); the users together per set they applied that was newer than
# the value they held (their calls of engine__undo_copy(), one for each;
# a stale repeat is no update), whole processes. Then the N largest functions of each side,
# inclusive (the largest of a name's file:function entries, as inlined lines
# make more than one) and self (all of them added up).
import collections, glob, re, subprocess, sys

d = sys.argv[1]
top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
zeroed = set(open(d + '/zeroed.txt').read().split())


def calls_to(path, name):
    ids, n, cur = {}, 0, None
    for line in open(path, errors='replace'):
        m = re.match(r'(c?fn)=\((\d+)\)(?: (.*))?', line)
        if m:
            if m.group(3):
                ids[m.group(2)] = m.group(3).strip()
            if m.group(1) == 'cfn':
                cur = ids.get(m.group(2))
            continue
        m = re.match(r'calls=(\d+)', line)
        if m and cur == name:
            n += int(m.group(1))
    return n


def profile(path, inclusive):
    out = subprocess.run(['callgrind_annotate', '--inclusive=' + ('yes' if inclusive else 'no'),
                          '--threshold=100', path], capture_output=True, text=True).stdout
    c = collections.Counter()
    for line in out.splitlines():
        m = re.match(r'\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*:(\S+)', line) or re.match(r'\s*([\d,]+)\s+\S*:(\S+)', line)
        if m:
            v = int(m.group(1).replace(',', ''))
            # A function's lines inlined from a header make another
            # file:function entry; its inclusive cost is part of the one of
            # the function's own file: the largest is the function's.
            c[m.group(2)] = max(c[m.group(2)], v) if inclusive else c[m.group(2)] + v
    c['TOTAL'] = int(re.search(r'^(?:summary|totals): (\d+)', open(path, errors='replace').read(), re.M).group(1))
    return c


files = sorted((f for f in glob.glob(d + '/callgrind.out.*') if f.rsplit('.', 1)[1] in zeroed),
               key=lambda f: int(f.rsplit('.', 1)[1]))
owner, users = files[0], files[1:]
n_users = sum(calls_to(f, 'engine__undo_copy') for f in users)
n_owner = calls_to(owner, 'engine__set_acked')
print('users: %d processes, %d newer sets applied; owner: %d updates acknowledged' % (len(users), n_users, n_owner))
for inclusive in (True, False):
    o, u = profile(owner, inclusive), collections.Counter()
    for f in users:
        u.update(profile(f, inclusive))
    print('== %s' % ('inclusive' if inclusive else 'self'))
    print('owner, tsync_node_run_for + tsync_node_set: %.1f an update' %
          ((o['tsync_node_run_for'] + o['tsync_node_set']) / n_owner))
    print('users, whole processes: %.1f an update' % (u['TOTAL'] / n_users))
    for name, c, n in (('owner', o, n_owner), ('users', u, n_users)):
        print('-- ' + name)
        for k, v in sorted(c.items(), key=lambda kv: -kv[1])[:top]:
            print('%10.1f  %s' % (v / n, k))
