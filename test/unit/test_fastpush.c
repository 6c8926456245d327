/*
 * fastpush.c (the collector's reader of the usual push body) against
 * jansson, differentially: bodies are generated - members in any order,
 * optional ones left out, integers of every size, reals, true/false,
 * strings with and without escapes or other bytes, null, nested values,
 * unknown and duplicate members, "kind", whitespace - and then mutated
 * (bytes flipped, inserted, deleted, the end cut). For every input the fast
 * reader takes, jansson (as ingest.c calls it, rejecting duplicates) must
 * take it too and read the same members with the same values, no more; what
 * the fast reader declines goes to jansson in the collector anyway.
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "fastpush.h"

static uint64_t rng = 0x2026120315ULL;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static unsigned pick(unsigned n)
{
	return (unsigned)(next() % n);
}

struct out {
	char b[8192];
	size_t n;
};

static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int k;

	va_start(ap, fmt);
	k = vsnprintf(o->b + o->n, sizeof(o->b) - o->n, fmt, ap);
	va_end(ap);
	if (k > 0 && o->n + (size_t)k < sizeof(o->b))
		o->n += (size_t)k;
}

static void sp(struct out *o)
{
	static const char *const w[] = {"", "", "", " ", "\n", "\t ", "\r\n"};
	put(o, "%s", w[pick(7)]);
}

static void gen_string(struct out *o)
{
	static const char *const s[] = {"t1",   "",           "temp",        "a b",  "x\\\"y",
	                                "\\\\", "caf\\u00e9", "caf\xc3\xa9", "t\\n", "say \\\"hi\\\"",
	                                "/",    "\x7f",       "~!@#$%^&*()"};
	put(o, "\"%s\"", s[pick(13)]);
}

static void gen_number(struct out *o)
{
	switch (pick(9)) {
	case 0:
		put(o, "%d", (int)pick(100));
		break;
	case 1:
		put(o, "-%llu", (unsigned long long)(next() >> 1));
		break;
	case 2:
		put(o, "%llu", (unsigned long long)next());
		break;
	case 3:
		put(o, "%.17g", (double)(int64_t)next() / 1e6);
		break;
	case 4:
		put(o, "%de%d", (int)pick(10), (int)pick(700) - 350);
		break;
	case 5:
		put(o, "-0");
		break;
	case 6:
		put(o, "1.5E+3");
		break;
	case 7:
		put(o, "0%d", (int)pick(10));
		break;
	default:
		put(o, "%lld", (long long)(1700000000000000LL + (int64_t)pick(1000000)));
	}
}

static void gen_value(struct out *o)
{
	switch (pick(10)) {
	case 0:
	case 1:
	case 2:
	case 3:
		gen_number(o);
		break;
	case 4:
		put(o, "true");
		break;
	case 5:
		put(o, "false");
		break;
	case 6:
	case 7:
		gen_string(o);
		break;
	case 8:
		put(o, "null");
		break;
	default:
		put(o, pick(2) ? "{}" : "[1]");
	}
}

static void gen_item(struct out *o)
{
	static const char *const keys[] = {"seq",     "thing",  "value", "time", "owner_boot",
	                                   "version", "source", "kind",  "other"};
	unsigned order[9];
	unsigned n = 0;
	bool clean = pick(2) == 0; /* half the items as pushd writes them */

	for (unsigned k = 0; k < 9; k++) {
		/* seq nearly always, the common members often, the odd ones rarely; now and then one twice.
		 */
		unsigned p = k == 0 ? 95 : k < 4 ? 80 : k < 7 ? 40 : 4;
		if (clean)
			p = k < 4 ? 100 : k < 7 ? 50 : 0;
		if (pick(100) < p)
			order[n++] = k;
	}
	if (!clean && n > 1 && pick(30) == 0)
		order[n - 1] = order[0];
	for (unsigned i = 0; i + 1 < n; i++) {
		unsigned j = i + pick(n - i), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	put(o, "{");
	for (unsigned i = 0; i < n; i++) {
		sp(o);
		put(o, "%s\"%s\":", i ? "," : "", keys[order[i]]);
		sp(o);
		switch (order[i]) {
		case 0:
		case 3:
		case 4:
		case 5:
			if (clean)
				put(o, "%u", 1 + pick(1000000));
			else if (pick(10) == 0)
				gen_value(o);
			else
				gen_number(o);
			break;
		case 1:
		case 6:
		case 7:
			if (clean)
				put(o, "\"%s\"", order[i] == 6 ? (pick(2) ? "import" : "recovery") : "t1");
			else if (pick(10) == 0)
				gen_value(o);
			else
				gen_string(o);
			break;
		default:
			if (clean && pick(2))
				put(o, pick(2) ? "%.17g" : "%.3f", (double)(int64_t)next() / 1e9);
			else
				gen_value(o);
		}
	}
	sp(o);
	put(o, "}");
}

static void gen_body(struct out *o)
{
	unsigned order[5] = {0, 1, 2, 3, 4}, n = 4 + (pick(20) == 0);

	o->n = 0;
	for (unsigned i = 0; i + 1 < n; i++) {
		unsigned j = i + pick(n - i), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	sp(o);
	put(o, "{");
	for (unsigned i = 0, first = 1; i < n; i++) {
		if (order[i] != 0 && order[i] != 3 && pick(5) == 0)
			continue; /* stream, boot (and the odd member) left out */
		put(o, "%s", first ? "" : ",");
		first = 0;
		sp(o);
		switch (order[i]) {
		case 0:
			put(o, "\"source\":\"PUSH\"");
			break;
		case 1:
			put(o, "\"stream\":\"0123456789abcdef0123456789abcdef\"");
			break;
		case 2:
			put(o, "\"boot\":");
			gen_number(o);
			break;
		case 3: {
			unsigned k = pick(6);
			put(o, "\"measurements\":[");
			for (unsigned x = 0; x < k; x++) {
				if (x)
					put(o, ",");
				sp(o);
				gen_item(o);
			}
			put(o, "]");
			break;
		}
		default:
			put(o, "\"extra\":1");
		}
		sp(o);
	}
	put(o, "}");
	sp(o);
}

static void mutate(struct out *o)
{
	size_t at = o->n ? pick((unsigned)o->n) : 0;

	switch (pick(4)) {
	case 0:
		o->b[at] = (char)next();
		break;
	case 1:
		if (o->n + 1 < sizeof(o->b)) {
			memmove(o->b + at + 1, o->b + at, o->n - at);
			o->b[at] = "{}[],:\"\\ 0e-.tfn\x01\xff"[pick(18)];
			o->n++;
		}
		break;
	case 2:
		if (o->n) {
			memmove(o->b + at, o->b + at + 1, o->n - at - 1);
			o->n--;
		}
		break;
	default:
		o->n = at;
	}
}

/* A member of `obj` as the fast reader saw it: present or not, and its text or number. */
static void same_str(json_t *obj, const char *key, const char *fast)
{
	json_t *j = json_object_get(obj, key);

	if (!fast) {
		assert_null(j);
		return;
	}
	assert_true(json_is_string(j));
	assert_string_equal(json_string_value(j), fast);
}

static void same_int(json_t *obj, const char *key, bool has, int64_t x)
{
	json_t *j = json_object_get(obj, key);

	if (!has) {
		assert_null(j);
		return;
	}
	assert_true(json_is_integer(j));
	assert_true(json_integer_value(j) == x);
}

static int check(const char *body, size_t len)
{
	struct fast_push fp;
	int r = fastpush__parse(body, len, 10000, &fp);
	json_t *root, *arr;
	size_t members;

	assert_true(r == 0 || r == 1);
	if (r == 0)
		return 0;
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
	if (!root)
		fprintf(stderr, "fast reader took what jansson refuses: %.*s\n", (int)len, body);
	assert_non_null(root);
	assert_true(json_is_object(root));
	same_str(root, "source", fp.source);
	same_str(root, "stream", fp.stream);
	same_int(root, "boot", fp.has_boot, fp.boot);
	members = 2 + (fp.stream != NULL) + fp.has_boot;
	assert_int_equal(json_object_size(root), members);
	arr = json_object_get(root, "measurements");
	assert_true(json_is_array(arr));
	assert_int_equal(json_array_size(arr), fp.n);
	for (size_t i = 0; i < fp.n; i++) {
		const struct fast_item *it = &fp.items[i];
		json_t *o = json_array_get(arr, i), *v = json_object_get(o, "value");

		assert_true(json_is_object(o));
		same_int(o, "seq", true, it->seq);
		same_str(o, "thing", it->thing);
		same_str(o, "source", it->via);
		same_int(o, "time", it->has_time, it->time);
		same_int(o, "owner_boot", it->has_boot, it->boot);
		same_int(o, "version", it->has_ver, it->ver);
		switch (it->vkind) {
		case FAST_ABSENT:
			assert_null(v);
			break;
		case FAST_BOOL:
			assert_true(json_is_boolean(v) && json_is_true(v) == it->b);
			break;
		case FAST_INT:
			assert_true(json_is_integer(v) && json_integer_value(v) == it->i);
			break;
		case FAST_REAL:
			assert_true(json_is_real(v) && json_real_value(v) == it->f);
			break;
		case FAST_STRING:
			assert_true(json_is_string(v));
			assert_string_equal(json_string_value(v), it->s);
			break;
		}
		assert_int_equal(json_object_size(o), 1 + (it->thing != NULL) + (it->via != NULL) +
		                                          it->has_time + it->has_boot + it->has_ver +
		                                          (it->vkind != FAST_ABSENT));
	}
	json_decref(root);
	fastpush__free(&fp);
	return 1;
}

static void test_differential(void **state)
{
	struct out o;
	long taken = 0, taken_mutated = 0, items = 0;
	const long rounds = 200000;

	for (long i = 0; i < rounds; i++) {
		gen_body(&o);
		if (check(o.b, o.n)) {
			struct fast_push fp;
			taken++;
			assert_int_equal(fastpush__parse(o.b, o.n, 10000, &fp), 1);
			items += (long)fp.n;
			fastpush__free(&fp);
		}
		for (unsigned m = 1 + pick(3); m > 0; m--)
			mutate(&o);
		taken_mutated += check(o.b, o.n);
	}
	fprintf(stderr, "fastpush: %ld bodies, %ld taken (%ld items), %ld mutated ones taken\n", rounds,
	        taken, items, taken_mutated);
	/* The generator reaches the fast reader's shape often, items included. */
	assert_true(taken > rounds / 20);
	assert_true(items > rounds / 20);
}

/* The shape pushd sends, and the edges of what is taken. */
static void test_cases(void **state)
{
	static const char *const yes[] = {
	    "{\"source\":\"P\",\"stream\":\"0123456789abcdef0123456789abcdef\",\"boot\":3,\"measurements\":["
	    "{\"seq\":1,\"thing\":\"t0\",\"value\":5,\"time\":1700000000000000,\"owner_boot\":2,\"version\":"
	    "9},"
	    "{\"seq\":2,\"source\":\"import\",\"thing\":\"temp\",\"value\":21.5,\"time\":1700000000000001,"
	    "\"owner_boot\":0,\"version\":0}]}",
	    "{\"measurements\":[],\"source\":\"P\"}",
	    /* the ends of 64 bits, and zero written with a sign */
	    "{\"source\":\"P\",\"measurements\":[{\"seq\":9223372036854775807,\"value\":-9223372036854775808,"
	    "\"time\":-0,\"version\":18,\"owner_boot\":1000000000000000000}]}",
	    " {\"source\":\"P\",\"measurements\":[{\"seq\":1,\"value\":true},{\"seq\":2,\"value\":\"on\"}]}"
	    "\n",
	};
	static const char *const no[] = {
	    "{\"source\":\"P\"}",                                                   /* no measurements */
	    "{\"source\":\"P\",\"measurements\":[{\"thing\":\"t\"}]}",              /* no seq */
	    "{\"source\":\"P\",\"measurements\":[{\"seq\":1,\"kind\":\"cumul\"}]}", /* another kind */
	    "{\"source\":\"P\",\"measurements\":[{\"seq\":1,\"value\":null}]}",     /* null */
	    "{\"source\":\"P\",\"measurements\":[{\"seq\":1,\"seq\":2}]}",          /* twice */
	    "{\"source\":\"P\\u0041\",\"measurements\":[]}",                        /* an escape */
	    "{\"source\":\"P\",\"measurements\":[{\"seq\":9223372036854775808}]}",  /* beyond 64 bits */
	    "{\"source\":\"P\",\"measurements\":[{\"seq\":1,\"value\":-9223372036854775809}]}",
	    "{\"source\":\"P\",\"measurements\":[{\"seq\":1,\"value\":18446744073709551616}]}",
	    "{\"source\":\"P\",\"measurements\":[{\"seq\":1,\"value\":99999999999999999999}]}",
	    "{\"source\":\"P\",\"measurements\":[{\"seq\":1.0}]}",                  /* a real seq */
	    "{\"source\":\"P\",\"measurements\":[]} x",                             /* after the end */
	    "{\"source\":\"P\",\"measurements\":[{\"seq\":01}]}",                   /* not JSON */
	};
	struct fast_push fp;

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		assert_int_equal(check(yes[i], strlen(yes[i])), 1);
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		assert_int_equal(fastpush__parse(no[i], strlen(no[i]), 10000, &fp), 0);
	/* More items than the collector takes: declined (jansson's path answers 413). */
	{
		static const char two[] = "{\"source\":\"P\",\"measurements\":[{\"seq\":1},{\"seq\":2}]}";
		assert_int_equal(fastpush__parse(two, strlen(two), 1, &fp), 0);
		assert_int_equal(fastpush__parse(two, strlen(two), 2, &fp), 1);
		fastpush__free(&fp);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cases),
	    cmocka_unit_test(test_differential),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
