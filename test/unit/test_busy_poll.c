/*
 * The node's bounded busy poll (tsync_node_options.busy_poll_us, node.c
 * busy_poll()): after a send that awaits an answer from a near peer, the
 * node reads its socket without sleeping for a bounded time.
 *
 * Both nodes run in this process, each on its own event base. The poll's
 * test hook (node__set_busy_hook()) is called before each of its reads; here
 * it runs the user's loop once per poll, so that the user reads the set and
 * sends its acknowledgement while the owner polls. That works only if the
 * set left before the poll began, and the acknowledgement is then in the
 * owner's socket at its first read: no timing is involved.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"
#include "node/node.h"

struct fixture {
	char *dir, *site;
	tsync_node *owner, *user;
	bool pump;        /* the hook runs the user's loop at the poll's first read */
	unsigned hook_calls;
	unsigned changed; /* the user's change events */
	unsigned changed_in_hook;
	bool in_hook;
};

static void on_user_event(void *ud, tsync_node *node, const tsync_event *ev)
{
	struct fixture *f = ud;

	(void)node;
	if (ev->kind == TSYNC_EVENT_CHANGED && !strcmp(ev->thing, "t")) {
		f->changed++;
		if (f->in_hook)
			f->changed_in_hook++;
	}
}

static void hook(void *ud)
{
	struct fixture *f = ud;

	f->hook_calls++;
	if (!f->pump)
		return;
	f->pump = false;
	f->in_hook = true;
	tsync_node_run_for(f->user, 0);
	f->in_hook = false;
}

static tsync_node *make(struct fixture *f, const char *name, unsigned busy_us)
{
	tsync_node_options o;
	tsync_node *n = NULL;

	tsync_node_options_init(&o);
	o.site_path = f->site;
	o.controller = name;
	o.log = harness_log;
	o.busy_poll_us = busy_us;
	assert_int_equal(tsync_node_new(&o, &n), 0);
	return n;
}

/* Both loops in turn until the owner has nothing unacknowledged. */
static void settle(struct fixture *f)
{
	for (int k = 0; k < 20000 && tsync_node_unsettled(f->owner) > 0; k++) {
		tsync_node_run_for(f->owner, 0);
		tsync_node_run_for(f->user, 0);
	}
	assert_int_equal(tsync_node_unsettled(f->owner), 0);
}

static void setup_nodes(struct fixture *f, int cpus, unsigned busy_us)
{
	char text[512];
	uint16_t ports[2];

	memset(f, 0, sizeof(*f));
	f->dir = harness_tmpdir("busy-poll");
	harness_ports(ports, 2);
	snprintf(text, sizeof(text),
	         "[site]\nname = busy\n"
	         "[controller OWNER]\nhost = 127.0.0.1\nudp_port = %u\n"
	         "[controller USER]\nhost = 127.0.0.1\nudp_port = %u\n"
	         "[thing t]\nowner = OWNER\ntype = int\nusers = USER\n",
	         ports[0], ports[1]);
	f->site = harness_write(f->dir, "site.conf", text);
	node__busy_cpus(cpus);
	f->owner = make(f, "OWNER", busy_us);
	f->user = make(f, "USER", busy_us);
	node__busy_cpus(0);
	tsync_node_on_event(f->user, on_user_event, f);
	node__set_busy_hook(hook, f);
	/* Rounds without the hook's help: the owner learns the round trip. */
	for (int i = 0; i < 5; i++) {
		tsync_value v = tsync_int(1000 + i);
		assert_int_equal(tsync_node_set(f->owner, "t", &v), 0);
		settle(f);
	}
}

static void teardown_nodes(struct fixture *f)
{
	node__set_busy_hook(NULL, NULL);
	tsync_node_free(f->owner);
	tsync_node_free(f->user);
	harness_rmdir(f->dir);
	free(f->site);
	free(f->dir);
}

/* A set, then one round of the owner's loop: with the poll, the
 * acknowledgement is read and handled inside that round. */
static void round_with_pump(struct fixture *f, int64_t value)
{
	tsync_value v = tsync_int(value);

	assert_int_equal(tsync_node_set(f->owner, "t", &v), 0);
	f->pump = true;
	tsync_node_run_for(f->owner, -1);
}

/* The set leaves before the poll starts, the poll reads its answer, and the
 * round ends with it; the user, which awaits nothing, never polls. */
static void test_poll_reads_the_answer(void **state)
{
	struct fixture f;
	struct node_busy_stats o0, o1, u0, u1;
	const int rounds = 10;

	(void)state;
	setup_nodes(&f, 2, 1000);
	assert_int_equal(node__busy_poll_us(f.owner), 1000);
	node__busy_stats(f.owner, &o0);
	node__busy_stats(f.user, &u0); /* its start-up asks awaited answers */
	f.changed_in_hook = 0;
	for (int i = 0; i < rounds; i++) {
		round_with_pump(&f, 2000 + i);
		/* One round of the loop was enough: the poll handled the ack. */
		assert_int_equal(tsync_node_unsettled(f.owner), 0);
	}
	node__busy_stats(f.owner, &o1);
	node__busy_stats(f.user, &u1);
	assert_int_equal(o1.polls - o0.polls, rounds);
	assert_int_equal(o1.answered - o0.answered, rounds);
	/* The set was in the user's socket when the poll began. */
	assert_int_equal(f.changed_in_hook, rounds);
	/* The hook ran before the read that found the answer, once a round. */
	assert_int_equal(o1.reads - o0.reads, rounds);
	assert_int_equal(u1.polls - u0.polls, 0);
	assert_int_equal(u1.reads - u0.reads, 0);
	teardown_nodes(&f);
}

/* No answer comes: the poll ends by itself (this test would hang
 * otherwise), within NODE_BUSY_READS_MAX reads, and the loop waits as
 * before; the answer is then read by the loop. */
static void test_poll_is_bounded(void **state)
{
	struct fixture f;
	struct node_busy_stats o0, o1, o2;
	tsync_value v = tsync_int(3000);

	(void)state;
	setup_nodes(&f, 2, 1000);
	node__busy_stats(f.owner, &o0);
	f.hook_calls = 0;
	assert_int_equal(tsync_node_set(f.owner, "t", &v), 0);
	tsync_node_run_for(f.owner, 0); /* the flush, the poll; the user is not run */
	node__busy_stats(f.owner, &o1);
	assert_int_equal(o1.polls - o0.polls, 1);
	assert_int_equal(o1.answered - o0.answered, 0);
	assert_true(o1.reads - o0.reads >= 1);
	assert_true(o1.reads - o0.reads <= NODE_BUSY_READS_MAX);
	assert_int_equal(f.hook_calls, o1.reads - o0.reads);
	assert_true(tsync_node_unsettled(f.owner) > 0);
	settle(&f);
	/* Reading the answer in the loop started no poll (nothing sent). */
	node__busy_stats(f.owner, &o2);
	assert_int_equal(o2.polls, o1.polls);
	teardown_nodes(&f);
}

/* With one CPU usable, the option is off: the peer would wait for the poll. */
static void test_poll_off_on_one_cpu(void **state)
{
	struct fixture f;
	struct node_busy_stats o;

	(void)state;
	setup_nodes(&f, 1, 1000);
	assert_int_equal(node__busy_poll_us(f.owner), 0);
	for (int i = 0; i < 3; i++) {
		tsync_value v = tsync_int(4000 + i);
		assert_int_equal(tsync_node_set(f.owner, "t", &v), 0);
		f.pump = true;
		settle(&f);
	}
	node__busy_stats(f.owner, &o);
	assert_int_equal(o.polls, 0);
	assert_int_equal(o.reads, 0);
	assert_int_equal(f.hook_calls, 0);
	teardown_nodes(&f);
}

/* The CPU count is the process's affinity, not the machine's. */
static void test_affinity_decides(void **state)
{
	cpu_set_t saved, one;
	struct fixture f;

	(void)state;
	assert_int_equal(sched_getaffinity(0, sizeof(saved), &saved), 0);
	CPU_ZERO(&one);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &saved)) {
			CPU_SET(c, &one);
			break;
		}
	assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
	setup_nodes(&f, 0, 50);
	assert_int_equal(node__busy_poll_us(f.owner), 0);
	assert_int_equal(node__busy_poll_us(f.user), 0);
	teardown_nodes(&f);
	assert_int_equal(sched_setaffinity(0, sizeof(saved), &saved), 0);
}

/* Off by default; a cap above the largest is cut to it. */
static void test_option_bounds(void **state)
{
	struct fixture f;

	(void)state;
	setup_nodes(&f, 2, 0);
	assert_int_equal(node__busy_poll_us(f.owner), 0);
	teardown_nodes(&f);
	setup_nodes(&f, 2, 100000);
	assert_int_equal(node__busy_poll_us(f.owner), 1000);
	teardown_nodes(&f);
}

static void pump_all(tsync_node **nodes, int count)
{
	for (int k = 0; k < 20000 && tsync_node_unsettled(nodes[0]) > 0; k++)
		for (int i = 0; i < count; i++)
			tsync_node_run_for(nodes[i], 0);
	assert_int_equal(tsync_node_unsettled(nodes[0]), 0);
}

/* A set to one user polls; a set to more users than BUSY_PEERS is a batch
 * and does not (a user's answer is not worth the owner's wait). */
static void test_no_poll_for_many_peers(void **state)
{
	char *dir = harness_tmpdir("busy-many"), text[1024], *site;
	uint16_t ports[6];
	tsync_node *nodes[6];
	struct node_busy_stats s0, s1, s2;
	size_t len;

	(void)state;
	harness_ports(ports, 6);
	len = (size_t)snprintf(text, sizeof(text), "[site]\nname = many\n");
	for (int i = 0; i < 6; i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len,
		                        "[controller N%d]\nhost = 127.0.0.1\nudp_port = %u\n", i, ports[i]);
	snprintf(text + len, sizeof(text) - len,
	         "[thing one]\nowner = N0\ntype = int\nusers = N1\n"
	         "[thing all]\nowner = N0\ntype = int\nusers = N1, N2, N3, N4, N5\n");
	site = harness_write(dir, "site.conf", text);
	node__busy_cpus(2);
	for (int i = 0; i < 6; i++) {
		tsync_node_options o;
		char name[8];
		snprintf(name, sizeof(name), "N%d", i);
		tsync_node_options_init(&o);
		o.site_path = site;
		o.controller = name;
		o.log = harness_log;
		o.busy_poll_us = 1000;
		assert_int_equal(tsync_node_new(&o, &nodes[i]), 0);
	}
	node__busy_cpus(0);
	for (int r = 0; r < 5; r++) { /* round-trip samples from every user */
		tsync_value v = tsync_int(r);
		assert_int_equal(tsync_node_set(nodes[0], "one", &v), 0);
		assert_int_equal(tsync_node_set(nodes[0], "all", &v), 0);
		pump_all(nodes, 6);
	}
	node__busy_stats(nodes[0], &s0);
	{
		tsync_value v = tsync_int(100);
		assert_int_equal(tsync_node_set(nodes[0], "one", &v), 0);
		tsync_node_run_for(nodes[0], 0);
		pump_all(nodes, 6);
	}
	node__busy_stats(nodes[0], &s1);
	assert_int_equal(s1.polls - s0.polls, 1);
	{
		tsync_value v = tsync_int(200);
		assert_int_equal(tsync_node_set(nodes[0], "all", &v), 0);
		tsync_node_run_for(nodes[0], 0);
		pump_all(nodes, 6);
	}
	node__busy_stats(nodes[0], &s2);
	assert_int_equal(s2.polls - s1.polls, 0);
	for (int i = 0; i < 6; i++)
		tsync_node_free(nodes[i]);
	harness_rmdir(dir);
	free(site);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_poll_reads_the_answer),
	    cmocka_unit_test(test_poll_is_bounded),
	    cmocka_unit_test(test_poll_off_on_one_cpu),
	    cmocka_unit_test(test_affinity_decides),
	    cmocka_unit_test(test_option_bounds),
	    cmocka_unit_test(test_no_poll_for_many_peers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
