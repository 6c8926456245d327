/*
 * thingsd: the IO controller daemon. One process runs one controller of a
 * site: it owns things through drivers, serves the mesh through libthingsync,
 * answers the cmd_do commands and serves an HTTP API.
 *
 * This header is shared by the daemon's files only.
 * SPDX-License-Identifier: MIT
 */
#ifndef THINGSD_H
#define THINGSD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <thingsync/thingsync.h>

struct event_base;
struct event;
struct driver;
struct http;

#define THINGSD_VERSION TSYNC_VERSION_STRING

#define TD_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* --- logging (log.c) ------------------------------------------------------ */

/* One line per event on stderr; with a syslog priority prefix under journald. */
void tdlog__init(const char *controller, tsync_log_level level);
void tdlog__set_controller(const char *controller);
tsync_log_level tdlog__level(void);
void tdlog__printf(tsync_log_level level, const char *fmt, ...) TD_PRINTF(2, 3);
/* The library's log callback: its lines already carry the controller. */
void tdlog__lib(void *userdata, tsync_log_level level, const char *line);

#define td_error(...) tdlog__printf(TSYNC_LOG_ERROR, __VA_ARGS__)
#define td_warn(...)  tdlog__printf(TSYNC_LOG_WARN, __VA_ARGS__)
#define td_info(...)  tdlog__printf(TSYNC_LOG_INFO, __VA_ARGS__)
#define td_debug(...)                                                                                        \
	do {                                                                                                 \
		if (tdlog__level() >= TSYNC_LOG_DEBUG)                                                       \
			tdlog__printf(TSYNC_LOG_DEBUG, __VA_ARGS__);                                         \
	} while (0)

/* --- the daemon (daemon.c) ------------------------------------------------ */

struct thingsd_options {
	const char *conf_path;  /* -c */
	const char *controller; /* -n */
	const char *state_dir;  /* -s, may be NULL */
	const char *http_bind;  /* --http-bind: NULL is 127.0.0.1; "host" is the controller's host */
	bool require_signature; /* --require-signature, also on loopback */
	size_t http_max_connections; /* --http-max-connections (0: the default) */
	unsigned http_request_timeout_s; /* --http-request-timeout (0: the default) */
	unsigned busy_poll_us;  /* --busy-poll (0: off), tsync_node_options.busy_poll_us */
	bool verbose;           /* -v: every exchange (debug) */
	bool allow_machine_reboot;
};

/* An owned thing at run time: its driver and its pulse. */
/* The last change of a thing this daemon saw: when, and from which controller. */
struct changed {
	uint64_t time_ms; /* wall clock; 0: none since start */
	char by[64];
};

struct owned {
	struct thingsd *td;
	char *name;
	tsync_thing_info info; /* borrowed from td->site */
	struct driver *drv;    /* never NULL once started: virtual at least */

	bool pulsing;
	struct event *pulse_ev;
	tsync_value pulse_val; /* strings owned (pulse_str) */
	char *pulse_str;
	uint32_t pulse_ms;
	uint64_t pulse_end_us;

	uint64_t changes_today;
	uint64_t changes_total;
	struct changed last; /* the dashboard's "when, by whom" */
};

/* A thing this controller uses (a copy): counters only. */
struct used {
	char *name;
	uint64_t changes_today;
	uint64_t changes_total;
	uint64_t pulses;
	struct changed last;
};

struct thingsd {
	struct thingsd_options opt;
	char **argv; /* for the reboot command's re-exec */
	struct event_base *base;

	tsync_site *site; /* the running site */
	tsync_node *node;
	struct owned *owned;
	size_t n_owned;
	struct used *used;
	size_t n_used;

	/* A driver's own reading is being set: the write hook must not write
	 * it back to the hardware it came from. */
	bool from_driver;

	struct http *http;
	bool signature_required; /* every HTTP request but /metrics is signed (httpd) */

	struct event *ev_hup, *ev_term, *ev_int, *ev_chld, *ev_reload;
	tsync_site *next_site; /* validated, waiting for the swap */
	bool stopping;
	bool reboot;
	int exit_code;

	char *clim; /* the climate settings document (JSON text) or NULL */
	uint64_t deploy_serial;

	uint64_t started_us;
	uint64_t node_started_us;
	uint64_t reloads, reloads_failed, deploys, deploys_failed;
	uint64_t events_changed, events_pulse;
	int day; /* changes_today counts since new_day */
};

uint64_t td__now_us(void);
uint64_t td__realtime_ms(void);

int daemon__run(struct thingsd *td);

/*
 * Loads and checks a site.conf as this daemon would run it: the file, its
 * key, this controller in it, the drivers of the things. On success *ret is
 * the site; on failure *errors (malloc'ed, may be NULL) holds one
 * FILE:LINE: message line per mistake.
 */
int daemon__check_site(struct thingsd *td, const char *path, tsync_site **ret, char **errors);

/* Validates now and swaps later (from the loop, never inside a node callback). */
int daemon__request_reload(struct thingsd *td, const char *why, char **errors);
void daemon__request_stop(struct thingsd *td, bool reboot);

struct owned *daemon__owned(struct thingsd *td, const char *name);
struct used *daemon__used(struct thingsd *td, const char *name);

/* Sets an owned thing from its driver's reading (no write back). */
int daemon__set_from_driver(struct owned *o, const tsync_value *v);

/* Pulses: drive the output to the pulse value, then back. TSYNC_EWRITE if
 * the output could not be driven (no pulse is started then). */
int daemon__pulse_start(struct owned *o, const tsync_value *v, uint32_t ms, const char *by);

/* Writes a file atomically next to its final place: temp, fsync, rename,
 * fsync of the directory. */
int daemon__write_atomic(const char *path, const void *data, size_t len, mode_t mode);

/* --- commands (cmd.c) ---------------------------------------------------- */

/* Registers the cmd_do commands and the clim handler on the node. */
int cmd__register(struct thingsd *td);
/*
 * Runs a command or request here, the way a peer's would be run (role check,
 * handler lookup). Used by the HTTP API for commands addressed to this
 * controller. *err receives the seed's error name, or NULL.
 */
int cmd__run_local(struct thingsd *td, const char *type, const char *role, const char *cmd,
                   const char *body_json, char **result, const char **err);
void cmd__load_clim(struct thingsd *td);

/* --- the HTTP API (http.c) ----------------------------------------------- */

int http__start(struct thingsd *td);
void http__stop(struct thingsd *td);
/* The running site changed (reload, deploy): its key checks signatures. */
void http__set_site(struct thingsd *td);
/* The node is about to be freed: answer what waits on it. */
void http__node_gone(struct thingsd *td);
/* Server-sent events to every watcher. `json` is one event's data. */
void http__broadcast(struct thingsd *td, const char *event, const char *json);
size_t http__watchers(const struct thingsd *td);
size_t http__pending(const struct thingsd *td);
uint16_t http__port(const struct thingsd *td);

/* --- deploy (deploy.c) ---------------------------------------------------- */

/* Checks a signed deploy envelope (see deploy.c), validates and swaps in the
 * site.conf it carries; *why explains a refusal. -EBADMSG: not signed, not
 * an envelope, or not for this site and controller; -ESTALE: not newer than
 * the running file; TSYNC_EKEY: no site key. */
int deploy__apply(struct thingsd *td, uint64_t serial, const char *tag_hex, const void *body, size_t len,
                  char **why);
void deploy__load_serial(struct thingsd *td);

/* --- helpers (util.c) ------------------------------------------------------ */

int td__hex_decode(const char *hex, unsigned char *out, size_t outlen);
void td__hex_encode(const unsigned char *in, size_t len, char *out);
/* A value as JSON (jansson json_t *), or NULL for none. */
void *td__value_json(const tsync_value *v);
/* A JSON value (json_t *) into a thing's type; strings are parsed. *str holds a copy. */
int td__value_from_json(tsync_type type, const void *json, tsync_value *out, char **str);

#endif /* THINGSD_H */
