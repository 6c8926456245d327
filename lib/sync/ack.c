/*
 * lib/sync: acknowledgements by datagram. A user that holds every set of an
 * owner's datagram says so with the datagram's seq in its next envelope
 * ("ack", wire.h) instead of one "reply" per set: an ack of a batch costs a
 * few bytes instead of a message per set, and the owner finds what it
 * acknowledges in the record of what it sent instead of reading and looking
 * up each reply. What an ack means is exactly what the replies would have
 * meant: "I hold the version you sent, or a newer one", so acked_ver moves
 * by the same rule (never past the owner's current version, never back).
 *
 * The owner keeps, per user, a ring of the sets it sent, in seq order. It is
 * allocated at the first set, sized for the things the user holds (twice,
 * for a set that goes again before its first is acknowledged), so a Pi with
 * a few things per peer pays a few hundred bytes. An ack for a datagram the
 * ring no longer holds acknowledges nothing: the sets go again after the
 * timeout and are acknowledged then (never more than at-least-once).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sync/sync.h"

#define SENT_MIN 64
#define SENT_MAX 16384

/* The first set recorded: the ring is allocated, then ack__record() (sync.h)
 * writes to it as it does every time after. */
int ack__record_first(struct sync_peer *p, uint64_t seq, uint32_t slot, uint64_t ver)
{
	size_t n = SENT_MIN;

	while (n < 2 * p->n_out && n < SENT_MAX)
		n *= 2;
	p->sent = calloc(n, sizeof(*p->sent));
	if (!p->sent)
		return -ENOMEM;
	p->sent_mask = (uint32_t)(n - 1);
	return ack__record(p, seq, slot, ver);
}

void ack__take(struct sync_engine *e, struct sync_peer *p, uint64_t first, uint64_t last)
{
	uint64_t lo = p->sent_tail, hi = p->sent_head;
	bool from_tail;

	if (!p->sent_mask || lo == hi)
		return;
	/* The first entry of a seq >= first, by bisection: seqs only grow.
	 * Acks come mostly in order, from the oldest entry on: then no
	 * bisection, and what they take leaves the ring (below). */
	from_tail = p->sent[lo & p->sent_mask].seq >= first;
	while (!from_tail && lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		if (p->sent[mid & p->sent_mask].seq < first)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < p->sent_head; lo++) {
		const struct sent_set *s = &p->sent[lo & p->sent_mask];
		struct out_slot *o;
		if (s->seq > last)
			break;
		o = &p->out[s->slot];
		if (s->ver > o->acked_ver && s->ver <= e->things[o->thing].ver) {
			p->st.acked++;
			engine__set_acked(e, o, s->ver);
		}
	}
	/* Taken from the oldest on: those entries are done (taking one again
	 * would change nothing: acked_ver never goes back), so the ring keeps
	 * only what no ack has covered yet, and the next ack, usually the
	 * next seqs, starts at the tail. */
	if (from_tail)
		p->sent_tail = lo;
}

/* How many ranges fit in an envelope of mine whatever its numbers, so that
 * wire__begin() never refuses one for its acks: the envelope's own members
 * at their longest (my name escaped at worst, every number 19 digits) and
 * "ack" with 41 bytes a range. A max_datagram too small for even one
 * (below about 300 bytes) means replies, as before. */
uint32_t ack__ranges(const struct tsync_site *site, uint32_t me)
{
	size_t limit = site->max_datagram - (site->has_key ? WIRE_TAG_BYTES : 0);
	size_t fixed = 80 + 6 * strlen(site->controllers[me].name) + 4 * 19;
	size_t n = limit > fixed ? (limit - fixed) / 41 : 0;

	return n < WIRE_ACK_RANGES ? (uint32_t)n : WIRE_ACK_RANGES;
}

bool ack__note(const struct sync_engine *e, struct sync_peer *p, uint64_t seq)
{
	if (p->n_acks && p->acks[p->n_acks - 1][1] + 1 == seq) {
		p->acks[p->n_acks - 1][1] = seq;
		return true;
	}
	if (p->n_acks >= e->ack_ranges)
		return false;
	if (!p->acks && !(p->acks = calloc(e->ack_ranges, sizeof(*p->acks))))
		return false; /* then each set is answered by a reply */
	p->acks[p->n_acks][0] = seq;
	p->acks[p->n_acks][1] = seq;
	p->n_acks++;
	return true;
}

void ack__reset(struct sync_peer *p)
{
	p->n_acks = 0;
	p->sent_tail = p->sent_head;
}

void ack__free(struct sync_peer *p)
{
	free(p->acks);
	p->acks = NULL;
	p->n_acks = 0;
	free(p->sent);
	p->sent = NULL;
	p->sent_mask = 0;
}
