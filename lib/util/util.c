/*
 * lib/util: clocks, logger, buffer, name index, PRNG.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/util.h"

uint64_t util__now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t util__realtime_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The environment is read once per process: the day clock runs for every
 * change of an owned thing (its cumul), and getenv() walks the whole
 * environment, which showed in the profile of a batch of changes (a third
 * of the cumul's cost). Tests set the variable before the processes start. */
static const char *test_clock_path;
static pthread_once_t test_clock_once = PTHREAD_ONCE_INIT;

static void test_clock_read(void)
{
	test_clock_path = getenv(UTIL_TEST_CLOCK_ENV);
}

int64_t util__day_clock_us(void)
{
	const char *path;

	pthread_once(&test_clock_once, test_clock_read);
	path = test_clock_path;
	char text[64];
	FILE *f;
	size_t n;
	double secs;
	char *end;

	if (!path || !*path || !(f = fopen(path, "re")))
		return (int64_t)util__realtime_us();
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	secs = strtod(text, &end);
	if (end == text || secs <= 0)
		return (int64_t)util__realtime_us();
	/* Rounded to the millisecond, as far as a double holds it, so that a
	 * test that writes "1765000000.25" gets exactly that instant. */
	return (int64_t)llround(secs * 1000.0) * 1000;
}

size_t log__escape(char *dst, size_t cap, const char *src)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0, len = strlen(src);

	while (len > 0 && src[len - 1] == '\n')
		len--;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];
		if (c >= 0x20 && c != 0x7f) {
			if (n + 1 >= cap)
				break;
			dst[n++] = (char)c;
		} else if (c == '\n') {
			if (n + 2 >= cap)
				break;
			dst[n++] = '\\';
			dst[n++] = 'n';
		} else {
			if (n + 4 >= cap)
				break;
			dst[n++] = '\\';
			dst[n++] = 'x';
			dst[n++] = hex[c >> 4];
			dst[n++] = hex[c & 15];
		}
	}
	dst[n] = '\0';
	return n;
}

/*
 * The one sink of the library, of pushd and of collectord: whatever the
 * format's arguments hold (names and texts from peers, site.conf, HTTP
 * clients), the line that leaves is one line.
 */
void log__printf(const struct logger *log, tsync_log_level level, const char *fmt, ...)
{
	char raw[1024], line[1024];
	int n = 0;
	va_list ap;

	if (!log__enabled(log, level))
		return;
	if (log->prefix)
		n = snprintf(raw, sizeof(raw), "%s: ", log->prefix);
	if (n < 0 || (size_t)n >= sizeof(raw))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(raw + n, sizeof(raw) - (size_t)n, fmt, ap);
	va_end(ap);
	log__escape(line, sizeof(line), raw);
	log->fn(log->userdata, level, line);
}

int buf__reserve(struct buf *b, size_t extra)
{
	size_t need = b->len + extra + 1;
	size_t cap;
	char *p;

	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

int buf__append(struct buf *b, const void *data, size_t len)
{
	if (buf__reserve(b, len) < 0)
		return -ENOMEM;
	memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

int hex__digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int buf__append_i64(struct buf *b, int64_t x)
{
	char text[24];
	char *p = text + sizeof(text);
	uint64_t u = x < 0 ? 0 - (uint64_t)x : (uint64_t)x;

	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (x < 0)
		*--p = '-';
	return buf__append(b, p, (size_t)(text + sizeof(text) - p));
}

int buf__appendf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if (buf__reserve(b, (size_t)n) < 0)
		return -ENOMEM;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void buf__reset(struct buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

void buf__free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* FNV-1a: names are short and few; this is plenty. */
static uint64_t hash_name(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	while (*s) {
		h ^= (unsigned char)*s++;
		h *= 1099511628211ull;
	}
	/* FNV's low bits, which pick the slot, vary little between names that
	 * differ in their last byte ("t1", "t2", ...): mixed in from the high
	 * bits, such names stop clustering (about 1.75 compares a lookup
	 * before, in the bench's 1,000 things). */
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 32;
	return h;
}

int name_index__init(struct name_index *ix, size_t expected)
{
	size_t cap = 16;
	while (cap < expected * 2)
		cap *= 2;
	ix->keys = calloc(cap, sizeof(*ix->keys));
	ix->vals = calloc(cap, sizeof(*ix->vals));
	if (!ix->keys || !ix->vals) {
		free(ix->keys);
		free(ix->vals);
		ix->keys = NULL;
		ix->vals = NULL;
		return -ENOMEM;
	}
	ix->cap = cap;
	ix->count = 0;
	return 0;
}

static int name_index_grow(struct name_index *ix)
{
	struct name_index bigger;
	int r = name_index__init(&bigger, ix->cap);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ix->cap; i++)
		if (ix->keys[i])
			name_index__put(&bigger, ix->keys[i], ix->vals[i]);
	name_index__free(ix);
	*ix = bigger;
	return 0;
}

int name_index__put(struct name_index *ix, const char *key, uint32_t val)
{
	size_t i;

	if (!ix->keys) {
		int r = name_index__init(ix, 8);
		if (r < 0)
			return r;
	}
	if ((ix->count + 1) * 2 > ix->cap) {
		int r = name_index_grow(ix);
		if (r < 0)
			return r;
	}
	for (i = hash_name(key) & (ix->cap - 1);; i = (i + 1) & (ix->cap - 1)) {
		if (!ix->keys[i])
			break;
		if (strcmp(ix->keys[i], key) == 0)
			return -EEXIST;
	}
	ix->keys[i] = key;
	ix->vals[i] = val;
	ix->count++;
	return 0;
}

int name_index__get(const struct name_index *ix, const char *key, uint32_t *val)
{
	if (!ix->keys || !key)
		return -ENOENT;
	for (size_t i = hash_name(key) & (ix->cap - 1);; i = (i + 1) & (ix->cap - 1)) {
		if (!ix->keys[i])
			return -ENOENT;
		if (strcmp(ix->keys[i], key) == 0) {
			*val = ix->vals[i];
			return 0;
		}
	}
}

void name_index__free(struct name_index *ix)
{
	free(ix->keys);
	free(ix->vals);
	ix->keys = NULL;
	ix->vals = NULL;
	ix->cap = ix->count = 0;
}

char *util__strdup(const char *s)
{
	size_t n;
	char *d;

	if (!s)
		return NULL;
	n = strlen(s) + 1;
	d = malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

void prng__seed(struct prng *p, uint64_t seed)
{
	p->s = seed ? seed : 0x9e3779b97f4a7c15ull;
}

uint64_t prng__next(struct prng *p)
{
	uint64_t x = p->s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	p->s = x;
	return x * 0x2545f4914f6cdd1dull;
}

double prng__unit(struct prng *p)
{
	return (double)(prng__next(p) >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t backoff__next_ms(struct prng *p, uint64_t min_ms, uint64_t max_ms, unsigned failures)
{
	uint64_t d = min_ms;

	for (unsigned i = 1; i < failures && d < max_ms; i++)
		d *= 2;
	if (d > max_ms)
		d = max_ms;
	return d / 2 + prng__next(p) % (d / 2 + 1);
}
