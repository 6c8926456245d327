/*
 * lib/site: site.conf loading and validation, and the public site accessors.
 *
 * Loading happens in two passes. The first runs inih over the file and keeps
 * every section and every `key = value` with its line number; nothing is
 * interpreted yet, because a thing may name an owner whose [controller]
 * section comes later. The second pass builds the site from those raw
 * sections in the order [site], controllers, things, and reports every
 * mistake it finds instead of stopping at the first one.
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>
#include <sodium.h>

#include "site/site.h"

/* A site.conf larger than this is surely not one; refuse it rather than parse it. */
#define SITE_MAX_FILE (16u * 1024u * 1024u)

#define SITE_NAME_MAX     63
#define SITE_PULSE_MS_MAX 3600000 /* one hour */
#define SITE_GROUP_MAX    63      /* characters of a `group =` */

/* ---- errors ------------------------------------------------------------ */

struct diag_entry {
	int line; /* 0: about the file as a whole */
	size_t seq;
	char *msg;
};

/* Every error found, to be reported sorted by line. */
struct diag {
	struct diag_entry *v;
	size_t n, cap;
	bool site_err; /* anything that makes the load TSYNC_ESITE */
	bool key_err;  /* key file problems: TSYNC_EKEY */
	bool oom;
};

static void diag_vadd(struct diag *d, bool key, int line, const char *fmt, va_list ap) TSYNC_PRINTF(4, 0);

static void diag_vadd(struct diag *d, bool key, int line, const char *fmt, va_list ap)
{
	struct buf b = {0};

	if (key)
		d->key_err = true;
	else
		d->site_err = true;
	if (d->oom)
		return;
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 16;
		struct diag_entry *v = realloc(d->v, cap * sizeof(*v));
		if (!v) {
			d->oom = true;
			return;
		}
		d->v = v;
		d->cap = cap;
	}
	{
		va_list copy;
		int n;

		va_copy(copy, ap);
		n = vsnprintf(NULL, 0, fmt, copy);
		va_end(copy);
		if (n < 0 || buf__reserve(&b, (size_t)n) < 0) {
			d->oom = true;
			return;
		}
		vsnprintf(b.data, (size_t)n + 1, fmt, ap);
	}
	d->v[d->n].line = line;
	d->v[d->n].seq = d->n;
	d->v[d->n].msg = b.data;
	d->n++;
}

static void diag_add(struct diag *d, int line, const char *fmt, ...) TSYNC_PRINTF(3, 4);

static void diag_add(struct diag *d, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	diag_vadd(d, false, line, fmt, ap);
	va_end(ap);
}

static void diag_key(struct diag *d, int line, const char *fmt, ...) TSYNC_PRINTF(3, 4);

static void diag_key(struct diag *d, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	diag_vadd(d, true, line, fmt, ap);
	va_end(ap);
}

static bool diag_has_line(const struct diag *d, int line)
{
	for (size_t i = 0; i < d->n; i++)
		if (d->v[i].line == line)
			return true;
	return false;
}

static int diag_cmp(const void *a, const void *b)
{
	const struct diag_entry *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The report handed to the caller: `PATH:LINE: message` lines. NULL if out of memory. */
static char *diag_text(struct diag *d, const char *path)
{
	struct buf b = {0};

	qsort(d->v, d->n, sizeof(*d->v), diag_cmp);
	for (size_t i = 0; i < d->n; i++) {
		int r;
		if (d->v[i].line > 0)
			r = buf__appendf(&b, "%s:%d: %s\n", path, d->v[i].line, d->v[i].msg);
		else
			r = buf__appendf(&b, "%s: %s\n", path, d->v[i].msg);
		if (r < 0) {
			buf__free(&b);
			return NULL;
		}
	}
	return b.data;
}

static void diag_free(struct diag *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->v[i].msg);
	free(d->v);
	memset(d, 0, sizeof(*d));
}

/* ---- first pass: inih --------------------------------------------------- */

enum sect_kind {
	SECT_SITE,
	SECT_CONTROLLER,
	SECT_THING,
};

struct raw_kv {
	char *key;
	char *value;
	int line;
	bool cont; /* an indented line that continues the previous key's value */
	int k;     /* index in the section's key table, -1 if unknown */
};

struct raw_section {
	enum sect_kind kind;
	char *name; /* NULL for [site] */
	int line;
	struct raw_kv *kv;
	size_t n_kv, cap_kv;
};

enum line_kind {
	LINE_BLANK,
	LINE_COMMENT,
	LINE_SECTION,
	LINE_KEY,
	LINE_CONT,
	LINE_BAD,
};

struct parse {
	const char *path;
	char *text;
	size_t len, pos;
	int lineno;
	enum line_kind kind; /* of the line last handed to inih */
	bool prev_key;       /* mirrors inih's prev_name: whether an indented line continues a key */
	struct raw_section *sec;
	size_t n_sec, cap_sec;
	long cur;  /* index of the section keys go to, -1 if none */
	bool skip; /* keys under a broken section header are ignored */
	struct diag diag;
};

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/*
 * Where inih's value or section name ends: at one of `chars`, or at an inline
 * comment (a ';' after whitespace), the same rule inih applies.
 */
static const char *find_chars_or_comment(const char *s, const char *chars)
{
	bool was_space = false;

	while (*s && !(chars && strchr(chars, *s)) && !(was_space && *s == ';')) {
		was_space = is_space(*s);
		s++;
	}
	return s;
}

static void section_open(struct parse *p, enum sect_kind kind, const char *name, size_t name_len)
{
	struct raw_section *s;

	p->cur = -1;
	p->skip = true;
	if (p->n_sec == p->cap_sec) {
		size_t cap = p->cap_sec ? p->cap_sec * 2 : 16;
		struct raw_section *v = realloc(p->sec, cap * sizeof(*v));
		if (!v) {
			p->diag.oom = true;
			return;
		}
		p->sec = v;
		p->cap_sec = cap;
	}
	s = &p->sec[p->n_sec];
	memset(s, 0, sizeof(*s));
	s->kind = kind;
	s->line = p->lineno;
	if (name) {
		s->name = malloc(name_len + 1);
		if (!s->name) {
			p->diag.oom = true;
			return;
		}
		memcpy(s->name, name, name_len);
		s->name[name_len] = '\0';
	}
	p->cur = (long)p->n_sec++;
	p->skip = false;
}

/*
 * A `[...]` line. inih keeps only the first 49 bytes of a section name, too
 * few for `thing` plus a 63-character name, so the header is read here from
 * the full line and inih's `section` argument is not used.
 */
static void section_header(struct parse *p, const char *s)
{
	const char *end = find_chars_or_comment(s + 1, "]");
	const char *word, *word_end, *name, *name_end;

	p->cur = -1;
	p->skip = true;
	if (*end != ']') {
		diag_add(&p->diag, p->lineno, "section header without a closing ']'");
		return;
	}
	word = s + 1;
	while (word < end && is_space(*word))
		word++;
	word_end = word;
	while (word_end < end && !is_space(*word_end))
		word_end++;
	name = word_end;
	while (name < end && is_space(*name))
		name++;
	name_end = end;
	while (name_end > name && is_space(name_end[-1]))
		name_end--;

#define WORD_IS(lit) ((size_t)(word_end - word) == strlen(lit) && !memcmp(word, lit, strlen(lit)))
	if (WORD_IS("site")) {
		for (size_t i = 0; i < p->n_sec; i++) {
			if (p->sec[i].kind == SECT_SITE) {
				diag_add(&p->diag, p->lineno, "duplicate [site] section (first at line %d)",
				         p->sec[i].line);
				return;
			}
		}
		if (name != name_end)
			diag_add(&p->diag, p->lineno, "[site] takes no name, found '%.*s'",
			         (int)(name_end - name), name);
		section_open(p, SECT_SITE, NULL, 0);
	} else if (WORD_IS("controller") || WORD_IS("thing")) {
		bool ctrl = WORD_IS("controller");
		if (name == name_end) {
			diag_add(&p->diag, p->lineno, "[%s] section without a name: write [%s NAME]",
			         ctrl ? "controller" : "thing", ctrl ? "controller" : "thing");
			return;
		}
		section_open(p, ctrl ? SECT_CONTROLLER : SECT_THING, name, (size_t)(name_end - name));
	} else {
		diag_add(&p->diag, p->lineno,
		         "unknown section type '%.*s' (expected site, controller or thing)",
		         (int)(word_end - word), word);
	}
#undef WORD_IS
}

/*
 * Classifies the line about to be handed to inih, with inih's own rules and
 * in its order, so that the handler knows what it is being called for and
 * section headers are seen (empty sections included).
 */
static void classify(struct parse *p, const char *line)
{
	const char *s = line, *sep;
	bool indented;

	if (p->lineno == 1 && !strncmp(s, "\xEF\xBB\xBF", 3))
		s += 3;
	indented = is_space(*s);
	while (*s && is_space(*s))
		s++;
	if (!*s) {
		p->kind = LINE_BLANK;
	} else if (*s == ';' || *s == '#') {
		p->kind = LINE_COMMENT;
	} else if (p->prev_key && indented) {
		p->kind = LINE_CONT;
	} else if (*s == '[') {
		p->kind = LINE_SECTION;
		p->prev_key = false;
		section_header(p, s);
	} else {
		sep = find_chars_or_comment(s, "=:");
		if (*sep != '=' && *sep != ':') {
			p->kind = LINE_BAD;
			diag_add(&p->diag, p->lineno, "expected 'key = value', a [section] or a comment");
			return;
		}
		p->kind = LINE_KEY;
		while (sep > s && is_space(sep[-1]))
			sep--;
		p->prev_key = sep > s;
	}
}

/*
 * inih's reader: hands over one physical line at a time so that the line
 * number is known in the handler. A line that does not fit inih's buffer
 * would be split or cut by it; it is reported and replaced by a comment.
 */
static char *reader(char *str, int num, void *stream)
{
	struct parse *p = stream;
	const char *line, *nl;
	size_t n, content;

	if (p->pos >= p->len || num < 3)
		return NULL;
	line = p->text + p->pos;
	nl = memchr(line, '\n', p->len - p->pos);
	n = nl ? (size_t)(nl - line) : p->len - p->pos;
	p->pos += n + (nl ? 1 : 0);
	p->lineno++;
	content = n;
	if (content > 0 && line[content - 1] == '\r')
		content--;

	if (memchr(line, '\0', content)) {
		diag_add(&p->diag, p->lineno, "line contains a NUL byte");
		goto ignore;
	}
	/* inih needs room for '\r', '\n' and the terminating NUL. */
	if (content + 3 > (size_t)num) {
		const char *s = line;
		diag_add(&p->diag, p->lineno, "line is too long (%zu characters, at most %d)", content,
		         num - 3);
		while (s < line + content && is_space(*s))
			s++;
		if (*s == '[') {
			/* The keys after an unreadable header belong to no known section. */
			p->cur = -1;
			p->skip = true;
			p->prev_key = false;
		}
		goto ignore;
	}
	memcpy(str, line, content);
	str[content] = '\n';
	str[content + 1] = '\0';
	classify(p, str);
	return str;
ignore:
	p->kind = LINE_COMMENT;
	memcpy(str, "#\n", 3);
	return str;
}

static int raw_kv_addn(struct raw_section *s, const char *key, const char *value, size_t value_len, int line,
                       bool cont)
{
	struct raw_kv *kv;

	if (s->n_kv == s->cap_kv) {
		size_t cap = s->cap_kv ? s->cap_kv * 2 : 8;
		struct raw_kv *v = realloc(s->kv, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		s->kv = v;
		s->cap_kv = cap;
	}
	kv = &s->kv[s->n_kv];
	kv->key = util__strdup(key);
	kv->value = malloc(value_len + 1);
	if (kv->value) {
		if (value_len)
			memcpy(kv->value, value, value_len);
		kv->value[value_len] = '\0';
	}
	if (!kv->key || !kv->value) {
		free(kv->key);
		free(kv->value);
		return -ENOMEM;
	}
	kv->line = line;
	kv->cont = cont;
	kv->k = -1;
	s->n_kv++;
	return 0;
}

/* inih's handler. `section` may be truncated by inih; p->cur is exact. */
static int handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse *p = user;
	struct raw_section *s;
	bool cont = p->kind == LINE_CONT;

	(void)section;
	if (p->diag.oom)
		return 1;
	if (p->cur < 0) {
		if (!p->skip && !cont)
			diag_add(&p->diag, p->lineno, "key '%s' outside of any section", name);
		return 1;
	}
	s = &p->sec[p->cur];
	if (cont && s->n_kv > 0) {
		/* inih keeps only 49 bytes of the name a continuation belongs to. */
		name = s->kv[s->n_kv - 1].key;
		/*
		 * inih 55 leaves an inline comment on a continuation line (later
		 * versions strip it); strip it here so both read the file alike.
		 */
		if (value) {
			const char *end = find_chars_or_comment(value, NULL);
			while (end > value && is_space(end[-1]))
				end--;
			if (raw_kv_addn(s, name, value, (size_t)(end - value), p->lineno, cont) < 0)
				p->diag.oom = true;
			return 1;
		}
	}
	if (raw_kv_addn(s, name, value, value ? strlen(value) : 0, p->lineno, cont) < 0)
		p->diag.oom = true;
	return 1;
}

static void parse_free(struct parse *p)
{
	for (size_t i = 0; i < p->n_sec; i++) {
		struct raw_section *s = &p->sec[i];
		for (size_t k = 0; k < s->n_kv; k++) {
			free(s->kv[k].key);
			free(s->kv[k].value);
		}
		free(s->kv);
		free(s->name);
	}
	free(p->sec);
	free(p->text);
	diag_free(&p->diag);
}

static int read_text(const char *path, char **out, size_t *out_len)
{
	struct stat st;
	char *text = NULL;
	size_t len = 0, cap = 0;
	int fd;
	int r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto leave;
	}
	if (S_ISDIR(st.st_mode)) {
		r = -EISDIR;
		goto leave;
	}
	for (;;) {
		ssize_t n;

		if (len == cap) {
			char *t;
			if (cap >= SITE_MAX_FILE) {
				r = -EFBIG;
				goto leave;
			}
			cap = cap ? cap * 2 : 8192;
			t = realloc(text, cap + 1);
			if (!t) {
				r = -ENOMEM;
				goto leave;
			}
			text = t;
		}
		n = read(fd, text + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto leave;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > SITE_MAX_FILE) {
		r = -EFBIG;
		goto leave;
	}
	if (!text) {
		text = malloc(1);
		if (!text) {
			r = -ENOMEM;
			goto leave;
		}
	}
	text[len] = '\0';
	*out = text;
	*out_len = len;
	text = NULL;
	r = 0;
leave:
	free(text);
	close(fd);
	return r;
}

/* ---- second pass: building the site ------------------------------------ */

struct key_def {
	const char *name;
	bool list; /* may repeat and continue on indented lines; values append */
};

enum {
	SK_NAME,
	SK_KEY_FILE,
	SK_RETRY_MIN_MS,
	SK_RETRY_INITIAL_MS,
	SK_RETRY_MAX_MS,
	SK_MAX_DATAGRAM,
	SK_MAX_MSGS,
	SK_MAX_STRING,
	SK_MAX_OUTSTANDING,
	SK_MAX_QUEUED,
	SK_DOWN_AFTER_MS,
	SK_STATE_COMMIT_MS,
	SK_HEARTBEAT_MS,
	SK_TIMEZONE,
	SK_CUMUL_DAYS,
	SK_FORENSIC_DAYS,
	SK_REPORT_COMMAND,
	SK_REPORT_TIMEOUT_MS,
	SK_COUNT
};

static const struct key_def site_keys[SK_COUNT] = {
    [SK_NAME] = {"name", false},
    [SK_KEY_FILE] = {"key_file", false},
    [SK_RETRY_MIN_MS] = {"retry_min_ms", false},
    [SK_RETRY_INITIAL_MS] = {"retry_initial_ms", false},
    [SK_RETRY_MAX_MS] = {"retry_max_ms", false},
    [SK_MAX_DATAGRAM] = {"max_datagram", false},
    [SK_MAX_MSGS] = {"max_msgs", false},
    [SK_MAX_STRING] = {"max_string", false},
    [SK_MAX_OUTSTANDING] = {"max_outstanding", false},
    [SK_MAX_QUEUED] = {"max_queued", false},
    [SK_DOWN_AFTER_MS] = {"down_after_ms", false},
    [SK_STATE_COMMIT_MS] = {"state_commit_ms", false},
    [SK_HEARTBEAT_MS] = {"heartbeat_ms", false},
    [SK_TIMEZONE] = {"timezone", false},
    [SK_CUMUL_DAYS] = {"cumul_days", false},
    [SK_FORENSIC_DAYS] = {"forensic_days", false},
    [SK_REPORT_COMMAND] = {"report_command", false},
    [SK_REPORT_TIMEOUT_MS] = {"report_timeout_ms", false},
};

enum {
	CK_HOST,
	CK_UDP_PORT,
	CK_TCP_PORT,
	CK_ROLES,
	CK_PROTOCOL,
	CK_HISTORY,
	CK_HISTORY_MAX_AGE,
	CK_HISTORY_MAX_BYTES,
	CK_RECOVERY_THRESHOLD,
	CK_COUNT
};

static const struct key_def controller_keys[CK_COUNT] = {
    [CK_HOST] = {"host", false},  [CK_UDP_PORT] = {"udp_port", false}, [CK_TCP_PORT] = {"tcp_port", false},
    [CK_ROLES] = {"roles", true}, [CK_PROTOCOL] = {"protocol", false},
    [CK_HISTORY] = {"history", false}, [CK_HISTORY_MAX_AGE] = {"history_max_age", false},
    [CK_HISTORY_MAX_BYTES] = {"history_max_bytes", false},
    [CK_RECOVERY_THRESHOLD] = {"recovery_threshold", false},
};

enum {
	TK_OWNER,
	TK_TYPE,
	TK_USERS,
	TK_SETTABLE,
	TK_PULSE,
	TK_PULSE_MS,
	TK_MIN,
	TK_MAX,
	TK_ALLOWED,
	TK_INITIAL,
	TK_DRIVER,
	TK_HISTORY,
	TK_HISTORY_MAX_AGE,
	TK_HISTORY_MAX_BYTES,
	TK_GROUP,
	TK_COUNT
};

static const struct key_def thing_keys[TK_COUNT] = {
    [TK_OWNER] = {"owner", false},       [TK_TYPE] = {"type", false},     [TK_USERS] = {"users", true},
    [TK_SETTABLE] = {"settable", false}, [TK_PULSE] = {"pulse", false},   [TK_PULSE_MS] = {"pulse_ms", false},
    [TK_MIN] = {"min", false},           [TK_MAX] = {"max", false},       [TK_ALLOWED] = {"allowed", true},
    [TK_INITIAL] = {"initial", false},   [TK_DRIVER] = {"driver", false},
    [TK_HISTORY] = {"history", false},   [TK_HISTORY_MAX_AGE] = {"history_max_age", false},
    [TK_HISTORY_MAX_BYTES] = {"history_max_bytes", false},
    [TK_GROUP] = {"group", false},
};

/* What a message calls a section: `[site]`, `controller 'X'`, `thing 'x'`. */
static void section_label(const struct raw_section *s, char *out, size_t len)
{
	switch (s->kind) {
	case SECT_SITE:
		snprintf(out, len, "[site]");
		break;
	case SECT_CONTROLLER:
		snprintf(out, len, "controller '%.80s'", s->name);
		break;
	case SECT_THING:
		snprintf(out, len, "thing '%.80s'", s->name);
		break;
	}
}

/*
 * Matches each key of a section against its table: unknown keys, repeated
 * scalar keys and scalar values continued on an indented line are errors.
 * first[k] receives the first line of key k, NULL if absent.
 */
static void sort_keys(struct diag *d, struct raw_section *s, const char *label, const struct key_def *defs,
                      size_t n_defs, const struct raw_kv **first)
{
	for (size_t k = 0; k < n_defs; k++)
		first[k] = NULL;
	for (size_t i = 0; i < s->n_kv; i++) {
		struct raw_kv *kv = &s->kv[i];
		size_t k;

		for (k = 0; k < n_defs; k++)
			if (!strcmp(kv->key, defs[k].name))
				break;
		if (k == n_defs) {
			/* One report per unknown key, not one per line of it. */
			if (!kv->cont)
				diag_add(d, kv->line, "%s: unknown key '%s'", label, kv->key);
			continue;
		}
		if (!defs[k].list && kv->cont) {
			diag_add(d, kv->line, "%s: the value of '%s' continues on an indented line", label,
			         kv->key);
			continue;
		}
		if (!defs[k].list && first[k]) {
			diag_add(d, kv->line, "%s: duplicate key '%s' (first at line %d)", label, kv->key,
			         first[k]->line);
			continue;
		}
		kv->k = (int)k;
		if (!first[k])
			first[k] = kv;
	}
}

/* 1..63 characters of [A-Za-z0-9_.-]. */
static bool valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > SITE_NAME_MAX)
		return false;
	for (; *s; s++) {
		char c = *s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* An IPv4 or IPv6 literal, or a syntactically valid DNS host name. */
static bool valid_host(const char *h)
{
	unsigned char addr[16];
	size_t n = strlen(h), label = 0;
	bool numeric = true;

	if (inet_pton(AF_INET, h, addr) == 1 || inet_pton(AF_INET6, h, addr) == 1)
		return true;
	if (n < 1 || n > 253)
		return false;
	for (size_t i = 0; i <= n; i++) {
		char c = h[i];
		if (c == '.' || c == '\0') {
			if (label == 0 || label > 63 || h[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (label == 0 && c == '-')
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
			return false;
		if (!(c >= '0' && c <= '9'))
			numeric = false;
		label++;
	}
	/* All digits and dots but not an IPv4 address: a typo such as 192.168.1.300. */
	return !numeric;
}

/* Two hosts name the same address if their literals are equal or their names match. */
static bool same_host(const char *a, const char *b)
{
	unsigned char x[16], y[16];

	if (inet_pton(AF_INET, a, x) == 1)
		return inet_pton(AF_INET, b, y) == 1 && !memcmp(x, y, 4);
	if (inet_pton(AF_INET6, a, x) == 1)
		return inet_pton(AF_INET6, b, y) == 1 && !memcmp(x, y, 16);
	return strcasecmp(a, b) == 0;
}

static bool get_int(struct diag *d, const char *label, const struct raw_kv *kv, long long lo, long long hi,
                    long long *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(kv->value, &end, 10);
	if (!*kv->value || *end || errno == ERANGE) {
		diag_add(d, kv->line, "%s: %s = '%s' is not an integer", label, kv->key, kv->value);
		return false;
	}
	if (v < lo || v > hi) {
		diag_add(d, kv->line, "%s: %s = %lld is out of range %lld..%lld", label, kv->key, v, lo, hi);
		return false;
	}
	*out = v;
	return true;
}

static void get_u32(struct diag *d, const char *label, const struct raw_kv *kv, long long lo, long long hi,
                    uint32_t *out)
{
	long long v;

	if (kv && get_int(d, label, kv, lo, hi, &v))
		*out = (uint32_t)v;
}

static void get_bool(struct diag *d, const char *label, const struct raw_kv *kv, bool *out)
{
	tsync_value v;

	if (!kv)
		return;
	if (tsync_value_parse(TSYNC_TYPE_BOOL, kv->value, &v) < 0) {
		diag_add(d, kv->line,
		         "%s: %s = '%s' is not a boolean (use yes/no, true/false, on/off or 1/0)", label,
		         kv->key, kv->value);
		return;
	}
	*out = v.u.b;
}

/*
 * A number with a unit: `units` maps suffixes to multipliers, the first
 * being the unit of a bare number. Between 1 and `hi` (in the base unit).
 */
struct unit {
	const char *suffix;
	uint64_t mult;
};

static bool get_scaled(struct diag *d, const char *label, const struct raw_kv *kv, const struct unit *units,
                       size_t n_units, uint64_t hi, const char *expect, uint64_t *out)
{
	char *end;
	unsigned long long v;
	size_t u;

	errno = 0;
	v = strtoull(kv->value, &end, 10);
	if (end == kv->value || kv->value[0] == '-' || errno == ERANGE) {
		diag_add(d, kv->line, "%s: %s = '%s' is not %s", label, kv->key, kv->value, expect);
		return false;
	}
	for (u = 0; u < n_units; u++)
		if (!strcmp(end, units[u].suffix))
			break;
	if (u == n_units) {
		diag_add(d, kv->line, "%s: %s = '%s' is not %s", label, kv->key, kv->value, expect);
		return false;
	}
	if (v == 0 || v > hi / units[u].mult) {
		diag_add(d, kv->line, "%s: %s = '%s' is out of range (1 to %llu%s)", label, kv->key, kv->value,
		         (unsigned long long)(hi / units[n_units - 1].mult), units[n_units - 1].suffix);
		return false;
	}
	*out = v * units[u].mult;
	return true;
}

/* history_max_age: seconds, or with s, m, h, d; into milliseconds (at most ten years). */
static void get_age(struct diag *d, const char *label, const struct raw_kv *kv, uint64_t *ms)
{
	static const struct unit units[] = {{"", 1000},    {"s", 1000},       {"m", 60000},
	                                    {"h", 3600000}, {"d", 86400000}};

	if (kv)
		get_scaled(d, label, kv, units, ARRAY_SIZE(units), (uint64_t)3650 * 86400000,
		           "a duration (e.g. 3600, 90m, 12h, 7d)", ms);
}

/* history_max_bytes: bytes, or with K, M, G (binary); at least 4 KiB, at most 1 TiB. */
static void get_bytes(struct diag *d, const char *label, const struct raw_kv *kv, uint64_t *bytes)
{
	static const struct unit units[] = {{"", 1}, {"K", 1024}, {"M", 1048576}, {"G", 1073741824}};

	if (!kv)
		return;
	if (get_scaled(d, label, kv, units, ARRAY_SIZE(units), (uint64_t)1 << 40,
	               "a size (e.g. 65536, 512K, 16M, 1G)", bytes) &&
	    *bytes < 4096) {
		diag_add(d, kv->line, "%s: %s = '%s' is below 4096 bytes, less than one entry page", label,
		         kv->key, kv->value);
		*bytes = 0;
	}
}

/* One entry of a comma-separated list, with the line it is on. */
struct item {
	const char *s;
	size_t len;
	int line;
};

/*
 * Splits every line of list key k of a section into trimmed items. A comma
 * at the end of a line is allowed (the list may go on on the next line);
 * other empty entries are reported. *out is NULL if the list is empty.
 */
static int list_items(struct diag *d, const struct raw_section *s, int k, const char *label,
                      struct item **out, size_t *n_out)
{
	struct item *items = NULL;
	size_t n = 0, cap = 0;

	for (size_t i = 0; i < s->n_kv; i++) {
		const struct raw_kv *kv = &s->kv[i];
		const char *p = kv->value;

		if (kv->k != k)
			continue;
		for (;;) {
			const char *comma = strchr(p, ',');
			const char *b = p, *e = comma ? comma : p + strlen(p);

			while (b < e && is_space(*b))
				b++;
			while (e > b && is_space(e[-1]))
				e--;
			if (b == e) {
				/* Only the piece after the last comma may be empty. */
				if (comma)
					diag_add(d, kv->line, "%s: empty entry in '%s'", label, kv->key);
			} else {
				if (n == cap) {
					size_t c = cap ? cap * 2 : 8;
					struct item *v = realloc(items, c * sizeof(*v));
					if (!v) {
						free(items);
						return -ENOMEM;
					}
					items = v;
					cap = c;
				}
				items[n].s = b;
				items[n].len = (size_t)(e - b);
				items[n].line = kv->line;
				n++;
			}
			if (!comma)
				break;
			p = comma + 1;
		}
	}
	*out = items;
	*n_out = n;
	return 0;
}

static char *item_dup(const struct item *it)
{
	char *s = malloc(it->len + 1);

	if (s) {
		memcpy(s, it->s, it->len);
		s[it->len] = '\0';
	}
	return s;
}

/* Writes the reason a check failed into why (which may be NULL); returns TSYNC_EVALUE. */
static int refuse(char *why, size_t len, const char *fmt, ...) TSYNC_PRINTF(3, 4);

static int refuse(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (why && len) {
		va_start(ap, fmt);
		vsnprintf(why, len, fmt, ap);
		va_end(ap);
	}
	return TSYNC_EVALUE;
}

static bool parse_ll(const char *s, long long *out)
{
	char *end;

	errno = 0;
	*out = strtoll(s, &end, 10);
	return *s && !*end && errno != ERANGE;
}

/* The rules a receiving controller applies to a value of thing t (err_ip_in_val). */
static int check_value(const struct tsync_site *site, const struct site_thing *t, const tsync_value *v,
                       char *why, size_t len)
{
	double d;

	switch (t->type) {
	case TSYNC_TYPE_BOOL:
		if (v->type != TSYNC_TYPE_BOOL)
			return refuse(why, len, "a bool thing takes no %s value", tsync_type_name(v->type));
		return 0;
	case TSYNC_TYPE_STRING: {
		size_t n;
		if (v->type != TSYNC_TYPE_STRING || !v->u.s)
			return refuse(why, len, "a string thing takes no %s value", tsync_type_name(v->type));
		n = strlen(v->u.s);
		if (n > site->max_string)
			return refuse(why, len, "a string of %zu bytes is longer than max_string %u", n,
			              (unsigned)site->max_string);
		if (t->n_allowed == 0)
			return 0;
		for (size_t i = 0; i < t->n_allowed; i++)
			if (!strcmp(t->allowed[i], v->u.s))
				return 0;
		return refuse(why, len, "'%.64s' is not one of the allowed values", v->u.s);
	}
	case TSYNC_TYPE_INT:
		if (v->type != TSYNC_TYPE_INT)
			return refuse(why, len, "an int thing takes no %s value", tsync_type_name(v->type));
		d = (double)v->u.i;
		if (t->n_allowed > 0) {
			size_t i;
			for (i = 0; i < t->n_allowed; i++) {
				long long a;
				if (parse_ll(t->allowed[i], &a) && a == v->u.i)
					break;
			}
			if (i == t->n_allowed)
				return refuse(why, len, "%lld is not one of the allowed values",
				              (long long)v->u.i);
		}
		break;
	case TSYNC_TYPE_FLOAT:
		/* JSON does not tell 21 from 21.0; an integer is a fine temperature. */
		if (v->type == TSYNC_TYPE_INT)
			d = (double)v->u.i;
		else if (v->type == TSYNC_TYPE_FLOAT)
			d = v->u.f;
		else
			return refuse(why, len, "a float thing takes no %s value", tsync_type_name(v->type));
		if (!isfinite(d))
			return refuse(why, len, "%g is not a finite number", d);
		break;
	case TSYNC_TYPE_NONE:
	default:
		return refuse(why, len, "the thing has no type");
	}
	if (t->has_min && d < t->min)
		return refuse(why, len, "%.15g is below min %.15g", d, t->min);
	if (t->has_max && d > t->max)
		return refuse(why, len, "%.15g is above max %.15g", d, t->max);
	return 0;
}

static char *resolve_path(const char *site_path, const char *rel)
{
	const char *slash = strrchr(site_path, '/');
	size_t dir_len;
	char *s;

	if (rel[0] == '/' || !slash)
		return util__strdup(rel);
	dir_len = (size_t)(slash - site_path) + 1;
	s = malloc(dir_len + strlen(rel) + 1);
	if (s) {
		memcpy(s, site_path, dir_len);
		strcpy(s + dir_len, rel);
	}
	return s;
}

static int build_site_section(struct parse *p, struct tsync_site *site)
{
	struct raw_section *s = NULL;
	const struct raw_kv *kv[SK_COUNT];
	const char *label = "[site]";
	struct diag *d = &p->diag;

	site->retry_min_ms = SITE_DEFAULT_RETRY_MIN_MS;
	site->retry_initial_ms = SITE_DEFAULT_RETRY_INITIAL_MS;
	site->retry_max_ms = SITE_DEFAULT_RETRY_MAX_MS;
	site->max_datagram = SITE_DEFAULT_MAX_DATAGRAM;
	site->max_msgs = SITE_DEFAULT_MAX_MSGS;
	site->max_string = SITE_DEFAULT_MAX_STRING;
	site->max_outstanding = SITE_DEFAULT_MAX_OUTSTANDING;
	site->max_queued = SITE_DEFAULT_MAX_QUEUED;
	site->down_after_ms = SITE_DEFAULT_DOWN_AFTER_MS;
	site->state_commit_ms = SITE_DEFAULT_STATE_COMMIT_MS;
	site->heartbeat_ms = SITE_DEFAULT_HEARTBEAT_MS;
	site->cumul_days = SITE_DEFAULT_CUMUL_DAYS;
	site->forensic_days = SITE_DEFAULT_FORENSIC_DAYS;
	site->report_timeout_ms = SITE_DEFAULT_REPORT_TIMEOUT_MS;

	for (size_t i = 0; i < p->n_sec; i++) {
		if (p->sec[i].kind == SECT_SITE) {
			s = &p->sec[i];
			break;
		}
	}
	if (!s) {
		diag_add(d, 1, "missing [site] section (with at least 'name = ...')");
		return 0;
	}
	sort_keys(d, s, label, site_keys, SK_COUNT, kv);

	if (!kv[SK_NAME]) {
		diag_add(d, s->line, "[site]: missing required key 'name'");
	} else {
		if (!valid_name(kv[SK_NAME]->value))
			diag_add(d, kv[SK_NAME]->line,
			         "[site]: name '%s' must be 1..63 characters of A-Z a-z 0-9 _ . -",
			         kv[SK_NAME]->value);
		site->name = util__strdup(kv[SK_NAME]->value);
		if (!site->name)
			return -ENOMEM;
	}

	get_u32(d, label, kv[SK_RETRY_MIN_MS], 1, 60000, &site->retry_min_ms);
	get_u32(d, label, kv[SK_RETRY_INITIAL_MS], 1, 600000, &site->retry_initial_ms);
	get_u32(d, label, kv[SK_RETRY_MAX_MS], 1, 3600000, &site->retry_max_ms);
	get_u32(d, label, kv[SK_MAX_DATAGRAM], 256, 65507, &site->max_datagram);
	get_u32(d, label, kv[SK_MAX_MSGS], 1, 65535, &site->max_msgs);
	get_u32(d, label, kv[SK_MAX_STRING], 1, 65507, &site->max_string);
	get_u32(d, label, kv[SK_MAX_OUTSTANDING], 1, 1024, &site->max_outstanding);
	get_u32(d, label, kv[SK_MAX_QUEUED], 1, 1048576, &site->max_queued);
	get_u32(d, label, kv[SK_DOWN_AFTER_MS], 10, 3600000, &site->down_after_ms);
	get_u32(d, label, kv[SK_STATE_COMMIT_MS], 0, 600000, &site->state_commit_ms);
	get_u32(d, label, kv[SK_HEARTBEAT_MS], 0, 3600000, &site->heartbeat_ms);
	get_u32(d, label, kv[SK_CUMUL_DAYS], 1, SITE_MAX_CUMUL_DAYS, &site->cumul_days);
	get_u32(d, label, kv[SK_FORENSIC_DAYS], 1, SITE_MAX_FORENSIC_DAYS, &site->forensic_days);
	get_u32(d, label, kv[SK_REPORT_TIMEOUT_MS], 100, 3600000, &site->report_timeout_ms);
	if (kv[SK_REPORT_COMMAND]) {
		int r = site__split_command(kv[SK_REPORT_COMMAND]->value, &site->report_command);
		if (r == -ENOMEM)
			return r;
		if (r < 0)
			diag_add(d, kv[SK_REPORT_COMMAND]->line,
			         "[site]: report_command '%s': want an absolute program path, then its "
			         "arguments separated by spaces (no shell: no quotes, no variables)",
			         kv[SK_REPORT_COMMAND]->value);
	}
	if (kv[SK_TIMEZONE]) {
		char why[160];
		if (site__check_timezone(kv[SK_TIMEZONE]->value, why, sizeof(why)) < 0)
			diag_add(d, kv[SK_TIMEZONE]->line, "[site]: timezone '%s': %s", kv[SK_TIMEZONE]->value,
			         why);
		site->timezone = util__strdup(kv[SK_TIMEZONE]->value);
		if (!site->timezone)
			return -ENOMEM;
	}
	/* Below 10 ms a heartbeat would be a flood, not a sign of life; 0 is
	 * the way to say "none". */
	if (site->heartbeat_ms > 0 && site->heartbeat_ms < 10)
		diag_add(d, kv[SK_HEARTBEAT_MS]->line,
		         "[site]: heartbeat_ms (%u) must be 0 (off) or at least 10",
		         (unsigned)site->heartbeat_ms);

	/* The timers must nest: floor <= first guess <= ceiling. */
	if (site->retry_min_ms > site->retry_max_ms)
		diag_add(d, kv[SK_RETRY_MAX_MS] ? kv[SK_RETRY_MAX_MS]->line : s->line,
		         "[site]: retry_max_ms (%u) is below retry_min_ms (%u)", (unsigned)site->retry_max_ms,
		         (unsigned)site->retry_min_ms);
	else if (site->retry_initial_ms < site->retry_min_ms || site->retry_initial_ms > site->retry_max_ms)
		diag_add(
		    d, kv[SK_RETRY_INITIAL_MS] ? kv[SK_RETRY_INITIAL_MS]->line : s->line,
		    "[site]: retry_initial_ms (%u) must lie between retry_min_ms (%u) and retry_max_ms (%u)",
		    (unsigned)site->retry_initial_ms, (unsigned)site->retry_min_ms,
		    (unsigned)site->retry_max_ms);
	if (site->max_string >= site->max_datagram)
		diag_add(d, kv[SK_MAX_STRING] ? kv[SK_MAX_STRING]->line : s->line,
		         "[site]: max_string (%u) must be smaller than max_datagram (%u)",
		         (unsigned)site->max_string, (unsigned)site->max_datagram);

	if (kv[SK_KEY_FILE]) {
		char why[512];
		int line = kv[SK_KEY_FILE]->line;

		if (!*kv[SK_KEY_FILE]->value) {
			diag_key(d, line, "[site]: key_file is empty (remove the line for legacy mode)");
			return 0;
		}
		site->key_file = resolve_path(p->path, kv[SK_KEY_FILE]->value);
		if (!site->key_file)
			return -ENOMEM;
		if (site__read_key(site->key_file, site->key, why, sizeof(why)) < 0)
			diag_key(d, line, "[site]: key_file: %s", why);
		else
			site->has_key = true;
	}
	return 0;
}

static int build_controller(struct parse *p, struct tsync_site *site, struct raw_section *s)
{
	struct diag *d = &p->diag;
	const struct raw_kv *kv[CK_COUNT];
	struct site_controller *c = &site->controllers[site->n_controllers];
	uint32_t idx = (uint32_t)site->n_controllers;
	struct item *items = NULL;
	size_t n_items = 0;
	char label[128];
	int r;

	section_label(s, label, sizeof(label));
	memset(c, 0, sizeof(*c));
	c->line = s->line;
	c->name = util__strdup(s->name);
	if (!c->name)
		return -ENOMEM;
	/* From here on tsync_site_free() releases what c holds. */
	site->n_controllers++;

	if (!valid_name(s->name))
		diag_add(d, s->line, "%s: the name must be 1..63 characters of A-Z a-z 0-9 _ . -", label);
	r = name_index__put(&site->controller_ix, c->name, idx);
	if (r == -EEXIST) {
		uint32_t first = 0;
		name_index__get(&site->controller_ix, c->name, &first);
		diag_add(d, s->line, "duplicate controller '%s' (first at line %d)", c->name,
		         site->controllers[first].line);
	} else if (r < 0) {
		return r;
	}

	sort_keys(d, s, label, controller_keys, CK_COUNT, kv);

	if (!kv[CK_HOST]) {
		diag_add(d, s->line, "%s: missing required key 'host'", label);
	} else {
		if (!valid_host(kv[CK_HOST]->value))
			diag_add(d, kv[CK_HOST]->line,
			         "%s: host '%s' is neither an IP address nor a host name", label,
			         kv[CK_HOST]->value);
		c->host = util__strdup(kv[CK_HOST]->value);
		if (!c->host)
			return -ENOMEM;
	}
	if (!kv[CK_UDP_PORT]) {
		diag_add(d, s->line, "%s: missing required key 'udp_port'", label);
	} else {
		long long v;
		if (get_int(d, label, kv[CK_UDP_PORT], 1, 65535, &v))
			c->udp_port = (uint16_t)v;
	}
	if (kv[CK_TCP_PORT]) {
		long long v;
		if (get_int(d, label, kv[CK_TCP_PORT], 0, 65535, &v))
			c->tcp_port = (uint16_t)v;
	}
	if (kv[CK_PROTOCOL]) {
		const char *v = kv[CK_PROTOCOL]->value;
		if (!strcmp(v, "seed"))
			c->seed_protocol = true;
		else if (strcmp(v, "thingsync") != 0)
			diag_add(d, kv[CK_PROTOCOL]->line,
			         "%s: protocol '%s' is neither 'thingsync' nor 'seed'", label, v);
	}

	get_bool(d, label, kv[CK_HISTORY], &c->history);
	get_age(d, label, kv[CK_HISTORY_MAX_AGE], &c->history_max_age_ms);
	get_bytes(d, label, kv[CK_HISTORY_MAX_BYTES], &c->history_max_bytes);
	/* A bound of a history that is off would silently do nothing. */
	for (int k = CK_HISTORY_MAX_AGE; k <= CK_HISTORY_MAX_BYTES; k++)
		if (kv[k] && !c->history)
			diag_add(d, kv[k]->line, "%s: %s is set but the history is off (add 'history = yes')",
			         label, kv[k]->key);
	if (c->history && !c->history_max_bytes)
		c->history_max_bytes = SITE_DEFAULT_HISTORY_MAX_BYTES;

	r = list_items(d, s, CK_ROLES, label, &items, &n_items);
	if (r < 0)
		return r;
	if (n_items > 0) {
		c->roles = calloc(n_items, sizeof(*c->roles));
		if (!c->roles) {
			r = -ENOMEM;
			goto leave;
		}
	}
	for (size_t i = 0; i < n_items; i++) {
		char *role = item_dup(&items[i]);
		bool dup = false;

		if (!role) {
			r = -ENOMEM;
			goto leave;
		}
		for (size_t j = 0; j < c->n_roles; j++)
			dup = dup || !strcmp(c->roles[j], role);
		if (!valid_name(role))
			diag_add(d, items[i].line,
			         "%s: role '%s' must be 1..63 characters of A-Z a-z 0-9 _ . -", label, role);
		if (dup) {
			diag_add(d, items[i].line, "%s: role '%s' is listed twice", label, role);
			free(role);
			continue;
		}
		c->roles[c->n_roles++] = role;
	}
	/* The recovery role's: shorter outages are not recovered (thingsync-recoveryd). */
	c->recovery_threshold_ms = SITE_DEFAULT_RECOVERY_THRESHOLD_MS;
	if (kv[CK_RECOVERY_THRESHOLD]) {
		bool recovery = false;
		for (size_t j = 0; j < c->n_roles; j++)
			recovery = recovery || !strcmp(c->roles[j], "recovery");
		if (!recovery)
			diag_add(d, kv[CK_RECOVERY_THRESHOLD]->line,
			         "%s: recovery_threshold is set but the controller has no role 'recovery'", label);
		get_age(d, label, kv[CK_RECOVERY_THRESHOLD], &c->recovery_threshold_ms);
	}

	/* Two controllers on one address would receive each other's datagrams. */
	if (c->host && c->udp_port) {
		for (size_t j = 0; j < idx; j++) {
			const struct site_controller *o = &site->controllers[j];
			if (o->host && o->udp_port == c->udp_port && same_host(o->host, c->host)) {
				diag_add(d, kv[CK_UDP_PORT]->line,
				         "%s: %s udp_port %u is already used by controller '%s' (line %d)",
				         label, c->host, (unsigned)c->udp_port, o->name, o->line);
				break;
			}
		}
	}
	r = 0;
leave:
	free(items);
	return r;
}

/* "a bool", "an int": for messages. */
static const char *a_type(tsync_type t)
{
	switch (t) {
	case TSYNC_TYPE_BOOL:
		return "a bool";
	case TSYNC_TYPE_INT:
		return "an int";
	case TSYNC_TYPE_FLOAT:
		return "a float";
	case TSYNC_TYPE_STRING:
		return "a string";
	case TSYNC_TYPE_NONE:
		break;
	}
	return "an untyped";
}

static bool is_number_type(tsync_type t)
{
	return t == TSYNC_TYPE_INT || t == TSYNC_TYPE_FLOAT;
}

static void get_limit(struct diag *d, const char *label, const struct raw_kv *kv, struct site_thing *t,
                      bool *has, double *out)
{
	tsync_value v;

	if (!kv || t->type == TSYNC_TYPE_NONE)
		return;
	if (!is_number_type(t->type)) {
		diag_add(d, kv->line, "%s: %s is only allowed on int and float things, not on %s", label,
		         kv->key, a_type(t->type));
		return;
	}
	if (tsync_value_parse(t->type, kv->value, &v) < 0) {
		diag_add(d, kv->line, "%s: %s = '%s' is not %s", label, kv->key, kv->value, a_type(t->type));
		return;
	}
	*has = true;
	*out = t->type == TSYNC_TYPE_INT ? (double)v.u.i : v.u.f;
}

static int build_allowed(struct parse *p, struct tsync_site *site, struct raw_section *s, const char *label,
                         struct site_thing *t)
{
	struct diag *d = &p->diag;
	struct item *items = NULL;
	size_t n_items = 0;
	int r;

	r = list_items(d, s, TK_ALLOWED, label, &items, &n_items);
	if (r < 0 || n_items == 0)
		goto leave;
	if (t->type == TSYNC_TYPE_BOOL || t->type == TSYNC_TYPE_FLOAT) {
		diag_add(d, items[0].line, "%s: allowed is only for string and int things, not for %s", label,
		         a_type(t->type));
		goto leave;
	}
	t->allowed = calloc(n_items, sizeof(*t->allowed));
	if (!t->allowed) {
		r = -ENOMEM;
		goto leave;
	}
	for (size_t i = 0; i < n_items; i++) {
		char *a = item_dup(&items[i]);
		bool dup = false;
		long long iv;

		if (!a) {
			r = -ENOMEM;
			goto leave;
		}
		for (size_t j = 0; j < t->n_allowed; j++)
			dup = dup || !strcmp(t->allowed[j], a);
		if (dup) {
			diag_add(d, items[i].line, "%s: allowed value '%s' is listed twice", label, a);
			free(a);
			continue;
		}
		if (t->type == TSYNC_TYPE_INT) {
			if (!parse_ll(a, &iv))
				diag_add(d, items[i].line, "%s: allowed value '%s' is not an int", label, a);
			else if ((t->has_min && (double)iv < t->min) || (t->has_max && (double)iv > t->max))
				diag_add(d, items[i].line, "%s: allowed value %s is outside min..max", label,
				         a);
		} else if (t->type == TSYNC_TYPE_STRING && items[i].len > site->max_string) {
			diag_add(d, items[i].line,
			         "%s: allowed value '%.32s...' is longer than max_string %u", label, a,
			         (unsigned)site->max_string);
		}
		t->allowed[t->n_allowed++] = a;
	}
	r = 0;
leave:
	free(items);
	return r;
}

static int build_users(struct parse *p, struct tsync_site *site, struct raw_section *s, const char *label,
                       struct site_thing *t, bool owner_ok)
{
	struct diag *d = &p->diag;
	struct item *items = NULL;
	size_t n_items = 0;
	int r;

	r = list_items(d, s, TK_USERS, label, &items, &n_items);
	if (r < 0 || n_items == 0)
		goto leave;
	t->users = calloc(n_items, sizeof(*t->users));
	t->user_names = calloc(n_items, sizeof(*t->user_names));
	if (!t->users || !t->user_names) {
		r = -ENOMEM;
		goto leave;
	}
	for (size_t i = 0; i < n_items; i++) {
		char *name = item_dup(&items[i]);
		uint32_t c;
		bool dup = false;

		if (!name) {
			r = -ENOMEM;
			goto leave;
		}
		if (name_index__get(&site->controller_ix, name, &c) < 0) {
			diag_add(d, items[i].line, "%s: user '%s' is not a controller", label, name);
		} else if (owner_ok && c == t->owner) {
			diag_add(d, items[i].line, "%s: owner '%s' is also listed as a user", label, name);
		} else {
			for (size_t j = 0; j < t->n_users; j++)
				dup = dup || t->users[j] == c;
			if (dup) {
				diag_add(d, items[i].line, "%s: user '%s' is listed twice", label, name);
			} else {
				/* Borrowed from the controller: user_names needs no freeing of its own. */
				t->users[t->n_users] = c;
				t->user_names[t->n_users] = site->controllers[c].name;
				t->n_users++;
			}
		}
		free(name);
	}
	r = 0;
leave:
	free(items);
	return r;
}

static int build_thing(struct parse *p, struct tsync_site *site, struct raw_section *s)
{
	struct diag *d = &p->diag;
	const struct raw_kv *kv[TK_COUNT];
	struct site_thing *t = &site->things[site->n_things];
	uint32_t idx = (uint32_t)site->n_things;
	bool owner_ok = false;
	char label[128];
	int r;

	section_label(s, label, sizeof(label));
	memset(t, 0, sizeof(*t));
	t->line = s->line;
	t->settable = true;
	t->pulse_ms = SITE_DEFAULT_PULSE_MS;
	t->name = util__strdup(s->name);
	if (!t->name)
		return -ENOMEM;
	site->n_things++;

	if (!valid_name(s->name))
		diag_add(d, s->line, "%s: the name must be 1..63 characters of A-Z a-z 0-9 _ . -", label);
	r = name_index__put(&site->thing_ix, t->name, idx);
	if (r == -EEXIST) {
		uint32_t first = 0;
		name_index__get(&site->thing_ix, t->name, &first);
		diag_add(d, s->line, "duplicate thing '%s' (first at line %d)", t->name,
		         site->things[first].line);
	} else if (r < 0) {
		return r;
	}

	sort_keys(d, s, label, thing_keys, TK_COUNT, kv);

	if (!kv[TK_OWNER]) {
		diag_add(d, s->line, "%s: missing required key 'owner'", label);
	} else if (name_index__get(&site->controller_ix, kv[TK_OWNER]->value, &t->owner) < 0) {
		diag_add(d, kv[TK_OWNER]->line, "%s: owner '%s' is not a controller", label,
		         kv[TK_OWNER]->value);
	} else {
		owner_ok = true;
	}

	if (!kv[TK_TYPE]) {
		diag_add(d, s->line, "%s: missing required key 'type'", label);
	} else {
		static const tsync_type types[] = {TSYNC_TYPE_BOOL, TSYNC_TYPE_INT, TSYNC_TYPE_FLOAT,
		                                   TSYNC_TYPE_STRING};
		for (size_t i = 0; i < ARRAY_SIZE(types); i++)
			if (!strcmp(kv[TK_TYPE]->value, tsync_type_name(types[i])))
				t->type = types[i];
		if (t->type == TSYNC_TYPE_NONE)
			diag_add(d, kv[TK_TYPE]->line, "%s: type '%s' is not one of bool, int, float, string",
			         label, kv[TK_TYPE]->value);
	}

	r = build_users(p, site, s, label, t, owner_ok);
	if (r < 0)
		return r;

	get_bool(d, label, kv[TK_SETTABLE], &t->settable);
	get_bool(d, label, kv[TK_PULSE], &t->pulse);
	get_u32(d, label, kv[TK_PULSE_MS], 1, SITE_PULSE_MS_MAX, &t->pulse_ms);

	get_limit(d, label, kv[TK_MIN], t, &t->has_min, &t->min);
	get_limit(d, label, kv[TK_MAX], t, &t->has_max, &t->max);
	if (t->has_min && t->has_max && t->min > t->max)
		diag_add(d, kv[TK_MIN]->line, "%s: min (%s) is greater than max (%s)", label,
		         kv[TK_MIN]->value, kv[TK_MAX]->value);

	r = build_allowed(p, site, s, label, t);
	if (r < 0)
		return r;

	if (kv[TK_INITIAL] && t->type != TSYNC_TYPE_NONE) {
		const struct raw_kv *ini = kv[TK_INITIAL];
		tsync_value v;
		char why[160];

		if (tsync_value_parse(t->type, ini->value, &v) < 0) {
			diag_add(d, ini->line, "%s: initial = '%s' is not %s", label, ini->value,
			         a_type(t->type));
		} else if (check_value(site, t, &v, why, sizeof(why)) < 0) {
			diag_add(d, ini->line, "%s: initial = '%s': %s", label, ini->value, why);
		} else if (value__copy(&t->initial, &v) < 0) {
			return -ENOMEM;
		}
	}

	if (kv[TK_DRIVER]) {
		t->driver = util__strdup(kv[TK_DRIVER]->value);
		if (!t->driver)
			return -ENOMEM;
	}
	if (kv[TK_GROUP]) {
		if (!kv[TK_GROUP]->value[0] || strlen(kv[TK_GROUP]->value) > SITE_GROUP_MAX)
			diag_add(d, kv[TK_GROUP]->line, "%s: group must be 1..%d characters", label,
			         SITE_GROUP_MAX);
		t->group = util__strdup(kv[TK_GROUP]->value);
		if (!t->group)
			return -ENOMEM;
	}

	if (kv[TK_HISTORY]) {
		bool on = true;
		get_bool(d, label, kv[TK_HISTORY], &on);
		t->history_off = !on;
	}
	get_age(d, label, kv[TK_HISTORY_MAX_AGE], &t->history_max_age_ms);
	get_bytes(d, label, kv[TK_HISTORY_MAX_BYTES], &t->history_max_bytes);
	/* The history is its owner's: a thing's keys mean nothing without it. */
	for (int k = TK_HISTORY; k <= TK_HISTORY_MAX_BYTES; k++)
		if (kv[k] && owner_ok && !site->controllers[t->owner].history)
			diag_add(d, kv[k]->line, "%s: %s is set but its owner '%s' keeps no history (add "
			                         "'history = yes' to [controller %s])",
			         label, kv[k]->key, site->controllers[t->owner].name,
			         site->controllers[t->owner].name);
	if (t->history_off && (kv[TK_HISTORY_MAX_AGE] || kv[TK_HISTORY_MAX_BYTES]))
		diag_add(d, kv[TK_HISTORY]->line, "%s: history = no, yet it has history bounds", label);
	return 0;
}

static int build(struct parse *p, struct tsync_site *site)
{
	size_t n_ctrl = 0, n_things = 0;
	int r;

	for (size_t i = 0; i < p->n_sec; i++) {
		if (p->sec[i].kind == SECT_CONTROLLER)
			n_ctrl++;
		else if (p->sec[i].kind == SECT_THING)
			n_things++;
	}
	/* Indexes are uint32_t, and the API hands them out as int. */
	if (n_ctrl > INT_MAX || n_things > INT_MAX)
		return -EFBIG;

	r = build_site_section(p, site);
	if (r < 0)
		return r;

	if (n_ctrl == 0)
		diag_add(&p->diag, 1, "no [controller NAME] section: a site needs at least one controller");
	if (n_ctrl > 0) {
		site->controllers = calloc(n_ctrl, sizeof(*site->controllers));
		if (!site->controllers)
			return -ENOMEM;
	}
	if (n_things > 0) {
		site->things = calloc(n_things, sizeof(*site->things));
		if (!site->things)
			return -ENOMEM;
	}
	r = name_index__init(&site->controller_ix, n_ctrl);
	if (r == 0)
		r = name_index__init(&site->thing_ix, n_things);
	if (r < 0)
		return r;

	/* All controllers first: a thing may name an owner defined further down. */
	for (size_t i = 0; i < p->n_sec; i++) {
		if (p->sec[i].kind == SECT_CONTROLLER) {
			r = build_controller(p, site, &p->sec[i]);
			if (r < 0)
				return r;
		}
	}
	for (size_t i = 0; i < p->n_sec; i++) {
		if (p->sec[i].kind == SECT_THING) {
			r = build_thing(p, site, &p->sec[i]);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* ---- public API ---------------------------------------------------------- */

TSYNC_API int tsync_site_load(const char *path, tsync_site **ret, char **errors)
{
	struct parse p;
	struct tsync_site *site = NULL;
	int r;

	if (errors)
		*errors = NULL;
	if (!path || !ret)
		return -EINVAL;
	memset(&p, 0, sizeof(p));
	p.path = path;
	p.cur = -1;

	r = read_text(path, &p.text, &p.len);
	if (r < 0) {
		diag_add(&p.diag, 0, "cannot read: %s", strerror(-r));
		goto leave;
	}
	r = ini_parse_stream(reader, &p, handler, &p);
	if (r == -2 || p.diag.oom) {
		r = -ENOMEM;
		goto leave;
	}
	/* The reader has already described every line inih can refuse. */
	if (r > 0 && !diag_has_line(&p.diag, r))
		diag_add(&p.diag, r, "syntax error");

	site = calloc(1, sizeof(*site));
	if (!site) {
		r = -ENOMEM;
		goto leave;
	}
	site->path = util__strdup(path);
	if (!site->path) {
		r = -ENOMEM;
		goto leave;
	}
	r = build(&p, site);
	if (r < 0)
		goto leave;
	if (p.diag.oom)
		r = -ENOMEM;
	else if (p.diag.site_err)
		r = TSYNC_ESITE;
	else if (p.diag.key_err)
		r = TSYNC_EKEY;
	else
		r = 0;
leave:
	if (r == 0) {
		*ret = site;
		site = NULL;
	} else if (errors && p.diag.n > 0 && !p.diag.oom) {
		*errors = diag_text(&p.diag, path);
	}
	tsync_site_free(site);
	parse_free(&p);
	return r;
}

TSYNC_API void tsync_site_free(tsync_site *site)
{
	if (!site)
		return;
	for (size_t i = 0; i < site->n_controllers; i++) {
		struct site_controller *c = &site->controllers[i];
		free(c->name);
		free(c->host);
		for (size_t j = 0; j < c->n_roles; j++)
			free(c->roles[j]);
		free(c->roles);
	}
	free(site->controllers);
	for (size_t i = 0; i < site->n_things; i++) {
		struct site_thing *t = &site->things[i];
		free(t->name);
		free(t->users);
		/* The names themselves belong to the controllers. */
		free(t->user_names);
		for (size_t j = 0; j < t->n_allowed; j++)
			free(t->allowed[j]);
		free(t->allowed);
		free(t->driver);
		free(t->group);
		value__clear(&t->initial);
	}
	free(site->things);
	name_index__free(&site->controller_ix);
	name_index__free(&site->thing_ix);
	sodium_memzero(site->key, sizeof(site->key));
	free(site->path);
	free(site->name);
	free(site->key_file);
	free(site->timezone);
	for (size_t i = 0; site->report_command && site->report_command[i]; i++)
		free(site->report_command[i]);
	free(site->report_command);
	free(site);
}

TSYNC_API const char *tsync_site_name(const tsync_site *site)
{
	return site ? site->name : NULL;
}

TSYNC_API const char *tsync_site_path(const tsync_site *site)
{
	return site ? site->path : NULL;
}

TSYNC_API bool tsync_site_has_key(const tsync_site *site)
{
	return site && site->has_key;
}

TSYNC_API size_t tsync_site_controller_count(const tsync_site *site)
{
	return site ? site->n_controllers : 0;
}

TSYNC_API size_t tsync_site_thing_count(const tsync_site *site)
{
	return site ? site->n_things : 0;
}

TSYNC_API int tsync_site_controller(const tsync_site *site, size_t idx, tsync_controller_info *out)
{
	const struct site_controller *c;

	if (!site || !out)
		return -EINVAL;
	if (idx >= site->n_controllers)
		return -ERANGE;
	c = &site->controllers[idx];
	memset(out, 0, sizeof(*out));
	out->name = c->name;
	out->host = c->host;
	out->udp_port = c->udp_port;
	out->tcp_port = c->tcp_port;
	out->n_roles = c->n_roles;
	out->roles = (const char *const *)c->roles;
	out->seed_protocol = c->seed_protocol;
	out->line = c->line;
	return 0;
}

TSYNC_API int tsync_site_controller_find(const tsync_site *site, const char *name)
{
	uint32_t idx;

	if (!site || !name || name_index__get(&site->controller_ix, name, &idx) < 0)
		return TSYNC_EUNKNOWN_CTRL;
	return (int)idx;
}

TSYNC_API int tsync_site_thing(const tsync_site *site, size_t idx, tsync_thing_info *out)
{
	const struct site_thing *t;

	if (!site || !out)
		return -EINVAL;
	if (idx >= site->n_things)
		return -ERANGE;
	t = &site->things[idx];
	memset(out, 0, sizeof(*out));
	out->name = t->name;
	out->owner = site->controllers[t->owner].name;
	out->type = t->type;
	out->n_users = t->n_users;
	out->users = (const char *const *)t->user_names;
	out->settable = t->settable;
	out->pulse = t->pulse;
	out->pulse_ms = t->pulse_ms;
	out->has_min = t->has_min;
	out->has_max = t->has_max;
	out->min = t->min;
	out->max = t->max;
	out->n_allowed = t->n_allowed;
	out->allowed = (const char *const *)t->allowed;
	out->driver = t->driver;
	out->initial = t->initial;
	out->line = t->line;
	out->group = t->group;
	return 0;
}

TSYNC_API int tsync_site_thing_find(const tsync_site *site, const char *name)
{
	uint32_t idx;

	if (!site || !name || name_index__get(&site->thing_ix, name, &idx) < 0)
		return TSYNC_EUNKNOWN_THING;
	return (int)idx;
}

TSYNC_API int tsync_site_check_value(const tsync_site *site, const char *thing, const tsync_value *v)
{
	uint32_t idx;

	if (!site || !thing || name_index__get(&site->thing_ix, thing, &idx) < 0)
		return TSYNC_EUNKNOWN_THING;
	if (!v)
		return TSYNC_EVALUE;
	return check_value(site, &site->things[idx], v, NULL, 0);
}

int site__check_value(const struct tsync_site *site, uint32_t thing, const tsync_value *v)
{
	return check_value(site, &site->things[thing], v, NULL, 0);
}

bool site__has_role(const struct tsync_site *site, uint32_t ctrl, const char *role)
{
	const struct site_controller *c;

	if (!site || !role || ctrl >= site->n_controllers)
		return false;
	c = &site->controllers[ctrl];
	for (size_t i = 0; i < c->n_roles; i++)
		if (!strcmp(c->roles[i], role))
			return true;
	return false;
}

/* A zone is checked against the tz database the C library will read, so a
 * typo fails at load time with its line instead of silently giving UTC
 * days (glibc falls back to UTC for an unknown TZ without a word). */
int site__split_command(const char *text, char ***argv)
{
	char **v = NULL;
	size_t n = 0;
	const char *p = text;

	*argv = NULL;
	/* Words split on blanks and nothing else: the command runs without a
	 * shell, so a quote or a $ in it would be a surprise, not a feature. */
	if (!text || text[0] != '/' || strpbrk(text, "\"'`$\\;|&<>"))
		return -EINVAL;
	while (*p) {
		const char *w;
		char **nv;
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		w = p;
		while (*p && *p != ' ' && *p != '\t')
			p++;
		nv = realloc(v, (n + 2) * sizeof(*v));
		if (!nv)
			goto nomem;
		v = nv;
		v[n] = malloc((size_t)(p - w) + 1);
		if (!v[n])
			goto nomem;
		memcpy(v[n], w, (size_t)(p - w));
		v[n][p - w] = '\0';
		v[++n] = NULL;
	}
	*argv = v;
	return 0;
nomem:
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
	return -ENOMEM;
}

int site__check_timezone(const char *tz, char *why, size_t len)
{
	const char *dir = getenv("TZDIR");
	char path[PATH_MAX], magic[4];
	FILE *f;
	size_t n;

	if (!tz || !*tz || strlen(tz) > 64) {
		snprintf(why, len, "must be 1..64 characters, an IANA zone name such as Europe/Berlin");
		return -EINVAL;
	}
	if (tz[0] == '/' || strstr(tz, "..")) {
		snprintf(why, len, "must be a zone name such as Europe/Berlin, not a path");
		return -EINVAL;
	}
	for (const char *c = tz; *c; c++)
		if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
		      strchr("/_+-", *c))) {
			snprintf(why, len, "must be a zone name such as Europe/Berlin");
			return -EINVAL;
		}
	snprintf(path, sizeof(path), "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", tz);
	f = fopen(path, "rbe");
	if (!f) {
		snprintf(why, len, "no such zone in %s (is tzdata installed?)",
		         dir && *dir ? dir : "/usr/share/zoneinfo");
		return -ENOENT;
	}
	n = fread(magic, 1, sizeof(magic), f);
	fclose(f);
	if (n != sizeof(magic) || memcmp(magic, "TZif", 4)) {
		snprintf(why, len, "%s is not a tz database file", path);
		return -EINVAL;
	}
	return 0;
}
