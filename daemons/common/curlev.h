/*
 * curlev: libcurl's multi interface driven by a libevent loop (the
 * "hiperfifo" pattern: one event per socket libcurl asks for, one timer),
 * for daemons that must not block their loop on HTTP. Shared by pushd (its
 * sender) and the collector (its webhook).
 * SPDX-License-Identifier: MIT
 */
#ifndef THINGSYNC_COMMON_CURLEV_H
#define THINGSYNC_COMMON_CURLEV_H

#include <stddef.h>

struct event_base;
struct curlev;

/* Most bytes of a response body kept; the rest is dropped (and counted as truncated). */
#define CURLEV_MAX_RESPONSE ((size_t)1 << 20)

/*
 * Completion of a request. `error` is NULL when an HTTP answer came (any
 * status), else libcurl's description of the transport failure (status 0).
 * `body` is the response, NUL-terminated, borrowed for the call.
 */
typedef void (*curlev_done_fn)(void *ud, int status, const char *error, const char *body, size_t len);

/* 0, -ENOMEM or -EIO. curl_global_init() must have been called. */
int curlev__new(struct event_base *base, struct curlev **ret);

/* Frees the multi handle; requests in flight are dropped without their callback. Accepts NULL. */
void curlev__free(struct curlev *c);

/*
 * POSTs `body` (copied) to `url` with the extra `headers` ("Name: value",
 * NULL-terminated list, copied). `cacert` may be NULL (system store).
 * `done` is called exactly once, from the loop, never from inside this call.
 * 0, -EINVAL or -ENOMEM.
 */
int curlev__post(struct curlev *c, const char *url, const char *const *headers, const char *body, size_t len,
                 long timeout_ms, const char *cacert, curlev_done_fn done, void *ud);

/* GETs `url` (a probe, say), the same way. 0, -EINVAL or -ENOMEM. */
int curlev__get(struct curlev *c, const char *url, const char *const *headers, long timeout_ms,
                const char *cacert, curlev_done_fn done, void *ud);

/* Requests in flight. */
int curlev__running(const struct curlev *c);

/*
 * The response body of a blocking easy handle (a tool's or a test's request):
 * CURLOPT_WRITEFUNCTION curlev__body_write, CURLOPT_WRITEDATA a zeroed
 * struct curlev_body. `data` is NUL-terminated and malloc'ed (the caller
 * frees it), NULL while nothing came.
 */
struct curlev_body {
	char *data;
	size_t len;
};
size_t curlev__body_write(char *p, size_t size, size_t n, void *ud);

#endif
