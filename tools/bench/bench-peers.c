/*
 * thingsync-bench: the peers measured next to thingsync in the same run
 * (issue 15): raw UDP with thingsync's throughput shape (plain, and with
 * sendmmsg/recvmmsg), Eclipse Cyclone DDS's ddsperf (reliable; throughput
 * to as many subscribers, ping-pong) and libcoap's server with a confirmable
 * PUT client of our own. The programs are Debian's (cyclonedds-tools,
 * libcoap3-bin), looked up at run time; scripts/bench.sh installs them.
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define RAW_DGRAM 1400 /* bytes of a datagram of updates, as thingsync's max_datagram */

static int loopback_socket(uint16_t port, struct sockaddr_in *sa)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int big = 4 << 20;

	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa->sin_port = htons(port);
	if (fd < 0 || bind(fd, (struct sockaddr *)sa, sizeof(*sa)) < 0) {
		perror("thingsync-bench: bind");
		exit(1);
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	return fd;
}

/* --- raw UDP, thingsync's shape ------------------------------------------------- */

/* A subscriber: acknowledges every datagram with an 8-byte one (its
 * number) until it gets a 1-byte datagram. */
static void raw_sub(int fd, bool mmsg) __attribute__((noreturn));
static void raw_sub(int fd, bool mmsg)
{
	enum { B = 64 };
	static unsigned char bufs[B][RAW_DGRAM];
	struct mmsghdr in[B], out[B];
	struct iovec iin[B], iout[B];
	struct sockaddr_in from[B];
	uint64_t acks[B];

	for (;;) {
		int n;
		if (!mmsg) {
			socklen_t fl = sizeof(from[0]);
			ssize_t r = recvfrom(fd, bufs[0], RAW_DGRAM, 0, (struct sockaddr *)&from[0], &fl);
			if (r <= 1)
				_exit(0);
			memcpy(&acks[0], bufs[0], sizeof(acks[0]));
			sendto(fd, &acks[0], sizeof(acks[0]), 0, (struct sockaddr *)&from[0], fl);
			continue;
		}
		for (int i = 0; i < B; i++) {
			iin[i] = (struct iovec){bufs[i], RAW_DGRAM};
			memset(&in[i], 0, sizeof(in[i]));
			in[i].msg_hdr.msg_name = &from[i];
			in[i].msg_hdr.msg_namelen = sizeof(from[i]);
			in[i].msg_hdr.msg_iov = &iin[i];
			in[i].msg_hdr.msg_iovlen = 1;
		}
		n = recvmmsg(fd, in, B, MSG_WAITFORONE, NULL);
		if (n <= 0)
			continue;
		for (int i = 0; i < n; i++) {
			if (in[i].msg_len <= 1)
				_exit(0);
			memcpy(&acks[i], bufs[i], sizeof(acks[i]));
			iout[i] = (struct iovec){&acks[i], sizeof(acks[i])};
			memset(&out[i], 0, sizeof(out[i]));
			out[i].msg_hdr.msg_name = &from[i];
			out[i].msg_hdr.msg_namelen = in[i].msg_hdr.msg_namelen;
			out[i].msg_hdr.msg_iov = &iout[i];
			out[i].msg_hdr.msg_iovlen = 1;
		}
		sendmmsg(fd, out, (unsigned)n, 0);
	}
}

double bench_raw_throughput(int subs, int things, int per_dgram, double seconds, bool mmsg)
{
	enum { B = 64 };
	static unsigned char dg[RAW_DGRAM];
	int dgrams = (things + per_dgram - 1) / per_dgram;
	struct sockaddr_in me, to[BENCH_MAX_SUBS];
	pid_t pids[BENCH_MAX_SUBS];
	uint64_t t0, t1, updates = 0, seq = 0;
	struct timeval tv = {2, 0};
	int fd;

	if (subs > BENCH_MAX_SUBS)
		return -1;
	fd = loopback_socket(bench_free_port(SOCK_DGRAM), &me);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	memset(dg, 'x', sizeof(dg));
	for (int s = 0; s < subs; s++) {
		int sfd = loopback_socket(bench_free_port(SOCK_DGRAM), &to[s]);
		pids[s] = fork();
		if (pids[s] == 0) {
			close(fd);
			raw_sub(sfd, mmsg);
		}
		close(sfd);
	}
	t0 = bench_now_ns();
	do {
		/* A round: every subscriber gets the datagrams of all things,
		 * and acknowledges each; the next round waits for all. */
		int expect = dgrams * subs, got = 0;
		uint64_t first = seq + 1;
		for (int d = 0; d < dgrams; d++) {
			struct mmsghdr out[BENCH_MAX_SUBS];
			struct iovec iov = {dg, RAW_DGRAM};
			seq++;
			memcpy(dg, &seq, sizeof(seq));
			for (int s = 0; s < subs; s++) {
				if (!mmsg) {
					sendto(fd, dg, RAW_DGRAM, 0, (struct sockaddr *)&to[s],
					       sizeof(to[s]));
					continue;
				}
				memset(&out[s], 0, sizeof(out[s]));
				out[s].msg_hdr.msg_name = &to[s];
				out[s].msg_hdr.msg_namelen = sizeof(to[s]);
				out[s].msg_hdr.msg_iov = &iov;
				out[s].msg_hdr.msg_iovlen = 1;
			}
			if (mmsg)
				sendmmsg(fd, out, (unsigned)subs, 0);
		}
		while (got < expect) {
			uint64_t ack[B];
			if (!mmsg) {
				if (recv(fd, ack, sizeof(ack[0]), 0) <= 0)
					break;
				got += ack[0] >= first;
				continue;
			}
			struct mmsghdr in[B];
			struct iovec iov[B];
			int n;
			for (int i = 0; i < B; i++) {
				iov[i] = (struct iovec){&ack[i], sizeof(ack[i])};
				memset(&in[i], 0, sizeof(in[i]));
				in[i].msg_hdr.msg_iov = &iov[i];
				in[i].msg_hdr.msg_iovlen = 1;
			}
			n = recvmmsg(fd, in, B, MSG_WAITFORONE, NULL);
			if (n <= 0)
				break;
			for (int i = 0; i < n; i++)
				got += ack[i] >= first;
		}
		if (got < expect) /* a datagram lost: this round does not count */
			continue;
		updates += (uint64_t)things * (uint64_t)subs;
		t1 = bench_now_ns();
	} while ((double)((t1 = bench_now_ns()) - t0) / 1e9 < seconds);
	for (int s = 0; s < subs; s++) {
		sendto(fd, dg, 1, 0, (struct sockaddr *)&to[s], sizeof(to[s]));
		bench_kill(pids[s]);
	}
	close(fd);
	return (double)updates / ((double)(t1 - t0) / 1e9);
}

/* --- programs of others ---------------------------------------------------------- */

static bool have_program(const char *name)
{
	char path[512];
	const char *p = getenv("PATH");

	if (!p)
		p = "/usr/bin:/bin";
	while (*p) {
		size_t n = strcspn(p, ":");
		snprintf(path, sizeof(path), "%.*s/%s", (int)n, p, name);
		if (access(path, X_OK) == 0)
			return true;
		p += n + (p[n] == ':');
	}
	return false;
}

/* Runs argv with stdout and stderr into the file out. */
static pid_t spawn(char *const argv[], const char *out)
{
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median_of(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n ? v[n / 2] : 0;
}

/* --- Cyclone DDS (ddsperf) -------------------------------------------------------- */

bool bench_have_dds(void)
{
	return have_program("ddsperf");
}

/* A domain of our own, so that other ddsperf runs on the network do not
 * mix in. */
static void dds_domain(char *buf, size_t len)
{
	snprintf(buf, len, "%d", 1 + (int)(getpid() % 200));
}

double bench_dds_throughput(const char *dir, int subs, size_t size, double seconds)
{
	char dur[16], sz[16], dom[16], out[BENCH_MAX_SUBS][512], pubout[512];
	pid_t pids[BENCH_MAX_SUBS], pub;
	double total = 0;
	int secs = (int)(seconds + 0.999) + 2;

	if (subs > BENCH_MAX_SUBS)
		return -1;
	dds_domain(dom, sizeof(dom));
	snprintf(sz, sizeof(sz), "%zu", size);
	for (int s = 0; s < subs; s++) {
		snprintf(dur, sizeof(dur), "%d", secs + 2);
		snprintf(out[s], sizeof(out[s]), "%s/ddsperf-sub%d.out", dir, s);
		char *argv[] = {"ddsperf", "-i", dom, "-D", dur, "sub", NULL};
		pids[s] = spawn(argv, out[s]);
	}
	/* The publisher waits until it has matched every subscriber
	 * (reliable: it then goes at the pace of the slowest). */
	{
		char mm[32], dpub[16];
		snprintf(mm, sizeof(mm), "minmatch:%d", subs);
		snprintf(dpub, sizeof(dpub), "%d", secs);
		snprintf(pubout, sizeof(pubout), "%s/ddsperf-pub.out", dir);
		char *argv[] = {"ddsperf", "-i", dom,   "-Q",   mm, "-Q", "initwait:10",
		                "-D",      dpub, "pub", "size", sz, NULL};
		pub = spawn(argv, pubout);
	}
	waitpid(pub, NULL, 0);
	for (int s = 0; s < subs; s++) {
		double rates[64];
		int n = 0;
		char line[512];
		FILE *f;
		kill(pids[s], SIGINT);
		waitpid(pids[s], NULL, 0);
		f = fopen(out[s], "r");
		if (!f)
			return -1;
		/* "[pid] T  size S total N lost L delta D lost L rate R kS/s ...": the
		 * per-second rates while data flowed, the first second (matching,
		 * warm-up) and the last (the publisher stopping) left out. */
		while (fgets(line, sizeof(line), f) && n < 64) {
			const char *r = strstr(line, " rate ");
			double k;
			if (strstr(line, " size ") && r && sscanf(r, " rate %lf kS/s", &k) == 1 && k > 0)
				rates[n++] = k * 1e3;
		}
		fclose(f);
		if (n >= 3)
			total += median_of(rates + 1, n - 2);
		else if (n)
			total += median_of(rates, n);
		else
			return -1;
	}
	return total;
}

int bench_dds_pingpong(const char *dir, size_t size, double seconds, struct bench_lat *rtt)
{
	char dur[16], sz[16], dom[16], pongout[512], pingout[512], line[512];
	double med[64], p99[64];
	int n = 0;
	pid_t pong, ping;
	FILE *f;

	dds_domain(dom, sizeof(dom));
	snprintf(sz, sizeof(sz), "%zu", size);
	snprintf(dur, sizeof(dur), "%d", (int)(seconds + 0.999) + 4);
	snprintf(pongout, sizeof(pongout), "%s/ddsperf-pong.out", dir);
	snprintf(pingout, sizeof(pingout), "%s/ddsperf-ping.out", dir);
	{
		char *argv[] = {"ddsperf", "-i", dom, "-D", dur, "pong", NULL};
		pong = spawn(argv, pongout);
	}
	snprintf(dur, sizeof(dur), "%d", (int)(seconds + 0.999) + 1);
	{
		char *argv[] = {"ddsperf", "-i", dom,    "-Q",   "minmatch:1", "-Q", "initwait:10",
		                "-D",      dur,  "ping", "size", sz,           NULL};
		ping = spawn(argv, pingout);
	}
	waitpid(ping, NULL, 0);
	kill(pong, SIGINT);
	waitpid(pong, NULL, 0);
	f = fopen(pingout, "r");
	if (!f)
		return -1;
	/* "[pid] T  host:pid size S mean M min m 50% A 90% B 99% C max X cnt N",
	 * once a second. ddsperf prints half the round trip (its ping computes
	 * (now - sent) / 2); the round trip is twice that. */
	while (fgets(line, sizeof(line), f) && n < 64) {
		const char *a = strstr(line, " 50% "), *c = strstr(line, " 99% ");
		double x, y;
		if (a && c && sscanf(a, " 50%% %lfus", &x) == 1 && sscanf(c, " 99%% %lfus", &y) == 1) {
			med[n] = 2 * x;
			p99[n] = 2 * y;
			n++;
		}
	}
	fclose(f);
	if (!n)
		return -1;
	/* The first second includes matching: left out when there are more. */
	rtt->med = (uint64_t)(median_of(n > 1 ? med + 1 : med, n > 1 ? n - 1 : n) * 1e3);
	rtt->p99 = (uint64_t)(median_of(n > 1 ? p99 + 1 : p99, n > 1 ? n - 1 : n) * 1e3);
	rtt->n = (size_t)n;
	rtt->ok = true;
	return 0;
}

/* --- libcoap: a confirmable PUT, answered by coap-server ------------------------------ */

static const char *coap_server(void)
{
	static const char *const names[] = {"coap-server-notls", "coap-server", "coap-server-openssl",
	                                    "coap-server-gnutls"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (have_program(names[i]))
			return names[i];
	return NULL;
}

bool bench_have_coap(void)
{
	return coap_server() != NULL;
}

/* A CoAP message (RFC 7252): CON PUT /example_data (the resource that
 * coap-server's example keeps, which takes PUT), token of 2 bytes, and a
 * payload that makes the datagram `size` bytes. */
static size_t coap_put(unsigned char *b, size_t size, uint16_t mid, uint16_t token)
{
	static const char path[] = "example_data";
	size_t n = 0, plen = sizeof(path) - 1;

	b[n++] = 0x40 | 2; /* version 1, CON, token length 2 */
	b[n++] = 0x03;     /* PUT */
	b[n++] = (unsigned char)(mid >> 8);
	b[n++] = (unsigned char)mid;
	b[n++] = (unsigned char)(token >> 8);
	b[n++] = (unsigned char)token;
	b[n++] = (unsigned char)(11 << 4 | plen); /* Uri-Path, 12 bytes */
	memcpy(b + n, path, plen);
	n += plen;
	b[n++] = 0xff;
	while (n < size)
		b[n++] = 'x';
	return n;
}

int bench_coap_rtt(size_t size, size_t rounds, uint64_t *samples, struct bench_lat *rtt)
{
	const char *server = coap_server();
	unsigned char out[2048], in[2048];
	uint16_t port = bench_free_port(SOCK_DGRAM);
	struct sockaddr_in me, to;
	char portstr[8];
	struct timeval tv = {0, 50000};
	size_t ok = 0;
	pid_t pid;
	int fd;

	if (!server || size > sizeof(out))
		return -1;
	snprintf(portstr, sizeof(portstr), "%u", port);
	{
		char *argv[] = {(char *)server, "-A", "127.0.0.1", "-p", portstr, NULL};
		pid = spawn(argv, "/dev/null");
	}
	fd = loopback_socket(bench_free_port(SOCK_DGRAM), &me);
	memset(&to, 0, sizeof(to));
	to.sin_family = AF_INET;
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	to.sin_port = htons(port);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/* Until the server answers (it takes a moment to start). */
	for (int i = 0;; i++) {
		size_t n = coap_put(out, size, (uint16_t)(60000 + i), 1);
		sendto(fd, out, n, 0, (struct sockaddr *)&to, sizeof(to));
		if (recv(fd, in, sizeof(in), 0) >= 4)
			break;
		if (i > 100) {
			bench_kill(pid);
			close(fd);
			return -1;
		}
	}
	tv.tv_sec = 2;
	tv.tv_usec = 0;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (size_t i = 0; i < rounds; i++) {
		uint16_t mid = (uint16_t)i;
		size_t n = coap_put(out, size, mid, (uint16_t)(i * 7 + 3));
		uint64_t t0 = bench_now_ns();
		ssize_t r;
		sendto(fd, out, n, 0, (struct sockaddr *)&to, sizeof(to));
		/* The piggybacked answer: ACK (type 2) with our message id. */
		do
			r = recv(fd, in, sizeof(in), 0);
		while (r >= 4 && !((in[0] >> 4 & 3) == 2 && (in[2] << 8 | in[3]) == mid));
		if (r < 4)
			continue;
		samples[ok++] = bench_now_ns() - t0;
	}
	bench_kill(pid);
	close(fd);
	if (ok < rounds / 2)
		return -1;
	*rtt = bench_lat_of(samples, ok);
	return 0;
}
