/*
 * thingsync-recoveryd: the recovery role (seed 000, DESIGN.md "Recovery,
 * pull and push"). It keeps the outage ledger, publishes `internet_lost`,
 * and once the path to the collector is back after an outage longer than
 * site.conf's recovery_threshold, asks every data store (a controller
 * keeping a history of things the push role uses) for the window's changes,
 * delivered to the push controller.
 *
 * main.c owns the state and the node; ledger.c is the outage ledger (what
 * is down since when, the recoveries asked), kept as one record in the
 * node's store (tsync_node_record_put), so a ledger change and the requests
 * it sends are committed together; http.c serves /v1/recover, /v1/status and
 * /metrics.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_RECOVERYD_H
#define TSYNC_RECOVERYD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <thingsync/thingsync.h>

#include "daemonopt.h"
#include "util/util.h"

struct event_base;
struct event;
struct httpd;
struct curlev;

/* Why the path to the collector counts as down: each cause is set and
 * cleared by its own reporter; the outage lasts while any is set. */
#define LEDGER_MAX_CAUSES 16
#define LEDGER_CAUSE_LEN  80
/* Recoveries kept in the ledger (the oldest done ones are dropped). */
#define LEDGER_MAX_RECOVERIES 16
/* Data stores one recovery asks. */
#define LEDGER_MAX_OWNERS 32
/* "RECOVERY.INDEX.BOOT": the request_id a data store is asked with. */
#define LEDGER_REQUEST_ID_LEN 64

/* PENDING: to be asked (a crash before the request was queued: asked at the
 * next start); ASKED: the request is in the node's store, the mesh delivers
 * it (asked again, the same request_id, at the next start if its answer
 * has not come by then). */
enum owner_state { OWNER_ASKED, OWNER_ANSWERED, OWNER_FAILED, OWNER_PENDING };

struct ledger_owner {
	char name[64];
	enum owner_state state;
	char request_id[LEDGER_REQUEST_ID_LEN]; /* "" until first asked */
	int64_t chunks, entries; /* announced in the answer */
	bool trimmed;
	int64_t trimmed_from_us, trimmed_to_us;
	char error[64];
};

struct recovery {
	char id[32];
	int64_t from_us, to_us;
	int64_t asked_us;
	char reason[16]; /* "outage", "manual" */
	size_t n_owners;
	struct ledger_owner owners[LEDGER_MAX_OWNERS];
};

struct ledger {
	/* The open outage: first loss time, and the causes still set. */
	bool lost;
	int64_t lost_us;
	size_t n_causes;
	struct {
		char name[LEDGER_CAUSE_LEN]; /* "connection_status:PUSH", "mesh:PUSH", "recoveryd" */
		int64_t since_us;
	} causes[LEDGER_MAX_CAUSES];
	int64_t alive_us;                       /* the daemon was last known alive */
	int64_t last_restored_us, last_lost_us; /* the last outage closed */
	uint64_t next_recovery;
	uint64_t outages, outages_short, recoveries;
	size_t n_recoveries;
	struct recovery recoveries_kept[LEDGER_MAX_RECOVERIES];
};

/* ledger.c: the ledger as JSON (its record in the store, and /v1/status). */
json_t *ledger__to_json(const struct ledger *l);
/* Fills `l` from a record; 0 or -EINVAL (a record it cannot read). */
int ledger__from_json(struct ledger *l, const char *text);
/* A cause is set since `at_us`. Returns true when this opens an outage. */
bool ledger__cause_set(struct ledger *l, const char *cause, int64_t at_us);
/* A cause is cleared. Returns true when this closes the outage (then
 * *lost_us is its first loss time). */
bool ledger__cause_clear(struct ledger *l, const char *cause, int64_t at_us, int64_t *lost_us);
bool ledger__cause_has(const struct ledger *l, const char *cause);
/* A new recovery for [from, to], its id made from the ledger's counter;
 * the oldest kept recovery makes room. */
struct recovery *ledger__recovery_new(struct ledger *l, int64_t from_us, int64_t to_us, const char *reason,
                                      int64_t now_us);
struct recovery *ledger__recovery_find(struct ledger *l, const char *id);

struct recoveryd_options {
	struct daemonopt common; /* http_listen: ADDR:PORT; NULL: the controller's host and tcp_port */
	const char *thing;       /* the published thing (default internet_lost) */
	const char *probe_url;   /* GET it every probe_ms: not 200 is an outage (NULL: no probe) */
	uint32_t probe_ms;
	uint32_t alive_ms; /* how often the alive time is written */
};

struct recoveryd {
	struct recoveryd_options opt;
	struct logger log;
	struct event_base *base;
	tsync_site *site;
	tsync_node *node;
	const char *name;
	const char *push;      /* the push controller (deliver_to), or NULL */
	uint64_t threshold_ms; /* recovery_threshold */
	bool publish;          /* this controller owns opt.thing */
	uint64_t push_boot;    /* the push controller's boot as last seen */
	struct ledger ledger;
	struct httpd *http;
	struct curlev *client; /* the probe's */
	bool probe_in_flight;
	int64_t probe_sent_us;
	uint64_t probes_ok, probes_failed;
	struct event *alive_ev, *probe_ev;
	struct daemonsig sig;
	uint64_t statuses_received, requests_sent, requests_failed;
	bool state_unusable;
};

/* main.c: asks every data store for [from, to]; the recovery made, or NULL
 * with *err (-ENOENT: no data store or no push controller). */
void recoveryd__ask_pending(struct recoveryd *rd);
struct recovery *recoveryd__recover(struct recoveryd *rd, int64_t from_us, int64_t to_us, const char *reason,
                                    int *err);

/* http.c */
int http__start(struct recoveryd *rd);

#endif
