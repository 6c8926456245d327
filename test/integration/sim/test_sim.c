/*
 * thingsync-sim end to end: a small site (20 controllers, 20% loss,
 * duplicates, reordering, crashes and restarts) must converge, and the
 * simulator must verify every copy and every pulse. The run is judged by its
 * exit status and its verification line, never by how long it took.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* Runs the simulator with `args`; returns its exit status, output in *out. */
static int run_sim(const char *args, char **out)
{
	const char *exe = getenv("THINGSYNC_SIM");
	char cmd[1024], *buf = NULL;
	size_t len = 0, cap = 0;
	FILE *p;
	int st;

	assert_non_null(exe);
	snprintf(cmd, sizeof(cmd), "'%s' %s", exe, args);
	p = popen(cmd, "r");
	assert_non_null(p);
	for (;;) {
		size_t n;
		if (cap - len < 4096) {
			cap = cap ? cap * 2 : 65536;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		n = fread(buf + len, 1, cap - len - 1, p);
		if (n == 0)
			break;
		len += n;
	}
	buf[len] = 0;
	st = pclose(p);
	/* What the simulator said, for whoever reads the test log. */
	fputs(buf, stdout);
	*out = buf;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The unsigned number printed right before `after` in `text`, or -1. */
static long number_before(const char *text, const char *after)
{
	const char *p = strstr(text, after);
	const char *q;

	if (!p)
		return -1;
	q = p;
	while (q > text && q[-1] == ' ')
		q--;
	while (q > text && q[-1] >= '0' && q[-1] <= '9')
		q--;
	return q < p && *q >= '0' && *q <= '9' ? strtol(q, NULL, 10) : -1;
}

/* LMDB state, restarts keep owned values: the small configuration. */
static void test_small_site_with_state(void **state)
{
	char *out;
	int rc =
	    run_sim("--controllers 20 --things-per-controller 4 --users-per-thing 3 --seconds 3 --loss 0.2 "
	            "--dup 0.05 --reorder 0.1 --crashes 4 --down-ms 600 --rate 4 --pulses 0.3 --state "
	            "--retry-max-ms 1000 --timeout 60 --seed 42",
	            &out);

	assert_int_equal(rc, 0);
	/* 80 things with 3 users each: 240 copies, all checked. */
	assert_non_null(strstr(out, "\nverified: all 240 copies equal their owner's last value; "));
	/* With state directories, the verifier demanded exactly once. */
	assert_non_null(strstr(out, " pulses: each acted exactly once at its owner and at each of its users, "
	                            "across 4 hard crashes\n"));
	assert_non_null(strstr(out, ", 0 outcome unknown\n"));
	/* The faults were real: crashes happened, restarts found their values. */
	assert_int_equal(number_before(out, "crashes, "), 4);
	assert_int_equal(number_before(out, "restarts"), 4);
	assert_non_null(strstr(out, "owned values back after restart: "));
	assert_true(number_before(out, "retransmissions") > 0);
	assert_true(number_before(out, "pulses:") > 0);
	assert_null(strstr(out, "VIOLATION"));
	free(out);
}

/* In memory (restarts forget, the controller sets its values again), JSON. */
static void test_json_in_memory(void **state)
{
	char *out;
	int rc =
	    run_sim("--controllers 12 --seconds 2 --loss 0.3 --crashes 3 --down-ms 400 --rate 5 --pulses 0.3 "
	            "--retry-max-ms 1000 --timeout 60 --seed 7 --json",
	            &out);

	assert_int_equal(rc, 0);
	assert_int_equal(out[0], '{');
	assert_non_null(strstr(out, "\"converged\":true"));
	assert_non_null(strstr(out, "\"crashes\":3,\"restarts\":3"));
	assert_non_null(strstr(out, "\"copies\":144"));
	assert_non_null(strstr(out, "\"violations\":0,\"verified\":true}"));
	/* Memory per node and the loop's stalls are reported. */
	assert_non_null(strstr(out, "\"rss_per_node_kb\":"));
	assert_non_null(strstr(out, "\"stall_max_ms\":"));
	assert_null(strstr(out, "\"pulses\":0,"));
	free(out);
}

/* The site it wrote, kept (--keep) in a directory of its own (--dir): every
 * controller's port is outside the kernel's ephemeral range, where another
 * program's socket could take it before the node binds it, and outside the
 * ports the other integration tests take. */
static void test_ports_outside_ephemeral_range(void **state)
{
	char parent[] = "/tmp/test-sim-XXXXXX", path[256], line[256], cmd[300], *out, *dir;
	unsigned lo = 0, hi = 0, ports = 0, port;
	FILE *f;

	assert_non_null(mkdtemp(parent));
	snprintf(cmd, sizeof(cmd),
	         "--controllers 30 --seconds 0.5 --crashes 0 --retry-max-ms 1000 --timeout 60 --seed 5 --keep "
	         "--dir %s",
	         parent);
	assert_int_equal(run_sim(cmd, &out), 0);
	dir = strstr(out, "site kept in ");
	assert_non_null(dir);
	dir += strlen("site kept in ");
	dir[strcspn(dir, "\n")] = 0;
	/* --dir: the site is where it was asked to be. */
	assert_memory_equal(dir, parent, strlen(parent));
	snprintf(path, sizeof(path), "%s/site.conf", dir);
	f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%u %u", &lo, &hi), 2);
	fclose(f);
	f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "udp_port = %u", &port) == 1) {
			assert_true(port >= 1024);
			assert_true(port < lo || port > hi);
			/* nor among the other integration tests' (harness.c) or the demo's */
			assert_true(port < 12000 || port >= 30100);
			ports++;
		}
	fclose(f);
	assert_int_equal(ports, 30);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", parent);
	assert_int_equal(system(cmd), 0);
	free(out);
}

static void test_invalid_options(void **state)
{
	char *out;

	/* Each thing needs 20 users other than its owner among 20 controllers. */
	assert_int_equal(run_sim("--controllers 20 --users-per-thing 20 2>/dev/null", &out), 2);
	free(out);
	assert_int_equal(run_sim("--loss 2 2>/dev/null", &out), 2);
	free(out);
	assert_int_equal(run_sim("--help", &out), 0);
	assert_non_null(strstr(out, "--controllers"));
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_small_site_with_state),
	    cmocka_unit_test(test_json_in_memory),
	    cmocka_unit_test(test_ports_outside_ephemeral_range),
	    cmocka_unit_test(test_invalid_options),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
