/*
 * thingsd -c SITE.CONF -n CONTROLLER [-s STATE_DIR] [-v]
 *
 * The IO controller daemon; see thingsd(8). This file only reads the
 * command line; daemon.c does the rest.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <linux/close_range.h>
#endif

#include <curl/curl.h>

#include "daemonopt.h"
#include "thingsd.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: thingsd -c SITE.CONF -n CONTROLLER [-s STATE_DIR] [-v]\n"
	           "               [--http-bind ADDRESS|host] [--require-signature]\n"
	           "               [--http-max-connections N]\n"
	           "               [--allow-machine-reboot] [--busy-poll US]\n"
	           "\n"
	           "Runs one controller of a thingsync site: owns its things through their\n"
	           "drivers, keeps the copies it uses, answers commands, serves an HTTP API on\n"
	           "the controller's tcp_port, and on its / a dashboard for a browser (signed\n"
	           "with `thingsctl token` where the API wants signatures).\n"
	           "\n"
	           "  -c, --config FILE        site.conf (required)\n"
	           "  -n, --name NAME          this controller's name in site.conf (required)\n"
	           "  -s, --state DIR          state directory (LMDB): owned values survive restarts\n"
	           "  -v, --verbose            log every exchange (debug level)\n"
	           "      --http-bind ADDR     HTTP API address (default 127.0.0.1; `host` is the\n"
	           "                           controller's host). Off loopback every request\n"
	           "                           but GET /metrics must be signed with the site key.\n"
	           "      --require-signature  require signed requests on loopback too\n"
	           "      --http-max-connections N  HTTP connections at once (default 64)\n"
	           "      --http-request-timeout S  seconds a client has to send a whole request\n"
	           "                           (default 10)\n"
	           "      --allow-machine-reboot  let `reboot` with reboot_not_exit reboot the machine\n"
	           "      --busy-poll US       after a send whose answer is awaited from a near peer,\n"
	           "                           read the socket without sleeping for at most US\n"
	           "                           microseconds (1..1000; default off; ignored on one CPU)\n"
	           "  -h, --help               this text\n"
	           "  -V, --version            the version\n"
	           "\n"
	           "Signals: SIGHUP reloads site.conf (a bad file is rejected and the running one\n"
	           "kept), SIGTERM and SIGINT stop cleanly. Exit status: 0 stopped, 1 failed,\n"
	           "2 usage, 3 site.conf invalid. See thingsd(8).\n");
}

/* optarg as a number in [min, max], or a usage message naming the option. */
static int uint_arg(const char *opt, uint64_t min, uint64_t max, const char *unit, uint64_t *out)
{
	if (daemonopt__uint(optarg, min, max, out) == 0)
		return 0;
	fprintf(stderr, "thingsd: %s wants %llu..%llu%s\n", opt, (unsigned long long)min,
	        (unsigned long long)max, unit);
	return -1;
}

int main(int argc, char **argv)
{
	enum { OPT_BIND = 256, OPT_MAXCONN, OPT_TIMEOUT, OPT_REQUIRE, OPT_REBOOT, OPT_BUSY };
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"name", required_argument, NULL, 'n'},
	    {"state", required_argument, NULL, 's'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"http-bind", required_argument, NULL, OPT_BIND},
	    {"require-signature", no_argument, NULL, OPT_REQUIRE},
	    {"http-max-connections", required_argument, NULL, OPT_MAXCONN},
	    {"http-request-timeout", required_argument, NULL, OPT_TIMEOUT},
	    {"allow-machine-reboot", no_argument, NULL, OPT_REBOOT},
	    {"busy-poll", required_argument, NULL, OPT_BUSY},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	static struct thingsd td;
	uint64_t n;
	int c, r;

	while ((c = getopt_long(argc, argv, "c:n:s:vhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			td.opt.conf_path = optarg;
			break;
		case 'n':
			td.opt.controller = optarg;
			break;
		case 's':
			td.opt.state_dir = optarg;
			break;
		case 'v':
			td.opt.verbose = true;
			break;
		case OPT_BIND:
			td.opt.http_bind = optarg;
			break;
		case OPT_MAXCONN:
			if (uint_arg("--http-max-connections", 1, 100000, "", &n) < 0)
				return 2;
			td.opt.http_max_connections = (size_t)n;
			break;
		case OPT_TIMEOUT:
			if (uint_arg("--http-request-timeout", 1, 3600, " seconds", &n) < 0)
				return 2;
			td.opt.http_request_timeout_s = (unsigned)n;
			break;
		case OPT_BUSY:
			if (uint_arg("--busy-poll", 1, 1000, " microseconds", &n) < 0)
				return 2;
			td.opt.busy_poll_us = (unsigned)n;
			break;
		case OPT_REQUIRE:
			td.opt.require_signature = true;
			break;
		case OPT_REBOOT:
			td.opt.allow_machine_reboot = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("thingsd %s (libthingsync %s)\n", THINGSD_VERSION, TSYNC_VERSION_STRING);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || !td.opt.conf_path || !td.opt.controller) {
		usage(stderr);
		return 2;
	}
	td.argv = argv;
	tdlog__init(td.opt.controller, td.opt.verbose ? TSYNC_LOG_DEBUG : TSYNC_LOG_INFO);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		td_error("cannot initialise libcurl");
		return 1;
	}
	r = daemon__run(&td);
	curl_global_cleanup();
	if (r == 0 && td.reboot) {
		/* The reboot command: the same program, the same arguments, a new
		 * boot. Nothing but stdin, stdout and stderr may reach the new
		 * image: ours are close-on-exec already, and this marks any a
		 * library left without the flag. */
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 34)
		close_range(3, ~0u, CLOSE_RANGE_CLOEXEC);
#endif
		execv("/proc/self/exe", argv);
		td_error("cannot restart: %s", strerror(errno));
		return 1;
	}
	return r;
}
