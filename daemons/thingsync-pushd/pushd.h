/*
 * thingsync-pushd: a controller with the push role. Every value the mesh
 * delivers to it becomes a measurement in an LMDB journal (acknowledged to
 * the mesh only once committed); a sender posts the journal, from its cursor,
 * to the collector and trims it only after the collector's committed answer.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_PUSHD_H
#define TSYNC_PUSHD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <thingsync/thingsync.h>

#include "store/store.h"
#include "daemonopt.h"
#include "util/util.h"

struct event_base;
struct event;
struct evhttp;
struct curlev;

struct pushd_options {
	struct daemonopt common;   /* http_listen: the status endpoint */
	const char *collector_url; /* NULL: the first controller with role "collector" */
	const char *cacert;
	const char **csv; /* --csv files, in order */
	size_t n_csv;
	size_t batch_max;
	size_t inflight; /* POSTs in flight at most (1..SENDER_MAX_INFLIGHT) */
	uint64_t journal_max_entries;
	uint64_t journal_max_bytes;
	uint32_t retry_min_ms;
	uint32_t retry_max_ms;
	uint32_t heartbeat_ms;
	uint32_t timeout_ms;
	bool exit_when_drained;
};

#define SENDER_MAX_INFLIGHT 16

/* One POST of the sender: the journal's sequences [first, last] (count 0: a heartbeat). */
struct sender_post {
	struct sender *s;
	uint64_t first, last;
	size_t count;
	bool returned; /* its answer came */
	bool settled;  /* ... and said the whole batch is committed at the collector */
};

/*
 * The sender: up to opt.inflight POSTs in flight, each the batch after the
 * previous one. Answers may come in any order; the cursor moves only over
 * the settled prefix (every batch up to it settled). A failure stops new
 * POSTs; once every POST in flight has answered, the next try starts again
 * at the cursor (the collector dedups what it already has).
 */
struct sender {
	struct pushd *pd;
	char *url;
	char *target; /* the URL's path and query: what is signed */
	size_t batch; /* current batch size (halved on 413, up to batch_max) */
	size_t in_flight;                             /* POSTs not answered yet */
	struct sender_post post[SENDER_MAX_INFLIGHT]; /* a ring, in the order sent */
	size_t head, n_posts;                         /* oldest post, posts in the ring */
	uint64_t sent_through;                        /* highest sequence posted (the cursor when none) */
	bool failing;               /* a POST failed: none new until all answered, then from the cursor */
	bool again_now;             /* ... and then at once (413, a journal error), not after the backoff */
	struct event *retry_ev;     /* backoff before the next try */
	struct event *heartbeat_ev; /* an empty push while idle: "still here" */
	struct event *kick_ev;
	unsigned failures_in_row;
	uint32_t backoff_ms;
	/* Reachability of the collector, as connection_status posts it. */
	bool disconnected;
	uint64_t disconnected_at_us;
	bool stream_refused; /* the collector answered 409: it holds another stream of ours */
	uint64_t posts_ok, posts_failed, measurements_sent, measurements_refused;
	char last_error[256];
	struct prng prng;
};

/* One CSV file being imported (the seed's fake push). */
struct csv_import {
	struct pushd *pd;
	FILE *f;
	const char *path;
	unsigned long line;
	struct event *ev;
	bool blocked; /* the journal was full: resumes after the next ack */
	bool done;
	uint64_t imported, refused;
};

struct pushd {
	struct pushd_options opt;
	struct logger log;
	struct event_base *base;
	tsync_site *site;
	tsync_node *node;
	const char *name;
	struct journal *journal;
	struct curlev *http;
	struct httpd *status_http;
	struct sender sender;
	struct csv_import *csv;
	size_t n_csv;
	size_t csv_next;   /* files are imported one after the other */
	bool backpressure; /* the journal refused a commit: mesh acks withheld */
	uint64_t staged_mesh, dedup_skipped, stage_failed;
	/* intake.c: recovery_data and cumul_data */
	uint64_t recovered, cumuls_journaled, intake_duplicates, intake_refused;
	struct daemonsig sig;
	int exit_code;
	bool state_unusable; /* refused its state at start: exit STATEDIR_EXIT_UNUSABLE */
};

/* sender.c */
int sender__init(struct sender *s, struct pushd *pd, const char *url);
void sender__free(struct sender *s);
void sender__kick(struct sender *s); /* something was committed: send when idle */
bool sender__idle(const struct sender *s);

/* csv.c */
int csv__start(struct pushd *pd, struct csv_import *c, const char *path);
void csv__resume(struct csv_import *c); /* after an ack made room */
void csv__free(struct csv_import *c);
/* Parses one CSV line (without its newline) into an imported measurement
 * (time, thing, value, and owner_boot and version when given); the strings
 * point into `line`, which is modified. 0 or -EINVAL with `*why`. */
int csv__parse_line(char *line, struct journal_entry *e, const char **why);

/* intake.c: registers the handlers of recovery_data and cumul_data. */
int intake__init(struct pushd *pd);

/* pushd.c */
void pushd__check_done(struct pushd *pd); /* --exit-when-drained */

#endif
