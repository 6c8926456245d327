/*
 * lib/node: the public node API and its event-loop glue. It owns the UDP
 * socket, the timers and the state store, and feeds the engine (lib/sync)
 * with datagrams and the time. libevent stays in this file.
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <sodium.h>

#include "cumul/cumul.h"
#include "node/node.h"
#include "node/udp.h"
#include "site/site.h"
#include "store/history.h"
#include "store/store.h"
#include "sync/sync.h"
#include "util/util.h"

#define RECV_BATCH       64 /* datagrams read per wake-up before others get a turn */
#define TIMER_RECV_MAX   512 /* read before a timer's decision (timer_cb()) */
#define RESOLVE_RETRY_US (10u * 1000000u)
/* How often the cumuls note that the controller is alive: after a crash,
 * at most this much of a thing's last value is counted as unknown. */
#define CUMUL_CHECKPOINT_MS 60000
/* The busy poll (busy_poll()): the largest cap an option may ask for, and
 * the most peers a turn may send to and still poll (a turn that sends to
 * more is a batch, whose answers come as they come, while the node has
 * other work: not a round trip waiting on one answer). */
#define BUSY_POLL_MAX_US 1000u
#define BUSY_PEERS       4

struct peer_addr {
	struct tsync_node *node; /* for the timer callback */
	uint32_t peer;
	/* IPv4 or IPv6, no more: a sockaddr_storage (128 bytes) per peer was
	 * 100 KB per node on a site of a thousand controllers. */
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} ss;
	socklen_t len; /* 0: not resolved */
	uint64_t last_try_us;
	struct event *timer;
};

/* A datagram held back by fault injection, sent later (reordering). */
struct delayed {
	struct delayed *next;
	struct tsync_node *node;
	struct event *ev;
	uint32_t peer;
	size_t len;
	unsigned char data[];
};

struct tsync_node {
	tsync_site *own_site; /* loaded by us from site_path, or NULL */
	const tsync_site *site;
	uint32_t me;
	uint64_t boot;
	uint16_t port;
	int fd;
	int family;

	struct event_base *base;
	bool own_base;
	struct event *rx_ev;
	struct event *flush_ev;
	struct event *commit_ev; /* the group-commit window of own changes */

	struct peer_addr *addrs; /* one per engine peer */
	size_t n_addrs;
	/* Which peer sent from an address: a cache in front of the walk over
	 * addrs[] (a thousand on a big site, for every datagram: a tenth of
	 * the 1,000-controller simulation's time). A slot holds a peer index
	 * or -1; a hit is checked against the peer's address, so a stale slot
	 * is only a miss. */
	int32_t *addr_cache;
	size_t addr_cache_mask;

	struct store *store;
	struct cumul *cumul;        /* NULL: this controller owns nothing */
	bool cumul_noted;           /* cumul_event() ran since tsync_node_set() began */
	struct event *cumul_ev;     /* local midnight, or the next checkpoint */
	struct history *history; /* NULL: off */
	void *recovery_answers;  /* recovery.c: the answers being sent */
	struct sync_engine *eng;
	struct logger log;
	char *name;

	bool faults_on;
	tsync_faults faults;
	struct prng prng;
	struct delayed *delayed;

	/* Refusals are logged rate-limited per (sender or source address,
	 * reason); rx_from is the source of the datagram being handled, and
	 * so also says that a receive turn is under way, which ends with a
	 * flush of its own (rx_read()'s callers). */
	struct ratelog rejlog;
	struct event *rejlog_ev;
	const struct sockaddr_storage *rx_from;
	/* The last read of the socket found it empty (rx_read()): a timer due
	 * in the same turn need not read again (timer_cb()). */
	bool rx_drained;

	/* Datagrams in batches (udp.h): read with one recvmmsg(); while
	 * tx_batching (a batch being handled, a flush, a timer), what the
	 * engine sends is queued and leaves with one sendmmsg() at the end. */
	struct udp_batch rx, tx;
	bool tx_batching;
	/* A flush is owed; flush_ev is active for it. Outside our own loop
	 * (own_base, not in tsync_node_run*()) nothing runs it but the next
	 * tsync_node_run*(), which flushes first: no event is needed. */
	bool flush_wanted, flush_ev_active, in_loop;

	/* The bounded busy poll (busy_poll()); busy_cap_us 0: off. The peers
	 * this turn sent to, asked after the send whether an answer from them
	 * is awaited; one more than BUSY_PEERS says "too many". */
	uint32_t busy_cap_us;
	uint32_t sent_to[BUSY_PEERS + 1]; /* BUSY_PEERS + 1 entries: too many to poll */
	unsigned n_sent_to;
	bool busy_in; /* a poll runs: the turn that handles its datagram polls no more */
	struct node_busy_stats busy;
};

/* Tests: the CPUs to assume (0: sched_getaffinity()), and a hook called
 * before each read of a poll. */
static int busy_cpus_override;
static node_busy_hook busy_hook;
static void *busy_hook_ud;

TSYNC_API void tsync_node_options_init(tsync_node_options *opts)
{
	if (!opts)
		return;
	memset(opts, 0, sizeof(*opts));
	opts->log_level = TSYNC_LOG_INFO;
}

/* --- addresses --------------------------------------------------------------- */

/* The first address of host:port into ss (cap bytes). */
static int resolve(const char *host, uint16_t port, int family, struct sockaddr *ss, socklen_t cap,
                   socklen_t *len)
{
	struct addrinfo hints, *res = NULL;
	char portstr[8];
	int r;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = family;
	hints.ai_socktype = SOCK_DGRAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(portstr, sizeof(portstr), "%u", port);
	r = getaddrinfo(host, portstr, &hints, &res);
	if (r != 0 || !res)
		return -EHOSTUNREACH;
	if (res->ai_addrlen > cap) {
		freeaddrinfo(res);
		return -EHOSTUNREACH;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = (socklen_t)res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static bool same_addr(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family)
		return false;
	if (a->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->sa_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return x->sin6_port == y->sin6_port &&
		       !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
	}
	return false;
}

/* Which peer's configured address a datagram came from, or -1. Sites are
 * tens of controllers; the simulator's hundreds still scan in microseconds,
 * and the last match is tried first since datagrams come in runs. */
static size_t addr_hash(const struct sockaddr *a)
{
	uint64_t h = a->sa_family;

	if (a->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a;
		h = h << 16 ^ x->sin_port;
		h = h << 32 ^ x->sin_addr.s_addr;
	} else if (a->sa_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a;
		uint64_t w[2];
		memcpy(w, &x->sin6_addr, sizeof(w));
		h = (h << 16 ^ x->sin6_port) ^ w[0] * 0x9e3779b97f4a7c15u ^ w[1];
	}
	h *= 0x9e3779b97f4a7c15u;
	return (size_t)(h >> 32);
}

static int peer_by_addr(struct tsync_node *n, const struct sockaddr_storage *from_ss, size_t *hint)
{
	const struct sockaddr *from = (const struct sockaddr *)from_ss;
	int32_t *slot = n->addr_cache ? &n->addr_cache[addr_hash(from) & n->addr_cache_mask] : NULL;

	if (*hint < n->n_addrs && n->addrs[*hint].len && same_addr(&n->addrs[*hint].ss.sa, from))
		return (int)*hint;
	if (slot && *slot >= 0 && (size_t)*slot < n->n_addrs && n->addrs[*slot].len &&
	    same_addr(&n->addrs[*slot].ss.sa, from)) {
		*hint = (size_t)*slot;
		return *slot;
	}
	for (size_t i = 0; i < n->n_addrs; i++)
		if (n->addrs[i].len && same_addr(&n->addrs[i].ss.sa, from)) {
			*hint = i;
			if (slot)
				*slot = (int32_t)i;
			return (int)i;
		}
	return -1;
}

static void resolve_peer(struct tsync_node *n, uint32_t peer, uint64_t now)
{
	struct peer_addr *a = &n->addrs[peer];
	const struct site_controller *c = &n->site->controllers[n->eng->peers[peer].ctrl];

	a->last_try_us = now;
	if (resolve(c->host, c->udp_port, n->family, &a->ss.sa, sizeof(a->ss), &a->len) < 0) {
		a->len = 0;
		log_warn(&n->log, "cannot resolve %s (%s:%u); will retry", c->name, c->host, c->udp_port);
	}
}

/* --- the engine's environment -------------------------------------------------- */

static void raw_send(struct tsync_node *n, uint32_t peer, const void *buf, size_t len)
{
	struct peer_addr *a = &n->addrs[peer];

	if (!a->len) {
		uint64_t now = util__now_us();
		if (now - a->last_try_us < RESOLVE_RETRY_US)
			return;
		resolve_peer(n, peer, now);
		if (!a->len)
			return;
	}
	/* A full socket buffer or an unreachable peer loses this datagram; the
	 * retransmission timer is what makes delivery reliable, not this call. */
	if (n->tx_batching) {
		udp__queue(n->fd, &n->tx, buf, len, &a->ss.sa, a->len);
		if (n->busy_cap_us && (n->n_sent_to == 0 || n->sent_to[n->n_sent_to - 1] != peer) &&
		    n->n_sent_to <= BUSY_PEERS)
			n->sent_to[n->n_sent_to++] = peer;
	} else {
		(void)sendto(n->fd, buf, len, MSG_DONTWAIT, &a->ss.sa, a->len);
	}
}

static void busy_poll(struct tsync_node *n);

/* What the engine sends from here to tx_end() leaves in one sendmmsg(). */
static void tx_begin(struct tsync_node *n)
{
	n->tx_batching = true;
	n->n_sent_to = 0;
}

/* The datagrams leave first; only then may the node poll for their
 * answers (busy_poll()). */
static void tx_end(struct tsync_node *n)
{
	udp__send(n->fd, &n->tx);
	n->tx_batching = false;
	if (n->n_sent_to)
		busy_poll(n);
}

static void delayed_cb(evutil_socket_t fd, short what, void *arg)
{
	struct delayed *d = arg, **pp;
	struct tsync_node *n = d->node;

	raw_send(n, d->peer, d->data, d->len);
	for (pp = &n->delayed; *pp && *pp != d; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = d->next;
	event_free(d->ev);
	free(d);
}

static void op_send(void *ctx, uint32_t peer, const void *buf, size_t len)
{
	struct tsync_node *n = ctx;
	double x;

	if (!n->faults_on) {
		raw_send(n, peer, buf, len);
		return;
	}
	x = prng__unit(&n->prng);
	if (x < n->faults.loss)
		return;
	if (prng__unit(&n->prng) < n->faults.reorder) {
		struct delayed *d = malloc(sizeof(*d) + len);
		struct timeval tv;
		uint32_t ms = n->faults.delay_ms ? n->faults.delay_ms : 5;
		if (!d)
			return;
		d->node = n;
		d->peer = peer;
		d->len = len;
		memcpy(d->data, buf, len);
		d->ev = evtimer_new(n->base, delayed_cb, d);
		if (!d->ev) {
			free(d);
			return;
		}
		/* Anywhere from none to the full delay, so datagrams overtake each other. */
		ms = (uint32_t)(prng__next(&n->prng) % (ms + 1u));
		tv.tv_sec = ms / 1000;
		tv.tv_usec = (ms % 1000) * 1000;
		d->next = n->delayed;
		n->delayed = d;
		evtimer_add(d->ev, &tv);
	} else {
		raw_send(n, peer, buf, len);
	}
	if (prng__unit(&n->prng) < n->faults.duplicate)
		raw_send(n, peer, buf, len);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg);
static unsigned rx_read(struct tsync_node *n, unsigned max);
static void flush_now(struct tsync_node *n);

static void op_arm(void *ctx, uint32_t peer, uint64_t delay_us)
{
	struct tsync_node *n = ctx;
	struct peer_addr *a = &n->addrs[peer];
	struct timeval tv;

	if (delay_us == UINT64_MAX) {
		if (a->timer)
			evtimer_del(a->timer);
		return;
	}
	if (!a->timer) {
		a->timer = evtimer_new(n->base, timer_cb, a);
		if (!a->timer) {
			log_error(&n->log, "out of memory arming a timer for %s", n->eng->peers[peer].name);
			return;
		}
	}
	tv.tv_sec = (time_t)(delay_us / 1000000u);
	tv.tv_usec = (suseconds_t)(delay_us % 1000000u);
	evtimer_add(a->timer, &tv);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct peer_addr *a = arg;

	tx_begin(a->node);
	/* What the peer sent may be waiting unread: libevent runs the timers
	 * due in a turn after the socket's callback, which reads at most
	 * RECV_BATCH datagrams, or one after a lone read. A node that was not
	 * scheduled for longer than the timeout (a busy machine) would then
	 * resend everything to peers whose acknowledgements it holds. Read
	 * them first (up to TIMER_RECV_MAX, a bound against a flood), and
	 * flush what they made due (commit first, as always), so that the
	 * timer sees what the peer said. libevent activates the socket before
	 * the timers of a turn, so when the socket's read found it empty
	 * (rx_drained), nothing waits but what came since: no read, no system
	 * call, for every heartbeat and retry of a quiet node. */
	if (!a->node->rx_drained && rx_read(a->node, TIMER_RECV_MAX))
		flush_now(a->node);
	sync__timer(a->node->eng, a->peer, util__now_us());
	tx_end(a->node);
}

static void op_want_flush(void *ctx)
{
	struct tsync_node *n = ctx;

	n->flush_wanted = true;
	/* While a datagram is handled (rx_from), no event: the receive turn
	 * ends with a flush (rx_cb(), timer_cb()). */
	if (!n->flush_ev_active && !n->rx_from && (n->in_loop || !n->own_base)) {
		n->flush_ev_active = true;
		event_active(n->flush_ev, EV_TIMEOUT, 0);
	}
}

static void op_persist(void *ctx, const char *thing, const tsync_value *v, uint64_t ver, uint64_t boot)
{
	struct tsync_node *n = ctx;
	int r;

	if (!n->store)
		return;
	r = store__stage_value(n->store, thing, ver, boot, v);
	if (r < 0)
		log_error(&n->log, "cannot stage %s for the store: %s", thing, tsync_strerror(r));
	/* Every change, not only the last of a commit window: the history is
	 * what recovers the changes nobody heard. */
	if (n->history && (r = history__record(n->history, thing, (int64_t)util__realtime_us(), boot, ver, v)) < 0)
		log_error(&n->log, "cannot record %s in the history: %s", thing, tsync_strerror(r));
}

/* Opens the history (or sets its bounds): `lim`, or the controller's from
 * site.conf; each owned thing's own bounds from site.conf. */
static int history_enable(struct tsync_node *n, const tsync_history_limits *lim)
{
	const struct site_controller *c = &n->site->controllers[n->me];
	tsync_history_limits l = {c->history_max_age_ms, c->history_max_bytes};
	int r;

	if (!n->store)
		return -ENOTSUP;
	if (lim)
		l = *lim;
	if (!n->history) {
		r = history__open(n->store, &l, &n->log, &n->history);
		if (r < 0)
			return r;
	} else {
		history__set_limits(n->history, &l);
	}
	for (size_t i = 0; i < n->eng->plan->n_owned; i++) {
		const struct site_thing *t = &n->site->things[n->eng->plan->owned[i]];
		tsync_history_limits tl = {t->history_max_age_ms, t->history_max_bytes};

		r = history__set_thing(n->history, t->name, t->history_off, &tl);
		if (r < 0)
			return r;
	}
	/* A data store answers the seed's recovery requests from its history. */
	return sync__on_request(n->eng, "recovery_data_request", NULL, NULL, node__recovery_request, NULL);
}

void **node__recovery_answers(tsync_node *n)
{
	return &n->recovery_answers;
}

size_t node__max_datagram(const tsync_node *n)
{
	return n->site->max_datagram;
}

/* Durable windows and requests: staged with everything else, so they are
 * written by the one commit that precedes the answers. A failure to stage
 * is logged: the window is then less than what was done, which a restart
 * would turn into a second act, so it must be loud. */
static void op_persist_window(void *ctx, const char *sender, uint64_t ob, const struct dedup *d)
{
	struct tsync_node *n = ctx;
	int r;

	_Static_assert(sizeof(d->bits) == STORE_WINDOW_WORDS * sizeof(uint64_t), "window size");
	r = d ? store__stage_window(n->store, sender, ob, d->top, d->bits)
	      : store__stage_drop_window(n->store, sender, ob);
	if (r < 0)
		log_error(&n->log, "cannot stage the request window of %s for the store: %s", sender,
		          tsync_strerror(r));
}

static void op_persist_answer(void *ctx, const char *sender, uint64_t ob, uint64_t id, const char *err,
                              const char *res)
{
	struct tsync_node *n = ctx;
	int r = store__stage_answer(n->store, sender, ob, (uint32_t)(id % SYNC_DEDUP_BITS), id, err, res);

	if (r < 0)
		log_error(&n->log, "cannot stage an answer to %s for the store: %s", sender,
		          tsync_strerror(r));
}

static void op_persist_request(void *ctx, const char *peer, uint64_t ob, const struct outreq *o, bool done)
{
	struct tsync_node *n = ctx;
	struct store_request q;
	int r;

	if (done) {
		r = store__stage_request_done(n->store, peer, ob, o->id);
	} else {
		memset(&q, 0, sizeof(q));
		q.peer = peer;
		q.origin_boot = ob;
		q.id = o->id;
		q.type = (uint8_t)o->type;
		q.is_pulse = o->is_pulse;
		q.thing = o->is_pulse ? n->site->things[o->thing].name : NULL;
		q.val = o->val;
		q.ms = o->ms;
		q.type_name = o->type_name;
		q.role = o->role;
		q.cmd = o->cmd;
		q.body = o->body;
		r = store__stage_request(n->store, &q);
	}
	if (r < 0)
		log_error(&n->log, "cannot stage a request to %s for the store: %s", peer, tsync_strerror(r));
}

static void op_persist_setreq(void *ctx, const char *thing, const tsync_value *to_be)
{
	struct tsync_node *n = ctx;
	int r = store__stage_setreq(n->store, thing, to_be);

	if (r < 0)
		log_error(&n->log, "cannot stage the set request of %s for the store: %s", thing,
		          tsync_strerror(r));
}

/* --- cumuls ------------------------------------------------------------------ */

static int commit_now(struct tsync_node *n);

/* The tests' realtime for the cumuls (node__set_clock); NULL: the system's. */
static node_clock_fn test_clock;
static void *test_clock_ud;

static int64_t node_realtime(struct tsync_node *n)
{
	(void)n;
	return test_clock ? test_clock(test_clock_ud) : util__day_clock_us();
}

static void cumul_stage(struct tsync_node *n)
{
	int r = cumul__flush(n->cumul, node_realtime(n));

	if (r < 0)
		log_error(&n->log, "cannot stage the cumuls for the store: %s", tsync_strerror(r));
}

/* The cumuls are kept with the owned values: a change of theirs opens the
 * same group-commit window. */
static void cumul_touched(struct tsync_node *n)
{
	struct timeval tv = {n->site->state_commit_ms / 1000, (n->site->state_commit_ms % 1000) * 1000};

	if (n->store && !evtimer_pending(n->commit_ev, NULL))
		evtimer_add(n->commit_ev, &tv);
}

static bool owned_ix(struct tsync_node *n, const char *thing, uint32_t *ix)
{
	return thing && name_index__get(&n->site->thing_ix, thing, ix) == 0 && n->site->things[*ix].owner == n->me;
}

static void cumul_event(void *ud, tsync_node *node, const tsync_event *ev)
{
	struct tsync_node *n = ud;
	uint32_t ix;

	(void)node;
	if (!n->cumul)
		return;
	/* The engine names the thing of every thing event (engine__emit_thing()):
	 * no lookup by name per change. Peer events have none. */
	ix = sync__event_thing(n->eng, ev);
	if (ix == UINT32_MAX || n->site->things[ix].owner != n->me)
		return;
	if (ev->kind == TSYNC_EVENT_CHANGED) {
		cumul__value(n->cumul, ix, &ev->value, node_realtime(n));
		n->cumul_noted = true;
	}
	else if (ev->kind == TSYNC_EVENT_PULSE)
		cumul__pulse(n->cumul, ix, ev->pulse_ms, node_realtime(n));
	else
		return;
	cumul_touched(n);
}

/* {"type":"cum"}: answered here, without any role daemon. */
static int cumul_request(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct tsync_node *n = ud;

	(void)node;
	if (!n->cumul)
		return TSYNC_ENOT_USED;
	cumul_touched(n);
	return cumul__request(n->cumul, req->json, node_realtime(n), result);
}

static void cumul_arm(struct tsync_node *n)
{
	int64_t now = node_realtime(n), d = cumul__day_end(n->cumul) - now;
	struct timeval tv;

	if (d > (int64_t)CUMUL_CHECKPOINT_MS * 1000)
		d = (int64_t)CUMUL_CHECKPOINT_MS * 1000;
	if (d < 0)
		d = 0;
	tv.tv_sec = (time_t)(d / 1000000);
	tv.tv_usec = (suseconds_t)(d % 1000000);
	evtimer_add(n->cumul_ev, &tv);
}

/* Local midnight closes the day; between midnights, a checkpoint says the
 * controller was alive, committed at once (one small write a minute). */
static void cumul_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tsync_node *n = arg;
	int64_t now = node_realtime(n);
	int r;

	(void)fd;
	(void)what;
	cumul__tick(n->cumul, now);
	if (n->store) {
		cumul_stage(n);
		r = commit_now(n);
		if (r < 0)
			log_error(&n->log, "state commit failed: %s", tsync_strerror(r));
	}
	cumul_arm(n);
}

/* Feeds the cumuls the owned values the node has now (the same value again
 * is not a change). */
static void cumul_feed(struct tsync_node *n, int64_t now)
{
	for (size_t i = 0; n->cumul && i < n->site->n_things; i++) {
		tsync_thing_state st;
		if (n->site->things[i].owner != n->me || sync__get(n->eng, n->site->things[i].name, &st) < 0)
			continue;
		cumul__value(n->cumul, (uint32_t)i, &st.value, now);
	}
}

/* Opens the cumuls with the owned values the store kept. */
static int cumul_open(struct tsync_node *n)
{
	int64_t now = node_realtime(n);
	int r = cumul__new(n->site, n->me, n->store, &n->log, &n->cumul);

	if (r == 0)
		r = cumul__start(n->cumul, now);
	if (r < 0)
		return r;
	cumul_feed(n, now);
	n->cumul_ev = evtimer_new(n->base, cumul_cb, n);
	if (!n->cumul_ev)
		return -ENOMEM;
	r = sync__on_event(n->eng, cumul_event, n);
	if (r == 0)
		r = sync__on_request(n->eng, "cum", NULL, NULL, cumul_request, n);
	if (r < 0)
		return r;
	cumul_arm(n);
	return 0;
}

/* Commits what is staged: the engine's durability point, the end of the
 * group-commit window, and tsync_node_commit() all come here. */
static int commit_now(struct tsync_node *n)
{
	int r;

	if (n->cumul && n->store && cumul__dirty(n->cumul))
		cumul_stage(n);
	if (!n->store || !store__dirty(n->store))
		return 0;
	r = store__commit(n->store);
	if (r == 0)
		evtimer_del(n->commit_ev); /* nothing left for the window */
	return r;
}

static int op_commit(void *ctx)
{
	return commit_now(ctx);
}

static int op_commit_unsynced(void *ctx)
{
	struct tsync_node *n = ctx;

	return n->store ? store__commit_unsynced(n->store) : 0;
}

static void commit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tsync_node *n = arg;
	int r = commit_now(n);

	if (r < 0)
		log_error(&n->log, "state commit failed: %s", tsync_strerror(r));
}

static void op_commit_later(void *ctx, uint32_t delay_ms)
{
	struct tsync_node *n = ctx;
	struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};

	/* The window opens with the first change and is not pushed back by
	 * later ones: a steady stream still commits every delay_ms. */
	if (!evtimer_pending(n->commit_ev, NULL))
		evtimer_add(n->commit_ev, &tv);
}

/* The engine's flush, between tx_begin() and tx_end(). A flush_ev still
 * active would only flush again, so it is taken off. */
static void flush_now(struct tsync_node *n)
{
	n->flush_wanted = false;
	if (n->flush_ev_active) {
		n->flush_ev_active = false;
		event_del(n->flush_ev);
	}
	sync__flush(n->eng, util__now_us());
}

static void flush_turn(struct tsync_node *n)
{
	tx_begin(n);
	flush_now(n);
	tx_end(n);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tsync_node *n = arg;

	n->flush_ev_active = false; /* libevent took it off to run it */
	flush_turn(n);
}

/* --- refusals, logged rate-limited ---------------------------------------------- */

static void format_addr(const struct sockaddr_storage *ss, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (ss && ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)ss;
		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		snprintf(out, cap, "%s:%u", host, ntohs(a->sin_port));
	} else if (ss && ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		snprintf(out, cap, "[%s]:%u", host, ntohs(a->sin6_port));
	} else {
		snprintf(out, cap, "an unknown source");
	}
}

static void rejlog_arm(struct tsync_node *n, uint64_t next, uint64_t now)
{
	uint64_t d = next > now ? next - now : 0;
	struct timeval tv = {(time_t)(d / 1000000u), (suseconds_t)(d % 1000000u)};

	if (next == UINT64_MAX)
		evtimer_del(n->rejlog_ev);
	else
		evtimer_add(n->rejlog_ev, &tv);
}

static void rejlog_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tsync_node *n = arg;
	uint64_t now = util__now_us();

	rejlog_arm(n, ratelog__tick(&n->rejlog, now), now);
}

static void rejlog_summary(void *ud, const char *key, int reason, uint64_t count, uint64_t elapsed_us)
{
	struct tsync_node *n = ud;
	unsigned secs = (unsigned)((elapsed_us + 500000u) / 1000000u);

	if (reason == RATELOG_OTHER)
		log_warn(&n->log,
		         "%llu more refusals from other senders in the last %u s, not logged "
		         "(more senders than the log tracks); all counted",
		         (unsigned long long)count, secs);
	else
		log__printf(&n->log, input__reject_level((tsync_reject)reason),
		            "%s from %s: %llu more in the last %u s, not logged; all counted",
		            tsync_reject_name((tsync_reject)reason), key, (unsigned long long)count, secs);
}

/* The engine counted a refusal; whether it is logged is decided here, where
 * the source address and the clock are. */
static void op_rejected(void *ctx, const char *peer, tsync_reject why, const char *what, const char *detail)
{
	struct tsync_node *n = ctx;
	tsync_log_level level = input__reject_level(why);
	uint64_t now = util__now_us();
	char src[INET6_ADDRSTRLEN + 16];

	if (!log__enabled(&n->log, level))
		return;
	if (!peer)
		format_addr(n->rx_from, src, sizeof(src));
	if (ratelog__hit(&n->rejlog, peer ? peer : src, (int)why, now))
		log__printf(&n->log, level, "%s from %s%s%s%s%s", tsync_reject_name(why), peer ? peer : src,
		            peer ? "" : " (unknown sender)", what ? ": " : "", what ? what : "",
		            detail ? detail : "");
	if (!evtimer_pending(n->rejlog_ev, NULL))
		rejlog_arm(n, ratelog__tick(&n->rejlog, now), now);
}

/* Hands the engine the `got` datagrams udp__recv() read. */
static void rx_handle(struct tsync_node *n, unsigned got, size_t *hint)
{
	uint64_t now = util__now_us(); /* one reading for what one call read */

	for (unsigned i = 0; i < got; i++) {
		n->rx_from = &n->rx.addr[i];
		sync__input(n->eng, peer_by_addr(n, &n->rx.addr[i], hint), udp__rx_data(&n->rx, i),
		            udp__rx_len(&n->rx, i), now);
		n->rx_from = NULL;
	}
}

/* Reads and handles what waits in the socket, up to max datagrams. A turn
 * of RECV_BATCH may start with a single read (udp__turn_want()); a longer
 * one, the timer's, reads in batches. Returns how many were read. */
static unsigned rx_read(struct tsync_node *n, unsigned max)
{
	size_t hint = 0;
	unsigned total = 0;

	while (total < max) {
		unsigned want = max - total < UDP_BATCH ? max - total : UDP_BATCH;
		unsigned got;

		if (total == 0 && max == RECV_BATCH)
			want = udp__turn_want(&n->rx, want);
		got = udp__recv(n->fd, &n->rx, want);
		rx_handle(n, got, &hint);
		total += got;
		/* Fewer than asked: the socket is empty (udp.h), no need to ask
		 * again for an EAGAIN. One asked for and read: what else waits
		 * makes the poll return at once (udp__turn_want()). */
		n->rx_drained = got < want;
		if (got < want || want == 1)
			break;
	}
	return total;
}

static void rx_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tsync_node *n = arg;

	tx_begin(n);
	rx_read(n, RECV_BATCH);
	/* One commit and one answer per peer for the whole batch, and the
	 * answers in one system call, in this turn. What the flush itself
	 * wants later (a window still full) is an event again. */
	flush_now(n);
	tx_end(n);
}

/* --- the bounded busy poll -------------------------------------------------------- */

/* How long to poll after a turn's sends: for each peer sent to whose answer
 * is awaited and whose round trip is short enough for a poll to catch it
 * (at most twice the cap), min(2 x its srtt, the cap); the longest of
 * them. 0: no poll (nothing awaited, no sample yet, a silent peer, or a far
 * one). */
static uint32_t busy_budget(struct tsync_node *n)
{
	uint32_t budget = 0;

	if (n->n_sent_to > BUSY_PEERS) {
		n->n_sent_to = 0;
		return 0; /* a batch to many peers: their answers come as they come */
	}
	for (unsigned i = 0; i < n->n_sent_to; i++) {
		uint32_t srtt = sync__awaited_srtt(n->eng, n->sent_to[i]), b;

		if (srtt == 0 || srtt > 2 * n->busy_cap_us)
			continue;
		b = 2 * srtt < n->busy_cap_us ? 2 * srtt : n->busy_cap_us;
		if (b > budget)
			budget = b;
	}
	n->n_sent_to = 0;
	return budget;
}

/* After a send that awaits an answer from a near peer, as Linux's busy_read
 * does for a NIC: read the socket without sleeping until the answer comes
 * or the budget is spent (and never more than NODE_BUSY_READS_MAX reads,
 * whatever the clock says), then let the event loop wait as before. On two
 * CPUs the answer then finds this process running, not a halted CPU to
 * wake (tens of microseconds on a VM). A datagram read here is handled as
 * a receive turn is: its answers leave, and the poll ends (the turn polls
 * no more); what else waits, the level-triggered poll brings. busy_cap_us
 * is 0 on one CPU, where polling would only keep the peer from running. */
static void busy_poll(struct tsync_node *n)
{
	uint32_t budget;
	uint64_t end;
	size_t hint = 0;

	if (n->busy_in || (budget = busy_budget(n)) == 0)
		return;
	n->busy_in = true;
	n->busy.polls++;
	end = util__now_us() + budget;
	for (unsigned k = 0; k < NODE_BUSY_READS_MAX; k++) {
		unsigned got;

		if (busy_hook)
			busy_hook(busy_hook_ud);
		n->busy.reads++;
		got = udp__recv(n->fd, &n->rx, 1);
		if (got) {
			n->busy.answered++;
			tx_begin(n);
			rx_handle(n, got, &hint);
			n->rx_drained = false;
			flush_now(n);
			tx_end(n);
			break;
		}
		if (util__now_us() >= end)
			break;
	}
	n->busy_in = false;
}

int node__usable_cpus(void)
{
	cpu_set_t set;

	if (busy_cpus_override > 0)
		return busy_cpus_override;
	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return 1;
	return CPU_COUNT(&set);
}

/* The poll's cap: off unless asked for and more than one CPU is usable. */
static uint32_t busy_cap(const tsync_node_options *opts)
{
	if (!opts->busy_poll_us || node__usable_cpus() < 2)
		return 0;
	return opts->busy_poll_us < BUSY_POLL_MAX_US ? opts->busy_poll_us : BUSY_POLL_MAX_US;
}

void node__busy_stats(const tsync_node *n, struct node_busy_stats *st)
{
	*st = n->busy;
}

uint32_t node__busy_poll_us(const tsync_node *n)
{
	return n->busy_cap_us;
}

void node__busy_cpus(int cpus)
{
	busy_cpus_override = cpus;
}

void node__set_busy_hook(node_busy_hook fn, void *ud)
{
	busy_hook = fn;
	busy_hook_ud = ud;
}

/* --- life cycle ------------------------------------------------------------------ */

static void restore_cb(void *ud, const char *thing, uint64_t version, uint64_t boot, const tsync_value *v)
{
	struct tsync_node *n = ud;
	int r = sync__restore(n->eng, thing, v);

	if (r == 0)
		log_debug(&n->log, "restored %s from the store", thing);
	else
		log_warn(&n->log, "stored value of %s ignored: %s", thing, tsync_strerror(r));
}

static int restore_window_cb(void *ud, const char *sender, uint64_t ob, uint64_t top,
                             const uint64_t bits[STORE_WINDOW_WORDS])
{
	struct tsync_node *n = ud;

	return sync__restore_window(n->eng, sender, ob, top, bits, STORE_WINDOW_WORDS);
}

static int restore_answer_cb(void *ud, const char *sender, uint64_t ob, uint64_t id, const char *err,
                             const char *res)
{
	struct tsync_node *n = ud;

	return sync__restore_answer(n->eng, sender, ob, id, err, res);
}

static void resume_request_cb(void *ud, const struct store_request *q)
{
	struct tsync_node *n = ud;
	tsync_done_fn done = NULL;
	void *done_ud = NULL;
	int r;

	/* A chunk of a recovery answer goes on with its callback (recovery.c). */
	node__recovery_resumed(n, q, &done, &done_ud);
	r = sync__resume_request(n->eng, q, done, done_ud);
	if (r < 0 && done)
		done(done_ud, n, TSYNC_ECANCELED, NULL);

	if (r == 0)
		log_info(&n->log, "resumed request %llu (boot %llu) to %s", (unsigned long long)q->id,
		         (unsigned long long)q->origin_boot, q->peer);
	else
		log_warn(&n->log, "stored request %llu to %s not resumed: %s", (unsigned long long)q->id,
		         q->peer, tsync_strerror(r));
}

static void resume_setreq_cb(void *ud, const char *thing, uint64_t version, uint64_t boot,
                             const tsync_value *v)
{
	struct tsync_node *n = ud;
	int r = sync__resume_setreq(n->eng, thing, v);

	if (r == 0)
		log_info(&n->log, "resumed the set request of %s", thing);
	else
		log_warn(&n->log, "stored set request of %s not resumed: %s", thing, tsync_strerror(r));
}

static int open_socket(struct tsync_node *n, const char *host, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, r, one = 1, rcvbuf = 1 << 20;

	r = resolve(host, port, AF_UNSPEC, (struct sockaddr *)&ss, sizeof(ss), &len);
	if (r < 0) {
		log_error(&n->log, "cannot resolve my own address %s", host);
		return r;
	}
	fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	/* Bursts at start-up (every thing to every user at once) want room. */
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
		r = -errno;
		log_error(&n->log, "cannot bind UDP %s:%u: %s", host, port, strerror(-r));
		close(fd);
		return r;
	}
	len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
		n->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
		                                        : ((struct sockaddr_in6 *)&ss)->sin6_port);
	n->fd = fd;
	n->family = ss.ss_family;
	return 0;
}

TSYNC_API int tsync_node_new(const tsync_node_options *opts, tsync_node **ret)
{
	static const struct sync_ops ops_template = {
	    .send = op_send,
	    .arm = op_arm,
	    .want_flush = op_want_flush,
	    .persist = op_persist,
	    .commit = op_commit,
	    .commit_unsynced = op_commit_unsynced,
	    .commit_later = op_commit_later,
	    .rejected = op_rejected,
	    .persist_window = op_persist_window,
	    .persist_answer = op_persist_answer,
	    .persist_request = op_persist_request,
	    .persist_setreq = op_persist_setreq,
	};
	struct sync_ops ops = ops_template;
	struct tsync_node *n;
	const struct site_controller *c;
	uint32_t me;
	int r;

	if (!opts || !opts->controller || !ret || (!opts->site && !opts->site_path))
		return -EINVAL;
	if (sodium_init() < 0)
		return -EIO;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->fd = -1;
	n->name = util__strdup(opts->controller);
	if (!n->name) {
		r = -ENOMEM;
		goto fail;
	}
	n->log.fn = opts->log;
	n->log.userdata = opts->log_userdata;
	n->log.level = opts->log_level;
	n->log.prefix = n->name;

	if (opts->site) {
		n->site = opts->site;
	} else {
		char *errors = NULL;
		r = tsync_site_load(opts->site_path, &n->own_site, &errors);
		if (r < 0) {
			/* Every line of the report, so the log names every mistake. */
			for (char *line = errors ? strtok(errors, "\n") : NULL; line;
			     line = strtok(NULL, "\n"))
				log_error(&n->log, "%s", line);
			free(errors);
			goto fail;
		}
		n->site = n->own_site;
	}
	if (name_index__get(&n->site->controller_ix, opts->controller, &me) < 0) {
		log_error(&n->log, "%s is not a controller of site %s", opts->controller, n->site->name);
		r = TSYNC_EUNKNOWN_CTRL;
		goto fail;
	}
	n->me = me;
	c = &n->site->controllers[me];
	if (!n->site->has_key)
		log_warn(&n->log, "no site key: legacy mode, datagrams are NOT authenticated (insecure); "
		                  "set key_file in [site]");

	if (opts->state_dir) {
		r = store__open(opts->state_dir, 0, &n->log, &n->store);
		if (r < 0)
			goto fail;
		r = store__next_boot(n->store, util__realtime_us(), &n->boot);
		if (r < 0)
			goto fail;
	} else {
		/* Without a store the clock orders boots: it must not step back
		 * across a restart (use a state directory where it might). */
		n->boot = util__realtime_us();
	}
	prng__seed(&n->prng, n->boot ^ me);
	n->busy_cap_us = busy_cap(opts);
	if (opts->busy_poll_us && !n->busy_cap_us)
		log_info(&n->log, "busy_poll_us %u ignored: one CPU usable", opts->busy_poll_us);
	else if (n->busy_cap_us)
		log_info(&n->log, "busy poll on: at most %u us after a send that awaits an answer",
		         n->busy_cap_us);

	r = open_socket(n, opts->bind_host ? opts->bind_host : c->host, c->udp_port);
	if (r < 0)
		goto fail;
	/* One byte more to read than max_datagram: a longer datagram then
	 * shows as one, and is refused as oversize. */
	r = udp__init(&n->rx, (size_t)n->site->max_datagram + 1);
	if (r == 0)
		r = udp__init(&n->tx, n->site->max_datagram);
	if (r < 0)
		goto fail;

	if (opts->event_base) {
		n->base = opts->event_base;
	} else {
		n->base = event_base_new();
		n->own_base = true;
		if (!n->base) {
			r = -ENOMEM;
			goto fail;
		}
	}
	n->rx_ev = event_new(n->base, n->fd, EV_READ | EV_PERSIST, rx_cb, n);
	n->flush_ev = event_new(n->base, -1, 0, flush_cb, n);
	n->commit_ev = evtimer_new(n->base, commit_cb, n);
	n->rejlog_ev = evtimer_new(n->base, rejlog_cb, n);
	if (!n->rx_ev || !n->flush_ev || !n->commit_ev || !n->rejlog_ev || event_add(n->rx_ev, NULL) < 0 ||
	    ratelog__init(&n->rejlog, RATELOG_KEYS, RATELOG_INTERVAL_US, rejlog_summary, n) < 0) {
		r = -ENOMEM;
		goto fail;
	}

	ops.ctx = n;
	if (!n->store)
		ops.commit_later = NULL; /* nothing to commit: no timer armed per change */
	r = sync__new(n->site, me, n->boot, &ops, &n->log, n, &n->eng);
	if (r < 0)
		goto fail;
	n->n_addrs = n->eng->n_peers;
	n->addrs = calloc(n->n_addrs ? n->n_addrs : 1, sizeof(*n->addrs));
	if (!n->addrs) {
		r = -ENOMEM;
		goto fail;
	}
	n->addr_cache_mask = 15;
	while (n->addr_cache_mask + 1 < 2 * n->n_addrs)
		n->addr_cache_mask = n->addr_cache_mask * 2 + 1;
	n->addr_cache = malloc((n->addr_cache_mask + 1) * sizeof(*n->addr_cache));
	if (!n->addr_cache) {
		r = -ENOMEM;
		goto fail;
	}
	memset(n->addr_cache, 0xff, (n->addr_cache_mask + 1) * sizeof(*n->addr_cache));
	for (uint32_t i = 0; i < n->n_addrs; i++) {
		n->addrs[i].node = n;
		n->addrs[i].peer = i;
		resolve_peer(n, i, util__now_us());
	}
	if (n->store) {
		sync__set_durable(n->eng, true);
		r = store__load_values(n->store, restore_cb, n);
		if (r == 0)
			r = store__load_windows(n->store, restore_window_cb, restore_answer_cb, n);
		if (r == 0)
			r = store__load_requests(n->store, resume_request_cb, n);
		if (r == 0)
			r = store__load_setreqs(n->store, resume_setreq_cb, n);
		if (r == 0 && c->history)
			r = history_enable(n, NULL);
		if (r < 0)
			goto fail;
	}
	r = cumul_open(n);
	if (r < 0)
		goto fail;
	sync__start(n->eng, util__now_us());
	if (n->history)
		node__recovery_resume(n);
	/* A thing that had no value takes its site.conf `initial` at the
	 * start: from then on it has one. */
	cumul_feed(n, node_realtime(n));
	log_info(&n->log, "started: site %s, boot %llu, udp %s:%u, %zu owned, %zu used, %zu peers%s",
	         n->site->name, (unsigned long long)n->boot, opts->bind_host ? opts->bind_host : c->host,
	         n->port, n->eng->plan->n_owned, n->eng->plan->n_used, n->eng->n_peers,
	         n->site->has_key ? ", authenticated" : "");
	*ret = n;
	return 0;
fail:
	tsync_node_free(n);
	return r;
}

static void node_free(tsync_node *n, bool commit);

TSYNC_API void tsync_node_free(tsync_node *n)
{
	node_free(n, true);
}

TSYNC_API void tsync_node_abandon(tsync_node *n)
{
	node_free(n, false);
}

static void node_free(tsync_node *n, bool commit)
{
	if (!n)
		return;
	/* Callbacks of outstanding requests run now, while the node is whole. */
	sync__free(n->eng);
	n->eng = NULL;
	while (n->delayed) {
		struct delayed *d = n->delayed;
		n->delayed = d->next;
		event_free(d->ev);
		free(d);
	}
	for (size_t i = 0; i < n->n_addrs; i++)
		if (n->addrs[i].timer)
			event_free(n->addrs[i].timer);
	free(n->addrs);
	free(n->addr_cache);
	if (n->rx_ev)
		event_free(n->rx_ev);
	if (n->flush_ev)
		event_free(n->flush_ev);
	if (n->commit_ev)
		event_free(n->commit_ev);
	if (n->cumul_ev)
		event_free(n->cumul_ev);
	/* The cumuls up to now go with the store's last commit. */
	if (commit && n->cumul && n->store)
		cumul_stage(n);
	/* What was held back is still told, so the log adds up to the counters. */
	ratelog__flush(&n->rejlog, util__now_us());
	ratelog__free(&n->rejlog);
	if (n->rejlog_ev)
		event_free(n->rejlog_ev);
	if (n->own_base && n->base)
		event_base_free(n->base);
	if (n->fd >= 0)
		close(n->fd);
	udp__free(&n->rx);
	udp__free(&n->tx);
	/* The history writes through the store's commits: its last batch goes
	 * with the store's, before it lets go of the store. */
	if (commit && n->history && store__commit(n->store) < 0)
		log_error(&n->log, "history: the last changes are lost at close");
	history__close(n->history);
	if (commit)
		store__close(n->store);
	else
		store__abandon(n->store);
	cumul__free(n->cumul);
	tsync_site_free(n->own_site);
	free(n->name);
	free(n);
}

TSYNC_API const char *tsync_node_name(const tsync_node *n)
{
	return n->site->controllers[n->me].name;
}

TSYNC_API const tsync_site *tsync_node_site(const tsync_node *n)
{
	return n->site;
}

TSYNC_API uint64_t tsync_node_boot(const tsync_node *n)
{
	return n->boot;
}

TSYNC_API uint16_t tsync_node_port(const tsync_node *n)
{
	return n->port;
}

/* What the caller asked for since the last turn (sets, requests) leaves
 * now, as the first turn would have sent it, without a poll of its own
 * before: a set then a wait for its answer is one send and one wait. */
static void flush_before_loop(struct tsync_node *n)
{
	if (n->flush_wanted)
		flush_turn(n);
}

/* Runs the loop; while it runs, a wanted flush is an active event. */
static int loop(struct tsync_node *n, int flags)
{
	bool was = n->in_loop;
	uint64_t answered = n->busy.answered;
	int r;

	flush_before_loop(n);
	/* The poll after that flush handled the datagram one round would have
	 * waited for: that was the round. */
	if (flags == EVLOOP_ONCE && n->busy.answered != answered)
		return 0;
	n->in_loop = true;
	r = event_base_loop(n->base, flags);
	n->in_loop = was;
	return r < 0 ? -EIO : 0;
}

TSYNC_API int tsync_node_run(tsync_node *n)
{
	if (!n || !n->own_base)
		return -EINVAL;
	return loop(n, 0);
}

TSYNC_API int tsync_node_run_for(tsync_node *n, int timeout_ms)
{
	struct timeval tv;

	if (!n || !n->own_base)
		return -EINVAL;
	if (timeout_ms < 0)
		return loop(n, EVLOOP_ONCE);
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	event_base_loopexit(n->base, &tv);
	return loop(n, 0);
}

TSYNC_API void tsync_node_stop(tsync_node *n)
{
	if (n && n->base)
		event_base_loopbreak(n->base);
}

/* What the API accepted to send (a request, a set request on a copy) is
 * committed before the call returns: a crash after the caller was told
 * "accepted" must not forget it. Own values keep their group commit. */
static int commit_accepted(struct tsync_node *n, int r)
{
	int c;

	if (r < 0 || !n->store || !n->eng->persist_dirty)
		return r;
	c = commit_now(n);
	if (c < 0)
		log_error(&n->log, "state commit failed: %s; accepted, not yet kept", tsync_strerror(c));
	return r;
}

TSYNC_API int tsync_node_set(tsync_node *n, const char *thing, const tsync_value *v)
{
	bool outer = n->cumul_noted, noted;
	uint32_t ix;
	tsync_thing_state st;
	int r;

	/* Saved and restored: a write hook may set another thing meanwhile. */
	n->cumul_noted = false;
	r = sync__set(n->eng, thing, v, util__now_us());
	noted = n->cumul_noted;
	n->cumul_noted = outer;
	/* The same value again raises no event, yet after a tsync_node_set_unknown()
	 * it says the thing has a value again. (A change raised one, which the
	 * cumul has seen: not twice per change.) */
	if (r == 0 && n->cumul && !noted && owned_ix(n, thing, &ix) &&
	    sync__get(n->eng, thing, &st) == 0) {
		cumul__value(n->cumul, ix, &st.value, node_realtime(n));
		cumul_touched(n);
	}
	return commit_accepted(n, r);
}

TSYNC_API int tsync_node_set_unknown(tsync_node *n, const char *thing, bool unknown)
{
	uint32_t ix;
	tsync_thing_state st;

	if (!n || !thing)
		return -EINVAL;
	if (name_index__get(&n->site->thing_ix, thing, &ix) < 0)
		return TSYNC_EUNKNOWN_THING;
	if (n->site->things[ix].owner != n->me)
		return TSYNC_ENOT_USED;
	if (unknown)
		cumul__value(n->cumul, ix, NULL, node_realtime(n));
	else if (sync__get(n->eng, thing, &st) == 0)
		cumul__value(n->cumul, ix, &st.value, node_realtime(n));
	cumul_touched(n);
	return 0;
}

TSYNC_API int tsync_node_cumul(tsync_node *n, const char *thing, const char *day, char **json)
{
	if (!n || !thing || !json)
		return -EINVAL;
	if (!n->cumul)
		return TSYNC_ENOT_USED;
	return cumul__get(n->cumul, thing, day, node_realtime(n), json);
}

void node__set_clock(node_clock_fn fn, void *ud)
{
	test_clock = fn;
	test_clock_ud = ud;
}

void node__cumul_tick(tsync_node *n)
{
	if (n->cumul_ev)
		cumul_cb(-1, 0, n);
}

void node__store_written(const tsync_node *n, uint64_t *bytes, uint64_t *commits)
{
	store__written(n ? n->store : NULL, bytes, commits);
}

TSYNC_API int tsync_node_commit(tsync_node *n)
{
	return n ? commit_now(n) : -EINVAL;
}

TSYNC_API int tsync_node_record_put(tsync_node *n, const char *key, const char *text)
{
	int r;

	if (!n || !key)
		return -EINVAL;
	if (!n->store)
		return -ENOTSUP;
	r = store__stage_record(n->store, key, text);
	if (r == 0)
		cumul_touched(n); /* the group-commit window, as for an owned value */
	return r;
}

TSYNC_API int tsync_node_record_get(tsync_node *n, const char *key, char **text)
{
	if (!n || !key || !text)
		return -EINVAL;
	if (!n->store)
		return -ENOTSUP;
	return store__get_record(n->store, key, text);
}

TSYNC_API int tsync_node_record_scan(tsync_node *n, const char *from, const char *to, tsync_record_fn fn,
                                     void *userdata)
{
	if (!n || !fn)
		return -EINVAL;
	if (!n->store)
		return -ENOTSUP;
	return store__scan_records(n->store, from, to, fn, userdata);
}

TSYNC_API int tsync_node_get(tsync_node *n, const char *thing, tsync_thing_state *out)
{
	if (!out)
		return -EINVAL;
	return sync__get(n->eng, thing, out);
}

TSYNC_API int tsync_node_ask(tsync_node *n, const char *thing)
{
	return sync__ask(n->eng, thing, util__now_us());
}

TSYNC_API int tsync_node_pulse(tsync_node *n, const char *thing, const tsync_value *v, uint32_t ms,
                               tsync_done_fn done, void *userdata)
{
	return commit_accepted(n, sync__pulse(n->eng, thing, v, ms, done, userdata, util__now_us()));
}

TSYNC_API int tsync_node_on_event(tsync_node *n, tsync_event_fn fn, void *userdata)
{
	return sync__on_event(n->eng, fn, userdata);
}

TSYNC_API void tsync_node_set_write_hook(tsync_node *n, tsync_write_fn fn, void *userdata)
{
	sync__set_write_hook(n->eng, fn, userdata);
}

TSYNC_API void tsync_node_set_pulse_hook(tsync_node *n, tsync_pulse_fn fn, void *userdata)
{
	sync__set_pulse_hook(n->eng, fn, userdata);
}

TSYNC_API void tsync_node_set_commit_hook(tsync_node *n, tsync_commit_fn fn, void *userdata)
{
	sync__set_commit_hook(n->eng, fn, userdata);
}

TSYNC_API int tsync_node_on_cmd(tsync_node *n, const char *role, const char *cmd, tsync_request_fn fn,
                                void *userdata)
{
	return sync__on_request(n->eng, "cmd", role, cmd, fn, userdata);
}

TSYNC_API int tsync_node_on_request(tsync_node *n, const char *type, tsync_request_fn fn, void *userdata)
{
	if (!type || !strcmp(type, "cmd"))
		return -EINVAL;
	return sync__on_request(n->eng, type, NULL, NULL, fn, userdata);
}

TSYNC_API int tsync_request_defer(tsync_node *n, const tsync_request *req, tsync_deferred **ret)
{
	if (!n || !ret)
		return -EINVAL;
	return sync__defer(n->eng, req, ret);
}

TSYNC_API int tsync_request_answer(tsync_node *n, tsync_deferred *d, int status, const char *result_json)
{
	if (!n || !d)
		return -EINVAL;
	/* The answer leaves with the next flush (engine__want), after the
	 * commit that keeps it for a repeat. */
	return sync__answer(n->eng, d, status, result_json, util__now_us());
}

TSYNC_API int tsync_node_cmd(tsync_node *n, const char *controller, const char *role, const char *cmd,
                             const char *args_json, tsync_done_fn done, void *userdata)
{
	return commit_accepted(n, sync__send_request(n->eng, controller, "cmd", role, cmd, args_json, done,
	                                             userdata, util__now_us()));
}

TSYNC_API int tsync_node_request(tsync_node *n, const char *controller, const char *type,
                                 const char *body_json, tsync_done_fn done, void *userdata)
{
	if (!type || !strcmp(type, "cmd"))
		return -EINVAL;
	return commit_accepted(n, sync__send_request(n->eng, controller, type, NULL, NULL, body_json, done,
	                                             userdata, util__now_us()));
}

TSYNC_API size_t tsync_node_peer_count(const tsync_node *n)
{
	return n->eng->n_peers;
}

TSYNC_API int tsync_node_peer_stats(const tsync_node *n, size_t idx, tsync_peer_stats *out)
{
	if (!out)
		return -EINVAL;
	return sync__peer_stats(n->eng, idx, util__now_us(), out);
}

TSYNC_API uint64_t tsync_node_rejected_unknown(const tsync_node *n, tsync_reject reason)
{
	if ((unsigned)reason >= TSYNC_REJ_COUNT)
		return 0;
	return n->eng->rejected_unknown[reason];
}

TSYNC_API int tsync_node_set_faults(tsync_node *n, const tsync_faults *f)
{
	if (!f) {
		n->faults_on = false;
		return 0;
	}
	if (f->loss < 0 || f->loss > 1 || f->duplicate < 0 || f->duplicate > 1 || f->reorder < 0 ||
	    f->reorder > 1)
		return -EINVAL;
	n->faults = *f;
	n->faults_on = f->loss > 0 || f->duplicate > 0 || f->reorder > 0;
	prng__seed(&n->prng, f->seed ? f->seed : util__now_us());
	return 0;
}

TSYNC_API size_t tsync_node_unsettled(const tsync_node *n)
{
	return sync__unsettled(n->eng);
}

TSYNC_API int tsync_node_history_enable(tsync_node *n, const tsync_history_limits *limits)
{
	return n ? history_enable(n, limits) : -EINVAL;
}

TSYNC_API int tsync_node_history_query(tsync_node *n, const char *thing, int64_t from_us, int64_t to_us,
                                       tsync_history_fn fn, void *userdata, tsync_history_window *out)
{
	if (!n || from_us > to_us)
		return -EINVAL;
	if (!n->history)
		return -ENOTSUP;
	return history__query(n->history, thing, from_us, to_us, fn, userdata, out);
}

TSYNC_API int tsync_node_history_stats(const tsync_node *n, tsync_history_stats *out)
{
	if (!n || !out)
		return -EINVAL;
	history__stats(n->history, out);
	return 0;
}
