/*
 * thingsync-pushd: measurements from a CSV file (the seed's fake push),
 * through the same journal and sender as the mesh's.
 *
 * One measurement per line, `time,thing,value[,owner_boot,version]`:
 *   time   seconds since the epoch (a fraction allowed), or ISO 8601 UTC
 *          (2024-05-29T12:00:00Z, a fraction of a second allowed)
 *   thing  the thing's name
 *   value  true/false, an integer, a number, or text ("..." with "" for a
 *          quote when it holds a comma); empty is no value
 *   owner_boot, version  the change's identity at its owner, both or none
 *          (non-negative integers): with them the collector stores a
 *          change it already has (live or recovered) once
 * Empty lines, lines starting with '#' and a first line starting with "time"
 * are skipped. The file is NOT checked against site.conf here: that is the
 * collector's job (a fake push exists to test it), so an unknown thing or a
 * value out of range goes to the collector, which refuses it by name. What
 * cannot be carried at all is refused here, with file and line: a line with
 * the wrong number of fields, an unreadable time, an empty or over-long thing
 * name, text that is not UTF-8, a line over CSV_MAX_LINE bytes.
 *
 * Lines are staged and committed in chunks; when the journal is full the
 * chunk is given back to the file and the import waits for the sender to
 * make room (backpressure, as for the mesh).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "pushd.h"

#define CSV_MAX_LINE 8192
#define CSV_CHUNK    1000

static bool utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		size_t n;
		uint32_t cp;

		if (*p < 0x80) {
			p++;
			continue;
		} else if ((*p & 0xe0) == 0xc0) {
			n = 1;
			cp = *p & 0x1f;
		} else if ((*p & 0xf0) == 0xe0) {
			n = 2;
			cp = *p & 0x0f;
		} else if ((*p & 0xf8) == 0xf0) {
			n = 3;
			cp = *p & 0x07;
		} else {
			return false;
		}
		p++;
		for (size_t i = 0; i < n; i++, p++) {
			if ((*p & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (*p & 0x3f);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
	}
	return true;
}

/* Splits off one field at *p (quoted or not); returns it, advances *p past the comma. */
static char *next_field(char **p, bool *quoted, bool *bad)
{
	char *s = *p, *out, *start;

	*quoted = false;
	if (!s)
		return NULL;
	if (*s == '"') {
		*quoted = true;
		start = out = ++s;
		for (;;) {
			if (*s == '\0') {
				*bad = true; /* no closing quote */
				*p = NULL;
				return NULL;
			}
			if (*s == '"') {
				if (s[1] == '"') {
					*out++ = '"';
					s += 2;
					continue;
				}
				s++;
				break;
			}
			*out++ = *s++;
		}
		*out = '\0';
		if (*s == ',')
			*p = s + 1;
		else if (*s == '\0')
			*p = NULL;
		else
			*bad = true; /* text after the closing quote */
		return start;
	}
	start = s;
	s = strchr(s, ',');
	if (s) {
		*s = '\0';
		*p = s + 1;
	} else {
		*p = NULL;
	}
	return start;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

static int parse_time(const char *s, int64_t *us)
{
	char *end;
	double t;
	struct tm tm;
	const char *rest;
	double frac = 0;

	errno = 0;
	t = strtod(s, &end);
	if (end != s && *end == '\0' && errno == 0 && isfinite(t) && fabs(t) < 1e11) {
		*us = (int64_t)llround(t * 1e6);
		return 0;
	}
	memset(&tm, 0, sizeof(tm));
	rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!rest)
		return -EINVAL;
	if (*rest == '.') {
		frac = strtod(rest, &end);
		rest = end;
	}
	if (strcmp(rest, "Z") != 0 && strcmp(rest, "+00:00") != 0 && *rest != '\0')
		return -EINVAL;
	*us = (int64_t)timegm(&tm) * 1000000 + (int64_t)llround(frac * 1e6);
	return 0;
}

static void parse_value(char *s, bool quoted, tsync_value *v)
{
	char *end;
	long long i;
	double f;

	if (quoted) {
		*v = tsync_string(s);
		return;
	}
	if (*s == '\0') {
		v->type = TSYNC_TYPE_NONE;
		v->u.i = 0;
		return;
	}
	if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0) {
		*v = tsync_bool(s[0] == 't');
		return;
	}
	errno = 0;
	i = strtoll(s, &end, 10);
	if (end != s && *end == '\0' && errno == 0) {
		*v = tsync_int(i);
		return;
	}
	errno = 0;
	f = strtod(s, &end);
	if (end != s && *end == '\0' && errno == 0 && isfinite(f)) {
		*v = tsync_float(f);
		return;
	}
	*v = tsync_string(s);
}

/* A non-negative integer field. */
static bool parse_u64_field(char *f, uint64_t *out)
{
	char *end;

	f = trim(f);
	if (*f < '0' || *f > '9')
		return false;
	errno = 0;
	*out = strtoull(f, &end, 10);
	return errno == 0 && *end == '\0';
}

int csv__parse_line(char *line, struct journal_entry *e, const char **why)
{
	char *p = line;
	char *f_time, *f_thing, *f_value, *f_boot = NULL, *f_ver = NULL;
	bool q, q_value, bad = false;
	int64_t *time_us = &e->time_us;
	tsync_value *v = &e->value;

	memset(e, 0, sizeof(*e));
	e->via = JOURNAL_VIA_IMPORT;
	if (!utf8_valid(line)) {
		*why = "not UTF-8";
		return -EINVAL;
	}
	f_time = next_field(&p, &q, &bad);
	f_thing = next_field(&p, &q, &bad);
	f_value = next_field(&p, &q_value, &bad);
	if (p) {
		f_boot = next_field(&p, &q, &bad);
		f_ver = next_field(&p, &q, &bad);
	}
	if (bad || !f_time || !f_thing || !f_value || p || (f_boot && !f_ver)) {
		*why = "not 3 or 5 fields (time,thing,value[,owner_boot,version])";
		return -EINVAL;
	}
	if (f_boot && (!parse_u64_field(f_boot, &e->owner_boot) || !parse_u64_field(f_ver, &e->version))) {
		*why = "owner_boot and version are not non-negative integers";
		return -EINVAL;
	}
	if (parse_time(trim(f_time), time_us) < 0) {
		*why = "unreadable time";
		return -EINVAL;
	}
	f_thing = trim(f_thing);
	if (*f_thing == '\0' || strlen(f_thing) > JOURNAL_MAX_THING) {
		*why = "empty or over-long thing name";
		return -EINVAL;
	}
	e->thing = f_thing;
	if (!q_value)
		f_value = trim(f_value);
	if (strlen(f_value) > JOURNAL_MAX_STRING) {
		*why = "value over-long";
		return -EINVAL;
	}
	parse_value(f_value, q_value, v);
	return 0;
}

/* Reads one line into buf; false at the end of the file. Over-long lines are consumed and flagged. */
static bool read_line(FILE *f, char *buf, size_t len, bool *too_long)
{
	size_t n;

	*too_long = false;
	if (!fgets(buf, (int)len, f))
		return false;
	n = strlen(buf);
	if (n > 0 && buf[n - 1] == '\n') {
		buf[n - 1] = '\0';
		return true;
	}
	if (feof(f))
		return true;
	*too_long = true;
	for (int c = fgetc(f); c != EOF && c != '\n'; c = fgetc(f))
		;
	return true;
}

static void chunk_cb(evutil_socket_t fd, short what, void *arg)
{
	struct csv_import *c = arg;
	struct pushd *pd = c->pd;
	char *line = malloc(CSV_MAX_LINE + 2);
	long pos = ftell(c->f);
	unsigned long line_at = c->line;
	uint64_t refused = 0, staged = 0;
	bool eof = false;
	int r = 0;

	if (!line || pos < 0) {
		log_error(&pd->log, "csv %s: %s", c->path, line ? "ftell failed" : "out of memory");
		free(line);
		c->blocked = true;
		return;
	}
	while (staged < CSV_CHUNK) {
		bool too_long;
		struct journal_entry e;
		const char *why = "";
		char *s;

		if (!read_line(c->f, line, CSV_MAX_LINE + 2, &too_long)) {
			eof = true;
			break;
		}
		c->line++;
		s = trim(line);
		if (*s == '\0' || *s == '#' || (c->line == 1 && strncmp(s, "time", 4) == 0))
			continue;
		if (too_long) {
			why = "line too long";
			r = -EINVAL;
		} else {
			r = csv__parse_line(s, &e, &why);
		}
		if (r == 0)
			r = journal__stage_entry(pd->journal, &e, NULL);
		if (r == -EINVAL) {
			log_warn(&pd->log, "csv %s:%lu: refused: %s", c->path, c->line, why);
			refused++;
			continue;
		}
		if (r < 0)
			break;
		staged++;
	}
	free(line);
	if (r >= 0 || r == -EINVAL)
		r = journal__commit(pd->journal);
	if (r < 0) {
		/* Give the chunk back to the file and wait for room. */
		journal__discard(pd->journal);
		if (fseek(c->f, pos, SEEK_SET) < 0) {
			log_error(&pd->log, "csv %s: cannot seek back: import stopped at line %lu", c->path,
			          line_at);
			c->done = true;
			return;
		}
		c->line = line_at;
		c->blocked = true;
		if (r == -ENOSPC) {
			log_info(&pd->log, "csv %s:%lu: journal full, waiting for the collector", c->path,
			         c->line);
		} else {
			/* Not something an ack cures: try again in a second. */
			struct timeval tv = {1, 0};
			log_error(&pd->log, "csv %s:%lu: %s; retrying", c->path, c->line, tsync_strerror(r));
			c->blocked = false;
			event_add(c->ev, &tv);
		}
		return;
	}
	c->imported += staged;
	c->refused += refused;
	if (staged)
		sender__kick(&pd->sender);
	if (!eof) {
		event_active(c->ev, EV_TIMEOUT, 0);
		return;
	}
	c->done = true;
	log_info(&pd->log, "csv %s: %llu measurement(s) journaled, %llu line(s) refused", c->path,
	         (unsigned long long)c->imported, (unsigned long long)c->refused);
	/* The next file, if any. */
	if (pd->csv_next < pd->n_csv)
		event_active(pd->csv[pd->csv_next++].ev, EV_TIMEOUT, 0);
	pushd__check_done(pd);
}

int csv__start(struct pushd *pd, struct csv_import *c, const char *path)
{
	int fd;

	memset(c, 0, sizeof(*c));
	c->pd = pd;
	c->path = path;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int r = -errno;
		log_error(&pd->log, "csv %s: %s", path, strerror(-r));
		return r;
	}
	c->f = fdopen(fd, "r");
	if (!c->f) {
		close(fd);
		return -ENOMEM;
	}
	c->ev = event_new(pd->base, -1, 0, chunk_cb, c);
	if (!c->ev) {
		fclose(c->f);
		c->f = NULL;
		return -ENOMEM;
	}
	return 0;
}

void csv__resume(struct csv_import *c)
{
	if (!c->blocked || c->done)
		return;
	c->blocked = false;
	event_active(c->ev, EV_TIMEOUT, 0);
}

void csv__free(struct csv_import *c)
{
	if (c->ev)
		event_free(c->ev);
	if (c->f)
		fclose(c->f);
	memset(c, 0, sizeof(*c));
}
