/*
 * The simulator's verifier (tools/sim/verify.c) on ledgers written by hand:
 * every promise it checks is broken once on purpose, and it must say so;
 * every legitimate outcome (a loss explained by a restart, an unknown
 * outcome) must pass. This is what makes a "verified" line of
 * thingsync-sim worth reading.
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

#include "verify.h"

/* Controllers 0 (owner of thing 0), 1 and 2 (its users), 3 (unrelated). */
enum { OWNER = 0, U1 = 1, U2 = 2, OTHER = 3 };

static int setup(void **state)
{
	struct sim_ledger *l;
	const uint32_t users[] = {U1, U2};

	assert_int_equal(sim_ledger_new(4, 2, &l), 0);
	assert_int_equal(sim_ledger_thing(l, 0, OWNER, 2, users), 0);
	assert_int_equal(sim_ledger_thing(l, 1, U1, 0, NULL), 0);
	for (uint32_t c = 0; c < 4; c++)
		sim_ledger_start(l, c);
	*state = l;
	return 0;
}

static int teardown(void **state)
{
	sim_ledger_free(*state);
	return 0;
}

/* Runs the verifier; returns the violations, report in *rep. */
static uint64_t verify(struct sim_ledger *l, struct sim_ledger_report *rep)
{
	return sim_ledger_verify(l, rep, stdout, 10, NULL, NULL);
}

/* One pulse acted on once by the owner and each user. */
static int64_t clean_pulse(struct sim_ledger *l, uint32_t requester, int status)
{
	int64_t id = sim_ledger_pulse(l, 0, requester);

	assert_true(id >= 1);
	sim_ledger_act(l, OWNER, 0, id);
	sim_ledger_act(l, U1, 0, id);
	sim_ledger_act(l, U2, 0, id);
	sim_ledger_done(l, id, status);
	return id;
}

static void test_clean_run_passes(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;

	clean_pulse(l, U1, 0);
	clean_pulse(l, OWNER, 0);
	assert_int_equal(verify(l, &rep), 0);
	assert_int_equal(rep.pulses, 2);
	assert_int_equal(rep.acked, 2);
	assert_int_equal(rep.owner_acts, 2);
	assert_int_equal(rep.user_acts, 4);
	assert_int_equal(rep.user_expected, 4);
	assert_int_equal(rep.user_lost, 0);
}

static void test_twice_at_a_user_fails(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t id = clean_pulse(l, U1, 0);

	sim_ledger_act(l, U2, 0, id);
	assert_int_equal(verify(l, &rep), 1);
}

static void test_twice_across_a_restart_fails(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t id = clean_pulse(l, U1, 0);

	/* A restart does not make a second act right. */
	sim_ledger_start(l, U1);
	sim_ledger_act(l, U1, 0, id);
	assert_int_equal(verify(l, &rep), 1);
}

static void test_twice_at_the_owner_fails(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t id = clean_pulse(l, U1, TSYNC_EPEER_RESTARTED);

	sim_ledger_act(l, OWNER, 0, id);
	assert_int_equal(verify(l, &rep), 1);
}

static void test_acknowledged_but_not_acted_fails(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t id = sim_ledger_pulse(l, 0, U1);

	sim_ledger_done(l, id, 0);
	assert_int_equal(verify(l, &rep), 1);
}

static void test_user_missing_without_restart_fails(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t id = sim_ledger_pulse(l, 0, U1);

	sim_ledger_act(l, OWNER, 0, id);
	sim_ledger_act(l, U1, 0, id);
	sim_ledger_done(l, id, 0);
	/* U2 never acted, and nothing restarted: a lost pulse. */
	assert_int_equal(verify(l, &rep), 1);
	assert_int_equal(rep.user_lost, 0);
}

static void test_user_missing_restart_before_act_fails(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t id;

	/* U2 restarted, but before the act, and the owner knew its new boot. */
	sim_ledger_start(l, U2);
	id = sim_ledger_pulse(l, 0, U1);
	sim_ledger_act(l, OWNER, 0, id);
	sim_ledger_act(l, U1, 0, id);
	sim_ledger_done(l, id, 0);
	assert_int_equal(verify(l, &rep), 1);
}

static void test_user_missing_after_its_restart_passes(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t id = sim_ledger_pulse(l, 0, U1);

	sim_ledger_act(l, OWNER, 0, id);
	sim_ledger_act(l, U1, 0, id);
	sim_ledger_start(l, U2); /* restarted after the act: at most once */
	sim_ledger_done(l, id, 0);
	assert_int_equal(verify(l, &rep), 0);
	assert_int_equal(rep.user_lost, 1);
	assert_int_equal(rep.user_lost_stale, 0);
}

static void test_user_missing_after_owner_restart_passes(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t id = sim_ledger_pulse(l, 0, OWNER);

	sim_ledger_act(l, OWNER, 0, id);
	sim_ledger_done(l, id, 0);
	sim_ledger_start(l, OWNER); /* the owner's relays died with it */
	assert_int_equal(verify(l, &rep), 0);
	assert_int_equal(rep.user_lost, 2);
}

static void test_user_missing_stale_boot_passes(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t id;

	sim_ledger_start(l, U2);
	id = sim_ledger_pulse(l, 0, U1);
	sim_ledger_act(l, OWNER, 0, id);
	/* When it acted, the owner still knew U2's previous boot. */
	sim_ledger_user_stale(l, id, U2);
	sim_ledger_act(l, U1, 0, id);
	sim_ledger_done(l, id, 0);
	assert_int_equal(verify(l, &rep), 0);
	assert_int_equal(rep.user_lost, 1);
	assert_int_equal(rep.user_lost_stale, 1);
}

static void test_unknown_outcome_passes_either_way(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t a = sim_ledger_pulse(l, 0, U1), b;

	sim_ledger_done(l, a, TSYNC_EPEER_RESTARTED); /* never acted */
	b = clean_pulse(l, U2, TSYNC_ECANCELED);      /* acted everywhere */
	(void)b;
	assert_int_equal(verify(l, &rep), 0);
	assert_int_equal(rep.unknown, 2);
	assert_int_equal(rep.unknown_acted, 1);
}

/* With durable state (--state), exactly once with no excuse: "outcome
 * unknown" is a broken promise, ... */
static void test_durable_peer_restarted_fails(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t a = sim_ledger_pulse(l, 0, U1);

	sim_ledger_durable(l, true);
	sim_ledger_done(l, a, TSYNC_EPEER_RESTARTED);
	assert_int_equal(verify(l, &rep), 1);
	/* Even if it acted everywhere: the requester was told it may not have. */
	clean_pulse(l, U2, TSYNC_EPEER_RESTARTED);
	assert_int_equal(verify(l, &rep), 2);
}

/* ... a relay lost to a restart too, ... */
static void test_durable_user_missing_after_restart_fails(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t id = sim_ledger_pulse(l, 0, U1);

	sim_ledger_durable(l, true);
	sim_ledger_act(l, OWNER, 0, id);
	sim_ledger_act(l, U1, 0, id);
	sim_ledger_start(l, U2);
	sim_ledger_start(l, OWNER);
	sim_ledger_done(l, id, 0);
	assert_int_equal(verify(l, &rep), 1);
	assert_int_equal(rep.user_lost, 0);
	/* In memory, the same is excused. */
	sim_ledger_durable(l, false);
	assert_int_equal(verify(l, &rep), 0);
	assert_int_equal(rep.user_lost, 1);
}

/* ... and a pulse whose requester crashed (its callback ended with
 * TSYNC_ECANCELED) was kept and resumed: it must act, once. */
static void test_durable_canceled_acts_once(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t a = sim_ledger_pulse(l, 0, U1);

	sim_ledger_durable(l, true);
	sim_ledger_start(l, U1);
	sim_ledger_done(l, a, TSYNC_ECANCELED);
	assert_int_equal(verify(l, &rep), 1); /* never acted: lost */
	sim_ledger_act(l, OWNER, 0, a);
	sim_ledger_act(l, U1, 0, a);
	sim_ledger_act(l, U2, 0, a);
	assert_int_equal(verify(l, &rep), 0);
	assert_int_equal(rep.resumed, 1);
	assert_int_equal(rep.unknown, 0);
	sim_ledger_act(l, OWNER, 0, a); /* resumed and acted again: twice */
	assert_int_equal(verify(l, &rep), 1);
}

static void test_user_without_owner_fails(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t id = sim_ledger_pulse(l, 0, U1);

	/* Outcome unknown, but a user cannot act on what its owner did not. */
	sim_ledger_act(l, U2, 0, id);
	sim_ledger_done(l, id, TSYNC_EPEER_RESTARTED);
	assert_int_equal(verify(l, &rep), 1);
}

static void test_unanswered_fails(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;

	sim_ledger_pulse(l, 0, U1);
	assert_int_equal(verify(l, &rep), 1);
}

static void test_unexpected_status_fails(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;

	clean_pulse(l, U1, TSYNC_EREFUSED);
	assert_int_equal(verify(l, &rep), 1);
}

static void test_stray_acts_fail(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t id = clean_pulse(l, U1, 0);

	sim_ledger_act(l, OTHER, 0, id); /* neither owner nor user */
	sim_ledger_act(l, U1, 1, id);    /* the pulse is of thing 0, not 1 */
	sim_ledger_act(l, U1, 0, 99);    /* never asked for */
	sim_ledger_act(l, U1, 0, -1);    /* a value that is no pulse number */
	assert_int_equal(verify(l, &rep), 4);
}

static void test_withdrawn_acted_fails(void **state)
{
	struct sim_ledger *l = *state;
	struct sim_ledger_report rep;
	int64_t a = sim_ledger_pulse(l, 0, U1), b = sim_ledger_pulse(l, 0, U1);

	sim_ledger_done(l, a, SIM_PULSE_WITHDRAWN);
	sim_ledger_done(l, b, SIM_PULSE_WITHDRAWN);
	sim_ledger_act(l, OWNER, 0, b);
	assert_int_equal(verify(l, &rep), 1);
	assert_int_equal(rep.pulses, 0);
}

static void test_value_same(void **state)
{
	tsync_value a = tsync_string("on"), b = tsync_string("on"), c = tsync_string("off");
	tsync_value n = {.type = TSYNC_TYPE_NONE}, i1 = tsync_int(1), b1 = tsync_bool(true);

	assert_true(sim_value_same(&a, &b));
	assert_false(sim_value_same(&a, &c));
	assert_true(sim_value_same(&n, &n));
	assert_false(sim_value_same(&n, &i1));
	assert_false(sim_value_same(&i1, &b1)); /* same bits, different types */
	b1 = tsync_float(1.5);
	i1 = tsync_float(1.5);
	assert_true(sim_value_same(&i1, &b1));
}

/* The group-commit check of restored values, with made-up stalls. The
 * owner applied "1" at 0 s, "2" at 10 s, "3" at 20 s, and crashed at 22 s;
 * the window is 6 s (a 5 s period and 1 s of slack), stalls count up to a
 * cap of 15 s. */
static void test_restore_window_and_stall_cap(void **state)
{
	const int64_t S = 1000000, crash = 22 * S, window = 6 * S, cap = 15 * S;
	struct sim_applied ring[4] = {{0, "1"}, {10 * S, "2"}, {20 * S, "3"}, {0, ""}};

	(void)state;
	/* "2" was the value when the window opened (16 s): lost with the
	 * commit, whatever the loop did. */
	assert_int_equal(sim_restore_check(ring, 4, 3, "2", crash, window, 0, cap), SIM_RESTORE_OLDER);
	assert_int_equal(sim_restore_check(ring, 4, 3, "3", crash, window, 0, cap), SIM_RESTORE_OLDER);
	/* "1" was replaced 12 s before the crash: only a stall of more than
	 * 6 s excuses it. */
	assert_int_equal(sim_restore_check(ring, 4, 3, "1", crash, window, 0, cap), SIM_RESTORE_BAD);
	assert_int_equal(sim_restore_check(ring, 4, 3, "1", crash, window, 5 * S, cap), SIM_RESTORE_BAD);
	assert_int_equal(sim_restore_check(ring, 4, 3, "1", crash, window, 7 * S, cap), SIM_RESTORE_IN_STALL);
	assert_int_equal(sim_restore_check(ring, 4, 3, "1", crash, window, cap, cap), SIM_RESTORE_IN_STALL);
	/* Replaced 12 s before the crash, with a cap of 5 s: the stall of 7 s
	 * would excuse it, the cap does not: a failure, said as capped. */
	assert_int_equal(sim_restore_check(ring, 4, 3, "1", crash, window, 7 * S, 5 * S), SIM_RESTORE_CAPPED);
	/* A stall of minutes excuses nothing beyond the cap; and a value
	 * never applied, or none, is never excused. */
	ring[0].at = -60 * S;
	ring[1].at = -40 * S;
	ring[2].at = -30 * S;
	assert_int_equal(sim_restore_check(ring, 4, 3, "1", crash, window, 120 * S, cap), SIM_RESTORE_CAPPED);
	assert_int_equal(sim_restore_check(ring, 4, 3, "2", crash, window, 120 * S, cap), SIM_RESTORE_CAPPED);
	assert_int_equal(sim_restore_check(ring, 4, 3, "3", crash, window, 120 * S, cap), SIM_RESTORE_OLDER);
	assert_int_equal(sim_restore_check(ring, 4, 3, "9", crash, window, 120 * S, cap), SIM_RESTORE_BAD);
	assert_int_equal(sim_restore_check(ring, 4, 3, NULL, crash, window, 120 * S, cap), SIM_RESTORE_BAD);
	/* Older than the ring remembers: cannot be checked, passes. */
	assert_int_equal(sim_restore_check(ring, 2, 3, "1", crash, window, 0, cap), SIM_RESTORE_OLDER);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_clean_run_passes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_durable_peer_restarted_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_durable_user_missing_after_restart_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_durable_canceled_acts_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_twice_at_a_user_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_twice_across_a_restart_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_twice_at_the_owner_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_acknowledged_but_not_acted_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_missing_without_restart_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_missing_restart_before_act_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_missing_after_its_restart_passes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_missing_after_owner_restart_passes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_missing_stale_boot_passes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_outcome_passes_either_way, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_without_owner_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unanswered_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unexpected_status_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stray_acts_fail, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_withdrawn_acted_fails, setup, teardown),
	    cmocka_unit_test(test_value_same),
	    cmocka_unit_test(test_restore_window_and_stall_cap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
