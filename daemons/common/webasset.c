/*
 * webasset: serving the files built into a daemon (webasset.h).
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "webasset.h"

#define CSP                                                                                          \
	"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "            \
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

const struct webasset *webasset__find(const struct webasset *table, const char *path)
{
	for (const struct webasset *a = table; a && a->path; a++)
		if (!strcmp(a->path, path))
			return a;
	return NULL;
}

/* A weak tag of the content: FNV-1a of the bytes and the length. */
static void etag_of(const struct webasset *a, char *out, size_t len)
{
	unsigned long long h = 1469598103934665603ull;

	for (size_t i = 0; i < a->len; i++)
		h = (h ^ a->data[i]) * 1099511628211ull;
	snprintf(out, len, "\"%016llx-%zx\"", h, a->len);
}

bool webasset__serve(const struct webasset *table, struct evhttp_request *req, const char *path)
{
	const struct webasset *a = webasset__find(table, path);
	struct evkeyvalq *out;
	const char *inm;
	struct evbuffer *b;
	char tag[48];

	if (!a)
		return false;
	out = evhttp_request_get_output_headers(req);
	etag_of(a, tag, sizeof(tag));
	evhttp_add_header(out, "Content-Type", a->type);
	evhttp_add_header(out, "Cache-Control", "no-cache");
	evhttp_add_header(out, "ETag", tag);
	evhttp_add_header(out, "Content-Security-Policy", CSP);
	evhttp_add_header(out, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(out, "X-Frame-Options", "DENY");
	evhttp_add_header(out, "Referrer-Policy", "no-referrer");
	inm = evhttp_find_header(evhttp_request_get_input_headers(req), "If-None-Match");
	if (inm && !strcmp(inm, tag)) {
		evhttp_send_reply(req, 304, "Not Modified", NULL);
		return true;
	}
	b = evbuffer_new();
	if (!b) {
		evhttp_send_error(req, 500, NULL);
		return true;
	}
	evbuffer_add_reference(b, a->data, a->len, NULL, NULL);
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
	return true;
}

bool webasset__wants_html(struct evhttp_request *req)
{
	const char *acc = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");

	return acc && strstr(acc, "text/html") != NULL;
}
