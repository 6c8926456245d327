/*
 * lib/wire: the datagram reader. It checks the size, the tag and the
 * envelope, which decide the fate of the whole datagram, then the shape of
 * each message, which decides only that message's.
 *
 * The JSON is read by a parser of its own, in one pass and without
 * allocating: the datagram is copied into the decoder's buffer, strings are
 * unescaped in place (an unescaped string is never longer than its escaped
 * form, so its NUL fits where its closing quote was), and the members the
 * wire knows are picked out as they go by. It accepts exactly what jansson's
 * json_loadb(JSON_REJECT_DUPLICATES) accepts — strict JSON, UTF-8 checked, no
 * \u0000, no unpaired surrogate, integers within int64, no real that
 * overflows, no duplicate key in any object, at most 2048 levels, the root an
 * object or an array — down to jansson's one quirk (a NUL byte right after a
 * number or a literal is skipped): test/fuzz/fuzz_wire_diff.c runs it against
 * the jansson decoder this one replaced (test/fuzz/wire_ref.c) and checks the
 * same verdict and the same fields on every input.
 *
 * jansson still reads the messages that are not io (cmd, cum, clim and every
 * other type, the generic requests): their handlers want the whole object,
 * which is parsed once more, from the original bytes, into m->obj. Those are
 * rare and off the hot path; io messages never allocate.
 * SPDX-License-Identifier: MIT
 */
#include <endian.h>
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "wire/wire.h"

#define DEPTH_MAX 2048 /* jansson's JSON_PARSER_MAX_DEPTH */

struct dkey {
	const char *s;
	uint32_t n;
	uint32_t h;
};

struct wire_decoder {
	const struct wire_codec *codec;
	char *text; /* the datagram's JSON, NUL-terminated; strings unescaped in place */
	size_t text_cap;
	struct wire_msg *msgs;
	uint32_t (*span)[2]; /* each message's object in the text: start, end */
	size_t msgs_cap;
	struct dkey *keys; /* the keys of the objects being read, innermost last */
	size_t keys_cap;
	/* The keys of objects with many (over SMALL_OBJECT), hashed: finding a
	 * duplicate stays linear in the keys, as in jansson's hash table, not
	 * quadratic. A slot is empty unless its gen is this decode's. */
	struct kslot {
		uint32_t gen, idx;
	} * table;
	size_t table_mask;
	uint32_t gen;
	/* Where a key goes in the table: SipHash under a key of the decoder's
	 * own, so that no sender can choose keys that all collide. */
	uint8_t sipkey[crypto_shorthash_KEYBYTES];
	/* The text and value of the last "boot" and "to_boot" of 9 to 16
	 * digits (a boot is microseconds: 16), which repeat from datagram
	 * to datagram: compared, not read again (boot_int()). */
	struct boot_seen {
		uint64_t head, tail; /* the first 8 and the last 8 digits */
		uint64_t v;
		size_t n; /* digits; 0: none yet */
	} boots[2];
};

#define SMALL_OBJECT 8 /* keys an object has before they are hashed */

enum jkind { JK_NONE = 0, JK_STR, JK_INT, JK_REAL, JK_TRUE, JK_FALSE, JK_NULL, JK_OBJ, JK_ARR };

struct jv {
	enum jkind k;
	uint32_t n; /* string bytes */
	const char *s;
	int64_t i;
	double f;
};

/* The members of an envelope and of a message that the wire reads. */
enum { E_V, E_FROM, E_BOOT, E_SEQ, E_TO_BOOT, E_RE, E_DW, E_MSGS, E_ACK, E_N };
enum { M_TYPE, M_CMD, M_IO, M_ROLE, M_FLD, M_VAL, M_VER, M_ID, M_RE, M_OB, M_MS, M_ERR, M_N };

struct parser {
	struct wire_decoder *d;
	char *p, *end;
	size_t nkeys;
	size_t n_msgs; /* messages seen, including those over msgs_cap */
	/* The envelope's "ack", as read: its integers, and whether any
	 * element was not one >= 1 or there were too many (then the envelope
	 * is refused, after the whole datagram parsed as JSON). */
	uint64_t ack[2 * WIRE_ACK_RANGES];
	size_t n_ack;
	bool ack_bad;
};

/* What a value is to the envelope: its "msgs" (read as messages if a
 * list), its "ack" (a list whose integers are kept), or anything else. */
enum vmode { V_ANY, V_MSGS, V_ACK };

static int parse_value(struct parser *P, int depth, struct jv *v, enum vmode mode);

static void skip_ws(struct parser *P)
{
	while (*P->p == ' ' || *P->p == '\t' || *P->p == '\n' || *P->p == '\r')
		P->p++;
}

/* jansson puts back the byte that ends a number or a literal; a NUL put back
 * is lost (its stream takes a NUL for "nothing buffered"), so one NUL right
 * there is skipped. Kept so that both accept the same datagrams. */
static void skip_quirk(struct parser *P)
{
	if (P->p < P->end && *P->p == '\0')
		P->p++;
}

/* The code unit of \uXXXX at s (s at the 'u'), or -1. The text is
 * NUL-terminated, so a short escape stops at a non-hex byte. */
static int32_t u_escape(const char *s)
{
	int32_t v = 0;

	for (int i = 1; i <= 4; i++) {
		int h = hex__digit(s[i]);
		if (h < 0)
			return -1;
		v = v << 4 | h;
	}
	return v;
}

static char *put_utf8(char *w, uint32_t cp)
{
	if (cp < 0x80) {
		*w++ = (char)cp;
	} else if (cp < 0x800) {
		*w++ = (char)(0xc0 | cp >> 6);
		*w++ = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		*w++ = (char)(0xe0 | cp >> 12);
		*w++ = (char)(0x80 | (cp >> 6 & 0x3f));
		*w++ = (char)(0x80 | (cp & 0x3f));
	} else {
		*w++ = (char)(0xf0 | cp >> 18);
		*w++ = (char)(0x80 | (cp >> 12 & 0x3f));
		*w++ = (char)(0x80 | (cp >> 6 & 0x3f));
		*w++ = (char)(0x80 | (cp & 0x3f));
	}
	return w;
}

/* A string at P->p (its opening quote), unescaped in place and
 * NUL-terminated. */
static int parse_string(struct parser *P, const char **out, uint32_t *outn)
{
	char *r = P->p + 1, *w = r;
	const char *start = w;

	/* Most strings are plain ASCII: they stay where they are, and only
	 * their closing quote becomes the NUL. */
	/* The text ends with a NUL, which stops this loop as any control
	 * byte does: no bound check needed per byte. */
	while ((unsigned char)*r >= 0x20 && (unsigned char)*r < 0x80 && *r != '"' && *r != '\\')
		r++;
	if (r < P->end && *r == '"') {
		*r = '\0';
		P->p = r + 1;
		*out = start;
		*outn = (uint32_t)(r - start);
		return 0;
	}
	w = r; /* the plain part is in place; the rest is copied down */
	for (;;) {
		unsigned char ch = (unsigned char)*r;

		if (r >= P->end || ch < 0x20)
			return -1;
		if (ch == '"')
			break;
		if (ch >= 0x80) {
			size_t n = wire__utf8_seq((const unsigned char *)r);
			if (!n)
				return -1;
			memmove(w, r, n);
			w += n;
			r += n;
		} else if (ch != '\\') {
			*w++ = *r++;
		} else {
			int32_t cp, lo;
			r++;
			switch (*r) {
			case '"':
			case '\\':
			case '/':
				*w++ = *r;
				break;
			case 'b':
				*w++ = '\b';
				break;
			case 'f':
				*w++ = '\f';
				break;
			case 'n':
				*w++ = '\n';
				break;
			case 'r':
				*w++ = '\r';
				break;
			case 't':
				*w++ = '\t';
				break;
			case 'u':
				cp = u_escape(r);
				if (cp < 0)
					return -1;
				r += 4;
				if (cp >= 0xd800 && cp <= 0xdbff) {
					if (r[1] != '\\' || r[2] != 'u')
						return -1;
					lo = u_escape(r + 2);
					if (lo < 0xdc00 || lo > 0xdfff)
						return -1;
					cp = ((cp - 0xd800) << 10) + (lo - 0xdc00) + 0x10000;
					r += 6;
				} else if ((cp >= 0xdc00 && cp <= 0xdfff) || cp == 0) {
					return -1; /* unpaired low surrogate; \u0000 */
				}
				w = put_utf8(w, (uint32_t)cp);
				break;
			default:
				return -1;
			}
			r++;
		}
	}
	P->p = r + 1;
	*w = '\0'; /* at most where the closing quote was */
	*out = start;
	*outn = (uint32_t)(w - start);
	return 0;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int parse_number(struct parser *P, struct jv *v)
{
	char *s = P->p, *q = s, *e;
	bool neg = *q == '-';

	if (neg)
		q++;
	if (*q == '0') {
		q++;
		if (is_digit(*q))
			return -1;
	} else if (is_digit(*q)) {
		while (is_digit(*q))
			q++;
	} else {
		return -1;
	}
	if (*q != '.' && *q != 'e' && *q != 'E') {
		/* An integer: within int64, as strtoll would have it. */
		uint64_t acc;
		if (!util__digits_value(neg ? s + 1 : s, q, neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &acc))
			return -1;
		v->k = JK_INT;
		v->i = neg ? (int64_t)(0 - acc) : (int64_t)acc;
		P->p = q;
		skip_quirk(P);
		return 0;
	}
	if (*q == '.') {
		q++;
		if (!is_digit(*q))
			return -1;
		while (is_digit(*q))
			q++;
	}
	if (*q == 'e' || *q == 'E') {
		q++;
		if (*q == '+' || *q == '-')
			q++;
		if (!is_digit(*q))
			return -1;
		while (is_digit(*q))
			q++;
	}
	{
		/* As jansson: strtod with the locale's decimal point in place of
		 * the '.'; a real that overflows is refused, one that underflows
		 * is not. The byte at q ends strtod's number: it is no digit,
		 * '.', 'e' or sign that could continue it. */
		const char *point = localeconv()->decimal_point;
		char saved = *q;
		if (*point != '.') {
			char *dot = memchr(s, '.', (size_t)(q - s));
			if (dot)
				*dot = *point;
		}
		*q = '\0';
		errno = 0;
		v->f = strtod(s, &e);
		*q = saved;
		if (e != q || ((v->f == HUGE_VAL || v->f == -HUGE_VAL) && errno == ERANGE))
			return -1;
	}
	v->k = JK_REAL;
	P->p = q;
	skip_quirk(P);
	return 0;
}

static int parse_literal(struct parser *P, struct jv *v)
{
	static const struct {
		const char *s;
		size_t n;
		enum jkind k;
	} lits[] = {{"true", 4, JK_TRUE}, {"false", 5, JK_FALSE}, {"null", 4, JK_NULL}};

	for (size_t i = 0; i < ARRAY_SIZE(lits); i++) {
		if ((size_t)(P->end - P->p) < lits[i].n || memcmp(P->p, lits[i].s, lits[i].n) != 0)
			continue;
		if (is_alpha(P->p[lits[i].n])) /* jansson reads the whole word */
			return -1;
		P->p += lits[i].n;
		v->k = lits[i].k;
		skip_quirk(P);
		return 0;
	}
	return -1;
}

/* After a member or an element: 1 if a ',' follows (skipped, with the
 * space after it), 0 if the closing byte does (skipped), -1 otherwise. */
static int next_or_close(struct parser *P, char close)
{
	skip_ws(P);
	if (P->p < P->end && *P->p == ',') {
		P->p++;
		skip_ws(P);
		return 1;
	}
	if (P->p < P->end && *P->p == close) {
		P->p++;
		return 0;
	}
	return -1;
}

/* An opening '[' or '{' at P->p: skipped with the space after it; 1 if the
 * closing byte follows at once (skipped too), else 0. */
static int open_empty(struct parser *P, char close)
{
	P->p++;
	skip_ws(P);
	if (P->p < P->end && *P->p == close) {
		P->p++;
		return 1;
	}
	return 0;
}

static uint32_t hash_of(const char *s, uint32_t n)
{
	uint32_t h = 2166136261u;

	for (uint32_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	return h;
}

struct name {
	const char *s;
	uint32_t n;
};
#define NAME(lit)                                                                                            \
	{                                                                                                    \
		lit, sizeof(lit) - 1                                                                         \
	}

/* Which of names[] the key is, or -1. The writer writes them in order:
 * names[*next] (the one after the last found) is tried first. */
static int field_of(const struct name *names, int n_names, const char *s, uint32_t n, int *next)
{
	int h = *next;

	if (n == 0 || n > 7) /* the longest name the wire reads: "to_boot" */
		return -1;
	if (h < n_names && names[h].n == n && memcmp(names[h].s, s, n) == 0) {
		*next = h + 1;
		return h;
	}
	for (int i = 0; i < n_names; i++)
		if (names[i].n == n && names[i].s[0] == s[0] &&
		    (n == 1 || memcmp(names[i].s + 1, s + 1, n - 1) == 0)) {
			*next = i + 1;
			return i;
		}
	return -1;
}

static const struct name env_names[E_N] = {NAME("v"),  NAME("from"), NAME("boot"), NAME("seq"), NAME("to_boot"),
                                           NAME("re"), NAME("dw"),   NAME("msgs"), NAME("ack")};
static const struct name msg_names[M_N] = {NAME("type"), NAME("cmd"), NAME("io"),  NAME("role"),
                                           NAME("fld"),  NAME("val"), NAME("ver"), NAME("id"),
                                           NAME("re"),   NAME("ob"),  NAME("ms"),  NAME("err")};

static size_t table_slot(const struct wire_decoder *d, const char *s, uint32_t n)
{
	uint8_t h[crypto_shorthash_BYTES];
	uint64_t v;

	crypto_shorthash(h, (const unsigned char *)s, n, d->sipkey);
	memcpy(&v, h, sizeof(v));
	return (size_t)v & d->table_mask;
}

/* Whether the object whose keys are keys[base..end) has key s. Slots of
 * closed objects may point anywhere: only an index in the range, and equal
 * bytes, count. */
static bool table_has(const struct wire_decoder *d, size_t base, size_t end, const char *s, uint32_t n,
                      uint32_t h)
{
	for (size_t i = table_slot(d, s, n); d->table[i].gen == d->gen; i = (i + 1) & d->table_mask) {
		size_t k = d->table[i].idx;
		if (k >= base && k < end && d->keys[k].h == h && d->keys[k].n == n &&
		    memcmp(d->keys[k].s, s, n) == 0)
			return true;
	}
	return false;
}

/* There is always an empty slot: the table has twice the slots of keys a
 * datagram can hold, and each key goes in once. */
static void table_add(struct wire_decoder *d, size_t k)
{
	size_t i = table_slot(d, d->keys[k].s, d->keys[k].n);

	while (d->table[i].gen == d->gen)
		i = (i + 1) & d->table_mask;
	d->table[i] = (struct kslot){d->gen, (uint32_t)k};
}

/* A key that is none of the names read: -1 if the object (its keys above
 * `base`) has it already, else it goes on the stack. */
static int push_key(struct parser *P, size_t base, const char *ks, uint32_t kn)
{
	struct wire_decoder *d = P->d;
	uint32_t h = hash_of(ks, kn);

	if (P->nkeys >= d->keys_cap)
		return -1; /* cannot happen: keys_cap is over a third of the text */
	if (P->nkeys - base < SMALL_OBJECT) {
		for (size_t i = base; i < P->nkeys; i++)
			if (d->keys[i].h == h && d->keys[i].n == kn && memcmp(d->keys[i].s, ks, kn) == 0)
				return -1;
	} else {
		if (P->nkeys - base == SMALL_OBJECT) /* from now on, hashed */
			for (size_t i = base; i < P->nkeys; i++)
				table_add(d, i);
		if (table_has(d, base, P->nkeys, ks, kn, h))
			return -1;
	}
	d->keys[P->nkeys] = (struct dkey){ks, kn, h};
	if (P->nkeys - base >= SMALL_OBJECT)
		table_add(d, P->nkeys);
	P->nkeys++;
	return 0;
}

/*
 * An object at P->p. With names, the values of those members are kept in
 * vals[]; env says it is the envelope, whose "msgs" holds the messages.
 * Keys are checked for duplicates against this object's keys only: a key
 * that is one of names[] by a bit per name (no other key can equal it), any
 * other against the stack above `base`, by hash first, then by bytes.
 */
static int parse_object(struct parser *P, int depth, const struct name *names, int n_names, struct jv *vals,
                        bool env)
{
	size_t base = P->nkeys;
	struct jv scratch;
	uint32_t seen = 0; /* the names[] met so far */
	int next = 0;      /* the name expected next (field_of()) */

	if (open_empty(P, '}'))
		return 0;
	for (;;) {
		const char *ks;
		uint32_t kn;
		int f, r;

		if (*P->p != '"' || P->p >= P->end || parse_string(P, &ks, &kn) < 0)
			return -1;
		f = names ? field_of(names, n_names, ks, kn, &next) : -1;
		if (f >= 0) {
			if (seen & (1u << f))
				return -1;
			seen |= 1u << f;
		} else if (push_key(P, base, ks, kn) < 0) {
			return -1;
		}
		skip_ws(P);
		if (*P->p != ':')
			return -1;
		P->p++;
		skip_ws(P);
		memset(&scratch, 0, sizeof(scratch));
		if (parse_value(P, depth + 1, f >= 0 ? &vals[f] : &scratch,
		                !env ? V_ANY : f == E_MSGS ? V_MSGS : f == E_ACK ? V_ACK : V_ANY) < 0)
			return -1;
		r = next_or_close(P, '}');
		if (r < 0)
			return -1;
		if (r == 0)
			break;
	}
	P->nkeys = base;
	return 0;
}

/* Keeps the first reason a message is bad: it is the one reported. */
static void mark_bad(struct wire_msg *m, tsync_reject reason)
{
	if (m->bad)
		return;
	m->bad = true;
	m->reject = reason;
}

/* A name: a non-empty string of at most WIRE_NAME_MAX bytes. */
static const char *get_name(const struct jv *v)
{
	return v->k == JK_STR && v->n > 0 && v->n <= WIRE_NAME_MAX ? v->s : NULL;
}

/* An optional integer >= min: 1 if present, 0 if absent, -1 if malformed. */
static int get_uint(const struct jv *v, int64_t min, uint64_t *out)
{
	if (v->k == JK_NONE)
		return 0;
	if (v->k != JK_INT || v->i < min)
		return -1;
	*out = (uint64_t)v->i;
	return 1;
}

static enum wire_op op_from_name(const char *s)
{
	static const enum wire_op ops[] = {WIRE_OP_SET, WIRE_OP_REPLY, WIRE_OP_ASK, WIRE_OP_PULSE,
	                                   WIRE_OP_REPLY_PULSE};

	for (size_t i = 0; s && i < ARRAY_SIZE(ops); i++)
		if (strcmp(s, wire__op_name(ops[i])) == 0)
			return ops[i];
	return WIRE_OP_NONE;
}

static enum wire_type type_from_name(const char *s)
{
	if (strcmp(s, "io") == 0)
		return WIRE_T_IO;
	if (strcmp(s, "cmd") == 0)
		return WIRE_T_CMD;
	if (strcmp(s, "cum") == 0)
		return WIRE_T_CUM;
	if (strcmp(s, "clim") == 0)
		return WIRE_T_CLIM;
	return WIRE_T_OTHER;
}

static void decode_val(const struct wire_codec *c, const struct jv *v, struct wire_msg *m)
{
	switch (v->k) {
	case JK_TRUE:
	case JK_FALSE:
		m->val = tsync_bool(v->k == JK_TRUE);
		break;
	case JK_INT:
		m->val = tsync_int(v->i);
		break;
	case JK_REAL:
		m->val = tsync_float(v->f);
		break;
	case JK_STR:
		if (v->n > c->max_string) {
			mark_bad(m, TSYNC_REJ_OVERSIZE);
			return;
		}
		m->val = tsync_string(v->s);
		break;
	case JK_NONE:
	case JK_NULL: /* handled by the caller: no value */
	case JK_ARR:
	case JK_OBJ:
		mark_bad(m, TSYNC_REJ_VAL);
		return;
	}
	m->has_val = true;
}

/*
 * The members of one message object. Every field is read even after one is
 * found bad, so that whoever answers a bad request still has its "id" and
 * names to answer with.
 */
static void decode_msg(const struct wire_codec *c, const struct jv *f, struct wire_msg *m)
{
	const char *s;
	uint64_t ms = 0;
	int r;

	m->type = WIRE_T_OTHER;
	m->type_name = get_name(&f[M_TYPE]);
	if (!m->type_name)
		mark_bad(m, TSYNC_REJ_REQ);
	else
		m->type = type_from_name(m->type_name);

	switch (m->type) {
	case WIRE_T_IO:
		s = f[M_CMD].k == JK_STR ? f[M_CMD].s : NULL;
		m->op = op_from_name(s);
		if (m->op == WIRE_OP_NONE)
			mark_bad(m, TSYNC_REJ_REQ);
		m->io = get_name(&f[M_IO]);
		if (!m->io)
			mark_bad(m, TSYNC_REJ_IO);
		break;
	case WIRE_T_CMD:
		m->role = get_name(&f[M_ROLE]);
		m->cmd = get_name(&f[M_CMD]);
		if (!m->role || !m->cmd)
			mark_bad(m, TSYNC_REJ_CMD);
		break;
	case WIRE_T_CUM:
		/* The seed names the thing of a cumulative upload "fld". */
		if (f[M_FLD].k != JK_NONE) {
			m->io = get_name(&f[M_FLD]);
			if (!m->io)
				mark_bad(m, TSYNC_REJ_IO);
		}
		break;
	case WIRE_T_CLIM:
	case WIRE_T_OTHER:
		break;
	}

	/* A seed controller is Python: it sends "val": None, that is null,
	 * where it has no value (an ask, a reply before the first reading).
	 * null is no value, as if val were absent, not a bad one; a set
	 * without a value is refused either way. */
	if (f[M_VAL].k != JK_NONE && f[M_VAL].k != JK_NULL)
		decode_val(c, &f[M_VAL], m);
	else if (m->type == WIRE_T_IO && m->op == WIRE_OP_SET)
		mark_bad(m, TSYNC_REJ_VAL);

	r = get_uint(&f[M_VER], 0, &m->ver);
	m->has_ver = r > 0;
	if (r < 0)
		mark_bad(m, TSYNC_REJ_REQ);
	r = get_uint(&f[M_ID], 0, &m->id);
	m->has_id = r > 0;
	if (r < 0)
		mark_bad(m, TSYNC_REJ_REQ);
	r = get_uint(&f[M_RE], 0, &m->re);
	m->has_re = r > 0;
	if (r < 0)
		mark_bad(m, TSYNC_REJ_REQ);
	/* An origin boot of 0 is no boot: malformed, not absent. */
	r = get_uint(&f[M_OB], 1, &m->ob);
	if (r < 0)
		mark_bad(m, TSYNC_REJ_REQ);
	r = get_uint(&f[M_MS], 0, &ms);
	if (r < 0 || ms > WIRE_MS_MAX)
		mark_bad(m, TSYNC_REJ_VAL);
	else
		m->ms = (uint32_t)ms;

	if (f[M_ERR].k != JK_NONE && f[M_ERR].k != JK_STR)
		mark_bad(m, TSYNC_REJ_REQ);
	else if (f[M_ERR].k == JK_STR && f[M_ERR].n > c->max_string)
		mark_bad(m, TSYNC_REJ_OVERSIZE);
	else if (f[M_ERR].k == JK_STR)
		m->err = f[M_ERR].s;
}

/* The digits that begin the 8 bytes x (little-endian, the text's first
 * byte lowest): how many (0-8). A byte is a digit when its high nibble is 3
 * and adding 6 leaves it so. The additions carry into the next byte only
 * from a byte of 0xfa or more, which is no digit: the bytes before the first
 * that is not one are read exactly. */
static inline unsigned swar_digits(uint64_t x)
{
	const uint64_t hi = 0xF0F0F0F0F0F0F0F0ull, threes = 0x3030303030303030ull;
	uint64_t nd = ((x & hi) ^ threes) | (((x + 0x0606060606060606ull) & hi) ^ threes);

	return nd ? (unsigned)__builtin_ctzll(nd) / 8u : 8u;
}

/* The value of the first n (1-8) digits of x, as swar_digits() found them:
 * the digits moved to the top (the bytes shifted in are zeros, leading
 * zeros of the number), then pairs, quads and the eight combined with three
 * multiplications. */
static inline uint64_t swar_value(uint64_t x, unsigned n)
{
	x -= 0x3030303030303030ull; /* no borrow out of the n digits, the lowest bytes */
	x <<= 8 * (8 - n);
	x = x * 10 + (x >> 8);
	return (((x & 0x000000FF000000FFull) * (100 + (1000000ull << 32))) +
	        (((x >> 16) & 0x000000FF000000FFull) * (1 + (10000ull << 32)))) >>
	       32;
}

static const uint64_t pow10_8[9] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000};

/* fast_int()'s integers of 8 digits or more, whose first 8 make acc: out
 * of line, so that the common short ones save no registers. */
static const char *__attribute__((noinline)) fast_int_long(const char *q, bool neg, uint64_t acc, int64_t *v)
{
	const char *d = q;
	uint64_t x;
	unsigned m;

	memcpy(&x, q + 8, 8);
	x = le64toh(x);
	m = swar_digits(x);
	if (m == 8) {
		/* 16 digits or more (a boot, microseconds since 1970, has 16).
		 * Up to 18 cannot pass INT64_MAX: read at once, from a third
		 * load (the 16 before it are digits, so it starts at or before
		 * the NUL). 19 or more: the careful way, with the check. */
		uint64_t y;
		memcpy(&y, q + 16, 8);
		y = le64toh(y);
		m = swar_digits(y);
		if (m <= 2) {
			acc = acc * 100000000u + swar_value(x, 8);
			if (m)
				acc = acc * pow10_8[m] + swar_value(y, m);
			*v = neg ? (int64_t)(0 - acc) : (int64_t)acc;
			return q + 16 + m;
		}
		q += 16;
		while (is_digit(*q))
			q++;
		if (!util__digits_value(d, q, neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &acc))
			return NULL;
		*v = neg ? (int64_t)(0 - acc) : (int64_t)acc;
		return q;
	}
	if (m)
		acc = acc * pow10_8[m] + swar_value(x, m);
	*v = neg ? (int64_t)(0 - acc) : (int64_t)acc;
	return q + 8 + m;
}

/* A JSON integer at s that parse_number() reads as JK_INT: its value in
 * *v and the byte after it, or NULL (then parse_number() decides). Up to 18
 * digits are read 8 bytes at a time (the decoder's text has 8 bytes of room
 * after its final NUL, and a read goes past the NUL only by what an 8-byte
 * load starting at or before it takes); longer ones digit by digit, with
 * util__digits_value()'s check of the limit. */
static inline __attribute__((always_inline)) const char *fast_int(const char *s, bool allow_neg, int64_t *v)
{
	const char *q = s;
	bool neg = *q == '-';
	uint64_t acc, x;
	unsigned n;

	if (neg && !allow_neg)
		return NULL;
	q += neg;
	memcpy(&x, q, 8);
	x = le64toh(x);
	n = swar_digits(x);
	if (n == 0 || (*q == '0' && n > 1))
		return NULL;
	acc = swar_value(x, n);
	if (n == 8)
		return fast_int_long(q, neg, acc, v);
	*v = neg ? (int64_t)(0 - acc) : (int64_t)acc;
	return q + n;
}

/* The first byte at or after s that ends a plain name: '"', '\\', a control
 * byte (the text's final NUL is one) or one of 0x80 and above. Eight bytes
 * a step, from s to at most 7 bytes past the NUL (the text's room, as for
 * fast_int()). In each step the lowest byte flagged is exact (the
 * borrows of the tests below only flag bytes above one that is flagged). */
static inline const char *plain_end(const char *s)
{
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;

	for (;; s += 8) {
		uint64_t x, stop;
		memcpy(&x, s, 8);
		x = le64toh(x);
		stop = (x - ones * 0x20) | ((x ^ (ones * '"')) - ones) | ((x ^ (ones * '\\')) - ones);
		stop = (stop & ~x & highs) | (x & highs);
		if (stop)
			return s + __builtin_ctzll(stop) / 8;
	}
}

/* Whether the n (1..32) bytes at s are lit's (n bytes of a literal), by
 * words: always inlined, so that n is a constant, lit's words are
 * immediates and the ifs fold away (GCC called memcmp() for these). s is
 * at or before the text's final NUL, whose 8 bytes of room let a short
 * literal be compared with one load, masked. */
static inline __attribute__((always_inline)) uint64_t word_at(const char *p)
{
	uint64_t x;

	memcpy(&x, p, 8);
	return le64toh(x);
}

static inline __attribute__((always_inline)) bool has(const char *s, const char *end, const char *lit,
                                                      size_t n)
{
	uint64_t diff, y = 0;

	if ((size_t)(end - s) < n)
		return false;
	if (n < 8) {
		memcpy(&y, lit, n);
		return ((word_at(s) ^ le64toh(y)) & ((1ull << (8 * n)) - 1)) == 0;
	}
	diff = word_at(s) ^ word_at(lit);
	if (n > 16)
		diff |= word_at(s + 8) ^ word_at(lit + 8);
	if (n > 24)
		diff |= word_at(s + 16) ^ word_at(lit + 16);
	if (n > 8) /* the last 8, overlapping */
		diff |= word_at(s + n - 8) ^ word_at(lit + n - 8);
	return diff == 0;
}

/*
 * The message of a batch, exactly as the writer writes it (add_io_fast in
 * encode.c): {"type":"io","cmd":"set","io":NAME,"val":INT,"ver":INT}, no
 * space, a plain ASCII name of 1..63 bytes without escapes, a version >= 0.
 * Read in one pass into m, with what parse_object() and decode_msg() would
 * have made of it: the same fields, the same NUL-terminated strings in the
 * text. Anything else, to the byte (a space, another order, an escape, a
 * real, a NUL), returns false having changed nothing, and the general
 * reader decides: so both accept and refuse the same datagrams, which
 * fuzz_wire_diff checks against jansson.
 */
static const struct wire_msg set_template = {
    .type = WIRE_T_IO, .op = WIRE_OP_SET, .has_val = true, .val = {.type = TSYNC_TYPE_INT}, .has_ver = true};

static bool parse_set_fast(struct parser *P, struct wire_msg *m)
{
	static const char head[] = "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"";
	char *s = P->p, *name = s + sizeof(head) - 1, *q = name;
	const char *e;
	int64_t val, ver;

	/* Every read stops at the text's final NUL, and each memcmp() is
	 * checked to stay within the text. */
	if (!has(s, P->end, head, sizeof(head) - 1))
		return false;
	q = (char *)plain_end(q);
	if (*q != '"' || q == name || q - name > WIRE_NAME_MAX || !has(q, P->end, "\",\"val\":", 8))
		return false;
	e = fast_int(q + 8, true, &val);
	if (!e || !has(e, P->end, ",\"ver\":", 7))
		return false;
	e = fast_int(e + 7, false, &ver);
	if (!e || *e != '}' || e >= P->end)
		return false;
	s[11] = '\0'; /* the closing quote of "io", the type */
	*q = '\0';
	/* A copy of what every set has, every other member zero, then its
	 * own: cheaper than a memset() and the stores after it. */
	*m = set_template;
	m->type_name = s + 9;
	m->io = name;
	m->io_len = (uint8_t)(q - name);
	m->val.u.i = val;
	m->ver = (uint64_t)ver;
	P->p = (char *)e + 1;
	return true;
}

/* The list of messages (the envelope's "msgs", or a legacy root list). */
static int parse_msgs(struct parser *P, int depth)
{
	struct wire_decoder *d = P->d;
	int r;

	if (open_empty(P, ']'))
		return 0;
	for (;;) {
		size_t i = P->n_msgs++;
		struct wire_msg *m = i < d->msgs_cap ? &d->msgs[i] : NULL;
		char *start = P->p;

		if (depth + 1 > DEPTH_MAX)
			return -1;
		if (m && parse_set_fast(P, m)) {
			d->span[i][0] = (uint32_t)(start - d->text);
			d->span[i][1] = (uint32_t)(P->p - d->text);
			/* The writer's comma before the next message, no space:
			 * what next_or_close() would find. */
			if (*P->p == ',' && P->p[1] == '{' && P->p < P->end) {
				P->p++;
				continue;
			}
		} else if (*P->p == '{' && P->p < P->end) {
			struct jv f[M_N];
			memset(f, 0, sizeof(f));
			if (parse_object(P, depth + 1, msg_names, M_N, f, false) < 0)
				return -1;
			if (m) {
				memset(m, 0, sizeof(*m));
				decode_msg(d->codec, f, m);
				d->span[i][0] = (uint32_t)(start - d->text);
				d->span[i][1] = (uint32_t)(P->p - d->text);
			}
		} else {
			struct jv v = {0};
			if (parse_value(P, depth + 1, &v, V_ANY) < 0)
				return -1;
			if (m) {
				memset(m, 0, sizeof(*m));
				m->type = WIRE_T_OTHER;
				mark_bad(m, TSYNC_REJ_REQ);
			}
		}
		r = next_or_close(P, ']');
		if (r <= 0)
			return r;
	}
}

/* Any value; `mode` says which of the envelope's it is. */
static int parse_value(struct parser *P, int depth, struct jv *v, enum vmode mode)
{
	if (depth > DEPTH_MAX || P->p >= P->end)
		return -1;
	switch (*P->p) {
	case '{':
		v->k = JK_OBJ;
		return parse_object(P, depth, NULL, 0, NULL, false);
	case '[':
		v->k = JK_ARR;
		if (mode == V_MSGS)
			return parse_msgs(P, depth);
		if (open_empty(P, ']'))
			return 0;
		for (;;) {
			struct jv e = {0};
			int r;
			if (parse_value(P, depth + 1, &e, V_ANY) < 0)
				return -1;
			/* "ack": pairs of integers >= 1 (decode_env), kept
			 * here; anything else refuses the envelope there. */
			if (mode == V_ACK && (e.k != JK_INT || e.i < 1 || P->n_ack >= ARRAY_SIZE(P->ack)))
				P->ack_bad = true;
			else if (mode == V_ACK)
				P->ack[P->n_ack++] = (uint64_t)e.i;
			r = next_or_close(P, ']');
			if (r <= 0)
				return r;
		}
	case '"':
		v->k = JK_STR;
		return parse_string(P, &v->s, &v->n);
	case '-':
	case '0':
	case '1':
	case '2':
	case '3':
	case '4':
	case '5':
	case '6':
	case '7':
	case '8':
	case '9':
		return parse_number(P, v);
	default:
		return parse_literal(P, v);
	}
}

#define LIT(s) s, sizeof(s) - 1

/*
 * The envelope exactly as the writer writes it (wire__begin() in encode.c):
 * {"v":INT,"from":NAME,"boot":INT,"seq":INT[,"to_boot":INT][,"re":INT]
 * [,"dw":INT][,"ack":[INT,...]],"msgs":[...]} with no space, a plain ASCII
 * name of 1..63 bytes without escapes, and every member as decode_env()
 * takes it (the codec's "v", boot and seq >= 1, to_boot and re >= 0, "ack"
 * pairs of 1 <= first <= last, at most WIRE_ACK_RANGES). Returns true with
 * env filled as decode_env() would have filled it, and P after the
 * envelope (the messages read by the same parse_msgs()). Anything else, to
 * the byte, returns false, perhaps with env and the text changed (the
 * messages are read in place): the caller then clears env and reads a
 * fresh copy with the general reader, which decides, so both accept and
 * refuse the same datagrams (fuzz_wire_diff against jansson). Reading an
 * envelope the general way was most of reading a small datagram
 * (BENCHMARKS.md "Session 10: round trip"); filling env here directly, not
 * through the general reader's values, is session 12's.
 */
/* A boot (an integer >= 0) at s, as fast_int(s, false, v) reads it: when
 * its digits are those of the boot seen last in this place, with no digit
 * after them, by two compares; else read, and kept if 9 to 16 digits. */
static inline const char *boot_int(struct boot_seen *b, const char *s, const char *end, int64_t *v)
{
	const char *e;

	if (b->n && (size_t)(end - s) > b->n && word_at(s) == b->head && word_at(s + b->n - 8) == b->tail &&
	    !is_digit(s[b->n])) {
		*v = (int64_t)b->v;
		return s + b->n;
	}
	e = fast_int(s, false, v);
	if (e && e - s > 8 && e - s <= 16) {
		b->n = (size_t)(e - s);
		b->head = word_at(s);
		b->tail = word_at(e - 8);
		b->v = (uint64_t)*v;
	}
	return e;
}

static bool parse_env_fast(struct parser *P, const struct wire_codec *c, struct wire_env *env)
{
	const char *s = P->p, *end = P->end, *name;
	char *quote;
	int64_t v;

	if (!has(s, end, LIT("{\"v\":")) || !(s = fast_int(s + 5, false, &v)) ||
	    v != (c->key ? WIRE_VERSION : WIRE_VERSION_PLAIN) || !has(s, end, LIT(",\"from\":\"")))
		return false;
	name = s += 9;
	s = plain_end(s);
	if (*s != '"' || s >= end || s == name || s - name > WIRE_NAME_MAX)
		return false;
	quote = P->p + (s - P->p);
	env->from = name;
	env->from_len = (uint32_t)(s - name);
	s++;
	if (!has(s, end, LIT(",\"boot\":")) || !(s = boot_int(&P->d->boots[0], s + 8, end, &v)) || v < 1)
		return false;
	env->boot = (uint64_t)v;
	if (!has(s, end, LIT(",\"seq\":")) || !(s = fast_int(s + 7, false, &v)) || v < 1)
		return false;
	env->seq = (uint64_t)v;
	if (has(s, end, LIT(",\"to_boot\":"))) {
		if (!(s = boot_int(&P->d->boots[1], s + 11, end, &v)))
			return false;
		env->to_boot = (uint64_t)v;
	}
	if (has(s, end, LIT(",\"re\":"))) {
		if (!(s = fast_int(s + 6, false, &v)))
			return false;
		env->re = (uint64_t)v;
	}
	if (has(s, end, LIT(",\"dw\":"))) {
		if (!(s = fast_int(s + 6, true, &v)))
			return false;
		env->durable = v == 1;
	}
	if (has(s, end, LIT(",\"ack\":["))) {
		uint32_t n = 0;
		s += 8;
		env->acks_ok = true;
		while (*s != ']') {
			uint64_t first;
			if (n >= WIRE_ACK_RANGES || !(s = fast_int(s, false, &v)) || v < 1 || *s != ',')
				return false;
			first = (uint64_t)v;
			if (!(s = fast_int(s + 1, false, &v)) || (uint64_t)v < first)
				return false;
			env->acks[n][0] = first;
			env->acks[n][1] = (uint64_t)v;
			n++;
			if (*s == ']')
				break;
			if (*s != ',' || s[1] == ']') /* no trailing comma */
				return false;
			s++;
		}
		s++;
		env->n_acks = n;
	}
	if (!has(s, end, LIT(",\"msgs\":[")))
		return false;
	*quote = '\0'; /* as parse_string() leaves a plain string */
	P->p += (s + 8) - P->p;
	if (parse_msgs(P, 2) < 0 || P->p >= P->end || *P->p != '}')
		return false;
	P->p++;
	return true;
}

#undef LIT

static int decode_env(const struct wire_codec *c, const struct jv *f, const struct parser *P,
                      struct wire_env *env)
{
	if (f[E_V].k != JK_INT || f[E_V].i != (c->key ? WIRE_VERSION : WIRE_VERSION_PLAIN))
		return -EBADMSG;
	env->from = get_name(&f[E_FROM]);
	if (!env->from)
		return -EBADMSG;
	env->from_len = f[E_FROM].n;
	if (get_uint(&f[E_BOOT], 1, &env->boot) != 1 || get_uint(&f[E_SEQ], 1, &env->seq) != 1)
		return -EBADMSG;
	if (get_uint(&f[E_TO_BOOT], 0, &env->to_boot) < 0 || get_uint(&f[E_RE], 0, &env->re) < 0)
		return -EBADMSG;
	/* Any value but 1 is a sender that does not keep durable windows: a
	 * peer must never count on a window it cannot be sure of. */
	env->durable = f[E_DW].k == JK_INT && f[E_DW].i == 1;
	if (f[E_MSGS].k != JK_ARR)
		return -EBADMSG;
	/* "ack": a list of (first, last) pairs of integers, 1 <= first <=
	 * last, at most WIRE_ACK_RANGES of them. */
	if (f[E_ACK].k != JK_NONE) {
		if (f[E_ACK].k != JK_ARR || P->ack_bad || P->n_ack % 2)
			return -EBADMSG;
		for (size_t i = 0; i < P->n_ack; i += 2) {
			if (P->ack[i] > P->ack[i + 1])
				return -EBADMSG;
			env->acks[i / 2][0] = P->ack[i];
			env->acks[i / 2][1] = P->ack[i + 1];
		}
		env->acks_ok = true;
		env->n_acks = (uint32_t)(P->n_ack / 2);
	}
	return 0;
}

static size_t msgs_cap_for(const struct wire_codec *c, size_t len)
{
	/* A message takes at least two bytes ("0,"), so no datagram holds more
	 * than that; over max_msgs the datagram is refused anyway. */
	size_t n = len / 2 + 1;

	return c->max_msgs < n ? c->max_msgs : n;
}

/* One block: the decoder, its text, messages, spans and key stack. */
static struct wire_decoder *decoder_alloc(const struct wire_codec *c, size_t len)
{
	size_t msgs = msgs_cap_for(c, len), keys = len / 3 + 2, slots = 16;
	size_t sz;
	struct wire_decoder *d;
	char *p;

	while (slots < 2 * keys)
		slots *= 2;
	/* The text last, with 8 bytes of room after its NUL for fast_int(). */
	sz = sizeof(struct wire_decoder) + msgs * sizeof(struct wire_msg) + msgs * sizeof(uint32_t[2]) +
	     keys * sizeof(struct dkey) + slots * sizeof(struct kslot) + len + 1 + 8;
	/* Zeroed (every slot empty) without touching it: a big max_datagram
	 * costs address space, and memory only as far as datagrams go. */
	d = calloc(1, sz);
	if (!d)
		return NULL;
	p = (char *)(d + 1);
	d->codec = c;
	d->msgs = (struct wire_msg *)p;
	d->msgs_cap = msgs;
	p += msgs * sizeof(struct wire_msg);
	d->span = (uint32_t(*)[2])p;
	p += msgs * sizeof(uint32_t[2]);
	d->keys = (struct dkey *)p;
	d->keys_cap = keys;
	p += keys * sizeof(struct dkey);
	d->table = (struct kslot *)p;
	d->table_mask = slots - 1;
	d->gen = 0;
	randombytes_buf(d->sipkey, sizeof(d->sipkey));
	p += slots * sizeof(struct kslot);
	d->text = p;
	d->text_cap = len + 1;
	return d;
}

int wire__decoder_new(const struct wire_codec *c, struct wire_decoder **ret)
{
	struct wire_decoder *d = decoder_alloc(c, c->max_datagram);

	if (!d)
		return -ENOMEM;
	*ret = d;
	return 0;
}

void wire__decoder_free(struct wire_decoder *d)
{
	free(d);
}

/* Handlers of the messages that are not io get the whole object, read by
 * jansson from the original bytes. */
static int attach_objects(struct wire_decoder *d, const char *json, struct wire_datagram *dg)
{
	for (size_t i = 0; i < dg->n_msgs; i++) {
		struct wire_msg *m = &dg->msgs[i];
		json_error_t error;
		if (m->bad || m->type == WIRE_T_IO)
			continue;
		m->obj = json_loadb(json + d->span[i][0], d->span[i][1] - d->span[i][0],
		                    JSON_REJECT_DUPLICATES, &error);
		if (!m->obj)
			return -ENOMEM; /* it parsed once already: only memory can fail it */
	}
	return 0;
}

/* A datagram with nothing in it: all but env.acks, of which only n_acks
 * are read (it is a quarter of a kilobyte, cleared twice a datagram). */
static void dg_clear(struct wire_datagram *dg)
{
	_Static_assert(offsetof(struct wire_env, acks) + sizeof(dg->env.acks) == sizeof(struct wire_env),
	               "acks last in wire_env");
	memset(&dg->env, 0, offsetof(struct wire_env, acks));
	dg->msgs = NULL;
	dg->n_msgs = 0;
	dg->root = NULL;
}

/* A parser at the start of a fresh copy of the JSON in the decoder's text
 * (its "ack" list is filled before it is read). */
static void parse_start(struct wire_decoder *d, const char *json, size_t json_len, struct parser *P)
{
	if (++d->gen == 0) { /* wrapped: every slot's gen could look current */
		memset(d->table, 0, (d->table_mask + 1) * sizeof(struct kslot));
		d->gen = 1;
	}
	memcpy(d->text, json, json_len);
	d->text[json_len] = '\0';
	P->d = d;
	P->p = d->text;
	P->end = d->text + json_len;
	P->nkeys = 0;
	P->n_msgs = 0;
	P->n_ack = 0;
	P->ack_bad = false;
}

int wire__decode_in(struct wire_decoder *d, const void *buf, size_t len, struct wire_datagram *dg,
                    tsync_reject *reject)
{
	const struct wire_codec *c = d->codec;
	const char *json = buf;
	size_t json_len = len;
	struct jv env[E_N];
	struct parser P;
	bool fast;
	int r = -EBADMSG;

	dg_clear(dg);
	*reject = TSYNC_REJ_OVERSIZE;
	if (len > c->max_datagram || len >= d->text_cap)
		goto leave;

	*reject = TSYNC_REJ_AUTH;
	if (c->key) {
		if (len < WIRE_TAG_BYTES + 2)
			goto leave;
		json_len = len - WIRE_TAG_BYTES;
		/* A legacy list cannot carry a tag: refuse it before paying
		 * for the HMAC. */
		if (json[0] == '[')
			goto leave;
		if (wire__codec_verify(c, json, json_len, (const uint8_t *)json + json_len) < 0)
			goto leave;
	}

	*reject = TSYNC_REJ_JSON;
	/* The writer's own envelope first, straight into dg->env; anything
	 * else from a fresh copy (the short way may have changed the text and
	 * env), the general way. */
	parse_start(d, json, json_len, &P);
	fast = parse_env_fast(&P, c, &dg->env);
	if (!fast) {
		memset(&dg->env, 0, offsetof(struct wire_env, acks));
		memset(env, 0, sizeof(env));
		parse_start(d, json, json_len, &P);
		skip_ws(&P);
		if (P.p < P.end && *P.p == '[') {
			if (parse_msgs(&P, 1) < 0)
				goto leave;
			dg->env.legacy = true;
		} else if (P.p < P.end && *P.p == '{') {
			if (parse_object(&P, 1, env_names, E_N, env, true) < 0)
				goto leave;
		} else {
			goto leave;
		}
	}
	skip_ws(&P);
	if (P.p != P.end)
		goto leave;
	if (dg->env.legacy && c->key) {
		*reject = TSYNC_REJ_AUTH;
		goto leave;
	}
	if (!fast && !dg->env.legacy && decode_env(c, env, &P, &dg->env) < 0)
		goto leave;

	*reject = TSYNC_REJ_OVERSIZE;
	if (P.n_msgs > c->max_msgs || P.n_msgs > d->msgs_cap) /* the second cannot be: two bytes a message */
		goto leave;
	dg->msgs = P.n_msgs ? d->msgs : NULL;
	dg->n_msgs = P.n_msgs;
	r = attach_objects(d, json, dg);
	if (r < 0)
		goto leave;
	return 0;
leave:
	/* Nothing of a refused datagram is kept: the release the caller still
	 * does finds it empty. */
	wire__datagram_release(dg);
	return r;
}

int wire__decode(const struct wire_codec *c, const void *buf, size_t len, struct wire_datagram *dg,
                 tsync_reject *reject)
{
	struct wire_decoder *d;
	int r;

	dg_clear(dg);
	*reject = TSYNC_REJ_OVERSIZE;
	if (len > c->max_datagram)
		return -EBADMSG;
	d = decoder_alloc(c, len);
	if (!d)
		return -ENOMEM;
	r = wire__decode_in(d, buf, len, dg, reject);
	if (r < 0) {
		free(d);
		return r;
	}
	dg->root = d;
	return 0;
}

void wire__datagram_release(struct wire_datagram *dg)
{
	for (size_t i = 0; i < dg->n_msgs; i++)
		json_decref(dg->msgs[i].obj);
	free(dg->root);
	dg_clear(dg);
}
