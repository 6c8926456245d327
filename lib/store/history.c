/*
 * lib/store: the history of a controller's own things (layout in history.h).
 *
 * The counters of every thing (entries, bytes, oldest time, what was
 * trimmed) are kept in memory, read from the database at open, so that the
 * bounds are checked without reading the tree. A commit works on a copy of
 * them: LMDB may abort the transaction (a full map is grown and the whole
 * batch written again), and then nothing of it happened.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "store/env.h"
#include "store/history.h"
#include "store/hook.h"

#define HIST_FORMAT     1
#define HIST_KEY_TAIL   24 /* time, boot, version */
#define HIST_META_BYTES 17

/* One thing's counters; `name` is owned. */
struct hthing {
	char *name;
	size_t nlen;
	bool off;
	tsync_history_limits lim; /* 0: the controller's */
	uint64_t entries, bytes, trimmed;
	int64_t oldest_us, trimmed_through_us;
	uint64_t last_boot, last_version;
};

struct hstaged {
	uint32_t thing;
	int64_t time_us;
	uint64_t boot, version;
	tsync_value v; /* owned string */
};

struct history {
	struct store *store;
	MDB_dbi dbi;
	const struct logger *log;
	tsync_history_limits lim;
	int64_t (*now_us)(void *ud);
	void *now_ud;

	struct hthing *things, *scratch;
	size_t nthings, cap, scratch_cap;
	struct name_index ix; /* name -> index into things; keys borrowed from them */

	struct hstaged *staged;
	size_t nstaged, staged_cap;
	struct buf key, rec, str;
};

static int64_t realtime(void *ud)
{
	(void)ud;
	return (int64_t)util__realtime_us();
}

/* Times sort as unsigned bytes once the sign bit is flipped. */
static uint64_t time_key(int64_t t)
{
	return (uint64_t)t ^ ((uint64_t)1 << 63);
}

static int64_t key_time(const unsigned char *p)
{
	return (int64_t)(env__get_be64(p) ^ ((uint64_t)1 << 63));
}

/* THING NUL, followed by the time, boot and version when `tail`. */
static int make_key(struct buf *b, const char *thing, size_t nlen, bool tail, int64_t t, uint64_t boot,
                    uint64_t ver)
{
	unsigned char x[HIST_KEY_TAIL];
	int r;

	buf__reset(b);
	r = buf__reserve(b, nlen + 1 + HIST_KEY_TAIL);
	if (r < 0)
		return r;
	memcpy(b->data, thing, nlen);
	b->data[nlen] = '\0';
	b->len = nlen + 1;
	if (tail) {
		env__put_be64(x, time_key(t));
		env__put_be64(x + 8, boot);
		env__put_be64(x + 16, ver);
		memcpy(b->data + b->len, x, sizeof(x));
		b->len += sizeof(x);
	}
	return 0;
}

static int encode_entry(struct buf *b, const tsync_value *v)
{
	unsigned char head[2] = {HIST_FORMAT, (unsigned char)v->type};
	int r;

	buf__reset(b);
	r = buf__append(b, head, sizeof(head));
	return r < 0 ? r : env__value_append(b, v);
}

/* A string value is copied into `str` to be NUL-terminated. */
static int decode_entry(const MDB_val *d, struct buf *str, tsync_value *v)
{
	const unsigned char *p = d->mv_data;

	if (d->mv_size < 2 || p[0] != HIST_FORMAT)
		return -EBADMSG;
	return env__value_read(p[1], p + 2, d->mv_size - 2, str, v);
}

/* The thing's slot, made if missing. */
static int slot(struct history *h, const char *name, size_t nlen, uint32_t *idx)
{
	struct hthing *t;
	int r;

	if (name_index__get(&h->ix, name, idx) == 0)
		return 0;
	if (h->nthings == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 16;
		struct hthing *p = realloc(h->things, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		h->things = p;
		h->cap = cap;
	}
	t = &h->things[h->nthings];
	memset(t, 0, sizeof(*t));
	t->name = malloc(nlen + 1);
	if (!t->name)
		return -ENOMEM;
	memcpy(t->name, name, nlen);
	t->name[nlen] = '\0';
	t->nlen = nlen;
	r = name_index__put(&h->ix, t->name, (uint32_t)h->nthings);
	if (r < 0) {
		free(t->name);
		return r;
	}
	*idx = (uint32_t)h->nthings++;
	return 0;
}

static bool newer(uint64_t b1, uint64_t v1, uint64_t b0, uint64_t v0)
{
	return b1 > b0 || (b1 == b0 && v1 > v0);
}

/* Reads every thing's counters from the database. */
static int load(struct history *h, MDB_txn *txn)
{
	MDB_cursor *cur;
	MDB_val k, d;
	int rc;

	rc = mdb_cursor_open(txn, h->dbi, &cur);
	if (rc != 0)
		return rc;
	for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
		const unsigned char *p = k.mv_data;
		const unsigned char *nul = memchr(p, '\0', k.mv_size);
		size_t nlen;
		struct hthing *t;
		uint32_t i;
		int r;

		if (!nul)
			continue;
		nlen = (size_t)(nul - p);
		if (nlen == 0 || (k.mv_size != nlen + 1 && k.mv_size != nlen + 1 + HIST_KEY_TAIL))
			continue;
		r = slot(h, (const char *)p, nlen, &i);
		if (r < 0) {
			rc = ENOMEM;
			break;
		}
		t = &h->things[i];
		if (k.mv_size == nlen + 1) {
			const unsigned char *m = d.mv_data;
			if (d.mv_size == HIST_META_BYTES && m[0] == HIST_FORMAT) {
				t->trimmed_through_us = (int64_t)env__get_le64(m + 1);
				t->trimmed = env__get_le64(m + 9);
			}
			continue;
		}
		if (t->entries++ == 0)
			t->oldest_us = key_time(p + nlen + 1);
		t->bytes += k.mv_size + d.mv_size;
		if (newer(env__get_be64(p + nlen + 9), env__get_be64(p + nlen + 17), t->last_boot, t->last_version)) {
			t->last_boot = env__get_be64(p + nlen + 9);
			t->last_version = env__get_be64(p + nlen + 17);
		}
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* --- the store's hook ------------------------------------------------------------- */

static bool hook_pending(void *ud)
{
	struct history *h = ud;
	return h->nstaged > 0;
}

static void clear_staged(struct history *h)
{
	for (size_t i = 0; i < h->nstaged; i++)
		value__clear(&h->staged[i].v);
	h->nstaged = 0;
}

/* The thing's first entry, its oldest: the cursor is left on it. */
static int first_entry(struct history *h, MDB_cursor *cur, const struct hthing *t, MDB_val *k, MDB_val *d)
{
	int rc;
	int r = make_key(&h->key, t->name, t->nlen, false, 0, 0, 0);

	if (r < 0)
		return ENOMEM;
	/* One byte past THING NUL: the thing's first record, the counters, is skipped. */
	h->key.data[h->key.len++] = '\0';
	k->mv_size = h->key.len;
	k->mv_data = h->key.data;
	rc = mdb_cursor_get(cur, k, d, MDB_SET_RANGE);
	if (rc != 0)
		return rc;
	if (k->mv_size != t->nlen + 1 + HIST_KEY_TAIL || memcmp(k->mv_data, t->name, t->nlen + 1))
		return MDB_NOTFOUND;
	return 0;
}

/* Trims thing t's oldest entries while they are older than `cutoff` or the
 * thing holds more than `max_bytes` (0: no bound), or only its oldest one
 * when `one`; `total` is the history's bytes. Leaves t->oldest_us right. */
static int trim_thing(struct history *h, MDB_cursor *cur, struct hthing *t, int64_t cutoff,
                      uint64_t max_bytes, bool one, uint64_t *total, uint64_t *written, bool *touched)
{
	MDB_val k, d;
	int rc;

	while (t->entries > 0) {
		int64_t when;
		size_t n;

		rc = first_entry(h, cur, t, &k, &d);
		if (rc == MDB_NOTFOUND) {
			/* The counters said more than the tree holds: believe the tree. */
			t->entries = 0;
			t->bytes = 0;
			break;
		}
		if (rc != 0)
			return rc;
		when = key_time((const unsigned char *)k.mv_data + t->nlen + 1);
		t->oldest_us = when;
		if (!one && !(when < cutoff || (max_bytes && t->bytes > max_bytes)))
			break;
		n = k.mv_size + d.mv_size;
		rc = mdb_cursor_del(cur, 0);
		if (rc != 0)
			return rc;
		*written += k.mv_size;
		t->entries--;
		t->bytes -= n < t->bytes ? n : t->bytes;
		*total -= n < *total ? n : *total;
		t->trimmed++;
		if (when > t->trimmed_through_us)
			t->trimmed_through_us = when;
		*touched = true;
		if (one) {
			/* Once more round the loop, to read the new oldest time. */
			one = false;
			cutoff = INT64_MIN;
			max_bytes = 0;
		}
	}
	if (t->entries == 0)
		t->oldest_us = 0;
	return 0;
}

static int write_meta(struct history *h, MDB_txn *txn, const struct hthing *t, uint64_t *written)
{
	unsigned char m[HIST_META_BYTES];
	MDB_val k, d = {sizeof(m), m};

	if (make_key(&h->key, t->name, t->nlen, false, 0, 0, 0) < 0)
		return ENOMEM;
	m[0] = HIST_FORMAT;
	env__put_le64(m + 1, (uint64_t)t->trimmed_through_us);
	env__put_le64(m + 9, t->trimmed);
	k.mv_size = h->key.len;
	k.mv_data = h->key.data;
	*written += k.mv_size + d.mv_size;
	return mdb_put(txn, h->dbi, &k, &d, 0);
}

static int hook_write(void *ud, MDB_txn *txn, uint64_t *written)
{
	struct history *h = ud;
	MDB_cursor *cur = NULL;
	uint64_t total = 0;
	int64_t now = h->now_us(h->now_ud);
	bool *touched = NULL;
	int rc = 0;

	if (h->nstaged == 0)
		return 0;
	/* Work on a copy of the counters: kept only if the transaction commits. */
	if (h->scratch_cap < h->nthings) {
		struct hthing *p = realloc(h->scratch, h->nthings * sizeof(*p));
		if (!p)
			return ENOMEM;
		h->scratch = p;
		h->scratch_cap = h->nthings;
	}
	memcpy(h->scratch, h->things, h->nthings * sizeof(*h->scratch));
	touched = calloc(h->nthings, sizeof(*touched));
	if (!touched)
		return ENOMEM;
	for (size_t i = 0; i < h->nstaged; i++) {
		const struct hstaged *e = &h->staged[i];
		struct hthing *t = &h->scratch[e->thing];
		MDB_val k, d;

		if (make_key(&h->key, t->name, t->nlen, true, e->time_us, e->boot, e->version) < 0 ||
		    encode_entry(&h->rec, &e->v) < 0) {
			rc = ENOMEM;
			goto leave;
		}
		k.mv_size = h->key.len;
		k.mv_data = h->key.data;
		d.mv_size = h->rec.len;
		d.mv_data = h->rec.data;
		rc = mdb_put(txn, h->dbi, &k, &d, 0);
		if (rc != 0)
			goto leave;
		*written += k.mv_size + d.mv_size;
		if (t->entries++ == 0 || e->time_us < t->oldest_us)
			t->oldest_us = e->time_us;
		t->bytes += k.mv_size + d.mv_size;
		t->last_boot = e->boot;
		t->last_version = e->version;
	}

	/* The oldest go first, in this transaction: the history never holds
	 * more than its bounds once a commit returns. */
	rc = mdb_cursor_open(txn, h->dbi, &cur);
	if (rc != 0)
		goto leave;
	for (size_t i = 0; i < h->nthings; i++)
		total += h->scratch[i].bytes;
	for (size_t i = 0; i < h->nthings; i++) {
		struct hthing *t = &h->scratch[i];
		uint64_t age_ms = t->lim.max_age_ms ? t->lim.max_age_ms : h->lim.max_age_ms;
		int64_t cutoff = age_ms ? now - (int64_t)(age_ms * 1000u) : INT64_MIN;
		bool over_age = t->entries > 0 && t->oldest_us < cutoff;
		bool over_size = t->lim.max_bytes && t->bytes > t->lim.max_bytes;

		if (!over_age && !over_size)
			continue;
		rc = trim_thing(h, cur, t, cutoff, t->lim.max_bytes, false, &total, written, &touched[i]);
		if (rc != 0)
			goto leave;
	}
	/* The controller's size bound: the oldest entry of all things, one at a time. */
	while (h->lim.max_bytes && total > h->lim.max_bytes) {
		struct hthing *oldest = NULL;
		size_t oi = 0;

		for (size_t i = 0; i < h->nthings; i++) {
			struct hthing *t = &h->scratch[i];
			if (t->entries > 0 && (!oldest || t->oldest_us < oldest->oldest_us)) {
				oldest = t;
				oi = i;
			}
		}
		if (!oldest)
			break;
		rc = trim_thing(h, cur, oldest, INT64_MIN, 0, true, &total, written, &touched[oi]);
		if (rc != 0)
			goto leave;
	}
	for (size_t i = 0; i < h->nthings; i++) {
		if (!touched[i])
			continue;
		rc = write_meta(h, txn, &h->scratch[i], written);
		if (rc != 0)
			goto leave;
	}
leave:
	if (cur)
		mdb_cursor_close(cur);
	free(touched);
	return rc;
}

static void hook_committed(void *ud)
{
	struct history *h = ud;

	if (h->nstaged == 0)
		return;
	memcpy(h->things, h->scratch, h->nthings * sizeof(*h->things));
	clear_staged(h);
}

static void hook_discard(void *ud)
{
	clear_staged(ud);
}

static const struct store_hook history_hook = {
    .pending = hook_pending,
    .write = hook_write,
    .committed = hook_committed,
    .discard = hook_discard,
};

/* --- the module's functions ------------------------------------------------------- */

int history__open(struct store *s, const tsync_history_limits *lim, const struct logger *log,
                  struct history **ret)
{
	struct history *h;
	MDB_txn *txn = NULL;
	const char *what = "mdb_txn_begin";
	int rc, r;

	if (!s || !ret)
		return -EINVAL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->store = s;
	h->log = log;
	h->now_us = realtime;
	if (lim)
		h->lim = *lim;
	rc = store__txn_begin(s, 0, &txn);
	if (rc != 0)
		goto fail;
	what = "mdb_dbi_open(history)";
	rc = mdb_dbi_open(txn, "history", MDB_CREATE, &h->dbi);
	if (rc != 0)
		goto fail;
	what = "reading the history";
	rc = load(h, txn);
	if (rc != 0)
		goto fail;
	what = "mdb_txn_commit";
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc != 0)
		goto fail;
	r = store__add_hook(s, &history_hook, h);
	if (r < 0)
		goto leave;
	*ret = h;
	return 0;
fail:
	log_error(log, "history: %s: %s", what, mdb_strerror(rc));
	r = env__error(rc);
leave:
	if (txn)
		mdb_txn_abort(txn);
	h->store = NULL;
	history__close(h);
	return r;
}

void history__close(struct history *h)
{
	if (!h)
		return;
	if (h->store)
		store__remove_hook(h->store, h);
	clear_staged(h);
	free(h->staged);
	for (size_t i = 0; i < h->nthings; i++)
		free(h->things[i].name);
	free(h->things);
	free(h->scratch);
	name_index__free(&h->ix);
	buf__free(&h->key);
	buf__free(&h->rec);
	buf__free(&h->str);
	free(h);
}

void history__set_limits(struct history *h, const tsync_history_limits *lim)
{
	memset(&h->lim, 0, sizeof(h->lim));
	if (lim)
		h->lim = *lim;
}

int history__set_thing(struct history *h, const char *thing, bool off, const tsync_history_limits *lim)
{
	uint32_t i;
	int r;

	if (!thing || !*thing)
		return -EINVAL;
	r = slot(h, thing, strlen(thing), &i);
	if (r < 0)
		return r;
	h->things[i].off = off;
	memset(&h->things[i].lim, 0, sizeof(h->things[i].lim));
	if (lim)
		h->things[i].lim = *lim;
	return 0;
}

void history__set_clock(struct history *h, int64_t (*now_us)(void *ud), void *ud)
{
	h->now_us = now_us ? now_us : realtime;
	h->now_ud = ud;
}

int history__record(struct history *h, const char *thing, int64_t time_us, uint64_t boot, uint64_t version,
                    const tsync_value *v)
{
	struct hstaged *e;
	struct hthing *t;
	uint32_t i;
	size_t nlen;
	int r;

	if (!h || !thing || !v || (unsigned)v->type > TSYNC_TYPE_STRING)
		return -EINVAL;
	nlen = strlen(thing);
	if (nlen == 0)
		return -EINVAL;
	if (nlen + 1 + HIST_KEY_TAIL > (size_t)mdb_env_get_maxkeysize(store__env(h->store)))
		return -ENAMETOOLONG;
	r = slot(h, thing, nlen, &i);
	if (r < 0)
		return r;
	t = &h->things[i];
	if (t->off)
		return 0;
	/* The staged ones are newer than the committed ones: check the last staged first. */
	for (size_t j = h->nstaged; j-- > 0;)
		if (h->staged[j].thing == i) {
			if (!newer(boot, version, h->staged[j].boot, h->staged[j].version))
				return 0;
			goto stage;
		}
	if (t->entries + t->trimmed > 0 && !newer(boot, version, t->last_boot, t->last_version))
		return 0;
stage:
	if (h->nstaged == h->staged_cap) {
		size_t cap = h->staged_cap ? h->staged_cap * 2 : 64;
		struct hstaged *p = realloc(h->staged, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		h->staged = p;
		h->staged_cap = cap;
	}
	e = &h->staged[h->nstaged];
	r = value__copy(&e->v, v);
	if (r < 0)
		return r;
	e->thing = i;
	e->time_us = time_us;
	e->boot = boot;
	e->version = version;
	h->nstaged++;
	return 0;
}

struct query {
	struct history *h;
	int64_t from, to;
	tsync_history_fn fn;
	void *ud;
	tsync_history_window *w;
	bool stop;
};

/* Calls fn for thing t's entries in the window; the cursor is positioned
 * by key. */
static int query_thing(struct query *q, MDB_cursor *cur, const struct hthing *t)
{
	struct history *h = q->h;
	MDB_val k, d;
	int rc;

	if (t->trimmed_through_us && q->from <= t->trimmed_through_us) {
		int64_t to = t->trimmed_through_us < q->to ? t->trimmed_through_us : q->to;
		if (!q->w->trimmed || to > q->w->trimmed_to_us)
			q->w->trimmed_to_us = to;
		q->w->trimmed = true;
		q->w->trimmed_from_us = q->from;
	}
	if (t->entries > 0 && (!q->w->held_from_us || t->oldest_us < q->w->held_from_us))
		q->w->held_from_us = t->oldest_us;
	if (make_key(&h->key, t->name, t->nlen, true, q->from, 0, 0) < 0)
		return ENOMEM;
	k.mv_size = h->key.len;
	k.mv_data = h->key.data;
	for (rc = mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE); rc == 0 && !q->stop;
	     rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
		const unsigned char *p = k.mv_data;
		tsync_history_entry e;

		if (k.mv_size != t->nlen + 1 + HIST_KEY_TAIL || memcmp(p, t->name, t->nlen + 1))
			break;
		e.time_us = key_time(p + t->nlen + 1);
		if (e.time_us > q->to)
			break;
		e.thing = t->name;
		e.owner_boot = env__get_be64(p + t->nlen + 9);
		e.version = env__get_be64(p + t->nlen + 17);
		if (decode_entry(&d, &h->str, &e.value) < 0) {
			log_warn(h->log, "history: an entry of %s is unreadable; skipped", t->name);
			continue;
		}
		q->w->entries++;
		if (q->fn && q->fn(q->ud, &e) != 0)
			q->stop = true;
	}
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* A thing to query: its name (which stays where it is) and its slot (the
 * slots may move if the callback records a new thing). */
struct qthing {
	const char *name;
	uint32_t idx;
};

static int cmp_names(const void *a, const void *b)
{
	const struct qthing *x = a, *y = b;
	return strcmp(x->name, y->name);
}

int history__query(struct history *h, const char *thing, int64_t from_us, int64_t to_us, tsync_history_fn fn,
                   void *ud, tsync_history_window *out)
{
	tsync_history_window w;
	struct query q = {h, from_us, to_us, fn, ud, &w, false};
	struct qthing *order = NULL;
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	size_t n = 0;
	int rc = 0, r = 0;

	if (!h || from_us > to_us)
		return -EINVAL;
	memset(&w, 0, sizeof(w));
	if (thing) {
		uint32_t i;
		if (name_index__get(&h->ix, thing, &i) < 0)
			goto done;
		order = malloc(sizeof(*order));
		if (!order)
			return -ENOMEM;
		order[n].name = h->things[i].name;
		order[n++].idx = i;
	} else {
		order = malloc((h->nthings ? h->nthings : 1) * sizeof(*order));
		if (!order)
			return -ENOMEM;
		for (size_t i = 0; i < h->nthings; i++) {
			order[n].name = h->things[i].name;
			order[n++].idx = (uint32_t)i;
		}
		qsort(order, n, sizeof(*order), cmp_names);
	}
	rc = store__txn_begin(h->store, MDB_RDONLY, &txn);
	if (rc == 0)
		rc = mdb_cursor_open(txn, h->dbi, &cur);
	/* The callback may record a new thing, which may move the slots: each
	 * thing's counters are copied before its entries are read. */
	for (size_t i = 0; rc == 0 && i < n && !q.stop; i++) {
		struct hthing t = h->things[order[i].idx];
		rc = query_thing(&q, cur, &t);
	}
	if (cur)
		mdb_cursor_close(cur);
	if (txn)
		mdb_txn_abort(txn);
	if (rc != 0) {
		log_error(h->log, "history: reading a window: %s", mdb_strerror(rc));
		r = env__error(rc);
	}
done:
	free(order);
	if (out)
		*out = w;
	return r;
}

void history__stats(const struct history *h, tsync_history_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (!h)
		return;
	st->enabled = true;
	st->staged = h->nstaged;
	st->limits = h->lim;
	for (size_t i = 0; i < h->nthings; i++) {
		const struct hthing *t = &h->things[i];
		st->entries += t->entries;
		st->bytes += t->bytes;
		st->trimmed += t->trimmed;
		if (t->entries > 0 && (!st->oldest_us || t->oldest_us < st->oldest_us))
			st->oldest_us = t->oldest_us;
		if (t->trimmed_through_us > st->trimmed_through_us)
			st->trimmed_through_us = t->trimmed_through_us;
	}
}
