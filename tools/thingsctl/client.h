/*
 * thingsctl: the HTTP client side (libcurl) and how a controller's API is
 * found from site.conf.
 * SPDX-License-Identifier: MIT
 */
#ifndef THINGSCTL_CLIENT_H
#define THINGSCTL_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <thingsync/thingsync.h>

/* Exit codes a script can rely on (thingsctl(1)). */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,        /* anything else: a server error, bad output */
	EXIT_USAGE = 2,       /* wrong command line */
	EXIT_UNKNOWN = 3,     /* unknown thing or controller, or not used there */
	EXIT_REFUSED = 4,     /* refused: not settable, bad value, command refused, deploy rejected */
	EXIT_TIMEOUT = 5,     /* no answer in time (the request may still be retried) */
	EXIT_AUTH = 6,        /* the API refused our signature (or we have no key to sign with) */
	EXIT_UNREACHABLE = 7, /* no thingsd answers at that address */
	EXIT_ACT_FAILED = 8,  /* taken, but the act failed at the owner (err_write_crash) */
};

#define TSYNC_MAX_APIS 256

struct ctl {
	const char *conf_path;
	tsync_site *site; /* NULL when site.conf could not be loaded */
	char *site_errors;
	int site_err;
	const char *name;  /* -n */
	const char *url;   /* --url */
	const char *url_to; /* -n with --url: whom requests to --url are signed for */
	/* Whom each API address found in site.conf belongs to: requests to it
	 * are signed for that controller (with the site key, when it has one). */
	struct {
		char *base, *name;
	} apis[TSYNC_MAX_APIS];
	size_t n_apis;
	bool json;
	double timeout_s;
	bool verbose;
};

struct reply {
	long status;  /* HTTP status, 0 if no answer */
	int curl_err; /* 0, or a CURLcode */
	char *body;
	size_t len;
	void *json; /* json_t *, NULL if the body is not JSON */
};

/* The base URL of a controller's API ("http://127.0.0.1:8101"), malloc'ed. */
char *client__url_of(struct ctl *c, const char *controller, char *err, size_t errlen);

/* One request. `body` may be NULL. Extra headers are "Name: value" strings. */
int client__request(struct ctl *c, const char *base, const char *method, const char *path, const char *body,
                    size_t body_len, const char *const *headers, struct reply *out);
void client__reply_free(struct reply *r);
/* Frees what client__url_of() remembered. */
void client__free(struct ctl *c);

/* A JSON value as thingsctl prints it ("-" for none, 1/0 for bools). */
void client__value_text(json_t *v, char *buf, size_t len);

/* An exit code for an answer, and a one-line explanation on stderr. */
int client__exit_code(const struct reply *r, const char *what);

typedef bool (*client_event_fn)(void *ud, const char *event, const char *data);
/* Streams /events until fn returns false, the time is up (0: never) or it fails. */
int client__stream(struct ctl *c, const char *base, const char *path, double seconds, client_event_fn fn,
                   void *ud, struct reply *out);

#endif
