/*
 * lib/store: records (see records.h). The staged changes are a list kept in
 * the order they came, the last of a key winning; they stay in memory until
 * the store says its transaction is durable, because LMDB may abort it (a
 * full map is grown and the whole batch written again).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "store/env.h"
#include "store/hook.h"
#include "store/records.h"

#define RECORDS_MAX_KEY 511

struct staged_rec {
	char *key;
	char *value; /* NULL: delete */
};

struct records {
	struct store *store;
	MDB_dbi dbi;
	const struct logger *log;
	struct staged_rec *staged;
	size_t nstaged, cap;
};

static bool hook_pending(void *ud)
{
	struct records *r = ud;
	return r->nstaged > 0;
}

static int hook_write(void *ud, MDB_txn *txn, uint64_t *written)
{
	struct records *r = ud;

	for (size_t i = 0; i < r->nstaged; i++) {
		const struct staged_rec *e = &r->staged[i];
		MDB_val key = {strlen(e->key), e->key};
		int rc;

		if (e->value) {
			MDB_val data = {strlen(e->value), e->value};
			rc = mdb_put(txn, r->dbi, &key, &data, 0);
			*written += key.mv_size + data.mv_size;
		} else {
			rc = mdb_del(txn, r->dbi, &key, NULL);
			if (rc == MDB_NOTFOUND)
				rc = 0;
			*written += key.mv_size;
		}
		if (rc != 0)
			return rc;
	}
	return 0;
}

static void clear_staged(struct records *r)
{
	for (size_t i = 0; i < r->nstaged; i++) {
		free(r->staged[i].key);
		free(r->staged[i].value);
	}
	r->nstaged = 0;
}

static void hook_committed(void *ud)
{
	clear_staged(ud);
}

static const struct store_hook records_hook = {hook_pending, hook_write, hook_committed, hook_committed};

int records__open(struct store *s, const char *name, const struct logger *log, struct records **ret)
{
	struct records *r;
	MDB_txn *txn = NULL;
	const char *what = "mdb_txn_begin";
	int rc, err;

	if (!s || !name || !*name || !ret)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->store = s;
	r->log = log;
	rc = store__txn_begin(s, 0, &txn);
	if (rc != 0)
		goto fail;
	what = "mdb_dbi_open";
	rc = mdb_dbi_open(txn, name, MDB_CREATE, &r->dbi);
	if (rc != 0)
		goto fail;
	what = "mdb_txn_commit";
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc != 0)
		goto fail;
	err = store__add_hook(s, &records_hook, r);
	if (err < 0)
		goto leave;
	*ret = r;
	return 0;
fail:
	log_error(log, "records %s: %s: %s", name, what, mdb_strerror(rc));
	err = env__error(rc);
leave:
	if (txn)
		mdb_txn_abort(txn);
	free(r);
	return err;
}

void records__close(struct records *r)
{
	if (!r)
		return;
	store__remove_hook(r->store, r);
	clear_staged(r);
	free(r->staged);
	free(r);
}

int records__put(struct records *r, const char *key, const char *value)
{
	struct staged_rec e;
	size_t klen;

	if (!r || !key || !*key)
		return -EINVAL;
	klen = strlen(key);
	if (klen > RECORDS_MAX_KEY)
		return -ENAMETOOLONG;
	e.key = util__strdup(key);
	e.value = value ? util__strdup(value) : NULL;
	if (!e.key || (value && !e.value)) {
		free(e.key);
		free(e.value);
		return -ENOMEM;
	}
	/* The same key again replaces its staged change, so a record updated
	 * many times between commits costs one entry. */
	for (size_t i = 0; i < r->nstaged; i++)
		if (!strcmp(r->staged[i].key, key)) {
			free(r->staged[i].value);
			r->staged[i].value = e.value;
			free(e.key);
			return 0;
		}
	if (r->nstaged == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		struct staged_rec *p = realloc(r->staged, cap * sizeof(*p));
		if (!p) {
			free(e.key);
			free(e.value);
			return -ENOMEM;
		}
		r->staged = p;
		r->cap = cap;
	}
	r->staged[r->nstaged++] = e;
	return 0;
}

static char *dup_val(const MDB_val *v)
{
	char *s = malloc(v->mv_size + 1);

	if (s) {
		memcpy(s, v->mv_data, v->mv_size);
		s[v->mv_size] = '\0';
	}
	return s;
}

int records__get(struct records *r, const char *key, char **value)
{
	MDB_txn *txn = NULL;
	MDB_val k, v;
	int rc;

	if (!r || !key || !*key || !value)
		return -EINVAL;
	for (size_t i = r->nstaged; i-- > 0;)
		if (!strcmp(r->staged[i].key, key)) {
			if (!r->staged[i].value)
				return -ENOENT;
			*value = util__strdup(r->staged[i].value);
			return *value ? 0 : -ENOMEM;
		}
	rc = store__txn_begin(r->store, MDB_RDONLY, &txn);
	if (rc != 0)
		return env__error(rc);
	k.mv_size = strlen(key);
	k.mv_data = (void *)key;
	rc = mdb_get(txn, r->dbi, &k, &v);
	if (rc == 0) {
		*value = dup_val(&v);
		rc = *value ? 0 : ENOMEM;
	}
	mdb_txn_abort(txn);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	return rc ? env__error(rc) : 0;
}

int records__scan(struct records *r, const char *from, const char *to, records_fn fn, void *ud)
{
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	struct buf kb = {0}, vb = {0};
	size_t tolen = to ? strlen(to) : 0;
	int rc, op = MDB_SET_RANGE;

	if (!r || !fn)
		return -EINVAL;
	rc = store__txn_begin(r->store, MDB_RDONLY, &txn);
	if (rc != 0)
		return env__error(rc);
	rc = mdb_cursor_open(txn, r->dbi, &cur);
	if (rc != 0)
		goto leave;
	k.mv_size = from ? strlen(from) : 0;
	k.mv_data = (void *)(from ? from : "");
	if (k.mv_size == 0)
		op = MDB_FIRST;
	for (rc = mdb_cursor_get(cur, &k, &v, (MDB_cursor_op)op); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		size_t n = k.mv_size < tolen ? k.mv_size : tolen;
		int cmp;
		if (to) {
			cmp = memcmp(k.mv_data, to, n);
			if (cmp > 0 || (cmp == 0 && k.mv_size >= tolen))
				break;
		}
		/* NUL-terminated copies: the callback gets C strings. */
		buf__reset(&kb);
		buf__reset(&vb);
		if (buf__reserve(&kb, k.mv_size + 1) < 0 || buf__reserve(&vb, v.mv_size + 1) < 0) {
			rc = ENOMEM;
			goto leave;
		}
		memcpy(kb.data, k.mv_data, k.mv_size);
		kb.data[k.mv_size] = '\0';
		memcpy(vb.data, v.mv_data, v.mv_size);
		vb.data[v.mv_size] = '\0';
		if (fn(ud, (const char *)kb.data, (const char *)vb.data) != 0)
			break;
	}
	if (rc == MDB_NOTFOUND)
		rc = 0;
leave:
	if (cur)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	buf__free(&kb);
	buf__free(&vb);
	if (rc == ENOMEM)
		return -ENOMEM;
	return rc ? env__error(rc) : 0;
}

size_t records__count(struct records *r)
{
	MDB_txn *txn = NULL;
	MDB_stat st;
	size_t n = 0;

	if (!r || store__txn_begin(r->store, MDB_RDONLY, &txn) != 0)
		return 0;
	if (mdb_stat(txn, r->dbi, &st) == 0)
		n = st.ms_entries;
	mdb_txn_abort(txn);
	return n;
}

size_t records__staged(const struct records *r)
{
	return r ? r->nstaged : 0;
}
