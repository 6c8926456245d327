/*
 * thingsync-forensicd: a controller with the forensics role. It closes the
 * site's days (the seed's reset, {"type":"cum"}, at local midnight), collects
 * every owner's closed days of cumuls over the mesh, keeps them in LMDB
 * (records in its node's store, bounded by forensic_days), serves them over
 * HTTP, answers the seed's report command and hands each closed day to the
 * push controller as cumul_data requests, exactly once.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_FORENSICD_H
#define TSYNC_FORENSICD_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <thingsync/thingsync.h>

#include "cumul/cumul.h"
#include "site/site.h"
#include "daemonopt.h"
#include "util/util.h"

struct event_base;
struct event;
struct httpd;

#define DATE_LEN CUMUL_DATE_LEN

struct forensicd_options {
	struct daemonopt common;
};

/* One owner: a controller that owns things, and where its collection is. */
struct owner {
	const char *name; /* borrowed from the site */
	const char **things;
	size_t n_things;
	char next[DATE_LEN + 1]; /* the first day not collected yet */
	/* The day whose cumuls are being asked for, one at a time. */
	bool busy;
	char day[DATE_LEN + 1];
	uint32_t gen;    /* answers of an abandoned batch are ignored */
	size_t asked;    /* things asked for so far (in slices) */
	size_t waiting;  /* answers of the slice still to come */
	json_t *got;     /* thing -> cumul */
	json_t *missing; /* things the owner keeps nothing of that day */
	bool not_closed; /* the owner's day is still open: reset it first */
	bool retry;      /* an answer was lost to a restart: ask again */
	bool reset_busy; /* a reset to it is unanswered */
	bool wait_reset; /* the day was open there: ask again once the reset is answered */
	uint64_t days_collected, resets_sent, resets_closed;
	uint64_t ask_failures; /* requests the node refused, answers lost: logged sparingly */
};

/* The last run of report_command. */
struct report_run {
	uint64_t runs, failures;
	char last_day[DATE_LEN + 1];
	char last_error[256]; /* "": it succeeded (or never ran) */
	int64_t last_at_ms;
	bool running; /* the last run has not ended yet */
};

struct report_job;

struct forensicd {
	struct forensicd_options opt;
	struct logger log;
	struct event_base *base;
	tsync_site *site;
	const struct tsync_site *isite; /* the same, its internal view (site.h) */
	tsync_node *node;
	const char *name;
	struct httpd *http;
	struct event *tick_ev;
	struct daemonsig sig;
	struct owner *owners;
	size_t n_owners;
	const char *push_to;          /* the push controller, NULL: none in site.conf */
	char reset_day[DATE_LEN + 1]; /* the last day whose end was announced */
	char trimmed_before[DATE_LEN + 1];
	uint64_t pushes_sent, pushes_acked, push_chunks, push_failed, push_resent, records_failed;
	uint64_t push_resumed; /* requests sent again at start: their days were not acked */
	uint64_t missing_things;
	struct report_run report;
	struct report_job *report_job; /* the run of report_command going on, or NULL */
	struct event *chld_ev;         /* SIGCHLD: report_command ended */
	bool push_retry;       /* the node refused requests of a day's push: sent at the next tick */
	json_t *push_inflight; /* "DAY/OWNER/THING" carried by a request of this run */
	json_t *acks_pending;  /* "DAY/OWNER" -> true: acks staged in this turn of the loop */
	struct event *ack_ev;  /* commits them once, after the turn's callbacks */
	bool state_unusable;
};

/* forensicd.c */
int64_t forensicd__now_us(void);
/* The label of the day `days` after (or before) `day`; civil dates. */
void forensicd__date_add(const char *day, int days, char out[DATE_LEN + 1]);
bool forensicd__valid_date(const char *s);
/* Today's label in the site's zone. */
void forensicd__today(struct forensicd *fd, char out[DATE_LEN + 1]);
/* Commits the node's store: records and requests together. */
void forensicd__commit(struct forensicd *fd);
/* The daemon's records (tsync_node_record_put() and friends), logged on failure. */
int forensicd__put(struct forensicd *fd, const char *key, const char *value);
int forensicd__get(struct forensicd *fd, const char *key, char **value);
int forensicd__scan(struct forensicd *fd, const char *from, const char *to, tsync_record_fn fn, void *ud);
size_t forensicd__count(struct forensicd *fd, const char *from, const char *to);

/* collect.c: the mesh side. */
int collect__init(struct forensicd *fd);
void collect__free(struct forensicd *fd);
/* Commits the push acks staged since the last call, and marks the days
 * they complete (run once per turn of the loop; at stop). */
void collect__acks_commit(struct forensicd *fd);
/* At start: sends again what pushd has not acked of the days pushed. */
void collect__resume_pushes(struct forensicd *fd);
/* Called every tick: the day's end, owners to collect, old days to trim. */
void collect__tick(struct forensicd *fd);

/* report.c */
/* The day's report: JSON (into *json) and text (malloc()ed, into *text).
 * 0, -ENOENT (nothing kept of that day), -ENOMEM or TSYNC_ESTORE. */
int report__build(struct forensicd *fd, const char *day, json_t **json, char **text);
/* Starts report_command with `text` on its stdin, beside the event loop;
 * 0 (started, or no report_command), -EBUSY (the last run has not ended),
 * or -1 with fd->report saying why. fd->report has the outcome when it ends. */
int report__run_command(struct forensicd *fd, const char *day, const char *text);
/* SIGCHLD: reaps the command if it ended. */
void report__child(struct forensicd *fd);
/* At stop: kills a run going on. */
void report__stop(struct forensicd *fd);
/* The newest day kept, into out; -ENOENT if none. */
int report__last_day(struct forensicd *fd, char out[DATE_LEN + 1]);
/* Handler of {"type":"cmd","role":"forensics","cmd":"report"}. */
int report__cmd(void *ud, tsync_node *node, const tsync_request *req, char **result);

/* api.c */
int api__start(struct forensicd *fd);

#endif
