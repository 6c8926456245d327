/*
 * lib/sync: the retransmission timeout, after RFC 6298.
 * SPDX-License-Identifier: MIT
 */
#include "sync/sync.h"

void rtt__init(struct rtt *r, uint32_t initial_ms, uint32_t min_ms, uint32_t max_ms)
{
	r->srtt_us = 0;
	r->rttvar_us = 0;
	r->min_us = min_ms * 1000u;
	r->max_us = max_ms * 1000u;
	r->rto_us = initial_ms * 1000u;
	if (r->rto_us < r->min_us)
		r->rto_us = r->min_us;
	if (r->rto_us > r->max_us)
		r->rto_us = r->max_us;
}

void rtt__sample(struct rtt *r, uint32_t sample_us)
{
	uint64_t rto;

	if (sample_us == 0)
		sample_us = 1;
	if (r->srtt_us == 0) {
		r->srtt_us = sample_us;
		r->rttvar_us = sample_us / 2;
	} else {
		uint32_t delta = r->srtt_us > sample_us ? r->srtt_us - sample_us : sample_us - r->srtt_us;
		r->rttvar_us = (3 * r->rttvar_us + delta) / 4;
		r->srtt_us = (7 * r->srtt_us + sample_us) / 8;
		if (r->srtt_us == 0)
			r->srtt_us = 1;
	}
	/* The RFC's clock granularity G is our timer's: libevent wakes us with
	 * about a millisecond of slack, so four deviations never go below it. */
	rto = (uint64_t)r->srtt_us + (4u * r->rttvar_us > 1000u ? 4u * r->rttvar_us : 1000u);
	if (rto < r->min_us)
		rto = r->min_us;
	if (rto > r->max_us)
		rto = r->max_us;
	r->rto_us = (uint32_t)rto;
}

uint32_t rtt__timeout(const struct rtt *r, unsigned backoff)
{
	uint64_t t = r->rto_us;

	while (backoff-- > 0 && t < r->max_us)
		t *= 2;
	return t > r->max_us ? r->max_us : (uint32_t)t;
}
