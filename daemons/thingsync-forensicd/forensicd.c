/*
 * thingsync-forensicd: main. A node of the mesh with the forensics role;
 * its parts are handed the daemon's state: collect.c (the mesh: the day's
 * end, collection, push), report.c (the report and report_command), api.c
 * (HTTP). Its history is the node's records (tsync_node_record_put()),
 * committed with the requests it sends.
 *
 * Its clock is the day clock of the cumuls (util__day_clock_us(): the real
 * one, or THINGSYNC_TEST_CLOCK's file in tests), read at every tick, so a
 * test moves the whole site through midnights without waiting for them.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/event.h>

#include "daemonnode.h"
#include "forensicd.h"
#include "httpd.h"
#include "statedir.h"

/* How often the clock is looked at: midnight is found within this. */
#define TICK_MS      1000
#define TEST_TICK_MS 100

static const char usage_text[] =
    "usage: thingsync-forensicd --site FILE --controller NAME --state-dir DIR [options]\n"
    "\n"
    "A thingsync controller with the forensics role: at local midnight it sends the\n"
    "seed's end-of-day reset to every owner, collects each closed day's cumuls of\n"
    "every thing over the mesh, keeps them (LMDB, forensic_days), serves them over\n"
    "HTTP, answers the report command and sends each day to the push controller.\n"
    "\n"
    "  -s, --site FILE            site.conf\n"
    "  -c, --controller NAME      this controller's name (it must have the role forensics)\n"
    "  -d, --state-dir DIR        state: DIR/node (the node's LMDB, with the history)\n"
    "      --bind HOST            UDP address to bind instead of the controller's host\n"
    "      --http ADDR:PORT       the HTTP API; default the controller's host and\n"
    "                             tcp_port in site.conf, none if unset\n"
    "  -v, --log-level LEVEL      error, warn, info (default) or debug\n"
    "  -h, --help                 this text\n"
    "\n"
    "Tests: THINGSYNC_TEST_CLOCK=FILE makes the day clock the time written in FILE\n"
    "(seconds since the epoch), read at every tick.\n";

static void log_stderr(void *ud, tsync_log_level level, const char *line)
{
	(void)ud;
	fprintf(stderr, "%s: %s\n", tsync_log_level_name(level), line);
}

/* --- dates ------------------------------------------------------------------------- */

int64_t forensicd__now_us(void)
{
	return util__day_clock_us();
}

/* Days since 1970-01-01 of a civil date, and back (H. Hinnant's algorithms). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	int64_t era;
	unsigned doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = (unsigned)(z - era * 146097);
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	*y = (int64_t)yoe + era * 400;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y += *m <= 2;
}

bool forensicd__valid_date(const char *s)
{
	unsigned y, m, d;
	char tail;

	if (!s || strlen(s) != DATE_LEN || s[4] != '-' || s[7] != '-')
		return false;
	for (size_t i = 0; i < DATE_LEN; i++)
		if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
			return false;
	if (sscanf(s, "%4u-%2u-%2u%c", &y, &m, &d, &tail) != 3)
		return false;
	return m >= 1 && m <= 12 && d >= 1 && d <= 31;
}

void forensicd__date_add(const char *day, int days, char out[DATE_LEN + 1])
{
	unsigned y = 1970, m = 1, d = 1;
	int64_t yy;

	if (sscanf(day, "%4u-%2u-%2u", &y, &m, &d) != 3) {
		y = 1970;
		m = d = 1;
	}
	civil_from_days(days_from_civil(y, m, d) + days, &yy, &m, &d);
	snprintf(out, DATE_LEN + 1, "%04u-%02u-%02u", (unsigned)yy % 10000u, m % 100u, d % 100u);
}

void forensicd__today(struct forensicd *fd, char out[DATE_LEN + 1])
{
	int64_t m;

	if (cumul__midnight(fd->isite->timezone, forensicd__now_us(), 0, &m, out) < 0)
		snprintf(out, DATE_LEN + 1, "1970-01-01");
}

void forensicd__commit(struct forensicd *fd)
{
	int r = tsync_node_commit(fd->node);

	if (r < 0)
		log_error(&fd->log, "state commit failed: %s (retried with the next change)",
		          tsync_strerror(r));
}

int forensicd__put(struct forensicd *fd, const char *key, const char *value)
{
	int r = tsync_node_record_put(fd->node, key, value);

	if (r < 0) {
		fd->records_failed++;
		log_error(&fd->log, "records: cannot stage %s: %s", key, tsync_strerror(r));
	}
	return r;
}

int forensicd__get(struct forensicd *fd, const char *key, char **value)
{
	return tsync_node_record_get(fd->node, key, value);
}

int forensicd__scan(struct forensicd *fd, const char *from, const char *to, tsync_record_fn fn, void *ud)
{
	int r = tsync_node_record_scan(fd->node, from, to, fn, ud);

	if (r < 0)
		log_error(&fd->log, "records: cannot read %s..%s: %s", from ? from : "", to ? to : "",
		          tsync_strerror(r));
	return r;
}

static void count_cb(void *ud, const char *key, const char *value)
{
	(void)key;
	(void)value;
	(*(size_t *)ud)++;
}

size_t forensicd__count(struct forensicd *fd, const char *from, const char *to)
{
	size_t n = 0;

	forensicd__scan(fd, from, to, count_cb, &n);
	return n;
}

/* --- life cycle --------------------------------------------------------------------- */

static void chld_cb(evutil_socket_t s, short what, void *arg)
{
	(void)s;
	(void)what;
	report__child(arg);
}

static void tick_cb(evutil_socket_t s, short what, void *arg)
{
	struct forensicd *fd = arg;

	(void)s;
	(void)what;
	collect__tick(fd);
}

static int parse_args(int argc, char **argv, struct forensicd_options *o)
{
	static const struct option longopts[] = {
	    DAEMONOPT_LONG_SITE,
	    DAEMONOPT_LONG_STATE,
	    DAEMONOPT_LONG_NET,
	    DAEMONOPT_LONG_END,
	};
	int c, r;

	/* forensicd has no options of its own. */
	while ((c = getopt_long(argc, argv, DAEMONOPT_SHORT, longopts, NULL)) != -1) {
		r = daemonopt__handle(&o->common, c, optarg);
		if (r < 0)
			return r;
	}
	return daemonopt__finish(&o->common, optind, argc, true);
}

static int run(struct forensicd *fd)
{
	struct forensicd_options *o = &fd->opt;
	struct timeval tv;
	int r, ix;
	tsync_controller_info ci;
	bool role = false;

	r = daemonopt__load_site(&o->common, &fd->log, &fd->site);
	if (r < 0)
		return r;
	fd->isite = (const struct tsync_site *)fd->site;
	ix = tsync_site_controller_find(fd->site, o->common.controller);
	if (ix < 0 || tsync_site_controller(fd->site, (size_t)ix, &ci) < 0) {
		log_error(&fd->log, "%s: no controller %s", o->common.site_path, o->common.controller);
		return TSYNC_EUNKNOWN_CTRL;
	}
	for (size_t k = 0; k < ci.n_roles; k++)
		role |= !strcmp(ci.roles[k], "forensics");
	if (!role) {
		log_error(&fd->log, "%s:%d: controller %s has no role forensics", o->common.site_path,
		          ci.line, o->common.controller);
		return -EINVAL;
	}
	if (!tsync_site_has_key(fd->site))
		log_warn(&fd->log, "%s has no key_file: the mesh runs unauthenticated (legacy mode)",
		         o->common.site_path);
	r = daemonnode__start(&o->common, fd->site, &fd->log, NULL, &fd->base, &fd->node, &fd->state_unusable);
	if (r < 0)
		return r;
	fd->name = tsync_node_name(fd->node);
	r = daemonnode__mark(&o->common, &fd->log, fd->name, "node");
	if (r < 0)
		return r;
	r = collect__init(fd);
	if (r < 0)
		return r;
	r = tsync_node_on_cmd(fd->node, "forensics", "report", report__cmd, fd);
	if (r < 0)
		return r;
	r = api__start(fd);
	if (r < 0)
		return r;
	fd->tick_ev = event_new(fd->base, -1, EV_PERSIST, tick_cb, fd);
	fd->chld_ev = evsignal_new(fd->base, SIGCHLD, chld_cb, fd);
	if (!fd->tick_ev || !fd->chld_ev || evsignal_add(fd->chld_ev, NULL) < 0 ||
	    daemonopt__signals_start(&fd->sig, fd->base, &fd->log) < 0)
		return -ENOMEM;
	{
		const char *tc = getenv(UTIL_TEST_CLOCK_ENV);
		unsigned ms = tc && *tc ? TEST_TICK_MS : TICK_MS;
		tv.tv_sec = ms / 1000;
		tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
		if (tc && *tc)
			log_warn(&fd->log, "day clock from %s (%s): for tests only", tc, UTIL_TEST_CLOCK_ENV);
	}
	event_add(fd->tick_ev, &tv);
	{
		char today[DATE_LEN + 1];
		forensicd__today(fd, today);
		log_info(&fd->log,
		         "forensics role up: boot %" PRIu64
		         ", udp %u, today %s (%s), %zu owners, push to %s, "
		         "%zu records kept",
		         tsync_node_boot(fd->node), tsync_node_port(fd->node), today,
		         fd->isite->timezone ? fd->isite->timezone : "local time", fd->n_owners,
		         fd->push_to ? fd->push_to : "(none)", forensicd__count(fd, NULL, NULL));
	}
	collect__resume_pushes(fd);
	collect__tick(fd);
	event_base_dispatch(fd->base);
	return 0;
}

static void cleanup(struct forensicd *fd)
{
	report__stop(fd);
	if (fd->chld_ev)
		event_free(fd->chld_ev);
	httpd__free(fd->http);
	if (fd->tick_ev)
		event_free(fd->tick_ev);
	if (fd->acks_pending)
		collect__acks_commit(fd);
	/* Freeing the node commits what is staged, the records with it. */
	tsync_node_free(fd->node);
	collect__free(fd);
	daemonopt__signals_free(&fd->sig);
	if (fd->base)
		event_base_free(fd->base);
	tsync_site_free(fd->site);
}

int main(int argc, char **argv)
{
	struct forensicd fd;
	int r;

	memset(&fd, 0, sizeof(fd));
	daemonopt__init(&fd.opt.common, "thingsync-forensicd", usage_text);
	if (parse_args(argc, argv, &fd.opt) < 0)
		return 2;
	fd.log.fn = log_stderr;
	fd.log.level = fd.opt.common.log_level;
	fd.log.prefix = fd.opt.common.controller;
	signal(SIGPIPE, SIG_IGN);
	r = run(&fd);
	if (r < 0)
		log_error(&fd.log, "exiting: %s", tsync_strerror(r));
	cleanup(&fd);
	if (fd.state_unusable)
		return STATEDIR_EXIT_UNUSABLE;
	return r < 0 ? 1 : 0;
}
