/*
 * webasset: the files of a daemon's web page, built into its binary (a
 * generated table, see daemons/common/web/embed.py), served as they are:
 * no file system, no build step at run time.
 *
 * Every answer carries a Content-Security-Policy that allows only the
 * server's own scripts, styles and connections (no inline script, no CDN),
 * refuses framing (no click-jacking of the controls) and nosniff.
 *
 * Internal to the daemons (daemons/common): not installed.
 * SPDX-License-Identifier: MIT
 */
#ifndef THINGSYNC_COMMON_WEBASSET_H
#define THINGSYNC_COMMON_WEBASSET_H

#include <stdbool.h>
#include <stddef.h>

struct evhttp_request;

struct webasset {
	const char *path; /* "/", "/ui/app.js" */
	const char *type; /* Content-Type */
	const unsigned char *data;
	size_t len;
};

/* A generated table ends with a NULL path. */
const struct webasset *webasset__find(const struct webasset *table, const char *path);

/*
 * Answers a GET of `path` from `table` (200, or 304 when the client's
 * If-None-Match is the asset's tag).
 * @return true if the table has it (answered), false if not (nothing sent).
 */
bool webasset__serve(const struct webasset *table, struct evhttp_request *req, const char *path);

/* Whether the request's Accept prefers a page (a browser) over JSON. */
bool webasset__wants_html(struct evhttp_request *req);

#endif
