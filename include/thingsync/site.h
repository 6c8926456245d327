/*
 * thingsync — site.conf: every controller and every thing of one site.
 * SPDX-License-Identifier: MIT
 */
#ifndef THINGSYNC_SITE_H
#define THINGSYNC_SITE_H

#include <thingsync/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A parsed, validated site.conf. Immutable once loaded; safe to share. */
typedef struct tsync_site tsync_site;

/**
 * Loads and validates a site.conf (and its key file, if `key_file` is set).
 *
 * Every mistake found is reported, not only the first, each as one line
 * `FILE:LINE: message` in `*errors`.
 *
 * @param path    the file, borrowed.
 * @param ret     receives the site (owned by the caller, free with
 *                tsync_site_free()); written only on success.
 * @param errors  if not NULL, receives on failure a NUL-terminated text with
 *                one line per error (owned by the caller, release with free());
 *                set to NULL on success.
 * @return 0; -ENOENT or another negative errno if the file cannot be read;
 *         TSYNC_ESITE if it is invalid; TSYNC_EKEY if the key file is missing,
 *         malformed or readable by group/others; -ENOMEM.
 */
TSYNC_API int tsync_site_load(const char *path, tsync_site **ret, char **errors);

/** Frees a site. Accepts NULL. Nodes built on it must be freed first. */
TSYNC_API void tsync_site_free(tsync_site *site);

/** The site's name (`[site] name`); borrowed, valid until tsync_site_free(). */
TSYNC_API const char *tsync_site_name(const tsync_site *site);

/** The path the site was loaded from; borrowed, valid until tsync_site_free(). */
TSYNC_API const char *tsync_site_path(const tsync_site *site);

/** Whether a site key is configured (authenticated mode) or not (legacy mode). */
TSYNC_API bool tsync_site_has_key(const tsync_site *site);

/** Number of controllers. */
TSYNC_API size_t tsync_site_controller_count(const tsync_site *site);

/** Number of things. */
TSYNC_API size_t tsync_site_thing_count(const tsync_site *site);

/**
 * One controller as site.conf describes it. All pointers are borrowed from
 * the site and valid until tsync_site_free().
 */
typedef struct tsync_controller_info {
	const char *name;
	const char *host;
	uint16_t udp_port;
	uint16_t tcp_port;
	size_t n_roles;
	const char *const *roles;
	bool seed_protocol; /**< `protocol = seed`: speaks the seed's plain JSON lists */
	int line;           /**< line of its section in site.conf */
} tsync_controller_info;

/**
 * Describes controller number `idx` (0 .. count-1).
 * @return 0, or -ERANGE.
 */
TSYNC_API int tsync_site_controller(const tsync_site *site, size_t idx, tsync_controller_info *out);

/**
 * Finds a controller by name.
 * @return its index (>= 0), or TSYNC_EUNKNOWN_CTRL.
 */
TSYNC_API int tsync_site_controller_find(const tsync_site *site, const char *name);

/**
 * One thing as site.conf describes it. All pointers are borrowed from the site
 * and valid until tsync_site_free().
 */
typedef struct tsync_thing_info {
	const char *name;
	const char *owner; /**< the owning controller's name */
	tsync_type type;
	size_t n_users;
	const char *const *users; /**< names of the controllers that use it */
	bool settable;            /**< users may ask the owner to set it (to_be) */
	bool pulse;               /**< may be pulsed */
	uint32_t pulse_ms;        /**< default pulse duration */
	bool has_min, has_max;
	double min, max; /**< limits for int and float things */
	size_t n_allowed;
	const char *const *allowed; /**< allowed values (strings), if any */
	const char *driver;         /**< driver string for thingsd, or NULL */
	tsync_value initial;        /**< `initial =` value, or type NONE */
	int line;                   /**< line of its section in site.conf */
	const char *group;          /**< `group =`: where a dashboard shows it, or NULL */
} tsync_thing_info;

/**
 * Describes thing number `idx` (0 .. count-1).
 * @return 0, or -ERANGE.
 */
TSYNC_API int tsync_site_thing(const tsync_site *site, size_t idx, tsync_thing_info *out);

/**
 * Finds a thing by name.
 * @return its index (>= 0), or TSYNC_EUNKNOWN_THING.
 */
TSYNC_API int tsync_site_thing_find(const tsync_site *site, const char *name);

/**
 * Checks a value against a thing's type and limits, the way a receiving
 * controller does (err_ip_in_val).
 *
 * @return 0, or TSYNC_EVALUE (or TSYNC_EUNKNOWN_THING).
 */
TSYNC_API int tsync_site_check_value(const tsync_site *site, const char *thing, const tsync_value *v);

/** Bytes of a site-key tag (libsodium crypto_auth, HMAC-SHA-512-256). */
#define TSYNC_TAG_BYTES 32

/**
 * Computes the site-key tag of `data`: what controllers use to authenticate
 * anything they exchange outside the mesh protocol (a deployed site.conf, an
 * HTTP request between controllers).
 *
 * @param data  borrowed; may be NULL when len is 0.
 * @param tag   receives TSYNC_TAG_BYTES bytes.
 * @return 0; TSYNC_EKEY if the site has no key; -EINVAL.
 */
TSYNC_API int tsync_site_sign(const tsync_site *site, const void *data, size_t len,
                              uint8_t tag[TSYNC_TAG_BYTES]);

/**
 * Checks a site-key tag in constant time.
 * @return 0 if it is right; -EBADMSG if not; TSYNC_EKEY if the site has no key; -EINVAL.
 */
TSYNC_API int tsync_site_verify(const tsync_site *site, const void *data, size_t len,
                                const uint8_t tag[TSYNC_TAG_BYTES]);

/** Characters of a hex SHA-256 or request signature, without the NUL. */
#define TSYNC_HEX_BYTES 64

/**
 * The hex SHA-256 of `data` (lower case), as a signed HTTP request carries
 * it in `X-Thingsync-Body-SHA256`.
 *
 * @param data  borrowed; may be NULL when len is 0.
 * @param hex   receives TSYNC_HEX_BYTES characters and a NUL.
 */
TSYNC_API void tsync_sha256_hex(const void *data, size_t len, char hex[TSYNC_HEX_BYTES + 1]);

/**
 * Signs a request to a thingsync daemon's HTTP API with the site key
 * (thingsd(8), "Authentication"). The signature is the site-key tag, in hex,
 * of the text
 *
 *     thingsync-http-1 LF TO LF METHOD LF TARGET LF TIME LF NONCE LF BODY_SHA256
 *
 * where TO names the daemon the request is for (its controller), METHOD is
 * "GET" or "POST", TARGET is the path with its query exactly as sent, TIME is
 * the client's clock in seconds since the epoch (decimal), NONCE is a fresh
 * random string for each request (1 to 64 of A-Z a-z 0-9 _ -, sent in
 * X-Thingsync-Nonce), so two equal requests in one second differ, and
 * BODY_SHA256 is
 * tsync_sha256_hex() of the body (of the empty string when there is none),
 * sent in X-Thingsync-Body-SHA256. The daemon checks it on the
 * headers, before it reads the body, refuses a TIME more than
 * TSYNC_HTTP_WINDOW_S seconds away from its own clock, and refuses a
 * signature it has already accepted (replay).
 *
 * @param to, method, target, nonce, body_sha256  borrowed NUL-terminated strings.
 * @param sig  receives TSYNC_HEX_BYTES characters and a NUL.
 * @return 0; TSYNC_EKEY if the site has no key; -EINVAL.
 */
TSYNC_API int tsync_site_sign_request(const tsync_site *site, const char *to, const char *method,
                                      const char *target, int64_t time_s, const char *nonce,
                                      const char *body_sha256, char sig[TSYNC_HEX_BYTES + 1]);

/**
 * Checks a request signature made by tsync_site_sign_request(), in constant
 * time. It does not look at the time window or replays: that is the server's.
 *
 * @return 0 if it is right; -EBADMSG if not (or not hex of the right length);
 *         TSYNC_EKEY if the site has no key; -EINVAL.
 */
TSYNC_API int tsync_site_verify_request(const tsync_site *site, const char *to, const char *method,
                                        const char *target, int64_t time_s, const char *nonce,
                                        const char *body_sha256, const char *sig);

/** How far (seconds) a signed request's time may be from the server's clock. */
#define TSYNC_HTTP_WINDOW_S 30

/**
 * Writes a new random site key (libsodium `crypto_auth` key, hex) to `path`
 * with mode 0600. Fails if the file exists.
 *
 * @return 0, -EEXIST, or another negative errno.
 */
TSYNC_API int tsync_key_generate(const char *path);

#ifdef __cplusplus
}
#endif

#endif /* THINGSYNC_SITE_H */
