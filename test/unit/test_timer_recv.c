/*
 * A retry timer reads what waits in the socket before it decides (node.c,
 * timer_cb()), but at most TIMER_RECV_MAX datagrams: a flood must not keep
 * the timer from its decision, and what it leaves is read by the receive
 * turns after it.
 *
 * More datagrams than a default socket buffer holds (net.core.rmem_max
 * allows about 500 small ones) must wait at once, so this program stands in
 * for the kernel: udp__recv is wrapped by the linker (-Wl,--wrap) and
 * serves FAKE junk datagrams from an unknown address before reading the
 * socket, and udp__queue is wrapped to note how many had been served when
 * the node first sent to its peer B afterwards. B is a plain socket that
 * never answers, so the node's request to it is retried from its timer.
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "node/udp.h"

#define FAKE 3000 /* well above TIMER_RECV_MAX (512) and a receive turn (64) */

static const char junk[] = "not a datagram of the protocol";
static unsigned fake_left, fake_served;
static uint16_t port_b;
static bool watching, sent_seen;
static unsigned served_at_send;

unsigned __real_udp__recv(int fd, struct udp_batch *b, unsigned max);
unsigned __wrap_udp__recv(int fd, struct udp_batch *b, unsigned max);
void __real_udp__queue(int fd, struct udp_batch *b, const void *buf, size_t len, const struct sockaddr *to,
                       socklen_t tolen);
void __wrap_udp__queue(int fd, struct udp_batch *b, const void *buf, size_t len, const struct sockaddr *to,
                       socklen_t tolen);

unsigned __wrap_udp__recv(int fd, struct udp_batch *b, unsigned max)
{
	unsigned k;

	if (fake_left == 0)
		return __real_udp__recv(fd, b, max);
	if (max > UDP_BATCH)
		max = UDP_BATCH;
	k = fake_left < max ? fake_left : max;
	for (unsigned i = 0; i < k; i++) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&b->addr[i];
		memcpy(b->bufs + (size_t)i * b->slot, junk, sizeof(junk) - 1);
		b->hdr[i].msg_len = sizeof(junk) - 1;
		b->hdr[i].msg_hdr.msg_flags = 0;
		b->hdr[i].msg_hdr.msg_namelen = sizeof(*sin);
		memset(sin, 0, sizeof(*sin));
		sin->sin_family = AF_INET;
		sin->sin_port = htons(9);
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	}
	fake_left -= k;
	fake_served += k;
	return b->n = k;
}

void __wrap_udp__queue(int fd, struct udp_batch *b, const void *buf, size_t len, const struct sockaddr *to,
                       socklen_t tolen)
{
	if (watching && !sent_seen && to->sa_family == AF_INET &&
	    ntohs(((const struct sockaddr_in *)to)->sin_port) == port_b) {
		sent_seen = true;
		served_at_send = fake_served;
	}
	__real_udp__queue(fd, b, buf, len, to, tolen);
}

static uint64_t rejected(const tsync_node *n)
{
	uint64_t sum = 0;

	for (int r = 0; r < TSYNC_REJ_COUNT; r++)
		sum += tsync_node_rejected_unknown(n, (tsync_reject)r);
	return sum;
}

/* What B's socket got (without waiting). */
static unsigned drain(int fd)
{
	char buf[2048];
	unsigned n = 0;

	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
		n++;
	return n;
}

static void on_done(void *ud, tsync_node *node, int status, const char *result)
{
	(void)node;
	(void)status;
	(void)result;
	(*(int *)ud)++;
}

static void test_timer_not_starved(void **state)
{
	char *dir = harness_tmpdir("timer-recv"), text[512], *site;
	uint16_t ports[2];
	struct sockaddr_in a_addr = {0}, b_addr = {0};
	struct timespec nap = {0, 600 * 1000 * 1000};
	tsync_node_options o;
	tsync_node *a = NULL;
	int b, j, done = 0;
	unsigned got = 0;

	(void)state;
	harness_ports(ports, 2);
	port_b = ports[1];
	snprintf(text, sizeof(text),
	         "[site]\nname = timer\nretry_min_ms = 10\nretry_initial_ms = 50\nretry_max_ms = 400\n"
	         "down_after_ms = 600000\n"
	         "[controller A]\nhost = 127.0.0.1\nudp_port = %u\n"
	         "[controller B]\nhost = 127.0.0.1\nudp_port = %u\nroles = cmd_do\n",
	         ports[0], ports[1]);
	site = harness_write(dir, "site.conf", text);
	b = socket(AF_INET, SOCK_DGRAM, 0);
	j = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(b >= 0 && j >= 0);
	b_addr.sin_family = a_addr.sin_family = AF_INET;
	b_addr.sin_addr.s_addr = a_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	b_addr.sin_port = htons(ports[1]);
	a_addr.sin_port = htons(ports[0]);
	assert_int_equal(bind(b, (struct sockaddr *)&b_addr, sizeof(b_addr)), 0);
	tsync_node_options_init(&o);
	o.site_path = site;
	o.controller = "A";
	o.log = harness_log;
	assert_int_equal(tsync_node_new(&o, &a), 0);

	/* A request B never answers: A retries it from its timer. */
	assert_int_equal(tsync_node_cmd(a, "B", "cmd_do", "version", NULL, on_done, &done), 0);
	for (int k = 0; k < 3000 && got == 0; k++) {
		tsync_node_run_for(a, 10);
		got = drain(b);
	}
	assert_true(got > 0);
	/* Without the loop, the retry falls due (retry_max_ms is 400). Then
	 * FAKE datagrams wait, and one real one makes the socket readable. */
	nanosleep(&nap, NULL);
	drain(b);
	fake_left = FAKE;
	fake_served = 0;
	watching = true;
	assert_int_equal(sendto(j, junk, sizeof(junk) - 1, 0, (struct sockaddr *)&a_addr, sizeof(a_addr)),
	                 (ssize_t)sizeof(junk) - 1);
	for (int k = 0; k < 6000 && (fake_left > 0 || !sent_seen || rejected(a) < FAKE + 1); k++)
		tsync_node_run_for(a, 10);

	/* The timer sent its retry before the flood was read... */
	assert_true(sent_seen);
	printf("A's first datagram to B after the flood: %u of %u waiting datagrams read\n", served_at_send,
	       FAKE);
	assert_true(served_at_send < FAKE);
	assert_true(drain(b) > 0);
	/* ... and every datagram was read, the real one included, each once. */
	assert_int_equal(fake_left, 0);
	assert_int_equal(fake_served, FAKE);
	assert_int_equal(rejected(a), FAKE + 1);
	assert_int_equal(done, 0); /* B never answered */

	tsync_node_free(a); /* its request ends, cancelled */
	assert_int_equal(done, 1);
	close(b);
	close(j);
	free(site);
	harness_rmdir(dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_timer_not_starved),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
