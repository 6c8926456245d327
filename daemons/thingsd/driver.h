/*
 * thingsd drivers: how an owned thing reaches its hardware.
 *
 * site.conf gives each thing a driver string, `KIND[:ARGS] [OPTION=VALUE...]`:
 *
 *   virtual                              the value lives in the node (LMDB)
 *   file:PATH [interval=MS] [scale=F] [offset=F] [format=w1] [invert]
 *   exec:PROGRAM [ARG...] [interval=MS] [timeout=MS]
 *   evok:URL [interval=MS] [timeout=MS] [scale=F] [offset=F]
 *   gpio:CHIP:LINE [invert] [interval=MS]     (with libgpiod)
 *
 * Common options: interval (poll period; 0 reads once), timeout, scale and
 * offset (value = raw * scale + offset), format=w1 (a 1-wire w1_slave file),
 * invert (a bool that is 1 when the raw value is 0).
 *
 * Reads are asynchronous and end in driver__read_done(); writes are
 * synchronous, because libthingsync's write hook is: the owner answers a set
 * request with the resulting state (as_is) in the same call.
 * SPDX-License-Identifier: MIT
 */
#ifndef THINGSD_DRIVER_H
#define THINGSD_DRIVER_H

#include "thingsd.h"

#define DRIVER_ERR_LEN 200

struct driver;

struct driver_ops {
	const char *kind;
	uint32_t default_interval_ms; /* 0: not polled */
	uint32_t default_timeout_ms;
	/* Checks the driver's own arguments (d->args); no side effects. */
	int (*parse)(struct driver *d, char *err, size_t errlen);
	/* Acquires resources; NULL when there are none. A failure counts as a
	 * read failure and is retried at the next poll. */
	int (*start)(struct driver *d, char *err, size_t errlen);
	void (*stop)(struct driver *d);
	/* Starts a read that ends in driver__read_done(), maybe before it
	 * returns. NULL: nothing to read (virtual). */
	void (*read)(struct driver *d);
	/* Writes `to_be`; *as_is is preset to to_be and may be changed.
	 * NULL: read-only. */
	int (*write)(struct driver *d, const tsync_value *to_be, tsync_value *as_is, char *err,
	             size_t errlen);
	/* Called on SIGCHLD (exec). */
	void (*child)(struct driver *d);
};

struct driver {
	const struct driver_ops *ops;
	struct owned *thing; /* NULL while only parsed */
	struct thingsd *td;
	tsync_type type;
	char *spec;  /* the whole string from site.conf */
	char **args; /* the words after KIND: that are not options */
	size_t n_args;

	uint32_t interval_ms;
	uint32_t timeout_ms;
	double scale, offset;
	bool scaled;
	bool w1;
	bool invert;

	struct event *poll_ev;
	bool started;
	bool busy; /* a read is running */
	bool read_failing, write_failing;
	bool write_pending; /* the value must still reach the hardware */
	uint64_t reads, read_errors, writes, write_errors;
	uint64_t next_poll_us;
	char last_error[DRIVER_ERR_LEN];
	char *text_buf; /* the last string reading */

	void *priv; /* the kind's own state */
};

/*
 * Parses a driver string for a thing of `type`. `mine` says whether this
 * controller would run it (a kind that is not built in is an error only
 * then). *ret is NULL for a kind not built here on another controller.
 */
int driver__parse(const char *spec, tsync_type type, bool mine, struct driver **ret, char *err,
                  size_t errlen);
void driver__free(struct driver *d);

/* Attaches a parsed driver to its thing and starts it: outputs get their
 * value written, inputs are read and polled. */
void driver__start(struct driver *d, struct owned *o);

/* The end of a read: `text` is the raw reading, or err < 0 with `why`. */
void driver__read_done(struct driver *d, int err, const char *why, const char *text);

/* Writes through the driver, with the crash/recovery log pair. */
int driver__write(struct driver *d, const tsync_value *to_be, tsync_value *as_is);

/* Raw text <-> value with scaling, w1 and invert. */
int driver__from_text(struct driver *d, const char *text, tsync_value *out, char *err, size_t errlen);
int driver__to_text(struct driver *d, const tsync_value *v, char *buf, size_t len);

/* SIGCHLD: let every driver reap its children. */
void driver__child(struct thingsd *td);

/* The kinds. */
extern const struct driver_ops driver_virtual_ops;
extern const struct driver_ops driver_file_ops;
extern const struct driver_ops driver_exec_ops;
extern const struct driver_ops driver_evok_ops;
#ifdef THINGSD_HAVE_GPIOD
extern const struct driver_ops driver_gpio_ops;
#endif

/* evok shares one libcurl multi handle per daemon. */
void driver_evok__global_cleanup(void);

#endif /* THINGSD_DRIVER_H */
