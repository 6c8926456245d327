/*
 * lib/node: a data store's answer to the seed's `recovery_data_request`
 * (seed 000, DESIGN.md "Recovery, pull and push"): the changes of the
 * window [lost_connection_time, restored_connection_time] (seconds since
 * the epoch, as the seed writes times) from the node's history, sent as
 * `recovery_data` messages to the request's "deliver_to" (the push
 * controller, which journals them; default: the requester), each small
 * enough for one datagram, each a request of its own, so the mesh delivers
 * it exactly once. Only the public node API is used.
 *
 *   {"type":"recovery_data","entity":ME,"request":"REQUESTER/ID",
 *    "lost_connection_time":L,"restored_connection_time":R,"chunk":K,"chunks":N,
 *    "trimmed":{"from_us":A,"to_us":B},     <- only when the history lost part of the window
 *    "recovery_data":{"io":[{"thing":T,"value":V,"time_us":U,"owner_boot":B,"version":X},...]}}
 *
 * ID is the request's "request_id" (the seed's system id; the mesh's
 * envelope already uses "id") when it has one, else
 * made here from this node's boot and a counter: unique per request either
 * way. A window without a change still sends one chunk, so that a trimmed
 * window reaches the push controller too. The request's own answer says how
 * many chunks and entries follow, and which part of the window the history
 * had already trimmed.
 *
 * Across restarts of the data store, and requests asked again (recoveryd
 * asks again, under the same request_id, a request whose answer it did not
 * see): each request has a record in the node's store
 * (tsync_node_record_put, key "tsync.recovery/REQUESTER/ID") with its
 * answer and whether all chunks are answered ("done"), and a small one
 * ("tsync.recsent/REQUESTER/ID") with how many chunks are requested so
 * far, staged before each chunk's request, so both are durable in the
 * commit that accepts the request (the whole record is not written again
 * per chunk). The same request again is answered from the record
 * (or from the answer being sent) and sends nothing twice. At the start of
 * the node, a request not done resumes after the chunks its store resumes:
 * the window is read again and, when it holds the same changes, the chunks
 * from "sent" on go; when it does not (the history trimmed meanwhile), the
 * whole window goes again under a new request name ("ID~BOOT"), since
 * pushd knows a chunk by its request and number (the collector keeps a
 * change once whatever brought it). The chunks in flight when the node
 * stopped are resumed by its store, and go on with the same callback as
 * before (node__recovery_resumed()): one whose outcome the receiver's own
 * restart left unknown is sent again. Done records are forgotten after
 * RECOVERY_KEEP_US.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <thingsync/history.h>

#include "node/node.h"
#include "store/store.h"
#include "util/util.h"

/* Chunks in flight at once: well below max_outstanding and max_queued,
 * so the answer never crowds out the node's other requests. */
#define RECOVERY_IN_FLIGHT 8
/* Bytes of a datagram kept for the envelope (sender, boot, id, type, tag). */
#define RECOVERY_ENVELOPE 256
/* The most changes one answer carries, held in memory while it is sent. */
#define RECOVERY_MAX_ENTRIES 1000000
/* The longest "id" of a request taken as the seed's system id. */
#define RECOVERY_MAX_ID 64
/* The records of the requests answered, and how long a done one is kept. */
#define RECOVERY_RECORD  "tsync.recovery/"
/* How many chunks are requested so far, a record of its own per request
 * ("tsync.recsent/REQUESTER/ID"): staged before each chunk's request, so
 * that the request's commit holds it, without the whole record again. */
#define RECOVERY_SENT    "tsync.recsent/"
#define RECOVERY_KEEP_US ((int64_t)30 * 86400 * 1000000)

struct answer {
	tsync_node *node;
	char *peer;           /* where the chunks go: deliver_to, or the requester */
	json_t *head;         /* the members every chunk repeats */
	json_t *entries;      /* every entry of the window, in order */
	size_t *lens;         /* the length of each entry's compact JSON */
	size_t next;          /* the first entry not yet sent */
	size_t chunk, chunks; /* chunks sent, and in all */
	size_t in_flight;
	size_t budget; /* bytes of a chunk's JSON */
	bool failed;
	bool closed;
	tsync_history_window w; /* what the history held of the window */
	char *key;    /* its record */
	char *result; /* the request's answer, repeated to the same request again */
	struct answer *next_active;
};

/* The node's answers being sent (a list kept in the node). */
static struct answer **active_of(tsync_node *node)
{
	return (struct answer **)node__recovery_answers(node);
}

static struct answer *active_find(tsync_node *node, const char *key)
{
	for (struct answer *a = *active_of(node); a; a = a->next_active)
		if (!strcmp(a->key, key))
			return a;
	return NULL;
}

static void active_add(struct answer *a)
{
	a->next_active = *active_of(a->node);
	*active_of(a->node) = a;
}

static json_t *value_json(const tsync_value *v)
{
	switch (v->type) {
	case TSYNC_TYPE_BOOL:
		return json_boolean(v->u.b);
	case TSYNC_TYPE_INT:
		return json_integer((json_int_t)v->u.i);
	case TSYNC_TYPE_FLOAT:
		return json_real(v->u.f);
	case TSYNC_TYPE_STRING:
		return json_string(v->u.s ? v->u.s : "");
	default:
		return json_null();
	}
}

static int collect(void *ud, const tsync_history_entry *e)
{
	json_t *a = ud;

	if (json_array_size(a) >= RECOVERY_MAX_ENTRIES)
		return 1;
	return json_array_append_new(a, json_pack("{s:s,s:o,s:I,s:I,s:I}", "thing", e->thing, "value",
	                                          value_json(&e->value), "time_us", (json_int_t)e->time_us,
	                                          "owner_boot", (json_int_t)e->owner_boot, "version",
	                                          (json_int_t)e->version)) < 0;
}

static void answer_free(struct answer *a)
{
	for (struct answer **p = active_of(a->node); *p; p = &(*p)->next_active)
		if (*p == a) {
			*p = a->next_active;
			break;
		}
	free(a->key);
	free(a->result);
	json_decref(a->head);
	json_decref(a->entries);
	free(a->lens);
	free(a->peer);
	free(a);
}

/* The length of each entry's compact JSON, measured once. 0 or -ENOMEM. */
static int measure(struct answer *a)
{
	size_t total = json_array_size(a->entries);

	a->lens = calloc(total ? total : 1, sizeof(*a->lens));
	if (!a->lens)
		return -ENOMEM;
	for (size_t i = 0; i < total; i++) {
		char *t = json_dumps(json_array_get(a->entries, i), JSON_COMPACT);
		if (!t)
			return -ENOMEM;
		a->lens[i] = strlen(t);
		free(t);
	}
	return 0;
}

/*
 * The next chunk (number a->chunk + 1, from entry a->next): its body with no
 * entry yet, and in *n how many entries fit in the budget, at least one.
 * A chunk's compact JSON is the empty chunk's plus each entry's and a comma
 * between two, so the entries are measured once, not the chunk again at
 * each entry. NULL when memory ran out.
 */
static json_t *chunk_span(struct answer *a, size_t *n, json_t **io)
{
	json_t *body = json_deep_copy(a->head);
	size_t total = json_array_size(a->entries), size;
	char *t;

	*n = 0;
	*io = json_array();
	if (!a->lens && measure(a) < 0)
		goto fail;
	if (!body || !*io || json_object_set_new(body, "recovery_data", json_pack("{s:O}", "io", *io)) < 0 ||
	    json_object_set_new(body, "chunk", json_integer((json_int_t)a->chunk + 1)) < 0)
		goto fail;
	t = json_dumps(body, JSON_COMPACT);
	if (!t)
		goto fail;
	size = strlen(t);
	free(t);
	while (a->next + *n < total) {
		size_t more = a->lens[a->next + *n] + (*n > 0);
		/* Over the budget: this entry opens the next chunk. */
		if (*n > 0 && size + more > a->budget)
			break;
		size += more;
		(*n)++;
	}
	return body;
fail:
	json_decref(*io);
	json_decref(body);
	*io = NULL;
	return NULL;
}

/* The next chunk's text: as many entries as fit in the budget, at least
 * one; an empty window still makes its one chunk. NULL when none is left
 * (or memory ran out). */
static char *next_chunk(struct answer *a)
{
	json_t *io, *body;
	size_t n;
	char *text = NULL;

	if (a->next >= json_array_size(a->entries) && json_array_size(a->entries) > 0)
		return NULL;
	body = chunk_span(a, &n, &io);
	if (!body)
		return NULL;
	for (size_t i = 0; i < n; i++)
		json_array_append(io, json_array_get(a->entries, a->next + i));
	text = json_dumps(body, JSON_COMPACT);
	a->next += n;
	json_decref(io);
	json_decref(body);
	return text;
}

static void chunk_done(void *ud, tsync_node *node, int status, const char *result);

/* One chunk on its way: kept to be sent again when its outcome is unknown.
 * A chunk a restart resumed belongs to no answer (a NULL): it names its
 * peer itself. */
struct chunk_req {
	struct answer *a;
	char *text;
	char *peer; /* a NULL only */
};

/* Stages the request's record: its answer, the chunks requested so far,
 * and whether every one is answered. Without a state directory: nothing. */
static void record_put(struct answer *a, bool done)
{
	json_t *r = json_pack("{s:O,s:s,s:I,s:I,s:s,s:b,s:I}", "head", a->head, "deliver_to", a->peer,
	                      "entries", (json_int_t)json_array_size(a->entries), "sent", (json_int_t)a->chunk,
	                      "answer", a->result ? a->result : "null", "done", done, "at_us",
	                      (json_int_t)util__realtime_us());
	char *text = r ? json_dumps(r, JSON_COMPACT) : NULL;

	if (text)
		tsync_node_record_put(a->node, a->key, text);
	free(text);
	json_decref(r);
}

/* The key of a request's count of chunks sent, from its record's key. */
static void sent_key(const struct answer *a, char *out, size_t size)
{
	snprintf(out, size, "%s%s", RECOVERY_SENT, a->key + strlen(RECOVERY_RECORD));
}

/* Stages the count of chunks requested (forget: removes it, the request done). */
static void sent_put(struct answer *a, size_t sent, bool forget)
{
	char key[600], v[32];

	sent_key(a, key, sizeof(key));
	snprintf(v, sizeof(v), "%zu", sent);
	tsync_node_record_put(a->node, key, forget ? NULL : v);
}

/* Sends chunks until RECOVERY_IN_FLIGHT are out or none is left. */
static void pump(struct answer *a)
{
	while (!a->failed && a->in_flight < RECOVERY_IN_FLIGHT && a->chunk < a->chunks) {
		struct chunk_req *c = calloc(1, sizeof(*c));
		size_t next = a->next;
		int r = -ENOMEM;

		if (c && (c->text = next_chunk(a))) {
			/* Durable with the request: tsync_node_request() commits
			 * what is staged as it accepts it. */
			sent_put(a, a->chunk + 1, false);
			r = tsync_node_request(a->node, a->peer, "recovery_data", c->text, chunk_done, c);
		}
		if (r < 0) {
			if (c && c->text)
				sent_put(a, a->chunk, false); /* not sent after all (not committed yet) */
			if (c)
				free(c->text);
			free(c);
			a->next = next;
			/* A full queue: again when a chunk is answered. Else the
			 * record stays not done and the next start resumes it. */
			if (r != -ENOBUFS || a->in_flight == 0)
				a->failed = true;
			break;
		}
		c->a = a;
		a->chunk++;
		a->in_flight++;
	}
	if (a->in_flight == 0) {
		if (!a->failed && a->chunk >= a->chunks) {
			record_put(a, true);
			sent_put(a, 0, true);
		}
		answer_free(a);
	}
}

static void chunk_done(void *ud, tsync_node *node, int status, const char *result)
{
	struct chunk_req *c = ud;
	struct answer *a = c->a;

	(void)result;
	/* The receiver restarted between acting and keeping its answer: the
	 * chunk goes again, the same (the receiver knows a chunk by its
	 * request and number, and journals it once). */
	if (status == TSYNC_EPEER_RESTARTED && !(a && a->failed) &&
	    tsync_node_request(node, a ? a->peer : c->peer, "recovery_data", c->text, chunk_done, c) == 0)
		return;
	free(c->text);
	free(c->peer);
	free(c);
	if (!a)
		return;
	a->in_flight--;
	/* Canceled (the node is freed) or refused: the rest is not sent; the
	 * chunks already queued are the engine's and arrive once. */
	if (status != 0)
		a->failed = true;
	pump(a);
}

/* Passes over the next chunk (as next_chunk() would make it); false if memory ran out. */
static bool skip_chunk(struct answer *a)
{
	size_t n;
	json_t *io, *body = chunk_span(a, &n, &io);

	if (!body)
		return false;
	json_decref(io);
	json_decref(body);
	a->next += n;
	a->chunk++;
	return true;
}

/* How many chunks the entries make: the same packing as next_chunk(), counted. */
static size_t count_chunks(struct answer *a)
{
	size_t n = 0;

	a->next = 0;
	a->chunk = 0;
	if (json_array_size(a->entries) == 0)
		return 1;
	while (a->next < json_array_size(a->entries) && skip_chunk(a))
		n++;
	a->next = 0;
	a->chunk = 0;
	return n;
}

/* Whether `id` is a request id worth repeating: printable, no '/'. */
static bool id_ok(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > RECOVERY_MAX_ID)
		return false;
	for (size_t i = 0; i < n; i++)
		if (id[i] <= ' ' || id[i] > '~' || id[i] == '/' || id[i] == '"' || id[i] == '\\')
			return false;
	return true;
}

/*
 * The answer to the window of `head` (its lost_connection_time and
 * restored_connection_time; taken) sent to `peer`: the history read, and
 * "trimmed" and "chunks" set in the head. NULL with *err.
 */
static struct answer *answer_new(tsync_node *node, const char *peer, json_t *head, const char *key, int *err)
{
	struct answer *a = calloc(1, sizeof(*a));
	double lost = json_number_value(json_object_get(head, "lost_connection_time"));
	double restored = json_number_value(json_object_get(head, "restored_connection_time"));

	*err = -ENOMEM;
	if (!a) {
		json_decref(head);
		return NULL;
	}
	a->node = node;
	a->head = head;
	a->peer = util__strdup(peer);
	a->key = util__strdup(key);
	a->entries = json_array();
	a->budget = node__max_datagram(node) > RECOVERY_ENVELOPE * 2
	                ? node__max_datagram(node) - RECOVERY_ENVELOPE
	                : RECOVERY_ENVELOPE;
	if (!a->peer || !a->key || !a->entries) {
		answer_free(a);
		return NULL;
	}
	/* Seconds to microseconds, the window rounded outwards. */
	*err = tsync_node_history_query(node, NULL, (int64_t)floor(lost * 1e6), (int64_t)ceil(restored * 1e6),
	                                collect, a->entries, &a->w);
	if (*err < 0) {
		answer_free(a);
		return NULL;
	}
	json_object_del(a->head, "trimmed");
	if (a->w.trimmed &&
	    json_object_set_new(a->head, "trimmed",
	                        json_pack("{s:I,s:I}", "from_us", (json_int_t)a->w.trimmed_from_us, "to_us",
	                                  (json_int_t)a->w.trimmed_to_us)) < 0) {
		*err = -ENOMEM;
		answer_free(a);
		return NULL;
	}
	/* Every chunk says how many there are: counted with the count's own
	 * digits in place, since they take room in each chunk. */
	a->chunks = count_chunks(a);
	json_object_set_new(a->head, "chunks", json_integer((json_int_t)a->chunks));
	a->chunks = count_chunks(a);
	json_object_set_new(a->head, "chunks", json_integer((json_int_t)a->chunks));
	return a;
}

static bool answered_before(tsync_node *node, const char *key, char **result);

int node__recovery_request(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	static uint64_t counter;
	json_error_t jerr;
	json_t *j = json_loads(req->json, 0, &jerr), *lj, *rj, *dj, *ij;
	struct answer *a = NULL;
	json_t *ans, *head;
	double lost, restored;
	char request[2 * RECOVERY_MAX_ID + 256], key[sizeof(request) + 32];
	const char *deliver_to;
	int r;

	(void)ud;
	lj = j ? json_object_get(j, "lost_connection_time") : NULL;
	rj = j ? json_object_get(j, "restored_connection_time") : NULL;
	dj = j ? json_object_get(j, "deliver_to") : NULL;
	/* Not "id": the mesh's envelope has that name for its own request id. */
	ij = j ? json_object_get(j, "request_id") : NULL;
	if (!json_is_number(lj) || !json_is_number(rj) || (dj && !json_is_string(dj)) ||
	    (ij && !json_is_string(ij) && !json_is_integer(ij))) {
		json_decref(j);
		return TSYNC_ECMD_ARGS;
	}
	lost = json_number_value(lj);
	restored = json_number_value(rj);
	deliver_to = dj ? json_string_value(dj) : req->from;
	/* The chunks go to a controller of the site other than this one. */
	if (!isfinite(lost) || !isfinite(restored) || lost > restored || lost < 0 || restored > 1e13 ||
	    tsync_site_controller_find(tsync_node_site(node), deliver_to) < 0 ||
	    strcmp(deliver_to, tsync_node_name(node)) == 0) {
		json_decref(j);
		return TSYNC_ECMD_ARGS;
	}
	if (json_is_string(ij) && id_ok(json_string_value(ij)))
		snprintf(request, sizeof(request), "%s/%s", req->from, json_string_value(ij));
	else if (json_is_integer(ij))
		snprintf(request, sizeof(request), "%s/%lld", req->from, (long long)json_integer_value(ij));
	else if (!ij)
		snprintf(request, sizeof(request), "%s/%s.%llu.%llu", req->from, tsync_node_name(node),
		         (unsigned long long)tsync_node_boot(node), (unsigned long long)++counter);
	else {
		json_decref(j);
		return TSYNC_ECMD_ARGS;
	}
	snprintf(key, sizeof(key), "%s%s", RECOVERY_RECORD, request);
	/* The same request again (asked again after a restart of the
	 * requester): its answer, and nothing sent twice. */
	if (answered_before(node, key, result)) {
		json_decref(j);
		return 0;
	}
	/* The sender is the envelope's; the data store is named by "entity",
	 * the request by "request". */
	head = json_pack("{s:s,s:s,s:O,s:O,s:I}", "entity", tsync_node_name(node), "request", request,
	                 "lost_connection_time", lj, "restored_connection_time", rj, "chunks", (json_int_t)0);
	/* deliver_to is j's: j goes once the answer has its copy. */
	a = head ? answer_new(node, deliver_to, head, key, &r) : NULL;
	json_decref(j);
	if (!a)
		return head ? r : -ENOMEM;
	ans = json_pack("{s:s,s:s,s:I,s:I,s:b,s:I,s:I,s:b}", "request", request, "deliver_to", a->peer,
	                "chunks", (json_int_t)a->chunks, "entries", (json_int_t)json_array_size(a->entries),
	                "trimmed", a->w.trimmed, "trimmed_from_us", (json_int_t)a->w.trimmed_from_us,
	                "trimmed_to_us", (json_int_t)a->w.trimmed_to_us, "complete",
	                json_array_size(a->entries) < RECOVERY_MAX_ENTRIES);
	a->result = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
	json_decref(ans);
	*result = a->result ? util__strdup(a->result) : NULL;
	active_add(a);
	record_put(a, false);
	pump(a);
	return 0;
}

/* A request not done when the node stopped (its record): the chunks after
 * those its store resumes, or the whole window again under a new name when
 * the history no longer holds the same changes. */
static void answer_resume(tsync_node *node, const char *key, json_t *rec)
{
	json_t *head = json_deep_copy(json_object_get(rec, "head"));
	const char *peer = json_string_value(json_object_get(rec, "deliver_to"));
	json_int_t sent = json_integer_value(json_object_get(rec, "sent"));
	json_int_t entries = json_integer_value(json_object_get(rec, "entries"));
	const char *result = json_string_value(json_object_get(rec, "answer"));
	struct answer *a;
	int err;

	if (!head || !peer || !json_is_string(json_object_get(head, "request"))) {
		json_decref(head);
		return;
	}
	a = answer_new(node, peer, json_incref(head), key, &err);
	if (a) {
		char skey[600], *v = NULL;
		sent_key(a, skey, sizeof(skey));
		if (tsync_node_record_get(node, skey, &v) == 0 && v && strtoll(v, NULL, 10) > sent)
			sent = strtoll(v, NULL, 10);
		free(v);
	}
	if (a && (json_int_t)json_array_size(a->entries) != entries) {
		char name[2 * RECOVERY_MAX_ID + 300];
		snprintf(name, sizeof(name), "%s~%llu", json_string_value(json_object_get(head, "request")),
		         (unsigned long long)tsync_node_boot(node));
		answer_free(a);
		json_object_set_new(head, "request", json_string(name));
		a = answer_new(node, peer, json_incref(head), key, &err);
		sent = 0;
	}
	json_decref(head);
	if (!a)
		return;
	a->result = result ? util__strdup(result) : NULL;
	while ((json_int_t)a->chunk < sent && a->chunk < a->chunks && skip_chunk(a))
		;
	active_add(a);
	record_put(a, false);
	sent_put(a, a->chunk, false); /* 0 again under a new name */
	pump(a);
}

static bool answered_before(tsync_node *node, const char *key, char **result)
{
	struct answer *a = active_find(node, key);
	char *text = NULL;
	json_t *rec;
	const char *ans;

	if (a) {
		*result = a->result ? util__strdup(a->result) : NULL;
		return true;
	}
	if (tsync_node_record_get(node, key, &text) < 0)
		return false;
	rec = json_loads(text, 0, NULL);
	free(text);
	if (!json_is_object(rec)) {
		json_decref(rec);
		return false;
	}
	ans = json_string_value(json_object_get(rec, "answer"));
	*result = ans ? util__strdup(ans) : NULL;
	if (!json_is_true(json_object_get(rec, "done")))
		answer_resume(node, key, rec);
	json_decref(rec);
	return true;
}

static void resume_cb(void *ud, const char *key, const char *text)
{
	json_object_set_new(ud, key, json_string(text));
}

void node__recovery_resume(tsync_node *node)
{
	json_t *recs = json_object(), *v;
	int64_t now = (int64_t)util__realtime_us();
	const char *key;

	if (!recs || tsync_node_record_scan(node, RECOVERY_RECORD, "tsync.recovery0", resume_cb, recs) < 0) {
		json_decref(recs);
		return;
	}
	json_object_foreach(recs, key, v)
	{
		json_t *rec = json_loads(json_string_value(v), 0, NULL);
		if (!json_is_true(json_object_get(rec, "done")))
			answer_resume(node, key, rec);
		else if (now - json_integer_value(json_object_get(rec, "at_us")) > RECOVERY_KEEP_US)
			tsync_node_record_put(node, key, NULL);
		json_decref(rec);
	}
	json_decref(recs);
}

void node__recovery_resumed(tsync_node *node, const struct store_request *q, tsync_done_fn *done,
                            void **userdata)
{
	json_t *b;
	struct chunk_req *c;
	const char *entity;
	bool mine;

	if (!q->type_name || strcmp(q->type_name, "recovery_data") || !q->body)
		return;
	/* Its own chunks only: an application may send the type too. */
	b = json_loads(q->body, 0, NULL);
	entity = json_string_value(json_object_get(b, "entity"));
	mine = json_is_string(json_object_get(b, "request")) &&
	       json_is_integer(json_object_get(b, "chunk")) && entity &&
	       !strcmp(entity, tsync_node_name(node));
	json_decref(b);
	if (!mine || !(c = calloc(1, sizeof(*c))))
		return;
	c->text = util__strdup(q->body);
	c->peer = util__strdup(q->peer);
	if (!c->text || !c->peer) {
		free(c->text);
		free(c->peer);
		free(c);
		return;
	}
	*done = chunk_done;
	*userdata = c;
}
