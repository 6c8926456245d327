/*
 * thingsync-bench: measures, in one run on this machine, and prints a table:
 *  1. latency: raw UDP ping-pong on loopback with datagrams of the size a
 *     thingsync set carries (the floor; also through epoll, the floor of an
 *     event loop), thingsync's set-to-reply round trip
 *     between two nodes (owner here, user in another process) and its
 *     set-to-delivery one-way time, and Mosquitto QoS 1 through a local
 *     broker (publish to delivery, and back), median and p99, with ratios;
 *  2. throughput: acknowledged updates per second from one owner to 1, 3 and
 *     10 users (each a process), with batching: rounds of K changed things,
 *     each round acknowledged by every user before the next; next to
 *     Mosquitto QoS 1 with as many subscribers;
 *  3. cost per change: datagrams and bytes on the wire per delivered update;
 *  4. footprint: resident memory of an idle node process with 1,000 things,
 *     its wake-ups per second when nothing changes, and the bytes it writes
 *     to disk per 1,000 changes;
 *  5. heartbeat: what liveness costs an idle site of one owner and 10 users
 *     (each a process), with heartbeat_ms off, at its default and at 500 ms:
 *     wake-ups per second of the owner and of a user, datagrams and bytes
 *     per second each way.
 * It prints figures; it does not pass or fail.
 *
 *   thingsync-bench [--rounds N] [--things K] [--users LIST] [--seconds S] [--no-key]
 *                   [--idle-seconds S] [--quick] [--no-latency] [--no-throughput]
 *                   [--no-footprint] [--no-heartbeat] [--no-mosquitto]
 *
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <thingsync/thingsync.h>

#ifdef HAVE_MOSQUITTO
#include <mosquitto.h>
#endif

#include "bench.h"
#include "node/node.h"

#define MAX_USERS     30
#define MAX_COUNTS    8
#define HB_USERS      10 /* the idle site of the heartbeat part: one owner, its users */
#define HB_RUNS       3  /* heartbeat_ms off, the default, 500 */
#define MAX_REPEAT    10
#define RAW_PER_DGRAM 19 /* updates per 1400-byte datagram, as thingsync batches them */

uint64_t bench_now_ns(void)
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

struct bench_lat bench_lat_of(uint64_t *v, size_t n)
{
	struct bench_lat l = {0};

	if (n == 0)
		return l;
	qsort(v, n, sizeof(*v), cmp_u64);
	l.ok = true;
	l.n = n;
	l.med = v[(size_t)(0.5 * (double)(n - 1))];
	l.p99 = v[(size_t)(0.99 * (double)(n - 1))];
	return l;
}

uint16_t bench_free_port(int type)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);

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

void *bench_shared(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void bench_kill(pid_t pid)
{
	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
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

/* Everything the table at the end shows. */
struct results {
	bool key;
	size_t size; /* bytes of a set's datagram */
	struct bench_lat raw, ts_rtt, ts_one, mq_rtt, mq_one;
	struct bench_lat raw_poll; /* raw UDP through epoll: the event loop's floor */
	struct bench_lat raw_spin; /* the same, the pinger polling first (--busy-poll) */
	double ts_wire_dgrams, ts_wire_bytes; /* per update, one at a time, both ways */
	int n_counts;
	int users[MAX_COUNTS];
	double ts_ups[MAX_COUNTS], mq_ups[MAX_COUNTS];
	double ts_dgrams[MAX_COUNTS], ts_bytes[MAX_COUNTS]; /* per update, batched, both ways */
	/* The peers of issue 15 (bench-peers.c); 0 / !ok: not measured. */
	struct bench_lat dds_rtt, coap_rtt;
	double raw_ups[MAX_COUNTS], rawm_ups[MAX_COUNTS], dds_ups[MAX_COUNTS];
	bool footprint;
	long rss_kb, rss_base_kb;
	double wake_owner, wake_user;
	long long disk_single, disk_batch;
	int n_hb;
	struct hb_figures {
		const char *label;
		double wake_owner, wake_user;
		double dg_out, dg_in, b_out, b_in; /* the owner's, per second */
	} hb[HB_RUNS];
};

/* --- 1a: raw UDP ping-pong ---------------------------------------------------- */

/* A receive of the ping-pong: blocking (SO_RCVTIMEO bounds it), or, with an
 * epoll set (ep >= 0), the event loop's way: epoll_wait(), then a
 * non-blocking recvmsg(). */
static ssize_t raw_recv(int fd, int ep, void *buf, size_t cap, struct sockaddr_in *from, int timeout_ms,
                        unsigned spin_us)
{
	struct iovec iov = {buf, cap};
	struct msghdr m;

	memset(&m, 0, sizeof(m));
	m.msg_name = from;
	m.msg_namelen = from ? sizeof(*from) : 0;
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	if (ep >= 0 && spin_us) {
		/* As a node with busy_poll_us does after a send awaiting an answer. */
		uint64_t end = bench_now_ns() + spin_us * 1000ull;
		do {
			ssize_t n = recvmsg(fd, &m, MSG_DONTWAIT);
			if (n >= 0)
				return n;
		} while (bench_now_ns() < end);
	}
	if (ep >= 0) {
		struct epoll_event ev;
		if (epoll_wait(ep, &ev, 1, timeout_ms) <= 0)
			return -1;
		return recvmsg(fd, &m, MSG_DONTWAIT);
	}
	return recvmsg(fd, &m, 0);
}

static int raw_poller(int fd, bool poll)
{
	struct epoll_event ev = {.events = EPOLLIN};
	int ep;

	if (!poll)
		return -1;
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		perror("thingsync-bench: epoll");
		exit(1);
	}
	return ep;
}

/* poll: both sides wait in epoll_wait() and then read, as an event loop
 * does (thingsync's system calls for a round trip, without its work): the
 * floor of any design built on one. spin_us: the pinger reads without
 * sleeping for that long first (the floor of the busy poll). */
static void raw_pingpong(size_t size, size_t rounds, uint64_t *rtt, bool poll, unsigned spin_us)
{
	uint16_t pa = bench_free_port(SOCK_DGRAM), pb = bench_free_port(SOCK_DGRAM);
	int a = udp_socket(pa), ep;
	char buf[65536];
	struct sockaddr_in to;
	pid_t pid;

	memset(buf, 'x', sizeof(buf));
	pid = fork();
	if (pid == 0) {
		int b = udp_socket(pb), bep = raw_poller(b, poll);
		for (;;) {
			struct sockaddr_in from;
			ssize_t n = raw_recv(b, bep, buf, sizeof(buf), &from, -1, 0);
			if (n < 0 && poll)
				continue;
			if (n <= 1)
				_exit(0);
			sendto(b, buf, (size_t)n, 0, (struct sockaddr *)&from, sizeof(from));
		}
	}
	ep = raw_poller(a, poll);
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
			if (raw_recv(a, ep, buf, sizeof(buf), NULL, 20, 0) > 0)
				break;
		}
		tv.tv_usec = 0;
		tv.tv_sec = 5;
		setsockopt(a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	for (size_t i = 0; i < rounds; i++) {
		uint64_t t0 = bench_now_ns();
		sendto(a, buf, size, 0, (struct sockaddr *)&to, sizeof(to));
		if (raw_recv(a, ep, buf, sizeof(buf), NULL, 5000, spin_us) <= 0) {
			fprintf(stderr, "thingsync-bench: raw echo lost\n");
			rtt[i] = 0;
			continue;
		}
		rtt[i] = bench_now_ns() - t0;
	}
	sendto(a, buf, 1, 0, (struct sockaddr *)&to, sizeof(to));
	waitpid(pid, NULL, 0);
	if (ep >= 0)
		close(ep);
	close(a);
}

/* --- a site for the bench ------------------------------------------------------ */

static char dir[] = "/tmp/thingsync-bench-XXXXXX";

/* `extra`: more [site] keys, or NULL. */
static char *write_site(const char *tag, int users, int things, bool key, const char *extra, uint16_t *ports)
{
	static char path[256];
	char keypath[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/site-%s-%d-%d.conf", dir, tag, users, things);
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
	fprintf(f, "[site]\nname = bench\n%s\nmax_outstanding = 64\n%s", key ? "key_file = site.key" : "",
	        extra ? extra : "");
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

/* A user process's record of one-way delays (shared memory): the owner sets
 * t0 to the time of the set, the user notes when its copy changed. */
struct one_way {
	uint64_t n, cap;
	uint64_t v[];
};

static void on_user_event(void *ud, tsync_node *node, const tsync_event *ev)
{
	struct one_way *ow = ud;
	if (ev->kind == TSYNC_EVENT_CHANGED && !strcmp(ev->thing, "t0") && ev->value.type == TSYNC_TYPE_INT &&
	    ow->n < ow->cap)
		ow->v[ow->n++] = bench_now_ns() - (uint64_t)ev->value.u.i;
}

/* --busy-poll: every thingsync node of the run polls so after a send that
 * awaits an answer (tsync_node_options.busy_poll_us; 0: off). */
static unsigned busy_poll_us;

static pid_t spawn_user(const char *site, int u, struct one_way *ow)
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
		o.busy_poll_us = busy_poll_us;
		if (tsync_node_new(&o, &n) < 0)
			_exit(1);
		if (ow)
			tsync_node_on_event(n, on_user_event, ow);
		tsync_node_run(n);
		_exit(0);
	}
	return pid;
}

static tsync_node *owner_node(const char *site, const char *state_dir)
{
	tsync_node_options o;
	tsync_node *n;
	int r;

	tsync_node_options_init(&o);
	o.site_path = site;
	o.controller = "OWNER";
	o.state_dir = state_dir;
	o.busy_poll_us = busy_poll_us;
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
	uint64_t end = bench_now_ns() + limit_ns;
	while (tsync_node_unsettled(n) > 0) {
		if (bench_now_ns() > end)
			return -ETIMEDOUT;
		tsync_node_run_for(n, -1);
	}
	return 0;
}

/* SIGTERM, not SIGKILL: a user run under `valgrind --tool=callgrind` (the
 * fork follows the owner into valgrind) then still writes its profile. A
 * node installs no handler, so the default action ends it at once. */
static void stop_users(pid_t *pids, int users)
{
	for (int u = 0; u < users; u++)
		if (pids[u] > 0)
			kill(pids[u], SIGTERM);
	for (int u = 0; u < users; u++)
		if (pids[u] > 0)
			waitpid(pids[u], NULL, 0);
}

/* Datagrams and bytes the owner exchanged with all its peers, both ways. */
static void wire_totals(tsync_node *n, uint64_t *dgrams, uint64_t *bytes, uint64_t *retx)
{
	*dgrams = *bytes = 0;
	if (retx)
		*retx = 0;
	for (size_t p = 0; p < tsync_node_peer_count(n); p++) {
		tsync_peer_stats st;
		tsync_node_peer_stats(n, p, &st);
		*dgrams += st.datagrams_sent + st.datagrams_received;
		*bytes += st.bytes_sent + st.bytes_received;
		if (retx)
			*retx += st.retransmits;
	}
}

/* --- 1b: set-to-reply round trip, and set-to-delivery one way ------------------ */

static void thingsync_rtt(struct results *res, size_t rounds, uint64_t *rtt)
{
	uint16_t ports[2] = {bench_free_port(SOCK_DGRAM), bench_free_port(SOCK_DGRAM)};
	const char *site = write_site("rtt", 1, 1, res->key, NULL, ports);
	struct one_way *ow = bench_shared(sizeof(*ow) + rounds * sizeof(uint64_t));
	pid_t pid;
	tsync_node *n;
	tsync_peer_stats st;
	uint64_t d0, b0, d1, b1;

	if (!ow) {
		perror("mmap");
		exit(1);
	}
	ow->cap = rounds;
	pid = spawn_user(site, 1, ow);
	n = owner_node(site, NULL);
	if (settle(n, 10000000000ull) < 0) {
		fprintf(stderr, "thingsync-bench: the user did not come up\n");
		exit(1);
	}
	wire_totals(n, &d0, &b0, NULL);
	for (size_t i = 0; i < rounds; i++) {
		uint64_t t0 = bench_now_ns();
		/* The value is the time of the set: the user's one-way sample. */
		tsync_value v = tsync_int((int64_t)t0);
		tsync_node_set(n, "t0", &v);
		if (settle(n, 5000000000ull) < 0) {
			fprintf(stderr, "thingsync-bench: set not acknowledged\n");
			exit(1);
		}
		rtt[i] = bench_now_ns() - t0;
	}
	wire_totals(n, &d1, &b1, NULL);
	if (busy_poll_us) {
		struct node_busy_stats bs;
		node__busy_stats(n, &bs);
		printf("  busy poll (owner): %llu polls, %llu answered, %.1f reads a poll, cap %u us\n",
		       (unsigned long long)bs.polls, (unsigned long long)bs.answered,
		       bs.polls ? (double)bs.reads / (double)bs.polls : 0.0, node__busy_poll_us(n));
	}
	tsync_node_peer_stats(n, 0, &st);
	res->size = st.datagrams_sent ? (size_t)(st.bytes_sent / st.datagrams_sent) : 0;
	res->ts_wire_dgrams = (double)(d1 - d0) / (double)rounds;
	res->ts_wire_bytes = (double)(b1 - b0) / (double)rounds;
	res->ts_rtt = bench_lat_of(rtt, rounds);
	/* Every change was acknowledged, so the user noted every one. */
	res->ts_one = bench_lat_of(ow->v, ow->n < rounds ? ow->n : rounds);
	tsync_node_free(n);
	stop_users(&pid, 1);
	munmap(ow, sizeof(*ow) + rounds * sizeof(uint64_t));
}

/* --- 2: throughput -------------------------------------------------------------- */

static void throughput(struct results *res, int slot, int users, int things, double seconds)
{
	uint16_t ports[MAX_USERS + 1];
	const char *site;
	pid_t pids[MAX_USERS];
	tsync_node *n;
	uint64_t t0, t1, updates = 0, d0, b0, d1, b1, retx, datagrams = 0, bytes = 0;
	int64_t round = 0;
	char(*names)[16];

	for (int i = 0; i <= users; i++)
		ports[i] = bench_free_port(SOCK_DGRAM);
	site = write_site("tput", users, things, res->key, NULL, ports);
	for (int u = 0; u < users; u++)
		pids[u] = spawn_user(site, u + 1, NULL);
	n = owner_node(site, NULL);
	if (settle(n, 20000000000ull) < 0) {
		fprintf(stderr, "thingsync-bench: users did not come up\n");
		exit(1);
	}
	/* The names once, as an application holds them: formatting one per
	 * set was a fifth of the owner's instructions outside the library. */
	names = calloc((size_t)things, sizeof(*names));
	if (!names) {
		perror("calloc");
		exit(1);
	}
	for (int t = 0; t < things; t++)
		snprintf(names[t], sizeof(names[t]), "t%d", t);
	wire_totals(n, &d0, &b0, NULL);
	t0 = bench_now_ns();
	do {
		round++;
		for (int t = 0; t < things; t++) {
			tsync_value v = tsync_int(round * 1000 + t);
			tsync_node_set(n, names[t], &v);
		}
		if (settle(n, 10000000000ull) < 0) {
			fprintf(stderr, "thingsync-bench: round %lld not acknowledged\n", (long long)round);
			/* What each user got: enough to tell a lost ack from a stall. */
			for (size_t p = 0; p < tsync_node_peer_count(n); p++) {
				tsync_peer_stats st;
				tsync_node_peer_stats(n, p, &st);
				fprintf(stderr,
				        "  %s: up %d, datagrams %llu out %llu in, retransmits %llu, acked %llu, "
				        "pending %llu, rto %u ms\n",
				        st.name, st.up, (unsigned long long)st.datagrams_sent,
				        (unsigned long long)st.datagrams_received, (unsigned long long)st.retransmits,
				        (unsigned long long)st.acked, (unsigned long long)st.pending, st.rto_ms);
			}
			exit(1);
		}
		updates += (uint64_t)things * (uint64_t)users;
		t1 = bench_now_ns();
	} while ((double)(t1 - t0) / 1e9 < seconds);
	wire_totals(n, &d1, &b1, &retx);
	for (size_t p = 0; p < tsync_node_peer_count(n); p++) {
		tsync_peer_stats st;
		tsync_node_peer_stats(n, p, &st);
		datagrams += st.datagrams_sent;
		bytes += st.bytes_sent;
	}
	res->users[slot] = users;
	res->ts_ups[slot] = (double)updates / ((double)(t1 - t0) / 1e9);
	res->ts_dgrams[slot] = (double)(d1 - d0) / (double)updates;
	res->ts_bytes[slot] = (double)(b1 - b0) / (double)updates;
	/* The owner's own counters since it started, the start-up exchange
	 * included, as this line has always printed them. */
	printf("  %d users x %d things: %lld rounds in %.2f s\n", users, things, (long long)round,
	       (double)(t1 - t0) / 1e9);
	printf(
	    "  acknowledged updates/s: %.0f   (datagrams/update %.3f, bytes/update %.1f, retransmits %llu)\n",
	    res->ts_ups[slot], (double)datagrams / (double)updates, (double)bytes / (double)updates,
	    (unsigned long long)retx);
	fflush(stdout);
	free(names);
	tsync_node_free(n);
	stop_users(pids, users);
}

/* --- 4: footprint ----------------------------------------------------------------- */

/* A field of /proc/PID/FILE ("VmRSS", "write_bytes", ...), or -1. */
static long long proc_field(pid_t pid, const char *file, const char *key)
{
	char path[64], line[256];
	size_t kl = strlen(key);
	long long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':')
			v = atoll(line + kl + 1);
	fclose(f);
	return v;
}

static long long switches(pid_t pid)
{
	long long a = proc_field(pid, "status", "voluntary_ctxt_switches");
	long long b = proc_field(pid, "status", "nonvoluntary_ctxt_switches");
	return a < 0 || b < 0 ? -1 : a + b;
}

/* User and system CPU time of a process so far, in milliseconds, or -1. */
static double cpu_ms(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st;
	ssize_t len;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	len = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len <= 0)
		return -1;
	buf[len] = 0;
	/* After the command's closing parenthesis: state is field 3, utime 14, stime 15. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

/* What the measured owner process tells the bench through its pipe. */
struct fp_report {
	long rss_base_kb; /* before the node was made */
	long long disk_single, disk_batch;
	int ok;
};

/* The measured process: an owner of `things` things with its state in LMDB.
 * It settles, says so, idles for idle_ms, then makes changes and reports
 * what they wrote to disk. */
static void footprint_owner(const char *site, int things, int idle_ms, int fd) __attribute__((noreturn));
static void footprint_owner(const char *site, int things, int idle_ms, int fd)
{
	struct fp_report rep = {0};
	char state[300], name[32];
	tsync_node *n;
	long long w0, w1, w2;

	rep.rss_base_kb = (long)proc_field(getpid(), "status", "VmRSS");
	snprintf(state, sizeof(state), "%s/footprint-state", dir);
	mkdir(state, 0700);
	n = owner_node(site, state);
	for (int t = 0; t < things; t++) {
		tsync_value v = tsync_int(t);
		snprintf(name, sizeof(name), "t%d", t);
		tsync_node_set(n, name, &v);
	}
	if (settle(n, 20000000000ull) < 0)
		_exit(1);
	/* The group-commit window would otherwise end inside the idle period. */
	tsync_node_commit(n);
	if (write(fd, &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
		_exit(1);
	/* Idle: nothing changes, nothing is pending. */
	tsync_node_run_for(n, idle_ms);

	w0 = proc_field(getpid(), "io", "write_bytes");
	for (int i = 1; i <= 1000; i++) {
		tsync_value v = tsync_int(100000 + i);
		tsync_node_set(n, "t0", &v);
		if (settle(n, 10000000000ull) < 0)
			_exit(1);
	}
	/* What the state_commit_ms window deferred counts too. */
	tsync_node_commit(n);
	w1 = proc_field(getpid(), "io", "write_bytes");
	for (int i = 0; i < 1000; i++) {
		tsync_value v = tsync_int(200000 + i);
		snprintf(name, sizeof(name), "t%d", i % things);
		tsync_node_set(n, name, &v);
	}
	if (settle(n, 10000000000ull) < 0)
		_exit(1);
	tsync_node_commit(n);
	w2 = proc_field(getpid(), "io", "write_bytes");
	rep.disk_single = w0 < 0 || w1 < 0 ? -1 : w1 - w0;
	rep.disk_batch = w1 < 0 || w2 < 0 ? -1 : w2 - w1;
	rep.ok = 1;
	if (write(fd, &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
		_exit(1);
	tsync_node_free(n);
	_exit(0);
}

static void footprint(struct results *res, double idle_s)
{
	const int things = 1000;
	uint16_t ports[2] = {bench_free_port(SOCK_DGRAM), bench_free_port(SOCK_DGRAM)};
	const char *site = write_site("idle", 1, things, res->key, NULL, ports);
	int idle_ms = (int)(idle_s * 1000) + 1500, p[2];
	struct fp_report rep;
	long long s0, s1, u0, u1;
	double c0, c1, cu0, cu1;
	uint64_t t0, t1;
	pid_t user, owner;

	if (pipe(p) < 0) {
		perror("pipe");
		exit(1);
	}
	user = spawn_user(site, 1, NULL);
	owner = fork();
	if (owner == 0) {
		close(p[0]);
		footprint_owner(site, things, idle_ms, p[1]);
	}
	close(p[1]);
	if (read(p[0], &rep, sizeof(rep)) != (ssize_t)sizeof(rep)) {
		fprintf(stderr, "thingsync-bench: the footprint owner did not settle\n");
		goto leave;
	}
	/* Let the last acknowledgements land, then count. */
	usleep(500000);
	s0 = switches(owner);
	u0 = switches(user);
	c0 = cpu_ms(owner);
	cu0 = cpu_ms(user);
	t0 = bench_now_ns();
	usleep((useconds_t)(idle_s * 1e6));
	s1 = switches(owner);
	u1 = switches(user);
	c1 = cpu_ms(owner);
	cu1 = cpu_ms(user);
	t1 = bench_now_ns();
	res->rss_kb = (long)proc_field(owner, "status", "VmRSS");
	res->rss_base_kb = rep.rss_base_kb;
	res->wake_owner = s0 < 0 || s1 < 0 ? -1 : (double)(s1 - s0) / ((double)(t1 - t0) / 1e9);
	res->wake_user = u0 < 0 || u1 < 0 ? -1 : (double)(u1 - u0) / ((double)(t1 - t0) / 1e9);
	if (read(p[0], &rep, sizeof(rep)) != (ssize_t)sizeof(rep) || !rep.ok) {
		fprintf(stderr, "thingsync-bench: the footprint owner did not finish its changes\n");
		goto leave;
	}
	res->disk_single = rep.disk_single;
	res->disk_batch = rep.disk_batch;
	res->footprint = true;
	if (c0 >= 0 && c1 >= 0 && cu0 >= 0 && cu1 >= 0)
		printf("  idle CPU: owner %.0f ms, its user %.0f ms over %.1f s (clock ticks of %ld ms)\n",
		       c1 - c0, cu1 - cu0, (double)(t1 - t0) / 1e9, 1000 / sysconf(_SC_CLK_TCK));
	printf("  idle owner of %d things, state in LMDB: RSS %.1f MB (%.1f MB before the node), "
	       "%.2f wake-ups/s (its user: %.2f/s) over %.1f s\n",
	       things, res->rss_kb / 1024.0, res->rss_base_kb / 1024.0, res->wake_owner, res->wake_user,
	       (double)(t1 - t0) / 1e9);
	printf("  written to disk: %lld bytes for 1000 changes one at a time (each acknowledged before the "
	       "next; committed together within state_commit_ms), %lld bytes for 1000 changes at once\n",
	       res->disk_single, res->disk_batch);
leave:
	close(p[0]);
	waitpid(owner, NULL, 0);
	bench_kill(user);
}

/* --- 5: heartbeat ------------------------------------------------------------------ */

/* What the owner of the heartbeat part counted over its own idle window. */
struct hb_report {
	double seconds;
	uint64_t dg_out, dg_in, b_out, b_in;
	int ok;
};

static void hb_totals(tsync_node *n, struct hb_report *r)
{
	memset(r, 0, sizeof(*r));
	for (size_t p = 0; p < tsync_node_peer_count(n); p++) {
		tsync_peer_stats st;
		tsync_node_peer_stats(n, p, &st);
		r->dg_out += st.datagrams_sent;
		r->dg_in += st.datagrams_received;
		r->b_out += st.bytes_sent;
		r->b_in += st.bytes_received;
	}
}

/* The owner: settles, says so, lets the start-up's last datagrams pass
 * (warm_ms), then counts what it exchanges over idle_ms. */
static void hb_owner(const char *site, int warm_ms, int idle_ms, int fd) __attribute__((noreturn));
static void hb_owner(const char *site, int warm_ms, int idle_ms, int fd)
{
	struct hb_report a, b;
	tsync_value v = tsync_int(1);
	tsync_node *n = owner_node(site, NULL);
	uint64_t t0, t1;

	memset(&a, 0, sizeof(a));
	tsync_node_set(n, "t0", &v);
	if (settle(n, 20000000000ull) < 0 || write(fd, &a, sizeof(a)) != (ssize_t)sizeof(a))
		_exit(1);
	tsync_node_run_for(n, warm_ms);
	hb_totals(n, &a);
	t0 = bench_now_ns();
	tsync_node_run_for(n, idle_ms);
	hb_totals(n, &b);
	t1 = bench_now_ns();
	b.seconds = (double)(t1 - t0) / 1e9;
	b.dg_out -= a.dg_out;
	b.dg_in -= a.dg_in;
	b.b_out -= a.b_out;
	b.b_in -= a.b_in;
	b.ok = 1;
	if (write(fd, &b, sizeof(b)) != (ssize_t)sizeof(b))
		_exit(1);
	tsync_node_free(n);
	_exit(0);
}

/* One idle site: the owner's own counts over idle_ms, a whole number of
 * heartbeat periods (a window that is not would count one heartbeat more or
 * less per peer), and the wake-ups (context switches) of the owner and of
 * one user, seen from outside, inside that window and clear of its ends
 * (the owner wakes there to read its counters). */
static int hb_run(struct results *res, const char *label, const char *keys, int idle_ms)
{
	struct hb_figures *f = &res->hb[res->n_hb];
	uint16_t ports[HB_USERS + 1];
	const int warm_ms = 1500;
	pid_t users[HB_USERS], owner;
	struct hb_report rep;
	long long s0, s1, u0, u1;
	uint64_t t0, t1;
	const char *site;
	char tag[32];
	int p[2], r = -1;

	for (int i = 0; i <= HB_USERS; i++)
		ports[i] = bench_free_port(SOCK_DGRAM);
	snprintf(tag, sizeof(tag), "hb%d", res->n_hb);
	site = write_site(tag, HB_USERS, 1, res->key, keys, ports);
	if (pipe(p) < 0) {
		perror("pipe");
		exit(1);
	}
	for (int u = 0; u < HB_USERS; u++)
		users[u] = spawn_user(site, u + 1, NULL);
	owner = fork();
	if (owner == 0) {
		close(p[0]);
		hb_owner(site, warm_ms, idle_ms, p[1]);
	}
	close(p[1]);
	if (read(p[0], &rep, sizeof(rep)) != (ssize_t)sizeof(rep)) {
		fprintf(stderr, "thingsync-bench: the heartbeat owner did not settle\n");
		goto leave;
	}
	usleep((useconds_t)(warm_ms + 250) * 1000u);
	s0 = switches(owner);
	u0 = switches(users[0]);
	t0 = bench_now_ns();
	usleep((useconds_t)(idle_ms - 500) * 1000u);
	s1 = switches(owner);
	u1 = switches(users[0]);
	t1 = bench_now_ns();
	if (read(p[0], &rep, sizeof(rep)) != (ssize_t)sizeof(rep) || !rep.ok) {
		fprintf(stderr, "thingsync-bench: the heartbeat owner did not finish\n");
		goto leave;
	}
	f->label = label;
	f->wake_owner = s0 < 0 || s1 < 0 ? -1 : (double)(s1 - s0) / ((double)(t1 - t0) / 1e9);
	f->wake_user = u0 < 0 || u1 < 0 ? -1 : (double)(u1 - u0) / ((double)(t1 - t0) / 1e9);
	f->dg_out = (double)rep.dg_out / rep.seconds;
	f->dg_in = (double)rep.dg_in / rep.seconds;
	f->b_out = (double)rep.b_out / rep.seconds;
	f->b_in = (double)rep.b_in / rep.seconds;
	printf("  %-24s owner %5.2f wake-ups/s, a user %5.2f/s; owner sent %5.2f datagrams/s (%4.0f B/s, "
	       "%3.0f B each), received %5.2f/s (%4.0f B/s)\n",
	       label, f->wake_owner, f->wake_user, f->dg_out, f->b_out,
	       rep.dg_out ? f->b_out / f->dg_out : 0.0, f->dg_in, f->b_in);
	fflush(stdout);
	res->n_hb++;
	r = 0;
leave:
	close(p[0]);
	waitpid(owner, NULL, 0);
	for (int u = 0; u < HB_USERS; u++)
		bench_kill(users[u]);
	return r;
}

static void heartbeat_cost(struct results *res, double idle_s)
{
	/* Whole periods of the default (2 s) and of 500 ms, at least four. */
	int idle_ms = ((int)(idle_s * 1000) + 1999) / 2000 * 2000;

	if (idle_ms < 8000)
		idle_ms = 8000;
	printf("\nheartbeat: an idle site of one owner and %d users (each a process, each sharing a thing "
	       "with the owner), nothing changing, counted over %.1f s\n",
	       HB_USERS, idle_ms / 1000.0);
	fflush(stdout);
	hb_run(res, "heartbeat_ms = 0 (off)", "heartbeat_ms = 0\n", idle_ms);
	hb_run(res, "heartbeat_ms default", NULL, idle_ms);
	hb_run(res, "heartbeat_ms = 500", "heartbeat_ms = 500\n", idle_ms);
}

/* --- the table ---------------------------------------------------------------------- */

static void cell_us(char *buf, size_t len, const struct bench_lat *l, bool p99)
{
	if (!l->ok)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.1f us", (double)(p99 ? l->p99 : l->med) / 1e3);
}

static void cell_ratio(char *buf, size_t len, const struct bench_lat *a, const struct bench_lat *b, bool p99)
{
	if (!a->ok || !b->ok || !(p99 ? b->p99 : b->med))
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.2fx",
		         (double)(p99 ? a->p99 : a->med) / (double)(p99 ? b->p99 : b->med));
}

static void row(const char *what, const char *ts, const char *raw, const char *mq, const char *r_raw,
                const char *r_mq)
{
	printf("  %-36s %18s %10s %16s %8s %12s\n", what, ts, raw, mq, r_raw, r_mq);
}

static void cell_bytes(char *buf, size_t len, long long bytes)
{
	if (bytes < 0)
		snprintf(buf, len, "-");
	else if (bytes >= 10ll << 20)
		snprintf(buf, len, "%.1f MB", (double)bytes / (1 << 20));
	else
		snprintf(buf, len, "%.0f KB", (double)bytes / 1024);
}

static void table(const struct results *r, bool have_mq)
{
	char a[64], b[64], c[64], d[64], e[64], what[64];

	printf("\nsummary (this machine, this run; ratios are thingsync divided by the other)\n");
	row("", "thingsync", "raw UDP", "Mosquitto QoS 1", "vs raw", "vs Mosquitto");
	if (r->ts_rtt.ok) {
		for (int p = 0; p < 2; p++) {
			snprintf(what, sizeof(what), "round trip, %s", p ? "p99" : "median");
			cell_us(a, sizeof(a), &r->ts_rtt, p);
			cell_us(b, sizeof(b), &r->raw, p);
			cell_us(c, sizeof(c), &r->mq_rtt, p);
			cell_ratio(d, sizeof(d), &r->ts_rtt, &r->raw, p);
			cell_ratio(e, sizeof(e), &r->ts_rtt, &r->mq_rtt, p);
			row(what, a, b, c, d, e);
		}
		for (int p = 0; p < 2; p++) {
			snprintf(what, sizeof(what), "one way to delivery, %s", p ? "p99" : "median");
			cell_us(a, sizeof(a), &r->ts_one, p);
			cell_us(c, sizeof(c), &r->mq_one, p);
			cell_ratio(e, sizeof(e), &r->ts_one, &r->mq_one, p);
			row(what, a, "-", c, "-", e);
		}
		snprintf(a, sizeof(a), "%.2f / %.0f B", r->ts_wire_dgrams, r->ts_wire_bytes);
		row("wire per update, one at a time", a, "-", "-", "-", "-");
	}
	for (int i = 0; i < r->n_counts; i++) {
		snprintf(what, sizeof(what), "updates/s, %d user%s", r->users[i], r->users[i] > 1 ? "s" : "");
		snprintf(a, sizeof(a), "%.0f", r->ts_ups[i]);
		if (have_mq && r->mq_ups[i] > 0) {
			snprintf(c, sizeof(c), "%.0f", r->mq_ups[i]);
			snprintf(e, sizeof(e), "%.2fx", r->ts_ups[i] / r->mq_ups[i]);
		} else {
			snprintf(c, sizeof(c), "-");
			snprintf(e, sizeof(e), "-");
		}
		row(what, a, "-", c, "-", e);
		snprintf(what, sizeof(what), "wire per update, batched, %d user%s", r->users[i],
		         r->users[i] > 1 ? "s" : "");
		snprintf(a, sizeof(a), "%.3f / %.1f B", r->ts_dgrams[i], r->ts_bytes[i]);
		row(what, a, "-", "-", "-", "-");
	}
	if (r->footprint) {
		snprintf(a, sizeof(a), "%.1f MB (node %.1f)", r->rss_kb / 1024.0,
		         (r->rss_kb - r->rss_base_kb) / 1024.0);
		row("idle node, 1000 things: RSS", a, "-", "-", "-", "-");
		snprintf(a, sizeof(a), "%.2f", r->wake_owner);
		row("idle node: wake-ups/s", a, "-", "-", "-", "-");
		cell_bytes(a, sizeof(a), r->disk_single);
		row("disk per 1000 changes, one by one", a, "-", "-", "-", "-");
		cell_bytes(a, sizeof(a), r->disk_batch);
		row("disk per 1000 changes, at once", a, "-", "-", "-", "-");
	}
	for (int i = 0; i < r->n_hb; i++) {
		snprintf(what, sizeof(what), "idle, %d peers, %s", HB_USERS, r->hb[i].label);
		snprintf(a, sizeof(a), "%.2f wake-ups/s", r->hb[i].wake_owner);
		row(what, a, "-", "-", "-", "-");
		snprintf(what, sizeof(what), "  wire, owner, both ways");
		snprintf(a, sizeof(a), "%.1f dgr / %.0f B/s", r->hb[i].dg_out + r->hb[i].dg_in,
		         r->hb[i].b_out + r->hb[i].b_in);
		row(what, a, "-", "-", "-", "-");
	}
	printf(
	    "  (wire: datagrams / bytes per delivered update, both ways, tag included; Mosquitto: -, TCP)\n");
}

/* --- one repetition: latency, throughput, each next to its peers ------------------- */

struct peers {
	bool mq, dds, coap;
	size_t dds_size; /* payload of ddsperf's throughput samples */
#ifdef HAVE_MOSQUITTO
	struct bench_broker *broker;
#endif
};

static void measure_latency(struct results *r, size_t rounds, uint64_t *a, uint64_t *b,
                            const struct peers *pe)
{
	thingsync_rtt(r, rounds, b);
	raw_pingpong(r->size, rounds, a, false, 0);
	r->raw = bench_lat_of(a, rounds);
	raw_pingpong(r->size, rounds, a, true, 0);
	r->raw_poll = bench_lat_of(a, rounds);
	if (busy_poll_us && node__usable_cpus() > 1) { /* as the nodes' poll: not on one CPU */
		raw_pingpong(r->size, rounds, a, true, busy_poll_us);
		r->raw_spin = bench_lat_of(a, rounds);
	}
	printf("\nround trip, %zu-byte datagrams, loopback, peer in another process\n", r->size);
	printf("  %-28s median %7.1f us   p99 %7.1f us\n", "raw UDP ping-pong", r->raw.med / 1e3,
	       r->raw.p99 / 1e3);
	printf("  %-28s median %7.1f us   p99 %7.1f us   (%.2fx raw: epoll_wait, then recvmsg, a side)\n",
	       "raw UDP through epoll", r->raw_poll.med / 1e3, r->raw_poll.p99 / 1e3,
	       (double)r->raw_poll.med / (double)r->raw.med);
	if (r->raw_spin.ok)
		printf("  %-28s median %7.1f us   p99 %7.1f us   (%.2fx raw: the pinger polls %u us first)\n",
		       "raw UDP, epoll, busy poll", r->raw_spin.med / 1e3, r->raw_spin.p99 / 1e3,
		       (double)r->raw_spin.med / (double)r->raw.med, busy_poll_us);
	printf("  %-28s median %7.1f us   p99 %7.1f us\n", "thingsync set -> reply", r->ts_rtt.med / 1e3,
	       r->ts_rtt.p99 / 1e3);
	printf("  ratio thingsync/raw:        median %7.2fx      p99 %7.2fx   (aim: within 1.2x on two "
	       "cores, 1.5x on one)\n",
	       (double)r->ts_rtt.med / (double)r->raw.med, (double)r->ts_rtt.p99 / (double)r->raw.p99);
#ifdef HAVE_MOSQUITTO
	if (pe->mq && bench_mqtt_latency(pe->broker, rounds, r->size, &r->mq_one, &r->mq_rtt) == 0) {
		printf("  %-28s median %7.1f us   p99 %7.1f us   (publish, broker, subscriber, back)\n",
		       "Mosquitto QoS 1 round trip", r->mq_rtt.med / 1e3, r->mq_rtt.p99 / 1e3);
		printf("  ratio thingsync/Mosquitto:  median %7.2fx      p99 %7.2fx\n",
		       (double)r->ts_rtt.med / (double)r->mq_rtt.med,
		       (double)r->ts_rtt.p99 / (double)r->mq_rtt.p99);
	}
#endif
	if (pe->dds && bench_dds_pingpong(dir, r->size, 5, &r->dds_rtt) == 0) {
		printf("  %-28s median %7.1f us   p99 %7.1f us   (ddsperf ping/pong, reliable; 2x what it "
		       "prints)\n",
		       "Cyclone DDS ping-pong", r->dds_rtt.med / 1e3, r->dds_rtt.p99 / 1e3);
		printf("  ratio thingsync/DDS:        median %7.2fx      p99 %7.2fx\n",
		       (double)r->ts_rtt.med / (double)r->dds_rtt.med,
		       (double)r->ts_rtt.p99 / (double)r->dds_rtt.p99);
	} else if (pe->dds) {
		printf("  (Cyclone DDS ping-pong: no figures, see %s/ddsperf-ping.out)\n", dir);
	}
	if (pe->coap && bench_coap_rtt(r->size, rounds, a, &r->coap_rtt) == 0) {
		printf("  %-28s median %7.1f us   p99 %7.1f us   (confirmable PUT, coap-server)\n",
		       "libcoap CON round trip", r->coap_rtt.med / 1e3, r->coap_rtt.p99 / 1e3);
		printf("  ratio thingsync/CoAP:       median %7.2fx      p99 %7.2fx\n",
		       (double)r->ts_rtt.med / (double)r->coap_rtt.med,
		       (double)r->ts_rtt.p99 / (double)r->coap_rtt.p99);
	} else if (pe->coap) {
		printf("  (libcoap: no figures, the server did not answer)\n");
	}
	printf("\none way, change to delivery in the other process (same clock)\n");
	printf("  %-28s median %7.1f us   p99 %7.1f us\n", "thingsync set -> user event", r->ts_one.med / 1e3,
	       r->ts_one.p99 / 1e3);
	if (r->mq_one.ok)
		printf("  %-28s median %7.1f us   p99 %7.1f us   (ratio thingsync/Mosquitto %.2fx)\n",
		       "Mosquitto publish -> deliver", r->mq_one.med / 1e3, r->mq_one.p99 / 1e3,
		       (double)r->ts_one.med / (double)r->mq_one.med);
	fflush(stdout);
}

static void measure_throughput(struct results *r, int things, double seconds, const struct peers *pe)
{
	printf("\nthroughput, one owner, batching (max_datagram 1400)\n");
	fflush(stdout);
	for (int i = 0; i < r->n_counts; i++) {
		int u = r->users[i];
		throughput(r, i, u, things, seconds);
		r->raw_ups[i] = bench_raw_throughput(u, things, RAW_PER_DGRAM, seconds, false);
		r->rawm_ups[i] = bench_raw_throughput(u, things, RAW_PER_DGRAM, seconds, true);
		printf("  raw UDP, same shape (%d updates/1400-byte datagram, each acked): updates/s %.0f, "
		       "with sendmmsg/recvmmsg %.0f\n",
		       RAW_PER_DGRAM, r->raw_ups[i], r->rawm_ups[i]);
#ifdef HAVE_MOSQUITTO
		if (pe->mq) {
			r->mq_ups[i] = bench_mqtt_throughput(pe->broker, u, things, seconds);
			if (r->mq_ups[i] > 0)
				printf("  Mosquitto QoS 1, %d subscriber%s x %d topics: delivered updates/s "
				       "%.0f\n",
				       u, u > 1 ? "s" : "", things, r->mq_ups[i]);
		}
#endif
		if (pe->dds) {
			r->dds_ups[i] = bench_dds_throughput(dir, u, pe->dds_size, seconds);
			if (r->dds_ups[i] > 0)
				printf("  Cyclone DDS reliable, %d subscriber%s, %zu-byte samples: delivered "
				       "samples/s %.0f "
				       "(ratio thingsync/DDS %.2fx)\n",
				       u, u > 1 ? "s" : "", pe->dds_size, r->dds_ups[i],
				       r->ts_ups[i] / r->dds_ups[i]);
			else
				printf("  (Cyclone DDS, %d subscribers: no figures, see %s/ddsperf-*.out)\n",
				       u, dir);
		}
		fflush(stdout);
	}
}

/* Median, smallest and largest of what get() reads from each run; the
 * ratios are taken within each run, then summarised the same way. */
static int cmp_dbl(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return a < b ? -1 : a > b;
}

static bool spread_of(double *v, int n, char *buf, size_t len, int prec, const char *unit, double scale)
{
	int m = 0;
	char lo[24], hi[24], md[24];

	for (int i = 0; i < n; i++)
		if (v[i] > 0 && v[i] < 1e300)
			v[m++] = v[i];
	if (!m) {
		snprintf(buf, len, "-");
		return false;
	}
	qsort(v, (size_t)m, sizeof(*v), cmp_dbl);
	snprintf(md, sizeof(md), "%.*f%s", prec, v[m / 2] * scale, unit);
	snprintf(lo, sizeof(lo), "%.*f%s", prec, v[0] * scale, unit);
	snprintf(hi, sizeof(hi), "%.*f%s", prec, v[m - 1] * scale, unit);
	if (m == 1)
		snprintf(buf, len, "%s", md);
	else
		snprintf(buf, len, "%s (%s-%s)", md, lo, hi);
	return true;
}

static void spread_row(const char *what, const struct results *runs, int n,
                       double (*get)(const struct results *, int), int i, int prec, const char *unit,
                       double scale)
{
	double v[MAX_REPEAT];
	char buf[128];

	for (int k = 0; k < n; k++)
		v[k] = get(&runs[k], i);
	if (spread_of(v, n, buf, sizeof(buf), prec, unit, scale))
		printf("  %-44s %s\n", what, buf);
}

static double safe_div(double a, double b)
{
	return a > 0 && b > 0 ? a / b : 0;
}
static double g_ts_rtt(const struct results *r, int i)
{
	return r->ts_rtt.ok ? (double)r->ts_rtt.med : 0;
}
static double g_raw_rtt(const struct results *r, int i)
{
	return r->raw.ok ? (double)r->raw.med : 0;
}
static double g_rawp_rtt(const struct results *r, int i)
{
	return r->raw_poll.ok ? (double)r->raw_poll.med : 0;
}
static double g_raws_rtt(const struct results *r, int i)
{
	return r->raw_spin.ok ? (double)r->raw_spin.med : 0;
}

static double g_r_raws(const struct results *r, int i)
{
	return safe_div(g_ts_rtt(r, i), g_raws_rtt(r, i));
}

static double g_r_rawp(const struct results *r, int i)
{
	return safe_div(g_ts_rtt(r, i), g_rawp_rtt(r, i));
}
static double g_rp_raw(const struct results *r, int i)
{
	return safe_div(g_rawp_rtt(r, i), g_raw_rtt(r, i));
}
static double g_dds_rtt(const struct results *r, int i)
{
	return r->dds_rtt.ok ? (double)r->dds_rtt.med : 0;
}
static double g_coap_rtt(const struct results *r, int i)
{
	return r->coap_rtt.ok ? (double)r->coap_rtt.med : 0;
}
static double g_mq_rtt(const struct results *r, int i)
{
	return r->mq_rtt.ok ? (double)r->mq_rtt.med : 0;
}
static double g_r_raw(const struct results *r, int i)
{
	return safe_div(g_ts_rtt(r, i), g_raw_rtt(r, i));
}
static double g_r_dds(const struct results *r, int i)
{
	return safe_div(g_ts_rtt(r, i), g_dds_rtt(r, i));
}
static double g_r_coap(const struct results *r, int i)
{
	return safe_div(g_ts_rtt(r, i), g_coap_rtt(r, i));
}
static double g_r_mq(const struct results *r, int i)
{
	return safe_div(g_ts_rtt(r, i), g_mq_rtt(r, i));
}
static double g_ts_ups(const struct results *r, int i)
{
	return r->ts_ups[i];
}
static double g_raw_ups(const struct results *r, int i)
{
	return r->raw_ups[i];
}
static double g_rawm_ups(const struct results *r, int i)
{
	return r->rawm_ups[i];
}
static double g_dds_ups(const struct results *r, int i)
{
	return r->dds_ups[i];
}
static double g_mq_ups(const struct results *r, int i)
{
	return r->mq_ups[i];
}
static double g_ru_raw(const struct results *r, int i)
{
	return safe_div(r->ts_ups[i], r->raw_ups[i]);
}
static double g_ru_rawm(const struct results *r, int i)
{
	return safe_div(r->ts_ups[i], r->rawm_ups[i]);
}
static double g_ru_dds(const struct results *r, int i)
{
	return safe_div(r->ts_ups[i], r->dds_ups[i]);
}
static double g_ru_mq(const struct results *r, int i)
{
	return safe_div(r->ts_ups[i], r->mq_ups[i]);
}

static void spread_table(const struct results *runs, int n)
{
	char what[64];

	printf("\nover %d repetition%s: median (smallest-largest); ratios are thingsync / the other, "
	       "taken within each repetition\n",
	       n, n > 1 ? "s" : "");
	spread_row("round trip, thingsync set -> reply (us)", runs, n, g_ts_rtt, 0, 1, "", 1e-3);
	spread_row("round trip, raw UDP ping-pong (us)", runs, n, g_raw_rtt, 0, 1, "", 1e-3);
	spread_row("round trip, raw UDP through epoll (us)", runs, n, g_rawp_rtt, 0, 1, "", 1e-3);
	spread_row("round trip, raw UDP, epoll, busy poll (us)", runs, n, g_raws_rtt, 0, 1, "", 1e-3);
	spread_row("round trip, Cyclone DDS ping-pong (us)", runs, n, g_dds_rtt, 0, 1, "", 1e-3);
	spread_row("round trip, libcoap CON PUT (us)", runs, n, g_coap_rtt, 0, 1, "", 1e-3);
	spread_row("round trip, Mosquitto QoS 1 (us)", runs, n, g_mq_rtt, 0, 1, "", 1e-3);
	spread_row("  ratio thingsync / raw UDP", runs, n, g_r_raw, 0, 2, "x", 1);
	spread_row("  ratio thingsync / raw through epoll", runs, n, g_r_rawp, 0, 2, "x", 1);
	spread_row("  (ratio raw through epoll / raw UDP)", runs, n, g_rp_raw, 0, 2, "x", 1);
	spread_row("  ratio thingsync / raw, epoll, busy poll", runs, n, g_r_raws, 0, 2, "x", 1);
	spread_row("  ratio thingsync / Cyclone DDS", runs, n, g_r_dds, 0, 2, "x", 1);
	spread_row("  ratio thingsync / libcoap", runs, n, g_r_coap, 0, 2, "x", 1);
	spread_row("  ratio thingsync / Mosquitto", runs, n, g_r_mq, 0, 2, "x", 1);
	for (int i = 0; i < runs[0].n_counts; i++) {
		int u = runs[0].users[i];
		snprintf(what, sizeof(what), "updates/s to %d user%s, thingsync", u, u > 1 ? "s" : "");
		spread_row(what, runs, n, g_ts_ups, i, 0, "", 1);
		spread_row("  raw UDP, same shape", runs, n, g_raw_ups, i, 0, "", 1);
		spread_row("  raw UDP, sendmmsg/recvmmsg", runs, n, g_rawm_ups, i, 0, "", 1);
		spread_row("  Cyclone DDS, reliable", runs, n, g_dds_ups, i, 0, "", 1);
		spread_row("  Mosquitto QoS 1", runs, n, g_mq_ups, i, 0, "", 1);
		spread_row("  ratio thingsync / raw UDP", runs, n, g_ru_raw, i, 2, "x", 1);
		spread_row("  ratio thingsync / raw UDP mmsg", runs, n, g_ru_rawm, i, 2, "x", 1);
		spread_row("  ratio thingsync / Cyclone DDS", runs, n, g_ru_dds, i, 2, "x", 1);
		spread_row("  ratio thingsync / Mosquitto", runs, n, g_ru_mq, i, 2, "x", 1);
	}
}

/* --- main ------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: thingsync-bench [--rounds N] [--things K] [--users LIST] [--seconds S] [--no-key]\n"
	        "                       [--idle-seconds S] [--quick] [--no-latency] [--no-throughput]\n"
	        "                       [--no-footprint] [--no-heartbeat] [--no-mosquitto]\n"
	        "                       [--no-dds] [--no-coap] [--repeat N] [--dds-size BYTES]\n"
	        "                       [--busy-poll US]\n"
	        "Prints thingsync's round trip next to raw UDP ping-pong of the same size (blocking,\n"
	        "and through epoll as an event loop waits) and to\n"
	        "Mosquitto QoS 1 through a local broker; acknowledged updates/s from one owner to each\n"
	        "number of users in LIST (default 1,3,10) next to Mosquitto with as many subscribers;\n"
	        "the wire cost per update; an idle node's memory, wake-ups and disk writes; what the\n"
	        "heartbeat costs an idle site of 11 nodes (heartbeat_ms off, default, 500). Then a table.\n"
	        "Next to thingsync, in the same run: raw UDP of the same shape (also with\n"
	        "sendmmsg/recvmmsg), Cyclone DDS's ddsperf (reliable; ping-pong, and throughput to as\n"
	        "many subscribers, BYTES a sample, default 128) and a libcoap confirmable PUT. With\n"
	        "--repeat N, latency and throughput are measured N times and summarised (median,\n"
	        "range, ratios within each repetition); footprint and heartbeat once. --busy-poll US\n"
	        "gives every thingsync node the option busy_poll_us = US (default 0, off).\n");
}

static int parse_users(const char *s, struct results *r)
{
	char *end;

	r->n_counts = 0;
	while (*s) {
		long u = strtol(s, &end, 10);
		if (end == s || u < 1 || u > MAX_USERS || r->n_counts == MAX_COUNTS)
			return -1;
		r->users[r->n_counts++] = (int)u;
		s = end;
		if (*s == ',')
			s++;
		else if (*s)
			return -1;
	}
	return r->n_counts ? 0 : -1;
}

int main(int argc, char **argv)
{
	enum {
		OPT_NO_LAT = 256,
		OPT_NO_TPUT,
		OPT_NO_FOOT,
		OPT_NO_HB,
		OPT_NO_MQ,
		OPT_IDLE,
		OPT_QUICK,
		OPT_NO_DDS,
		OPT_NO_COAP,
		OPT_REPEAT,
		OPT_DDS_SIZE,
		OPT_BUSY_POLL,
	};
	static const struct option longopts[] = {
	    {"rounds", required_argument, NULL, 'r'},
	    {"things", required_argument, NULL, 't'},
	    {"users", required_argument, NULL, 'u'},
	    {"seconds", required_argument, NULL, 's'},
	    {"no-key", no_argument, NULL, 'k'},
	    {"idle-seconds", required_argument, NULL, OPT_IDLE},
	    {"quick", no_argument, NULL, OPT_QUICK},
	    {"no-latency", no_argument, NULL, OPT_NO_LAT},
	    {"no-throughput", no_argument, NULL, OPT_NO_TPUT},
	    {"no-footprint", no_argument, NULL, OPT_NO_FOOT},
	    {"no-heartbeat", no_argument, NULL, OPT_NO_HB},
	    {"no-mosquitto", no_argument, NULL, OPT_NO_MQ},
	    {"no-dds", no_argument, NULL, OPT_NO_DDS},
	    {"no-coap", no_argument, NULL, OPT_NO_COAP},
	    {"repeat", required_argument, NULL, OPT_REPEAT},
	    {"dds-size", required_argument, NULL, OPT_DDS_SIZE},
	    {"busy-poll", required_argument, NULL, OPT_BUSY_POLL},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	static struct results runs[MAX_REPEAT];
	struct results *res0 = &runs[0];
	struct peers peers = {.dds = true, .coap = true, .dds_size = 128};
	int repeat = 1;
	size_t rounds = 20000;
	int things = 1000, c;
	double seconds = 3, idle_s = 5;
	bool lat = true, tput = true, foot = true, hb = true, mq = true, have_mq = false;
	uint64_t *a, *b;
#ifdef HAVE_MOSQUITTO
	struct bench_broker broker = {0};
#endif

	res0->key = true;
	parse_users("1,3,10", res0);
	while ((c = getopt_long(argc, argv, "r:t:u:s:kh", longopts, NULL)) != -1) {
		switch (c) {
		case 'r':
			rounds = (size_t)atol(optarg);
			break;
		case 't':
			things = atoi(optarg);
			break;
		case 'u':
			if (parse_users(optarg, res0) < 0) {
				usage(stderr);
				return 2;
			}
			break;
		case 's':
			seconds = atof(optarg);
			break;
		case 'k':
			res0->key = false;
			break;
		case OPT_IDLE:
			idle_s = atof(optarg);
			break;
		case OPT_QUICK:
			rounds = 2000;
			seconds = 1;
			idle_s = 2;
			break;
		case OPT_NO_LAT:
			lat = false;
			break;
		case OPT_NO_TPUT:
			tput = false;
			break;
		case OPT_NO_FOOT:
			foot = false;
			break;
		case OPT_NO_HB:
			hb = false;
			break;
		case OPT_NO_MQ:
			mq = false;
			break;
		case OPT_NO_DDS:
			peers.dds = false;
			break;
		case OPT_NO_COAP:
			peers.coap = false;
			break;
		case OPT_REPEAT:
			repeat = atoi(optarg);
			break;
		case OPT_BUSY_POLL:
			busy_poll_us = (unsigned)atoi(optarg);
			break;
		case OPT_DDS_SIZE:
			peers.dds_size = (size_t)atol(optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (rounds < 10 || things < 1 || seconds <= 0 || idle_s <= 0 || optind < argc || repeat < 1 ||
	    repeat > MAX_REPEAT || peers.dds_size < 12) {
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

	printf("thingsync-bench %s, %s, %zu round trips, busy poll %s\n", TSYNC_VERSION_STRING,
	       res0->key ? "authenticated (site key)" : "legacy (no key)", rounds,
	       busy_poll_us ? "on" : "off");
	if (busy_poll_us)
		printf("  (busy_poll_us %u: on only where more than one CPU is usable)\n", busy_poll_us);
	if (peers.dds && !bench_have_dds()) {
		printf("(Cyclone DDS figures skipped: no ddsperf; Debian's cyclonedds-tools has it)\n");
		peers.dds = false;
	}
	if (peers.coap && !bench_have_coap()) {
		printf("(libcoap figures skipped: no coap-server; Debian's libcoap3-bin has it)\n");
		peers.coap = false;
	}
#ifdef HAVE_MOSQUITTO
	if (mq) {
		mosquitto_lib_init();
		have_mq = bench_broker_start(&broker, dir) == 0;
		if (!have_mq)
			printf("(Mosquitto figures skipped: the broker could not start)\n");
	}
#else
	if (mq)
		printf("(Mosquitto figures skipped: built without libmosquitto)\n");
#endif
#ifdef HAVE_MOSQUITTO
	peers.broker = &broker;
#endif
	peers.mq = have_mq;
	fflush(stdout);

	for (int k = 0; k < repeat; k++) {
		struct results *r = &runs[k];
		if (k) {
			*r = runs[0];
			printf("\n=== repetition %d of %d\n", k + 1, repeat);
		}
		if (lat)
			measure_latency(r, rounds, a, b, &peers);
		if (tput)
			measure_throughput(r, things, seconds, &peers);
	}
	if (foot) {
		printf("\nfootprint (a plain node process: thingsd is not measured here)\n");
		fflush(stdout);
		footprint(res0, idle_s);
	}
	if (hb)
		heartbeat_cost(res0, idle_s);

	table(&runs[repeat - 1], have_mq);
	if (lat || tput)
		spread_table(runs, repeat);

#ifdef HAVE_MOSQUITTO
	bench_broker_stop(&broker);
	if (mq)
		mosquitto_lib_cleanup();
#endif
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
