/*
 * lib/sync: which request ids of one peer were already executed.
 *
 * A sender keeps at most max_outstanding (<= SYNC_DEDUP_BITS) requests in
 * flight: it never sends id n + W before every id <= n was answered. So an
 * id more than W below the highest one seen was answered already, and the
 * window below needs only W bits to be exact.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sync/sync.h"

#define WORDS (SYNC_DEDUP_BITS / 64)

static bool bit_get(const struct dedup *d, uint64_t id)
{
	uint64_t i = id % SYNC_DEDUP_BITS;
	return (d->bits[i / 64] >> (i % 64)) & 1u;
}

static void bit_set(struct dedup *d, uint64_t id, bool on)
{
	uint64_t i = id % SYNC_DEDUP_BITS;
	if (on)
		d->bits[i / 64] |= (uint64_t)1 << (i % 64);
	else
		d->bits[i / 64] &= ~((uint64_t)1 << (i % 64));
}

enum dedup_state dedup__check(const struct dedup *d, uint64_t id)
{
	if (id > d->top)
		return DEDUP_NEW;
	if (d->top - id >= SYNC_DEDUP_BITS)
		return DEDUP_DONE;
	return bit_get(d, id) ? DEDUP_DONE : DEDUP_NEW;
}

void dedup__mark(struct dedup *d, uint64_t id)
{
	if (id > d->top) {
		/* Clear the bits of the ids the window slides over. */
		uint64_t gap = id - d->top;
		if (gap >= SYNC_DEDUP_BITS) {
			memset(d->bits, 0, sizeof(d->bits));
		} else {
			for (uint64_t k = d->top + 1; k < id; k++)
				bit_set(d, k, false);
		}
		d->top = id;
	}
	bit_set(d, id, true);
}

void dedup__unmark(struct dedup *d, uint64_t id)
{
	if (id <= d->top && d->top - id < SYNC_DEDUP_BITS)
		bit_set(d, id, false);
}

static void answer_clear(struct dedup_answer *a)
{
	free(a->err);
	free(a->res);
	a->err = a->res = NULL;
	a->id = 0;
}

int dedup__remember(struct dedup *d, uint64_t id, const char *err, const char *res)
{
	struct dedup_answer *a;

	if (!err && !res) {
		/* Nothing to keep, but an answer left by an earlier run of the same
		 * id (one a failed commit undid) must not answer for this run. */
		if (d->answers && d->answers[id % SYNC_DEDUP_BITS].id == id)
			answer_clear(&d->answers[id % SYNC_DEDUP_BITS]);
		return 0;
	}
	if (!d->answers) {
		d->answers = calloc(SYNC_DEDUP_BITS, sizeof(*d->answers));
		if (!d->answers)
			return -ENOMEM;
	}
	a = &d->answers[id % SYNC_DEDUP_BITS];
	answer_clear(a);
	a->id = id;
	a->err = err ? util__strdup(err) : NULL;
	a->res = res ? util__strdup(res) : NULL;
	if ((err && !a->err) || (res && !a->res)) {
		answer_clear(a);
		return -ENOMEM;
	}
	return 0;
}

const struct dedup_answer *dedup__answer(const struct dedup *d, uint64_t id)
{
	const struct dedup_answer *a;

	if (!d->answers)
		return NULL;
	a = &d->answers[id % SYNC_DEDUP_BITS];
	return a->id == id ? a : NULL;
}

void dedup__reset(struct dedup *d)
{
	if (d->answers)
		for (size_t i = 0; i < SYNC_DEDUP_BITS; i++)
			answer_clear(&d->answers[i]);
	memset(d->bits, 0, sizeof(d->bits));
	d->top = 0;
}

void dedup__free(struct dedup *d)
{
	dedup__reset(d);
	free(d->answers);
	d->answers = NULL;
}
