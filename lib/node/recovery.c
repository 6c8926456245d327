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
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <thingsync/history.h>

#include "node/node.h"

/* Chunks in flight at once: well below max_outstanding and max_queued,
 * so the answer never crowds out the node's other requests. */
#define RECOVERY_IN_FLIGHT 8
/* Bytes of a datagram kept for the envelope (sender, boot, id, type, tag). */
#define RECOVERY_ENVELOPE 256
/* The most changes one answer carries, held in memory while it is sent. */
#define RECOVERY_MAX_ENTRIES 1000000
/* The longest "id" of a request taken as the seed's system id. */
#define RECOVERY_MAX_ID 64

struct answer {
	tsync_node *node;
	char *peer;           /* where the chunks go: deliver_to, or the requester */
	json_t *head;         /* the members every chunk repeats */
	json_t *entries;      /* every entry of the window, in order */
	size_t next;          /* the first entry not yet sent */
	size_t chunk, chunks; /* chunks sent, and in all */
	size_t in_flight;
	size_t budget; /* bytes of a chunk's JSON */
	bool failed;
	bool closed;
};

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
	json_decref(a->head);
	json_decref(a->entries);
	free(a->peer);
	free(a);
}

/* The next chunk's text: as many entries as fit in the budget, at least
 * one. NULL when none is left (or memory ran out). */
static char *next_chunk(struct answer *a)
{
	json_t *body = json_deep_copy(a->head), *io = json_array();
	size_t total = json_array_size(a->entries), n = 0;
	char *text = NULL;

	if (!body || !io || json_object_set_new(body, "recovery_data", json_pack("{s:O}", "io", io)) < 0) {
		json_decref(io);
		json_decref(body);
		return NULL;
	}
	json_object_set_new(body, "chunk", json_integer((json_int_t)a->chunk + 1));
	while (a->next + n < total) {
		char *t;

		json_array_append(io, json_array_get(a->entries, a->next + n));
		t = json_dumps(body, JSON_COMPACT);
		if (!t)
			break;
		if (strlen(t) > a->budget && n > 0) {
			/* Over the budget: this entry opens the next chunk. */
			free(t);
			break;
		}
		free(text);
		text = t;
		n++;
	}
	/* An empty window still makes its one chunk. */
	if (total == 0 && !text)
		text = json_dumps(body, JSON_COMPACT);
	a->next += n;
	json_decref(io);
	json_decref(body);
	return text;
}

static void chunk_done(void *ud, tsync_node *node, int status, const char *result);

/* One chunk on its way: kept to be sent again when its outcome is unknown. */
struct chunk_req {
	struct answer *a;
	char *text;
};

/* Sends chunks until RECOVERY_IN_FLIGHT are out or none is left. */
static void pump(struct answer *a)
{
	while (!a->failed && a->in_flight < RECOVERY_IN_FLIGHT && a->chunk < a->chunks) {
		struct chunk_req *c = calloc(1, sizeof(*c));
		int r = c && (c->text = next_chunk(a))
		            ? tsync_node_request(a->node, a->peer, "recovery_data", c->text, chunk_done, c)
		            : -ENOMEM;

		if (r < 0) {
			if (c)
				free(c->text);
			free(c);
			/* The requester asks again; what it got is counted there, once. */
			a->failed = true;
			break;
		}
		c->a = a;
		a->chunk++;
		a->in_flight++;
	}
	if (a->in_flight == 0)
		answer_free(a);
}

static void chunk_done(void *ud, tsync_node *node, int status, const char *result)
{
	struct chunk_req *c = ud;
	struct answer *a = c->a;

	(void)result;
	/* The receiver restarted between acting and keeping its answer: the
	 * chunk goes again, the same (the receiver knows a chunk by its
	 * request and number, and journals it once). */
	if (status == TSYNC_EPEER_RESTARTED && !a->failed &&
	    tsync_node_request(node, a->peer, "recovery_data", c->text, chunk_done, c) == 0)
		return;
	free(c->text);
	free(c);
	a->in_flight--;
	/* Canceled (the node is freed) or refused: the rest is not sent; the
	 * chunks already queued are the engine's and arrive once. */
	if (status != 0)
		a->failed = true;
	pump(a);
}

/* How many chunks the entries make: the same packing as next_chunk(), counted. */
static size_t count_chunks(struct answer *a)
{
	size_t n = 0;

	a->next = 0;
	if (json_array_size(a->entries) == 0)
		return 1;
	for (a->chunk = 0; a->next < json_array_size(a->entries); a->chunk++) {
		char *t = next_chunk(a);
		if (!t)
			break;
		free(t);
		n++;
	}
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

int node__recovery_request(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	static uint64_t counter;
	json_error_t jerr;
	json_t *j = json_loads(req->json, 0, &jerr), *lj, *rj, *dj, *ij;
	tsync_history_window w;
	struct answer *a = NULL;
	json_t *ans;
	double lost, restored;
	char request[2 * RECOVERY_MAX_ID + 256];
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
	a = calloc(1, sizeof(*a));
	if (!a) {
		json_decref(j);
		return -ENOMEM;
	}
	a->node = node;
	a->peer = strdup(deliver_to);
	a->entries = json_array();
	a->budget = node__max_datagram(node) > RECOVERY_ENVELOPE * 2
	                ? node__max_datagram(node) - RECOVERY_ENVELOPE
	                : RECOVERY_ENVELOPE;
	/* The sender is the envelope's; the data store is named by "entity",
	 * the request by "request". */
	a->head =
	    json_pack("{s:s,s:s,s:O,s:O,s:I}", "entity", tsync_node_name(node), "request", request,
	              "lost_connection_time", lj, "restored_connection_time", rj, "chunks", (json_int_t)0);
	json_decref(j);
	if (!a->peer || !a->entries || !a->head) {
		answer_free(a);
		return -ENOMEM;
	}
	/* Seconds to microseconds, the window rounded outwards. */
	r = tsync_node_history_query(node, NULL, (int64_t)floor(lost * 1e6), (int64_t)ceil(restored * 1e6),
	                             collect, a->entries, &w);
	if (r < 0) {
		answer_free(a);
		return r;
	}
	if (w.trimmed && json_object_set_new(a->head, "trimmed",
	                                     json_pack("{s:I,s:I}", "from_us", (json_int_t)w.trimmed_from_us,
	                                               "to_us", (json_int_t)w.trimmed_to_us)) < 0) {
		answer_free(a);
		return -ENOMEM;
	}
	/* Every chunk says how many there are: counted with the count's own
	 * digits in place, since they take room in each chunk. */
	a->chunks = count_chunks(a);
	json_object_set_new(a->head, "chunks", json_integer((json_int_t)a->chunks));
	a->chunks = count_chunks(a);
	json_object_set_new(a->head, "chunks", json_integer((json_int_t)a->chunks));
	ans = json_pack("{s:s,s:s,s:I,s:I,s:b,s:I,s:I,s:b}", "request", request, "deliver_to", a->peer,
	                "chunks", (json_int_t)a->chunks, "entries", (json_int_t)json_array_size(a->entries),
	                "trimmed", w.trimmed, "trimmed_from_us", (json_int_t)w.trimmed_from_us,
	                "trimmed_to_us", (json_int_t)w.trimmed_to_us, "complete",
	                json_array_size(a->entries) < RECOVERY_MAX_ENTRIES);
	*result = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
	json_decref(ans);
	if (a->chunks == 0) {
		answer_free(a);
		return 0;
	}
	pump(a);
	return 0;
}
