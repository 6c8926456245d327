/*
 * thingsync-sim: the pulse ledger and the checks the simulator ends with.
 *
 * Every pulse the simulator asks for gets a number, and the pulse's value is
 * that number, so each TSYNC_EVENT_PULSE names exactly which pulse acted.
 * The ledger counts, per pulse, how often it acted at the owner and at each
 * user, remembers how the requester's done callback ended, and orders the
 * acts against the (re)starts of every controller. sim_ledger_verify() then
 * applies the library's promise (README, "at most once across restarts,
 * exactly once otherwise"):
 *
 *  - nothing ever acts twice anywhere, across restarts included;
 *  - a pulse the owner acknowledged (status 0) acted exactly once at the owner;
 *  - a pulse completed with TSYNC_EPEER_RESTARTED or TSYNC_ECANCELED acted at
 *    the owner at most once (outcome unknown);
 *  - a user acts only on a pulse its owner acted on, and it acts on it
 *    exactly once unless a restart came between: the user or the owner
 *    restarted after the owner acted, or the user had restarted before but
 *    the owner did not know its new boot yet when it acted. The owner's
 *    relay then goes to a boot of the user that is gone; it is completed as
 *    "peer restarted" (or cancelled with the owner), and the user acts at
 *    most once;
 *  - every pulse got its answer, and no act names a pulse never asked for.
 *
 * With durable state (sim_ledger_durable(): every controller has a state
 * directory, so request windows and unanswered requests survive crashes),
 * the promise is exactly once, with no excuse: every pulse that was
 * accepted acts exactly once at its owner and at each of its users, relays
 * included, whatever crashed in between. TSYNC_EPEER_RESTARTED is then a
 * violation; TSYNC_ECANCELED (the requester crashed and its callback went
 * with it) is not, but the pulse, kept and resumed, must still act once.
 *
 * It knows nothing of nodes or sockets, so the unit tests drive it directly.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_SIM_VERIFY_H
#define TSYNC_SIM_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <thingsync/thingsync.h>

/* Status of a pulse whose done callback has not run yet. */
#define SIM_PULSE_PENDING 1
/* Status of a pulse tsync_node_pulse() refused at once (never sent). */
#define SIM_PULSE_WITHDRAWN 2

struct sim_ledger;

/* What sim_ledger_verify() found. */
struct sim_ledger_report {
	uint64_t pulses;          /* pulses asked for and accepted by tsync_node_pulse() */
	uint64_t acked;           /* done with status 0 */
	uint64_t unknown;         /* done with TSYNC_EPEER_RESTARTED or TSYNC_ECANCELED */
	uint64_t unknown_acted;   /* ... of which the owner acted on */
	uint64_t owner_acts;      /* acts at owners */
	uint64_t user_acts;       /* acts at users */
	uint64_t user_expected;   /* user acts owed: users of the pulses owners acted on */
	uint64_t user_lost;       /* owed, not acted, excused: a restart came between (see above) */
	uint64_t user_lost_stale; /* ... of which the user had restarted before the owner acted */
	uint64_t violations;      /* broken promises; each one is printed */
	uint64_t resumed;         /* durable: acted although the requester crashed (ECANCELED) */
};

/* A ledger for n_ctrl controllers and n_things things. 0 or -ENOMEM. */
int sim_ledger_new(uint32_t n_ctrl, uint32_t n_things, struct sim_ledger **ret);
void sim_ledger_free(struct sim_ledger *l);

/* Declares thing t: its owner and users (controller indexes, copied).
 * 0, -EINVAL or -ENOMEM. */
int sim_ledger_thing(struct sim_ledger *l, uint32_t t, uint32_t owner, uint32_t n_users,
                     const uint32_t *users);

/* Every controller keeps durable windows and requests: demand exactly once
 * (see above). Before sim_ledger_verify(). */
void sim_ledger_durable(struct sim_ledger *l, bool durable);

/* Controller ctrl starts (or restarts) now: a new boot. */
void sim_ledger_start(struct sim_ledger *l, uint32_t ctrl);

/* A pulse of thing t asked by controller `requester`: returns its number
 * (>= 1, the value to pulse with), or a negative errno. */
int64_t sim_ledger_pulse(struct sim_ledger *l, uint32_t t, uint32_t requester);

/* The done callback of pulse id ran with `status` (0 or a negative code), or
 * SIM_PULSE_WITHDRAWN when tsync_node_pulse() refused it. */
void sim_ledger_done(struct sim_ledger *l, int64_t id, int status);

/* Controller ctrl reported TSYNC_EVENT_PULSE of thing t with value `id`. */
void sim_ledger_act(struct sim_ledger *l, uint32_t ctrl, uint32_t t, int64_t id);

/* When the owner acted on pulse id, it did not know the current boot of its
 * user `ctrl` (or that user was down): its relay may be lost to the restart. */
void sim_ledger_user_stale(struct sim_ledger *l, int64_t id, uint32_t ctrl);

/* Applies every check; prints each violation (at most max_lines of them) to
 * `out` with `name(idx)` naming controllers and things (may be NULL: numbers).
 * Returns the number of violations (also in rep->violations). */
typedef const char *(*sim_name_fn)(void *ud, bool thing, uint32_t idx);
uint64_t sim_ledger_verify(const struct sim_ledger *l, struct sim_ledger_report *rep, FILE *out,
                           int max_lines, sim_name_fn name, void *name_ud);

/* Whether two values are the same (type and content; strings by text). */
bool sim_value_same(const tsync_value *a, const tsync_value *b);

/*
 * The group-commit check of an owned value restored after a crash that is
 * not the last one its owner applied: the owner commits its values every
 * period, so a crash may take back those of the last period. Every node
 * shares the simulator's loop, whose stalls delay the commit's timer like
 * every other event: the window is widened by the loop's longest stall
 * before the crash, but by at most a cap, beyond which the check no longer
 * checks anything.
 */
struct sim_applied {
	int64_t at; /* µs */
	char text[48];
};

enum sim_restore {
	SIM_RESTORE_OLDER,    /* applied within the period (and slack) before the crash */
	SIM_RESTORE_IN_STALL, /* ... only within the window the loop's stall widened */
	SIM_RESTORE_CAPPED,   /* only a stall beyond the cap would excuse it: a failure */
	SIM_RESTORE_BAD,      /* no value, or older than any stall would excuse: a failure */
};

/* Judges `restored` (the value as text; NULL: none) against what the owner
 * applied: `ring` of ring_len values, n applied so far (the newest at
 * (n - 1) % ring_len); the crash at crashed_at, window_us the period with
 * its slack, lag_us the loop's longest stall before the crash, cap_us the
 * most of it that may widen the window. A value too old for the ring
 * cannot be checked, and is taken as SIM_RESTORE_OLDER. */
enum sim_restore sim_restore_check(const struct sim_applied *ring, size_t ring_len, uint64_t n,
                                   const char *restored, int64_t crashed_at, int64_t window_us, int64_t lag_us,
                                   int64_t cap_us);

#endif
