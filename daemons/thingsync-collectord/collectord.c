/*
 * thingsync-collectord: main. Arguments, the HTTP server, the storage
 * backend, and a tick that watches what no request reports: sources that went
 * silent, a database that came back, alarms the database has not seen yet.
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/http.h>

#include "curlev.h"
#include "collector.h"
#include "storeq.h"
#include "web.h"

#define TICK_MS 250

static const char usage_text[] =
    "usage: thingsync-collectord --site FILE [options]\n"
    "\n"
    "The server side of the push role: stores what thingsync-pushd posts (signed\n"
    "with the site key), validates every field against site.conf, answers only\n"
    "after the database commit, raises and clears alarms, serves a read API\n"
    "and, at /, pages for a browser (sources, alarms, measurements).\n"
    "\n"
    "  -s, --site FILE          site.conf (with key_file); sources are the\n"
    "                           controllers with the role push\n"
    "  -c, --controller NAME    listen on this controller's host:tcp_port (default:\n"
    "                           the first controller with the role collector)\n"
    "  -l, --listen ADDR:PORT   listen here instead (port 0: any free port)\n"
    "      --port-file FILE     write the port listened on to FILE\n"
    "  -D, --db SPEC            sqlite:PATH (default sqlite:/var/lib/thingsync/collector.db)\n"
    "                           or postgres:CONNINFO (e.g. postgres:host=db dbname=thingsync)\n"
    "      --silent-after SEC   source_silent alarm after SEC without a push (default 300)\n"
    "      --source-period NAME=SEC  the same for one source; may be repeated\n"
    "      --webhook URL        also POST every alarm raised or cleared to URL\n"
    "      --cacert FILE        CA bundle for an https webhook\n"
    "      --max-batch N        measurements per push (default 10000)\n"
    "      --max-body BYTES     bytes per request (default 16 MiB)\n"
    "      --pull-scan SEC      look for gaps in the sources' streams this often and\n"
    "                           pull them from the recovery controller (default 60;\n"
    "                           0: only POST /v1/pull)\n"
    "      --pull-retry-min-ms N, --pull-retry-max-ms N  backoff of a pull recoveryd did\n"
    "                           not take (default 1000 and 60000)\n"
    "      --fault-injection    enable POST /v1/faults (tests only; never in production)\n"
    "  -v, --log-level LEVEL    error, warn, info (default) or debug\n"
    "  -h, --help               this text\n";

static void log_stderr(void *ud, tsync_log_level level, const char *line)
{
	fprintf(stderr, "%s: %s\n", tsync_log_level_name(level), line);
}

void collector__db_down(struct collector *c, const char *why)
{
	alarms__raise(&c->alarms, ALARM_DB_UNAVAILABLE, "", "%s (%s)", why, c->db->ops->name);
}

void collector__db_ok(struct collector *c)
{
	if (alarms__is_active(&c->alarms, ALARM_DB_UNAVAILABLE, ""))
		alarms__clear(&c->alarms, ALARM_DB_UNAVAILABLE, "", "the database takes writes again");
}

/* A request that passed the common rules (httpd: method, signature, limits). */
static void route(void *arg, struct evhttp_request *req, const char *path)
{
	struct collector *c = arg;

	c->http_requests++;
	if (!strcmp(path, "/v1/push")) {
		ingest__push(c, req);
	} else if (!strcmp(path, "/v1/faults")) {
		api__faults(c, req);
	} else if (!strcmp(path, "/v1/sources")) {
		api__sources(c, req);
	} else if (!strcmp(path, "/v1/measurements")) {
		api__measurements(c, req);
	} else if (!strcmp(path, "/v1/rejected")) {
		api__rejected(c, req);
	} else if (!strcmp(path, "/v1/streams")) {
		api__streams(c, req);
	} else if (!strcmp(path, "/v1/owned")) {
		api__owned(c, req);
	} else if (!strcmp(path, "/v1/streams/accept")) {
		api__accept_stream(c, req);
	} else if (!strcmp(path, "/v1/pull")) {
		pull__post(c, req);
	} else if (!strcmp(path, "/v1/pulls")) {
		pull__list(c, req);
	} else if (!strcmp(path, "/v1/cumuls")) {
		api__cumuls(c, req);
	} else if (!strcmp(path, "/v1/recovery_gaps")) {
		api__recovery_gaps(c, req);
	} else if (!strcmp(path, "/v1/alarms")) {
		api__alarms(c, req);
	} else if (!strcmp(path, "/v1/alarms/ack")) {
		api__alarm_ack(c, req);
	} else if (!strcmp(path, "/metrics")) {
		api__metrics(c, req);
	} else if (!strcmp(path, "/health")) {
		api__health(c, req);
	} else if (!strcmp(path, "/v1/things")) {
		web__things(c, req);
	} else if (web__serve(c, req, path)) {
		/* the pages */
	} else {
		httpd__reply_json(req, 404, json_pack("{s:s}", "error", "not found"));
	}
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct collector *c = arg;
	int64_t now = (int64_t)util__realtime_us();
	bool injected = c->opt.fault_injection && c->faults.db_refuse;

	/*
	 * The database: probed every second even when nobody pushes, so that
	 * an outage raises its alarm at once; while down, every tick tries to
	 * reconnect. The alarm stays until a probe (or a push) shows it takes
	 * writes again.
	 */
	c->ticks++;
	if (!injected && (alarms__is_active(&c->alarms, ALARM_DB_UNAVAILABLE, "") || !c->db->ops->up(c->db) ||
	                  c->ticks % (1000 / TICK_MS) == 0)) {
		if (c->db->ops->reconnect(c->db) == 0)
			collector__db_ok(c);
		else
			collector__db_down(c, "the database is unavailable");
	}
	if (c->db->ops->up(c->db)) {
		/* A database that was down at start: its alarms now, before ours are written. */
		alarms__load(&c->alarms);
		alarms__flush(&c->alarms);
	}

	for (size_t i = 0; i < c->n_sources; i++) {
		struct source *s = &c->sources[i];
		int64_t last = s->last_seen_us > c->started_us ? s->last_seen_us : c->started_us;
		int64_t silent = now - last;

		if (silent > (int64_t)s->period_s * 1000000 &&
		    !alarms__is_active(&c->alarms, ALARM_SOURCE_SILENT, s->name))
			alarms__raise(&c->alarms, ALARM_SOURCE_SILENT, s->name,
			              "no push from %s for %.1f s (period %u s)%s", s->name,
			              (double)silent / 1e6, s->period_s,
			              s->last_seen_us ? "" : "; never seen since the collector started");
	}
	pull__tick(c);
	if (alarms__is_active(&c->alarms, ALARM_INVALID_PUSH, "unknown") &&
	    now - c->unknown_refused_us > (int64_t)c->opt.silent_after_s * 1000000)
		alarms__clear(&c->alarms, ALARM_INVALID_PUSH, "unknown",
		              "no unauthenticated push for a period");
}

static int write_port_file(const char *path, uint16_t port)
{
	char tmp[4096];
	FILE *f;
	int fd;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	fprintf(f, "%u\n", port);
	if (fclose(f) != 0)
		return -EIO;
	/* Atomically: a reader sees no file or the whole port. */
	return rename(tmp, path) == 0 ? 0 : -errno;
}

/* The HTTP server's lines go through the daemon's logger. */
static void httpd_log(void *ud, tsync_log_level level, const char *line)
{
	struct collector *c = ud;

	log__printf(&c->log, level, "%s", line);
}

/* A push refused for its signature is an invalid push: the alarm says so. */
static void refused_cb(void *arg, const char *path, int status, const char *error)
{
	struct collector *c = arg;

	if (strcmp(path, "/v1/push") != 0 || status != 401)
		return;
	c->unknown_refused_us = (int64_t)util__realtime_us();
	c->pushes[PUSH_UNAUTHORIZED]++;
	alarms__raise(&c->alarms, ALARM_INVALID_PUSH, "unknown", "push refused: %s", error);
}

static int start_http(struct collector *c)
{
	char host[256];
	uint16_t port = 0;
	struct httpd_config cfg;
	struct httpd_route *rt = c->routes;
	int r;

	if (c->opt.listen) {
		if (httpd__split_listen(c->opt.listen, host, sizeof(host), &port) < 0) {
			log_error(&c->log, "--listen %s: want ADDR:PORT", c->opt.listen);
			return -EINVAL;
		}
	} else {
		size_t n = tsync_site_controller_count(c->site);
		bool found = false;
		for (size_t i = 0; i < n && !found; i++) {
			tsync_controller_info ci;
			if (tsync_site_controller(c->site, i, &ci) < 0 || !ci.tcp_port)
				continue;
			if (c->opt.common.controller) {
				found = strcmp(ci.name, c->opt.common.controller) == 0;
			} else {
				for (size_t k = 0; k < ci.n_roles; k++)
					found |= strcmp(ci.roles[k], "collector") == 0;
			}
			if (found) {
				snprintf(host, sizeof(host), "%s", ci.host);
				port = ci.tcp_port;
			}
		}
		if (!found) {
			log_error(&c->log, "no --listen, and no controller %s with a tcp_port in %s",
			          c->opt.common.controller ? c->opt.common.controller
			                                   : "with the role collector",
			          c->opt.common.site_path);
			return -EINVAL;
		}
	}
	/* A push is always signed; the read API off loopback; the fault
	 * switches are POSTs like any other (signed off loopback). What
	 * thingsync-dr reads and the operator's accept of a new stream are
	 * signed even on loopback: they decide what is stored. */
	rt[0] = (struct httpd_route){"/v1/push", HTTPD_POST, c->opt.max_body, false, true};
	rt[1] = (struct httpd_route){"/v1/faults", HTTPD_POST, 0, false, false};
	rt[2] = (struct httpd_route){"/v1/sources", HTTPD_GET, 0, false, false};
	rt[3] = (struct httpd_route){"/v1/measurements", HTTPD_GET, 0, false, false};
	rt[4] = (struct httpd_route){"/v1/rejected", HTTPD_GET, 0, false, false};
	rt[5] = (struct httpd_route){"/v1/alarms", HTTPD_GET, 0, false, false};
	rt[6] = (struct httpd_route){"/metrics", HTTPD_GET, 0, true, false};
	rt[7] = (struct httpd_route){"/health", HTTPD_GET, 0, true, false};
	rt[8] = (struct httpd_route){"/v1/streams", HTTPD_GET, 0, false, true};
	rt[9] = (struct httpd_route){"/v1/streams/accept", HTTPD_POST, 4096, false, true};
	rt[10] = (struct httpd_route){"/v1/owned", HTTPD_GET, 0, false, true};
	rt[11] = (struct httpd_route){"/v1/cumuls", HTTPD_GET, 0, false, false};
	rt[12] = (struct httpd_route){"/v1/recovery_gaps", HTTPD_GET, 0, false, false};
	/* A pull makes recoveryd ask every owner: signed, like every change. */
	rt[13] = (struct httpd_route){"/v1/pull", HTTPD_POST, 4096, false, true};
	rt[14] = (struct httpd_route){"/v1/pulls", HTTPD_GET, 0, false, false};
	/* The pages: static files, open; their data comes from the read API. */
	rt[15] = (struct httpd_route){"/", HTTPD_GET, 0, true, false};
	rt[16] = (struct httpd_route){"/ui/*", HTTPD_GET, 0, true, false};
	rt[17] = (struct httpd_route){"/v1/things", HTTPD_GET, 0, false, false};
	/* An operator's acknowledgement clears an alarm: signed, a change. */
	rt[18] = (struct httpd_route){"/v1/alarms/ack", HTTPD_POST, 4096, false, true};
	rt[19] = (struct httpd_route){NULL, 0, 0, false, false};
	memset(&cfg, 0, sizeof(cfg));
	cfg.base = c->base;
	cfg.host = host;
	cfg.port = port;
	cfg.routes = c->routes;
	cfg.handler = route;
	cfg.refused = refused_cb;
	cfg.arg = c;
	cfg.site = c->site;
	cfg.name = HTTPD_COLLECTOR_NAME;
	cfg.require_signature = !httpd__is_loopback(host);
	cfg.max_connections = c->opt.max_connections;
	cfg.log = httpd_log;
	cfg.log_ud = c;
	r = httpd__new(&cfg, &c->http);
	if (r < 0) {
		log_error(&c->log, "cannot listen on %s:%u: %s", host, port, tsync_strerror(r));
		return r;
	}
	port = httpd__port(c->http);
	log_info(&c->log, "listening on http://%s:%u (POST /v1/push)", host, port);
	if (c->opt.port_file) {
		r = write_port_file(c->opt.port_file, port);
		if (r < 0) {
			log_error(&c->log, "%s: %s", c->opt.port_file, strerror(-r));
			return r;
		}
	}
	return 0;
}

static int setup_sources(struct collector *c)
{
	size_t n = tsync_site_controller_count(c->site);

	c->sources = calloc(n ? n : 1, sizeof(*c->sources));
	if (!c->sources)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		tsync_controller_info ci;
		bool push = false;
		if (tsync_site_controller(c->site, i, &ci) < 0)
			continue;
		for (size_t k = 0; k < ci.n_roles; k++)
			push |= strcmp(ci.roles[k], "push") == 0;
		if (!push)
			continue;
		c->sources[c->n_sources].name = ci.name;
		c->sources[c->n_sources].period_s = c->opt.silent_after_s;
		c->n_sources++;
	}
	for (size_t i = 0; i < c->opt.n_periods; i++) {
		const char *spec = c->opt.periods[i];
		const char *eq = strchr(spec, '=');
		char name[64], *end;
		unsigned long sec;
		struct source *s;

		if (!eq || (size_t)(eq - spec) >= sizeof(name))
			goto bad;
		memcpy(name, spec, (size_t)(eq - spec));
		name[eq - spec] = '\0';
		sec = strtoul(eq + 1, &end, 10);
		if (*end || eq[1] == '\0' || sec < 1 || sec > 86400 * 365)
			goto bad;
		s = collector__source(c, name);
		if (!s) {
			log_error(&c->log, "--source-period %s: %s is not a controller with the role push",
			          spec, name);
			return -EINVAL;
		}
		s->period_s = (uint32_t)sec;
		continue;
	bad:
		log_error(&c->log, "--source-period %s: want NAME=SECONDS", spec);
		return -EINVAL;
	}
	if (c->n_sources == 0)
		log_warn(&c->log, "no controller of %s has the role push: every push will be refused",
		         c->opt.common.site_path);
	return 0;
}

static int open_db(struct collector *c)
{
	const char *spec = c->opt.db_spec;
	const struct db_ops *ops = &db_sqlite_ops;
	const char *arg = spec;
	int r;

	bool uri = !strncmp(spec, "postgresql://", 13) || !strncmp(spec, "postgres://", 11);

	if (!strncmp(spec, "sqlite:", 7)) {
		arg = spec + 7;
	} else if (uri || !strncmp(spec, "postgres:", 9)) {
#ifdef HAVE_POSTGRES
		/* postgres:CONNINFO, or a libpq URI as it is. */
		ops = &db_pg_ops;
		arg = uri ? spec : spec + 9;
#else
		log_error(&c->log, "--db %s: this collector was built without PostgreSQL (-Dpostgres)", spec);
		return -ENOTSUP;
#endif
	}
	if (!*arg) {
		log_error(&c->log, "--db %s: empty", spec);
		return -EINVAL;
	}
	/* Every thing's owner, for the migration to schema 3 (rows older than owners). */
	c->n_owners = tsync_site_thing_count(c->site);
	c->owners = calloc(c->n_owners ? c->n_owners : 1, sizeof(*c->owners));
	if (!c->owners)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_owners; i++) {
		tsync_thing_info ti;
		if (tsync_site_thing(c->site, i, &ti) == 0)
			c->owners[i] = (struct db_owner){ti.name, ti.owner};
		else
			c->owners[i] = (struct db_owner){"", ""};
	}
	r = ops->open(arg, c->owners, c->n_owners, &c->log, &c->db);
	/* The pushes' batches on a connection of their own, stored while the loop reads the next. */
	if (r == 0 && ops->store_apart) {
		struct db *store_db;
		r = ops->open(arg, c->owners, c->n_owners, &c->log, &store_db);
		if (r == 0)
			r = storeq__new(c->base, store_db, &c->storeq);
	}
	return r;
}

static int parse_args(int argc, char **argv, struct collector_options *o)
{
	enum {
		O_PORTFILE = 256,
		O_SILENT,
		O_PERIOD,
		O_WEBHOOK,
		O_CACERT,
		O_MAXBATCH,
		O_MAXBODY,
		O_FAULTS,
		O_PULL_SCAN,
		O_PULL_MIN,
		O_PULL_MAX,
	};
	static const struct option longopts[] = {
	    DAEMONOPT_LONG_SITE,
	    {"listen", required_argument, NULL, 'l'},
	    {"port-file", required_argument, NULL, O_PORTFILE},
	    {"db", required_argument, NULL, 'D'},
	    {"silent-after", required_argument, NULL, O_SILENT},
	    {"source-period", required_argument, NULL, O_PERIOD},
	    {"webhook", required_argument, NULL, O_WEBHOOK},
	    {"cacert", required_argument, NULL, O_CACERT},
	    {"max-batch", required_argument, NULL, O_MAXBATCH},
	    {"max-body", required_argument, NULL, O_MAXBODY},
	    {"fault-injection", no_argument, NULL, O_FAULTS},
	    {"pull-scan", required_argument, NULL, O_PULL_SCAN},
	    {"pull-retry-min-ms", required_argument, NULL, O_PULL_MIN},
	    {"pull-retry-max-ms", required_argument, NULL, O_PULL_MAX},
	    DAEMONOPT_LONG_END,
	};
	uint64_t x;
	int ch, r;

	/* No state directory, node address or status endpoint: no -d, --bind, --http. */
	while ((ch = getopt_long(argc, argv, "s:c:l:D:v:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'l':
			o->listen = optarg;
			break;
		case O_PORTFILE:
			o->port_file = optarg;
			break;
		case 'D':
			o->db_spec = optarg;
			break;
		case O_SILENT:
		case O_MAXBATCH:
		case O_MAXBODY:
			if (daemonopt__uint(optarg, 1, 1ull << 32, &x) < 0) {
				fprintf(stderr, "thingsync-collectord: bad number: %s\n", optarg);
				return -EINVAL;
			}
			if (ch == O_SILENT)
				o->silent_after_s = (uint32_t)x;
			else if (ch == O_MAXBATCH)
				o->max_batch = (size_t)x;
			else
				o->max_body = (size_t)x;
			break;
		case O_PERIOD: {
			const char **p = realloc(o->periods, (o->n_periods + 1) * sizeof(*p));
			if (!p)
				return -ENOMEM;
			o->periods = p;
			o->periods[o->n_periods++] = optarg;
			break;
		}
		case O_WEBHOOK:
			o->webhook = optarg;
			break;
		case O_CACERT:
			o->cacert = optarg;
			break;
		case O_FAULTS:
			o->fault_injection = true;
			break;
		case O_PULL_SCAN:
		case O_PULL_MIN:
		case O_PULL_MAX:
			if (daemonopt__uint(optarg, ch == O_PULL_SCAN ? 0 : 1, 86400000, &x) < 0) {
				fprintf(stderr, "thingsync-collectord: bad number: %s\n", optarg);
				return -EINVAL;
			}
			if (ch == O_PULL_SCAN)
				o->pull_scan_s = (uint32_t)x;
			else if (ch == O_PULL_MIN)
				o->pull_retry_min_ms = (uint32_t)x;
			else
				o->pull_retry_max_ms = (uint32_t)x;
			break;
		default:
			r = daemonopt__handle(&o->common, ch, optarg);
			if (r < 0)
				return r;
		}
	}
	if (o->pull_retry_min_ms > o->pull_retry_max_ms) {
		fprintf(stderr, "thingsync-collectord: --pull-retry-min-ms is above --pull-retry-max-ms\n");
		return -EINVAL;
	}
	return daemonopt__finish(&o->common, optind, argc, false);
}

static int run(struct collector *c)
{
	struct timeval tv = {0, TICK_MS * 1000};
	int r;

	r = daemonopt__load_site(&c->opt.common, &c->log, &c->site);
	if (r < 0)
		return r;
	if (!tsync_site_has_key(c->site)) {
		log_error(&c->log, "%s has no key_file: pushes could not be authenticated",
		          c->opt.common.site_path);
		return TSYNC_EKEY;
	}
	c->base = event_base_new();
	if (!c->base)
		return -ENOMEM;
	r = setup_sources(c);
	if (r < 0)
		return r;
	r = open_db(c);
	if (r < 0)
		return r;
	alarms__init(&c->alarms, &c->log, c->db);
	alarms__load(&c->alarms);
	if (!c->db->ops->up(c->db))
		collector__db_down(c, "the database is unavailable at start");
	if (c->opt.webhook) {
		r = curlev__new(c->base, &c->webhook_http);
		if (r < 0)
			return r;
		c->alarms.http = c->webhook_http;
		c->alarms.webhook = c->opt.webhook;
		c->alarms.cacert = c->opt.cacert;
	}
	if (c->opt.fault_injection)
		log_warn(&c->log, "fault injection is enabled (POST /v1/faults): for tests only");
	c->started_us = (int64_t)util__realtime_us();
	r = pull__init(c);
	if (r < 0)
		return r;
	r = start_http(c);
	if (r < 0)
		return r;
	c->tick = event_new(c->base, -1, EV_PERSIST, tick_cb, c);
	if (!c->tick || event_add(c->tick, &tv) < 0 ||
	    daemonopt__signals_start(&c->sig, c->base, &c->log) < 0)
		return -ENOMEM;
	log_info(&c->log, "collector of site %s up: %zu source(s), %s database %s", tsync_site_name(c->site),
	         c->n_sources, c->db->ops->name, c->db->ops->up(c->db) ? "up" : "DOWN");
	event_base_dispatch(c->base);
	return 0;
}

static void cleanup(struct collector *c)
{
	/* The batch being stored first: its push is answered (or told "stopping") while httpd is there. */
	storeq__free(c->storeq);
	httpd__free(c->http);
	pull__free(c);
	curlev__free(c->webhook_http);
	if (c->db) {
		if (c->db->ops->up(c->db))
			alarms__flush(&c->alarms);
		c->db->ops->close(c->db);
	}
	if (c->tick)
		event_free(c->tick);
	daemonopt__signals_free(&c->sig);
	if (c->base)
		event_base_free(c->base);
	free(c->sources);
	free(c->owners);
	tsync_site_free(c->site);
	free(c->opt.periods);
}

int main(int argc, char **argv)
{
	struct collector *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return 1;
	c->opt.db_spec = "sqlite:/var/lib/thingsync/collector.db";
	c->opt.silent_after_s = 300;
	c->opt.max_batch = COLLECTOR_MAX_BATCH;
	c->opt.max_body = COLLECTOR_MAX_BODY;
	daemonopt__init(&c->opt.common, "thingsync-collectord", usage_text);
	c->opt.pull_scan_s = 60;
	c->opt.pull_retry_min_ms = 1000;
	c->opt.pull_retry_max_ms = 60000;
	if (parse_args(argc, argv, &c->opt) < 0) {
		free(c->opt.periods);
		free(c);
		return 2;
	}
	c->log.fn = log_stderr;
	c->log.level = c->opt.common.log_level;
	c->log.prefix = "collector";
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		free(c);
		return 1;
	}
	r = run(c);
	if (r < 0)
		log_error(&c->log, "exiting: %s", tsync_strerror(r));
	cleanup(c);
	free(c);
	curl_global_cleanup();
	return r < 0 ? 1 : 0;
}
