/*
 * lib/sync: requests a handler answers later (tsync_request_defer()).
 *
 * A deferred request keeps its mark in the sender's window, with
 * SYNC_ERR_RUNNING as its answer in memory: a repeat is neither run again
 * nor answered (input.c) until sync__answer() replaces it with the real
 * answer, which is then kept like any other and sent at once. On disk the
 * request's answer is "outcome unknown" (SYNC_ERR_UNKNOWN) until then,
 * committed before the handler starts its work, so a node that dies
 * meanwhile answers the repeat TSYNC_EPEER_RESTARTED instead of "done" or
 * silence.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sync/sync.h"

static void deferred_free(struct tsync_deferred *d)
{
	free(d->type_name);
	free(d->role);
	free(d->cmd);
	free(d);
}

int sync__defer(struct sync_engine *e, const tsync_request *req, struct tsync_deferred **ret)
{
	struct defer_cur *c = &e->defer_cur;
	struct tsync_deferred *d;
	const struct wire_msg *m = c->m;
	int r;

	if (!req || !ret || c->req != req)
		return -EINVAL;
	if (c->d) {
		*ret = c->d;
		return 0;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->peer = (uint32_t)(c->p - e->peers);
	d->type = m->type;
	if ((m->type_name && !(d->type_name = util__strdup(m->type_name))) ||
	    (m->role && !(d->role = util__strdup(m->role))) || (m->cmd && !(d->cmd = util__strdup(m->cmd)))) {
		deferred_free(d);
		return -ENOMEM;
	}
	if (c->w) {
		d->has_id = true;
		d->ob = c->w->ob;
		d->id = m->id;
		if (dedup__remember(&c->w->d, d->id, SYNC_ERR_RUNNING, NULL) < 0) {
			deferred_free(d);
			return -ENOMEM;
		}
		if (e->durable && e->ops.persist_answer) {
			e->ops.persist_answer(e->ops.ctx, c->p->name, d->ob, d->id, SYNC_ERR_UNKNOWN, NULL);
			e->persist_dirty = true;
		}
		/* On disk before the work starts (as before an act). */
		r = engine__act_point(e, c->p, c->w);
		if (r < 0) {
			/* Not deferred: the handler answers now, which replaces
			 * the running mark (engine__window_done). */
			deferred_free(d);
			return r;
		}
	}
	d->next = e->deferred;
	e->deferred = d;
	c->d = d;
	c->deferred = true;
	*ret = d;
	return 0;
}

int sync__answer(struct sync_engine *e, struct tsync_deferred *d, int status, const char *res, uint64_t now)
{
	struct tsync_deferred **pp = &e->deferred;
	const struct dedup_answer *old;
	struct dedup_win *w = NULL;
	struct sync_peer *p;
	struct answer *a;
	char *text = NULL;
	const char *err;
	int r = 0;

	while (*pp && *pp != d)
		pp = &(*pp)->next;
	if (!d || !*pp)
		return -EINVAL;
	*pp = d->next;
	if (e->defer_cur.d == d)
		e->defer_cur.d = NULL; /* answered within its own handler */
	e->now = now;
	p = &e->peers[d->peer];
	if (d->has_id) {
		/* Still running in its window; anything else means a failed
		 * commit undid the request (its repeat is a new run), or its
		 * window was dropped for newer boots of the sender. */
		w = engine__window_find(p, d->ob);
		old = w && dedup__check(&w->d, d->id) == DEDUP_DONE ? dedup__answer(&w->d, d->id) : NULL;
		if (!old || !old->err || strcmp(old->err, SYNC_ERR_RUNNING)) {
			r = TSYNC_ECANCELED;
			goto leave;
		}
	}
	if (res && !(text = util__strdup(res))) {
		/* The work ran and its result is lost: "outcome unknown", as
		 * after a restart. Leaving the request running instead would
		 * leave every repeat of it unanswered, the handle being gone. */
		r = -ENOMEM;
		err = SYNC_ERR_UNKNOWN;
	} else {
		text = input__checked_result(e, d->type_name ? d->type_name : "cmd", text);
		err = input__err_of_status(status == TSYNC_DEFERRED ? -EINVAL : status);
	}
	if (w)
		engine__window_done(e, p, w, d->id, err, text);
	a = engine__answer(e, p);
	if (!a) {
		/* Kept in the window: the sender's next repeat gets it. */
		free(text);
		goto leave;
	}
	a->m.type = d->type;
	a->m.type_name = a->owned_type = d->type_name;
	a->m.role = a->owned_role = d->role;
	a->m.cmd = a->owned_cmd = d->cmd;
	d->type_name = d->role = d->cmd = NULL;
	a->m.has_re = d->has_id;
	a->m.re = d->id;
	a->m.err = err;
	a->m.res = a->owned_res = text;
	engine__want(e, p, FLUSH_NEW);
leave:
	deferred_free(d);
	return r;
}

void defer__free_all(struct sync_engine *e)
{
	while (e->deferred) {
		struct tsync_deferred *d = e->deferred;
		e->deferred = d->next;
		deferred_free(d);
	}
}
