/*
 * thingsync-collectord: the usual push body read without a tree.
 *
 * The profile of a backlog's drain had jansson's tree of the body (parse,
 * allocations, frees) at about 45 % of the collector's work per
 * measurement. Nearly every body has one fixed shape:
 *   {"source":S,"stream":S,"boot":I,"measurements":[
 *     {"seq":I,"thing":S,"value":V,"time":I,"owner_boot":I,"version":I,
 *      "source":S}, ...]}
 * (members in any order, "stream", "boot" and all but "seq" of an item
 * optional; V an integer, a real, true, false or a string). fastpush__parse()
 * reads exactly that - strict JSON, every member at most once, strings of
 * printable ASCII without escapes, integers within 64 bits, finite reals -
 * and declines everything else (another member, "kind", null, an escape, a
 * nested value, ...), which ingest.c then reads with jansson as before: what
 * is refused, and how it is named, does not change.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_COLLECTOR_FASTPUSH_H
#define TSYNC_COLLECTOR_FASTPUSH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum fast_value { FAST_ABSENT = 0, FAST_BOOL, FAST_INT, FAST_REAL, FAST_STRING };

/* One item; strings point into fast_push.text. */
struct fast_item {
	int64_t seq;
	const char *thing; /* NULL: absent */
	const char *via;   /* the item's "source"; NULL: absent */
	enum fast_value vkind;
	bool b;
	int64_t i;
	double f;
	const char *s;
	bool has_time, has_boot, has_ver;
	int64_t time, boot, ver;
};

struct fast_push {
	char *text; /* the body, copied; its strings end in place */
	const char *source;
	const char *stream; /* NULL: absent */
	bool has_boot;
	int64_t boot;
	struct fast_item *items;
	size_t n;
};

/*
 * 1: `body` has the shape above, with at most `max_items` items, and `fp`
 * holds it (fastpush__free() it); 0: it has not (nothing to free);
 * -ENOMEM.
 */
int fastpush__parse(const char *body, size_t len, size_t max_items, struct fast_push *fp);
void fastpush__free(struct fast_push *fp);

#endif
