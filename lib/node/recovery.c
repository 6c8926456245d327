/*
 * lib/node: a data store's answer to the seed's `recovery_data_request`
 * (seed 000, DESIGN.md "Recovery, pull and push"): the changes of the
 * window [lost_connection_time, restored_connection_time] (seconds since
 * the epoch, as the seed writes times) from the node's history, sent back
 * to the requester as `recovery_data` messages, each small enough for one
 * datagram, each a request of its own, so the mesh delivers it exactly
 * once. Only the public node API is used.
 *
 *   {"type":"recovery_data","entity":ME,"lost_connection_time":L,
 *    "restored_connection_time":R,"chunk":K,"chunks":N,
 *    "recovery_data":{"io":[{"thing":T,"value":V,"time_us":U,"owner_boot":B,"version":X},...]}}
 *
 * The request's own answer says how many chunks and entries follow, and
 * which part of the window the history had already trimmed.
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

struct answer {
	tsync_node *node;
	char *peer;
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
	a->next += n;
	json_decref(io);
	json_decref(body);
	return text;
}

static void chunk_done(void *ud, tsync_node *node, int status, const char *result);

/* Sends chunks until RECOVERY_IN_FLIGHT are out or none is left. */
static void pump(struct answer *a)
{
	while (!a->failed && a->in_flight < RECOVERY_IN_FLIGHT && a->chunk < a->chunks) {
		char *text = next_chunk(a);
		int r = text ? tsync_node_request(a->node, a->peer, "recovery_data", text, chunk_done, a)
		             : -ENOMEM;

		free(text);
		if (r < 0) {
			/* The requester asks again; what it got is counted there, once. */
			a->failed = true;
			break;
		}
		a->chunk++;
		a->in_flight++;
	}
	if (a->in_flight == 0)
		answer_free(a);
}

static void chunk_done(void *ud, tsync_node *node, int status, const char *result)
{
	struct answer *a = ud;

	(void)node;
	(void)result;
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

int node__recovery_request(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	json_error_t jerr;
	json_t *j = json_loads(req->json, 0, &jerr), *lj, *rj;
	tsync_history_window w;
	struct answer *a = NULL;
	json_t *ans;
	double lost, restored;
	int r;

	(void)ud;
	lj = j ? json_object_get(j, "lost_connection_time") : NULL;
	rj = j ? json_object_get(j, "restored_connection_time") : NULL;
	if (!json_is_number(lj) || !json_is_number(rj)) {
		json_decref(j);
		return TSYNC_ECMD_ARGS;
	}
	lost = json_number_value(lj);
	restored = json_number_value(rj);
	if (!isfinite(lost) || !isfinite(restored) || lost > restored || lost < 0 || restored > 1e13) {
		json_decref(j);
		return TSYNC_ECMD_ARGS;
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		json_decref(j);
		return -ENOMEM;
	}
	a->node = node;
	a->peer = strdup(req->from);
	a->entries = json_array();
	a->budget = node__max_datagram(node) > RECOVERY_ENVELOPE * 2
	                ? node__max_datagram(node) - RECOVERY_ENVELOPE
	                : RECOVERY_ENVELOPE;
	/* The seed's "id" (system id) is the mesh's request id here: the
	 * sender is the envelope's, the data store is named by "entity". */
	a->head = json_pack("{s:s,s:O,s:O,s:I}", "entity", tsync_node_name(node), "lost_connection_time", lj,
	                    "restored_connection_time", rj, "chunks", (json_int_t)0);
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
	/* Every chunk says how many there are: counted with the count's own
	 * digits in place, since they take room in each chunk. */
	a->chunks = count_chunks(a);
	json_object_set_new(a->head, "chunks", json_integer((json_int_t)a->chunks));
	a->chunks = count_chunks(a);
	json_object_set_new(a->head, "chunks", json_integer((json_int_t)a->chunks));
	ans = json_pack("{s:I,s:I,s:b,s:I,s:I,s:b}", "chunks", (json_int_t)a->chunks, "entries",
	                (json_int_t)json_array_size(a->entries), "trimmed", w.trimmed, "trimmed_from_us",
	                (json_int_t)w.trimmed_from_us, "trimmed_to_us", (json_int_t)w.trimmed_to_us,
	                "complete", json_array_size(a->entries) < RECOVERY_MAX_ENTRIES);
	*result = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
	json_decref(ans);
	if (a->chunks == 0) {
		answer_free(a);
		return 0;
	}
	pump(a);
	return 0;
}
