/*
 * Unit tests for the history of owned things (lib/store/history.c) and its
 * node API: recording, windows, trimming by age and size, per-thing bounds,
 * the trimmed window reported, survival across a reopen, loss of the
 * uncommitted part in a crash, and the site.conf keys.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <event2/event.h>
#include <jansson.h>

#include <thingsync/thingsync.h>

#include "node/node.h"
#include "site/site.h"
#include "store/history.h"
#include "store/store.h"

#define S 1000000LL /* one second in microseconds */

struct fixture {
	char tmp[64];
	char dir[128];
	struct logger log;
	struct store *store;
	struct history *hist;
	int64_t now; /* the history's clock */
	int errors;
};

static void capture_log(void *ud, tsync_log_level level, const char *line)
{
	struct fixture *f = ud;

	(void)line;
	if (level == TSYNC_LOG_ERROR)
		f->errors++;
}

static int64_t fake_now(void *ud)
{
	return ((struct fixture *)ud)->now;
}

static void open_both(struct fixture *f, const tsync_history_limits *lim)
{
	assert_int_equal(store__open(f->dir, 0, &f->log, &f->store), 0);
	assert_int_equal(history__open(f->store, lim, &f->log, &f->hist), 0);
	history__set_clock(f->hist, fake_now, f);
}

static void close_both(struct fixture *f)
{
	history__close(f->hist);
	store__close(f->store);
	f->hist = NULL;
	f->store = NULL;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->tmp, sizeof(f->tmp), "/tmp/test_history.XXXXXX");
	if (!mkdtemp(f->tmp)) {
		free(f);
		return -1;
	}
	snprintf(f->dir, sizeof(f->dir), "%s/state", f->tmp);
	f->log.fn = capture_log;
	f->log.userdata = f;
	f->log.level = TSYNC_LOG_DEBUG;
	*state = f;
	return 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	if (f->hist || f->store)
		close_both(f);
	nftw(f->tmp, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* What a window handed to the callback. */
struct seen {
	size_t n;
	char thing[64];
	int64_t time[4096];
	int64_t ival[4096];
	uint64_t version[4096];
	size_t stop_after; /* 0: never stop */
};

static int collect(void *ud, const tsync_history_entry *e)
{
	struct seen *s = ud;

	if (s->n < 4096) {
		s->time[s->n] = e->time_us;
		s->ival[s->n] = e->value.type == TSYNC_TYPE_INT ? e->value.u.i : -1;
		s->version[s->n] = e->version;
		snprintf(s->thing, sizeof(s->thing), "%s", e->thing);
	}
	s->n++;
	return s->stop_after && s->n >= s->stop_after;
}

static void record_ints(struct fixture *f, const char *thing, int64_t t0, int64_t step, uint64_t v0, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		tsync_value v = tsync_int((int64_t)(v0 + i));
		assert_int_equal(history__record(f->hist, thing, t0 + (int64_t)i * step, 1, v0 + i, &v), 0);
	}
}

/* Every change is recorded with its time, boot, version and value; a window
 * is the entries between its ends, both included, in time order; only what
 * is committed is read. */
static void test_record_and_window(void **state)
{
	struct fixture *f = *state;
	static struct seen s;
	tsync_history_window w;
	tsync_history_stats st;
	tsync_value str = tsync_string("open");

	open_both(f, NULL);
	record_ints(f, "t1", 1 * S, S, 1, 100); /* t1 at 1..100 s, values 1..100 */
	assert_int_equal(history__record(f->hist, "t2", 50 * S, 7, 3, &str), 0);

	/* Staged, not committed: not in a window yet, counted as staged. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(history__query(f->hist, "t1", 0, 1000 * S, collect, &s, &w), 0);
	assert_int_equal(s.n, 0);
	history__stats(f->hist, &st);
	assert_true(st.enabled);
	assert_int_equal(st.staged, 101);
	assert_int_equal(st.entries, 0);
	assert_true(store__dirty(f->store));

	assert_int_equal(store__commit(f->store), 0);
	history__stats(f->hist, &st);
	assert_int_equal(st.staged, 0);
	assert_int_equal(st.entries, 101);
	assert_true(st.bytes > 101 * 20);
	assert_int_equal(st.oldest_us, 1 * S);
	assert_int_equal(st.trimmed, 0);

	memset(&s, 0, sizeof(s));
	assert_int_equal(history__query(f->hist, "t1", 10 * S, 20 * S, collect, &s, &w), 0);
	assert_int_equal(s.n, 11);
	assert_int_equal(w.entries, 11);
	assert_false(w.trimmed);
	for (size_t i = 0; i < 11; i++) {
		assert_int_equal(s.time[i], (int64_t)(10 + i) * S);
		assert_int_equal(s.ival[i], 10 + (int64_t)i);
		assert_int_equal(s.version[i], 10 + i);
	}
	/* Every thing: t1's 100 and t2's string. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(history__query(f->hist, NULL, 0, 1000 * S, collect, &s, &w), 0);
	assert_int_equal(s.n, 101);
	assert_string_equal(s.thing, "t2");
	/* A window with no change in it is empty and not trimmed: "no data" is true here. */
	assert_int_equal(history__query(f->hist, "t1", 200 * S, 300 * S, NULL, NULL, &w), 0);
	assert_int_equal(w.entries, 0);
	assert_false(w.trimmed);
	/* The callback stops the scan. */
	memset(&s, 0, sizeof(s));
	s.stop_after = 3;
	assert_int_equal(history__query(f->hist, NULL, 0, 1000 * S, collect, &s, &w), 0);
	assert_int_equal(s.n, 3);
	assert_int_equal(history__query(f->hist, "t1", 5, 4, NULL, NULL, &w), -EINVAL);
}

/* The same (boot, version) persisted again is not a second change. */
static void test_same_version_once(void **state)
{
	struct fixture *f = *state;
	tsync_value v = tsync_int(5);
	tsync_history_stats st;

	open_both(f, NULL);
	assert_int_equal(history__record(f->hist, "t", 1 * S, 2, 9, &v), 0);
	assert_int_equal(history__record(f->hist, "t", 2 * S, 2, 9, &v), 0);
	assert_int_equal(store__commit(f->store), 0);
	assert_int_equal(history__record(f->hist, "t", 3 * S, 2, 9, &v), 0);
	assert_int_equal(history__record(f->hist, "t", 3 * S, 1, 50, &v), 0); /* an older boot */
	history__stats(f->hist, &st);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.staged, 0);
}

/* The age bound trims the oldest at the commit, and the trimmed window is
 * reported as trimmed, with its end, in the answer and in the counters. */
static void test_trim_by_age(void **state)
{
	struct fixture *f = *state;
	static struct seen s;
	tsync_history_limits lim = {50 * 1000, 0}; /* 50 s */
	tsync_history_window w;
	tsync_history_stats st;

	open_both(f, &lim);
	f->now = 100 * S;
	record_ints(f, "t", 1 * S, S, 1, 100); /* 1..100 s */
	assert_int_equal(store__commit(f->store), 0);

	history__stats(f->hist, &st);
	assert_int_equal(st.entries, 51); /* 50..100 s */
	assert_int_equal(st.trimmed, 49); /* 1..49 s */
	assert_int_equal(st.oldest_us, 50 * S);
	assert_int_equal(st.trimmed_through_us, 49 * S);

	memset(&s, 0, sizeof(s));
	assert_int_equal(history__query(f->hist, "t", 0, 100 * S, collect, &s, &w), 0);
	assert_int_equal(s.n, 51);
	assert_int_equal(s.time[0], 50 * S);
	assert_true(w.trimmed);
	assert_int_equal(w.trimmed_from_us, 0);
	assert_int_equal(w.trimmed_to_us, 49 * S);
	assert_int_equal(w.held_from_us, 50 * S);
	/* Entirely in the trimmed part: empty, yet trimmed, not "no data". */
	assert_int_equal(history__query(f->hist, "t", 10 * S, 20 * S, NULL, NULL, &w), 0);
	assert_int_equal(w.entries, 0);
	assert_true(w.trimmed);
	assert_int_equal(w.trimmed_to_us, 20 * S);
	/* After what was trimmed: whole. */
	assert_int_equal(history__query(f->hist, "t", 60 * S, 70 * S, NULL, NULL, &w), 0);
	assert_int_equal(w.entries, 11);
	assert_false(w.trimmed);
	/* Every thing: the same report. */
	assert_int_equal(history__query(f->hist, NULL, 0, 100 * S, NULL, NULL, &w), 0);
	assert_true(w.trimmed);
	assert_int_equal(w.trimmed_to_us, 49 * S);

	/* Time goes on: the next commit trims what has aged since. */
	f->now = 160 * S;
	record_ints(f, "t", 160 * S, S, 1000, 1);
	assert_int_equal(store__commit(f->store), 0);
	history__stats(f->hist, &st);
	assert_int_equal(st.entries, 1); /* 160 s; 50..100 s are over 50 s old */
	assert_int_equal(st.trimmed, 100);
	assert_int_equal(st.trimmed_through_us, 100 * S);
	assert_int_equal(f->errors, 0);
}

/* The controller's size bound: held bytes stay under it, the oldest go first. */
static void test_trim_by_size(void **state)
{
	struct fixture *f = *state;
	static struct seen s;
	tsync_history_limits lim = {0, 8192};
	tsync_history_stats st;
	tsync_history_window w;

	open_both(f, &lim);
	/* In ten commits, as a group-commit window would. */
	for (int c = 0; c < 10; c++) {
		record_ints(f, "chatty", (int64_t)c * 100 * S, S, (uint64_t)c * 100 + 1, 100);
		assert_int_equal(store__commit(f->store), 0);
		history__stats(f->hist, &st);
		assert_true(st.bytes <= 8192);
	}
	history__stats(f->hist, &st);
	assert_true(st.entries > 50);
	assert_true(st.entries < 1000);
	assert_int_equal(st.entries + st.trimmed, 1000);

	/* What is held is the newest, without a hole. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(history__query(f->hist, "chatty", 0, 2000 * S, collect, &s, &w), 0);
	assert_int_equal(s.n, st.entries);
	assert_int_equal(s.version[s.n - 1], 1000);
	assert_int_equal(s.version[0], 1000 - st.entries + 1);
	assert_int_equal(s.time[0], st.oldest_us);
	assert_true(w.trimmed);
	assert_int_equal(w.trimmed_to_us, st.oldest_us - S);
}

/* A thing's own bound trims it alone; a thing with history off records
 * nothing; over the controller's bound, the oldest of all things go. */
static void test_per_thing_bounds(void **state)
{
	struct fixture *f = *state;
	tsync_history_limits chatty = {0, 4096};
	tsync_history_window w;
	tsync_history_stats st;

	open_both(f, NULL);
	assert_int_equal(history__set_thing(f->hist, "chatty", false, &chatty), 0);
	assert_int_equal(history__set_thing(f->hist, "noisy", true, NULL), 0);
	/* quiet's changes are the oldest of all, yet chatty's bound trims only chatty. */
	record_ints(f, "quiet", 1 * S, S, 1, 10);
	record_ints(f, "chatty", 100 * S, S, 1, 1000);
	record_ints(f, "noisy", 100 * S, S, 1, 1000);
	assert_int_equal(store__commit(f->store), 0);

	assert_int_equal(history__query(f->hist, "quiet", 0, 5000 * S, NULL, NULL, &w), 0);
	assert_int_equal(w.entries, 10);
	assert_false(w.trimmed);
	assert_int_equal(history__query(f->hist, "chatty", 0, 5000 * S, NULL, NULL, &w), 0);
	assert_true(w.entries < 1000);
	assert_true(w.trimmed);
	assert_int_equal(history__query(f->hist, "noisy", 0, 5000 * S, NULL, NULL, &w), 0);
	assert_int_equal(w.entries, 0);
	assert_false(w.trimmed);

	/* A controller bound below what is held: quiet's, the oldest, go first. */
	history__stats(f->hist, &st);
	chatty.max_bytes = st.bytes - 1;
	chatty.max_age_ms = 0;
	history__set_limits(f->hist, &chatty);
	record_ints(f, "chatty", 2000 * S, S, 5000, 1);
	assert_int_equal(store__commit(f->store), 0);
	assert_int_equal(history__query(f->hist, "quiet", 0, 5000 * S, NULL, NULL, &w), 0);
	assert_true(w.entries < 10);
	assert_true(w.trimmed);
	assert_int_equal(w.held_from_us, (int64_t)(10 - w.entries + 1) * S);
}

/* What was committed, counters and trimmed window included, is there after
 * a reopen; what was staged and abandoned (a crash) is not. */
static void test_reopen_and_crash(void **state)
{
	struct fixture *f = *state;
	tsync_history_limits lim = {50 * 1000, 0};
	tsync_history_stats st, st2;
	tsync_history_window w;

	open_both(f, &lim);
	f->now = 100 * S;
	record_ints(f, "t", 1 * S, S, 1, 100);
	assert_int_equal(store__commit(f->store), 0);
	history__stats(f->hist, &st);
	close_both(f);

	open_both(f, &lim);
	f->now = 100 * S;
	history__stats(f->hist, &st2);
	assert_int_equal(st2.entries, st.entries);
	assert_int_equal(st2.bytes, st.bytes);
	assert_int_equal(st2.trimmed, st.trimmed);
	assert_int_equal(st2.oldest_us, 50 * S);
	assert_int_equal(st2.trimmed_through_us, 49 * S);
	assert_int_equal(history__query(f->hist, "t", 0, 100 * S, NULL, NULL, &w), 0);
	assert_int_equal(w.entries, 51);
	assert_true(w.trimmed);
	/* The versions already kept are recognised after the reopen. */
	record_ints(f, "t", 100 * S, S, 100, 1);
	history__stats(f->hist, &st2);
	assert_int_equal(st2.staged, 0);

	/* A crash: five staged changes never reach the disk. */
	record_ints(f, "t", 101 * S, S, 101, 5);
	history__close(f->hist);
	store__abandon(f->store);
	f->hist = NULL;
	f->store = NULL;
	open_both(f, &lim);
	history__stats(f->hist, &st2);
	assert_int_equal(st2.entries, st.entries);
	assert_int_equal(history__query(f->hist, "t", 101 * S, 200 * S, NULL, NULL, &w), 0);
	assert_int_equal(w.entries, 0);
}

/* --- through the node API ------------------------------------------------------- */

static const char node_site[] = "[site]\n"
                                "name = h\n"
                                "state_commit_ms = 600000\n"
                                "[controller a]\n"
                                "host = 127.0.0.1\n"
                                "udp_port = %u\n"
                                "history = yes\n"
                                "history_max_bytes = 1M\n"
                                "[thing lamp]\n"
                                "owner = a\n"
                                "type = int\n"
                                "[thing chatty]\n"
                                "owner = a\n"
                                "type = int\n"
                                "history = no\n";

/* A free UDP port on 127.0.0.1, picked by the kernel. */
static unsigned free_port(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static tsync_node *node_start(struct fixture *f, tsync_site **site)
{
	tsync_node_options o;
	tsync_node *n = NULL;
	char path[192], text[1024];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/site.conf", f->tmp);
	snprintf(text, sizeof(text), node_site, free_port());
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
	assert_int_equal(tsync_site_load(path, site, NULL), 0);
	tsync_node_options_init(&o);
	o.site = *site;
	o.controller = "a";
	o.state_dir = f->dir;
	assert_int_equal(tsync_node_new(&o, &n), 0);
	return n;
}

/* site.conf turns it on; changes made through tsync_node_set() are in it
 * once committed; history = no keeps a thing out; a node abandoned (a
 * crash) loses the uncommitted changes and keeps the rest. */
static void test_node(void **state)
{
	struct fixture *f = *state;
	static struct seen s;
	tsync_site *site = NULL;
	tsync_node *n = node_start(f, &site);
	tsync_history_stats st;
	tsync_history_window w;

	assert_int_equal(tsync_node_history_stats(n, &st), 0);
	assert_true(st.enabled);
	assert_int_equal(st.limits.max_bytes, 1 << 20);
	for (int i = 1; i <= 20; i++) {
		tsync_value v = tsync_int(i);
		assert_int_equal(tsync_node_set(n, "lamp", &v), 0);
		assert_int_equal(tsync_node_set(n, "chatty", &v), 0);
	}
	assert_int_equal(tsync_node_commit(n), 0);
	for (int i = 21; i <= 25; i++) {
		tsync_value v = tsync_int(i);
		assert_int_equal(tsync_node_set(n, "lamp", &v), 0);
	}
	assert_int_equal(tsync_node_history_stats(n, &st), 0);
	assert_int_equal(st.entries, 20);
	assert_int_equal(st.staged, 5);
	memset(&s, 0, sizeof(s));
	assert_int_equal(tsync_node_history_query(n, "lamp", 0, INT64_MAX, collect, &s, &w), 0);
	assert_int_equal(s.n, 20);
	for (int i = 0; i < 20; i++)
		assert_int_equal(s.ival[i], i + 1);
	assert_int_equal(tsync_node_history_query(n, "chatty", 0, INT64_MAX, NULL, NULL, &w), 0);
	assert_int_equal(w.entries, 0);
	tsync_node_abandon(n);
	tsync_site_free(site);

	n = node_start(f, &site);
	assert_int_equal(tsync_node_history_stats(n, &st), 0);
	memset(&s, 0, sizeof(s));
	assert_int_equal(tsync_node_history_query(n, "lamp", 0, INT64_MAX, collect, &s, &w), 0);
	assert_int_equal(s.n, 20);
	assert_int_equal(s.ival[19], 20);
	/* Freed, not abandoned: what is staged is committed on the way out. */
	for (int i = 30; i < 33; i++) {
		tsync_value v = tsync_int(i);
		assert_int_equal(tsync_node_set(n, "lamp", &v), 0);
	}
	tsync_node_free(n);
	tsync_site_free(site);
	n = node_start(f, &site);
	assert_int_equal(tsync_node_history_query(n, "lamp", 0, INT64_MAX, NULL, NULL, &w), 0);
	assert_int_equal(w.entries, 23);
	tsync_node_free(n);
	tsync_site_free(site);
}

/* Without a state directory there is nothing to keep it in. */
static void test_node_without_store(void **state)
{
	struct fixture *f = *state;
	tsync_site *site = NULL;
	tsync_node_options o;
	tsync_node *n = NULL;
	tsync_history_stats st;
	char path[192];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/site.conf", f->tmp);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fprintf(fp, node_site, free_port());
	fclose(fp);
	assert_int_equal(tsync_site_load(path, &site, NULL), 0);
	tsync_node_options_init(&o);
	o.site = site;
	o.controller = "a";
	assert_int_equal(tsync_node_new(&o, &n), 0);
	assert_int_equal(tsync_node_history_enable(n, NULL), -ENOTSUP);
	assert_int_equal(tsync_node_history_query(n, NULL, 0, 1, NULL, NULL, NULL), -ENOTSUP);
	assert_int_equal(tsync_node_history_stats(n, &st), 0);
	assert_false(st.enabled);
	tsync_node_free(n);
	tsync_site_free(site);
}

/* --- recovery_data_request, answered from the history ------------------------------ */

struct recovery {
	int chunks_seen[4096];
	int entries;
	int values[2001];
	int max_chunk;
	size_t longest;
	bool answered;
	int status;
	long long announced_chunks, announced_entries;
	int errors;
};

static void count_errors(void *ud, tsync_log_level level, const char *line)
{
	(void)line;
	if (level == TSYNC_LOG_ERROR)
		((struct recovery *)ud)->errors++;
}

static int on_recovery_data(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct recovery *rc = ud;
	json_t *j = json_loads(req->json, 0, NULL), *io;
	int k;

	(void)node;
	(void)result;
	assert_non_null(j);
	if (strlen(req->json) > rc->longest)
		rc->longest = strlen(req->json);
	k = (int)json_integer_value(json_object_get(j, "chunk"));
	assert_true(k >= 1 && k < 4096);
	rc->chunks_seen[k]++;
	if (k > rc->max_chunk)
		rc->max_chunk = k;
	assert_string_equal(json_string_value(json_object_get(j, "entity")), "a");
	assert_int_equal(json_integer_value(json_object_get(j, "chunks")), rc->announced_chunks);
	/* Contract 1: the request is named, and no "trimmed" where nothing was. */
	assert_true(strncmp(json_string_value(json_object_get(j, "request")), "b/", 2) == 0);
	assert_null(json_object_get(j, "trimmed"));
	io = json_object_get(json_object_get(j, "recovery_data"), "io");
	assert_true(json_array_size(io) > 0);
	for (size_t i = 0; i < json_array_size(io); i++) {
		json_t *e = json_array_get(io, i);
		json_int_t v = json_integer_value(json_object_get(e, "value"));
		assert_string_equal(json_string_value(json_object_get(e, "thing")), "lamp");
		assert_true(v >= 1 && v <= 2000);
		rc->values[v]++;
		rc->entries++;
	}
	json_decref(j);
	return 0;
}

static void on_answer(void *ud, tsync_node *node, int status, const char *result)
{
	struct recovery *rc = ud;
	json_t *j = result ? json_loads(result, 0, NULL) : NULL;

	(void)node;
	rc->answered = true;
	rc->status = status;
	if (j) {
		rc->announced_chunks = json_integer_value(json_object_get(j, "chunks"));
		rc->announced_entries = json_integer_value(json_object_get(j, "entries"));
	}
	json_decref(j);
}

/*
 * The owner answers a recovery_data_request for a window with every change
 * of it, in chunks that each fit a datagram, each delivered once; the
 * answer announces how many; changes outside the window are not sent.
 */
static void test_recovery_request(void **state)
{
	struct fixture *f = *state;
	static struct recovery rc;
	struct event_base *base = event_base_new();
	tsync_node_options o;
	tsync_node *a = NULL, *b = NULL;
	tsync_site *site = NULL;
	char path[192], dir_b[160], body[256];
	int64_t t_before = 0, t_after = 0;
	FILE *fp;
	int loops = 0;

	memset(&rc, 0, sizeof(rc));
	assert_non_null(base);
	snprintf(path, sizeof(path), "%s/site.conf", f->tmp);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fprintf(fp,
	        "[site]\nname = h\nretry_min_ms = 10\nretry_initial_ms = 50\nretry_max_ms = 400\n"
	        "[controller a]\nhost = 127.0.0.1\nudp_port = %u\nhistory = yes\n"
	        "[controller b]\nhost = 127.0.0.1\nudp_port = %u\n"
	        "[thing lamp]\nowner = a\ntype = int\nusers = b\n",
	        free_port(), free_port());
	fclose(fp);
	assert_int_equal(tsync_site_load(path, &site, NULL), 0);
	tsync_node_options_init(&o);
	o.site = site;
	o.event_base = base;
	o.controller = "a";
	o.state_dir = f->dir;
	o.log = count_errors;
	o.log_userdata = &rc;
	assert_int_equal(tsync_node_new(&o, &a), 0);
	snprintf(dir_b, sizeof(dir_b), "%s/b", f->tmp);
	o.controller = "b";
	o.state_dir = dir_b;
	assert_int_equal(tsync_node_new(&o, &b), 0);
	assert_int_equal(tsync_node_on_request(b, "recovery_data", on_recovery_data, &rc), 0);

	/* 100 changes before the window, 1,000 in it, 100 after. */
	for (int i = 1; i <= 1200; i++) {
		tsync_value v = tsync_int(i);
		if (i == 101)
			t_before = (int64_t)util__realtime_us();
		assert_int_equal(tsync_node_set(a, "lamp", &v), 0);
		if (i == 1100)
			t_after = (int64_t)util__realtime_us();
	}
	assert_int_equal(tsync_node_commit(a), 0);
	/* Seconds, as the seed writes times; the window is rounded outwards, so
	 * ask for whole microseconds of the two edges. */
	snprintf(body, sizeof(body), "{\"lost_connection_time\":%.6f,\"restored_connection_time\":%.6f}",
	         (double)t_before / 1e6, (double)t_after / 1e6);
	assert_int_equal(tsync_node_request(b, "a", "recovery_data_request", body, on_answer, &rc), 0);
	while ((!rc.answered || rc.entries < rc.announced_entries || tsync_node_unsettled(a) ||
	        tsync_node_unsettled(b)) &&
	       loops++ < 200000)
		event_base_loop(base, EVLOOP_ONCE);

	assert_true(rc.answered);
	assert_int_equal(rc.status, 0);
	assert_true(rc.announced_chunks > 1);
	assert_int_equal(rc.max_chunk, rc.announced_chunks);
	for (int k = 1; k <= rc.max_chunk; k++)
		assert_int_equal(rc.chunks_seen[k], 1);
	assert_true(rc.longest < node__max_datagram(a));
	assert_int_equal(rc.errors, 0);
	/* Everything of the window once; nothing far outside it (a change next
	 * to an edge may share its microsecond, or the seconds' rounding). */
	assert_int_equal(rc.entries, rc.announced_entries);
	for (int v = 1; v <= 1200; v++)
		assert_true(rc.values[v] <= 1);
	for (int v = 101; v <= 1100; v++)
		assert_int_equal(rc.values[v], 1);
	for (int v = 1; v <= 90; v++)
		assert_int_equal(rc.values[v], 0);
	for (int v = 1111; v <= 1200; v++)
		assert_int_equal(rc.values[v], 0);

	tsync_node_free(b);
	tsync_node_free(a);
	tsync_site_free(site);
	event_base_free(base);
}

/* Contract 1: the chunks go to "deliver_to" (here c, not the requester b),
 * named "b/ID"; an empty window still sends its one chunk. */
struct delivery {
	int chunks, empty;
	char request[128];
	bool answered;
	int status;
};

static int on_delivered(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct delivery *d = ud;
	json_t *j = json_loads(req->json, 0, NULL);

	(void)node;
	(void)result;
	assert_non_null(j);
	assert_string_equal(req->from, "a");
	snprintf(d->request, sizeof(d->request), "%s", json_string_value(json_object_get(j, "request")));
	assert_int_equal(json_integer_value(json_object_get(j, "chunks")), 1);
	assert_int_equal(json_integer_value(json_object_get(j, "chunk")), 1);
	if (json_array_size(json_object_get(json_object_get(j, "recovery_data"), "io")) == 0)
		d->empty++;
	d->chunks++;
	json_decref(j);
	return 0;
}

static void on_delivery_answer(void *ud, tsync_node *node, int status, const char *result)
{
	struct delivery *d = ud;

	(void)node;
	(void)result;
	d->answered = true;
	d->status = status;
}

static void test_recovery_deliver_to(void **state)
{
	struct fixture *f = *state;
	struct delivery d, wrong;
	struct event_base *base = event_base_new();
	tsync_node_options o;
	tsync_node *a = NULL, *b = NULL, *c = NULL;
	tsync_site *site = NULL;
	char path[192], dir_b[160], dir_c[160];
	FILE *fp;
	int loops = 0;

	memset(&d, 0, sizeof(d));
	memset(&wrong, 0, sizeof(wrong));
	assert_non_null(base);
	snprintf(path, sizeof(path), "%s/site.conf", f->tmp);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fprintf(fp,
	        "[site]\nname = h\nretry_min_ms = 10\nretry_initial_ms = 50\nretry_max_ms = 400\n"
	        "[controller a]\nhost = 127.0.0.1\nudp_port = %u\nhistory = yes\n"
	        "[controller b]\nhost = 127.0.0.1\nudp_port = %u\n"
	        "[controller c]\nhost = 127.0.0.1\nudp_port = %u\n"
	        "[thing lamp]\nowner = a\ntype = int\nusers = c\n",
	        free_port(), free_port(), free_port());
	fclose(fp);
	assert_int_equal(tsync_site_load(path, &site, NULL), 0);
	tsync_node_options_init(&o);
	o.site = site;
	o.event_base = base;
	o.controller = "a";
	o.state_dir = f->dir;
	assert_int_equal(tsync_node_new(&o, &a), 0);
	snprintf(dir_b, sizeof(dir_b), "%s/b", f->tmp);
	snprintf(dir_c, sizeof(dir_c), "%s/c", f->tmp);
	o.controller = "b";
	o.state_dir = dir_b;
	assert_int_equal(tsync_node_new(&o, &b), 0);
	o.controller = "c";
	o.state_dir = dir_c;
	assert_int_equal(tsync_node_new(&o, &c), 0);
	assert_int_equal(tsync_node_on_request(c, "recovery_data", on_delivered, &d), 0);
	assert_int_equal(tsync_node_on_request(b, "recovery_data", on_delivered, &wrong), 0);

	/* A window of 1970: no change in it. */
	assert_int_equal(tsync_node_request(b, "a", "recovery_data_request",
	                                    "{\"lost_connection_time\":10,\"restored_connection_time\":20,"
	                                    "\"deliver_to\":\"c\",\"request_id\":\"r7\"}",
	                                    on_delivery_answer, &d),
	                 0);
	while ((!d.answered || d.chunks < 1 || tsync_node_unsettled(a) || tsync_node_unsettled(b)) &&
	       loops++ < 200000)
		event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(d.status, 0);
	assert_int_equal(d.chunks, 1);
	assert_int_equal(d.empty, 1);
	assert_string_equal(d.request, "b/r7");
	assert_int_equal(wrong.chunks, 0);

	/* An unknown deliver_to is a bad argument. */
	d.answered = false;
	assert_int_equal(tsync_node_request(b, "a", "recovery_data_request",
	                                    "{\"lost_connection_time\":10,\"restored_connection_time\":20,"
	                                    "\"deliver_to\":\"nobody\"}",
	                                    on_delivery_answer, &d),
	                 0);
	loops = 0;
	while (!d.answered && loops++ < 200000)
		event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(d.status, TSYNC_ECMD_ARGS);
	assert_int_equal(d.chunks, 1);

	tsync_node_free(c);
	tsync_node_free(b);
	tsync_node_free(a);
	tsync_site_free(site);
	event_base_free(base);
}

/* tsync_node_record_put/get: an application's records, durable with the
 * node's commit, there after a restart; deleted with NULL. */
static void test_records(void **state)
{
	struct fixture *f = *state;
	tsync_node_options o;
	tsync_node *n = NULL;
	tsync_site *site = NULL;
	char path[192], *text = NULL;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/site.conf", f->tmp);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fprintf(fp, "[site]\nname = h\n[controller a]\nhost = 127.0.0.1\nudp_port = %u\n", free_port());
	fclose(fp);
	assert_int_equal(tsync_site_load(path, &site, NULL), 0);
	tsync_node_options_init(&o);
	o.site = site;
	o.controller = "a";
	o.state_dir = f->dir;
	assert_int_equal(tsync_node_new(&o, &n), 0);
	assert_int_equal(tsync_node_record_get(n, "ledger", &text), -ENOENT);
	assert_int_equal(tsync_node_record_put(n, "ledger", "{\"lost\":1}"), 0);
	assert_int_equal(tsync_node_record_put(n, "other", "x"), 0);
	/* Staged, not yet committed: not read back. */
	assert_int_equal(tsync_node_record_get(n, "ledger", &text), -ENOENT);
	assert_int_equal(tsync_node_commit(n), 0);
	assert_int_equal(tsync_node_record_get(n, "ledger", &text), 0);
	assert_string_equal(text, "{\"lost\":1}");
	free(text);
	/* A crash after the commit keeps it. */
	tsync_node_abandon(n);
	assert_int_equal(tsync_node_new(&o, &n), 0);
	assert_int_equal(tsync_node_record_get(n, "ledger", &text), 0);
	assert_string_equal(text, "{\"lost\":1}");
	free(text);
	assert_int_equal(tsync_node_record_put(n, "ledger", NULL), 0);
	tsync_node_free(n);
	assert_int_equal(tsync_node_new(&o, &n), 0);
	assert_int_equal(tsync_node_record_get(n, "ledger", &text), -ENOENT);
	assert_int_equal(tsync_node_record_get(n, "other", &text), 0);
	assert_string_equal(text, "x");
	free(text);
	assert_int_equal(tsync_node_record_put(n, "", "x"), -EINVAL);
	tsync_node_free(n);
	/* Without a state directory there is nowhere to keep them. */
	o.state_dir = NULL;
	assert_int_equal(tsync_node_new(&o, &n), 0);
	assert_int_equal(tsync_node_record_put(n, "ledger", "x"), -ENOTSUP);
	tsync_node_free(n);
	tsync_site_free(site);
}

/* --- site.conf ------------------------------------------------------------------ */

static int load_conf(struct fixture *f, const char *text, tsync_site **site, char **errors)
{
	char path[192];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/site.conf", f->tmp);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
	return tsync_site_load(path, site, errors);
}

static void test_site_keys(void **state)
{
	struct fixture *f = *state;
	tsync_site *site = NULL;
	char *errors = NULL;

	assert_int_equal(load_conf(f,
	                           "[site]\nname = h\n"
	                           "[controller a]\nhost = 127.0.0.1\nudp_port = 7000\n"
	                           "history = yes\nhistory_max_age = 7d\nhistory_max_bytes = 64M\n"
	                           "[controller b]\nhost = 127.0.0.1\nudp_port = 7001\nhistory = yes\n"
	                           "[thing x]\nowner = a\ntype = int\nhistory_max_age = 90m\n"
	                           "history_max_bytes = 512K\n"
	                           "[thing y]\nowner = a\ntype = int\nhistory = no\n",
	                           &site, &errors),
	                 0);
	assert_true(site->controllers[0].history);
	assert_int_equal(site->controllers[0].history_max_age_ms, 7ull * 86400 * 1000);
	assert_int_equal(site->controllers[0].history_max_bytes, 64ull << 20);
	assert_int_equal(site->controllers[1].history_max_bytes, SITE_DEFAULT_HISTORY_MAX_BYTES);
	assert_int_equal(site->controllers[1].history_max_age_ms, 0);
	assert_int_equal(site->things[0].history_max_age_ms, 90ull * 60 * 1000);
	assert_int_equal(site->things[0].history_max_bytes, 512u << 10);
	assert_false(site->things[0].history_off);
	assert_true(site->things[1].history_off);
	tsync_site_free(site);
	site = NULL;

	/* Each mistake names its line. */
	assert_int_equal(load_conf(f,
	                           "[site]\nname = h\n"                                  /* 1-2 */
	                           "[controller a]\nhost = 127.0.0.1\nudp_port = 7000\n" /* 3-5 */
	                           "history_max_age = 7d\n"                              /* 6 */
	                           "[controller b]\nhost = 127.0.0.1\nudp_port = 7001\n" /* 7-9 */
	                           "history = yes\nhistory_max_age = 7w\n"               /* 10-11 */
	                           "history_max_bytes = 100\n"                           /* 12 */
	                           "[thing x]\nowner = a\ntype = int\n"                  /* 13-15 */
	                           "history = no\n"                                      /* 16 */
	                           "[thing z]\nowner = b\ntype = int\n"                  /* 17-19 */
	                           "history_max_age = 0\n",                              /* 20 */
	                           &site, &errors),
	                 TSYNC_ESITE);
	assert_null(site);
	assert_non_null(errors);
	assert_non_null(strstr(errors, ":6: controller 'a': history_max_age is set but the history is off"));
	assert_non_null(strstr(errors, ":11: controller 'b': history_max_age = '7w' is not a duration"));
	assert_non_null(strstr(errors, ":12: controller 'b': history_max_bytes = '100' is below 4096"));
	assert_non_null(strstr(errors, ":16: thing 'x': history is set but its owner 'a' keeps no history"));
	assert_non_null(strstr(errors, ":20: thing 'z': history_max_age = '0' is out of range"));
	free(errors);
	errors = NULL;

	/* recovery_threshold: the recovery role's, five minutes by default. */
	assert_int_equal(load_conf(f,
	                           "[site]\nname = h\n"
	                           "[controller r]\nhost = 127.0.0.1\nudp_port = 7000\nroles = recovery\n"
	                           "recovery_threshold = 90m\n"
	                           "[controller s]\nhost = 127.0.0.1\nudp_port = 7001\nroles = recovery\n",
	                           &site, &errors),
	                 0);
	assert_int_equal(site->controllers[0].recovery_threshold_ms, 90ull * 60 * 1000);
	assert_int_equal(site->controllers[1].recovery_threshold_ms, SITE_DEFAULT_RECOVERY_THRESHOLD_MS);
	tsync_site_free(site);
	site = NULL;
	assert_int_equal(load_conf(f,
	                           "[site]\nname = h\n"                                  /* 1-2 */
	                           "[controller a]\nhost = 127.0.0.1\nudp_port = 7000\n" /* 3-5 */
	                           "recovery_threshold = 60\n"                           /* 6 */
	                           "[controller r]\nhost = 127.0.0.1\nudp_port = 7001\n" /* 7-9 */
	                           "roles = recovery\nrecovery_threshold = soon\n",      /* 10-11 */
	                           &site, &errors),
	                 TSYNC_ESITE);
	assert_non_null(errors);
	assert_non_null(strstr(
	    errors,
	    ":6: controller 'a': recovery_threshold is set but the controller has no role 'recovery'"));
	assert_non_null(strstr(errors, ":11: controller 'r': recovery_threshold = 'soon' is not a duration"));
	free(errors);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_record_and_window, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_same_version_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_trim_by_age, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_trim_by_size, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_per_thing_bounds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_and_crash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_node, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_node_without_store, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recovery_request, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recovery_deliver_to, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_records, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_site_keys, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
