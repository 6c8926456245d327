/*
 * lib/sync: what the engine does with a datagram it receives.
 *
 * Order of checks, cheapest and least trusting first: size and tag (wire),
 * sender, replay window, to_boot; only then are messages acted on, each on
 * its own, so one bad message never costs its neighbours.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sync/sync.h"

/* A network duplicates datagrams and peers restart: those refusals are
 * routine, counted, and logged only at debug level. */
tsync_log_level input__reject_level(tsync_reject why)
{
	return why == TSYNC_REJ_REPLAY || why == TSYNC_REJ_STALE_BOOT ? TSYNC_LOG_DEBUG : TSYNC_LOG_WARN;
}

static void reject(struct sync_engine *e, struct sync_peer *p, tsync_reject why, const char *what,
                   const char *detail)
{
	tsync_log_level level = input__reject_level(why);

	if (!p)
		e->rejected_unknown[why]++;
	else if (p->st.rejected || (p->st.rejected = calloc(TSYNC_REJ_COUNT, sizeof(*p->st.rejected))))
		p->st.rejected[why]++; /* (without memory for the counters, uncounted) */
	/* The counters are exact; the log is not a counter. A flood of forged
	 * datagrams must not fill the disk one line each, so the node logs
	 * them rate-limited, keyed by the source address it alone knows. */
	if (e->ops.rejected) {
		e->ops.rejected(e->ops.ctx, p ? p->name : NULL, why, what, detail);
		return;
	}
	if (log__enabled(e->log, level))
		log__printf(e->log, level, "%s from %s%s%s%s", tsync_reject_name(why),
		            p ? p->name : "an unknown sender", what ? ": " : "", what ? what : "",
		            detail ? detail : "");
}

struct answer *engine__answer(struct sync_engine *e, struct sync_peer *p)
{
	struct answer *a;

	if (p->n_answers == p->cap_answers) {
		size_t cap = p->cap_answers ? p->cap_answers * 2 : 8;
		a = realloc(p->answers, cap * sizeof(*a));
		if (!a)
			return NULL;
		p->answers = a;
		p->cap_answers = cap;
	}
	a = &p->answers[p->n_answers++];
	memset(a, 0, sizeof(*a));
	return a;
}

/* An answer about a thing; `io` is borrowed from the site. */
static struct answer *answer_io(struct sync_engine *e, struct sync_peer *p, enum wire_op op, uint32_t t)
{
	struct answer *a = engine__answer(e, p);

	if (!a)
		return NULL;
	a->m.type = WIRE_T_IO;
	a->m.op = op;
	a->m.io = e->site->things[t].name;
	return a;
}

void engine__answer_free(struct answer *a)
{
	free(a->owned_res);
	free(a->owned_err);
	free(a->owned_type);
	free(a->owned_role);
	free(a->owned_cmd);
	value__clear(&a->owned_val);
	memset(a, 0, sizeof(*a));
}

/* Fills an answer with a thing's value, as the value it holds now (copied:
 * the thing may change again before the answer leaves). */
static void answer_value(struct sync_engine *e, struct sync_peer *p, struct answer *a, uint32_t t)
{
	const struct thing_rt *rt = &e->things[t];

	if (rt->ver && value__copy(&a->owned_val, &rt->val) == 0) {
		a->m.has_val = true;
		a->m.val = a->owned_val;
		a->m.has_ver = !p->seed;
		a->m.ver = rt->ver;
	}
}

/* Applies a value sent by a thing's owner, if it is newer than what I hold.
 * Inline: a user calls it for every set of a batch, and its frame (the
 * registers saved and restored) was 17 of its instructions a set. */
static inline __attribute__((always_inline)) void apply_copy(struct sync_engine *e, struct sync_peer *p, uint32_t t, const struct wire_msg *m,
                       uint64_t boot)
{
	struct thing_rt *rt = &e->things[t];
	bool changed;
	tsync_value c, copy;
	tsync_event ev;

	if (!m->has_val)
		return;
	if (engine__coerce(e->site, t, &m->val, &c) < 0) {
		reject(e, p, TSYNC_REJ_VAL, e->site->things[t].name, NULL);
		return;
	}
	/* Legacy messages have no version: the newest arrival wins, and the
	 * owner's retries repair what reordering breaks. */
	if (m->has_ver && rt->ver && (boot < rt->boot || (boot == rt->boot && m->ver <= rt->ver))) {
		/* Not newer than what I hold, so I hold the owner's latest or
		 * newer: an ask is answered all the same. */
		rt->ask_pending = false;
		return;
	}
	if (c.type == TSYNC_TYPE_INT && rt->val.type == TSYNC_TYPE_INT) {
		/* An integer over an integer (a batch's every set): no string to
		 * compare, copy or free. */
		changed = !rt->ver || rt->val.u.i != c.u.i;
		engine__undo_copy(e, t);
		rt->val = c;
	} else {
		changed = !rt->ver || !value__equal(&rt->val, &c);
		engine__undo_copy(e, t);
		if (changed) {
			if (value__copy(&copy, &c) < 0)
				return;
			value__clear(&rt->val);
			rt->val = copy;
		}
	}
	rt->ver = m->has_ver ? m->ver : rt->ver + 1;
	rt->boot = boot;
	rt->ask_pending = false;
	if (!changed)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.kind = TSYNC_EVENT_CHANGED;
	ev.thing = e->site->things[t].name;
	ev.value = rt->val;
	ev.controller = p->name;
	e->acts_pending = true;
	engine__emit_thing(e, t, &ev);
}

/* A user asks the owner (me) to set a thing: to_be in, as_is out. */
static void on_set_request(struct sync_engine *e, struct sync_peer *p, uint32_t t, const struct wire_msg *m,
                           uint64_t boot)
{
	struct thing_rt *rt = &e->things[t];
	const struct site_thing *th = &e->site->things[t];
	struct answer *a = answer_io(e, p, WIRE_OP_REPLY, t);
	tsync_value c, as_is;

	if (!a)
		return;
	a->m.has_re = m->has_id;
	a->m.re = m->id;
	if (!th->settable) {
		reject(e, p, TSYNC_REJ_REFUSED, th->name, " is not settable");
		a->m.err = tsync_reject_name(TSYNC_REJ_REFUSED);
		goto answer;
	}
	if (!m->has_val || engine__coerce(e->site, t, &m->val, &c) < 0) {
		reject(e, p, TSYNC_REJ_VAL, th->name, NULL);
		a->m.err = tsync_reject_name(TSYNC_REJ_VAL);
		goto answer;
	}
	/* An older request from the same sender that arrives after a newer
	 * one (reordering, or a duplicate) must not undo it; a repeat of the
	 * last one (its answer was lost) gets that answer again, so a failed
	 * act is not acknowledged as done the second time. */
	if (m->has_id && rt->req_from == p->ctrl && rt->req_from_boot == boot && m->id <= rt->req_from_id) {
		if (m->id == rt->req_from_id)
			a->m.err = rt->req_from_err;
		goto answer;
	}
	if (m->has_id) {
		rt->req_from = p->ctrl;
		rt->req_from_boot = boot;
		rt->req_from_id = m->id;
		rt->req_from_err = NULL;
	}
	as_is = c;
	if (e->write_hook) {
		int r = e->write_hook(e->write_userdata, e->node, th->name, &c, &as_is);
		/* The value was fine but the output did not take it: a failure the
		 * requester must see as such, not as a refusal of its value. */
		if (r == TSYNC_EWRITE) {
			log_error(e->log,
			          SYNC_ERR_WRITE " set of %s by %s failed: the output was not written",
			          th->name, p->name);
			a->m.err = SYNC_ERR_WRITE;
			goto refused;
		}
		if (r < 0 || engine__coerce(e->site, t, &as_is, &as_is) < 0) {
			log_warn(e->log, "err_ip_in_refused set of %s by %s refused by the write hook: %s",
			         th->name, p->name, tsync_strerror(r));
			a->m.err = tsync_reject_name(TSYNC_REJ_REFUSED);
			goto refused;
		}
	}
	engine__apply_owned(e, t, &as_is, p->name, true);
	goto answer;
refused:
	if (m->has_id)
		rt->req_from_err = a->m.err;
answer:
	answer_value(e, p, a, t);
}

static int status_of_err(const char *err);

/* The window a request with an id belongs to: its origin boot's, named by
 * "ob" when the sender resumed it after a restart of its own, else the
 * boot of the datagram. NULL, with the answer `a` filled, when there is
 * none: an origin boot from the future is malformed; one whose window is
 * no longer kept leaves the request's fate unknown, and it is not acted on
 * (a second act is what the window exists to prevent). */
static struct dedup_win *request_window(struct sync_engine *e, struct sync_peer *p, const struct wire_msg *m,
                                        uint64_t boot, struct wire_msg *a)
{
	/* The seed's lists carry no boot: one window, as ever. */
	uint64_t ob = m->ob ? m->ob : boot ? boot : 1;
	struct dedup_win *w;

	if (m->ob && m->ob > boot) {
		reject(e, p, TSYNC_REJ_REQ, m->io ? m->io : m->type_name, " (origin boot from the future)");
		a->err = tsync_reject_name(TSYNC_REJ_REQ);
		return NULL;
	}
	w = engine__window(e, p, ob);
	if (!w) {
		log_warn(e->log, SYNC_ERR_UNKNOWN " %s's request %llu of its boot %llu: that window is gone",
		         p->name, (unsigned long long)m->id, (unsigned long long)ob);
		a->err = SYNC_ERR_UNKNOWN;
	}
	return w;
}

/* The request just marked in w could not be made durable before its act:
 * it did not act, so it is not marked and not answered (its answer, the
 * newest, is dropped), and the sender's repeat is a new request. */
static void unwind_request(struct sync_engine *e, struct sync_peer *p, struct dedup_win *w, uint64_t id)
{
	if (w) {
		dedup__unmark(&w->d, id);
		engine__window_dirty(e, w);
	}
	if (p->n_answers)
		engine__answer_free(&p->answers[--p->n_answers]);
}

/* How the owner answered my set request, for tsync_thing_state.request_error. */
static int set_status_of_err(const char *err)
{
	if (err && !strcmp(err, tsync_reject_name(TSYNC_REJ_VAL)))
		return TSYNC_EVALUE;
	return status_of_err(err);
}

/* The slot of thing t among those I own that p uses. The plan fills p->out
 * in thing order, so it is found by bisection: an acknowledgement costs
 * O(log n), not a walk of every thing the peer uses (which showed in the
 * profile of a batch of acknowledgements). The last of equal slots, as a
 * walk finds it. */
static struct out_slot *out_slot_of(struct sync_peer *p, uint32_t t)
{
	size_t lo = 0, hi = p->n_out;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (p->out[mid].thing <= t)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo > 0 && p->out[lo - 1].thing == t ? &p->out[lo - 1] : NULL;
}

static void on_io(struct sync_engine *e, struct sync_peer *p, const struct wire_msg *m, uint64_t boot)
{
	const struct site_thing *th;
	struct thing_rt *rt;
	struct answer *a;
	bool i_own, from_owner, from_user = false;
	uint32_t t;

	if (engine__thing_named_len(e, &e->rx_names, m->io, m->io_len, &t) < 0) {
		reject(e, p, TSYNC_REJ_IO, m->io, NULL);
		return;
	}
	th = &e->site->things[t];
	rt = &e->things[t];
	i_own = rt->role == THING_OWNED;
	from_owner = rt->role == THING_USED && th->owner == p->ctrl;
	for (size_t u = 0; i_own && u < th->n_users; u++)
		from_user |= th->users[u] == p->ctrl;
	if (!from_owner && !from_user) {
		reject(e, p, TSYNC_REJ_THS_I_USE, m->io, NULL);
		return;
	}

	switch (m->op) {
	case WIRE_OP_SET:
		if (from_owner) {
			apply_copy(e, p, t, m, boot);
			if (e->rx_by_dg && m->has_ver) {
				/* Acknowledged with the whole datagram (ack.c) if I
				 * now hold this version or a newer one, as the reply
				 * below would say; answered after it otherwise. */
				if (!(rt->ver && (rt->boot > boot || (rt->boot == boot && rt->ver >= m->ver))))
					e->rx_uncovered = true;
				e->rx_sets[e->n_rx_sets++] = t;
				break;
			}
			a = answer_io(e, p, WIRE_OP_REPLY, t);
			if (a)
				answer_value(e, p, a, t);
		} else {
			on_set_request(e, p, t, m, boot);
		}
		break;
	case WIRE_OP_REPLY:
		if (from_owner) {
			/* The owner's answer to my ask or to my request. */
			if (m->err && m->has_re && rt->req_pending && m->re >= rt->req_id)
				log_warn(e->log, "%s: set of %s refused by %s", m->err, m->io, p->name);
			if (rt->req_pending && (!m->has_re ? !m->has_ver : m->re >= rt->req_id)) {
				rt->req_pending = false;
				rt->req_error = set_status_of_err(m->err);
				/* Answered: off the store with a later commit (a
				 * restart before it only asks again). */
				if (e->durable && !p->seed && e->ops.persist_setreq) {
					e->ops.persist_setreq(e->ops.ctx, m->io, NULL);
					if (e->ops.commit_later && e->site->state_commit_ms)
						e->ops.commit_later(e->ops.ctx, e->site->state_commit_ms);
					else
						e->persist_dirty = true;
				}
			}
			apply_copy(e, p, t, m, boot);
			if (!m->has_val)
				rt->ask_pending = false; /* the owner has no value yet */
		} else {
			/* A user acknowledges my set. */
			struct out_slot *s = out_slot_of(p, t);
			if (!s)
				break;
			if (m->err)
				log_warn(e->log, "%s: %s refused value of %s", m->err, p->name, m->io);
			if (m->has_ver) {
				if (m->ver > s->acked_ver && m->ver <= rt->ver) {
					p->st.acked++;
					engine__set_acked(e, s, m->ver);
				}
			} else if (m->has_val) {
				tsync_value c;
				/* Legacy: the reply echoes the value it took. */
				if (engine__coerce(e->site, t, &m->val, &c) == 0 &&
				    value__equal(&c, &rt->val) && s->acked_ver < rt->ver) {
					p->st.acked++;
					engine__set_acked(e, s, rt->ver);
				}
			}
		}
		break;
	case WIRE_OP_ASK:
		if (!i_own) {
			reject(e, p, TSYNC_REJ_THS_I_USE, m->io, " (ask to a non-owner)");
			break;
		}
		a = answer_io(e, p, WIRE_OP_REPLY, t);
		if (a)
			answer_value(e, p, a, t);
		break;
	case WIRE_OP_PULSE: {
		struct dedup_win *w = NULL;
		tsync_value c, pv;
		bool fresh = true;

		a = answer_io(e, p, WIRE_OP_REPLY_PULSE, t);
		if (!a)
			break;
		a->m.has_re = m->has_id;
		a->m.re = m->id;
		if (!th->pulse) {
			reject(e, p, TSYNC_REJ_REFUSED, m->io, " may not be pulsed");
			a->m.err = tsync_reject_name(TSYNC_REJ_REFUSED);
			break;
		}
		pv = m->has_val ? m->val : tsync_bool(true);
		if (engine__coerce(e->site, t, &pv, &c) < 0) {
			reject(e, p, TSYNC_REJ_VAL, m->io, NULL);
			a->m.err = tsync_reject_name(TSYNC_REJ_VAL);
			break;
		}
		if (m->has_id) {
			w = request_window(e, p, m, boot, &a->m);
			if (!w)
				break;
			fresh = dedup__check(&w->d, m->id) == DEDUP_NEW;
			if (fresh)
				engine__undo_mark(e, p, w->ob, m->id);
			dedup__mark(&w->d, m->id);
			engine__window_dirty(e, w);
		}
		if (!fresh) {
			/* Acted on already: the same answer again (a failed act
			 * stays failed), and never a second act. */
			const struct dedup_answer *old = dedup__answer(&w->d, m->id);
			if (old && old->err)
				a->m.err = a->owned_err = util__strdup(old->err);
			break;
		}
		if (i_own) {
			int r = engine__pulse_act(e, t, &c, m->ms ? m->ms : th->pulse_ms, p->name, p, w);
			if (r < 0 && r != TSYNC_EWRITE) {
				unwind_request(e, p, w, m->id);
				break;
			}
			e->acts_pending = true;
			if (r < 0)
				a->m.err = SYNC_ERR_WRITE;
			/* Remembered, so that a duplicate (our answer was lost) of a
			 * failed pulse is not acknowledged as a success. */
			if (w)
				engine__window_done(e, p, w, m->id, a->m.err, NULL);
		} else {
			tsync_event ev;
			/* The listeners' act cannot be undone either: marked first. */
			if (w && engine__act_point(e, p, w) < 0) {
				unwind_request(e, p, w, m->id);
				break;
			}
			e->acts_pending = true;
			memset(&ev, 0, sizeof(ev));
			ev.kind = TSYNC_EVENT_PULSE;
			ev.thing = th->name;
			ev.value = c;
			ev.pulse_ms = m->ms ? m->ms : th->pulse_ms;
			ev.controller = p->name;
			engine__emit_thing(e, t, &ev);
		}
		break;
	}
	case WIRE_OP_REPLY_PULSE:
		if (m->has_re) {
			engine__complete_req(e, p, m->re, status_of_err(m->err), NULL);
		} else {
			/* Legacy: complete the oldest pulse of that thing. */
			for (struct outreq *r = p->reqs; r; r = r->next)
				if (r->is_pulse && r->thing == t && r->sent_boot) {
					engine__complete_req(e, p, r->id, 0, NULL);
					break;
				}
		}
		break;
	case WIRE_OP_NONE:
		reject(e, p, TSYNC_REJ_REQ, m->io, NULL);
		break;
	}
}

static int status_of_err(const char *err)
{
	if (!err)
		return 0;
	if (!strcmp(err, "err_ip_in_cmd") || !strcmp(err, "err_ip_in_req"))
		return TSYNC_ECMD;
	if (!strcmp(err, "err_cmd_args"))
		return TSYNC_ECMD_ARGS;
	if (!strcmp(err, SYNC_ERR_WRITE))
		return TSYNC_EWRITE;
	if (!strcmp(err, "err_ip_in_io"))
		return TSYNC_EUNKNOWN_THING;
	if (!strcmp(err, "err_ip_in_ths_i_use"))
		return TSYNC_ENOT_USED;
	if (!strcmp(err, "err_ip_in_val"))
		return TSYNC_EVALUE;
	if (!strcmp(err, SYNC_ERR_UNKNOWN))
		return TSYNC_EPEER_RESTARTED;
	return TSYNC_EREFUSED;
}

static const struct handler *find_handler(struct sync_engine *e, const struct wire_msg *m)
{
	const char *type = m->type == WIRE_T_CMD ? "cmd" : m->type_name;

	for (size_t i = 0; i < e->n_handlers; i++) {
		const struct handler *h = &e->handlers[i];
		if (strcmp(h->type, type))
			continue;
		if (m->type == WIRE_T_CMD && (strcmp(h->role, m->role) || strcmp(h->cmd, m->cmd)))
			continue;
		return h;
	}
	return NULL;
}

/* cmd, cum, clim and every other type: a request to run a handler, or the
 * answer to one of mine. */
static void on_request(struct sync_engine *e, struct sync_peer *p, const struct wire_msg *m, uint64_t boot)
{
	struct dedup_win *w = NULL;
	const struct handler *h;
	struct answer *a;
	struct defer_cur saved;
	char *res = NULL, *json = NULL;
	const char *err = NULL;
	tsync_request req;
	bool deferred;
	size_t ai;
	int r;

	if (m->has_re) {
		json_t *jres = json_object_get((json_t *)m->obj, "res");
		char *text = jres ? json_dumps(jres, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		engine__complete_req(e, p, m->re, status_of_err(m->err), text);
		free(text);
		return;
	}
	a = engine__answer(e, p);
	if (!a)
		return;
	a->m.type = m->type;
	a->m.type_name = a->owned_type = m->type_name ? util__strdup(m->type_name) : NULL;
	a->m.role = a->owned_role = m->role ? util__strdup(m->role) : NULL;
	a->m.cmd = a->owned_cmd = m->cmd ? util__strdup(m->cmd) : NULL;
	a->m.has_re = m->has_id;
	a->m.re = m->id;
	if (m->has_id && !(w = request_window(e, p, m, boot, &a->m)))
		return;
	if (w && dedup__check(&w->d, m->id) == DEDUP_DONE) {
		/* Acted on already: the same answer again, not a second act. */
		const struct dedup_answer *old = dedup__answer(&w->d, m->id);
		if (old && old->err && !strcmp(old->err, SYNC_ERR_RUNNING)) {
			/* Deferred, still running: no answer yet, the sender
			 * repeats it; the answer leaves the moment it exists. */
			p->n_answers--;
			engine__answer_free(a);
			return;
		}
		if (old) {
			a->m.err = a->owned_err = old->err ? util__strdup(old->err) : NULL;
			a->m.res = a->owned_res = old->res ? util__strdup(old->res) : NULL;
		}
		return;
	}
	if (m->type == WIRE_T_CMD && !site__has_role(e->site, e->me, m->role)) {
		reject(e, p, TSYNC_REJ_CMD, m->role, " is not a role of mine");
		err = "err_ip_in_cmd";
		goto done;
	}
	h = find_handler(e, m);
	if (!h) {
		tsync_reject why = m->type == WIRE_T_CMD ? TSYNC_REJ_CMD : TSYNC_REJ_REQ;
		reject(e, p, why, m->type == WIRE_T_CMD ? m->cmd : m->type_name, " has no handler");
		err = tsync_reject_name(why);
		goto done;
	}
	/* Prepared before the mark: the less runs between the mark's commit
	 * and the act, the shorter the instant in which a crash loses it. */
	json = json_dumps((json_t *)m->obj, JSON_COMPACT);
	if (w) {
		/* Marked done, durably, before the handler acts (engine__act_point),
		 * with "outcome unknown" as its answer until the act's own answer
		 * is written after it: a crash in between answers the request sent
		 * again with that, not with "done". */
		engine__undo_mark(e, p, w->ob, m->id);
		dedup__mark(&w->d, m->id);
		engine__window_dirty(e, w);
		engine__window_pending(e, p, w, m->id);
		if (engine__act_point(e, p, w) < 0) {
			unwind_request(e, p, w, m->id);
			free(json);
			return;
		}
	}
	e->acts_pending = true;
	memset(&req, 0, sizeof(req));
	req.from = p->name;
	req.type = m->type == WIRE_T_CMD ? "cmd" : m->type_name;
	req.role = m->role;
	req.cmd = m->cmd;
	req.json = json ? json : "{}";
	/* The handler may answer other deferred requests, which queues
	 * answers and may move p->answers: `a` is found again by its index. */
	ai = (size_t)(a - p->answers);
	saved = e->defer_cur;
	e->defer_cur = (struct defer_cur){.req = &req, .p = p, .w = w, .m = m};
	r = h->fn(h->userdata, e->node, &req, &res);
	deferred = e->defer_cur.deferred;
	e->defer_cur = saved;
	free(json);
	a = &p->answers[ai];
	if (deferred) {
		/* Answered by sync__answer(), later; a repeat meanwhile is not
		 * answered (defer.c). */
		if (r != TSYNC_DEFERRED)
			log_error(e->log,
			          "handler for %s deferred its answer but returned %d: answered later",
			          req.type, r);
		free(res);
		engine__answer_free(a);
		memmove(a, a + 1, (p->n_answers - ai - 1) * sizeof(*a));
		p->n_answers--;
		return;
	}
	if (r == TSYNC_DEFERRED) {
		log_error(e->log,
		          "handler for %s returned TSYNC_DEFERRED without tsync_request_defer(): refused",
		          req.type);
		r = -EINVAL;
	}
	res = input__checked_result(e, req.type, res);
	err = input__err_of_status(r);
done:
	if (w)
		engine__window_done(e, p, w, m->id, err, res);
	a->m.err = err;
	a->m.res = a->owned_res = res;
}

char *input__checked_result(struct sync_engine *e, const char *type, char *res)
{
	json_error_t jerr;
	json_t *check;

	if (!res)
		return NULL;
	/* The answer must be JSON: the peer parses it. */
	check = json_loads(res, JSON_DECODE_ANY, &jerr);
	if (!check) {
		log_error(e->log, "handler for %s answered invalid JSON; sent as null", type);
		free(res);
		return NULL;
	}
	json_decref(check);
	return res;
}

const char *input__err_of_status(int r)
{
	if (r >= 0)
		return NULL;
	if (r == TSYNC_ECMD_ARGS)
		return "err_cmd_args";
	if (r == TSYNC_EWRITE)
		return SYNC_ERR_WRITE;
	/* A handler that looks up a thing (a cum request) answers with the
	 * seed's names for a thing that is not one, not mine, or a bad value. */
	if (r == TSYNC_EUNKNOWN_THING)
		return "err_ip_in_io";
	if (r == TSYNC_ENOT_USED)
		return "err_ip_in_ths_i_use";
	if (r == TSYNC_EVALUE)
		return "err_ip_in_val";
	return "err_cmd_failed";
}

static struct sync_peer *sender(struct sync_engine *e, int addr_peer, const struct wire_env *env)
{
	uint32_t c;
	int32_t pi;

	if (env->legacy)
		return addr_peer >= 0 ? &e->peers[addr_peer] : NULL;
	/* Most often the peer whose address it came from: its name compared
	 * (names are unique, so it is the peer the index would find). */
	if (addr_peer >= 0 && e->peers[addr_peer].name_len == env->from_len &&
	    memcmp(e->peers[addr_peer].name, env->from, env->from_len) == 0)
		return &e->peers[addr_peer];
	if (name_index__get(&e->site->controller_ix, env->from, &c) < 0)
		return NULL;
	pi = e->plan->peer_of_ctrl[c];
	if (pi < 0)
		return NULL;
	/* Without a key a name proves nothing: it must come from its address. */
	if (!e->codec.key && addr_peer != pi)
		return NULL;
	return &e->peers[pi];
}

void input__datagram(struct sync_engine *e, int addr_peer, const void *buf, size_t len)
{
	struct wire_datagram dg;
	struct sync_peer *p;
	tsync_reject why;
	uint64_t boot;
	bool new_boot = false;

	if (wire__decode_in(e->decoder, buf, len, &dg, &why) < 0) {
		p = addr_peer >= 0 ? &e->peers[addr_peer] : NULL;
		/* A forged tag does not prove who sent it: count it as unknown. */
		reject(e, why == TSYNC_REJ_AUTH ? NULL : p, why, NULL, NULL);
		goto leave;
	}
	p = sender(e, addr_peer, &dg.env);
	if (!p) {
		reject(e, NULL, dg.env.legacy || !e->codec.key ? TSYNC_REJ_REFUSED : TSYNC_REJ_UNKNOWN_SENDER,
		       dg.env.from, NULL);
		goto leave;
	}
	p->st.datagrams_received++;
	p->st.bytes_received += len;
	if (log__enabled(e->log, TSYNC_LOG_DEBUG)) {
		size_t jl = len - (e->codec.key ? WIRE_TAG_BYTES : 0);
		log_debug(e->log, "rx %s seq %llu: %.*s", p->name, (unsigned long long)dg.env.seq, (int)jl,
		          (const char *)buf);
	}

	if (dg.env.legacy) {
		/* The seed's plain lists: no boots, no replay protection. */
		boot = p->boot;
	} else {
		new_boot = dg.env.boot != p->boot;
		if (wire__replay_check(&p->replay, dg.env.boot, dg.env.seq) < 0 ||
		    (p->boot && dg.env.boot < p->boot)) {
			reject(e, p, TSYNC_REJ_REPLAY, NULL, NULL);
			goto leave;
		}
		if (dg.env.to_boot != e->boot) {
			/* Addressed to an earlier boot of mine, or the sender does
			 * not know mine yet: never act on it; teach it my boot. The
			 * answer echoes the sender's boot so it cannot be replayed
			 * to a later boot of the sender. */
			if (dg.env.to_boot != 0)
				reject(e, p, TSYNC_REJ_STALE_BOOT, NULL, NULL);
			if (!p->last_hello_us || e->now - p->last_hello_us >= p->rtt.min_us / 2)
				engine__send_hello(e, p, dg.env.boot, dg.env.seq);
			goto leave;
		}
		wire__replay_update(&p->replay, dg.env.boot, dg.env.seq);
		/* Whether its window survives its restarts is a property of
		 * the boot that says so: read before a new boot is handled. */
		p->durable = dg.env.durable;
		if (dg.env.boot != p->boot)
			engine__peer_boot(e, p, dg.env.boot);
		/* It acknowledges datagrams of this boot of mine (to_boot). */
		for (uint32_t i = 0; i < dg.env.n_acks; i++)
			ack__take(e, p, dg.env.acks[i][0], dg.env.acks[i][1]);
		if (dg.env.n_acks)
			engine__want(e, p, FLUSH_NEW);
		boot = dg.env.boot;
		if (dg.env.re && p->sent_ring) {
			uint32_t i = dg.env.re % SYNC_SENT_RING;
			if (p->sent_ring[i].seq == dg.env.re && p->sent_ring[i].us) {
				rtt__sample(&p->rtt, (uint32_t)(e->now - p->sent_ring[i].us));
				p->sent_ring[i].us = 0; /* one sample per datagram */
			}
		}
		p->rx_seq_to_echo = dg.env.seq;
	}
	/* An acknowledgement by datagram is an answer, progress as a reply is. */
	engine__heard(e, p, dg.n_msgs > 0 || dg.env.n_acks > 0);

	/* The datagram that carries the sets says whether its sender takes
	 * acks by datagram (heartbeats, which carry none, do not offer). */
	e->rx_by_dg = !dg.env.legacy && dg.env.acks_ok && !p->seed && e->ack_ranges > 0;
	e->rx_uncovered = false;
	e->n_rx_sets = 0;
	for (size_t i = 0; i < dg.n_msgs; i++) {
		const struct wire_msg *m = &dg.msgs[i];
		if (m->bad) {
			reject(e, p, m->reject, m->io ? m->io : m->type_name, NULL);
			continue;
		}
		if (m->type == WIRE_T_IO)
			on_io(e, p, m, boot);
		else
			on_request(e, p, m, boot);
	}
	e->rx_by_dg = false;
	/* Every set held: one ack for the datagram. Otherwise a reply to each,
	 * with the version I hold, as a peer without acks gets. */
	if (e->n_rx_sets && (e->rx_uncovered || !ack__note(e, p, dg.env.seq))) {
		for (size_t i = 0; i < e->n_rx_sets; i++) {
			struct answer *a = answer_io(e, p, WIRE_OP_REPLY, e->rx_sets[i]);
			if (a)
				answer_value(e, p, a, e->rx_sets[i]);
		}
	}
	e->n_rx_sets = 0;
	/* Answers leave with the next flush, which the node runs after the
	 * whole batch it read: one commit for all of them, then one datagram per
	 * peer with whatever else is due for it. */
	/* A new boot (a hello, say) is answered at once too, by what goes to
	 * that boot now: its echo is the round-trip sample of a peer that
	 * sends us nothing else to answer (a user that only receives). */
	if (p->n_answers || dg.n_msgs || new_boot)
		engine__want(e, p, FLUSH_NEW);
	else
		p->rx_seq_to_echo = 0; /* nothing to answer: no echo later */
leave:
	wire__datagram_release(&dg);
}
