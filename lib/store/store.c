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
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <lmdb.h>

#include "store/env.h"
#include "store/store.h"

#define STORE_DEFAULT_MAP_SIZE ((size_t)64 << 20)
#define STORE_MAX_DBS          8
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

struct store {
	MDB_env *env;
	MDB_dbi meta;
	MDB_dbi values;
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
};

/* Logs an LMDB failure and maps it to a return code. */
static int store_fail(const struct store *s, const char *what, int rc)
{
	log_error(s->log, "store: %s: %s: %s", s->dir, what, mdb_strerror(rc));
	return env__error(rc);
}

static int encode_value(struct buf *b, uint64_t version, uint64_t boot, const tsync_value *v)
{
	unsigned char head[STORE_RECORD_HEADER];
	unsigned char payload[8];
	const void *p = payload;
	size_t n = 0;
	int r;

	head[0] = STORE_RECORD_FORMAT;
	env__put_le64(head + 1, version);
	env__put_le64(head + 9, boot);
	head[17] = (unsigned char)v->type;
	switch (v->type) {
	case TSYNC_TYPE_NONE:
		break;
	case TSYNC_TYPE_BOOL:
		payload[0] = v->u.b ? 1 : 0;
		n = 1;
		break;
	case TSYNC_TYPE_INT:
		env__put_le64(payload, (uint64_t)v->u.i);
		n = 8;
		break;
	case TSYNC_TYPE_FLOAT: {
		uint64_t bits;
		memcpy(&bits, &v->u.f, sizeof(bits));
		env__put_le64(payload, bits);
		n = 8;
		break;
	}
	case TSYNC_TYPE_STRING:
		p = v->u.s ? v->u.s : "";
		n = strlen(p);
		break;
	default:
		return -EINVAL;
	}
	buf__reset(b);
	r = buf__append(b, head, sizeof(head));
	if (r == 0 && n > 0)
		r = buf__append(b, p, n);
	return r;
}

/*
 * Decodes a record; a string value is copied into `sbuf` so that it is
 * NUL-terminated, and v->u.s points there until sbuf changes.
 */
static int decode_value(const MDB_val *data, struct buf *sbuf, uint64_t *version, uint64_t *boot,
                        tsync_value *v)
{
	const unsigned char *p = data->mv_data;
	size_t n;
	int r;

	if (data->mv_size < STORE_RECORD_HEADER || p[0] != STORE_RECORD_FORMAT)
		return -EBADMSG;
	*version = env__get_le64(p + 1);
	*boot = env__get_le64(p + 9);
	n = data->mv_size - STORE_RECORD_HEADER;
	switch (p[17]) {
	case TSYNC_TYPE_NONE:
		if (n != 0)
			return -EBADMSG;
		v->type = TSYNC_TYPE_NONE;
		v->u.i = 0;
		return 0;
	case TSYNC_TYPE_BOOL:
		if (n != 1 || p[STORE_RECORD_HEADER] > 1)
			return -EBADMSG;
		*v = tsync_bool(p[STORE_RECORD_HEADER] != 0);
		return 0;
	case TSYNC_TYPE_INT:
		if (n != 8)
			return -EBADMSG;
		*v = tsync_int((int64_t)env__get_le64(p + STORE_RECORD_HEADER));
		return 0;
	case TSYNC_TYPE_FLOAT: {
		uint64_t bits;
		double f;
		if (n != 8)
			return -EBADMSG;
		bits = env__get_le64(p + STORE_RECORD_HEADER);
		memcpy(&f, &bits, sizeof(f));
		*v = tsync_float(f);
		return 0;
	}
	case TSYNC_TYPE_STRING:
		/* A string with an embedded NUL was not written by us. */
		if (memchr(p + STORE_RECORD_HEADER, '\0', n))
			return -EBADMSG;
		buf__reset(sbuf);
		r = buf__reserve(sbuf, n);
		if (r < 0)
			return r;
		if (n > 0)
			memcpy(sbuf->data, p + STORE_RECORD_HEADER, n);
		sbuf->data[n] = '\0';
		sbuf->len = n;
		*v = tsync_string(sbuf->data);
		return 0;
	}
	return -EBADMSG;
}

static void clear_staged(struct store *s)
{
	for (size_t i = 0; i < s->nstaged; i++) {
		free(s->staged[i].thing);
		value__clear(&s->staged[i].v);
	}
	s->nstaged = 0;
	name_index__free(&s->staged_ix);
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
	if (s->env)
		mdb_env_close(s->env);
	env__release(&s->claim);
	free(s->dir);
	free(s);
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

/* Writes every staged value in one transaction; 0 or an LMDB code. */
static int commit_once(struct store *s, struct buf *rec, const char **what)
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
	int rc;
	int grows = 0;

	if (!s)
		return -EINVAL;
	if (s->nstaged == 0)
		return 0;
	for (;;) {
		rc = commit_once(s, &rec, &what);
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
	clear_staged(s);
	return 0;
}

bool store__dirty(const struct store *s)
{
	return s && s->nstaged > 0;
}

int store__load_values(struct store *s, store_value_fn fn, void *ud)
{
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_val key;
	MDB_val data;
	struct buf name = {0};
	struct buf str = {0};
	int rc;
	int r = 0;

	if (!s || !fn)
		return -EINVAL;
	rc = env__txn_begin(s->env, MDB_RDONLY, !s->in_load, &txn);
	if (rc != 0)
		return store_fail(s, "mdb_txn_begin", rc);
	rc = mdb_cursor_open(txn, s->values, &cur);
	if (rc != 0) {
		r = store_fail(s, "mdb_cursor_open", rc);
		goto leave;
	}
	/*
	 * fn runs inside the read transaction: it may stage values (memory
	 * only) and even commit, but the map cannot grow meanwhile.
	 */
	s->in_load = true;
	for (rc = mdb_cursor_get(cur, &key, &data, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &data, MDB_NEXT)) {
		uint64_t version;
		uint64_t boot;
		tsync_value v;

		buf__reset(&name);
		r = buf__append(&name, key.mv_data, key.mv_size);
		if (r < 0)
			goto leave;
		if (memchr(name.data, '\0', name.len)) {
			log_warn(s->log, "store: %s: skipping a value with a malformed name", s->dir);
			continue;
		}
		r = decode_value(&data, &str, &version, &boot, &v);
		if (r == -ENOMEM)
			goto leave;
		if (r < 0) {
			/* One unreadable record must not keep the controller from starting. */
			log_warn(s->log, "store: %s: skipping malformed value of %s", s->dir, name.data);
			r = 0;
			continue;
		}
		fn(ud, name.data, version, boot, &v);
	}
	if (rc != MDB_NOTFOUND)
		r = store_fail(s, "mdb_cursor_get", rc);
leave:
	s->in_load = false;
	if (cur)
		mdb_cursor_close(cur);
	if (txn)
		mdb_txn_abort(txn);
	buf__free(&name);
	buf__free(&str);
	return r;
}
