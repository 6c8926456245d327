/*
 * lib/util: small helpers shared by every module of libthingsync: clocks,
 * the logger, a growable byte buffer and a name index.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_UTIL_H
#define TSYNC_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <thingsync/common.h>

#define TSYNC_HIDDEN       __attribute__((visibility("hidden")))
#define TSYNC_PRINTF(a, b) __attribute__((format(printf, a, b)))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Clocks. */
uint64_t util__now_us(void);      /* CLOCK_MONOTONIC, microseconds */
uint64_t util__realtime_us(void); /* CLOCK_REALTIME, microseconds since the epoch */
/*
 * The day clock of the cumuls and the forensics role, microseconds since the
 * epoch: CLOCK_REALTIME, unless the environment names a clock file in
 * THINGSYNC_TEST_CLOCK (read once, at the first call); then the time written in that file (seconds since
 * the epoch, decimal, a fraction allowed), read at every call, so that tests
 * walk through midnights, days and daylight-saving changes of real processes
 * without waiting for them. A file that cannot be read gives the real clock.
 */
#define UTIL_TEST_CLOCK_ENV "THINGSYNC_TEST_CLOCK"
int64_t util__day_clock_us(void);

/* The logger every module writes through. A NULL fn logs nothing. */
struct logger {
	tsync_log_fn fn;
	void *userdata;
	tsync_log_level level;
	const char *prefix; /* e.g. the controller name; may be NULL */
};

void log__printf(const struct logger *log, tsync_log_level level, const char *fmt, ...) TSYNC_PRINTF(3, 4);
#define log__enabled(log, lvl) ((log) != NULL && (log)->fn != NULL && (lvl) <= (log)->level)
#define log_error(log, ...)    log__printf((log), TSYNC_LOG_ERROR, __VA_ARGS__)
#define log_warn(log, ...)     log__printf((log), TSYNC_LOG_WARN, __VA_ARGS__)
#define log_info(log, ...)     log__printf((log), TSYNC_LOG_INFO, __VA_ARGS__)
#define log_debug(log, ...)                                                                                  \
	do {                                                                                                 \
		if (log__enabled((log), TSYNC_LOG_DEBUG))                                                    \
			log__printf((log), TSYNC_LOG_DEBUG, __VA_ARGS__);                                    \
	} while (0)

/*
 * Control characters never reach a log line raw: a newline in something a
 * peer or a user supplied would start a forged line. Copies src to dst
 * (capacity cap > 0, always NUL-terminated) with each byte 0x00-0x1f and 0x7f
 * written as the text \n (a newline) or \xNN; trailing newlines are dropped, as
 * the sink ends the line itself. Backslashes are left alone, so escaping
 * escaped text changes nothing. An escape is never cut in half when dst is
 * too small. Returns the length written.
 */
size_t log__escape(char *dst, size_t cap, const char *src);

/*
 * Rate-limited logging of repeated events, such as the rejections of a
 * flood of forged datagrams: per (key, reason), the first event is logged in
 * full, then at most one summary per interval says how many more there were.
 * The table of keys has a fixed size, since an attacker chooses the source
 * addresses; keys past it are folded into one "other" bucket. The clock is
 * the caller's (microseconds), so the tests drive it.
 */
#define RATELOG_INTERVAL_US (10u * 1000000u) /* one summary per key per 10 s at most */
#define RATELOG_KEYS        32               /* keys a node tracks before folding */
#define RATELOG_KEY_MAX     64               /* longer keys are cut */
#define RATELOG_OTHER       (-1)             /* the reason given for the "other" bucket */

/* A summary: `count` events of (key, reason) were not logged over the last
 * `elapsed_us`. For the bucket, key is NULL and reason RATELOG_OTHER. */
typedef void (*ratelog_summary_fn)(void *userdata, const char *key, int reason, uint64_t count,
                                   uint64_t elapsed_us);

struct ratelog_slot {
	char key[RATELOG_KEY_MAX];
	int reason;
	bool used;
	uint64_t start_us;   /* the start of the current interval */
	uint64_t suppressed; /* events of this interval not logged */
};

struct ratelog {
	uint64_t interval_us;
	size_t n_slots;
	struct ratelog_slot *slots;
	struct ratelog_slot other;
	ratelog_summary_fn summary;
	void *userdata;
};

/* 0 or -ENOMEM. interval_us 0 means RATELOG_INTERVAL_US. */
int ratelog__init(struct ratelog *rl, size_t n_slots, uint64_t interval_us, ratelog_summary_fn fn,
                  void *userdata);
void ratelog__free(struct ratelog *rl); /* after a zeroed or failed init too */
/* Counts one event of (key, reason) at `now`. true: log it in full; false:
 * it is counted for the summary. A summary that is due for that key is
 * written first. */
bool ratelog__hit(struct ratelog *rl, const char *key, int reason, uint64_t now);
/* Writes the summaries that are due at `now` and forgets keys that were
 * quiet for a whole interval. Returns when to call again: the earliest time
 * something falls due, or UINT64_MAX when no key is tracked. */
uint64_t ratelog__tick(struct ratelog *rl, uint64_t now);
/* Writes every pending summary now, due or not (at exit). */
void ratelog__flush(struct ratelog *rl, uint64_t now);

/* A growable byte buffer, always NUL-terminated when len > 0. */
struct buf {
	char *data;
	size_t len;
	size_t cap;
};

int buf__reserve(struct buf *b, size_t extra); /* 0 or -ENOMEM */
int buf__append(struct buf *b, const void *data, size_t len);
/* `x` in decimal (no printf: the push bodies and COPY texts write millions). */
int buf__append_i64(struct buf *b, int64_t x);

/* The value of one hexadecimal digit (either case), or -1. */
int hex__digit(char c);
/* The value of the decimal digits [d, q) (all '0'-'9', the caller checked)
 * if it is at most limit: the integer readers' (lib/wire's JSON, the
 * collector's push reader), inline since they read every number with it.
 * Eighteen digits cannot pass INT64_MAX: only those after them are checked
 * (the check was a third of reading an envelope; BENCHMARKS.md "Session 10:
 * round trip"). */
static inline bool util__digits_value(const char *d, const char *q, uint64_t limit, uint64_t *out)
{
	const char *fast = q - d > 18 ? d + 18 : q;
	uint64_t acc = 0;

	for (; d < fast; d++)
		acc = acc * 10 + (unsigned)(*d - '0');
	for (; d < q; d++) {
		unsigned dig = (unsigned)(*d - '0');
		if (acc > (limit - dig) / 10)
			return false;
		acc = acc * 10 + dig;
	}
	*out = acc;
	return true;
}
int buf__appendf(struct buf *b, const char *fmt, ...) TSYNC_PRINTF(2, 3);
void buf__reset(struct buf *b); /* len = 0, keeps memory */
void buf__free(struct buf *b);

/*
 * A fixed, read-mostly map from names to small integers (open addressing).
 * Names are borrowed: they must outlive the index.
 */
struct name_index {
	const char **keys;
	uint32_t *vals;
	size_t cap; /* power of two */
	size_t count;
};

int name_index__init(struct name_index *ix, size_t expected);
int name_index__put(struct name_index *ix, const char *key, uint32_t val);        /* -EEXIST if present */
int name_index__get(const struct name_index *ix, const char *key, uint32_t *val); /* 0 or -ENOENT */
void name_index__free(struct name_index *ix);

/* strdup that returns NULL only when s is NULL or memory runs out. */
char *util__strdup(const char *s);

/* A small, fast PRNG (xorshift64*), one per owner; never for keys. */
struct prng {
	uint64_t s;
};
void prng__seed(struct prng *p, uint64_t seed);
uint64_t prng__next(struct prng *p);
double prng__unit(struct prng *p); /* [0, 1) */

/*
 * A retry's wait after `failures` failures in a row (1: the first): min_ms,
 * doubled for each further failure, capped at max_ms, with "equal jitter"
 * (half fixed, half random from `p`) so that many clients that failed
 * together do not return in step. In [d/2, d] for that capped d.
 */
uint64_t backoff__next_ms(struct prng *p, uint64_t min_ms, uint64_t max_ms, unsigned failures);

/* Values: copy with string ownership, equality, free. */
int value__copy(tsync_value *dst, const tsync_value *src); /* deep copies strings */
void value__clear(tsync_value *v);                         /* frees an owned string */
int value__equal(const tsync_value *a, const tsync_value *b);

#endif /* TSYNC_UTIL_H */
