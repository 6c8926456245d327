/*
 * Unit tests for the journal in lib/store: stream sequence, group commit,
 * cursor and trim, size limits, last versions, persistence, and crashes
 * (a child process killed with SIGKILL before and after its commits).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <ftw.h>
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "store/store.h"

struct fixture {
	char tmp[64];
	char dir[128];
	struct logger log;
	int errors;
};

static void capture_log(void *ud, tsync_log_level level, const char *line)
{
	struct fixture *f = ud;

	if (level == TSYNC_LOG_ERROR)
		f->errors++;
	if (getenv("THINGSYNC_TEST_LOG"))
		fprintf(stderr, "[%s] %s\n", tsync_log_level_name(level), line);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->tmp, sizeof(f->tmp), "/tmp/test_journal.XXXXXX");
	if (!mkdtemp(f->tmp)) {
		free(f);
		return -1;
	}
	snprintf(f->dir, sizeof(f->dir), "%s/journal", f->tmp);
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

static struct journal *open_j(struct fixture *f, uint64_t max_entries, uint64_t max_bytes)
{
	struct journal_limits lim = {max_entries, max_bytes};
	struct journal *j = NULL;

	assert_int_equal(journal__open(f->dir, "PI-Push", &lim, &f->log, &j), 0);
	assert_non_null(j);
	return j;
}

/* Collects what journal__read() hands over, copying the strings. */
struct collected {
	size_t n;
	size_t stop_after; /* 0: never stop */
	struct journal_entry e[64];
	char things[64][32];
	char strings[64][64];
};

static int collect(void *ud, const struct journal_entry *e)
{
	struct collected *c = ud;

	assert_true(c->n < 64);
	c->e[c->n] = *e;
	snprintf(c->things[c->n], sizeof(c->things[0]), "%s", e->thing);
	c->e[c->n].thing = c->things[c->n];
	if (e->value.type == TSYNC_TYPE_STRING) {
		snprintf(c->strings[c->n], sizeof(c->strings[0]), "%s", e->value.u.s);
		c->e[c->n].value.u.s = c->strings[c->n];
	}
	c->n++;
	return c->stop_after && c->n >= c->stop_after;
}

static void test_append_read_types(void **state)
{
	struct fixture *f = *state;
	struct journal *j = open_j(f, 0, 0);
	struct journal_stats st;
	struct collected c = {0};
	tsync_value none = {.type = TSYNC_TYPE_NONE};
	tsync_value vb = tsync_bool(true), vi = tsync_int(-42), vf = tsync_float(21.5),
	            vs = tsync_string("comfort");
	uint64_t seq = 0;

	journal__stats(j, &st);
	assert_int_equal(st.last_seq, 0);
	assert_int_equal(st.cursor, 0);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.max_entries, JOURNAL_DEFAULT_MAX_ENTRIES);

	assert_int_equal(journal__stage(j, 1000, "door", &vb, 7, 1, &seq), 0);
	assert_int_equal(seq, 1);
	assert_int_equal(journal__stage(j, 2000, "power_w", &vi, 7, 2, &seq), 0);
	assert_int_equal(seq, 2);
	assert_int_equal(journal__stage(j, -3000, "temp", &vf, 0, 0, &seq), 0);
	assert_int_equal(journal__stage(j, 4000, "mode", &vs, 9, 5, &seq), 0);
	assert_int_equal(journal__stage(j, 5000, "empty", &none, 0, 0, &seq), 0);
	assert_int_equal(seq, 5);

	/* Staged is not committed: nothing to read yet. */
	assert_int_equal(journal__read(j, 0, 100, collect, &c), 0);
	assert_int_equal(c.n, 0);
	journal__stats(j, &st);
	assert_int_equal(st.staged, 5);
	assert_int_equal(st.last_seq, 0);

	assert_int_equal(journal__commit(j), 0);
	journal__stats(j, &st);
	assert_int_equal(st.staged, 0);
	assert_int_equal(st.last_seq, 5);
	assert_int_equal(st.entries, 5);
	assert_true(st.bytes > 5 * 27);

	assert_int_equal(journal__read(j, 0, 100, collect, &c), 0);
	assert_int_equal(c.n, 5);
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(c.e[i].seq, i + 1);
	assert_string_equal(c.e[0].thing, "door");
	assert_int_equal(c.e[0].value.type, TSYNC_TYPE_BOOL);
	assert_true(c.e[0].value.u.b);
	assert_int_equal(c.e[0].time_us, 1000);
	assert_int_equal(c.e[0].owner_boot, 7);
	assert_int_equal(c.e[0].version, 1);
	assert_int_equal(c.e[1].value.type, TSYNC_TYPE_INT);
	assert_int_equal(c.e[1].value.u.i, -42);
	assert_int_equal(c.e[2].value.type, TSYNC_TYPE_FLOAT);
	assert_true(c.e[2].value.u.f == 21.5);
	assert_int_equal(c.e[2].time_us, -3000);
	assert_int_equal(c.e[2].owner_boot, 0);
	assert_int_equal(c.e[3].value.type, TSYNC_TYPE_STRING);
	assert_string_equal(c.e[3].value.u.s, "comfort");
	assert_int_equal(c.e[4].value.type, TSYNC_TYPE_NONE);
	assert_string_equal(c.e[4].thing, "empty");
	journal__close(j);
	assert_int_equal(f->errors, 0);
}

static void test_discard_reuses_sequences(void **state)
{
	struct fixture *f = *state;
	struct journal *j = open_j(f, 0, 0);
	struct collected c = {0};
	tsync_value v = tsync_int(1);
	uint64_t seq = 0, boot, ver;

	assert_int_equal(journal__stage(j, 1, "a", &v, 1, 10, &seq), 0);
	assert_int_equal(journal__commit(j), 0);
	assert_int_equal(journal__stage(j, 2, "a", &v, 1, 11, &seq), 0);
	assert_int_equal(journal__stage(j, 3, "b", &v, 1, 12, &seq), 0);
	assert_int_equal(seq, 3);
	assert_int_equal(journal__last_version(j, "a", &boot, &ver), 0);
	assert_int_equal(ver, 11);
	/* A refused batch is forgotten: its sequences are given out again, so
	 * the stream never has a hole. */
	journal__discard(j);
	assert_int_equal(journal__last_version(j, "a", &boot, &ver), 0);
	assert_int_equal(ver, 10);
	assert_int_equal(journal__last_version(j, "b", &boot, &ver), -ENOENT);
	assert_int_equal(journal__stage(j, 4, "c", &v, 0, 0, &seq), 0);
	assert_int_equal(seq, 2);
	assert_int_equal(journal__commit(j), 0);
	assert_int_equal(journal__read(j, 0, 100, collect, &c), 0);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.e[1].seq, 2);
	assert_string_equal(c.e[1].thing, "c");

	/* Closing without a commit discards too. */
	assert_int_equal(journal__stage(j, 5, "d", &v, 0, 0, &seq), 0);
	journal__close(j);
	j = open_j(f, 0, 0);
	c.n = 0;
	assert_int_equal(journal__read(j, 0, 100, collect, &c), 0);
	assert_int_equal(c.n, 2);
	journal__close(j);
}

static void test_persistence_and_versions(void **state)
{
	struct fixture *f = *state;
	struct journal *j = open_j(f, 0, 0);
	struct journal_stats st;
	struct collected c = {0};
	tsync_value v = tsync_string("x");
	uint64_t boot = 0, ver = 0;

	for (int i = 0; i < 10; i++)
		assert_int_equal(journal__stage(j, i, i % 2 ? "odd" : "even", &v, 3, (uint64_t)i + 1, NULL),
		                 0);
	assert_int_equal(journal__commit(j), 0);
	assert_int_equal(journal__ack(j, 4), 0);
	journal__close(j);

	j = open_j(f, 0, 0);
	journal__stats(j, &st);
	assert_int_equal(st.last_seq, 10);
	assert_int_equal(st.cursor, 4);
	assert_int_equal(st.entries, 6);
	assert_int_equal(journal__last_version(j, "even", &boot, &ver), 0);
	assert_int_equal(boot, 3);
	assert_int_equal(ver, 9);
	assert_int_equal(journal__last_version(j, "odd", &boot, &ver), 0);
	assert_int_equal(ver, 10);
	assert_int_equal(journal__last_version(j, "other", &boot, &ver), -ENOENT);
	assert_int_equal(journal__read(j, 0, 100, collect, &c), 0);
	assert_int_equal(c.n, 6);
	assert_int_equal(c.e[0].seq, 5);
	journal__close(j);

	/* The stream belongs to its source. */
	assert_int_equal(journal__open(f->dir, "PI-Other", NULL, &f->log, &j), -EINVAL);
	f->errors = 0;
}

static void test_cursor_trim_batches(void **state)
{
	struct fixture *f = *state;
	struct journal *j = open_j(f, 0, 0);
	struct journal_stats st;
	struct collected c = {0};
	tsync_value v = tsync_float(1.25);
	uint64_t bytes_full;

	for (int i = 0; i < 50; i++)
		assert_int_equal(journal__stage(j, i, "t", &v, 0, 0, NULL), 0);
	assert_int_equal(journal__commit(j), 0);
	journal__stats(j, &st);
	bytes_full = st.bytes;

	/* Batches of 20 from the cursor. */
	assert_int_equal(journal__read(j, 0, 20, collect, &c), 0);
	assert_int_equal(c.n, 20);
	assert_int_equal(c.e[19].seq, 20);
	assert_int_equal(journal__ack(j, 20), 0);
	journal__stats(j, &st);
	assert_int_equal(st.cursor, 20);
	assert_int_equal(st.entries, 30);
	assert_true(st.bytes < bytes_full);
	assert_true(st.bytes * 5 == bytes_full * 3);

	/* Reading from before the cursor starts after it: trimmed is gone. */
	c.n = 0;
	assert_int_equal(journal__read(j, 3, 20, collect, &c), 0);
	assert_int_equal(c.n, 20);
	assert_int_equal(c.e[0].seq, 21);
	/* A reader may stop early. */
	c.n = 0;
	c.stop_after = 5;
	assert_int_equal(journal__read(j, 30, 20, collect, &c), 0);
	assert_int_equal(c.n, 5);
	assert_int_equal(c.e[0].seq, 31);

	/* Acks are idempotent and never go past the end. */
	assert_int_equal(journal__ack(j, 10), 0);
	assert_int_equal(journal__ack(j, 51), -ERANGE);
	journal__stats(j, &st);
	assert_int_equal(st.cursor, 20);
	assert_int_equal(journal__ack(j, 50), 0);
	journal__stats(j, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	c.n = 0;
	c.stop_after = 0;
	assert_int_equal(journal__read(j, 0, 20, collect, &c), 0);
	assert_int_equal(c.n, 0);

	/* Sequences go on after a full drain, also across a restart. */
	journal__close(j);
	j = open_j(f, 0, 0);
	uint64_t seq;
	assert_int_equal(journal__stage(j, 1, "t", &v, 0, 0, &seq), 0);
	assert_int_equal(seq, 51);
	assert_int_equal(journal__commit(j), 0);
	journal__close(j);
}

static void test_limits(void **state)
{
	struct fixture *f = *state;
	struct journal *j = open_j(f, 10, 0);
	struct journal_stats st;
	tsync_value v = tsync_int(5);

	for (int i = 0; i < 8; i++)
		assert_int_equal(journal__stage(j, i, "t", &v, 0, 0, NULL), 0);
	assert_int_equal(journal__commit(j), 0);
	journal__stats(j, &st);
	assert_false(st.full);
	/* A commit that starts below the limit may end above it ... */
	for (int i = 0; i < 4; i++)
		assert_int_equal(journal__stage(j, i, "t", &v, 0, 0, NULL), 0);
	assert_int_equal(journal__commit(j), 0);
	journal__stats(j, &st);
	assert_int_equal(st.entries, 12);
	assert_true(st.full);
	/* ... and then the journal refuses, keeping what is staged. */
	assert_int_equal(journal__stage(j, 99, "t", &v, 0, 0, NULL), 0);
	assert_int_equal(journal__commit(j), -ENOSPC);
	journal__stats(j, &st);
	assert_int_equal(st.staged, 1);
	assert_int_equal(st.last_seq, 12);
	/* Draining makes room again. */
	assert_int_equal(journal__ack(j, 5), 0);
	assert_int_equal(journal__commit(j), 0);
	journal__stats(j, &st);
	assert_int_equal(st.last_seq, 13);
	assert_int_equal(st.entries, 8);
	journal__close(j);

	/* The same with a byte limit. */
	snprintf(f->dir, sizeof(f->dir), "%s/journal-bytes", f->tmp);
	j = open_j(f, 0, 400);
	v = tsync_string("0123456789012345678901234567890123456789");
	/* 76 bytes each: key 8, header 27, name 1, string 40. */
	for (int i = 0; i < 6; i++)
		assert_int_equal(journal__stage(j, i, "t", &v, 0, 0, NULL), 0);
	assert_int_equal(journal__commit(j), 0);
	journal__stats(j, &st);
	assert_true(st.full);
	assert_int_equal(st.bytes, 6 * 76);
	assert_int_equal(journal__stage(j, 9, "t", &v, 0, 0, NULL), 0);
	assert_int_equal(journal__commit(j), -ENOSPC);
	journal__discard(j);
	assert_int_equal(journal__ack(j, 2), 0);
	journal__stats(j, &st);
	assert_false(st.full);
	journal__close(j);
}

static void test_bad_arguments(void **state)
{
	struct fixture *f = *state;
	struct journal *j = open_j(f, 0, 0), *j2 = NULL;
	tsync_value v = tsync_int(1);
	tsync_value bad = {.type = (tsync_type)9};
	char longname[300];
	char *longstr;

	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(journal__stage(j, 0, "", &v, 0, 0, NULL), -EINVAL);
	assert_int_equal(journal__stage(j, 0, longname, &v, 0, 0, NULL), -EINVAL);
	assert_int_equal(journal__stage(j, 0, "t", &bad, 0, 0, NULL), -EINVAL);
	longstr = malloc(JOURNAL_MAX_STRING + 2);
	assert_non_null(longstr);
	memset(longstr, 'x', JOURNAL_MAX_STRING + 1);
	longstr[JOURNAL_MAX_STRING + 1] = '\0';
	v = tsync_string(longstr);
	assert_int_equal(journal__stage(j, 0, "t", &v, 0, 0, NULL), -EINVAL);
	longstr[JOURNAL_MAX_STRING] = '\0';
	assert_int_equal(journal__stage(j, 0, "t", &v, 0, 0, NULL), 0);
	assert_int_equal(journal__commit(j), 0);
	free(longstr);
	assert_int_equal(journal__open(f->dir, "PI-Push", NULL, &f->log, &j2), -EBUSY);
	assert_null(j2);
	/* One claim list for every LMDB environment of the process: a state
	 * store on the journal's directory is refused too. */
	{
		struct store *st = NULL;
		assert_int_equal(store__open(f->dir, 0, &f->log, &st), -EBUSY);
		assert_null(st);
	}
	assert_int_equal(journal__open(f->dir, "", NULL, &f->log, &j2), -EINVAL);
	assert_int_equal(journal__ack(j, 2), -ERANGE);
	journal__close(j);
	journal__close(NULL);
	f->errors = 0;
}

/* More than the initial 64 MiB map: the map grows and the commit goes through. */
static void test_map_grows(void **state)
{
	struct fixture *f = *state;
	struct journal *j = open_j(f, 0, (uint64_t)1 << 32);
	struct journal_stats st;
	char *s = malloc(JOURNAL_MAX_STRING + 1);
	tsync_value v;

	assert_non_null(s);
	memset(s, 'm', JOURNAL_MAX_STRING);
	s[JOURNAL_MAX_STRING] = '\0';
	v = tsync_string(s);
	for (int b = 0; b < 20; b++) {
		for (int i = 0; i < 1000; i++)
			assert_int_equal(journal__stage(j, i, "blob", &v, 0, 0, NULL), 0);
		assert_int_equal(journal__commit(j), 0);
	}
	journal__stats(j, &st);
	assert_int_equal(st.last_seq, 20000);
	assert_true(st.bytes > (uint64_t)64 << 20);
	assert_int_equal(journal__ack(j, 20000), 0);
	free(s);
	journal__close(j);
}

/* --- crashes ----------------------------------------------------------------------- */

static void write_u64(int fd, uint64_t x)
{
	if (write(fd, &x, sizeof(x)) != (ssize_t)sizeof(x))
		_exit(3);
}

static bool read_u64(int fd, uint64_t *x)
{
	return read(fd, x, sizeof(*x)) == (ssize_t)sizeof(*x);
}

/*
 * The child commits `committed` measurements, tells the parent, stages
 * `staged` more and dies by SIGKILL without committing them.
 */
static void crash_child(struct fixture *f, int fd, int committed, int staged)
{
	struct journal *j = NULL;
	tsync_value v;

	if (journal__open(f->dir, "PI-Push", NULL, NULL, &j) < 0)
		_exit(2);
	for (int i = 0; i < committed; i++) {
		v = tsync_int(i + 1);
		if (journal__stage(j, i, "t", &v, 1, (uint64_t)i + 1, NULL) < 0)
			_exit(2);
	}
	if (journal__commit(j) < 0)
		_exit(2);
	write_u64(fd, (uint64_t)committed);
	for (int i = 0; i < staged; i++) {
		v = tsync_int(1000 + i);
		if (journal__stage(j, i, "t", &v, 1, 1000 + (uint64_t)i, NULL) < 0)
			_exit(2);
	}
	raise(SIGKILL);
	_exit(4);
}

static void test_crash_before_and_after_commit(void **state)
{
	struct fixture *f = *state;
	struct journal *j;
	struct journal_stats st;
	struct collected c = {0};
	uint64_t boot, ver, got;
	int fds[2], status;
	pid_t pid;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		crash_child(f, fds[1], 7, 5);
	}
	close(fds[1]);
	assert_true(read_u64(fds[0], &got));
	assert_int_equal(got, 7);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
	close(fds[0]);

	/* After the commit: all 7 there. Before the commit: none of the 5. */
	j = open_j(f, 0, 0);
	journal__stats(j, &st);
	assert_int_equal(st.last_seq, 7);
	assert_int_equal(st.entries, 7);
	assert_int_equal(journal__read(j, 0, 100, collect, &c), 0);
	assert_int_equal(c.n, 7);
	for (size_t i = 0; i < 7; i++) {
		assert_int_equal(c.e[i].seq, i + 1);
		assert_int_equal(c.e[i].value.u.i, (int64_t)i + 1);
	}
	assert_int_equal(journal__last_version(j, "t", &boot, &ver), 0);
	assert_int_equal(ver, 7);
	/* The lost staged sequences are given out again. */
	uint64_t seq;
	tsync_value v = tsync_int(8);
	assert_int_equal(journal__stage(j, 0, "t", &v, 1, 8, &seq), 0);
	assert_int_equal(seq, 8);
	journal__close(j);
}

/*
 * A child appends, commits and acks in a loop, reporting each commit; the
 * parent kills it at a random moment, many times. After every kill the
 * journal must hold exactly the entries between cursor and last sequence,
 * contiguous, each as written, and at least everything reported committed.
 */
struct verify {
	uint64_t expect;
	bool ok;
};

static int verify_entry(void *ud, const struct journal_entry *e)
{
	struct verify *v = ud;

	if (e->seq != v->expect || e->value.type != TSYNC_TYPE_INT || e->value.u.i != (int64_t)e->seq ||
	    e->version != e->seq || strcmp(e->thing, "t") != 0)
		v->ok = false;
	v->expect++;
	return 0;
}

static void loop_child(struct fixture *f, int fd, unsigned seed)
{
	struct journal *j = NULL;
	struct journal_stats st;

	srand(seed);
	if (journal__open(f->dir, "PI-Push", NULL, NULL, &j) < 0)
		_exit(2);
	for (;;) {
		int n = 1 + rand() % 50;
		journal__stats(j, &st);
		for (int i = 0; i < n; i++) {
			uint64_t seq = st.last_seq + (uint64_t)i + 1;
			tsync_value v = tsync_int((int64_t)seq);
			if (journal__stage(j, 0, "t", &v, 1, seq, NULL) < 0)
				_exit(2);
		}
		if (journal__commit(j) < 0)
			_exit(2);
		journal__stats(j, &st);
		write_u64(fd, st.last_seq);
		if (rand() % 3 == 0 && st.entries > 0 &&
		    journal__ack(j, st.cursor + 1 + (uint64_t)rand() % st.entries) < 0)
			_exit(2);
	}
}

static void test_crash_at_random_moments(void **state)
{
	struct fixture *f = *state;
	unsigned seed = (unsigned)time(NULL);
	uint64_t reported = 0;

	for (int round = 0; round < 12; round++) {
		struct journal *j;
		struct journal_stats st;
		struct verify v;
		struct timespec ts;
		uint64_t x;
		int fds[2], status;
		pid_t pid;

		assert_int_equal(pipe(fds), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(fds[0]);
			loop_child(f, fds[1], seed + (unsigned)round);
		}
		close(fds[1]);
		/* Wait for at least one commit, then kill at a random moment. */
		assert_true(read_u64(fds[0], &x));
		reported = x;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)(rand_r(&seed) % 20000) * 1000;
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFSIGNALED(status));
		while (read_u64(fds[0], &x))
			reported = x;
		close(fds[0]);

		j = open_j(f, 0, 0);
		journal__stats(j, &st);
		assert_true(st.last_seq >= reported);
		assert_true(st.cursor <= st.last_seq);
		v.expect = st.cursor + 1;
		v.ok = true;
		assert_int_equal(journal__read(j, 0, SIZE_MAX, verify_entry, &v), 0);
		assert_true(v.ok);
		assert_int_equal(v.expect, st.last_seq + 1);
		journal__close(j);
	}
}

/* --- stream identity ------------------------------------------------------------------- */

static void test_stream_id(void **state)
{
	struct fixture *f = *state;
	struct journal *j = open_j(f, 0, 0);
	char first[JOURNAL_STREAM_LEN + 1];

	/* Made with the journal, and kept: a reopen is the same stream. */
	assert_true(journal__valid_stream_id(journal__stream_id(j)));
	snprintf(first, sizeof(first), "%s", journal__stream_id(j));
	journal__close(j);
	j = open_j(f, 0, 0);
	assert_string_equal(journal__stream_id(j), first);
	journal__close(j);

	/* A journal made again in the same place is another stream. */
	assert_int_equal(teardown(state), 0);
	assert_int_equal(setup(state), 0);
	f = *state;
	j = open_j(f, 0, 0);
	assert_string_not_equal(journal__stream_id(j), first);
	journal__close(j);

	assert_false(journal__valid_stream_id("0123"));
	assert_false(journal__valid_stream_id("0123456789ABCDEF0123456789abcdef"));
	assert_true(journal__valid_stream_id("0123456789abcdef0123456789abcdef"));
}

/* Deletes "stream" from jmeta, as a journal made before stream ids has none. */
static void drop_stream_key(const char *dir)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val key = {6, (void *)"stream"};

	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "jmeta", 0, &dbi), 0);
	assert_int_equal(mdb_del(txn, dbi, &key, NULL), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

static void test_stream_id_given_to_old_journal(void **state)
{
	struct fixture *f = *state;
	struct journal *j = open_j(f, 0, 0);
	struct journal_info info;
	struct journal_stats st;
	tsync_value v = tsync_int(1);
	char given[JOURNAL_STREAM_LEN + 1];

	for (int i = 0; i < 5; i++)
		assert_int_equal(journal__stage(j, i, "a", &v, 0, 0, NULL), 0);
	assert_int_equal(journal__commit(j), 0);
	journal__close(j);
	drop_stream_key(f->dir);
	assert_int_equal(journal__inspect(f->dir, &info), 0);
	assert_string_equal(info.stream, "");

	/* Opened: it gets a stream id, keeps its numbering, and the id stays. */
	j = open_j(f, 0, 0);
	assert_true(journal__valid_stream_id(journal__stream_id(j)));
	snprintf(given, sizeof(given), "%s", journal__stream_id(j));
	journal__stats(j, &st);
	assert_int_equal(st.last_seq, 5);
	journal__close(j);
	j = open_j(f, 0, 0);
	assert_string_equal(journal__stream_id(j), given);
	journal__close(j);
}

static void stage_n(struct journal *j, int n, const char *thing, uint64_t boot, uint64_t first_version)
{
	for (int i = 0; i < n; i++) {
		tsync_value v = tsync_int(i);
		assert_int_equal(journal__stage(j, 1000 + i, thing, &v, boot, boot ? first_version + (uint64_t)i : 0,
		                                NULL),
		                 0);
	}
	assert_int_equal(journal__commit(j), 0);
}

static void test_adopt_same_stream(void **state)
{
	struct fixture *f = *state;
	struct journal *j = open_j(f, 0, 0);
	struct journal_adopt_result res;
	struct journal_stats st;
	struct collected c = {0};
	char stream[JOURNAL_STREAM_LEN + 1];

	snprintf(stream, sizeof(stream), "%s", journal__stream_id(j));
	stage_n(j, 10, "a", 0, 0);
	assert_int_equal(journal__ack(j, 3), 0);
	/* The collector has up to 6 (its answers were lost): 7..10 stay, with their numbers. */
	assert_int_equal(journal__adopt(j, stream, 6, NULL, 0, &res), 0);
	assert_false(res.stream_changed);
	assert_int_equal(res.acked, 3);
	assert_int_equal(res.kept, 4);
	journal__stats(j, &st);
	assert_int_equal(st.cursor, 6);
	assert_int_equal(st.last_seq, 10);
	assert_int_equal(journal__read(j, 0, 100, collect, &c), 0);
	assert_int_equal(c.n, 4);
	assert_int_equal(c.e[0].seq, 7);
	/* A collector ahead of the journal: it continues after the collector. */
	assert_int_equal(journal__adopt(j, stream, 20, NULL, 0, &res), 0);
	journal__stats(j, &st);
	assert_int_equal(st.cursor, 20);
	assert_int_equal(st.last_seq, 20);
	assert_int_equal(st.entries, 0);
	uint64_t seq = 0;
	tsync_value v = tsync_int(5);
	assert_int_equal(journal__stage(j, 1, "a", &v, 0, 0, &seq), 0);
	assert_int_equal(seq, 21);
	assert_int_equal(journal__commit(j), 0);
	journal__close(j);
	j = open_j(f, 0, 0);
	journal__stats(j, &st);
	assert_int_equal(st.cursor, 20);
	assert_int_equal(st.last_seq, 21);
	journal__close(j);
}

static void test_adopt_other_stream(void **state)
{
	struct fixture *f = *state;
	struct journal *j = open_j(f, 0, 0);
	struct journal_adopt_result res;
	struct journal_stats st;
	struct journal_info info;
	struct collected c = {0};
	const char *old = "00112233445566778899aabbccddeeff";
	/* The collector stored "a" up to (boot 7, version 12) in the old stream. */
	struct journal_version known[] = {{"a", 7, 12}, {"z", 7, 40}};
	uint64_t boot, ver;

	/* A new journal: "a" versions 10..14 (10..12 are copies the mesh sent
	 * again), then 3 CSV entries without versions. */
	stage_n(j, 5, "a", 7, 10);
	stage_n(j, 3, "csv", 0, 0);
	assert_int_equal(journal__adopt(j, old, 100, known, 2, &res), 0);
	assert_true(res.stream_changed);
	assert_int_equal(res.dropped, 3);
	assert_int_equal(res.kept, 5);
	assert_int_equal(res.renumbered, 5);
	assert_string_equal(journal__stream_id(j), old);
	journal__stats(j, &st);
	assert_int_equal(st.cursor, 100);
	assert_int_equal(st.last_seq, 105);
	assert_int_equal(st.entries, 5);
	assert_int_equal(journal__read(j, 0, 100, collect, &c), 0);
	assert_int_equal(c.n, 5);
	for (size_t i = 0; i < c.n; i++)
		assert_int_equal(c.e[i].seq, 101 + i);
	assert_string_equal(c.e[0].thing, "a");
	assert_int_equal(c.e[0].version, 13);
	assert_string_equal(c.e[2].thing, "csv");
	/* Versions: "z" learnt from the collector; "a" kept at its newer 14. */
	assert_int_equal(journal__last_version(j, "z", &boot, &ver), 0);
	assert_int_equal(ver, 40);
	assert_int_equal(journal__last_version(j, "a", &boot, &ver), 0);
	assert_int_equal(ver, 14);
	journal__close(j);
	assert_int_equal(journal__inspect(f->dir, &info), 0);
	assert_string_equal(info.problem, "");
	assert_string_equal(info.stream, old);
	assert_string_equal(info.source, "PI-Push");
	assert_int_equal(info.first_seq, 101);
	assert_int_equal(info.last_seq, 105);

	/* Bad arguments, and staged entries, refuse. */
	j = open_j(f, 0, 0);
	assert_string_equal(journal__stream_id(j), old);
	assert_int_equal(journal__adopt(j, "nope", 1, NULL, 0, NULL), -EINVAL);
	tsync_value v = tsync_int(1);
	assert_int_equal(journal__stage(j, 1, "a", &v, 0, 0, NULL), 0);
	assert_int_equal(journal__adopt(j, old, 1, NULL, 0, NULL), -EBUSY);
	journal__close(j);
}

static void test_inspect(void **state)
{
	struct fixture *f = *state;
	struct journal_info info;
	struct journal *j;
	char path[300];
	FILE *fp;

	/* Nothing there. */
	assert_int_equal(journal__inspect(f->dir, &info), -ENOENT);
	assert_false(info.present);
	j = open_j(f, 0, 0);
	stage_n(j, 4, "a", 0, 0);
	assert_int_equal(journal__ack(j, 1), 0);
	journal__close(j);
	assert_int_equal(journal__inspect(f->dir, &info), 0);
	assert_true(info.present);
	assert_string_equal(info.problem, "");
	assert_int_equal(info.cursor, 1);
	assert_int_equal(info.entries, 3);
	assert_int_equal(info.first_seq, 2);

	/* Garbage instead of the data file: unreadable, said so. */
	snprintf(path, sizeof(path), "%s/data.mdb", f->dir);
	fp = fopen(path, "w");
	assert_non_null(fp);
	for (int i = 0; i < 5000; i++)
		fputs("garbage!", fp);
	fclose(fp);
	assert_int_equal(journal__inspect(f->dir, &info), TSYNC_ESTORE);
	assert_true(info.present);
	assert_non_null(strstr(info.problem, "unreadable"));
}

/* Copies of what journal__read() hands over for the other kinds. */
struct kinds {
	size_t n;
	struct journal_entry e[8];
	char text[8][4][128];
};

static int collect_kinds(void *ud, const struct journal_entry *e)
{
	struct kinds *k = ud;
	const char *src[4] = {e->thing, e->owner, e->day, e->cumul};
	const char **dst[4];

	assert_true(k->n < 8);
	k->e[k->n] = *e;
	dst[0] = &k->e[k->n].thing;
	dst[1] = &k->e[k->n].owner;
	dst[2] = &k->e[k->n].day;
	dst[3] = &k->e[k->n].cumul;
	for (int i = 0; i < 4; i++) {
		if (!src[i])
			continue;
		snprintf(k->text[k->n][i], sizeof(k->text[0][0]), "%s", src[i]);
		*dst[i] = k->text[k->n][i];
	}
	k->n++;
	return 0;
}

/*
 * A recovered and an imported measurement, a recovery gap and a cumul go
 * through a commit and a reopen with every field; a live measurement is
 * still written in record format 1, byte for byte what older journals hold.
 */
static void test_kinds_round_trip(void **state)
{
	struct fixture *f = *state;
	struct journal *j = open_j(f, 0, 0);
	struct kinds k = {0};
	struct journal_entry e;
	tsync_value vf = tsync_float(19.25);

	assert_int_equal(journal__stage(j, 1000, "temp", &vf, 3, 10, NULL), 0);
	memset(&e, 0, sizeof(e));
	e.via = JOURNAL_VIA_RECOVERY;
	e.time_us = 900;
	e.thing = "temp";
	e.value = tsync_float(18.5);
	e.owner_boot = 3;
	e.version = 9;
	assert_int_equal(journal__stage_entry(j, &e, NULL), 0);
	e.via = JOURNAL_VIA_IMPORT;
	e.owner_boot = e.version = 0;
	e.value = tsync_string("imported");
	assert_int_equal(journal__stage_entry(j, &e, NULL), 0);
	memset(&e, 0, sizeof(e));
	e.via = JOURNAL_VIA_RECOVERY;
	e.kind = JOURNAL_RECOVERY_GAP;
	e.owner = "PI-Data";
	e.from_us = 1700000000000000;
	e.to_us = 1700000360000000;
	assert_int_equal(journal__stage_entry(j, &e, NULL), 0);
	memset(&e, 0, sizeof(e));
	e.kind = JOURNAL_CUMUL;
	e.owner = "PI-Data";
	e.thing = "door";
	e.day = "2026-12-02";
	e.cumul = "{\"rising\":3,\"on_s\":120}";
	assert_int_equal(journal__stage_entry(j, &e, NULL), 0);
	/* Malformed entries are refused at staging. */
	e.day = "2026-12-2";
	assert_int_equal(journal__stage_entry(j, &e, NULL), -EINVAL);
	e.day = "2026-12-02";
	e.owner = NULL;
	assert_int_equal(journal__stage_entry(j, &e, NULL), -EINVAL);
	memset(&e, 0, sizeof(e));
	e.kind = JOURNAL_RECOVERY_GAP;
	e.owner = "PI-Data";
	e.from_us = 2;
	e.to_us = 1;
	assert_int_equal(journal__stage_entry(j, &e, NULL), -EINVAL);
	assert_int_equal(journal__commit(j), 0);
	journal__close(j);

	j = open_j(f, 0, 0);
	assert_int_equal(journal__read(j, 0, 100, collect_kinds, &k), 0);
	assert_int_equal(k.n, 5);
	assert_int_equal(k.e[0].via, JOURNAL_VIA_LIVE);
	assert_int_equal(k.e[0].kind, JOURNAL_MEASUREMENT);
	assert_int_equal(k.e[0].version, 10);
	assert_int_equal(k.e[1].via, JOURNAL_VIA_RECOVERY);
	assert_int_equal(k.e[1].kind, JOURNAL_MEASUREMENT);
	assert_string_equal(k.e[1].thing, "temp");
	assert_true(k.e[1].value.u.f == 18.5);
	assert_int_equal(k.e[1].time_us, 900);
	assert_int_equal(k.e[1].owner_boot, 3);
	assert_int_equal(k.e[1].version, 9);
	assert_int_equal(k.e[2].via, JOURNAL_VIA_IMPORT);
	assert_int_equal(k.e[2].value.type, TSYNC_TYPE_STRING);
	assert_int_equal(k.e[3].kind, JOURNAL_RECOVERY_GAP);
	assert_int_equal(k.e[3].via, JOURNAL_VIA_RECOVERY);
	assert_string_equal(k.e[3].owner, "PI-Data");
	assert_int_equal(k.e[3].from_us, 1700000000000000);
	assert_int_equal(k.e[3].to_us, 1700000360000000);
	assert_int_equal(k.e[3].owner_boot, 0);
	assert_int_equal(k.e[4].kind, JOURNAL_CUMUL);
	assert_string_equal(k.e[4].owner, "PI-Data");
	assert_string_equal(k.e[4].thing, "door");
	assert_string_equal(k.e[4].day, "2026-12-02");
	assert_string_equal(k.e[4].cumul, "{\"rising\":3,\"on_s\":120}");
	journal__close(j);

	/* The live record on disk: format 1, header 27, name, 8 bytes of float. */
	{
		MDB_env *env;
		MDB_txn *txn;
		MDB_dbi dbi;
		unsigned char kb[8] = {0, 0, 0, 0, 0, 0, 0, 1};
		MDB_val key = {8, kb}, data;

		assert_int_equal(mdb_env_create(&env), 0);
		assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
		assert_int_equal(mdb_env_open(env, f->dir, MDB_RDONLY, 0600), 0);
		assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
		assert_int_equal(mdb_dbi_open(txn, "entries", 0, &dbi), 0);
		assert_int_equal(mdb_get(txn, dbi, &key, &data), 0);
		assert_int_equal(((unsigned char *)data.mv_data)[0], 1);
		assert_int_equal(data.mv_size, 27 + 4 + 8);
		kb[7] = 2;
		assert_int_equal(mdb_get(txn, dbi, &key, &data), 0);
		assert_int_equal(((unsigned char *)data.mv_data)[0], 2);
		mdb_txn_abort(txn);
		mdb_env_close(env);
	}
	assert_int_equal(f->errors, 0);
}

/* A recovered value raises the thing's last version only when it is newer. */
static void test_recovery_versions(void **state)
{
	struct fixture *f = *state;
	struct journal *j = open_j(f, 0, 0);
	struct journal_entry e;
	tsync_value v = tsync_int(1);
	uint64_t b, ver;

	assert_int_equal(journal__stage(j, 1, "power_w", &v, 4, 5, NULL), 0);
	assert_int_equal(journal__commit(j), 0);
	memset(&e, 0, sizeof(e));
	e.via = JOURNAL_VIA_RECOVERY;
	e.thing = "power_w";
	e.value = v;
	e.owner_boot = 4;
	e.version = 3;
	assert_int_equal(journal__stage_entry(j, &e, NULL), 0);
	assert_int_equal(journal__last_version(j, "power_w", &b, &ver), 0);
	assert_int_equal(ver, 5);
	e.version = 7;
	assert_int_equal(journal__stage_entry(j, &e, NULL), 0);
	e.version = 6;
	assert_int_equal(journal__stage_entry(j, &e, NULL), 0);
	assert_int_equal(journal__commit(j), 0);
	assert_int_equal(journal__last_version(j, "power_w", &b, &ver), 0);
	assert_int_equal(b, 4);
	assert_int_equal(ver, 7);
	/* A thing never seen live takes the recovered version. */
	e.thing = "door";
	e.version = 2;
	assert_int_equal(journal__stage_entry(j, &e, NULL), 0);
	assert_int_equal(journal__commit(j), 0);
	assert_int_equal(journal__last_version(j, "door", &b, &ver), 0);
	assert_int_equal(ver, 2);
	journal__close(j);
	assert_int_equal(f->errors, 0);
}

/* Marks: staged, discarded, committed with entries, kept across a reopen, the oldest forgotten. */
static void test_marks(void **state)
{
	struct fixture *f = *state;
	struct journal *j = open_j(f, 0, 0);
	tsync_value v = tsync_int(1);
	char key[64];

	assert_int_equal(journal__has_mark(j, "PI-Rec/1/0"), 0);
	assert_int_equal(journal__stage_mark(j, "PI-Rec/1/0"), 0);
	assert_int_equal(journal__has_mark(j, "PI-Rec/1/0"), 1);
	journal__discard(j);
	assert_int_equal(journal__has_mark(j, "PI-Rec/1/0"), 0);
	assert_int_equal(journal__stage(j, 1, "a", &v, 0, 0, NULL), 0);
	assert_int_equal(journal__stage_mark(j, "PI-Rec/1/0"), 0);
	assert_int_equal(journal__commit(j), 0);
	/* A mark alone is committed too (a chunk without entries). */
	assert_int_equal(journal__stage_mark(j, "PI-Rec/1/1"), 0);
	assert_int_equal(journal__commit(j), 0);
	journal__close(j);
	j = open_j(f, 0, 0);
	assert_int_equal(journal__has_mark(j, "PI-Rec/1/0"), 1);
	assert_int_equal(journal__has_mark(j, "PI-Rec/1/1"), 1);
	assert_int_equal(journal__has_mark(j, "PI-Rec/1/2"), 0);
	assert_int_equal(journal__has_mark(j, ""), -EINVAL);
	/* Past the bound (and its slack), the oldest go first. */
	for (unsigned i = 0; i < JOURNAL_MAX_MARKS + JOURNAL_MAX_MARKS / 8; i++) {
		snprintf(key, sizeof(key), "bulk/%u", i);
		assert_int_equal(journal__stage_mark(j, key), 0);
	}
	assert_int_equal(journal__commit(j), 0);
	assert_int_equal(journal__has_mark(j, "PI-Rec/1/0"), 0);
	assert_int_equal(journal__has_mark(j, "bulk/0"), 0);
	snprintf(key, sizeof(key), "bulk/%u", JOURNAL_MAX_MARKS + JOURNAL_MAX_MARKS / 8 - 1);
	assert_int_equal(journal__has_mark(j, key), 1);
	snprintf(key, sizeof(key), "bulk/%u", JOURNAL_MAX_MARKS / 8 + 2);
	assert_int_equal(journal__has_mark(j, key), 1);
	journal__close(j);
	assert_int_equal(f->errors, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_append_read_types, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_discard_reuses_sequences, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_persistence_and_versions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cursor_trim_batches, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_map_grows, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_crash_before_and_after_commit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_crash_at_random_moments, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stream_id, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stream_id_given_to_old_journal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_adopt_same_stream, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_adopt_other_stream, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_inspect, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kinds_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recovery_versions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_marks, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
