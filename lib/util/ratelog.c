/*
 * lib/util: rate-limited logging of repeated events (see util.h).
 *
 * Each tracked (key, reason) is in one of two states. Quiet: its last event
 * was logged in full and nothing came since; a key quiet for a whole
 * interval is forgotten, so its next event is logged in full again.
 * Suppressing: events came after the logged one; they are counted, and when
 * the interval ends one summary says how many, and a new interval starts.
 * A steady flood therefore costs one full line, then one summary per
 * interval, however fast it comes.
 *
 * The table is a small array searched linearly: RATELOG_KEYS is a few dozen,
 * and the comparison is cheaper than the tag check every refused datagram
 * has already paid for.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

int ratelog__init(struct ratelog *rl, size_t n_slots, uint64_t interval_us, ratelog_summary_fn fn,
                  void *userdata)
{
	memset(rl, 0, sizeof(*rl));
	rl->slots = calloc(n_slots ? n_slots : 1, sizeof(*rl->slots));
	if (!rl->slots)
		return -ENOMEM;
	rl->n_slots = n_slots;
	rl->interval_us = interval_us ? interval_us : RATELOG_INTERVAL_US;
	rl->summary = fn;
	rl->userdata = userdata;
	return 0;
}

void ratelog__free(struct ratelog *rl)
{
	free(rl->slots);
	rl->slots = NULL;
	rl->n_slots = 0;
}

static void summarize(struct ratelog *rl, struct ratelog_slot *s, uint64_t now)
{
	uint64_t elapsed = now > s->start_us ? now - s->start_us : 0;

	if (rl->summary)
		rl->summary(rl->userdata, s == &rl->other ? NULL : s->key, s->reason, s->suppressed, elapsed);
	s->suppressed = 0;
}

static bool due(const struct ratelog *rl, const struct ratelog_slot *s, uint64_t now)
{
	return now >= s->start_us && now - s->start_us >= rl->interval_us;
}

/* The interval of a slot ended: a summary if anything was held back, then
 * either a new interval (the flood goes on) or the slot is forgotten. */
static void expire(struct ratelog *rl, struct ratelog_slot *s, uint64_t now)
{
	if (s->suppressed) {
		summarize(rl, s, now);
		s->start_us = now;
	} else {
		s->used = false;
	}
}

/* One event on a slot in use; true if it is logged in full. */
static bool count(struct ratelog *rl, struct ratelog_slot *s, uint64_t now)
{
	if (due(rl, s, now)) {
		/* Late (nobody ticked): an interval without any event since the
		 * last one makes this one news again. */
		bool quiet = !s->suppressed || now - s->start_us >= 2 * rl->interval_us;
		expire(rl, s, now);
		if (quiet) {
			s->used = true;
			s->start_us = now;
			s->suppressed = 0;
			return true;
		}
	}
	s->suppressed++;
	return false;
}

static void claim(struct ratelog_slot *s, const char *key, int reason, uint64_t now)
{
	size_t n = strlen(key);

	if (n >= sizeof(s->key))
		n = sizeof(s->key) - 1;
	memcpy(s->key, key, n);
	s->key[n] = '\0';
	s->reason = reason;
	s->used = true;
	s->start_us = now;
	s->suppressed = 0;
}

bool ratelog__hit(struct ratelog *rl, const char *key, int reason, uint64_t now)
{
	struct ratelog_slot *free_slot = NULL;
	size_t n = strlen(key);

	if (n >= RATELOG_KEY_MAX)
		n = RATELOG_KEY_MAX - 1;
	for (size_t i = 0; i < rl->n_slots; i++) {
		struct ratelog_slot *s = &rl->slots[i];
		if (!s->used) {
			if (!free_slot)
				free_slot = s;
			continue;
		}
		if (s->reason == reason && !strncmp(s->key, key, n) && s->key[n] == '\0')
			return count(rl, s, now);
		/* A slot whose key went quiet makes room, without waiting for a
		 * tick; one still holding a count keeps it until its summary. */
		if (!free_slot && !s->suppressed && due(rl, s, now))
			free_slot = s;
	}
	if (free_slot) {
		claim(free_slot, key, reason, now);
		return true;
	}
	/* Full: every further (key, reason) shares one bucket, so an attacker
	 * who forges source addresses gets one line per interval, not one per
	 * address. */
	if (!rl->other.used) {
		rl->other.used = true;
		rl->other.reason = RATELOG_OTHER;
		rl->other.start_us = now;
		rl->other.suppressed = 0;
		return true;
	}
	return count(rl, &rl->other, now);
}

uint64_t ratelog__tick(struct ratelog *rl, uint64_t now)
{
	uint64_t next = UINT64_MAX;

	for (size_t i = 0; i <= rl->n_slots; i++) {
		struct ratelog_slot *s = i < rl->n_slots ? &rl->slots[i] : &rl->other;
		if (!s->used)
			continue;
		if (due(rl, s, now))
			expire(rl, s, now);
		if (s->used && s->start_us + rl->interval_us < next)
			next = s->start_us + rl->interval_us;
	}
	return next;
}

void ratelog__flush(struct ratelog *rl, uint64_t now)
{
	for (size_t i = 0; i <= rl->n_slots; i++) {
		struct ratelog_slot *s = i < rl->n_slots ? &rl->slots[i] : &rl->other;
		if (s->used && s->suppressed)
			summarize(rl, s, now);
	}
}
