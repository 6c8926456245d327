/*
 * libFuzzer target for lib/wire: decodes the input as a datagram without a
 * key, with a key (as sent, and with a valid tag appended so that the parser
 * behind the tag is reached too), and re-encodes every good message. It
 * aborts when a property breaks:
 *   - tagged input decodes exactly as the same input without a key does
 *     (except that a legacy list is refused, and that an envelope must say
 *     "v":3 with a key, "v":1 without);
 *   - every good message is accepted by the writer, which never goes over
 *     max_datagram;
 *   - what the writer produced decodes again to the same fields.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "wire/wire.h"
#include "fuzz_util.h"

#define FUZZ_MAX_DATAGRAM 1400


static bool same_val(const struct wire_msg *in, const struct wire_msg *out)
{
	if (in->has_val != out->has_val)
		return false;
	if (!in->has_val)
		return true;
	switch (in->val.type) {
	case TSYNC_TYPE_BOOL:
		/* Bools travel as 1/0. */
		return out->val.type == TSYNC_TYPE_INT && out->val.u.i == (in->val.u.b ? 1 : 0);
	case TSYNC_TYPE_INT:
		return out->val.type == TSYNC_TYPE_INT && out->val.u.i == in->val.u.i;
	case TSYNC_TYPE_FLOAT:
		return out->val.type == TSYNC_TYPE_FLOAT && out->val.u.f == in->val.u.f;
	case TSYNC_TYPE_STRING:
		return out->val.type == TSYNC_TYPE_STRING && strcmp(out->val.u.s, in->val.u.s) == 0;
	case TSYNC_TYPE_NONE:
		break;
	}
	return false;
}

static bool same_msg(const struct wire_msg *a, const struct wire_msg *b)
{
	return a->type == b->type && same_str(a->type_name, b->type_name) && a->op == b->op &&
	       same_str(a->io, b->io) && same_val(a, b) && a->has_ver == b->has_ver && a->ver == b->ver &&
	       a->has_id == b->has_id && a->id == b->id && a->has_re == b->has_re && a->re == b->re &&
	       a->ms == b->ms && same_str(a->err, b->err) && same_str(a->role, b->role) &&
	       same_str(a->cmd, b->cmd) && !b->bad;
}

/* Checks one re-encoded datagram against the messages it was made of. */
static void check_datagram(struct wire_writer *w, const struct wire_msg *const *sent, size_t n)
{
	struct wire_datagram dg;
	tsync_reject rej;
	const void *out;
	size_t len;

	check(wire__finish(w, &out, &len) == 0);
	check(len <= w->codec->max_datagram);
	check(wire__decode(w->codec, out, len, &dg, &rej) == 0);
	check(dg.n_msgs == n);
	for (size_t i = 0; i < n; i++)
		check(same_msg(sent[i], &dg.msgs[i]));
	wire__datagram_release(&dg);
}

static void reencode(const struct wire_codec *c, const struct wire_datagram *dg)
{
	const struct wire_msg *sent[64];
	struct wire_env env = {.from = "fuzz", .boot = 1, .seq = 1};
	struct wire_writer w;
	size_t n = 0;
	int r;

	if (dg->env.legacy && !c->key)
		env.legacy = true;
	else if (!dg->env.legacy)
		env = dg->env;
	wire__writer_init(&w, c);
	check(wire__begin(&w, &env) == 0);
	for (size_t i = 0; i < dg->n_msgs; i++) {
		const struct wire_msg *m = &dg->msgs[i];

		if (m->bad)
			continue;
		r = wire__add(&w, m);
		if (r == -EMSGSIZE && w.n_msgs > 0) {
			check_datagram(&w, sent, n);
			n = 0;
			check(wire__begin(&w, &env) == 0);
			r = wire__add(&w, m);
		}
		/* Escapes can make a message longer than it came: one alone may
		 * then not fit, and nothing else may fail. */
		check(r == 0 || (r == -EMSGSIZE && w.n_msgs == 0));
		if (r == 0)
			sent[n++] = m;
	}
	check_datagram(&w, sent, n);
	wire__writer_free(&w);
}

/* Decodes with c and re-encodes; returns the decoder's result. */
static int run(const struct wire_codec *c, const uint8_t *data, size_t size, tsync_reject *rej,
               struct wire_datagram *dg)
{
	int r = wire__decode(c, data, size, dg, rej);

	if (r == 0) {
		check(dg->n_msgs <= c->max_msgs);
		reencode(c, dg);
	} else {
		check(dg->root == NULL && dg->msgs == NULL);
	}
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t tagged[FUZZ_MAX_DATAGRAM];
	struct wire_codec plain = {
	    .key = NULL, .max_datagram = FUZZ_MAX_DATAGRAM, .max_msgs = 64, .max_string = 256};
	struct wire_codec keyed = plain;
	struct wire_datagram dg_plain, dg_keyed;
	tsync_reject rej_plain, rej_keyed;
	int r_plain, r_keyed;

	keyed.key = fuzz_key;
	r_plain = run(&plain, data, size, &rej_plain, &dg_plain);
	run(&keyed, data, size, &rej_keyed, &dg_keyed);
	wire__datagram_release(&dg_keyed);

	/* The same JSON with a valid tag must decode as it did without a key. */
	if (size >= 2 && size <= sizeof(tagged) - WIRE_TAG_BYTES) {
		memcpy(tagged, data, size);
		check(wire__auth_tag(fuzz_key, tagged, size, tagged + size) == 0);
		r_keyed = run(&keyed, tagged, size + WIRE_TAG_BYTES, &rej_keyed, &dg_keyed);
		if (r_plain == 0 && dg_plain.env.legacy) {
			check(r_keyed < 0 && rej_keyed == TSYNC_REJ_AUTH);
		} else if (r_plain == 0) {
			/* Good without a key means "v":1, which a keyed site
			 * refuses ("v":3 there, wire.h)... */
			check(r_keyed < 0 && rej_keyed == TSYNC_REJ_JSON);
			/* ...and the same envelope as "v":3 decodes as it did. */
			if (size > 7 && memcmp(data, "{\"v\":1,", 7) == 0) {
				wire__datagram_release(&dg_keyed);
				tagged[5] = '0' + WIRE_VERSION;
				check(wire__auth_tag(fuzz_key, tagged, size, tagged + size) == 0);
				r_keyed = run(&keyed, tagged, size + WIRE_TAG_BYTES, &rej_keyed, &dg_keyed);
				check(r_keyed == 0 && dg_keyed.n_msgs == dg_plain.n_msgs);
				for (size_t i = 0; i < dg_plain.n_msgs; i++)
					check(dg_keyed.msgs[i].bad == dg_plain.msgs[i].bad &&
					      dg_keyed.msgs[i].reject == dg_plain.msgs[i].reject);
			}
		} else if (data[0] == '[') {
			check(r_keyed < 0 && rej_keyed == TSYNC_REJ_AUTH);
		} else if (rej_plain == TSYNC_REJ_OVERSIZE) {
			/* Too many messages; with a key, a list of them is
			 * refused first for being a list. */
			check(r_keyed < 0 && (rej_keyed == TSYNC_REJ_OVERSIZE ||
			                      rej_keyed == TSYNC_REJ_AUTH || rej_keyed == TSYNC_REJ_JSON));
		} else if (rej_plain == TSYNC_REJ_JSON) {
			/* Perhaps only for "v":3, which a keyed site wants. */
			check(r_keyed == 0 || rej_keyed == TSYNC_REJ_JSON || rej_keyed == TSYNC_REJ_OVERSIZE);
		} else {
			check(r_keyed < 0 && (rej_keyed == rej_plain || rej_keyed == TSYNC_REJ_JSON));
		}
		wire__datagram_release(&dg_keyed);
	}
	wire__datagram_release(&dg_plain);
	return 0;
}
