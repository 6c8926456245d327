/*
 * thingsctl: the command line of a thingsync site.
 *
 *   thingsctl [-c SITE.CONF] [-n CONTROLLER | --url URL] [--json] COMMAND ...
 *
 * It reads site.conf to find each controller's HTTP API (thingsd) and talks
 * to it; the API speaks the mesh protocol for it. Without -n, a command
 * about a thing goes to the thing's owner. See thingsctl(1).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cum.h" /* includes client.h */
#include "client.h"
#include "httpd.h"

#define DEFAULT_SITE "/etc/thingsync/site.conf"

static void usage(FILE *f)
{
	fprintf(f, "usage: thingsctl [-c SITE.CONF] [-n CONTROLLER | --url URL] [--json] [-t SECONDS]\n"
	           "                 COMMAND [ARGS...]\n"
	           "\n"
	           "Commands:\n"
	           "  get [THING...]                 values (without THING: all of -n's things)\n"
	           "  set THING VALUE                asks for a value (to_be); prints the result (as_is)\n"
	           "  pulse THING [VALUE] [--ms MS]  pulses a thing\n"
	           "  ask THING                      a user (-n) asks the owner for the value again\n"
	           "  cum THING [--day DATE] [--to CONTROLLER]\n"
	           "                                 the thing's cumulative statistics of today (or of a\n"
	           "                                 closed day), from its owner (or --to's refusal)\n"
	           "  cmd [--to CONTROLLER] [--type TYPE] ROLE CMD [JSON]\n"
	           "                                 a command, e.g. cmd --to PI-Light cmd_do logging\n"
	           "                                 '{\"kwargs\":{\"reason\":\"hello\"}}'\n"
	           "  watch [THING...] [--count N]   prints changes, pulses and peers as they happen\n"
	           "  peers                          the counters of -n's peers\n"
	           "  status                         one controller (-n), or every controller of the site\n"
	           "  reload                         -n re-reads its site.conf\n"
	           "  deploy [--force] [--to CTRL[,CTRL...]] NEW_SITE.CONF\n"
	           "                                 sends a new site.conf to every controller (or -n,\n"
	           "                                 or --to's), signed for those alone\n"
	           "  keygen FILE                    writes a new site key (mode 0600)\n"
	           "  token                          the site's dashboard token, for a browser (thingsd(8))\n"
	           "  recover --from TIME --to TIME  asks the recovery controller (-n, or the site's\n"
	           "                                 role recovery) to recover a window: TIME is\n"
	           "                                 seconds since the epoch, YYYY-MM-DDTHH:MM[:SS]\n"
	           "                                 (local), now, or now-90m / now-2h / now-1d\n"
	           "\n"
	           "Options:\n"
	           "  -c, --config FILE   site.conf (default $THINGSYNC_SITE or " DEFAULT_SITE ")\n"
	           "  -n, --name NAME     the controller whose API to use\n"
	           "      --url URL       the API's address instead (e.g. http://127.0.0.1:8101);\n"
	           "                      with -n too, the requests are signed for that controller\n"

	           "  -j, --json          JSON output\n"
	           "  -t, --timeout S     seconds to wait for an answer (default 5)\n"
	           "  -v, --verbose       show the HTTP requests\n"
	           "  -h, --help          this text\n"
	           "\n"
	           "Exit status: 0 ok, 1 failure, 2 usage, 3 unknown thing or controller,\n"
	           "4 refused, 5 timeout, 6 not authorized (signature), 7 unreachable,\n"
	           "8 the owner took it but could not act (err_write_crash).\n");
}

/* --- helpers ------------------------------------------------------------------- */

static int load_site(struct ctl *c)
{
	c->site_err = tsync_site_load(c->conf_path, &c->site, &c->site_errors);
	return c->site_err;
}

static int need_site(struct ctl *c)
{
	if (c->site)
		return 0;
	fprintf(stderr, "thingsctl: cannot load %s: %s\n", c->conf_path, tsync_strerror(c->site_err));
	if (c->site_errors)
		fputs(c->site_errors, stderr);
	return EXIT_FAIL;
}

static int thing_info(struct ctl *c, const char *thing, tsync_thing_info *ti)
{
	int idx;

	if (need_site(c))
		return EXIT_FAIL;
	idx = tsync_site_thing_find(c->site, thing);
	if (idx < 0 || tsync_site_thing(c->site, (size_t)idx, ti) < 0) {
		fprintf(stderr, "thingsctl: %s: no such thing in %s\n", thing, c->conf_path);
		return EXIT_UNKNOWN;
	}
	return 0;
}

/* The API to use: --url, -n, or the given default controller. */
static char *base_for(struct ctl *c, const char *dflt)
{
	char err[256];
	char *url;

	if (c->url)
		return strdup(c->url);
	if (!c->name && !dflt) {
		fprintf(stderr, "thingsctl: which controller? give -n CONTROLLER or --url URL\n");
		return NULL;
	}
	if (need_site(c))
		return NULL;
	url = client__url_of(c, c->name ? c->name : dflt, err, sizeof(err));
	if (!url)
		fprintf(stderr, "thingsctl: %s\n", err);
	return url;
}

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
	if (s)
		printf("%s\n", s);
	free(s);
}

static void print_thing(json_t *t, const char *extra)
{
	char v[512];
	json_t *pulsing = json_object_get(t, "pulsing");

	client__value_text(json_object_get(t, "value"), v, sizeof(v));
	printf("%s = %s", json_string_value(json_object_get(t, "name")), v);
	if (json_is_true(json_object_get(t, "owned")))
		printf("  (owner");
	else
		printf("  (copy from %s", json_string_value(json_object_get(t, "owner")));
	if (json_is_false(json_object_get(t, "driver_ok")))
		printf(", driver failing: %s", json_string_value(json_object_get(t, "driver_error")));
	if (pulsing) {
		char pv[64];
		client__value_text(json_object_get(pulsing, "value"), pv, sizeof(pv));
		printf(", pulsing %s for %lld ms more", pv,
		       (long long)json_integer_value(json_object_get(pulsing, "remaining_ms")));
	}
	printf("%s%s)\n", extra ? ", " : "", extra ? extra : "");
}

/* The exit code of a set, pulse or command: an act that failed at the owner
 * (its output or handler) is neither a refusal nor success, and a script
 * that opens a door must be able to tell. */
static int act_exit_code(const struct reply *r, const char *what)
{
	int rc = client__exit_code(r, what);
	const char *err = r->json ? json_string_value(json_object_get(r->json, "error")) : NULL;

	if (rc != EXIT_OK && err && !strcmp(err, "err_write_crash"))
		return EXIT_ACT_FAILED;
	return rc;
}

static char *wait_query(struct ctl *c)
{
	char *q = NULL;
	if (asprintf(&q, "?wait_ms=%ld", (long)(c->timeout_s * 1000)) < 0)
		return NULL;
	return q;
}

/* --- commands ----------------------------------------------------------------------- */

static int cmd_get(struct ctl *c, int argc, char **argv)
{
	struct reply r;
	int rc = EXIT_OK;

	if (argc == 0) {
		char *base = base_for(c, NULL);
		size_t i;
		json_t *t;
		if (!base)
			return EXIT_USAGE;
		client__request(c, base, "GET", "/things", NULL, 0, NULL, &r);
		free(base);
		rc = client__exit_code(&r, "get");
		if (rc == EXIT_OK) {
			if (c->json)
				print_json(r.json);
			else
				json_array_foreach(json_object_get(r.json, "things"), i, t)
				    print_thing(t, NULL);
		}
		client__reply_free(&r);
		return rc;
	}
	for (int i = 0; i < argc; i++) {
		tsync_thing_info ti = {0};
		char *base, path[128];
		int one;
		if (!c->url && !c->name && (one = thing_info(c, argv[i], &ti)) != 0) {
			rc = one;
			continue;
		}
		base = base_for(c, c->url || c->name ? NULL : ti.owner);
		if (!base)
			return EXIT_USAGE;
		snprintf(path, sizeof(path), "/things/%s", argv[i]);
		client__request(c, base, "GET", path, NULL, 0, NULL, &r);
		free(base);
		one = client__exit_code(&r, argv[i]);
		if (one == EXIT_OK) {
			if (c->json)
				print_json(r.json);
			else
				print_thing(r.json, NULL);
		} else {
			rc = one;
		}
		client__reply_free(&r);
	}
	return rc;
}

static int cmd_set(struct ctl *c, int argc, char **argv)
{
	tsync_thing_info ti = {0};
	struct reply r;
	char *base, path[160], *q, *body;
	int rc;

	if (argc != 2) {
		fprintf(stderr, "usage: thingsctl set THING VALUE\n");
		return EXIT_USAGE;
	}
	if (!c->url && !c->name && (rc = thing_info(c, argv[0], &ti)) != 0)
		return rc;
	base = base_for(c, c->url || c->name ? NULL : ti.owner);
	if (!base)
		return EXIT_USAGE;
	q = wait_query(c);
	snprintf(path, sizeof(path), "/things/%s%s", argv[0], q ? q : "");
	free(q);
	{
		json_t *b = json_pack("{s:s}", "value", argv[1]);
		body = json_dumps(b, JSON_COMPACT);
		json_decref(b);
	}
	client__request(c, base, "POST", path, body, body ? strlen(body) : 0, NULL, &r);
	free(body);
	free(base);
	rc = act_exit_code(&r, argv[0]);
	if (rc == EXIT_OK || (rc == EXIT_TIMEOUT && r.status == 202) ||
	    (r.status == 403 && r.json && json_object_get(r.json, "name"))) {
		if (c->json)
			print_json(r.json);
		else
			print_thing(r.json, rc == EXIT_OK     ? "confirmed"
			                    : r.status == 202 ? "NOT confirmed yet"
			                                      : "refused");
	}
	client__reply_free(&r);
	return rc;
}

static int cmd_pulse(struct ctl *c, int argc, char **argv)
{
	tsync_thing_info ti = {0};
	struct reply r;
	json_t *b;
	char *base, path[160], *q, *body;
	const char *thing = NULL, *value = NULL;
	long ms = -1;
	int rc;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--ms") && i + 1 < argc) {
			char *end;
			ms = strtol(argv[++i], &end, 10);
			if (*end || ms < 0) {
				fprintf(stderr, "thingsctl: --ms takes milliseconds\n");
				return EXIT_USAGE;
			}
		} else if (!thing) {
			thing = argv[i];
		} else if (!value) {
			value = argv[i];
		} else {
			fprintf(stderr, "usage: thingsctl pulse THING [VALUE] [--ms MS]\n");
			return EXIT_USAGE;
		}
	}
	if (!thing) {
		fprintf(stderr, "usage: thingsctl pulse THING [VALUE] [--ms MS]\n");
		return EXIT_USAGE;
	}
	if (!c->url && !c->name && (rc = thing_info(c, thing, &ti)) != 0)
		return rc;
	base = base_for(c, c->url || c->name ? NULL : ti.owner);
	if (!base)
		return EXIT_USAGE;
	q = wait_query(c);
	snprintf(path, sizeof(path), "/things/%s/pulse%s", thing, q ? q : "");
	free(q);
	b = json_object();
	if (value)
		json_object_set_new(b, "value", json_string(value));
	if (ms >= 0)
		json_object_set_new(b, "ms", json_integer(ms));
	body = json_dumps(b, JSON_COMPACT);
	json_decref(b);
	client__request(c, base, "POST", path, body, body ? strlen(body) : 0, NULL, &r);
	free(body);
	free(base);
	rc = act_exit_code(&r, thing);
	if (rc == EXIT_OK) {
		if (c->json)
			print_json(r.json);
		else
			printf("%s: pulse acknowledged by its owner\n", thing);
	}
	client__reply_free(&r);
	return rc;
}

static int cmd_ask(struct ctl *c, int argc, char **argv)
{
	tsync_thing_info ti = {0};
	struct reply r;
	char *base, path[160], *q;
	const char *user = NULL;
	int rc;

	if (argc != 1) {
		fprintf(stderr, "usage: thingsctl [-n USER] ask THING\n");
		return EXIT_USAGE;
	}
	if (!c->url && !c->name) {
		if ((rc = thing_info(c, argv[0], &ti)) != 0)
			return rc;
		/* The first user with an API asks; the owner would only answer itself. */
		for (size_t i = 0; i < ti.n_users && !user; i++) {
			int idx = tsync_site_controller_find(c->site, ti.users[i]);
			tsync_controller_info ci;
			if (idx >= 0 && tsync_site_controller(c->site, (size_t)idx, &ci) == 0 && ci.tcp_port)
				user = ci.name;
		}
		if (!user)
			user = ti.owner;
	}
	base = base_for(c, user);
	if (!base)
		return EXIT_USAGE;
	q = wait_query(c);
	snprintf(path, sizeof(path), "/things/%s/ask%s", argv[0], q ? q : "");
	free(q);
	client__request(c, base, "POST", path, "{}", 2, NULL, &r);
	free(base);
	rc = client__exit_code(&r, argv[0]);
	if (rc == EXIT_OK) {
		if (c->json)
			print_json(r.json);
		else
			print_thing(r.json, "fresh");
	}
	client__reply_free(&r);
	return rc;
}

static int cmd_cmd(struct ctl *c, int argc, char **argv)
{
	const char *to = NULL, *type = "cmd", *pos[3] = {NULL, NULL, NULL};
	int npos = 0, rc;
	struct reply r;
	json_t *b;
	char *base, *body, *q, path[64];

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--to") && i + 1 < argc)
			to = argv[++i];
		else if (!strcmp(argv[i], "--type") && i + 1 < argc)
			type = argv[++i];
		else if (npos < 3)
			pos[npos++] = argv[i];
		else
			npos = 4;
	}
	/* A command: ROLE CMD [JSON]; another type: [JSON]. */
	if (!strcmp(type, "cmd") ? (npos < 2 || npos > 3) : npos > 1) {
		fprintf(stderr, "usage: thingsctl cmd [--to CONTROLLER] ROLE CMD [JSON]\n"
		                "       thingsctl cmd [--to CONTROLLER] --type TYPE [JSON]\n");
		return EXIT_USAGE;
	}
	{
		const char *args = !strcmp(type, "cmd") ? pos[2] : pos[0];
		json_error_t jerr;
		b = args ? json_loads(args, 0, &jerr) : json_object();
		if (!json_is_object(b)) {
			fprintf(
			    stderr,
			    "thingsctl: the arguments must be a JSON object, e.g. '{\"kwargs\":{...}}'\n");
			json_decref(b);
			return EXIT_USAGE;
		}
	}
	if (!strcmp(type, "cmd")) {
		json_object_set_new(b, "role", json_string(pos[0]));
		json_object_set_new(b, "cmd", json_string(pos[1]));
	}
	json_object_set_new(b, "type", json_string(type));
	/* Through -n's API (the mesh carries it to --to), or straight to --to's. */
	if (!c->url && !c->name && !to && !strcmp(type, "cmd") && c->site) {
		size_t n = tsync_site_controller_count(c->site);
		for (size_t i = 0; i < n && !to; i++) {
			tsync_controller_info ci;
			tsync_site_controller(c->site, i, &ci);
			for (size_t k = 0; k < ci.n_roles && !to; k++)
				if (!strcmp(ci.roles[k], pos[0]) && ci.tcp_port)
					to = ci.name;
		}
	}
	if (to)
		json_object_set_new(b, "to", json_string(to));
	base = base_for(c, to);
	if (!base) {
		json_decref(b);
		return EXIT_USAGE;
	}
	body = json_dumps(b, JSON_COMPACT);
	json_decref(b);
	q = wait_query(c);
	snprintf(path, sizeof(path), "/cmd%s", q ? q : "");
	free(q);
	client__request(c, base, "POST", path, body, body ? strlen(body) : 0, NULL, &r);
	free(body);
	free(base);
	rc = act_exit_code(&r, !strcmp(type, "cmd") ? pos[1] : type);
	if (rc == EXIT_OK) {
		json_t *res = json_object_get(r.json, "result");
		if (c->json)
			print_json(r.json);
		else if (!res || json_is_null(res))
			printf("ok\n");
		else
			print_json(res);
	}
	client__reply_free(&r);
	return rc;
}

struct watch {
	struct ctl *c;
	long count, seen;
};

static bool watch_event(void *ud, const char *event, const char *data)
{
	struct watch *w = ud;
	json_error_t jerr;
	json_t *j;
	char v[512], ts[32];
	time_t now = time(NULL);
	struct tm tm;

	if (!strcmp(event, "hello")) {
		j = json_loads(data, 0, &jerr);
		fprintf(stderr, "watching %s\n",
		        j ? json_string_value(json_object_get(j, "controller")) : "?");
		json_decref(j);
		return true;
	}
	localtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
	if (w->c->json) {
		printf("{\"event\":\"%s\",\"data\":%s}\n", event, data);
	} else {
		j = json_loads(data, 0, &jerr);
		client__value_text(j ? json_object_get(j, "value") : NULL, v, sizeof(v));
		if (!strcmp(event, "changed"))
			printf("%s %s = %s (%s %s)\n", ts, json_string_value(json_object_get(j, "thing")), v,
			       json_is_true(json_object_get(j, "owned")) ? "owner, by" : "from",
			       json_string_value(json_object_get(j, "from")));
		else if (!strcmp(event, "pulse"))
			printf("%s %s pulsed %s for %lld ms (from %s)\n", ts,
			       json_string_value(json_object_get(j, "thing")), v,
			       (long long)json_integer_value(json_object_get(j, "ms")),
			       json_string_value(json_object_get(j, "from")));
		else if (!strcmp(event, "pulse_end"))
			printf("%s %s back to %s after its pulse\n", ts,
			       json_string_value(json_object_get(j, "thing")), v);
		else if (!strcmp(event, "peer_up") || !strcmp(event, "peer_down"))
			printf("%s peer %s %s\n", ts, json_string_value(json_object_get(j, "peer")),
			       !strcmp(event, "peer_up") ? "up" : "DOWN");
		else
			printf("%s %s %s\n", ts, event, data);
		json_decref(j);
	}
	fflush(stdout);
	w->seen++;
	return !(w->count > 0 && w->seen >= w->count);
}

static int cmd_watch(struct ctl *c, int argc, char **argv)
{
	struct watch w = {c, 0, 0};
	char path[1024] = "/events", *base;
	size_t pl = strlen(path);
	struct reply r;
	int rc;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--count") && i + 1 < argc) {
			w.count = strtol(argv[++i], NULL, 10);
		} else {
			int n = snprintf(path + pl, sizeof(path) - pl, "%s%s", pl == 7 ? "?things=" : ",",
			                 argv[i]);
			if (n < 0 || (size_t)n >= sizeof(path) - pl) {
				fprintf(stderr, "thingsctl: too many things\n");
				return EXIT_USAGE;
			}
			pl += (size_t)n;
		}
	}
	base = base_for(c, NULL);
	if (!base)
		return EXIT_USAGE;
	/* -t bounds a watch only when a count is asked for: a bare watch
	 * runs until interrupted. */
	client__stream(c, base, path, w.count > 0 ? c->timeout_s : 0, watch_event, &w, &r);
	free(base);
	if (r.curl_err == CURLE_OPERATION_TIMEDOUT) {
		fprintf(stderr, "thingsctl: watch: %ld of %ld events before the timeout\n", w.seen, w.count);
		return EXIT_TIMEOUT;
	}
	if (w.count > 0 && w.seen >= w.count)
		return EXIT_OK;
	if (r.curl_err == CURLE_PARTIAL_FILE || r.curl_err == CURLE_RECV_ERROR ||
	    (r.curl_err == CURLE_OK && r.status == 200)) {
		fprintf(stderr,
		        "thingsctl: watch: the stream was closed (thingsd stopped or moved its API)\n");
		return EXIT_FAIL;
	}
	rc = client__exit_code(&r, "watch");
	return rc;
}

static int cmd_peers(struct ctl *c, int argc, char **argv)
{
	struct reply r;
	char *base = base_for(c, NULL);
	size_t i;
	json_t *p;
	int rc;

	if (!base)
		return EXIT_USAGE;
	client__request(c, base, "GET", "/peers", NULL, 0, NULL, &r);
	free(base);
	rc = client__exit_code(&r, "peers");
	if (rc != EXIT_OK) {
		client__reply_free(&r);
		return rc;
	}
	if (c->json) {
		print_json(r.json);
	} else {
		printf("%-16s %-4s %9s %9s %8s %8s %7s %9s %s\n", "PEER", "UP", "SENT", "RECEIVED", "RETRIES",
		       "ACKED", "PENDING", "SRTT_MS", "REJECTED");
		json_array_foreach(json_object_get(r.json, "peers"), i, p)
		{
			const char *k;
			json_t *v;
			printf("%-16s %-4s %9lld %9lld %8lld %8lld %7lld %9.2f ",
			       json_string_value(json_object_get(p, "name")),
			       json_is_true(json_object_get(p, "up")) ? "yes" : "NO",
			       (long long)json_integer_value(json_object_get(p, "datagrams_sent")),
			       (long long)json_integer_value(json_object_get(p, "datagrams_received")),
			       (long long)json_integer_value(json_object_get(p, "retransmits")),
			       (long long)json_integer_value(json_object_get(p, "acked")),
			       (long long)json_integer_value(json_object_get(p, "pending")),
			       json_number_value(json_object_get(p, "srtt_ms")));
			if (!json_object_size(json_object_get(p, "rejected")))
				printf("-");
			json_object_foreach(json_object_get(p, "rejected"), k, v)
			    printf("%s=%lld ", k, (long long)json_integer_value(v));
			printf("\n");
		}
	}
	client__reply_free(&r);
	return rc;
}

static int status_one(struct ctl *c, const char *base, const char *label, bool table)
{
	struct reply r;
	int rc;

	client__request(c, base, "GET", "/status", NULL, 0, NULL, &r);
	if (table) {
		if (r.curl_err || r.status != 200)
			printf("%-16s %s\n", label, r.curl_err ? "not answering" : "error");
		else
			printf("%-16s %-6s %20lld %6lld %5lld %9lld %5lld/%-5lld %s\n", label, "up",
			       (long long)json_integer_value(json_object_get(r.json, "boot")),
			       (long long)json_integer_value(json_object_get(r.json, "owned")),
			       (long long)json_integer_value(json_object_get(r.json, "used")),
			       (long long)json_integer_value(json_object_get(r.json, "unsettled")),
			       (long long)json_integer_value(json_object_get(r.json, "peers_up")),
			       (long long)json_integer_value(json_object_get(r.json, "peers")),
			       json_array_size(json_object_get(r.json, "drivers_failing")) ? "drivers failing"
			                                                                   : "");
		rc = r.curl_err || r.status != 200 ? EXIT_UNREACHABLE : EXIT_OK;
		client__reply_free(&r);
		return rc;
	}
	rc = client__exit_code(&r, "status");
	if (rc == EXIT_OK) {
		if (c->json) {
			print_json(r.json);
		} else {
			const char *k;
			json_t *v;
			json_object_foreach(r.json, k, v)
			{
				char t[512];
				if (json_is_array(v) || json_is_object(v)) {
					char *s = json_dumps(v, JSON_COMPACT);
					printf("%-16s %s\n", k, s ? s : "");
					free(s);
					continue;
				}
				client__value_text(v, t, sizeof(t));
				printf("%-16s %s\n", k, t);
			}
		}
	}
	client__reply_free(&r);
	return rc;
}

/* A controller of the site's server side runs a daemon other than thingsd,
 * with a status path of its own; the table says whether it answers there. */
static const struct {
	const char *role, *daemon, *path;
} role_daemons[] = {
    {"push", "thingsync-pushd", "/status"},
    {"collector", "thingsync-collectord", "/health"},
    {"recovery", "thingsync-recoveryd", "/v1/status"},
    {"forensics", "thingsync-forensicd", "/v1/status"},
};

static int status_role_daemon(struct ctl *c, const char *base, const tsync_controller_info *ci)
{
	struct reply r;
	int rc = -1;

	for (size_t k = 0; k < ci->n_roles && rc < 0; k++)
		for (size_t d = 0; d < sizeof(role_daemons) / sizeof(role_daemons[0]); d++) {
			if (strcmp(ci->roles[k], role_daemons[d].role) != 0)
				continue;
			client__request(c, base, "GET", role_daemons[d].path, NULL, 0, NULL, &r);
			printf("%-16s %-6s %s (GET %s)\n", ci->name,
			       r.curl_err ? "not answering" : r.status == 200 ? "up" : "error",
			       role_daemons[d].daemon, role_daemons[d].path);
			rc = r.curl_err || r.status != 200 ? EXIT_UNREACHABLE : EXIT_OK;
			client__reply_free(&r);
			break;
		}
	return rc;
}

static int cmd_status(struct ctl *c, int argc, char **argv)
{
	size_t n;
	int rc = EXIT_OK, r;

	if (c->url || c->name) {
		char *base = base_for(c, NULL);
		if (!base)
			return EXIT_USAGE;
		rc = status_one(c, base, c->name ? c->name : c->url, false);
		free(base);
		return rc;
	}
	if (need_site(c))
		return EXIT_FAIL;
	n = tsync_site_controller_count(c->site);
	printf("%-16s %-6s %20s %6s %5s %9s %11s\n", "CONTROLLER", "STATE", "BOOT", "OWNED", "USED",
	       "UNSETTLED", "PEERS_UP");
	for (size_t i = 0; i < n; i++) {
		tsync_controller_info ci;
		char err[256], *base;
		tsync_site_controller(c->site, i, &ci);
		if (!ci.tcp_port) {
			printf("%-16s no HTTP API (no tcp_port)\n", ci.name);
			continue;
		}
		base = client__url_of(c, ci.name, err, sizeof(err));
		if (base && (r = status_role_daemon(c, base, &ci)) < 0)
			r = status_one(c, base, ci.name, true);
		if (base && r != EXIT_OK)
			rc = EXIT_UNREACHABLE;
		free(base);
	}
	return rc;
}

static int cmd_reload(struct ctl *c, int argc, char **argv)
{
	struct reply r;
	char *base = base_for(c, NULL);
	int rc;

	if (!base)
		return EXIT_USAGE;
	client__request(c, base, "POST", "/reload", "", 0, NULL, &r);
	free(base);
	rc = client__exit_code(&r, "reload");
	if (rc == EXIT_OK)
		printf(c->json ? "{\"reload\":\"scheduled\"}\n" : "reload scheduled\n");
	client__reply_free(&r);
	return rc;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rbe");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && n <= 16 * 1024 * 1024 &&
	    fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)n + 1);
		if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		}
		if (buf) {
			buf[n] = '\0';
			*len = (size_t)n;
		}
	}
	fclose(f);
	return buf;
}

/*
 * The signed envelope a deploy sends; thingsd reads the same (deploy.c):
 * the site and the controllers it is for are signed with the file, so a
 * deploy captured on its way to one controller is refused by the others.
 */
static unsigned char *deploy_envelope(const char *site, const char *targets, uint64_t serial,
                                      const char *body, size_t len, size_t *outlen)
{
	char *head = NULL;
	int n = asprintf(&head, "thingsync-deploy 2\nsite %s\ntargets %s\nserial %llu\n\n", site, targets,
	                 (unsigned long long)serial);
	unsigned char *m = n < 0 ? NULL : malloc((size_t)n + len);

	if (m) {
		memcpy(m, head, (size_t)n);
		memcpy(m + n, body, len);
		*outlen = (size_t)n + len;
	}
	free(head);
	return m;
}

/* Whether the comma-separated `list` names `name`. */
static bool list_has(const char *list, const char *name)
{
	size_t nl = strlen(name);

	for (const char *p = list; p && *p;) {
		size_t l = strcspn(p, ",");
		if (l == nl && !strncmp(p, name, nl))
			return true;
		p += l + (p[l] == ',');
	}
	return false;
}

static int cmd_deploy(struct ctl *c, int argc, char **argv)
{
	const char *file = NULL, *to = NULL, *targets;
	bool force = false;
	size_t len, mlen;
	char *body, tag_hex[2 * TSYNC_TAG_BYTES + 1], hdr_tag[128], hdr_serial[64];
	uint8_t tag[TSYNC_TAG_BYTES];
	unsigned char *msg;
	uint64_t serial;
	struct timespec ts;
	int rc = EXIT_OK, r, targets_n = 0;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--force"))
			force = true;
		else if (!strcmp(argv[i], "--to") && i + 1 < argc)
			to = argv[++i];
		else if (!file)
			file = argv[i];
		else
			file = NULL, argc = -1;
	}
	if (!file || argc < 0 || (to && !*to)) {
		fprintf(stderr, "usage: thingsctl deploy [--force] [--to CTRL[,CTRL...]] NEW_SITE.CONF\n");
		return EXIT_USAGE;
	}
	if (need_site(c))
		return EXIT_FAIL;
	if (!tsync_site_has_key(c->site)) {
		fprintf(stderr, "thingsctl: %s has no key_file: a deploy is signed with the site key\n",
		        c->conf_path);
		return EXIT_REFUSED;
	}
	/* Whom it is for, signed with it: --to's, else -n's, else every one.
	 * --url alone cannot name its controller: it signs for all. */
	targets = to ? to : c->name ? c->name : "*";
	if (strcmp(targets, "*")) {
		for (const char *p = targets; *p;) {
			char name[128];
			size_t l = strcspn(p, ",");
			snprintf(name, sizeof(name), "%.*s", (int)(l < sizeof(name) ? l : sizeof(name) - 1),
			         p);
			if (!l || tsync_site_controller_find(c->site, name) < 0) {
				fprintf(stderr, "thingsctl: deploy: '%s' is not a controller of %s\n", name,
				        c->conf_path);
				return EXIT_UNKNOWN;
			}
			p += l + (p[l] == ',');
		}
		if (c->name && !list_has(targets, c->name)) {
			fprintf(stderr, "thingsctl: deploy: --to does not include -n %s\n", c->name);
			return EXIT_USAGE;
		}
	}
	body = read_file(file, &len);
	if (!body) {
		fprintf(stderr, "thingsctl: cannot read %s: %s\n", file, strerror(errno));
		return EXIT_FAIL;
	}
	if (!force) {
		tsync_site *check = NULL;
		char *errors = NULL;
		r = tsync_site_load(file, &check, &errors);
		tsync_site_free(check);
		if (r < 0) {
			fprintf(stderr, "thingsctl: %s is not valid (--force sends it anyway):\n%s", file,
			        errors ? errors : tsync_strerror(r));
			free(errors);
			free(body);
			return EXIT_REFUSED;
		}
		free(errors);
	}
	/* The serial grows with every deploy: the time, in milliseconds. */
	clock_gettime(CLOCK_REALTIME, &ts);
	serial = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
	msg = deploy_envelope(tsync_site_name(c->site), targets, serial, body, len, &mlen);
	free(body);
	if (!msg || tsync_site_sign(c->site, msg, mlen, tag) < 0) {
		fprintf(stderr, "thingsctl: cannot sign the deploy\n");
		free(msg);
		return EXIT_FAIL;
	}
	for (size_t i = 0; i < TSYNC_TAG_BYTES; i++)
		snprintf(tag_hex + 2 * i, 3, "%02x", tag[i]);
	snprintf(hdr_tag, sizeof(hdr_tag), "X-Thingsync-Tag: %s", tag_hex);
	snprintf(hdr_serial, sizeof(hdr_serial), "X-Thingsync-Serial: %llu", (unsigned long long)serial);
	{
		const char *headers[] = {hdr_tag, hdr_serial, "Content-Type: text/plain", NULL};
		size_t n = c->url || c->name ? 1 : tsync_site_controller_count(c->site);
		for (size_t i = 0; i < n; i++) {
			tsync_controller_info ci;
			const char *label;
			char err[256], *base;
			struct reply rep;
			int one;
			if (c->url || c->name) {
				base = base_for(c, NULL);
				label = c->name ? c->name : c->url;
			} else {
				tsync_site_controller(c->site, i, &ci);
				label = ci.name;
				if (to && !list_has(to, ci.name))
					continue;
				if (!ci.tcp_port) {
					printf("%-16s skipped: no tcp_port (copy the file by hand)\n",
					       ci.name);
					continue;
				}
				base = client__url_of(c, ci.name, err, sizeof(err));
			}
			if (!base) {
				rc = EXIT_FAIL;
				continue;
			}
			targets_n++;
			client__request(c, base, "POST", "/deploy", (const char *)msg, mlen, headers, &rep);
			free(base);
			if (rep.status == 200) {
				printf("%-16s deployed, reloading\n", label);
			} else {
				char what[128];
				printf("%-16s NOT deployed\n", label);
				snprintf(what, sizeof(what), "%s", label);
				one = client__exit_code(&rep, what);
				if (rc == EXIT_OK || one == EXIT_REFUSED)
					rc = one;
			}
			fflush(stdout);
			client__reply_free(&rep);
		}
	}
	free(msg);
	if (!targets_n && rc == EXIT_OK) {
		fprintf(stderr, "thingsctl: no controller with an HTTP API to deploy to\n");
		rc = EXIT_FAIL;
	}
	return rc;
}

static int cmd_keygen(struct ctl *c, int argc, char **argv)
{
	int r;

	if (argc != 1) {
		fprintf(stderr, "usage: thingsctl keygen FILE\n");
		return EXIT_USAGE;
	}
	r = tsync_key_generate(argv[0]);
	if (r < 0) {
		fprintf(stderr, "thingsctl: keygen %s: %s\n", argv[0], tsync_strerror(r));
		return r == -EEXIST ? EXIT_REFUSED : EXIT_FAIL;
	}
	printf("wrote a new site key to %s (mode 0600); copy it to every controller and set key_file\n",
	       argv[0]);
	return EXIT_OK;
}

/* The dashboard token: what a browser pastes to sign; reads and sets things,
 * cannot deploy, reload or run commands (httpd__dashboard_token). */
static int cmd_token(struct ctl *c, int argc, char **argv)
{
	uint8_t token[TSYNC_TAG_BYTES];
	char hex[2 * TSYNC_TAG_BYTES + 1];
	int r;

	if (argc != 0) {
		fprintf(stderr, "usage: thingsctl token\n");
		return EXIT_USAGE;
	}
	r = httpd__dashboard_token(c->site, token);
	if (r < 0) {
		fprintf(stderr, "thingsctl: token: %s (site.conf needs a key_file)\n", tsync_strerror(r));
		return EXIT_FAIL;
	}
	for (size_t i = 0; i < sizeof(token); i++)
		snprintf(hex + 2 * i, 3, "%02x", token[i]);
	printf("%s\n", hex);
	return EXIT_OK;
}

/* --- recover (thingsync-recoveryd's POST /v1/recover) ----------------------------- */

/* A time of the command line as seconds since the epoch. 0 or -EINVAL. */
static int parse_time(const char *s, double *out)
{
	static const char *const formats[] = {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M",
	                                      "%Y-%m-%d %H:%M"};
	char *end;
	double x;

	if (!strncmp(s, "now", 3)) {
		double unit = 0;
		*out = (double)time(NULL);
		if (!s[3])
			return 0;
		if (s[3] != '-')
			return -EINVAL;
		x = strtod(s + 4, &end);
		unit = !strcmp(end, "s")   ? 1
		       : !strcmp(end, "m") ? 60
		       : !strcmp(end, "h") ? 3600
		       : !strcmp(end, "d") ? 86400
		                           : 0;
		if (end == s + 4 || unit == 0 || x < 0)
			return -EINVAL;
		*out -= x * unit;
		return 0;
	}
	x = strtod(s, &end);
	if (end != s && !*end && x >= 0) {
		*out = x;
		return 0;
	}
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
		struct tm tm;
		const char *rest;
		memset(&tm, 0, sizeof(tm));
		rest = strptime(s, formats[i], &tm);
		if (rest && !*rest) {
			tm.tm_isdst = -1;
			*out = (double)mktime(&tm);
			return 0;
		}
	}
	return -EINVAL;
}

/* The controller with the role recovery, or NULL. */
static const char *recovery_controller(struct ctl *c)
{
	for (size_t i = 0; c->site && i < tsync_site_controller_count(c->site); i++) {
		tsync_controller_info ci;
		tsync_site_controller(c->site, i, &ci);
		for (size_t k = 0; k < ci.n_roles; k++)
			if (!strcmp(ci.roles[k], "recovery"))
				return ci.name;
	}
	return NULL;
}

static int cmd_recover(struct ctl *c, int argc, char **argv)
{
	const char *from_s = NULL, *to_s = NULL, *dflt;
	double from, to;
	char body[128], *base;
	struct reply r;
	int rc;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--from") && i + 1 < argc)
			from_s = argv[++i];
		else if (!strcmp(argv[i], "--to") && i + 1 < argc)
			to_s = argv[++i];
		else
			from_s = to_s = NULL, i = argc;
	}
	if (!from_s || !to_s) {
		fprintf(stderr, "usage: thingsctl recover --from TIME --to TIME\n");
		return EXIT_USAGE;
	}
	if (parse_time(from_s, &from) < 0 || parse_time(to_s, &to) < 0) {
		fprintf(stderr,
		        "thingsctl: recover: '%s': not a time (seconds since the epoch, "
		        "YYYY-MM-DDTHH:MM[:SS], now, now-2h)\n",
		        parse_time(from_s, &from) < 0 ? from_s : to_s);
		return EXIT_USAGE;
	}
	if (from >= to) {
		fprintf(stderr, "thingsctl: recover: --from must be before --to\n");
		return EXIT_USAGE;
	}
	dflt = c->name || c->url ? NULL : recovery_controller(c);
	if (!c->name && !c->url && !dflt) {
		if (!need_site(c))
			fprintf(stderr, "thingsctl: %s has no controller with the role recovery\n",
			        c->conf_path);
		return EXIT_UNKNOWN;
	}
	base = base_for(c, dflt);
	if (!base)
		return EXIT_USAGE;
	snprintf(body, sizeof(body), "{\"from\":%.6f,\"to\":%.6f}", from, to);
	client__request(c, base, "POST", "/v1/recover", body, strlen(body), NULL, &r);
	free(base);
	rc = r.status == 202 ? EXIT_OK : client__exit_code(&r, "recover");
	if (rc == EXIT_OK) {
		json_t *j = r.json, *o;
		size_t i;
		if (c->json) {
			print_json(j);
		} else {
			printf("recovery %s: asked", json_string_value(json_object_get(j, "id")));
			json_array_foreach(json_object_get(j, "owners"), i, o)
			    printf(" %s", json_string_value(o));
			printf(", delivered to %s\n", json_string_value(json_object_get(j, "deliver_to")));
		}
	}
	client__reply_free(&r);
	return rc;
}

int main(int argc, char **argv)
{
	enum { OPT_URL = 256 };
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"name", required_argument, NULL, 'n'},
	    {"url", required_argument, NULL, OPT_URL},
	    {"json", no_argument, NULL, 'j'},
	    {"timeout", required_argument, NULL, 't'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	static const struct {
		const char *name;
		int (*fn)(struct ctl *, int, char **);
		bool site; /* needs site.conf loaded */
	} cmds[] = {
	    {"cum", cmd_cum, true}, /* cum.c */
	    {"get", cmd_get, true},       {"set", cmd_set, true},        {"pulse", cmd_pulse, true},
	    {"ask", cmd_ask, true},       {"cmd", cmd_cmd, true},        {"watch", cmd_watch, true},
	    {"peers", cmd_peers, true},   {"status", cmd_status, true},  {"reload", cmd_reload, true},
	    {"deploy", cmd_deploy, true}, {"keygen", cmd_keygen, false}, {"token", cmd_token, true},
	    {"recover", cmd_recover, true},
	};
	struct ctl c;
	char *end;
	int opt, rc = EXIT_USAGE;

	memset(&c, 0, sizeof(c));
	c.conf_path = getenv("THINGSYNC_SITE") ? getenv("THINGSYNC_SITE") : DEFAULT_SITE;
	c.timeout_s = 5;
	/* Options end at the command: its own options (--ms, --to) follow it. */
	while ((opt = getopt_long(argc, argv, "+c:n:jt:vhV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			c.conf_path = optarg;
			break;
		case 'n':
			c.name = optarg;
			break;
		case OPT_URL:
			c.url = optarg;
			break;
		case 'j':
			c.json = true;
			break;
		case 't':
			c.timeout_s = strtod(optarg, &end);
			if (*end || c.timeout_s <= 0 || c.timeout_s > 3600) {
				fprintf(stderr, "thingsctl: -t takes seconds (0 < S <= 3600)\n");
				return EXIT_USAGE;
			}
			break;
		case 'v':
			c.verbose = true;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case 'V':
			printf("thingsctl %s\n", TSYNC_VERSION_STRING);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	/* With both, the API at --url is -n's: its requests are signed for it. */
	if (c.name && c.url)
		c.url_to = c.name;
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (strcmp(argv[optind], cmds[i].name))
			continue;
		if (cmds[i].site) {
			load_site(&c);
		}
		curl_global_init(CURL_GLOBAL_DEFAULT);
		rc = cmds[i].fn(&c, argc - optind - 1, argv + optind + 1);
		curl_global_cleanup();
		client__free(&c);
		tsync_site_free(c.site);
		free(c.site_errors);
		return rc;
	}
	fprintf(stderr, "thingsctl: unknown command '%s'\n", argv[optind]);
	usage(stderr);
	return EXIT_USAGE;
}
