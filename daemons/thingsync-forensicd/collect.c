/*
 * thingsync-forensicd: the mesh side. Everything it sends is a request of
 * the node's request machinery: exactly once, repeated until the peer
 * answers, resumed after a restart of ours.
 *
 * The end of a day: at local midnight (the site's timezone, by our clock)
 * every owner gets the seed's reset naming the day that ended,
 * {"type":"cum","day":DATE}. An owner closes that day at most once, and a
 * reset that comes after its own midnight closed the day (it was off, or
 * the reset was retried) closes nothing: the next day is never cut short.
 *
 * Collection: per owner, one day at a time from its cursor (the first day
 * not collected) up to yesterday, every thing it owns asked for at once
 * ({"type":"cum","fld":T,"day":DATE}; the node packs them into few
 * datagrams). A day the owner still has open (its clock is behind ours)
 * gets a reset first. An owner that is down answers when it returns; a
 * forensicd that was down starts from its cursors and catches up on every
 * day the owners still keep (cumul_days).
 *
 * Exactly once to the push controller: a collected day is written to the
 * records together with the cumul_data requests that carry it, in one
 * commit of the node's store (records.h). A crash before that commit loses
 * both, and the day is collected and sent again; after it, the records say
 * the day was sent, and what pushd has not acked is sent again at start
 * (see "push" below): pushd journals a request once, however often it
 * comes, and the collector keeps a (owner, thing, day) once.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "forensicd.h"

/* Things of one owner asked for at once. */
#define COLLECT_SLICE 64
/* Room left in a datagram for the envelope and the request's own fields. */
#define PUSH_OVERHEAD 400

struct creq {
	struct forensicd *fd;
	struct owner *o;
	uint32_t gen;
	char thing[];
};

struct preq {
	struct forensicd *fd;
	char *body; /* the request's text, sent again if its outcome is unknown */
	char day[DATE_LEN + 1];
	char owner[];
};

static struct owner *owner_of(struct forensicd *fd, const char *name)
{
	for (size_t i = 0; i < fd->n_owners; i++)
		if (!strcmp(fd->owners[i].name, name))
			return &fd->owners[i];
	return NULL;
}

static int put(struct forensicd *fd, const char *key, const char *value)
{
	return forensicd__put(fd, key, value);
}

static int put_json(struct forensicd *fd, const char *key, const json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT);
	int r = s ? put(fd, key, s) : -ENOMEM;

	free(s);
	return r;
}

/* --- the end of the day ---------------------------------------------------------- */

static void reset_done(void *ud, tsync_node *node, int status, const char *result)
{
	struct creq *q = ud;
	struct owner *o = q->o;
	json_t *j;

	(void)node;
	o->reset_busy = false;
	if (status == TSYNC_ECANCELED) {
		free(q);
		return;
	}
	if (status < 0) {
		log_warn(&q->fd->log, "reset of %s to %s: %s", q->thing, o->name, tsync_strerror(status));
		free(q);
		return;
	}
	j = result ? json_loads(result, 0, NULL) : NULL;
	if (json_is_string(json_object_get(j, "closed"))) {
		o->resets_closed++;
		log_info(&q->fd->log, "%s closed %s at our reset (its day now %s)", o->name,
		         json_string_value(json_object_get(j, "closed")),
		         json_string_value(json_object_get(j, "day"))
		             ? json_string_value(json_object_get(j, "day"))
		             : "?");
	} else {
		log_info(&q->fd->log, "%s had closed %s already", o->name, q->thing);
	}
	json_decref(j);
	free(q);
}

/* The seed's reset, naming the day it closes, to one owner. */
static int send_reset(struct forensicd *fd, struct owner *o, const char *day)
{
	char body[64];
	struct creq *q = malloc(sizeof(*q) + DATE_LEN + 1);
	int r;

	if (!q)
		return -ENOMEM;
	q->fd = fd;
	q->o = o;
	q->gen = 0;
	memcpy(q->thing, day, DATE_LEN + 1);
	snprintf(body, sizeof(body), "{\"day\":\"%s\"}", day);
	r = tsync_node_request(fd->node, o->name, "cum", body, reset_done, q);
	if (r < 0) {
		log_warn(&fd->log, "cannot send the reset of %s to %s: %s", day, o->name, tsync_strerror(r));
		free(q);
		return r;
	}
	o->reset_busy = true;
	o->resets_sent++;
	return 0;
}

static void end_of_day(struct forensicd *fd, const char *today)
{
	char ended[DATE_LEN + 1];

	forensicd__date_add(today, -1, ended);
	if (!strcmp(fd->reset_day, ended))
		return;
	log_info(&fd->log, "end of %s: the reset to %zu owners", ended, fd->n_owners);
	/* Staged first: each request commits the node's store as it is
	 * accepted (tsync_node_request()), so the mark is durable with the
	 * first reset, and a restart does not announce the day again. */
	memcpy(fd->reset_day, ended, sizeof(ended));
	put(fd, "s/reset_day", ended);
	for (size_t i = 0; i < fd->n_owners; i++)
		send_reset(fd, &fd->owners[i], ended);
	forensicd__commit(fd);
}

/* --- push ------------------------------------------------------------------------- */

/*
 * A day's push: its things in name order, cut into requests that each fit
 * one datagram, always the same way, so that a request sent again carries
 * the very text pushd journaled before (its commit mark knows it by that).
 * Each thing's mark p/DAY/OWNER/THING says where it is: "sent" (a request
 * carries it), "acked" (pushd answered after its journal commit) or
 * "skipped" (too big for a datagram). The day's own "push" says "pending"
 * (some things not requested yet), "sent" (all requested) or "acked" (all
 * answered).
 *
 * A request whose outcome is unknown (pushd crashed between taking it and
 * its journal commit: TSYNC_EPEER_RESTARTED) goes again. The node resumes
 * our unanswered requests after a restart of ours, but without a callback:
 * such an answer to a resumed request would be lost, so at start every day
 * not "acked" sends again each request that holds a thing not acked, with
 * a callback (pushd answers a copy it journaled as a duplicate). What the
 * node refuses (its queue is full: -ENOBUFS) is tried again every tick.
 * The things that requests of this run carry are known (fd->push_inflight):
 * they do not go twice.
 */

/* Which requests of a day's partition go. */
enum push_which {
	PUSH_ALL,     /* a day just collected */
	PUSH_UNACKED, /* what pushd may not have journaled, and no request of this run carries */
};

static void set_push_state(struct forensicd *fd, const char *day, const char *owner, const char *state)
{
	char key[512], *old = NULL;
	json_t *m;

	snprintf(key, sizeof(key), "m/%s/%s", day, owner);
	if (forensicd__get(fd, key, &old) < 0)
		return;
	m = json_loads(old, 0, NULL);
	free(old);
	if (!json_is_object(m)) {
		json_decref(m);
		return;
	}
	json_object_set_new(m, "push", json_string(state));
	put_json(fd, key, m);
	json_decref(m);
}

struct marks_ctx {
	json_t *marks;
	size_t plen;
};

static void marks_cb(void *ud, const char *key, const char *value)
{
	struct marks_ctx *m = ud;
	json_object_set_new(m->marks, key + m->plen, json_string(value));
}

/* The marks of a day's things, thing -> mark; NULL when memory ran out. */
static json_t *push_marks(struct forensicd *fd, const char *day, const char *owner)
{
	char from[600], to[600];
	struct marks_ctx m = {json_object(), 0};

	snprintf(from, sizeof(from), "p/%s/%s/", day, owner);
	snprintf(to, sizeof(to), "p/%s/%s0", day, owner);
	m.plen = strlen(from);
	if (m.marks && forensicd__scan(fd, from, to, marks_cb, &m) < 0) {
		json_decref(m.marks);
		return NULL;
	}
	return m.marks;
}

static const char *mark_of(json_t *marks, const char *thing)
{
	return json_string_value(json_object_get(marks, thing));
}

static bool mark_done(const char *mark)
{
	return mark && (!strcmp(mark, "acked") || !strcmp(mark, "skipped"));
}

/* A chunk answered: its things acked (staged), and its day looked at once
 * the turn of the loop is over (acks_commit()): every ack of the turn is
 * committed once, not one commit each. A crash before that commit sends
 * them again at start, which pushd recognises (its commit marks). */
static void chunk_acked(struct forensicd *fd, const char *day, const char *owner, const char *body)
{
	json_t *b = json_loads(body, 0, NULL), *c;
	const char *thing;
	char key[512];

	json_object_foreach(json_object_get(b, "cumuls"), thing, c)
	{
		snprintf(key, sizeof(key), "p/%s/%s/%s", day, owner, thing);
		put(fd, key, "acked");
	}
	json_decref(b);
	snprintf(key, sizeof(key), "%s/%s", day, owner);
	if (json_object_set_new(fd->acks_pending, key, json_true()) < 0) {
		/* Out of memory: committed now, the day marked at next start. */
		forensicd__commit(fd);
		return;
	}
	event_active(fd->ack_ev, EV_TIMEOUT, 0);
}

/* The acks of a turn committed; each day they touched is "acked" once
 * all its things are (staged, with the next commit: a crash before it
 * finds at start every thing acked, and marks the day then). */
void collect__acks_commit(struct forensicd *fd)
{
	const char *k;
	json_t *v;

	if (!json_object_size(fd->acks_pending))
		return;
	/* The marks are read from the store: the ones just put first. */
	forensicd__commit(fd);
	json_object_foreach(fd->acks_pending, k, v)
	{
		char day[DATE_LEN + 1], from[600], to[600];
		const char *owner = strchr(k, '/'), *thing;
		json_t *marks, *c;
		bool all = true;

		if (!owner || owner - k != DATE_LEN)
			continue;
		memcpy(day, k, DATE_LEN);
		day[DATE_LEN] = '\0';
		owner++;
		marks = push_marks(fd, day, owner);
		json_object_foreach(marks, thing, c)
			all = all && mark_done(json_string_value(c));
		/* Every thing of the day, not only the ones requested so far. */
		snprintf(from, sizeof(from), "c/%s/%s/", day, owner);
		snprintf(to, sizeof(to), "c/%s/%s0", day, owner);
		if (marks && all && json_object_size(marks) == forensicd__count(fd, from, to))
			set_push_state(fd, day, owner, "acked");
		json_decref(marks);
	}
	json_object_clear(fd->acks_pending);
}

static void acks_cb(evutil_socket_t s, short what, void *arg)
{
	(void)s;
	(void)what;
	collect__acks_commit(arg);
}

/* The things of a request's body in flight (`on`) or not any more. */
static void inflight(struct forensicd *fd, const char *day, const char *owner, json_t *cumuls, bool on)
{
	const char *thing;
	json_t *c;
	char key[512];

	json_object_foreach(cumuls, thing, c)
	{
		snprintf(key, sizeof(key), "%s/%s/%s", day, owner, thing);
		if (on)
			json_object_set_new(fd->push_inflight, key, json_true());
		else
			json_object_del(fd->push_inflight, key);
	}
}

static bool is_inflight(struct forensicd *fd, const char *day, const char *owner, const char *thing)
{
	char key[512];

	snprintf(key, sizeof(key), "%s/%s/%s", day, owner, thing);
	return json_object_get(fd->push_inflight, key) != NULL;
}

static void push_done(void *ud, tsync_node *node, int status, const char *result)
{
	struct preq *q = ud;
	struct forensicd *fd = q->fd;

	(void)result;
	/* pushd restarted between taking the day and committing its journal:
	 * the same request goes again (pushd's commit marks know its content,
	 * so a day it did journal is not journaled twice). */
	if (status == TSYNC_EPEER_RESTARTED &&
	    tsync_node_request(node, fd->push_to, "cumul_data", q->body, push_done, q) == 0) {
		fd->push_resent++;
		return;
	}
	if (status == TSYNC_ECANCELED) {
		/* We are stopping: the node keeps the request and resumes it. */
		free(q->body);
		free(q);
		return;
	}
	{
		json_t *b = json_loads(q->body, 0, NULL);
		inflight(fd, q->day, q->owner, json_object_get(b, "cumuls"), false);
		json_decref(b);
	}
	if (status < 0) {
		/* Left "sent": the next start sends it again. */
		fd->push_failed++;
		log_error(&fd->log, "cumul_data of %s %s refused by %s: %s", q->owner, q->day, fd->push_to,
		          tsync_strerror(status));
	} else {
		fd->pushes_acked++;
		chunk_acked(fd, q->day, q->owner, q->body);
		log_debug(&fd->log, "cumul_data of %s %s taken by %s", q->owner, q->day, fd->push_to);
	}
	free(q->body);
	free(q);
}

/*
 * One request of a day's push. Its things not acked yet are marked sent
 * (p/DAY/OWNER/THING) before the request is made, because
 * tsync_node_request() commits the node's store as it accepts it: the marks
 * and the request become durable in that one transaction, so after a crash
 * a thing is either marked and resumed by the node, or neither.
 */
static int push_chunk(struct forensicd *fd, const char *day, const char *owner, json_t *cumuls, json_t *marks)
{
	json_t *b = json_pack("{sssssO}", "owner", owner, "day", day, "cumuls", cumuls);
	char *s = b ? json_dumps(b, JSON_COMPACT) : NULL;
	struct preq *q = malloc(sizeof(*q) + strlen(owner) + 1);
	const char *thing;
	json_t *c;
	char key[512];
	int r = -ENOMEM;

	json_decref(b);
	json_object_foreach(cumuls, thing, c)
	{
		snprintf(key, sizeof(key), "p/%s/%s/%s", day, owner, thing);
		if (!mark_done(mark_of(marks, thing)) && put(fd, key, "sent") < 0)
			s = (free(s), NULL);
	}
	if (s && q) {
		q->fd = fd;
		q->body = s;
		memcpy(q->day, day, DATE_LEN + 1);
		strcpy(q->owner, owner);
		r = tsync_node_request(fd->node, fd->push_to, "cumul_data", s, push_done, q);
	}
	if (r == 0)
		inflight(fd, day, owner, cumuls, true);
	if (r < 0) {
		free(s);
		free(q);
		/* A full queue is waited out (tried again every tick). */
		if (r == -ENOBUFS)
			log_debug(&fd->log, "cumul_data of %s %s: the queue to %s is full", owner, day,
			          fd->push_to);
		else
			log_error(&fd->log, "cannot send cumul_data of %s %s to %s: %s", owner, day,
			          fd->push_to, tsync_strerror(r));
		/* Not sent: unmarked (as they were), so that a retry sends them. */
		json_object_foreach(cumuls, thing, c)
		{
			snprintf(key, sizeof(key), "p/%s/%s/%s", day, owner, thing);
			if (!mark_done(mark_of(marks, thing)))
				put(fd, key, mark_of(marks, thing));
		}
		return r;
	}
	fd->push_chunks++;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Whether a request holding `thing` goes. */
static bool push_wanted(struct forensicd *fd, const char *day, const char *owner, json_t *marks,
                        const char *thing, enum push_which which)
{
	return which == PUSH_ALL ||
	       (!mark_done(mark_of(marks, thing)) && !is_inflight(fd, day, owner, thing));
}

/*
 * Sends one owner's day (`got`: every cumul of it) to the push controller,
 * in requests that each fit one datagram (contract 2:
 * {"type":"cumul_data","owner","day","cumuls"}): those of the partition
 * that `which` selects. *sent: requests made. 0, or the first error (the
 * requests after it are not made).
 */
static int push_day(struct forensicd *fd, const char *day, const char *owner, json_t *got, json_t *marks,
                    enum push_which which, size_t *sent)
{
	size_t budget = fd->isite->max_datagram > PUSH_OVERHEAD ? fd->isite->max_datagram - PUSH_OVERHEAD : 0;
	size_t n = json_object_size(got), k = 0, used = 0;
	const char **names = calloc(n ? n : 1, sizeof(*names));
	json_t *chunk = json_object(), *cum;
	const char *thing;
	bool wanted = false;
	char key[512];
	int r = 0;

	*sent = 0;
	if (!names || !chunk) {
		free(names);
		json_decref(chunk);
		return -ENOMEM;
	}
	json_object_foreach(got, thing, cum)
		names[k++] = thing;
	qsort(names, n, sizeof(*names), cmp_str);
	for (k = 0; k <= n && r == 0; k++) {
		char *s = k < n ? json_dumps(json_object_get(got, names[k]), JSON_COMPACT) : NULL;
		size_t len = s ? strlen(s) + strlen(names[k]) + 4 : 0;

		free(s);
		if (k < n && !len) {
			r = -ENOMEM;
			break;
		}
		if (k < n && len > budget) {
			if (!mark_done(mark_of(marks, names[k]))) {
				log_error(&fd->log,
				          "cumul of %s (%s %s) is too big for one datagram (%zu bytes): not "
				          "pushed",
				          names[k], owner, day, len);
				fd->push_failed++;
				snprintf(key, sizeof(key), "p/%s/%s/%s", day, owner, names[k]);
				put(fd, key, "skipped");
			}
			continue;
		}
		/* The chunk is full, or the day's end: it goes if wanted. */
		if ((k == n || used + len > budget) && json_object_size(chunk)) {
			if (wanted) {
				r = push_chunk(fd, day, owner, chunk, marks);
				if (r == 0)
					(*sent)++;
			}
			json_object_clear(chunk);
			used = 0;
			wanted = false;
		}
		if (k < n) {
			json_object_set(chunk, names[k], json_object_get(got, names[k]));
			used += len;
			wanted = wanted || push_wanted(fd, day, owner, marks, names[k], which);
		}
	}
	free(names);
	json_decref(chunk);
	if (r == 0 && which == PUSH_ALL)
		fd->pushes_sent++;
	return r;
}

/* --- collection -------------------------------------------------------------------- */

static void batch_clear(struct owner *o)
{
	json_decref(o->got);
	json_decref(o->missing);
	o->got = o->missing = NULL;
	o->busy = false;
	o->waiting = 0;
	o->gen++;
}

/* Every thing of the owner's day has answered. */
static void batch_done(struct forensicd *fd, struct owner *o)
{
	char key[512], next[DATE_LEN + 1];
	const char *thing;
	json_t *cum, *meta;
	bool push;

	if (o->retry) {
		batch_clear(o);
		return;
	}
	if (o->not_closed) {
		/* Its clock is behind ours: close the day there first, then ask again. */
		if (!o->reset_busy)
			send_reset(fd, o, o->day);
		o->wait_reset = true;
		batch_clear(o);
		return;
	}
	forensicd__date_add(o->day, 1, next);
	if (!json_object_size(o->got)) {
		/* The owner keeps nothing of that day (it was made later, or the
		 * day is past its cumul_days): nothing to keep, on to the next. */
		log_info(&fd->log, "%s keeps no cumuls of %s", o->name, o->day);
		snprintf(key, sizeof(key), "n/%s", o->name);
		put(fd, key, next);
		forensicd__commit(fd);
		memcpy(o->next, next, sizeof(next));
		batch_clear(o);
		return;
	}
	/* The day, its cursor and "push pending" are staged before the first
	 * push request, which commits them with it (see push_chunk()). */
	json_object_foreach(o->got, thing, cum)
	{
		snprintf(key, sizeof(key), "c/%s/%s/%s", o->day, o->name, thing);
		put_json(fd, key, cum);
	}
	push = fd->push_to != NULL;
	meta = json_pack("{sIsOsIss}", "things", (json_int_t)json_object_size(o->got), "missing", o->missing,
	                 "collected_ms", (json_int_t)(forensicd__now_us() / 1000), "push",
	                 push ? "pending" : "none");
	snprintf(key, sizeof(key), "m/%s/%s", o->day, o->name);
	if (meta)
		put_json(fd, key, meta);
	snprintf(key, sizeof(key), "n/%s", o->name);
	put(fd, key, next);
	if (push && meta) {
		size_t sent;
		if (push_day(fd, o->day, o->name, o->got, NULL, PUSH_ALL, &sent) == 0) {
			json_object_set_new(meta, "push", json_string("sent"));
			snprintf(key, sizeof(key), "m/%s/%s", o->day, o->name);
			put_json(fd, key, meta);
		} else {
			/* Left "pending": the next tick sends what is not requested. */
			fd->push_retry = true;
		}
	}
	json_decref(meta);
	forensicd__commit(fd);
	if (json_array_size(o->missing))
		fd->missing_things += json_array_size(o->missing);
	log_info(&fd->log, "collected %s of %s: %zu things%s%s", o->day, o->name, json_object_size(o->got),
	         json_array_size(o->missing) ? ", some not kept by the owner" : "",
	         push ? ", sent to the push controller" : "");
	o->days_collected++;
	memcpy(o->next, next, sizeof(next));
	batch_clear(o);
}

static void ask_slice(struct forensicd *fd, struct owner *o);

/* One answer (or the end of a slice's requests) is in. */
static void slice_answered(struct forensicd *fd, struct owner *o)
{
	if (--o->waiting > 0)
		return;
	if (o->asked < o->n_things && !o->retry)
		ask_slice(fd, o);
	else
		batch_done(fd, o);
}

static void cum_done(void *ud, tsync_node *node, int status, const char *result)
{
	struct creq *q = ud;
	struct owner *o = q->o;
	struct forensicd *fd = q->fd;
	json_t *j, *cum;

	(void)node;
	if (status == TSYNC_ECANCELED || q->gen != o->gen || !o->busy) {
		free(q);
		return;
	}
	if (status == 0) {
		j = result ? json_loads(result, 0, NULL) : NULL;
		cum = json_object_get(j, "cum");
		if (!json_is_object(cum)) {
			if (o->ask_failures++ % 300 == 0)
				log_warn(&fd->log, "%s answered cum of %s without a cumul: asking again",
				         o->name, q->thing);
			o->retry = true;
		} else if (!json_is_true(json_object_get(cum, "closed"))) {
			o->not_closed = true;
		} else {
			json_object_set(o->got, q->thing, cum);
		}
		json_decref(j);
	} else if (status == TSYNC_EVALUE || status == TSYNC_EUNKNOWN_THING || status == TSYNC_ENOT_USED) {
		/* Not kept (the owner was made after that day, or it is past its
		 * cumul_days), or our site.conf and the owner's disagree. */
		if (status != TSYNC_EVALUE)
			log_warn(&fd->log, "%s does not know %s as its own (%s): site.conf differs?", o->name,
			         q->thing, tsync_strerror(status));
		json_array_append_new(o->missing, json_string(q->thing));
	} else {
		if (o->ask_failures++ % 300 == 0)
			log_warn(&fd->log, "cum of %s %s from %s: %s; asking again (%" PRIu64 " times)",
			         q->thing, o->day, o->name, tsync_strerror(status), o->ask_failures);
		o->retry = true;
	}
	free(q);
	slice_answered(fd, o);
}

/*
 * Asks for the next slice of the owner's things (at most COLLECT_SLICE in
 * flight, well under the site's max_queued); the last answer of a slice
 * asks for the next, the last of the day ends the batch. A request the node
 * refuses abandons the batch: it starts again at the next tick.
 */
static void ask_slice(struct forensicd *fd, struct owner *o)
{
	char body[640];
	size_t end = o->asked + COLLECT_SLICE < o->n_things ? o->asked + COLLECT_SLICE : o->n_things;

	/* Counted before the first request: an answer may come at once. */
	o->waiting = end - o->asked + 1;
	for (; o->asked < end; o->asked++) {
		const char *thing = o->things[o->asked];
		struct creq *q = malloc(sizeof(*q) + strlen(thing) + 1);
		int r = -ENOMEM;
		if (q) {
			q->fd = fd;
			q->o = o;
			q->gen = o->gen;
			strcpy(q->thing, thing);
			snprintf(body, sizeof(body), "{\"fld\":\"%s\",\"day\":\"%s\"}", thing, o->day);
			r = tsync_node_request(fd->node, o->name, "cum", body, cum_done, q);
		}
		if (r < 0) {
			/* Tried again every tick: said once, then every few minutes. */
			if (o->ask_failures++ % 300 == 0)
				log_warn(&fd->log,
				         "cannot ask %s for %s: %s; again later (%" PRIu64 " times)", o->name,
				         thing, tsync_strerror(r), o->ask_failures);
			free(q);
			batch_clear(o); /* the answers of the others are ignored */
			return;
		}
	}
	slice_answered(fd, o);
}

static void collect_owner(struct forensicd *fd, struct owner *o, const char *today, const char *oldest)
{
	/* A reset sent because the day was still open goes first; any other
	 * reset waiting for the owner (it is down) does not hold the reads
	 * back: the owner takes them in order when it returns. */
	if (o->busy || (o->wait_reset && o->reset_busy) || strcmp(o->next, today) >= 0)
		return;
	o->wait_reset = false;
	if (strcmp(o->next, oldest) < 0)
		memcpy(o->next, oldest, DATE_LEN + 1);
	memcpy(o->day, o->next, DATE_LEN + 1);
	o->got = json_object();
	o->missing = json_array();
	if (!o->got || !o->missing) {
		batch_clear(o);
		return;
	}
	o->busy = true;
	o->retry = o->not_closed = false;
	o->asked = 0;
	ask_slice(fd, o);
}

/* Forgets the days past forensic_days: every record of each. */
static void trim_cb(void *ud, const char *key, const char *value)
{
	(void)value;
	put(ud, key, NULL);
}

static void trim(struct forensicd *fd, const char *oldest)
{
	char to[16];
	static const char *const prefixes[] = {"c/", "m/", "p/"};

	if (!strcmp(fd->trimmed_before, oldest))
		return;
	for (size_t i = 0; i < 3; i++) {
		snprintf(to, sizeof(to), "%s%s", prefixes[i], oldest);
		forensicd__scan(fd, prefixes[i], to, trim_cb, fd);
	}
	memcpy(fd->trimmed_before, oldest, DATE_LEN + 1);
	put(fd, "s/trimmed_before", oldest);
	forensicd__commit(fd);
}

/* Days whose push is not acked ("pending" or "sent"): their keys m/DAY/OWNER. */
struct pending_ctx {
	char (*keys)[64];
	size_t n, cap;
};

static void pending_cb(void *ud, const char *key, const char *value)
{
	struct pending_ctx *p = ud;
	json_t *m = json_loads(value, 0, NULL);
	const char *st = json_string_value(json_object_get(m, "push"));

	if (st && (!strcmp(st, "pending") || !strcmp(st, "sent")) && strlen(key) < 64) {
		if (p->n == p->cap) {
			size_t cap = p->cap ? p->cap * 2 : 16;
			void *k = realloc(p->keys, cap * sizeof(*p->keys));
			if (!k) {
				json_decref(m);
				return;
			}
			p->keys = k;
			p->cap = cap;
		}
		strcpy(p->keys[p->n++], key);
	}
	json_decref(m);
}

struct day_ctx {
	json_t *got;
	size_t plen;
};

static void day_cb(void *ud, const char *key, const char *value)
{
	struct day_ctx *u = ud;
	json_t *c = json_loads(value, 0, NULL);

	if (c)
		json_object_set_new(u->got, key + u->plen, c);
}

/*
 * Sends again what the days not acked need: every request that holds a
 * thing not acked and carried by no request of this run (at start: none,
 * since the node resumes the earlier ones without a callback).
 */
static void resend_days(struct forensicd *fd)
{
	struct pending_ctx p = {NULL, 0, 0};
	size_t total = 0;

	forensicd__scan(fd, "m/", "m0", pending_cb, &p);
	for (size_t i = 0; i < p.n; i++) {
		const char *rest = p.keys[i] + 2;
		char day[DATE_LEN + 1], from[600], to[600];
		const char *owner = rest + DATE_LEN + 1, *thing;
		struct day_ctx u = {json_object(), 0};
		json_t *marks, *c;
		size_t sent = 0, done = 0;
		int r;

		memcpy(day, rest, DATE_LEN);
		day[DATE_LEN] = '\0';
		snprintf(from, sizeof(from), "c/%s/%s/", day, owner);
		snprintf(to, sizeof(to), "c/%s/%s0", day, owner);
		u.plen = strlen(from);
		forensicd__scan(fd, from, to, day_cb, &u);
		marks = push_marks(fd, day, owner);
		r = u.got && marks ? push_day(fd, day, owner, u.got, marks, PUSH_UNACKED, &sent) : -ENOMEM;
		total += sent;
		if (r < 0) {
			fd->push_retry = true;
		} else {
			json_object_foreach(u.got, thing, c)
				done += mark_done(mark_of(marks, thing));
			set_push_state(fd, day, owner, done == json_object_size(u.got) ? "acked" : "sent");
		}
		if (sent)
			log_info(&fd->log, "push of %s %s not acked: %zu requests sent again", owner, day, sent);
		else if (r < 0)
			log_debug(&fd->log, "push of %s %s not acked: the rest at the next tick", owner, day);
		json_decref(marks);
		json_decref(u.got);
	}
	fd->push_resumed += total;
	forensicd__commit(fd);
	free(p.keys);
}

void collect__resume_pushes(struct forensicd *fd)
{
	if (fd->push_to)
		resend_days(fd);
}

void collect__tick(struct forensicd *fd)
{
	char today[DATE_LEN + 1], oldest[DATE_LEN + 1];

	forensicd__today(fd, today);
	forensicd__date_add(today, -(int)fd->isite->forensic_days, oldest);
	end_of_day(fd, today);
	trim(fd, oldest);
	for (size_t i = 0; i < fd->n_owners; i++)
		collect_owner(fd, &fd->owners[i], today, oldest);
	if (fd->push_retry && fd->push_to) {
		fd->push_retry = false;
		resend_days(fd);
	}
}

/* --- set-up -------------------------------------------------------------------------- */

int collect__init(struct forensicd *fd)
{
	size_t nc = tsync_site_controller_count(fd->site), nt = tsync_site_thing_count(fd->site);
	char today[DATE_LEN + 1], key[512], *v;
	bool new_owner = false;

	fd->owners = calloc(nc ? nc : 1, sizeof(*fd->owners));
	fd->push_inflight = json_object();
	fd->acks_pending = json_object();
	fd->ack_ev = event_new(fd->base, -1, 0, acks_cb, fd);
	if (!fd->owners || !fd->push_inflight || !fd->acks_pending || !fd->ack_ev)
		return -ENOMEM;
	forensicd__today(fd, today);
	for (size_t i = 0; i < nt; i++) {
		tsync_thing_info ti;
		struct owner *o;
		const char **p;
		if (tsync_site_thing(fd->site, i, &ti) < 0 || !strcmp(ti.owner, fd->name))
			continue;
		o = owner_of(fd, ti.owner);
		if (!o) {
			o = &fd->owners[fd->n_owners++];
			o->name = ti.owner;
			snprintf(key, sizeof(key), "n/%s", o->name);
			v = NULL;
			if (forensicd__get(fd, key, &v) == 0 && forensicd__valid_date(v)) {
				memcpy(o->next, v, DATE_LEN + 1);
			} else {
				/* A new owner: from yesterday on, kept now. Kept only
				 * with its first collected day, a restart before that
				 * began again at a later yesterday: the days between
				 * were never collected. */
				forensicd__date_add(today, -1, o->next);
				put(fd, key, o->next);
				new_owner = true;
			}
			if (v)
				free(v);
			v = NULL;
		}
		p = realloc(o->things, (o->n_things + 1) * sizeof(*p));
		if (!p)
			return -ENOMEM;
		o->things = p;
		o->things[o->n_things++] = ti.name;
	}
	if (new_owner)
		forensicd__commit(fd);
	for (size_t i = 0; i < nc && !fd->push_to; i++) {
		tsync_controller_info ci;
		if (tsync_site_controller(fd->site, i, &ci) < 0)
			continue;
		for (size_t k = 0; k < ci.n_roles; k++)
			if (!strcmp(ci.roles[k], "push") && strcmp(ci.name, fd->name)) {
				fd->push_to = ci.name;
				break;
			}
	}
	v = NULL;
	if (forensicd__get(fd, "s/reset_day", &v) == 0 && forensicd__valid_date(v))
		memcpy(fd->reset_day, v, DATE_LEN + 1);
	free(v);
	v = NULL;
	if (forensicd__get(fd, "s/trimmed_before", &v) == 0 && forensicd__valid_date(v))
		memcpy(fd->trimmed_before, v, DATE_LEN + 1);
	free(v);
	return 0;
}

void collect__free(struct forensicd *fd)
{
	for (size_t i = 0; fd->owners && i < fd->n_owners; i++) {
		json_decref(fd->owners[i].got);
		json_decref(fd->owners[i].missing);
		free(fd->owners[i].things);
	}
	free(fd->owners);
	fd->owners = NULL;
	json_decref(fd->push_inflight);
	fd->push_inflight = NULL;
	if (fd->ack_ev)
		event_free(fd->ack_ev);
	fd->ack_ev = NULL;
	json_decref(fd->acks_pending);
	fd->acks_pending = NULL;
}
