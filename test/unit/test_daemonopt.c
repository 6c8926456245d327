/*
 * daemons/common/daemonopt: the role daemons' common options.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>

#include "daemonopt.h"

static void test_uint(void **state)
{
	uint64_t x = 7;

	(void)state;
	assert_int_equal(daemonopt__uint("100", 100, 3600000, &x), 0);
	assert_int_equal(x, 100);
	assert_int_equal(daemonopt__uint("3600000", 100, 3600000, &x), 0);
	assert_int_equal(x, 3600000);
	assert_int_equal(daemonopt__uint("18446744073709551615", 1, UINT64_MAX, &x), 0);
	assert_true(x == UINT64_MAX);
	x = 7;
	/* Out of range, not a number, signed, trailing text, overflow: refused, x untouched. */
	assert_int_equal(daemonopt__uint("99", 100, 3600000, &x), -EINVAL);
	assert_int_equal(daemonopt__uint("3600001", 100, 3600000, &x), -EINVAL);
	assert_int_equal(daemonopt__uint("", 0, 10, &x), -EINVAL);
	assert_int_equal(daemonopt__uint("abc", 0, 10, &x), -EINVAL);
	assert_int_equal(daemonopt__uint("-1", 0, UINT64_MAX, &x), -EINVAL);
	assert_int_equal(daemonopt__uint("5s", 0, 10, &x), -EINVAL);
	assert_int_equal(daemonopt__uint("18446744073709551616", 0, UINT64_MAX, &x), -EINVAL);
	assert_int_equal(x, 7);
	assert_int_equal(daemonopt__uint("0", 0, 10, &x), 0);
	assert_int_equal(x, 0);
}

static const char *thing;

/* Like a daemon's parse_args: its own option in its switch, the rest handed on. */
static int parse(struct daemonopt *d, int argc, char **argv)
{
	enum { O_THING = 256 };
	static const struct option longopts[] = {
	    DAEMONOPT_LONG_SITE, DAEMONOPT_LONG_STATE, {"thing", required_argument, NULL, O_THING},
	    DAEMONOPT_LONG_NET,  DAEMONOPT_LONG_END,
	};
	int c, r;

	optind = 0; /* getopt starts over (glibc) */
	opterr = 0;
	thing = NULL;
	while ((c = getopt_long(argc, argv, DAEMONOPT_SHORT, longopts, NULL)) != -1) {
		switch (c) {
		case O_THING:
			thing = optarg;
			break;
		default:
			r = daemonopt__handle(d, c, optarg);
			if (r < 0)
				return r;
		}
	}
	return daemonopt__finish(d, optind, argc, true);
}

static void test_handle(void **state)
{
	char *ok[] = {"d",      "-s",        "site.conf", "--controller", "gw", "-d",    "/tmp/st",
	              "--bind", "127.0.0.1", "--http",    "127.0.0.1:0",  "-v", "debug", "--thing",
	              "lamp",   NULL};
	char *missing[] = {"d", "--site", "site.conf", "-c", "gw", NULL};
	char *operand[] = {"d", "-s", "x", "-c", "y", "-d", "z", "extra", NULL};
	char *level[] = {"d", "-s", "x", "-c", "y", "-d", "z", "-v", "loud", NULL};
	char *unknown[] = {"d", "--nope", NULL};
	struct daemonopt d;
	int n_ok = (int)(sizeof(ok) / sizeof(ok[0])) - 1;

	(void)state;
	daemonopt__init(&d, "test", "usage\n");
	assert_int_equal(d.log_level, TSYNC_LOG_INFO);
	assert_int_equal(parse(&d, n_ok, ok), 0);
	assert_string_equal(thing, "lamp");
	assert_string_equal(d.site_path, "site.conf");
	assert_string_equal(d.controller, "gw");
	assert_string_equal(d.state_dir, "/tmp/st");
	assert_string_equal(d.bind_host, "127.0.0.1");
	assert_string_equal(d.http_listen, "127.0.0.1:0");
	assert_int_equal(d.log_level, TSYNC_LOG_DEBUG);

	daemonopt__init(&d, "test", "usage\n");
	assert_int_equal(parse(&d, 5, missing), -EINVAL);
	/* Without a node only --site is needed. */
	assert_int_equal(daemonopt__finish(&d, 5, 5, false), 0);
	daemonopt__init(&d, "test", "usage\n");
	assert_int_equal(parse(&d, 8, operand), -EINVAL);
	daemonopt__init(&d, "test", "usage\n");
	assert_int_equal(parse(&d, 9, level), -EINVAL);
	daemonopt__init(&d, "test", "usage\n");
	assert_int_equal(parse(&d, 2, unknown), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_uint),
	    cmocka_unit_test(test_handle),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
