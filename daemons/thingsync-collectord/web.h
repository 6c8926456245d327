/*
 * thingsync-collectord's pages (GET /, /ui/...): sources, alarms and
 * measurements in a browser, on the read API. Their files are built into the
 * binary (daemons/thingsync-collectord/web/, embed.py).
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_COLLECTOR_WEB_H
#define TSYNC_COLLECTOR_WEB_H

#include <stdbool.h>

struct collector;
struct evhttp_request;

/* Answers GET / and /ui/... from the built-in files; false: not one of them. */
bool web__serve(struct collector *c, struct evhttp_request *req, const char *path);

/* GET /v1/things: the things some source receives (name, type, owner,
 * limits), for the measurements page's choice. */
void web__things(struct collector *c, struct evhttp_request *req);

#endif
