/*
 * The reference for the differential fuzzer (fuzz_wire_diff.c): lib/wire's
 * datagram reader as it was before issue 15, on a jansson tree. The reader
 * that replaced it (lib/wire/decode.c) must accept and refuse the same
 * datagrams and read the same fields from them. Only the names changed
 * (wire_ref__*), and, with the new tag, the envelope version it wants with a
 * key (WIRE_VERSION; WIRE_VERSION_PLAIN without), and the envelope's "ack"
 * that came later (decode_env).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "wire_ref.h"

/* A name: a non-empty string of at most WIRE_NAME_MAX bytes. */
static const char *get_name(json_t *o, const char *key)
{
	json_t *s = json_object_get(o, key);
	size_t n;

	if (!json_is_string(s))
		return NULL;
	n = json_string_length(s);
	if (n == 0 || n > WIRE_NAME_MAX)
		return NULL;
	return json_string_value(s);
}

/* An optional integer >= min: 1 if present, 0 if absent, -1 if malformed. */
static int get_uint(json_t *o, const char *key, json_int_t min, uint64_t *out)
{
	json_t *v = json_object_get(o, key);

	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < min)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 1;
}

static int decode_env(const struct wire_codec *c, json_t *root, struct wire_env *env, json_t **msgs)
{
	json_t *v = json_object_get(root, "v");

	if (!json_is_integer(v) || json_integer_value(v) != (c->key ? WIRE_VERSION : WIRE_VERSION_PLAIN))
		return -EBADMSG;
	env->from = get_name(root, "from");
	if (!env->from)
		return -EBADMSG;
	if (get_uint(root, "boot", 1, &env->boot) != 1 || get_uint(root, "seq", 1, &env->seq) != 1)
		return -EBADMSG;
	if (get_uint(root, "to_boot", 0, &env->to_boot) < 0 || get_uint(root, "re", 0, &env->re) < 0)
		return -EBADMSG;
	/* Any value but 1 is a sender that does not keep durable windows: a
	 * peer must never count on a window it cannot be sure of. */
	v = json_object_get(root, "dw");
	env->durable = json_is_integer(v) && json_integer_value(v) == 1;
	*msgs = json_object_get(root, "msgs");
	if (!json_is_array(*msgs))
		return -EBADMSG;
	/* Added after issue 15's reader (acknowledgements by datagram): "ack",
	 * a list of (first, last) pairs of integers, 1 <= first <= last, at
	 * most WIRE_ACK_RANGES pairs. */
	v = json_object_get(root, "ack");
	if (v) {
		size_t n = json_is_array(v) ? json_array_size(v) : 0;
		if (!json_is_array(v) || n % 2 || n > 2 * WIRE_ACK_RANGES)
			return -EBADMSG;
		for (size_t i = 0; i < n; i++) {
			json_t *x = json_array_get(v, i);
			if (!json_is_integer(x) || json_integer_value(x) < 1)
				return -EBADMSG;
			env->acks[i / 2][i % 2] = (uint64_t)json_integer_value(x);
		}
		for (size_t i = 0; i < n / 2; i++)
			if (env->acks[i][0] > env->acks[i][1])
				return -EBADMSG;
		env->acks_ok = true;
		env->n_acks = (uint32_t)(n / 2);
	}
	return 0;
}

/* Keeps the first reason a message is bad: it is the one reported. */
static void mark_bad(struct wire_msg *m, tsync_reject reason)
{
	if (m->bad)
		return;
	m->bad = true;
	m->reject = reason;
}

static enum wire_op op_from_name(const char *s)
{
	static const enum wire_op ops[] = {WIRE_OP_SET, WIRE_OP_REPLY, WIRE_OP_ASK, WIRE_OP_PULSE,
	                                   WIRE_OP_REPLY_PULSE};

	for (size_t i = 0; s && i < ARRAY_SIZE(ops); i++)
		if (strcmp(s, wire__op_name(ops[i])) == 0)
			return ops[i];
	return WIRE_OP_NONE;
}

static enum wire_type type_from_name(const char *s)
{
	if (strcmp(s, "io") == 0)
		return WIRE_T_IO;
	if (strcmp(s, "cmd") == 0)
		return WIRE_T_CMD;
	if (strcmp(s, "cum") == 0)
		return WIRE_T_CUM;
	if (strcmp(s, "clim") == 0)
		return WIRE_T_CLIM;
	return WIRE_T_OTHER;
}

static void decode_val(const struct wire_codec *c, json_t *v, struct wire_msg *m)
{
	switch (json_typeof(v)) {
	case JSON_TRUE:
	case JSON_FALSE:
		m->val = tsync_bool(json_is_true(v));
		break;
	case JSON_INTEGER:
		m->val = tsync_int(json_integer_value(v));
		break;
	case JSON_REAL:
		m->val = tsync_float(json_real_value(v));
		break;
	case JSON_STRING:
		if (json_string_length(v) > c->max_string) {
			mark_bad(m, TSYNC_REJ_OVERSIZE);
			return;
		}
		m->val = tsync_string(json_string_value(v));
		break;
	case JSON_NULL: /* handled by the caller: no value */
	case JSON_ARRAY:
	case JSON_OBJECT:
		mark_bad(m, TSYNC_REJ_VAL);
		return;
	}
	m->has_val = true;
}

/*
 * Every field is read even after one is found bad, so that whoever answers a
 * bad request still has its "id" and names to answer with.
 */
static void decode_msg(const struct wire_codec *c, json_t *o, struct wire_msg *m)
{
	json_t *v;
	uint64_t ms = 0;
	int r;

	m->obj = o;
	m->type = WIRE_T_OTHER;
	if (!json_is_object(o)) {
		mark_bad(m, TSYNC_REJ_REQ);
		return;
	}
	m->type_name = get_name(o, "type");
	if (!m->type_name)
		mark_bad(m, TSYNC_REJ_REQ);
	else
		m->type = type_from_name(m->type_name);

	switch (m->type) {
	case WIRE_T_IO:
		v = json_object_get(o, "cmd");
		m->op = json_is_string(v) ? op_from_name(json_string_value(v)) : WIRE_OP_NONE;
		if (m->op == WIRE_OP_NONE)
			mark_bad(m, TSYNC_REJ_REQ);
		m->io = get_name(o, "io");
		if (!m->io)
			mark_bad(m, TSYNC_REJ_IO);
		break;
	case WIRE_T_CMD:
		m->role = get_name(o, "role");
		m->cmd = get_name(o, "cmd");
		if (!m->role || !m->cmd)
			mark_bad(m, TSYNC_REJ_CMD);
		break;
	case WIRE_T_CUM:
		/* The seed names the thing of a cumulative upload "fld". */
		if (json_object_get(o, "fld")) {
			m->io = get_name(o, "fld");
			if (!m->io)
				mark_bad(m, TSYNC_REJ_IO);
		}
		break;
	case WIRE_T_CLIM:
	case WIRE_T_OTHER:
		break;
	}

	/* A seed controller is Python: it sends "val": None, that is null,
	 * where it has no value (an ask, a reply before the first reading).
	 * null is no value, as if val were absent, not a bad one; a set
	 * without a value is refused either way. */
	v = json_object_get(o, "val");
	if (v && !json_is_null(v))
		decode_val(c, v, m);
	else if (m->type == WIRE_T_IO && m->op == WIRE_OP_SET)
		mark_bad(m, TSYNC_REJ_VAL);

	r = get_uint(o, "ver", 0, &m->ver);
	m->has_ver = r > 0;
	if (r < 0)
		mark_bad(m, TSYNC_REJ_REQ);
	r = get_uint(o, "id", 0, &m->id);
	m->has_id = r > 0;
	if (r < 0)
		mark_bad(m, TSYNC_REJ_REQ);
	r = get_uint(o, "re", 0, &m->re);
	m->has_re = r > 0;
	if (r < 0)
		mark_bad(m, TSYNC_REJ_REQ);
	/* An origin boot of 0 is no boot: malformed, not absent. */
	r = get_uint(o, "ob", 1, &m->ob);
	if (r < 0)
		mark_bad(m, TSYNC_REJ_REQ);
	r = get_uint(o, "ms", 0, &ms);
	if (r < 0 || ms > WIRE_MS_MAX)
		mark_bad(m, TSYNC_REJ_VAL);
	else
		m->ms = (uint32_t)ms;

	v = json_object_get(o, "err");
	if (v && !json_is_string(v))
		mark_bad(m, TSYNC_REJ_REQ);
	else if (v && json_string_length(v) > c->max_string)
		mark_bad(m, TSYNC_REJ_OVERSIZE);
	else if (v)
		m->err = json_string_value(v);
}

int wire_ref__decode(const struct wire_codec *c, const void *buf, size_t len, struct wire_datagram *dg,
                     tsync_reject *reject)
{
	const char *json = buf;
	size_t json_len = len;
	json_t *root, *msgs = NULL;
	json_error_t error;
	size_t n;
	int r = -EBADMSG;

	memset(dg, 0, sizeof(*dg));
	*reject = TSYNC_REJ_OVERSIZE;
	if (len > c->max_datagram)
		goto leave;

	*reject = TSYNC_REJ_AUTH;
	if (c->key) {
		if (len < WIRE_TAG_BYTES + 2)
			goto leave;
		json_len = len - WIRE_TAG_BYTES;
		/* A legacy list cannot carry a tag: refuse it before paying
		 * for the HMAC. */
		if (json[0] == '[')
			goto leave;
		if (wire__codec_verify(c, json, json_len, (const uint8_t *)json + json_len) < 0)
			goto leave;
	}

	*reject = TSYNC_REJ_JSON;
	root = json_loadb(json, json_len, JSON_REJECT_DUPLICATES, &error);
	dg->root = root;
	if (!root)
		goto leave;
	if (json_is_array(root)) {
		if (c->key) {
			*reject = TSYNC_REJ_AUTH;
			goto leave;
		}
		dg->env.legacy = true;
		msgs = root;
	} else if (!json_is_object(root) || decode_env(c, root, &dg->env, &msgs) < 0) {
		goto leave;
	}

	n = json_array_size(msgs);
	*reject = TSYNC_REJ_OVERSIZE;
	if (n > c->max_msgs)
		goto leave;
	if (n) {
		dg->msgs = calloc(n, sizeof(*dg->msgs));
		if (!dg->msgs) {
			r = -ENOMEM;
			goto leave;
		}
	}
	for (size_t i = 0; i < n; i++)
		decode_msg(c, json_array_get(msgs, i), &dg->msgs[i]);
	dg->n_msgs = n;
	return 0;
leave:
	/* Nothing of a refused datagram is kept: the release the caller still
	 * does finds it empty. */
	wire_ref__release(dg);
	return r;
}

void wire_ref__release(struct wire_datagram *dg)
{
	free(dg->msgs);
	json_decref(dg->root);
	memset(dg, 0, sizeof(*dg));
}
