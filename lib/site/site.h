/*
 * lib/site: site.conf parsing (inih), validation, and the per-controller plan.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_SITE_INTERNAL_H
#define TSYNC_SITE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <thingsync/site.h>

#include "util/util.h"

#define SITE_KEY_BYTES 32 /* crypto_auth_KEYBYTES */

/* Defaults of the [site] section (documented in site.conf.example). */
#define SITE_DEFAULT_RETRY_MIN_MS 20
#define SITE_DEFAULT_RETRY_INITIAL_MS 200
#define SITE_DEFAULT_RETRY_MAX_MS 8000
#define SITE_DEFAULT_MAX_DATAGRAM 1400
#define SITE_DEFAULT_MAX_MSGS 512
#define SITE_DEFAULT_MAX_STRING 256
#define SITE_DEFAULT_MAX_OUTSTANDING 64
#define SITE_DEFAULT_MAX_QUEUED 1024
#define SITE_DEFAULT_PULSE_MS 500
#define SITE_DEFAULT_DOWN_AFTER_MS 3000
#define SITE_DEFAULT_STATE_COMMIT_MS 5000
#define SITE_DEFAULT_HEARTBEAT_MS 2000
/* A controller's history (history = yes) without history_max_bytes. */
#define SITE_DEFAULT_HISTORY_MAX_BYTES ((uint64_t)16 << 20)
/* recovery_threshold without a value: five minutes. */
#define SITE_DEFAULT_RECOVERY_THRESHOLD_MS ((uint64_t)300000)
/* Closed days of cumuls an owner keeps (lib/cumul), and their ceiling. */
#define SITE_DEFAULT_CUMUL_DAYS 14
#define SITE_MAX_CUMUL_DAYS     366
#define SITE_DEFAULT_FORENSIC_DAYS 400
#define SITE_MAX_FORENSIC_DAYS     36600
#define SITE_DEFAULT_REPORT_TIMEOUT_MS 30000

struct site_controller {
	char *name;
	char *host;
	uint16_t udp_port;
	uint16_t tcp_port;
	char **roles;
	size_t n_roles;
	bool seed_protocol; /* protocol = seed */
	/* history = yes: keep every change of the things it owns (lib/store/history.c) */
	bool history;
	uint64_t history_max_age_ms; /* 0: no bound */
	uint64_t history_max_bytes;
	/* role recovery: an outage shorter than this is not recovered (thingsync-recoveryd) */
	uint64_t recovery_threshold_ms;
	int line;
};

struct site_thing {
	char *name;
	uint32_t owner; /* controller index */
	tsync_type type;
	uint32_t *users; /* controller indexes */
	char **user_names; /* same order, for tsync_thing_info */
	size_t n_users;
	bool settable;
	bool pulse;
	uint32_t pulse_ms;
	bool has_min, has_max;
	double min, max;
	char **allowed;
	size_t n_allowed;
	char *driver;
	char *group; /* `group =`: where a dashboard shows it, or NULL */
	tsync_value initial; /* owned string */
	bool history_off;            /* history = no: its owner keeps no history of it */
	uint64_t history_max_age_ms; /* 0: the owner's bound */
	uint64_t history_max_bytes;
	int line;
};

struct tsync_site {
	char *path;
	char *name;
	char *key_file;
	bool has_key;
	uint8_t key[SITE_KEY_BYTES];

	/* Limits and timers, from [site] or the defaults above. */
	uint32_t retry_min_ms;     /* floor of the retransmission timeout */
	uint32_t retry_initial_ms; /* before the first round-trip sample */
	uint32_t retry_max_ms;     /* the retry ceiling */
	uint32_t max_datagram;     /* bytes, tag included */
	uint32_t max_msgs;         /* messages per datagram accepted */
	uint32_t max_string;       /* bytes of a string value */
	uint32_t max_outstanding;  /* pulses/cmds in flight per peer */
	uint32_t max_queued;       /* pulses/cmds queued per peer */
	uint32_t down_after_ms;    /* a peer with a message overdue this long is down */
	uint32_t state_commit_ms;  /* group-commit window for a controller's own changes (0: at once) */
	uint32_t heartbeat_ms;     /* a peer sharing things hears from me at least this often (0: off) */
	char *timezone;            /* cumuls: the site's zone ("Europe/Berlin"); NULL: the process's TZ */
	uint32_t cumul_days;       /* cumuls: closed days each owner keeps */
	uint32_t forensic_days;    /* forensics role: days of cumuls its history keeps */
	char **report_command;     /* forensics role: argv (NULL-terminated) fed the report; NULL: none */
	uint32_t report_timeout_ms; /* forensics role: how long report_command may run */

	struct site_controller *controllers;
	size_t n_controllers;
	struct site_thing *things;
	size_t n_things;

	struct name_index controller_ix;
	struct name_index thing_ix;
};

/*
 * The plan of one controller: what it owns, what it uses and from whom, who
 * needs each of its things. Computed once from the site.
 */
struct plan_peer {
	uint32_t ctrl;     /* controller index */
	uint32_t *out;     /* things I own that this peer uses (thing indexes) */
	size_t n_out;
	uint32_t *in;      /* things this peer owns that I use */
	size_t n_in;
};

struct site_plan {
	uint32_t me;        /* my controller index */
	uint32_t *owned;    /* thing indexes */
	size_t n_owned;
	uint32_t *used;     /* thing indexes I use (owned by others) */
	size_t n_used;
	struct plan_peer *peers; /* one per other controller, in site order */
	size_t n_peers;
	int32_t *peer_of_ctrl;   /* controller index -> peer index, -1 for me */
};

/* Builds the plan of controller `me`. 0, -ENOMEM, -ERANGE. */
int site__plan_new(const struct tsync_site *site, uint32_t me, struct site_plan **ret);
void site__plan_free(struct site_plan *plan);

/* Whether controller `ctrl` has role `role`. */
bool site__has_role(const struct tsync_site *site, uint32_t ctrl, const char *role);
/* tsync_site_check_value() of thing number `thing` (< n_things), without
 * looking its name up again. */
int site__check_value(const struct tsync_site *site, uint32_t thing, const tsync_value *v);

/* Reads a key file (64 hex chars, optional trailing newline; mode must not
 * give group/other any access). Errors are described in errbuf. 0 or TSYNC_EKEY. */
int site__read_key(const char *path, uint8_t key[SITE_KEY_BYTES], char *errbuf, size_t errlen);

/* Splits a report_command into argv (malloc()ed, NULL-terminated): words
 * separated by blanks, the first an absolute path; no quotes, no shell
 * characters. 0, -EINVAL or -ENOMEM. */
int site__split_command(const char *text, char ***argv);

/* Whether `tz` names a zone of the tz database ($TZDIR or /usr/share/zoneinfo).
 * 0, or -EINVAL/-ENOENT with the reason in `why`. */
int site__check_timezone(const char *tz, char *why, size_t len);

#endif /* TSYNC_SITE_INTERNAL_H */
