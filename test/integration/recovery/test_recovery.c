/*
 * Integration tests of the recovery role: thingsync-recoveryd as a process
 * (RECOV), the rest of the site in this process's loop: two data stores
 * (OWNER1, OWNER2: history = yes, state directories) whose things the push
 * role uses, and PUSH, a node with the push role that stands in for pushd
 * and counts every `recovery_data` chunk it is given (per data store and
 * request: each chunk must come once, every change of the window once).
 * PUSH also sends the `connection_status` messages pushd would send, with
 * the times of the outage in them, so no test waits for an outage to last.
 *
 * Usage: test_recovery [TEST-NAME]   (meson runs one scenario per test)
 * Environment: RECOVERYD, THINGSCTL (the binaries), THINGSYNC_TEST_LOG.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>
#include <sqlite3.h>
#include <thingsync/thingsync.h>

#include "../harness.h"
#include "httpd.h"
#include "tdh.h"

#define N_OWNERS     2
#define THINGS       4
#define MAX_REQUESTS 32
#define WAIT_MS      60000
#define THRESHOLD_S  60
/* The end-to-end scenarios: recovery_threshold short, since a real outage
 * has to outlast it; the collector's has a short one to stay under too. */
static int e2e_threshold_s = 2;
/* Changes of one thing while pushd is down, per round of the owners. */
#define E2E_ROUNDS 150

/* The end-to-end scenarios run the real pushd and collectord in place of PUSH. */
static bool e2e;

/* What PUSH received of one (entity, request). */
struct received {
	char entity[64], request[128];
	long long chunks;     /* announced */
	unsigned *seen;       /* seen[k]: times chunk k came */
	long long entries;    /* changes received */
	long long duplicates; /* chunks that came again */
	double lost_s, restored_s;
	bool trimmed;
};

struct env {
	char *dir;
	char site_path[512];
	uint16_t udp[5]; /* OWNER1, OWNER2, PUSH, RECOV, SRV */
	uint16_t http;
	/* e2e: thingsync-pushd (PUSH) and thingsync-collectord (SRV) */
	uint16_t col_port, pushd_http;
	pid_t pushd, collector;
	/* e2e: every change the owners made: (thing, owner boot, version) */
	struct change {
		char thing[8];
		uint64_t boot, version;
	} * changes;
	size_t n_changes, cap_changes;
	/* e2e: boots of a restarted owner, which announces its values again
	 * under them: rows of the collector, but no change of the test's */
	uint64_t restart_boots[8];
	int n_restart_boots;
	tsync_site *site;
	struct event_base *base;
	tsync_node *owner[N_OWNERS], *push;
	char owner_dir[N_OWNERS][600], push_dir[600], recov_dir[600];
	pid_t recov;
	int recov_starts;
	struct received req[MAX_REQUESTS];
	int n_req;
	size_t longest_chunk;
	/* versions[o][t][v]: times change v of thing t of owner o came (chunking test) */
	unsigned *versions[N_OWNERS][THINGS];
	uint64_t max_version;
	int64_t first_chunk_us, last_chunk_us;
	int errors;
};

static const char *recoveryd_bin(void)
{
	const char *p = getenv("RECOVERYD");
	return p ? p : "thingsync-recoveryd";
}

static int64_t real_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* --- PUSH: the receiving end of recovery_data ------------------------------------------ */

static struct received *received_of(struct env *e, const char *entity, const char *request)
{
	for (int i = 0; i < e->n_req; i++)
		if (!strcmp(e->req[i].entity, entity) && !strcmp(e->req[i].request, request))
			return &e->req[i];
	assert_true(e->n_req < MAX_REQUESTS);
	struct received *r = &e->req[e->n_req++];
	snprintf(r->entity, sizeof(r->entity), "%s", entity);
	snprintf(r->request, sizeof(r->request), "%s", request);
	return r;
}

static int owner_index(const char *name)
{
	return !strcmp(name, "OWNER1") ? 0 : !strcmp(name, "OWNER2") ? 1 : -1;
}

static int on_recovery_data(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct env *e = ud;
	json_t *j = json_loads(req->json, 0, NULL), *io, *it;
	const char *entity, *request;
	struct received *r;
	long long k, n;
	size_t i;

	(void)node;
	(void)result;
	assert_non_null(j);
	if (strlen(req->json) > e->longest_chunk)
		e->longest_chunk = strlen(req->json);
	entity = json_string_value(json_object_get(j, "entity"));
	request = json_string_value(json_object_get(j, "request"));
	assert_non_null(entity);
	assert_non_null(request);
	assert_string_equal(entity, req->from);
	r = received_of(e, entity, request);
	k = json_integer_value(json_object_get(j, "chunk"));
	n = json_integer_value(json_object_get(j, "chunks"));
	assert_true(n >= 1 && k >= 1 && k <= n);
	if (!r->seen) {
		r->chunks = n;
		r->seen = calloc((size_t)n + 1, sizeof(*r->seen));
		assert_non_null(r->seen);
		r->lost_s = json_number_value(json_object_get(j, "lost_connection_time"));
		r->restored_s = json_number_value(json_object_get(j, "restored_connection_time"));
	}
	assert_int_equal(r->chunks, n);
	if (r->seen[k]++)
		r->duplicates++;
	r->trimmed |= json_object_get(j, "trimmed") != NULL;
	if (!e->first_chunk_us)
		e->first_chunk_us = real_us();
	e->last_chunk_us = real_us();
	io = json_object_get(json_object_get(j, "recovery_data"), "io");
	json_array_foreach(io, i, it)
	{
		const char *thing = json_string_value(json_object_get(it, "thing"));
		uint64_t ver = (uint64_t)json_integer_value(json_object_get(it, "version"));
		int o = owner_index(entity);

		r->entries++;
		if (o >= 0 && thing && thing[0] && thing[1] >= '0' && thing[1] < '0' + THINGS &&
		    e->versions[o][thing[1] - '0'] && ver <= e->max_version)
			e->versions[o][thing[1] - '0'][ver]++;
	}
	json_decref(j);
	return 0;
}

/* How many requests of `entity` came whole (every chunk announced). */
static int completed(struct env *e, const char *entity)
{
	int n = 0;

	for (int i = 0; i < e->n_req; i++) {
		struct received *r = &e->req[i];
		bool all = r->seen != NULL;
		if (strcmp(r->entity, entity) != 0)
			continue;
		for (long long k = 1; all && k <= r->chunks; k++)
			all = r->seen[k] > 0;
		n += all;
	}
	return n;
}

static bool complete(struct env *e, const char *entity)
{
	return completed(e, entity) > 0;
}

static bool both_twice(struct env *e, const void *arg)
{
	(void)arg;
	return completed(e, "OWNER1") >= 2 && completed(e, "OWNER2") >= 2;
}

static int requests_of(struct env *e, const char *entity)
{
	int n = 0;
	for (int i = 0; i < e->n_req; i++)
		n += !strcmp(e->req[i].entity, entity);
	return n;
}

static struct received *only_request(struct env *e, const char *entity)
{
	for (int i = 0; i < e->n_req; i++)
		if (!strcmp(e->req[i].entity, entity))
			return &e->req[i];
	return NULL;
}

/* --- processes ----------------------------------------------------------------------- */

static pid_t spawn(struct env *e, const char *logname, const char *const argv[])
{
	return harness_spawn(e->dir, logname, argv);
}

/* --- HTTP ------------------------------------------------------------------------------ */

/* A request to RECOV's API; `sign` signs it with the site key for RECOV. */
static long api(struct env *e, const char *method, const char *target, const char *body, bool sign,
                json_t **out)
{
	char base[64], *data = NULL;
	long status;

	snprintf(base, sizeof(base), "http://127.0.0.1:%u", e->http);
	status = harness_http(base, method, target, body, e->site, sign ? "RECOV" : NULL, NULL, 20000,
	                      out ? &data : NULL);
	if (out)
		*out = data ? json_loads(data, 0, NULL) : NULL;
	free(data);
	return status;
}

static json_t *status_of(struct env *e)
{
	json_t *j = NULL;

	if (api(e, "GET", "/v1/status", NULL, false, &j) != 200) {
		json_decref(j);
		return NULL;
	}
	return j;
}

static int64_t ledger_int(struct env *e, const char *key)
{
	json_t *s = status_of(e);
	int64_t v;

	assert_non_null(s);
	v = (int64_t)json_integer_value(json_object_get(json_object_get(s, "ledger"), key));
	json_decref(s);
	return v;
}

static bool ledger_lost(struct env *e)
{
	json_t *s = status_of(e);
	bool v;

	assert_non_null(s);
	v = json_is_true(json_object_get(json_object_get(s, "ledger"), "lost"));
	json_decref(s);
	return v;
}

/* --- the loop -------------------------------------------------------------------------- */

struct until {
	struct env *e;
	bool (*pred)(struct env *e, const void *arg);
	const void *arg;
};

static bool until_cb(void *ud)
{
	struct until *u = ud;
	return u->pred(u->e, u->arg);
}

static bool run_until(struct env *e, bool (*pred)(struct env *e, const void *arg), const void *arg, int ms)
{
	struct until u = {e, pred, arg};
	return harness_run_until(e->base, until_cb, &u, ms);
}

static bool is_complete(struct env *e, const void *arg)
{
	return complete(e, arg);
}

static bool both_complete(struct env *e, const void *arg)
{
	(void)arg;
	return complete(e, "OWNER1") && complete(e, "OWNER2");
}

static bool api_up(struct env *e, const void *arg)
{
	json_t *s;

	(void)arg;
	s = status_of(e);
	json_decref(s);
	return s != NULL;
}

static bool lost_is_false(struct env *e, const void *arg)
{
	(void)arg;
	return !ledger_lost(e);
}

static bool settled(struct env *e, const void *arg)
{
	(void)arg;
	for (int i = 0; i < N_OWNERS; i++)
		if (e->owner[i] && tsync_node_unsettled(e->owner[i]))
			return false;
	return !e->push || tsync_node_unsettled(e->push) == 0;
}

static bool copy_is(struct env *e, const void *arg)
{
	tsync_thing_state st;

	return tsync_node_get(e->push, "internet_lost", &st) == 0 && st.value.type == TSYNC_TYPE_BOOL &&
	       st.value.u.b == *(const bool *)arg;
}

/* --- the site ------------------------------------------------------------------------ */

/* More arguments for recoveryd (test_e2e_probe), NULL-terminated. */
static const char *recov_extra[5];

static void start_recoveryd(struct env *e)
{
	char alive[32];
	const char *argv[] = {
	    recoveryd_bin(), "--site",     e->site_path, "--controller", "RECOV",        "--state-dir",
	    e->recov_dir,    "--alive-ms", alive,        recov_extra[0], recov_extra[1], recov_extra[2],
	    recov_extra[3],  NULL};

	snprintf(alive, sizeof(alive), "%d", 500);
	e->recov = spawn(e, "recoveryd.log", argv);
	e->recov_starts++;
	assert_true(run_until(e, api_up, NULL, WAIT_MS));
}

static void start_node(struct env *e, const char *name, const char *dir, tsync_node **out)
{
	tsync_node_options o;

	tsync_node_options_init(&o);
	o.site = e->site;
	o.controller = name;
	o.event_base = e->base;
	o.state_dir = dir;
	o.log = harness_log;
	o.log_level = getenv("THINGSYNC_TEST_LOG") ? TSYNC_LOG_INFO : TSYNC_LOG_ERROR;
	assert_int_equal(tsync_node_new(&o, out), 0);
}

static void start_owner(struct env *e, int i)
{
	start_node(e, i == 0 ? "OWNER1" : "OWNER2", e->owner_dir[i], &e->owner[i]);
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	char text[8192], key[600];
	size_t n;
	char *path;

	if (!e)
		return -1;
	e->dir = harness_tmpdir("recovery");
	harness_ports(e->udp, 5);
	e->http = tdh_tcp_port();
	snprintf(key, sizeof(key), "%s/site.key", e->dir);
	if (tsync_key_generate(key) < 0)
		return -1;
	n = (size_t)snprintf(text, sizeof(text),
	                     "[site]\nname = rectest\nkey_file = site.key\nretry_min_ms = 10\n"
	                     "retry_initial_ms = 50\nretry_max_ms = 300\ndown_after_ms = 1000\n"
	                     "heartbeat_ms = 300\nstate_commit_ms = 50\n\n"
	                     "[controller OWNER1]\nhost = 127.0.0.1\nudp_port = %u\nhistory = yes\n\n"
	                     "[controller OWNER2]\nhost = 127.0.0.1\nudp_port = %u\nhistory = yes\n\n"
	                     "[controller PUSH]\nhost = 127.0.0.1\nudp_port = %u\nroles = push\n\n"
	                     "[controller RECOV]\nhost = 127.0.0.1\nudp_port = %u\ntcp_port = %u\n"
	                     "roles = recovery\nrecovery_threshold = %d\n\n"
	                     "[thing internet_lost]\nowner = RECOV\ntype = bool\nusers = PUSH\n"
	                     "settable = no\ninitial = no\n\n",
	                     e->udp[0], e->udp[1], e->udp[2], e->udp[3], e->http,
	                     e2e ? e2e_threshold_s : THRESHOLD_S);
	if (e2e) {
		e->col_port = tdh_tcp_port();
		e->pushd_http = tdh_tcp_port();
		n += (size_t)snprintf(text + n, sizeof(text) - n,
		                      "[controller SRV]\nhost = 127.0.0.1\nudp_port = %u\ntcp_port = %u\n"
		                      "roles = collector\n\n",
		                      e->udp[4], e->col_port);
	}
	for (int o = 0; o < N_OWNERS; o++)
		for (int k = 0; k < THINGS; k++)
			n += (size_t)snprintf(text + n, sizeof(text) - n,
			                      "[thing %c%d]\nowner = OWNER%d\ntype = int\nusers = PUSH\n\n",
			                      'a' + o, k, o + 1);
	path = harness_write(e->dir, "site.conf", text);
	snprintf(e->site_path, sizeof(e->site_path), "%s", path);
	free(path);
	if (tsync_site_load(e->site_path, &e->site, NULL) < 0)
		return -1;
	for (int i = 0; i < N_OWNERS; i++)
		snprintf(e->owner_dir[i], sizeof(e->owner_dir[i]), "%s/owner%d", e->dir, i + 1);
	snprintf(e->push_dir, sizeof(e->push_dir), "%s/push", e->dir);
	snprintf(e->recov_dir, sizeof(e->recov_dir), "%s/recov", e->dir);
	e->base = event_base_new();
	if (!e->base)
		return -1;
	for (int i = 0; i < N_OWNERS; i++)
		start_owner(e, i);
	if (!e2e) {
		start_node(e, "PUSH", e->push_dir, &e->push);
		assert_int_equal(tsync_node_on_request(e->push, "recovery_data", on_recovery_data, e), 0);
	}
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	int r = 0, status;

	if (e->recov > 0) {
		status = harness_stop(&e->recov, SIGTERM);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "recoveryd did not stop cleanly (status 0x%x)\n", status);
			r = -1;
		}
	}
	if (e->pushd > 0) {
		status = harness_stop(&e->pushd, SIGTERM);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "pushd did not stop cleanly (status 0x%x)\n", status);
			r = -1;
		}
	}
	if (e->collector > 0) {
		status = harness_stop(&e->collector, SIGTERM);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "collectord did not stop cleanly (status 0x%x)\n", status);
			r = -1;
		}
	}
	if (r < 0 || getenv("THINGSYNC_TEST_VERBOSE")) {
		harness_print_log(e->dir, "recoveryd.log");
		if (e2e) {
			harness_print_log(e->dir, "pushd.log");
			harness_print_log(e->dir, "collector.log");
		}
	}
	free(e->changes);
	for (int i = 0; i < N_OWNERS; i++)
		tsync_node_free(e->owner[i]);
	tsync_node_free(e->push);
	event_base_free(e->base);
	tsync_site_free(e->site);
	for (int i = 0; i < e->n_req; i++)
		free(e->req[i].seen);
	for (int o = 0; o < N_OWNERS; o++)
		for (int t = 0; t < THINGS; t++)
			free(e->versions[o][t]);
	harness_rmdir(e->dir);
	free(e->dir);
	free(e);
	return r;
}

/* Each owner changes each of its things `n` times (committed: in the history). */
static void produce(struct env *e, int n)
{
	static int64_t next = 1;

	for (int i = 0; i < n; i++)
		for (int o = 0; o < N_OWNERS; o++)
			for (int k = 0; k < THINGS; k++) {
				char name[8];
				tsync_value v = tsync_int(next++);
				snprintf(name, sizeof(name), "%c%d", 'a' + o, k);
				if (e->owner[o])
					assert_int_equal(tsync_node_set(e->owner[o], name, &v), 0);
			}
	for (int o = 0; o < N_OWNERS; o++)
		if (e->owner[o])
			assert_int_equal(tsync_node_commit(e->owner[o]), 0);
}

struct sent {
	bool done;
	int status;
};

static void sent_cb(void *ud, tsync_node *node, int status, const char *result)
{
	struct sent *s = ud;

	(void)node;
	(void)result;
	s->done = true;
	s->status = status;
}

static bool sent_done(struct env *e, const void *arg)
{
	(void)e;
	return ((const struct sent *)arg)->done;
}

/* PUSH tells RECOV, as pushd does; returns once RECOV answered (after its commit). */
static void connection_status(struct env *e, const char *what, int64_t at_us)
{
	char body[160];
	struct sent s = {0};

	snprintf(body, sizeof(body), "{\"connection_status\":\"%s\",\"time\":%.6f,\"id\":\"PUSH\"}", what,
	         (double)at_us / 1e6);
	assert_int_equal(tsync_node_request(e->push, "RECOV", "connection_status", body, sent_cb, &s), 0);
	assert_true(run_until(e, sent_done, &s, WAIT_MS));
	assert_int_equal(s.status, 0);
}

static bool never(void *ud)
{
	(void)ud;
	return false;
}

/* Runs the loop for a while with nothing expected, to see that nothing more
 * comes: not a deadline, a chance for a wrong extra request to show. */
static void quiet(struct env *e, int ms)
{
	run_until(e, settled, NULL, WAIT_MS);
	harness_run_until(e->base, never, NULL, ms);
}

/* --- scenarios --------------------------------------------------------------------------- */

/*
 * An outage shorter than recovery_threshold asks nothing; a longer one asks
 * each data store once, and the changes of the window reach PUSH, each
 * chunk once; a restart of recoveryd afterwards asks nothing again.
 * internet_lost follows the outage on PUSH's copy.
 */
static void test_threshold(void **state)
{
	struct env *e = *state;
	int64_t now;
	bool yes = true, no = false;
	json_t *s;

	start_recoveryd(e);
	produce(e, 5);
	now = real_us();
	connection_status(e, "disconnect", now - (THRESHOLD_S - 10) * 1000000LL);
	assert_true(run_until(e, copy_is, &yes, WAIT_MS));
	connection_status(e, "reconnect", now);
	assert_true(run_until(e, copy_is, &no, WAIT_MS));
	assert_int_equal(ledger_int(e, "outages_short"), 1);
	assert_int_equal(ledger_int(e, "recoveries_total"), 0);

	/* Longer than the threshold: one request per data store. */
	now = real_us();
	connection_status(e, "disconnect", now - (THRESHOLD_S + 600) * 1000000LL);
	connection_status(e, "disconnect",
	                  now - (THRESHOLD_S + 500) * 1000000LL); /* again: changes nothing */
	produce(e, 5);
	connection_status(e, "reconnect", real_us());
	assert_true(run_until(e, both_complete, NULL, WAIT_MS));
	quiet(e, 1000);
	assert_int_equal(requests_of(e, "OWNER1"), 1);
	assert_int_equal(requests_of(e, "OWNER2"), 1);
	/* The short outage made no recovery: this one is r1. */
	assert_true(!strncmp(only_request(e, "OWNER1")->request, "RECOV/r1.1.", 11));
	assert_true(!strncmp(only_request(e, "OWNER2")->request, "RECOV/r1.2.", 11));
	for (int i = 0; i < e->n_req; i++) {
		assert_int_equal(e->req[i].duplicates, 0);
		/* The window is the first loss's, to the reconnect. */
		assert_true(e->req[i].lost_s < (double)(now / 1000000 - THRESHOLD_S - 599));
		assert_true(e->req[i].entries >= 10 * THINGS);
	}
	s = status_of(e);
	assert_non_null(s);
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(s, "ledger"), "recoveries_total")), 1);
	json_decref(s);

	/* A restart (a short downtime) asks nothing again. */
	assert_int_equal(WEXITSTATUS(harness_stop(&e->recov, SIGTERM)), 0);
	start_recoveryd(e);
	quiet(e, 2000);
	assert_int_equal(requests_of(e, "OWNER1"), 1);
	assert_int_equal(requests_of(e, "OWNER2"), 1);
	assert_int_equal(ledger_int(e, "recoveries_total"), 1);
	assert_false(ledger_lost(e));
}

/*
 * recoveryd killed (kill -9) during an outage keeps its first loss time;
 * killed again just after the reconnect was acknowledged, it asks each data
 * store exactly once all the same (the ledger and the requests were
 * committed together before the acknowledgement).
 */
static void test_kill9(void **state)
{
	struct env *e = *state;
	int64_t lost = real_us() - 900 * 1000000LL;

	start_recoveryd(e);
	connection_status(e, "disconnect", lost);
	assert_true(ledger_lost(e));
	assert_true(llabs(ledger_int(e, "lost_us") - lost) <= 1);
	harness_stop(&e->recov, SIGKILL);
	produce(e, 20);
	start_recoveryd(e);
	assert_true(ledger_lost(e));
	assert_true(llabs(ledger_int(e, "lost_us") - lost) <= 1);

	connection_status(e, "reconnect", real_us());
	harness_stop(&e->recov, SIGKILL);
	start_recoveryd(e);
	assert_true(run_until(e, both_complete, NULL, WAIT_MS));
	quiet(e, 2000);
	assert_int_equal(requests_of(e, "OWNER1"), 1);
	assert_int_equal(requests_of(e, "OWNER2"), 1);
	for (int i = 0; i < e->n_req; i++) {
		assert_int_equal(e->req[i].duplicates, 0);
		/* The first loss time, whole seconds as sent. */
		assert_true(e->req[i].lost_s <= (double)lost / 1e6 + 1e-3);
		assert_true(e->req[i].lost_s >= (double)lost / 1e6 - 1e-3);
		assert_true(e->req[i].entries >= 20 * THINGS);
	}
	assert_int_equal(ledger_int(e, "recoveries_total"), 1);
}

static bool each_round(struct env *e, const void *arg)
{
	int rounds = *(const int *)arg;

	return completed(e, "OWNER1") >= rounds && completed(e, "OWNER2") >= rounds;
}

/*
 * recoveryd killed -9 at a random moment around the reconnect, round after
 * round: before it took the reconnect (PUSH sends it again to the new
 * boot), while it committed, or after it answered. Every outage is
 * recovered once: one request per data store and round, none twice.
 */
static void test_kill9_random(void **state)
{
	struct env *e = *state;
	const int rounds = 6;
	unsigned seed = (unsigned)time(NULL);
	int retried = 0;

	fprintf(stderr, "seed %u\n", seed);
	start_recoveryd(e);
	produce(e, 3);
	for (int i = 0; i < rounds; i++) {
		char body[160];
		struct sent s = {0};
		struct timeval tv = {0, (suseconds_t)(rand_r(&seed) % 40000)};

		connection_status(e, "disconnect", real_us() - (int64_t)(900 - i) * 1000000);
		snprintf(body, sizeof(body),
		         "{\"connection_status\":\"reconnect\",\"time\":%.6f,\"id\":\"PUSH\"}",
		         (double)real_us() / 1e6);
		assert_int_equal(tsync_node_request(e->push, "RECOV", "connection_status", body, sent_cb, &s),
		                 0);
		event_base_loopexit(e->base, &tv);
		event_base_dispatch(e->base);
		harness_stop(&e->recov, SIGKILL);
		start_recoveryd(e);
		assert_true(run_until(e, sent_done, &s, WAIT_MS));
		/* Killed between taking it and committing: "outcome unknown", and
		 * the sender sends it again, as pushd does. */
		if (s.status == TSYNC_EPEER_RESTARTED) {
			retried++;
			memset(&s, 0, sizeof(s));
			assert_int_equal(
			    tsync_node_request(e->push, "RECOV", "connection_status", body, sent_cb, &s), 0);
			assert_true(run_until(e, sent_done, &s, WAIT_MS));
		}
		assert_int_equal(s.status, 0);
		assert_true(run_until(e, lost_is_false, NULL, WAIT_MS));
	}
	if (!run_until(e, each_round, &rounds, WAIT_MS)) {
		for (int i = 0; i < e->n_req; i++) {
			long long got = 0;
			for (long long k = 1; e->req[i].seen && k <= e->req[i].chunks; k++)
				got += e->req[i].seen[k] > 0;
			fprintf(stderr, "%s %s: %lld of %lld chunks\n", e->req[i].entity, e->req[i].request,
			        got, e->req[i].chunks);
		}
		fail_msg("not every round's chunks came");
	}
	quiet(e, 2000);
	assert_int_equal(requests_of(e, "OWNER1"), rounds);
	assert_int_equal(requests_of(e, "OWNER2"), rounds);
	for (int i = 0; i < e->n_req; i++)
		assert_int_equal(e->req[i].duplicates, 0);
	assert_int_equal(ledger_int(e, "recoveries_total"), rounds);
	printf("%d rounds, %d reconnects sent again after an outcome unknown\n", rounds, retried);
}

static bool completed_owner1_twice(struct env *e, const void *arg)
{
	return completed(e, "OWNER1") >= *(const int *)arg;
}

static bool each_round_two(struct env *e, const void *arg)
{
	(void)arg;
	return completed(e, "OWNER1") >= 2 && completed(e, "OWNER2") >= 2;
}

/* The chunks of OWNER1's only request PUSH has seen. */
static long long seen_chunks(const struct received *r)
{
	long long n = 0;
	for (long long k = 1; r->seen && k <= r->chunks; k++)
		n += r->seen[k] > 0;
	return n;
}

static bool chunks_seen_at_least(struct env *e, const void *arg)
{
	const struct received *r = only_request(e, "OWNER1");
	return r && seen_chunks(r) >= *(const long long *)arg;
}

/* Whether the ledger says {recovery, owner, state}. */
static bool owner_state_is(struct env *e, const void *arg)
{
	const char *const *w = arg;
	json_t *s = status_of(e), *rec;
	size_t i;
	bool ok = false;

	json_array_foreach(json_object_get(json_object_get(s, "ledger"), "recoveries"), i, rec)
	{
		const char *st = json_string_value(
		    json_object_get(json_object_get(json_object_get(rec, "owners"), w[1]), "state"));
		if (!strcmp(json_string_value(json_object_get(rec, "id")), w[0]) && st && !strcmp(st, w[2]))
			ok = true;
	}
	json_decref(s);
	return ok;
}

static void wait_owner_state(struct env *e, const char *recovery, const char *owner, const char *state)
{
	const char *want[] = {recovery, owner, state};

	if (!run_until(e, owner_state_is, want, WAIT_MS)) {
		char *txt = json_dumps(status_of(e), JSON_INDENT(1));
		fail_msg("%s of %s not %s in the ledger: %s", owner, recovery, state, txt);
	}
}

/* A data store down at the reconnect is asked when it comes back, also
 * after a restart of recoveryd meanwhile. */
static void test_owner_down(void **state)
{
	struct env *e = *state;
	json_t *s, *o2;

	start_recoveryd(e);
	produce(e, 10);
	connection_status(e, "disconnect", real_us() - 900 * 1000000LL);
	tsync_node_free(e->owner[1]);
	e->owner[1] = NULL;
	connection_status(e, "reconnect", real_us());
	assert_true(run_until(e, is_complete, "OWNER1", WAIT_MS));
	quiet(e, 1500);
	assert_int_equal(requests_of(e, "OWNER2"), 0);
	s = status_of(e);
	o2 = json_object_get(
	    json_object_get(json_array_get(json_object_get(json_object_get(s, "ledger"), "recoveries"), 0),
	                    "owners"),
	    "OWNER2");
	assert_string_equal(json_string_value(json_object_get(o2, "state")), "asked");
	json_decref(s);

	start_owner(e, 1);
	assert_true(run_until(e, is_complete, "OWNER2", WAIT_MS));
	quiet(e, 1000);
	assert_int_equal(requests_of(e, "OWNER1"), 1);
	assert_int_equal(requests_of(e, "OWNER2"), 1);
	assert_true(only_request(e, "OWNER2")->entries >= 10 * THINGS);
	s = status_of(e);
	o2 = json_object_get(
	    json_object_get(json_array_get(json_object_get(json_object_get(s, "ledger"), "recoveries"), 0),
	                    "owners"),
	    "OWNER2");
	assert_string_equal(json_string_value(json_object_get(o2, "state")), "answered");
	json_decref(s);

	/* Again, with recoveryd killed -9 and started again while OWNER2 is
	 * away: the request waits in its node's store and goes when it returns. */
	produce(e, 10);
	connection_status(e, "disconnect", real_us() - 900 * 1000000LL);
	tsync_node_free(e->owner[1]);
	e->owner[1] = NULL;
	connection_status(e, "reconnect", real_us());
	harness_stop(&e->recov, SIGKILL);
	start_recoveryd(e);
	{
		int two = 2;
		assert_true(run_until(e, completed_owner1_twice, &two, WAIT_MS));
	}
	start_owner(e, 1);
	assert_true(run_until(e, each_round_two, NULL, WAIT_MS));
	quiet(e, 1000);
	assert_int_equal(requests_of(e, "OWNER1"), 2);
	assert_int_equal(requests_of(e, "OWNER2"), 2);
	for (int i = 0; i < e->n_req; i++)
		assert_int_equal(e->req[i].duplicates, 0);
	/* The ledger of the restarted recoveryd saw the answer of OWNER2 too:
	 * no "asked" left over from before its restart. */
	wait_owner_state(e, "r2", "OWNER2", "answered");
}

static int64_t owner1_window(struct env *e, int per_thing);

/*
 * A data store restarting in the middle of sending a window's chunks (a
 * crash: what it had not committed is lost) finishes the window after its
 * start: every change of the window reaches PUSH once, no chunk twice.
 * Then recoveryd killed -9 before a data store's answer came asks it again
 * under the same request id: answered from the data store's record, the
 * window is not sent twice, and the ledger says "answered" (it said "asked"
 * for ever: the answer to the request its node resumed reached no one).
 */
static void test_owner_restart_mid_send(void **state)
{
	struct env *e = *state;
	const int per_thing = 4000;
	char body[128];
	json_t *j = NULL;
	struct received *r;
	int64_t t0;

	t0 = owner1_window(e, per_thing);
	snprintf(body, sizeof(body), "{\"from\":%.6f,\"to\":%.6f}", (double)t0 / 1e6 - 1,
	         (double)real_us() / 1e6 + 1);
	assert_int_equal(api(e, "POST", "/v1/recover", body, true, &j), 202);
	json_decref(j);
	{
		long long some = 40;
		assert_true(run_until(e, chunks_seen_at_least, &some, WAIT_MS));
	}
	r = only_request(e, "OWNER1");
	assert_non_null(r);
	assert_true(completed(e, "OWNER1") == 0);
	printf("OWNER1 crashed after %lld of %lld chunks reached PUSH\n", seen_chunks(r), r->chunks);
	tsync_node_abandon(e->owner[0]);
	start_owner(e, 0);
	assert_true(run_until(e, is_complete, "OWNER1", 10 * WAIT_MS));
	quiet(e, 1000);
	assert_int_equal(requests_of(e, "OWNER1"), 1);
	assert_int_equal(r->duplicates, 0);
	assert_int_equal(r->entries, (long long)THINGS * per_thing);
	for (int t = 0; t < THINGS; t++)
		for (uint64_t v = 0; v <= e->max_version; v++)
			assert_true(e->versions[0][t][v] <= 1);

	/* recoveryd asks OWNER2, which is away; recoveryd is killed -9 and
	 * started again; OWNER2 returns and gets the request twice (the first
	 * resumed by recoveryd's node, the second asked again): one window. */
	start_owner(e, 1);
	produce(e, 10);
	harness_stop(&e->recov, SIGTERM);
	start_recoveryd(e);
	tsync_node_free(e->owner[1]);
	e->owner[1] = NULL;
	snprintf(body, sizeof(body), "{\"from\":%.6f,\"to\":%.6f}", (double)t0 / 1e6 - 1,
	         (double)real_us() / 1e6 + 1);
	assert_int_equal(api(e, "POST", "/v1/recover", body, true, &j), 202);
	json_decref(j);
	{
		int two = 2;
		assert_true(run_until(e, completed_owner1_twice, &two, WAIT_MS));
	}
	harness_stop(&e->recov, SIGKILL);
	start_recoveryd(e);
	start_owner(e, 1);
	assert_true(run_until(e, is_complete, "OWNER2", WAIT_MS));
	quiet(e, 1500);
	/* r1's request (asked while it was away) and r2's, each once. */
	{
		int r2 = 0;
		for (int i = 0; i < e->n_req; i++) {
			if (strcmp(e->req[i].entity, "OWNER2") != 0)
				continue;
			assert_int_equal(e->req[i].duplicates, 0);
			if (strstr(e->req[i].request, "/r2.")) {
				r2++;
				assert_true(e->req[i].entries >= 10 * THINGS);
			}
		}
		assert_int_equal(r2, 1);
		assert_int_equal(requests_of(e, "OWNER2"), 2);
	}
	wait_owner_state(e, "r2", "OWNER2", "answered");
}

/* A data store that answers recovery_data_request "done" without the
 * answer's content `empty` times, then with a (made up) content. */
struct empty_store {
	int calls, empty;
};

static int empty_answer(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct empty_store *es = ud;

	(void)node;
	(void)req;
	if (++es->calls > es->empty)
		*result = strdup("{\"chunks\":1,\"entries\":0,\"trimmed\":false}");
	return 0;
}

static bool calls_at_least(struct env *e, const void *arg)
{
	const int *const *w = arg;

	(void)e;
	return *w[0] >= *w[1];
}

/*
 * A data store that answers "done" without its answer's content (as one
 * that restarted between taking the request and keeping its answer does)
 * is asked again, at most 3 times: asked 4 times in all, then failed in
 * the ledger, and not asked again. One that gives the content at its third
 * answer is answered after 3 asks.
 */
static void test_owner_answers_empty(void **state)
{
	struct env *e = *state;
	struct empty_store es = {0, 1000};
	char body[128];
	json_t *j = NULL;
	int four = 4, three = 3;
	const int *w4[] = {&es.calls, &four}, *w3[] = {&es.calls, &three};

	assert_int_equal(tsync_node_on_request(e->owner[1], "recovery_data_request", empty_answer, &es), 0);
	start_recoveryd(e);
	produce(e, 3);
	snprintf(body, sizeof(body), "{\"from\":%.6f,\"to\":%.6f}", (double)real_us() / 1e6 - 3600,
	         (double)real_us() / 1e6 + 1);
	assert_int_equal(api(e, "POST", "/v1/recover", body, true, &j), 202);
	json_decref(j);
	wait_owner_state(e, "r1", "OWNER2", "failed");
	wait_owner_state(e, "r1", "OWNER1", "answered");
	assert_true(run_until(e, calls_at_least, w4, WAIT_MS));
	quiet(e, 1500);
	assert_int_equal(es.calls, 4);

	es.calls = 0;
	es.empty = 2;
	assert_int_equal(api(e, "POST", "/v1/recover", body, true, &j), 202);
	json_decref(j);
	wait_owner_state(e, "r2", "OWNER2", "answered");
	assert_true(run_until(e, calls_at_least, w3, WAIT_MS));
	quiet(e, 1500);
	assert_int_equal(es.calls, 3);
}

/* POST /v1/recover: signed only, the fields checked, 202 with the data stores asked. */
static void test_http(void **state)
{
	struct env *e = *state;
	json_t *j = NULL;
	char body[128];
	long st;

	start_recoveryd(e);
	produce(e, 3);
	snprintf(body, sizeof(body), "{\"from\":%.6f,\"to\":%.6f}", (double)real_us() / 1e6 - 3600,
	         (double)real_us() / 1e6 + 1);
	st = api(e, "POST", "/v1/recover", body, false, &j);
	assert_true(st == 401 || st == 403);
	json_decref(j);
	st = api(e, "POST", "/v1/recover", "{\"from\":\"yesterday\",\"to\":2}", true, &j);
	assert_int_equal(st, 400);
	assert_non_null(strstr(json_string_value(json_object_get(j, "message")), "from"));
	json_decref(j);
	st = api(e, "POST", "/v1/recover", "{\"from\":20}", true, &j);
	assert_int_equal(st, 400);
	assert_non_null(strstr(json_string_value(json_object_get(j, "message")), "to"));
	json_decref(j);
	st = api(e, "POST", "/v1/recover", "{\"from\":20,\"to\":10}", true, &j);
	assert_int_equal(st, 400);
	json_decref(j);
	st = api(e, "POST", "/v1/recover", "not json", true, &j);
	assert_int_equal(st, 400);
	json_decref(j);
	assert_int_equal(requests_of(e, "OWNER1") + requests_of(e, "OWNER2"), 0);

	st = api(e, "POST", "/v1/recover", body, true, &j);
	assert_int_equal(st, 202);
	assert_string_equal(json_string_value(json_object_get(j, "id")), "r1");
	assert_int_equal(json_array_size(json_object_get(j, "owners")), 2);
	assert_string_equal(json_string_value(json_array_get(json_object_get(j, "owners"), 0)), "OWNER1");
	assert_string_equal(json_string_value(json_array_get(json_object_get(j, "owners"), 1)), "OWNER2");
	json_decref(j);
	assert_true(run_until(e, both_complete, NULL, WAIT_MS));
	quiet(e, 500);
	assert_int_equal(requests_of(e, "OWNER1"), 1);
	assert_int_equal(requests_of(e, "OWNER2"), 1);
	/* thingsctl recover: the recovery controller found in site.conf, signed. */
	{
		char cmd[1200], out[512] = "";
		const char *ctl = getenv("THINGSCTL");
		FILE *p;
		size_t got;

		assert_non_null(ctl);
		snprintf(cmd, sizeof(cmd), "'%s' -c '%s' recover --from now-2h --to now 2>&1", ctl,
		         e->site_path);
		p = popen(cmd, "r");
		assert_non_null(p);
		got = fread(out, 1, sizeof(out) - 1, p);
		out[got] = '\0';
		assert_int_equal(pclose(p), 0);
		assert_non_null(strstr(out, "recovery r2: asked OWNER1 OWNER2, delivered to PUSH"));
		snprintf(cmd, sizeof(cmd), "'%s' -c '%s' recover --from now --to now-1h 2>&1", ctl,
		         e->site_path);
		p = popen(cmd, "r");
		assert_non_null(p);
		got = fread(out, 1, sizeof(out) - 1, p);
		assert_int_equal(WEXITSTATUS(pclose(p)), 2);
	}
	assert_true(run_until(e, both_twice, NULL, WAIT_MS));
	quiet(e, 500);
	assert_int_equal(requests_of(e, "OWNER1"), 2);
	assert_int_equal(requests_of(e, "OWNER2"), 2);
	{
		char *text = NULL;
		char base[64];
		snprintf(base, sizeof(base), "http://127.0.0.1:%u", e->http);
		assert_int_equal(harness_http(base, "GET", "/metrics", NULL, NULL, NULL, NULL, 20000, &text), 200);
		assert_non_null(text);
		assert_non_null(strstr(text, "thingsync_recoveryd_recoveries_total 2\n"));
		assert_non_null(strstr(text, "thingsync_recoveryd_internet_lost 0\n"));
		free(text);
	}
}

/*
 * OWNER1 alone (OWNER2 stays away), recoveryd started, and OWNER1's things
 * each changed `per_thing` times, every version counted as it reaches PUSH
 * (one version counter per owner); returns when the changes began.
 */
static int64_t owner1_window(struct env *e, int per_thing)
{
	int64_t t0;

	e->max_version = (uint64_t)THINGS * per_thing + 16;
	for (int t = 0; t < THINGS; t++)
		e->versions[0][t] = calloc(e->max_version + 1, sizeof(unsigned));
	tsync_node_free(e->owner[1]);
	e->owner[1] = NULL;
	start_recoveryd(e);
	t0 = real_us();
	for (int i = 1; i <= per_thing; i++)
		for (int k = 0; k < THINGS; k++) {
			char name[8];
			tsync_value v = tsync_int(i);
			snprintf(name, sizeof(name), "a%d", k);
			assert_int_equal(tsync_node_set(e->owner[0], name, &v), 0);
		}
	assert_int_equal(tsync_node_commit(e->owner[0]), 0);
	return t0;
}

/*
 * A window of 100,000 changes is recovered within the datagram limit, every
 * chunk once and every change once; prints the changes recovered per second.
 */
static void test_chunking(void **state)
{
	struct env *e = *state;
	/* RECOVERY_PER_THING: a smaller window, e.g. to profile it under callgrind. */
	const int per_thing = getenv("RECOVERY_PER_THING") ? atoi(getenv("RECOVERY_PER_THING")) : 25000;
	int64_t t0, asked;
	char body[128];
	json_t *j = NULL;
	struct received *r;
	double secs;

	t0 = owner1_window(e, per_thing);
	snprintf(body, sizeof(body), "{\"from\":%.6f,\"to\":%.6f}", (double)t0 / 1e6 - 1,
	         (double)real_us() / 1e6 + 1);
	asked = real_us();
	assert_int_equal(api(e, "POST", "/v1/recover", body, true, &j), 202);
	json_decref(j);
	assert_true(run_until(e, is_complete, "OWNER1", 10 * WAIT_MS));
	quiet(e, 1000);
	r = only_request(e, "OWNER1");
	assert_non_null(r);
	assert_int_equal(requests_of(e, "OWNER1"), 1);
	assert_int_equal(r->duplicates, 0);
	assert_int_equal(r->entries, (long long)THINGS * per_thing);
	for (int t = 0; t < THINGS; t++) {
		uint64_t once = 0;
		for (uint64_t v = 0; v <= e->max_version; v++) {
			assert_true(e->versions[0][t][v] <= 1);
			once += e->versions[0][t][v];
		}
		if (once != (uint64_t)per_thing)
			fprintf(stderr, "thing a%d: %" PRIu64 " versions once\n", t, once);
		assert_int_equal(once, per_thing);
	}
	assert_true(e->longest_chunk < 1400);
	secs = (double)(e->last_chunk_us - asked) / 1e6;
	printf(
	    "recovered %lld changes in %lld chunks (longest %zu bytes of JSON, max_datagram 1400) in %.2f s "
	    "(the first chunk after %.2f s): %.0f changes/s\n",
	    r->entries, r->chunks, e->longest_chunk, secs, (double)(e->first_chunk_us - asked) / 1e6,
	    (double)r->entries / secs);
}

/* --- end to end: thingsync-pushd and thingsync-collectord --------------------------- */

static const char *bin(const char *env, const char *dflt)
{
	const char *p = getenv(env);
	return p ? p : dflt;
}

static long get_url(const char *url, json_t **out)
{
	char *data = NULL;
	long status = harness_http(url, "GET", "", NULL, NULL, NULL, NULL, 20000, out ? &data : NULL);

	if (out)
		*out = data ? json_loads(data, 0, NULL) : NULL;
	free(data);
	return status;
}

static json_t *pushd_status(struct env *e)
{
	char url[128];
	json_t *j = NULL;

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/status", e->pushd_http);
	if (get_url(url, &j) != 200) {
		json_decref(j);
		return NULL;
	}
	return j;
}

static bool pushd_up(struct env *e, const void *arg)
{
	json_t *j = pushd_status(e);

	(void)arg;
	json_decref(j);
	return j != NULL;
}

static bool collector_up(struct env *e, const void *arg)
{
	char url[128];

	(void)arg;
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/health", e->col_port);
	return get_url(url, NULL) == 200;
}

static void start_collector(struct env *e)
{
	char listen[64], db[700];
	const char *argv[] = {bin("COLLECTORD", "thingsync-collectord"),
	                      "--site",
	                      e->site_path,
	                      "--listen",
	                      listen,
	                      "--db",
	                      db,
	                      NULL};

	snprintf(listen, sizeof(listen), "127.0.0.1:%u", e->col_port);
	snprintf(db, sizeof(db), "sqlite:%s/collector.db", e->dir);
	e->collector = spawn(e, "collector.log", argv);
	assert_true(run_until(e, collector_up, NULL, WAIT_MS));
}

static void start_pushd(struct env *e)
{
	char http_listen[64], state[700];
	const char *argv[] = {bin("PUSHD", "thingsync-pushd"),
	                      "--site",
	                      e->site_path,
	                      "--controller",
	                      "PUSH",
	                      "--state-dir",
	                      state,
	                      "--http",
	                      http_listen,
	                      "--retry-min-ms",
	                      "20",
	                      "--retry-max-ms",
	                      "300",
	                      "--heartbeat-ms",
	                      "200",
	                      NULL};

	snprintf(http_listen, sizeof(http_listen), "127.0.0.1:%u", e->pushd_http);
	snprintf(state, sizeof(state), "%s/pushd", e->dir);
	e->pushd = spawn(e, "pushd.log", argv);
	assert_true(run_until(e, pushd_up, NULL, WAIT_MS));
}

/* Each owner changes each thing once, and the change is written down. */
static void produce_round(struct env *e)
{
	static int64_t next = 1;

	for (int o = 0; o < N_OWNERS; o++)
		for (int k = 0; k < THINGS; k++) {
			char name[8];
			tsync_value v = tsync_int(next++);
			tsync_thing_state st;

			snprintf(name, sizeof(name), "%c%d", 'a' + o, k);
			assert_int_equal(tsync_node_set(e->owner[o], name, &v), 0);
			assert_int_equal(tsync_node_get(e->owner[o], name, &st), 0);
			if (e->n_changes == e->cap_changes) {
				e->cap_changes = e->cap_changes ? 2 * e->cap_changes : 1024;
				e->changes = realloc(e->changes, e->cap_changes * sizeof(*e->changes));
				assert_non_null(e->changes);
			}
			snprintf(e->changes[e->n_changes].thing, sizeof(e->changes[0].thing), "%s", name);
			e->changes[e->n_changes].boot = st.owner_boot;
			e->changes[e->n_changes++].version = st.version;
		}
}

/* The changes of the owners' things the collector holds, by path. */
struct held {
	long long rows, live, recovery, unknown, missing, extra;
	long long restarts; /* rows of the values an owner announced again at its restart */
};

static void collector_holds(struct env *e, struct held *h)
{
	char path[700];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	unsigned char *seen = calloc(e->n_changes + 1, 1);

	memset(h, 0, sizeof(*h));
	assert_non_null(seen);
	snprintf(path, sizeof(path), "%s/collector.db", e->dir);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	sqlite3_busy_timeout(db, 10000);
	assert_int_equal(
	    sqlite3_prepare_v2(db,
	                       "SELECT thing, owner_boot, version, via FROM measurements WHERE owner IN "
	                       "('OWNER1','OWNER2')",
	                       -1, &st, NULL),
	    SQLITE_OK);
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *thing = (const char *)sqlite3_column_text(st, 0);
		uint64_t boot = (uint64_t)sqlite3_column_int64(st, 1),
		         ver = (uint64_t)sqlite3_column_int64(st, 2);
		const char *via = (const char *)sqlite3_column_text(st, 3);
		size_t i;

		h->rows++;
		if (!strcmp(via, "live"))
			h->live++;
		else if (!strcmp(via, "recovery"))
			h->recovery++;
		else
			h->unknown++;
		for (i = 0; i < e->n_changes; i++)
			if (e->changes[i].version == ver && e->changes[i].boot == boot &&
			    !strcmp(e->changes[i].thing, thing))
				break;
		if (i == e->n_changes) {
			bool again = false;
			for (int k = 0; k < e->n_restart_boots; k++)
				again |= e->restart_boots[k] == boot;
			h->extra += !again;
			h->restarts += again;
		} else
			seen[i]++;
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	for (size_t i = 0; i < e->n_changes; i++) {
		assert_true(seen[i] <= 1); /* the collector's identity index makes two impossible */
		h->missing += seen[i] == 0;
	}
	free(seen);
}

static bool all_held(struct env *e, const void *arg)
{
	struct held h;
	json_t *s = pushd_status(e);
	bool drained =
	    s && json_integer_value(json_object_get(json_object_get(s, "journal"), "entries")) == 0;

	(void)arg;
	json_decref(s);
	if (!drained)
		return false;
	collector_holds(e, &h);
	return h.missing == 0;
}

static bool recovery_answered(struct env *e, const void *arg)
{
	json_t *s = status_of(e), *rec, *o;
	const char *k;
	bool all = false;

	(void)arg;
	rec = json_array_get(json_object_get(json_object_get(s, "ledger"), "recoveries"), 0);
	if (rec) {
		all = json_object_size(json_object_get(rec, "owners")) == N_OWNERS;
		json_object_foreach(json_object_get(rec, "owners"), k, o) all =
		    all && !strcmp(json_string_value(json_object_get(o, "state")), "answered");
	}
	json_decref(s);
	return all;
}

static bool lost_is(struct env *e, const void *arg)
{
	return ledger_lost(e) == *(const bool *)arg;
}

struct elapsed {
	int64_t since_us, us;
};

static bool elapsed(struct env *e, const void *arg)
{
	const struct elapsed *el = arg;

	(void)e;
	return real_us() - el->since_us >= el->us;
}

static bool owners_settled(struct env *e, const void *arg)
{
	(void)arg;
	for (int o = 0; o < N_OWNERS; o++)
		if (tsync_node_unsettled(e->owner[o]))
			return false;
	return true;
}

/* Waits until pushd has drained its journal and the collector holds every
 * change the owners made, then checks each is there once and nothing else. */
static void assert_held_once(struct env *e, struct held *h)
{
	assert_true(run_until(e, all_held, NULL, 4 * WAIT_MS));
	collector_holds(e, h);
	assert_int_equal(h->missing, 0);
	assert_int_equal(h->extra, 0);
	assert_int_equal(h->unknown, 0);
	assert_int_equal(h->rows, (long long)e->n_changes + h->restarts);
}

/* The window start of recoveryd's first recovery. */
static int64_t first_recovery_from(struct env *e)
{
	json_t *s = status_of(e);
	json_t *rec = json_array_get(json_object_get(json_object_get(s, "ledger"), "recoveries"), 0);
	int64_t from = (int64_t)json_integer_value(json_object_get(rec, "from_us"));

	assert_non_null(rec);
	json_decref(s);
	return from;
}

/*
 * Issue 13, scenario 1: pushd's Pi is off (kill -9, not restarted) while
 * the owners change every thing many times; pushd comes back, recoveryd
 * sees the outage end and asks the data stores, and the collector holds
 * every intermediate change exactly once. Prints what arrives without
 * recovery (only the last values) beside it.
 */
static void test_e2e_pushd_down(void **state)
{
	struct env *e = *state;
	struct held h;
	bool yes = true, no = false;
	struct elapsed el;
	size_t before, during;

	start_collector(e);
	start_pushd(e);
	start_recoveryd(e);
	for (int i = 0; i < 5; i++) {
		produce_round(e);
		assert_true(run_until(e, owners_settled, NULL, WAIT_MS));
	}
	assert_true(run_until(e, all_held, NULL, WAIT_MS));
	before = e->n_changes;

	harness_stop(&e->pushd, SIGKILL);
	assert_true(run_until(e, lost_is, &yes, WAIT_MS));
	el.since_us = real_us();
	el.us = (e2e_threshold_s + 1) * 1000000LL;
	for (int i = 0; i < E2E_ROUNDS; i++) {
		produce_round(e);
		harness_run_until(e->base, never, NULL, 2);
	}
	for (int o = 0; o < N_OWNERS; o++)
		assert_int_equal(tsync_node_commit(e->owner[o]), 0);
	during = e->n_changes - before;
	/* The outage must outlast recovery_threshold for the recovery to be asked. */
	run_until(e, elapsed, &el, WAIT_MS);

	start_pushd(e);
	assert_true(run_until(e, lost_is, &no, WAIT_MS));
	assert_true(run_until(e, recovery_answered, NULL, WAIT_MS));
	assert_held_once(e, &h);
	assert_true(h.recovery > 0);
	printf(
	    "owners made %zu changes (%zu while pushd was down); the collector holds %lld, each once: "
	    "%lld came live, %lld by recovery; without recovery (only the last values) it would hold %lld\n",
	    e->n_changes, during, h.rows, h.live, h.recovery, h.live);
}

static void stop_collector(struct env *e)
{
	int status = harness_stop(&e->collector, SIGTERM);

	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/*
 * Issue 13, scenarios 2 and 3: the internet (the collector) is down while
 * pushd runs. A short outage asks nothing. A long one, with recoveryd
 * killed -9 and restarted in the middle, keeps its first loss time (pushd's
 * first failed POST); once the collector is back pushd's journal has
 * everything it heard, recovery adds what the mesh skipped, and nothing is
 * stored twice.
 */
static void test_e2e_collector_down(void **state)
{
	struct env *e = *state;
	struct held h;
	bool yes = true, no = false;
	struct elapsed el;
	int64_t lost;

	start_collector(e);
	start_pushd(e);
	start_recoveryd(e);
	produce_round(e);
	assert_true(run_until(e, all_held, NULL, WAIT_MS));

	/* Short: the collector back at once (well within the threshold). */
	stop_collector(e);
	produce_round(e);
	assert_true(run_until(e, lost_is, &yes, WAIT_MS));
	start_collector(e);
	assert_true(run_until(e, lost_is, &no, WAIT_MS));
	assert_int_equal(ledger_int(e, "outages_short"), 1);
	assert_int_equal(ledger_int(e, "recoveries_total"), 0);

	/* Long, with a reboot of recoveryd in the middle. */
	stop_collector(e);
	produce_round(e);
	assert_true(run_until(e, lost_is, &yes, WAIT_MS));
	lost = ledger_int(e, "lost_us");
	el.since_us = lost;
	el.us = (e2e_threshold_s + 1) * 1000000LL;
	harness_stop(&e->recov, SIGKILL);
	for (int i = 0; i < E2E_ROUNDS; i++) {
		produce_round(e);
		harness_run_until(e->base, never, NULL, 2);
	}
	start_recoveryd(e);
	assert_true(ledger_lost(e));
	assert_int_equal(ledger_int(e, "lost_us"), lost);
	run_until(e, elapsed, &el, 2 * WAIT_MS);
	start_collector(e);
	assert_true(run_until(e, lost_is, &no, WAIT_MS));
	assert_true(run_until(e, recovery_answered, NULL, WAIT_MS));
	assert_int_equal(first_recovery_from(e), lost);
	assert_held_once(e, &h);
	assert_int_equal(ledger_int(e, "recoveries_total"), 1);
	printf("collector down with pushd running: owners made %zu changes; the collector holds %lld, each "
	       "once: "
	       "%lld through pushd's journal, %lld added by recovery\n",
	       e->n_changes, h.rows, h.live, h.recovery);
}

/*
 * The push Pi off with recoveryd on it (both killed -9, nobody saw the
 * push controller go): recoveryd counts the outage from its last alive
 * time when it starts again, and the changes made meanwhile reach the
 * collector once pushd is back.
 */
static void test_e2e_gateway_down(void **state)
{
	struct env *e = *state;
	struct held h;
	struct elapsed el;
	int64_t alive;

	start_collector(e);
	start_pushd(e);
	start_recoveryd(e);
	produce_round(e);
	assert_true(run_until(e, all_held, NULL, WAIT_MS));
	alive = ledger_int(e, "alive_us");
	harness_stop(&e->recov, SIGKILL);
	harness_stop(&e->pushd, SIGKILL);
	el.since_us = real_us();
	el.us = (e2e_threshold_s + 1) * 1000000LL;
	for (int i = 0; i < E2E_ROUNDS; i++) {
		produce_round(e);
		harness_run_until(e->base, never, NULL, 2);
	}
	run_until(e, elapsed, &el, WAIT_MS);
	start_recoveryd(e);
	assert_true(ledger_lost(e)); /* down since it was last alive, until pushd is heard */
	assert_true(ledger_int(e, "lost_us") >= alive);
	start_pushd(e);
	assert_true(run_until(e, recovery_answered, NULL, WAIT_MS));
	assert_true(first_recovery_from(e) <= el.since_us);
	assert_held_once(e, &h);
	printf("gateway (pushd and recoveryd) down: owners made %zu changes; the collector holds %lld, each "
	       "once: "
	       "%lld live, %lld by recovery\n",
	       e->n_changes, h.rows, h.live, h.recovery);
}

/*
 * A data store and pushd killed -9 together, again and again, at random
 * moments while the store sends a recovery window's chunks to pushd: the
 * chunks the store's node resumes at its start carry on to completion with
 * their callback, so a chunk whose outcome pushd's own restart left unknown
 * is sent again, and the collector holds every change once.
 */
static void test_e2e_store_and_pushd_killed(void **state)
{
	struct env *e = *state;
	struct held h;
	bool yes = true;
	struct elapsed el;
	unsigned seed = (unsigned)real_us();

	printf("seed %u\n", seed);
	srand(seed);
	start_collector(e);
	start_pushd(e);
	start_recoveryd(e);
	produce_round(e);
	assert_true(run_until(e, all_held, NULL, WAIT_MS));

	harness_stop(&e->pushd, SIGKILL);
	assert_true(run_until(e, lost_is, &yes, WAIT_MS));
	el.since_us = real_us();
	el.us = (e2e_threshold_s + 1) * 1000000LL;
	for (int i = 0; i < 4 * E2E_ROUNDS; i++) {
		produce_round(e);
		harness_run_until(e->base, never, NULL, 1);
	}
	for (int o = 0; o < N_OWNERS; o++)
		assert_int_equal(tsync_node_commit(e->owner[o]), 0);
	run_until(e, elapsed, &el, WAIT_MS);

	start_pushd(e);
	/* OWNER1 answered the request: its chunks are going. */
	wait_owner_state(e, "r1", "OWNER1", "answered");
	for (int k = 0; k < 3; k++) {
		harness_run_until(e->base, never, NULL, rand() % 120);
		tsync_node_abandon(e->owner[0]);
		harness_stop(&e->pushd, SIGKILL);
		start_owner(e, 0);
		e->restart_boots[e->n_restart_boots++] = tsync_node_boot(e->owner[0]);
		start_pushd(e);
	}
	assert_held_once(e, &h);
	assert_true(h.restarts <= 3 * THINGS);
	printf(
	    "data store and pushd killed -9 together 3 times while recovering: owners made %zu changes; the "
	    "collector holds %lld, each once: %lld live, %lld by recovery\n",
	    e->n_changes, h.rows, h.live, h.recovery);
}

static bool probes_ok(struct env *e, const void *arg)
{
	json_t *s = status_of(e);
	bool ok = s && json_integer_value(json_object_get(json_object_get(s, "counters"), "probes_ok")) > 0;

	(void)arg;
	json_decref(s);
	return ok;
}

/* recoveryd's own probe of the collector's /health: an outage while it fails. */
static void test_e2e_probe(void **state)
{
	struct env *e = *state;
	char url[128];
	bool yes = true, no = false;
	json_t *s;

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/health", e->col_port);
	recov_extra[0] = "--probe";
	recov_extra[1] = url;
	recov_extra[2] = "--probe-ms";
	recov_extra[3] = "200";
	start_collector(e);
	start_recoveryd(e);
	assert_true(run_until(e, probes_ok, NULL, WAIT_MS));
	assert_false(ledger_lost(e));
	stop_collector(e);
	assert_true(run_until(e, lost_is, &yes, WAIT_MS));
	s = status_of(e);
	assert_non_null(json_object_get(json_object_get(json_object_get(s, "ledger"), "causes"), "probe"));
	assert_true(json_integer_value(json_object_get(json_object_get(s, "counters"), "probes_failed")) > 0);
	json_decref(s);
	start_collector(e);
	assert_true(run_until(e, lost_is, &no, WAIT_MS));
	assert_int_equal(ledger_int(e, "outages"), 1);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest all[] = {
	    cmocka_unit_test_setup_teardown(test_threshold, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kill9, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kill9_random, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_owner_down, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_http, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_owner_answers_empty, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_chunking, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_owner_restart_mid_send, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_e2e_pushd_down, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_e2e_collector_down, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_e2e_probe, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_e2e_gateway_down, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_e2e_store_and_pushd_killed, setup, teardown),
	};
	struct CMUnitTest sel[sizeof(all) / sizeof(all[0])];
	size_t n = 0;
	int r;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	e2e = argc >= 2 && !strncmp(argv[1], "test_e2e", 8);
	if (argc >= 2 && !strcmp(argv[1], "test_e2e_collector_down"))
		e2e_threshold_s = 10;
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (argc < 2 || !strcmp(argv[1], all[i].name))
			sel[n++] = all[i];
	r = _cmocka_run_group_tests("recovery", sel, n, NULL, NULL);
	curl_global_cleanup();
	return r;
}
