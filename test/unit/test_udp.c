/*
 * Unit tests for lib/node/udp.c: datagrams in batches on loopback sockets.
 * One queued datagram leaves alone (sendto()), several in one sendmmsg();
 * a batch read returns what waits and says "empty" by returning fewer than
 * asked; the headers set up once stay right across reads of other sizes and
 * sources; after a read found one datagram alone the next turns start with
 * a single read, which takes one and leaves the rest for the next turn.
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "node/udp.h"

#define SLOT 200

/* A non-blocking UDP socket on 127.0.0.1, any port; its address in *sa. */
static int open_udp(struct sockaddr_in *sa)
{
	socklen_t len = sizeof(*sa);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)sa, sizeof(*sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)sa, &len), 0);
	return fd;
}

/* Waits (generously) until fd has something to read. */
static void wait_readable(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	if (poll(&p, 1, 5000) != 1)
		fail_msg("nothing arrived");
}

/* How many datagrams fd holds, none taken: peeked one after the other
 * (with SO_PEEK_OFF, each peek moves on past the datagram it saw). */
static unsigned queued(int fd)
{
	static char b[65536];
	int off = 0;
	unsigned n = 0;

	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off)), 0);
	while (n < 4096 && recv(fd, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT) >= 0)
		n++;
	off = -1; /* off again: reads start at the head */
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off)), 0);
	return n;
}

/* Loopback may queue a datagram after sendto() returned (its softirq ran
 * later): waits until `count` are queued, woken by each one queued (an
 * edge-triggered epoll: one queued since the last count wakes it at once). */
static void settle_queue(int fd, unsigned count)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLET}, got;
	int ep = epoll_create1(EPOLL_CLOEXEC);

	assert_true(ep >= 0);
	assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
	while (queued(fd) < count)
		if (epoll_wait(ep, &got, 1, 5000) == 0)
			fail_msg("%u datagrams of %u arrived", queued(fd), count);
	close(ep);
}

static void fill(char *buf, size_t len, char c)
{
	memset(buf, c, len);
}

static void assert_from(const struct udp_batch *b, unsigned i, const struct sockaddr_in *who)
{
	const struct sockaddr_in *a = (const void *)&b->addr[i];

	assert_int_equal(b->hdr[i].msg_hdr.msg_namelen, sizeof(*who));
	assert_int_equal(a->sin_family, AF_INET);
	assert_int_equal(a->sin_port, who->sin_port);
	assert_int_equal(a->sin_addr.s_addr, who->sin_addr.s_addr);
}

static void test_one_datagram_sent_alone(void **state)
{
	struct sockaddr_in sa, ra;
	int s = open_udp(&sa), r = open_udp(&ra);
	struct udp_batch tx;
	char out[150], in[SLOT + 1];
	struct sockaddr_in from;
	socklen_t fl = sizeof(from);

	(void)state;
	assert_int_equal(udp__init(&tx, SLOT), 0);
	fill(out, sizeof(out), 'a');
	out[0] = '1';
	udp__queue(s, &tx, out, sizeof(out), (const struct sockaddr *)&ra, sizeof(ra));
	assert_int_equal(tx.n, 1);
	/* Nothing leaves before the send. */
	assert_int_equal(recv(r, in, sizeof(in), MSG_DONTWAIT), -1);
	assert_int_equal(errno, EAGAIN);
	udp__send(s, &tx);
	assert_int_equal(tx.n, 0);
	wait_readable(r);
	assert_int_equal(recvfrom(r, in, sizeof(in), MSG_DONTWAIT, (struct sockaddr *)&from, &fl), sizeof(out));
	assert_memory_equal(in, out, sizeof(out));
	assert_int_equal(from.sin_port, sa.sin_port);
	/* Exactly one. */
	assert_int_equal(recv(r, in, sizeof(in), MSG_DONTWAIT), -1);

	/* The batch is usable again, with a shorter datagram in the same slot. */
	udp__queue(s, &tx, "short", 5, (const struct sockaddr *)&ra, sizeof(ra));
	udp__send(s, &tx);
	wait_readable(r);
	assert_int_equal(recv(r, in, sizeof(in), MSG_DONTWAIT), 5);
	assert_memory_equal(in, "short", 5);
	/* Sending nothing sends nothing: the next datagram to arrive is a
	 * marker sent after it, not an empty or repeated one. */
	udp__send(s, &tx);
	assert_int_equal(sendto(s, "mark", 4, 0, (const struct sockaddr *)&ra, sizeof(ra)), 4);
	wait_readable(r);
	assert_int_equal(recv(r, in, sizeof(in), MSG_DONTWAIT), 4);
	assert_memory_equal(in, "mark", 4);
	assert_int_equal(recv(r, in, sizeof(in), MSG_DONTWAIT), -1);
	udp__free(&tx);
	close(s);
	close(r);
}

static void test_batch_to_two_peers(void **state)
{
	struct sockaddr_in sa, ra, rb;
	int s = open_udp(&sa), r1 = open_udp(&ra), r2 = open_udp(&rb);
	struct udp_batch tx;
	char out[SLOT], in[SLOT + 1];

	(void)state;
	assert_int_equal(udp__init(&tx, SLOT), 0);
	/* More than a batch holds: the full batch leaves on its own. */
	for (unsigned i = 0; i < UDP_BATCH + 3; i++) {
		size_t len = 10 + i;
		fill(out, len, (char)('A' + i % 26));
		udp__queue(s, &tx, out, len, (const struct sockaddr *)(i % 2 ? &rb : &ra), sizeof(ra));
	}
	assert_int_equal(tx.n, 3);
	udp__send(s, &tx);
	assert_int_equal(tx.n, 0);
	for (unsigned i = 0; i < UDP_BATCH + 3; i++) {
		int r = i % 2 ? r2 : r1;
		ssize_t got;
		wait_readable(r);
		got = recv(r, in, sizeof(in), MSG_DONTWAIT);
		/* In order per destination, each its own length and bytes. */
		assert_int_equal(got, 10 + i);
		fill(out, 10 + i, (char)('A' + i % 26));
		assert_memory_equal(in, out, 10 + i);
	}
	udp__free(&tx);
	close(s);
	close(r1);
	close(r2);
}

static void test_batch_read_drains_and_says_empty(void **state)
{
	struct sockaddr_in sa, sb, ra;
	int s1 = open_udp(&sa), s2 = open_udp(&sb), r = open_udp(&ra);
	struct udp_batch rx;
	char out[SLOT + 50];

	(void)state;
	assert_int_equal(udp__init(&rx, SLOT + 1), 0);
	/* Nothing waiting: 0, at once. */
	assert_int_equal(udp__recv(r, &rx, UDP_BATCH), 0);

	for (int round = 0; round < 2; round++) {
		/* Three from two sources, of other sizes each round: the headers
		 * set up once must still give each its own length and source. */
		size_t lens[3] = {round ? 7u : 120u, round ? 199u : 1u, round ? 60u : 33u};
		for (int i = 0; i < 3; i++) {
			fill(out, lens[i], (char)('a' + i + round));
			assert_int_equal(sendto(i == 1 ? s2 : s1, out, lens[i], 0, (struct sockaddr *)&ra, sizeof(ra)),
			                 (ssize_t)lens[i]);
		}
		settle_queue(r, 3);
		assert_int_equal(queued(r), 3);
		assert_int_equal(udp__recv(r, &rx, UDP_BATCH), 3);
		assert_int_equal(rx.n, 3);
		for (unsigned i = 0; i < 3; i++) {
			assert_int_equal(udp__rx_len(&rx, i), lens[i]);
			fill(out, lens[i], (char)('a' + i + round));
			assert_memory_equal(udp__rx_data(&rx, i), out, lens[i]);
			assert_from(&rx, i, i == 1 ? &sb : &sa);
		}
		/* Fewer than asked: it was empty, and is. */
		assert_int_equal(udp__recv(r, &rx, UDP_BATCH), 0);
	}

	/* Longer than the slot: shown as the slot's length (refused upstream
	 * as oversize), not cut to a valid-looking length. */
	fill(out, sizeof(out), 'z');
	sendto(s1, out, sizeof(out), 0, (struct sockaddr *)&ra, sizeof(ra));
	settle_queue(r, 1);
	assert_int_equal(udp__recv(r, &rx, UDP_BATCH), 1);
	assert_int_equal(udp__rx_len(&rx, 0), SLOT + 1);
	udp__free(&rx);
	close(s1);
	close(s2);
	close(r);
}

static void test_single_read_after_a_lone_datagram(void **state)
{
	struct sockaddr_in sa, ra;
	int s = open_udp(&sa), r = open_udp(&ra);
	struct udp_batch rx;
	char out[64];

	(void)state;
	assert_int_equal(udp__init(&rx, SLOT + 1), 0);
	/* At first, and after reads of several, turns read in batches. */
	assert_int_equal(udp__turn_want(&rx, UDP_BATCH), UDP_BATCH);
	for (int i = 0; i < 2; i++)
		sendto(s, "xy", 2, 0, (struct sockaddr *)&ra, sizeof(ra));
	settle_queue(r, 2);
	assert_int_equal(udp__recv(r, &rx, UDP_BATCH), 2);
	assert_int_equal(udp__turn_want(&rx, UDP_BATCH), UDP_BATCH);

	/* A batch read that found one alone: the next UDP_LONE_TURNS turns
	 * start with a single read, then batches again. */
	sendto(s, "one", 3, 0, (struct sockaddr *)&ra, sizeof(ra));
	settle_queue(r, 1);
	assert_int_equal(udp__recv(r, &rx, UDP_BATCH), 1);
	for (int i = 0; i < UDP_LONE_TURNS; i++)
		assert_int_equal(udp__turn_want(&rx, UDP_BATCH), 1);
	assert_int_equal(udp__turn_want(&rx, UDP_BATCH), UDP_BATCH);
	/* A turn limited to fewer keeps its limit. */
	assert_int_equal(udp__recv(r, &rx, UDP_BATCH), 0);
	assert_int_equal(udp__turn_want(&rx, 5), 5);

	/* A single read takes one, with its length and source, and leaves the
	 * others for the next read. */
	for (int i = 0; i < 3; i++) {
		fill(out, 10u + (unsigned)i, (char)('p' + i));
		sendto(s, out, 10u + (unsigned)i, 0, (struct sockaddr *)&ra, sizeof(ra));
	}
	settle_queue(r, 3);
	assert_int_equal(udp__recv(r, &rx, 1), 1);
	assert_int_equal(udp__rx_len(&rx, 0), 10);
	fill(out, 10, 'p');
	assert_memory_equal(udp__rx_data(&rx, 0), out, 10);
	assert_from(&rx, 0, &sa);
	assert_int_equal(udp__recv(r, &rx, UDP_BATCH), 2);
	assert_int_equal(udp__rx_len(&rx, 0), 11);
	assert_int_equal(udp__rx_len(&rx, 1), 12);
	/* Empty: a single read says 0. */
	assert_int_equal(udp__recv(r, &rx, 1), 0);
	assert_int_equal(rx.n, 0);
	/* Too long for the slot, read alone: the slot's length, as in a batch. */
	{
		char big[SLOT + 40];
		fill(big, sizeof(big), 'q');
		sendto(s, big, sizeof(big), 0, (struct sockaddr *)&ra, sizeof(ra));
		settle_queue(r, 1);
		assert_int_equal(udp__recv(r, &rx, 1), 1);
		assert_int_equal(udp__rx_len(&rx, 0), SLOT + 1);
	}
	udp__free(&rx);
	close(s);
	close(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_one_datagram_sent_alone),
	    cmocka_unit_test(test_batch_to_two_peers),
	    cmocka_unit_test(test_batch_read_drains_and_says_empty),
	    cmocka_unit_test(test_single_read_after_a_lone_datagram),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
