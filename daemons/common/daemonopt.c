/*
 * daemons/common: the command line and start-up that the role daemons share
 * (daemonopt.h).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "daemonopt.h"
#include "util/util.h"

void daemonopt__init(struct daemonopt *d, const char *name, const char *usage)
{
	*d = (struct daemonopt){.name = name, .usage = usage, .log_level = TSYNC_LOG_INFO};
}

int daemonopt__handle(struct daemonopt *d, int c, const char *arg)
{
	switch (c) {
	case 's':
		d->site_path = arg;
		return 0;
	case 'c':
		d->controller = arg;
		return 0;
	case 'd':
		d->state_dir = arg;
		return 0;
	case DAEMONOPT_BIND:
		d->bind_host = arg;
		return 0;
	case DAEMONOPT_HTTP:
		d->http_listen = arg;
		return 0;
	case 'v':
		if (tsync_log_level_parse(arg, &d->log_level) < 0) {
			fprintf(stderr, "%s: bad log level: %s\n", d->name, arg);
			return -EINVAL;
		}
		return 0;
	case 'h':
		/* A daemon's --help is the whole answer: nothing else is started. */
		fputs(d->usage, stdout);
		exit(0);
	default:
		/* getopt has already said what was wrong with the option. */
		fputs(d->usage, stderr);
		return -EINVAL;
	}
}

int daemonopt__finish(const struct daemonopt *d, int optind, int argc, bool node)
{
	if (optind < argc || !d->site_path || (node && (!d->controller || !d->state_dir))) {
		if (node)
			fprintf(stderr, "%s: --site, --controller and --state-dir are required\n", d->name);
		else
			fprintf(stderr, "%s: --site is required\n", d->name);
		fputs(d->usage, stderr);
		return -EINVAL;
	}
	return 0;
}

int daemonopt__uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long x;

	/* strtoull takes a sign and wraps "-1" around: refuse it before. */
	if (*s == '-')
		return -EINVAL;
	errno = 0;
	x = strtoull(s, &end, 10);
	if (errno || end == s || *end || x < min || x > max)
		return -EINVAL;
	*out = x;
	return 0;
}

int daemonopt__bad(const struct daemonopt *d, const char *arg)
{
	fprintf(stderr, "%s: bad option value: %s\n", d->name, arg);
	return -EINVAL;
}

int daemonopt__load_site(const struct daemonopt *d, const struct logger *log, tsync_site **ret)
{
	char *errors = NULL;
	int r = tsync_site_load(d->site_path, ret, &errors);

	if (r < 0) {
		if (errors)
			fputs(errors, stderr);
		else
			log_error(log, "%s: %s", d->site_path, tsync_strerror(r));
		free(errors);
	}
	return r;
}
