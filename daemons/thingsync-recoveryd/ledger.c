/*
 * thingsync-recoveryd: the outage ledger. An outage opens with the first
 * cause that says the path to the collector is down (pushd's
 * connection_status, the push controller silent on the mesh, this daemon
 * itself down) and closes when the last one clears; its loss time is the
 * first cause's and never moves later, whatever reports come after, across
 * restarts too (the ledger is one record of the node's store). Everything
 * in it is bounded: causes per reporter, the last recoveries.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "recoveryd.h"

static const char *const owner_states[] = {"asked", "answered", "failed", "pending"};

static json_t *recovery_json(const struct recovery *r)
{
	json_t *owners = json_object(), *j;

	for (size_t i = 0; owners && i < r->n_owners; i++) {
		const struct ledger_owner *o = &r->owners[i];
		json_t *oj = json_pack("{s:s,s:I,s:I,s:b}", "state", owner_states[o->state], "chunks",
		                       (json_int_t)o->chunks, "entries", (json_int_t)o->entries, "trimmed",
		                       o->trimmed);
		if (oj && o->trimmed) {
			json_object_set_new(oj, "trimmed_from_us", json_integer(o->trimmed_from_us));
			json_object_set_new(oj, "trimmed_to_us", json_integer(o->trimmed_to_us));
		}
		if (oj && o->error[0])
			json_object_set_new(oj, "error", json_string(o->error));
		if (oj && o->request_id[0])
			json_object_set_new(oj, "request_id", json_string(o->request_id));
		json_object_set_new(owners, o->name, oj);
	}
	j = json_pack("{s:s,s:I,s:I,s:I,s:s,s:o*}", "id", r->id, "from_us", (json_int_t)r->from_us, "to_us",
	              (json_int_t)r->to_us, "asked_us", (json_int_t)r->asked_us, "reason", r->reason,
	              "owners", owners);
	return j;
}

json_t *ledger__to_json(const struct ledger *l)
{
	json_t *causes = json_object(), *recs = json_array(), *j;

	for (size_t i = 0; causes && i < l->n_causes; i++)
		json_object_set_new(causes, l->causes[i].name, json_integer(l->causes[i].since_us));
	for (size_t i = 0; recs && i < l->n_recoveries; i++)
		json_array_append_new(recs, recovery_json(&l->recoveries_kept[i]));
	j = json_pack("{s:b,s:I,s:o*,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o*}", "lost", l->lost, "lost_us",
	              (json_int_t)l->lost_us, "causes", causes, "alive_us", (json_int_t)l->alive_us,
	              "last_lost_us", (json_int_t)l->last_lost_us, "last_restored_us",
	              (json_int_t)l->last_restored_us, "next_recovery", (json_int_t)l->next_recovery,
	              "outages", (json_int_t)l->outages, "outages_short", (json_int_t)l->outages_short,
	              "recoveries_total", (json_int_t)l->recoveries, "recoveries", recs);
	return j;
}

static int64_t int_of(const json_t *o, const char *key)
{
	return (int64_t)json_integer_value(json_object_get(o, key));
}

static void copy_str(char *dst, size_t cap, const char *s)
{
	snprintf(dst, cap, "%s", s ? s : "");
}

int ledger__from_json(struct ledger *l, const char *text)
{
	json_t *j = json_loads(text, 0, NULL), *causes, *recs, *v;
	const char *k;
	size_t i;

	if (!json_is_object(j)) {
		json_decref(j);
		return -EINVAL;
	}
	memset(l, 0, sizeof(*l));
	l->lost = json_is_true(json_object_get(j, "lost"));
	l->lost_us = int_of(j, "lost_us");
	l->alive_us = int_of(j, "alive_us");
	l->last_lost_us = int_of(j, "last_lost_us");
	l->last_restored_us = int_of(j, "last_restored_us");
	l->next_recovery = (uint64_t)int_of(j, "next_recovery");
	l->outages = (uint64_t)int_of(j, "outages");
	l->outages_short = (uint64_t)int_of(j, "outages_short");
	l->recoveries = (uint64_t)int_of(j, "recoveries_total");
	causes = json_object_get(j, "causes");
	json_object_foreach(causes, k, v)
	{
		if (l->n_causes == LEDGER_MAX_CAUSES)
			break;
		copy_str(l->causes[l->n_causes].name, LEDGER_CAUSE_LEN, k);
		l->causes[l->n_causes++].since_us = (int64_t)json_integer_value(v);
	}
	recs = json_object_get(j, "recoveries");
	json_array_foreach(recs, i, v)
	{
		struct recovery *r;
		json_t *ov;

		if (l->n_recoveries == LEDGER_MAX_RECOVERIES)
			break;
		r = &l->recoveries_kept[l->n_recoveries++];
		copy_str(r->id, sizeof(r->id), json_string_value(json_object_get(v, "id")));
		copy_str(r->reason, sizeof(r->reason), json_string_value(json_object_get(v, "reason")));
		r->from_us = int_of(v, "from_us");
		r->to_us = int_of(v, "to_us");
		r->asked_us = int_of(v, "asked_us");
		json_object_foreach(json_object_get(v, "owners"), k, ov)
		{
			struct ledger_owner *o;
			const char *st = json_string_value(json_object_get(ov, "state"));

			if (r->n_owners == LEDGER_MAX_OWNERS)
				break;
			o = &r->owners[r->n_owners++];
			copy_str(o->name, sizeof(o->name), k);
			o->state = st && !strcmp(st, "answered")  ? OWNER_ANSWERED
			           : st && !strcmp(st, "failed")  ? OWNER_FAILED
			           : st && !strcmp(st, "pending") ? OWNER_PENDING
			                                          : OWNER_ASKED;
			o->chunks = int_of(ov, "chunks");
			o->entries = int_of(ov, "entries");
			o->trimmed = json_is_true(json_object_get(ov, "trimmed"));
			o->trimmed_from_us = int_of(ov, "trimmed_from_us");
			o->trimmed_to_us = int_of(ov, "trimmed_to_us");
			copy_str(o->error, sizeof(o->error), json_string_value(json_object_get(ov, "error")));
			copy_str(o->request_id, sizeof(o->request_id),
			         json_string_value(json_object_get(ov, "request_id")));
		}
	}
	json_decref(j);
	return 0;
}

static int cause_index(const struct ledger *l, const char *cause)
{
	for (size_t i = 0; i < l->n_causes; i++)
		if (!strcmp(l->causes[i].name, cause))
			return (int)i;
	return -1;
}

bool ledger__cause_has(const struct ledger *l, const char *cause)
{
	return cause_index(l, cause) >= 0;
}

bool ledger__cause_set(struct ledger *l, const char *cause, int64_t at_us)
{
	bool opens = !l->lost;
	int i = cause_index(l, cause);

	/* A cause reported again keeps its first time. With every slot taken
	 * the outage is open anyway; the loss time below still holds. */
	if (i < 0 && l->n_causes < LEDGER_MAX_CAUSES) {
		copy_str(l->causes[l->n_causes].name, LEDGER_CAUSE_LEN, cause);
		l->causes[l->n_causes++].since_us = at_us;
	}
	if (opens) {
		l->lost = true;
		l->lost_us = at_us;
		l->outages++;
	} else if (at_us < l->lost_us) {
		/* A reporter that noticed earlier than the first report. */
		l->lost_us = at_us;
	}
	return opens;
}

bool ledger__cause_clear(struct ledger *l, const char *cause, int64_t at_us, int64_t *lost_us)
{
	int i = cause_index(l, cause);

	if (i < 0)
		return false;
	l->causes[i] = l->causes[--l->n_causes];
	if (!l->lost || l->n_causes > 0)
		return false;
	l->lost = false;
	*lost_us = l->lost_us;
	l->last_lost_us = l->lost_us;
	l->last_restored_us = at_us;
	return true;
}

struct recovery *ledger__recovery_new(struct ledger *l, int64_t from_us, int64_t to_us, const char *reason,
                                      int64_t now_us)
{
	struct recovery *r;

	if (l->n_recoveries == LEDGER_MAX_RECOVERIES) {
		memmove(&l->recoveries_kept[0], &l->recoveries_kept[1],
		        (LEDGER_MAX_RECOVERIES - 1) * sizeof(l->recoveries_kept[0]));
		l->n_recoveries--;
	}
	r = &l->recoveries_kept[l->n_recoveries++];
	memset(r, 0, sizeof(*r));
	snprintf(r->id, sizeof(r->id), "r%llu", (unsigned long long)++l->next_recovery);
	copy_str(r->reason, sizeof(r->reason), reason);
	r->from_us = from_us;
	r->to_us = to_us;
	r->asked_us = now_us;
	l->recoveries++;
	return r;
}

struct recovery *ledger__recovery_find(struct ledger *l, const char *id)
{
	for (size_t i = 0; i < l->n_recoveries; i++)
		if (!strcmp(l->recoveries_kept[i].id, id))
			return &l->recoveries_kept[i];
	return NULL;
}
