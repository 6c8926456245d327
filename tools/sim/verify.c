/*
 * thingsync-sim: the pulse ledger and its checks (see verify.h).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "verify.h"

struct ledger_thing {
	uint32_t owner;
	uint32_t n_users;
	uint32_t *users;
};

struct ledger_pulse {
	uint32_t thing;
	uint32_t requester;
	int status;
	uint64_t act_seq; /* when the owner first acted (0: never) */
	uint8_t *acts;    /* [0] the owner, [1 + k] users[k]; saturates at 255 */
	uint8_t *stale;   /* [k]: the owner acted not knowing users[k]'s current boot */
};

/* An act that names no pulse of the ledger, or a controller that is neither
 * the thing's owner nor one of its users. */
struct ledger_stray {
	uint32_t ctrl, thing;
	int64_t id;
};

struct sim_ledger {
	uint32_t n_ctrl, n_things;
	struct ledger_thing *things;
	uint64_t *last_start; /* per controller: the sequence number of its last start */
	uint64_t seq;         /* orders starts and acts */
	struct ledger_pulse *pulses;
	size_t n_pulses, cap_pulses;
	struct ledger_stray *strays;
	size_t n_strays, cap_strays;
	bool oom;     /* an act could not be recorded: verification must fail */
	bool durable; /* exactly once, restarts or not */
};

int sim_ledger_new(uint32_t n_ctrl, uint32_t n_things, struct sim_ledger **ret)
{
	struct sim_ledger *l = calloc(1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	l->n_ctrl = n_ctrl;
	l->n_things = n_things;
	l->things = calloc(n_things ? n_things : 1, sizeof(*l->things));
	l->last_start = calloc(n_ctrl ? n_ctrl : 1, sizeof(*l->last_start));
	if (!l->things || !l->last_start) {
		sim_ledger_free(l);
		return -ENOMEM;
	}
	l->seq = 1;
	*ret = l;
	return 0;
}

void sim_ledger_free(struct sim_ledger *l)
{
	if (!l)
		return;
	for (uint32_t t = 0; l->things && t < l->n_things; t++)
		free(l->things[t].users);
	for (size_t i = 0; i < l->n_pulses; i++) {
		free(l->pulses[i].acts);
		free(l->pulses[i].stale);
	}
	free(l->things);
	free(l->last_start);
	free(l->pulses);
	free(l->strays);
	free(l);
}

int sim_ledger_thing(struct sim_ledger *l, uint32_t t, uint32_t owner, uint32_t n_users,
                     const uint32_t *users)
{
	struct ledger_thing *th;

	if (t >= l->n_things || owner >= l->n_ctrl)
		return -EINVAL;
	th = &l->things[t];
	free(th->users);
	th->users = calloc(n_users ? n_users : 1, sizeof(*th->users));
	if (!th->users)
		return -ENOMEM;
	for (uint32_t k = 0; k < n_users; k++) {
		if (users[k] >= l->n_ctrl)
			return -EINVAL;
		th->users[k] = users[k];
	}
	th->owner = owner;
	th->n_users = n_users;
	return 0;
}

void sim_ledger_durable(struct sim_ledger *l, bool durable)
{
	l->durable = durable;
}

void sim_ledger_start(struct sim_ledger *l, uint32_t ctrl)
{
	if (ctrl < l->n_ctrl)
		l->last_start[ctrl] = l->seq++;
}

int64_t sim_ledger_pulse(struct sim_ledger *l, uint32_t t, uint32_t requester)
{
	struct ledger_pulse *p;

	if (t >= l->n_things || requester >= l->n_ctrl)
		return -EINVAL;
	if (l->n_pulses == l->cap_pulses) {
		size_t cap = l->cap_pulses ? l->cap_pulses * 2 : 256;
		struct ledger_pulse *np = realloc(l->pulses, cap * sizeof(*np));
		if (!np)
			return -ENOMEM;
		l->pulses = np;
		l->cap_pulses = cap;
	}
	p = &l->pulses[l->n_pulses];
	memset(p, 0, sizeof(*p));
	p->acts = calloc(1 + l->things[t].n_users, 1);
	p->stale = calloc(1 + l->things[t].n_users, 1);
	if (!p->acts || !p->stale) {
		free(p->acts);
		free(p->stale);
		return -ENOMEM;
	}
	p->thing = t;
	p->requester = requester;
	p->status = SIM_PULSE_PENDING;
	l->n_pulses++;
	return (int64_t)l->n_pulses;
}

void sim_ledger_done(struct sim_ledger *l, int64_t id, int status)
{
	if (id < 1 || (uint64_t)id > l->n_pulses)
		return;
	l->pulses[id - 1].status = status;
}

static void add_stray(struct sim_ledger *l, uint32_t ctrl, uint32_t t, int64_t id)
{
	if (l->n_strays == l->cap_strays) {
		size_t cap = l->cap_strays ? l->cap_strays * 2 : 16;
		struct ledger_stray *ns = realloc(l->strays, cap * sizeof(*ns));
		if (!ns) {
			l->oom = true;
			return;
		}
		l->strays = ns;
		l->cap_strays = cap;
	}
	l->strays[l->n_strays].ctrl = ctrl;
	l->strays[l->n_strays].thing = t;
	l->strays[l->n_strays].id = id;
	l->n_strays++;
}

void sim_ledger_act(struct sim_ledger *l, uint32_t ctrl, uint32_t t, int64_t id)
{
	struct ledger_pulse *p;
	const struct ledger_thing *th;
	uint32_t pos = UINT32_MAX;

	if (id < 1 || (uint64_t)id > l->n_pulses || l->pulses[id - 1].thing != t) {
		add_stray(l, ctrl, t, id);
		return;
	}
	p = &l->pulses[id - 1];
	th = &l->things[t];
	if (ctrl == th->owner) {
		pos = 0;
	} else {
		for (uint32_t k = 0; k < th->n_users; k++)
			if (th->users[k] == ctrl)
				pos = 1 + k;
	}
	if (pos == UINT32_MAX) {
		add_stray(l, ctrl, t, id);
		return;
	}
	if (pos == 0 && !p->act_seq)
		p->act_seq = l->seq;
	l->seq++;
	if (p->acts[pos] < UINT8_MAX)
		p->acts[pos]++;
}

void sim_ledger_user_stale(struct sim_ledger *l, int64_t id, uint32_t ctrl)
{
	const struct ledger_thing *th;

	if (id < 1 || (uint64_t)id > l->n_pulses)
		return;
	th = &l->things[l->pulses[id - 1].thing];
	for (uint32_t k = 0; k < th->n_users; k++)
		if (th->users[k] == ctrl)
			l->pulses[id - 1].stale[k] = 1;
}

static const char *label(char *buf, size_t len, sim_name_fn name, void *ud, bool thing, uint32_t idx)
{
	const char *s = name ? name(ud, thing, idx) : NULL;

	if (s)
		return s;
	snprintf(buf, len, "%s%" PRIu32, thing ? "thing#" : "controller#", idx);
	return buf;
}

uint64_t sim_ledger_verify(const struct sim_ledger *l, struct sim_ledger_report *rep, FILE *out,
                           int max_lines, sim_name_fn name, void *name_ud)
{
	char b1[32], b2[32], b3[32];
	int lines = 0;

#define VIOLATION(...)                                                                                       \
	do {                                                                                                 \
		rep->violations++;                                                                           \
		if (out && lines++ < max_lines)                                                              \
			fprintf(out, "VIOLATION: " __VA_ARGS__);                                             \
	} while (0)

	memset(rep, 0, sizeof(*rep));
	if (l->oom)
		VIOLATION("the ledger ran out of memory: some acts were not recorded\n");
	for (size_t i = 0; i < l->n_strays; i++) {
		const struct ledger_stray *s = &l->strays[i];
		VIOLATION("%s acted on a pulse of %s with value %" PRId64
		          ", which is no pulse of it that was asked "
		          "for, or it neither owns nor uses the thing\n",
		          label(b1, sizeof(b1), name, name_ud, false, s->ctrl),
		          label(b2, sizeof(b2), name, name_ud, true, s->thing), s->id);
	}
	for (size_t i = 0; i < l->n_pulses; i++) {
		const struct ledger_pulse *p = &l->pulses[i];
		const struct ledger_thing *th = &l->things[p->thing];
		const char *tn = label(b2, sizeof(b2), name, name_ud, true, p->thing);
		int64_t id = (int64_t)i + 1;
		uint8_t owner = p->acts[0];

		if (p->status == SIM_PULSE_WITHDRAWN) {
			for (uint32_t k = 0; k <= th->n_users; k++)
				if (p->acts[k])
					VIOLATION("pulse %" PRId64
					          " of %s was refused by tsync_node_pulse() but "
					          "acted on\n",
					          id, tn);
			continue;
		}
		rep->pulses++;
		rep->owner_acts += owner;
		switch (p->status) {
		case 0:
			rep->acked++;
			if (owner != 1)
				VIOLATION("pulse %" PRId64
				          " of %s was acknowledged to %s but acted %u times at "
				          "the owner %s\n",
				          id, tn, label(b1, sizeof(b1), name, name_ud, false, p->requester),
				          owner, label(b3, sizeof(b3), name, name_ud, false, th->owner));
			break;
		case TSYNC_EPEER_RESTARTED:
			if (l->durable) {
				VIOLATION("pulse %" PRId64
				          " of %s was answered \"%s\" although every controller keeps "
				          "durable windows\n",
				          id, tn, tsync_strerror(p->status));
				break;
			}
			/* fall through */
		case TSYNC_ECANCELED:
			if (l->durable && p->status == TSYNC_ECANCELED) {
				/* The requester crashed; its request was kept and
				 * resumed, so it acts once all the same. */
				rep->resumed += owner == 1;
				if (owner != 1)
					VIOLATION(
					    "pulse %" PRId64
					    " of %s, kept by %s across its crash, acted %u times at "
					    "the owner %s\n",
					    id, tn, label(b1, sizeof(b1), name, name_ud, false, p->requester),
					    owner, label(b3, sizeof(b3), name, name_ud, false, th->owner));
				break;
			}
			rep->unknown++;
			rep->unknown_acted += owner > 0;
			if (owner > 1)
				VIOLATION("pulse %" PRId64
				          " of %s (completed with \"%s\") acted %u times at the "
				          "owner\n",
				          id, tn, tsync_strerror(p->status), owner);
			break;
		case SIM_PULSE_PENDING:
			VIOLATION("pulse %" PRId64 " of %s, asked by %s, never got its answer\n", id, tn,
			          label(b1, sizeof(b1), name, name_ud, false, p->requester));
			break;
		default:
			VIOLATION("pulse %" PRId64 " of %s ended with an unexpected status: %s\n", id, tn,
			          tsync_strerror(p->status));
			break;
		}
		for (uint32_t k = 0; k < th->n_users; k++) {
			uint32_t u = th->users[k];
			uint8_t n = p->acts[1 + k];
			const char *un = label(b1, sizeof(b1), name, name_ud, false, u);

			rep->user_acts += n;
			if (n > 1)
				VIOLATION("pulse %" PRId64 " of %s acted %u times at the user %s\n", id, tn,
				          n, un);
			if (n > 0 && owner == 0)
				VIOLATION("pulse %" PRId64
				          " of %s acted at the user %s but not at the owner\n",
				          id, tn, un);
			if (owner != 1)
				continue;
			rep->user_expected++;
			if (n == 0) {
				/* The owner's relay to this user is lost only with a
				 * restart of one of them in between. */
				bool after =
				    l->last_start[u] > p->act_seq || l->last_start[th->owner] > p->act_seq;
				if (l->durable) {
					VIOLATION("pulse %" PRId64
					          " of %s acted at the owner but never at the user "
					          "%s, although both keep durable state\n",
					          id, tn, un);
				} else if (after || p->stale[k]) {
					rep->user_lost++;
					rep->user_lost_stale += !after;
				} else {
					VIOLATION("pulse %" PRId64
					          " of %s acted at the owner but never at the user "
					          "%s, and no restart came between\n",
					          id, tn, un);
				}
			}
		}
	}
	if (out && lines > max_lines)
		fprintf(out, "VIOLATION: ... and %d more\n", lines - max_lines);
#undef VIOLATION
	return rep->violations;
}

bool sim_value_same(const tsync_value *a, const tsync_value *b)
{
	if (a->type != b->type)
		return false;
	switch (a->type) {
	case TSYNC_TYPE_NONE:
		return true;
	case TSYNC_TYPE_BOOL:
		return a->u.b == b->u.b;
	case TSYNC_TYPE_INT:
		return a->u.i == b->u.i;
	case TSYNC_TYPE_FLOAT:
		return a->u.f == b->u.f;
	case TSYNC_TYPE_STRING:
		return a->u.s && b->u.s && !strcmp(a->u.s, b->u.s);
	}
	return false;
}

/* Whether `text` is a value applied since `opened`, or the one held then. */
static bool applied_since(const struct sim_applied *ring, size_t ring_len, uint64_t n, const char *text,
                          int64_t opened)
{
	for (uint64_t k = n; k > 0; k--) {
		const struct sim_applied *h = &ring[(k - 1) % ring_len];
		if (n - k >= ring_len)
			return true; /* beyond what the ring remembers */
		if (!strcmp(h->text, text))
			return true;
		if (h->at < opened)
			return false;
	}
	return false;
}

enum sim_restore sim_restore_check(const struct sim_applied *ring, size_t ring_len, uint64_t n,
                                   const char *restored, int64_t crashed_at, int64_t window_us, int64_t lag_us,
                                   int64_t cap_us)
{
	int64_t opened = crashed_at - window_us;

	/* No value never passes: a thing's first value is committed before
	 * it is sent, so an owner that had one restarts with one. */
	if (!restored || !ring_len)
		return SIM_RESTORE_BAD;
	if (applied_since(ring, ring_len, n, restored, opened))
		return SIM_RESTORE_OLDER;
	if (lag_us > 0 && applied_since(ring, ring_len, n, restored, opened - (lag_us < cap_us ? lag_us : cap_us)))
		return SIM_RESTORE_IN_STALL;
	if (lag_us > cap_us && applied_since(ring, ring_len, n, restored, opened - lag_us))
		return SIM_RESTORE_CAPPED;
	return SIM_RESTORE_BAD;
}
