/*
 * thingsync-sim: N controllers in one process on loopback, a workload of
 * changes and pulses over a damaged network with controllers crashing and
 * coming back, then a check that the site converged and that every pulse
 * acted as promised. It fails loudly (exit 1) if not.
 *
 * Phases:
 *  1. start-up: every node starts (one UDP socket each, one libevent loop for
 *     all), every owner sets its things, and the site converges, no faults;
 *  2. workload, --seconds long: random changes (by owners, and asked of the
 *     owners by users) and pulses, with loss, duplication and reordering on
 *     every node's outgoing datagrams, and --crashes controllers freed and
 *     started again later from the same state directory;
 *  3. the faults stop: the time until every node is settled and every copy
 *     equals its owner's value is the convergence time;
 *  4. verification: every copy against its owner, every owner against the
 *     last value it applied, every pulse against the ledger (verify.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <thingsync/thingsync.h>

#include "verify.h"

#define TICK_MS        10  /* the workload's clock */
#define CHECK_MS       2   /* how often convergence is checked */
#define MAX_REPORT     20  /* violations printed in full */
#define USER_SET_SHARE 0.2 /* changes asked of the owner by a user */
#define FAULT_DELAY_MS 20  /* longest hold of a reordered datagram */
/* The site's group commit of owned values (the library's default, written
 * into the site so that the check of restored values knows it), and how
 * late past it the commit may run on a loaded loop. */
#define COMMIT_MS       5000
#define COMMIT_SLACK_MS 1000
#define HISTORY         16 /* values an owner applied, remembered per thing */
/* The loop's stalls (a tick that ran more than a tick late) are kept for
 * the group-commit check: every node shares one thread, so a node's commit
 * timer fires as late as the loop is, which on a loaded machine with a
 * thousand nodes' fsyncs on one disk was seconds. */
#define STALLS        1024
#define STALL_SPAN_MS 60000 /* how far before a crash its stalls count */
/* The most a stall may widen a crash's window: beyond it the check would
 * excuse anything, so a restore that only a longer stall excuses is a
 * failure, said as such (sim_restore_check()). */
#define STALL_CAP_MS 15000

struct opts {
	uint32_t controllers, things_per, users_per, crashes;
	double seconds, loss, dup, reorder, rate, pulse_share;
	uint32_t down_ms, retry_max_ms;
	int64_t heartbeat_ms; /* -1: the library's default */
	double timeout;
	uint64_t seed;
	const char *parent; /* where the site directory is made */
	bool state, json, keep, verbose;
};

/* Counters of a node, summed over its peers. */
struct totals {
	uint64_t datagrams, bytes, retransmits, rejected;
};

struct sim;

struct ctl {
	struct sim *sim;
	uint32_t idx;
	char name[16];
	char state[200];
	tsync_node *node;   /* NULL while crashed */
	int64_t restart_at; /* µs; 0: up */
	uint32_t starts;
	int64_t crashed_at; /* µs, its last crash */
	int64_t crash_lag;  /* µs, the loop's longest stall in the STALL_SPAN_MS before it */
	struct totals gone; /* counters of its previous, freed, incarnations */
};

struct thing {
	const char *name; /* borrowed from the site */
	uint32_t owner;
	uint32_t n_users;
	const uint32_t *users;
	tsync_type type;
	bool pulse;
	tsync_value model; /* the owner's last applied value; strings owned */
	/* The values the owner applied, newest last, as text: with group
	 * commit, a crash may take back those of its last COMMIT_MS. */
	struct sim_applied hist[HISTORY];
	uint64_t n_hist; /* applied so far (the ring holds the last HISTORY) */
};

struct crash {
	int64_t at;
	uint32_t down_ms;
};

struct sim {
	struct opts o;
	char dir[160];
	char site_path[192];
	tsync_site *site;
	struct event_base *base;
	struct ctl *ctl;
	uint32_t n_ctl;
	struct thing *things;
	uint32_t n_things;
	uint32_t *pulse_things;
	uint32_t n_pulse_things;
	uint32_t *user_idx; /* storage for every thing's users */
	struct sim_ledger *ledger;
	uint64_t rng;

	struct crash *crashes;
	uint32_t n_crashes, next_crash;
	int64_t t_start, t_end;
	double budget;
	int64_t last_tick;
	struct stall {
		int64_t at, us; /* when a tick ran, and how late */
	} stalls[STALLS];
	uint64_t n_stalls;   /* ever recorded; the ring holds the last STALLS */
	int64_t stall_max;   /* µs, the longest of the workload */
	int64_t lag_allowed; /* µs, the most a restore check allowed for stalls */
	uint64_t restored_in_stall; /* restores only the stall's allowance let pass */
	uint64_t restored_capped;   /* restores only a stall beyond STALL_CAP_MS would excuse */
	uint64_t counter;    /* source of unique values */

	/* results */
	uint64_t owner_sets, user_sets, pulses, pulse_refused, skipped, set_errors;
	uint64_t crashed, restarted, restored_ok, restore_bad, peer_down_events;
	uint64_t restored_older; /* ... of restored_ok: a value of the commit window before the crash */
	double down_min_s, down_max_s;
	struct totals base_tot;
	uint64_t copies, copies_bad, owners_bad;
	bool converged;
	uint64_t violations;
	struct event *check_ev;
	uint32_t check_from; /* the node to ask first whether it is settled */
};

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* splitmix64: small, seedable, good enough to pick things and times. */
static uint64_t rnd(struct sim *s)
{
	uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double rnd_unit(struct sim *s)
{
	return (double)(rnd(s) >> 11) / 9007199254740992.0;
}

static uint32_t rnd_below(struct sim *s, uint32_t n)
{
	return (uint32_t)(rnd(s) % n);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "thingsync-sim: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(1);
}

static void log_line(void *ud, tsync_log_level level, const char *line)
{
	fprintf(stderr, "  [%s] %s\n", tsync_log_level_name(level), line);
}

static const char *name_of(void *ud, bool thing, uint32_t idx)
{
	struct sim *s = ud;
	if (thing)
		return idx < s->n_things ? s->things[idx].name : NULL;
	return idx < s->n_ctl ? s->ctl[idx].name : NULL;
}

static void value_set_model(tsync_value *m, const tsync_value *v)
{
	if (m->type == TSYNC_TYPE_STRING)
		free((char *)m->u.s);
	*m = *v;
	if (v->type == TSYNC_TYPE_STRING) {
		m->u.s = strdup(v->u.s);
		if (!m->u.s)
			die("out of memory");
	}
}

/* --- the site --------------------------------------------------------------------- */

/* The soft limit on open files becomes the hard one: every node holds a UDP
 * socket and, with a state directory, LMDB's data, lock and meta files. */
static void raise_nofile(uint32_t controllers, uint32_t need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
		die("%" PRIu32 " controllers need about %" PRIu32 " file descriptors; the limit is %llu "
		    "(raise it with ulimit -n)",
		    controllers, need, (unsigned long long)rl.rlim_cur);
}

/* The kernel's ephemeral port range (bind to port 0, connect()): ports the
 * sim must not pick, since any process on the machine may take one of them
 * between the check below and the node's bind, or while a crashed node is
 * down. */
static void ephemeral_range(unsigned *lo, unsigned *hi)
{
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");

	*lo = 32768;
	*hi = 60999;
	if (f) {
		if (fscanf(f, "%u %u", lo, hi) != 2 || *lo > *hi || *hi > 65535) {
			*lo = 32768;
			*hi = 60999;
		}
		fclose(f);
	}
}

/* Not the integration tests' ports (harness.c: 15000-29999) nor the demo's
 * (demo-site.sh: a block of 18 from 12000 + up to 18,000): the sim test
 * runs beside them in the suite. */
#define HARNESS_PORT_LOW  12000
#define HARNESS_PORT_HIGH 30100

static bool udp_port_free(uint16_t port)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		die("socket: %s", strerror(errno));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons(port);
	ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

/* n free UDP ports on 127.0.0.1, outside the ephemeral range (and above the
 * privileged ports), from a place that depends on the pid and the clock (not
 * on the seed's stream, which fixes the site).
 * Asking the kernel for ephemeral ports instead lost a node's bind now and
 * then at 1,000 controllers: other programs' sockets took a port first. */
static void free_ports(uint16_t *ports, uint32_t n)
{
	unsigned lo, hi, span, start, found = 0;

	ephemeral_range(&lo, &hi);
	/* The ports below the ephemeral range, or above it if that is more. */
	if (lo - 1024 >= 65535 - hi) {
		start = 1024;
		span = lo - 1024;
	} else {
		start = hi + 1;
		span = 65535 - hi;
	}
	if (span < n)
		die("%" PRIu32 " controllers need %" PRIu32 " UDP ports outside the ephemeral range; there are %u",
		    n, n, span);
	for (unsigned k = 0, off = (unsigned)(((uint64_t)getpid() * 2654435761u) ^ (uint64_t)now_us()) % span; k < span && found < n; k++) {
		uint16_t port = (uint16_t)(start + (off + k) % span);
		/* The integration tests' ports (test/integration/harness.c),
		 * while there are others: the sim test runs beside them. */
		if (port >= HARNESS_PORT_LOW && port < HARNESS_PORT_HIGH && span > 2 * n + HARNESS_PORT_HIGH - HARNESS_PORT_LOW)
			continue;
		if (udp_port_free(port))
			ports[found++] = port;
	}
	if (found < n)
		die("only %u free UDP ports outside the ephemeral range, %" PRIu32 " needed", found, n);
}

/* Thing k of a controller: int things (k % 4 == 0) may be pulsed, so that a
 * pulse's value can be the pulse's number; the others are bool, int, string. */
static const char *thing_type(uint32_t k, bool *pulse)
{
	static const char *const types[4] = {"int", "bool", "int", "string"};
	*pulse = k % 4 == 0;
	return types[k % 4];
}

static void write_site(struct sim *s)
{
	const struct opts *o = &s->o;
	char keypath[200];
	uint16_t *ports = calloc(o->controllers, sizeof(*ports));
	uint32_t *pick = calloc(o->controllers, sizeof(*pick));
	FILE *f;

	if (!ports || !pick)
		die("out of memory");
	snprintf(keypath, sizeof(keypath), "%s/site.key", s->dir);
	if (tsync_key_generate(keypath) < 0)
		die("cannot write %s", keypath);
	free_ports(ports, o->controllers);
	snprintf(s->site_path, sizeof(s->site_path), "%s/site.conf", s->dir);
	f = fopen(s->site_path, "w");
	if (!f)
		die("%s: %s", s->site_path, strerror(errno));
	fprintf(f, "; written by thingsync-sim --seed %" PRIu64 "\n[site]\nname = sim\nkey_file = site.key\n",
	        o->seed);
	fprintf(f, "state_commit_ms = %d\n", COMMIT_MS);
	if (o->retry_max_ms)
		fprintf(f, "retry_max_ms = %" PRIu32 "\n", o->retry_max_ms);
	if (o->heartbeat_ms >= 0)
		fprintf(f, "heartbeat_ms = %" PRId64 "\n", o->heartbeat_ms);
	for (uint32_t c = 0; c < o->controllers; c++)
		fprintf(f, "\n[controller PI-%03" PRIu32 "]\nhost = 127.0.0.1\nudp_port = %u\n", c, ports[c]);
	for (uint32_t c = 0; c < o->controllers; c++) {
		for (uint32_t k = 0; k < o->things_per; k++) {
			bool pulse;
			const char *type = thing_type(k, &pulse);
			fprintf(f,
			        "\n[thing PI-%03" PRIu32 "_t%" PRIu32 "]\nowner = PI-%03" PRIu32
			        "\ntype = %s\n",
			        c, k, c, type);
			if (pulse && o->pulse_share > 0)
				fprintf(f, "pulse = yes\npulse_ms = 100\n");
			/* users: a random choice of the other controllers */
			for (uint32_t i = 0; i < o->controllers; i++)
				pick[i] = i;
			pick[c] = pick[o->controllers - 1];
			if (o->users_per)
				fprintf(f, "users = ");
			for (uint32_t u = 0; u < o->users_per; u++) {
				uint32_t j = u + rnd_below(s, o->controllers - 1 - u), tmp = pick[u];
				pick[u] = pick[j];
				pick[j] = tmp;
				fprintf(f, "%sPI-%03" PRIu32, u ? ", " : "", pick[u]);
			}
			if (o->users_per)
				fprintf(f, "\n");
		}
	}
	if (fclose(f) != 0)
		die("%s: %s", s->site_path, strerror(errno));
	free(ports);
	free(pick);
}

static void load_site(struct sim *s)
{
	char *errors = NULL;
	size_t n_users = 0;
	int r = tsync_site_load(s->site_path, &s->site, &errors);

	if (r < 0)
		die("the generated site does not load: %s", errors ? errors : tsync_strerror(r));
	s->n_ctl = (uint32_t)tsync_site_controller_count(s->site);
	s->n_things = (uint32_t)tsync_site_thing_count(s->site);
	s->ctl = calloc(s->n_ctl, sizeof(*s->ctl));
	s->things = calloc(s->n_things, sizeof(*s->things));
	s->pulse_things = calloc(s->n_things, sizeof(*s->pulse_things));
	if (!s->ctl || !s->things || !s->pulse_things ||
	    sim_ledger_new(s->n_ctl, s->n_things, &s->ledger) < 0)
		die("out of memory");
	/* With state directories, every pulse must act exactly once. */
	sim_ledger_durable(s->ledger, s->o.state);
	for (uint32_t c = 0; c < s->n_ctl; c++) {
		tsync_controller_info ci;
		tsync_site_controller(s->site, c, &ci);
		s->ctl[c].sim = s;
		s->ctl[c].idx = c;
		snprintf(s->ctl[c].name, sizeof(s->ctl[c].name), "%s", ci.name);
		snprintf(s->ctl[c].state, sizeof(s->ctl[c].state), "%s/state-%s", s->dir, ci.name);
	}
	for (uint32_t t = 0; t < s->n_things; t++) {
		tsync_thing_info ti;
		tsync_site_thing(s->site, t, &ti);
		n_users += ti.n_users;
	}
	s->user_idx = calloc(n_users ? n_users : 1, sizeof(*s->user_idx));
	if (!s->user_idx)
		die("out of memory");
	n_users = 0;
	for (uint32_t t = 0; t < s->n_things; t++) {
		tsync_thing_info ti;
		struct thing *th = &s->things[t];
		tsync_site_thing(s->site, t, &ti);
		th->name = ti.name;
		th->owner = (uint32_t)tsync_site_controller_find(s->site, ti.owner);
		th->type = ti.type;
		th->pulse = ti.pulse;
		th->users = &s->user_idx[n_users];
		th->n_users = (uint32_t)ti.n_users;
		for (size_t u = 0; u < ti.n_users; u++)
			s->user_idx[n_users++] = (uint32_t)tsync_site_controller_find(s->site, ti.users[u]);
		if (th->pulse)
			s->pulse_things[s->n_pulse_things++] = t;
		if (sim_ledger_thing(s->ledger, t, th->owner, th->n_users, th->users) < 0)
			die("out of memory");
	}
}

/* --- nodes -------------------------------------------------------------------------- */

static void add_totals(struct totals *sum, const tsync_node *n)
{
	for (size_t p = 0; p < tsync_node_peer_count(n); p++) {
		tsync_peer_stats st;
		if (tsync_node_peer_stats(n, p, &st) < 0)
			continue;
		sum->datagrams += st.datagrams_sent;
		sum->bytes += st.bytes_sent;
		sum->retransmits += st.retransmits;
		for (int k = 0; k < TSYNC_REJ_COUNT; k++)
			sum->rejected += st.rejected[k];
	}
}

static struct totals site_totals(struct sim *s)
{
	struct totals t = {0};

	for (uint32_t c = 0; c < s->n_ctl; c++) {
		t.datagrams += s->ctl[c].gone.datagrams;
		t.bytes += s->ctl[c].gone.bytes;
		t.retransmits += s->ctl[c].gone.retransmits;
		t.rejected += s->ctl[c].gone.rejected;
		if (s->ctl[c].node)
			add_totals(&t, s->ctl[c].node);
	}
	return t;
}

/* The boot of controller `peer` as the node of `c` last saw it (0: never). */
static uint64_t seen_boot(struct ctl *c, uint32_t peer)
{
	tsync_peer_stats st;
	/* Peers are the site's other controllers in site order; check the name. */
	size_t guess = peer < c->idx ? peer : peer - 1;

	if (tsync_node_peer_stats(c->node, guess, &st) == 0 && !strcmp(st.name, c->sim->ctl[peer].name))
		return st.boot;
	for (size_t p = 0; p < tsync_node_peer_count(c->node); p++)
		if (tsync_node_peer_stats(c->node, p, &st) == 0 && !strcmp(st.name, c->sim->ctl[peer].name))
			return st.boot;
	return 0;
}

/* The owner acts on pulse `id` now and relays it to its users, each to the
 * boot it knows. A user that is down, or restarted without the owner knowing
 * yet, gets the relay at a boot that is gone: it may be lost (verify.h). */
static void note_stale_users(struct sim *s, struct ctl *owner, const struct thing *th, int64_t id)
{
	for (uint32_t k = 0; k < th->n_users; k++) {
		struct ctl *u = &s->ctl[th->users[k]];
		uint64_t seen = seen_boot(owner, u->idx);
		if (!u->node || (seen != 0 && seen != tsync_node_boot(u->node)))
			sim_ledger_user_stale(s->ledger, id, u->idx);
	}
}

/* The smoothed round trip, averaged over the pairs that have one, in ms, and
 * its largest value. */
static double mean_srtt(struct sim *s, double *max_ms)
{
	double sum = 0;
	uint64_t n = 0;

	*max_ms = 0;
	for (uint32_t c = 0; c < s->n_ctl; c++) {
		if (!s->ctl[c].node)
			continue;
		for (size_t p = 0; p < tsync_node_peer_count(s->ctl[c].node); p++) {
			tsync_peer_stats st;
			if (tsync_node_peer_stats(s->ctl[c].node, p, &st) < 0 || !st.srtt_us)
				continue;
			sum += st.srtt_us / 1e3;
			n++;
			if (st.srtt_us / 1e3 > *max_ms)
				*max_ms = st.srtt_us / 1e3;
		}
	}
	return n ? sum / (double)n : 0;
}

static void on_event(void *ud, tsync_node *node, const tsync_event *ev)
{
	struct ctl *c = ud;
	struct sim *s = c->sim;
	int t;

	switch (ev->kind) {
	case TSYNC_EVENT_PULSE:
		t = tsync_site_thing_find(s->site, ev->thing);
		if (t < 0)
			die("%s reported a pulse of unknown thing %s", c->name, ev->thing);
		/* A pulse's value is its number in the ledger; anything else is a stray. */
		sim_ledger_act(s->ledger, c->idx, (uint32_t)t,
		               ev->value.type == TSYNC_TYPE_INT ? ev->value.u.i : -1);
		if (s->things[t].owner == c->idx && ev->value.type == TSYNC_TYPE_INT)
			note_stale_users(s, c, &s->things[t], ev->value.u.i);
		break;
	case TSYNC_EVENT_CHANGED:
		t = tsync_site_thing_find(s->site, ev->thing);
		if (t >= 0 && s->things[t].owner == c->idx) {
			struct thing *th = &s->things[t];
			value_set_model(&th->model, &ev->value);
			th->hist[th->n_hist % HISTORY].at = now_us();
			tsync_value_format(&ev->value, th->hist[th->n_hist % HISTORY].text,
			                   sizeof(th->hist[0].text));
			th->n_hist++;
		}
		break;
	case TSYNC_EVENT_PEER_DOWN:
		s->peer_down_events++;
		break;
	case TSYNC_EVENT_PEER_UP:
		break;
	}
}

struct pulse_cookie {
	struct sim *sim;
	int64_t id;
};

static void pulse_done(void *ud, tsync_node *node, int status, const char *result)
{
	struct pulse_cookie *pc = ud;
	sim_ledger_done(pc->sim->ledger, pc->id, status);
	free(pc);
}

static void set_faults(struct ctl *c)
{
	struct sim *s = c->sim;
	tsync_faults f = {
	    .loss = s->o.loss,
	    .duplicate = s->o.dup,
	    .reorder = s->o.reorder,
	    .delay_ms = FAULT_DELAY_MS,
	    /* One stream per controller and incarnation, from --seed. */
	    .seed = (uint32_t)(s->o.seed * 2654435761u + c->idx * 40503u + c->starts * 69069u) | 1u,
	};

	if (tsync_node_set_faults(c->node, &f) < 0)
		die("invalid faults");
}

static void start_node(struct ctl *c, bool faults)
{
	struct sim *s = c->sim;
	tsync_node_options o;
	int r;

	tsync_node_options_init(&o);
	o.site = s->site;
	o.controller = c->name;
	o.event_base = s->base;
	o.state_dir = s->o.state ? c->state : NULL;
	o.log = log_line;
	o.log_level = s->o.verbose ? TSYNC_LOG_INFO : TSYNC_LOG_ERROR;
	if (s->o.state && mkdir(c->state, 0700) < 0 && errno != EEXIST)
		die("%s: %s", c->state, strerror(errno));
	sim_ledger_start(s->ledger, c->idx);
	r = tsync_node_new(&o, &c->node);
	if (r < 0)
		die("%s does not start: %s", c->name, tsync_strerror(r));
	c->starts++;
	c->restart_at = 0;
	if (tsync_node_on_event(c->node, on_event, c) < 0)
		die("out of memory");
	if (faults)
		set_faults(c);
}

/* The loop's longest stall in the STALL_SPAN_MS before `at` (0 if none kept). */
static int64_t loop_lag(const struct sim *s, int64_t at)
{
	int64_t lag = 0;

	for (uint64_t k = s->n_stalls; k > 0 && s->n_stalls - k < STALLS; k--) {
		const struct stall *st = &s->stalls[(k - 1) % STALLS];
		if (st->at < at - (int64_t)STALL_SPAN_MS * 1000)
			break;
		if (st->at <= at && st->us > lag)
			lag = st->us;
	}
	return lag;
}

static void crash(struct sim *s, struct ctl *c, uint32_t down_ms)
{
	add_totals(&c->gone, c->node);
	/* A hard crash: what is staged and not committed is lost, as with a
	 * kill -9 (own values within the group-commit window among it).
	 * Outstanding pulses of this node end with TSYNC_ECANCELED here; with
	 * --state their requests were kept and are resumed at the restart. */
	tsync_node_abandon(c->node);
	c->node = NULL;
	c->crashed_at = now_us();
	c->crash_lag = loop_lag(s, c->crashed_at);
	c->restart_at = now_us() + (int64_t)down_ms * 1000;
	s->crashed++;
	if (s->crashed == 1 || down_ms / 1e3 < s->down_min_s)
		s->down_min_s = down_ms / 1e3;
	if (down_ms / 1e3 > s->down_max_s)
		s->down_max_s = down_ms / 1e3;
}

/* What the owner restored, against the values it applied before the crash
 * (newest first, with how long before the crash). */
static void explain_restore(const struct thing *th, const tsync_value *v, int64_t crashed_at)
{
	char text[48];

	tsync_value_format(v, text, sizeof(text));
	fprintf(stderr, "  restored %s; applied before the crash, newest first:", text);
	for (uint64_t k = th->n_hist; k > 0 && th->n_hist - k < HISTORY; k--) {
		const struct sim_applied *h = &th->hist[(k - 1) % HISTORY];
		fprintf(stderr, " %s (%.0f ms)", h->text, (double)(crashed_at - h->at) / 1e3);
	}
	fprintf(stderr, "\n");
}

static void restart(struct sim *s, struct ctl *c, bool faults)
{
	start_node(c, faults);
	s->restarted++;
	for (uint32_t t = 0; t < s->n_things; t++) {
		struct thing *th = &s->things[t];
		tsync_thing_state st = {0};
		if (th->owner != c->idx || th->model.type == TSYNC_TYPE_NONE)
			continue;
		if (s->o.state) {
			/* Owned values outlive the process: the restored value must be
			 * the last one this controller applied. */
			char text[48];
			enum sim_restore verdict;
			if (tsync_node_get(c->node, th->name, &st) < 0)
				st.value.type = TSYNC_TYPE_NONE;
			if (sim_value_same(&st.value, &th->model)) {
				s->restored_ok++;
				continue;
			}
			tsync_value_format(&st.value, text, sizeof(text));
			/* Lost with the group commit? Its window is COMMIT_MS, the
			 * slack, and the loop's longest stall before the crash (the
			 * commit's timer waits for the loop like every other), up
			 * to STALL_CAP_MS. */
			verdict = sim_restore_check(th->hist, HISTORY, th->n_hist,
			                            st.value.type == TSYNC_TYPE_NONE ? NULL : text, c->crashed_at,
			                            (int64_t)(COMMIT_MS + COMMIT_SLACK_MS) * 1000, c->crash_lag,
			                            (int64_t)STALL_CAP_MS * 1000);
			if (verdict == SIM_RESTORE_OLDER || verdict == SIM_RESTORE_IN_STALL) {
				/* It is the owner's value from now on. */
				s->restored_ok++;
				s->restored_older++;
				if (verdict == SIM_RESTORE_IN_STALL) {
					s->restored_in_stall++;
					if (c->crash_lag > s->lag_allowed)
						s->lag_allowed = c->crash_lag;
				}
				value_set_model(&th->model, &st.value);
				continue;
			}
			s->restore_bad++;
			if (verdict == SIM_RESTORE_CAPPED)
				s->restored_capped++;
			fprintf(stderr, "VIOLATION: %s restarted without its last value of %s%s\n", c->name, th->name,
			        verdict == SIM_RESTORE_CAPPED ? " (only the loop's stall beyond the cap excuses it)"
			                                      : "");
			explain_restore(th, &st.value, c->crashed_at);
			fprintf(stderr,
			        "  (the loop's longest stall in the %d s before the crash: %.0f ms; allowed up to %d ms)\n",
			        STALL_SPAN_MS / 1000, (double)c->crash_lag / 1e3, STALL_CAP_MS);
		} else {
			/* In memory nothing survives; the controller reads its inputs
			 * again, which the simulator models by setting the last value. */
			tsync_value v = th->model;
			char *copy = NULL;
			if (v.type == TSYNC_TYPE_STRING) {
				copy = strdup(v.u.s);
				if (!copy)
					die("out of memory");
				v.u.s = copy;
			}
			if (tsync_node_set(c->node, th->name, &v) < 0)
				s->set_errors++;
			free(copy);
		}
	}
}

/* --- the workload ---------------------------------------------------------------------- */

static tsync_value next_value(struct sim *s, const struct thing *th, bool by_owner, char *buf, size_t len)
{
	switch (th->type) {
	case TSYNC_TYPE_BOOL:
		if (by_owner && th->model.type == TSYNC_TYPE_BOOL)
			return tsync_bool(!th->model.u.b);
		return tsync_bool(rnd(s) & 1);
	case TSYNC_TYPE_STRING:
		snprintf(buf, len, "v%" PRIu64, ++s->counter);
		return tsync_string(buf);
	case TSYNC_TYPE_FLOAT:
		return tsync_float((double)++s->counter / 4);
	default:
		return tsync_int((int64_t)++s->counter);
	}
}

static void change(struct sim *s)
{
	struct thing *th = &s->things[rnd_below(s, s->n_things)];
	bool by_owner = th->n_users == 0 || rnd_unit(s) >= USER_SET_SHARE;
	uint32_t actor = by_owner ? th->owner : th->users[rnd_below(s, th->n_users)];
	char buf[32];
	tsync_value v;
	int r;

	if (!s->ctl[actor].node) {
		s->skipped++;
		return;
	}
	v = next_value(s, th, by_owner, buf, sizeof(buf));
	r = tsync_node_set(s->ctl[actor].node, th->name, &v);
	if (r < 0) {
		if (s->set_errors++ < 5)
			fprintf(stderr, "thingsync-sim: %s: set %s: %s\n", s->ctl[actor].name, th->name,
			        tsync_strerror(r));
		return;
	}
	if (by_owner)
		s->owner_sets++;
	else
		s->user_sets++;
}

static void pulse(struct sim *s)
{
	uint32_t t = s->pulse_things[rnd_below(s, s->n_pulse_things)];
	struct thing *th = &s->things[t];
	bool by_owner = th->n_users == 0 || rnd_unit(s) < 0.5;
	uint32_t actor = by_owner ? th->owner : th->users[rnd_below(s, th->n_users)];
	struct pulse_cookie *pc;
	tsync_value v;
	int r;

	if (!s->ctl[actor].node) {
		s->skipped++;
		return;
	}
	pc = malloc(sizeof(*pc));
	if (!pc)
		die("out of memory");
	pc->sim = s;
	pc->id = sim_ledger_pulse(s->ledger, t, actor);
	if (pc->id < 0)
		die("out of memory");
	v = tsync_int(pc->id);
	r = tsync_node_pulse(s->ctl[actor].node, th->name, &v, 0, pulse_done, pc);
	if (r < 0) {
		/* Not sent (e.g. -ENOBUFS: too many in flight): no pulse. */
		sim_ledger_done(s->ledger, pc->id, SIM_PULSE_WITHDRAWN);
		free(pc);
		s->pulse_refused++;
		return;
	}
	s->pulses++;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sim *s = arg;
	int64_t now = now_us();

	if (now >= s->t_end) {
		event_base_loopbreak(s->base);
		return;
	}
	while (s->next_crash < s->n_crashes && s->crashes[s->next_crash].at <= now) {
		struct crash *k = &s->crashes[s->next_crash++];
		uint32_t c = rnd_below(s, s->n_ctl), tries = 0;
		/* The next controller that is up. */
		while (!s->ctl[c].node && tries++ < s->n_ctl)
			c = (c + 1) % s->n_ctl;
		if (s->ctl[c].node)
			crash(s, &s->ctl[c], k->down_ms);
	}
	for (uint32_t c = 0; c < s->n_ctl; c++)
		if (!s->ctl[c].node && s->ctl[c].restart_at <= now)
			restart(s, &s->ctl[c], true);
	if (now - s->last_tick - TICK_MS * 1000 > s->stall_max)
		s->stall_max = now - s->last_tick - TICK_MS * 1000;
	if (now - s->last_tick > 2 * TICK_MS * 1000) {
		struct stall *st = &s->stalls[s->n_stalls++ % STALLS];
		st->at = now;
		st->us = now - s->last_tick - TICK_MS * 1000;
	}
	s->budget += s->o.rate * s->n_ctl * (double)(now - s->last_tick) / 1e6;
	s->last_tick = now;
	while (s->budget >= 1) {
		s->budget -= 1;
		if (s->n_pulse_things && rnd_unit(s) < s->o.pulse_share)
			pulse(s);
		else
			change(s);
	}
}

/* Crash times spread over the first three quarters of the workload, so that
 * the last controller is back before the faults stop. */
static void plan_crashes(struct sim *s)
{
	double span = s->o.seconds * 1e6;

	s->n_crashes = s->o.crashes;
	s->crashes = calloc(s->n_crashes ? s->n_crashes : 1, sizeof(*s->crashes));
	if (!s->crashes)
		die("out of memory");
	for (uint32_t i = 0; i < s->n_crashes; i++) {
		double at = span * (0.05 + 0.7 * rnd_unit(s));
		uint32_t down = s->o.down_ms / 5 + rnd_below(s, s->o.down_ms - s->o.down_ms / 5 + 1);
		double room = span - at - TICK_MS * 1000.0;
		if (down * 1000.0 > room)
			down = room > 0 ? (uint32_t)(room / 1000) : 0;
		s->crashes[i].at = s->t_start + (int64_t)at;
		s->crashes[i].down_ms = down;
	}
	/* In time order (insertion sort: there are few). */
	for (uint32_t i = 1; i < s->n_crashes; i++)
		for (uint32_t j = i; j > 0 && s->crashes[j].at < s->crashes[j - 1].at; j--) {
			struct crash tmp = s->crashes[j];
			s->crashes[j] = s->crashes[j - 1];
			s->crashes[j - 1] = tmp;
		}
}

/* --- convergence ------------------------------------------------------------------------- */

/* Compares every copy with its owner; counts into s->copies / copies_bad, and
 * prints the differences when `report`. */
static uint64_t compare_copies(struct sim *s, FILE *report)
{
	uint64_t bad = 0;
	int lines = 0;

	s->copies = 0;
	for (uint32_t t = 0; t < s->n_things; t++) {
		struct thing *th = &s->things[t];
		tsync_thing_state own;
		if (!s->ctl[th->owner].node || tsync_node_get(s->ctl[th->owner].node, th->name, &own) < 0) {
			bad += th->n_users;
			continue;
		}
		for (uint32_t u = 0; u < th->n_users; u++) {
			struct ctl *uc = &s->ctl[th->users[u]];
			tsync_thing_state cp;
			char a[64], b[64];
			s->copies++;
			if (uc->node && tsync_node_get(uc->node, th->name, &cp) == 0 &&
			    sim_value_same(&cp.value, &own.value) && cp.version == own.version &&
			    cp.owner_boot == own.owner_boot)
				continue;
			bad++;
			if (!report || lines++ >= MAX_REPORT)
				continue;
			tsync_value_format(&own.value, a, sizeof(a));
			if (!uc->node) {
				fprintf(report, "VIOLATION: %s is down, so it holds no copy of %s\n",
				        uc->name, th->name);
				continue;
			}
			tsync_value_format(&cp.value, b, sizeof(b));
			fprintf(report,
			        "VIOLATION: %s holds %s = %s (version %" PRIu64 " of boot %" PRIu64
			        "), its owner %s "
			        "has %s (version %" PRIu64 " of boot %" PRIu64 ")\n",
			        uc->name, th->name, b, cp.version, cp.owner_boot, s->ctl[th->owner].name, a,
			        own.version, own.owner_boot);
		}
	}
	if (report && lines > MAX_REPORT)
		fprintf(report, "VIOLATION: ... and %d more copies differ\n", lines - MAX_REPORT);
	return bad;
}

/* Whether every node is settled. The check runs every few milliseconds and
 * asking a node costs in proportion to its peers, so it starts with the node
 * that was unsettled last time: until that one settles, one call answers. */
static bool all_settled(struct sim *s)
{
	for (uint32_t k = 0; k < s->n_ctl; k++) {
		struct ctl *c = &s->ctl[(s->check_from + k) % s->n_ctl];
		if (!c->node || tsync_node_unsettled(c->node)) {
			s->check_from = c->idx;
			return false;
		}
	}
	return true;
}

static void check_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sim *s = arg;
	if (all_settled(s) && compare_copies(s, NULL) == 0) {
		s->converged = true;
		event_base_loopbreak(s->base);
	}
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

/* Runs the loop until converged or `limit_s` passed; returns the time taken in ms. */
static double converge(struct sim *s, double limit_s)
{
	struct timeval tick = {0, CHECK_MS * 1000};
	struct timeval limit = {(time_t)limit_s, (suseconds_t)((limit_s - floor(limit_s)) * 1e6)};
	struct event *stop = evtimer_new(s->base, stop_cb, s->base);
	int64_t t0 = now_us();

	s->converged = false;
	s->check_ev = event_new(s->base, -1, EV_PERSIST, check_cb, s);
	if (!stop || !s->check_ev)
		die("out of memory");
	event_add(s->check_ev, &tick);
	evtimer_add(stop, &limit);
	check_cb(-1, 0, s);
	if (!s->converged)
		event_base_loop(s->base, 0);
	event_free(s->check_ev);
	event_free(stop);
	return (double)(now_us() - t0) / 1e3;
}

/* Why the site did not converge: the first few pairs still waiting. */
static void explain_unsettled(struct sim *s)
{
	int lines = 0;
	for (uint32_t c = 0; c < s->n_ctl && lines < MAX_REPORT; c++) {
		struct ctl *ct = &s->ctl[c];
		if (!ct->node) {
			fprintf(stderr, "  %s is down\n", ct->name);
			lines++;
			continue;
		}
		if (!tsync_node_unsettled(ct->node))
			continue;
		for (size_t p = 0; p < tsync_node_peer_count(ct->node) && lines < MAX_REPORT; p++) {
			tsync_peer_stats st;
			if (tsync_node_peer_stats(ct->node, p, &st) < 0 || !st.pending)
				continue;
			fprintf(stderr,
			        "  %s -> %s: %" PRIu64 " message(s) unanswered, peer %s, last heard %" PRId64
			        " ms ago, retry timeout %" PRIu32 " ms, smoothed rtt %.1f ms\n",
			        ct->name, st.name, st.pending, st.up ? "up" : "DOWN", st.last_heard_ms,
			        st.rto_ms, st.srtt_us / 1e3);
			lines++;
		}
	}
}

/* The owner's value must be the last one it applied (what its CHANGED events said). */
static uint64_t check_owners(struct sim *s)
{
	uint64_t bad = 0;
	for (uint32_t t = 0; t < s->n_things; t++) {
		struct thing *th = &s->things[t];
		tsync_thing_state own;
		if (!s->ctl[th->owner].node || tsync_node_get(s->ctl[th->owner].node, th->name, &own) < 0 ||
		    !sim_value_same(&own.value, &th->model)) {
			if (bad++ < MAX_REPORT)
				fprintf(
				    stderr,
				    "VIOLATION: the owner %s of %s does not hold the last value it applied\n",
				    s->ctl[th->owner].name, th->name);
		}
	}
	return bad;
}

static long vm_kb(const char *key)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;
	size_t kl = strlen(key);

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':')
			kb = atol(line + kl + 1);
	fclose(f);
	return kb;
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

/* --- main ------------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: thingsync-sim [options]\n"
	    "Runs N thingsync controllers in one process on loopback, with a workload of changes and\n"
	    "pulses over a lossy network and controllers crashing and restarting; then measures\n"
	    "convergence and verifies every copy and every pulse. Exit 1 if anything is wrong.\n"
	    "\n"
	    "  -n, --controllers N            controllers (default 20)\n"
	    "  -t, --things-per-controller K  things each controller owns (default 4)\n"
	    "  -u, --users-per-thing U        controllers that use each thing (default 3)\n"
	    "  -s, --seconds S                workload duration (default 5)\n"
	    "  -l, --loss P                   fraction of datagrams dropped (default 0.2)\n"
	    "  -d, --dup P                    fraction duplicated (default 0.05)\n"
	    "  -o, --reorder P                fraction held back up to 20 ms (default 0.1)\n"
	    "  -c, --crashes K                controller crashes during the workload (default 3)\n"
	    "  -D, --down-ms MS               longest time a crashed controller stays down (default 1000)\n"
	    "  -r, --rate R                   changes per controller per second (default 2)\n"
	    "  -p, --pulses F                 share of operations that are pulses (default 0.1)\n"
	    "  -m, --retry-max-ms MS          the site's retry_max_ms (default: the library's)\n"
	    "  -H, --heartbeat-ms MS          the site's heartbeat_ms, 0: off (default: the library's)\n"
	    "  -T, --timeout S                give up converging after S seconds (default 120)\n"
	    "  -S, --seed N                   seed of the site, workload, crashes and faults\n"
	    "      --state                    keep each controller's state in LMDB (restarts keep values)\n"
	    "      --dir DIR                  make the site directory (and the state) in DIR (default /tmp;\n"
	    "                                 /dev/shm: LMDB's fsyncs cost nothing, the protocol is measured)\n"
	    "      --json                     print the results as one JSON object\n"
	    "      --keep                     keep the site directory\n"
	    "  -v, --verbose                  log the nodes' info lines to stderr\n"
	    "  -h, --help                     this text\n");
}

static double parse_num(const char *opt, const char *arg, double lo, double hi)
{
	char *end;
	double v = strtod(arg, &end);
	if (!*arg || *end || !(v >= lo && v <= hi)) {
		fprintf(stderr, "thingsync-sim: %s: '%s' is not a number from %g to %g\n", opt, arg, lo, hi);
		exit(2);
	}
	return v;
}

static void parse(int argc, char **argv, struct opts *o)
{
	enum { OPT_STATE = 256, OPT_JSON, OPT_KEEP, OPT_DIR };
	static const struct option longopts[] = {
	    {"controllers", required_argument, NULL, 'n'},
	    {"things-per-controller", required_argument, NULL, 't'},
	    {"users-per-thing", required_argument, NULL, 'u'},
	    {"seconds", required_argument, NULL, 's'},
	    {"loss", required_argument, NULL, 'l'},
	    {"dup", required_argument, NULL, 'd'},
	    {"reorder", required_argument, NULL, 'o'},
	    {"crashes", required_argument, NULL, 'c'},
	    {"down-ms", required_argument, NULL, 'D'},
	    {"rate", required_argument, NULL, 'r'},
	    {"pulses", required_argument, NULL, 'p'},
	    {"retry-max-ms", required_argument, NULL, 'm'},
	    {"heartbeat-ms", required_argument, NULL, 'H'},
	    {"timeout", required_argument, NULL, 'T'},
	    {"seed", required_argument, NULL, 'S'},
	    {"state", no_argument, NULL, OPT_STATE},
	    {"dir", required_argument, NULL, OPT_DIR},
	    {"json", no_argument, NULL, OPT_JSON},
	    {"keep", no_argument, NULL, OPT_KEEP},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	memset(o, 0, sizeof(*o));
	o->controllers = 20;
	o->things_per = 4;
	o->users_per = 3;
	o->seconds = 5;
	o->loss = 0.2;
	o->dup = 0.05;
	o->reorder = 0.1;
	o->crashes = 3;
	o->down_ms = 1000;
	o->rate = 2;
	o->pulse_share = 0.1;
	o->timeout = 120;
	o->heartbeat_ms = -1;
	o->parent = "/tmp";
	o->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
	while ((c = getopt_long(argc, argv, "n:t:u:s:l:d:o:c:D:r:p:m:H:T:S:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			o->controllers = (uint32_t)parse_num("--controllers", optarg, 2, 100000);
			break;
		case 't':
			o->things_per = (uint32_t)parse_num("--things-per-controller", optarg, 1, 100000);
			break;
		case 'u':
			o->users_per = (uint32_t)parse_num("--users-per-thing", optarg, 0, 100000);
			break;
		case 's':
			o->seconds = parse_num("--seconds", optarg, 0.1, 86400);
			break;
		case 'l':
			o->loss = parse_num("--loss", optarg, 0, 0.9);
			break;
		case 'd':
			o->dup = parse_num("--dup", optarg, 0, 1);
			break;
		case 'o':
			o->reorder = parse_num("--reorder", optarg, 0, 1);
			break;
		case 'c':
			o->crashes = (uint32_t)parse_num("--crashes", optarg, 0, 1000000);
			break;
		case 'D':
			o->down_ms = (uint32_t)parse_num("--down-ms", optarg, 0, 3600000);
			break;
		case 'r':
			o->rate = parse_num("--rate", optarg, 0, 100000);
			break;
		case 'p':
			o->pulse_share = parse_num("--pulses", optarg, 0, 1);
			break;
		case 'm':
			o->retry_max_ms = (uint32_t)parse_num("--retry-max-ms", optarg, 1, 3600000);
			break;
		case 'H':
			o->heartbeat_ms = (int64_t)parse_num("--heartbeat-ms", optarg, 0, 3600000);
			break;
		case 'T':
			o->timeout = parse_num("--timeout", optarg, 0.1, 86400);
			break;
		case 'S':
			o->seed = (uint64_t)parse_num("--seed", optarg, 0, 9007199254740992.0);
			break;
		case OPT_STATE:
			o->state = true;
			break;
		case OPT_JSON:
			o->json = true;
			break;
		case OPT_DIR:
			/* It ends up in the rm -rf of the cleanup, quoted. */
			if (!*optarg || strlen(optarg) > 100 || strchr(optarg, '\'')) {
				fprintf(stderr, "thingsync-sim: --dir: '%s' is empty, longer than 100 bytes or "
				                "has a quote\n", optarg);
				exit(2);
			}
			o->parent = optarg;
			break;
		case OPT_KEEP:
			o->keep = true;
			break;
		case 'v':
			o->verbose = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "thingsync-sim: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		exit(2);
	}
	if (o->users_per > o->controllers - 1) {
		fprintf(stderr, "thingsync-sim: --users-per-thing must be below --controllers\n");
		exit(2);
	}
}

static void print_command(FILE *f, const struct opts *o)
{
	fprintf(f,
	        "thingsync-sim --controllers %" PRIu32 " --things-per-controller %" PRIu32
	        " --users-per-thing %" PRIu32
	        " --seconds %g --loss %g --dup %g --reorder %g --crashes %" PRIu32 " --down-ms %" PRIu32
	        " --rate %g --pulses %g%s --seed %" PRIu64,
	        o->controllers, o->things_per, o->users_per, o->seconds, o->loss, o->dup, o->reorder,
	        o->crashes, o->down_ms, o->rate, o->pulse_share, o->state ? " --state" : "", o->seed);
	if (o->retry_max_ms)
		fprintf(f, " --retry-max-ms %" PRIu32, o->retry_max_ms);
	if (o->heartbeat_ms >= 0)
		fprintf(f, " --heartbeat-ms %" PRId64, o->heartbeat_ms);
	if (strcmp(o->parent, "/tmp"))
		fprintf(f, " --dir %s", o->parent);
}

int main(int argc, char **argv)
{
	struct sim sim, *s = &sim;
	struct sim_ledger_report rep;
	struct totals tot;
	double startup_ms, created_ms, converge_ms, cpu0, srtt_mean, srtt_max;
	uint64_t changes, startup_down;
	long rss0_kb, rss_created_kb;
	int64_t t0;

	memset(s, 0, sizeof(*s));
	parse(argc, argv, &s->o);
	s->rng = s->o.seed;
	raise_nofile(s->o.controllers, s->o.controllers * (s->o.state ? 4 : 1) + 64);

	snprintf(s->dir, sizeof(s->dir), "%s/thingsync-sim-XXXXXX", s->o.parent);
	if (!mkdtemp(s->dir))
		die("mkdtemp in %s: %s", s->o.parent, strerror(errno));
	write_site(s);
	load_site(s);
	s->base = event_base_new();
	if (!s->base)
		die("event_base_new failed");
	if (!s->o.json) {
		printf("thingsync-sim %s: %" PRIu32 " controllers, %" PRIu32 " things (%" PRIu32
		       " may be pulsed), %" PRIu32 " users per thing, authenticated, state %s\n",
		       TSYNC_VERSION_STRING, s->n_ctl, s->n_things, s->n_pulse_things, s->o.users_per,
		       s->o.state ? "in LMDB" : "in memory");
		printf("site %s; to run it again: ", s->site_path);
		print_command(stdout, &s->o);
		printf("\n\n");
		fflush(stdout);
	}

	/* 1. Start-up, no faults. What the process holds before the first node
	 * (the site, the ledger, libevent) is not the nodes' memory. */
	rss0_kb = vm_kb("VmRSS");
	cpu0 = cpu_s();
	t0 = now_us();
	for (uint32_t c = 0; c < s->n_ctl; c++) {
		start_node(&s->ctl[c], false);
		/* The controllers already up answer at once, as on a real site
		 * where each has its own CPU: without this, every datagram of the
		 * start-up would wait until all nodes exist, and the round-trip
		 * samples of the start-up would tell that wait for a long time. */
		event_base_loop(s->base, EVLOOP_NONBLOCK);
	}
	created_ms = (double)(now_us() - t0) / 1e3;
	rss_created_kb = vm_kb("VmRSS");
	for (uint32_t t = 0; t < s->n_things; t++) {
		char buf[32];
		tsync_value v = next_value(s, &s->things[t], true, buf, sizeof(buf));
		if (tsync_node_set(s->ctl[s->things[t].owner].node, s->things[t].name, &v) < 0)
			die("cannot set %s on its owner", s->things[t].name);
	}
	converge(s, s->o.timeout);
	startup_ms = (double)(now_us() - t0) / 1e3;
	if (!s->converged) {
		fprintf(stderr,
		        "thingsync-sim: FAILED: the site did not converge at start-up, without faults, "
		        "within %g s\n",
		        s->o.timeout);
		explain_unsettled(s);
		compare_copies(s, stderr);
		return 1;
	}
	s->base_tot = site_totals(s);
	startup_down = s->peer_down_events;
	if (!s->o.json) {
		printf("%-28s %" PRIu32 " controllers started, every copy equal to its owner after %.1f ms\n",
		       "start-up, no faults", s->n_ctl, startup_ms);
		printf("%-28s %.1f ms to create the nodes (%.2f ms each), %.1f MB (%.0f KB per node); %" PRIu64
		       " peer-down events\n",
		       "", created_ms, created_ms / s->n_ctl, (double)(rss_created_kb - rss0_kb) / 1024,
		       (double)(rss_created_kb - rss0_kb) / s->n_ctl, startup_down);
		fflush(stdout);
	}

	/* 2. Workload with faults and crashes. */
	{
		struct timeval tick = {0, TICK_MS * 1000};
		struct event *tick_ev = event_new(s->base, -1, EV_PERSIST, tick_cb, s);
		if (!tick_ev)
			die("out of memory");
		for (uint32_t c = 0; c < s->n_ctl; c++)
			set_faults(&s->ctl[c]);
		s->t_start = s->last_tick = now_us();
		s->t_end = s->t_start + (int64_t)(s->o.seconds * 1e6);
		plan_crashes(s);
		event_add(tick_ev, &tick);
		event_base_loop(s->base, 0);
		event_free(tick_ev);
	}

	/* 3. The faults stop (a controller still down comes back now), and the
	 * time until everything converged is measured. */
	for (uint32_t c = 0; c < s->n_ctl; c++)
		if (!s->ctl[c].node)
			restart(s, &s->ctl[c], false);
	for (uint32_t c = 0; c < s->n_ctl; c++)
		tsync_node_set_faults(s->ctl[c].node, NULL);
	converge_ms = converge(s, s->o.timeout);
	tot = site_totals(s);
	tot.datagrams -= s->base_tot.datagrams;
	tot.bytes -= s->base_tot.bytes;
	tot.retransmits -= s->base_tot.retransmits;
	changes = s->owner_sets + s->user_sets;
	srtt_mean = mean_srtt(s, &srtt_max);

	/* 4. Verification. */
	if (!s->converged) {
		fprintf(stderr, "VIOLATION: the site did not converge within %g s after the faults stopped\n",
		        s->o.timeout);
		explain_unsettled(s);
	}
	s->copies_bad = compare_copies(s, stderr);
	s->owners_bad = check_owners(s);
	sim_ledger_verify(s->ledger, &rep, stderr, MAX_REPORT, name_of, s);
	s->violations = rep.violations + s->copies_bad + s->owners_bad + s->restore_bad + !s->converged;

	if (s->o.json) {
		printf("{\"controllers\":%" PRIu32 ",\"things\":%" PRIu32 ",\"users_per_thing\":%" PRIu32
		       ",\"seconds\":%g,\"loss\":%g,\"dup\":%g,\"reorder\":%g,\"state\":%s,\"seed\":%" PRIu64
		       ",\"startup_ms\":%.3f,\"created_ms\":%.3f,\"converged\":%s,\"convergence_ms\":%.3f,\"changes\":%" PRIu64
		       ",\"owner_sets\":%" PRIu64 ",\"user_sets\":%" PRIu64 ",\"pulses\":%" PRIu64
		       ",\"pulses_acked\":%" PRIu64 ",\"pulses_unknown\":%" PRIu64
		       ",\"pulses_unknown_acted\":%" PRIu64 ",\"user_acts\":%" PRIu64
		       ",\"user_acts_owed\":%" PRIu64 ",\"user_acts_lost_to_restart\":%" PRIu64
		       ",\"user_acts_lost_stale_boot\":%" PRIu64 ",\"crashes\":%" PRIu64
		       ",\"restarts\":%" PRIu64 ",\"datagrams\":%" PRIu64 ",\"bytes\":%" PRIu64
		       ",\"retransmits\":%" PRIu64 ",\"datagrams_per_change\":%.3f,\"bytes_per_change\":%.1f"
		       ",\"copies\":%" PRIu64 ",\"srtt_mean_ms\":%.3f,\"srtt_max_ms\":%.3f,\"cpu_s\":%.2f,"
		       "\"max_rss_kb\":%ld,\"stall_max_ms\":%.1f,\"rss_before_nodes_kb\":%ld,\"rss_per_node_kb\":%.1f,\"startup_peer_down\":%" PRIu64
		       ",\"peer_down\":%" PRIu64 ",\"restores_bad\":%" PRIu64 ",\"restores_capped\":%" PRIu64
		       ",\"violations\":%" PRIu64 ",\"verified\":%s}\n",
		       s->n_ctl, s->n_things, s->o.users_per, s->o.seconds, s->o.loss, s->o.dup, s->o.reorder,
		       s->o.state ? "true" : "false", s->o.seed, startup_ms, created_ms, s->converged ? "true" : "false",
		       converge_ms, changes, s->owner_sets, s->user_sets, rep.pulses, rep.acked, rep.unknown,
		       rep.unknown_acted, rep.user_acts, rep.user_expected, rep.user_lost,
		       rep.user_lost_stale, s->crashed, s->restarted, tot.datagrams, tot.bytes,
		       tot.retransmits, changes ? (double)tot.datagrams / (double)changes : 0,
		       changes ? (double)tot.bytes / (double)changes : 0, s->copies, srtt_mean, srtt_max,
		       cpu_s() - cpu0, vm_kb("VmHWM"), (double)s->stall_max / 1e3, rss0_kb,
		       (double)(vm_kb("VmHWM") - rss0_kb) / s->n_ctl, startup_down, s->peer_down_events, s->restore_bad, s->restored_capped, s->violations, s->violations ? "false" : "true");
	} else {
		printf("%-28s %.1f s; loss %g%%, duplicates %g%%, reordering %g%% (held up to %d ms); "
		       "the loop's longest stall %.0f ms\n",
		       "workload, with faults", s->o.seconds, s->o.loss * 100, s->o.dup * 100,
		       s->o.reorder * 100, FAULT_DELAY_MS, (double)s->stall_max / 1e3);
		printf("%-28s %" PRIu64 " (%" PRIu64 " by owners, %" PRIu64
		       " asked of the owner by a user); %" PRIu64 " pulses; %" PRIu64
		       " skipped (actor down)\n",
		       "  changes", changes, s->owner_sets, s->user_sets, s->pulses, s->skipped);
		printf("%-28s %" PRIu64 " crashes, %" PRIu64 " restarts", "  crashes", s->crashed,
		       s->restarted);
		if (s->crashed)
			printf(", down %.2f-%.2f s", s->down_min_s, s->down_max_s);
		if (s->o.state && s->restored_in_stall)
			printf("; owned values back after restart: %" PRIu64 "/%" PRIu64 " (%" PRIu64
			       " from the commit window before the crash, %" PRIu64
			       " of them from a window the loop's stall stretched, by up to %.0f ms)",
			       s->restored_ok, s->restored_ok + s->restore_bad, s->restored_older,
			       s->restored_in_stall, (double)s->lag_allowed / 1e3);
		else if (s->o.state)
			printf("; owned values back after restart: %" PRIu64 "/%" PRIu64 " (%" PRIu64
			       " from the commit window before the crash)",
			       s->restored_ok, s->restored_ok + s->restore_bad, s->restored_older);
		if (s->restored_capped)
			printf("; %" PRIu64 " restores failed that only a stall beyond the cap of %d ms would excuse",
			       s->restored_capped, STALL_CAP_MS);
		printf("; %" PRIu64 " peer-down events\n", s->peer_down_events);
		if (s->converged)
			printf("%-28s %.1f ms: every node settled, %" PRIu64
			       " copies equal to their owner's value\n",
			       "convergence after faults", converge_ms, s->copies);
		else
			printf("%-28s NOT CONVERGED after %.1f ms\n", "convergence after faults",
			       converge_ms);
		printf("%-28s %.2f datagrams, %.0f bytes per change (%" PRIu64 " datagrams, %" PRIu64
		       " retransmissions, %.1f%%)\n",
		       "cost, workload+convergence", changes ? (double)tot.datagrams / (double)changes : 0,
		       changes ? (double)tot.bytes / (double)changes : 0, tot.datagrams, tot.retransmits,
		       tot.datagrams ? 100.0 * (double)tot.retransmits / (double)tot.datagrams : 0);
		if (s->o.state)
			printf("%-28s %" PRIu64 " asked: %" PRIu64 " acknowledged, %" PRIu64
			       " kept across their requester's crash and acted, %" PRIu64
			       " outcome unknown\n",
			       "pulses", rep.pulses, rep.acked, rep.resumed, rep.unknown);
		else
			printf("%-28s %" PRIu64 " asked: %" PRIu64 " acknowledged, %" PRIu64
			       " outcome unknown (a restart; %" PRIu64 " of them acted)\n",
			       "pulses", rep.pulses, rep.acked, rep.unknown, rep.unknown_acted);
		printf("%-28s owners acted %" PRIu64 " times; users %" PRIu64 " of %" PRIu64 " owed; %" PRIu64
		       " lost to a restart between the act and the relay\n",
		       "", rep.owner_acts, rep.user_acts, rep.user_expected, rep.user_lost);
		printf("%-28s (%" PRIu64 " of them: the user had restarted, the owner did not know yet)\n",
		       "", rep.user_lost_stale);
		printf("%-28s mean %.1f ms, largest %.1f ms (every node shares this process's one loop)\n",
		       "smoothed round trips", srtt_mean, srtt_max);
		printf("%-28s %.1f s CPU, peak RSS %.1f MB (%" PRIu32 " nodes in this process; %.0f KB per node "
		       "above the %.1f MB before the first)\n",
		       "process", cpu_s() - cpu0, (double)vm_kb("VmHWM") / 1024, s->n_ctl,
		       (double)(vm_kb("VmHWM") - rss0_kb) / s->n_ctl, (double)rss0_kb / 1024);
		if (s->violations == 0 && s->o.state)
			printf("\nverified: all %" PRIu64 " copies equal their owner's last value; %" PRIu64
			       " pulses: each acted exactly once at its owner and at each of its users, "
			       "across %" PRIu64 " hard crashes\n",
			       s->copies, rep.pulses, s->crashed);
		else if (s->violations == 0)
			printf("\nverified: all %" PRIu64 " copies equal their owner's last value; %" PRIu64
			       " pulses: none acted twice anywhere, every acknowledged one acted once at its "
			       "owner, "
			       "every user acted unless a restart came between\n",
			       s->copies, rep.pulses);
	}
	if (s->violations) {
		fprintf(stderr,
		        "\nthingsync-sim: FAILED: %" PRIu64
		        " violation(s) (listed above). Reproduce with:\n  ",
		        s->violations);
		print_command(stderr, &s->o);
		fprintf(stderr,
		        "\n  (timing varies between runs; the seed fixes the site, workload, crashes and "
		        "fault streams)\n");
	}
	fflush(stdout);

	for (uint32_t c = 0; c < s->n_ctl; c++)
		tsync_node_free(s->ctl[c].node);
	for (uint32_t t = 0; t < s->n_things; t++)
		if (s->things[t].model.type == TSYNC_TYPE_STRING)
			free((char *)s->things[t].model.u.s);
	event_base_free(s->base);
	sim_ledger_free(s->ledger);
	tsync_site_free(s->site);
	if (!s->o.keep) {
		char cmd[sizeof(s->dir) + 16];
		snprintf(cmd, sizeof(cmd), "rm -rf '%.*s'", (int)sizeof(s->dir), s->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "thingsync-sim: could not remove %s\n", s->dir);
	} else if (!s->o.json) {
		printf("site kept in %s\n", s->dir);
	}
	free(s->ctl);
	free(s->things);
	free(s->pulse_things);
	free(s->user_idx);
	free(s->crashes);
	return s->violations ? 1 : 0;
}
