/*
 * Unit tests for lib/util: buffer, name index, PRNG, values, error and
 * rejection names, the log escaper and the rate-limited log.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <thingsync/node.h>

#include "util/util.h"

static void test_buf_append_grows(void **state)
{
	struct buf b = {0};
	char chunk[100];

	/* An empty buffer owns nothing yet. */
	assert_null(b.data);
	memset(chunk, 'a', sizeof(chunk));
	for (int i = 0; i < 50; i++)
		assert_int_equal(buf__append(&b, chunk, sizeof(chunk)), 0);
	assert_int_equal(b.len, 5000);
	assert_true(b.cap > b.len);
	assert_int_equal(b.data[b.len], '\0');
	assert_int_equal(strlen(b.data), 5000);
	for (size_t i = 0; i < b.len; i++)
		assert_int_equal(b.data[i], 'a');

	/* Reset keeps the memory and empties the string. */
	{
		size_t cap = b.cap;
		buf__reset(&b);
		assert_int_equal(b.len, 0);
		assert_int_equal(b.cap, cap);
		assert_string_equal(b.data, "");
	}
	assert_int_equal(buf__append(&b, "xy", 2), 0);
	assert_string_equal(b.data, "xy");
	/* Appending nothing is fine and keeps the terminator. */
	assert_int_equal(buf__append(&b, "", 0), 0);
	assert_string_equal(b.data, "xy");
	buf__free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
	/* Free twice is harmless. */
	buf__free(&b);
}

static void test_buf_appendf(void **state)
{
	struct buf b = {0};
	char expect[64];

	assert_int_equal(buf__appendf(&b, "%s=%d", "x", 42), 0);
	assert_string_equal(b.data, "x=42");
	assert_int_equal(b.len, 4);
	/* Many formatted appends cross several growth steps and keep every byte. */
	for (int i = 0; i < 1000; i++)
		assert_int_equal(buf__appendf(&b, ",%04d", i), 0);
	assert_int_equal(b.len, 4 + 1000 * 5);
	assert_int_equal(strlen(b.data), b.len);
	assert_memory_equal(b.data + 4, ",0000,0001", 10);
	snprintf(expect, sizeof(expect), ",%04d", 999);
	assert_string_equal(b.data + b.len - 5, expect);

	/* One append far larger than the first allocation. */
	buf__reset(&b);
	assert_int_equal(buf__appendf(&b, "%*s|", 3000, "end"), 0);
	assert_int_equal(b.len, 3001);
	assert_string_equal(b.data + 2997, "end|");
	/* An empty format appends nothing. */
	assert_int_equal(buf__appendf(&b, "%s", ""), 0);
	assert_int_equal(b.len, 3001);
	buf__free(&b);
}

/* buf__append_i64 writes what printf's PRId64 writes, at the edges and in between. */
static void test_buf_append_i64(void **state)
{
	static const int64_t edges[] = {0, 1, -1, 9, 10, -10, 99, 100, INT64_MAX, INT64_MIN, INT64_MIN + 1,
	                                1700000000000000};
	struct buf b = {0};
	char want[32];

	for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
		buf__reset(&b);
		assert_int_equal(buf__append(&b, "x", 1), 0);
		assert_int_equal(buf__append_i64(&b, edges[i]), 0);
		snprintf(want, sizeof(want), "x%" PRId64, edges[i]);
		assert_string_equal(b.data, want);
		assert_int_equal(b.len, strlen(want));
	}
	for (uint64_t k = 0, x = 0x9e3779b97f4a7c15u; k < 100000; k++) {
		int64_t v;
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		v = (int64_t)(x >> (k % 64));
		if (k & 1)
			v = -v;
		buf__reset(&b);
		assert_int_equal(buf__append_i64(&b, v), 0);
		snprintf(want, sizeof(want), "%" PRId64, v);
		assert_string_equal(b.data, want);
	}
	buf__free(&b);
}

static void test_buf_reserve(void **state)
{
	struct buf b = {0};

	assert_int_equal(buf__reserve(&b, 10), 0);
	assert_true(b.cap >= 11);
	assert_int_equal(b.len, 0);
	assert_int_equal(buf__reserve(&b, 100000), 0);
	assert_true(b.cap >= 100001);
	/* Capacity grows in powers of two from 256. */
	assert_int_equal(b.cap & (b.cap - 1), 0);
	buf__free(&b);
}

static void test_name_index_basic(void **state)
{
	struct name_index ix = {0};
	uint32_t v = 0;
	char other[] = "is_armed"; /* same text, other storage: lookup is by content */

	/* An index that was never initialised finds nothing. */
	assert_int_equal(name_index__get(&ix, "x", &v), -ENOENT);
	assert_int_equal(name_index__put(&ix, "is_armed", 1), 0);
	assert_int_equal(name_index__put(&ix, "light_hall", 2), 0);
	assert_int_equal(name_index__get(&ix, other, &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(name_index__get(&ix, "light_hall", &v), 0);
	assert_int_equal(v, 2);
	assert_int_equal(name_index__get(&ix, "light_hal", &v), -ENOENT);
	assert_int_equal(name_index__get(&ix, "", &v), -ENOENT);
	assert_int_equal(name_index__get(&ix, NULL, &v), -ENOENT);
	/* A duplicate is refused and does not change the stored value. */
	assert_int_equal(name_index__put(&ix, other, 9), -EEXIST);
	assert_int_equal(name_index__get(&ix, "is_armed", &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(ix.count, 2);
	name_index__free(&ix);
	assert_null(ix.keys);
	assert_int_equal(name_index__get(&ix, "is_armed", &v), -ENOENT);
}

static void test_name_index_grows(void **state)
{
	enum { N = 3000 };
	static char names[N][16];
	struct name_index ix;
	uint32_t v;

	/* Start small on purpose so the index grows many times. */
	assert_int_equal(name_index__init(&ix, 4), 0);
	for (uint32_t i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "thing_%u", i);
		assert_int_equal(name_index__put(&ix, names[i], i * 7), 0);
	}
	assert_int_equal(ix.count, N);
	assert_true(ix.cap >= 2 * N);
	assert_int_equal(ix.cap & (ix.cap - 1), 0);
	for (uint32_t i = 0; i < N; i++) {
		assert_int_equal(name_index__get(&ix, names[i], &v), 0);
		assert_int_equal(v, i * 7);
	}
	/* Every name is still a duplicate after growth. */
	for (uint32_t i = 0; i < N; i += 97)
		assert_int_equal(name_index__put(&ix, names[i], 0), -EEXIST);
	assert_int_equal(name_index__get(&ix, "thing_3000", &v), -ENOENT);
	name_index__free(&ix);
}

/* The retry backoff of pushd's sender and the collector's pull: doubling from
 * min, capped at max, equal jitter: in [d/2, d], both ends reachable. */
static void test_backoff(void **state)
{
	struct prng p;
	const uint64_t want[] = {200, 400, 800, 1600, 3200, 5000, 5000};

	prng__seed(&p, 99);
	for (unsigned f = 1; f <= 7; f++) {
		uint64_t d = want[f - 1], lo = UINT64_MAX, hi = 0;
		for (int i = 0; i < 2000; i++) {
			uint64_t b = backoff__next_ms(&p, 200, 5000, f);
			assert_true(b >= d / 2 && b <= d);
			lo = b < lo ? b : lo;
			hi = b > hi ? b : hi;
		}
		/* spread over the range, not one value */
		assert_true(lo < d / 2 + d / 20 && hi > d - d / 20);
	}
	/* failures 0 is the first; a huge count does not overflow past max. */
	assert_true(backoff__next_ms(&p, 200, 5000, 0) <= 200);
	assert_true(backoff__next_ms(&p, 200, 5000, 4000000000u) <= 5000);
	/* min above max: max. */
	assert_true(backoff__next_ms(&p, 9000, 5000, 1) <= 5000);
}

static void test_prng_deterministic(void **state)
{
	struct prng a;
	struct prng b;
	struct prng c;
	struct prng z;
	int differ = 0;

	prng__seed(&a, 12345);
	prng__seed(&b, 12345);
	prng__seed(&c, 54321);
	for (int i = 0; i < 1000; i++) {
		uint64_t x = prng__next(&a);
		assert_true(x == prng__next(&b));
		if (x != prng__next(&c))
			differ++;
	}
	assert_true(differ > 990);

	/* A zero seed must not lock xorshift at zero. */
	prng__seed(&z, 0);
	assert_true(prng__next(&z) != 0);
	assert_true(prng__next(&z) != prng__next(&z));

	/* prng__unit stays in [0, 1) and is spread over it. */
	{
		double lo = 1.0, hi = 0.0, sum = 0.0;
		prng__seed(&a, 7);
		for (int i = 0; i < 10000; i++) {
			double u = prng__unit(&a);
			assert_true(u >= 0.0 && u < 1.0);
			lo = u < lo ? u : lo;
			hi = u > hi ? u : hi;
			sum += u;
		}
		assert_true(lo < 0.01);
		assert_true(hi > 0.99);
		assert_true(fabs(sum / 10000 - 0.5) < 0.02);
	}
}

static void test_strdup(void **state)
{
	const char *src = "hello";
	char *d = util__strdup(src);

	assert_non_null(d);
	assert_true(d != src);
	assert_string_equal(d, "hello");
	free(d);
	assert_null(util__strdup(NULL));
}

static void test_value_copy_equal_clear_strings(void **state)
{
	char text[16] = "on";
	tsync_value src = tsync_string(text);
	tsync_value dst;
	tsync_value other = tsync_string("off");
	tsync_value null_str = tsync_string(NULL);

	assert_int_equal(value__copy(&dst, &src), 0);
	assert_int_equal(dst.type, TSYNC_TYPE_STRING);
	/* A deep copy: its own storage, the same text. */
	assert_true(dst.u.s != src.u.s);
	assert_true(value__equal(&dst, &src));
	assert_false(value__equal(&dst, &other));
	/* Changing the source afterwards does not change the copy. */
	text[0] = 'O';
	assert_string_equal(dst.u.s, "on");
	assert_false(value__equal(&dst, &src));
	value__clear(&dst);
	assert_int_equal(dst.type, TSYNC_TYPE_NONE);

	/* A NULL string copies as the empty string. */
	assert_int_equal(value__copy(&dst, &null_str), 0);
	assert_string_equal(dst.u.s, "");
	value__clear(&dst);
}

static void test_value_copy_equal_scalars(void **state)
{
	tsync_value a = tsync_int(5);
	tsync_value b = tsync_float(5.0);
	tsync_value c = tsync_bool(true);
	tsync_value n1 = tsync_float(NAN);
	tsync_value n2 = tsync_float(NAN);
	tsync_value none1 = {TSYNC_TYPE_NONE, {0}};
	tsync_value none2 = {TSYNC_TYPE_NONE, {0}};
	tsync_value d;

	assert_int_equal(value__copy(&d, &a), 0);
	assert_true(value__equal(&d, &a));
	/* Types differ: never equal, even with the same number. */
	assert_false(value__equal(&a, &b));
	assert_false(value__equal(&c, &a));
	/* NaN equals NaN here, so a NaN reading does not look like a change forever. */
	assert_true(value__equal(&n1, &n2));
	assert_true(value__equal(&none1, &none2));
	value__clear(&d); /* clearing a scalar is harmless */
	assert_int_equal(d.type, TSYNC_TYPE_NONE);
}

static void test_value_parse(void **state)
{
	static const char *const trues[] = {"1", "true", "TRUE", "on", "On", "yes"};
	static const char *const falses[] = {"0", "false", "off", "OFF", "no"};
	tsync_value v;
	const char *text = "any text";

	for (size_t i = 0; i < ARRAY_SIZE(trues); i++) {
		assert_int_equal(tsync_value_parse(TSYNC_TYPE_BOOL, trues[i], &v), 0);
		assert_int_equal(v.type, TSYNC_TYPE_BOOL);
		assert_true(v.u.b);
	}
	for (size_t i = 0; i < ARRAY_SIZE(falses); i++) {
		assert_int_equal(tsync_value_parse(TSYNC_TYPE_BOOL, falses[i], &v), 0);
		assert_false(v.u.b);
	}
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_BOOL, "2", &v), TSYNC_EVALUE);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_BOOL, "", &v), TSYNC_EVALUE);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_BOOL, "onn", &v), TSYNC_EVALUE);

	assert_int_equal(tsync_value_parse(TSYNC_TYPE_INT, "-42", &v), 0);
	assert_int_equal(v.type, TSYNC_TYPE_INT);
	assert_int_equal(v.u.i, -42);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_INT, "9223372036854775807", &v), 0);
	assert_true(v.u.i == INT64_MAX);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_INT, "9223372036854775808", &v), TSYNC_EVALUE);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_INT, "12abc", &v), TSYNC_EVALUE);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_INT, "1.5", &v), TSYNC_EVALUE);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_INT, "", &v), TSYNC_EVALUE);

	assert_int_equal(tsync_value_parse(TSYNC_TYPE_FLOAT, "21.5", &v), 0);
	assert_int_equal(v.type, TSYNC_TYPE_FLOAT);
	assert_true(v.u.f == 21.5);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_FLOAT, "-3e2", &v), 0);
	assert_true(v.u.f == -300.0);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_FLOAT, "nan", &v), TSYNC_EVALUE);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_FLOAT, "inf", &v), TSYNC_EVALUE);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_FLOAT, "1e999", &v), TSYNC_EVALUE);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_FLOAT, "21.5C", &v), TSYNC_EVALUE);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_FLOAT, "", &v), TSYNC_EVALUE);

	/* Strings borrow the text. */
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_STRING, text, &v), 0);
	assert_int_equal(v.type, TSYNC_TYPE_STRING);
	assert_ptr_equal(v.u.s, text);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_STRING, "", &v), 0);

	assert_int_equal(tsync_value_parse(TSYNC_TYPE_NONE, "1", &v), TSYNC_EVALUE);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_INT, NULL, &v), TSYNC_EVALUE);
	assert_int_equal(tsync_value_parse(TSYNC_TYPE_INT, "1", NULL), TSYNC_EVALUE);
}

static void test_value_format(void **state)
{
	char buf[64];
	char tiny[4];
	tsync_value v;
	tsync_value none = {TSYNC_TYPE_NONE, {0}};

	v = tsync_bool(true);
	assert_int_equal(tsync_value_format(&v, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "1");
	v = tsync_bool(false);
	tsync_value_format(&v, buf, sizeof(buf));
	assert_string_equal(buf, "0");
	v = tsync_int(-1234567890123LL);
	tsync_value_format(&v, buf, sizeof(buf));
	assert_string_equal(buf, "-1234567890123");
	v = tsync_float(21.5);
	tsync_value_format(&v, buf, sizeof(buf));
	assert_string_equal(buf, "21.5");
	v = tsync_float(0.1);
	tsync_value_format(&v, buf, sizeof(buf));
	assert_string_equal(buf, "0.1");
	v = tsync_string("on");
	tsync_value_format(&v, buf, sizeof(buf));
	assert_string_equal(buf, "on");
	assert_int_equal(tsync_value_format(&none, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "-");

	/* Like snprintf: truncated and terminated, returning the full length. */
	v = tsync_string("a longer string");
	assert_int_equal(tsync_value_format(&v, tiny, sizeof(tiny)), 15);
	assert_string_equal(tiny, "a l");
	assert_int_equal(tsync_value_format(&v, NULL, 0), 15);

	assert_int_equal(tsync_value_format(NULL, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(tsync_value_format(&v, NULL, 10), -EINVAL);
	v.type = (tsync_type)77;
	assert_int_equal(tsync_value_format(&v, buf, sizeof(buf)), -EINVAL);
}

static void test_value_roundtrip(void **state)
{
	static const tsync_type types[] = {TSYNC_TYPE_BOOL, TSYNC_TYPE_INT, TSYNC_TYPE_FLOAT,
	                                   TSYNC_TYPE_STRING};
	static const char *const texts[] = {"1", "-17", "-0.000123", "hello world"};
	char buf[64];

	for (size_t i = 0; i < ARRAY_SIZE(types); i++) {
		tsync_value v;
		tsync_value back;
		assert_int_equal(tsync_value_parse(types[i], texts[i], &v), 0);
		assert_true(tsync_value_format(&v, buf, sizeof(buf)) > 0);
		assert_int_equal(tsync_value_parse(types[i], buf, &back), 0);
		assert_true(value__equal(&v, &back));
	}
}

static void test_type_and_level_names(void **state)
{
	assert_string_equal(tsync_type_name(TSYNC_TYPE_BOOL), "bool");
	assert_string_equal(tsync_type_name(TSYNC_TYPE_INT), "int");
	assert_string_equal(tsync_type_name(TSYNC_TYPE_FLOAT), "float");
	assert_string_equal(tsync_type_name(TSYNC_TYPE_STRING), "string");
	assert_string_equal(tsync_type_name(TSYNC_TYPE_NONE), "none");
	assert_string_equal(tsync_log_level_name(TSYNC_LOG_ERROR), "error");
	assert_string_equal(tsync_log_level_name(TSYNC_LOG_DEBUG), "debug");
	assert_string_equal(tsync_log_level_name((tsync_log_level)99), "?");
	{
		tsync_log_level l = TSYNC_LOG_ERROR;
		for (int k = TSYNC_LOG_ERROR; k <= TSYNC_LOG_DEBUG; k++) {
			assert_int_equal(tsync_log_level_parse(tsync_log_level_name((tsync_log_level)k), &l), 0);
			assert_int_equal(l, k);
		}
		assert_int_equal(tsync_log_level_parse("verbose", &l), -EINVAL);
		assert_int_equal(tsync_log_level_parse(NULL, &l), -EINVAL);
		assert_int_equal(l, TSYNC_LOG_DEBUG); /* untouched on error */
	}
}

static void test_strerror(void **state)
{
	/* Every library code has its own text, distinct from the others and from "unknown". */
	const char *seen[TSYNC_ERR_LAST - TSYNC_ERR_FIRST + 1];

	for (int e = TSYNC_ERR_FIRST; e <= TSYNC_ERR_LAST; e++) {
		const char *s = tsync_strerror(e);
		assert_non_null(s);
		assert_true(strlen(s) > 0);
		assert_string_not_equal(s, "unknown error");
		for (int k = TSYNC_ERR_FIRST; k < e; k++)
			assert_string_not_equal(s, seen[k - TSYNC_ERR_FIRST]);
		seen[e - TSYNC_ERR_FIRST] = s;
	}
	assert_non_null(strstr(tsync_strerror(TSYNC_ESTORE), "LMDB"));
	assert_non_null(strstr(tsync_strerror(TSYNC_EREFUSED), "err_ip_in_refused"));
	assert_string_equal(tsync_strerror(0), "success");
	/* Negative errno values read as strerror() does. */
	assert_string_equal(tsync_strerror(-ENOMEM), strerror(ENOMEM));
	assert_string_equal(tsync_strerror(-ENOENT), strerror(ENOENT));
	assert_string_equal(tsync_strerror(TSYNC_ERR_FIRST - 1), "unknown error");
	assert_string_equal(tsync_strerror(1), "unknown error");
}

static void test_reject_names(void **state)
{
	assert_string_equal(tsync_reject_name(TSYNC_REJ_VAL), "err_ip_in_val");
	assert_string_equal(tsync_reject_name(TSYNC_REJ_JSON), "err_ip_in_json_req");
	assert_string_equal(tsync_reject_name(TSYNC_REJ_IO), "err_ip_in_io");
	assert_string_equal(tsync_reject_name(TSYNC_REJ_THS_I_USE), "err_ip_in_ths_i_use");
	assert_string_equal(tsync_reject_name(TSYNC_REJ_REFUSED), "err_ip_in_refused");
	assert_string_equal(tsync_reject_name(TSYNC_REJ_CMD), "err_ip_in_cmd");
	/* Every reason has a seed-style name; out of range is named too. */
	for (int r = 0; r < TSYNC_REJ_COUNT; r++) {
		const char *n = tsync_reject_name((tsync_reject)r);
		assert_non_null(n);
		assert_int_equal(strncmp(n, "err_ip_in_", 10), 0);
	}
	assert_string_equal(tsync_reject_name(TSYNC_REJ_COUNT), "err_unknown");
	assert_string_equal(tsync_reject_name((tsync_reject)-1), "err_unknown");
}

/* The logger: level filter, prefix, NULL-safety. */
struct log_capture {
	int calls;
	tsync_log_level level;
	char line[1100];
};

static void capture(void *ud, tsync_log_level level, const char *line)
{
	struct log_capture *c = ud;
	c->calls++;
	c->level = level;
	snprintf(c->line, sizeof(c->line), "%s", line);
}

static void test_logger(void **state)
{
	struct log_capture c = {0};
	struct logger log = {capture, &c, TSYNC_LOG_INFO, "PI-Light"};
	char big[2000];

	log_error(&log, "boot %d", 3);
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.level, TSYNC_LOG_ERROR);
	assert_string_equal(c.line, "PI-Light: boot 3");
	log_debug(&log, "hidden %d", 1); /* above the level: dropped */
	assert_int_equal(c.calls, 1);
	log.prefix = NULL;
	log_info(&log, "plain");
	assert_string_equal(c.line, "plain");
	/* A long line is cut, not overflowed. */
	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	log_warn(&log, "%s", big);
	assert_int_equal(c.calls, 3);
	assert_true(strlen(c.line) < 1024);
	/* A NULL logger or callback logs nothing and does not crash. */
	log_error((const struct logger *)NULL, "nothing");
	log.fn = NULL;
	log_error(&log, "nothing");
	assert_int_equal(c.calls, 3);
}

/* Control characters: \n and \xNN, nothing else touched, idempotent. */
static void test_log_escape(void **state)
{
	char out[256], twice[256];
	char all[64];
	size_t n;

	n = log__escape(out, sizeof(out), "ok\nERROR forged line");
	assert_string_equal(out, "ok\\nERROR forged line");
	assert_int_equal(n, strlen(out));
	log__escape(out, sizeof(out), "a\rb\tc\x1b[31md\x7f\001e");
	assert_string_equal(out, "a\\x0db\\x09c\\x1b[31md\\x7f\\x01e");
	/* Printable ASCII, backslashes and UTF-8 pass as they are. */
	log__escape(out, sizeof(out), "C:\\dir \\n 21\302\260C ~");
	assert_string_equal(out, "C:\\dir \\n 21\302\260C ~");
	/* The sink ends the line: a trailing newline is not news. */
	log__escape(out, sizeof(out), "done\n\n");
	assert_string_equal(out, "done");
	log__escape(out, sizeof(out), "a\n\nb");
	assert_string_equal(out, "a\\n\\nb");

	/* Every control character, and escaping twice changes nothing. */
	for (int i = 1; i < 32; i++)
		all[i - 1] = (char)i;
	all[31] = 0x7f;
	all[32] = 'z';
	all[33] = '\0';
	log__escape(out, sizeof(out), all);
	for (const char *p = out; *p; p++)
		assert_true((unsigned char)*p >= 0x20 && *p != 0x7f);
	assert_non_null(strstr(out, "\\x01\\x02"));
	assert_non_null(strstr(out, "\\x1f\\x7fz"));
	log__escape(twice, sizeof(twice), out);
	assert_string_equal(twice, out);

	/* Cut short, never in the middle of an escape, always terminated. */
	n = log__escape(out, 6, "abc\001def");
	assert_string_equal(out, "abc");
	assert_int_equal(n, 3);
	n = log__escape(out, 8, "abc\001def");
	assert_string_equal(out, "abc\\x01");
	assert_int_equal(n, 7);
	n = log__escape(out, 1, "abc");
	assert_string_equal(out, "");
	assert_int_equal(n, 0);
}

/* The library's sink escapes whatever its arguments carry. */
static void test_logger_escapes(void **state)
{
	struct log_capture c = {0};
	struct logger log = {capture, &c, TSYNC_LOG_INFO, "PI-Light"};

	log_warn(&log, "from %s: %s", "peer", "reason\n12:00:00.000 ERROR forged");
	assert_int_equal(c.calls, 1);
	assert_null(strchr(c.line, '\n'));
	assert_string_equal(c.line, "PI-Light: from peer: reason\\n12:00:00.000 ERROR forged");
	log_info(&log, "bell\a and esc\x1b");
	assert_string_equal(c.line, "PI-Light: bell\\x07 and esc\\x1b");
}

/* The rate-limited log, on a clock the test moves. */
struct summaries {
	int n;
	char key[RATELOG_KEY_MAX];
	int reason;
	uint64_t count, elapsed_us;
	uint64_t total;
};

static void on_summary(void *ud, const char *key, int reason, uint64_t count, uint64_t elapsed_us)
{
	struct summaries *s = ud;

	s->n++;
	snprintf(s->key, sizeof(s->key), "%s", key ? key : "(other)");
	s->reason = reason;
	s->count = count;
	s->elapsed_us = elapsed_us;
	s->total += count;
}

#define SEC 1000000u

static void test_ratelog_first_then_summary(void **state)
{
	struct ratelog rl;
	struct summaries s = {0};
	uint64_t now = 1000 * SEC;
	int full = 0;

	assert_int_equal(ratelog__init(&rl, 4, 10 * SEC, on_summary, &s), 0);
	assert_int_equal(ratelog__tick(&rl, now), UINT64_MAX); /* nothing tracked */

	/* A flood of 20,000 in 5 s: the first logged, the rest held back. */
	for (int i = 0; i < 20000; i++)
		full += ratelog__hit(&rl, "10.0.0.9:4000", 3, now + (uint64_t)i * 250);
	assert_int_equal(full, 1);
	assert_int_equal(s.n, 0);
	/* Not due before the interval ends... */
	assert_int_equal(ratelog__tick(&rl, now + 9 * SEC), now + 10 * SEC);
	assert_int_equal(s.n, 0);
	/* ...then one summary with the exact count. */
	assert_int_equal(ratelog__tick(&rl, now + 10 * SEC), now + 20 * SEC);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.key, "10.0.0.9:4000");
	assert_int_equal(s.reason, 3);
	assert_int_equal(s.count, 19999);
	assert_int_equal(s.elapsed_us, 10 * SEC);

	/* The flood goes on: one summary per interval, never a full line. */
	now += 10 * SEC;
	for (int k = 0; k < 3; k++) {
		for (int i = 0; i < 100; i++)
			assert_false(ratelog__hit(&rl, "10.0.0.9:4000", 3, now + (uint64_t)i * 1000));
		now += 10 * SEC;
		ratelog__tick(&rl, now);
		assert_int_equal(s.n, 2 + k);
		assert_int_equal(s.count, 100);
	}
	/* A quiet interval: no line, and the key is forgotten... */
	now += 10 * SEC;
	assert_int_equal(ratelog__tick(&rl, now), UINT64_MAX);
	assert_int_equal(s.n, 4);
	/* ...so the next one is news again, in full. */
	assert_true(ratelog__hit(&rl, "10.0.0.9:4000", 3, now));
	assert_false(ratelog__hit(&rl, "10.0.0.9:4000", 3, now + 1));
	/* Another reason from the same address is another key. */
	assert_true(ratelog__hit(&rl, "10.0.0.9:4000", 4, now + 2));
	/* At exit, what was held back is told, due or not. */
	ratelog__flush(&rl, now + 3);
	assert_int_equal(s.n, 5);
	assert_int_equal(s.count, 1);
	assert_int_equal(s.total, 19999 + 300 + 1);
	ratelog__free(&rl);
}

static void test_ratelog_late_tick(void **state)
{
	struct ratelog rl;
	struct summaries s = {0};
	uint64_t now = 5 * SEC;

	/* Nobody ticks: the next event of the key writes the summary due. */
	assert_int_equal(ratelog__init(&rl, 4, 10 * SEC, on_summary, &s), 0);
	assert_true(ratelog__hit(&rl, "PI-Light", 1, now));
	assert_false(ratelog__hit(&rl, "PI-Light", 1, now + SEC));
	assert_false(ratelog__hit(&rl, "PI-Light", 1, now + 2 * SEC));
	assert_false(ratelog__hit(&rl, "PI-Light", 1, now + 11 * SEC));
	assert_int_equal(s.n, 1);
	assert_int_equal(s.count, 2);
	/* Long after, the held-back one is summarised and the new one is news. */
	assert_true(ratelog__hit(&rl, "PI-Light", 1, now + 100 * SEC));
	assert_int_equal(s.n, 2);
	assert_int_equal(s.count, 1);
	/* A key whose only event was logged in full leaves quietly. */
	assert_true(ratelog__hit(&rl, "PI-Show", 1, now + 200 * SEC));
	assert_true(ratelog__hit(&rl, "PI-Show", 1, now + 300 * SEC));
	assert_int_equal(s.n, 2);
	ratelog__free(&rl);
}

static void test_ratelog_bounded(void **state)
{
	struct ratelog rl;
	struct summaries s = {0};
	uint64_t now = 77 * SEC;
	char key[64];
	int full = 0;

	/* 10,000 forged source addresses against a table of 8: 8 keys and the
	 * bucket get a full line each, the rest is one count. */
	assert_int_equal(ratelog__init(&rl, 8, 10 * SEC, on_summary, &s), 0);
	for (int i = 0; i < 10000; i++) {
		snprintf(key, sizeof(key), "10.%d.%d.%d:%d", i >> 16, (i >> 8) & 255, i & 255, 1000 + i);
		full += ratelog__hit(&rl, key, 2, now + (uint64_t)i);
	}
	assert_int_equal(full, 9);
	now += 11 * SEC;
	ratelog__tick(&rl, now);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.key, "(other)");
	assert_int_equal(s.reason, RATELOG_OTHER);
	assert_int_equal(s.count, 10000 - 9);
	/* The table did not grow, and the quiet keys are forgotten in turn. */
	assert_int_equal(rl.n_slots, 8);
	now += 10 * SEC;
	assert_int_equal(ratelog__tick(&rl, now), UINT64_MAX);
	assert_true(ratelog__hit(&rl, "10.0.0.1:1001", 2, now));

	/* A key longer than the table keeps is cut, and still one key. */
	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	assert_true(ratelog__hit(&rl, key, 2, now));
	assert_false(ratelog__hit(&rl, key, 2, now + 1));
	ratelog__free(&rl);

	/* A zeroed ratelog frees cleanly, as a half-built node does. */
	memset(&rl, 0, sizeof(rl));
	ratelog__flush(&rl, now);
	ratelog__free(&rl);
}

static void test_clocks(void **state)
{
	uint64_t a = util__now_us();
	uint64_t b = util__now_us();
	uint64_t rt = util__realtime_us();

	assert_true(b >= a);
	/* After 2020-01-01 and before 2200. */
	assert_true(rt > 1577836800ull * 1000000u);
	assert_true(rt < 7258118400ull * 1000000u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_buf_append_grows),
	    cmocka_unit_test(test_log_escape),
	    cmocka_unit_test(test_logger_escapes),
	    cmocka_unit_test(test_ratelog_first_then_summary),
	    cmocka_unit_test(test_ratelog_late_tick),
	    cmocka_unit_test(test_ratelog_bounded),
	    cmocka_unit_test(test_buf_appendf),
	    cmocka_unit_test(test_buf_append_i64),
	    cmocka_unit_test(test_buf_reserve),
	    cmocka_unit_test(test_name_index_basic),
	    cmocka_unit_test(test_name_index_grows),
	    cmocka_unit_test(test_prng_deterministic),
	    cmocka_unit_test(test_backoff),
	    cmocka_unit_test(test_strdup),
	    cmocka_unit_test(test_value_copy_equal_clear_strings),
	    cmocka_unit_test(test_value_copy_equal_scalars),
	    cmocka_unit_test(test_value_parse),
	    cmocka_unit_test(test_value_format),
	    cmocka_unit_test(test_value_roundtrip),
	    cmocka_unit_test(test_type_and_level_names),
	    cmocka_unit_test(test_strerror),
	    cmocka_unit_test(test_reject_names),
	    cmocka_unit_test(test_logger),
	    cmocka_unit_test(test_clocks),
	};

	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
