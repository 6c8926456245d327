/*
 * lib/util: small helpers shared by every module of libthingsync: clocks,
 * the logger, a growable byte buffer and a name index.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_UTIL_H
#define TSYNC_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <thingsync/common.h>

#define TSYNC_HIDDEN       __attribute__((visibility("hidden")))
#define TSYNC_PRINTF(a, b) __attribute__((format(printf, a, b)))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Clocks. */
uint64_t util__now_us(void);      /* CLOCK_MONOTONIC, microseconds */
uint64_t util__realtime_us(void); /* CLOCK_REALTIME, microseconds since the epoch */

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

/* A growable byte buffer, always NUL-terminated when len > 0. */
struct buf {
	char *data;
	size_t len;
	size_t cap;
};

int buf__reserve(struct buf *b, size_t extra); /* 0 or -ENOMEM */
int buf__append(struct buf *b, const void *data, size_t len);
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

/* Values: copy with string ownership, equality, free. */
int value__copy(tsync_value *dst, const tsync_value *src); /* deep copies strings */
void value__clear(tsync_value *v);                         /* frees an owned string */
int value__equal(const tsync_value *a, const tsync_value *b);

#endif /* TSYNC_UTIL_H */
