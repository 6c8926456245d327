/*
 * lib/store: the journal, pushd's outage buffer (see store.h for the layout).
 *
 * Record format of the "entries" database. The key is the stream sequence,
 * 8 bytes big-endian, so that LMDB's byte order is the numeric order and
 * appends go to the end of the tree (MDB_APPEND). The data is little-endian,
 * like the state store's records, so a journal can be read on any machine:
 *
 *   offset  size  field
 *   0       1     record format, currently 1
 *   1       8     time (i64, microseconds since the epoch)
 *   9       8     owner boot (u64)
 *   17      8     version (u64)
 *   25      1     type (tsync_type)
 *   26      1     length n of the thing name (1..255)
 *   27      n     the thing name, without a NUL
 *   27+n    m     payload, as in the state store: BOOL 1 byte, INT and FLOAT
 *                 8 bytes, STRING its bytes without the NUL, NONE nothing
 *
 * A live measurement is written in format 1, as before. Everything else
 * (a recovered or imported measurement, a recovery gap, a cumul) in format
 * 2, which is format 1 with two bytes after the format byte:
 *
 *   0       1     record format 2
 *   1       1     via (enum journal_via)
 *   2       1     kind (enum journal_kind)
 *   3..     ...   format 1's fields from its offset 1 on (header 29 bytes)
 *
 * with, by kind: a measurement as in format 1; a recovery gap: time = from,
 * owner boot = to (microseconds), name = the owner, type NONE, no payload;
 * a cumul: name = the thing, type NONE, payload = owner length (1 byte),
 * owner, day length (1 byte), day, the cumul's JSON text. A journal written
 * before format 2 reads as it is; "marks" is made when it is first opened.
 *
 * "jmeta" holds "last_seq", "cursor" and "bytes" as u64 little-endian,
 * "source" as text and "stream" as 32 lowercase hex digits (a random 128-bit
 * id made with the journal). The entries are exactly those with cursor < seq
 * <= last_seq: every transaction that changes one of them changes the others.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <lmdb.h>

#include "store/env.h"
#include "store/store.h"

#define JOURNAL_MAP_SIZE      ((size_t)64 << 20)
#define JOURNAL_MAX_DBS        5
#define JOURNAL_RECORD_FORMAT 1
#define JOURNAL_RECORD_HEADER 27
#define JOURNAL_RECORD_FORMAT2 2
#define JOURNAL_RECORD_HEADER2 29
/* How often one write doubles the map and tries again when the map is full. */
#define JOURNAL_MAX_GROWS 16

/* One staged entry; `thing`, `owner`, `cumul` and a string value are owned. */
struct jstaged {
	int64_t time_us;
	uint64_t owner_boot;
	uint64_t version;
	char *thing;
	tsync_value v;
	enum journal_via via;
	enum journal_kind kind;
	char *owner;
	char *cumul;
	char day[JOURNAL_DAY_LEN + 1];
};

/* The newest staged (boot, version) of one thing. */
struct jversion {
	const char *thing; /* borrowed from a staged entry */
	uint64_t owner_boot;
	uint64_t version;
};

struct journal {
	MDB_env *env;
	MDB_dbi meta;
	MDB_dbi entries;
	MDB_dbi versions;
	MDB_dbi marks;
	const struct logger *log;
	char *dir;
	struct env_claim claim; /* its directory, held while open */

	struct journal_limits lim;
	uint64_t last_seq;
	uint64_t cursor;
	uint64_t bytes;
	char stream[JOURNAL_STREAM_LEN + 1];

	struct jstaged *staged;
	size_t nstaged;
	size_t staged_cap;
	struct jversion *vers; /* one per thing staged with a version */
	size_t nvers;
	size_t vers_cap;
	struct name_index vers_ix; /* thing -> index into vers */
	uint64_t staged_bytes;
	char **smarks; /* marks staged */
	size_t nsmarks, smarks_cap;
	uint64_t mark_next;
};

static int journal_fail(const struct journal *j, const char *what, int rc)
{
	log_error(j->log, "journal: %s: %s: %s", j->dir, what, mdb_strerror(rc));
	return env__error(rc);
}

static size_t payload_size(const tsync_value *v)
{
	switch (v->type) {
	case TSYNC_TYPE_BOOL:
		return 1;
	case TSYNC_TYPE_INT:
	case TSYNC_TYPE_FLOAT:
		return 8;
	case TSYNC_TYPE_STRING:
		return v->u.s ? strlen(v->u.s) : 0;
	default:
		return 0;
	}
}

static bool is_format1(const struct jstaged *e)
{
	return e->via == JOURNAL_VIA_LIVE && e->kind == JOURNAL_MEASUREMENT;
}

/* The payload of a format 2 record, in bytes. */
static size_t payload2_size(const struct jstaged *e)
{
	switch (e->kind) {
	case JOURNAL_MEASUREMENT:
		return payload_size(&e->v);
	case JOURNAL_CUMUL:
		return 2 + strlen(e->owner) + strlen(e->day) + strlen(e->cumul);
	default:
		return 0;
	}
}

/* Bytes an entry counts against max_bytes: its record and its key. */
static uint64_t entry_bytes(const struct jstaged *e)
{
	if (is_format1(e))
		return JOURNAL_RECORD_HEADER + strlen(e->thing) + payload_size(&e->v) + 8;
	return JOURNAL_RECORD_HEADER2 + strlen(e->thing) + payload2_size(e) + 8;
}

/* The payload of a cumul: owner, day and JSON, each after its length but the last. */
static int encode_cumul(struct buf *b, const struct jstaged *e)
{
	unsigned char olen = (unsigned char)strlen(e->owner), dlen = (unsigned char)strlen(e->day);
	int r = buf__append(b, &olen, 1);

	if (r == 0)
		r = buf__append(b, e->owner, olen);
	if (r == 0)
		r = buf__append(b, &dlen, 1);
	if (r == 0)
		r = buf__append(b, e->day, dlen);
	if (r == 0)
		r = buf__append(b, e->cumul, strlen(e->cumul));
	return r;
}

static int encode_entry(struct buf *b, const struct jstaged *e)
{
	unsigned char head[JOURNAL_RECORD_HEADER2];
	unsigned char *h = head;
	unsigned char payload[8];
	const void *p = payload;
	size_t tlen = strlen(e->thing);
	size_t n = payload_size(&e->v);
	size_t hlen = JOURNAL_RECORD_HEADER;
	int r;

	if (is_format1(e)) {
		head[0] = JOURNAL_RECORD_FORMAT;
	} else {
		/* Format 2: two more bytes, then format 1's fields (h[0] is the kind). */
		head[0] = JOURNAL_RECORD_FORMAT2;
		head[1] = (unsigned char)e->via;
		head[2] = (unsigned char)e->kind;
		h = head + 2;
		hlen = JOURNAL_RECORD_HEADER2;
	}
	env__put_le64(h + 1, (uint64_t)e->time_us);
	env__put_le64(h + 9, e->owner_boot);
	env__put_le64(h + 17, e->version);
	h[25] = (unsigned char)e->v.type;
	h[26] = (unsigned char)tlen;
	switch (e->v.type) {
	case TSYNC_TYPE_BOOL:
		payload[0] = e->v.u.b ? 1 : 0;
		break;
	case TSYNC_TYPE_INT:
		env__put_le64(payload, (uint64_t)e->v.u.i);
		break;
	case TSYNC_TYPE_FLOAT: {
		uint64_t bits;
		memcpy(&bits, &e->v.u.f, sizeof(bits));
		env__put_le64(payload, bits);
		break;
	}
	case TSYNC_TYPE_STRING:
		p = e->v.u.s ? e->v.u.s : "";
		break;
	default:
		break;
	}
	buf__reset(b);
	r = buf__append(b, head, hlen);
	if (r == 0)
		r = buf__append(b, e->thing, tlen);
	if (r == 0 && e->kind == JOURNAL_CUMUL)
		return encode_cumul(b, e);
	if (r == 0 && n > 0 && e->kind == JOURNAL_MEASUREMENT)
		r = buf__append(b, p, n);
	return r;
}

/* A cumul's payload (see the top): owner, day and JSON into `out`, NUL-terminated each. */
static int decode_cumul(const unsigned char *p, size_t n, char *out, struct journal_entry *e)
{
	size_t olen, dlen;

	if (n < 2 || (olen = p[0]) == 0 || n < 2 + olen)
		return -EBADMSG;
	dlen = p[1 + olen];
	if (dlen != JOURNAL_DAY_LEN || n <= 2 + olen + dlen || memchr(p, '\0', n))
		return -EBADMSG;
	memcpy(out, p + 1, olen);
	out[olen] = '\0';
	e->owner = out;
	out += olen + 1;
	memcpy(out, p + 2 + olen, dlen);
	out[dlen] = '\0';
	e->day = out;
	out += dlen + 1;
	memcpy(out, p + 2 + olen + dlen, n - 2 - olen - dlen);
	out[n - 2 - olen - dlen] = '\0';
	e->cumul = out;
	return 0;
}

/*
 * Decodes a record (format 1 or 2) into `e`; the thing name and the other
 * strings are copied into `text`, NUL-terminated.
 */
static int decode_entry(const MDB_val *key, const MDB_val *data, struct buf *text, struct journal_entry *e)
{
	const unsigned char *p = data->mv_data;
	size_t tlen, n, hlen = JOURNAL_RECORD_HEADER;
	enum journal_via via = JOURNAL_VIA_LIVE;
	enum journal_kind kind = JOURNAL_MEASUREMENT;
	unsigned type;
	int r;

	if (key->mv_size != 8 || data->mv_size < JOURNAL_RECORD_HEADER)
		return -EBADMSG;
	if (p[0] == JOURNAL_RECORD_FORMAT2) {
		if (data->mv_size < JOURNAL_RECORD_HEADER2 || p[1] > JOURNAL_VIA_IMPORT ||
		    p[2] > JOURNAL_CUMUL)
			return -EBADMSG;
		via = (enum journal_via)p[1];
		kind = (enum journal_kind)p[2];
		p += 2;
		hlen = JOURNAL_RECORD_HEADER2;
	} else if (p[0] != JOURNAL_RECORD_FORMAT) {
		return -EBADMSG;
	}
	type = p[25];
	tlen = p[26];
	if (tlen == 0 || data->mv_size < hlen + tlen)
		return -EBADMSG;
	n = data->mv_size - hlen - tlen;
	memset(e, 0, sizeof(*e));
	e->seq = env__get_be64(key->mv_data);
	e->via = via;
	e->kind = kind;
	e->time_us = (int64_t)env__get_le64(p + 1);
	e->owner_boot = env__get_le64(p + 9);
	e->version = env__get_le64(p + 17);
	buf__reset(text);
	r = buf__reserve(text, tlen + n + 4);
	if (r < 0)
		return r;
	memcpy(text->data, p + JOURNAL_RECORD_HEADER, tlen);
	text->data[tlen] = '\0';
	if (memchr(text->data, '\0', tlen))
		return -EBADMSG;
	e->thing = text->data;
	p += JOURNAL_RECORD_HEADER + tlen;
	if (kind == JOURNAL_RECOVERY_GAP) {
		if (n != 0 || type != TSYNC_TYPE_NONE)
			return -EBADMSG;
		e->owner = e->thing;
		e->from_us = e->time_us;
		e->to_us = (int64_t)e->owner_boot;
		e->owner_boot = 0;
		return 0;
	}
	if (kind == JOURNAL_CUMUL) {
		if (type != TSYNC_TYPE_NONE)
			return -EBADMSG;
		return decode_cumul(p, n, text->data + tlen + 1, e);
	}
	switch (type) {
	case TSYNC_TYPE_NONE:
		if (n != 0)
			return -EBADMSG;
		e->value.type = TSYNC_TYPE_NONE;
		break;
	case TSYNC_TYPE_BOOL:
		if (n != 1 || p[0] > 1)
			return -EBADMSG;
		e->value = tsync_bool(p[0] != 0);
		break;
	case TSYNC_TYPE_INT:
		if (n != 8)
			return -EBADMSG;
		e->value = tsync_int((int64_t)env__get_le64(p));
		break;
	case TSYNC_TYPE_FLOAT: {
		uint64_t bits;
		double f;
		if (n != 8)
			return -EBADMSG;
		bits = env__get_le64(p);
		memcpy(&f, &bits, sizeof(f));
		e->value = tsync_float(f);
		break;
	}
	case TSYNC_TYPE_STRING: {
		char *s = text->data + tlen + 1;
		if (memchr(p, '\0', n))
			return -EBADMSG;
		memcpy(s, p, n);
		s[n] = '\0';
		e->value = tsync_string(s);
		break;
	}
	default:
		return -EBADMSG;
	}
	return 0;
}

static int meta_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *out)
{
	MDB_val key = {strlen(name), (void *)name};
	MDB_val data;
	int rc = mdb_get(txn, dbi, &key, &data);

	if (rc == MDB_NOTFOUND) {
		*out = 0;
		return 0;
	}
	if (rc != 0)
		return rc;
	if (data.mv_size != 8)
		return MDB_CORRUPTED;
	*out = env__get_le64(data.mv_data);
	return 0;
}

static int meta_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t x)
{
	unsigned char bytes[8];
	MDB_val key = {strlen(name), (void *)name};
	MDB_val data = {sizeof(bytes), bytes};

	env__put_le64(bytes, x);
	return mdb_put(txn, dbi, &key, &data, 0);
}

int journal__new_stream_id(char out[JOURNAL_STREAM_LEN + 1])
{
	unsigned char id[JOURNAL_STREAM_LEN / 2];
	size_t got = 0;

	/* getrandom() blocks only until the kernel's pool is first seeded. */
	while (got < sizeof(id)) {
		ssize_t n = getrandom(id + got, sizeof(id) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		got += (size_t)n;
	}
	for (size_t i = 0; i < sizeof(id); i++)
		snprintf(out + 2 * i, 3, "%02x", id[i]);
	return 0;
}

bool journal__valid_stream_id(const char *s)
{
	size_t n = 0;

	for (; s && s[n]; n++)
		if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
			return false;
	return n == JOURNAL_STREAM_LEN;
}

static int meta_put_stream(MDB_txn *txn, MDB_dbi dbi, const char *stream)
{
	static const char key_stream[] = "stream";
	MDB_val key = {sizeof(key_stream) - 1, (void *)key_stream};
	MDB_val data = {strlen(stream), (void *)stream};

	return mdb_put(txn, dbi, &key, &data, 0);
}

/*
 * Loads the stream id, or makes one: for a new journal, and for a journal
 * made before stream ids existed. The latter keeps its numbering; the
 * collector, which has no stream for this source yet either, adopts it.
 */
static int load_stream(struct journal *j, MDB_txn *txn)
{
	static const char key_stream[] = "stream";
	MDB_val key = {sizeof(key_stream) - 1, (void *)key_stream};
	MDB_val data;
	uint64_t last_seq = 0;
	int rc = mdb_get(txn, j->meta, &key, &data);

	if (rc == 0) {
		if (data.mv_size != JOURNAL_STREAM_LEN)
			return MDB_CORRUPTED;
		memcpy(j->stream, data.mv_data, JOURNAL_STREAM_LEN);
		j->stream[JOURNAL_STREAM_LEN] = '\0';
		return journal__valid_stream_id(j->stream) ? 0 : MDB_CORRUPTED;
	}
	if (rc != MDB_NOTFOUND)
		return rc;
	if (journal__new_stream_id(j->stream) < 0)
		return EIO;
	rc = meta_get_u64(txn, j->meta, "last_seq", &last_seq);
	if (rc == 0)
		rc = meta_put_stream(txn, j->meta, j->stream);
	if (rc != 0)
		return rc;
	if (last_seq > 0)
		log_warn(j->log, "journal: %s: made before stream ids; its stream (at sequence %llu) is now %s",
		         j->dir, (unsigned long long)last_seq, j->stream);
	else
		log_info(j->log, "journal: %s: new stream %s", j->dir, j->stream);
	return 0;
}

/* Opens the databases, checks the source and loads the counters, in one transaction. */
static int open_dbs(struct journal *j, const char *source)
{
	static const char key_source[] = "source";
	MDB_txn *txn = NULL;
	MDB_val key = {sizeof(key_source) - 1, (void *)key_source};
	MDB_val data;
	const char *what;
	int rc;
	int r = 0;

	what = "mdb_txn_begin";
	rc = env__txn_begin(j->env, 0, true, &txn);
	if (rc != 0)
		goto leave;
	what = "mdb_dbi_open";
	rc = mdb_dbi_open(txn, "jmeta", MDB_CREATE, &j->meta);
	if (rc == 0)
		rc = mdb_dbi_open(txn, "entries", MDB_CREATE, &j->entries);
	if (rc == 0)
		rc = mdb_dbi_open(txn, "versions", MDB_CREATE, &j->versions);
	if (rc == 0)
		rc = mdb_dbi_open(txn, "marks", MDB_CREATE, &j->marks);
	if (rc != 0)
		goto leave;
	what = "mdb_get(source)";
	rc = mdb_get(txn, j->meta, &key, &data);
	if (rc == 0) {
		/* One stream per source: numbering another source's measurements
		 * on after these would make the collector see a mixed stream. */
		if (data.mv_size != strlen(source) || memcmp(data.mv_data, source, data.mv_size) != 0) {
			log_error(j->log, "journal: %s: belongs to source '%.*s', not '%s'", j->dir,
			          (int)data.mv_size, (const char *)data.mv_data, source);
			r = -EINVAL;
			goto leave;
		}
	} else if (rc == MDB_NOTFOUND) {
		data.mv_size = strlen(source);
		data.mv_data = (void *)source;
		what = "mdb_put(source)";
		rc = mdb_put(txn, j->meta, &key, &data, 0);
		if (rc != 0)
			goto leave;
	} else {
		goto leave;
	}
	what = "stream";
	rc = load_stream(j, txn);
	if (rc != 0)
		goto leave;
	what = "reading the counters";
	rc = meta_get_u64(txn, j->meta, "last_seq", &j->last_seq);
	if (rc == 0)
		rc = meta_get_u64(txn, j->meta, "cursor", &j->cursor);
	if (rc == 0)
		rc = meta_get_u64(txn, j->meta, "bytes", &j->bytes);
	if (rc == 0)
		rc = meta_get_u64(txn, j->meta, "mark_next", &j->mark_next);
	if (rc != 0)
		goto leave;
	if (j->cursor > j->last_seq) {
		log_error(j->log, "journal: %s: cursor %llu is past the last entry %llu", j->dir,
		          (unsigned long long)j->cursor, (unsigned long long)j->last_seq);
		r = TSYNC_ESTORE;
		goto leave;
	}
	what = "mdb_txn_commit";
	rc = mdb_txn_commit(txn);
	txn = NULL;
leave:
	if (txn)
		mdb_txn_abort(txn);
	if (rc != 0)
		r = journal_fail(j, what, rc);
	return r;
}

int journal__open(const char *dir, const char *source, const struct journal_limits *lim,
                  const struct logger *log, struct journal **ret)
{
	struct journal *j = NULL;
	int r;

	if (!dir || !*dir || !source || !*source || !ret)
		return -EINVAL;
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->log = log;
	j->lim.max_entries = lim && lim->max_entries ? lim->max_entries : JOURNAL_DEFAULT_MAX_ENTRIES;
	j->lim.max_bytes = lim && lim->max_bytes ? lim->max_bytes : JOURNAL_DEFAULT_MAX_BYTES;
	j->dir = util__strdup(dir);
	if (!j->dir) {
		r = -ENOMEM;
		goto leave;
	}
	r = env__open("journal", dir, JOURNAL_MAX_DBS, JOURNAL_MAP_SIZE, log, &j->claim, &j->env);
	if (r < 0)
		goto leave;
	r = open_dbs(j, source);
	if (r < 0)
		goto leave;
	*ret = j;
	return 0;
leave:
	if (j->env)
		mdb_env_close(j->env);
	env__release(&j->claim);
	free(j->dir);
	free(j);
	return r;
}

void journal__discard(struct journal *j)
{
	if (!j)
		return;
	for (size_t i = 0; i < j->nstaged; i++) {
		free(j->staged[i].thing);
		free(j->staged[i].owner);
		free(j->staged[i].cumul);
		value__clear(&j->staged[i].v);
	}
	for (size_t i = 0; i < j->nsmarks; i++)
		free(j->smarks[i]);
	j->nsmarks = 0;
	j->nstaged = 0;
	j->nvers = 0;
	j->staged_bytes = 0;
	name_index__free(&j->vers_ix);
}

void journal__close(struct journal *j)
{
	if (!j)
		return;
	if (j->nstaged > 0)
		log_debug(j->log, "journal: %s: %zu staged measurement(s) discarded at close", j->dir,
		          j->nstaged);
	journal__discard(j);
	free(j->staged);
	free(j->smarks);
	free(j->vers);
	if (j->env)
		mdb_env_close(j->env);
	env__release(&j->claim);
	free(j->dir);
	free(j);
}

static int stage_version(struct journal *j, const char *thing, uint64_t owner_boot, uint64_t version)
{
	uint32_t idx;
	int r;

	if (name_index__get(&j->vers_ix, thing, &idx) == 0) {
		j->vers[idx].owner_boot = owner_boot;
		j->vers[idx].version = version;
		return 0;
	}
	if (j->nvers == j->vers_cap) {
		size_t cap = j->vers_cap ? j->vers_cap * 2 : 16;
		struct jversion *p = realloc(j->vers, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		j->vers = p;
		j->vers_cap = cap;
	}
	r = name_index__put(&j->vers_ix, thing, (uint32_t)j->nvers);
	if (r < 0)
		return r;
	j->vers[j->nvers].thing = thing;
	j->vers[j->nvers].owner_boot = owner_boot;
	j->vers[j->nvers].version = version;
	j->nvers++;
	return 0;
}

static bool valid_text(const char *t, size_t max)
{
	return t && *t && strlen(t) <= max;
}

/* Whether an entry has what its kind needs, within the record's limits. */
static bool valid_entry(const struct journal_entry *e)
{
	const tsync_value *v = &e->value;

	if ((unsigned)e->via > JOURNAL_VIA_IMPORT)
		return false;
	switch (e->kind) {
	case JOURNAL_MEASUREMENT:
		return valid_text(e->thing, JOURNAL_MAX_THING) && (unsigned)v->type <= TSYNC_TYPE_STRING &&
		       !(v->type == TSYNC_TYPE_STRING && v->u.s && strlen(v->u.s) > JOURNAL_MAX_STRING);
	case JOURNAL_RECOVERY_GAP:
		return valid_text(e->owner, JOURNAL_MAX_THING) && e->from_us <= e->to_us;
	case JOURNAL_CUMUL:
		return valid_text(e->owner, JOURNAL_MAX_THING) && valid_text(e->thing, JOURNAL_MAX_THING) &&
		       e->day && strlen(e->day) == JOURNAL_DAY_LEN && valid_text(e->cumul, JOURNAL_MAX_CUMUL);
	default:
		return false;
	}
}

/* Copies an entry's fields into a staged one (strings duplicated). */
static int fill_staged(struct jstaged *s, const struct journal_entry *e)
{
	memset(s, 0, sizeof(*s));
	s->via = e->via;
	s->kind = e->kind;
	s->time_us = e->time_us;
	s->owner_boot = e->owner_boot;
	s->version = e->version;
	s->v.type = TSYNC_TYPE_NONE;
	if (e->kind == JOURNAL_RECOVERY_GAP) {
		/* Stored as the record says: the owner as name, from as time, to as boot. */
		s->thing = util__strdup(e->owner);
		s->time_us = e->from_us;
		s->owner_boot = (uint64_t)e->to_us;
		s->version = 0;
		return s->thing ? 0 : -ENOMEM;
	}
	s->thing = util__strdup(e->thing);
	if (!s->thing)
		return -ENOMEM;
	if (e->kind == JOURNAL_CUMUL) {
		s->owner_boot = s->version = 0;
		memcpy(s->day, e->day, JOURNAL_DAY_LEN + 1);
		s->owner = util__strdup(e->owner);
		s->cumul = util__strdup(e->cumul);
		return s->owner && s->cumul ? 0 : -ENOMEM;
	}
	return value__copy(&s->v, &e->value);
}

int journal__stage_entry(struct journal *j, const struct journal_entry *e, uint64_t *seq)
{
	struct jstaged *s;
	int r;

	if (!j || !e || !valid_entry(e))
		return -EINVAL;
	if (j->nstaged == j->staged_cap) {
		size_t cap = j->staged_cap ? j->staged_cap * 2 : 64;
		struct jstaged *p = realloc(j->staged, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		j->staged = p;
		j->staged_cap = cap;
	}
	s = &j->staged[j->nstaged];
	r = fill_staged(s, e);
	if (r == 0 && e->kind == JOURNAL_MEASUREMENT && (e->owner_boot || e->version)) {
		uint64_t b = 0, v = 0;
		/* A live value is always the newest; a recovered or imported one may be older. */
		if (e->via == JOURNAL_VIA_LIVE || journal__last_version(j, s->thing, &b, &v) == -ENOENT ||
		    e->owner_boot > b || (e->owner_boot == b && e->version > v))
			r = stage_version(j, s->thing, e->owner_boot, e->version);
	}
	if (r < 0) {
		/* stage_version() failed before the index took the name: nothing points at it. */
		value__clear(&s->v);
		free(s->thing);
		free(s->owner);
		free(s->cumul);
		return r;
	}
	j->nstaged++;
	j->staged_bytes += entry_bytes(s);
	if (seq)
		*seq = j->last_seq + j->nstaged;
	return 0;
}

int journal__stage(struct journal *j, int64_t time_us, const char *thing, const tsync_value *v,
                   uint64_t owner_boot, uint64_t version, uint64_t *seq)
{
	struct journal_entry e;

	if (!v)
		return -EINVAL;
	memset(&e, 0, sizeof(e));
	e.time_us = time_us;
	e.thing = thing;
	e.value = *v;
	e.owner_boot = owner_boot;
	e.version = version;
	return journal__stage_entry(j, &e, seq);
}

int journal__stage_mark(struct journal *j, const char *key)
{
	char *k;

	if (!j || !valid_text(key, JOURNAL_MAX_THING))
		return -EINVAL;
	if (j->nsmarks == j->smarks_cap) {
		size_t cap = j->smarks_cap ? j->smarks_cap * 2 : 16;
		char **p = realloc(j->smarks, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		j->smarks = p;
		j->smarks_cap = cap;
	}
	k = util__strdup(key);
	if (!k)
		return -ENOMEM;
	j->smarks[j->nsmarks++] = k;
	return 0;
}

int journal__has_mark(struct journal *j, const char *key)
{
	MDB_txn *txn = NULL;
	MDB_val k, data;
	int rc;

	if (!j || !valid_text(key, JOURNAL_MAX_THING))
		return -EINVAL;
	for (size_t i = 0; i < j->nsmarks; i++)
		if (strcmp(j->smarks[i], key) == 0)
			return 1;
	rc = env__txn_begin(j->env, MDB_RDONLY, true, &txn);
	if (rc != 0)
		return journal_fail(j, "mdb_txn_begin", rc);
	k.mv_size = strlen(key);
	k.mv_data = (void *)key;
	rc = mdb_get(txn, j->marks, &k, &data);
	mdb_txn_abort(txn);
	if (rc == MDB_NOTFOUND)
		return 0;
	return rc == 0 ? 1 : journal_fail(j, "mdb_get(marks)", rc);
}

/* Writes the staged marks; past JOURNAL_MAX_MARKS (and an eighth), forgets the oldest. */
static int put_marks(struct journal *j, MDB_txn *txn)
{
	MDB_cursor *cur = NULL;
	MDB_val key, data;
	MDB_stat st;
	uint64_t next = j->mark_next;
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < j->nsmarks; i++) {
		unsigned char n[8];
		key.mv_size = strlen(j->smarks[i]);
		key.mv_data = j->smarks[i];
		data.mv_size = sizeof(n);
		data.mv_data = n;
		env__put_le64(n, next++);
		rc = mdb_put(txn, j->marks, &key, &data, 0);
	}
	if (rc == 0)
		rc = meta_put_u64(txn, j->meta, "mark_next", next);
	if (rc == 0)
		rc = mdb_stat(txn, j->marks, &st);
	if (rc != 0 || st.ms_entries <= JOURNAL_MAX_MARKS + JOURNAL_MAX_MARKS / 8)
		return rc;
	rc = mdb_cursor_open(txn, j->marks, &cur);
	for (rc = rc ? rc : mdb_cursor_get(cur, &key, &data, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &data, MDB_NEXT)) {
		if (data.mv_size == 8 && env__get_le64(data.mv_data) + JOURNAL_MAX_MARKS >= next)
			continue;
		rc = mdb_cursor_del(cur, 0);
		if (rc != 0)
			break;
	}
	if (cur)
		mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Writes the staged entries and counters in one transaction; 0 or an LMDB code. */
static int commit_once(struct journal *j, struct buf *rec, const char **what)
{
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	uint64_t seq = j->last_seq;
	int rc;

	*what = "mdb_txn_begin";
	rc = env__txn_begin(j->env, 0, true, &txn);
	if (rc != 0)
		return rc;
	*what = "mdb_cursor_open";
	rc = mdb_cursor_open(txn, j->entries, &cur);
	if (rc != 0)
		goto leave;
	*what = "mdb_cursor_put(entries)";
	for (size_t i = 0; i < j->nstaged; i++) {
		unsigned char k[8];
		MDB_val key = {sizeof(k), k};
		MDB_val data;

		env__put_be64(k, ++seq);
		if (encode_entry(rec, &j->staged[i]) < 0) {
			rc = ENOMEM;
			goto leave;
		}
		data.mv_size = rec->len;
		data.mv_data = rec->data;
		/* Sequences only grow: every entry goes at the end of the tree. */
		rc = mdb_cursor_put(cur, &key, &data, MDB_APPEND);
		if (rc != 0)
			goto leave;
	}
	*what = "mdb_put(versions)";
	for (size_t i = 0; i < j->nvers; i++) {
		unsigned char bytes[16];
		MDB_val key = {strlen(j->vers[i].thing), (void *)j->vers[i].thing};
		MDB_val data = {sizeof(bytes), bytes};

		env__put_le64(bytes, j->vers[i].owner_boot);
		env__put_le64(bytes + 8, j->vers[i].version);
		rc = mdb_put(txn, j->versions, &key, &data, 0);
		if (rc != 0)
			goto leave;
	}
	*what = "mdb_put(marks)";
	rc = j->nsmarks ? put_marks(j, txn) : 0;
	if (rc != 0)
		goto leave;
	*what = "mdb_put(jmeta)";
	rc = meta_put_u64(txn, j->meta, "last_seq", seq);
	if (rc == 0)
		rc = meta_put_u64(txn, j->meta, "bytes", j->bytes + j->staged_bytes);
	if (rc != 0)
		goto leave;
	mdb_cursor_close(cur);
	cur = NULL;
	*what = "mdb_txn_commit";
	rc = mdb_txn_commit(txn);
	txn = NULL;
leave:
	if (cur)
		mdb_cursor_close(cur);
	if (txn)
		mdb_txn_abort(txn);
	return rc;
}

static bool is_full(const struct journal *j)
{
	return j->last_seq - j->cursor >= j->lim.max_entries || j->bytes >= j->lim.max_bytes;
}

int journal__commit(struct journal *j)
{
	struct buf rec = {0};
	const char *what = "";
	int grows = 0;
	int rc;

	if (!j)
		return -EINVAL;
	if (j->nstaged == 0 && j->nsmarks == 0)
		return 0;
	/*
	 * Full: refuse the whole batch rather than part of it. The caller
	 * withholds its acknowledgements, so the senders keep the data (the
	 * mesh owners their newest values) until the collector drains us.
	 */
	if (is_full(j))
		return -ENOSPC;
	for (;;) {
		rc = commit_once(j, &rec, &what);
		if (rc != MDB_MAP_FULL || grows >= JOURNAL_MAX_GROWS)
			break;
		/* The failed transaction was aborted: nothing of it is on disk. */
		rc = env__grow(j->env, j->log, "journal", j->dir);
		if (rc != 0) {
			what = "mdb_env_set_mapsize";
			break;
		}
		grows++;
	}
	buf__free(&rec);
	if (rc != 0)
		return journal_fail(j, what, rc);
	j->last_seq += j->nstaged;
	j->bytes += j->staged_bytes;
	j->mark_next += j->nsmarks;
	journal__discard(j);
	return 0;
}

int journal__last_version(struct journal *j, const char *thing, uint64_t *owner_boot, uint64_t *version)
{
	MDB_txn *txn = NULL;
	MDB_val key, data;
	uint32_t idx;
	int rc;
	int r = 0;

	if (!j || !thing || !*thing || !owner_boot || !version)
		return -EINVAL;
	if (name_index__get(&j->vers_ix, thing, &idx) == 0) {
		*owner_boot = j->vers[idx].owner_boot;
		*version = j->vers[idx].version;
		return 0;
	}
	if (strlen(thing) > JOURNAL_MAX_THING)
		return -ENOENT;
	rc = env__txn_begin(j->env, MDB_RDONLY, true, &txn);
	if (rc != 0)
		return journal_fail(j, "mdb_txn_begin", rc);
	key.mv_size = strlen(thing);
	key.mv_data = (void *)thing;
	rc = mdb_get(txn, j->versions, &key, &data);
	if (rc == MDB_NOTFOUND) {
		r = -ENOENT;
	} else if (rc != 0) {
		r = journal_fail(j, "mdb_get(versions)", rc);
	} else if (data.mv_size != 16) {
		log_warn(j->log, "journal: %s: malformed version of %s ignored", j->dir, thing);
		r = -ENOENT;
	} else {
		*owner_boot = env__get_le64(data.mv_data);
		*version = env__get_le64((const unsigned char *)data.mv_data + 8);
	}
	mdb_txn_abort(txn);
	return r;
}

int journal__read(struct journal *j, uint64_t after, size_t max, journal_entry_fn fn, void *ud)
{
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	unsigned char k[8];
	MDB_val key = {sizeof(k), k};
	MDB_val data;
	struct buf text = {0};
	size_t n = 0;
	int rc;
	int r = 0;

	if (!j || !fn)
		return -EINVAL;
	if (after < j->cursor)
		after = j->cursor;
	if (max == 0 || after >= j->last_seq)
		return 0;
	rc = env__txn_begin(j->env, MDB_RDONLY, true, &txn);
	if (rc != 0)
		return journal_fail(j, "mdb_txn_begin", rc);
	rc = mdb_cursor_open(txn, j->entries, &cur);
	if (rc != 0) {
		r = journal_fail(j, "mdb_cursor_open", rc);
		goto leave;
	}
	env__put_be64(k, after + 1);
	for (rc = mdb_cursor_get(cur, &key, &data, MDB_SET_RANGE); rc == 0 && n < max;
	     rc = mdb_cursor_get(cur, &key, &data, MDB_NEXT), n++) {
		struct journal_entry e;

		r = decode_entry(&key, &data, &text, &e);
		if (r == -ENOMEM)
			goto leave;
		if (r < 0) {
			/*
			 * Skipping it would put a hole in the stream that
			 * nobody could explain later: stop and say so.
			 */
			log_error(j->log, "journal: %s: entry %llu is malformed", j->dir,
			          (unsigned long long)(key.mv_size == 8 ? env__get_be64(key.mv_data) : 0));
			r = TSYNC_ESTORE;
			goto leave;
		}
		if (fn(ud, &e) != 0) {
			rc = 0;
			break;
		}
	}
	if (rc != 0 && rc != MDB_NOTFOUND)
		r = journal_fail(j, "mdb_cursor_get", rc);
leave:
	if (cur)
		mdb_cursor_close(cur);
	if (txn)
		mdb_txn_abort(txn);
	buf__free(&text);
	return r;
}

/* Deletes the entries up to `seq` and moves the cursor, in one transaction. */
static int ack_once(struct journal *j, uint64_t seq, uint64_t *freed, const char **what)
{
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_val key, data;
	uint64_t bytes = 0;
	int rc;

	*what = "mdb_txn_begin";
	rc = env__txn_begin(j->env, 0, true, &txn);
	if (rc != 0)
		return rc;
	*what = "mdb_cursor_open";
	rc = mdb_cursor_open(txn, j->entries, &cur);
	if (rc != 0)
		goto leave;
	*what = "mdb_cursor_del";
	for (rc = mdb_cursor_get(cur, &key, &data, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &data, MDB_FIRST)) {
		if (key.mv_size != 8 || env__get_be64(key.mv_data) > seq)
			break;
		bytes += data.mv_size + key.mv_size;
		rc = mdb_cursor_del(cur, 0);
		if (rc != 0)
			goto leave;
	}
	if (rc != 0 && rc != MDB_NOTFOUND)
		goto leave;
	*what = "mdb_put(jmeta)";
	rc = meta_put_u64(txn, j->meta, "cursor", seq);
	if (rc == 0)
		rc = meta_put_u64(txn, j->meta, "bytes", j->bytes > bytes ? j->bytes - bytes : 0);
	if (rc != 0)
		goto leave;
	mdb_cursor_close(cur);
	cur = NULL;
	*what = "mdb_txn_commit";
	rc = mdb_txn_commit(txn);
	txn = NULL;
	*freed = bytes;
leave:
	if (cur)
		mdb_cursor_close(cur);
	if (txn)
		mdb_txn_abort(txn);
	return rc;
}

int journal__ack(struct journal *j, uint64_t seq)
{
	const char *what = "";
	uint64_t freed = 0;
	int grows = 0;
	int rc;

	if (!j)
		return -EINVAL;
	if (seq <= j->cursor)
		return 0;
	if (seq > j->last_seq)
		return -ERANGE;
	for (;;) {
		rc = ack_once(j, seq, &freed, &what);
		if (rc != MDB_MAP_FULL || grows >= JOURNAL_MAX_GROWS)
			break;
		rc = env__grow(j->env, j->log, "journal", j->dir);
		if (rc != 0) {
			what = "mdb_env_set_mapsize";
			break;
		}
		grows++;
	}
	if (rc != 0)
		return journal_fail(j, what, rc);
	j->cursor = seq;
	j->bytes = j->bytes > freed ? j->bytes - freed : 0;
	return 0;
}

const char *journal__stream_id(const struct journal *j)
{
	return j ? j->stream : NULL;
}

void journal__stats(const struct journal *j, struct journal_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (!j)
		return;
	st->cursor = j->cursor;
	st->last_seq = j->last_seq;
	st->entries = j->last_seq - j->cursor;
	st->bytes = j->bytes;
	st->max_entries = j->lim.max_entries;
	st->max_bytes = j->lim.max_bytes;
	st->staged = j->nstaged;
	st->staged_marks = j->nsmarks;
	st->full = is_full(j);
}

/* --- thingsync-dr: adopt a stream, inspect read-only ---------------------------------- */

/* One unsent entry copied out of the tree while it is rewritten. */
struct jmoved {
	uint64_t seq;
	size_t off, len; /* its record in the copy buffer */
};

static const struct journal_version *find_version(const struct journal_version *v, size_t nv, const char *thing)
{
	for (size_t i = 0; i < nv; i++)
		if (v[i].thing && strcmp(v[i].thing, thing) == 0)
			return &v[i];
	return NULL;
}

static bool version_after(uint64_t boot, uint64_t ver, uint64_t ref_boot, uint64_t ref_ver)
{
	return boot > ref_boot || (boot == ref_boot && ver > ref_ver);
}

/* The rewrite of journal__adopt() in one transaction; 0 or an LMDB code. */
static int adopt_once(struct journal *j, const char *stream, uint64_t stored_seq, const struct journal_version *v,
                      size_t nv, struct journal_adopt_result *res, const char **what)
{
	bool same = strcmp(stream, j->stream) == 0;
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_val key, data;
	struct buf copy = {0}, text = {0};
	struct jmoved *moved = NULL;
	size_t nmoved = 0, cap = 0;
	uint64_t seq, bytes = 0, cursor, last;
	int rc;

	memset(res, 0, sizeof(*res));
	*what = "mdb_txn_begin";
	rc = env__txn_begin(j->env, 0, true, &txn);
	if (rc != 0)
		return rc;
	*what = "mdb_cursor_open";
	rc = mdb_cursor_open(txn, j->entries, &cur);
	if (rc != 0)
		goto leave;
	/* Copy out what stays: the unsent entries, less what the collector has. */
	*what = "reading the entries";
	for (rc = mdb_cursor_get(cur, &key, &data, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &data, MDB_NEXT)) {
		struct journal_entry e;
		const struct journal_version *known;

		if (key.mv_size != 8 || decode_entry(&key, &data, &text, &e) < 0) {
			rc = MDB_CORRUPTED;
			goto leave;
		}
		seq = env__get_be64(key.mv_data);
		if (seq <= j->cursor)
			continue;
		if (same && seq <= stored_seq) {
			/* The collector has it: acknowledged. */
			res->acked++;
			continue;
		}
		known = e.kind == JOURNAL_MEASUREMENT && (e.owner_boot || e.version)
		            ? find_version(v, nv, e.thing)
		            : NULL;
		if (!same && known && !version_after(e.owner_boot, e.version, known->owner_boot, known->version)) {
			/* A value the old stream already carried (the mesh delivers the
			 * current values again to a pushd that lost its journal):
			 * sending it again would store it twice. */
			res->dropped++;
			continue;
		}
		if (nmoved == cap) {
			size_t ncap = cap ? cap * 2 : 256;
			struct jmoved *p = realloc(moved, ncap * sizeof(*p));
			if (!p) {
				rc = ENOMEM;
				goto leave;
			}
			moved = p;
			cap = ncap;
		}
		moved[nmoved].seq = seq;
		moved[nmoved].off = copy.len;
		moved[nmoved].len = data.mv_size;
		if (buf__append(&copy, data.mv_data, data.mv_size) < 0) {
			rc = ENOMEM;
			goto leave;
		}
		nmoved++;
	}
	if (rc != MDB_NOTFOUND)
		goto leave;
	mdb_cursor_close(cur);
	cur = NULL;
	*what = "mdb_drop(entries)";
	rc = mdb_drop(txn, j->entries, 0);
	if (rc != 0)
		goto leave;
	cursor = same ? (stored_seq > j->cursor ? stored_seq : j->cursor) : stored_seq;
	last = cursor;
	*what = "mdb_put(entries)";
	for (size_t i = 0; i < nmoved; i++) {
		unsigned char k[8];
		MDB_val nk = {sizeof(k), k};
		MDB_val nd = {moved[i].len, copy.data + moved[i].off};

		/* Same stream: every entry keeps its number. Another one: the
		 * entries follow the collector's last sequence, in their order. */
		last = same ? moved[i].seq : last + 1;
		env__put_be64(k, last);
		rc = mdb_put(txn, j->entries, &nk, &nd, MDB_APPEND);
		if (rc != 0)
			goto leave;
		bytes += nd.mv_size + nk.mv_size;
		if (!same && moved[i].seq != last)
			res->renumbered++;
	}
	*what = "mdb_put(versions)";
	for (size_t i = 0; i < nv; i++) {
		unsigned char b[16];
		MDB_val vk, vd = {sizeof(b), b};

		if (!v[i].thing || !*v[i].thing || strlen(v[i].thing) > JOURNAL_MAX_THING)
			continue;
		vk.mv_size = strlen(v[i].thing);
		vk.mv_data = (void *)v[i].thing;
		rc = mdb_get(txn, j->versions, &vk, &data);
		if (rc == 0 && data.mv_size == 16 &&
		    !version_after(v[i].owner_boot, v[i].version, env__get_le64(data.mv_data),
		                   env__get_le64((const unsigned char *)data.mv_data + 8)))
			continue;
		if (rc != 0 && rc != MDB_NOTFOUND)
			goto leave;
		env__put_le64(b, v[i].owner_boot);
		env__put_le64(b + 8, v[i].version);
		rc = mdb_put(txn, j->versions, &vk, &vd, 0);
		if (rc != 0)
			goto leave;
	}
	*what = "mdb_put(jmeta)";
	rc = meta_put_u64(txn, j->meta, "cursor", cursor);
	if (rc == 0)
		rc = meta_put_u64(txn, j->meta, "last_seq", last);
	if (rc == 0)
		rc = meta_put_u64(txn, j->meta, "bytes", bytes);
	if (rc == 0)
		rc = meta_put_stream(txn, j->meta, stream);
	if (rc != 0)
		goto leave;
	*what = "mdb_txn_commit";
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc != 0)
		goto leave;
	res->kept = nmoved;
	res->stream_changed = !same;
	j->cursor = cursor;
	j->last_seq = last;
	j->bytes = bytes;
	memcpy(j->stream, stream, JOURNAL_STREAM_LEN + 1);
leave:
	if (cur)
		mdb_cursor_close(cur);
	if (txn)
		mdb_txn_abort(txn);
	free(moved);
	buf__free(&copy);
	buf__free(&text);
	return rc;
}

int journal__adopt(struct journal *j, const char *stream, uint64_t stored_seq, const struct journal_version *v,
                   size_t nv, struct journal_adopt_result *res)
{
	struct journal_adopt_result ignored;
	const char *what = "";
	int grows = 0;
	int rc;

	if (!j || !journal__valid_stream_id(stream) || (nv && !v))
		return -EINVAL;
	if (j->nstaged > 0)
		return -EBUSY;
	if (!res)
		res = &ignored;
	for (;;) {
		rc = adopt_once(j, stream, stored_seq, v, nv, res, &what);
		if (rc != MDB_MAP_FULL || grows >= JOURNAL_MAX_GROWS)
			break;
		rc = env__grow(j->env, j->log, "journal", j->dir);
		if (rc != 0) {
			what = "mdb_env_set_mapsize";
			break;
		}
		grows++;
	}
	if (rc == ENOMEM)
		return -ENOMEM;
	if (rc != 0)
		return journal_fail(j, what, rc);
	return 0;
}

static int inspect_txn(MDB_txn *txn, struct journal_info *info)
{
	MDB_dbi meta, entries, versions;
	MDB_cursor *cur = NULL;
	MDB_val key, data;
	struct buf text = {0};
	uint64_t prev = 0;
	int rc;

	rc = mdb_dbi_open(txn, "jmeta", 0, &meta);
	if (rc == MDB_NOTFOUND) {
		snprintf(info->problem, sizeof(info->problem), "no jmeta database: not a journal");
		return 0;
	}
	if (rc == 0)
		rc = mdb_dbi_open(txn, "entries", 0, &entries);
	if (rc == 0)
		rc = mdb_dbi_open(txn, "versions", 0, &versions);
	if (rc != 0)
		return rc;
	key.mv_size = 6;
	key.mv_data = (void *)"source";
	rc = mdb_get(txn, meta, &key, &data);
	if (rc == 0 && data.mv_size < sizeof(info->source)) {
		memcpy(info->source, data.mv_data, data.mv_size);
		info->source[data.mv_size] = '\0';
	} else if (rc != 0 && rc != MDB_NOTFOUND) {
		return rc;
	}
	key.mv_size = 6;
	key.mv_data = (void *)"stream";
	rc = mdb_get(txn, meta, &key, &data);
	if (rc == 0 && data.mv_size == JOURNAL_STREAM_LEN) {
		memcpy(info->stream, data.mv_data, JOURNAL_STREAM_LEN);
		info->stream[JOURNAL_STREAM_LEN] = '\0';
		if (!journal__valid_stream_id(info->stream)) {
			info->stream[0] = '\0';
			snprintf(info->problem, sizeof(info->problem), "malformed stream id");
		}
	} else if (rc == 0) {
		snprintf(info->problem, sizeof(info->problem), "malformed stream id");
	} else if (rc != MDB_NOTFOUND) {
		return rc;
	}
	rc = meta_get_u64(txn, meta, "cursor", &info->cursor);
	if (rc == 0)
		rc = meta_get_u64(txn, meta, "last_seq", &info->last_seq);
	if (rc == 0)
		rc = meta_get_u64(txn, meta, "bytes", &info->bytes);
	if (rc == MDB_CORRUPTED) {
		snprintf(info->problem, sizeof(info->problem), "malformed counters in jmeta");
		return 0;
	}
	if (rc != 0)
		return rc;
	rc = mdb_cursor_open(txn, entries, &cur);
	if (rc != 0)
		return rc;
	for (rc = mdb_cursor_get(cur, &key, &data, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &data, MDB_NEXT)) {
		struct journal_entry e;
		uint64_t seq = key.mv_size == 8 ? env__get_be64(key.mv_data) : 0;

		if (decode_entry(&key, &data, &text, &e) < 0 && !info->problem[0])
			snprintf(info->problem, sizeof(info->problem), "entry %llu is malformed",
			         (unsigned long long)seq);
		if (info->entries == 0)
			info->first_seq = seq;
		if (prev && seq != prev + 1 && !info->problem[0])
			snprintf(info->problem, sizeof(info->problem), "a gap between entries %llu and %llu",
			         (unsigned long long)prev, (unsigned long long)seq);
		prev = seq;
		info->max_seq = seq;
		info->entries++;
	}
	mdb_cursor_close(cur);
	buf__free(&text);
	if (rc != MDB_NOTFOUND)
		return rc;
	{
		MDB_stat st;
		rc = mdb_stat(txn, versions, &st);
		if (rc != 0)
			return rc;
		info->things = st.ms_entries;
	}
	if (info->problem[0])
		return 0;
	if (!info->source[0])
		snprintf(info->problem, sizeof(info->problem), "no source");
	else if (info->cursor > info->last_seq)
		snprintf(info->problem, sizeof(info->problem), "the cursor %llu is past the last sequence %llu",
		         (unsigned long long)info->cursor, (unsigned long long)info->last_seq);
	else if (info->entries != info->last_seq - info->cursor)
		snprintf(info->problem, sizeof(info->problem),
		         "%llu entries where cursor %llu and last sequence %llu say %llu",
		         (unsigned long long)info->entries, (unsigned long long)info->cursor,
		         (unsigned long long)info->last_seq, (unsigned long long)(info->last_seq - info->cursor));
	else if (info->entries && (info->first_seq != info->cursor + 1 || info->max_seq != info->last_seq))
		snprintf(info->problem, sizeof(info->problem),
		         "entries %llu..%llu where cursor %llu and last sequence %llu say %llu..%llu",
		         (unsigned long long)info->first_seq, (unsigned long long)info->max_seq,
		         (unsigned long long)info->cursor, (unsigned long long)info->last_seq,
		         (unsigned long long)info->cursor + 1, (unsigned long long)info->last_seq);
	return 0;
}

int journal__inspect(const char *dir, struct journal_info *info)
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
		snprintf(info->problem, sizeof(info->problem), "no data.mdb: %s", strerror(errno));
		return -ENOENT;
	}
	info->present = true;
	/* No lock file: nobody has it open, and none is made (nothing is
	 * changed). With one, take part in its locking like any reader. */
	snprintf(path, sizeof(path), "%s/lock.mdb", dir);
	if (access(path, F_OK) < 0)
		flags |= MDB_NOLOCK;
	rc = mdb_env_create(&env);
	if (rc == 0)
		rc = mdb_env_set_maxdbs(env, JOURNAL_MAX_DBS);
	if (rc == 0)
		rc = mdb_env_open(env, dir, flags, 0600);
	if (rc == 0)
		rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
	if (rc == 0)
		rc = inspect_txn(txn, info);
	if (txn)
		mdb_txn_abort(txn);
	if (env)
		mdb_env_close(env);
	if (rc != 0) {
		snprintf(info->problem, sizeof(info->problem), "unreadable: %s", mdb_strerror(rc));
		return TSYNC_ESTORE;
	}
	return 0;
}
