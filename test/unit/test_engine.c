/*
 * Unit tests of lib/sync: several engines over a simulated network with a
 * simulated clock, so loss, duplication, reordering, dead peers and restarts
 * are exact and repeatable, and hours of retrying take milliseconds.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"
#include "sync/sync.h"

#define MAXN       8
#define LATENCY_US 200

struct packet {
	struct packet *next;
	uint64_t at;
	uint32_t from, to; /* controller indexes */
	size_t len;
	unsigned char data[];
};

struct sim;

struct simnode {
	struct sim *sim;
	uint32_t ctrl;
	struct sync_engine *e;
	bool alive;
	bool want_flush;
	uint64_t timer_at[MAXN];
	uint64_t datagrams_out;
	/* observations */
	int changed;
	int pulses[64]; /* per thing index */
	int cmds;
	uint64_t last_ver[1024]; /* per thing index */
	uint64_t last_boot[1024];
	bool ver_went_back;
	/* liveness: per controller, as this node reported it */
	bool cut; /* partitioned: what it sends and what is sent to it is lost */
	int downs[MAXN], ups[MAXN];
	uint64_t down_at[MAXN]; /* when it last reported that controller down */
	uint64_t timer_calls;   /* its timers that fired: its wake-ups while idle */
	/* It dies (without committing) right after the datagram whose act,
	 * a command or a pulse, it just ran: a crash between the act and the
	 * commit that precedes the answers. */
	bool crash_after_act, crash_now;
};

struct sim {
	tsync_site *site;
	uint64_t now;
	struct simnode n[MAXN];
	size_t count;
	struct packet *q; /* sorted by time */
	struct prng prng;
	double loss, dup, reorder;
	bool capture;
	struct packet *captured; /* copies of datagrams sent, newest first */
	bool block;              /* drop every datagram from block_from to block_to */
	uint32_t block_from, block_to;
	uint64_t boots;
};

static char tmpdir[256];

/* `timers`: the [site] keys after the name, or NULL for the usual ones. */
static char *write_site(const char *timers, const char *body, bool with_key)
{
	static char path[512];
	char keypath[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/site-%d.conf", tmpdir, rand());
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "[site]\nname = test\n%s",
	        timers ? timers : "retry_min_ms = 20\nretry_initial_ms = 100\nretry_max_ms = 2000\n");
	if (with_key) {
		snprintf(keypath, sizeof(keypath), "%s/key-%d", tmpdir, rand());
		assert_int_equal(tsync_key_generate(keypath), 0);
		fprintf(f, "key_file = %s\n", keypath);
	}
	fputs(body, f);
	fclose(f);
	return path;
}

static const char *SITE3 = "[controller A]\nhost = 127.0.0.1\nudp_port = 6001\nroles = cmd_do\n"
                           "[controller B]\nhost = 127.0.0.1\nudp_port = 6002\n"
                           "[controller C]\nhost = 127.0.0.1\nudp_port = 6003\n"
                           "[thing light]\nowner = A\ntype = bool\nusers = B, C\n"
                           "[thing temp]\nowner = A\ntype = float\nusers = B, C\nmin = -50\nmax = 150\n"
                           "[thing mode]\nowner = A\ntype = string\nusers = B\nallowed = off, eco, comfort\n"
                           "[thing door]\nowner = A\ntype = bool\nusers = B, C\npulse = yes\npulse_ms = 300\n"
                           "[thing count]\nowner = B\ntype = int\nusers = A, C\n"
                           "[thing siren]\nowner = C\ntype = bool\nusers = A\nsettable = no\n";

/* --- the simulated environment ---------------------------------------------- */

static void net_push(struct sim *s, uint64_t at, uint32_t from, uint32_t to, const void *buf, size_t len)
{
	struct packet *p = malloc(sizeof(*p) + len), **pp;

	assert_non_null(p);
	p->at = at;
	p->from = from;
	p->to = to;
	p->len = len;
	memcpy(p->data, buf, len);
	for (pp = &s->q; *pp && (*pp)->at <= at; pp = &(*pp)->next)
		;
	p->next = *pp;
	*pp = p;
}

static void op_send(void *ctx, uint32_t peer, const void *buf, size_t len)
{
	struct simnode *sn = ctx;
	struct sim *s = sn->sim;
	uint32_t to = sn->e->peers[peer].ctrl;
	uint64_t at = s->now + LATENCY_US;

	sn->datagrams_out++;
	if (s->capture) {
		struct packet *c = malloc(sizeof(*c) + len);
		assert_non_null(c);
		c->from = sn->ctrl;
		c->to = to;
		c->len = len;
		memcpy(c->data, buf, len);
		c->next = s->captured;
		s->captured = c;
	}
	if (prng__unit(&s->prng) < s->loss)
		return;
	if (s->block && sn->ctrl == s->block_from && to == s->block_to)
		return;
	if (prng__unit(&s->prng) < s->reorder)
		at += prng__next(&s->prng) % 3000;
	net_push(s, at, sn->ctrl, to, buf, len);
	if (prng__unit(&s->prng) < s->dup)
		net_push(s, at + prng__next(&s->prng) % 2000, sn->ctrl, to, buf, len);
}

static void op_arm(void *ctx, uint32_t peer, uint64_t delay_us)
{
	struct simnode *sn = ctx;
	sn->timer_at[peer] = delay_us == UINT64_MAX ? 0 : sn->sim->now + delay_us;
}

static void op_want_flush(void *ctx)
{
	struct simnode *sn = ctx;
	sn->want_flush = true;
}

static void on_event(void *ud, tsync_node *node, const tsync_event *ev)
{
	struct simnode *sn = ud;
	uint32_t t;

	if (ev->kind == TSYNC_EVENT_CHANGED) {
		tsync_thing_state st;
		sn->changed++;
		assert_int_equal(name_index__get(&sn->sim->site->thing_ix, ev->thing, &t), 0);
		/* Every change names its thing's index to the listeners (what
		 * the node's cumul takes instead of a lookup by name). */
		assert_int_equal(sync__event_thing(sn->e, ev), t);
		assert_int_equal(sync__get(sn->e, ev->thing, &st), 0);
		/* A receiver never goes back to an older (boot, version). */
		if (!st.owned && (st.owner_boot < sn->last_boot[t] ||
		                  (st.owner_boot == sn->last_boot[t] && st.version <= sn->last_ver[t])))
			sn->ver_went_back = true;
		sn->last_ver[t] = st.version;
		sn->last_boot[t] = st.owner_boot;
	} else if (ev->kind == TSYNC_EVENT_PEER_DOWN || ev->kind == TSYNC_EVENT_PEER_UP) {
		assert_int_equal(sync__event_thing(sn->e, ev), UINT32_MAX);
		assert_int_equal(name_index__get(&sn->sim->site->controller_ix, ev->controller, &t), 0);
		if (ev->kind == TSYNC_EVENT_PEER_UP) {
			sn->ups[t]++;
		} else {
			sn->downs[t]++;
			sn->down_at[t] = sn->sim->now;
		}
	} else if (ev->kind == TSYNC_EVENT_PULSE) {
		assert_int_equal(name_index__get(&sn->sim->site->thing_ix, ev->thing, &t), 0);
		assert_int_equal(sync__event_thing(sn->e, ev), t);
		sn->pulses[t]++;
		sn->crash_now |= sn->crash_after_act;
	}
}

static int on_version(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct simnode *sn = ud;
	sn->cmds++;
	sn->crash_now |= sn->crash_after_act;
	assert_non_null(strstr(req->json, "\"cmd\":\"version\""));
	*result = strdup("\"0.1.0\"");
	return 0;
}

static int on_bad_args(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	return TSYNC_ECMD_ARGS;
}

/* "slow": a command answered later (sync__defer()); each run is counted and
 * its handle kept under its "k" argument, for the test to answer. */
#define SLOW_MAX 16
static struct tsync_deferred *slow_handle[SLOW_MAX];
static int slow_runs[SLOW_MAX];

static int on_slow(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct simnode *sn = ud;
	const char *k = strstr(req->json, "\"k\":");
	int i;

	assert_non_null(k);
	i = atoi(k + 4);
	assert_true(i >= 0 && i < SLOW_MAX);
	slow_runs[i]++;
	assert_int_equal(sync__defer(sn->e, req, &slow_handle[i]), 0);
	sn->crash_now |= sn->crash_after_act;
	return TSYNC_DEFERRED;
}

/* --- an in-memory store for durable windows ------------------------------------
 * What a node with a state directory does, without LMDB: windows and answers
 * are staged, a commit makes them durable, a crash (node_stop) loses what is
 * staged, and a node started again restores what is durable. */

#define MS_WINDOWS 16
#define MS_ANSWERS 64
struct ms_window {
	bool used;
	char sender[16];
	uint64_t ob, top, bits[SYNC_DEDUP_BITS / 64];
};
struct ms_answer {
	bool used;
	char sender[16];
	uint64_t ob, id;
	char err[32], res[32];
	bool has_err, has_res;
};
#define MS_REQS 32
struct ms_req {
	bool used, done;
	char peer[16], thing[16], role[16], cmd[16];
	uint64_t ob, id;
	bool is_pulse;
	uint8_t type;
	tsync_value val; /* bool or int */
	uint32_t ms;
};
struct mstore {
	bool on; /* the node has a "state directory" */
	struct ms_req req[MS_REQS], staged_req[MS_REQS];
	size_t n_staged_req;
	struct ms_window win[MS_WINDOWS], staged_win[MS_WINDOWS];
	struct ms_answer ans[MS_ANSWERS], staged_ans[MS_ANSWERS];
	size_t n_staged_win, n_staged_ans;
	int commits;
};
static struct mstore mstores[MAXN];

static void ms_persist_window(void *ctx, const char *sender, uint64_t ob, const struct dedup *d)
{
	struct simnode *sn = ctx;
	struct mstore *m = &mstores[sn->ctrl];
	struct ms_window *w;

	assert_true(m->n_staged_win < MS_WINDOWS);
	w = &m->staged_win[m->n_staged_win++];
	memset(w, 0, sizeof(*w));
	w->used = d != NULL; /* NULL: a drop */
	snprintf(w->sender, sizeof(w->sender), "%s", sender);
	w->ob = ob;
	if (d) {
		w->top = d->top;
		memcpy(w->bits, d->bits, sizeof(w->bits));
	}
}

static void ms_persist_answer(void *ctx, const char *sender, uint64_t ob, uint64_t id, const char *err,
                              const char *res)
{
	struct simnode *sn = ctx;
	struct mstore *m = &mstores[sn->ctrl];
	struct ms_answer *a;

	assert_true(m->n_staged_ans < MS_ANSWERS);
	a = &m->staged_ans[m->n_staged_ans++];
	memset(a, 0, sizeof(*a));
	a->used = err || res;
	snprintf(a->sender, sizeof(a->sender), "%s", sender);
	a->ob = ob;
	a->id = id;
	a->has_err = err != NULL;
	a->has_res = res != NULL;
	snprintf(a->err, sizeof(a->err), "%s", err ? err : "");
	snprintf(a->res, sizeof(a->res), "%s", res ? res : "");
}

static void ms_persist_request(void *ctx, const char *peer, uint64_t ob, const struct outreq *r, bool done)
{
	struct simnode *sn = ctx;
	struct mstore *m = &mstores[sn->ctrl];
	struct ms_req *q;

	assert_true(m->n_staged_req < MS_REQS);
	q = &m->staged_req[m->n_staged_req++];
	memset(q, 0, sizeof(*q));
	q->used = true;
	q->done = done;
	snprintf(q->peer, sizeof(q->peer), "%s", peer);
	q->ob = ob;
	q->id = r->id;
	q->is_pulse = r->is_pulse;
	q->type = (uint8_t)r->type;
	if (r->is_pulse) {
		snprintf(q->thing, sizeof(q->thing), "%s", sn->sim->site->things[r->thing].name);
		q->val = r->val;
		q->ms = r->ms;
	} else {
		snprintf(q->role, sizeof(q->role), "%s", r->role ? r->role : "");
		snprintf(q->cmd, sizeof(q->cmd), "%s", r->cmd ? r->cmd : "");
	}
}

static int ms_commit(void *ctx)
{
	struct simnode *sn = ctx;
	struct mstore *m = &mstores[sn->ctrl];

	if (!m->on)
		return 0;
	for (size_t i = 0; i < m->n_staged_req; i++) {
		struct ms_req *q = &m->staged_req[i];
		size_t k, free_k = MS_REQS;
		for (k = 0; k < MS_REQS; k++) {
			if (!m->req[k].used && free_k == MS_REQS)
				free_k = k;
			if (m->req[k].used && m->req[k].ob == q->ob && m->req[k].id == q->id &&
			    !strcmp(m->req[k].peer, q->peer))
				break;
		}
		if (k == MS_REQS)
			k = free_k;
		assert_true(k < MS_REQS);
		m->req[k] = *q;
		m->req[k].used = !q->done;
	}
	m->n_staged_req = 0;
	for (size_t i = 0; i < m->n_staged_win; i++) {
		struct ms_window *w = &m->staged_win[i];
		size_t k, free_k = MS_WINDOWS;
		for (k = 0; k < MS_WINDOWS; k++) {
			if (!m->win[k].used && free_k == MS_WINDOWS)
				free_k = k;
			if (m->win[k].used && m->win[k].ob == w->ob && !strcmp(m->win[k].sender, w->sender))
				break;
		}
		if (k == MS_WINDOWS)
			k = free_k;
		assert_true(k < MS_WINDOWS);
		m->win[k] = *w;
	}
	for (size_t i = 0; i < m->n_staged_ans; i++) {
		struct ms_answer *a = &m->staged_ans[i];
		size_t k, free_k = MS_ANSWERS;
		for (k = 0; k < MS_ANSWERS; k++) {
			if (!m->ans[k].used && free_k == MS_ANSWERS)
				free_k = k;
			if (m->ans[k].used && m->ans[k].ob == a->ob && m->ans[k].id == a->id &&
			    !strcmp(m->ans[k].sender, a->sender))
				break;
		}
		if (k == MS_ANSWERS)
			k = free_k;
		assert_true(k < MS_ANSWERS);
		m->ans[k] = *a;
	}
	m->n_staged_win = m->n_staged_ans = 0;
	m->commits++;
	return 0;
}

static void ms_restore(struct simnode *sn)
{
	struct mstore *m = &mstores[sn->ctrl];

	/* What was staged and not committed died with the process. */
	m->n_staged_win = m->n_staged_ans = m->n_staged_req = 0;
	sync__set_durable(sn->e, true);
	for (size_t k = 0; k < MS_REQS; k++) {
		struct store_request q;
		if (!m->req[k].used)
			continue;
		memset(&q, 0, sizeof(q));
		q.peer = m->req[k].peer;
		q.origin_boot = m->req[k].ob;
		q.id = m->req[k].id;
		q.type = m->req[k].type;
		q.is_pulse = m->req[k].is_pulse;
		q.thing = m->req[k].is_pulse ? m->req[k].thing : NULL;
		q.val = m->req[k].val;
		q.ms = m->req[k].ms;
		q.role = m->req[k].is_pulse ? NULL : m->req[k].role;
		q.cmd = m->req[k].is_pulse ? NULL : m->req[k].cmd;
		assert_int_equal(sync__resume_request(sn->e, &q, NULL, NULL), 0);
	}
	for (size_t k = 0; k < MS_WINDOWS; k++)
		if (m->win[k].used)
			assert_int_equal(sync__restore_window(sn->e, m->win[k].sender, m->win[k].ob,
			                                      m->win[k].top, m->win[k].bits, SYNC_DEDUP_BITS / 64),
			                 0);
	for (size_t k = 0; k < MS_ANSWERS; k++)
		if (m->ans[k].used)
			assert_int_equal(sync__restore_answer(sn->e, m->ans[k].sender, m->ans[k].ob, m->ans[k].id,
			                                      m->ans[k].has_err ? m->ans[k].err : NULL,
			                                      m->ans[k].has_res ? m->ans[k].res : NULL),
			                 0);
}

static void node_start(struct sim *s, uint32_t ctrl)
{
	struct sync_ops ops = {
	    .ctx = &s->n[ctrl],
	    .send = op_send,
	    .arm = op_arm,
	    .want_flush = op_want_flush,
	    .commit = ms_commit,
	    .persist_window = ms_persist_window,
	    .persist_answer = ms_persist_answer,
	    .persist_request = ms_persist_request,
	};
	struct simnode *sn = &s->n[ctrl];

	sn->sim = s;
	sn->ctrl = ctrl;
	memset(sn->timer_at, 0, sizeof(sn->timer_at));
	assert_int_equal(sync__new(s->site, ctrl, ++s->boots, &ops, NULL, NULL, &sn->e), 0);
	if (mstores[ctrl].on)
		ms_restore(sn);
	assert_int_equal(sync__on_event(sn->e, on_event, sn), 0);
	if (site__has_role(s->site, ctrl, "cmd_do")) {
		assert_int_equal(sync__on_request(sn->e, "cmd", "cmd_do", "version", on_version, sn), 0);
		assert_int_equal(sync__on_request(sn->e, "cmd", "cmd_do", "reboot", on_bad_args, sn), 0);
		assert_int_equal(sync__on_request(sn->e, "cmd", "cmd_do", "slow", on_slow, sn), 0);
	}
	sn->alive = true;
	sync__start(sn->e, s->now);
}

static void node_stop(struct sim *s, uint32_t ctrl)
{
	sync__free(s->n[ctrl].e);
	s->n[ctrl].e = NULL;
	s->n[ctrl].alive = false;
	s->n[ctrl].want_flush = false;
}

static struct sim *sim_new_timers(const char *timers, const char *body, bool key, uint64_t seed)
{
	struct sim *s = calloc(1, sizeof(*s));
	char *errors = NULL;
	int r;

	assert_non_null(s);
	r = tsync_site_load(write_site(timers, body, key), &s->site, &errors);
	if (r < 0)
		fail_msg("site: %s", errors ? errors : "?");
	s->count = s->site->n_controllers;
	assert_true(s->count <= MAXN);
	prng__seed(&s->prng, seed);
	s->boots = 1000;
	for (uint32_t i = 0; i < s->count; i++)
		node_start(s, i);
	return s;
}

static struct sim *sim_new(const char *body, bool key, uint64_t seed)
{
	return sim_new_timers(NULL, body, key, seed);
}

static void sim_free(struct sim *s)
{
	for (uint32_t i = 0; i < s->count; i++)
		if (s->n[i].e)
			node_stop(s, i);
	while (s->q) {
		struct packet *p = s->q;
		s->q = p->next;
		free(p);
	}
	while (s->captured) {
		struct packet *p = s->captured;
		s->captured = p->next;
		free(p);
	}
	tsync_site_free(s->site);
	free(s);
	memset(mstores, 0, sizeof(mstores));
}

/* The counts the engine keeps (sync__unsettled(), sync__get()'s
 * users_pending), walked as the engine counted them before it kept them:
 * the oracle check_counters() compares them with. */
static uint32_t users_pending_walk(const struct sync_engine *e, uint32_t t)
{
	const struct thing_rt *rt = &e->things[t];
	uint32_t n = 0;

	for (uint32_t u = 0; rt->role == THING_OWNED && u < rt->n_users; u++)
		n += e->peers[rt->users[u].peer].out[rt->users[u].slot].acked_ver < rt->ver;
	return n;
}

static size_t owned_unsettled_walk(const struct sync_engine *e)
{
	size_t n = 0;

	for (size_t i = 0; i < e->plan->n_owned; i++)
		n += users_pending_walk(e, e->plan->owned[i]) > 0;
	return n;
}

static size_t unsettled_walk(const struct sync_engine *e)
{
	size_t n = owned_unsettled_walk(e);

	for (size_t i = 0; i < e->plan->n_used; i++) {
		const struct thing_rt *rt = &e->things[e->plan->used[i]];
		n += rt->ask_pending + rt->req_pending;
	}
	for (size_t i = 0; i < e->n_peers; i++)
		n += e->peers[i].n_reqs;
	return n;
}

/* Whether a set to p waits for its acknowledgement, walked over the whole
 * list: engine__pending() goes on from where it last looked. */
static bool inq_pending(const struct sync_engine *e, const struct sync_peer *p)
{
	for (size_t k = 0; k < p->n_inq; k++)
		if (e->things[p->inq[k]].ask_pending || e->things[p->inq[k]].req_pending)
			return true;
	return false;
}

static bool sets_pending_walk(const struct sync_engine *e, const struct sync_peer *p)
{
	for (size_t k = 0; k < p->n_dirty; k++) {
		const struct out_slot *o = &p->out[p->dirty[k]];
		if (o->acked_ver < e->things[o->thing].ver)
			return true;
	}
	return false;
}

/* What the engine keeps instead of walking, against the walk, on every
 * live node: sync__unsettled() (owned things some user has not
 * acknowledged, requests waiting), each owned thing's users pending (as
 * sync__get() says it), the peers with windows (each exactly once on
 * win_peers) and the heartbeat peers. Runs at
 * every step of every simulation, so every test compares them. */
static void check_counters(struct sim *s)
{
	for (uint32_t i = 0; i < s->count; i++) {
		struct sync_engine *e = s->n[i].e;
		size_t reqs = 0, hb = 0;
		if (!s->n[i].alive)
			continue;
		assert_int_equal(sync__unsettled(e), unsettled_walk(e));
		assert_int_equal(e->n_owned_unsettled, owned_unsettled_walk(e));
		for (size_t k = 0; k < e->plan->n_owned; k++) {
			uint32_t t = e->plan->owned[k];
			tsync_thing_state st;
			assert_int_equal(e->things[t].users_pending, users_pending_walk(e, t));
			assert_int_equal(sync__get(e, s->site->things[t].name, &st), 0);
			assert_int_equal(st.users_pending, users_pending_walk(e, t));
		}
		for (size_t k = 0; k < e->n_peers; k++) {
			struct sync_peer *p = &e->peers[k];
			size_t listed = 0;
			reqs += e->peers[k].n_reqs;
			/* Every set not acknowledged is on the list (a flush that
			 * skips the walk relies on it), and the cursor agrees. */
			for (size_t o = 0; o < p->n_out; o++)
				if (p->out[o].acked_ver < e->things[p->out[o].thing].ver)
					assert_true(p->out[o].listed);
			assert_int_equal(engine__pending(e, p),
			                 sets_pending_walk(e, p) || p->n_reqs > 0 || inq_pending(e, p));
			for (size_t j = 0; j < e->n_win_peers; j++)
				listed += e->win_peers[j] == k;
			assert_int_equal(listed, e->peers[k].wins != NULL);
			if (e->peers[k].heartbeat) {
				assert_true(hb < e->n_hb_peers);
				assert_int_equal(e->hb_peers[hb++], k);
			}
		}
		assert_int_equal(e->n_reqs, reqs);
		assert_int_equal(hb, e->n_hb_peers);
	}
}

/* Runs the simulation until `until` (absolute, us). */
static void sim_run(struct sim *s, uint64_t until)
{
	for (;;) {
		uint64_t next = UINT64_MAX;
		int kind = 0;
		uint32_t who = 0, peer = 0;

		check_counters(s);

		for (uint32_t i = 0; i < s->count; i++)
			if (s->n[i].alive && s->n[i].want_flush) {
				s->n[i].want_flush = false;
				sync__flush(s->n[i].e, s->now);
			}
		if (s->q && s->q->at < next) {
			next = s->q->at;
			kind = 1;
		}
		for (uint32_t i = 0; i < s->count; i++)
			for (uint32_t k = 0; s->n[i].alive && k < s->n[i].e->n_peers; k++)
				if (s->n[i].timer_at[k] && s->n[i].timer_at[k] < next) {
					next = s->n[i].timer_at[k];
					kind = 2;
					who = i;
					peer = k;
				}
		if (next > until) {
			s->now = until;
			return;
		}
		s->now = next;
		if (kind == 1) {
			struct packet *p = s->q;
			s->q = p->next;
			if (s->n[p->to].alive && !s->n[p->to].cut && !s->n[p->from].cut) {
				struct sync_engine *e = s->n[p->to].e;
				sync__input(e, e->plan->peer_of_ctrl[p->from], p->data, p->len, s->now);
				if (s->n[p->to].crash_now) {
					s->n[p->to].crash_now = s->n[p->to].crash_after_act = false;
					node_stop(s, p->to);
				}
			}
			free(p);
		} else {
			s->n[who].timer_at[peer] = 0;
			s->n[who].timer_calls++;
			sync__timer(s->n[who].e, peer, s->now);
		}
	}
}

static bool sim_settled(struct sim *s)
{
	for (uint32_t i = 0; i < s->count; i++)
		if (s->n[i].alive && sync__unsettled(s->n[i].e))
			return false;
	return true;
}

/* Runs until every live node is settled, at most `limit_us` more. */
static bool sim_settle(struct sim *s, uint64_t limit_us)
{
	uint64_t end = s->now + limit_us;
	while (s->now < end) {
		sim_run(s, s->now + 1000);
		if (sim_settled(s) && !s->q)
			return true;
	}
	return false;
}

static tsync_value get(struct sim *s, uint32_t ctrl, const char *thing)
{
	tsync_thing_state st;
	assert_int_equal(sync__get(s->n[ctrl].e, thing, &st), 0);
	return st.value;
}

/* --- tests ------------------------------------------------------------------- */

static void test_start_and_converge(void **state)
{
	struct sim *s = sim_new(SITE3, false, 1);
	tsync_value v;

	assert_true(sim_settle(s, 5000000));
	v = tsync_bool(true);
	assert_int_equal(sync__set(s->n[0].e, "light", &v, s->now), 0);
	v = tsync_float(21.5);
	assert_int_equal(sync__set(s->n[0].e, "temp", &v, s->now), 0);
	v = tsync_int(7);
	assert_int_equal(sync__set(s->n[1].e, "count", &v, s->now), 0);
	assert_true(sim_settle(s, 5000000));

	for (uint32_t c = 1; c <= 2; c++) {
		assert_int_equal(get(s, c, "light").type, TSYNC_TYPE_BOOL);
		assert_true(get(s, c, "light").u.b);
		assert_true(get(s, c, "temp").u.f == 21.5);
	}
	assert_int_equal(get(s, 0, "count").u.i, 7);
	assert_int_equal(get(s, 2, "count").u.i, 7);
	/* Asking again for a value that did not change is answered too: the
	 * site settles instead of re-asking forever. */
	assert_int_equal(sync__ask(s->n[1].e, "light", s->now), 0);
	assert_int_equal(sync__unsettled(s->n[1].e), 1);
	{
		tsync_thing_state st;
		assert_int_equal(sync__get(s->n[1].e, "light", &st), 0);
		assert_true(st.asking);
		assert_true(sim_settle(s, 1000000));
		assert_int_equal(sync__get(s->n[1].e, "light", &st), 0);
		assert_false(st.asking);
		assert_false(st.requesting);
	}
	assert_int_equal(sync__unsettled(s->n[1].e), 0);
	/* One change to two users is about one datagram each way per user. */
	assert_true(s->n[0].e->peers[0].st.acked >= 2);
	sim_free(s);
}

static void test_values_checked(void **state)
{
	struct sim *s = sim_new(SITE3, false, 2);
	tsync_value v;

	v = tsync_float(500.0); /* over max */
	assert_int_equal(sync__set(s->n[0].e, "temp", &v, s->now), TSYNC_EVALUE);
	v = tsync_string("turbo"); /* not allowed */
	assert_int_equal(sync__set(s->n[0].e, "mode", &v, s->now), TSYNC_EVALUE);
	v = tsync_string("eco");
	assert_int_equal(sync__set(s->n[0].e, "mode", &v, s->now), 0);
	v = tsync_int(3);
	assert_int_equal(sync__set(s->n[0].e, "light", &v, s->now), TSYNC_EVALUE);
	assert_int_equal(sync__set(s->n[0].e, "nope", &v, s->now), TSYNC_EUNKNOWN_THING);
	/* C does not use "mode". */
	assert_int_equal(sync__set(s->n[2].e, "mode", &v, s->now), TSYNC_ENOT_USED);
	/* A is a user of siren, which is not settable by users. */
	v = tsync_bool(true);
	assert_int_equal(sync__set(s->n[0].e, "siren", &v, s->now), TSYNC_EREFUSED);
	assert_int_equal(sync__pulse(s->n[0].e, "light", NULL, 0, NULL, NULL, s->now), TSYNC_ENO_PULSE);
	/* Not UTF-8: the receivers' parser would refuse the whole datagram. */
	v = tsync_string("\xc3\x28");
	assert_int_equal(sync__set(s->n[0].e, "mode", &v, s->now), TSYNC_EVALUE);
	/* A command that cannot fit in any datagram is refused when asked,
	 * instead of being retried forever. */
	{
		static char big[4096];
		static const char head[] = "{\"kwargs\":{\"reason\":\"";
		memset(big, 'x', sizeof(big));
		memcpy(big, head, sizeof(head) - 1);
		memcpy(big + sizeof(big) - 4, "\"}}", 4); /* with the NUL */
		assert_int_equal(
		    sync__send_request(s->n[2].e, "A", "cmd", "cmd_do", "logging", big, NULL, NULL, s->now),
		    -EMSGSIZE);
		assert_int_equal(s->n[2].e->peers[0].n_reqs, 0);
	}
	sim_free(s);
}

/* engine__coerce() takes an integer for an integer thing without bounds or
 * a list at once (every set of a batch): the things with bounds or a list,
 * and the other types, must still be converted and checked. */
static void test_coerce_int_fast(void **state)
{
	static const char site[] = "[controller A]\nhost = 127.0.0.1\nudp_port = 6001\n"
	                           "[controller B]\nhost = 127.0.0.1\nudp_port = 6002\n"
	                           "[thing plain]\nowner = A\ntype = int\nusers = B\n"
	                           "[thing low]\nowner = A\ntype = int\nusers = B\nmin = -5\n"
	                           "[thing high]\nowner = A\ntype = int\nusers = B\nmax = 10\n"
	                           "[thing listed]\nowner = A\ntype = int\nusers = B\nallowed = 1, 2\n"
	                           "[thing temp]\nowner = A\ntype = float\nusers = B\n"
	                           "[thing on]\nowner = A\ntype = bool\nusers = B\n";
	struct sim *s = sim_new(site, false, 3);
	const struct tsync_site *st = s->n[0].e->site;
	static const struct {
		const char *thing;
		int64_t in;
		int want;
	} cases[] = {
	    {"plain", INT64_MIN, 0}, {"plain", INT64_MAX, 0}, {"low", -5, 0},    {"low", -6, TSYNC_EVALUE},
	    {"high", 10, 0},         {"high", 11, TSYNC_EVALUE}, {"listed", 2, 0}, {"listed", 3, TSYNC_EVALUE},
	    {"temp", 7, 0},          {"on", 1, 0},             {"on", 2, TSYNC_EVALUE},
	};
	tsync_value out;
	uint32_t t;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		tsync_value in = tsync_int(cases[i].in);
		assert_int_equal(name_index__get(&st->thing_ix, cases[i].thing, &t), 0);
		assert_int_equal(engine__coerce(st, t, &in, &out), cases[i].want);
		if (cases[i].want == 0 && st->things[t].type == TSYNC_TYPE_INT)
			assert_true(out.type == TSYNC_TYPE_INT && out.u.i == cases[i].in);
	}
	assert_int_equal(name_index__get(&st->thing_ix, "temp", &t), 0);
	{
		tsync_value in = tsync_int(7);
		assert_int_equal(engine__coerce(st, t, &in, &out), 0);
		assert_true(out.type == TSYNC_TYPE_FLOAT && out.u.f == 7.0);
	}
	assert_int_equal(name_index__get(&st->thing_ix, "plain", &t), 0);
	{
		tsync_value in = tsync_float(1.0); /* no float for an int thing */
		assert_int_equal(engine__coerce(st, t, &in, &out), TSYNC_EVALUE);
	}
	sim_free(s);
}

/* The owner's intake of acks by datagram (ack.c): in order, an ack starts
 * at the ring's oldest entry and what it takes leaves the ring; out of
 * order, it is found by bisection and nothing leaves. Either way every set
 * of the acknowledged seqs counts once, and no other. */
static void test_ack_take_orders(void **state)
{
	static const struct {
		uint64_t first, last;
		uint64_t tail_after; /* sent_tail after it */
	} acks[] = {
	    {1, 2, 4},   /* from the oldest: seqs 1 and 2 (entries 0..3) leave */
	    {5, 5, 4},   /* ahead of the tail: bisection, nothing leaves */
	    {3, 4, 8},   /* from the tail again: 3 and 4 leave, then 5, taken, stays */
	    {1, 9, 12},  /* a range that began before the tail: 5 and 6, all gone */
	    {20, 30, 12}, /* seqs never sent: nothing */
	};
	struct sync_engine e;
	struct sync_peer p;
	struct thing_rt things[2];
	struct out_slot out[2];

	(void)state;
	memset(&e, 0, sizeof(e));
	memset(&p, 0, sizeof(p));
	memset(things, 0, sizeof(things));
	memset(out, 0, sizeof(out));
	e.things = things;
	p.out = out;
	p.n_out = 2;
	out[0].thing = 0;
	out[1].thing = 1;
	/* Seqs 1..6, each with a set of both things, versions growing. */
	for (uint64_t seq = 1; seq <= 6; seq++)
		for (uint32_t k = 0; k < 2; k++)
			assert_int_equal(ack__record(&p, seq, k, seq * 10 + k), 0);
	things[0].ver = 60;
	things[1].ver = 61;
	for (size_t i = 0; i < ARRAY_SIZE(acks); i++) {
		uint64_t before = p.st.acked;
		ack__take(&e, &p, acks[i].first, acks[i].last);
		assert_int_equal(p.sent_tail, acks[i].tail_after);
		switch (i) {
		case 0:
			assert_int_equal(out[0].acked_ver, 20);
			assert_int_equal(out[1].acked_ver, 21);
			assert_int_equal(p.st.acked - before, 4);
			break;
		case 1:
			assert_int_equal(out[0].acked_ver, 50);
			assert_int_equal(p.st.acked - before, 2);
			break;
		case 2:
			/* 3 and 4 are older than what 5 acknowledged: no count */
			assert_int_equal(out[0].acked_ver, 50);
			assert_int_equal(p.st.acked - before, 0);
			break;
		case 3:
			assert_int_equal(out[0].acked_ver, 60);
			assert_int_equal(out[1].acked_ver, 61);
			assert_int_equal(p.st.acked - before, 2);
			assert_int_equal(p.sent_tail, p.sent_head);
			break;
		default:
			assert_int_equal(p.st.acked - before, 0);
		}
	}
	ack__free(&p);
}

/* Satisfies the "30% loss both ways", plus duplication and reordering. */
static void test_converges_under_loss(void **state)
{
	struct sim *s = sim_new(SITE3, true, 3);
	tsync_value v;

	s->loss = 0.3;
	s->dup = 0.2;
	s->reorder = 0.3;
	for (int i = 0; i < 300; i++) {
		v = tsync_float((double)(i % 150));
		assert_int_equal(sync__set(s->n[0].e, "temp", &v, s->now), 0);
		v = tsync_int(i);
		assert_int_equal(sync__set(s->n[1].e, "count", &v, s->now), 0);
		if (i % 7 == 0) {
			v = tsync_bool(i % 2);
			assert_int_equal(sync__set(s->n[0].e, "light", &v, s->now), 0);
		}
		sim_run(s, s->now + (prng__next(&s->prng) % 3000));
	}
	assert_true(sim_settle(s, 120000000));
	for (uint32_t c = 1; c <= 2; c++) {
		assert_true(get(s, c, "temp").u.f == (double)(299 % 150));
		assert_int_equal(get(s, c, "light").u.b, get(s, 0, "light").u.b);
		assert_false(s->n[c].ver_went_back);
	}
	assert_int_equal(get(s, 0, "count").u.i, 299);
	assert_int_equal(get(s, 2, "count").u.i, 299);
	assert_true(s->n[0].e->peers[0].st.retransmits > 0);
	sim_free(s);
}

static void test_user_requests_set(void **state)
{
	struct sim *s = sim_new(SITE3, true, 4);
	tsync_value v = tsync_string("comfort");

	s->loss = 0.3;
	s->dup = 0.3;
	s->reorder = 0.3;
	/* B asks the owner A to set "mode"; several requests, the last wins. */
	v = tsync_string("eco");
	assert_int_equal(sync__set(s->n[1].e, "mode", &v, s->now), 0);
	sim_run(s, s->now + 500);
	v = tsync_string("comfort");
	assert_int_equal(sync__set(s->n[1].e, "mode", &v, s->now), 0);
	assert_true(sim_settle(s, 60000000));
	assert_string_equal(get(s, 0, "mode").u.s, "comfort");
	assert_string_equal(get(s, 1, "mode").u.s, "comfort");
	sim_free(s);
}

static void test_pulses_exactly_once(void **state)
{
	struct sim *s = sim_new(SITE3, true, 5);
	uint32_t door;

	assert_int_equal(name_index__get(&s->site->thing_ix, "door", &door), 0);
	s->loss = 0.3;
	s->dup = 0.5;
	s->reorder = 0.3;
	for (int i = 0; i < 40; i++) {
		/* From a user (B), so the owner acts and passes it on. */
		assert_int_equal(sync__pulse(s->n[1].e, "door", NULL, 0, NULL, NULL, s->now), 0);
		sim_run(s, s->now + 300);
	}
	for (int i = 0; i < 10; i++)
		assert_int_equal(sync__pulse(s->n[0].e, "door", NULL, 0, NULL, NULL, s->now), 0);
	assert_true(sim_settle(s, 120000000));
	assert_int_equal(s->n[0].pulses[door], 50);
	assert_int_equal(s->n[1].pulses[door], 50);
	assert_int_equal(s->n[2].pulses[door], 50);
	sim_free(s);
}

struct done_rec {
	int calls;
	int status;
	char res[64];
};

static void on_done(void *ud, tsync_node *node, int status, const char *result)
{
	struct done_rec *d = ud;
	d->calls++;
	d->status = status;
	snprintf(d->res, sizeof(d->res), "%s", result ? result : "");
}

static void test_commands_exactly_once(void **state)
{
	struct sim *s = sim_new(SITE3, true, 6);
	struct done_rec d[30], bad, norole, args;

	memset(d, 0, sizeof(d));
	memset(&bad, 0, sizeof(bad));
	memset(&norole, 0, sizeof(norole));
	memset(&args, 0, sizeof(args));
	s->loss = 0.3;
	s->dup = 0.5;
	s->reorder = 0.2;
	for (int i = 0; i < 30; i++)
		assert_int_equal(sync__send_request(s->n[2].e, NULL, "cmd", "cmd_do", "version",
		                                    "{\"kwargs\":{\"with_email\":true}}", on_done, &d[i],
		                                    s->now),
		                 0);
	assert_int_equal(
	    sync__send_request(s->n[2].e, "A", "cmd", "cmd_do", "nope", NULL, on_done, &bad, s->now), 0);
	assert_int_equal(
	    sync__send_request(s->n[2].e, "B", "cmd", "security", "report", NULL, on_done, &norole, s->now),
	    0);
	assert_int_equal(
	    sync__send_request(s->n[2].e, "A", "cmd", "cmd_do", "reboot", NULL, on_done, &args, s->now), 0);
	assert_int_equal(
	    sync__send_request(s->n[2].e, "A", "cmd", "cmd_do", "x", "[1]", on_done, &args, s->now), -EINVAL);
	assert_true(sim_settle(s, 120000000));
	assert_int_equal(s->n[0].cmds, 30);
	for (int i = 0; i < 30; i++) {
		assert_int_equal(d[i].calls, 1);
		assert_int_equal(d[i].status, 0);
		assert_string_equal(d[i].res, "\"0.1.0\"");
	}
	assert_int_equal(bad.calls, 1);
	assert_int_equal(bad.status, TSYNC_ECMD);
	assert_int_equal(norole.status, TSYNC_ECMD);
	assert_int_equal(args.status, TSYNC_ECMD_ARGS);
	sim_free(s);
}

static void test_dead_peer_backoff_and_coalescing(void **state)
{
	struct sim *s = sim_new(SITE3, true, 7);
	struct sync_peer *toB;
	uint64_t before, before_probes, probes;
	tsync_value v;

	assert_true(sim_settle(s, 5000000));
	node_stop(s, 1); /* B loses power */
	toB = &s->n[0].e->peers[s->n[0].e->plan->peer_of_ctrl[1]];
	before = toB->st.datagrams_sent;
	before_probes = toB->st.retransmits;
	/* Many changes for B while it is down. */
	for (int i = 0; i < 50; i++) {
		v = tsync_float(i);
		sync__set(s->n[0].e, "temp", &v, s->now);
		v = tsync_bool(i % 2);
		sync__set(s->n[0].e, "light", &v, s->now);
		v = tsync_string(i % 2 ? "eco" : "off");
		sync__set(s->n[0].e, "mode", &v, s->now);
		sim_run(s, s->now + 10000);
	}
	sim_run(s, s->now + 60000000); /* a minute */
	/* Backoff 100ms doubling to the 2 s ceiling: about 30 probes in a
	 * minute, not one per change or per thing; besides them, at most the
	 * empty heartbeat of each 2 s period (the default heartbeat_ms). */
	probes = toB->st.retransmits - before_probes;
	assert_true(probes < 45);
	assert_true(probes > 20);
	assert_true(toB->st.datagrams_sent - before <= probes + 60500 / SITE_DEFAULT_HEARTBEAT_MS + 2);
	assert_int_equal(rtt__timeout(&toB->rtt, toB->backoff), 2000000);
	assert_false(toB->up);

	/* B comes back: asks, and A's pending values reach it at once, the
	 * newest only: one change per thing, never an intermediate value. */
	s->n[1].changed = 0;
	node_start(s, 1);
	assert_true(sim_settle(s, 1000000));
	assert_int_equal(s->n[1].changed, 3); /* light, temp, mode */
	assert_true(get(s, 1, "temp").u.f == 49.0);
	assert_string_equal(get(s, 1, "mode").u.s, "eco");
	assert_true(toB->up);
	sim_free(s);
}

static void test_restart_resync(void **state)
{
	struct sim *s = sim_new(SITE3, true, 8);
	tsync_value v = tsync_int(41);
	int before;

	assert_int_equal(sync__set(s->n[1].e, "count", &v, s->now), 0);
	assert_true(sim_settle(s, 5000000));
	/* The owner restarts without a store: its value is gone, users keep
	 * theirs until it sets a new one, which they take despite the lower
	 * version, since it is of a newer boot. */
	node_stop(s, 1);
	sim_run(s, s->now + 100000);
	node_start(s, 1);
	assert_true(sim_settle(s, 5000000));
	assert_int_equal(get(s, 0, "count").u.i, 41);
	v = tsync_int(1);
	assert_int_equal(sync__set(s->n[1].e, "count", &v, s->now), 0);
	assert_true(sim_settle(s, 5000000));
	assert_int_equal(get(s, 0, "count").u.i, 1);
	assert_int_equal(get(s, 2, "count").u.i, 1);

	/* A user restarts and gets everything back by asking. */
	node_stop(s, 2);
	node_start(s, 2);
	before = s->n[2].changed;
	assert_true(sim_settle(s, 5000000));
	assert_int_equal(get(s, 2, "count").u.i, 1);
	assert_true(s->n[2].changed > before);
	sim_free(s);
}

/* The writer keeps the envelope's parts that stay while neither side
 * restarts (encode.c): after a user restarts, the owner's datagrams to it
 * name its new boot (to_boot), and the restarted user's name its own new
 * boot, in the very first datagram each way, and the values arrive. */
static void test_restart_envelope_boots(void **state)
{
	struct sim *s = sim_new(SITE3, true, 33);
	uint64_t a_old, a_new, b_boot, got_new = 0;
	bool seen_old = false;
	tsync_value v;

	(void)state;
	assert_true(sim_settle(s, 5000000));
	for (int i = 0; i < 5; i++) {
		v = tsync_int(100 + i);
		assert_int_equal(sync__set(s->n[1].e, "count", &v, s->now), 0);
		assert_true(sim_settle(s, 5000000));
	}
	a_old = s->n[0].e->boot;
	b_boot = s->n[1].e->boot;
	node_stop(s, 0);
	node_start(s, 0); /* A, a user of B's count, restarts */
	a_new = s->n[0].e->boot;
	assert_true(a_new != a_old);
	s->capture = true;
	for (int i = 0; i < 5; i++) {
		v = tsync_int(200 + i);
		assert_int_equal(sync__set(s->n[1].e, "count", &v, s->now), 0);
		assert_true(sim_settle(s, 5000000));
	}
	s->capture = false;
	assert_int_equal(get(s, 0, "count").u.i, 204);
	for (struct packet *p = s->captured; p; p = p->next) {
		struct wire_datagram dg;
		tsync_reject rej;

		if (!((p->from == 1 && p->to == 0) || (p->from == 0 && p->to == 1)))
			continue;
		assert_int_equal(wire__decode(&s->n[1].e->codec, p->data, p->len, &dg, &rej), 0);
		if (p->from == 1) {
			/* B to A: A's old boot only before B heard the new one */
			assert_true(dg.env.to_boot == a_new || dg.env.to_boot == a_old || dg.env.to_boot == 0);
			assert_true(dg.env.boot == b_boot);
			/* newest first: once B named an older boot, nothing before
			 * that named the new one */
			if (dg.env.to_boot == a_new) {
				assert_false(seen_old);
				got_new++;
			} else {
				seen_old = true;
			}
		} else {
			assert_true(dg.env.boot == a_new);
			assert_true(dg.env.to_boot == b_boot || dg.env.to_boot == 0);
		}
		wire__datagram_release(&dg);
	}
	assert_true(got_new >= 5);
	sim_free(s);
}

static void test_replay_and_forgery(void **state)
{
	struct sim *s = sim_new(SITE3, true, 9);
	struct packet *p;
	struct sync_engine *b;
	struct sync_peer *fromA;
	uint32_t door;

	assert_int_equal(name_index__get(&s->site->thing_ix, "door", &door), 0);
	assert_true(sim_settle(s, 5000000));
	s->capture = true;
	assert_int_equal(sync__pulse(s->n[0].e, "door", NULL, 0, NULL, NULL, s->now), 0);
	assert_true(sim_settle(s, 5000000));
	s->capture = false;
	assert_int_equal(s->n[1].pulses[door], 1);

	b = s->n[1].e;
	fromA = &b->peers[b->plan->peer_of_ctrl[0]];
	/* Replaying every captured datagram from A to B: refused, no act. */
	for (p = s->captured; p; p = p->next)
		if (p->from == 0 && p->to == 1)
			sync__input(b, b->plan->peer_of_ctrl[0], p->data, p->len, s->now);
	assert_int_equal(s->n[1].pulses[door], 1);
	assert_true(fromA->st.rejected[TSYNC_REJ_REPLAY] > 0);

	/* Altered: one byte flipped. */
	for (p = s->captured; p; p = p->next)
		if (p->from == 0 && p->to == 1) {
			p->data[p->len / 2] ^= 0x20;
			sync__input(b, b->plan->peer_of_ctrl[0], p->data, p->len, s->now);
			p->data[p->len / 2] ^= 0x20;
			break;
		}
	assert_int_equal(b->rejected_unknown[TSYNC_REJ_AUTH], 1);

	/* After B restarts, the same datagrams are addressed to its old boot. */
	node_stop(s, 1);
	node_start(s, 1);
	b = s->n[1].e;
	for (p = s->captured; p; p = p->next)
		if (p->from == 0 && p->to == 1)
			sync__input(b, b->plan->peer_of_ctrl[0], p->data, p->len, s->now);
	assert_int_equal(s->n[1].pulses[door], 1); /* still the one from before */
	assert_true(b->peers[b->plan->peer_of_ctrl[0]].st.rejected[TSYNC_REJ_STALE_BOOT] > 0);

	/* Unknown sender: a datagram whose "from" is not in site.conf. */
	{
		struct wire_writer w;
		struct wire_env env = {.from = "MALLORY", .boot = 5, .seq = 1, .to_boot = b->boot};
		const void *out;
		size_t len;
		wire__writer_init(&w, &b->codec);
		assert_int_equal(wire__begin(&w, &env), 0);
		assert_int_equal(wire__finish(&w, &out, &len), 0);
		sync__input(b, -1, out, len, s->now);
		wire__writer_free(&w);
		assert_int_equal(b->rejected_unknown[TSYNC_REJ_UNKNOWN_SENDER], 1);
	}
	sim_free(s);
}

/* The sender of a datagram is its "from": compared first with the name of
 * the peer whose address it came from, looked up otherwise. A name that
 * only begins like that peer's, or a peer's name from another's address,
 * is still the peer it names (with a key), or refused (without one: a name
 * must come from its address). */
static void test_sender_by_name(void **state)
{
	static const char site[] = "[controller A]\nhost = 127.0.0.1\nudp_port = 6001\n"
	                           "[controller B]\nhost = 127.0.0.1\nudp_port = 6002\n"
	                           "[controller Bb]\nhost = 127.0.0.1\nudp_port = 6003\n"
	                           "[thing x]\nowner = A\ntype = int\nusers = B, Bb\n";
	static const struct {
		const char *from;
		int addr; /* controller of the address, -1: none known */
		int want; /* controller counted, -1: refused */
	} cases[] = {
	    {"B", 1, 1}, {"Bb", 2, 2}, {"Bb", 1, 2}, {"B", 2, 1}, {"B", -1, 1}, {"Bbb", 2, -1}, {"b", 1, -1},
	};

	(void)state;
	for (int key = 0; key < 2; key++) {
		struct sim *s = sim_new(site, key, 11);
		struct sync_engine *a = s->n[0].e;
		uint64_t seq = 1;

		for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
			struct wire_writer w;
			struct wire_env env = {.from = cases[i].from, .boot = 7, .seq = seq++, .to_boot = a->boot};
			int addr = cases[i].addr < 0 ? -1 : a->plan->peer_of_ctrl[cases[i].addr];
			/* without a key, a name from another's address is refused */
			int want = !key && cases[i].addr != cases[i].want ? -1 : cases[i].want;
			uint64_t got[3], unknown = 0;
			const void *out;
			size_t len;

			for (int c = 1; c <= 2; c++)
				got[c] = a->peers[a->plan->peer_of_ctrl[c]].st.datagrams_received;
			for (int r = 0; r < TSYNC_REJ_COUNT; r++)
				unknown += a->rejected_unknown[r];
			wire__writer_init(&w, &a->codec);
			assert_int_equal(wire__begin(&w, &env), 0);
			assert_int_equal(wire__finish(&w, &out, &len), 0);
			sync__input(a, addr, out, len, s->now);
			wire__writer_free(&w);
			for (int c = 1; c <= 2; c++)
				assert_int_equal(a->peers[a->plan->peer_of_ctrl[c]].st.datagrams_received - got[c],
				                 c == want);
			if (want < 0) {
				uint64_t now_unknown = 0;
				for (int r = 0; r < TSYNC_REJ_COUNT; r++)
					now_unknown += a->rejected_unknown[r];
				assert_int_equal(now_unknown - unknown, 1);
			}
		}
		sim_free(s);
	}
}

static void test_rtt_learned(void **state)
{
	struct sim *s = sim_new(SITE3, false, 10);
	tsync_value v;

	for (int i = 0; i < 20; i++) {
		v = tsync_int(i);
		sync__set(s->n[1].e, "count", &v, s->now);
		assert_true(sim_settle(s, 1000000));
	}
	{
		struct sync_peer *p = &s->n[1].e->peers[s->n[1].e->plan->peer_of_ctrl[0]];
		/* Two simulated hops of 200 us. */
		assert_true(p->rtt.srtt_us >= 2 * LATENCY_US - 10);
		assert_true(p->rtt.srtt_us <= 2 * LATENCY_US + 100);
		assert_int_equal(p->rtt.rto_us, 20000); /* clamped at retry_min_ms */
		/* The other way too: A only acknowledges, and its later datagrams
		 * must not echo B's seq, or B's idle time would count as RTT. */
		p = &s->n[0].e->peers[s->n[0].e->plan->peer_of_ctrl[1]];
		assert_true(p->rtt.srtt_us == 0 || p->rtt.srtt_us <= 2 * LATENCY_US + 100);
		v = tsync_bool(true);
		sync__set(s->n[0].e, "light", &v, s->now);
		sim_run(s, s->now + 300000); /* idle */
		v = tsync_bool(false);
		sync__set(s->n[0].e, "light", &v, s->now);
		assert_true(sim_settle(s, 1000000));
		p = &s->n[1].e->peers[s->n[1].e->plan->peer_of_ctrl[0]];
		assert_true(p->rtt.srtt_us <= 2 * LATENCY_US + 100);
	}
	sim_free(s);
}

/* Sends B -> A a set of "count" with the given version, as a fresh datagram
 * (new seq, right boots), so only the version can stop it. */
static void send_count_version(struct sim *s, int64_t val, uint64_t ver)
{
	struct sync_engine *a = s->n[0].e, *b = s->n[1].e;
	struct sync_peer *bToA = &b->peers[b->plan->peer_of_ctrl[0]];
	struct wire_writer w;
	struct wire_env env = {.from = "B", .boot = b->boot, .seq = ++bToA->tx_seq, .to_boot = a->boot};
	struct wire_msg m;
	const void *out;
	size_t len;

	memset(&m, 0, sizeof(m));
	m.type = WIRE_T_IO;
	m.op = WIRE_OP_SET;
	m.io = "count";
	m.has_val = true;
	m.val = tsync_int(val);
	m.has_ver = true;
	m.ver = ver;
	wire__writer_init(&w, &b->codec);
	assert_int_equal(wire__begin(&w, &env), 0);
	assert_int_equal(wire__add(&w, &m), 0);
	assert_int_equal(wire__finish(&w, &out, &len), 0);
	sync__input(a, a->plan->peer_of_ctrl[1], out, len, s->now);
	wire__writer_free(&w);
}

static void test_version_ordering(void **state)
{
	struct sim *s = sim_new(SITE3, true, 11);
	tsync_thing_state st;
	uint64_t v1;
	tsync_value v;

	assert_true(sim_settle(s, 5000000));
	v = tsync_int(1);
	sync__set(s->n[1].e, "count", &v, s->now);
	assert_true(sim_settle(s, 5000000));
	assert_int_equal(sync__get(s->n[0].e, "count", &st), 0);
	v1 = st.version;
	v = tsync_int(2);
	sync__set(s->n[1].e, "count", &v, s->now);
	assert_true(sim_settle(s, 5000000));
	assert_int_equal(get(s, 0, "count").u.i, 2);
	/* The older version arrives late: ignored. */
	send_count_version(s, 1, v1);
	assert_int_equal(get(s, 0, "count").u.i, 2);
	/* A newer one is taken. */
	send_count_version(s, 3, v1 + 100);
	assert_int_equal(get(s, 0, "count").u.i, 3);
	sim_free(s);
}

static void test_legacy_seed_list(void **state)
{
	struct sim *s = sim_new(SITE3, false, 12);
	struct sync_engine *b = s->n[1].e;
	const char *msg = "[{\"type\":\"io\",\"io\":\"light\",\"cmd\":\"set\",\"val\":1},"
	                  "{\"type\":\"io\",\"io\":\"nothing\",\"cmd\":\"set\",\"val\":1},"
	                  "{\"type\":\"io\",\"io\":\"count\",\"cmd\":\"set\",\"val\":\"x\"}]";

	assert_true(sim_settle(s, 5000000));
	/* The seed's plain list, from A's address: accepted without a key. */
	sync__input(b, b->plan->peer_of_ctrl[0], msg, strlen(msg), s->now);
	assert_true(get(s, 1, "light").u.b);
	assert_int_equal(b->peers[b->plan->peer_of_ctrl[0]].st.rejected[TSYNC_REJ_IO], 1);
	/* count is B's own; A setting it with a string: refused as a value. */
	assert_int_equal(b->peers[b->plan->peer_of_ctrl[0]].st.rejected[TSYNC_REJ_VAL], 1);
	/* From an address that is no controller: refused. */
	sync__input(b, -1, msg, strlen(msg), s->now);
	assert_int_equal(b->rejected_unknown[TSYNC_REJ_REFUSED], 1);
	sim_free(s);
}

/* The sender keeps at most max_outstanding request ids on the wire (the
 * receiver's duplicate window depends on it) and refuses beyond max_queued. */
static void test_request_limits(void **state)
{
	char body[2048];
	struct sim *s;
	struct done_rec d[10];
	uint64_t max_id = 0;

	snprintf(body, sizeof(body), "max_outstanding = 4\nmax_queued = 10\n%s", SITE3);
	s = sim_new(body, true, 14);
	memset(d, 0, sizeof(d));
	assert_true(sim_settle(s, 5000000));
	node_stop(s, 0); /* A, which runs the commands, is down */
	s->capture = true;
	for (int i = 0; i < 10; i++)
		assert_int_equal(sync__send_request(s->n[2].e, "A", "cmd", "cmd_do", "version", NULL, on_done,
		                                    &d[i], s->now),
		                 0);
	assert_int_equal(
	    sync__send_request(s->n[2].e, "A", "cmd", "cmd_do", "version", NULL, NULL, NULL, s->now),
	    -ENOBUFS);
	sim_run(s, s->now + 5000000);
	for (struct packet *p = s->captured; p; p = p->next) {
		const char *q = (const char *)p->data;
		if (p->from != 2 || p->to != 0)
			continue;
		while ((q = memmem(q, p->len - (size_t)(q - (const char *)p->data), "\"id\":", 5))) {
			uint64_t id = strtoull(q + 5, NULL, 10);
			max_id = id > max_id ? id : max_id;
			q += 5;
		}
	}
	s->capture = false;
	assert_true(max_id >= 1);
	assert_true(max_id <= 4);
	node_start(s, 0);
	assert_true(sim_settle(s, 20000000));
	/* The four sent to A's old boot may have acted there: they complete as
	 * outcome unknown (at most once across restarts); the six never sent
	 * run at the new boot. Every caller hears exactly once. */
	assert_int_equal(s->n[0].cmds, 6);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(d[i].calls, 1);
		assert_int_equal(d[i].status, i < 4 ? TSYNC_EPEER_RESTARTED : 0);
	}
	sim_free(s);
}

/* A receiver with durable windows that restarts with requests in flight:
 * the sender sends them again to its new boot under the same ids; what it
 * executed and committed before the crash is answered from the restored
 * window, with the answer it gave, and not executed again; what it never got
 * runs once. Every caller hears once, none "outcome unknown". */
static void test_durable_window_restart(void **state)
{
	char body[2048];
	struct sim *s;
	struct done_rec d[8], p[3];
	int cmds_before, pulses_b, pulses_c;

	snprintf(body, sizeof(body), "max_outstanding = 4\n%s", SITE3);
	s = sim_new(body, true, 21);
	mstores[0].on = true; /* A runs the commands and owns the door */
	node_stop(s, 0);
	node_start(s, 0);
	assert_true(sim_settle(s, 5000000));
	memset(d, 0, sizeof(d));
	memset(p, 0, sizeof(p));

	/* A gets C's first four commands and B's pulses, acts and commits,
	 * but its answers are lost; then it crashes. */
	s->block = true;
	s->block_from = 0;
	s->block_to = 2;
	for (int i = 0; i < 8; i++)
		assert_int_equal(sync__send_request(s->n[2].e, "A", "cmd", "cmd_do", "version", NULL, on_done,
		                                    &d[i], s->now),
		                 0);
	sim_run(s, s->now + 50000);
	cmds_before = s->n[0].cmds;
	/* The in-flight cap: four ran, none answered. */
	assert_int_equal(cmds_before, 4);
	assert_int_equal(d[0].calls, 0);
	assert_true(mstores[0].commits > 0);
	node_stop(s, 0);
	s->block = false;
	node_start(s, 0);
	assert_true(sim_settle(s, 20000000));

	/* The four it did are answered from the window, not run again; the
	 * four it never got ran once at its new boot. */
	assert_int_equal(s->n[0].cmds, 4 + 4);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(d[i].calls, 1);
		assert_int_equal(d[i].status, 0);
		assert_string_equal(d[i].res, "\"0.1.0\"");
	}

	/* Pulses relayed by A to its users: B's pulse acts once at A and once
	 * at each user, however A's restart cuts the exchange. */
	pulses_b = s->n[1].pulses[3];
	pulses_c = s->n[2].pulses[3];
	s->block = true;
	s->block_from = 0;
	s->block_to = 1;
	assert_int_equal(sync__pulse(s->n[1].e, "door", NULL, 0, on_done, &p[0], s->now), 0);
	sim_run(s, s->now + 50000);
	node_stop(s, 0);
	s->block = false;
	node_start(s, 0);
	assert_true(sim_settle(s, 20000000));
	assert_int_equal(p[0].calls, 1);
	assert_int_equal(p[0].status, 0);
	assert_int_equal(s->n[1].pulses[3], pulses_b + 1);
	assert_int_equal(s->n[2].pulses[3], pulses_c + 1);

	/* Without durable windows (A restarts with its memory wiped, and says
	 * so), a request in flight stays at most once: outcome unknown. */
	mstores[0].on = false;
	s->block = true;
	s->block_from = 0;
	s->block_to = 2;
	assert_int_equal(
	    sync__send_request(s->n[2].e, "A", "cmd", "cmd_do", "version", NULL, on_done, &p[1], s->now), 0);
	sim_run(s, s->now + 50000);
	cmds_before = s->n[0].cmds;
	node_stop(s, 0);
	s->block = false;
	node_start(s, 0);
	assert_true(sim_settle(s, 20000000));
	assert_int_equal(p[1].calls, 1);
	assert_int_equal(p[1].status, TSYNC_EPEER_RESTARTED);
	assert_int_equal(s->n[0].cmds, cmds_before);
	sim_free(s);
}

/* A receiver with durable windows that crashes right after an act, before
 * the commit that precedes its answers: the request was marked done, and
 * the pulse's relays kept, by a commit before the act, so the sender's
 * repeat to its new boot is answered without a second act, and the users
 * still hear of the pulse once. A command's result is lost with the crash:
 * it is answered done, with no result. */
static void test_crash_between_act_and_commit(void **state)
{
	struct sim *s = sim_new(SITE3, true, 23);
	struct done_rec d, p;
	int pulses_a, pulses_b, pulses_c;

	mstores[0].on = true;
	node_stop(s, 0);
	node_start(s, 0);
	assert_true(sim_settle(s, 5000000));
	memset(&d, 0, sizeof(d));
	memset(&p, 0, sizeof(p));

	s->n[0].crash_after_act = true;
	assert_int_equal(
	    sync__send_request(s->n[2].e, "A", "cmd", "cmd_do", "version", NULL, on_done, &d, s->now), 0);
	sim_run(s, s->now + 50000);
	assert_false(s->n[0].alive);
	assert_int_equal(s->n[0].cmds, 1);
	node_start(s, 0);
	assert_true(sim_settle(s, 20000000));
	assert_int_equal(s->n[0].cmds, 1);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.status, 0);
	assert_string_equal(d.res, "");

	pulses_a = s->n[0].pulses[3];
	pulses_b = s->n[1].pulses[3];
	pulses_c = s->n[2].pulses[3];
	s->n[0].crash_after_act = true;
	assert_int_equal(sync__pulse(s->n[1].e, "door", NULL, 0, on_done, &p, s->now), 0);
	sim_run(s, s->now + 50000);
	assert_false(s->n[0].alive);
	node_start(s, 0);
	assert_true(sim_settle(s, 20000000));
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.status, 0);
	assert_int_equal(s->n[0].pulses[3], pulses_a + 1);
	assert_int_equal(s->n[1].pulses[3], pulses_b + 1);
	assert_int_equal(s->n[2].pulses[3], pulses_c + 1);
	sim_free(s);
}

/* A sender that restarted resumes a request under its first (origin boot,
 * id): the receiver answers it from that boot's window even though the
 * sender's new boot numbers its own requests from 1 again. */
static void test_origin_boot_window(void **state)
{
	struct sim *s = sim_new(SITE3, true, 22);
	struct done_rec d[2];
	struct store_request q;
	uint64_t c_boot;

	assert_true(sim_settle(s, 5000000));
	memset(d, 0, sizeof(d));
	/* C's command runs at A; the answer is lost; C crashes. */
	s->block = true;
	s->block_from = 0;
	s->block_to = 2;
	assert_int_equal(
	    sync__send_request(s->n[2].e, "A", "cmd", "cmd_do", "version", NULL, NULL, NULL, s->now), 0);
	sim_run(s, s->now + 50000);
	assert_int_equal(s->n[0].cmds, 1);
	c_boot = s->n[2].e->boot;
	node_stop(s, 2);
	s->block = false;
	node_start(s, 2);
	/* It resumes what its store kept (here given by hand). */
	memset(&q, 0, sizeof(q));
	q.peer = "A";
	q.origin_boot = c_boot;
	q.id = 1;
	q.type = WIRE_T_CMD;
	q.role = "cmd_do";
	q.cmd = "version";
	assert_int_equal(sync__resume_request(s->n[2].e, &q, NULL, NULL), 0);
	/* Its new request after the resumed one takes the next id, not 1. */
	assert_int_equal(
	    sync__send_request(s->n[2].e, "A", "cmd", "cmd_do", "version", NULL, on_done, &d[1], s->now), 0);
	assert_int_equal(s->n[2].e->peers[s->n[2].e->plan->peer_of_ctrl[0]].reqs->next->id, 2);
	q.origin_boot = s->n[2].e->boot; /* an origin boot that is not earlier */
	assert_int_equal(sync__resume_request(s->n[2].e, &q, NULL, NULL), -EINVAL);
	assert_true(sim_settle(s, 20000000));
	/* The resumed one was answered from the window: one run, not two; the
	 * new one ran. */
	assert_int_equal(s->n[0].cmds, 2);
	assert_int_equal(d[1].calls, 1);
	assert_int_equal(d[1].status, 0);
	sim_free(s);
}

struct journal {
	bool full;
	int commits, refused;
};

static int journal_commit(void *ud, tsync_node *node)
{
	struct journal *j = ud;
	if (j->full) {
		j->refused++;
		return -ENOSPC;
	}
	j->commits++;
	return 0;
}

/*
 * The same crash on a receiver with a commit hook (its acts are done when
 * the hook has committed them: pushd's journal): the repeat is answered
 * "outcome unknown", not done, and still not acted on a second time; the
 * sender may send it again as a new request. A request answered before
 * the crash is still answered done from the window.
 */
static void test_crash_between_act_and_hook(void **state)
{
	struct sim *s = sim_new(SITE3, true, 29);
	struct journal j = {0};
	struct done_rec d, ok;

	mstores[0].on = true;
	node_stop(s, 0);
	node_start(s, 0);
	sync__set_commit_hook(s->n[0].e, journal_commit, &j);
	assert_true(sim_settle(s, 5000000));
	memset(&d, 0, sizeof(d));
	memset(&ok, 0, sizeof(ok));
	assert_int_equal(
	    sync__send_request(s->n[2].e, "A", "cmd", "cmd_do", "version", NULL, on_done, &ok, s->now), 0);
	assert_true(sim_settle(s, 5000000));
	assert_int_equal(ok.status, 0);
	assert_int_equal(j.commits, 1);

	s->n[0].crash_after_act = true;
	assert_int_equal(
	    sync__send_request(s->n[2].e, "A", "cmd", "cmd_do", "version", NULL, on_done, &d, s->now), 0);
	sim_run(s, s->now + 50000);
	assert_false(s->n[0].alive);
	assert_int_equal(s->n[0].cmds, 2);
	assert_int_equal(j.commits, 1); /* the hook never ran for it */
	node_start(s, 0);
	sync__set_commit_hook(s->n[0].e, journal_commit, &j);
	assert_true(sim_settle(s, 20000000));
	assert_int_equal(s->n[0].cmds, 2);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.status, TSYNC_EPEER_RESTARTED);
	sim_free(s);
}

/* An owner whose output fails: its hooks say so, and count their calls. */
struct act {
	int fail; /* the code the hooks return (0: they succeed) */
	int pulses, writes, cmds;
};

static int act_pulse(void *ud, tsync_node *node, const char *thing, const tsync_value *v, uint32_t ms,
                     const char *by)
{
	struct act *a = ud;
	a->pulses++;
	return a->fail;
}

static int act_write(void *ud, tsync_node *node, const char *thing, const tsync_value *to_be,
                     tsync_value *as_is)
{
	struct act *a = ud;
	a->writes++;
	*as_is = *to_be;
	return a->fail;
}

static int act_cmd(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct act *a = ud;
	a->cmds++;
	return a->fail;
}

/* A pulse the owner could not act on reaches the requester as TSYNC_EWRITE,
 * never as success; the users hear of no pulse; a retransmission of the
 * request (the answer was lost) gets the same answer without a second act. */
static void test_failed_pulse_reported(void **state)
{
	struct sim *s = sim_new(SITE3, true, 14);
	struct sync_engine *a;
	struct act act = {.fail = -EMFILE};
	struct done_rec d, ok, local;
	uint64_t heard;
	uint32_t door;

	memset(&d, 0, sizeof(d));
	memset(&ok, 0, sizeof(ok));
	memset(&local, 0, sizeof(local));
	assert_int_equal(name_index__get(&s->site->thing_ix, "door", &door), 0);
	assert_true(sim_settle(s, 5000000));
	a = s->n[0].e;
	sync__set_pulse_hook(a, act_pulse, &act);

	/* A's answers to B are lost: B retransmits, A acts only once. */
	s->block = true;
	s->block_from = 0;
	s->block_to = 1;
	heard = a->peers[a->plan->peer_of_ctrl[1]].st.datagrams_received;
	assert_int_equal(sync__pulse(s->n[1].e, "door", NULL, 0, on_done, &d, s->now), 0);
	sim_run(s, s->now + 2000000);
	assert_int_equal(act.pulses, 1);
	assert_true(a->peers[a->plan->peer_of_ctrl[1]].st.datagrams_received >= heard + 3);
	assert_int_equal(d.calls, 0);
	s->block = false;
	assert_true(sim_settle(s, 10000000));
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.status, TSYNC_EWRITE);
	assert_int_equal(act.pulses, 1);
	/* Nothing moved: no pulse event on the owner, none passed to the users. */
	assert_int_equal(s->n[0].pulses[door], 0);
	assert_int_equal(s->n[1].pulses[door], 0);
	assert_int_equal(s->n[2].pulses[door], 0);

	/* On the owner itself: the call says so, and done is not called. */
	assert_int_equal(sync__pulse(a, "door", NULL, 0, on_done, &local, s->now), TSYNC_EWRITE);
	assert_int_equal(local.calls, 0);
	assert_int_equal(act.pulses, 2);

	/* The output works again: the next pulse is acted on and passed on. */
	act.fail = 0;
	assert_int_equal(sync__pulse(s->n[1].e, "door", NULL, 0, on_done, &ok, s->now), 0);
	assert_true(sim_settle(s, 10000000));
	assert_int_equal(ok.calls, 1);
	assert_int_equal(ok.status, 0);
	assert_int_equal(act.pulses, 3);
	assert_int_equal(s->n[0].pulses[door], 1);
	assert_int_equal(s->n[1].pulses[door], 1);
	assert_int_equal(s->n[2].pulses[door], 1);
	sim_free(s);
}

/* A set request whose output fails is answered err_write_crash, a refusal
 * err_ip_in_refused: the requester can tell them apart. A command handler
 * that fails to act is TSYNC_EWRITE to the requester, and a retransmission
 * does not run it again. */
static void test_failed_set_and_cmd_reported(void **state)
{
	struct sim *s = sim_new(SITE3, true, 15);
	struct sync_engine *a;
	struct act act = {.fail = TSYNC_EWRITE};
	struct done_rec d;
	tsync_thing_state st;
	tsync_value v = tsync_bool(true);

	memset(&d, 0, sizeof(d));
	assert_true(sim_settle(s, 5000000));
	a = s->n[0].e;
	sync__set_write_hook(a, act_write, &act);
	assert_int_equal(sync__on_request(a, "cmd", "cmd_do", "relay", act_cmd, &act), 0);

	/* The owner's answers to B are lost for a while: B repeats the
	 * request, the owner tries once and answers each repeat the same. */
	s->block = true;
	s->block_from = 0;
	s->block_to = 1;
	assert_int_equal(sync__set(s->n[1].e, "light", &v, s->now), 0);
	sim_run(s, s->now + 2000000);
	assert_int_equal(act.writes, 1);
	s->block = false;
	assert_true(sim_settle(s, 10000000));
	assert_int_equal(act.writes, 1);
	assert_int_equal(sync__get(s->n[1].e, "light", &st), 0);
	assert_false(st.requesting);
	assert_int_equal(st.request_error, TSYNC_EWRITE);
	assert_int_not_equal(st.value.type == TSYNC_TYPE_BOOL && st.value.u.b, true);
	assert_int_equal(sync__get(a, "light", &st), 0);
	assert_false(st.value.type == TSYNC_TYPE_BOOL && st.value.u.b);
	/* On the owner itself, the same code. */
	assert_int_equal(sync__set(a, "light", &v, s->now), TSYNC_EWRITE);

	/* A refusal stays a refusal. */
	act.fail = TSYNC_EREFUSED;
	assert_int_equal(sync__set(s->n[1].e, "light", &v, s->now), 0);
	assert_true(sim_settle(s, 10000000));
	assert_int_equal(sync__get(s->n[1].e, "light", &st), 0);
	assert_int_equal(st.request_error, TSYNC_EREFUSED);
	/* And a taken one clears it. */
	act.fail = 0;
	assert_int_equal(sync__set(s->n[1].e, "light", &v, s->now), 0);
	assert_true(sim_settle(s, 10000000));
	assert_int_equal(sync__get(s->n[1].e, "light", &st), 0);
	assert_int_equal(st.request_error, 0);
	assert_true(st.value.type == TSYNC_TYPE_BOOL && st.value.u.b);

	/* The command's answer is lost twice over: one run, one failure. */
	act.fail = TSYNC_EWRITE;
	s->block = true;
	s->block_from = 0;
	s->block_to = 2;
	assert_int_equal(
	    sync__send_request(s->n[2].e, "A", "cmd", "cmd_do", "relay", NULL, on_done, &d, s->now), 0);
	sim_run(s, s->now + 2000000);
	assert_int_equal(act.cmds, 1);
	assert_int_equal(d.calls, 0);
	s->block = false;
	assert_true(sim_settle(s, 10000000));
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.status, TSYNC_EWRITE);
	assert_int_equal(act.cmds, 1);
	sim_free(s);
}

/* An application that stores what it receives (pushd's journal) acknowledges
 * only after its commit; while it refuses (full), nothing is acknowledged,
 * its copies are undone, and the owner keeps retrying the newest value. */
static void test_commit_hook_backpressure(void **state)
{
	struct sim *s = sim_new(SITE3, true, 13);
	struct journal j = {.full = true};
	tsync_thing_state st;
	uint32_t door;
	tsync_value v;

	assert_int_equal(name_index__get(&s->site->thing_ix, "door", &door), 0);
	assert_true(sim_settle(s, 5000000));
	sync__set_commit_hook(s->n[2].e, journal_commit, &j); /* C: a user of temp and door */
	for (int i = 1; i <= 5; i++) {
		v = tsync_float(i);
		assert_int_equal(sync__set(s->n[0].e, "temp", &v, s->now), 0);
		sim_run(s, s->now + 1000);
	}
	assert_int_equal(sync__pulse(s->n[0].e, "door", NULL, 0, NULL, NULL, s->now), 0);
	sim_run(s, s->now + 3000000);
	/* Refused every time: C's copy is undone, A still waits for C. */
	assert_true(j.refused >= 3);
	assert_int_equal(sync__get(s->n[2].e, "temp", &st), 0);
	assert_int_equal(st.value.type, TSYNC_TYPE_NONE);
	assert_int_equal(sync__get(s->n[0].e, "temp", &st), 0);
	assert_int_equal(st.users_pending, 1); /* B acknowledged, C did not */
	assert_true(s->n[1].pulses[door] == 1);
	/* The journal has room again: the newest value arrives, once acked. */
	j.full = false;
	s->n[2].pulses[door] = 0;
	assert_true(sim_settle(s, 10000000));
	assert_true(get(s, 2, "temp").u.f == 5.0);
	assert_true(j.commits >= 1);
	assert_int_equal(s->n[2].pulses[door], 1); /* acted once durably after the refusals */
	assert_int_equal(sync__get(s->n[0].e, "temp", &st), 0);
	assert_int_equal(st.users_pending, 0);
	sim_free(s);
}

/* --- liveness: heartbeats and the way back from a partition ----------------- */

#define HB_MS 500
#define HB_US (HB_MS * 1000ull)
/* A backoff ceiling far above the heartbeat, as on a site tuned to spare a
 * dead peer's link: liveness and the heal must not depend on it. */
static const char HB_TIMERS[] = "retry_min_ms = 20\nretry_initial_ms = 100\nretry_max_ms = 10000\n"
                                "heartbeat_ms = 500\n";

static uint32_t peer_ix(struct sim *s, uint32_t at, uint32_t of)
{
	return (uint32_t)s->n[at].e->plan->peer_of_ctrl[of];
}

static struct sync_peer *peer_of(struct sim *s, uint32_t at, uint32_t of)
{
	return &s->n[at].e->peers[peer_ix(s, at, of)];
}

/* A controller that dies with nothing pending to it (kill -9: no goodbye,
 * no traffic) is shown down by every peer within about two heartbeats,
 * never before one; controllers that live are never shown down. */
static void test_heartbeat_shows_dead_peer_down(void **state)
{
	struct sim *s = sim_new_timers(HB_TIMERS, SITE3, true, 21);
	tsync_peer_stats st;
	uint64_t t_kill;

	assert_true(sim_settle(s, 5000000));
	sim_run(s, s->now + 100 * HB_US); /* idle: only heartbeats */
	for (uint32_t i = 0; i < s->count; i++)
		for (uint32_t c = 0; c < s->count; c++) {
			assert_int_equal(s->n[i].downs[c], 0);
			if (c != i)
				assert_true(peer_of(s, i, c)->up);
		}
	assert_true(sim_settled(s));
	node_stop(s, 1);
	t_kill = s->now;
	sim_run(s, t_kill + 10 * HB_US);
	for (uint32_t i = 0; i < s->count; i += 2) {
		assert_int_equal(s->n[i].downs[1], 1);
		assert_true(s->n[i].down_at[1] >= t_kill + HB_US);
		assert_true(s->n[i].down_at[1] <= t_kill + 3 * HB_US);
		/* What GET /peers and thingsctl peers show. */
		assert_int_equal(sync__peer_stats(s->n[i].e, peer_ix(s, i, 1), s->now, &st), 0);
		assert_false(st.up);
		assert_true(st.last_heard_ms >= 9 * HB_MS);
	}
	assert_int_equal(s->n[0].downs[2], 0);
	assert_int_equal(s->n[2].downs[0], 0);
	assert_true(peer_of(s, 0, 2)->up);

	/* It comes back: up again as soon as it is heard. */
	node_start(s, 1);
	assert_true(sim_settle(s, 1000000));
	assert_true(peer_of(s, 0, 1)->up);
	assert_true(peer_of(s, 2, 1)->up);
	assert_int_equal(s->n[0].ups[1], 2);
	sim_free(s);
}

/* While idle, a heartbeat costs each peer one small datagram per period,
 * and a node wakes once per period for all its peers; while real traffic
 * flows it costs nothing. */
static void test_heartbeat_cost(void **state)
{
	struct sim *s = sim_new_timers(HB_TIMERS, SITE3, true, 22);
	uint64_t sent[MAXN][MAXN], bytes[MAXN][MAXN], wakes[MAXN], changes = 0;
	struct sync_peer *aB, *bA;
	uint64_t a_to_b, b_to_a;
	tsync_value v;

	assert_true(sim_settle(s, 5000000));
	sim_run(s, s->now + 10 * HB_US);
	for (uint32_t i = 0; i < s->count; i++) {
		wakes[i] = s->n[i].timer_calls;
		for (uint32_t k = 0; k < s->n[i].e->n_peers; k++) {
			sent[i][k] = s->n[i].e->peers[k].st.datagrams_sent;
			bytes[i][k] = s->n[i].e->peers[k].st.bytes_sent;
		}
	}
	sim_run(s, s->now + 100 * HB_US);
	for (uint32_t i = 0; i < s->count; i++) {
		for (uint32_t k = 0; k < s->n[i].e->n_peers; k++) {
			uint64_t n = s->n[i].e->peers[k].st.datagrams_sent - sent[i][k];
			uint64_t b = s->n[i].e->peers[k].st.bytes_sent - bytes[i][k];
			assert_true(n >= 99 && n <= 101);
			/* An envelope and its tag: no messages. */
			assert_true(b / n <= 160);
		}
		assert_true(s->n[i].timer_calls - wakes[i] <= 101);
	}

	/* Changes every quarter period from A to B: what goes each way is the
	 * changes and their acknowledgements, never a heartbeat on top. */
	aB = peer_of(s, 0, 1);
	bA = peer_of(s, 1, 0);
	a_to_b = aB->st.datagrams_sent;
	b_to_a = bA->st.datagrams_sent;
	for (int i = 0; i < 80; i++) {
		v = tsync_float(i);
		assert_int_equal(sync__set(s->n[0].e, "temp", &v, s->now), 0);
		changes++;
		sim_run(s, s->now + HB_US / 4);
	}
	assert_true(aB->st.datagrams_sent - a_to_b <= changes + 1);
	assert_true(bA->st.datagrams_sent - b_to_a <= changes + 1);
	assert_int_equal(aB->st.retransmits + bA->st.retransmits, 0);
	sim_free(s);
}

/* heartbeat_ms = 0: a settled site sends nothing and arms no timer. */
static void test_heartbeat_off_is_silent(void **state)
{
	struct sim *s = sim_new_timers("retry_min_ms = 20\nretry_initial_ms = 100\nretry_max_ms = 2000\n"
	                               "heartbeat_ms = 0\n",
	                               SITE3, true, 23);
	uint64_t out[MAXN];

	assert_true(sim_settle(s, 5000000));
	sim_run(s, s->now + 100000);
	for (uint32_t i = 0; i < s->count; i++)
		out[i] = s->n[i].datagrams_out;
	sim_run(s, s->now + 60000000);
	for (uint32_t i = 0; i < s->count; i++) {
		assert_int_equal(s->n[i].datagrams_out, out[i]);
		for (uint32_t k = 0; k < s->n[i].e->n_peers; k++)
			assert_int_equal(s->n[i].timer_at[k], 0);
	}
	sim_free(s);
}

/* B is cut off for 30 s while both sides change things: both back off to
 * seconds. After the heal, the heartbeat bounds the wait for the first
 * datagram across, and that datagram brings what waited on either side
 * within one round trip: convergence takes a period and round trips, not
 * the backoff ceiling (10 s). */
static void test_partition_heals_within_a_period(void **state)
{
	struct sim *s = sim_new_timers(HB_TIMERS, SITE3, true, 24);
	struct sync_peer *aB, *bA;
	uint64_t t_heal, t_heard;
	tsync_value v;

	assert_true(sim_settle(s, 5000000));
	aB = peer_of(s, 0, 1);
	bA = peer_of(s, 1, 0);
	s->n[1].cut = true;
	for (int i = 0; i < 300; i++) {
		v = tsync_float(i % 100);
		assert_int_equal(sync__set(s->n[0].e, "temp", &v, s->now), 0);
		v = tsync_int(i);
		assert_int_equal(sync__set(s->n[1].e, "count", &v, s->now), 0);
		sim_run(s, s->now + 100000);
	}
	assert_true(rtt__timeout(&aB->rtt, aB->backoff) >= 5000000);
	assert_true(rtt__timeout(&bA->rtt, bA->backoff) >= 5000000);
	assert_false(aB->up);
	assert_false(bA->up);

	t_heal = s->now;
	s->n[1].cut = false;
	while (aB->last_heard_us < t_heal && s->now < t_heal + 3 * HB_US)
		sim_run(s, s->now + 50);
	t_heard = aB->last_heard_us;
	assert_true(t_heard >= t_heal);
	assert_true(t_heard <= t_heal + HB_US + 2 * LATENCY_US);
	sim_run(s, t_heard + 2 * LATENCY_US + 50);
	assert_true(get(s, 1, "temp").u.f == 99.0);
	assert_int_equal(get(s, 0, "count").u.i, 299);
	/* C, which B cut off too, within the same bound. */
	assert_true(sim_settle(s, t_heal + HB_US + 10 * LATENCY_US - s->now));
	assert_int_equal(get(s, 2, "count").u.i, 299);
	assert_true(aB->up);
	assert_true(bA->up);
	sim_free(s);
}

/* A peer heard all along that does not acknowledge (its journal is full)
 * sends heartbeats; they must not reset the backoff, or the owner would
 * resend to it every period. */
/*
 * A user that only receives (a panel) learns its round trip to the owner
 * whichever of the two starts first. Started before the owner, its asks go
 * nowhere and the owner's first values answer them, so it never sends a
 * request the owner answers at once; the round trip then comes from the
 * boot exchange: the hello it sends for the owner's first datagram, which
 * the owner answers at once with what it sends to the new boot. The sample
 * is a true round trip (two hops), never idle time.
 */
static const char *SITE_PANEL = "[controller A]\nhost = 127.0.0.1\nudp_port = 6001\n"
                                "[controller B]\nhost = 127.0.0.1\nudp_port = 6002\n"
                                "[controller C]\nhost = 127.0.0.1\nudp_port = 6003\n"
                                "[thing light]\nowner = A\ntype = bool\nusers = B, C\ninitial = off\n"
                                "[thing mode]\nowner = A\ntype = string\nusers = B\ninitial = eco\n";

static void test_rtt_learned_by_user_started_first(void **state)
{
	for (int run = 0; run < 8; run++) {
		int owner_first = run % 2;
		uint64_t delay_us = 700000ull * (uint64_t)(run / 2 + 1);
		struct sim *s = sim_new_timers(HB_TIMERS, SITE_PANEL, true, 23 + (uint64_t)run);
		tsync_peer_stats st;

		/* B and C use A's things and own none; A starts after them (or before). */
		node_stop(s, 0);
		if (owner_first) {
			node_stop(s, 1);
			node_stop(s, 2);
			node_start(s, 0);
			sim_run(s, s->now + delay_us);
			node_start(s, 1);
			node_start(s, 2);
		} else {
			sim_run(s, s->now + delay_us);
			node_start(s, 0);
		}
		assert_true(sim_settle(s, 5000000));
		sim_run(s, s->now + 10 * HB_US); /* idle: only heartbeats */
		for (uint32_t u = 1; u <= 2; u++) {
			assert_int_equal(sync__peer_stats(s->n[u].e, peer_ix(s, u, 0), s->now, &st), 0);
			assert_true(st.up);
			if (st.srtt_us == 0 || st.srtt_us > 2 * LATENCY_US + 100)
				fail_msg("%s first, %llu ms apart: %c's round trip to A is %u us",
				         owner_first ? "A" : "the users", (unsigned long long)delay_us / 1000, 'A' + u,
				         st.srtt_us);
		}
		sim_free(s);
	}
}

static void test_heartbeat_keeps_backoff_of_refusing_peer(void **state)
{
	struct sim *s = sim_new_timers(HB_TIMERS, SITE3, true, 25);
	struct journal j = {.full = true};
	struct sync_peer *aC;
	tsync_value v = tsync_float(1.0);
	uint64_t probes;

	assert_true(sim_settle(s, 5000000));
	sync__set_commit_hook(s->n[2].e, journal_commit, &j);
	aC = peer_of(s, 0, 2);
	probes = aC->st.retransmits;
	assert_int_equal(sync__set(s->n[0].e, "temp", &v, s->now), 0);
	sim_run(s, s->now + 40 * HB_US);
	assert_true(aC->up);
	assert_int_equal(s->n[0].downs[2], 0);
	/* 20 ms doubling to 10 s: about a dozen probes in 20 s; a reset at
	 * every heartbeat would make several per period. */
	probes = aC->st.retransmits - probes;
	assert_true(probes >= 8);
	assert_true(probes <= 16);
	j.full = false;
	assert_true(sim_settle(s, 15000000));
	assert_true(get(s, 2, "temp").u.f == 1.0);
	sim_free(s);
}

/* --- acknowledgements by datagram (ack.c) ------------------------------------- */

/* A site of one owner A and users B and C of `n` int things t0..t(n-1). */
/* The counters against their walks (check_counters, at every step) under
 * random operations: sets by owners and users, asks, pulses and commands,
 * some refused (too many queued), with loss, duplicates and reordering,
 * and nodes crashing and restarting, with and without a store (a request
 * to a restarted peer completes, or is sent again, and is resumed from
 * the store). Settled at the end: both 0. */
static void random_operations(const char *site_head, const char *a_name, uint64_t seed, bool requests)
{
	static const char *const things[] = {"light", "temp", "mode", "door", "count", "siren"};
	char body[2048];
	struct sim *s;
	int queued = 0, refused = 0, crashes = 0;

	snprintf(body, sizeof(body), "max_outstanding = 4\nmax_queued = 6\n%s", site_head);
	s = sim_new(body, true, seed);
	mstores[2].on = true; /* C keeps its requests and windows, A and B do not */
	node_stop(s, 2);
	node_start(s, 2);
	s->loss = 0.25;
	s->dup = 0.2;
	s->reorder = 0.3;
	for (int step = 0; step < 3000; step++) {
		uint32_t c = (uint32_t)(prng__next(&s->prng) % s->count);
		unsigned op = (unsigned)(prng__next(&s->prng) % 100);
		const char *thing = things[prng__next(&s->prng) % 6];
		tsync_value v;
		tsync_thing_state st;

		if (!s->n[c].alive) {
			node_start(s, c);
			continue;
		}
		/* Read too (the users' pending count); a thing it neither owns
		 * nor uses is refused. */
		(void)sync__get(s->n[c].e, thing, &st);
		if (op < 40) {
			/* Set: the owner changes it, a user asks the owner (or is refused). */
			if (!strcmp(thing, "mode"))
				v = tsync_string(step % 2 ? "eco" : "off");
			else if (!strcmp(thing, "temp"))
				v = tsync_float((double)(step % 100));
			else if (!strcmp(thing, "count"))
				v = tsync_int(step);
			else
				v = tsync_bool(step % 2);
			(void)sync__set(s->n[c].e, thing, &v, s->now);
		} else if (op < 50) {
			(void)sync__ask(s->n[c].e, thing, s->now);
		} else if (op < 70) {
			(void)sync__pulse(s->n[c].e, "door", NULL, 0, NULL, NULL, s->now);
		} else if (op < 90) {
			int r = c == 0 ? 0 : sync__send_request(s->n[c].e, a_name, "cmd", "cmd_do", "version", NULL,
			                                        NULL, NULL, s->now);
			queued += r == 0 && c != 0;
			refused += r == -ENOBUFS;
		} else if (op < 93) {
			node_stop(s, c);
			crashes++;
		} else if (op < 94) {
			crashes++;
			/* Restarted at once: peers learn its new boot mid-flight. */
			node_stop(s, c);
			node_start(s, c);
		}
		sim_run(s, s->now + prng__next(&s->prng) % 4000);
	}
	for (uint32_t c = 0; c < s->count; c++)
		if (!s->n[c].alive)
			node_start(s, c);
	s->loss = s->dup = s->reorder = 0;
	assert_true(sim_settle(s, 120000000));
	for (uint32_t c = 0; c < s->count; c++) {
		assert_int_equal(sync__unsettled(s->n[c].e), 0);
		assert_int_equal(unsettled_walk(s->n[c].e), 0);
	}
	/* The paths the counters follow were taken: requests queued and
	 * answered (A has windows), refused at max_queued, nodes crashed. */
	assert_true(crashes > 50);
	if (requests) {
		assert_true(queued > 100);
		assert_true(refused > 0);
		assert_true(s->n[0].e->n_win_peers > 0);
	} else {
		/* Every acknowledgement was a reply. */
		for (uint32_t c = 0; c < s->count; c++)
			assert_int_equal(s->n[c].e->ack_ranges, 0);
	}
	sim_free(s);
}

/* SITE3 with names so long that no "ack" range fits a 256-byte datagram
 * (ack__ranges() is 0): users acknowledge each set by a reply naming its
 * version, the other path to acked_ver. */
static const char *SITE3_REPLIES =
    "max_datagram = 256\nmax_string = 32\n"
    "[controller Aaaaaaaaaaaaaaaaaaaaaaaa]\nhost = 127.0.0.1\nudp_port = 6001\nroles = cmd_do\n"
    "[controller Bbbbbbbbbbbbbbbbbbbbbbbb]\nhost = 127.0.0.1\nudp_port = 6002\n"
    "[controller Cccccccccccccccccccccccc]\nhost = 127.0.0.1\nudp_port = 6003\n"
    "[thing light]\nowner = Aaaaaaaaaaaaaaaaaaaaaaaa\ntype = bool\n"
    "users = Bbbbbbbbbbbbbbbbbbbbbbbb, Cccccccccccccccccccccccc\n"
    "[thing temp]\nowner = Aaaaaaaaaaaaaaaaaaaaaaaa\ntype = float\n"
    "users = Bbbbbbbbbbbbbbbbbbbbbbbb, Cccccccccccccccccccccccc\nmin = -50\nmax = 150\n"
    "[thing mode]\nowner = Aaaaaaaaaaaaaaaaaaaaaaaa\ntype = string\nusers = Bbbbbbbbbbbbbbbbbbbbbbbb\n"
    "allowed = off, eco, comfort\n"
    "[thing door]\nowner = Aaaaaaaaaaaaaaaaaaaaaaaa\ntype = bool\n"
    "users = Bbbbbbbbbbbbbbbbbbbbbbbb, Cccccccccccccccccccccccc\npulse = yes\npulse_ms = 300\n"
    "[thing count]\nowner = Bbbbbbbbbbbbbbbbbbbbbbbb\ntype = int\n"
    "users = Aaaaaaaaaaaaaaaaaaaaaaaa, Cccccccccccccccccccccccc\n"
    "[thing siren]\nowner = Cccccccccccccccccccccccc\ntype = bool\nusers = Aaaaaaaaaaaaaaaaaaaaaaaa\n"
    "settable = no\n";

static void test_counters_under_random_operations(void **state)
{
	random_operations(SITE3, "A", 77, true);
}

static void test_counters_under_random_operations_replies(void **state)
{
	/* Requests do not fit its datagrams with such names: sets only. */
	random_operations(SITE3_REPLIES, "Aaaaaaaaaaaaaaaaaaaaaaaa", 78, false);
}

static char *batch_site(int n)
{
	size_t cap = 200 + (size_t)n * 64, len;
	char *b = malloc(cap);

	assert_non_null(b);
	len = (size_t)snprintf(b, cap,
	                       "[controller A]\nhost = 127.0.0.1\nudp_port = 6001\n"
	                       "[controller B]\nhost = 127.0.0.1\nudp_port = 6002\n"
	                       "[controller C]\nhost = 127.0.0.1\nudp_port = 6003\n");
	for (int t = 0; t < n; t++)
		len += (size_t)snprintf(b + len, cap - len, "[thing t%d]\nowner = A\ntype = int\nusers = B, C\n", t);
	return b;
}

/* Reply messages ("cmd":"reply") in the captured datagrams from `from`. */
static size_t captured_replies(struct sim *s, uint32_t from)
{
	size_t n = 0;

	for (struct packet *c = s->captured; c; c = c->next) {
		const char *p = (const char *)c->data, *end = p + c->len;
		if (c->from != from)
			continue;
		while ((p = memmem(p, (size_t)(end - p), "\"cmd\":\"reply\"", 13))) {
			n++;
			p += 13;
		}
	}
	return n;
}

static void batch_rounds(struct sim *s, int n, int rounds)
{
	for (int r = 1; r <= rounds; r++) {
		for (int t = 0; t < n; t++) {
			char name[16];
			tsync_value v = tsync_int(r * 100000 + t);
			snprintf(name, sizeof(name), "t%d", t);
			assert_int_equal(sync__set(s->n[0].e, name, &v, s->now), 0);
		}
		assert_true(sim_settle(s, 600000000));
		for (uint32_t c = 1; c <= 2; c++)
			for (int t = 0; t < n; t += 97) {
				char name[16];
				snprintf(name, sizeof(name), "t%d", t);
				assert_int_equal(get(s, c, name).u.i, r * 100000 + t);
			}
	}
}

/* Batches of sets are acknowledged by datagram: no reply message comes back
 * once both ends know each other, every set is acknowledged all the same
 * (the owner settles), and the acks count each acknowledged update as the
 * replies did. */
static void test_acks_by_datagram(void **state)
{
	char *body = batch_site(1000);
	struct sim *s = sim_new(body, true, 11);
	uint64_t acked0;

	(void)state;
	assert_true(sim_settle(s, 10000000));
	s->capture = true;
	acked0 = s->n[0].e->peers[0].st.acked;
	batch_rounds(s, 1000, 5);
	assert_int_equal(captured_replies(s, 1), 0);
	assert_int_equal(captured_replies(s, 2), 0);
	assert_int_equal(s->n[0].e->peers[0].st.acked - acked0, 5000);
	assert_int_equal(s->n[0].e->peers[0].st.retransmits, 0);
	sim_free(s);
	free(body);
}

/* The same under loss, duplication and reordering, and over more rounds
 * than the owner's record of sent sets holds (it wraps): everything
 * converges, nothing is acknowledged that the user does not hold. */
static void test_acks_by_datagram_under_loss(void **state)
{
	char *body = batch_site(300);
	struct sim *s = sim_new(body, true, 12);

	(void)state;
	s->loss = 0.2;
	s->dup = 0.2;
	s->reorder = 0.3;
	batch_rounds(s, 300, 12);
	for (uint32_t c = 1; c <= 2; c++)
		assert_false(s->n[c].ver_went_back);
	assert_true(s->n[0].e->peers[0].st.retransmits > 0);
	/* An ack is progress, as a reply is: a peer that acknowledges is out
	 * of backoff at once, and a round after the loss goes at full speed,
	 * not one datagram per backoff period (about 20 of them, up to 2 s
	 * each, on the simulated clock). */
	s->loss = s->dup = s->reorder = 0;
	{
		uint64_t t0 = s->now;
		batch_rounds(s, 300, 1);
		assert_true(s->now - t0 < 1000000);
	}
	sim_free(s);
	free(body);
}

/* More sets than one flush may send (SYNC_BURST_MAX datagrams): the rest go
 * with the flushes the acknowledgements bring, not at the retransmission
 * timer. A flush that an acknowledgement brings does not walk the list of
 * sets when nothing on it is unsent; one that stopped at its budget leaves
 * the rest unsent, so the next one walks. */
static void test_sets_beyond_one_flush(void **state)
{
	char *body = batch_site(1000);
	struct sim *s = sim_new_timers("retry_min_ms = 20\nretry_initial_ms = 100\nretry_max_ms = 2000\n"
	                               "max_datagram = 256\nmax_string = 32\n",
	                               body, true, 13);
	uint64_t sent0, t0;

	(void)state;
	assert_true(sim_settle(s, 10000000));
	sent0 = s->n[0].e->peers[0].st.datagrams_sent;
	t0 = s->now;
	batch_rounds(s, 1000, 2);
	/* Each round needs more datagrams to each user than one flush sends. */
	assert_true(s->n[0].e->peers[0].st.datagrams_sent - sent0 > 2 * SYNC_BURST_MAX);
	for (uint32_t p = 0; p < 2; p++) {
		assert_int_equal(s->n[0].e->peers[p].st.retransmits, 0);
	}
	/* Well within one retransmission timeout a round (100 ms). */
	assert_true(s->now - t0 < 200000);
	sim_free(s);
	free(body);
}

/* A user guesses the thing of each name in a batch from the order of the
 * batch before, and the owner the thing of each sync__set() from the order
 * of the sets before (engine__thing_named()): rounds in changing orders (the
 * same, shuffled, reversed, a few things only) still put every value on its
 * own thing at every user. */
static void test_names_in_any_order(void **state)
{
	enum { N = 300 };
	char *body = batch_site(N);
	struct sim *s = sim_new(body, true, 14);
	uint32_t order[N];

	(void)state;
	assert_true(sim_settle(s, 10000000));
	for (int r = 1; r <= 8; r++) {
		int n = r == 7 ? 5 : N;
		for (int i = 0; i < N; i++)
			order[i] = (uint32_t)i;
		if (r % 3 == 0) {
			for (int i = N - 1; i > 0; i--) { /* shuffled */
				uint32_t j = (uint32_t)(prng__next(&s->prng) % (uint64_t)(i + 1)), x = order[i];
				order[i] = order[j];
				order[j] = x;
			}
		} else if (r % 3 == 2) {
			for (int i = 0; i < N; i++) /* reversed */
				order[i] = (uint32_t)(N - 1 - i);
		}
		for (int i = 0; i < n; i++) {
			char name[16];
			tsync_value v = tsync_int(r * 100000 + (int)order[i]);
			snprintf(name, sizeof(name), "t%u", order[i]);
			assert_int_equal(sync__set(s->n[0].e, name, &v, s->now), 0);
		}
		assert_true(sim_settle(s, 60000000));
		for (uint32_t c = 1; c <= 2; c++)
			for (int i = 0; i < n; i++) {
				char name[16];
				snprintf(name, sizeof(name), "t%u", order[i]);
				assert_int_equal(get(s, c, name).u.i, r * 100000 + (int)order[i]);
			}
	}
	/* Rounds in the same order: from the third every guess is right, the
	 * owner's and each user's, and no name is looked up in the index (the
	 * second learns which name follows the last: a round's first). */
	for (int r = 9; r <= 11; r++) {
		uint64_t was[3];
		for (uint32_t c = 0; c <= 2; c++)
			was[c] = s->n[c].e->names_looked_up;
		for (int i = 0; i < N; i++) {
			char name[16];
			tsync_value v = tsync_int(r * 100000 + i);
			snprintf(name, sizeof(name), "t%d", i);
			assert_int_equal(sync__set(s->n[0].e, name, &v, s->now), 0);
		}
		assert_true(sim_settle(s, 60000000));
		for (uint32_t c = 0; c <= 2; c++) {
			if (r == 11)
				assert_int_equal(s->n[c].e->names_looked_up, was[c]);
			assert_int_equal(get(s, c, "t7").u.i, r * 100000 + 7);
		}
	}
	sim_free(s);
	free(body);
}

/* A user checks the guessed name of a batch's set by a word
 * (engine__thing_named_len()) when the name has 1..8 bytes: names that
 * differ in their last byte, in length only (a prefix of another), of
 * exactly 8 and of 9 bytes (then strcmp()), in orders that make the guesses
 * wrong, then right: every value on its own thing, and in a round in the
 * order of the one before every short name by its word. */
static void test_short_names_by_word(void **state)
{
	static const char *const names[] = {"abcdefgh", "abcdefgi", "abcdefg", "abcdefghi", "abcdefghj",
	                                    "a",        "b",        "ab",      "abcdefhg",  "zbcdefgh"};
	enum { N = ARRAY_SIZE(names) };
	char body[4096];
	size_t len;
	struct sim *s;

	(void)state;
	len = (size_t)snprintf(body, sizeof(body),
	                       "[controller A]\nhost = 127.0.0.1\nudp_port = 6001\n"
	                       "[controller B]\nhost = 127.0.0.1\nudp_port = 6002\n");
	for (int t = 0; t < N; t++)
		len += (size_t)snprintf(body + len, sizeof(body) - len, "[thing %s]\nowner = A\ntype = int\nusers = B\n",
		                        names[t]);
	s = sim_new(body, true, 15);
	assert_true(sim_settle(s, 10000000));
	for (int r = 1; r <= 9; r++) {
		uint64_t words = s->n[1].e->names_by_word, looked = s->n[1].e->names_looked_up;
		for (int i = 0; i < N; i++) {
			/* Rounds 1-3 forwards, 4-6 backwards, 7-9 forwards again. */
			int k = r >= 4 && r <= 6 ? N - 1 - i : i;
			tsync_value v = tsync_int(r * 100 + k);
			assert_int_equal(sync__set(s->n[0].e, names[k], &v, s->now), 0);
		}
		assert_true(sim_settle(s, 60000000));
		for (int k = 0; k < N; k++)
			assert_int_equal(get(s, 1, names[k]).u.i, r * 100 + k);
		if (r == 3 || r == 9) {
			/* Every guess right: the 8 short names by word, the 2 long
			 * ones by strcmp(), none looked up. */
			assert_int_equal(s->n[1].e->names_by_word - words, N - 2);
			assert_int_equal(s->n[1].e->names_looked_up, looked);
		}
	}
	sim_free(s);
}

/* Captured datagrams from `from` that contain `what`, each counted as often
 * as it occurs. */
static size_t captured_count(struct sim *s, uint32_t from, const char *what)
{
	size_t n = 0, len = strlen(what);

	for (struct packet *c = s->captured; c; c = c->next) {
		const char *p = (const char *)c->data, *end = p + c->len;
		if (c->from != from)
			continue;
		while ((p = memmem(p, (size_t)(end - p), what, len))) {
			n++;
			p += len;
		}
	}
	return n;
}

static void slow_send(struct sim *s, int k, struct done_rec *d)
{
	char args[64];

	snprintf(args, sizeof(args), "{\"kwargs\":{\"k\":%d}}", k);
	assert_int_equal(
	    sync__send_request(s->n[2].e, "A", "cmd", "cmd_do", "slow", args, on_done, d, s->now), 0);
}

/* A deferred command runs once however often its sender repeats it while
 * it runs, is not answered meanwhile, and its answer, given later, leaves
 * at once, exactly once on a clean network, and reaches the sender even
 * when that datagram is lost (the repeat gets it from the window), under
 * loss, duplication and reordering too. */
static void test_deferred_answer_exactly_once(void **state)
{
	enum { N = 4 };
	struct sim *s = sim_new(SITE3, true, 31);
	struct done_rec d[2 * N];
	char what[32];

	memset(d, 0, sizeof(d));
	memset(slow_runs, 0, sizeof(slow_runs));
	s->capture = true;
	for (int k = 0; k < N; k++)
		slow_send(s, k, &d[k]);
	sim_run(s, s->now + 10000000);
	for (int k = 0; k < N; k++) {
		assert_int_equal(slow_runs[k], 1);
		assert_int_equal(d[k].calls, 0);
	}
	/* C repeated them (more than once each), and A answered none. */
	assert_true(captured_count(s, 2, "\"cmd\":\"slow\"") > 2 * N);
	assert_int_equal(captured_count(s, 0, "slow_done"), 0);
	for (int k = 0; k < N; k++) {
		char res[32];
		snprintf(res, sizeof(res), "{\"slow_done\":%d}", k);
		assert_int_equal(sync__answer(s->n[0].e, slow_handle[k], 0, res, s->now), 0);
	}
	assert_null(s->n[0].e->deferred);
	assert_true(sim_settle(s, 20000000));
	for (int k = 0; k < N; k++) {
		char res[32];
		assert_int_equal(slow_runs[k], 1);
		assert_int_equal(d[k].calls, 1);
		assert_int_equal(d[k].status, 0);
		snprintf(res, sizeof(res), "{\"slow_done\":%d}", k);
		assert_string_equal(d[k].res, res);
		/* Sent once: not repeated, not waiting for a repeat. */
		snprintf(what, sizeof(what), "\"slow_done\":%d", k);
		assert_int_equal(captured_count(s, 0, what), 1);
	}

	/* The same under loss, duplication and reordering: the answers that
	 * are lost reach C through its repeats, one answer each, one run. */
	s->loss = 0.3;
	s->dup = 0.3;
	s->reorder = 0.2;
	for (int k = N; k < 2 * N; k++)
		slow_send(s, k, &d[k]);
	sim_run(s, s->now + 30000000);
	for (int k = N; k < 2 * N; k++) {
		assert_int_equal(slow_runs[k], 1);
		assert_int_equal(d[k].calls, 0);
	}
	/* Every answer's first datagram is lost. */
	s->block = true;
	s->block_from = 0;
	s->block_to = 2;
	for (int k = N; k < 2 * N; k++)
		assert_int_equal(
		    sync__answer(s->n[0].e, slow_handle[k], k == N ? TSYNC_ECMD_ARGS : 0, "[1]", s->now), 0);
	sim_run(s, s->now + 1000);
	s->block = false;
	for (int k = N; k < 2 * N; k++)
		assert_int_equal(d[k].calls, 0);
	assert_true(sim_settle(s, 120000000));
	for (int k = N; k < 2 * N; k++) {
		assert_int_equal(slow_runs[k], 1);
		assert_int_equal(d[k].calls, 1);
		assert_int_equal(d[k].status, k == N ? TSYNC_ECMD_ARGS : 0);
		assert_string_equal(d[k].res, "[1]");
	}
	sim_free(s);
}

/* A node that dies while a deferred command runs leaves its sender an
 * answer: outcome unknown (TSYNC_EPEER_RESTARTED), without a second run,
 * also when it dies in the handler right after deferring (the "unknown"
 * is on disk before the work starts); without a state directory too. */
/* A (durable or not) restarts with slow command k running: C's done gets
 * outcome unknown, and the command ran once. */
static void deferred_restart_case(struct sim *s, bool durable, int k, struct done_rec *d)
{
	mstores[0].on = durable;
	node_stop(s, 0);
	node_start(s, 0);
	assert_true(sim_settle(s, 5000000));
	slow_send(s, k, d);
	sim_run(s, s->now + 1000000);
	assert_int_equal(slow_runs[k], 1);
	node_stop(s, 0); /* the handle dies with it */
	node_start(s, 0);
	assert_true(sim_settle(s, 20000000));
	assert_int_equal(d->calls, 1);
	assert_int_equal(d->status, TSYNC_EPEER_RESTARTED);
	assert_int_equal(slow_runs[k], 1);
}

static void test_deferred_restart(void **state)
{
	struct sim *s = sim_new(SITE3, true, 33);
	struct done_rec d[3];

	memset(d, 0, sizeof(d));
	memset(slow_runs, 0, sizeof(slow_runs));
	deferred_restart_case(s, true, 0, &d[0]);

	s->n[0].crash_after_act = true;
	slow_send(s, 1, &d[1]);
	sim_run(s, s->now + 50000);
	assert_false(s->n[0].alive);
	node_start(s, 0);
	assert_true(sim_settle(s, 20000000));
	assert_int_equal(d[1].calls, 1);
	assert_int_equal(d[1].status, TSYNC_EPEER_RESTARTED);
	assert_int_equal(slow_runs[1], 1);

	deferred_restart_case(s, false, 2, &d[2]);
	sim_free(s);
}

/* A set that goes to several users in one flush is written once and copied
 * into the other users' datagrams (engine.c, shared_add()). Every datagram
 * the owner sent is exactly what writing its messages anew gives (decoded,
 * then encoded again with its own envelope: the same bytes), carries the
 * round's values and versions (nothing from an earlier round), and the
 * copies were made: 300 things shared by B and C, 50 for B alone. */
static void check_owner_datagrams(struct sim *s, int round, size_t *sets)
{
	const struct wire_codec *c = &s->n[0].e->codec;

	for (struct packet *p = s->captured; p; p = p->next) {
		struct wire_datagram dg;
		struct wire_writer w;
		tsync_reject rej;
		const void *out;
		size_t len;

		if (p->from != 0)
			continue;
		assert_int_equal(wire__decode(c, p->data, p->len, &dg, &rej), 0);
		wire__writer_init(&w, c);
		assert_int_equal(wire__begin(&w, &dg.env), 0);
		for (size_t i = 0; i < dg.n_msgs; i++) {
			const struct wire_msg *m = &dg.msgs[i];
			tsync_thing_state st;
			char *end;
			long t;
			assert_int_equal(m->type, WIRE_T_IO);
			assert_int_equal(m->op, WIRE_OP_SET);
			assert_true(m->io[0] == 't' || m->io[0] == 'u');
			t = strtol(m->io + 1, &end, 10);
			assert_int_equal(*end, '\0');
			assert_int_equal(m->val.u.i, round * 100000 + (m->io[0] == 'u' ? 1000 : 0) + t);
			assert_int_equal(sync__get(s->n[0].e, m->io, &st), 0);
			assert_int_equal(m->ver, st.version);
			assert_int_equal(wire__add(&w, m), 0);
			(*sets)++;
		}
		assert_int_equal(wire__finish(&w, &out, &len), 0);
		assert_int_equal(len, p->len);
		assert_memory_equal(out, p->data, len - WIRE_TAG_BYTES);
		wire__writer_free(&w);
		wire__datagram_release(&dg);
	}
}

static void test_shared_set_bytes(void **state)
{
	char *body = batch_site(300), *more;
	size_t n = strlen(body), cap = n + 50 * 64;
	struct sim *s;

	(void)state;
	more = realloc(body, cap);
	assert_non_null(more);
	body = more;
	for (int t = 0; t < 50; t++)
		n += (size_t)snprintf(body + n, cap - n, "[thing u%d]\nowner = A\ntype = int\nusers = B\n", t);
	s = sim_new(body, true, 13);
	assert_true(sim_settle(s, 10000000));
	for (int r = 1; r <= 3; r++) {
		uint64_t copies0 = s->n[0].e->shared_copies;
		size_t sets = 0;

		s->capture = true;
		for (int t = 0; t < 350; t++) {
			char name[16];
			tsync_value v = tsync_int(r * 100000 + (t < 300 ? t : 1000 + t - 300));
			snprintf(name, sizeof(name), t < 300 ? "t%d" : "u%d", t < 300 ? t : t - 300);
			assert_int_equal(sync__set(s->n[0].e, name, &v, s->now), 0);
		}
		assert_true(sim_settle(s, 600000000));
		check_owner_datagrams(s, r, &sets);
		assert_int_equal(sets, 650); /* no loss: each once */
		assert_int_equal(s->n[0].e->shared_copies - copies0, 300);
		for (uint32_t u = 1; u <= 2; u++)
			assert_int_equal(get(s, u, "t299").u.i, r * 100000 + 299);
		assert_int_equal(get(s, 1, "u49").u.i, r * 100000 + 1049);
		while (s->captured) {
			struct packet *p = s->captured;
			s->captured = p->next;
			free(p);
		}
	}
	assert_int_equal(s->n[0].e->peers[0].st.retransmits, 0);
	sim_free(s);
	free(body);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_start_and_converge),
	    cmocka_unit_test(test_values_checked),
	    cmocka_unit_test(test_coerce_int_fast),
	    cmocka_unit_test(test_ack_take_orders),
	    cmocka_unit_test(test_sender_by_name),
	    cmocka_unit_test(test_converges_under_loss),
	    cmocka_unit_test(test_user_requests_set),
	    cmocka_unit_test(test_pulses_exactly_once),
	    cmocka_unit_test(test_commands_exactly_once),
	    cmocka_unit_test(test_dead_peer_backoff_and_coalescing),
	    cmocka_unit_test(test_restart_resync),
	    cmocka_unit_test(test_restart_envelope_boots),
	    cmocka_unit_test(test_replay_and_forgery),
	    cmocka_unit_test(test_rtt_learned),
	    cmocka_unit_test(test_rtt_learned_by_user_started_first),
	    cmocka_unit_test(test_version_ordering),
	    cmocka_unit_test(test_legacy_seed_list),
	    cmocka_unit_test(test_commit_hook_backpressure),
	    cmocka_unit_test(test_crash_between_act_and_hook),
	    cmocka_unit_test(test_request_limits),
	    cmocka_unit_test(test_durable_window_restart),
	    cmocka_unit_test(test_origin_boot_window),
	    cmocka_unit_test(test_crash_between_act_and_commit),
	    cmocka_unit_test(test_heartbeat_shows_dead_peer_down),
	    cmocka_unit_test(test_heartbeat_cost),
	    cmocka_unit_test(test_heartbeat_off_is_silent),
	    cmocka_unit_test(test_partition_heals_within_a_period),
	    cmocka_unit_test(test_heartbeat_keeps_backoff_of_refusing_peer),
	    cmocka_unit_test(test_failed_pulse_reported),
	    cmocka_unit_test(test_failed_set_and_cmd_reported),
	    cmocka_unit_test(test_acks_by_datagram),
	    cmocka_unit_test(test_acks_by_datagram_under_loss),
	    cmocka_unit_test(test_sets_beyond_one_flush),
	    cmocka_unit_test(test_names_in_any_order),
	    cmocka_unit_test(test_short_names_by_word),
	    cmocka_unit_test(test_deferred_answer_exactly_once),
	    cmocka_unit_test(test_deferred_restart),
	    cmocka_unit_test(test_shared_set_bytes),
	    cmocka_unit_test(test_counters_under_random_operations),
	    cmocka_unit_test(test_counters_under_random_operations_replies),
	};
	int r;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/tsync-engine-XXXXXX");
	if (!mkdtemp(tmpdir))
		return 1;
	r = cmocka_run_group_tests(tests, NULL, NULL);
	{
		char cmd[300];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", tmpdir);
	}
	return r;
}
