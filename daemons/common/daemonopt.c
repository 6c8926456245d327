/*
 * daemons/common: the command line and start-up that the role daemons share
 * (daemonopt.h).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>

#include "daemonopt.h"
#include "httpd.h"
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

int daemonopt__http_addr(const struct daemonopt *d, const tsync_site *site, const char *name, bool use_bind,
                         const struct logger *log, char *host, size_t hostlen, uint16_t *port)
{
	tsync_controller_info ci;

	if (d->http_listen) {
		if (httpd__split_listen(d->http_listen, host, hostlen, port) < 0) {
			log_error(log, "--http %s: want ADDR:PORT", d->http_listen);
			return -EINVAL;
		}
		return 1;
	}
	if (tsync_site_controller(site, (size_t)tsync_site_controller_find(site, name), &ci) < 0 ||
	    ci.tcp_port == 0)
		return 0;
	snprintf(host, hostlen, "%s", use_bind && d->bind_host ? d->bind_host : ci.host);
	*port = ci.tcp_port;
	return 1;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct daemonsig *s = arg;

	(void)what;
	log_info(s->log, "signal %d: stopping", (int)sig);
	event_base_loopexit(s->base, NULL);
}

int daemonopt__signals_start(struct daemonsig *s, struct event_base *base, const struct logger *log)
{
	static const int sigs[2] = {SIGINT, SIGTERM};

	s->base = base;
	s->log = log;
	for (size_t i = 0; i < 2; i++) {
		s->ev[i] = evsignal_new(base, sigs[i], on_signal, s);
		if (!s->ev[i] || evsignal_add(s->ev[i], NULL) < 0)
			return -ENOMEM;
	}
	return 0;
}

void daemonopt__signals_free(struct daemonsig *s)
{
	for (size_t i = 0; i < 2; i++) {
		if (s->ev[i])
			event_free(s->ev[i]);
		s->ev[i] = NULL;
	}
}
