/*
 * thingsd integration tests: a site of real thingsd processes on loopback,
 * each with a temporary state directory and its log in a file, driven with
 * thingsctl (as a process) and the HTTP API (libcurl). Every wait is for a
 * condition, polled, with a deadline; never a fixed sleep.
 * SPDX-License-Identifier: MIT
 */
#ifndef TDH_H
#define TDH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TDH_MAX 6
/* Deadlines are generous: a loaded 2-core machine under ASan is slow, and a
 * condition that holds returns at once anyway. A test program whose waits
 * hold long work (whole days collected and pushed through several daemons)
 * gives a larger one with -DTDH_WAIT_MS=... (it is only a give-up limit). */
#ifndef TDH_WAIT_MS
#define TDH_WAIT_MS 30000
#endif

struct tdh_ctrl {
	const char *name;
	uint16_t udp, tcp;
	pid_t pid;
	char *state;
	char *log;
	char *conf;   /* its own copy of site.conf, as on a real Pi */
	char **extra; /* extra thingsd arguments, NULL-terminated, borrowed */
};

struct tdh {
	char *dir;
	char *site; /* dir/site.conf */
	int n;
	struct tdh_ctrl c[TDH_MAX];
	/* The site.conf text after the controllers, with @DIR@ replaced. */
	const char *things;
	/* The [site] keys after name and key_file; NULL: short retry timers
	 * that keep the tests quick (see tdh_site_text()). */
	const char *site_keys;
	const char *roles[TDH_MAX];
};

/* Sets up a site in a new temporary directory with a key: controllers
 * `names`, their roles, and `things` (site.conf text; "@DIR@" is replaced by
 * the directory). Ports are picked by the kernel. */
void tdh_init(struct tdh *t, const char *tag, int n, const char *const *names, const char *const *roles,
              const char *things);
/* Writes site.conf (again), e.g. after changing t->things: the admin's copy
 * (t->site, what thingsctl reads) and every controller's. */
void tdh_write_site(struct tdh *t);
/* Writes one controller's site.conf. */
void tdh_write_conf(struct tdh *t, int i, const char *text);
/* The site.conf text as tdh_write_site() would write it (malloc'ed). */
char *tdh_site_text(struct tdh *t, const char *things);
/* Starts every controller, or one, and waits until its API answers. */
void tdh_start_all(struct tdh *t);
void tdh_start(struct tdh *t, int i);
/* SIGTERM, and checks the exit status is 0. */
void tdh_stop(struct tdh *t, int i);
void tdh_kill9(struct tdh *t, int i);
/* Stops everything and removes the directory. */
void tdh_fini(struct tdh *t);
/* A cmocka group's fixture: a new site (tdh_init's arguments), every
 * controller started; and the teardown that stops and frees it. */
struct tdh *tdh_new_started(const char *tag, int n, const char *const *names, const char *const *roles,
                            const char *things);
int tdh_teardown(void **state);
int tdh_index(struct tdh *t, const char *name);

/* The HTTP API of controller i. Returns the status (0: no answer); *body
 * (malloc'ed) the answer. With `sign_for`, the request is signed with the
 * site key for that controller (normally controller i's name). A POST goes
 * as application/json. */
long tdh_http(struct tdh *t, int i, const char *method, const char *path, const char *body, const char *sign_for,
              char **out);
/* The same with extra headers ("Name: value", NULL-terminated). */
long tdh_http_h(struct tdh *t, int i, const char *method, const char *path, const char *body,
                const char *const *headers, char **out);
/* GET path on controller i and a string member of the JSON answer, or an
 * element "things/NAME/value" style: see tdh_value(). */
char *tdh_value(struct tdh *t, int i, const char *thing); /* formatted as thingsctl prints, or NULL */

/* Runs thingsctl with -c site.conf and the given arguments (NULL-terminated);
 * returns its exit status; *out and *err (may be NULL) get its output. */
int tdh_ctl(struct tdh *t, char **out, char **err, ...);
int tdh_ctlv(struct tdh *t, char **out, char **err, const char *const *argv);

/* Waits until pred(ud) is true; returns its last answer. */
typedef bool (*tdh_pred)(void *ud);
bool tdh_wait(tdh_pred pred, void *ud, int timeout_ms);
/* Waits until the thing's value on controller i prints as `want`. */
bool tdh_wait_value(struct tdh *t, int i, const char *thing, const char *want);
/* Whether controller i's log has `needle`; waits for it. */
bool tdh_log_has(struct tdh *t, int i, const char *needle);
bool tdh_wait_log(struct tdh *t, int i, const char *needle);
/* Counts the lines of the log that contain needle. */
int tdh_log_count(struct tdh *t, int i, const char *needle);

/* Files. */
void tdh_write(const char *path, const char *text);
char *tdh_read(const char *path);                /* NULL if it cannot be read */
char *tdh_path(struct tdh *t, const char *name); /* dir/name, malloc'ed */

/* A member of a JSON text ("a.b.c"), formatted as text, or NULL. */
char *tdh_json_get(const char *json, const char *dotted);

/* A port free for TCP and UDP on 127.0.0.1, never handed to another test. */
uint16_t tdh_tcp_port(void);
/* Starts a program with stdout and stderr to `log`; returns its pid. */
pid_t tdh_spawn(const char *const *argv, const char *log);

#endif
