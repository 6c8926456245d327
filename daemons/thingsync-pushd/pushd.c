/*
 * thingsync-pushd: main. A node of the mesh with the push role; every value
 * it receives for a thing it uses becomes a measurement in its journal.
 *
 * Durability chain (DESIGN.md "Durability"): a received value is staged in
 * the journal by the event callback; the node calls the commit hook once per
 * receive batch, which commits the journal (one fsync) and only then lets the
 * node acknowledge. When the journal is at its size limit the hook says
 * -ENOSPC: the node withholds the acknowledgements and undoes the copies, so
 * the owners keep their newest values in their retry queues until the
 * collector has drained us. Nothing is deleted to make room.
 *
 * Exactly once per value: the journal remembers, per thing, the owner's
 * (boot, version) of the newest value journaled. A value the mesh delivers
 * again - its acknowledgement was lost, we crashed after the commit, or the
 * start-up re-sync asked for it - is recognised and not journaled twice.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "curlev.h"
#include "daemonnode.h"
#include "httpd.h"
#include "pushd.h"
#include "statedir.h"

static const char usage_text[] =
    "usage: thingsync-pushd --site FILE --controller NAME --state-dir DIR [options]\n"
    "\n"
    "A thingsync controller with the push role: journals every value it receives\n"
    "from the mesh (LMDB, acknowledged only once committed) and posts the journal\n"
    "to thingsync-collectord, retrying forever; never skips, never drops.\n"
    "\n"
    "  -s, --site FILE            site.conf (must have a key_file: pushes are signed)\n"
    "  -c, --controller NAME      this controller's name in site.conf\n"
    "  -d, --state-dir DIR        state: DIR/node (the node's LMDB), DIR/journal\n"
    "  -u, --collector URL        where to POST (default: http://HOST:TCP_PORT/v1/push\n"
    "                             of the first controller with the role collector)\n"
    "      --csv FILE             also journal the measurements of a CSV file\n"
    "                             (time,thing,value per line); may be repeated\n"
    "      --exit-when-drained    exit once the CSV files are imported and sent\n"
    "      --batch N              measurements per POST (default 5000)\n"
    "      --inflight N           POSTs in flight at once, 1-16 (default 2); the\n"
    "                             cursor moves only over a settled prefix\n"
    "      --journal-max-entries N  journal limit in measurements (default 5000000)\n"
    "      --journal-max-bytes N  journal limit in bytes (default 1 GiB)\n"
    "      --retry-min-ms N       first backoff after a failed POST (default 200)\n"
    "      --retry-max-ms N       backoff ceiling (default 30000)\n"
    "      --heartbeat-ms N       empty POST when idle this long (default 30000)\n"
    "      --timeout-ms N         one POST's time limit (default 30000)\n"
    "      --cacert FILE          CA bundle for an https collector\n"
    "      --bind HOST            UDP address to bind instead of the controller's host\n"
    "      --http ADDR:PORT       status endpoint (GET /status, /metrics); default the\n"
    "                             controller's tcp_port in site.conf, none if unset\n"
    "  -v, --log-level LEVEL      error, warn, info (default) or debug\n"
    "  -h, --help                 this text\n";

static void log_stderr(void *ud, tsync_log_level level, const char *line)
{
	fprintf(stderr, "%s: %s\n", tsync_log_level_name(level), line);
}

/* --- the mesh side ----------------------------------------------------------------- */

static bool version_newer(uint64_t boot, uint64_t ver, uint64_t last_boot, uint64_t last_ver)
{
	return boot > last_boot || (boot == last_boot && ver > last_ver);
}

static void on_event(void *ud, tsync_node *node, const tsync_event *ev)
{
	struct pushd *pd = ud;
	tsync_thing_state st;
	uint64_t last_boot = 0, last_ver = 0;
	int r;

	if (ev->kind != TSYNC_EVENT_CHANGED || !ev->controller || strcmp(ev->controller, pd->name) == 0)
		return;
	if (tsync_node_get(node, ev->thing, &st) < 0 || st.owned)
		return;
	r = journal__last_version(pd->journal, ev->thing, &last_boot, &last_ver);
	if (r == 0 && !version_newer(st.owner_boot, st.version, last_boot, last_ver)) {
		pd->dedup_skipped++;
		log_debug(&pd->log, "%s version %" PRIu64 " already journaled", ev->thing, st.version);
		return;
	}
	r = journal__stage(pd->journal, (int64_t)util__realtime_us(), ev->thing, &ev->value, st.owner_boot,
	                   st.version, NULL);
	if (r < 0) {
		/* The commit hook will refuse the batch: the owner retries. */
		log_error(&pd->log, "journal: cannot stage %s: %s", ev->thing, tsync_strerror(r));
		pd->stage_failed++;
		return;
	}
	pd->staged_mesh++;
}

static int commit_hook(void *ud, tsync_node *node)
{
	struct pushd *pd = ud;
	struct journal_stats st;
	int r;

	journal__stats(pd->journal, &st);
	if (st.staged == 0 && st.staged_marks == 0 && pd->stage_failed == 0)
		return 0;
	r = pd->stage_failed ? -ENOMEM : journal__commit(pd->journal);
	pd->stage_failed = 0;
	if (r < 0) {
		/* The node undoes the copies and withholds the acks; the events come again. */
		journal__discard(pd->journal);
		if (r == -ENOSPC && !pd->backpressure)
			log_warn(&pd->log,
			         "journal full (%" PRIu64 " measurements, %" PRIu64 " bytes): "
			         "withholding mesh acknowledgements until the collector drains it",
			         st.entries, st.bytes);
		else if (r != -ENOSPC)
			log_error(&pd->log, "journal commit failed: %s", tsync_strerror(r));
		pd->backpressure = r == -ENOSPC;
		return r;
	}
	if (pd->backpressure) {
		log_info(&pd->log, "journal has room again: acknowledging the mesh");
		pd->backpressure = false;
	}
	sender__kick(&pd->sender);
	return 0;
}

/* --- status endpoint ----------------------------------------------------------------- */

static void status_cb(void *arg, struct evhttp_request *req, const char *uri)
{
	struct pushd *pd = arg;
	struct journal_stats st;
	struct evbuffer *out = evbuffer_new();
	const struct sender *s = &pd->sender;

	if (!out) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	journal__stats(pd->journal, &st);
	if (strcmp(uri, "/metrics") == 0) {
		evbuffer_add_printf(out,
		                    "# TYPE thingsync_pushd_journal_entries gauge\n"
		                    "thingsync_pushd_journal_entries %" PRIu64 "\n"
		                    "# TYPE thingsync_pushd_journal_bytes gauge\n"
		                    "thingsync_pushd_journal_bytes %" PRIu64 "\n"
		                    "# TYPE thingsync_pushd_cursor gauge\n"
		                    "thingsync_pushd_cursor %" PRIu64 "\n"
		                    "# TYPE thingsync_pushd_last_seq gauge\n"
		                    "thingsync_pushd_last_seq %" PRIu64 "\n"
		                    "# TYPE thingsync_pushd_backpressure gauge\n"
		                    "thingsync_pushd_backpressure %d\n"
		                    "# TYPE thingsync_pushd_connected gauge\n"
		                    "thingsync_pushd_connected %d\n"
		                    "# TYPE thingsync_pushd_posts_total counter\n"
		                    "thingsync_pushd_posts_total{result=\"ok\"} %" PRIu64 "\n"
		                    "thingsync_pushd_posts_total{result=\"failed\"} %" PRIu64 "\n"
		                    "# TYPE thingsync_pushd_measurements_sent_total counter\n"
		                    "thingsync_pushd_measurements_sent_total %" PRIu64 "\n"
		                    "# TYPE thingsync_pushd_measurements_refused_total counter\n"
		                    "thingsync_pushd_measurements_refused_total %" PRIu64 "\n"
		                    "# TYPE thingsync_pushd_duplicates_skipped_total counter\n"
		                    "thingsync_pushd_duplicates_skipped_total %" PRIu64 "\n",
		                    st.entries, st.bytes, st.cursor, st.last_seq, pd->backpressure ? 1 : 0,
		                    s->disconnected ? 0 : 1, s->posts_ok, s->posts_failed,
		                    s->measurements_sent, s->measurements_refused, pd->dedup_skipped);
		evbuffer_add_printf(out,
		                    "# TYPE thingsync_pushd_recovered_total counter\n"
		                    "thingsync_pushd_recovered_total %" PRIu64 "\n"
		                    "# TYPE thingsync_pushd_cumuls_journaled_total counter\n"
		                    "thingsync_pushd_cumuls_journaled_total %" PRIu64 "\n"
		                    "# TYPE thingsync_pushd_intake_duplicates_total counter\n"
		                    "thingsync_pushd_intake_duplicates_total %" PRIu64 "\n"
		                    "# TYPE thingsync_pushd_intake_refused_total counter\n"
		                    "thingsync_pushd_intake_refused_total %" PRIu64 "\n",
		                    pd->recovered, pd->cumuls_journaled, pd->intake_duplicates,
		                    pd->intake_refused);
		httpd__metrics(pd->status_http, "thingsync_pushd_", out);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
		                  "text/plain; version=0.0.4");
	} else if (strcmp(uri, "/status") == 0) {
		uint64_t csv_imported = 0, csv_refused = 0;
		bool csv_done = true;
		for (size_t i = 0; i < pd->n_csv; i++) {
			csv_imported += pd->csv[i].imported;
			csv_refused += pd->csv[i].refused;
			csv_done &= pd->csv[i].done;
		}
		evbuffer_add_printf(
		    out,
		    "{\"source\":\"%s\",\"journal\":{\"stream\":\"%s\",\"cursor\":%" PRIu64
		    ",\"last_seq\":%" PRIu64 ",\"entries\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"full\":%s},"
		    "\"sender\":{\"connected\":%s,\"stream_refused\":%s,\"in_flight\":%s,\"posts_ok\":"
		    "%" PRIu64 ",\"posts_failed\":%" PRIu64 ",\"sent\":%" PRIu64 ",\"refused\":%" PRIu64
		    ",\"backoff_ms\":%u},\"backpressure\":%s,\"duplicates_skipped\":%" PRIu64
		    ",\"csv\":{\"imported\":%" PRIu64 ",\"refused\":%" PRIu64 ",\"done\":%s},"
		    "\"intake\":{\"recovered\":%" PRIu64 ",\"cumuls\":%" PRIu64 ",\"duplicates\":%" PRIu64
		    ",\"refused\":%" PRIu64 "}}\n",
		    pd->name, journal__stream_id(pd->journal), st.cursor, st.last_seq, st.entries, st.bytes,
		    st.full ? "true" : "false", s->disconnected ? "false" : "true",
		    s->stream_refused ? "true" : "false", s->in_flight ? "true" : "false", s->posts_ok,
		    s->posts_failed, s->measurements_sent, s->measurements_refused, s->backoff_ms,
		    pd->backpressure ? "true" : "false", pd->dedup_skipped, csv_imported, csv_refused,
		    csv_done ? "true" : "false", pd->recovered, pd->cumuls_journaled, pd->intake_duplicates,
		    pd->intake_refused);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	} else {
		evbuffer_free(out);
		evhttp_send_error(req, 404, NULL);
		return;
	}
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

/* The HTTP server's lines go through the daemon's logger (level, prefix). */
static void httpd_log(void *ud, tsync_log_level level, const char *line)
{
	struct pushd *pd = ud;

	log__printf(&pd->log, level, "%s", line);
}

/* Read-only, so served without a signature; the server's limits still hold. */
static const struct httpd_route status_routes[] = {
    {"/status", HTTPD_GET, 0, true, false},
    {"/metrics", HTTPD_GET, 0, true, false},
    {NULL, 0, 0, false, false},
};

static int start_status(struct pushd *pd)
{
	struct httpd_config cfg;
	int r;
	char host[256];
	uint16_t port;

	r = daemonopt__http_addr(&pd->opt.common, pd->site, pd->name, true, &pd->log, host, sizeof(host),
	                         &port);
	if (r <= 0)
		return r;
	memset(&cfg, 0, sizeof(cfg));
	cfg.base = pd->base;
	cfg.host = host;
	cfg.port = port;
	cfg.routes = status_routes;
	cfg.handler = status_cb;
	cfg.arg = pd;
	cfg.site = pd->site;
	cfg.name = pd->name;
	cfg.max_connections = 16;
	cfg.log = httpd_log;
	cfg.log_ud = pd;
	r = httpd__new(&cfg, &pd->status_http);
	if (r < 0) {
		log_error(&pd->log, "cannot listen on %s:%u for the status endpoint: %s", host, port,
		          tsync_strerror(r));
		return r;
	}
	log_info(&pd->log, "status on http://%s:%u/status", host, port);
	return 0;
}

/* --- life cycle ------------------------------------------------------------------------- */

void pushd__check_done(struct pushd *pd)
{
	struct journal_stats st;

	if (!pd->opt.exit_when_drained)
		return;
	for (size_t i = 0; i < pd->n_csv; i++)
		if (!pd->csv[i].done)
			return;
	journal__stats(pd->journal, &st);
	if (st.entries == 0 && !pd->sender.in_flight) {
		log_info(&pd->log, "everything imported and pushed: exiting");
		event_base_loopexit(pd->base, NULL);
	}
}

static int default_collector_url(struct pushd *pd, char *url, size_t len)
{
	size_t n = tsync_site_controller_count(pd->site);

	for (size_t i = 0; i < n; i++) {
		tsync_controller_info ci;
		if (tsync_site_controller(pd->site, i, &ci) < 0)
			continue;
		for (size_t k = 0; k < ci.n_roles; k++) {
			if (strcmp(ci.roles[k], "collector") == 0 && ci.tcp_port) {
				snprintf(url, len, "http://%s:%u/v1/push", ci.host, ci.tcp_port);
				return 0;
			}
		}
	}
	return -ENOENT;
}

static int parse_args(int argc, char **argv, struct pushd_options *o)
{
	enum {
		O_CSV = 256,
		O_EXIT,
		O_BATCH,
		O_INFLIGHT,
		O_MAXE,
		O_MAXB,
		O_RMIN,
		O_RMAX,
		O_HB,
		O_TIMEOUT,
		O_CACERT,
	};
	static const struct option longopts[] = {
	    DAEMONOPT_LONG_SITE,
	    DAEMONOPT_LONG_STATE,
	    {"collector", required_argument, NULL, 'u'},
	    {"csv", required_argument, NULL, O_CSV},
	    {"exit-when-drained", no_argument, NULL, O_EXIT},
	    {"batch", required_argument, NULL, O_BATCH},
	    {"inflight", required_argument, NULL, O_INFLIGHT},
	    {"journal-max-entries", required_argument, NULL, O_MAXE},
	    {"journal-max-bytes", required_argument, NULL, O_MAXB},
	    {"retry-min-ms", required_argument, NULL, O_RMIN},
	    {"retry-max-ms", required_argument, NULL, O_RMAX},
	    {"heartbeat-ms", required_argument, NULL, O_HB},
	    {"timeout-ms", required_argument, NULL, O_TIMEOUT},
	    {"cacert", required_argument, NULL, O_CACERT},
	    DAEMONOPT_LONG_NET,
	    DAEMONOPT_LONG_END,
	};
	uint64_t x;
	int c, r;

	while ((c = getopt_long(argc, argv, DAEMONOPT_SHORT "u:", longopts, NULL)) != -1) {
		switch (c) {
		case 'u':
			o->collector_url = optarg;
			break;
		case O_CSV: {
			const char **p = realloc(o->csv, (o->n_csv + 1) * sizeof(*p));
			if (!p)
				return -ENOMEM;
			o->csv = p;
			o->csv[o->n_csv++] = optarg;
			break;
		}
		case O_EXIT:
			o->exit_when_drained = true;
			break;
		case O_BATCH:
			if (daemonopt__uint(optarg, 1, 100000, &x) < 0)
				goto bad;
			o->batch_max = (size_t)x;
			break;
		case O_INFLIGHT:
			if (daemonopt__uint(optarg, 1, SENDER_MAX_INFLIGHT, &x) < 0)
				goto bad;
			o->inflight = (size_t)x;
			break;
		case O_MAXE:
			if (daemonopt__uint(optarg, 1, UINT64_MAX, &o->journal_max_entries) < 0)
				goto bad;
			break;
		case O_MAXB:
			if (daemonopt__uint(optarg, 4096, UINT64_MAX, &o->journal_max_bytes) < 0)
				goto bad;
			break;
		case O_RMIN:
		case O_RMAX:
		case O_HB:
		case O_TIMEOUT:
			if (daemonopt__uint(optarg, 1, 3600000, &x) < 0)
				goto bad;
			if (c == O_RMIN)
				o->retry_min_ms = (uint32_t)x;
			else if (c == O_RMAX)
				o->retry_max_ms = (uint32_t)x;
			else if (c == O_HB)
				o->heartbeat_ms = (uint32_t)x;
			else
				o->timeout_ms = (uint32_t)x;
			break;
		case O_CACERT:
			o->cacert = optarg;
			break;
		default:
			r = daemonopt__handle(&o->common, c, optarg);
			if (r < 0)
				return r;
		}
	}
	r = daemonopt__finish(&o->common, optind, argc, true);
	if (r < 0)
		return r;
	if (o->retry_min_ms > o->retry_max_ms) {
		fprintf(stderr, "thingsync-pushd: --retry-min-ms is above --retry-max-ms\n");
		return -EINVAL;
	}
	return 0;
bad:
	return daemonopt__bad(&o->common, optarg);
}

/*
 * State that is there but unusable (or was there and is gone) is refused
 * (daemonnode__refuse): starting from empty would make a new stream the
 * collector refuses and a node whose boots repeat.
 */
static int run(struct pushd *pd)
{
	struct pushd_options *o = &pd->opt;
	struct journal_limits lim = {o->journal_max_entries, o->journal_max_bytes};
	char path[4096], url[512];
	int r;

	r = daemonopt__load_site(&o->common, &pd->log, &pd->site);
	if (r < 0)
		return r;
	if (!tsync_site_has_key(pd->site)) {
		log_error(&pd->log,
		          "%s has no key_file: the collector authenticates pushes with the site key",
		          o->common.site_path);
		return TSYNC_EKEY;
	}
	{
		static const char *const envs[] = {"journal", NULL};
		r = daemonnode__start(&o->common, pd->site, &pd->log, envs, &pd->base, &pd->node,
		                      &pd->state_unusable);
		if (r < 0)
			return r;
	}
	pd->name = tsync_node_name(pd->node);

	snprintf(path, sizeof(path), "%s/journal", o->common.state_dir);
	r = journal__open(path, pd->name, &lim, &pd->log, &pd->journal);
	if (r == TSYNC_ESTORE || r == -EINVAL) {
		char why[4400];
		snprintf(why, sizeof(why), "the journal %s cannot be opened (%s)", path,
		         r == -EINVAL ? "it belongs to another source" : "unreadable");
		return daemonnode__refuse(&o->common, &pd->log, why, &pd->state_unusable);
	}
	if (r < 0)
		return r;
	/* Both environments made and committed: from now on, losing one is a disaster, not a first start. */
	r = daemonnode__mark(&o->common, &pd->log, pd->name, "node, journal");
	if (r < 0)
		return r;
	if (!o->collector_url) {
		if (default_collector_url(pd, url, sizeof(url)) < 0) {
			log_error(&pd->log,
			          "no --collector and no controller with the role collector and a tcp_port");
			return -EINVAL;
		}
		o->collector_url = url;
	}
	r = curlev__new(pd->base, &pd->http);
	if (r < 0)
		return r;
	r = sender__init(&pd->sender, pd, o->collector_url);
	if (r < 0)
		return r;
	r = start_status(pd);
	if (r < 0)
		return r;
	r = tsync_node_on_event(pd->node, on_event, pd);
	if (r == 0)
		r = intake__init(pd);
	if (r < 0)
		return r;
	tsync_node_set_commit_hook(pd->node, commit_hook, pd);

	if (o->n_csv) {
		pd->csv = calloc(o->n_csv, sizeof(*pd->csv));
		if (!pd->csv)
			return -ENOMEM;
		for (size_t i = 0; i < o->n_csv; i++) {
			r = csv__start(pd, &pd->csv[i], o->csv[i]);
			if (r < 0)
				return r;
			pd->n_csv++;
		}
		event_active(pd->csv[0].ev, EV_TIMEOUT, 0);
		pd->csv_next = 1;
	}
	r = daemonopt__signals_start(&pd->sig, pd->base, &pd->log);
	if (r < 0)
		return r;

	{
		struct journal_stats st;
		journal__stats(pd->journal, &st);
		log_info(&pd->log,
		         "push role up: boot %" PRIu64 ", udp %u, journal %" PRIu64
		         " waiting (cursor %" PRIu64 "), collector %s",
		         tsync_node_boot(pd->node), tsync_node_port(pd->node), st.entries, st.cursor,
		         o->collector_url);
	}
	event_base_dispatch(pd->base);
	return pd->exit_code;
}

static void cleanup(struct pushd *pd)
{
	/* The node first: freeing it commits its state and may call the hook no more. */
	tsync_node_free(pd->node);
	for (size_t i = 0; i < pd->n_csv; i++)
		csv__free(&pd->csv[i]);
	free(pd->csv);
	if (pd->sender.pd)
		sender__free(&pd->sender);
	curlev__free(pd->http);
	httpd__free(pd->status_http);
	journal__close(pd->journal);
	daemonopt__signals_free(&pd->sig);
	if (pd->base)
		event_base_free(pd->base);
	tsync_site_free(pd->site);
	free(pd->opt.csv);
}

int main(int argc, char **argv)
{
	struct pushd pd;
	int r;

	memset(&pd, 0, sizeof(pd));
	pd.opt.batch_max = 5000;
	pd.opt.inflight = 2;
	pd.opt.retry_min_ms = 200;
	pd.opt.retry_max_ms = 30000;
	pd.opt.heartbeat_ms = 30000;
	pd.opt.timeout_ms = 30000;
	daemonopt__init(&pd.opt.common, "thingsync-pushd", usage_text);
	if (parse_args(argc, argv, &pd.opt) < 0) {
		free(pd.opt.csv);
		return 2;
	}
	pd.log.fn = log_stderr;
	pd.log.level = pd.opt.common.log_level;
	pd.log.prefix = pd.opt.common.controller;
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "thingsync-pushd: curl_global_init failed\n");
		return 1;
	}
	r = run(&pd);
	if (r < 0)
		log_error(&pd.log, "exiting: %s", tsync_strerror(r));
	cleanup(&pd);
	curl_global_cleanup();
	if (pd.state_unusable)
		return STATEDIR_EXIT_UNUSABLE;
	return r < 0 ? 1 : 0;
}
