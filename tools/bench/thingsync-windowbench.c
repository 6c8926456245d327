/*
 * thingsync-windowbench: what exactly once across restarts costs (issue 11).
 *
 * Two nodes in this process on loopback, PI-A (the owner, which runs the
 * commands) and PI-B (which asks), each with a state directory, then both
 * without one (the baseline, measured in the same run). PI-B sends N pulses,
 * N commands and N set requests to PI-A, one at a time, each waited for.
 * Printed per request, for each side: the commits (each ends with an fsync;
 * with a state directory the receiver commits the request's window mark
 * before it acts, then syncs before it answers) and the bytes of keys and
 * records written (store__written()); the median round trip with and
 * without state directories and their ratio. Then the size of each LMDB
 * record the durable windows add, written one at a time.
 *
 *   thingsync-windowbench [N]        (default 500)
 *
 * It prints figures; it does not pass or fail.
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <thingsync/thingsync.h>

#include "node/node.h"
#include "store/store.h"

enum kind { PULSE, CMD, SETREQ, N_KINDS };
static const char *const kind_name[N_KINDS] = {"pulse", "command", "set request"};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t median(uint64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	return v[n / 2];
}

/* A UDP port the kernel gives out now on 127.0.0.1. */
static uint16_t free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	uint16_t port = 0;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

struct side {
	uint64_t bytes, commits;
};

struct run {
	struct side a[N_KINDS], b[N_KINDS];
	uint64_t lat_ns[N_KINDS]; /* median round trip */
};

static char dir[] = "/tmp/thingsync-windowbench-XXXXXX";

static void die(const char *what, int r)
{
	fprintf(stderr, "thingsync-windowbench: %s: %s\n", what, tsync_strerror(r));
	exit(1);
}

static char *write_site(void)
{
	static char path[128];
	char key[128];
	uint16_t pa = free_port(), pb = free_port();
	FILE *f;
	int r;

	snprintf(key, sizeof(key), "%s/site.key", dir);
	r = tsync_key_generate(key);
	if (r < 0)
		die("key", r);
	snprintf(path, sizeof(path), "%s/site.conf", dir);
	f = fopen(path, "w");
	if (!f)
		die(path, -errno);
	fprintf(f,
	        "[site]\nname = windowbench\nkey_file = site.key\n\n"
	        "[controller PI-A]\nhost = 127.0.0.1\nudp_port = %u\nroles = cmd_do\n\n"
	        "[controller PI-B]\nhost = 127.0.0.1\nudp_port = %u\n\n"
	        "[thing strike]\nowner = PI-A\ntype = int\nusers = PI-B\npulse = yes\npulse_ms = 10\n\n"
	        "[thing lamp]\nowner = PI-A\ntype = int\nusers = PI-B\ninitial = 0\n",
	        pa, pb);
	fclose(f);
	return path;
}

static int on_noop(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	*result = strdup("{\"done\":true}");
	return *result ? 0 : -ENOMEM;
}

static void on_done(void *ud, tsync_node *node, int status, const char *result)
{
	*(int *)ud = status == 0 ? 1 : -1;
}

static tsync_node *start(const char *site, struct event_base *base, const char *name, const char *state)
{
	tsync_node_options o;
	tsync_node *n;
	int r;

	tsync_node_options_init(&o);
	o.site_path = site;
	o.controller = name;
	o.event_base = base;
	o.state_dir = state;
	r = tsync_node_new(&o, &n);
	if (r < 0)
		die(name, r);
	return n;
}

/* Runs the loop until both nodes have nothing unanswered and *flag is set
 * (NULL: only the first). */
static void run_until(struct event_base *base, tsync_node *a, tsync_node *b, const int *flag)
{
	uint64_t end = now_ns() + 30ull * 1000000000u;

	while ((flag && !*flag) || tsync_node_unsettled(a) || tsync_node_unsettled(b)) {
		if (now_ns() > end) {
			fprintf(stderr, "thingsync-windowbench: no answer within 30 s\n");
			exit(1);
		}
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(50);
	}
}

static void measure(struct run *out, const char *site, bool durable, int n)
{
	struct event_base *base = event_base_new();
	char sa[160], sb[160];
	tsync_node *a, *b;
	uint64_t *t = calloc((size_t)n, sizeof(*t));

	if (!base || !t)
		die("setup", -ENOMEM);
	snprintf(sa, sizeof(sa), "%s/%s-A", dir, durable ? "state" : "none");
	snprintf(sb, sizeof(sb), "%s/%s-B", dir, durable ? "state" : "none");
	a = start(site, base, "PI-A", durable ? sa : NULL);
	b = start(site, base, "PI-B", durable ? sb : NULL);
	if (tsync_node_on_cmd(a, "cmd_do", "noop", on_noop, NULL) < 0)
		die("handler", -ENOMEM);
	run_until(base, a, b, NULL);
	for (int k = 0; k < N_KINDS; k++) {
		uint64_t a0b, a0c, b0b, b0c, a1b, a1c, b1b, b1c;
		/* Settled: what follows is the requests' own cost. */
		tsync_node_commit(a);
		tsync_node_commit(b);
		node__store_written(a, &a0b, &a0c);
		node__store_written(b, &b0b, &b0c);
		for (int i = 0; i < n; i++) {
			int flag = 0, r;
			tsync_value v = tsync_int(i + 1);
			uint64_t t0 = now_ns();
			if (k == PULSE)
				r = tsync_node_pulse(b, "strike", &v, 10, on_done, &flag);
			else if (k == CMD)
				r = tsync_node_cmd(b, "PI-A", "cmd_do", "noop", NULL, on_done, &flag);
			else
				r = tsync_node_set(b, "lamp", &v);
			if (r < 0)
				die(kind_name[k], r);
			if (k == SETREQ)
				flag = 1; /* settled once the owner answered */
			run_until(base, a, b, &flag);
			if (flag < 0)
				die(kind_name[k], TSYNC_EREFUSED);
			t[i] = now_ns() - t0;
		}
		/* Whatever the group commit still holds is part of the cost. */
		tsync_node_commit(a);
		tsync_node_commit(b);
		node__store_written(a, &a1b, &a1c);
		node__store_written(b, &b1b, &b1c);
		out->a[k].bytes = a1b - a0b;
		out->a[k].commits = a1c - a0c;
		out->b[k].bytes = b1b - b0b;
		out->b[k].commits = b1c - b0c;
		out->lat_ns[k] = median(t, (size_t)n);
	}
	tsync_node_free(a);
	tsync_node_free(b);
	event_base_free(base);
	free(t);
}

/* Bytes of one record of each kind, committed alone in a fresh store. */
static void record_sizes(void)
{
	char path[160];
	struct store *s;
	uint64_t bits[STORE_WINDOW_WORDS], b0, b1, c;
	struct store_request q;
	tsync_value v = tsync_int(1234);
	int r;

	snprintf(path, sizeof(path), "%s/records", dir);
	r = store__open(path, 0, NULL, &s);
	if (r < 0)
		die("store", r);
	memset(bits, 0xa5, sizeof(bits));
	printf("\nLMDB records the durable windows add (key + record; sender or peer \"PI-B\", thing "
	       "\"strike\"):\n");
	store__written(s, &b0, &c);
	store__stage_window(s, "PI-B", 1000, 4242, bits);
	store__commit(s);
	store__written(s, &b1, &c);
	printf("  %-44s %4llu bytes (one per sender and origin boot, at most 4 per sender)\n",
	       "window (highest id, 1024-bit map)", (unsigned long long)(b1 - b0));
	b0 = b1;
	store__stage_answer(s, "PI-B", 1000, 7, 7, NULL, "{\"done\":true}");
	store__commit(s);
	store__written(s, &b1, &c);
	printf("  %-44s %4llu bytes (only answers with an error or a result)\n",
	       "cached answer, result {\"done\":true}", (unsigned long long)(b1 - b0));
	b0 = b1;
	memset(&q, 0, sizeof(q));
	q.peer = "PI-A";
	q.origin_boot = 1000;
	q.id = 7;
	q.type = 0;
	q.is_pulse = true;
	q.thing = "strike";
	q.val = v;
	q.ms = 10;
	store__stage_request(s, &q);
	store__commit(s);
	store__written(s, &b1, &c);
	printf("  %-44s %4llu bytes (until answered)\n", "unanswered request (a pulse)",
	       (unsigned long long)(b1 - b0));
	b0 = b1;
	store__stage_setreq(s, "strike", &v);
	store__commit(s);
	store__written(s, &b1, &c);
	printf("  %-44s %4llu bytes (until answered)\n", "set request on a copy (int)",
	       (unsigned long long)(b1 - b0));
	store__close(s);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 500;
	struct run with, without;
	const char *site;
	char cmd[200];

	if (n < 1 || n > 1000000 || (argc > 1 && !strcmp(argv[1], "--help"))) {
		fprintf(stderr, "usage: thingsync-windowbench [N]\n");
		return 2;
	}
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	site = write_site();
	measure(&with, site, true, n);
	measure(&without, site, false, n);

	printf("thingsync-windowbench: %d of each request, one at a time, PI-B -> PI-A on loopback\n\n", n);
	printf("%-12s %-30s %-30s %-22s\n", "", "receiver PI-A, per request", "sender PI-B, per request",
	       "round trip, median");
	printf("%-12s %-30s %-30s %-22s\n", "", "commits  bytes", "commits  bytes", "state / none (ratio)");
	for (int k = 0; k < N_KINDS; k++)
		printf(
		    "%-12s %7.2f  %5.0f                 %7.2f  %5.0f                 %.0f / %.0f us (%.2f)\n",
		    kind_name[k], (double)with.a[k].commits / n, (double)with.a[k].bytes / n,
		    (double)with.b[k].commits / n, (double)with.b[k].bytes / n, with.lat_ns[k] / 1e3,
		    without.lat_ns[k] / 1e3,
		    without.lat_ns[k] ? (double)with.lat_ns[k] / (double)without.lat_ns[k] : 0);
	record_sizes();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "thingsync-windowbench: %s not removed\n", dir);
	return 0;
}
