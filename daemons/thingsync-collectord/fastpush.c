/*
 * thingsync-collectord: the usual push body read without a tree (see
 * fastpush.h). A recursive-descent reader over a copy of the body: no
 * allocation per member, one array of items. Whatever it does not know it
 * declines (0), and ingest.c reads the body with jansson instead.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastpush.h"
#include "util/util.h"

struct rd {
	char *s, *end;
};

static void ws(struct rd *p)
{
	while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r'))
		p->s++;
}

static bool lit(struct rd *p, char c)
{
	ws(p);
	if (p->s < p->end && *p->s == c) {
		p->s++;
		return true;
	}
	return false;
}

static bool word(struct rd *p, const char *w)
{
	size_t n = strlen(w);

	ws(p);
	if ((size_t)(p->end - p->s) < n || memcmp(p->s, w, n) != 0)
		return false;
	p->s += n;
	return true;
}

/* A string of printable ASCII without escapes, ended in place; NULL otherwise. */
static const char *str(struct rd *p)
{
	char *start;

	ws(p);
	if (p->s >= p->end || *p->s != '"')
		return NULL;
	start = ++p->s;
	while (p->s < p->end && *p->s != '"') {
		unsigned char c = (unsigned char)*p->s;
		if (c < 0x20 || c > 0x7e || c == '\\')
			return NULL;
		p->s++;
	}
	if (p->s >= p->end)
		return NULL;
	*p->s++ = '\0';
	return start;
}

static bool digit(const struct rd *p, const char *q)
{
	return q < p->end && *q >= '0' && *q <= '9';
}

/* One or more digits at *q, passed over; false when there is none. */
static bool digits(const struct rd *p, char **q)
{
	if (!digit(p, *q))
		return false;
	while (digit(p, *q))
		(*q)++;
	return true;
}

/* A JSON number: 1 an integer (within 64 bits), 2 a finite real, 0 anything else. */
static int num(struct rd *p, int64_t *i, double *f)
{
	char text[64], *q, *a, *e;
	bool real = false;
	size_t n;

	ws(p);
	a = q = p->s;
	if (q < p->end && *q == '-')
		q++;
	if (q < p->end && *q == '0')
		q++;
	else if (!digits(p, &q))
		return 0;
	if (q < p->end && *q == '.') {
		q++;
		if (!digits(p, &q))
			return 0;
		real = true;
	}
	if (q < p->end && (*q == 'e' || *q == 'E')) {
		q++;
		if (q < p->end && (*q == '+' || *q == '-'))
			q++;
		if (!digits(p, &q))
			return 0;
		real = true;
	}
	n = (size_t)(q - a);
	if (n >= sizeof(text))
		return 0;
	if (!real) {
		/* The digits as they come (strtoll was a fifth of the reader's work): what
		 * does not fit in 64 bits is refused, as strtoll's ERANGE was. */
		bool neg = *a == '-';
		uint64_t x;
		if (!util__digits_value(a + neg, q, (uint64_t)INT64_MAX + neg, &x))
			return 0;
		*i = neg ? (int64_t)(0 - x) : (int64_t)x;
		p->s = q;
		return 1;
	}
	memcpy(text, a, n);
	text[n] = '\0';
	errno = 0;
	*f = strtod(text, &e);
	if (errno || !isfinite(*f) || *e)
		return 0;
	p->s = q;
	return 2;
}

static bool integer(struct rd *p, int64_t *x)
{
	double f;
	return num(p, x, &f) == 1;
}

static bool value(struct rd *p, struct fast_item *it)
{
	ws(p);
	if (p->s < p->end && *p->s == '"') {
		it->s = str(p);
		it->vkind = FAST_STRING;
		return it->s != NULL;
	}
	if (word(p, "true") || word(p, "false")) {
		it->vkind = FAST_BOOL;
		it->b = p->s[-2] == 'u'; /* tr(u)e, fal(s)e */
		return true;
	}
	switch (num(p, &it->i, &it->f)) {
	case 1:
		it->vkind = FAST_INT;
		return true;
	case 2:
		it->vkind = FAST_REAL;
		return true;
	default:
		return false;
	}
}

/* One item: its members known, each once, "seq" present. */
static bool item(struct rd *p, struct fast_item *it)
{
	unsigned seen = 0, bit;

	memset(it, 0, sizeof(*it));
	if (!lit(p, '{'))
		return false;
	do {
		const char *k = str(p);
		bool ok;

		if (!k || !lit(p, ':'))
			return false;
		if (!strcmp(k, "seq"))
			bit = 1, ok = integer(p, &it->seq);
		else if (!strcmp(k, "thing"))
			bit = 2, ok = (it->thing = str(p)) != NULL;
		else if (!strcmp(k, "value"))
			bit = 4, ok = value(p, it);
		else if (!strcmp(k, "time"))
			bit = 8, ok = it->has_time = integer(p, &it->time);
		else if (!strcmp(k, "owner_boot"))
			bit = 16, ok = it->has_boot = integer(p, &it->boot);
		else if (!strcmp(k, "version"))
			bit = 32, ok = it->has_ver = integer(p, &it->ver);
		else if (!strcmp(k, "source"))
			bit = 64, ok = (it->via = str(p)) != NULL;
		else
			return false;
		if (!ok || (seen & bit))
			return false;
		seen |= bit;
	} while (lit(p, ','));
	return lit(p, '}') && (seen & 1);
}

static int items(struct rd *p, size_t max_items, struct fast_push *fp)
{
	size_t cap = 0;

	if (!lit(p, '['))
		return 0;
	if (lit(p, ']'))
		return 1;
	do {
		if (fp->n == max_items)
			return 0;
		if (fp->n == cap) {
			size_t ncap = cap ? 2 * cap : 256;
			struct fast_item *x;
			if (ncap > max_items)
				ncap = max_items;
			x = realloc(fp->items, ncap * sizeof(*x));
			if (!x)
				return -ENOMEM;
			fp->items = x;
			cap = ncap;
		}
		if (!item(p, &fp->items[fp->n]))
			return 0;
		fp->n++;
	} while (lit(p, ','));
	return lit(p, ']') ? 1 : 0;
}

int fastpush__parse(const char *body, size_t len, size_t max_items, struct fast_push *fp)
{
	struct rd p;
	unsigned seen = 0, bit;
	int r = 0;

	memset(fp, 0, sizeof(*fp));
	if (len == 0 || memchr(body, '\0', len))
		return 0;
	fp->text = malloc(len + 1);
	if (!fp->text)
		return -ENOMEM;
	memcpy(fp->text, body, len);
	fp->text[len] = '\0';
	p.s = fp->text;
	p.end = fp->text + len;
	if (!lit(&p, '{'))
		goto no;
	do {
		const char *k = str(&p);
		bool ok;

		if (!k || !lit(&p, ':'))
			goto no;
		if (!strcmp(k, "source")) {
			bit = 1, ok = (fp->source = str(&p)) != NULL;
		} else if (!strcmp(k, "stream")) {
			bit = 2, ok = (fp->stream = str(&p)) != NULL;
		} else if (!strcmp(k, "boot")) {
			bit = 4, ok = fp->has_boot = integer(&p, &fp->boot);
		} else if (!strcmp(k, "measurements")) {
			bit = 8;
			r = items(&p, max_items, fp);
			if (r < 0)
				goto no;
			ok = r == 1;
		} else {
			goto no;
		}
		if (!ok || (seen & bit))
			goto no;
		seen |= bit;
	} while (lit(&p, ','));
	if (!lit(&p, '}') || (seen & 9) != 9)
		goto no;
	ws(&p);
	if (p.s != p.end)
		goto no;
	return 1;
no:
	fastpush__free(fp);
	return r < 0 ? r : 0;
}

void fastpush__free(struct fast_push *fp)
{
	free(fp->text);
	free(fp->items);
	memset(fp, 0, sizeof(*fp));
}
