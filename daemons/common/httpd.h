/*
 * httpd: the HTTP server every thingsync daemon's API stands on (libevent's
 * evhttp underneath), with the rules they all follow written once:
 *
 *  - Cross-site requests. A POST must say it is not a browser's cross-site
 *    form: `Content-Type: application/json`, or any `X-Thingsync-` header,
 *    which a browser cannot send to another site without a CORS preflight
 *    (and no CORS is ever allowed). A request whose Origin is not the
 *    server's own is refused, whatever its method.
 *  - Authentication before the body. Where a signature is required (off
 *    loopback, or asked for), the request's head carries the site-key
 *    signature of tsync_site_sign_request(), over the body's hash. It is
 *    checked, the time window and the replay cache included, as soon as the
 *    head has arrived: a request that fails is given no room for a body.
 *  - Bounded. Each route has its own body cap, refused before the body is
 *    read; connections are capped (the listener pauses at the cap, so the
 *    descriptors above it stay free for drivers); a request must arrive whole
 *    within a deadline (slow clients are cut off); an accept that fails for
 *    want of descriptors pauses accepting and is logged once with a count;
 *    refusals are logged at most once per interval per reason, counted
 *    exactly.
 *
 * Internal to the daemons (daemons/common): not installed.
 * SPDX-License-Identifier: MIT
 */
#ifndef THINGSYNC_COMMON_HTTPD_H
#define THINGSYNC_COMMON_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <thingsync/thingsync.h>

struct event_base;
struct evhttp_request;
struct evbuffer;
struct httpd;

enum {
	HTTPD_GET = 1u << 0,
	HTTPD_POST = 1u << 1,
};

#define HTTPD_DEFAULT_MAX_CONNECTIONS   64
#define HTTPD_DEFAULT_REQUEST_TIMEOUT_S 10
/* Descriptors kept free for everything else a daemon opens (drivers, exec
 * children's pipes, LMDB, curl): the connection cap is lowered to fit. */
#define HTTPD_FD_RESERVE 64
/* The X-Thingsync-To of the collector service: every thingsync-collectord of
 * a site answers to it (they share one database behind a load balancer). */
#define HTTPD_COLLECTOR_NAME "collector"
/* Bytes of headers per request. */
#define HTTPD_MAX_HEADERS (16 * 1024)

/* One route: what a path accepts. A table ends with a NULL path. */
struct httpd_route {
	const char *path; /* exact, or a prefix when it ends in '*' */
	unsigned methods; /* HTTPD_GET | HTTPD_POST */
	size_t max_body;  /* most bytes of a POST body (0: none) */
	bool open;        /* read-only and served without a signature (/metrics, /health) */
	bool signed_only; /* needs a signature even where the server does not require one */
};

/* Called for a request that passed every rule, its body read. `path` is the
 * decoded path without the query. The handler answers now or later (see
 * httpd__on_close for a request held open). */
typedef void (*httpd_handler_fn)(void *arg, struct evhttp_request *req, const char *path);

/* Told of every refusal (already answered, counted and logged), e.g. to
 * raise an alarm. `path` and the texts are borrowed for the call. */
typedef void (*httpd_refused_fn)(void *arg, const char *path, int status, const char *error);

struct httpd_config {
	struct event_base *base;
	const char *host; /* address to listen on (default 127.0.0.1) */
	uint16_t port;    /* 0: any free port (httpd__port tells) */
	const struct httpd_route *routes;
	httpd_handler_fn handler;
	httpd_refused_fn refused; /* may be NULL */
	void *arg;
	const tsync_site *site;     /* the key for signatures; borrowed (httpd__set_site) */
	const char *name;           /* who this server is: the X-Thingsync-To it accepts */
	bool require_signature;     /* on every request but the open routes */
	size_t max_connections;     /* 0: HTTPD_DEFAULT_MAX_CONNECTIONS */
	unsigned request_timeout_s; /* 0: HTTPD_DEFAULT_REQUEST_TIMEOUT_S */
	tsync_log_fn log;           /* may be NULL */
	void *log_ud;
};

/* Counters, exact. */
struct httpd_stats {
	uint64_t requests;      /* handed to the handler */
	uint64_t unauthorized;  /* refused for a missing, wrong, stale or replayed signature */
	uint64_t cross_site;    /* refused as a possible cross-site request */
	uint64_t too_large;     /* bodies refused before they were read */
	uint64_t refused;       /* other refusals: unknown path, method, bad head */
	uint64_t timeouts;      /* connections cut off for sending too slowly */
	uint64_t accept_paused; /* times the listener paused at the connection cap */
	uint64_t emfile;        /* accepts failed for want of descriptors */
	size_t connections;     /* open now */
	size_t max_connections; /* the cap in force */
};

/*
 * Listens and serves. Copies what it keeps of `cfg` except the routes, the
 * site and the base, which must outlive the server.
 * @return 0; -EINVAL; -EADDRINUSE and other errno of bind/listen; -ENOMEM.
 */
int httpd__new(const struct httpd_config *cfg, struct httpd **ret);
/* Closes every connection (their close hooks run) and the listener. Accepts NULL. */
void httpd__free(struct httpd *s);

uint16_t httpd__port(const struct httpd *s);
/* The site whose key checks signatures from now on (after a reload). */
void httpd__set_site(struct httpd *s, const tsync_site *site);
void httpd__stats(const struct httpd *s, struct httpd_stats *out);
/* Appends the counters to a Prometheus text page, names prefixed with `prefix`. */
void httpd__metrics(const struct httpd *s, const char *prefix, struct evbuffer *out);

/*
 * Calls fn(arg) once if the client of a request held open goes away before it
 * is answered; NULL fn cancels. One hook per connection.
 */
void httpd__on_close(struct httpd *s, struct evhttp_request *req, void (*fn)(void *arg), void *arg);

/* Answers with `body` as JSON (taken over; NULL sends {}). */
void httpd__reply_json(struct evhttp_request *req, int code, json_t *body);
/* Answers {"error": ERROR, "message": ...}. */
void httpd__error(struct evhttp_request *req, int code, const char *error, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The request's body as JSON, or NULL (with *why) when it is not. An empty
 * body gives NULL and *why NULL. */
json_t *httpd__body_json(struct evhttp_request *req, const char **why);

/*
 * Raises the soft limit of open descriptors to the hard limit, so that the
 * reserve and the connection cap have room. Returns the soft limit in force.
 */
unsigned long httpd__raise_nofile(void);

/* "ADDR:PORT" (an --http or --listen option) into host and port. 0 or -EINVAL. */
int httpd__split_listen(const char *spec, char *host, size_t hostlen, uint16_t *port);

/* Whether an address to listen on is loopback only (NULL counts: the default). */
bool httpd__is_loopback(const char *host);

/* --- the client side: signing a request -------------------------------------------------- */

/* The five headers of a signed request ("Name: value"), for libcurl. */
struct httpd_sig_headers {
	char to[96], time[48], nonce[64], body[96], sig[96];
};

/*
 * Fills `h` with the headers that sign METHOD TARGET with `body` for the
 * daemon named `to`, at the current time.
 * @return 0; TSYNC_EKEY when the site has no key; -EINVAL.
 */
int httpd__sign(const tsync_site *site, const char *to, const char *method, const char *target,
                const void *body, size_t len, struct httpd_sig_headers *h);

#endif
