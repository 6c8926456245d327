/*
 * lib/store: the LMDB plumbing shared by the state store and the journal.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <pthread.h>

#include "store/env.h"

static pthread_mutex_t claims_lock = PTHREAD_MUTEX_INITIALIZER;
static struct env_claim *claims;

int env__claim(struct env_claim *c)
{
	int r = 0;

	pthread_mutex_lock(&claims_lock);
	for (struct env_claim *o = claims; o; o = o->next) {
		if (o->dev == c->dev && o->ino == c->ino) {
			r = -EBUSY;
			goto leave;
		}
	}
	c->next = claims;
	claims = c;
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
	for (struct env_claim **pp = &claims; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	pthread_mutex_unlock(&claims_lock);
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
