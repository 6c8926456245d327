/*
 * Differential libFuzzer target: lib/wire's own JSON reader (wire__decode,
 * and wire__decode_in with decoders kept from input to input) against the
 * jansson reader it replaced (wire_ref.c). It aborts unless, on every input,
 * both give the same verdict (accepted, or refused for the same reason) and
 * the same envelope and messages: every field, strings by content, values by
 * type and bits, and for the messages that are neither io nor bad, a jansson
 * object equal to the reference's.
 *
 * The first input byte chooses the codec: bit 0 a site key (the rest of the
 * input gets a valid tag appended, so the parser behind it is reached; bit 3
 * spoils it), bit 1 small limits (max_msgs 3, max_string 8), bit 2
 * max_datagram 65507 instead of 1400.
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "wire_ref.h"
#include "fuzz_util.h"


static bool same_val(const struct wire_msg *a, const struct wire_msg *b)
{
	if (a->has_val != b->has_val)
		return false;
	if (!a->has_val)
		return true;
	if (a->val.type != b->val.type)
		return false;
	switch (a->val.type) {
	case TSYNC_TYPE_BOOL:
		return a->val.u.b == b->val.u.b;
	case TSYNC_TYPE_INT:
		return a->val.u.i == b->val.u.i;
	case TSYNC_TYPE_FLOAT:
		return memcmp(&a->val.u.f, &b->val.u.f, sizeof(double)) == 0;
	case TSYNC_TYPE_STRING:
		return strcmp(a->val.u.s, b->val.u.s) == 0;
	case TSYNC_TYPE_NONE:
		break;
	}
	return false;
}

static void same_msg(const struct wire_msg *a, const struct wire_msg *b)
{
	check(a->bad == b->bad);
	if (a->bad)
		check(a->reject == b->reject);
	check(a->type == b->type && same_str(a->type_name, b->type_name));
	check(a->op == b->op && same_str(a->io, b->io));
	check(same_val(a, b));
	check(a->has_ver == b->has_ver && a->ver == b->ver);
	check(a->has_id == b->has_id && a->id == b->id);
	check(a->has_re == b->has_re && a->re == b->re);
	check(a->ob == b->ob && a->ms == b->ms);
	check(same_str(a->err, b->err) && same_str(a->role, b->role) && same_str(a->cmd, b->cmd));
	if (!a->bad && a->type != WIRE_T_IO)
		check(b->obj && json_equal((json_t *)a->obj, (json_t *)b->obj));
	else
		check(b->obj == NULL);
}

static void same_datagram(int ra, tsync_reject wa, const struct wire_datagram *a, int rb, tsync_reject wb,
                          const struct wire_datagram *b)
{
	check((ra < 0) == (rb < 0));
	if (ra < 0) {
		check(wa == wb);
		check(b->msgs == NULL && b->n_msgs == 0 && b->root == NULL);
		return;
	}
	check(a->env.legacy == b->env.legacy && same_str(a->env.from, b->env.from));
	/* b is lib/wire's: its "from" comes with its length */
	check(!b->env.from || b->env.from_len == strlen(b->env.from));
	check(a->env.boot == b->env.boot && a->env.seq == b->env.seq);
	check(a->env.to_boot == b->env.to_boot && a->env.re == b->env.re);
	check(a->env.durable == b->env.durable);
	check(a->env.acks_ok == b->env.acks_ok && a->env.n_acks == b->env.n_acks);
	for (uint32_t i = 0; i < a->env.n_acks; i++)
		check(a->env.acks[i][0] == b->env.acks[i][0] && a->env.acks[i][1] == b->env.acks[i][1]);
	check(a->n_msgs == b->n_msgs);
	for (size_t i = 0; i < a->n_msgs; i++)
		same_msg(&a->msgs[i], &b->msgs[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct wire_codec codecs[8];
	static struct wire_decoder *decoders[8];
	struct wire_datagram ref, one, kept;
	tsync_reject wref, wone, wkept;
	int rref, rone, rkept;
	unsigned mode;
	uint8_t *buf;
	size_t len;

	if (size < 1)
		return 0;
	mode = data[0] & 7;
	if (!decoders[mode]) {
		struct wire_codec *c = &codecs[mode];
		c->key = mode & 1 ? fuzz_key : NULL;
		c->max_msgs = mode & 2 ? 3 : 64;
		c->max_string = mode & 2 ? 8 : 1024;
		c->max_datagram = mode & 4 ? 65507 : 1400;
		check(wire__decoder_new(c, &decoders[mode]) == 0);
	}
	data++;
	size--;
	len = size + (mode & 1 ? WIRE_TAG_BYTES : 0);
	buf = malloc(len ? len : 1);
	check(buf != NULL);
	memcpy(buf, data, size);
	if (mode & 1) {
		check(wire__auth_tag(fuzz_key, buf, size, buf + size) == 0);
		if (data[-1] & 8)
			buf[size] ^= 1;
	}

	rref = wire_ref__decode(&codecs[mode], buf, len, &ref, &wref);
	rone = wire__decode(&codecs[mode], buf, len, &one, &wone);
	rkept = wire__decode_in(decoders[mode], buf, len, &kept, &wkept);
	same_datagram(rref, wref, &ref, rone, wone, &one);
	same_datagram(rref, wref, &ref, rkept, wkept, &kept);

	wire_ref__release(&ref);
	wire__datagram_release(&one);
	wire__datagram_release(&kept);
	free(buf);
	return 0;
}
