/*
 * thingsync-pushd: what the mesh delivers to the push role besides values
 * (the contracts of issues 13 and 14):
 *
 *  - recovery_data, from a data store answering recoveryd's
 *    recovery_data_request: one chunk of an owner's history,
 *      {"type":"recovery_data","entity":OWNER,"request":"<requester>/<id>",
 *       "lost_connection_time":L,"restored_connection_time":R,"chunk":K,
 *       "chunks":N,"trimmed":{"from_us":A,"to_us":B},
 *       "recovery_data":{"io":[{"thing","value","time_us","owner_boot","version"}]}}
 *    Each entry is journaled as a measurement marked recovery, "trimmed" as
 *    one recovery_gap item per request (the chunks may each repeat it).
 *  - cumul_data, from forensicd: one owner's closed day,
 *      {"type":"cumul_data","owner":OWNER,"day":"YYYY-MM-DD","cumuls":{THING:{...}}}
 *    journaled as one cumul item per thing.
 *
 * The handlers only stage; the commit hook (pushd.c) commits the journal
 * and the node answers after it. The mesh's request windows call a handler
 * once per request, except across a crash between the journal's commit and
 * the node's (its window is committed after ours): a commit mark written
 * with the entries (journal__stage_mark()) recognises such a request when it
 * comes again, so nothing is journaled twice. Entries a request cannot carry
 * (a thing that is not the owner's in site.conf, a value not of its type;
 * for recovery, a thing this push controller does not use, as for live
 * values) are counted, logged and answered, not journaled. Closed days of
 * every thing of the owner are taken: the server keeps daily statistics
 * of all of them.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pushd.h"

/* Keys of commit marks, and what is logged of a peer's names. */
#define INTAKE_KEY_MAX 200

/* A value of `type` from JSON; false when it is not one. */
static bool value_from_json(json_t *j, tsync_type type, tsync_value *v)
{
	switch (type) {
	case TSYNC_TYPE_BOOL:
		if (json_is_boolean(j))
			*v = tsync_bool(json_is_true(j));
		else if (json_is_integer(j) && (json_integer_value(j) == 0 || json_integer_value(j) == 1))
			*v = tsync_bool(json_integer_value(j) == 1);
		else
			return false;
		return true;
	case TSYNC_TYPE_INT:
		if (!json_is_integer(j))
			return false;
		*v = tsync_int((int64_t)json_integer_value(j));
		return true;
	case TSYNC_TYPE_FLOAT:
		if (!json_is_number(j))
			return false;
		*v = tsync_float(json_number_value(j));
		return true;
	case TSYNC_TYPE_STRING:
		if (!json_is_string(j))
			return false;
		*v = tsync_string(json_string_value(j));
		return true;
	default:
		return false;
	}
}

/*
 * Whether `thing` is a thing of the site that `owner` owns (its type in
 * *type) and, with `used`, one this push controller uses: a change of a
 * thing the push role does not receive live does not reach the collector
 * by recovery either.
 */
static bool owned_by(struct pushd *pd, const char *thing, const char *owner, bool used, tsync_type *type)
{
	tsync_thing_info ti;
	int idx = thing ? tsync_site_thing_find(pd->site, thing) : -1;
	bool user = !used;

	if (idx < 0 || tsync_site_thing(pd->site, (size_t)idx, &ti) < 0 || strcmp(ti.owner, owner) != 0)
		return false;
	for (size_t i = 0; !user && i < ti.n_users; i++)
		user = strcmp(ti.users[i], pd->name) == 0;
	*type = ti.type;
	return user;
}

/* A staging error: the batch is refused by the commit hook (retried) unless the entry itself is bad. */
static int staged(struct pushd *pd, int r, uint64_t *journaled, uint64_t *refused)
{
	if (r == 0)
		(*journaled)++;
	else if (r == -EINVAL)
		(*refused)++;
	else
		pd->stage_failed++;
	return r == -EINVAL ? 0 : r;
}

static char *answer(uint64_t journaled, uint64_t refused, bool duplicate)
{
	char *s = NULL;

	if (asprintf(&s, "{\"journaled\":%" PRIu64 ",\"refused\":%" PRIu64 ",\"duplicate\":%s}", journaled,
	             refused, duplicate ? "true" : "false") < 0)
		return NULL;
	return s;
}

/*
 * The end of a request: its mark staged with its entries, and the answer.
 * A staging failure makes the commit hook refuse the batch (the request
 * comes again); `*counter` counts what was journaled. Returns 0.
 */
static int finish(struct pushd *pd, const char *key, int r, uint64_t journaled, uint64_t refused,
                  uint64_t *counter, char **result)
{
	if (r == 0)
		r = journal__stage_mark(pd->journal, key);
	if (r < 0) {
		pd->stage_failed++;
		return 0;
	}
	*counter += journaled;
	pd->intake_refused += refused;
	if (refused)
		log_warn(&pd->log, "%s: %" PRIu64 " entr%s refused (not the owner's things, or bad values)",
		         key, refused, refused == 1 ? "y" : "ies");
	*result = answer(journaled, refused, false);
	return 0;
}

/* Whether the request of `key` was journaled before (a delivery after a crash): answered again. */
static bool seen(struct pushd *pd, const char *key, char **result)
{
	int r = journal__has_mark(pd->journal, key);

	if (r == 1) {
		pd->intake_duplicates++;
		log_info(&pd->log, "%s: journaled before (delivered again after a restart)", key);
		*result = answer(0, 0, true);
		return true;
	}
	return false;
}

static int stage_entries(struct pushd *pd, const char *owner, json_t *io, uint64_t *journaled,
                         uint64_t *refused)
{
	size_t i;
	json_t *it;

	json_array_foreach(io, i, it)
	{
		struct journal_entry e = {.via = JOURNAL_VIA_RECOVERY, .kind = JOURNAL_MEASUREMENT};
		json_t *jb = json_object_get(it, "owner_boot"), *jv = json_object_get(it, "version");
		json_t *jt = json_object_get(it, "time_us");
		tsync_type type;
		int r;

		e.thing = json_string_value(json_object_get(it, "thing"));
		if (!owned_by(pd, e.thing, owner, true, &type) ||
		    !value_from_json(json_object_get(it, "value"), type, &e.value) || !json_is_integer(jt) ||
		    !json_is_integer(jb) || json_integer_value(jb) < 0 || !json_is_integer(jv) ||
		    json_integer_value(jv) < 0) {
			(*refused)++;
			continue;
		}
		e.time_us = (int64_t)json_integer_value(jt);
		e.owner_boot = (uint64_t)json_integer_value(jb);
		e.version = (uint64_t)json_integer_value(jv);
		r = staged(pd, journal__stage_entry(pd->journal, &e, NULL), journaled, refused);
		if (r < 0)
			return r;
	}
	return 0;
}

static int on_recovery_data(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct pushd *pd = ud;
	json_t *root = json_loads(req->json, 0, NULL);
	const char *owner = json_string_value(json_object_get(root, "entity"));
	const char *request = json_string_value(json_object_get(root, "request"));
	json_t *jchunk = json_object_get(root, "chunk"), *trimmed = json_object_get(root, "trimmed");
	json_t *io = json_object_get(json_object_get(root, "recovery_data"), "io");
	uint64_t journaled = 0, refused = 0;
	char key[INTAKE_KEY_MAX + 64], gkey[INTAKE_KEY_MAX + 8];
	int r = TSYNC_ECMD_ARGS;

	if (!owner || tsync_site_controller_find(pd->site, owner) < 0 || !request || !*request ||
	    strlen(request) > INTAKE_KEY_MAX || !json_is_integer(jchunk) || json_integer_value(jchunk) < 0 ||
	    (io && !json_is_array(io)) || (trimmed && !json_is_object(trimmed)))
		goto leave;
	snprintf(key, sizeof(key), "rd/%s/%" JSON_INTEGER_FORMAT, request, json_integer_value(jchunk));
	r = 0;
	if (seen(pd, key, result))
		goto leave;
	r = stage_entries(pd, owner, io, &journaled, &refused);
	/* Every chunk of a request may repeat the window's "trimmed": one gap per request. */
	snprintf(gkey, sizeof(gkey), "rg/%s", request);
	if (r == 0 && trimmed && journal__has_mark(pd->journal, gkey) == 0 &&
	    (r = journal__stage_mark(pd->journal, gkey)) == 0) {
		json_t *ja = json_object_get(trimmed, "from_us"), *jb = json_object_get(trimmed, "to_us");
		struct journal_entry e = {
		    .via = JOURNAL_VIA_RECOVERY, .kind = JOURNAL_RECOVERY_GAP, .owner = owner};
		e.from_us = json_is_integer(ja) ? (int64_t)json_integer_value(ja) : 0;
		e.to_us = json_is_integer(jb) ? (int64_t)json_integer_value(jb) : -1;
		r = staged(pd, journal__stage_entry(pd->journal, &e, NULL), &journaled, &refused);
		if (r == 0)
			log_warn(&pd->log,
			         "recovery from %s: its history no longer holds [%" PRId64 ", %" PRId64
			         "] us",
			         owner, e.from_us, e.to_us);
	}
	r = finish(pd, key, r, journaled, refused, &pd->recovered, result);
leave:
	json_decref(root);
	return r;
}

/* FNV-1a of a text: the cumuls a cumul_data carried, in its commit mark. */
static uint64_t fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static int on_cumul_data(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct pushd *pd = ud;
	json_t *root = json_loads(req->json, 0, NULL);
	const char *owner = json_string_value(json_object_get(root, "owner"));
	const char *day = json_string_value(json_object_get(root, "day"));
	json_t *cumuls = json_object_get(root, "cumuls"), *c;
	uint64_t journaled = 0, refused = 0;
	char key[INTAKE_KEY_MAX + 64], *text = NULL;
	const char *thing;
	int r = TSYNC_ECMD_ARGS;

	if (!owner || tsync_site_controller_find(pd->site, owner) < 0 || !day ||
	    strlen(day) != JOURNAL_DAY_LEN || !json_is_object(cumuls))
		goto leave;
	text = json_dumps(cumuls, JSON_COMPACT | JSON_SORT_KEYS);
	r = -ENOMEM;
	if (!text)
		goto leave;
	snprintf(key, sizeof(key), "cd/%s/%s/%s/%016" PRIx64, req->from, owner, day, fnv1a(text));
	r = 0;
	if (seen(pd, key, result))
		goto leave;
	json_object_foreach(cumuls, thing, c)
	{
		struct journal_entry e = {.kind = JOURNAL_CUMUL, .owner = owner, .thing = thing, .day = day};
		char *ctext = json_is_object(c) ? json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
		tsync_type type;

		e.cumul = ctext;
		if (!ctext || !owned_by(pd, thing, owner, false, &type))
			refused++;
		else
			r = staged(pd, journal__stage_entry(pd->journal, &e, NULL), &journaled, &refused);
		free(ctext);
		if (r < 0)
			break;
	}
	r = finish(pd, key, r, journaled, refused, &pd->cumuls_journaled, result);
leave:
	free(text);
	json_decref(root);
	return r;
}

int intake__init(struct pushd *pd)
{
	int r = tsync_node_on_request(pd->node, "recovery_data", on_recovery_data, pd);

	if (r == 0)
		r = tsync_node_on_request(pd->node, "cumul_data", on_cumul_data, pd);
	return r;
}
