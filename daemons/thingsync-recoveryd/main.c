/*
 * thingsync-recoveryd: main. A node of the mesh with the recovery role.
 *
 * What counts as an outage (each a cause in the ledger, see ledger.c):
 *  - `connection_status` from any controller (pushd sends "disconnect" when
 *    the collector stops answering, "reconnect" when it answers again);
 *  - the push controller silent on the mesh (TSYNC_EVENT_PEER_DOWN, until
 *    it is heard again): what the owners changed meanwhile reached nobody;
 *  - this daemon down: at start-up an outage is counted from the last alive
 *    time it wrote, until the push controller is heard.
 * When the last cause clears and the outage lasted recovery_threshold or
 * longer, every data store is sent one `recovery_data_request` for [lost,
 * restored], with deliver_to the push controller (contract 1). The ledger
 * record that says so and the requests are staged in the same turn of the
 * loop and committed together (tsync_node_record_put), before the requests
 * leave: a crash cannot ask twice nor forget to ask. The mesh keeps a
 * request to a controller that is down and sends it when it is back.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/event.h>

#include <curl/curl.h>

#include "curlev.h"
#include "daemonnode.h"
#include "httpd.h"
#include "recoveryd.h"
#include "site/site.h"
#include "statedir.h"

#define LEDGER_KEY "recoveryd.ledger"
/* A reported time further from our clock than this is refused (err_cmd_args). */
#define MAX_PAST_US   ((int64_t)366 * 86400 * 1000000)
#define MAX_FUTURE_US ((int64_t)300 * 1000000)

static const char usage_text[] =
    "usage: thingsync-recoveryd --site FILE --controller NAME --state-dir DIR [options]\n"
    "\n"
    "A thingsync controller with the recovery role: keeps the outage ledger (what\n"
    "cut the site off from its collector, since when), publishes internet_lost,\n"
    "and after an outage of recovery_threshold or longer asks every data store for\n"
    "the changes of the window, delivered to the push controller.\n"
    "\n"
    "  -s, --site FILE        site.conf\n"
    "  -c, --controller NAME  this controller's name in site.conf (role recovery)\n"
    "  -d, --state-dir DIR    state: DIR/node (the node's LMDB, the ledger in it)\n"
    "      --thing NAME       the bool thing published (default internet_lost; it\n"
    "                         must be owned by this controller to be published)\n"
    "      --alive-ms N       how often the alive time is written (default 60000)\n"
    "      --probe URL        also GET URL (the collector's /health) every --probe-ms:\n"
    "                         no answer or not 200 is an outage until it answers 200\n"
    "      --probe-ms N       the probe's period (default 30000)\n"
    "      --bind HOST        UDP address to bind instead of the controller's host\n"
    "      --http ADDR:PORT   the HTTP API (/v1/recover, /v1/status, /metrics); default\n"
    "                         the controller's host and tcp_port, none if unset\n"
    "  -v, --log-level LEVEL  error, warn, info (default) or debug\n"
    "  -h, --help             this text\n";

static void log_stderr(void *ud, tsync_log_level level, const char *line)
{
	(void)ud;
	fprintf(stderr, "%s: %s\n", tsync_log_level_name(level), line);
}

static int64_t now_us(void)
{
	return (int64_t)util__realtime_us();
}

/* --- the ledger in the store ----------------------------------------------------------- */

/* Stages the ledger; the node's next commit writes it (with what was staged
 * in this turn: the requests of a recovery, the answer to a request). */
static void ledger_save(struct recoveryd *rd)
{
	json_t *j = ledger__to_json(&rd->ledger);
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	int r = text ? tsync_node_record_put(rd->node, LEDGER_KEY, text) : -ENOMEM;

	if (r < 0)
		log_error(&rd->log, "cannot stage the outage ledger: %s", tsync_strerror(r));
	free(text);
	json_decref(j);
}

static void ledger_commit(struct recoveryd *rd)
{
	int r;

	ledger_save(rd);
	r = tsync_node_commit(rd->node);
	if (r < 0)
		log_error(&rd->log, "cannot commit the outage ledger: %s", tsync_strerror(r));
}

static void publish(struct recoveryd *rd)
{
	tsync_value v = tsync_bool(rd->ledger.lost);
	int r;

	if (!rd->publish)
		return;
	r = tsync_node_set(rd->node, rd->opt.thing, &v);
	if (r < 0)
		log_error(&rd->log, "cannot set %s: %s", rd->opt.thing, tsync_strerror(r));
}

/* --- the fan-out ----------------------------------------------------------------------- */

struct ask {
	struct recoveryd *rd;
	char recovery[32];
	char owner[64];
	int64_t from_us, to_us;
};

static struct ledger_owner *ask_owner(struct ask *a)
{
	struct recovery *r = ledger__recovery_find(&a->rd->ledger, a->recovery);

	for (size_t i = 0; r && i < r->n_owners; i++)
		if (!strcmp(r->owners[i].name, a->owner))
			return &r->owners[i];
	return NULL;
}

static int ask_send(struct ask *a);

static void ask_done(void *ud, tsync_node *node, int status, const char *result)
{
	struct ask *a = ud;
	struct recoveryd *rd = a->rd;
	struct ledger_owner *o;
	json_t *j;

	(void)node;
	if (status == TSYNC_ECANCELED) {
		/* The node is being freed: the request stays in its store and the
		 * next start resumes it. */
		free(a);
		return;
	}
	if (status == TSYNC_EPEER_RESTARTED) {
		/* Only a data store without durable windows says so (a history
		 * needs a state directory, so hardly ever): it may not have acted. */
		log_warn(&rd->log, "recovery %s: %s restarted before answering; asking again", a->recovery,
		         a->owner);
		if (ask_send(a) == 0)
			return;
		status = TSYNC_EPEER_RESTARTED;
	}
	o = ask_owner(a);
	if (status != 0) {
		rd->requests_failed++;
		log_error(&rd->log, "recovery %s: %s refused the recovery_data_request: %s", a->recovery,
		          a->owner, tsync_strerror(status));
		if (o) {
			o->state = OWNER_FAILED;
			snprintf(o->error, sizeof(o->error), "%s", tsync_strerror(status));
		}
	} else if (o) {
		j = result ? json_loads(result, 0, NULL) : NULL;
		o->state = OWNER_ANSWERED;
		o->chunks = (int64_t)json_integer_value(json_object_get(j, "chunks"));
		o->entries = (int64_t)json_integer_value(json_object_get(j, "entries"));
		o->trimmed = json_is_true(json_object_get(j, "trimmed"));
		o->trimmed_from_us = (int64_t)json_integer_value(json_object_get(j, "trimmed_from_us"));
		o->trimmed_to_us = (int64_t)json_integer_value(json_object_get(j, "trimmed_to_us"));
		json_decref(j);
		log_info(&rd->log, "recovery %s: %s sends %" PRId64 " changes in %" PRId64 " chunks to %s%s",
		         a->recovery, a->owner, o->entries, o->chunks, rd->push,
		         o->trimmed ? " (part of the window was trimmed from its history)" : "");
	}
	ledger_save(rd);
	free(a);
}

static int ask_send(struct ask *a)
{
	struct recoveryd *rd = a->rd;
	struct recovery *rec = ledger__recovery_find(&rd->ledger, a->recovery);
	size_t idx = 0;
	char body[512];
	int r;

	for (; rec && idx < rec->n_owners && strcmp(rec->owners[idx].name, a->owner) != 0; idx++)
		;
	/* The request id names the recovery, the data store and this boot;
	 * each data store prefixes it with our name (contract 1:
	 * "request":"RECOVERY/ID"). The boot keeps it unique even if the
	 * ledger was lost and its numbering starts again: pushd recognises a
	 * chunk by it. */
	snprintf(body, sizeof(body),
	         "{\"request_id\":\"%s.%zu.%llu\",\"time\":%.6f,\"lost_connection_time\":%.6f,"
	         "\"restored_connection_time\":%.6f,\"deliver_to\":\"%s\"}",
	         a->recovery, idx + 1, (unsigned long long)tsync_node_boot(rd->node), (double)now_us() / 1e6,
	         (double)a->from_us / 1e6, (double)a->to_us / 1e6, rd->push);
	r = tsync_node_request(rd->node, a->owner, "recovery_data_request", body, ask_done, a);
	if (r < 0) {
		rd->requests_failed++;
		log_error(&rd->log, "recovery %s: cannot ask %s: %s", a->recovery, a->owner,
		          tsync_strerror(r));
		return r;
	}
	rd->requests_sent++;
	return 0;
}

/* Whether controller `c` keeps a history of a thing a push controller uses. */
static bool is_data_store(const struct tsync_site *site, uint32_t c)
{
	if (!site->controllers[c].history)
		return false;
	for (size_t t = 0; t < site->n_things; t++) {
		const struct site_thing *th = &site->things[t];
		if (th->owner != c || th->history_off)
			continue;
		for (size_t u = 0; u < th->n_users; u++)
			if (site__has_role(site, th->users[u], "push"))
				return true;
	}
	return false;
}

/*
 * Asks data store `i` of `rec`. The node commits a request as soon as it is
 * queued, each on its own, so the ledger saying "asked" is staged just
 * before it: the commit that makes the request durable carries it (nothing
 * commits between the two calls). A crash before leaves it "pending", and
 * the next start asks it; after, the node's store resumes the request.
 */
static void ask_owner_now(struct recoveryd *rd, struct recovery *rec, size_t i)
{
	struct ask *a = calloc(1, sizeof(*a));

	rec->owners[i].state = OWNER_ASKED;
	if (a) {
		a->rd = rd;
		snprintf(a->recovery, sizeof(a->recovery), "%s", rec->id);
		snprintf(a->owner, sizeof(a->owner), "%s", rec->owners[i].name);
		a->from_us = rec->from_us;
		a->to_us = rec->to_us;
		ledger_save(rd);
	}
	if (!a || ask_send(a) < 0) {
		rec->owners[i].state = OWNER_FAILED;
		snprintf(rec->owners[i].error, sizeof(rec->owners[i].error), "not sent");
		free(a);
		ledger_save(rd);
	}
}

void recoveryd__ask_pending(struct recoveryd *rd)
{
	for (size_t r = 0; r < rd->ledger.n_recoveries; r++) {
		struct recovery *rec = &rd->ledger.recoveries_kept[r];
		for (size_t i = 0; i < rec->n_owners; i++) {
			if (rec->owners[i].state != OWNER_PENDING)
				continue;
			log_info(&rd->log, "recovery %s: asking %s (not asked before the last stop)", rec->id,
			         rec->owners[i].name);
			ask_owner_now(rd, rec, i);
		}
	}
}

struct recovery *recoveryd__recover(struct recoveryd *rd, int64_t from_us, int64_t to_us, const char *reason,
                                    int *err)
{
	const struct tsync_site *site = rd->site;
	struct recovery *rec = NULL;

	*err = -ENOENT;
	if (!rd->push)
		return NULL;
	for (uint32_t c = 0; c < site->n_controllers; c++) {
		if (!is_data_store(site, c) || !strcmp(site->controllers[c].name, rd->name))
			continue;
		if (!rec)
			rec = ledger__recovery_new(&rd->ledger, from_us, to_us, reason, now_us());
		if (rec->n_owners == LEDGER_MAX_OWNERS) {
			log_error(&rd->log, "recovery %s: more than %d data stores; %s is not asked", rec->id,
			          LEDGER_MAX_OWNERS, site->controllers[c].name);
			continue;
		}
		snprintf(rec->owners[rec->n_owners].name, sizeof(rec->owners[0].name), "%s",
		         site->controllers[c].name);
		rec->owners[rec->n_owners++].state = OWNER_PENDING;
	}
	if (!rec)
		return NULL;
	log_info(&rd->log,
	         "recovery %s (%s): asking %zu data stores for %.3f .. %.3f (%.0f s), delivered to %s",
	         rec->id, reason, rec->n_owners, (double)from_us / 1e6, (double)to_us / 1e6,
	         (double)(to_us - from_us) / 1e6, rd->push);
	/* The recovery with every data store pending, durable with whatever
	 * the node commits first; then each asked in turn. */
	ledger_save(rd);
	for (size_t i = 0; i < rec->n_owners; i++)
		ask_owner_now(rd, rec, i);
	ledger_commit(rd);
	*err = 0;
	return rec;
}

/* --- causes ---------------------------------------------------------------------------- */

static void cause_set(struct recoveryd *rd, const char *cause, int64_t at_us)
{
	bool opens = ledger__cause_set(&rd->ledger, cause, at_us);

	if (opens) {
		log_warn(&rd->log, "outage: %s since %.3f", cause, (double)at_us / 1e6);
		publish(rd);
	} else {
		log_info(&rd->log, "outage (since %.3f): also %s", (double)rd->ledger.lost_us / 1e6, cause);
	}
	ledger_save(rd);
}

static void cause_clear(struct recoveryd *rd, const char *cause, int64_t at_us)
{
	int64_t lost_us = 0;
	int err;

	if (!ledger__cause_clear(&rd->ledger, cause, at_us, &lost_us)) {
		if (rd->ledger.lost)
			log_info(&rd->log, "%s cleared; the outage goes on (%zu causes)", cause,
			         rd->ledger.n_causes);
		ledger_save(rd);
		return;
	}
	publish(rd);
	if (at_us < lost_us)
		at_us = lost_us;
	if ((uint64_t)(at_us - lost_us) < rd->threshold_ms * 1000) {
		rd->ledger.outages_short++;
		log_info(&rd->log,
		         "outage over (%s): %.3f .. %.3f, %.1f s, under recovery_threshold (%" PRIu64
		         " s): nothing to recover",
		         cause, (double)lost_us / 1e6, (double)at_us / 1e6, (double)(at_us - lost_us) / 1e6,
		         rd->threshold_ms / 1000);
		ledger_save(rd);
		return;
	}
	log_warn(&rd->log, "outage over (%s): %.3f .. %.3f, %.1f s", cause, (double)lost_us / 1e6,
	         (double)at_us / 1e6, (double)(at_us - lost_us) / 1e6);
	if (!recoveryd__recover(rd, lost_us, at_us, "outage", &err)) {
		log_warn(&rd->log, "no data store to ask (%s)",
		         !rd->push ? "no controller with the role push"
		                   : "none keeps a history of what it uses");
		ledger_save(rd);
	}
}

/* {"connection_status":"disconnect"|"reconnect","time":SEC,"id":WHO} */
static int on_connection_status(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct recoveryd *rd = ud;
	json_t *j = json_loads(req->json, 0, NULL), *tj;
	const char *what = json_string_value(json_object_get(j, "connection_status"));
	int64_t now = now_us(), at = now;
	char cause[LEDGER_CAUSE_LEN];

	(void)node;
	(void)result;
	tj = json_object_get(j, "time");
	if (json_is_number(tj)) {
		double t = json_number_value(tj) * 1e6;
		if (!isfinite(t) || t < (double)(now - MAX_PAST_US) || t > (double)(now + MAX_FUTURE_US)) {
			json_decref(j);
			return TSYNC_ECMD_ARGS;
		}
		at = (int64_t)t;
	} else if (tj) {
		json_decref(j);
		return TSYNC_ECMD_ARGS;
	}
	if (!what || (strcmp(what, "disconnect") != 0 && strcmp(what, "reconnect") != 0)) {
		json_decref(j);
		return TSYNC_ECMD_ARGS;
	}
	rd->statuses_received++;
	snprintf(cause, sizeof(cause), "connection_status:%s", req->from);
	if (!strcmp(what, "disconnect"))
		cause_set(rd, cause, at);
	else
		cause_clear(rd, cause, at);
	json_decref(j);
	/* Answered after the node's commit: the ledger is durable first. */
	return 0;
}

static void on_event(void *ud, tsync_node *node, const tsync_event *ev)
{
	struct recoveryd *rd = ud;
	char cause[LEDGER_CAUSE_LEN];
	int64_t now = now_us();

	if (!rd->push || !ev->controller || strcmp(ev->controller, rd->push) != 0)
		return;
	snprintf(cause, sizeof(cause), "mesh:%s", rd->push);
	if (ev->kind == TSYNC_EVENT_PEER_DOWN) {
		/* Gone since it was last heard: what changed after that reached no one. */
		int64_t at = now;
		for (size_t i = 0; i < tsync_node_peer_count(node); i++) {
			tsync_peer_stats ps;
			if (tsync_node_peer_stats(node, i, &ps) == 0 && !strcmp(ps.name, rd->push) &&
			    ps.last_heard_ms >= 0)
				at = now - ps.last_heard_ms * 1000;
		}
		cause_set(rd, cause, at);
	} else if (ev->kind == TSYNC_EVENT_PEER_UP) {
		uint64_t boot = 0;
		char cs[LEDGER_CAUSE_LEN];

		for (size_t i = 0; i < tsync_node_peer_count(node); i++) {
			tsync_peer_stats ps;
			if (tsync_node_peer_stats(node, i, &ps) == 0 && !strcmp(ps.name, rd->push))
				boot = ps.boot;
		}
		/* A push controller that restarted forgot what it reported: its new
		 * life says "disconnect" again if the collector is still away. */
		snprintf(cs, sizeof(cs), "connection_status:%s", rd->push);
		if (boot != rd->push_boot && rd->push_boot != 0 && ledger__cause_has(&rd->ledger, cs))
			cause_clear(rd, cs, now);
		rd->push_boot = boot;
		if (ledger__cause_has(&rd->ledger, "recoveryd"))
			cause_clear(rd, "recoveryd", now);
		if (ledger__cause_has(&rd->ledger, cause))
			cause_clear(rd, cause, now);
	}
}

/* --- the probe ------------------------------------------------------------------------ */

static void probe_done(void *ud, int status, const char *error, const char *body, size_t len)
{
	struct recoveryd *rd = ud;

	(void)body;
	(void)len;
	rd->probe_in_flight = false;
	if (status == 200) {
		rd->probes_ok++;
		if (ledger__cause_has(&rd->ledger, "probe"))
			cause_clear(rd, "probe", now_us());
		return;
	}
	rd->probes_failed++;
	if (!ledger__cause_has(&rd->ledger, "probe")) {
		if (error)
			log_warn(&rd->log, "probe %s: %s", rd->opt.probe_url, error);
		else
			log_warn(&rd->log, "probe %s: HTTP %d", rd->opt.probe_url, status);
		/* Unreachable since the probe that found it so was sent. */
		cause_set(rd, "probe", rd->probe_sent_us);
	}
}

static void probe_cb(evutil_socket_t fd, short what, void *arg)
{
	struct recoveryd *rd = arg;
	int r;

	(void)fd;
	(void)what;
	if (rd->probe_in_flight)
		return;
	rd->probe_sent_us = now_us();
	r = curlev__get(rd->client, rd->opt.probe_url, NULL, (long)rd->opt.probe_ms, NULL, probe_done, rd);
	if (r < 0)
		log_error(&rd->log, "probe %s: %s", rd->opt.probe_url, tsync_strerror(r));
	else
		rd->probe_in_flight = true;
}

/*
 * What a message does here (a cause set or cleared, the requests of a
 * recovery) is staged in the node's store and committed with the answer.
 * The commit hook says so to the node: with one, a crash between taking a
 * message and that commit answers the sender's retry "outcome unknown"
 * (TSYNC_EPEER_RESTARTED) rather than "done", and the sender sends it
 * again (a status reported twice changes nothing). Without one, the retry
 * would be answered done and the reconnect lost, the outage left open.
 */
static int commit_hook(void *ud, tsync_node *node)
{
	(void)ud;
	(void)node;
	return 0;
}

/* --- life cycle ------------------------------------------------------------------------- */

static void alive_cb(evutil_socket_t fd, short what, void *arg)
{
	struct recoveryd *rd = arg;

	(void)fd;
	(void)what;
	rd->ledger.alive_us = now_us();
	ledger_commit(rd);
}

static int parse_args(int argc, char **argv, struct recoveryd_options *o)
{
	enum { O_THING = 256, O_ALIVE, O_PROBE, O_PROBE_MS };
	static const struct option longopts[] = {
	    DAEMONOPT_LONG_SITE,
	    DAEMONOPT_LONG_STATE,
	    {"thing", required_argument, NULL, O_THING},
	    {"alive-ms", required_argument, NULL, O_ALIVE},
	    {"probe", required_argument, NULL, O_PROBE},
	    {"probe-ms", required_argument, NULL, O_PROBE_MS},
	    DAEMONOPT_LONG_NET,
	    DAEMONOPT_LONG_END,
	};
	uint64_t x;
	int c, r;

	while ((c = getopt_long(argc, argv, DAEMONOPT_SHORT, longopts, NULL)) != -1) {
		switch (c) {
		case O_THING:
			o->thing = optarg;
			break;
		case O_ALIVE:
		case O_PROBE_MS:
			if (daemonopt__uint(optarg, 100, 3600000, &x) < 0)
				return daemonopt__bad(&o->common, optarg);
			if (c == O_ALIVE)
				o->alive_ms = (uint32_t)x;
			else
				o->probe_ms = (uint32_t)x;
			break;
		case O_PROBE:
			if (strncmp(optarg, "http://", 7) != 0 && strncmp(optarg, "https://", 8) != 0)
				return daemonopt__bad(&o->common, optarg);
			o->probe_url = optarg;
			break;
		default:
			r = daemonopt__handle(&o->common, c, optarg);
			if (r < 0)
				return r;
		}
	}
	return daemonopt__finish(&o->common, optind, argc, true);
}

/* The ledger as the last run left it; a start after being down is a cause. */
static int ledger_load(struct recoveryd *rd)
{
	char *text = NULL;
	int r = tsync_node_record_get(rd->node, LEDGER_KEY, &text);

	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	r = ledger__from_json(&rd->ledger, text);
	free(text);
	if (r < 0) {
		log_error(&rd->log, "the outage ledger in %s cannot be read", rd->opt.common.state_dir);
		return TSYNC_ESTORE;
	}
	if (rd->ledger.lost)
		log_warn(&rd->log, "outage open since %.3f (%zu causes)", (double)rd->ledger.lost_us / 1e6,
		         rd->ledger.n_causes);
	/* Down since it was last alive: nobody watched meanwhile. An open
	 * outage began while it was alive, so its loss time stays. */
	if (rd->ledger.alive_us > 0)
		cause_set(rd, "recoveryd",
		          rd->ledger.lost && rd->ledger.lost_us > rd->ledger.alive_us ? rd->ledger.lost_us
		                                                                      : rd->ledger.alive_us);
	return 0;
}

static int run(struct recoveryd *rd)
{
	struct recoveryd_options *o = &rd->opt;
	int r, me, t;

	r = daemonopt__load_site(&o->common, &rd->log, &rd->site);
	if (r < 0)
		return r;
	me = tsync_site_controller_find(rd->site, o->common.controller);
	if (me < 0) {
		log_error(&rd->log, "%s: no controller '%s'", o->common.site_path, o->common.controller);
		return me;
	}
	if (!site__has_role(rd->site, (uint32_t)me, "recovery")) {
		log_error(&rd->log, "%s: controller '%s' has no role 'recovery' (line %d)",
		          o->common.site_path, o->common.controller, rd->site->controllers[me].line);
		return -EINVAL;
	}
	rd->threshold_ms = rd->site->controllers[me].recovery_threshold_ms;
	for (uint32_t c = 0; c < rd->site->n_controllers && !rd->push; c++)
		if (c != (uint32_t)me && site__has_role(rd->site, c, "push"))
			rd->push = rd->site->controllers[c].name;
	t = tsync_site_thing_find(rd->site, o->thing);
	rd->publish = t >= 0 && rd->site->things[t].owner == (uint32_t)me &&
	              rd->site->things[t].type == TSYNC_TYPE_BOOL;
	r = daemonnode__start(&o->common, rd->site, &rd->log, NULL, &rd->base, &rd->node, &rd->state_unusable);
	if (r < 0)
		return r;
	rd->name = tsync_node_name(rd->node);
	r = daemonnode__mark(&o->common, &rd->log, rd->name, "node");
	if (r < 0)
		return r;
	tsync_node_set_commit_hook(rd->node, commit_hook, rd);
	r = tsync_node_on_request(rd->node, "connection_status", on_connection_status, rd);
	if (r == 0)
		r = tsync_node_on_event(rd->node, on_event, rd);
	if (r < 0)
		return r;
	r = ledger_load(rd);
	if (r < 0)
		return r;
	/* Nothing to wait for: this restart is the only cause, and it is over. */
	if (!rd->push && ledger__cause_has(&rd->ledger, "recoveryd"))
		cause_clear(rd, "recoveryd", now_us());
	rd->ledger.alive_us = now_us();
	ledger_commit(rd);
	recoveryd__ask_pending(rd);
	publish(rd);
	r = http__start(rd);
	if (r < 0)
		return r;
	rd->alive_ev = event_new(rd->base, -1, EV_PERSIST, alive_cb, rd);
	if (!rd->alive_ev || daemonopt__signals_start(&rd->sig, rd->base, &rd->log) < 0)
		return -ENOMEM;
	{
		struct timeval tv = {o->alive_ms / 1000, (o->alive_ms % 1000) * 1000};
		evtimer_add(rd->alive_ev, &tv);
	}
	if (o->probe_url) {
		struct timeval tv = {o->probe_ms / 1000, (o->probe_ms % 1000) * 1000};
		r = curlev__new(rd->base, &rd->client);
		if (r < 0)
			return r;
		rd->probe_ev = event_new(rd->base, -1, EV_PERSIST, probe_cb, rd);
		if (!rd->probe_ev)
			return -ENOMEM;
		evtimer_add(rd->probe_ev, &tv);
		event_active(rd->probe_ev, EV_TIMEOUT, 0);
	}
	if (!rd->publish)
		log_warn(&rd->log,
		         "%s is not a bool thing owned by %s in %s: the outage state is not published",
		         o->thing, rd->name, o->common.site_path);
	if (!rd->push)
		log_warn(&rd->log,
		         "no controller with the role push: outages are kept, nothing is recovered");
	log_info(&rd->log,
	         "recovery role up: boot %" PRIu64 ", udp %u, recovery_threshold %" PRIu64 " s, push %s, %s",
	         tsync_node_boot(rd->node), tsync_node_port(rd->node), rd->threshold_ms / 1000,
	         rd->push ? rd->push : "(none)", rd->ledger.lost ? "outage open" : "connected");
	event_base_dispatch(rd->base);
	/* A clean stop is alive until now: a restart counts its downtime from here. */
	rd->ledger.alive_us = now_us();
	ledger_commit(rd);
	return 0;
}

static void cleanup(struct recoveryd *rd)
{
	httpd__free(rd->http);
	curlev__free(rd->client);
	tsync_node_free(rd->node);
	if (rd->probe_ev)
		event_free(rd->probe_ev);
	if (rd->alive_ev)
		event_free(rd->alive_ev);
	daemonopt__signals_free(&rd->sig);
	if (rd->base)
		event_base_free(rd->base);
	tsync_site_free(rd->site);
}

int main(int argc, char **argv)
{
	struct recoveryd rd;
	int r;

	memset(&rd, 0, sizeof(rd));
	rd.opt.thing = "internet_lost";
	rd.opt.alive_ms = 60000;
	rd.opt.probe_ms = 30000;
	daemonopt__init(&rd.opt.common, "thingsync-recoveryd", usage_text);
	if (parse_args(argc, argv, &rd.opt) < 0)
		return 2;
	rd.log.fn = log_stderr;
	rd.log.level = rd.opt.common.log_level;
	rd.log.prefix = rd.opt.common.controller;
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "thingsync-recoveryd: curl_global_init failed\n");
		return 1;
	}
	r = run(&rd);
	if (r < 0)
		log_error(&rd.log, "exiting: %s", tsync_strerror(r));
	cleanup(&rd);
	curl_global_cleanup();
	if (rd.state_unusable)
		return STATEDIR_EXIT_UNUSABLE;
	return r < 0 ? 1 : 0;
}
