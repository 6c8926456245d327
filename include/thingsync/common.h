/*
 * thingsync — brokerless peer-to-peer mesh for home and building automation.
 * SPDX-License-Identifier: MIT
 *
 * common.h: error codes, values, logging. Included by <thingsync/thingsync.h>.
 */
#ifndef THINGSYNC_COMMON_H
#define THINGSYNC_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define TSYNC_API __attribute__((visibility("default")))
#else
#define TSYNC_API
#endif

#define TSYNC_VERSION_MAJOR  0
#define TSYNC_VERSION_MINOR  1
#define TSYNC_VERSION_PATCH  0
#define TSYNC_VERSION_STRING "0.1.0"

/**
 * Error codes.
 *
 * Every function that can fail returns 0 or a negative number: either a
 * negative errno (-ENOMEM, -EINVAL, -ENOENT, ...) or one of these codes, which
 * live in a reserved range well below any errno value.
 */
enum tsync_error {
	TSYNC_ERR_FIRST = -31000,
	TSYNC_ESITE = -31000,           /**< site.conf is invalid (see the error text) */
	TSYNC_EUNKNOWN_THING = -30999,  /**< no thing of that name in site.conf */
	TSYNC_EUNKNOWN_CTRL = -30998,   /**< no controller of that name in site.conf */
	TSYNC_ENOT_USED = -30997,       /**< this controller neither owns nor uses the thing */
	TSYNC_EVALUE = -30996,          /**< value of the wrong type or out of its limits */
	TSYNC_EREFUSED = -30995,        /**< the peer refused the request (err_ip_in_refused) */
	TSYNC_ENO_PULSE = -30994,       /**< the thing may not be pulsed */
	TSYNC_EPEER_RESTARTED = -30993, /**< the peer restarted before answering; outcome unknown */
	TSYNC_ECMD = -30992,            /**< unknown role or command at the peer (err_ip_in_cmd) */
	TSYNC_ECMD_ARGS = -30991,       /**< the peer's handler rejected the arguments (err_cmd_args) */
	TSYNC_ESTORE = -30990,          /**< the LMDB state store failed */
	TSYNC_EKEY = -30989,            /**< site key missing, unreadable, too open or malformed */
	TSYNC_ECANCELED = -30988,       /**< the node was freed before the answer came */
	TSYNC_EWRITE = -30987,          /**< the owner could not act: its output or handler failed
	                                     (err_write_crash); the act may not have happened */
	TSYNC_ERR_LAST = -30987,
};

/**
 * Describes an error code returned by any thingsync function.
 *
 * @param err 0, a negative errno or a TSYNC_E* code.
 * @return a static string, never NULL.
 */
TSYNC_API const char *tsync_strerror(int err);

/** The value types a thing can have (site.conf `type = bool|int|float|string`). */
typedef enum tsync_type {
	TSYNC_TYPE_NONE = 0, /**< no value yet */
	TSYNC_TYPE_BOOL = 1,
	TSYNC_TYPE_INT = 2,
	TSYNC_TYPE_FLOAT = 3,
	TSYNC_TYPE_STRING = 4,
} tsync_type;

/**
 * A thing's value. For TSYNC_TYPE_STRING, `s` is NUL-terminated; who owns it is
 * said by each function that takes or returns a value.
 */
typedef struct tsync_value {
	tsync_type type;
	union {
		bool b;
		int64_t i;
		double f;
		const char *s;
	} u;
} tsync_value;

/** Builds a bool value. */
static inline tsync_value tsync_bool(bool b)
{
	tsync_value v;
	v.type = TSYNC_TYPE_BOOL;
	v.u.b = b;
	return v;
}

/** Builds an int value. */
static inline tsync_value tsync_int(int64_t i)
{
	tsync_value v;
	v.type = TSYNC_TYPE_INT;
	v.u.i = i;
	return v;
}

/** Builds a float value. */
static inline tsync_value tsync_float(double f)
{
	tsync_value v;
	v.type = TSYNC_TYPE_FLOAT;
	v.u.f = f;
	return v;
}

/** Builds a string value; `s` is borrowed by the value. */
static inline tsync_value tsync_string(const char *s)
{
	tsync_value v;
	v.type = TSYNC_TYPE_STRING;
	v.u.s = s;
	return v;
}

/**
 * Formats a value as text the way thingsctl prints it (`1`, `0`, `21.5`,
 * `"on"` as `on`).
 *
 * @param v   the value, borrowed.
 * @param buf where to write, NUL-terminated, truncated if too small.
 * @param len size of buf.
 * @return the length the full text needs (like snprintf), or -EINVAL.
 */
TSYNC_API int tsync_value_format(const tsync_value *v, char *buf, size_t len);

/**
 * Parses text into a value of the given type ("1", "true", "on" for bools;
 * decimal integers; floats; any text for strings).
 *
 * @param type  the wanted type.
 * @param text  the text, borrowed.
 * @param out   receives the value; for strings `out->u.s` points into `text`.
 * @return 0, or TSYNC_EVALUE if the text is not of that type.
 */
TSYNC_API int tsync_value_parse(tsync_type type, const char *text, tsync_value *out);

/** Name of a type as site.conf spells it ("bool", "int", "float", "string"). */
TSYNC_API const char *tsync_type_name(tsync_type type);

/** Log levels, most severe first. */
typedef enum tsync_log_level {
	TSYNC_LOG_ERROR = 0,
	TSYNC_LOG_WARN = 1,
	TSYNC_LOG_INFO = 2,
	TSYNC_LOG_DEBUG = 3,
} tsync_log_level;

/**
 * Log callback. The library never prints: it hands each event, one line
 * without a trailing newline, to this function.
 *
 * @param userdata as given with the callback.
 * @param level    severity.
 * @param line     the text, borrowed for the duration of the call.
 */
typedef void (*tsync_log_fn)(void *userdata, tsync_log_level level, const char *line);

/** Name of a log level ("error", "warn", "info", "debug"). */
TSYNC_API const char *tsync_log_level_name(tsync_log_level level);

/**
 * Parses a log level name as tsync_log_level_name() spells it (for the
 * daemons' -v/--log-level options).
 * @return 0, or -EINVAL for any other text.
 */
TSYNC_API int tsync_log_level_parse(const char *name, tsync_log_level *out);

#ifdef __cplusplus
}
#endif

#endif /* THINGSYNC_COMMON_H */
