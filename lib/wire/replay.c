/*
 * lib/wire: the replay window of one sender, as IPsec's (RFC 4303, 3.4.3):
 * the newest seq seen in the sender's newest boot, and a 64-bit map of it and
 * the 63 before it. Bit i stands for seq top - i.
 * SPDX-License-Identifier: MIT
 */
#include "wire/wire.h"

#define REPLAY_WINDOW 64u

int wire__replay_check(const struct wire_replay *r, uint64_t boot, uint64_t seq)
{
	uint64_t diff;

	if (boot != r->boot)
		return boot > r->boot ? 0 : -1;
	if (seq > r->top)
		return 0;
	/* seq == top is checked on its own so that a fresh window (top 0, no
	 * bits yet) refuses it too. */
	if (seq == r->top)
		return -1;
	diff = r->top - seq;
	if (diff >= REPLAY_WINDOW)
		return -1;
	return (r->bits >> diff) & 1u ? -1 : 0;
}

void wire__replay_update(struct wire_replay *r, uint64_t boot, uint64_t seq)
{
	uint64_t diff;

	if (boot < r->boot)
		return;
	if (boot > r->boot) {
		r->boot = boot;
		r->top = seq;
		r->bits = 1;
		return;
	}
	if (seq > r->top) {
		diff = seq - r->top;
		/* A shift by 64 or more is undefined: a jump that far leaves
		 * nothing of the old window anyway. */
		r->bits = diff >= REPLAY_WINDOW ? 0 : r->bits << diff;
		r->bits |= 1;
		r->top = seq;
		return;
	}
	diff = r->top - seq;
	if (diff < REPLAY_WINDOW)
		r->bits |= (uint64_t)1 << diff;
}
