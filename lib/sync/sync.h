/*
 * lib/sync: the protocol engine. It knows no sockets, no event loop and no
 * clock: lib/node feeds it datagrams, timer expiries and the time, and it
 * answers through struct sync_ops. That keeps it deterministic, so the unit
 * tests drive it over a simulated network with a simulated clock.
 *
 * State of the art it follows:
 *  - An owner keeps, per user, the version that user acknowledged; a thing
 *    is pending for a user while acked < current. A retransmission always
 *    encodes the current value, so a retry never carries a stale one.
 *  - Receivers order values by (owner boot, version) and never go back.
 *  - Requests that must act once (pulses, cmds, set requests) carry an id;
 *    the receiver keeps a window of the ids it executed (struct dedup) and
 *    answers a duplicate again without acting. A sender has at most
 *    max_outstanding ids in flight, so the window is exact.
 *  - The window is kept per sender *and origin boot* (the sender's boot
 *    that issued the request; "ob" on the wire when it is not the boot of
 *    the datagram), a few origin boots per sender. A node with a state
 *    directory writes its windows, and the answers worth keeping, in the
 *    commit that precedes its answers, restores them at start-up and says
 *    so ("dw" in its envelopes). A sender that learns such a peer's new boot
 *    sends its unanswered requests again, to the new boot, under the same
 *    (origin boot, id): the peer answers what it already did from the
 *    restored window and acts on the rest, exactly once. A sender with a
 *    state directory keeps its unanswered requests (and set requests on
 *    copies) in the store too and resumes them after its own restart. The
 *    mark is committed before the act (at most once); answers are written
 *    after the application's commit hook. With a commit hook (the act is
 *    done when the hook has committed it: a journal), "outcome unknown" is
 *    the answer kept until then, so a crash between the act and that
 *    commit answers a resent request TSYNC_EPEER_RESTARTED, never "done"
 *    for an act whose effect was lost; an idempotent receiver (pushd's
 *    commit marks) lets its sender send it again. Without one, such a
 *    repeat is answered done, with no result. Towards
 *    a peer without durable windows, a request in flight when it restarts
 *    completes as TSYNC_EPEER_RESTARTED (at most once).
 *  - Every datagram names the receiver's boot (to_boot); a node acts only on
 *    datagrams addressed to its current boot and answers the others with an
 *    empty datagram that teaches it. Nothing captured before a restart can
 *    act after it, without keeping replay windows on disk.
 *  - One retransmission timer per peer, RFC 6298 estimator, exponential
 *    backoff capped at retry_max_ms; a peer that does not answer gets one
 *    datagram per backoff period.
 *  - Peers that share things send each other a heartbeat (an empty
 *    datagram) when nothing else went to the other for heartbeat_ms, and
 *    one heard from for two and a half periods is down. A peer heard again
 *    after such a silence gets what waited for the backoff at once, and a
 *    heartbeat back, so a healed partition converges in a round trip after
 *    the first datagram crosses it, not after the longest backoff.
 *    The same per-peer timer carries the retransmission, the heartbeat and
 *    the silence deadline.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_SYNC_H
#define TSYNC_SYNC_H

#include <endian.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <thingsync/node.h>

#include "site/site.h"
#include "util/util.h"
#include "wire/wire.h"

#define SYNC_DEDUP_BITS 1024 /* >= max_outstanding (site.conf caps it at 1024) */
#define SYNC_SENT_RING  32   /* datagrams remembered for round-trip samples */
#define SYNC_BURST_MAX  256  /* datagrams one flush may send to a live peer */
/* A timer that fires this much before a deadline counts it as due: libevent
 * may measure time with the coarse clock, a few milliseconds behind ours. */
#define SYNC_TIMER_SLACK_US 5000

/* --- rtt.c: RFC 6298 retransmission timeout ------------------------------- */
struct rtt {
	uint32_t srtt_us; /* 0: no sample yet */
	uint32_t rttvar_us;
	uint32_t rto_us;
	uint32_t min_us, max_us;
};

void rtt__init(struct rtt *r, uint32_t initial_ms, uint32_t min_ms, uint32_t max_ms);
void rtt__sample(struct rtt *r, uint32_t sample_us);
/* The timeout after `backoff` unanswered retransmissions, capped at max. */
uint32_t rtt__timeout(const struct rtt *r, unsigned backoff);

/* --- dedup.c: the ids a peer's requests used, and their answers ------------ */
struct dedup_answer {
	uint64_t id;
	char *err; /* seed error name, owned, or NULL */
	char *res; /* JSON text, owned, or NULL */
};

struct dedup {
	uint64_t top; /* highest id seen (0: none) */
	uint64_t bits[SYNC_DEDUP_BITS / 64];
	struct dedup_answer *answers; /* ring of SYNC_DEDUP_BITS, allocated on first use */
};

/* One sender boot's window; `dirty`: changed since it was last staged for
 * the store. */
struct dedup_win {
	uint64_t ob; /* origin boot; 0: the slot is free */
	bool dirty;
	struct dedup d;
};
#define SYNC_DEDUP_BOOTS 4 /* origin boots whose windows are kept per sender */

enum dedup_state { DEDUP_NEW, DEDUP_DONE };
enum dedup_state dedup__check(const struct dedup *d, uint64_t id);
void dedup__mark(struct dedup *d, uint64_t id);
void dedup__unmark(struct dedup *d, uint64_t id); /* a failed commit: not executed after all */
/* Remembers the answer of id (strings copied); NULLs are fine. 0 or -ENOMEM. */
int dedup__remember(struct dedup *d, uint64_t id, const char *err, const char *res);
/* The remembered answer of id, or NULL if it has been forgotten. */
const struct dedup_answer *dedup__answer(const struct dedup *d, uint64_t id);
void dedup__reset(struct dedup *d);
void dedup__free(struct dedup *d);

/* --- the engine ----------------------------------------------------------- */

/* The answer to a pulse, set request or command that was taken but could not
 * be acted on (the seed's name): the requester sees TSYNC_EWRITE. */
#define SYNC_ERR_WRITE "err_write_crash"
/* The answer to a resent request whose window is no longer kept (its origin
 * boot is older than the SYNC_DEDUP_BOOTS newest): whether it was acted on
 * is not known, and it is not acted on now. The requester sees
 * TSYNC_EPEER_RESTARTED. */
#define SYNC_ERR_UNKNOWN "err_outcome_unknown"

struct outreq;

struct sync_ops {
	void *ctx;
	/* Sends a datagram to a peer. */
	void (*send)(void *ctx, uint32_t peer, const void *buf, size_t len);
	/* Arms (replacing) or, with delay_us == UINT64_MAX, disarms the peer's timer;
	 * on expiry the environment calls sync__timer(). */
	void (*arm)(void *ctx, uint32_t peer, uint64_t delay_us);
	/* Asks for sync__flush() soon: after the current callback returns. */
	void (*want_flush)(void *ctx);
	/* Stages an owned thing's value for durable storage (may be NULL). */
	void (*persist)(void *ctx, const char *thing, const tsync_value *v, uint64_t ver, uint64_t boot);
	/* Makes staged values durable; called before anything that depends on
	 * them is sent (the durability rule). 0 or a negative code. May be NULL. */
	int (*commit)(void *ctx);
	/* Commits before an act (engine__act_point): durable against a crash
	 * of the process at once, against a power cut with the next commit.
	 * May be NULL: then commit. */
	int (*commit_unsynced)(void *ctx);
	/* Asks for a commit within delay_ms (group commit of the controller's
	 * own changes, which acknowledge nothing). May be NULL: then at once. */
	void (*commit_later)(void *ctx, uint32_t delay_ms);
	/* A datagram or a message was refused, and counted. `peer` names the
	 * sender, or is NULL when it is not known (the environment knows the
	 * source address); `what` and `detail` may be NULL. The environment
	 * logs it, rate-limited. May be NULL: then the engine logs every one. */
	void (*rejected)(void *ctx, const char *peer, tsync_reject why, const char *what, const char *detail);
	/* Durable windows and requests (see the top of this file), each staged
	 * for the next commit; only called after sync__set_durable(). A window
	 * of `sender` and origin boot `ob`: d NULL drops it. */
	void (*persist_window)(void *ctx, const char *sender, uint64_t ob, const struct dedup *d);
	/* The answer to request `id` (err and res NULL: none worth keeping). */
	void (*persist_answer)(void *ctx, const char *sender, uint64_t ob, uint64_t id, const char *err,
	                       const char *res);
	/* A request of mine to `peer`, unanswered (done false) or answered. */
	void (*persist_request)(void *ctx, const char *peer, uint64_t ob, const struct outreq *r, bool done);
	/* A set request of mine on a copy (to_be NULL: answered). */
	void (*persist_setreq)(void *ctx, const char *thing, const tsync_value *to_be);
};

enum thing_role { THING_NONE = 0, THING_OWNED, THING_USED };

struct thing_rt {
	uint8_t role;
	/* The name's length if 1..8 (else 0) and its bytes in a word, zero
	 * after them: a decoded name whose length the decoder knew
	 * (wire_msg.io_len) is compared by one load (engine__thing_named_len). */
	uint8_t name_len8;
	uint64_t name_word;
	uint32_t peer;   /* used: the owner's peer index */
	tsync_value val; /* owned string */
	uint64_t ver;    /* owned: my version; used: the owner's */
	uint64_t boot;   /* the owner's boot that gave `ver` */

	/* used: my request to the owner (to_be), newest wins */
	bool req_pending;
	int req_error; /* how the owner answered the last one (0, TSYNC_E*) */
	tsync_value req_val;
	uint64_t req_id;
	uint64_t req_sent_us; /* 0: not sent yet */
	/* used: I asked the owner for the value */
	bool ask_pending;
	uint64_t ask_sent_us;
	bool in_listed; /* on the owner peer's `inq` */

	/* owned: the last set request applied, to ignore an older one that
	 * arrives late from the same peer */
	uint32_t req_from;
	uint64_t req_from_boot, req_from_id;
	const char *req_from_err; /* its answer's error (a static name), or NULL */

	/* owned: where each user's acknowledgement is kept */
	struct user_ref {
		uint32_t peer, slot;
	} * users;
	uint32_t n_users;
	/* owned: users whose acked_ver < ver, kept by engine__owned_ver() and
	 * engine__set_acked(), the only writers of ver and acked_ver */
	uint32_t users_pending;
};

/* One set I sent to a peer: in my datagram `seq`, slot `slot` of its out[],
 * at version `ver` (ack.c). */
struct sent_set {
	uint64_t seq, ver;
	uint32_t slot;
};

struct out_slot {
	uint32_t thing;
	uint64_t acked_ver; /* the version this user acknowledged (this boot of mine) */
	uint64_t sent_ver;
	uint64_t sent_us;
	bool listed; /* on the peer's dirty list */
};

/* A pulse, cmd or other request I send to a peer, repeated until answered. */
struct outreq {
	struct outreq *next;
	uint64_t id;
	uint64_t ob; /* the boot of mine that issued it (resumed from the store), 0: this one */
	enum wire_type type;
	bool is_pulse;
	uint32_t thing;
	tsync_value val; /* pulse value, owned */
	uint32_t ms;
	char *type_name;
	char *role;
	char *cmd;
	char *body; /* compact JSON object text */
	tsync_done_fn done;
	void *userdata;
	uint64_t sent_boot; /* the peer's boot when first sent (0: never sent) */
	uint64_t sent_us;
};

/* An answer queued for a peer; it owns everything it points to, so answers
 * to a whole batch of datagrams can wait for one commit. */
struct answer {
	struct wire_msg m;
	char *owned_res;
	char *owned_err;
	char *owned_type, *owned_role, *owned_cmd;
	tsync_value owned_val;
};

/* What a received message changed, kept until the commit hook says it is
 * durable, so that a failed commit can undo it (the sender retries). */
struct undo {
	uint32_t thing; /* a copy's previous state, or UNDO_MARK */
	uint32_t peer;
	uint64_t id; /* UNDO_MARK: a request id marked as executed, in window `boot` */
	tsync_value val;
	uint64_t ver, boot;
	bool ask_pending;
};
#define UNDO_MARK UINT32_MAX

/* A peer's counters, as tsync_peer_stats reports them. `rejected`
 * (TSYNC_REJ_COUNT) is allocated at its first refusal: most peers never
 * send one, and a tsync_peer_stats in every peer was 208 bytes, 200 KB a
 * node on a site of a thousand controllers. */
struct peer_counts {
	uint64_t datagrams_sent, datagrams_received;
	uint64_t bytes_sent, bytes_received;
	uint64_t msgs_sent, retransmits, acked;
	uint64_t *rejected;
};

/* What a flush of a peer sends, in increasing order of eagerness. */
enum flush_level {
	FLUSH_NONE = 0,
	FLUSH_NEW,     /* what was never sent (or changed since) */
	FLUSH_OVERDUE, /* and what waited longer than the timeout */
	FLUSH_ALL,     /* everything pending: the peer just (re)appeared */
};

/* Names come in the order of the last time: the names of a batch in the
 * order its sender's sets went, a round of them in the order of the round
 * before, an application's sets in the order of its loop. next[t] is the
 * thing whose name followed t's the last time (by site index, allocated at
 * the first name looked up; UINT32_MAX: none), last the thing named last.
 * A guess is checked by its name; the name index decides otherwise. */
struct name_hint {
	uint32_t *next;
	uint32_t last;
};

struct sync_peer {
	uint32_t ctrl;
	const char *name;
	size_t name_len; /* strlen(name): a datagram's "from" is compared, not looked up */
	bool seed;       /* speaks the seed's plain lists */

	uint64_t boot; /* the peer's boot (0: not heard yet this boot of mine) */
	struct wire_replay replay;
	uint64_t tx_seq;
	uint64_t rx_seq_to_echo; /* its seq to echo in "re" in my immediate answer */
	/* SYNC_SENT_RING entries, allocated with the first datagram to it. The
	 * per-peer state is allocated where a peer is talked to: on a site of a
	 * thousand controllers each talks to a few dozen. */
	struct sent_stamp {
		uint64_t seq, us;
	} * sent_ring;

	struct out_slot *out; /* things I own that it uses */
	size_t n_out;
	uint32_t *dirty; /* indexes into out[] that may be pending */
	size_t n_dirty;
	/* A set on the list may be unsent: a new version (slot_dirty), or a
	 * flush that stopped at its budget. Without one, a flush at
	 * FLUSH_NEW (an acknowledgement came) has no set to send and does not
	 * walk the list, which a round of a thousand sets to a user walked
	 * again at each of its acks. */
	bool sets_unsent;
	/* dirty[0 .. acked_below) were acknowledged when engine__pending()
	 * last looked: it goes on from there. A new version of any (slot_dirty)
	 * and the walk that compacts the list start it at 0 again. */
	size_t acked_below;
	uint32_t *inq; /* things it owns with an ask or request pending */
	size_t n_inq;
	size_t cap_inq;

	struct outreq *reqs; /* FIFO, oldest first */
	struct outreq **reqs_tail;
	size_t n_reqs;
	uint64_t next_id;

	/* Its requests I executed, per origin boot: SYNC_DEDUP_BOOTS windows,
	 * allocated with its first request (engine__window), NULL before. */
	struct dedup_win *wins;
	bool durable; /* it keeps durable windows ("dw") */
	struct answer *answers;
	size_t n_answers, cap_answers;

	struct rtt rtt;
	unsigned backoff;
	uint64_t timer_at; /* the retransmission deadline (0: none) */
	uint64_t armed_at; /* when the environment's timer fires (0: disarmed) */
	bool timing;       /* sync__timer() runs for it: it arms once at the end */
	uint8_t flush;     /* FLUSH_*: what the next sync__flush() sends */
	bool queued;       /* on the engine's flush list */
	uint64_t next_setreq_id;
	bool up;
	bool ever_heard;
	uint64_t last_heard_us;
	uint64_t oldest_pending_us; /* when the oldest unanswered message was first sent */
	uint64_t last_hello_us;
	bool heartbeat;        /* shares things with me: each tells the other it is alive */
	bool greet;            /* heard after a silence: the next flush answers it at least */
	uint64_t last_sent_us; /* the last datagram to it (or when I started) */

	/* Acknowledgements by datagram (ack.c; "ack" in wire.h). */
	/* Its datagrams whose sets I hold, for my next datagram: e->ack_ranges
	 * ranges, allocated when the first is noted (ack__note). */
	uint64_t (*acks)[2];
	uint32_t n_acks;
	struct sent_set *sent; /* the sets of my datagrams to it, a ring in seq order */
	uint32_t sent_mask;    /* ring size - 1 (0: not allocated yet) */
	uint64_t sent_head;    /* entries ever recorded; the ring holds the newest */
	uint64_t sent_tail;    /* the oldest entry still valid */

	struct peer_counts st;
};

struct listener {
	tsync_event_fn fn;
	void *userdata;
};

struct handler {
	char *type; /* "cmd" or a request type */
	char *role; /* cmd only */
	char *cmd;  /* cmd only */
	tsync_request_fn fn;
	void *userdata;
};

/* --- defer.c: requests a handler answers later (tsync_request_defer()) ----- */

/* The answer a deferred request holds in the window while its handler's
 * work runs: never sent and never stored (the store holds SYNC_ERR_UNKNOWN
 * for it, which a restart leaves as its answer). */
#define SYNC_ERR_RUNNING "\x01running"

/* A deferred request: whom to answer, and which window holds its mark. */
struct tsync_deferred {
	struct tsync_deferred *next;
	uint32_t peer;
	bool has_id;
	uint64_t ob, id;
	enum wire_type type;
	char *type_name, *role, *cmd;
};

/* The request whose handler runs (input.c on_request), for sync__defer(). */
struct defer_cur {
	const tsync_request *req;
	struct sync_peer *p;
	struct dedup_win *w;
	const struct wire_msg *m;
	struct tsync_deferred *d; /* set by sync__defer(), NULL again once answered */
	bool deferred;            /* sync__defer() succeeded */
};

struct sync_engine {
	const struct tsync_site *site;
	struct site_plan *plan;
	uint32_t me;
	uint64_t boot;
	uint64_t ver_counter;
	struct sync_ops ops;
	const struct logger *log;
	struct tsync_node *node; /* passed to callbacks; may be NULL in tests */
	struct wire_codec codec;
	struct wire_auth_key *auth;
	struct wire_writer writer;
	struct wire_decoder *decoder; /* its buffers, allocated once: receiving allocates nothing */
	bool wins_dirty;              /* some peer's window is dirty: the next flush stages it */
	struct prng prng;

	struct thing_rt *things; /* one per site thing */
	struct sync_peer *peers;
	size_t n_peers;
	uint32_t *flushq; /* peers with new things to send */
	size_t n_flushq;
	/* A set goes to each user of its thing with the same bytes: in a pass
	 * that flushes several peers, the first datagram that carries it
	 * writes them and the others copy them (engine.c, shared_add()).
	 * shared (allocated at the first such pass) is by thing: where in
	 * shared_buf its bytes of this pass (shared_gen) are. */
	struct shared_set *shared;
	struct buf shared_buf;
	uint32_t shared_gen;
	bool shared_on;
	uint64_t shared_copies; /* sets copied so, for tests */
	uint64_t names_looked_up; /* engine__thing_looked_up() calls: guesses missed, for tests */
	uint64_t names_by_word;   /* guesses checked by engine__thing_named_len()'s word, for tests */
	uint32_t event_thing; /* the thing of the event being emitted, or UINT32_MAX */
	/* Walks that used to cover every peer, on a site of a thousand at every
	 * heartbeat or flush, cover these: the peers heartbeats go to (fixed
	 * by the site), and those that have request windows (a peer is added
	 * once, when its windows are allocated). */
	uint32_t *hb_peers;
	size_t n_hb_peers;
	uint32_t *win_peers;
	size_t n_win_peers, cap_win_peers;
	size_t n_reqs; /* the sum of every peer's n_reqs, kept (sync__unsettled) */
	size_t n_owned_unsettled; /* owned things with users_pending > 0 */

	struct listener *listeners;
	size_t n_listeners;
	struct handler *handlers;
	size_t n_handlers;
	tsync_write_fn write_hook;
	void *write_userdata;
	tsync_pulse_fn pulse_hook;
	void *pulse_userdata;
	tsync_commit_fn commit_hook;
	void *commit_userdata;
	bool acts_pending;   /* events from received messages since the last commit */
	bool commit_failing; /* the last commit hook call failed */
	struct undo *undo;
	size_t n_undo, cap_undo;
	/* Answers to keep, written only after the commit hook (sync__flush):
	 * on disk before the application's act they would say "done" for it. */
	struct kept_answer *kept;
	size_t n_kept, cap_kept;
	struct defer_cur defer_cur;      /* the handler running now, if any */
	struct tsync_deferred *deferred; /* deferred requests not answered yet */

	uint64_t rejected_unknown[TSYNC_REJ_COUNT];
	bool durable; /* windows and requests go to the store (sync__set_durable) */
	bool persist_dirty;
	/* An owned thing with users got its first value: the next flush commits
	 * before it sends (engine__apply_owned). Not persist_dirty, which
	 * tsync_node_set() would commit at once, and every later one until then. */
	bool first_value;
	unsigned in_callback;  /* depth, to defer frees while user code runs */
	uint64_t now;          /* the time of the call being processed */
	/* The datagram being read (input.c): whether its sets from an owner
	 * are acknowledged by datagram, and the things they were about. */
	uint32_t ack_ranges; /* ack ranges my envelopes always have room for (ack.c) */
	bool rx_by_dg;
	bool rx_uncovered; /* a set left me holding an older version */
	uint32_t *rx_sets;
	size_t n_rx_sets;
	/* The names in the datagrams I read, and those the application sets
	 * (engine__thing_named()). */
	struct name_hint rx_names, set_names;
	uint64_t heartbeat_us; /* site heartbeat_ms (0: off) */
	uint64_t silent_us;    /* a heartbeat peer heard from for this long is down */
};

int sync__new(const struct tsync_site *site, uint32_t me, uint64_t boot, const struct sync_ops *ops,
              const struct logger *log, struct tsync_node *node, struct sync_engine **ret);
/* Completes outstanding requests with TSYNC_ECANCELED and frees. NULL ok. */
void sync__free(struct sync_engine *e);

/* Before sync__start: a value of an owned thing found in the store. */
int sync__restore(struct sync_engine *e, const char *thing, const tsync_value *v);
/* Start-up: ask the owners of everything I use, offer my values to users. */
void sync__start(struct sync_engine *e, uint64_t now);

/* A datagram arrived. `addr_peer` is the peer whose configured address it
 * came from, or -1. */
void sync__input(struct sync_engine *e, int addr_peer, const void *buf, size_t len, uint64_t now);
/* The peer's timer expired: it retransmits, sends heartbeats, or finds
 * the peer down, whichever is due. */
void sync__timer(struct sync_engine *e, uint32_t peer, uint64_t now);
/* Sends what became pending since the last flush. */
void sync__flush(struct sync_engine *e, uint64_t now);

/* The node API, engine side (see include/thingsync/node.h for semantics). */
int sync__set(struct sync_engine *e, const char *thing, const tsync_value *v, uint64_t now);
int sync__get(struct sync_engine *e, const char *thing, tsync_thing_state *out);
int sync__ask(struct sync_engine *e, const char *thing, uint64_t now);
int sync__pulse(struct sync_engine *e, const char *thing, const tsync_value *v, uint32_t ms,
                tsync_done_fn done, void *ud, uint64_t now);
int sync__send_request(struct sync_engine *e, const char *controller, const char *type, const char *role,
                       const char *cmd, const char *body_json, tsync_done_fn done, void *ud, uint64_t now);
int sync__on_event(struct sync_engine *e, tsync_event_fn fn, void *ud);
/* In a listener: the index of the event's thing, without a lookup by name
 * (every change and pulse is emitted with it: engine__emit_thing()), or
 * UINT32_MAX for an event about no thing (a peer's). */
uint32_t sync__event_thing(const struct sync_engine *e, const tsync_event *ev);
int sync__on_request(struct sync_engine *e, const char *type, const char *role, const char *cmd,
                     tsync_request_fn fn, void *ud);
void sync__set_write_hook(struct sync_engine *e, tsync_write_fn fn, void *ud);
void sync__set_pulse_hook(struct sync_engine *e, tsync_pulse_fn fn, void *ud);
void sync__set_commit_hook(struct sync_engine *e, tsync_commit_fn fn, void *ud);
size_t sync__unsettled(const struct sync_engine *e);
/* The peer's smoothed round trip (microseconds) while something sent to it
 * awaits its answer and it has been answering (no backoff: not a peer gone
 * silent); 0 otherwise, or before its first sample. For the node's bounded
 * busy poll after a send (lib/node/node.c, busy_poll()). */
static inline uint32_t sync__awaited_srtt(const struct sync_engine *e, uint32_t peer)
{
	const struct sync_peer *p = &e->peers[peer];

	return p->oldest_pending_us && !p->backoff ? p->rtt.srtt_us : 0;
}
/* The node has a store: windows and requests are staged for it (ops), and
 * envelopes say "dw". Before sync__start. */
void sync__set_durable(struct sync_engine *e, bool durable);
/* Before sync__start, from the store: a window of a sender (ignored if the
 * sender is not a peer) and an answer in it, each 0 or -ENOMEM (logged: the
 * node must not start without them, or it would run a repeat again or
 * answer it "done"); a request of mine, resumed with
 * its (origin boot, id) and the callback it completes with (done NULL:
 * none); a set request of mine on a copy. */
int sync__restore_window(struct sync_engine *e, const char *sender, uint64_t ob, uint64_t top,
                         const uint64_t *bits, size_t n_words);
int sync__restore_answer(struct sync_engine *e, const char *sender, uint64_t ob, uint64_t id,
                         const char *err, const char *res);
struct store_request; /* store/store.h: the record the engine reads, no LMDB in it */
int sync__resume_request(struct sync_engine *e, const struct store_request *q, tsync_done_fn done, void *ud);
int sync__resume_setreq(struct sync_engine *e, const char *thing, const tsync_value *to_be);
int sync__peer_stats(const struct sync_engine *e, size_t idx, uint64_t now, tsync_peer_stats *out);
/* Within a request handler: its answer comes later, from sync__answer().
 * Marks the request running (a repeat is not answered, nor run again) and
 * commits "outcome unknown" as its answer for a restart before it ends.
 * 0, -EINVAL (not called from the handler of req), -ENOMEM, or the
 * commit's error. Called twice, it returns the same handle. */
int sync__defer(struct sync_engine *e, const tsync_request *req, struct tsync_deferred **ret);
/* Answers a deferred request (status and result as a handler's) and frees
 * d. 0; TSYNC_ECANCELED when the request no longer waits for it (a failed
 * commit hook undid it); -EINVAL (d unknown); -ENOMEM (the result could
 * not be copied: answered "outcome unknown"). */
int sync__answer(struct sync_engine *e, struct tsync_deferred *d, int status, const char *res, uint64_t now);
/* sync__free(): the deferred requests still unanswered are dropped. */
void defer__free_all(struct sync_engine *e);

/* Internal to lib/sync (engine.c <-> input.c). */
/* An owned thing takes version `ver`, newer than any its users acknowledged. */
void engine__owned_ver(struct sync_engine *e, struct thing_rt *rt, uint64_t ver);
/* A user's acknowledgement of an owned thing becomes `ver`. */
void engine__set_acked(struct sync_engine *e, struct out_slot *s, uint64_t ver);
/* Inline: a user emits one for every set of a batch it takes (a call and
 * a frame were 12 of its instructions a set with 10 users). */
static inline void engine__emit(struct sync_engine *e, const tsync_event *ev)
{
	/* By index: a listener may add listeners. */
	for (size_t i = 0; i < e->n_listeners; i++)
		e->listeners[i].fn(e->listeners[i].userdata, e->node, ev);
}
/* The same for an event about thing t, which sync__event_thing() then names
 * to the listeners. */
static inline void engine__emit_thing(struct sync_engine *e, uint32_t t, const tsync_event *ev)
{
	uint32_t was = e->event_thing; /* a listener's own set emits inside */

	e->event_thing = t;
	engine__emit(e, ev);
	e->event_thing = was;
}
/* The owner acts on a pulse once (hook, event) and passes it on to every
 * user; TSYNC_EWRITE if the pulse hook failed (then nothing else happens),
 * another negative code if it could not be made durable first (then it did
 * not act: engine__act_point). `from` and `w`: the requester and the window
 * its request is marked in, or NULL for a pulse of mine. */
int engine__pulse_act(struct sync_engine *e, uint32_t t, const tsync_value *v, uint32_t ms, const char *by,
                      struct sync_peer *from, struct dedup_win *w);
void engine__apply_owned(struct sync_engine *e, uint32_t t, const tsync_value *v, const char *by,
                         bool answers_peer);
/* Peer p wants a flush of at least `level`: queued once, the level raised.
 * Inline for what changes nothing (already queued at that level: every
 * set to each of 10 users but the first); engine__want_queue() does the rest. */
void engine__want_queue(struct sync_engine *e, struct sync_peer *p, enum flush_level level);
static inline void engine__want(struct sync_engine *e, struct sync_peer *p, enum flush_level level)
{
	if (p->queued && p->flush >= level)
		return;
	engine__want_queue(e, p, level);
}
void engine__inq_add(struct sync_engine *e, struct sync_peer *p, uint32_t t);
void engine__peer_boot(struct sync_engine *e, struct sync_peer *p, uint64_t boot);
void engine__flush_peer(struct sync_engine *e, struct sync_peer *p, enum flush_level level,
                        size_t max_datagrams);
void engine__send_hello(struct sync_engine *e, struct sync_peer *p, uint64_t to_boot, uint64_t re);
bool engine__pending(struct sync_engine *e, struct sync_peer *p);
/* A valid datagram from p, addressed to this boot; `has_msgs`: it carried
 * messages (an empty one is a heartbeat or a hello). */
void engine__heard(struct sync_engine *e, struct sync_peer *p, bool has_msgs);
int engine__queue_req(struct sync_engine *e, struct sync_peer *p, struct outreq *r);
void engine__complete_req(struct sync_engine *e, struct sync_peer *p, uint64_t id, int status,
                          const char *res);
struct answer *engine__answer(struct sync_engine *e, struct sync_peer *p);
void engine__answer_free(struct answer *a);
/* Records what a received message is about to change (only with a commit hook). */
void engine__undo_copy(struct sync_engine *e, uint32_t t);
void engine__undo_mark(struct sync_engine *e, struct sync_peer *p, uint64_t ob, uint64_t id);
/* p's window for requests issued by its boot `ob`, created if need be; NULL
 * when that boot is older than every window kept and none is free (the
 * outcome of its requests is no longer known), or out of memory. */
struct dedup_win *engine__window(struct sync_engine *e, struct sync_peer *p, uint64_t ob);
/* p's window for requests issued by its boot `ob`, if it has one; NULL if not. */
struct dedup_win *engine__window_find(struct sync_peer *p, uint64_t ob);
/* The point before an act that cannot be undone (a pulse, a command, a
 * relayed pulse at a user): with a store, w (if dirty) is staged, and
 * everything staged is committed (ops.commit_unsynced), so that the
 * request is marked done before it acts. A crash of the process during or
 * after the act then answers the sender's repeat from the window instead
 * of acting twice. The commit's meta page is synced by the commit that
 * precedes the answers: a power cut between the act and that commit may
 * undo the mark, and the repeat acts again (at least once); a crash in the
 * instant between this commit and the act's start loses the act, answered
 * "outcome unknown" (engine__window_pending) to the sender. 0, or the commit's error (then the caller must
 * not act). */
int engine__act_point(struct sync_engine *e, struct sync_peer *p, struct dedup_win *w);
/* Marks w changed since the last commit (the next flush stages it). */
void engine__window_dirty(struct sync_engine *e, struct dedup_win *w);
/* Marks id executed in w, and remembers its answer (strings copied). */
void engine__window_done(struct sync_engine *e, struct sync_peer *p, struct dedup_win *w, uint64_t id,
                         const char *err, const char *res);
struct kept_answer {
	uint32_t peer;
	uint64_t ob, id;
	char *err, *res;
};
/* Before a request's act, with a commit hook: "outcome unknown" staged as its
 * answer, which the act's own answer (engine__window_done) replaces in the
 * commit after the hook's. */
void engine__window_pending(struct sync_engine *e, struct sync_peer *p, struct dedup_win *w, uint64_t id);
/* A value for thing t as the site types and bounds it: 0 with *out, or
 * TSYNC_EVALUE. An integer for an integer thing without bounds or a list
 * (every set of a batch, which each user takes) needs nothing converted or
 * checked: inline, one compare a member; the rest engine__coerce_other(). */
int engine__coerce_other(const struct tsync_site *site, uint32_t t, const tsync_value *in, tsync_value *out);
static inline int engine__coerce(const struct tsync_site *site, uint32_t t, const tsync_value *in,
                                 tsync_value *out)
{
	const struct site_thing *th = &site->things[t];

	*out = *in;
	if (in->type == TSYNC_TYPE_INT && th->type == TSYNC_TYPE_INT && !th->has_min && !th->has_max &&
	    !th->n_allowed)
		return 0;
	return engine__coerce_other(site, t, in, out);
}
void input__datagram(struct sync_engine *e, int addr_peer, const void *buf, size_t len);
/* A handler's answer: its JSON checked (freed and NULL if not JSON), the
 * seed's error name for its status (NULL for success). */
char *input__checked_result(struct sync_engine *e, const char *type, char *res);
const char *input__err_of_status(int status);

/* ack.c: acknowledgements by datagram. As an owner: records that the set of
 * slot `slot` at `ver` went in my datagram `seq` to p (0 or -ENOMEM: then
 * the set is acknowledged by its reply, or repeated); takes p's
 * acknowledgement of my datagrams first..last. As a user: notes that I hold
 * every set of p's datagram `seq` (false if the envelope has no room left:
 * then each set is answered by a reply); forgets what p's earlier boot sent
 * or what I held (ack__reset). */
/* The site index of the thing `name`, through h (struct name_hint): 0, or
 * -ENOENT for a name the site does not have. The right guess (the thing
 * that followed the last one the last time: each set of a batch) costs
 * one strcmp() inline; engine__thing_looked_up() does the rest. */
int engine__thing_looked_up(struct sync_engine *e, struct name_hint *h, const char *name, uint32_t *t);
static inline int engine__thing_named(struct sync_engine *e, struct name_hint *h, const char *name, uint32_t *t)
{
	uint32_t n = (uint32_t)e->site->n_things, guess;

	if (name && h->next && h->last < n && (guess = h->next[h->last]) < n &&
	    !strcmp(e->site->things[guess].name, name)) {
		*t = h->last = guess;
		return 0;
	}
	return engine__thing_looked_up(e, h, name, t);
}

/* The same for a decoded name of length len (wire_msg.io_len; 0: not
 * known), which may be read 8 bytes at a time: the guess of a batch's set
 * is checked by one load and a compare instead of a strcmp(). */
static inline int engine__thing_named_len(struct sync_engine *e, struct name_hint *h, const char *name,
                                          uint8_t len, uint32_t *t)
{
	uint32_t n = (uint32_t)e->site->n_things, guess;
	uint64_t w;

	if (len && h->next && h->last < n && (guess = h->next[h->last]) < n &&
	    e->things[guess].name_len8 == len) {
		memcpy(&w, name, sizeof(w));
		w = le64toh(w);
		if (len < 8)
			w &= (1ull << (8 * len)) - 1;
		if (w == e->things[guess].name_word) {
			*t = h->last = guess;
			e->names_by_word++;
			return 0;
		}
	}
	return engine__thing_named(e, h, name, t);
}
int ack__record_first(struct sync_peer *p, uint64_t seq, uint32_t slot, uint64_t ver);
void ack__take(struct sync_engine *e, struct sync_peer *p, uint64_t first, uint64_t last);
bool ack__note(const struct sync_engine *e, struct sync_peer *p, uint64_t seq);
uint32_t ack__ranges(const struct tsync_site *site, uint32_t me);
void ack__reset(struct sync_peer *p);
void ack__free(struct sync_peer *p);

/* Notes the set of out[slot] at version ver in my datagram seq: a write to
 * the ring, inline (the owner of a batch records every set it sends); the
 * first, which allocates the ring, in ack.c. 0, or -ENOMEM. */
static inline int ack__record(struct sync_peer *p, uint64_t seq, uint32_t slot, uint64_t ver)
{
	if (!p->sent_mask)
		return ack__record_first(p, seq, slot, ver);
	p->sent[p->sent_head & p->sent_mask] = (struct sent_set){seq, ver, slot};
	p->sent_head++;
	if (p->sent_head - p->sent_tail > (uint64_t)p->sent_mask + 1)
		p->sent_tail = p->sent_head - p->sent_mask - 1;
	return 0;
}
/* The level a refusal for `why` is logged at (routine ones at debug). */
tsync_log_level input__reject_level(tsync_reject why);

#endif /* TSYNC_SYNC_H */
