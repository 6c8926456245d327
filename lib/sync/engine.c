/*
 * lib/sync: the engine's state, its API, and what it sends (flush, timers).
 * What it does with what it receives is in input.c.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "store/store.h"
#include "sync/sync.h"

static struct sync_peer *peer_of_ctrl(struct sync_engine *e, uint32_t ctrl)
{
	int32_t i = e->plan->peer_of_ctrl[ctrl];
	return i < 0 ? NULL : &e->peers[i];
}

static uint32_t peer_index(const struct sync_engine *e, const struct sync_peer *p)
{
	return (uint32_t)(p - e->peers);
}

/* --- construction ---------------------------------------------------------- */

static int peer_init(struct sync_engine *e, struct sync_peer *p, const struct plan_peer *pp)
{
	const struct tsync_site *site = e->site;

	p->ctrl = pp->ctrl;
	p->name = site->controllers[pp->ctrl].name;
	p->name_len = strlen(p->name);
	p->seed = site->controllers[pp->ctrl].seed_protocol;
	p->next_id = 1;
	p->next_setreq_id = 1;
	p->reqs_tail = &p->reqs;
	/* Heartbeats go where liveness matters to the data: between an owner
	 * and its users. A full mesh would cost every controller a datagram per
	 * period to every other, which a site of hundreds cannot afford, for
	 * peers whose state it holds nothing of. Seed controllers know no
	 * heartbeat and send none. */
	p->heartbeat = !p->seed && (pp->n_out > 0 || pp->n_in > 0);
	rtt__init(&p->rtt, site->retry_initial_ms, site->retry_min_ms, site->retry_max_ms);
	if (pp->n_out) {
		p->out = calloc(pp->n_out, sizeof(*p->out));
		p->dirty = calloc(pp->n_out, sizeof(*p->dirty));
		if (!p->out || !p->dirty)
			return -ENOMEM;
		for (size_t k = 0; k < pp->n_out; k++)
			p->out[k].thing = pp->out[k];
		p->n_out = pp->n_out;
	}
	if (pp->n_in) {
		p->inq = calloc(pp->n_in, sizeof(*p->inq));
		if (!p->inq)
			return -ENOMEM;
		p->cap_inq = pp->n_in;
	}
	return 0;
}

int sync__new(const struct tsync_site *site, uint32_t me, uint64_t boot, const struct sync_ops *ops,
              const struct logger *log, struct tsync_node *node, struct sync_engine **ret)
{
	struct sync_engine *e;
	int r;

	if (!site || me >= site->n_controllers || !ops || !ops->send || !ops->arm || !ops->want_flush ||
	    !boot)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->site = site;
	e->me = me;
	e->boot = boot;
	e->ops = *ops;
	e->log = log;
	e->node = node;
	e->heartbeat_us = (uint64_t)site->heartbeat_ms * 1000u;
	e->event_thing = UINT32_MAX;
	/* Two and a half periods: one lost heartbeat is not a death, two in a
	 * row (or none at all) are. */
	e->silent_us = e->heartbeat_us * 5u / 2u;
	e->ack_ranges = ack__ranges(site, me);
	e->codec.key = site->has_key ? site->key : NULL;
	e->codec.max_datagram = site->max_datagram;
	e->codec.max_msgs = site->max_msgs;
	e->codec.max_string = site->max_string;
	if (site->has_key) {
		r = wire__auth_prepare(site->key, &e->auth);
		if (r < 0) {
			free(e);
			return r;
		}
		e->codec.auth = e->auth;
	}
	wire__writer_init(&e->writer, &e->codec);
	prng__seed(&e->prng, boot ^ ((uint64_t)me << 32) ^ 0x5bd1e995u);

	r = wire__decoder_new(&e->codec, &e->decoder);
	if (r < 0)
		goto fail;
	r = site__plan_new(site, me, &e->plan);
	if (r < 0)
		goto fail;
	r = -ENOMEM;
	e->things = calloc(site->n_things ? site->n_things : 1, sizeof(*e->things));
	e->peers = calloc(e->plan->n_peers ? e->plan->n_peers : 1, sizeof(*e->peers));
	e->flushq = calloc(e->plan->n_peers ? e->plan->n_peers : 1, sizeof(*e->flushq));
	e->hb_peers = calloc(e->plan->n_peers ? e->plan->n_peers : 1, sizeof(*e->hb_peers));
	e->rx_sets = calloc(site->max_msgs ? site->max_msgs : 1, sizeof(*e->rx_sets));
	e->rx_names.last = e->set_names.last = UINT32_MAX;
	if (!e->things || !e->peers || !e->flushq || !e->hb_peers || !e->rx_sets)
		goto fail;
	e->n_peers = e->plan->n_peers;
	for (size_t i = 0; i < e->n_peers; i++) {
		r = peer_init(e, &e->peers[i], &e->plan->peers[i]);
		if (r < 0)
			goto fail;
		if (e->peers[i].heartbeat)
			e->hb_peers[e->n_hb_peers++] = (uint32_t)i;
	}
	for (size_t t = 0; t < site->n_things; t++) {
		/* Short names as words, for engine__thing_named_len(). */
		const char *name = site->things[t].name;
		size_t nl = strlen(name);
		uint8_t word[8] = {0};
		if (nl >= 1 && nl <= 8) {
			memcpy(word, name, nl);
			memcpy(&e->things[t].name_word, word, sizeof(word));
			e->things[t].name_word = le64toh(e->things[t].name_word);
			e->things[t].name_len8 = (uint8_t)nl;
		}
	}
	for (size_t i = 0; i < e->plan->n_owned; i++) {
		uint32_t t = e->plan->owned[i];
		e->things[t].role = THING_OWNED;
		e->things[t].users = calloc(site->things[t].n_users + 1, sizeof(struct user_ref));
		if (!e->things[t].users)
			goto fail;
	}
	for (size_t i = 0; i < e->plan->n_used; i++) {
		uint32_t t = e->plan->used[i];
		e->things[t].role = THING_USED;
		e->things[t].peer = (uint32_t)e->plan->peer_of_ctrl[site->things[t].owner];
	}
	/* Index, for each owned thing, where each user's acknowledgement lives. */
	for (size_t i = 0; i < e->n_peers; i++) {
		struct sync_peer *p = &e->peers[i];
		for (size_t k = 0; k < p->n_out; k++) {
			struct thing_rt *rt = &e->things[p->out[k].thing];
			rt->users[rt->n_users].peer = (uint32_t)i;
			rt->users[rt->n_users].slot = (uint32_t)k;
			rt->n_users++;
		}
	}
	*ret = e;
	return 0;
fail:
	sync__free(e);
	return r;
}

static void outreq_free(struct outreq *r)
{
	value__clear(&r->val);
	free(r->type_name);
	free(r->role);
	free(r->cmd);
	free(r->body);
	free(r);
}

void sync__free(struct sync_engine *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->n_peers; i++) {
		struct sync_peer *p = &e->peers[i];
		while (p->reqs) {
			struct outreq *r = p->reqs;
			p->reqs = r->next;
			if (r->done)
				r->done(r->userdata, e->node, TSYNC_ECANCELED, NULL);
			outreq_free(r);
		}
		free(p->out);
		free(p->dirty);
		free(p->inq);
		ack__free(p);
		for (size_t k = 0; k < p->n_answers; k++)
			engine__answer_free(&p->answers[k]);
		free(p->answers);
		for (size_t w = 0; p->wins && w < SYNC_DEDUP_BOOTS; w++)
			dedup__free(&p->wins[w].d);
		free(p->wins);
		free(p->sent_ring);
		free(p->st.rejected);
	}
	if (e->things && e->site) {
		for (size_t t = 0; t < e->site->n_things; t++) {
			value__clear(&e->things[t].val);
			value__clear(&e->things[t].req_val);
			free(e->things[t].users);
		}
	}
	for (size_t i = 0; i < e->n_handlers; i++) {
		free(e->handlers[i].type);
		free(e->handlers[i].role);
		free(e->handlers[i].cmd);
	}
	free(e->handlers);
	free(e->listeners);
	for (size_t i = 0; i < e->n_undo; i++)
		value__clear(&e->undo[i].val);
	free(e->undo);
	for (size_t i = 0; i < e->n_kept; i++) {
		free(e->kept[i].err);
		free(e->kept[i].res);
	}
	free(e->kept);
	defer__free_all(e);
	free(e->things);
	free(e->shared);
	buf__free(&e->shared_buf);
	free(e->peers);
	free(e->flushq);
	free(e->hb_peers);
	free(e->win_peers);
	free(e->rx_sets);
	free(e->rx_names.next);
	free(e->set_names.next);
	wire__writer_free(&e->writer);
	wire__decoder_free(e->decoder);
	wire__auth_free(e->auth);
	site__plan_free(e->plan);
	free(e);
}

/* --- values ----------------------------------------------------------------- */

/* engine__coerce() (sync.h) for what it does not take inline: *out is *in. */
int engine__coerce_other(const struct tsync_site *site, uint32_t t, const tsync_value *in, tsync_value *out)
{
	const struct site_thing *th = &site->things[t];

	switch (th->type) {
	case TSYNC_TYPE_BOOL:
		/* The seed sends bools as 1 and 0. */
		if (in->type == TSYNC_TYPE_INT && (in->u.i == 0 || in->u.i == 1))
			*out = tsync_bool(in->u.i == 1);
		break;
	case TSYNC_TYPE_FLOAT:
		if (in->type == TSYNC_TYPE_INT)
			*out = tsync_float((double)in->u.i);
		break;
	default:
		break;
	}
	if (out->type != th->type)
		return TSYNC_EVALUE;
	/* A string the receivers' JSON parser would refuse could never be
	 * delivered: refuse it here, where the caller learns why. */
	if (out->type == TSYNC_TYPE_STRING && (!out->u.s || !wire__utf8_valid(out->u.s)))
		return TSYNC_EVALUE;
	return site__check_value(site, t, out) < 0 ? TSYNC_EVALUE : 0;
}


uint32_t sync__event_thing(const struct sync_engine *e, const tsync_event *ev)
{
	uint32_t t = e->event_thing;

	return t < e->site->n_things && ev->thing == e->site->things[t].name ? t : UINT32_MAX;
}

static void slot_dirty(struct sync_engine *e, struct sync_peer *p, uint32_t k)
{
	if (!p->out[k].listed) {
		p->out[k].listed = true;
		p->dirty[p->n_dirty++] = k;
	}
	p->sets_unsent = true;
	p->acked_below = 0;
	engine__want(e, p, FLUSH_NEW);
}

/* Takes a new value of an owned thing and tells every user. A change that
 * answers a peer's request is durable before the answer leaves; the
 * controller's own changes are committed together within state_commit_ms,
 * so a Pi whose inputs change every second does not write its SD card every
 * second (a power cut inside the window loses them, and the users follow the
 * owner back to its last committed value). A thing's first value is durable
 * before it is sent to its users, as if it answered a peer: without a
 * committed value the owner would restart with none, and nothing would take
 * back the copy they keep (an owner without a value sends none). It costs
 * one commit per thing in the life of a state directory: from then on a
 * start restores a value. A thing without users keeps the window (nothing
 * is sent, and no flush would come to end the commit-before-send). */
void engine__apply_owned(struct sync_engine *e, uint32_t t, const tsync_value *v, const char *by,
                         bool answers_peer)
{
	struct thing_rt *rt = &e->things[t];
	bool first = !rt->ver, first_sent = first && rt->n_users > 0;
	tsync_value copy;
	tsync_event ev;

	if (!first && value__equal(&rt->val, v))
		return;
	if (value__copy(&copy, v) < 0) {
		log_error(e->log, "out of memory setting %s", e->site->things[t].name);
		return;
	}
	value__clear(&rt->val);
	rt->val = copy;
	engine__owned_ver(e, rt, ++e->ver_counter);
	rt->boot = e->boot;
	if (e->ops.persist) {
		e->ops.persist(e->ops.ctx, e->site->things[t].name, &rt->val, rt->ver, rt->boot);
		if (answers_peer || !e->site->state_commit_ms || !e->ops.commit_later)
			e->persist_dirty = true;
		else if (first_sent)
			e->first_value = true;
		else
			e->ops.commit_later(e->ops.ctx, e->site->state_commit_ms);
	}
	for (uint32_t u = 0; u < rt->n_users; u++)
		slot_dirty(e, &e->peers[rt->users[u].peer], rt->users[u].slot);

	memset(&ev, 0, sizeof(ev));
	ev.kind = TSYNC_EVENT_CHANGED;
	ev.thing = e->site->things[t].name;
	ev.value = rt->val;
	ev.controller = by;
	engine__emit_thing(e, t, &ev);
}

int sync__restore(struct sync_engine *e, const char *thing, const tsync_value *v)
{
	uint32_t t;
	tsync_value c;

	if (name_index__get(&e->site->thing_ix, thing, &t) < 0 || e->things[t].role != THING_OWNED)
		return TSYNC_EUNKNOWN_THING;
	/* A stored value from an older site.conf may no longer fit; drop it. */
	if (engine__coerce(e->site, t, v, &c) < 0)
		return TSYNC_EVALUE;
	value__clear(&e->things[t].val);
	if (value__copy(&e->things[t].val, &c) < 0)
		return -ENOMEM;
	/* A value of an earlier boot gets a version of this boot, so that users
	 * holding it from before order it after anything they have. */
	engine__owned_ver(e, &e->things[t], ++e->ver_counter);
	e->things[t].boot = e->boot;
	return 0;
}

static bool heartbeats(const struct sync_engine *e, const struct sync_peer *p);

void sync__start(struct sync_engine *e, uint64_t now)
{
	e->now = now;
	/* Every peer I share things with hears at once that I am here (a
	 * peer that gets nothing else from the start-up gets a heartbeat), so
	 * it shows me up again without waiting a period. */
	for (size_t i = 0; i < e->n_peers; i++) {
		struct sync_peer *p = &e->peers[i];
		p->last_sent_us = now;
		if (heartbeats(e, p)) {
			p->greet = true;
			engine__want(e, p, FLUSH_NEW);
		}
	}
	for (size_t i = 0; i < e->plan->n_owned; i++) {
		uint32_t t = e->plan->owned[i];
		struct thing_rt *rt = &e->things[t];
		if (!rt->ver && e->site->things[t].initial.type != TSYNC_TYPE_NONE) {
			if (value__copy(&rt->val, &e->site->things[t].initial) == 0) {
				engine__owned_ver(e, rt, ++e->ver_counter);
				rt->boot = e->boot;
			}
		}
		if (rt->ver)
			for (uint32_t u = 0; u < rt->n_users; u++)
				slot_dirty(e, &e->peers[rt->users[u].peer], rt->users[u].slot);
	}
	for (size_t i = 0; i < e->plan->n_used; i++) {
		uint32_t t = e->plan->used[i];
		e->things[t].ask_pending = true;
		e->things[t].ask_sent_us = 0;
		engine__inq_add(e, &e->peers[e->things[t].peer], t);
	}
}

/* --- the node API, engine side ---------------------------------------------- */

/* engine__thing_named() (sync.h) when its guess was not right (a wrong one
 * costs one strcmp() more than the index): the index, and the guess learnt. */
int engine__thing_looked_up(struct sync_engine *e, struct name_hint *h, const char *name, uint32_t *t)
{
	const struct tsync_site *site = e->site;

	e->names_looked_up++;
	if (!name || name_index__get(&site->thing_ix, name, t) < 0)
		return -ENOENT;
	if (!h->next && site->n_things) {
		h->next = malloc(site->n_things * sizeof(*h->next));
		if (h->next)
			memset(h->next, 0xff, site->n_things * sizeof(*h->next));
	}
	if (h->next && h->last < site->n_things)
		h->next[h->last] = *t;
	h->last = *t;
	return 0;
}

/* h: the hint of a caller that names things in loops (sync__set()), or NULL. */
static int find_thing(struct sync_engine *e, struct name_hint *h, const char *name, uint32_t *t)
{
	if (h ? engine__thing_named(e, h, name, t) < 0 : !name || name_index__get(&e->site->thing_ix, name, t) < 0)
		return TSYNC_EUNKNOWN_THING;
	if (e->things[*t].role == THING_NONE)
		return TSYNC_ENOT_USED;
	return 0;
}

void engine__inq_add(struct sync_engine *e, struct sync_peer *p, uint32_t t)
{
	if (!e->things[t].in_listed) {
		e->things[t].in_listed = true;
		p->inq[p->n_inq++] = t;
	}
	engine__want(e, p, FLUSH_NEW);
}

int sync__set(struct sync_engine *e, const char *thing, const tsync_value *v, uint64_t now)
{
	struct thing_rt *rt;
	tsync_value c, as_is;
	uint32_t t;
	int r;

	e->now = now;
	r = find_thing(e, &e->set_names, thing, &t);
	if (r < 0)
		return r;
	if (!v)
		return -EINVAL;
	rt = &e->things[t];
	r = engine__coerce(e->site, t, v, &c);
	if (r < 0)
		return r;
	if (rt->role == THING_OWNED) {
		as_is = c;
		if (e->write_hook) {
			r = e->write_hook(e->write_userdata, e->node, thing, &c, &as_is);
			if (r < 0)
				return r;
			if (engine__coerce(e->site, t, &as_is, &as_is) < 0)
				return TSYNC_EVALUE;
		}
		engine__apply_owned(e, t, &as_is, e->site->controllers[e->me].name, false);
		return 0;
	}
	if (!e->site->things[t].settable)
		return TSYNC_EREFUSED;
	value__clear(&rt->req_val);
	r = value__copy(&rt->req_val, &c);
	if (r < 0)
		return r;
	rt->req_pending = true;
	rt->req_error = 0;
	rt->req_id = e->peers[rt->peer].next_setreq_id++;
	rt->req_sent_us = 0;
	engine__inq_add(e, &e->peers[rt->peer], t);
	/* Kept until the owner answers, so a restart does not forget it: it
	 * is committed before anything is sent (and the node commits it
	 * before it returns to the caller). */
	if (e->durable && !e->peers[rt->peer].seed && e->ops.persist_setreq) {
		e->ops.persist_setreq(e->ops.ctx, thing, &c);
		e->persist_dirty = true;
	}
	return 0;
}

int sync__resume_setreq(struct sync_engine *e, const char *thing, const tsync_value *to_be)
{
	uint32_t t;

	if (find_thing(e, NULL, thing, &t) < 0 || e->things[t].role != THING_USED)
		return TSYNC_ENOT_USED;
	return sync__set(e, thing, to_be, e->now);
}

int sync__get(struct sync_engine *e, const char *thing, tsync_thing_state *out)
{
	struct thing_rt *rt;
	uint32_t t;
	int r = find_thing(e, NULL, thing, &t);

	if (r < 0)
		return r;
	rt = &e->things[t];
	memset(out, 0, sizeof(*out));
	out->value = rt->val;
	out->owned = rt->role == THING_OWNED;
	out->version = rt->ver;
	out->owner_boot = rt->boot;
	out->asking = rt->ask_pending;
	out->requesting = rt->req_pending;
	out->request_error = rt->req_pending ? 0 : rt->req_error;
	if (out->owned)
		out->users_pending = rt->users_pending;
	return 0;
}

void engine__owned_ver(struct sync_engine *e, struct thing_rt *rt, uint64_t ver)
{
	/* Every acked_ver is at most the old version, so below this one. */
	if (!rt->users_pending && rt->n_users)
		e->n_owned_unsettled++;
	rt->users_pending = rt->n_users;
	rt->ver = ver;
}

void engine__set_acked(struct sync_engine *e, struct out_slot *s, uint64_t ver)
{
	struct thing_rt *rt = &e->things[s->thing];
	bool was = s->acked_ver < rt->ver, now = ver < rt->ver;

	s->acked_ver = ver;
	if (was == now)
		return;
	if (now && rt->users_pending++ == 0)
		e->n_owned_unsettled++;
	else if (!now && --rt->users_pending == 0)
		e->n_owned_unsettled--;
}

int sync__ask(struct sync_engine *e, const char *thing, uint64_t now)
{
	uint32_t t;
	int r = find_thing(e, NULL, thing, &t);

	e->now = now;
	if (r < 0)
		return r;
	if (e->things[t].role != THING_USED)
		return -EINVAL;
	e->things[t].ask_pending = true;
	e->things[t].ask_sent_us = 0;
	engine__inq_add(e, &e->peers[e->things[t].peer], t);
	return 0;
}

static int outreq_fits(struct sync_engine *e, struct sync_peer *p, const struct outreq *r);

int engine__queue_req(struct sync_engine *e, struct sync_peer *p, struct outreq *r)
{
	int err;

	if (p->n_reqs >= e->site->max_queued) {
		outreq_free(r);
		return -ENOBUFS;
	}
	err = outreq_fits(e, p, r);
	if (err < 0) {
		outreq_free(r);
		return err;
	}
	if (!r->id)
		r->id = p->next_id++;
	r->next = NULL;
	*p->reqs_tail = r;
	p->reqs_tail = &r->next;
	p->n_reqs++;
	e->n_reqs++;
	/* With a store, a request is durable before it is first sent (the
	 * flush commits first), so a restart of mine resumes it under the
	 * same (origin boot, id) and the peer's window recognises it. */
	if (e->durable && !p->seed && e->ops.persist_request) {
		e->ops.persist_request(e->ops.ctx, p->name, r->ob ? r->ob : e->boot, r, false);
		e->persist_dirty = true;
	}
	engine__want(e, p, FLUSH_NEW);
	return 0;
}

int sync__resume_request(struct sync_engine *e, const struct store_request *q, tsync_done_fn done, void *ud)
{
	struct sync_peer *p = NULL;
	struct outreq *r;
	uint32_t c, t = 0;

	if (name_index__get(&e->site->controller_ix, q->peer, &c) < 0 || !(p = peer_of_ctrl(e, c)) || p->seed)
		return TSYNC_EUNKNOWN_CTRL;
	if (q->is_pulse && name_index__get(&e->site->thing_ix, q->thing, &t) < 0)
		return TSYNC_EUNKNOWN_THING;
	if (!q->id || !q->origin_boot || q->origin_boot >= e->boot)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->id = q->id;
	r->ob = q->origin_boot;
	r->type = (enum wire_type)q->type;
	r->is_pulse = q->is_pulse;
	r->thing = t;
	r->ms = q->ms;
	r->done = done;
	r->userdata = ud;
	if ((q->is_pulse && value__copy(&r->val, &q->val) < 0) ||
	    (q->type_name && !(r->type_name = util__strdup(q->type_name))) ||
	    (q->role && !(r->role = util__strdup(q->role))) || (q->cmd && !(r->cmd = util__strdup(q->cmd))) ||
	    (q->body && !(r->body = util__strdup(q->body)))) {
		outreq_free(r);
		return -ENOMEM;
	}
	/* Ids stay unique among a peer's requests whatever boot issued them:
	 * the answers name the id alone, and the in-flight cap counts from
	 * the oldest (resumed requests come first, in id order). */
	if (p->next_id <= q->id)
		p->next_id = q->id + 1;
	if (p->n_reqs >= e->site->max_queued) {
		/* Over the limit only if max_queued was lowered: still resumed,
		 * a request already accepted is never dropped silently. */
		log_warn(e->log, "warn_retry %zu requests resumed for %s (max_queued %u)", p->n_reqs + 1,
		         p->name, e->site->max_queued);
	}
	r->next = NULL;
	*p->reqs_tail = r;
	p->reqs_tail = &r->next;
	p->n_reqs++;
	e->n_reqs++;
	engine__want(e, p, FLUSH_NEW);
	return 0;
}

static int queue_pulse(struct sync_engine *e, struct sync_peer *p, uint32_t t, const tsync_value *v,
                       uint32_t ms, tsync_done_fn done, void *ud)
{
	struct outreq *r = calloc(1, sizeof(*r));

	if (!r || value__copy(&r->val, v) < 0) {
		free(r);
		return -ENOMEM;
	}
	r->type = WIRE_T_IO;
	r->is_pulse = true;
	r->thing = t;
	r->ms = ms;
	r->done = done;
	r->userdata = ud;
	return engine__queue_req(e, p, r);
}

/* Takes a relay back from p's queue before it was ever sent: the pulse it
 * relays did not happen. */
static void req_withdraw(struct sync_engine *e, struct sync_peer *p, uint64_t id);

/* The owner acts on a pulse once and passes it on to every user. The act
 * comes first: a pulse whose output could not be moved did not happen, so
 * the users are not told of it and the requester learns it failed. With a
 * store, the relays are queued (staged) before the act, and everything
 * staged, the requester's window mark included, is committed before it:
 * a crash during or after the act then finds the pulse marked done and its
 * relays kept, so it is neither acted on again nor lost to the users. */
int engine__pulse_act(struct sync_engine *e, uint32_t t, const tsync_value *v, uint32_t ms, const char *by,
                      struct sync_peer *from, struct dedup_win *w)
{
	struct thing_rt *rt = &e->things[t];
	uint64_t *relays = NULL;
	tsync_event ev;
	int r = 0;

	if (rt->n_users && !(relays = calloc(rt->n_users, sizeof(*relays))))
		return -ENOMEM;
	for (uint32_t u = 0; u < rt->n_users; u++) {
		struct sync_peer *up = &e->peers[rt->users[u].peer];
		uint64_t id = up->next_id;
		int q = queue_pulse(e, up, t, v, ms, NULL, NULL);
		if (q < 0)
			log_warn(e->log, "warn_retry pulse of %s to %s not queued: %s",
			         e->site->things[t].name, up->name, tsync_strerror(q));
		else
			relays[u] = id;
	}
	r = engine__act_point(e, from, w);
	if (r == 0 && e->pulse_hook) {
		r = e->pulse_hook(e->pulse_userdata, e->node, e->site->things[t].name, v, ms, by);
		if (r < 0) {
			log_error(e->log, SYNC_ERR_WRITE " pulse of %s by %s failed: %s",
			          e->site->things[t].name, by, tsync_strerror(r));
			r = TSYNC_EWRITE;
		}
	}
	if (r < 0) {
		for (uint32_t u = 0; u < rt->n_users; u++)
			if (relays[u])
				req_withdraw(e, &e->peers[rt->users[u].peer], relays[u]);
		/* The relays were kept before the act: they go from the store
		 * at once, or a restart would tell the users of a pulse that
		 * did not happen. */
		if (r == TSYNC_EWRITE && engine__act_point(e, NULL, NULL) < 0)
			log_error(e->log,
			          "the withdrawn relays of a pulse of %s are still kept: a restart "
			          "sends them",
			          e->site->things[t].name);
		free(relays);
		return r;
	}
	free(relays);
	memset(&ev, 0, sizeof(ev));
	ev.kind = TSYNC_EVENT_PULSE;
	ev.thing = e->site->things[t].name;
	ev.value = *v;
	ev.pulse_ms = ms;
	ev.controller = by;
	engine__emit_thing(e, t, &ev);
	return 0;
}

static tsync_value default_pulse_value(tsync_type type)
{
	switch (type) {
	case TSYNC_TYPE_INT:
		return tsync_int(1);
	case TSYNC_TYPE_FLOAT:
		return tsync_float(1.0);
	default:
		return tsync_bool(true);
	}
}

int sync__pulse(struct sync_engine *e, const char *thing, const tsync_value *v, uint32_t ms,
                tsync_done_fn done, void *ud, uint64_t now)
{
	const struct site_thing *th;
	tsync_value pv, c;
	uint32_t t;
	int r;

	e->now = now;
	r = find_thing(e, NULL, thing, &t);
	if (r < 0)
		return r;
	th = &e->site->things[t];
	if (!th->pulse)
		return TSYNC_ENO_PULSE;
	if (v) {
		pv = *v;
	} else {
		if (th->type == TSYNC_TYPE_STRING)
			return TSYNC_EVALUE;
		pv = default_pulse_value(th->type);
	}
	r = engine__coerce(e->site, t, &pv, &c);
	if (r < 0)
		return r;
	if (!ms)
		ms = th->pulse_ms;
	if (e->things[t].role == THING_OWNED) {
		r = engine__pulse_act(e, t, &c, ms, e->site->controllers[e->me].name, NULL, NULL);
		if (r < 0)
			return r;
		if (done)
			done(ud, e->node, 0, NULL);
		return 0;
	}
	return queue_pulse(e, &e->peers[e->things[t].peer], t, &c, ms, done, ud);
}

/* Turns the caller's JSON object into the members to merge into a message. */
static int body_from_json(const char *json, char **body)
{
	static const char *const reserved[] = {"type", "id", "re", "role", "cmd", "res", "err"};
	json_error_t jerr;
	json_t *o;

	*body = NULL;
	if (!json || !*json)
		return 0;
	o = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
	if (!o)
		return -EINVAL;
	if (!json_is_object(o)) {
		json_decref(o);
		return -EINVAL;
	}
	for (size_t i = 0; i < ARRAY_SIZE(reserved); i++)
		json_object_del(o, reserved[i]);
	if (json_object_size(o))
		*body = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return 0;
}

int sync__send_request(struct sync_engine *e, const char *controller, const char *type, const char *role,
                       const char *cmd, const char *body_json, tsync_done_fn done, void *ud, uint64_t now)
{
	struct sync_peer *p = NULL;
	struct outreq *r;
	uint32_t c;
	int err;

	e->now = now;
	if (!type || !*type || !strcmp(type, "io"))
		return -EINVAL;
	if (!strcmp(type, "cmd") && (!role || !*role || !cmd || !*cmd))
		return -EINVAL;
	if (controller) {
		if (name_index__get(&e->site->controller_ix, controller, &c) < 0)
			return TSYNC_EUNKNOWN_CTRL;
		p = peer_of_ctrl(e, c);
		if (!p)
			return -EINVAL;
	} else {
		for (c = 0; c < e->site->n_controllers && !p; c++)
			if (c != e->me && role && site__has_role(e->site, c, role))
				p = peer_of_ctrl(e, c);
		if (!p)
			return TSYNC_EUNKNOWN_CTRL;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	err = body_from_json(body_json, &r->body);
	if (err < 0) {
		free(r);
		return err;
	}
	if (!strcmp(type, "cmd")) {
		r->type = WIRE_T_CMD;
		r->role = util__strdup(role);
		r->cmd = util__strdup(cmd);
		if (!r->role || !r->cmd)
			goto nomem;
	} else {
		r->type = !strcmp(type, "cum")    ? WIRE_T_CUM
		          : !strcmp(type, "clim") ? WIRE_T_CLIM
		                                  : WIRE_T_OTHER;
		r->type_name = util__strdup(type);
		if (!r->type_name)
			goto nomem;
	}
	r->done = done;
	r->userdata = ud;
	return engine__queue_req(e, p, r);
nomem:
	outreq_free(r);
	return -ENOMEM;
}

/* An answered request leaves the store with the next commit; until then a
 * restart resumes it and the peer answers it again from its window, so it
 * need not hurry. */
static void req_forget(struct sync_engine *e, struct sync_peer *p, const struct outreq *r)
{
	if (!e->durable || p->seed || !e->ops.persist_request)
		return;
	e->ops.persist_request(e->ops.ctx, p->name, r->ob ? r->ob : e->boot, r, true);
	if (e->ops.commit_later && e->site->state_commit_ms)
		e->ops.commit_later(e->ops.ctx, e->site->state_commit_ms);
	else
		e->persist_dirty = true;
}

static void req_withdraw(struct sync_engine *e, struct sync_peer *p, uint64_t id)
{
	struct outreq **pp = &p->reqs, *r;

	while ((r = *pp) && r->id != id)
		pp = &r->next;
	if (!r)
		return;
	*pp = r->next;
	if (p->reqs_tail == &r->next)
		p->reqs_tail = pp;
	p->n_reqs--;
	e->n_reqs--;
	/* The newest id goes back, so the ids on the wire stay dense. */
	if (p->next_id == id + 1)
		p->next_id = id;
	req_forget(e, p, r);
	outreq_free(r);
}

void engine__complete_req(struct sync_engine *e, struct sync_peer *p, uint64_t id, int status,
                          const char *res)
{
	struct outreq **pp = &p->reqs, *r;

	while ((r = *pp) && r->id != id)
		pp = &r->next;
	/* Not found: a duplicate answer to a request already completed. */
	if (!r || !r->sent_boot)
		return;
	*pp = r->next;
	if (p->reqs_tail == &r->next)
		p->reqs_tail = pp;
	p->n_reqs--;
	e->n_reqs--;
	p->st.acked++;
	req_forget(e, p, r);
	if (r->done)
		r->done(r->userdata, e->node, status, res);
	outreq_free(r);
	/* Completing the oldest may let queued requests into the window. */
	engine__want(e, p, FLUSH_NEW);
}

int sync__on_event(struct sync_engine *e, tsync_event_fn fn, void *ud)
{
	struct listener *l;

	if (!fn)
		return -EINVAL;
	l = realloc(e->listeners, (e->n_listeners + 1) * sizeof(*l));
	if (!l)
		return -ENOMEM;
	e->listeners = l;
	l[e->n_listeners].fn = fn;
	l[e->n_listeners].userdata = ud;
	e->n_listeners++;
	return 0;
}

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

int sync__on_request(struct sync_engine *e, const char *type, const char *role, const char *cmd,
                     tsync_request_fn fn, void *ud)
{
	struct handler *h;

	if (!type || !*type || !fn || !strcmp(type, "io"))
		return -EINVAL;
	if (!strcmp(type, "cmd") && (!role || !cmd))
		return -EINVAL;
	for (size_t i = 0; i < e->n_handlers; i++) {
		h = &e->handlers[i];
		if (!strcmp(h->type, type) && str_eq(h->role, role) && str_eq(h->cmd, cmd)) {
			h->fn = fn;
			h->userdata = ud;
			return 0;
		}
	}
	h = realloc(e->handlers, (e->n_handlers + 1) * sizeof(*h));
	if (!h)
		return -ENOMEM;
	e->handlers = h;
	h = &h[e->n_handlers];
	memset(h, 0, sizeof(*h));
	h->type = util__strdup(type);
	h->role = role ? util__strdup(role) : NULL;
	h->cmd = cmd ? util__strdup(cmd) : NULL;
	if (!h->type || (role && !h->role) || (cmd && !h->cmd)) {
		free(h->type);
		free(h->role);
		free(h->cmd);
		return -ENOMEM;
	}
	h->fn = fn;
	h->userdata = ud;
	e->n_handlers++;
	return 0;
}

void sync__set_write_hook(struct sync_engine *e, tsync_write_fn fn, void *ud)
{
	e->write_hook = fn;
	e->write_userdata = ud;
}

void sync__set_pulse_hook(struct sync_engine *e, tsync_pulse_fn fn, void *ud)
{
	e->pulse_hook = fn;
	e->pulse_userdata = ud;
}

void sync__set_commit_hook(struct sync_engine *e, tsync_commit_fn fn, void *ud)
{
	e->commit_hook = fn;
	e->commit_userdata = ud;
}

static struct undo *undo_push(struct sync_engine *e)
{
	if (e->n_undo == e->cap_undo) {
		size_t cap = e->cap_undo ? e->cap_undo * 2 : 64;
		struct undo *u = realloc(e->undo, cap * sizeof(*u));
		if (!u)
			return NULL;
		e->undo = u;
		e->cap_undo = cap;
	}
	memset(&e->undo[e->n_undo], 0, sizeof(e->undo[0]));
	return &e->undo[e->n_undo++];
}

void engine__undo_copy(struct sync_engine *e, uint32_t t)
{
	struct undo *u;

	if (!e->commit_hook || !(u = undo_push(e)))
		return;
	u->thing = t;
	if (value__copy(&u->val, &e->things[t].val) < 0)
		u->val.type = TSYNC_TYPE_NONE;
	u->ver = e->things[t].ver;
	u->boot = e->things[t].boot;
	u->ask_pending = e->things[t].ask_pending;
}

void engine__undo_mark(struct sync_engine *e, struct sync_peer *p, uint64_t ob, uint64_t id)
{
	struct undo *u;

	if (!e->commit_hook || !(u = undo_push(e)))
		return;
	u->thing = UNDO_MARK;
	u->peer = peer_index(e, p);
	u->id = id;
	u->boot = ob; /* the window the mark belongs to */
}

/* --- windows of executed request ids, per sender and origin boot ------------- */

struct dedup_win *engine__window_find(struct sync_peer *p, uint64_t ob)
{
	for (size_t i = 0; p->wins && i < SYNC_DEDUP_BOOTS; i++)
		if (p->wins[i].ob == ob)
			return &p->wins[i];
	return NULL;
}

struct dedup_win *engine__window(struct sync_engine *e, struct sync_peer *p, uint64_t ob)
{
	struct dedup_win *w = engine__window_find(p, ob), *oldest = NULL;

	if (w)
		return w;
	if (!p->wins) {
		/* Its first request: its windows, and a place on the list that
		 * windows_stage() walks. */
		if (e->n_win_peers == e->cap_win_peers) {
			size_t cap = e->cap_win_peers ? e->cap_win_peers * 2 : 8;
			uint32_t *l = realloc(e->win_peers, cap * sizeof(*l));
			if (!l)
				return NULL;
			e->win_peers = l;
			e->cap_win_peers = cap;
		}
		p->wins = calloc(SYNC_DEDUP_BOOTS, sizeof(*p->wins));
		if (!p->wins)
			return NULL;
		e->win_peers[e->n_win_peers++] = peer_index(e, p);
	}
	for (size_t i = 0; i < SYNC_DEDUP_BOOTS; i++) {
		if (!p->wins[i].ob) {
			oldest = &p->wins[i];
			break;
		}
		if (!oldest || p->wins[i].ob < oldest->ob)
			oldest = &p->wins[i];
	}
	/* Every slot holds a newer boot: this one's window was dropped (or
	 * never kept), so its requests' fate is unknown. Boots only grow, and
	 * a sender resumes only what its last boots left, so dropping the
	 * oldest is what a live sender can least miss. */
	if (oldest->ob && oldest->ob > ob)
		return NULL;
	if (oldest->ob) {
		log_info(e->log, "dropping the window of %s's boot %llu for its boot %llu", p->name,
		         (unsigned long long)oldest->ob, (unsigned long long)ob);
		if (e->durable && e->ops.persist_window) {
			e->ops.persist_window(e->ops.ctx, p->name, oldest->ob, NULL);
			e->persist_dirty = true;
		}
	}
	dedup__reset(&oldest->d);
	oldest->ob = ob;
	oldest->dirty = false;
	return oldest;
}

void engine__window_done(struct sync_engine *e, struct sync_peer *p, struct dedup_win *w, uint64_t id,
                         const char *err, const char *res)
{
	/* Usually marked before the act already (engine__act_point): the
	 * window is then written again only if the answer is worth keeping. */
	if (dedup__check(&w->d, id) == DEDUP_NEW) {
		dedup__mark(&w->d, id);
		engine__window_dirty(e, w);
	}
	if (dedup__remember(&w->d, id, err, res) < 0)
		log_error(e->log, "out of memory remembering the answer to %s's request %llu", p->name,
		          (unsigned long long)id);
	/* Always, durable: it replaces the "outcome unknown" of
	 * engine__window_pending(), after the commit hook (kept_flush()). */
	if (e->durable && e->ops.persist_answer) {
		struct kept_answer *k;
		if (e->n_kept == e->cap_kept) {
			size_t cap = e->cap_kept ? e->cap_kept * 2 : 16;
			k = realloc(e->kept, cap * sizeof(*k));
			if (!k) {
				/* Left "outcome unknown" on disk: a resent request learns no more. */
				log_error(e->log, "out of memory keeping the answer to %s's request %llu",
				          p->name, (unsigned long long)id);
				return;
			}
			e->kept = k;
			e->cap_kept = cap;
		}
		k = &e->kept[e->n_kept];
		k->peer = (uint32_t)(p - e->peers);
		k->ob = w->ob;
		k->id = id;
		k->err = err ? util__strdup(err) : NULL;
		k->res = res ? util__strdup(res) : NULL;
		e->n_kept++;
		e->persist_dirty = true;
	}
}

/* Stages the kept answers (write) or forgets them. */
static void kept_flush(struct sync_engine *e, bool write)
{
	for (size_t i = 0; i < e->n_kept; i++) {
		struct kept_answer *k = &e->kept[i];
		if (write)
			e->ops.persist_answer(e->ops.ctx, e->peers[k->peer].name, k->ob, k->id, k->err,
			                      k->res);
		free(k->err);
		free(k->res);
	}
	e->n_kept = 0;
}

void engine__window_pending(struct sync_engine *e, struct sync_peer *p, struct dedup_win *w, uint64_t id)
{
	/* Only an application with a commit hook says its acts are done at its
	 * commit (a journal): for the others the act is its side effect, and
	 * "done" is the better answer to a repeat after a crash in it. */
	if (!e->durable || !e->ops.persist_answer || !e->commit_hook)
		return;
	e->ops.persist_answer(e->ops.ctx, p->name, w->ob, id, SYNC_ERR_UNKNOWN, NULL);
	e->persist_dirty = true;
}

static void window_stage(struct sync_engine *e, struct sync_peer *p, struct dedup_win *w)
{
	w->dirty = false;
	if (!e->durable || !e->ops.persist_window)
		return;
	e->ops.persist_window(e->ops.ctx, p->name, w->ob, &w->d);
	e->persist_dirty = true;
}

void engine__window_dirty(struct sync_engine *e, struct dedup_win *w)
{
	w->dirty = true;
	e->wins_dirty = true;
}

/* Stages every window changed since the last commit: the commit that
 * follows precedes the answers, so no answer leaves before its window is
 * on disk. */
static void windows_stage(struct sync_engine *e)
{
	/* Most flushes follow io only: no window changed, and the walk is
	 * skipped. It covers the peers that have windows, not every peer (a
	 * thousand on a big site). */
	if (!e->wins_dirty)
		return;
	e->wins_dirty = false;
	for (size_t i = 0; i < e->n_win_peers; i++) {
		struct sync_peer *p = &e->peers[e->win_peers[i]];
		for (size_t k = 0; k < SYNC_DEDUP_BOOTS; k++) {
			struct dedup_win *w = &p->wins[k];
			if (w->ob && w->dirty)
				window_stage(e, p, w);
		}
	}
}

int engine__act_point(struct sync_engine *e, struct sync_peer *p, struct dedup_win *w)
{
	int r;

	if (!e->durable)
		return 0;
	if (w && w->dirty)
		window_stage(e, p, w);
	if (!e->persist_dirty || !e->ops.commit)
		return 0;
	r = e->ops.commit_unsynced ? e->ops.commit_unsynced(e->ops.ctx) : e->ops.commit(e->ops.ctx);
	if (r < 0) {
		log_error(e->log, "state commit failed before an act: %s; not acted on, the sender retries",
		          tsync_strerror(r));
		return r;
	}
	/* The answers wait for the sync (sync__flush commits first). */
	e->persist_dirty = e->ops.commit_unsynced != NULL;
	return 0;
}

void sync__set_durable(struct sync_engine *e, bool durable)
{
	e->durable = durable;
}

static struct sync_peer *peer_named(struct sync_engine *e, const char *name)
{
	uint32_t c;

	if (name_index__get(&e->site->controller_ix, name, &c) < 0)
		return NULL;
	return peer_of_ctrl(e, c);
}

int sync__restore_window(struct sync_engine *e, const char *sender, uint64_t ob, uint64_t top,
                         const uint64_t *bits, size_t n_words)
{
	struct sync_peer *p = peer_named(e, sender);
	struct dedup_win *w;

	if (!p || !ob || n_words != ARRAY_SIZE(w->d.bits))
		return 0;
	w = engine__window(e, p, ob);
	if (!w && !p->wins) {
		/* Its windows could not be allocated (with them, NULL is a
		 * boot older than every window kept: dropped, as when live). */
		log_error(e->log, "out of memory restoring the window of %s's boot %llu", sender,
		          (unsigned long long)ob);
		return -ENOMEM;
	}
	if (w) {
		w->d.top = top;
		memcpy(w->d.bits, bits, sizeof(w->d.bits));
	}
	return 0;
}

int sync__restore_answer(struct sync_engine *e, const char *sender, uint64_t ob, uint64_t id,
                         const char *err, const char *res)
{
	struct sync_peer *p = peer_named(e, sender);
	struct dedup_win *w = p ? engine__window_find(p, ob) : NULL;

	if (w && dedup__remember(&w->d, id, err, res) < 0) {
		log_error(e->log, "out of memory restoring an answer to %s", sender);
		return -ENOMEM;
	}
	return 0;
}

/* The commit failed: what received messages did since the last commit is
 * undone, newest first, and their answers are not sent. */
static void rollback(struct sync_engine *e)
{
	while (e->n_undo > 0) {
		struct undo *u = &e->undo[--e->n_undo];
		if (u->thing == UNDO_MARK) {
			struct dedup_win *w = engine__window_find(&e->peers[u->peer], u->boot);
			if (w) {
				dedup__unmark(&w->d, u->id);
				/* The store may hold the mark already (it
				 * commits before the hook): the next commit
				 * writes it off again. */
				engine__window_dirty(e, w);
			}
		} else {
			struct thing_rt *rt = &e->things[u->thing];
			value__clear(&rt->val);
			rt->val = u->val; /* ownership moves back */
			u->val.type = TSYNC_TYPE_NONE;
			rt->ver = u->ver;
			rt->boot = u->boot;
			rt->ask_pending = u->ask_pending;
		}
	}
	for (size_t i = 0; i < e->n_peers; i++) {
		struct sync_peer *p = &e->peers[i];
		for (size_t k = 0; k < p->n_answers; k++)
			engine__answer_free(&p->answers[k]);
		p->n_answers = 0;
		p->rx_seq_to_echo = 0;
		p->n_acks = 0; /* what they acknowledged is undone too */
	}
}

static void forget_undo(struct sync_engine *e)
{
	for (size_t i = 0; i < e->n_undo; i++)
		value__clear(&e->undo[i].val);
	e->n_undo = 0;
}

/* Owned things not acknowledged by all their users and requests waiting
 * for their answer were walks (every owned thing's users, every peer: a
 * thousand in the simulator, which asks every few milliseconds; a
 * benchmark's owner asks at every turn): now counters. The copies with an
 * ask or a request pending are still walked: a node uses few. */
size_t sync__unsettled(const struct sync_engine *e)
{
	size_t n = e->n_owned_unsettled + e->n_reqs;

	for (size_t i = 0; i < e->plan->n_used; i++) {
		const struct thing_rt *rt = &e->things[e->plan->used[i]];
		n += rt->ask_pending + rt->req_pending;
	}
	return n;
}

int sync__peer_stats(const struct sync_engine *e, size_t idx, uint64_t now, tsync_peer_stats *out)
{
	const struct sync_peer *p;
	size_t pending = 0;

	if (idx >= e->n_peers)
		return -ERANGE;
	p = &e->peers[idx];
	memset(out, 0, sizeof(*out));
	out->name = p->name;
	out->datagrams_sent = p->st.datagrams_sent;
	out->datagrams_received = p->st.datagrams_received;
	out->bytes_sent = p->st.bytes_sent;
	out->bytes_received = p->st.bytes_received;
	out->msgs_sent = p->st.msgs_sent;
	out->retransmits = p->st.retransmits;
	out->acked = p->st.acked;
	if (p->st.rejected)
		memcpy(out->rejected, p->st.rejected, sizeof(out->rejected));
	out->up = p->up;
	out->boot = p->boot;
	out->srtt_us = p->rtt.srtt_us;
	out->rttvar_us = p->rtt.rttvar_us;
	out->rto_ms = rtt__timeout(&p->rtt, p->backoff) / 1000u;
	out->last_heard_ms = p->ever_heard ? (int64_t)((now - p->last_heard_us) / 1000u) : -1;
	for (size_t k = 0; k < p->n_dirty; k++) {
		const struct out_slot *s = &p->out[p->dirty[k]];
		pending += s->acked_ver < e->things[s->thing].ver;
	}
	for (size_t k = 0; k < p->n_inq; k++)
		pending += e->things[p->inq[k]].ask_pending + e->things[p->inq[k]].req_pending;
	out->pending = pending + p->n_reqs;
	return 0;
}

/* --- sending ------------------------------------------------------------------ */

void engine__want_queue(struct sync_engine *e, struct sync_peer *p, enum flush_level level)
{
	if (!p->queued) {
		p->queued = true;
		e->flushq[e->n_flushq++] = peer_index(e, p);
		e->ops.want_flush(e->ops.ctx);
	}
	if (level > p->flush)
		p->flush = (uint8_t)level;
}

bool engine__pending(struct sync_engine *e, struct sync_peer *p)
{
	/* Acknowledgements come in the order the sets went: the walk goes on
	 * where the last one found the first unacknowledged set. */
	for (size_t k = p->acked_below; k < p->n_dirty; k++) {
		const struct out_slot *s = &p->out[p->dirty[k]];
		if (s->acked_ver < e->things[s->thing].ver) {
			p->acked_below = k;
			return true;
		}
	}
	p->acked_below = p->n_dirty;
	for (size_t k = 0; k < p->n_inq; k++)
		if (e->things[p->inq[k]].ask_pending || e->things[p->inq[k]].req_pending)
			return true;
	return p->n_reqs > 0;
}

/* One flush of one peer: the datagrams being built and the budget left. */
struct flush {
	struct sync_engine *e;
	struct sync_peer *p;
	size_t left;         /* datagrams that may still be sent */
	bool open;           /* a datagram is begun */
	bool added;          /* fl_add() put its message in the datagram */
	bool full;           /* the budget is spent: stop adding */
	uint64_t due_before; /* retransmit what was sent at or before this time */
	enum flush_level level;
};

static void fl_begin(struct flush *f)
{
	struct sync_engine *e = f->e;
	struct sync_peer *p = f->p;
	struct wire_env env;

	/* Every member but the ack ranges, which are read only up to n_acks:
	 * no memset of all 16 of them a datagram. */
	env.legacy = p->seed;
	env.from = e->site->controllers[e->me].name;
	env.from_len = 0; /* not read by the writer; set so that no member is undefined */
	env.boot = e->boot;
	env.seq = ++p->tx_seq;
	env.to_boot = p->boot;
	env.re = p->rx_seq_to_echo;
	env.durable = e->durable && !p->seed;
	env.n_acks = 0;
	/* I take acknowledgements by datagram; and mine go in the first
	 * datagram, whatever else it holds (ack.c). */
	env.acks_ok = !p->seed;
	if (env.acks_ok && p->n_acks) {
		memcpy(env.acks, p->acks, p->n_acks * sizeof(p->acks[0]));
		env.n_acks = p->n_acks;
		p->n_acks = 0;
	}
	if (wire__begin(&e->writer, &env) < 0)
		f->full = true;
	f->open = !f->full;
}

/* Remembers when my datagram tx_seq left, for the round-trip sample its
 * echo gives. Without memory for the ring, no sample: the timeout stays. */
static void sent_stamp(struct sync_engine *e, struct sync_peer *p)
{
	struct sent_stamp *st;

	if (!p->sent_ring && !(p->sent_ring = calloc(SYNC_SENT_RING, sizeof(*p->sent_ring))))
		return;
	st = &p->sent_ring[p->tx_seq % SYNC_SENT_RING];
	st->seq = p->tx_seq;
	st->us = e->now;
}

static void fl_send(struct flush *f)
{
	struct sync_engine *e = f->e;
	struct sync_peer *p = f->p;
	const void *out;
	size_t len;

	if (!f->open)
		return;
	f->open = false;
	if (wire__finish(&e->writer, &out, &len) < 0)
		return;
	/* The first datagram answers the one that made us send; the echo is for
	 * the peer's round-trip sample and must not be repeated later. */
	p->rx_seq_to_echo = 0;
	p->last_sent_us = e->now;
	sent_stamp(e, p);
	p->st.datagrams_sent++;
	p->st.bytes_sent += len;
	p->st.msgs_sent += e->writer.n_msgs;
	if (log__enabled(e->log, TSYNC_LOG_DEBUG)) {
		size_t jl = len - (e->codec.key ? WIRE_TAG_BYTES : 0);
		log_debug(e->log, "tx %s seq %llu: %.*s", p->name, (unsigned long long)p->tx_seq, (int)jl,
		          (const char *)out);
	}
	e->ops.send(e->ops.ctx, peer_index(e, p), out, len);
	if (f->left)
		f->left--;
	if (!f->left)
		f->full = true;
}

/* Adds a message (or, with raw, its bytes as a writer wrote them before,
 * a ',' before them: wire__add_raw_comma()), starting a new datagram when
 * the current one is full.
 * Returns false when the budget is spent and the message was not added. */
static bool fl_add_as(struct flush *f, const struct wire_msg *m, const char *raw, size_t raw_len)
{
	int r;

	f->added = false;
	if (f->full)
		return false;
	if (!f->open)
		fl_begin(f);
	if (f->full)
		return false;
	r = raw ? wire__add_raw_comma(&f->e->writer, raw, raw_len) : wire__add(&f->e->writer, m);
	if (r == -EMSGSIZE && f->e->writer.n_msgs > 0) {
		fl_send(f);
		if (f->full)
			return false;
		fl_begin(f);
		if (f->full)
			return false;
		r = raw ? wire__add_raw_comma(&f->e->writer, raw, raw_len) : wire__add(&f->e->writer, m);
	}
	if (r < 0) {
		/* A message the wire refuses (too large for an empty datagram, or
		 * malformed, e.g. a string that is not UTF-8) can never be sent;
		 * dropping it is logged rather than retried forever. */
		log_error(f->e->log, "err_ip_out_msg: a message about %s to %s %s; dropped",
		          m->io          ? m->io
		          : m->type_name ? m->type_name
		                         : "?",
		          f->p->name, r == -EMSGSIZE ? "does not fit in max_datagram" : "is malformed");
		return true;
	}
	f->added = true;
	return true;
}

static bool fl_add(struct flush *f, const struct wire_msg *m)
{
	return fl_add_as(f, m, NULL, 0);
}

/* Where a set's bytes of this pass are (sync.h, shared). */
struct shared_set {
	uint64_t ver; /* the version they carry */
	uint32_t gen; /* shared_gen of the pass that wrote them; 0: none */
	uint32_t off; /* in shared_buf, after a ',' (wire__add_raw_comma()) */
	uint32_t len;
};

/* The bytes of a set at version ver that another peer's datagram got in
 * this pass, into the open datagram if they fit there. */
static inline bool shared_copy(struct flush *f, const struct shared_set *sh, uint64_t ver)
{
	struct sync_engine *e = f->e;

	if (sh->gen != e->shared_gen || sh->ver != ver || !f->open ||
	    wire__add_raw_comma(&e->writer, e->shared_buf.data + sh->off, sh->len) < 0)
		return false;
	f->added = true;
	e->shared_copies++;
	return true;
}

/* Adds the set m of thing t: the bytes another peer's datagram got in this
 * pass if there are any, the writer's otherwise (kept for the next peer).
 * A seed peer's sets have no "ver" and are never shared. */
static bool shared_add(struct flush *f, uint32_t t, const struct wire_msg *m)
{
	struct sync_engine *e = f->e;
	struct shared_set *sh;
	const char *bytes;
	size_t n;

	if (!e->shared_on || f->p->seed)
		return fl_add(f, m);
	if (!e->shared) {
		e->shared = calloc(e->site->n_things ? e->site->n_things : 1, sizeof(*e->shared));
		if (!e->shared) {
			e->shared_on = false;
			return fl_add(f, m);
		}
	}
	sh = &e->shared[t];
	/* flush_sets() tried shared_copy() before filling in m. */
	if (sh->gen == e->shared_gen && sh->ver == m->ver) {
		/* It did not fit: fl_add_as() sends, begins anew, adds. */
		bytes = e->shared_buf.data + sh->off;
		if (!fl_add_as(f, m, bytes, sh->len))
			return false;
		e->shared_copies += f->added;
		return true;
	}
	if (!fl_add(f, m))
		return false;
	if (!f->added)
		return true;
	bytes = wire__last_msg(&e->writer, &n);
	sh->gen = 0;
	if (e->shared_buf.len >= UINT32_MAX - n || buf__reserve(&e->shared_buf, 1 + n) < 0)
		return true; /* the next peer writes its own */
	/* A comma before each: the sets of a pass that follow one another
	 * here and in a datagram are copied together. The writer has copied
	 * what it took from here before this may move the buffer: its copy
	 * waits only while wire__add_raw_comma() is called. */
	e->shared_buf.data[e->shared_buf.len] = ',';
	sh->off = (uint32_t)e->shared_buf.len + 1;
	sh->len = (uint32_t)n;
	sh->ver = m->ver;
	sh->gen = e->shared_gen;
	memcpy(e->shared_buf.data + sh->off, bytes, n);
	e->shared_buf.len += 1 + n;
	return true;
}

/* A pass of flushes begins (several peers: sets are shared) or ends. */
static void shared_pass(struct sync_engine *e, bool on)
{
	e->shared_on = on;
	if (!on)
		return;
	buf__reset(&e->shared_buf);
	if (++e->shared_gen == 0) {
		/* Wrapped: no entry may look current. */
		if (e->shared)
			memset(e->shared, 0, (e->site->n_things ? e->site->n_things : 1) * sizeof(*e->shared));
		e->shared_gen = 1;
	}
}

static bool due(const struct flush *f, uint64_t sent_us)
{
	if (sent_us == 0)
		return true;
	if (f->level == FLUSH_ALL)
		return true;
	return f->level == FLUSH_OVERDUE && sent_us <= f->due_before;
}

static void flush_answers(struct flush *f)
{
	struct sync_peer *p = f->p;

	for (size_t i = 0; i < p->n_answers; i++) {
		struct answer *a = &p->answers[i];
		/* Answers are never dropped for the budget: they answer a datagram
		 * that just arrived, so the peer is alive. */
		if (f->full) {
			f->full = false;
			f->left = 1;
		}
		fl_add(f, &a->m);
		engine__answer_free(a);
	}
	p->n_answers = 0;
}

static void flush_sets(struct flush *f)
{
	struct sync_engine *e = f->e;
	struct sync_peer *p = f->p;
	size_t keep = 0, k;
	struct wire_msg m;
	bool shared;

	/* Nothing new since the last walk, and nothing overdue asked for:
	 * what is on the list was sent, and waits for its acknowledgement. */
	if (f->level == FLUSH_NEW && !p->sets_unsent)
		return;
	p->sets_unsent = false;
	p->acked_below = 0;
	shared = e->shared_on && !p->seed && e->shared;
	/* What every set has; the loop fills in the rest. */
	memset(&m, 0, sizeof(m));
	m.type = WIRE_T_IO;
	m.op = WIRE_OP_SET;
	m.has_val = true;
	m.has_ver = !p->seed;
	for (k = 0; k < p->n_dirty; k++) {
		uint32_t si = p->dirty[k];
		struct out_slot *s = &p->out[si];
		struct thing_rt *rt = &e->things[s->thing];

		if (s->acked_ver >= rt->ver) {
			s->listed = false; /* acknowledged: off the list */
			continue;
		}
		p->dirty[keep++] = si;
		if (!(s->sent_ver < rt->ver || due(f, s->sent_us)))
			continue;
		if (f->full) {
			p->sets_unsent = true; /* the next flush goes on */
			continue;
		}
		/* Most sets of a pass to several users: the bytes another
		 * user's datagram got, into the open datagram, nothing else
		 * (shared_add() does the rest). */
		if (shared && shared_copy(f, &e->shared[s->thing], rt->ver))
			goto sent;
		m.io = e->site->things[s->thing].name;
		m.val = rt->val;
		m.ver = rt->ver;
		if (!shared_add(f, s->thing, &m)) {
			p->sets_unsent = true;
			continue;
		}
	sent:
		/* A user that acknowledges by datagram names this one. */
		if (f->added && !p->seed)
			(void)ack__record(p, p->tx_seq, si, rt->ver);
		s->sent_ver = rt->ver;
		s->sent_us = e->now;
	}
	p->n_dirty = keep;
}

static void flush_inq(struct flush *f)
{
	struct sync_engine *e = f->e;
	struct sync_peer *p = f->p;
	size_t keep = 0;

	for (size_t k = 0; k < p->n_inq; k++) {
		uint32_t t = p->inq[k];
		struct thing_rt *rt = &e->things[t];
		struct wire_msg m;

		if (!rt->ask_pending && !rt->req_pending) {
			rt->in_listed = false;
			continue;
		}
		p->inq[keep++] = t;
		memset(&m, 0, sizeof(m));
		m.type = WIRE_T_IO;
		m.io = e->site->things[t].name;
		if (rt->req_pending && due(f, rt->req_sent_us)) {
			m.op = WIRE_OP_SET;
			m.has_val = true;
			m.val = rt->req_val;
			m.has_id = !p->seed;
			m.id = rt->req_id;
			if (fl_add(f, &m))
				rt->req_sent_us = e->now;
		} else if (rt->ask_pending && !rt->req_pending && due(f, rt->ask_sent_us)) {
			/* A pending request's answer carries the value too. */
			m.op = WIRE_OP_ASK;
			if (fl_add(f, &m))
				rt->ask_sent_us = e->now;
		}
	}
	p->n_inq = keep;
}

/* The message of a request, as sent (pointers borrowed from r). */
static void outreq_msg(struct sync_engine *e, struct sync_peer *p, const struct outreq *r, struct wire_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->type = r->type;
	m->has_id = !p->seed;
	m->id = r->id;
	m->ob = r->ob;
	if (r->is_pulse) {
		m->op = WIRE_OP_PULSE;
		m->io = e->site->things[r->thing].name;
		m->has_val = true;
		m->val = r->val;
		m->ms = r->ms;
	} else {
		m->type_name = r->type_name;
		m->role = r->role;
		m->cmd = r->cmd;
		m->body = r->body;
	}
}

/* Whether a request fits in an otherwise empty datagram, with the largest
 * envelope: if not, it could never be sent, and the caller must know now. */
static int outreq_fits(struct sync_engine *e, struct sync_peer *p, const struct outreq *r)
{
	struct wire_env env = {.from = e->site->controllers[e->me].name,
	                       .boot = INT64_MAX,
	                       .seq = INT64_MAX,
	                       .to_boot = INT64_MAX,
	                       .re = INT64_MAX};
	struct wire_writer w;
	struct wire_msg m;
	int err;

	if (p->seed)
		env.legacy = true;
	wire__writer_init(&w, &e->codec);
	outreq_msg(e, p, r, &m);
	m.id = INT64_MAX;
	err = wire__begin(&w, &env);
	if (err == 0)
		err = wire__add(&w, &m);
	wire__writer_free(&w);
	return err;
}

static void flush_reqs(struct flush *f)
{
	struct sync_engine *e = f->e;
	struct sync_peer *p = f->p;
	uint64_t window_end;

	if (!p->reqs)
		return;
	/* Never more than max_outstanding ids in flight: the receiver's
	 * duplicate window depends on it. */
	window_end = p->reqs->id + e->site->max_outstanding;
	for (struct outreq *r = p->reqs; r && r->id < window_end && !f->full; r = r->next) {
		struct wire_msg m;

		if (!due(f, r->sent_us))
			continue;
		outreq_msg(e, p, r, &m);
		if (!fl_add(f, &m))
			break;
		if (!r->sent_boot)
			r->sent_boot = p->boot ? p->boot : UINT64_MAX;
		r->sent_us = e->now;
	}
}

/* A datagram without messages: the envelope says who I am, which boot, and
 * that I am alive. False if it could not be built. */
static bool send_empty(struct sync_engine *e, struct sync_peer *p, uint64_t to_boot, uint64_t re)
{
	struct wire_env env;
	const void *out;
	size_t len;

	memset(&env, 0, sizeof(env));
	env.from = e->site->controllers[e->me].name;
	env.boot = e->boot;
	env.seq = ++p->tx_seq;
	env.to_boot = to_boot;
	env.re = re;
	env.durable = e->durable;
	/* No "ack" offer in an empty datagram: a heartbeat stays as short as
	 * it was; the offer matters in the datagrams that carry sets. */
	if (wire__begin(&e->writer, &env) < 0 || wire__finish(&e->writer, &out, &len) < 0)
		return false;
	/* A hello is answered at once (input.c): its echo is a round trip. */
	sent_stamp(e, p);
	p->last_sent_us = e->now;
	p->st.datagrams_sent++;
	p->st.bytes_sent += len;
	e->ops.send(e->ops.ctx, peer_index(e, p), out, len);
	return true;
}

void engine__send_hello(struct sync_engine *e, struct sync_peer *p, uint64_t to_boot, uint64_t re)
{
	log_debug(e->log, "tx %s hello (boot %llu for its boot %llu)", p->name, (unsigned long long)e->boot,
	          (unsigned long long)to_boot);
	if (send_empty(e, p, to_boot, re))
		p->last_hello_us = e->now;
}

/* Addressed to the boot we know (0 if none yet: then it answers with a
 * hello that teaches us its boot). Never answered otherwise. */
static void send_heartbeat(struct sync_engine *e, struct sync_peer *p)
{
	log_debug(e->log, "tx %s heartbeat", p->name);
	send_empty(e, p, p->boot, 0);
}

static bool heartbeats(const struct sync_engine *e, const struct sync_peer *p)
{
	return e->heartbeat_us && p->heartbeat;
}

/* Arms the peer's one timer for the earliest of its deadlines: the
 * retransmission, the heartbeat owed to it, and the moment its silence
 * makes it down. A deadline that moved later (a datagram went out or came
 * in) leaves the timer as it is: it fires early, finds nothing due and is
 * armed again. That costs at most a wake-up per heartbeat period, where
 * following every datagram would cost a timer operation each. */
static void peer_arm(struct sync_engine *e, struct sync_peer *p)
{
	uint64_t at = p->timer_at ? p->timer_at : UINT64_MAX;

	if (p->timing)
		return;
	if (heartbeats(e, p)) {
		if (p->last_sent_us + e->heartbeat_us < at)
			at = p->last_sent_us + e->heartbeat_us;
		if (p->up && p->last_heard_us + e->silent_us < at)
			at = p->last_heard_us + e->silent_us;
	}
	if (at == UINT64_MAX) {
		if (p->armed_at) {
			p->armed_at = 0;
			e->ops.arm(e->ops.ctx, peer_index(e, p), UINT64_MAX);
		}
		return;
	}
	if (p->armed_at && p->armed_at <= at)
		return;
	p->armed_at = at;
	e->ops.arm(e->ops.ctx, peer_index(e, p), at > e->now ? at - e->now : 0);
}

/* The heartbeat owed to `due`, and those owed within a quarter period to
 * the other peers: a node then wakes once per period for all of them, not
 * once for each. They stay in step while the site is idle, so each still
 * gets one per period. */
static void send_heartbeats(struct sync_engine *e, struct sync_peer *due)
{
	uint64_t horizon = e->now + e->heartbeat_us / 4u;

	for (size_t i = 0; i < e->n_hb_peers; i++) {
		struct sync_peer *p = &e->peers[e->hb_peers[i]];

		if (!heartbeats(e, p) || p->last_sent_us + e->heartbeat_us > horizon)
			continue;
		send_heartbeat(e, p);
		if (p != due) {
			/* Its timer was armed for the heartbeat just sent. */
			p->armed_at = 0;
			peer_arm(e, p);
		}
	}
}

void engine__flush_peer(struct sync_engine *e, struct sync_peer *p, enum flush_level level,
                        size_t max_datagrams)
{
	uint64_t sent_before = p->st.datagrams_sent;
	struct flush f;
	bool was_pending;

	memset(&f, 0, sizeof(f));
	f.e = e;
	f.p = p;
	f.left = max_datagrams ? max_datagrams : 1;
	f.level = level;
	f.due_before = e->now - (rtt__timeout(&p->rtt, p->backoff) * 3u / 4u);
	if (f.due_before > e->now)
		f.due_before = 0;

	flush_answers(&f);
	/* Acknowledgements are answers too: they go now, alone if need be. */
	if (p->n_acks && !f.open) {
		f.full = false;
		f.left = f.left ? f.left : 1;
		fl_begin(&f);
	}
	/* While a peer does not answer, new messages wait for the timer's
	 * probe: a peer that is down costs one datagram per backoff period. */
	if (p->backoff > 0 && level == FLUSH_NEW) {
		fl_send(&f);
		p->rx_seq_to_echo = 0; /* as below: never echoed later */
		goto greet;
	}
	flush_sets(&f);
	flush_inq(&f);
	flush_reqs(&f);
	fl_send(&f);
	/* Only an immediate answer may echo the peer's seq: a later datagram
	 * would make its round-trip sample include our idle time. */
	p->rx_seq_to_echo = 0;

	was_pending = p->oldest_pending_us != 0;
	if (engine__pending(e, p)) {
		uint64_t d = rtt__timeout(&p->rtt, p->backoff);
		if (!was_pending)
			p->oldest_pending_us = e->now;
		/* A timer armed with a backoff that has since been reset (the
		 * peer came back) would leave what we just sent unrepeated for
		 * that long if it is lost: one timeout from now instead. */
		if (!p->timer_at || p->timer_at > e->now + d)
			p->timer_at = e->now + d;
	} else {
		p->oldest_pending_us = 0;
		p->backoff = 0;
		p->timer_at = 0;
	}
	peer_arm(e, p);
greet:
	/* It was heard after a silence (or I just started) and nothing else
	 * went to it: a heartbeat now tells it that the path works, so that it
	 * sends what it held back for us at once instead of at its next probe. */
	if (p->greet) {
		p->greet = false;
		if (p->st.datagrams_sent == sent_before)
			send_heartbeat(e, p);
	}
}

void sync__flush(struct sync_engine *e, uint64_t now)
{
	e->now = now;
	windows_stage(e);
	if (e->first_value) {
		e->first_value = false;
		e->persist_dirty = true;
	}
	if (e->persist_dirty || e->acts_pending) {
		/* The durability rule: what we are about to acknowledge or
		 * announce is on disk first, ours and the application's. The
		 * application's first: our commit holds the answers kept for
		 * requests sent again, and an answer on disk before what the
		 * handler staged would, after a crash between the two, tell the
		 * sender "done" for a request whose act was lost. In this order
		 * such a request is answered "outcome unknown" instead
		 * (TSYNC_EPEER_RESTARTED), or the application recognises it. */
		int r = 0;
		if (e->acts_pending && e->commit_hook) {
			r = e->commit_hook(e->commit_userdata, e->node);
			/* Under backpressure this fails for every batch: say it when
			 * it starts and when it ends, not each time. */
			if (r < 0 && !e->commit_failing)
				log_warn(e->log,
				         "commit hook failed (%s): acknowledgements withheld, senders retry",
				         tsync_strerror(r));
			else if (r < 0)
				log_debug(e->log, "commit hook failed again (%s)", tsync_strerror(r));
			else if (e->commit_failing)
				log_info(e->log, "commit hook succeeds again: acknowledging");
			e->commit_failing = r < 0;
		}
		if (r < 0 && e->commit_hook) {
			rollback(e);
			/* The windows without the undone marks replace the staged ones. */
			windows_stage(e);
		}
		kept_flush(e, r == 0);
		if (e->persist_dirty && e->ops.commit) {
			int c = e->ops.commit(e->ops.ctx);
			if (c < 0) {
				log_error(e->log, "state commit failed: %s", tsync_strerror(c));
				if (r == 0 && e->commit_hook)
					rollback(e);
				r = c;
			}
		}
		forget_undo(e);
		e->persist_dirty = false;
		e->acts_pending = false;
	}
	/* A stack: a peer is on it at most once, and may be pushed again by a
	 * callback while we send. */
	shared_pass(e, e->n_flushq > 1);
	while (e->n_flushq > 0) {
		struct sync_peer *p = &e->peers[e->flushq[--e->n_flushq]];
		enum flush_level level = (enum flush_level)p->flush;
		p->queued = false;
		p->flush = FLUSH_NONE;
		if (level != FLUSH_NONE)
			engine__flush_peer(e, p, level, SYNC_BURST_MAX);
	}
	shared_pass(e, false);
}

static void peer_down(struct sync_engine *e, struct sync_peer *p, const char *why, uint64_t for_us)
{
	tsync_event ev;

	p->up = false;
	memset(&ev, 0, sizeof(ev));
	ev.kind = TSYNC_EVENT_PEER_DOWN;
	ev.controller = p->name;
	log_warn(e->log, "warn_notify_expired peer %s down: %s for %llu ms", p->name, why,
	         (unsigned long long)(for_us / 1000u));
	engine__emit(e, &ev);
}

void engine__heard(struct sync_engine *e, struct sync_peer *p, bool has_msgs)
{
	/* Whether the path to it was broken and works again: it was down, or,
	 * as a heartbeat peer, silent for longer than a period and a half. */
	bool back = !p->up || (heartbeats(e, p) && e->now - p->last_heard_us >= e->heartbeat_us * 3u / 2u);

	p->ever_heard = true;
	p->last_heard_us = e->now;
	/* Then whatever waited for the backoff goes now, not at our next probe,
	 * which may be seconds away. An answer is progress too. A heartbeat
	 * from a peer heard all along is not: it may be refusing to acknowledge
	 * (its journal is full), and resending to it each period would be a
	 * flood. */
	if (p->backoff > 0 && (has_msgs || back || !heartbeats(e, p))) {
		p->backoff = 0;
		engine__want(e, p, FLUSH_OVERDUE);
	}
	if (!p->up) {
		tsync_event ev;
		p->up = true;
		memset(&ev, 0, sizeof(ev));
		ev.kind = TSYNC_EVENT_PEER_UP;
		ev.controller = p->name;
		log_info(e->log, "peer %s up (boot %llu)", p->name, (unsigned long long)p->boot);
		engine__emit(e, &ev);
	}
	if (back && heartbeats(e, p)) {
		/* It may have held things back for us too: answer at once. */
		p->greet = true;
		engine__want(e, p, FLUSH_NEW);
	}
}

static void retransmit(struct sync_engine *e, struct sync_peer *p)
{
	uint64_t now = e->now, d;

	p->timer_at = 0;
	if (!engine__pending(e, p)) {
		p->backoff = 0;
		p->oldest_pending_us = 0;
		return;
	}
	p->st.retransmits++;
	if (p->backoff == 0 || p->st.retransmits % 16 == 1)
		log_debug(e->log, "warn_retry %s: retransmit, backoff %u, rto %u ms", p->name, p->backoff,
		          rtt__timeout(&p->rtt, p->backoff) / 1000u);
	/* The first expiry resends everything overdue; after that, the peer
	 * is silent and gets one datagram per period until it answers. */
	engine__flush_peer(e, p, FLUSH_OVERDUE, p->backoff == 0 ? SYNC_BURST_MAX : 1);
	if (rtt__timeout(&p->rtt, p->backoff) < p->rtt.max_us)
		p->backoff++;

	if (p->up && p->oldest_pending_us && now - p->oldest_pending_us >= e->site->down_after_ms * 1000ull &&
	    now - p->last_heard_us >= e->site->down_after_ms * 1000ull)
		peer_down(e, p, "no answer", now - p->oldest_pending_us);
	if (engine__pending(e, p)) {
		/* Jitter keeps controllers that lost the same peer from probing
		 * in lockstep. */
		d = rtt__timeout(&p->rtt, p->backoff);
		d += prng__next(&e->prng) % (d / 8 + 1);
		p->timer_at = now + d;
	} else {
		p->timer_at = 0;
	}
}

void sync__timer(struct sync_engine *e, uint32_t peer, uint64_t now)
{
	struct sync_peer *p;

	if (peer >= e->n_peers)
		return;
	p = &e->peers[peer];
	e->now = now;
	p->armed_at = 0;
	p->timing = true;
	if (p->timer_at && now + SYNC_TIMER_SLACK_US >= p->timer_at)
		retransmit(e, p);
	if (heartbeats(e, p)) {
		/* Within an eighth of a short period, so that early is never a
		 * heartbeat or a silence of its own. */
		uint64_t slack =
		    e->heartbeat_us / 8 < SYNC_TIMER_SLACK_US ? e->heartbeat_us / 8 : SYNC_TIMER_SLACK_US;
		if (p->up && now + slack >= p->last_heard_us + e->silent_us)
			peer_down(e, p, "nothing heard", now - p->last_heard_us);
		if (now + slack >= p->last_sent_us + e->heartbeat_us)
			send_heartbeats(e, p);
	}
	p->timing = false;
	peer_arm(e, p);
}

void sync__input(struct sync_engine *e, int addr_peer, const void *buf, size_t len, uint64_t now)
{
	e->now = now;
	input__datagram(e, addr_peer, buf, len);
}

/* Called by input.c when a peer shows a boot we had not seen. */
void engine__peer_boot(struct sync_engine *e, struct sync_peer *p, uint64_t boot)
{
	struct outreq **pp = &p->reqs, *r;
	bool restarted = p->boot != 0;

	p->boot = boot;
	p->replay.boot = 0; /* the window restarts with the new boot */
	/* Acks of its earlier boot's datagrams, and my record of what I sent
	 * to its earlier boot, mean nothing to either now. */
	ack__reset(p);
	/* Its request windows stay: they are per origin boot, and a peer that
	 * restarted may resume requests of its earlier boots. */
	/* Its copies are gone: nothing it acknowledged before counts. */
	for (size_t k = 0; k < p->n_out; k++) {
		engine__set_acked(e, &p->out[k], 0);
		p->out[k].sent_us = 0;
		if (e->things[p->out[k].thing].ver)
			slot_dirty(e, p, (uint32_t)k);
	}
	/* Requests it may or may not have acted on before it restarted: a peer
	 * with durable windows restored the ids it executed, so they go again,
	 * to its new boot, under the same (origin boot, id), and it answers
	 * what it did without doing it again. Any other peer may have acted or
	 * not: they complete as such, at most once across restarts, never
	 * twice. */
	while ((r = *pp)) {
		if (r->sent_boot && r->sent_boot != UINT64_MAX && r->sent_boot != boot && !p->durable) {
			*pp = r->next;
			if (p->reqs_tail == &r->next)
				p->reqs_tail = pp;
			p->n_reqs--;
			e->n_reqs--;
			req_forget(e, p, r);
			if (r->done)
				r->done(r->userdata, e->node, TSYNC_EPEER_RESTARTED, NULL);
			outreq_free(r);
			continue;
		}
		/* Sent before we knew its boot (it refused them: wrong to_boot),
		 * or to its earlier boot that keeps durable windows. */
		r->sent_boot = 0;
		r->sent_us = 0;
		pp = &r->next;
	}
	for (size_t k = 0; k < p->n_inq; k++) {
		e->things[p->inq[k]].ask_sent_us = 0;
		e->things[p->inq[k]].req_sent_us = 0;
	}
	p->backoff = 0;
	if (restarted)
		log_info(e->log, "peer %s restarted (boot %llu)", p->name, (unsigned long long)boot);
	engine__want(e, p, FLUSH_ALL);
}
