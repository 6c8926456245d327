/*
 * libFuzzer target for lib/wire's writer (session 12): the writer keeps the
 * envelope's head ({"v":..,"from":..,"boot":..,"seq":) and its ,"to_boot":..
 * from one datagram to the next, and writes numbers 8 digits at a time. The
 * input drives one writer kept across a sequence of datagrams, in which the
 * sender's boot, the receiver's boot, the name (as it is or copied into a
 * buffer changed in place), the key, the limit and every other member
 * change; each datagram is also written by a fresh writer. It aborts when
 *   - the two disagree on a result or on a byte before the tag;
 *   - what was written does not decode to the envelope and messages given,
 *     with a fresh decoder and with one kept across the sequence (which
 *     compares the boots it saw last instead of reading them: boot_int()).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "wire/wire.h"
#include "fuzz_util.h"

struct input {
	const uint8_t *p;
	size_t n;
};

static uint8_t byte(struct input *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

/* A number of any length: 8 bytes, then as many low decimal-ish bits as the
 * next byte says. */
static uint64_t number(struct input *in)
{
	uint64_t v = 0;
	unsigned bits;

	for (int i = 0; i < 8; i++)
		v = v << 8 | byte(in);
	bits = byte(in) % 64;
	return bits ? v & ((UINT64_C(1) << bits) - 1) : v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The last two: the longest name (63 bytes) and one too long. */
	static const char *const names[] = {"ab", "abc", "a", "PI-Light", "q\"b\\", "\xc3\xa9t\xc3\xa9",
	                                    "n123456789012345678901234567890123456789012345678901234567890a",
	                                    "n123456789012345678901234567890123456789012345678901234567890ab",
	                                    "n123456789012345678901234567890123456789012345678901234567890abc"};
	struct input in = {data, size};
	struct wire_codec c = {.key = NULL, .max_datagram = 1400, .max_msgs = 16, .max_string = 256};
	struct wire_env env = {.from = names[0], .boot = 1, .seq = 1};
	/* The kept decoder's codec: the writer's key, and room for its
	 * largest max_datagram. */
	struct wire_codec dc = {.key = NULL, .max_datagram = 120 + 255 * 6, .max_msgs = 16, .max_string = 256};
	struct wire_decoder *dec;
	struct wire_writer kept;
	char buf[72];
	int steps = 0;

	check(wire__decoder_new(&dc, &dec) == 0);
	wire__writer_init(&kept, &c);
	while (in.n && steps++ < 64) {
		uint8_t op = byte(&in);
		struct wire_writer fresh;
		struct wire_msg m[4];
		const void *ok_out, *of_out;
		size_t ok_len, of_len, n_msgs;
		int rk, rf;

		if (op & 1)
			env.boot = number(&in);
		if (op & 2)
			env.to_boot = number(&in);
		if (op & 4) {
			uint8_t b = byte(&in);
			const char *name = names[b % (sizeof(names) / sizeof(names[0]))];
			if (b & 0x80) { /* the same buffer, another text */
				strcpy(buf, name);
				if (b & 0x40 && buf[0])
					buf[strlen(buf) - 1] ^= 1;
				env.from = buf;
			} else {
				env.from = name;
			}
		}
		if (op & 8)
			c.key = c.key ? NULL : fuzz_key;
		if (op & 16)
			c.max_datagram = 120 + (uint32_t)byte(&in) * 6;
		env.seq = op & 32 ? number(&in) : env.seq + 1;
		env.re = op & 64 ? number(&in) : 0;
		env.durable = op & 128;
		op = byte(&in);
		env.acks_ok = op & 1;
		env.n_acks = env.acks_ok ? (op >> 1) % 5 : 0;
		for (uint32_t a = 0; a < env.n_acks; a++) {
			env.acks[a][0] = number(&in);
			env.acks[a][1] = env.acks[a][0] + byte(&in);
		}
		n_msgs = (op >> 4) % 5;
		for (size_t i = 0; i < n_msgs; i++) {
			memset(&m[i], 0, sizeof(m[i]));
			m[i].type = WIRE_T_IO;
			m[i].op = byte(&in) & 1 ? WIRE_OP_REPLY : WIRE_OP_SET;
			m[i].io = names[i % 4];
			m[i].has_val = true;
			m[i].val = byte(&in) & 1 ? tsync_bool(true) : tsync_int((int64_t)number(&in));
			m[i].has_ver = true;
			m[i].ver = number(&in);
		}

		wire__writer_init(&fresh, &c);
		rk = wire__begin(&kept, &env);
		rf = wire__begin(&fresh, &env);
		check(rk == rf);
		for (size_t i = 0; rk == 0 && i < n_msgs; i++) {
			rk = wire__add(&kept, &m[i]);
			rf = wire__add(&fresh, &m[i]);
			check(rk == rf);
			if (rk == -EMSGSIZE) {
				n_msgs = i;
				rk = 0;
			}
		}
		if (rk == 0) {
			struct wire_datagram dg, dk;
			tsync_reject rej;
			size_t json;

			check(wire__finish(&kept, &ok_out, &ok_len) == 0);
			check(wire__finish(&fresh, &of_out, &of_len) == 0);
			check(ok_len == of_len && ok_len <= c.max_datagram);
			json = ok_len - (c.key ? WIRE_TAG_BYTES : 0);
			check(memcmp(ok_out, of_out, json) == 0);
			check(wire__decode(&c, ok_out, ok_len, &dg, &rej) == 0);
			dc.key = c.key;
			check(wire__decode_in(dec, ok_out, ok_len, &dk, &rej) == 0);
			check(same_str(dk.env.from, dg.env.from) && dk.env.boot == dg.env.boot &&
			      dk.env.seq == dg.env.seq && dk.env.to_boot == dg.env.to_boot && dk.env.re == dg.env.re &&
			      dk.env.durable == dg.env.durable && dk.env.n_acks == dg.env.n_acks &&
			      dk.n_msgs == dg.n_msgs);
			wire__datagram_release(&dk);
			check(same_str(dg.env.from, env.from) && dg.env.boot == env.boot && dg.env.seq == env.seq &&
			      dg.env.to_boot == env.to_boot && dg.env.re == env.re && dg.env.durable == env.durable &&
			      dg.env.acks_ok == env.acks_ok && dg.env.n_acks == env.n_acks && dg.n_msgs == n_msgs);
			for (uint32_t a = 0; a < env.n_acks; a++)
				check(dg.env.acks[a][0] == env.acks[a][0] && dg.env.acks[a][1] == env.acks[a][1]);
			for (size_t i = 0; i < n_msgs; i++) {
				int64_t want = m[i].val.type == TSYNC_TYPE_BOOL ? 1 : m[i].val.u.i;
				check(!dg.msgs[i].bad && dg.msgs[i].op == m[i].op && same_str(dg.msgs[i].io, m[i].io));
				check(dg.msgs[i].val.type == TSYNC_TYPE_INT && dg.msgs[i].val.u.i == want);
				check(dg.msgs[i].ver == m[i].ver);
			}
			wire__datagram_release(&dg);
		}
		wire__writer_free(&fresh);
	}
	wire__writer_free(&kept);
	wire__decoder_free(dec);
	return 0;
}
