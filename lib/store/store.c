/*
 * lib/store: the LMDB state store (see store.h for the layout).
 *
 * Record format of the "values" database. The key is the thing name, its
 * bytes without a terminating NUL (LMDB keys carry their length). The data is
 * little-endian binary, so that a store written on one controller can be read
 * back on any other (e.g. by thingsync-dr):
 *
 *   offset  size  field
 *   0       1     record format, currently 1
 *   1       8     version (u64)
 *   9       8     owner boot (u64)
 *   17      1     type (tsync_type)
 *   18      n     payload:
 *                   NONE   n = 0
 *                   BOOL   n = 1, 0 or 1
 *                   INT    n = 8, two's complement
 *                   FLOAT  n = 8, the IEEE 754 bits of the double
 *                   STRING n = the string's length, its bytes without the NUL
 *
 * The "meta" database holds "boot" -> u64 little-endian, 8 bytes.
 *
 * The other databases hold what makes requests exactly once across restarts
 * (see store.h). Their keys start with a name and a NUL, then big-endian
 * numbers, so that the records of one sender sort together and in order:
 *   "windows"  SENDER NUL OB(8)          -> 1 | top(8) | bits(16 x 8)
 *              SENDER NUL OB(8) SLOT(4)  -> 1 | id(8) | flags(1) | errlen(4) | err | res
 *                                           (flags: 1 err present, 2 res present)
 *   "requests" PEER NUL OB(8) ID(8)      -> 1 | type(1) | pulse(1) | ms(4) |
 *                                           value record length(4) | value record |
 *                                           5 strings: thing, type name, role, cmd, body,
 *                                           each length(4) (0xffffffff: NULL) | bytes
 *   "setreqs"  THING                     -> a value record as in "values" (version
 *                                           and boot 0)
 *   "cumuls", "records"  KEY              -> text (the cumul module's, the application's)
 * Numbers in records are little-endian like the values'.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <lmdb.h>

#include "store/env.h"
#include "store/hook.h"
#include "store/store.h"

#define STORE_DEFAULT_MAP_SIZE ((size_t)64 << 20)
/* Room for the databases of the modules that hook into the store (history). */
#define STORE_MAX_DBS          16
#define STORE_MAX_HOOKS        4
#define STORE_NO_STRING        0xffffffffu
#define STORE_RECORD_FORMAT    1
#define STORE_RECORD_HEADER    18
/* How often a commit doubles the map and tries again when the map is full. */
#define STORE_MAX_GROWS 16

/* One staged value; `thing` and a string value are owned. */
struct staged {
	char *thing;
	uint64_t version;
	uint64_t boot;
	tsync_value v;
};

/* One staged write to the request databases, applied in staging order. */
enum staged_db { DB_WINDOWS, DB_REQUESTS, DB_SETREQS, DB_CUMULS, DB_RECORDS, DB_COUNT };
struct staged_op {
	enum staged_db db;
	bool del; /* delete the key (or, with prefix, every key it begins) */
	bool prefix;
	unsigned char *key; /* owned; data follows it in the same allocation */
	size_t klen;
	unsigned char *data;
	size_t dlen;
};

struct store {
	MDB_env *env;
	MDB_dbi meta;
	MDB_dbi values;
	MDB_dbi dbs[DB_COUNT];
	struct staged_op *ops;
	size_t nops, ops_cap;
	uint64_t written_bytes, written_commits;
	/* A commit left its meta page unsynced (store__commit_unsynced): the
	 * next store__commit() syncs, staged or not. */
	bool unsynced;
	const struct logger *log;
	char *dir;
	struct env_claim claim; /* its directory, held while open */
	/*
	 * While store__load_values() holds a read transaction, the map must
	 * not be resized (LMDB forbids it with any transaction active).
	 */
	bool in_load;

	struct staged *staged;
	size_t nstaged;
	size_t staged_cap;
	struct name_index staged_ix; /* thing name -> index into staged; keys borrowed from it */

	/* Other modules' writes in our transactions (store/hook.h). */
	struct {
		const struct store_hook *h;
		void *ud;
	} hooks[STORE_MAX_HOOKS];
	size_t nhooks;
};

static bool hooks_pending(const struct store *s)
{
	for (size_t i = 0; i < s->nhooks; i++)
		if (s->hooks[i].h->pending(s->hooks[i].ud))
			return true;
	return false;
}

/* Logs an LMDB failure and maps it to a return code. */
static int store_fail(const struct store *s, const char *what, int rc)
{
	log_error(s->log, "store: %s: %s: %s", s->dir, what, mdb_strerror(rc));
	return env__error(rc);
}

static int encode_value(struct buf *b, uint64_t version, uint64_t boot, const tsync_value *v)
{
	unsigned char head[STORE_RECORD_HEADER];
	int r;

	head[0] = STORE_RECORD_FORMAT;
	env__put_le64(head + 1, version);
	env__put_le64(head + 9, boot);
	head[17] = (unsigned char)v->type;
	buf__reset(b);
	r = buf__append(b, head, sizeof(head));
	return r < 0 ? r : env__value_append(b, v);
}

/*
 * Decodes a record; a string value is copied into `sbuf` so that it is
 * NUL-terminated, and v->u.s points there until sbuf changes.
 */
static int decode_value(const MDB_val *data, struct buf *sbuf, uint64_t *version, uint64_t *boot,
                        tsync_value *v)
{
	const unsigned char *p = data->mv_data;

	if (data->mv_size < STORE_RECORD_HEADER || p[0] != STORE_RECORD_FORMAT)
		return -EBADMSG;
	*version = env__get_le64(p + 1);
	*boot = env__get_le64(p + 9);
	return env__value_read(p[17], p + STORE_RECORD_HEADER, data->mv_size - STORE_RECORD_HEADER, sbuf, v);
}

static void clear_staged(struct store *s)
{
	for (size_t i = 0; i < s->nstaged; i++) {
		free(s->staged[i].thing);
		value__clear(&s->staged[i].v);
	}
	s->nstaged = 0;
	name_index__free(&s->staged_ix);
	for (size_t i = 0; i < s->nops; i++)
		free(s->ops[i].key);
	s->nops = 0;
}

/* Opens the named databases and makes sure they exist, in one write transaction. */
static int open_dbs(struct store *s)
{
	MDB_txn *txn = NULL;
	const char *what;
	int rc;

	what = "mdb_txn_begin";
	rc = env__txn_begin(s->env, 0, !s->in_load, &txn);
	if (rc != 0)
		goto leave;
	what = "mdb_dbi_open(meta)";
	rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta);
	if (rc != 0)
		goto leave;
	what = "mdb_dbi_open(values)";
	rc = mdb_dbi_open(txn, "values", MDB_CREATE, &s->values);
	if (rc != 0)
		goto leave;
	what = "mdb_dbi_open(windows)";
	rc = mdb_dbi_open(txn, "windows", MDB_CREATE, &s->dbs[DB_WINDOWS]);
	if (rc != 0)
		goto leave;
	what = "mdb_dbi_open(requests)";
	rc = mdb_dbi_open(txn, "requests", MDB_CREATE, &s->dbs[DB_REQUESTS]);
	if (rc != 0)
		goto leave;
	what = "mdb_dbi_open(setreqs)";
	rc = mdb_dbi_open(txn, "setreqs", MDB_CREATE, &s->dbs[DB_SETREQS]);
	if (rc != 0)
		goto leave;
	what = "mdb_dbi_open(cumuls)";
	rc = mdb_dbi_open(txn, "cumuls", MDB_CREATE, &s->dbs[DB_CUMULS]);
	if (rc)
		goto leave;
	what = "mdb_dbi_open(records)";
	rc = mdb_dbi_open(txn, "records", MDB_CREATE, &s->dbs[DB_RECORDS]);
	if (rc != 0)
		goto leave;
	what = "mdb_txn_commit";
	rc = mdb_txn_commit(txn);
	txn = NULL;
leave:
	if (txn)
		mdb_txn_abort(txn);
	if (rc != 0)
		log_error(s->log, "store: %s: %s: %s", s->dir, what, mdb_strerror(rc));
	return rc;
}

int store__open(const char *dir, size_t map_size, const struct logger *log, struct store **ret)
{
	struct store *s = NULL;
	int rc;
	int r;

	if (!dir || !*dir || !ret)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->log = log;
	s->dir = util__strdup(dir);
	if (!s->dir) {
		r = -ENOMEM;
		goto leave;
	}
	r = env__open("store", dir, STORE_MAX_DBS, map_size ? map_size : STORE_DEFAULT_MAP_SIZE, log, &s->claim,
	              &s->env);
	if (r < 0)
		goto leave;
	rc = open_dbs(s);
	if (rc != 0) {
		r = env__error(rc);
		goto leave;
	}
	*ret = s;
	return 0;
leave:
	if (s->env)
		mdb_env_close(s->env);
	env__release(&s->claim);
	free(s->dir);
	free(s);
	return r;
}

void store__close(struct store *s)
{
	if (!s)
		return;
	if (s->env && store__dirty(s) && store__commit(s) < 0)
		log_error(s->log, "store: %s: %zu staged value(s) lost at close", s->dir, s->nstaged);
	clear_staged(s);
	free(s->staged);
	free(s->ops);
	if (s->env)
		mdb_env_close(s->env);
	env__release(&s->claim);
	free(s->dir);
	free(s);
}

void store__abandon(struct store *s)
{
	if (!s)
		return;
	/* What is staged was never durable: a crash loses it, and so do we.
	 * An unsynced meta page stays as a crash leaves it: in the cache. */
	clear_staged(s);
	for (size_t i = 0; i < s->nhooks; i++)
		s->hooks[i].h->discard(s->hooks[i].ud);
	s->unsynced = false;
	store__close(s);
}

int store__next_boot(struct store *s, uint64_t floor, uint64_t *boot)
{
	static const char key_boot[] = "boot";
	MDB_txn *txn = NULL;
	MDB_val key = {sizeof(key_boot) - 1, (void *)key_boot};
	MDB_val data;
	unsigned char bytes[8];
	uint64_t stored = 0;
	uint64_t next;
	int rc;
	int r;

	if (!s || !boot)
		return -EINVAL;
	rc = env__txn_begin(s->env, 0, !s->in_load, &txn);
	if (rc != 0)
		return store_fail(s, "mdb_txn_begin", rc);
	rc = mdb_get(txn, s->meta, &key, &data);
	if (rc == 0) {
		if (data.mv_size != sizeof(bytes)) {
			log_error(s->log, "store: %s: boot counter has %zu bytes, not 8", s->dir,
			          data.mv_size);
			r = TSYNC_ESTORE;
			goto leave;
		}
		stored = env__get_le64(data.mv_data);
	} else if (rc != MDB_NOTFOUND) {
		r = store_fail(s, "mdb_get(boot)", rc);
		goto leave;
	}
	if (stored == UINT64_MAX) {
		log_error(s->log, "store: %s: boot counter exhausted", s->dir);
		r = -EOVERFLOW;
		goto leave;
	}
	next = stored + 1 > floor ? stored + 1 : floor;
	env__put_le64(bytes, next);
	data.mv_size = sizeof(bytes);
	data.mv_data = bytes;
	rc = mdb_put(txn, s->meta, &key, &data, 0);
	if (rc != 0) {
		r = store_fail(s, "mdb_put(boot)", rc);
		goto leave;
	}
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc != 0) {
		r = store_fail(s, "mdb_txn_commit", rc);
		goto leave;
	}
	*boot = next;
	r = 0;
leave:
	if (txn)
		mdb_txn_abort(txn);
	return r;
}

int store__stage_value(struct store *s, const char *thing, uint64_t version, uint64_t boot,
                       const tsync_value *v)
{
	struct staged *e;
	tsync_value copy;
	uint32_t idx;
	size_t len;
	int r;

	if (!s || !thing || !v || (unsigned)v->type > TSYNC_TYPE_STRING)
		return -EINVAL;
	len = strlen(thing);
	/* LMDB refuses empty keys and keys longer than its compile-time limit. */
	if (len == 0)
		return -EINVAL;
	if (len > (size_t)mdb_env_get_maxkeysize(s->env))
		return -ENAMETOOLONG;
	r = value__copy(&copy, v);
	if (r < 0)
		return r;

	/* A later stage of the same thing replaces the earlier one: one write per thing per commit. */
	if (name_index__get(&s->staged_ix, thing, &idx) == 0) {
		e = &s->staged[idx];
		value__clear(&e->v);
		e->v = copy;
		e->version = version;
		e->boot = boot;
		return 0;
	}

	if (s->nstaged == s->staged_cap) {
		size_t cap = s->staged_cap ? s->staged_cap * 2 : 16;
		struct staged *p = realloc(s->staged, cap * sizeof(*p));
		if (!p) {
			r = -ENOMEM;
			goto leave;
		}
		s->staged = p;
		s->staged_cap = cap;
	}
	e = &s->staged[s->nstaged];
	e->thing = util__strdup(thing);
	if (!e->thing) {
		r = -ENOMEM;
		goto leave;
	}
	r = name_index__put(&s->staged_ix, e->thing, (uint32_t)s->nstaged);
	if (r < 0) {
		free(e->thing);
		goto leave;
	}
	e->version = version;
	e->boot = boot;
	e->v = copy;
	s->nstaged++;
	return 0;
leave:
	value__clear(&copy);
	return r;
}

static int apply_op(struct store *s, MDB_txn *txn, const struct staged_op *op, const char **what)
{
	MDB_dbi dbi = s->dbs[op->db];
	MDB_val key = {op->klen, op->key};
	MDB_val data = {op->dlen, op->data};
	MDB_cursor *cur;
	int rc;

	if (!op->del) {
		*what = "mdb_put";
		return mdb_put(txn, dbi, &key, &data, 0);
	}
	*what = "mdb_del";
	if (!op->prefix) {
		rc = mdb_del(txn, dbi, &key, NULL);
		return rc == MDB_NOTFOUND ? 0 : rc;
	}
	rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc != 0)
		return rc;
	for (rc = mdb_cursor_get(cur, &key, &data, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &data, MDB_NEXT)) {
		if (key.mv_size < op->klen || memcmp(key.mv_data, op->key, op->klen))
			break;
		rc = mdb_cursor_del(cur, 0);
		if (rc != 0)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND || rc == 0 ? 0 : rc;
}

/* Writes every staged value in one transaction; 0 or an LMDB code. */
static int commit_once(struct store *s, struct buf *rec, const char **what, uint64_t *written)
{
	MDB_txn *txn = NULL;
	int rc;

	*what = "mdb_txn_begin";
	rc = env__txn_begin(s->env, 0, !s->in_load, &txn);
	if (rc != 0)
		return rc;
	*what = "mdb_put(values)";
	for (size_t i = 0; i < s->nstaged; i++) {
		const struct staged *e = &s->staged[i];
		MDB_val key = {strlen(e->thing), e->thing};
		MDB_val data;

		/* Values were validated when staged: only memory can fail here. */
		if (encode_value(rec, e->version, e->boot, &e->v) < 0) {
			rc = ENOMEM;
			goto leave;
		}
		data.mv_size = rec->len;
		data.mv_data = rec->data;
		rc = mdb_put(txn, s->values, &key, &data, 0);
		if (rc != 0)
			goto leave;
		*written += key.mv_size + data.mv_size;
	}
	for (size_t i = 0; i < s->nops; i++) {
		rc = apply_op(s, txn, &s->ops[i], what);
		if (rc != 0)
			goto leave;
		*written += s->ops[i].klen + s->ops[i].dlen;
	}
	*what = "hook";
	for (size_t i = 0; i < s->nhooks; i++) {
		rc = s->hooks[i].h->write(s->hooks[i].ud, txn, written);
		if (rc != 0)
			goto leave;
	}
	*what = "mdb_txn_commit";
	rc = mdb_txn_commit(txn);
	txn = NULL;
leave:
	if (txn)
		mdb_txn_abort(txn);
	return rc;
}

int store__commit(struct store *s)
{
	struct buf rec = {0};
	const char *what = "";
	uint64_t written = 0;
	int rc;
	int grows = 0;

	if (!s)
		return -EINVAL;
	if (s->nstaged == 0 && s->nops == 0 && !hooks_pending(s)) {
		if (!s->unsynced)
			return 0;
		rc = mdb_env_sync(s->env, 1);
		if (rc != 0) {
			log_error(s->log, "store: %s: mdb_env_sync: %s", s->dir, mdb_strerror(rc));
			return env__error(rc);
		}
		s->unsynced = false;
		s->written_commits++;
		return 0;
	}
	for (;;) {
		written = 0;
		rc = commit_once(s, &rec, &what, &written);
		if (rc != MDB_MAP_FULL || s->in_load || grows >= STORE_MAX_GROWS)
			break;
		/*
		 * The map is full: grow it and write the whole batch again. The
		 * failed transaction was aborted, so nothing of it is on disk
		 * and no transaction is active, as mdb_env_set_mapsize() needs.
		 */
		rc = env__grow(s->env, s->log, "store", s->dir);
		if (rc != 0) {
			what = "mdb_env_set_mapsize";
			break;
		}
		grows++;
	}
	buf__free(&rec);
	if (rc != 0) {
		/* The staged values stay staged, so a later commit can try again. */
		log_error(s->log, "store: %s: %s: %s", s->dir, what, mdb_strerror(rc));
		return env__error(rc);
	}
	s->written_bytes += written;
	s->written_commits++;
	s->unsynced = false;
	clear_staged(s);
	for (size_t i = 0; i < s->nhooks; i++)
		s->hooks[i].h->committed(s->hooks[i].ud);
	return 0;
}

int store__commit_unsynced(struct store *s)
{
	bool was = s ? s->unsynced : false;
	int r, rc;

	if (!s)
		return -EINVAL;
	if (s->nstaged == 0 && s->nops == 0 && !hooks_pending(s))
		return 0;
	/* LMDB still syncs the data pages first, so the store stays whole
	 * whatever a power cut interrupts; only this transaction's meta page
	 * waits in the page cache, where a crash of the process cannot take
	 * it back. */
	rc = mdb_env_set_flags(s->env, MDB_NOMETASYNC, 1);
	if (rc != 0) {
		log_error(s->log, "store: %s: mdb_env_set_flags: %s", s->dir, mdb_strerror(rc));
		return env__error(rc);
	}
	r = store__commit(s);
	mdb_env_set_flags(s->env, MDB_NOMETASYNC, 0);
	s->unsynced = r == 0 ? true : was;
	return r;
}

bool store__dirty(const struct store *s)
{
	return s && (s->nstaged > 0 || s->nops > 0 || s->unsynced || hooks_pending(s));
}

int store__add_hook(struct store *s, const struct store_hook *h, void *ud)
{
	if (s->nhooks == STORE_MAX_HOOKS)
		return -ENOSPC;
	s->hooks[s->nhooks].h = h;
	s->hooks[s->nhooks].ud = ud;
	s->nhooks++;
	return 0;
}

void store__remove_hook(struct store *s, void *ud)
{
	for (size_t i = 0; s && i < s->nhooks; i++)
		if (s->hooks[i].ud == ud) {
			memmove(&s->hooks[i], &s->hooks[i + 1], (s->nhooks - i - 1) * sizeof(s->hooks[0]));
			s->nhooks--;
			return;
		}
}

MDB_env *store__env(struct store *s)
{
	return s->env;
}

int store__txn_begin(struct store *s, unsigned flags, MDB_txn **txn)
{
	return env__txn_begin(s->env, flags, !s->in_load, txn);
}

void store__written(const struct store *s, uint64_t *bytes, uint64_t *commits)
{
	*bytes = s ? s->written_bytes : 0;
	*commits = s ? s->written_commits : 0;
}

static int load_value_records(struct store *s, MDB_dbi dbi, const char *what, store_value_fn fn, void *ud);

int store__load_values(struct store *s, store_value_fn fn, void *ud)
{
	if (!s || !fn)
		return -EINVAL;
	return load_value_records(s, s->values, "value", fn, ud);
}

/* --- windows, requests and set requests ------------------------------------------ */

static void put_le32(unsigned char *p, uint32_t x)
{
	for (int i = 0; i < 4; i++, x >>= 8)
		p[i] = (unsigned char)x;
}

static uint32_t get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* NAME NUL then n big-endian numbers. */
static int make_key(struct store *s, struct buf *k, const char *name, const uint64_t *nums, size_t n,
                    size_t last_bytes)
{
	unsigned char be[8];
	size_t len;
	int r;

	if (!name || !*name)
		return -EINVAL;
	len = strlen(name);
	if (len + 1 + 8 * n > (size_t)mdb_env_get_maxkeysize(s->env))
		return -ENAMETOOLONG;
	buf__reset(k);
	r = buf__append(k, name, len + 1);
	for (size_t i = 0; r == 0 && i < n; i++) {
		env__put_be64(be, nums[i]);
		/* The last number may be shorter (a slot): its low bytes. */
		if (i == n - 1 && last_bytes < 8)
			r = buf__append(k, be + 8 - last_bytes, last_bytes);
		else
			r = buf__append(k, be, 8);
	}
	return r;
}

/* Stages one write (key and data copied into one allocation). */
static int stage_op(struct store *s, enum staged_db db, bool del, bool prefix, const struct buf *key,
                    const struct buf *data)
{
	struct staged_op *op;
	size_t dlen = data ? data->len : 0;

	if (s->nops == s->ops_cap) {
		size_t cap = s->ops_cap ? s->ops_cap * 2 : 16;
		struct staged_op *p = realloc(s->ops, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		s->ops = p;
		s->ops_cap = cap;
	}
	op = &s->ops[s->nops];
	op->key = malloc(key->len + dlen + 1);
	if (!op->key)
		return -ENOMEM;
	memcpy(op->key, key->data, key->len);
	op->klen = key->len;
	op->data = op->key + key->len;
	if (dlen)
		memcpy(op->data, data->data, dlen);
	op->dlen = dlen;
	op->db = db;
	op->del = del;
	op->prefix = prefix;
	s->nops++;
	return 0;
}

static int append_le32(struct buf *b, uint32_t x)
{
	unsigned char le[4];

	put_le32(le, x);
	return buf__append(b, le, sizeof(le));
}

static int append_le64(struct buf *b, uint64_t x)
{
	unsigned char le[8];

	env__put_le64(le, x);
	return buf__append(b, le, sizeof(le));
}

static int append_string(struct buf *b, const char *str)
{
	int r;

	if (!str)
		return append_le32(b, STORE_NO_STRING);
	r = append_le32(b, (uint32_t)strlen(str));
	return r < 0 ? r : buf__append(b, str, strlen(str));
}

int store__stage_window(struct store *s, const char *sender, uint64_t origin_boot, uint64_t top,
                        const uint64_t bits[STORE_WINDOW_WORDS])
{
	struct buf k = {0}, d = {0};
	unsigned char fmt = STORE_RECORD_FORMAT;
	int r;

	if (!s || !bits)
		return -EINVAL;
	r = make_key(s, &k, sender, &origin_boot, 1, 8);
	if (r == 0)
		r = buf__append(&d, &fmt, 1);
	if (r == 0)
		r = append_le64(&d, top);
	for (size_t i = 0; r == 0 && i < STORE_WINDOW_WORDS; i++)
		r = append_le64(&d, bits[i]);
	if (r == 0)
		r = stage_op(s, DB_WINDOWS, false, false, &k, &d);
	buf__free(&k);
	buf__free(&d);
	return r;
}

int store__stage_answer(struct store *s, const char *sender, uint64_t origin_boot, uint32_t slot, uint64_t id,
                        const char *err, const char *res)
{
	uint64_t nums[2] = {origin_boot, slot};
	struct buf k = {0}, d = {0};
	unsigned char head[2] = {STORE_RECORD_FORMAT, (unsigned char)((err ? 1 : 0) | (res ? 2 : 0))};
	int r;

	if (!s)
		return -EINVAL;
	r = make_key(s, &k, sender, nums, 2, 4);
	if (r == 0 && !err && !res) {
		r = stage_op(s, DB_WINDOWS, true, false, &k, NULL);
		goto leave;
	}
	if (r == 0)
		r = buf__append(&d, head, 1);
	if (r == 0)
		r = append_le64(&d, id);
	if (r == 0)
		r = buf__append(&d, head + 1, 1);
	if (r == 0)
		r = append_le32(&d, err ? (uint32_t)strlen(err) : 0);
	if (r == 0 && err)
		r = buf__append(&d, err, strlen(err));
	if (r == 0 && res)
		r = buf__append(&d, res, strlen(res));
	if (r == 0)
		r = stage_op(s, DB_WINDOWS, false, false, &k, &d);
leave:
	buf__free(&k);
	buf__free(&d);
	return r;
}

int store__stage_drop_window(struct store *s, const char *sender, uint64_t origin_boot)
{
	struct buf k = {0};
	int r;

	if (!s)
		return -EINVAL;
	r = make_key(s, &k, sender, &origin_boot, 1, 8);
	if (r == 0)
		r = stage_op(s, DB_WINDOWS, true, true, &k, NULL);
	buf__free(&k);
	return r;
}

/* Splits a key NAME NUL REST; false if it has no NUL or an empty name. */
static bool split_key(const MDB_val *key, size_t *name_len)
{
	const unsigned char *nul = memchr(key->mv_data, '\0', key->mv_size);

	if (!nul || nul == key->mv_data)
		return false;
	*name_len = (size_t)(nul - (const unsigned char *)key->mv_data);
	return true;
}

/* Iterates one database with a read transaction, from key `from` (NULL: the
 * first) up to but not including key `to` (NULL: the last); fn returns < 0
 * to stop. */
typedef int (*record_fn)(struct store *s, const MDB_val *key, const MDB_val *data, void *ctx);
static int load_range(struct store *s, MDB_dbi dbi, const char *from, const char *to, record_fn fn, void *ctx)
{
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_val key, data;
	size_t tolen = to ? strlen(to) : 0;
	int rc, r = 0;

	rc = env__txn_begin(s->env, MDB_RDONLY, !s->in_load, &txn);
	if (rc != 0)
		return store_fail(s, "mdb_txn_begin", rc);
	rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc != 0) {
		r = store_fail(s, "mdb_cursor_open", rc);
		goto leave;
	}
	/*
	 * fn runs inside the read transaction: it may stage values (memory
	 * only) and even commit, but the map cannot grow meanwhile.
	 */
	s->in_load = true;
	key.mv_size = from ? strlen(from) : 0;
	key.mv_data = (void *)from;
	for (rc = mdb_cursor_get(cur, &key, &data, key.mv_size ? MDB_SET_RANGE : MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &data, MDB_NEXT)) {
		if (to) {
			int cmp = memcmp(key.mv_data, to, key.mv_size < tolen ? key.mv_size : tolen);
			if (cmp > 0 || (cmp == 0 && key.mv_size >= tolen))
				break;
		}
		r = fn(s, &key, &data, ctx);
		if (r < 0)
			goto leave;
	}
	if (rc != 0 && rc != MDB_NOTFOUND)
		r = store_fail(s, "mdb_cursor_get", rc);
leave:
	s->in_load = false;
	if (cur)
		mdb_cursor_close(cur);
	if (txn)
		mdb_txn_abort(txn);
	return r;
}

static int load_db(struct store *s, MDB_dbi dbi, record_fn fn, void *ctx)
{
	return load_range(s, dbi, NULL, NULL, fn, ctx);
}

struct window_load {
	store_window_fn wfn;
	store_answer_fn afn;
	void *ud;
	struct buf name, err, res;
};

static int copy_z(struct buf *b, const void *p, size_t n)
{
	int r;

	buf__reset(b);
	r = buf__reserve(b, n);
	if (r < 0)
		return r;
	if (n)
		memcpy(b->data, p, n);
	b->data[n] = '\0';
	b->len = n;
	return 0;
}

static int window_record(struct store *s, const MDB_val *key, const MDB_val *data, void *ctx)
{
	struct window_load *wl = ctx;
	const unsigned char *k = key->mv_data, *d = data->mv_data;
	size_t nl, rest;
	uint64_t ob;
	int r;

	if (!split_key(key, &nl))
		goto bad;
	rest = key->mv_size - nl - 1;
	if (rest != 8 && rest != 12)
		goto bad;
	r = copy_z(&wl->name, k, nl);
	if (r < 0)
		return r;
	ob = env__get_be64(k + nl + 1);
	if (rest == 8) {
		uint64_t bits[STORE_WINDOW_WORDS];
		if (data->mv_size != 1 + 8 + 8 * STORE_WINDOW_WORDS || d[0] != STORE_RECORD_FORMAT)
			goto bad;
		for (size_t i = 0; i < STORE_WINDOW_WORDS; i++)
			bits[i] = env__get_le64(d + 9 + 8 * i);
		return wl->wfn(wl->ud, wl->name.data, ob, env__get_le64(d + 1), bits);
	} else {
		uint32_t elen;
		uint8_t flags;
		if (data->mv_size < 14 || d[0] != STORE_RECORD_FORMAT)
			goto bad;
		flags = d[9];
		elen = get_le32(d + 10);
		if (elen > data->mv_size - 14 || memchr(d + 14, '\0', data->mv_size - 14))
			goto bad;
		r = copy_z(&wl->err, d + 14, elen);
		if (r == 0)
			r = copy_z(&wl->res, d + 14 + elen, data->mv_size - 14 - elen);
		if (r < 0)
			return r;
		return wl->afn(wl->ud, wl->name.data, ob, env__get_le64(d + 1), flags & 1 ? wl->err.data : NULL,
		               flags & 2 ? wl->res.data : NULL);
	}
bad:
	/* One unreadable record must not keep the controller from starting;
	 * the window it belonged to is then less than it was, which the
	 * log says. */
	log_warn(s->log, "store: %s: skipping a malformed window record", s->dir);
	return 0;
}

int store__load_windows(struct store *s, store_window_fn wfn, store_answer_fn afn, void *ud)
{
	struct window_load wl = {.wfn = wfn, .afn = afn, .ud = ud};
	int r;

	if (!s || !wfn || !afn)
		return -EINVAL;
	r = load_db(s, s->dbs[DB_WINDOWS], window_record, &wl);
	buf__free(&wl.name);
	buf__free(&wl.err);
	buf__free(&wl.res);
	return r;
}

int store__stage_request(struct store *s, const struct store_request *q)
{
	uint64_t nums[2];
	struct buf k = {0}, d = {0}, v = {0};
	unsigned char head[3];
	int r;

	if (!s || !q || (q->is_pulse && (!q->thing || (unsigned)q->val.type > TSYNC_TYPE_STRING)))
		return -EINVAL;
	nums[0] = q->origin_boot;
	nums[1] = q->id;
	head[0] = STORE_RECORD_FORMAT;
	head[1] = q->type;
	head[2] = q->is_pulse;
	r = make_key(s, &k, q->peer, nums, 2, 8);
	if (r == 0)
		r = buf__append(&d, head, sizeof(head));
	if (r == 0)
		r = append_le32(&d, q->ms);
	if (r == 0)
		r = encode_value(&v, 0, 0, q->is_pulse ? &q->val : &(tsync_value){.type = TSYNC_TYPE_NONE});
	if (r == 0)
		r = append_le32(&d, (uint32_t)v.len);
	if (r == 0)
		r = buf__append(&d, v.data, v.len);
	if (r == 0)
		r = append_string(&d, q->thing);
	if (r == 0)
		r = append_string(&d, q->type_name);
	if (r == 0)
		r = append_string(&d, q->role);
	if (r == 0)
		r = append_string(&d, q->cmd);
	if (r == 0)
		r = append_string(&d, q->body);
	if (r == 0)
		r = stage_op(s, DB_REQUESTS, false, false, &k, &d);
	buf__free(&k);
	buf__free(&d);
	buf__free(&v);
	return r;
}

int store__stage_request_done(struct store *s, const char *peer, uint64_t origin_boot, uint64_t id)
{
	uint64_t nums[2] = {origin_boot, id};
	struct buf k = {0};
	int r;

	if (!s)
		return -EINVAL;
	r = make_key(s, &k, peer, nums, 2, 8);
	if (r == 0)
		r = stage_op(s, DB_REQUESTS, true, false, &k, NULL);
	buf__free(&k);
	return r;
}

struct request_load {
	store_request_fn fn;
	void *ud;
	struct buf name, sval, str[5];
};

static int request_record(struct store *s, const MDB_val *key, const MDB_val *data, void *ctx)
{
	struct request_load *rl = ctx;
	const unsigned char *k = key->mv_data, *d = data->mv_data, *end = d + data->mv_size;
	const char **fields[5];
	struct store_request q;
	uint64_t ver, boot;
	uint32_t vlen;
	size_t nl;
	MDB_val vrec;
	int r;

	memset(&q, 0, sizeof(q));
	fields[0] = &q.thing;
	fields[1] = &q.type_name;
	fields[2] = &q.role;
	fields[3] = &q.cmd;
	fields[4] = &q.body;
	if (!split_key(key, &nl) || key->mv_size != nl + 1 + 16 || data->mv_size < 11 ||
	    d[0] != STORE_RECORD_FORMAT)
		goto bad;
	r = copy_z(&rl->name, k, nl);
	if (r < 0)
		return r;
	q.peer = rl->name.data;
	q.origin_boot = env__get_be64(k + nl + 1);
	q.id = env__get_be64(k + nl + 9);
	q.type = d[1];
	q.is_pulse = d[2] != 0;
	q.ms = get_le32(d + 3);
	vlen = get_le32(d + 7);
	d += 11;
	if (vlen > (size_t)(end - d))
		goto bad;
	vrec.mv_data = (void *)d;
	vrec.mv_size = vlen;
	r = decode_value(&vrec, &rl->sval, &ver, &boot, &q.val);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		goto bad;
	d += vlen;
	for (size_t i = 0; i < 5; i++) {
		uint32_t n;
		if (end - d < 4)
			goto bad;
		n = get_le32(d);
		d += 4;
		if (n == STORE_NO_STRING)
			continue;
		if (n > (size_t)(end - d) || memchr(d, '\0', n))
			goto bad;
		r = copy_z(&rl->str[i], d, n);
		if (r < 0)
			return r;
		*fields[i] = rl->str[i].data;
		d += n;
	}
	if (q.is_pulse && !q.thing)
		goto bad;
	rl->fn(rl->ud, &q);
	return 0;
bad:
	log_warn(s->log, "store: %s: skipping a malformed pending request", s->dir);
	return 0;
}

int store__load_requests(struct store *s, store_request_fn fn, void *ud)
{
	struct request_load rl = {.fn = fn, .ud = ud};
	int r;

	if (!s || !fn)
		return -EINVAL;
	r = load_db(s, s->dbs[DB_REQUESTS], request_record, &rl);
	buf__free(&rl.name);
	buf__free(&rl.sval);
	for (size_t i = 0; i < 5; i++)
		buf__free(&rl.str[i]);
	return r;
}

int store__stage_setreq(struct store *s, const char *thing, const tsync_value *to_be)
{
	struct buf k = {0}, d = {0};
	size_t len;
	int r;

	if (!s || !thing || !*thing || (to_be && (unsigned)to_be->type > TSYNC_TYPE_STRING))
		return -EINVAL;
	len = strlen(thing);
	if (len > (size_t)mdb_env_get_maxkeysize(s->env))
		return -ENAMETOOLONG;
	r = buf__append(&k, thing, len);
	if (r == 0 && to_be)
		r = encode_value(&d, 0, 0, to_be);
	if (r == 0)
		r = stage_op(s, DB_SETREQS, !to_be, false, &k, to_be ? &d : NULL);
	buf__free(&k);
	buf__free(&d);
	return r;
}

/* Owned values and set requests: a thing's name -> a value record. */
struct value_load {
	store_value_fn fn;
	void *ud;
	const char *what;
	struct buf name, sval;
};

static int value_record(struct store *s, const MDB_val *key, const MDB_val *data, void *ctx)
{
	struct value_load *sl = ctx;
	uint64_t ver, boot;
	tsync_value v;
	int r;

	if (memchr(key->mv_data, '\0', key->mv_size))
		goto bad;
	r = copy_z(&sl->name, key->mv_data, key->mv_size);
	if (r < 0)
		return r;
	r = decode_value(data, &sl->sval, &ver, &boot, &v);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		goto bad;
	sl->fn(sl->ud, sl->name.data, ver, boot, &v);
	return 0;
bad:
	/* One unreadable record must not keep the controller from starting. */
	log_warn(s->log, "store: %s: skipping a malformed %s", s->dir, sl->what);
	return 0;
}

static int load_value_records(struct store *s, MDB_dbi dbi, const char *what, store_value_fn fn, void *ud)
{
	struct value_load sl = {.fn = fn, .ud = ud, .what = what};
	int r = load_db(s, dbi, value_record, &sl);

	buf__free(&sl.name);
	buf__free(&sl.sval);
	return r;
}

int store__load_setreqs(struct store *s, store_value_fn fn, void *ud)
{
	if (!s || !fn)
		return -EINVAL;
	return load_value_records(s, s->dbs[DB_SETREQS], "set request", fn, ud);
}

/* --- text records: the cumuls (lib/cumul) and the application's records -------- */

/* Opaque key -> text records of one database: `text` NULL stages the key's
 * deletion. */
static int stage_text(struct store *s, enum staged_db db, const char *key, const char *text)
{
	struct buf k = {0}, d = {0};
	size_t len;
	int r;

	if (!s || !key || !*key)
		return -EINVAL;
	len = strlen(key);
	if (len > (size_t)mdb_env_get_maxkeysize(s->env))
		return -ENAMETOOLONG;
	r = buf__append(&k, key, len);
	if (r == 0 && text)
		r = buf__append(&d, text, strlen(text));
	if (r == 0)
		r = stage_op(s, db, !text, false, &k, text ? &d : NULL);
	buf__free(&k);
	buf__free(&d);
	return r;
}

struct text_load {
	store_cumul_fn fn;
	void *ud;
	struct buf key, json;
};

static int text_record(struct store *s, const MDB_val *key, const MDB_val *data, void *ctx)
{
	struct text_load *cl = ctx;
	int r = copy_z(&cl->key, key->mv_data, key->mv_size);

	(void)s;
	if (r == 0)
		r = copy_z(&cl->json, data->mv_data, data->mv_size);
	if (r < 0)
		return r;
	cl->fn(cl->ud, cl->key.data, cl->json.data);
	return 0;
}

static int load_text(struct store *s, enum staged_db db, store_cumul_fn fn, void *ud)
{
	struct text_load cl = {.fn = fn, .ud = ud};
	int r;

	if (!s || !fn)
		return -EINVAL;
	r = load_db(s, s->dbs[db], text_record, &cl);
	buf__free(&cl.key);
	buf__free(&cl.json);
	return r;
}

int store__stage_cumul(struct store *s, const char *key, const char *json)
{
	return stage_text(s, DB_CUMULS, key, json);
}

int store__load_cumuls(struct store *s, store_cumul_fn fn, void *ud)
{
	return load_text(s, DB_CUMULS, fn, ud);
}

int store__stage_record(struct store *s, const char *key, const char *text)
{
	return stage_text(s, DB_RECORDS, key, text);
}

int store__load_records(struct store *s, store_cumul_fn fn, void *ud)
{
	return load_text(s, DB_RECORDS, fn, ud);
}

int store__scan_records(struct store *s, const char *from, const char *to, store_cumul_fn fn, void *ud)
{
	struct text_load cl = {.fn = fn, .ud = ud};
	int r;

	if (!s || !fn)
		return -EINVAL;
	r = load_range(s, s->dbs[DB_RECORDS], from, to, text_record, &cl);
	buf__free(&cl.key);
	buf__free(&cl.json);
	return r;
}

int store__get_record(struct store *s, const char *key, char **text)
{
	MDB_txn *txn = NULL;
	MDB_val k, d;
	int rc, r = 0;

	if (!s || !key || !*key || !text)
		return -EINVAL;
	rc = env__txn_begin(s->env, MDB_RDONLY, !s->in_load, &txn);
	if (rc != 0)
		return store_fail(s, "mdb_txn_begin", rc);
	k.mv_size = strlen(key);
	k.mv_data = (void *)key;
	rc = mdb_get(txn, s->dbs[DB_RECORDS], &k, &d);
	if (rc == MDB_NOTFOUND) {
		r = -ENOENT;
	} else if (rc != 0) {
		r = store_fail(s, "mdb_get", rc);
	} else if (!(*text = malloc(d.mv_size + 1))) {
		r = -ENOMEM;
	} else {
		memcpy(*text, d.mv_data, d.mv_size);
		(*text)[d.mv_size] = '\0';
	}
	mdb_txn_abort(txn);
	return r;
}

/*
 * thingsync-dr reads a state store without a process of ours holding it
 * open: LMDB's own read-only mode, no lock file made where there is none,
 * so inspecting a directory never changes it. The layout stays this file's
 * business; the tool only sees store_info and the values.
 */
static int inspect_txn(MDB_txn *txn, struct store_info *info, store_value_fn fn, void *ud)
{
	MDB_val key = {4, (void *)"boot"}, data;
	MDB_dbi meta, values;
	MDB_cursor *cur = NULL;
	struct buf name = {0}, sbuf = {0};
	int rc;

	rc = mdb_dbi_open(txn, "meta", 0, &meta);
	if (rc == 0)
		rc = mdb_get(txn, meta, &key, &data);
	if (rc == MDB_NOTFOUND) {
		/* A store is made with its boot in its first commit: without it, it never finished. */
		snprintf(info->problem, sizeof(info->problem), "no boot counter");
		return 0;
	}
	if (rc != 0)
		return rc;
	if (data.mv_size != 8) {
		snprintf(info->problem, sizeof(info->problem), "boot counter of %zu bytes", data.mv_size);
		return 0;
	}
	info->boot = env__get_le64(data.mv_data);
	rc = mdb_dbi_open(txn, "values", 0, &values);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc == 0)
		rc = mdb_cursor_open(txn, values, &cur);
	while (rc == 0 && (rc = mdb_cursor_get(cur, &key, &data, info->values ? MDB_NEXT : MDB_FIRST)) == 0) {
		uint64_t version, boot;
		tsync_value v;

		info->values++;
		if (decode_value(&data, &sbuf, &version, &boot, &v) < 0 || key.mv_size == 0) {
			snprintf(info->problem, sizeof(info->problem), "a value record that does not decode");
			continue;
		}
		if (boot > info->max_value_boot)
			info->max_value_boot = boot;
		if (!fn)
			continue;
		buf__reset(&name);
		if (buf__reserve(&name, key.mv_size) < 0) {
			rc = ENOMEM;
			break;
		}
		memcpy(name.data, key.mv_data, key.mv_size);
		name.data[key.mv_size] = '\0';
		fn(ud, name.data, version, boot, &v);
	}
	if (rc == MDB_NOTFOUND)
		rc = 0;
	if (cur)
		mdb_cursor_close(cur);
	buf__free(&name);
	buf__free(&sbuf);
	return rc;
}

int store__inspect(const char *dir, struct store_info *info, store_value_fn fn, void *ud)
{
	char path[4096];
	struct stat st;
	MDB_env *env = NULL;
	MDB_txn *txn = NULL;
	unsigned flags = MDB_RDONLY | MDB_NOTLS;
	int rc;

	if (!dir || !info)
		return -EINVAL;
	memset(info, 0, sizeof(*info));
	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	if (stat(path, &st) < 0) {
		snprintf(info->problem, sizeof(info->problem), "no data.mdb");
		return -ENOENT;
	}
	/* LMDB would take an empty file for a new environment: as lost as none. */
	if (st.st_size == 0) {
		snprintf(info->problem, sizeof(info->problem), "data.mdb is empty");
		return -ENOENT;
	}
	info->present = true;
	snprintf(path, sizeof(path), "%s/lock.mdb", dir);
	if (access(path, F_OK) < 0)
		flags |= MDB_NOLOCK;
	rc = mdb_env_create(&env);
	if (rc == 0)
		rc = mdb_env_set_maxdbs(env, STORE_MAX_DBS);
	if (rc == 0)
		rc = mdb_env_open(env, dir, flags, 0600);
	if (rc == 0)
		rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
	if (rc == 0)
		rc = inspect_txn(txn, info, fn, ud);
	if (txn)
		mdb_txn_abort(txn);
	if (env)
		mdb_env_close(env);
	if (rc == ENOMEM)
		return -ENOMEM;
	if (rc != 0) {
		snprintf(info->problem, sizeof(info->problem), "unreadable: %s", mdb_strerror(rc));
		return TSYNC_ESTORE;
	}
	if (!info->problem[0] && info->max_value_boot > info->boot)
		snprintf(info->problem, sizeof(info->problem),
		         "a value of boot %llu above the boot counter %llu: the counter went back",
		         (unsigned long long)info->max_value_boot, (unsigned long long)info->boot);
	return 0;
}
