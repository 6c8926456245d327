/*
 * thingsync-collectord: the server side of the push role. It takes the
 * batches pushd posts (authenticated with the site key), validates every
 * field against site.conf, stores them idempotently and
 * answers only after the commit; it raises and clears alarms, and serves a
 * read API. Measurements are keyed on (source, stream, seq): the stream is
 * the pushd journal's identity. See thingsync-collectord(8).
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_COLLECTOR_H
#define TSYNC_COLLECTOR_H

#include <stdbool.h>
#include <stdint.h>

#include <thingsync/thingsync.h>

#include "httpd.h"
#include "alarms.h"
#include "db.h"
#include "daemonopt.h"
#include "util/util.h"

struct event_base;
struct event;
struct evhttp;
struct evhttp_request;
struct curlev;
struct storeq;

/* Limits on what a source (or any client) can make the collector hold or do. */
#define COLLECTOR_MAX_BODY    ((size_t)16 << 20)
#define COLLECTOR_MAX_BATCH   10000
#define COLLECTOR_MAX_HEADERS 16384
#define COLLECTOR_QUERY_LIMIT 10000
#define COLLECTOR_MAX_GAPS    100
#define COLLECTOR_NAME_MAX    63
/* Longest cumul of one thing and day, as JSON text. */
#define COLLECTOR_MAX_CUMUL 16384
/* Measurements may be at most this far in the future (clock skew between a Pi and us). */
#define COLLECTOR_FUTURE_US ((int64_t)24 * 3600 * 1000000)
/* ... and not before 2000-01-01. */
#define COLLECTOR_EPOCH_MIN_US ((int64_t)946684800 * 1000000)

struct collector_options {
	/* --site, --controller (whose tcp_port to listen on; default: the first
	 * with role collector), --log-level */
	struct daemonopt common;
	const char *listen; /* ADDR:PORT, overrides */
	const char *port_file;
	const char *db_spec; /* sqlite:PATH or postgres:CONNINFO */
	const char *webhook;
	const char *cacert;
	uint32_t silent_after_s;
	const char **periods; /* NAME=SECONDS */
	size_t n_periods;
	size_t max_body;
	size_t max_connections; /* --max-connections (0: the default) */
	size_t max_batch;
	bool fault_injection;
	uint32_t pull_scan_s; /* look for gaps to pull this often (0: never) */
	uint32_t pull_retry_min_ms, pull_retry_max_ms;
};

/* A source: a controller of the site with the push role. */
struct source {
	const char *name; /* borrowed from the site */
	uint32_t period_s;
	int64_t last_seen_us; /* realtime of the last authenticated push (heartbeats included) */
	int64_t last_seq;     /* highest seq stored */
	uint64_t pushes, measurements, duplicates, rejected;
};

struct collector {
	struct collector_options opt;
	struct logger log;
	struct event_base *base;
	struct httpd *http;
	struct httpd_route routes[20];
	tsync_site *site;
	struct db *db;
	struct storeq *storeq; /* pushes stored apart (backends with store_apart), or NULL */
	struct db_owner *owners; /* of every thing of the site, for the database */
	size_t n_owners;
	struct alarms alarms;
	struct curlev *webhook_http;
	struct source *sources;
	size_t n_sources;
	int64_t started_us;
	int64_t unknown_refused_us; /* last push refused for an unknown or forged source */
	struct event *tick;
	uint64_t ticks;
	struct daemonsig sig;
	/* pull.c: windows asked of the recovery controller, one in flight at a time */
	struct {
		const char *controller; /* its name (borrowed from the site); NULL: none */
		char *url;
		struct curlev *http;
		struct event *retry_ev;
		bool in_flight;
		int64_t id, from_s, to_s, attempts, last_id;
		unsigned failures; /* in a row */
		int64_t last_scan_us;
		struct prng prng;
	} pull;
	uint64_t pulls_accepted, pulls_failed;
	/* Fault injection (only with --fault-injection; for the tests of the seed's failures). */
	struct {
		bool handler;   /* the ingest handler fails half-way (before its commit) */
		bool db_refuse; /* the database refuses writes */
		unsigned handler_every; /* every Nth push fails like `handler` (0: none) */
		uint64_t pushes_seen;   /* ... counted here */
	} faults;
	/* Counters for /metrics. */
	uint64_t pushes[6]; /* by enum push_result */
	uint64_t stored_total, duplicates_total, rejected_total;
	uint64_t copies_total, recovery_gaps_total, cumuls_total, cumul_conflicts_total;
	uint64_t http_requests;
};

enum push_result {
	PUSH_OK = 0,
	PUSH_INVALID,
	PUSH_UNAUTHORIZED,
	PUSH_UNAVAILABLE,
	PUSH_ERROR,
	PUSH_TOO_LARGE,
};

/* ingest.c */
void ingest__push(struct collector *c, struct evhttp_request *req);
struct source *collector__source(struct collector *c, const char *name);

/* api.c */
void api__sources(struct collector *c, struct evhttp_request *req);
void api__measurements(struct collector *c, struct evhttp_request *req);
void api__rejected(struct collector *c, struct evhttp_request *req);
void api__cumuls(struct collector *c, struct evhttp_request *req);
void api__recovery_gaps(struct collector *c, struct evhttp_request *req);
void api__alarms(struct collector *c, struct evhttp_request *req);
void api__alarm_ack(struct collector *c, struct evhttp_request *req);
void api__streams(struct collector *c, struct evhttp_request *req);
void api__owned(struct collector *c, struct evhttp_request *req);
void api__accept_stream(struct collector *c, struct evhttp_request *req);
void api__metrics(struct collector *c, struct evhttp_request *req);
void api__health(struct collector *c, struct evhttp_request *req);
void api__faults(struct collector *c, struct evhttp_request *req);
/* Sends `j` (consumed) as JSON with `status`. */

/* pull.c */
int pull__init(struct collector *c);
void pull__free(struct collector *c);
void pull__tick(struct collector *c);
void pull__post(struct collector *c, struct evhttp_request *req); /* POST /v1/pull */
void pull__list(struct collector *c, struct evhttp_request *req); /* GET /v1/pulls */

/* collectord.c */
void collector__db_down(struct collector *c, const char *why);
void collector__db_ok(struct collector *c);

#endif
