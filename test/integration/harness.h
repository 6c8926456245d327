/*
 * Integration-test harness: real nodes on loopback sockets in one libevent
 * loop, ports from a shared block below the ephemeral range, state in temporary directories, and waiting
 * on conditions (never on fixed sleeps).
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_TEST_HARNESS_H
#define TSYNC_TEST_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <thingsync/thingsync.h>

struct curl_slist;
struct event_base;

/* A directory under /tmp, removed by harness_rmdir(). */
char *harness_tmpdir(const char *tag);
void harness_rmdir(const char *dir);

/* A port free for UDP and TCP on 127.0.0.1, below the ephemeral range, never
 * handed to another test process at the same time (harness.c). */
uint16_t harness_port(void);
/* n such ports. */
void harness_ports(uint16_t *ports, int n);

/* Stops a process with `sig` and reaps it; returns its wait status (0 and
 * nothing done when *pid <= 0). *pid is 0 afterwards. */
int harness_stop(pid_t *pid, int sig);
/* Starts argv[0] (a path) with argv, its output appended to dir/logname (or
 * on the test's own with THINGSYNC_TEST_LOG set); it never outlives the test
 * (PR_SET_PDEATHSIG). Returns its pid; aborts when fork fails. */
pid_t harness_spawn(const char *dir, const char *logname, const char *const argv[]);
/* The last 40 lines of dir/name on stderr (a failing test's evidence). */
void harness_print_log(const char *dir, const char *name);

/* Writes text to dir/name, returns the path (malloc'ed). */
char *harness_write(const char *dir, const char *name, const char *text);

/* Runs the loop until pred(ud) is true or timeout_ms passes; returns pred's
 * last answer. The loop wakes at least every 5 ms to ask. */
typedef bool (*harness_pred)(void *ud);
bool harness_run_until(struct event_base *base, harness_pred pred, void *ud, int timeout_ms);

/* A log callback that prints to stderr when THINGSYNC_TEST_LOG is set. */
void harness_log(void *ud, tsync_log_level level, const char *line);

/*
 * A blocking HTTP request (libcurl) to `base` followed by `target` (e.g.
 * "http://127.0.0.1:8101" and "/v1/status"). A POST sends `body` ("" when
 * NULL) and says it is JSON unless `headers` are given; with `sign_for`, it
 * is signed with `site`'s key for that server over `target`, as thingsctl
 * signs (httpd.h); `headers` are added as they are. Gives up after
 * `timeout_ms`. Returns the HTTP status (0: no answer) and, when `out` is
 * not NULL, the body in *out (malloc'ed, NUL-terminated; NULL when empty).
 */
long harness_http(const char *base, const char *method, const char *target, const char *body,
                  const tsync_site *site, const char *sign_for, const struct curl_slist *headers,
                  long timeout_ms, char **out);

#endif
