/*
 * lib/wire's own JSON reader (decode.c) at the edges of JSON: each text is
 * decoded as a legacy list without a key, which the reader accepts exactly
 * when the text is JSON that jansson accepts with JSON_REJECT_DUPLICATES.
 * Each case states the verdict and is also checked against jansson itself,
 * so that a jansson that changed would show here. Then: decoding an io
 * datagram with a kept decoder allocates nothing.
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "wire/wire.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/* Every allocation of the process, counted. */
static size_t allocs;

#ifdef UNDER_ASAN
/* ASan's allocator is in front: it calls a hook on every allocation
 * (its sanitizer/allocator_interface.h, which gcc does not install). */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));
static void count_malloc(const volatile void *p, size_t n)
{
	(void)p;
	(void)n;
	allocs++;
}
static void count_free(const volatile void *p)
{
	(void)p;
}
static void count_start(void)
{
	__sanitizer_install_malloc_and_free_hooks(count_malloc, count_free);
}
#else
/* The test's own malloc in front of glibc's. */
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t m);
void *__libc_realloc(void *p, size_t n);
void *malloc(size_t n);
void *calloc(size_t n, size_t m);
void *realloc(void *p, size_t n);
void *malloc(size_t n)
{
	allocs++;
	return __libc_malloc(n);
}
void *calloc(size_t n, size_t m)
{
	allocs++;
	return __libc_calloc(n, m);
}
void *realloc(void *p, size_t n)
{
	allocs++;
	return __libc_realloc(p, n);
}
static void count_start(void)
{
}
#endif

static struct wire_codec big_codec(void)
{
	return (struct wire_codec){.max_datagram = 65507, .max_msgs = 65535, .max_string = 65000};
}

/* Whether the reader takes text as a datagram, after checking that jansson
 * gives the same verdict. */
static bool accepted(const char *text, size_t len)
{
	struct wire_codec c = big_codec();
	struct wire_datagram dg;
	json_error_t error;
	json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &error);
	bool jansson = j && json_is_array(j);
	tsync_reject why;
	int r = wire__decode(&c, text, len, &dg, &why);

	json_decref(j);
	wire__datagram_release(&dg);
	if ((r == 0) != jansson)
		print_error("reader %s, jansson %s: %.*s\n", r == 0 ? "accepts" : "refuses",
		            jansson ? "accepts" : "refuses", (int)(len > 200 ? 200 : len), text);
	assert_int_equal(r == 0, jansson);
	if (r < 0)
		assert_int_equal(why, TSYNC_REJ_JSON);
	return r == 0;
}

#define ACCEPTS(lit) assert_true(accepted(lit, sizeof(lit) - 1))
#define REFUSES(lit) assert_false(accepted(lit, sizeof(lit) - 1))

static void test_grammar(void **state)
{
	(void)state;
	ACCEPTS("[]");
	ACCEPTS(" \t\r\n[ ] \n");
	ACCEPTS("[{}, [], 0, -0, 1, -1, 1.5, -1.5e3, 1E+2, 2e-2, true, false, null, \"\"]");
	REFUSES("");
	REFUSES("   ");
	REFUSES("[");
	REFUSES("]");
	REFUSES("[1,]");
	REFUSES("[,1]");
	REFUSES("[1 2]");
	REFUSES("{\"a\":1,}");
	REFUSES("[{\"a\"}]");
	REFUSES("[{\"a\" 1}]");
	REFUSES("[{1:2}]");
	REFUSES("[] []");
	REFUSES("[]x");
	REFUSES("\"top\"");
	REFUSES("1");
	REFUSES("[01]");
	REFUSES("[-01]");
	REFUSES("[-]");
	REFUSES("[1.]");
	REFUSES("[.5]");
	REFUSES("[1e]");
	REFUSES("[1e+]");
	REFUSES("[+1]");
	REFUSES("[0x10]");
	REFUSES("[tru]");
	REFUSES("[truex]");
	REFUSES("[True]");
	REFUSES("[nul]");
	REFUSES("[NaN]");
	REFUSES("[Infinity]");
	REFUSES("[1true]");
	REFUSES("['a']");
	REFUSES("[\"a\"\"b\"]");
}

static void test_numbers(void **state)
{
	(void)state;
	ACCEPTS("[9223372036854775807, -9223372036854775808]");
	REFUSES("[9223372036854775808]");
	REFUSES("[-9223372036854775809]");
	REFUSES("[99999999999999999999999]");
	/* Eighteen digits are read unchecked, the nineteenth checked. */
	ACCEPTS("[999999999999999999, -999999999999999999, 1000000000000000000, 9223372036854775800]");
	REFUSES("[9999999999999999999]");
	REFUSES("[-9999999999999999999]");
	REFUSES("[9223372036854775810]");
	REFUSES("[{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t0\",\"val\":1,\"ver\":9999999999999999999}]");
	ACCEPTS("[1e308, -1e308, 1e-400, 123456789012345678901234567890.5]");
	REFUSES("[1e309]");
	REFUSES("[-1e400]");
}

static void test_strings(void **state)
{
	(void)state;
	ACCEPTS("[\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0041 \\u00e9 \\u20AC\"]");
	ACCEPTS("[\"\\ud83d\\ude00\", \"\xf0\x9f\x98\x80\", \"\xc3\xa9\", \"\xe2\x82\xac\"]");
	REFUSES("[\"\\u0000\"]");
	REFUSES("[{\"\\u0000\":1}]");
	REFUSES("[\"\\ud83d\"]");
	REFUSES("[\"\\ud83dx\"]");
	REFUSES("[\"\\ud83d\\u0041\"]");
	REFUSES("[\"\\ude00\"]");
	REFUSES("[\"\\u12\"]");
	REFUSES("[\"\\u12G4\"]");
	REFUSES("[\"\\x41\"]");
	REFUSES("[\"\\'\"]");
	REFUSES("[\"a\tb\"]");
	REFUSES("[\"a\nb\"]");
	REFUSES("[\"\x7f\" , \"\x80\"]");
	REFUSES("[\"\xc0\xaf\"]");         /* overlong '/' */
	REFUSES("[\"\xe0\x80\xaf\"]");     /* overlong, 3 bytes */
	REFUSES("[\"\xed\xa0\x80\"]");     /* a surrogate in UTF-8 */
	REFUSES("[\"\xf4\x90\x80\x80\"]"); /* over U+10FFFF */
	REFUSES("[\"\xf5\x80\x80\x80\"]");
	REFUSES("[\"\xc3\"]");
	REFUSES("[\"abc");
	ACCEPTS("[\"\x7f\"]");
}

static void test_objects(void **state)
{
	(void)state;
	ACCEPTS("[{\"a\":1,\"b\":{\"a\":2},\"c\":[{\"a\":3}]}]");
	REFUSES("[{\"a\":1,\"a\":2}]");
	REFUSES("[{\"a\":1,\"\\u0061\":2}]");
	REFUSES("[{\"x\":{\"k\":1,\"k\":1}}]");
	ACCEPTS("[{\"a\":1},{\"a\":1}]");
	ACCEPTS("[{\"ab\":1,\"ba\":2,\"a\":3,\"b\":4,\"\":5}]");
}

/* jansson skips a NUL byte right after a number or a literal (its stream
 * loses a NUL it puts back); the reader does the same, and nothing else. */
static void test_nul_quirk(void **state)
{
	(void)state;
	ACCEPTS("[1\0]");
	ACCEPTS("[0\0,true\0,null\0,-2.5e1\0]");
	ACCEPTS("[{\"a\":false\0}]");
	REFUSES("[1\0\0]");
	REFUSES("[1 \0]");
	REFUSES("[\"a\"\0]");
	REFUSES("[[]\0]");
	REFUSES("[]\0");
	REFUSES("\0[]");
}

/* Objects of many keys (hashed past the first few): a duplicate is found
 * wherever it is, an inner object's keys are its own, and many keys do not
 * cost a time that grows with their square (not timed here: the test only
 * has to end). */
static void test_many_keys(void **state)
{
	enum { KEYS = 4000 };
	static char s[65000];
	size_t n;

	(void)state;
	n = (size_t)snprintf(s, sizeof(s), "[{");
	for (int i = 0; i < KEYS; i++)
		n += (size_t)snprintf(s + n, sizeof(s) - n, "%s\"k%d\":%d", i ? "," : "", i, i);
	memcpy(s + n, "}]", 3);
	assert_true(accepted(s, n + 2));
	/* The same with the first key again at the end. */
	memcpy(s + n, ",\"k0\":1}]", 10);
	assert_false(accepted(s, n + 9));
	/* ...and a middle one, escaped. */
	memcpy(s + n, ",\"\\u006b3000\":1}]", 18);
	assert_false(accepted(s, n + 17));
	/* An inner object of many keys, the same as the outer's: no duplicate;
	 * then one inside it. */
	n = (size_t)snprintf(s, sizeof(s),
	                     "[{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,"
	                     "\"i\":9,\"in\":{");
	for (int i = 0; i < 40; i++)
		n += (size_t)snprintf(s + n, sizeof(s) - n, "%s\"%c%d\":0", i ? "," : "", 'a' + i % 9, i / 9);
	n += (size_t)snprintf(s + n, sizeof(s) - n, "},\"j\":{\"a\":0},\"k\":0}]");
	assert_true(accepted(s, n));
	assert_non_null(strstr(s, "\"e3\":0"));
	memcpy(strstr(s, "\"e3\":0"), "\"a0\"", 4); /* e3 -> a0, which the inner object has */
	assert_false(accepted(s, n));
}

static void test_depth(void **state)
{
	enum { MAX = 2048 };
	static char s[2 * MAX + 8];
	size_t n;

	(void)state;
	/* 2048 nested lists: the innermost is at jansson's maximum depth. */
	memset(s, '[', MAX);
	memset(s + MAX, ']', MAX);
	assert_true(accepted(s, 2 * MAX));
	/* A value inside it is one level too deep. */
	n = 0;
	memset(s, '[', MAX);
	n = MAX;
	s[n++] = '1';
	memset(s + n, ']', MAX);
	assert_false(accepted(s, n + MAX));
	/* One list less, and the value fits. */
	memset(s, '[', MAX - 1);
	n = MAX - 1;
	s[n++] = '1';
	memset(s + n, ']', MAX - 1);
	assert_true(accepted(s, n + MAX - 1));
}

/* The fields of a message come from its own members only, by their
 * unescaped names, and strings come back unescaped. */
static void test_fields(void **state)
{
	static const char text[] = "{\"v\":1,\"fr\\u006fm\":\"n\\u00e9\",\"boot\":2,\"seq\":3,\"msgs\":[{"
	                           "\"t\\u0079pe\":\"io\",\"cmd\":\"set\","
	                           "\"io\":\"a\\\"b\",\"val\":\"x\\ny\",\"ver\":7,\"kw\":{\"io\":\"inner\","
	                           "\"ver\":9}},{\"type\":\"io\",\"cmd\":"
	                           "\"set\",\"io\":\"f\",\"val\":-0.25},{\"type\":\"cmd\",\"role\":\"r\","
	                           "\"cmd\":\"c\",\"kwargs\":{\"a\":[1]},"
	                           "\"id\":4}]}";
	struct wire_codec c = big_codec();
	struct wire_decoder *d;
	struct wire_datagram dg;
	tsync_reject why;

	(void)state;
	assert_int_equal(wire__decoder_new(&c, &d), 0);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(wire__decode_in(d, text, sizeof(text) - 1, &dg, &why), 0);
		assert_string_equal(dg.env.from, "n\xc3\xa9");
		assert_int_equal(dg.n_msgs, 3);
		assert_false(dg.msgs[0].bad);
		assert_string_equal(dg.msgs[0].io, "a\"b");
		assert_string_equal(dg.msgs[0].val.u.s, "x\ny");
		assert_int_equal(dg.msgs[0].ver, 7);
		assert_null(dg.msgs[0].obj);
		assert_int_equal(dg.msgs[1].val.type, TSYNC_TYPE_FLOAT);
		assert_true(dg.msgs[1].val.u.f == -0.25);
		assert_int_equal(dg.msgs[2].type, WIRE_T_CMD);
		assert_non_null(dg.msgs[2].obj);
		assert_int_equal(json_integer_value(json_array_get(
		                     json_object_get(json_object_get(dg.msgs[2].obj, "kwargs"), "a"), 0)),
		                 1);
		wire__datagram_release(&dg);
	}
	wire__decoder_free(d);
}

static void test_no_allocation(void **state)
{
	struct wire_codec c = {.max_datagram = 1400, .max_msgs = 64, .max_string = 256};
	struct wire_writer w;
	struct wire_env env = {.from = "owner", .boot = 1, .seq = 1};
	struct wire_decoder *d;
	struct wire_datagram dg;
	tsync_reject why;
	const void *out;
	size_t len, before;

	(void)state;
	wire__writer_init(&w, &c);
	assert_int_equal(wire__begin(&w, &env), 0);
	for (int i = 0; i < 10; i++) {
		char name[16];
		struct wire_msg m = {.type = WIRE_T_IO, .op = WIRE_OP_SET, .has_val = true, .has_ver = true};
		snprintf(name, sizeof(name), "t%d", i);
		m.io = name;
		m.val = i % 2 ? tsync_float(i + 0.5) : tsync_string("on");
		m.ver = (uint64_t)i + 1;
		assert_int_equal(wire__add(&w, &m), 0);
	}
	assert_int_equal(wire__finish(&w, &out, &len), 0);
	assert_int_equal(wire__decoder_new(&c, &d), 0);
	count_start();
	before = allocs;
	for (int i = 0; i < 100; i++) {
		assert_int_equal(wire__decode_in(d, out, len, &dg, &why), 0);
		assert_int_equal(dg.n_msgs, 10);
		wire__datagram_release(&dg);
	}
	assert_int_equal(allocs - before, 0);
	/* The count works: the one-shot decode allocates its decoder. */
	assert_int_equal(wire__decode(&c, out, len, &dg, &why), 0);
	wire__datagram_release(&dg);
	assert_true(allocs - before >= 1);
	wire__decoder_free(d);
	wire__writer_free(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_grammar),       cmocka_unit_test(test_numbers),
	    cmocka_unit_test(test_strings),       cmocka_unit_test(test_objects),
	    cmocka_unit_test(test_nul_quirk),     cmocka_unit_test(test_depth),
	    cmocka_unit_test(test_many_keys),     cmocka_unit_test(test_fields),
	    cmocka_unit_test(test_no_allocation),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
