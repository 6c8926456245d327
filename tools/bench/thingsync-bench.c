/*
 * thingsync-bench: measures, in one run on this machine,
 *  1. raw UDP ping-pong on loopback with datagrams of the size a thingsync
 *     set carries (the floor), and thingsync's set-to-reply round trip
 *     between two nodes (owner here, user in another process), median and
 *     p99, and their ratio;
 *  2. acknowledged updates per second from one owner to N users (each user
 *     a process), with batching: rounds of K changed things, each round
 *     acknowledged by every user before the next.
 * It prints figures; it does not pass or fail.
 *
 *   thingsync-bench [--rounds N] [--things K] [--users U] [--seconds S] [--no-key]
 *
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <thingsync/thingsync.h>

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

static uint64_t pct(uint64_t *v, size_t n, double p)
{
	size_t i = (size_t)(p * (double)(n - 1));
	return v[i];
}

static uint16_t free_port(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		perror("thingsync-bench: port");
		exit(1);
	}
	close(fd);
	return ntohs(sa.sin_port);
}

static int udp_socket(uint16_t port)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons(port);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("thingsync-bench: bind");
		exit(1);
	}
	return fd;
}

/* --- 1a: raw UDP ping-pong ---------------------------------------------------- */

static void raw_pingpong(size_t size, size_t rounds, uint64_t *rtt)
{
	uint16_t pa = free_port(), pb = free_port();
	int a = udp_socket(pa);
	char buf[65536];
	struct sockaddr_in to;
	pid_t pid;

	memset(buf, 'x', sizeof(buf));
	pid = fork();
	if (pid == 0) {
		int b = udp_socket(pb);
		for (;;) {
			struct sockaddr_in from;
			socklen_t fl = sizeof(from);
			ssize_t n = recvfrom(b, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
			if (n <= 0)
				_exit(0);
			if (n == 1)
				_exit(0);
			sendto(b, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
		}
	}
	memset(&to, 0, sizeof(to));
	to.sin_family = AF_INET;
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	to.sin_port = htons(pb);
	{
		/* Wait until the echo process answers before timing. */
		struct timeval tv = {0, 20000};
		setsockopt(a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		for (;;) {
			sendto(a, buf, size, 0, (struct sockaddr *)&to, sizeof(to));
			if (recv(a, buf, sizeof(buf), 0) > 0)
				break;
		}
		tv.tv_usec = 0;
		tv.tv_sec = 5;
		setsockopt(a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	for (size_t i = 0; i < rounds; i++) {
		uint64_t t0 = now_ns();
		sendto(a, buf, size, 0, (struct sockaddr *)&to, sizeof(to));
		if (recv(a, buf, sizeof(buf), 0) <= 0) {
			fprintf(stderr, "thingsync-bench: raw echo lost\n");
			rtt[i] = 0;
			continue;
		}
		rtt[i] = now_ns() - t0;
	}
	sendto(a, buf, 1, 0, (struct sockaddr *)&to, sizeof(to));
	waitpid(pid, NULL, 0);
	close(a);
}

/* --- a site for the bench ------------------------------------------------------ */

static char dir[] = "/tmp/thingsync-bench-XXXXXX";

static char *write_site(int users, int things, bool key, uint16_t *ports)
{
	static char path[256];
	char keypath[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/site-%d-%d.conf", dir, users, things);
	snprintf(keypath, sizeof(keypath), "%s/site.key", dir);
	if (key && access(keypath, F_OK) != 0 && tsync_key_generate(keypath) < 0) {
		fprintf(stderr, "thingsync-bench: cannot write key\n");
		exit(1);
	}
	f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(1);
	}
	fprintf(f, "[site]\nname = bench\n%s\nmax_outstanding = 64\n", key ? "key_file = site.key" : "");
	fprintf(f, "[controller OWNER]\nhost = 127.0.0.1\nudp_port = %u\n", ports[0]);
	for (int u = 1; u <= users; u++)
		fprintf(f, "[controller USER%d]\nhost = 127.0.0.1\nudp_port = %u\n", u, ports[u]);
	for (int t = 0; t < things; t++) {
		fprintf(f, "[thing t%d]\nowner = OWNER\ntype = int\nusers = ", t);
		for (int u = 1; u <= users; u++)
			fprintf(f, "%sUSER%d", u > 1 ? ", " : "", u);
		fprintf(f, "\n");
	}
	fclose(f);
	return path;
}

static pid_t spawn_user(const char *site, int u)
{
	pid_t pid = fork();

	if (pid == 0) {
		tsync_node_options o;
		tsync_node *n;
		char name[32];
		snprintf(name, sizeof(name), "USER%d", u);
		tsync_node_options_init(&o);
		o.site_path = site;
		o.controller = name;
		if (tsync_node_new(&o, &n) < 0)
			_exit(1);
		tsync_node_run(n);
		_exit(0);
	}
	return pid;
}

static tsync_node *owner_node(const char *site)
{
	tsync_node_options o;
	tsync_node *n;
	int r;

	tsync_node_options_init(&o);
	o.site_path = site;
	o.controller = "OWNER";
	r = tsync_node_new(&o, &n);
	if (r < 0) {
		fprintf(stderr, "thingsync-bench: owner: %s\n", tsync_strerror(r));
		exit(1);
	}
	return n;
}

/* Runs the owner's loop until everything it sent is acknowledged. */
static int settle(tsync_node *n, uint64_t limit_ns)
{
	uint64_t end = now_ns() + limit_ns;
	while (tsync_node_unsettled(n) > 0) {
		if (now_ns() > end)
			return -ETIMEDOUT;
		tsync_node_run_for(n, -1);
	}
	return 0;
}

static void stop_users(pid_t *pids, int users)
{
	for (int u = 0; u < users; u++) {
		kill(pids[u], SIGKILL);
		waitpid(pids[u], NULL, 0);
	}
}

/* --- 1b: set-to-reply round trip ----------------------------------------------- */

static size_t thingsync_rtt(bool key, size_t rounds, uint64_t *rtt)
{
	uint16_t ports[2] = {free_port(), free_port()};
	const char *site = write_site(1, 1, key, ports);
	pid_t pid = spawn_user(site, 1);
	tsync_node *n = owner_node(site);
	tsync_peer_stats st;
	size_t size;

	if (settle(n, 10000000000ull) < 0) {
		fprintf(stderr, "thingsync-bench: the user did not come up\n");
		exit(1);
	}
	for (size_t i = 0; i < rounds; i++) {
		tsync_value v = tsync_int((int64_t)i + 1000000);
		uint64_t t0 = now_ns();
		tsync_node_set(n, "t0", &v);
		if (settle(n, 5000000000ull) < 0) {
			fprintf(stderr, "thingsync-bench: set not acknowledged\n");
			exit(1);
		}
		rtt[i] = now_ns() - t0;
	}
	tsync_node_peer_stats(n, 0, &st);
	size = st.datagrams_sent ? (size_t)(st.bytes_sent / st.datagrams_sent) : 0;
	tsync_node_free(n);
	stop_users(&pid, 1);
	return size;
}

/* --- 2: throughput -------------------------------------------------------------- */

static void throughput(bool key, int users, int things, double seconds)
{
	uint16_t ports[32];
	const char *site;
	pid_t pids[31];
	tsync_node *n;
	uint64_t t0, t1, updates = 0, datagrams = 0, bytes = 0;
	int64_t round = 0;

	for (int i = 0; i <= users; i++)
		ports[i] = free_port();
	site = write_site(users, things, key, ports);
	for (int u = 0; u < users; u++)
		pids[u] = spawn_user(site, u + 1);
	n = owner_node(site);
	if (settle(n, 20000000000ull) < 0) {
		fprintf(stderr, "thingsync-bench: users did not come up\n");
		exit(1);
	}
	for (size_t p = 0; p < tsync_node_peer_count(n); p++) {
		tsync_peer_stats st;
		tsync_node_peer_stats(n, p, &st);
		datagrams += st.datagrams_sent;
		bytes += st.bytes_sent;
	}
	t0 = now_ns();
	do {
		char name[32];
		round++;
		for (int t = 0; t < things; t++) {
			tsync_value v = tsync_int(round * 1000 + t);
			snprintf(name, sizeof(name), "t%d", t);
			tsync_node_set(n, name, &v);
		}
		if (settle(n, 10000000000ull) < 0) {
			fprintf(stderr, "thingsync-bench: round %lld not acknowledged\n", (long long)round);
			exit(1);
		}
		updates += (uint64_t)things * (uint64_t)users;
		t1 = now_ns();
	} while ((double)(t1 - t0) / 1e9 < seconds);
	for (size_t p = 0; p < tsync_node_peer_count(n); p++) {
		tsync_peer_stats st;
		tsync_node_peer_stats(n, p, &st);
		datagrams = st.datagrams_sent + datagrams * 0; /* summed below */
	}
	datagrams = 0;
	bytes = 0;
	{
		uint64_t retx = 0;
		for (size_t p = 0; p < tsync_node_peer_count(n); p++) {
			tsync_peer_stats st;
			tsync_node_peer_stats(n, p, &st);
			datagrams += st.datagrams_sent;
			bytes += st.bytes_sent;
			retx += st.retransmits;
		}
		printf("  %d users x %d things: %lld rounds in %.2f s\n", users, things, (long long)round,
		       (double)(t1 - t0) / 1e9);
		printf("  acknowledged updates/s: %.0f   (datagrams/update %.3f, bytes/update %.1f, retransmits %llu)\n",
		       (double)updates / ((double)(t1 - t0) / 1e9), (double)datagrams / (double)updates,
		       (double)bytes / (double)updates, (unsigned long long)retx);
	}
	tsync_node_free(n);
	stop_users(pids, users);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: thingsync-bench [--rounds N] [--things K] [--users U] [--seconds S] [--no-key]\n"
	           "Prints thingsync's round trip next to raw UDP ping-pong of the same size,\n"
	           "and acknowledged updates/s from one owner to U users (default 3).\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"rounds", required_argument, NULL, 'r'}, {"things", required_argument, NULL, 't'},
		{"users", required_argument, NULL, 'u'},  {"seconds", required_argument, NULL, 's'},
		{"no-key", no_argument, NULL, 'k'},       {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	size_t rounds = 20000, size;
	int things = 1000, users = 3, c;
	double seconds = 3;
	bool key = true;
	uint64_t *a, *b, raw_med, ts_med, raw_p99, ts_p99;

	while ((c = getopt_long(argc, argv, "r:t:u:s:kh", longopts, NULL)) != -1) {
		switch (c) {
		case 'r': rounds = (size_t)atol(optarg); break;
		case 't': things = atoi(optarg); break;
		case 'u': users = atoi(optarg); break;
		case 's': seconds = atof(optarg); break;
		case 'k': key = false; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (rounds < 10 || things < 1 || users < 1 || users > 30) {
		usage(stderr);
		return 2;
	}
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	a = calloc(rounds, sizeof(*a));
	b = calloc(rounds, sizeof(*b));
	if (!a || !b)
		return 1;

	printf("thingsync-bench %s, %s, %zu round trips\n", TSYNC_VERSION_STRING,
	       key ? "authenticated (site key)" : "legacy (no key)", rounds);
	size = thingsync_rtt(key, rounds, b);
	raw_pingpong(size, rounds, a);
	qsort(a, rounds, sizeof(*a), cmp_u64);
	qsort(b, rounds, sizeof(*b), cmp_u64);
	raw_med = pct(a, rounds, 0.5);
	raw_p99 = pct(a, rounds, 0.99);
	ts_med = pct(b, rounds, 0.5);
	ts_p99 = pct(b, rounds, 0.99);
	printf("\nround trip, %zu-byte datagrams, loopback, peer in another process\n", size);
	printf("  %-28s median %7.1f us   p99 %7.1f us\n", "raw UDP ping-pong", raw_med / 1e3, raw_p99 / 1e3);
	printf("  %-28s median %7.1f us   p99 %7.1f us\n", "thingsync set -> reply", ts_med / 1e3, ts_p99 / 1e3);
	printf("  ratio thingsync/raw:        median %7.2fx      p99 %7.2fx   (aim: within 2x)\n",
	       (double)ts_med / (double)raw_med, (double)ts_p99 / (double)raw_p99);

	printf("\nthroughput, one owner, batching (max_datagram 1400)\n");
	throughput(key, users, things, seconds);

	free(a);
	free(b);
	{
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	}
	return 0;
}
