/*
 * lib/store: the LMDB plumbing shared by the state store and the journal.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>

#include "store/env.h"

#define CLAIM_BUCKETS 256

static pthread_mutex_t claims_lock = PTHREAD_MUTEX_INITIALIZER;
static struct env_claim *claims[CLAIM_BUCKETS];

static struct env_claim **claim_bucket(const struct env_claim *c)
{
	uint64_t h = ((uint64_t)c->dev * 0x9e3779b97f4a7c15u) ^ ((uint64_t)c->ino * 0xbf58476d1ce4e5b9u);

	return &claims[(h >> 32) % CLAIM_BUCKETS];
}

int env__claim(struct env_claim *c)
{
	struct env_claim **head = claim_bucket(c);
	int r = 0;

	pthread_mutex_lock(&claims_lock);
	for (struct env_claim *o = *head; o; o = o->next) {
		if (o->dev == c->dev && o->ino == c->ino) {
			r = -EBUSY;
			goto leave;
		}
	}
	c->next = *head;
	c->pprev = head;
	if (*head)
		(*head)->pprev = &c->next;
	*head = c;
	c->held = true;
leave:
	pthread_mutex_unlock(&claims_lock);
	return r;
}

void env__release(struct env_claim *c)
{
	if (!c->held)
		return;
	pthread_mutex_lock(&claims_lock);
	*c->pprev = c->next;
	if (c->next)
		c->next->pprev = c->pprev;
	pthread_mutex_unlock(&claims_lock);
	c->next = NULL;
	c->pprev = NULL;
	c->held = false;
}

int env__error(int rc)
{
	return rc == ENOMEM ? -ENOMEM : TSYNC_ESTORE;
}

void env__put_le64(unsigned char *p, uint64_t x)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(x >> (8 * i));
}

uint64_t env__get_le64(const unsigned char *p)
{
	uint64_t x = 0;
	for (int i = 0; i < 8; i++)
		x |= (uint64_t)p[i] << (8 * i);
	return x;
}

int env__txn_begin(MDB_env *env, unsigned flags, bool may_resize, MDB_txn **txn)
{
	int rc = mdb_txn_begin(env, NULL, flags, txn);

	if (rc == MDB_MAP_RESIZED && may_resize) {
		rc = mdb_env_set_mapsize(env, 0);
		if (rc == 0)
			rc = mdb_txn_begin(env, NULL, flags, txn);
	}
	return rc;
}

int env__grow(MDB_env *env, const struct logger *log, const char *what, const char *dir)
{
	MDB_envinfo info;
	int rc;

	mdb_env_info(env, &info);
	rc = mdb_env_set_mapsize(env, info.me_mapsize * 2);
	if (rc == 0)
		log_warn(log, "%s: %s: map full, grown to %zu bytes", what, dir, info.me_mapsize * 2);
	return rc;
}

int env__open(const char *what, const char *dir, unsigned maxdbs, size_t map_size, const struct logger *log,
              struct env_claim *claim, MDB_env **env)
{
	const char *step = "mdb_env_create";
	struct stat st;
	int dead = 0;
	int rc, r;

	*env = NULL;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		log_error(log, "%s: %s: mkdir: %s", what, dir, strerror(-r));
		return r;
	}
	if (stat(dir, &st) < 0) {
		r = -errno;
		log_error(log, "%s: %s: stat: %s", what, dir, strerror(-r));
		return r;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_error(log, "%s: %s: not a directory", what, dir);
		return -ENOTDIR;
	}
	claim->dev = st.st_dev;
	claim->ino = st.st_ino;
	r = env__claim(claim);
	if (r < 0) {
		log_error(log, "%s: %s: already open in this process", what, dir);
		return r;
	}
	rc = mdb_env_create(env);
	if (rc == 0) {
		step = "mdb_env_set_maxdbs";
		rc = mdb_env_set_maxdbs(*env, maxdbs);
	}
	if (rc == 0) {
		step = "mdb_env_set_mapsize";
		rc = mdb_env_set_mapsize(*env, map_size);
	}
	/* MDB_NOTLS: read transactions are not bound to the thread that began
	 * them. LMDB opens its files with O_CLOEXEC itself. */
	if (rc == 0) {
		step = "mdb_env_open";
		rc = mdb_env_open(*env, dir, MDB_NOTLS, 0600);
	}
	if (rc != 0) {
		log_error(log, "%s: %s: %s: %s", what, dir, step, mdb_strerror(rc));
		if (*env)
			mdb_env_close(*env);
		*env = NULL;
		env__release(claim);
		return env__error(rc);
	}
	/* A process that died inside a read transaction leaves a reader slot behind. */
	if (mdb_reader_check(*env, &dead) == 0 && dead > 0)
		log_warn(log, "%s: %s: cleared %d stale reader slot(s)", what, dir, dead);
	return 0;
}

void env__put_be64(unsigned char *p, uint64_t x)
{
	for (int i = 7; i >= 0; i--, x >>= 8)
		p[i] = (unsigned char)x;
}

uint64_t env__get_be64(const unsigned char *p)
{
	uint64_t x = 0;

	for (int i = 0; i < 8; i++)
		x = x << 8 | p[i];
	return x;
}

int env__value_append(struct buf *b, const tsync_value *v)
{
	unsigned char p[8];
	uint64_t bits;

	switch (v->type) {
	case TSYNC_TYPE_NONE:
		return 0;
	case TSYNC_TYPE_BOOL:
		p[0] = v->u.b ? 1 : 0;
		return buf__append(b, p, 1);
	case TSYNC_TYPE_INT:
		env__put_le64(p, (uint64_t)v->u.i);
		return buf__append(b, p, 8);
	case TSYNC_TYPE_FLOAT:
		memcpy(&bits, &v->u.f, sizeof(bits));
		env__put_le64(p, bits);
		return buf__append(b, p, 8);
	case TSYNC_TYPE_STRING:
		return v->u.s && *v->u.s ? buf__append(b, v->u.s, strlen(v->u.s)) : 0;
	default:
		return -EINVAL;
	}
}

int env__value_read(unsigned type, const unsigned char *p, size_t n, struct buf *str, tsync_value *v)
{
	uint64_t bits;
	double f;

	switch (type) {
	case TSYNC_TYPE_NONE:
		if (n != 0)
			return -EBADMSG;
		v->type = TSYNC_TYPE_NONE;
		v->u.i = 0;
		return 0;
	case TSYNC_TYPE_BOOL:
		if (n != 1 || p[0] > 1)
			return -EBADMSG;
		*v = tsync_bool(p[0] != 0);
		return 0;
	case TSYNC_TYPE_INT:
		if (n != 8)
			return -EBADMSG;
		*v = tsync_int((int64_t)env__get_le64(p));
		return 0;
	case TSYNC_TYPE_FLOAT:
		if (n != 8)
			return -EBADMSG;
		bits = env__get_le64(p);
		memcpy(&f, &bits, sizeof(f));
		*v = tsync_float(f);
		return 0;
	case TSYNC_TYPE_STRING:
		/* A string with an embedded NUL was not written by us. */
		if (n > 0 && memchr(p, '\0', n))
			return -EBADMSG;
		buf__reset(str);
		if (buf__reserve(str, n) < 0)
			return -ENOMEM;
		if (n > 0)
			memcpy(str->data, p, n);
		str->data[n] = '\0';
		str->len = n;
		*v = tsync_string(str->data);
		return 0;
	default:
		return -EBADMSG;
	}
}
