/*
 * lib/store: LMDB, the only place that knows it. One environment per process
 * directory, named databases inside it:
 *   "meta"   key/value: "boot" -> uint64 (the boot counter)
 *   "values" thing name -> (version, owner boot, type, value): the last value
 *            of every thing this controller owns, so it survives restarts.
 *   "windows" per sender and origin boot (the sender's boot that issued the
 *            requests): the ids of its requests this controller executed,
 *            and the answers worth keeping, so that a duplicate that comes
 *            after a restart is answered again instead of acted on twice
 *   "requests" per peer, origin boot and id: the pulses and requests this
 *            controller sent and has no answer to yet, resumed at start-up
 *   "setreqs" thing name -> the value this controller asked the owner to set
 *            and has no answer to yet, asked again at start-up
 *   "cumuls"  the cumul module's records (lib/cumul/cumul.c): key text ->
 *            JSON text, today's running cumuls and the closed days
 *   "records" the application's own records (tsync_node_record_put()): key
 *            text -> text, e.g. thingsync-recoveryd's outage ledger
 * Writes are staged in memory and committed together by store__commit()
 * (group commit: one fsync per batch, not per message).
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_STORE_H
#define TSYNC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <thingsync/common.h>

#include "util/util.h"

struct store;

/*
 * Opens (creating if needed) the store in directory `dir` (created with mode
 * 0700 if missing). `map_size` 0 means the default (64 MiB).
 * 0, -errno, or TSYNC_ESTORE (errors logged through `log`, which is borrowed
 * and must outlive the store). -ENOTDIR if `dir` is not a directory; -EBUSY if
 * this process already has a store open on that directory (LMDB allows one
 * environment per directory per process). `*ret` is written only on success.
 */
int store__open(const char *dir, size_t map_size, const struct logger *log, struct store **ret);
void store__close(struct store *s); /* commits what is staged; accepts NULL */
/* Closes without committing what is staged, as a crash would. Accepts NULL. */
void store__abandon(struct store *s);

/*
 * Takes the next boot counter: max(stored + 1, floor), stored and committed
 * before it returns, so no two starts ever share a boot.
 */
int store__next_boot(struct store *s, uint64_t floor, uint64_t *boot);

/*
 * Stages the value of an owned thing (name and string copied). A later stage
 * of the same thing replaces the earlier one. Committed by store__commit().
 * 0, -EINVAL (empty name, bad type), -ENAMETOOLONG (over LMDB's key size,
 * 511 bytes) or -ENOMEM.
 */
int store__stage_value(struct store *s, const char *thing, uint64_t version, uint64_t boot,
                       const tsync_value *v);

/*
 * Commits everything staged in one transaction, fsync'ed before it returns:
 * the durability point, acknowledge only after it. 0, -ENOMEM or TSYNC_ESTORE
 * (then everything stays staged for a later try).
 */
int store__commit(struct store *s);

/*
 * Commits like store__commit(), but without syncing the transaction's meta
 * page: what it wrote survives a crash of the process at once, and a power
 * cut only once the next store__commit() has returned (that one syncs even
 * with nothing staged). The point before an act that cannot be undone: it
 * costs one fsync instead of two, and leaves no window in which a killed
 * process has committed but not acted. 0, -ENOMEM or TSYNC_ESTORE.
 */
int store__commit_unsynced(struct store *s);

/* Whether anything is staged and not yet committed, or committed and not
 * yet synced. */
bool store__dirty(const struct store *s);

/*
 * Calls fn for every stored (committed) value; the name and the value's string
 * are borrowed for the call. fn may stage values. 0, -ENOMEM or TSYNC_ESTORE.
 */
typedef void (*store_value_fn)(void *ud, const char *thing, uint64_t version, uint64_t boot,
                               const tsync_value *v);
int store__load_values(struct store *s, store_value_fn fn, void *ud);

/*
 * Durable windows. A window is the receiver's record of one (sender, origin
 * boot): `top`, the highest id executed, and `bits`, STORE_WINDOW_WORDS
 * words of a bitmap of executed ids indexed by id modulo the window size.
 * An answer is kept per slot (id modulo the window size), so a window costs
 * at most one record per slot however many requests it saw. Staged records
 * are written by the next store__commit(), in the order they were staged.
 */
#define STORE_WINDOW_WORDS 16
int store__stage_window(struct store *s, const char *sender, uint64_t origin_boot, uint64_t top,
                        const uint64_t bits[STORE_WINDOW_WORDS]);
/* The answer to request `id`, kept in `slot`; err and res NULL: the slot is
 * emptied. 0, -EINVAL, -ENAMETOOLONG or -ENOMEM. */
int store__stage_answer(struct store *s, const char *sender, uint64_t origin_boot, uint32_t slot, uint64_t id,
                        const char *err, const char *res);
/* Deletes the window of (sender, origin boot) and all its answers. */
int store__stage_drop_window(struct store *s, const char *sender, uint64_t origin_boot);
/* Calls wfn for every window and, after it, afn for each of its answers (err,
 * res NULL when absent); everything passed is borrowed for the call. */
/* They return 0, or an error that stops the load (store__load_windows
 * returns it): a window that cannot be restored must not be skipped. */
typedef int (*store_window_fn)(void *ud, const char *sender, uint64_t origin_boot, uint64_t top,
                               const uint64_t bits[STORE_WINDOW_WORDS]);
typedef int (*store_answer_fn)(void *ud, const char *sender, uint64_t origin_boot, uint64_t id,
                               const char *err, const char *res);
int store__load_windows(struct store *s, store_window_fn wfn, store_answer_fn afn, void *ud);

/* A request this controller sent and has no answer to yet. */
struct store_request {
	const char *peer;
	uint64_t origin_boot, id;
	uint8_t type;      /* enum wire_type */
	bool is_pulse;     /* an io pulse of `thing` with `val` for `ms` */
	const char *thing; /* pulse: the thing */
	tsync_value val;   /* pulse: the value */
	uint32_t ms;
	const char *type_name, *role, *cmd, *body; /* other requests; each may be NULL */
};
/* Stages a request (strings copied); a later stage of the same (peer,
 * origin boot, id) replaces it. 0, -EINVAL, -ENAMETOOLONG or -ENOMEM. */
int store__stage_request(struct store *s, const struct store_request *r);
/* Stages its deletion: it was answered. */
int store__stage_request_done(struct store *s, const char *peer, uint64_t origin_boot, uint64_t id);
/* Calls fn for every stored request, per peer in (origin boot, id) order;
 * the request and its strings are borrowed for the call. */
typedef void (*store_request_fn)(void *ud, const struct store_request *r);
int store__load_requests(struct store *s, store_request_fn fn, void *ud);

/* A set request on a copy: `to_be` NULL stages its deletion (answered). */
int store__stage_setreq(struct store *s, const char *thing, const tsync_value *to_be);
int store__load_setreqs(struct store *s, store_value_fn fn, void *ud);

/* Cumuls (lib/cumul): `json` NULL stages the key's deletion. Both copied.
 * 0, -EINVAL, -ENAMETOOLONG or -ENOMEM. The load calls fn for every record
 * in key order, key and json borrowed for the call. */
int store__stage_cumul(struct store *s, const char *key, const char *json);
typedef void (*store_cumul_fn)(void *ud, const char *key, const char *json);
int store__load_cumuls(struct store *s, store_cumul_fn fn, void *ud);
/* The application's records, the same way (tsync_node_record_put()). */
int store__stage_record(struct store *s, const char *key, const char *text);
int store__load_records(struct store *s, store_cumul_fn fn, void *ud);
/* The committed records with from <= key < to (either NULL: unbounded), in
 * key order; and one record by key (malloc()ed into *text). 0, -ENOENT (get),
 * -EINVAL, -ENOMEM or TSYNC_ESTORE. */
int store__scan_records(struct store *s, const char *from, const char *to, store_cumul_fn fn, void *ud);
int store__get_record(struct store *s, const char *key, char **text);

/* Bytes written by the commits so far (keys and records, deletions as their
 * key), and the number of commits that wrote something: what the durable
 * windows cost, for benchmarks. */
void store__written(const struct store *s, uint64_t *bytes, uint64_t *commits);

/*
 * The journal: the outage buffer of thingsync-pushd, one LMDB environment in
 * its own directory (never a store's directory: LMDB allows one environment
 * per directory per process). It holds one stream of measurements of one
 * source, numbered by a stream sequence that starts at 1, never repeats and
 * has no gap; a cursor, the highest sequence the collector acknowledged; and
 * for every thing the owner (boot, version) of the newest value journaled, so
 * a value the mesh delivers again (after a crash, at start-up re-sync) is
 * recognised and journaled once. The stream has an identity, a random
 * 128-bit id made when the journal is created: a journal that is lost and
 * made again starts a new stream, which the collector can never take for the
 * old one going backwards. Named databases:
 *   "jmeta"     "source", "stream", "last_seq", "cursor", "bytes"
 *   "entries"   stream sequence (u64 big-endian, so keys sort by number) ->
 *               measurement record (little-endian; see journal.c)
 *   "versions"  thing name -> (owner boot, version), u64 little-endian each
 *   "marks"     commit mark -> its number (u64 little-endian); see journal__stage_mark()
 * Measurements are staged in memory and written by journal__commit() in one
 * transaction (group commit). The journal holds the entries after the cursor,
 * exactly: journal__ack() moves the cursor and deletes what it passed in the
 * same transaction.
 */
struct journal;

/* Size limits; the journal refuses to commit more once one is reached. */
struct journal_limits {
	uint64_t max_entries; /* 0: JOURNAL_DEFAULT_MAX_ENTRIES */
	uint64_t max_bytes;   /* record and key bytes; 0: JOURNAL_DEFAULT_MAX_BYTES */
};
#define JOURNAL_DEFAULT_MAX_ENTRIES ((uint64_t)5000000)
#define JOURNAL_DEFAULT_MAX_BYTES   ((uint64_t)1 << 30)
/* A stream id: 128 bits as lowercase hex digits. */
#define JOURNAL_STREAM_LEN 32
/* Longest thing name and string value a measurement may have, in bytes. */
#define JOURNAL_MAX_THING  255
#define JOURNAL_MAX_STRING 4096

/* Longest cumul JSON (a closed day of one thing) and day text ("YYYY-MM-DD"). */
#define JOURNAL_MAX_CUMUL 8192
#define JOURNAL_DAY_LEN   10
/* Commit marks kept (see journal__stage_mark()); the oldest are forgotten first. */
#define JOURNAL_MAX_MARKS 65536

/* How an entry reached pushd. */
enum journal_via {
	JOURNAL_VIA_LIVE = 0,     /* the mesh's current value */
	JOURNAL_VIA_RECOVERY = 1, /* an owner's history, after an outage (recovery_data) */
	JOURNAL_VIA_IMPORT = 2,   /* a file (--csv) */
};

enum journal_kind {
	JOURNAL_MEASUREMENT = 0,
	JOURNAL_RECOVERY_GAP = 1, /* an owner's history no longer holds [from_us, to_us] */
	JOURNAL_CUMUL = 2,        /* a closed day of a thing's cumul (forensicd) */
};

/*
 * One entry. Strings are borrowed (see each function). A measurement has
 * time, thing, value and the owner's (boot, version); a recovery gap has
 * owner, from_us and to_us (thing is the owner too); a cumul has owner,
 * thing, day and cumul (its JSON text).
 */
struct journal_entry {
	uint64_t seq;        /* stream sequence */
	int64_t time_us;     /* when it was measured, microseconds since the epoch */
	uint64_t owner_boot; /* the owner's boot and version of a value from the */
	uint64_t version;    /* mesh; both 0 for other sources (a CSV file) */
	const char *thing;
	tsync_value value;
	enum journal_via via;
	enum journal_kind kind;
	const char *owner;      /* gap, cumul */
	const char *day;        /* cumul */
	const char *cumul;      /* cumul */
	int64_t from_us, to_us; /* gap */
};

/* Counters; all about committed entries except `staged`. */
struct journal_stats {
	uint64_t cursor;   /* highest sequence acknowledged (0: none yet) */
	uint64_t last_seq; /* highest sequence committed (0: none yet) */
	uint64_t entries;  /* last_seq - cursor: waiting to be sent */
	uint64_t bytes;
	uint64_t max_entries;
	uint64_t max_bytes;
	size_t staged;
	size_t staged_marks;
	bool full; /* entries or bytes at their limit: journal__commit() says -ENOSPC */
};

/*
 * Opens (creating if needed) the journal of `source` in directory `dir`
 * (created with mode 0700). `lim` may be NULL (defaults); `log` is borrowed
 * and must outlive the journal. 0, -EINVAL (bad arguments, or the journal
 * belongs to another source: the stream would be mixed), -ENOTDIR, -EBUSY
 * (already open in this process), -ENOMEM or TSYNC_ESTORE. `*ret` is written
 * only on success.
 */
int journal__open(const char *dir, const char *source, const struct journal_limits *lim,
                  const struct logger *log, struct journal **ret);

/* Closes the journal, discarding what is staged (nothing of it was acknowledged). Accepts NULL. */
void journal__close(struct journal *j);

/*
 * Stages a measurement (thing and string copied) and gives it the next
 * stream sequence in `*seq` (may be NULL). Nothing is durable before
 * journal__commit(). 0, -EINVAL (empty or over-long thing, bad type, string
 * over JOURNAL_MAX_STRING) or -ENOMEM.
 */
int journal__stage(struct journal *j, int64_t time_us, const char *thing, const tsync_value *v,
                   uint64_t owner_boot, uint64_t version, uint64_t *seq);

/*
 * Stages any entry (seq ignored; strings copied), as journal__stage() does
 * for a live measurement. A recovered or imported measurement raises the
 * thing's last version only when it is newer. 0, -EINVAL (a field missing or too long)
 * or -ENOMEM.
 */
int journal__stage_entry(struct journal *j, const struct journal_entry *e, uint64_t *seq);

/*
 * Commit marks: a key (1..JOURNAL_MAX_THING bytes, e.g. a recovery chunk's
 * request and number) staged with entries is written in their commit, so a
 * request delivered again after a crash between that commit and the mesh's
 * answer is recognised: journal__has_mark() says 1 (staged or committed),
 * 0, or a negative code. The last JOURNAL_MAX_MARKS are kept.
 */
int journal__stage_mark(struct journal *j, const char *key);
int journal__has_mark(struct journal *j, const char *key);

/*
 * Writes everything staged in one transaction, fsync'ed before it returns:
 * the durability point, acknowledge only after it. 0; -ENOSPC when the
 * journal is full (at max_entries or max_bytes before this commit; a commit
 * that starts below the limits may end above them by its own size), nothing
 * written; -ENOMEM or TSYNC_ESTORE. On failure everything stays staged: call
 * journal__discard() or try again later.
 */
int journal__commit(struct journal *j);

/* Forgets what is staged; the sequences it took are given out again. */
void journal__discard(struct journal *j);

/*
 * The owner (boot, version) of the newest value of `thing` journaled, staged
 * included. 0, or -ENOENT if none; TSYNC_ESTORE.
 */
int journal__last_version(struct journal *j, const char *thing, uint64_t *owner_boot, uint64_t *version);

/*
 * Calls fn for up to `max` committed entries with a sequence above `after`,
 * in order. The entry and its strings are borrowed for the call; fn returns 0
 * to go on, anything else to stop (journal__read() then returns 0). fn must not
 * commit, ack or close. 0, -EINVAL, -ENOMEM or TSYNC_ESTORE.
 */
typedef int (*journal_entry_fn)(void *ud, const struct journal_entry *e);
int journal__read(struct journal *j, uint64_t after, size_t max, journal_entry_fn fn, void *ud);

/*
 * The collector acknowledged everything up to `seq`: moves the cursor there
 * and deletes those entries, in one transaction. A `seq` at or below the
 * cursor does nothing. 0, -ERANGE (seq above the last committed one), -ENOMEM
 * or TSYNC_ESTORE (then nothing changed).
 */
int journal__ack(struct journal *j, uint64_t seq);

void journal__stats(const struct journal *j, struct journal_stats *st);

/*
 * The journal's stream id (JOURNAL_STREAM_LEN hex digits), made when the
 * journal was created, or when a journal made before stream ids was first
 * opened (logged). Borrowed: valid until journal__close() or a
 * journal__adopt() that changes it.
 */
const char *journal__stream_id(const struct journal *j);

/* A new random stream id into `out`. 0 or -errno (getrandom). */
int journal__new_stream_id(char out[JOURNAL_STREAM_LEN + 1]);
/* Whether `s` is a stream id: JOURNAL_STREAM_LEN lowercase hex digits. */
bool journal__valid_stream_id(const char *s);

/*
 * thingsync-dr. The collector holds sequences 1..`stored_seq` of stream
 * `stream` of this source; make the journal continue that stream, in one
 * transaction:
 *  - the same stream: the entries up to `stored_seq` are acknowledged (the
 *    cursor moves there), the others keep their sequence; a journal behind
 *    the collector jumps to it (next sequence stored_seq + 1);
 *  - another stream (the journal was made again while the collector kept
 *    the old one): its unsent entries are renumbered after `stored_seq`, in
 *    their order, so that none is lost or refused; those whose owner (boot,
 *    version) is not newer than `v` says the collector stored for their
 *    thing are dropped, as copies of what the old stream carried.
 * `v` (borrowed for the call; nv entries) also raises the journal's last
 * versions, so the mesh's current values are not journaled again.
 * Nothing may be staged. 0, -EINVAL (bad stream id), -EBUSY (staged
 * entries), -ENOMEM or TSYNC_ESTORE (nothing changed then). `res` may be NULL.
 */
struct journal_version {
	const char *thing;
	uint64_t owner_boot, version;
};
struct journal_adopt_result {
	uint64_t acked;      /* same stream: entries the collector already had */
	uint64_t kept;       /* entries left to send */
	uint64_t renumbered; /* of those, entries given a new sequence */
	uint64_t dropped;    /* another stream: copies of values already stored */
	bool stream_changed;
};
int journal__adopt(struct journal *j, const char *stream, uint64_t stored_seq, const struct journal_version *v,
                   size_t nv, struct journal_adopt_result *res);

/* What a journal directory holds, read without changing anything. */
struct journal_info {
	bool present; /* DIR/data.mdb exists */
	char source[64];
	char stream[JOURNAL_STREAM_LEN + 1]; /* "": none (made before stream ids) */
	uint64_t cursor, last_seq, bytes;
	uint64_t entries;             /* counted in the tree */
	uint64_t first_seq, max_seq;  /* of the entries in the tree (0: none) */
	uint64_t things;              /* last versions kept */
	char problem[256];            /* "": consistent */
};
/*
 * Opens the journal in `dir` read-only (no lock file made, no write) and
 * checks it: counters, every entry decoded, no gap, cursor < entries <=
 * last sequence. 0 (info->problem says whether it is consistent), -ENOENT
 * (no journal there), -EINVAL or TSYNC_ESTORE (unreadable; info->problem
 * says why).
 */
int journal__inspect(const char *dir, struct journal_info *info);

/* What a state store directory holds, read without changing anything (thingsync-dr). */
struct store_info {
	bool present;            /* DIR/data.mdb exists and is not empty */
	uint64_t boot;           /* the boot counter */
	uint64_t values;         /* owned values kept */
	uint64_t max_value_boot; /* the highest owner boot among them */
	char problem[256];       /* "": consistent */
};
/*
 * Opens the store in `dir` read-only (no lock file made, no write) and
 * checks it: a boot counter, every value decoded, none of a boot above the
 * counter. fn (may be NULL) is called for every value, as by
 * store__load_values() (name and string borrowed for the call). 0
 * (info->problem says whether it is consistent), -ENOENT (no data.mdb, or
 * an empty one), -EINVAL, -ENOMEM or TSYNC_ESTORE (unreadable;
 * info->problem says why).
 */
int store__inspect(const char *dir, struct store_info *info, store_value_fn fn, void *ud);

#endif /* TSYNC_STORE_H */
