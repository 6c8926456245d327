/*
 * Unit tests for lib/store: boot counter, staged values, group commit,
 * durability across a simulated crash, error paths.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "store/store.h"

/* Per-test fixture: a fresh temporary directory and a logger that records. */
struct fixture {
	char tmp[64];
	char dir[128]; /* the store directory, inside tmp, not yet created */
	struct logger log;
	int errors;
	int warnings;
	char last[1024];
};

static void capture_log(void *ud, tsync_log_level level, const char *line)
{
	struct fixture *f = ud;

	if (level == TSYNC_LOG_ERROR)
		f->errors++;
	else if (level == TSYNC_LOG_WARN)
		f->warnings++;
	snprintf(f->last, sizeof(f->last), "%s", line);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->tmp, sizeof(f->tmp), "/tmp/test_store.XXXXXX");
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

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	int r = nftw(f->tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);

	free(f);
	return r == 0 ? 0 : -1;
}

/* What store__load_values() reported, copied. */
struct record {
	char *thing;
	uint64_t version;
	uint64_t boot;
	tsync_value v;
};

struct loaded {
	struct record r[4096];
	size_t n;
};

static void collect(void *ud, const char *thing, uint64_t version, uint64_t boot, const tsync_value *v)
{
	struct loaded *l = ud;
	struct record *r;

	assert_true(l->n < ARRAY_SIZE(l->r));
	r = &l->r[l->n++];
	r->thing = util__strdup(thing);
	assert_non_null(r->thing);
	r->version = version;
	r->boot = boot;
	assert_int_equal(value__copy(&r->v, v), 0);
}

static struct loaded *load_all(struct store *s)
{
	struct loaded *l = calloc(1, sizeof(*l));

	assert_non_null(l);
	assert_int_equal(store__load_values(s, collect, l), 0);
	return l;
}

static const struct record *find(const struct loaded *l, const char *thing)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->r[i].thing, thing) == 0)
			return &l->r[i];
	return NULL;
}

static void free_loaded(struct loaded *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->r[i].thing);
		value__clear(&l->r[i].v);
	}
	free(l);
}

static struct store *open_ok(struct fixture *f)
{
	struct store *s = NULL;

	assert_int_equal(store__open(f->dir, 0, &f->log, &s), 0);
	assert_non_null(s);
	return s;
}

static void test_open_creates_private_dir(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	struct stat st;

	assert_int_equal(stat(f->dir, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_false(store__dirty(s));
	store__close(s);
	assert_int_equal(f->errors, 0);
}

/* Records by key and by range (tsync_node_record_get/_scan): committed
 * only, key order, the upper bound excluded, a prefix a range. */
static void collect_keys(void *ud, const char *key, const char *text)
{
	struct buf *b = ud;
	buf__appendf(b, "%s=%s;", key, text);
}

static void test_records_by_key_and_range(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	struct buf b = {0};
	char *text = NULL;

	assert_int_equal(store__stage_record(s, "c/2026-06-11/PI-A/door", "2"), 0);
	assert_int_equal(store__stage_record(s, "c/2026-06-10/PI-A/door", "1"), 0);
	assert_int_equal(store__stage_record(s, "c/2026-06-10/PI-B/heat", "3"), 0);
	assert_int_equal(store__stage_record(s, "m/2026-06-10/PI-A", "m"), 0);
	/* Staged is not committed. */
	assert_int_equal(store__get_record(s, "c/2026-06-10/PI-A/door", &text), -ENOENT);
	assert_int_equal(store__commit(s), 0);
	assert_int_equal(store__get_record(s, "c/2026-06-10/PI-A/door", &text), 0);
	assert_string_equal(text, "1");
	free(text);
	assert_int_equal(store__get_record(s, "c/2026-06-10/PI-A", &text), -ENOENT);
	assert_int_equal(store__scan_records(s, "c/2026-06-10/", "c/2026-06-100", collect_keys, &b), 0);
	assert_string_equal(b.data, "c/2026-06-10/PI-A/door=1;c/2026-06-10/PI-B/heat=3;");
	buf__reset(&b);
	assert_int_equal(store__scan_records(s, "c/", "c/2026-06-11/PI-A/door", collect_keys, &b), 0);
	assert_string_equal(b.data, "c/2026-06-10/PI-A/door=1;c/2026-06-10/PI-B/heat=3;");
	buf__reset(&b);
	assert_int_equal(store__scan_records(s, "m/", NULL, collect_keys, &b), 0);
	assert_string_equal(b.data, "m/2026-06-10/PI-A=m;");
	buf__reset(&b);
	assert_int_equal(store__scan_records(s, NULL, NULL, collect_keys, &b), 0);
	assert_non_null(strstr(b.data, "c/2026-06-11/PI-A/door=2;m/"));
	buf__free(&b);
	store__close(s);
	assert_int_equal(f->errors, 0);
}

static void test_boot_counter(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	uint64_t boot = 0;

	assert_int_equal(store__next_boot(s, 0, &boot), 0);
	assert_int_equal(boot, 1);
	assert_int_equal(store__next_boot(s, 0, &boot), 0);
	assert_int_equal(boot, 2);
	store__close(s);

	/* The counter is on disk: a new start continues from it. */
	s = open_ok(f);
	assert_int_equal(store__next_boot(s, 0, &boot), 0);
	assert_int_equal(boot, 3);
	/* A floor above the stored counter wins (e.g. after disaster recovery). */
	assert_int_equal(store__next_boot(s, 100, &boot), 0);
	assert_int_equal(boot, 100);
	/* A floor below it does not take the counter back. */
	assert_int_equal(store__next_boot(s, 5, &boot), 0);
	assert_int_equal(boot, 101);
	store__close(s);

	s = open_ok(f);
	assert_int_equal(store__next_boot(s, 101, &boot), 0);
	assert_int_equal(boot, 102);
	store__close(s);
	assert_int_equal(f->errors, 0);
}

static void test_values_survive_reopen(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	tsync_value b = tsync_bool(true);
	tsync_value i = tsync_int(INT64_MIN);
	tsync_value imax = tsync_int(INT64_MAX);
	tsync_value fl = tsync_float(-21.625);
	tsync_value nz = tsync_float(-0.0);
	char text[32];
	tsync_value str;
	tsync_value empty = tsync_string("");
	struct loaded *l;
	const struct record *r;

	/* The store must copy the string: the caller's buffer changes after staging. */
	snprintf(text, sizeof(text), "on \xc3\xa9t\xc3\xa9");
	str = tsync_string(text);
	assert_int_equal(store__stage_value(s, "is_armed", 7, 3, &b), 0);
	assert_int_equal(store__stage_value(s, "counter", 8, 3, &i), 0);
	assert_int_equal(store__stage_value(s, "counter_max", 9, 3, &imax), 0);
	assert_int_equal(store__stage_value(s, "temp_out", UINT64_MAX, UINT64_MAX, &fl), 0);
	assert_int_equal(store__stage_value(s, "neg_zero", 1, 1, &nz), 0);
	assert_int_equal(store__stage_value(s, "mode", 10, 4, &str), 0);
	assert_int_equal(store__stage_value(s, "label", 11, 4, &empty), 0);
	memset(text, 'x', sizeof(text) - 1);
	assert_true(store__dirty(s));
	assert_int_equal(store__commit(s), 0);
	assert_false(store__dirty(s));
	store__close(s);

	s = open_ok(f);
	l = load_all(s);
	assert_int_equal(l->n, 7);

	r = find(l, "is_armed");
	assert_non_null(r);
	assert_int_equal(r->v.type, TSYNC_TYPE_BOOL);
	assert_true(r->v.u.b);
	assert_int_equal(r->version, 7);
	assert_int_equal(r->boot, 3);

	r = find(l, "counter");
	assert_non_null(r);
	assert_int_equal(r->v.type, TSYNC_TYPE_INT);
	assert_true(r->v.u.i == INT64_MIN);
	r = find(l, "counter_max");
	assert_non_null(r);
	assert_true(r->v.u.i == INT64_MAX);

	r = find(l, "temp_out");
	assert_non_null(r);
	assert_int_equal(r->v.type, TSYNC_TYPE_FLOAT);
	assert_true(r->v.u.f == -21.625);
	assert_true(r->version == UINT64_MAX);
	assert_true(r->boot == UINT64_MAX);

	r = find(l, "neg_zero");
	assert_non_null(r);
	assert_true(r->v.u.f == 0.0 && signbit(r->v.u.f));

	r = find(l, "mode");
	assert_non_null(r);
	assert_int_equal(r->v.type, TSYNC_TYPE_STRING);
	assert_string_equal(r->v.u.s, "on \xc3\xa9t\xc3\xa9");
	assert_int_equal(r->version, 10);
	assert_int_equal(r->boot, 4);

	r = find(l, "label");
	assert_non_null(r);
	assert_int_equal(r->v.type, TSYNC_TYPE_STRING);
	assert_string_equal(r->v.u.s, "");

	free_loaded(l);
	store__close(s);
	assert_int_equal(f->errors, 0);
}

static void test_overwrite_committed_value(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	tsync_value a = tsync_string("first");
	tsync_value b = tsync_int(2);
	struct loaded *l;

	assert_int_equal(store__stage_value(s, "x", 1, 1, &a), 0);
	assert_int_equal(store__commit(s), 0);
	/* A thing may even change type (site.conf edited): the new record replaces the old. */
	assert_int_equal(store__stage_value(s, "x", 2, 1, &b), 0);
	assert_int_equal(store__commit(s), 0);
	l = load_all(s);
	assert_int_equal(l->n, 1);
	assert_int_equal(l->r[0].v.type, TSYNC_TYPE_INT);
	assert_int_equal(l->r[0].v.u.i, 2);
	assert_int_equal(l->r[0].version, 2);
	free_loaded(l);
	store__close(s);
}

static void test_stage_twice_keeps_last(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	tsync_value one = tsync_string("one");
	tsync_value two = tsync_string("two");
	struct loaded *l;

	assert_int_equal(store__stage_value(s, "lamp", 1, 1, &one), 0);
	assert_int_equal(store__stage_value(s, "lamp", 2, 1, &two), 0);
	/* A burst of changes to one thing is one record, the last one. */
	for (int k = 0; k < 1000; k++) {
		tsync_value v = tsync_int(k);
		assert_int_equal(store__stage_value(s, "dimmer", (uint64_t)k + 1, 1, &v), 0);
	}
	assert_int_equal(store__commit(s), 0);
	l = load_all(s);
	assert_int_equal(l->n, 2);
	assert_string_equal(find(l, "lamp")->v.u.s, "two");
	assert_int_equal(find(l, "lamp")->version, 2);
	assert_int_equal(find(l, "dimmer")->v.u.i, 999);
	assert_int_equal(find(l, "dimmer")->version, 1000);
	free_loaded(l);
	store__close(s);
}

static void test_many_things_one_commit(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	struct loaded *l;
	char name[32];

	/* More than the staging area's first allocation and the name index's. */
	for (int k = 0; k < 2000; k++) {
		tsync_value v = tsync_int(k * 3);
		snprintf(name, sizeof(name), "thing_%d", k);
		assert_int_equal(store__stage_value(s, name, 1, 1, &v), 0);
	}
	assert_int_equal(store__commit(s), 0);
	assert_false(store__dirty(s));
	/* Nothing staged: a commit is a no-op that succeeds. */
	assert_int_equal(store__commit(s), 0);
	l = load_all(s);
	assert_int_equal(l->n, 2000);
	for (int k = 0; k < 2000; k++) {
		const struct record *r;
		snprintf(name, sizeof(name), "thing_%d", k);
		r = find(l, name);
		assert_non_null(r);
		assert_int_equal(r->v.u.i, k * 3);
	}
	free_loaded(l);
	store__close(s);
}

static void test_close_commits(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	tsync_value v = tsync_float(3.5);
	struct loaded *l;

	assert_int_equal(store__stage_value(s, "setpoint", 5, 2, &v), 0);
	store__close(s); /* no store__commit(): close commits what is staged */

	s = open_ok(f);
	l = load_all(s);
	assert_int_equal(l->n, 1);
	assert_string_equal(l->r[0].thing, "setpoint");
	assert_true(l->r[0].v.u.f == 3.5);
	free_loaded(l);
	store__close(s);
}

/*
 * Runs a child that opens the store, stages a value, commits it or not, and
 * then dies as in a crash or power cut: SIGKILL, so no store__close(), no
 * atexit handlers, nothing flushed (and no leak report from valgrind or
 * LeakSanitizer for what it deliberately never freed).
 */
static void crash_child(struct fixture *f, const char *thing, bool commit)
{
	pid_t pid = fork();
	int status = 0;

	assert_true(pid >= 0);
	if (pid == 0) {
		struct store *s = NULL;
		tsync_value v = tsync_string("durable?");
		if (store__open(f->dir, 0, NULL, &s) < 0)
			_exit(2);
		if (store__stage_value(s, thing, 1, 1, &v) < 0)
			_exit(3);
		if (commit && store__commit(s) < 0)
			_exit(4);
		raise(SIGKILL);
		_exit(5);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFEXITED(status))
		fail_msg("child failed before the crash, exit code %d", WEXITSTATUS(status));
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
}

static void test_commit_is_the_durability_point(void **state)
{
	struct fixture *f = *state;
	struct store *s;
	struct loaded *l;

	crash_child(f, "staged_only", false);
	crash_child(f, "committed", true);

	s = open_ok(f);
	l = load_all(s);
	assert_null(find(l, "staged_only"));
	assert_non_null(find(l, "committed"));
	assert_string_equal(find(l, "committed")->v.u.s, "durable?");
	assert_int_equal(l->n, 1);
	free_loaded(l);
	store__close(s);
}

static void test_open_regular_file_fails(void **state)
{
	struct fixture *f = *state;
	struct store *s = (struct store *)(uintptr_t)1; /* must stay untouched */
	int fd = open(f->dir, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	int r;

	assert_true(fd >= 0);
	close(fd);
	r = store__open(f->dir, 0, &f->log, &s);
	assert_int_equal(r, -ENOTDIR);
	assert_true(s == (struct store *)(uintptr_t)1);
	assert_int_equal(f->errors, 1);
	assert_non_null(strstr(f->last, f->dir));
}

static void test_open_missing_parent_fails(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	char dir[256];

	snprintf(dir, sizeof(dir), "%s/no/such/parent", f->tmp);
	assert_int_equal(store__open(dir, 0, &f->log, &s), -ENOENT);
	assert_null(s);
	assert_int_equal(f->errors, 1);
	assert_int_equal(store__open(NULL, 0, &f->log, &s), -EINVAL);
	assert_int_equal(store__open("", 0, &f->log, &s), -EINVAL);
	assert_int_equal(store__open(dir, 0, &f->log, NULL), -EINVAL);
}

static void test_open_twice_in_process_fails(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	struct store *s2 = NULL;

	/* A second LMDB env on the same directory would break the first one's locks. */
	assert_int_equal(store__open(f->dir, 0, &f->log, &s2), -EBUSY);
	assert_null(s2);
	store__close(s);
	/* Once closed, it can be opened again. */
	s = open_ok(f);
	store__close(s);
}

static void test_many_stores_open(void **state)
{
	enum { N = 100 };
	struct fixture *f = *state;
	struct store *s[N] = {0};
	struct store *again = NULL;
	char dir[N][160];
	uint64_t boot;

	/* Many controllers in one process (thingsync-sim): no fixed limit on open stores. */
	for (int i = 0; i < N; i++) {
		snprintf(dir[i], sizeof(dir[i]), "%s/ctrl%d", f->tmp, i);
		assert_int_equal(store__open(dir[i], 1 << 20, &f->log, &s[i]), 0);
		assert_int_equal(store__next_boot(s[i], (uint64_t)i, &boot), 0);
	}
	for (int i = 1; i < N; i += 2) {
		store__close(s[i]);
		s[i] = NULL;
	}
	/* Closed ones open again; open ones are still refused (each close
	 * took its own claim out of the table, and only its own). */
	for (int i = 0; i < N; i++) {
		if (i % 2) {
			assert_int_equal(store__open(dir[i], 1 << 20, &f->log, &s[i]), 0);
			assert_int_equal(store__open(dir[i], 1 << 20, &f->log, &again), -EBUSY);
		} else {
			assert_int_equal(store__open(dir[i], 1 << 20, &f->log, &again), -EBUSY);
		}
		assert_null(again);
	}
	assert_int_equal(store__next_boot(s[N - 1], 0, &boot), 0);
	assert_int_equal(boot, N);
	for (int i = 0; i < N; i++)
		store__close(s[i]);
}

static void test_stage_rejects_bad_input(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	tsync_value v = tsync_int(1);
	tsync_value bad;
	char longname[600];

	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	bad.type = (tsync_type)9;
	bad.u.i = 0;
	assert_int_equal(store__stage_value(s, "", 1, 1, &v), -EINVAL);
	assert_int_equal(store__stage_value(s, NULL, 1, 1, &v), -EINVAL);
	assert_int_equal(store__stage_value(s, "x", 1, 1, NULL), -EINVAL);
	assert_int_equal(store__stage_value(s, "x", 1, 1, &bad), -EINVAL);
	assert_int_equal(store__stage_value(s, longname, 1, 1, &v), -ENAMETOOLONG);
	assert_false(store__dirty(s));
	assert_int_equal(store__load_values(s, NULL, NULL), -EINVAL);
	assert_int_equal(store__next_boot(s, 0, NULL), -EINVAL);
	assert_int_equal(store__commit(NULL), -EINVAL);
	assert_false(store__dirty(NULL));
	store__close(s);
	store__close(NULL);
}

static void test_map_grows_when_full(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	struct loaded *l;
	char name[32];
	char text[201];

	/* A tiny map: the commit below needs several times more. */
	assert_int_equal(store__open(f->dir, 64 * 1024, &f->log, &s), 0);
	memset(text, 'v', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	for (int k = 0; k < 3000; k++) {
		tsync_value v = tsync_string(text);
		snprintf(name, sizeof(name), "big_%d", k);
		assert_int_equal(store__stage_value(s, name, 1, 1, &v), 0);
	}
	assert_int_equal(store__commit(s), 0);
	assert_true(f->warnings > 0); /* "map full, grown to ..." */
	assert_int_equal(f->errors, 0);
	store__close(s);

	s = open_ok(f);
	l = load_all(s);
	assert_int_equal(l->n, 3000);
	assert_string_equal(find(l, "big_2999")->v.u.s, text);
	free_loaded(l);
	store__close(s);
}

/* Writes a raw record into "values" behind the store's back. */
static void put_raw(const char *dir, const char *key, const void *data, size_t len)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = {strlen(key), (void *)key};
	MDB_val d = {len, (void *)data};

	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "values", 0, &dbi), 0);
	assert_int_equal(mdb_put(txn, dbi, &k, &d, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

static void test_malformed_records_are_skipped(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	tsync_value v = tsync_bool(false);
	static const unsigned char short_rec[] = {1, 2, 3};
	unsigned char bad_type[18] = {1};
	unsigned char bad_format[19] = {99};
	struct loaded *l;

	bad_type[17] = 42;
	assert_int_equal(store__stage_value(s, "good", 1, 1, &v), 0);
	store__close(s);
	put_raw(f->dir, "short", short_rec, sizeof(short_rec));
	put_raw(f->dir, "bad_type", bad_type, sizeof(bad_type));
	put_raw(f->dir, "bad_format", bad_format, sizeof(bad_format));

	s = open_ok(f);
	l = load_all(s);
	assert_int_equal(l->n, 1);
	assert_string_equal(l->r[0].thing, "good");
	assert_int_equal(l->r[0].v.type, TSYNC_TYPE_BOOL);
	assert_false(l->r[0].v.u.b);
	assert_int_equal(f->warnings, 3);
	free_loaded(l);
	store__close(s);
}

/* A load callback may stage (e.g. to re-stamp values); that must not disturb the cursor. */
static void restage(void *ud, const char *thing, uint64_t version, uint64_t boot, const tsync_value *v)
{
	struct store *s = ud;
	assert_int_equal(store__stage_value(s, thing, version + 1, boot, v), 0);
}

static void test_stage_during_load(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	tsync_value v = tsync_string("kept");
	struct loaded *l;

	assert_int_equal(store__stage_value(s, "a", 1, 1, &v), 0);
	assert_int_equal(store__stage_value(s, "b", 1, 1, &v), 0);
	assert_int_equal(store__commit(s), 0);
	assert_int_equal(store__load_values(s, restage, s), 0);
	assert_true(store__dirty(s));
	assert_int_equal(store__commit(s), 0);
	l = load_all(s);
	assert_int_equal(l->n, 2);
	assert_int_equal(find(l, "a")->version, 2);
	assert_string_equal(find(l, "b")->v.u.s, "kept");
	free_loaded(l);
	store__close(s);
}

/* --- durable windows, pending requests and set requests -------------------------- */

struct win_seen {
	int windows, answers;
	char sender[32];
	uint64_t ob, top, bits[STORE_WINDOW_WORDS];
	uint64_t ans_id[8];
	char ans_err[8][32], ans_res[8][64];
	bool ans_has_err[8], ans_has_res[8];
};

static int on_window(void *ud, const char *sender, uint64_t ob, uint64_t top,
                     const uint64_t bits[STORE_WINDOW_WORDS])
{
	struct win_seen *w = ud;

	w->windows++;
	snprintf(w->sender, sizeof(w->sender), "%s", sender);
	w->ob = ob;
	w->top = top;
	memcpy(w->bits, bits, sizeof(w->bits));
	return 0;
}

static int on_answer(void *ud, const char *sender, uint64_t ob, uint64_t id, const char *err,
                     const char *res)
{
	struct win_seen *w = ud;
	int i = w->answers++;

	assert_true(i < 8);
	assert_string_equal(sender, w->sender); /* after its window */
	assert_int_equal(ob, w->ob);
	w->ans_id[i] = id;
	w->ans_has_err[i] = err != NULL;
	w->ans_has_res[i] = res != NULL;
	snprintf(w->ans_err[i], sizeof(w->ans_err[i]), "%s", err ? err : "");
	snprintf(w->ans_res[i], sizeof(w->ans_res[i]), "%s", res ? res : "");
	return 0;
}

static int window_enomem(void *ud, const char *sender, uint64_t ob, uint64_t top,
                         const uint64_t bits[STORE_WINDOW_WORDS])
{
	(void)sender;
	(void)ob;
	(void)top;
	(void)bits;
	(*(int *)ud)++;
	return -ENOMEM;
}

static int answer_never(void *ud, const char *sender, uint64_t ob, uint64_t id, const char *err,
                        const char *res)
{
	(void)ud;
	(void)sender;
	(void)ob;
	(void)id;
	(void)err;
	(void)res;
	fail_msg("an answer loaded after its window failed");
	return 0;
}

/* A window the loader cannot take stops the load with its error, which
 * store__load_windows returns: it is not skipped. */
static void test_window_load_error_stops(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	uint64_t bits[STORE_WINDOW_WORDS] = {1};
	int calls = 0;

	assert_int_equal(store__stage_window(s, "pi-a", 7, 3, bits), 0);
	assert_int_equal(store__stage_answer(s, "pi-a", 7, 1, 1, "err_write_crash", NULL), 0);
	assert_int_equal(store__stage_window(s, "pi-b", 8, 3, bits), 0);
	assert_int_equal(store__commit(s), 0);
	assert_int_equal(store__load_windows(s, window_enomem, answer_never, &calls), -ENOMEM);
	assert_int_equal(calls, 1);
	store__close(s);
}

static void test_windows_survive_reopen(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	uint64_t bits[STORE_WINDOW_WORDS] = {0};
	struct win_seen w;

	bits[0] = 0x16; /* ids 1, 2 and 4 */
	bits[15] = (uint64_t)1 << 63;
	assert_int_equal(store__stage_window(s, "pi-a", 77, 4, bits), 0);
	assert_int_equal(store__stage_answer(s, "pi-a", 77, 2, 2, NULL, "{\"v\":\"0.1\"}"), 0);
	assert_int_equal(store__stage_answer(s, "pi-a", 77, 4, 4, "err_write_crash", NULL), 0);
	/* A window of another boot of the same sender, dropped in the same
	 * commit after it was staged: nothing of it may remain. */
	assert_int_equal(store__stage_window(s, "pi-a", 5, 9, bits), 0);
	assert_int_equal(store__stage_answer(s, "pi-a", 5, 9, 9, "x", "1"), 0);
	assert_int_equal(store__stage_drop_window(s, "pi-a", 5), 0);
	assert_true(store__dirty(s));
	assert_int_equal(store__commit(s), 0);
	store__close(s);

	s = open_ok(f);
	memset(&w, 0, sizeof(w));
	assert_int_equal(store__load_windows(s, on_window, on_answer, &w), 0);
	assert_int_equal(w.windows, 1);
	assert_string_equal(w.sender, "pi-a");
	assert_int_equal(w.ob, 77);
	assert_int_equal(w.top, 4);
	assert_true(w.bits[0] == 0x16 && w.bits[15] == (uint64_t)1 << 63 && w.bits[1] == 0);
	assert_int_equal(w.answers, 2);
	assert_int_equal(w.ans_id[0], 2);
	assert_false(w.ans_has_err[0]);
	assert_string_equal(w.ans_res[0], "{\"v\":\"0.1\"}");
	assert_int_equal(w.ans_id[1], 4);
	assert_string_equal(w.ans_err[1], "err_write_crash");
	assert_false(w.ans_has_res[1]);

	/* An emptied slot is gone; a later window record replaces the first. */
	bits[0] = 0x3e;
	assert_int_equal(store__stage_window(s, "pi-a", 77, 5, bits), 0);
	assert_int_equal(store__stage_answer(s, "pi-a", 77, 2, 2, NULL, NULL), 0);
	assert_int_equal(store__commit(s), 0);
	memset(&w, 0, sizeof(w));
	assert_int_equal(store__load_windows(s, on_window, on_answer, &w), 0);
	assert_int_equal(w.windows, 1);
	assert_int_equal(w.top, 5);
	assert_true(w.bits[0] == 0x3e);
	assert_int_equal(w.answers, 1);
	assert_int_equal(w.ans_id[0], 4);
	store__close(s);
}

struct req_seen {
	int n;
	char peer[4][32], thing[4][32], cmd[4][32], body[4][64];
	uint64_t ob[4], id[4];
	bool pulse[4], has_body[4];
	int64_t val[4];
	uint32_t ms[4];
	uint8_t type[4];
};

static void on_request(void *ud, const struct store_request *q)
{
	struct req_seen *r = ud;
	int i = r->n++;

	assert_true(i < 4);
	snprintf(r->peer[i], sizeof(r->peer[i]), "%s", q->peer);
	snprintf(r->thing[i], sizeof(r->thing[i]), "%s", q->thing ? q->thing : "");
	snprintf(r->cmd[i], sizeof(r->cmd[i]), "%s", q->cmd ? q->cmd : "");
	snprintf(r->body[i], sizeof(r->body[i]), "%s", q->body ? q->body : "");
	r->has_body[i] = q->body != NULL;
	r->ob[i] = q->origin_boot;
	r->id[i] = q->id;
	r->pulse[i] = q->is_pulse;
	r->val[i] = q->val.type == TSYNC_TYPE_INT ? q->val.u.i : -1;
	r->ms[i] = q->ms;
	r->type[i] = q->type;
}

/* A request resumed after a restart must be the one that was sent, under
 * its first (origin boot, id); one that was answered must not come back. */
static void test_requests_survive_crash(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	struct store_request q;
	struct req_seen r;
	pid_t pid;
	int status = 0;

	memset(&q, 0, sizeof(q));
	q.peer = "owner";
	q.origin_boot = 1000;
	q.id = 3;
	q.is_pulse = true;
	q.thing = "door";
	q.val = tsync_int(42);
	q.ms = 500;
	assert_int_equal(store__stage_request(s, &q), 0);
	memset(&q, 0, sizeof(q));
	q.peer = "owner";
	q.origin_boot = 1000;
	q.id = 4;
	q.type = 1;
	q.role = "cmd_do";
	q.cmd = "version";
	q.body = "{\"kwargs\":{}}";
	assert_int_equal(store__stage_request(s, &q), 0);
	q.id = 2;
	assert_int_equal(store__stage_request(s, &q), 0);
	assert_int_equal(store__stage_request_done(s, "owner", 1000, 2), 0);
	assert_int_equal(store__commit(s), 0);
	store__close(s);

	/* Staged and never committed when the process dies: lost. */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct store *c = NULL;
		if (store__open(f->dir, 0, NULL, &c) < 0 ||
		    store__stage_request_done(c, "owner", 1000, 3) < 0)
			_exit(2);
		raise(SIGKILL);
		_exit(3);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));

	s = open_ok(f);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store__load_requests(s, on_request, &r), 0);
	assert_int_equal(r.n, 2);
	assert_string_equal(r.peer[0], "owner");
	assert_true(r.pulse[0]);
	assert_int_equal(r.ob[0], 1000);
	assert_int_equal(r.id[0], 3);
	assert_string_equal(r.thing[0], "door");
	assert_int_equal(r.val[0], 42);
	assert_int_equal(r.ms[0], 500);
	assert_false(r.pulse[1]);
	assert_int_equal(r.id[1], 4);
	assert_int_equal(r.type[1], 1);
	assert_string_equal(r.cmd[1], "version");
	assert_true(r.has_body[1]);
	assert_string_equal(r.body[1], "{\"kwargs\":{}}");

	/* store__abandon() is the crash of an in-process simulation. */
	assert_int_equal(store__stage_request_done(s, "owner", 1000, 3), 0);
	store__abandon(s);
	s = open_ok(f);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store__load_requests(s, on_request, &r), 0);
	assert_int_equal(r.n, 2);
	store__close(s);
}

struct setreq_seen {
	int n;
	char thing[32];
	int64_t v;
};

static void on_setreq(void *ud, const char *thing, uint64_t version, uint64_t boot, const tsync_value *v)
{
	struct setreq_seen *r = ud;

	r->n++;
	snprintf(r->thing, sizeof(r->thing), "%s", thing);
	r->v = v->type == TSYNC_TYPE_INT ? v->u.i : -1;
}

static void test_setreqs_survive_reopen(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	tsync_value v = tsync_int(21);
	struct setreq_seen r;
	uint64_t bytes, commits;

	assert_int_equal(store__stage_setreq(s, "setpoint", &v), 0);
	assert_int_equal(store__stage_setreq(s, "other", &v), 0);
	assert_int_equal(store__stage_setreq(s, "other", NULL), 0);
	assert_int_equal(store__commit(s), 0);
	store__written(s, &bytes, &commits);
	assert_int_equal(commits, 1);
	assert_true(bytes >= strlen("setpoint") + 18 + 8);
	store__close(s);

	s = open_ok(f);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store__load_setreqs(s, on_setreq, &r), 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.thing, "setpoint");
	assert_int_equal(r.v, 21);
	assert_int_equal(store__stage_setreq(s, "setpoint", NULL), 0);
	assert_int_equal(store__commit(s), 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store__load_setreqs(s, on_setreq, &r), 0);
	assert_int_equal(r.n, 0);
	store__close(s);
}

/* The commit before an act leaves the meta page unsynced: the store says
 * it is still dirty, the next commit syncs with nothing staged, and what it
 * wrote survives a crash of the process (abandon). */
static void test_commit_unsynced(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_ok(f);
	tsync_value v = tsync_int(5);
	struct setreq_seen r;
	uint64_t bytes, commits;

	assert_int_equal(store__commit_unsynced(s), 0); /* nothing staged: nothing to do */
	assert_false(store__dirty(s));
	assert_int_equal(store__stage_setreq(s, "setpoint", &v), 0);
	assert_int_equal(store__commit_unsynced(s), 0);
	assert_true(store__dirty(s));
	assert_int_equal(store__commit(s), 0);
	assert_false(store__dirty(s));
	store__written(s, &bytes, &commits);
	assert_int_equal(commits, 2);
	assert_int_equal(store__stage_setreq(s, "other", &v), 0);
	assert_int_equal(store__commit_unsynced(s), 0);
	store__abandon(s);

	s = open_ok(f);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store__load_setreqs(s, on_setreq, &r), 0);
	assert_int_equal(r.n, 2);
	store__close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_open_creates_private_dir, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_boot_counter, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_records_by_key_and_range, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_values_survive_reopen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_overwrite_committed_value, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stage_twice_keeps_last, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_many_things_one_commit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_commits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commit_is_the_durability_point, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_regular_file_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_missing_parent_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_twice_in_process_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_many_stores_open, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stage_rejects_bad_input, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_map_grows_when_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_records_are_skipped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stage_during_load, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_windows_survive_reopen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_window_load_error_stops, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_requests_survive_crash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commit_unsynced, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_setreqs_survive_reopen, setup, teardown),
	};

	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
