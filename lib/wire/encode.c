/*
 * lib/wire: the datagram writer. A hand-written JSON writer rather than
 * jansson because it runs for every datagram sent, and because it has to know
 * at each message whether the next one still fits under max_datagram.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/wire.h"

/* Bytes that close the datagram: "]}" for an envelope, "]" for a list. */
static size_t close_len(const struct wire_writer *w)
{
	return w->legacy ? 1 : 2;
}

static size_t compute_limit(const struct wire_codec *c)
{
	size_t tag = c->key ? WIRE_TAG_BYTES : 0;

	return c->max_datagram > tag ? c->max_datagram - tag : 0;
}

/*
 * Every append goes through here: it keeps room for the closing brackets, so
 * that a message accepted by wire__add() can always be closed.
 */
static inline int put(struct wire_writer *w, const char *s, size_t n)
{
	size_t used = w->b.len + close_len(w);

	if (used > w->limit || n > w->limit - used)
		return -EMSGSIZE;
	/* wire__begin() reserved the whole datagram: no call, no growth. */
	if (w->b.cap > w->b.len + n) {
		memcpy(w->b.data + w->b.len, s, n);
		w->b.len += n;
		w->b.data[w->b.len] = '\0';
		return 0;
	}
	return buf__append(&w->b, s, n);
}

static int put_str(struct wire_writer *w, const char *s)
{
	return put(w, s, strlen(s));
}

/* Inlined where numbers are written: a call cost a tenth of a small number. */
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* How many decimal digits v has (1-20). */
static ALWAYS_INLINE unsigned u64_len(uint64_t v)
{
	static const uint64_t p10[20] = {1ull,
	                                 10ull,
	                                 100ull,
	                                 1000ull,
	                                 10000ull,
	                                 100000ull,
	                                 1000000ull,
	                                 10000000ull,
	                                 100000000ull,
	                                 1000000000ull,
	                                 10000000000ull,
	                                 100000000000ull,
	                                 1000000000000ull,
	                                 10000000000000ull,
	                                 100000000000000ull,
	                                 1000000000000000ull,
	                                 10000000000000000ull,
	                                 100000000000000000ull,
	                                 1000000000000000000ull,
	                                 10000000000000000000ull};
	/* From log2: t (at most 19) is the digits of 2^bits - 1 or one fewer,
	 * one compare tells which. */
	unsigned t = ((64u - (unsigned)__builtin_clzll(v | 1)) * 1233u) >> 12;

	return v ? t + (v >= p10[t]) : 1;
}

/*
 * The 8 decimal digits of x < 10^8 (leading zeros included) as ASCII, the
 * first digit in the lowest byte, without a division chain: x / 10^4 and
 * x % 10^4 go into the two 32-bit halves of a word, and each half is split
 * into hundreds, then tens, by multiplications with a shift that are exact
 * below 10^4 (x * 10486 >> 20 is x / 100, x * 103 >> 10 is x / 10), the
 * halves and quarters side by side in one register. (P. Khuong's, as in
 * D. Lemire's "Converting integers to decimal strings faster with AVX-512"
 * baseline.) test_wire.c's test_number_groups checks every x of the form k * 10001.
 */
static ALWAYS_INLINE uint64_t digits8(uint32_t x)
{
	uint64_t merged = (uint64_t)(x / 10000u) | (uint64_t)(x % 10000u) << 32;
	uint64_t top = ((merged * 10486u) >> 20) & 0x0000007F0000007Full;
	uint64_t hundreds = ((merged - 100u * top) << 16) + top;
	uint64_t tens = ((hundreds * 103u) >> 10) & 0x000F000F000F000Full;

	tens += (hundreds - 10u * tens) << 8;
	return tens | 0x3030303030303030ull;
}

/* Stores the 8 bytes of d, its lowest byte first. */
static ALWAYS_INLINE void store8(char *o, uint64_t d)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	d = __builtin_bswap64(d);
#endif
	memcpy(o, &d, 8);
}

/*
 * v's n digits (n = u64_len(v)) at o; returns their end. The digits go 8 at a time, so up to
 * 7 bytes after the end are written too (with anything): o needs 8 bytes of
 * room beyond the digits. The first group is shifted so that its leading
 * zeros fall off.
 */
static ALWAYS_INLINE char *num_n(char *o, uint64_t v, unsigned n)
{
	if (n <= 8) {
		store8(o, digits8((uint32_t)v) >> (8 * (8 - n)));
	} else if (n <= 16) {
		store8(o, digits8((uint32_t)(v / 100000000u)) >> (8 * (16 - n)));
		store8(o + n - 8, digits8((uint32_t)(v % 100000000u)));
	} else {
		uint64_t rest = v % 10000000000000000u;
		store8(o, digits8((uint32_t)(v / 10000000000000000u)) >> (8 * (24 - n)));
		store8(o + n - 16, digits8((uint32_t)(rest / 100000000u)));
		store8(o + n - 8, digits8((uint32_t)(rest % 100000000u)));
	}
	return o + n;
}

/* The same for v of a length not yet known. */
static ALWAYS_INLINE char *num_at(char *o, uint64_t v)
{
	return num_n(o, v, u64_len(v));
}

static int put_u64(struct wire_writer *w, uint64_t v)
{
	char tmp[32];

	return put(w, tmp, (size_t)(num_at(tmp, v) - tmp));
}

static int put_i64(struct wire_writer *w, int64_t v)
{
	int r;

	if (v >= 0)
		return put_u64(w, (uint64_t)v);
	r = put(w, "-", 1);
	if (r < 0)
		return r;
	/* Negate in unsigned arithmetic: -INT64_MIN overflows int64_t. */
	return put_u64(w, 0u - (uint64_t)v);
}

/*
 * Length of the valid UTF-8 sequence at s, whose first byte is >= 0x80, or 0.
 * It refuses what jansson refuses (overlong forms, surrogates, code points
 * over U+10FFFF), since one bad string would make the receiver drop the
 * whole datagram, neighbours included.
 */
size_t wire__utf8_seq(const unsigned char *s)
{
	unsigned c = s[0];
	uint32_t cp;
	size_t n;

	if (c < 0xc2)
		return 0;
	if (c < 0xe0) {
		n = 2;
		cp = c & 0x1f;
	} else if (c < 0xf0) {
		n = 3;
		cp = c & 0x0f;
	} else if (c < 0xf5) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	/* The terminating NUL fails the continuation test, so this never
	 * reads past the string. */
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff)))
		return 0;
	if (n == 4 && (cp < 0x10000 || cp > 0x10ffff))
		return 0;
	return n;
}

bool wire__utf8_valid(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p;) {
		size_t n = *p < 0x80 ? 1 : wire__utf8_seq(p);
		if (!n)
			return false;
		p += n;
	}
	return true;
}

/* A JSON string: '"' and '\' escaped, control characters as \u00XX, bytes
 * of valid UTF-8 as they are. -EINVAL if s is not UTF-8. */
static int put_json_string(struct wire_writer *w, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	const unsigned char *run;
	char esc[6];
	int r;

	r = put(w, "\"", 1);
	while (r == 0 && *p) {
		/* Copy the longest run that needs no escape in one go. */
		run = p;
		while (*p >= 0x20 && *p != '"' && *p != '\\') {
			if (*p >= 0x80) {
				size_t n = wire__utf8_seq(p);
				if (!n)
					return -EINVAL;
				p += n;
			} else {
				p++;
			}
		}
		if (p > run) {
			r = put(w, (const char *)run, (size_t)(p - run));
			continue;
		}
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			r = put(w, esc, 2);
		} else {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[*p >> 4];
			esc[5] = hex[*p & 0xf];
			r = put(w, esc, 6);
		}
		p++;
	}
	if (r < 0)
		return r;
	return put(w, "\"", 1);
}

/* ,"key": */
static int put_key(struct wire_writer *w, const char *key)
{
	char tmp[16];
	size_t n = strlen(key);

	if (n > sizeof(tmp) - 4)
		return -EINVAL; /* the writer's own keys are short */
	tmp[0] = ',';
	tmp[1] = '"';
	memcpy(tmp + 2, key, n);
	tmp[n + 2] = '"';
	tmp[n + 3] = ':';
	return put(w, tmp, n + 4);
}

static int put_member_string(struct wire_writer *w, const char *key, const char *s)
{
	int r = put_key(w, key);

	return r < 0 ? r : put_json_string(w, s);
}

static int put_member_u64(struct wire_writer *w, const char *key, uint64_t v)
{
	int r = put_key(w, key);

	return r < 0 ? r : put_u64(w, v);
}

/*
 * The shortest of %.15g, %.16g and %.17g that reads back as the same double,
 * so that 0.1 is written "0.1", written so that it still reads as a JSON real
 * ("1.0", not "1") and with '.' whatever the locale's decimal point is.
 */
static int put_double(struct wire_writer *w, double f)
{
	char tmp[40], out[48];
	size_t n = 0;
	bool real = false;

	for (int prec = 15; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*g", prec, f);
		if (strtod(tmp, NULL) == f)
			break;
	}
	for (const char *p = tmp; *p;) {
		if ((*p >= '0' && *p <= '9') || *p == '-' || *p == '+') {
			out[n++] = *p++;
		} else if (*p == 'e') {
			real = true;
			out[n++] = *p++;
		} else {
			/* The decimal point, which may be several bytes. */
			real = true;
			out[n++] = '.';
			while (*p && !(*p >= '0' && *p <= '9') && *p != 'e')
				p++;
		}
	}
	if (!real) {
		out[n++] = '.';
		out[n++] = '0';
	}
	return put(w, out, n);
}

static int put_value(struct wire_writer *w, const tsync_value *v)
{
	int r = put_key(w, "val");

	if (r < 0)
		return r;
	switch (v->type) {
	case TSYNC_TYPE_BOOL:
		/* As the seed does; the receiver coerces by the thing's type. */
		return put(w, v->u.b ? "1" : "0", 1);
	case TSYNC_TYPE_INT:
		return put_i64(w, v->u.i);
	case TSYNC_TYPE_FLOAT:
		return put_double(w, v->u.f);
	case TSYNC_TYPE_STRING:
		return put_json_string(w, v->u.s);
	case TSYNC_TYPE_NONE:
		break;
	}
	return -EINVAL;
}

static bool name_ok(const char *s)
{
	return s && *s && strnlen(s, WIRE_NAME_MAX + 1) <= WIRE_NAME_MAX;
}

static bool string_ok(const struct wire_codec *c, const char *s)
{
	return s && strlen(s) <= c->max_string;
}

/* What the decoder would refuse, checked before anything is written. */
static int check_msg(const struct wire_codec *c, const struct wire_msg *m)
{
	switch (m->type) {
	case WIRE_T_IO:
		if (m->op < WIRE_OP_SET || m->op > WIRE_OP_REPLY_PULSE || !name_ok(m->io))
			return -EINVAL;
		if (m->op == WIRE_OP_SET && !m->has_val)
			return -EINVAL;
		break;
	case WIRE_T_CMD:
		if (!name_ok(m->role) || !name_ok(m->cmd))
			return -EINVAL;
		break;
	case WIRE_T_CUM:
		if (m->io && !name_ok(m->io))
			return -EINVAL;
		break;
	case WIRE_T_CLIM:
		break;
	case WIRE_T_OTHER:
		if (!name_ok(m->type_name))
			return -EINVAL;
		break;
	default:
		return -EINVAL;
	}
	if (m->has_val) {
		if (m->val.type == TSYNC_TYPE_FLOAT && !isfinite(m->val.u.f))
			return -EINVAL;
		if (m->val.type == TSYNC_TYPE_STRING && !string_ok(c, m->val.u.s))
			return -EINVAL;
		if (m->val.type < TSYNC_TYPE_BOOL || m->val.type > TSYNC_TYPE_STRING)
			return -EINVAL;
	}
	if ((m->has_ver && m->ver > INT64_MAX) || (m->has_id && m->id > INT64_MAX) ||
	    (m->has_re && m->re > INT64_MAX) || m->ob > INT64_MAX || m->ms > WIRE_MS_MAX)
		return -EINVAL;
	if (m->err && !string_ok(c, m->err))
		return -EINVAL;
	if (m->body) {
		size_t n = strlen(m->body);
		if (n < 2 || m->body[0] != '{' || m->body[n - 1] != '}')
			return -EINVAL;
	}
	return 0;
}

/* Appends the members inside body's braces, if there are any. */
static int put_body(struct wire_writer *w, const char *body)
{
	const char *start = body + 1;
	const char *end = body + strlen(body) - 1;
	int r;

	while (start < end && (*start == ' ' || *start == '\t' || *start == '\n' || *start == '\r'))
		start++;
	if (start == end)
		return 0;
	r = put(w, ",", 1);
	return r < 0 ? r : put(w, start, (size_t)(end - start));
}

static const char *type_name(const struct wire_msg *m)
{
	switch (m->type) {
	case WIRE_T_IO:
		return "io";
	case WIRE_T_CMD:
		return "cmd";
	case WIRE_T_CUM:
		return "cum";
	case WIRE_T_CLIM:
		return "clim";
	case WIRE_T_OTHER:
		break;
	}
	return m->type_name;
}

static int put_msg(struct wire_writer *w, const struct wire_msg *m)
{
	int r;

	r = put(w, "{\"type\":", 8);
	if (r == 0)
		r = put_json_string(w, type_name(m));
	if (r == 0 && m->type == WIRE_T_IO) {
		r = put_member_string(w, "cmd", wire__op_name(m->op));
		if (r == 0)
			r = put_member_string(w, "io", m->io);
	} else if (r == 0 && m->type == WIRE_T_CMD) {
		r = put_member_string(w, "role", m->role);
		if (r == 0)
			r = put_member_string(w, "cmd", m->cmd);
	} else if (r == 0 && m->type == WIRE_T_CUM && m->io) {
		r = put_member_string(w, "fld", m->io);
	}
	if (r == 0 && m->has_val)
		r = put_value(w, &m->val);
	if (r == 0 && m->has_ver)
		r = put_member_u64(w, "ver", m->ver);
	if (r == 0 && m->has_id)
		r = put_member_u64(w, "id", m->id);
	if (r == 0 && m->has_re)
		r = put_member_u64(w, "re", m->re);
	if (r == 0 && m->ob)
		r = put_member_u64(w, "ob", m->ob);
	if (r == 0 && m->ms)
		r = put_member_u64(w, "ms", m->ms);
	if (r == 0 && m->err)
		r = put_member_string(w, "err", m->err);
	if (r == 0 && m->body)
		r = put_body(w, m->body);
	if (r == 0 && m->res) {
		r = put_key(w, "res");
		if (r == 0)
			r = put_str(w, m->res);
	}
	if (r == 0)
		r = put(w, "}", 1);
	return r;
}

void wire__writer_init(struct wire_writer *w, const struct wire_codec *c)
{
	memset(w, 0, sizeof(*w));
	w->codec = c;
	w->limit = compute_limit(c);
}

void wire__writer_free(struct wire_writer *w)
{
	w->run_len = 0;
	w->run_next = NULL;
	buf__free(&w->b);
	w->n_msgs = 0;
}

static void truncate_to(struct wire_writer *w, size_t len)
{
	w->b.len = len;
	if (w->b.data)
		w->b.data[len] = '\0';
}

/* Whether a name (the sender's, a batch message's) may have byte c as it is: ASCII from
 * 0x20 (DEL too) but '"' (0x22) and '\\' (0x5c), as the reader's short way takes
 * it, by a bit of a mask instead of five tests a byte. */
static inline bool plain(unsigned char c)
{
	static const uint64_t mask[2] = {0xFFFFFFFB00000000u, 0xFFFFFFFFEFFFFFFFu};

	return c < 128 && (mask[c >> 6] >> (c & 63)) & 1;
}

#define LIT(o, s) (memcpy((o), (s), sizeof(s) - 1), (o) + sizeof(s) - 1)

/* Whether the name written in w's head (head_nl bytes at 15) is s. */
static inline bool head_from_is(const struct wire_writer *w, const char *s)
{
	const char *h = w->head + 15;

	for (unsigned i = 0; i < w->head_nl; i++)
		if (s[i] != h[i])
			return false; /* s's NUL, if it is shorter, differs too */
	return s[w->head_nl] == '\0';
}

/* Whether w's head is that of env: the same "v", sender and boot. */
static inline bool head_current(const struct wire_writer *w, const struct wire_env *env)
{
	return w->head_len && env->boot == w->head_boot && (w->codec->key != NULL) == w->head_keyed &&
	       head_from_is(w, env->from);
}

/* Writes w's head for env: {"v":..,"from":"NAME","boot":B,"seq": . 0 if the
 * name needs escapes (the general way then writes the envelope). */
static int head_make(struct wire_writer *w, const struct wire_env *env)
{
	size_t nl = 0;
	char *o = w->head;

	for (const unsigned char *p = (const unsigned char *)env->from; *p; p++, nl++)
		if (!plain(*p))
			return 0;
	_Static_assert(WIRE_VERSION == 3 && WIRE_VERSION_PLAIN == 1, "the envelope's \"v\" below");
	_Static_assert(sizeof(w->head) >= 15 + WIRE_NAME_MAX + 9 + 20 + 7 + 8, "the longest head and 8 of room");
	o = w->codec->key ? LIT(o, "{\"v\":3,\"from\":\"") : LIT(o, "{\"v\":1,\"from\":\"");
	memcpy(o, env->from, nl);
	o += nl;
	o = LIT(o, "\",\"boot\":");
	o = num_at(o, env->boot);
	o = LIT(o, ",\"seq\":");
	w->head_len = (uint8_t)(o - w->head);
	w->head_nl = (uint8_t)nl;
	w->head_boot = env->boot;
	w->head_keyed = w->codec->key != NULL;
	return 1;
}

/*
 * The envelope (valid, checked by wire__begin()) whose sender's name is
 * plain ASCII: written in one go, with one check of the room left, instead
 * of a put() per member. Exactly the bytes wire__begin() writes otherwise.
 * What stays while neither side restarts is copied from what the writer
 * wrote before (head_current() says whether it may be: head), and so is
 * ,"to_boot": with its number. 1 if written, 0 if the name needs escapes
 * or the envelope might not fit (the general way then decides, to the
 * byte).
 */
static int begin_fast(struct wire_writer *w, const struct wire_env *env, bool current)
{
	size_t need, used;
	char *o;

	if (!current && !head_make(w, env)) {
		w->head_len = 0;
		return 0;
	}
	/* The head; seq, to_boot, re (at most 11 + 19 bytes each) and dw;
	 * each ack range (at most 1 + 19 + 1 + 19); ,"msgs":[ . The copies
	 * below and num_at() write up to 20 bytes beyond what they keep:
	 * wire__begin() reserved the tag's 32 after the limit. */
	need = w->head_len + 4 * 30 + (env->acks_ok ? 9 + (size_t)env->n_acks * 40 : 0) + 9;
	used = w->b.len + close_len(w);
	if (used > w->limit || need > w->limit - used || w->b.cap <= w->b.len + need + 32)
		return 0;
	o = w->b.data + w->b.len;
	/* 16 bytes a copy of a constant size, no call */
	for (unsigned i = 0; i < w->head_len; i += 16)
		memcpy(o + i, w->head + i, 16);
	o += w->head_len;
	o = num_at(o, env->seq);
	if (env->to_boot) {
		if (env->to_boot != w->to_boot || !w->to_len) {
			char *t = LIT(w->to, ",\"to_boot\":");
			w->to_len = (uint8_t)(num_at(t, env->to_boot) - w->to);
			w->to_boot = env->to_boot;
		}
		memcpy(o, w->to, 32); /* at most 30 bytes: a constant size */
		o += w->to_len;
	}
	if (env->re) {
		o = LIT(o, ",\"re\":");
		o = num_at(o, env->re);
	}
	if (env->durable)
		o = LIT(o, ",\"dw\":1");
	if (env->acks_ok) {
		o = LIT(o, ",\"ack\":[");
		for (uint32_t i = 0; i < env->n_acks; i++) {
			if (i)
				*o++ = ',';
			o = num_at(o, env->acks[i][0]);
			*o++ = ',';
			o = num_at(o, env->acks[i][1]);
		}
		*o++ = ']';
	}
	o = LIT(o, ",\"msgs\":[");
	*o = '\0';
	w->b.len = (size_t)(o - w->b.data);
	return 1;
}

int wire__begin(struct wire_writer *w, const struct wire_env *env)
{
	bool current;
	int r;

	w->b.len = 0;
	w->run_len = 0; /* a datagram begun anew: what it held is dropped */
	w->run_next = NULL;
	w->n_msgs = 0;
	w->legacy = env->legacy;
	w->limit = compute_limit(w->codec);
	/* All of the datagram is allocated once here, so that the messages
	 * that follow never reallocate. */
	if (w->b.cap < w->limit + WIRE_TAG_BYTES + 1) {
		r = buf__reserve(&w->b, w->limit + WIRE_TAG_BYTES);
		if (r < 0)
			return r;
	}
	w->b.data[0] = '\0';
	if (env->legacy)
		return put(w, "[", 1);
	if (env->boot == 0 || env->seq == 0 || env->boot > INT64_MAX || env->seq > INT64_MAX ||
	    env->to_boot > INT64_MAX || env->re > INT64_MAX)
		return -EINVAL;
	/* A head made of this name was of a valid one. */
	current = env->from && head_current(w, env);
	if (!current && !name_ok(env->from))
		return -EINVAL;
	if (env->acks_ok && env->n_acks > WIRE_ACK_RANGES)
		return -EINVAL;
	for (uint32_t i = 0; env->acks_ok && i < env->n_acks; i++)
		if (env->acks[i][0] == 0 || env->acks[i][0] > env->acks[i][1] || env->acks[i][1] > INT64_MAX)
			return -EINVAL;
	if (begin_fast(w, env, current))
		return 0;
	r = put_str(w, w->codec->key ? "{\"v\":3,\"from\":" : "{\"v\":1,\"from\":");
	if (r == 0)
		r = put_json_string(w, env->from);
	if (r == 0)
		r = put_member_u64(w, "boot", env->boot);
	if (r == 0)
		r = put_member_u64(w, "seq", env->seq);
	if (r == 0 && env->to_boot)
		r = put_member_u64(w, "to_boot", env->to_boot);
	if (r == 0 && env->re)
		r = put_member_u64(w, "re", env->re);
	if (r == 0 && env->durable)
		r = put_str(w, ",\"dw\":1");
	if (r == 0 && env->acks_ok) {
		r = put_str(w, ",\"ack\":[");
		for (uint32_t i = 0; r == 0 && i < env->n_acks; i++) {
			r = i ? put(w, ",", 1) : 0;
			if (r == 0)
				r = put_u64(w, env->acks[i][0]);
			if (r == 0)
				r = put(w, ",", 1);
			if (r == 0)
				r = put_u64(w, env->acks[i][1]);
		}
		if (r == 0)
			r = put(w, "]", 1);
	}
	if (r == 0)
		r = put_str(w, ",\"msgs\":[");
	if (r < 0)
		truncate_to(w, 0);
	return r;
}


#define IO_SET   "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\""
#define IO_REPLY "{\"type\":\"io\",\"cmd\":\"reply\",\"io\":\""

/*
 * The message of a batch, a set or a reply of an integer or a boolean with
 * its version and nothing else, whose thing name is plain ASCII: written in
 * one go, its length known before, with one check of the room left, instead
 * of a put() per member. Exactly the bytes put_msg() writes. 1 if written,
 * -EMSGSIZE if those bytes do not fit (as put_msg() would find, after
 * writing a part of them: the last message a full datagram is offered went
 * that way every time), 0 if the message is not of that shape (put_msg()
 * then decides).
 */
static int add_io_fast(struct wire_writer *w, const struct wire_msg *m)
{
	size_t nl = 0, need, used;
	unsigned vl, verl;
	uint64_t mag = 0;
	char *o;

	if (m->type != WIRE_T_IO || (m->op != WIRE_OP_SET && m->op != WIRE_OP_REPLY) || !m->has_val ||
	    !m->has_ver || m->has_id || m->has_re || m->ob || m->ms || m->err || m->body || m->res || !m->io ||
	    (m->val.type != TSYNC_TYPE_INT && m->val.type != TSYNC_TYPE_BOOL) || m->ver > INT64_MAX)
		return 0;
	for (const unsigned char *p = (const unsigned char *)m->io; *p; p++, nl++)
		if (!plain(*p) || nl >= WIRE_NAME_MAX)
			return 0;
	if (nl == 0)
		return 0;
	if (m->val.type == TSYNC_TYPE_BOOL) {
		vl = 1;
	} else {
		mag = m->val.u.i < 0 ? 0u - (uint64_t)m->val.u.i : (uint64_t)m->val.u.i;
		vl = u64_len(mag) + (m->val.u.i < 0);
	}
	verl = u64_len(m->ver);
	/* [,] the head and the name; ","val": and the value; ,"ver": and the
	 * version; } */
	need = (w->n_msgs ? 1 : 0) + (m->op == WIRE_OP_SET ? sizeof(IO_SET) : sizeof(IO_REPLY)) - 1 + nl + 8 + vl +
	       7 + verl + 1;
	used = w->b.len + close_len(w);
	if (used > w->limit || need > w->limit - used)
		return -EMSGSIZE;
	if (w->b.cap <= w->b.len + need + 8) /* num_at() writes 8 bytes at a time */
		return 0;
	o = w->b.data + w->b.len;
	if (w->n_msgs)
		*o++ = ',';
	w->last = (size_t)(o - w->b.data);
	o = m->op == WIRE_OP_SET ? LIT(o, IO_SET) : LIT(o, IO_REPLY);
	memcpy(o, m->io, nl);
	o += nl;
	o = LIT(o, "\",\"val\":");
	if (m->val.type == TSYNC_TYPE_BOOL) {
		*o++ = m->val.u.b ? '1' : '0';
	} else {
		if (m->val.u.i < 0)
			*o++ = '-';
		o = num_n(o, mag, vl - (m->val.u.i < 0));
	}
	o = LIT(o, ",\"ver\":");
	o = num_n(o, m->ver, verl);
	*o++ = '}';
	*o = '\0';
	w->b.len = (size_t)(o - w->b.data);
	w->n_msgs++;
	return 1;
}

#undef IO_SET
#undef IO_REPLY
#undef LIT

int wire__add(struct wire_writer *w, const struct wire_msg *m)
{
	size_t mark = w->b.len;
	int r;

	if (w->n_msgs >= w->codec->max_msgs)
		return -EMSGSIZE;
	wire__run_copy(w);
	r = add_io_fast(w, m);
	if (r)
		return r < 0 ? r : 0;
	r = check_msg(w->codec, m);
	if (r < 0)
		return r;
	if (w->n_msgs) {
		r = put(w, ",", 1);
		if (r < 0)
			goto leave;
	}
	w->last = w->b.len;
	r = put_msg(w, m);
	if (r < 0)
		goto leave;
	w->n_msgs++;
	return 0;
leave:
	truncate_to(w, mark);
	return r;
}

void wire__run_copy(struct wire_writer *w)
{
	if (!w->run_len)
		return;
	memcpy(w->b.data + w->b.len - w->run_len, w->run_src, w->run_len);
	w->b.data[w->b.len] = '\0';
	w->run_len = 0;
	w->run_next = NULL;
}

/* Whether a message of len bytes (and its comma) fits, and where it goes:
 * 0, -EMSGSIZE, -ENOMEM. */
static int raw_room(struct wire_writer *w, size_t len)
{
	size_t need = (w->n_msgs ? 1 : 0) + len, used = w->b.len + close_len(w);

	if (w->n_msgs >= w->codec->max_msgs || used > w->limit || need > w->limit - used)
		return -EMSGSIZE;
	/* wire__begin() reserved the whole datagram, the tag's room included. */
	if (w->b.cap <= w->b.len + need)
		return buf__reserve(&w->b, need);
	return 0;
}

int wire__add_raw_comma_slow(struct wire_writer *w, const char *msg, size_t len)
{
	int r = raw_room(w, len);

	if (r < 0)
		return r;
	/* The run before ends here; this one starts, its comma (in the
	 * datagram, not the first message) the one before msg. */
	wire__run_copy(w);
	w->run_src = w->n_msgs ? msg - 1 : msg;
	w->run_len = (w->n_msgs ? 1 : 0) + len;
	w->last = w->b.len + (w->n_msgs ? 1 : 0);
	w->b.len += w->run_len;
	w->n_msgs++;
	/* What the inline part checks while the run goes on: raw_room()'s
	 * bounds, which stay while the datagram does (its limit and close). */
	w->run_next = msg + len + 1;
	w->run_end = w->limit - close_len(w);
	w->run_max = w->codec->max_msgs;
	return 0;
}

int wire__finish(struct wire_writer *w, const void **out, size_t *len)
{
	int r;

	wire__run_copy(w);
	/* put() always kept room for these, and wire__begin() reserved the
	 * tag's after them: no call to append them. */
	if (w->b.cap < w->b.len + 2 + WIRE_TAG_BYTES + 1) {
		r = buf__reserve(&w->b, 2 + WIRE_TAG_BYTES);
		if (r < 0)
			return r;
	}
	memcpy(w->b.data + w->b.len, "]}", 2);
	w->b.len += close_len(w);
	w->b.data[w->b.len] = '\0';
	if (w->codec->key) {
		r = wire__codec_tag(w->codec, w->b.data, w->b.len, (uint8_t *)w->b.data + w->b.len);
		if (r < 0)
			return r;
		w->b.len += WIRE_TAG_BYTES;
		w->b.data[w->b.len] = '\0';
	}
	*out = w->b.data;
	*len = w->b.len;
	return 0;
}

const char *wire__op_name(enum wire_op op)
{
	switch (op) {
	case WIRE_OP_SET:
		return "set";
	case WIRE_OP_REPLY:
		return "reply";
	case WIRE_OP_ASK:
		return "ask";
	case WIRE_OP_PULSE:
		return "pulse";
	case WIRE_OP_REPLY_PULSE:
		return "reply_pulse";
	case WIRE_OP_NONE:
		break;
	}
	return "none";
}

const char *wire__reject_name(tsync_reject r)
{
	return tsync_reject_name(r);
}
