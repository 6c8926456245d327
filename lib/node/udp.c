/*
 * lib/node: datagrams in batches (see udp.h).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "node/udp.h"

int udp__init(struct udp_batch *b, size_t slot)
{
	memset(b, 0, sizeof(*b));
	/* Touched only as far as datagrams go: a large max_datagram costs
	 * address space, not resident memory. */
	b->bufs = malloc(UDP_BATCH * slot);
	if (!b->bufs)
		return -ENOMEM;
	b->slot = slot;
	/* The headers point at their slot and address for good: a receive
	 * only gives back the room for the address (the kernel shortens it),
	 * a queued datagram only sets its length. */
	for (unsigned i = 0; i < UDP_BATCH; i++) {
		b->iov[i].iov_base = b->bufs + (size_t)i * slot;
		b->iov[i].iov_len = slot;
		b->hdr[i].msg_hdr.msg_name = &b->addr[i];
		b->hdr[i].msg_hdr.msg_namelen = sizeof(b->addr[i]);
		b->hdr[i].msg_hdr.msg_iov = &b->iov[i];
		b->hdr[i].msg_hdr.msg_iovlen = 1;
	}
	return 0;
}

void udp__free(struct udp_batch *b)
{
	free(b->bufs);
	memset(b, 0, sizeof(*b));
}

unsigned udp__recv(int fd, struct udp_batch *b, unsigned max)
{
	int r;

	if (max > UDP_BATCH)
		max = UDP_BATCH;
	if (max == 0)
		return b->n = 0;
	for (unsigned i = 0; i < max; i++)
		b->hdr[i].msg_hdr.msg_namelen = sizeof(b->addr[i]);
	if (max == 1) {
		ssize_t len = recvmsg(fd, &b->hdr[0].msg_hdr, MSG_DONTWAIT);
		if (len >= 0)
			b->hdr[0].msg_len = (unsigned)len;
		return b->n = len >= 0 ? 1u : 0u;
	}
	/* As many as are waiting, up to max, in one call: it returns fewer
	 * than max only when the socket is empty (udp.h). */
	r = recvmmsg(fd, b->hdr, max, MSG_DONTWAIT, NULL);
	b->n = r > 0 ? (unsigned)r : 0;
	if (b->n == 1)
		b->lone = UDP_LONE_TURNS;
	return b->n;
}

unsigned udp__turn_want(struct udp_batch *b, unsigned max)
{
	if (b->lone > 0 && max > 0) {
		b->lone--;
		return 1;
	}
	return max;
}

size_t udp__rx_len(const struct udp_batch *b, unsigned i)
{
	if (b->hdr[i].msg_hdr.msg_flags & MSG_TRUNC)
		return b->slot;
	return b->hdr[i].msg_len;
}

void udp__queue(int fd, struct udp_batch *b, const void *buf, size_t len, const struct sockaddr *to,
                socklen_t tolen)
{
	unsigned i;

	if (len > b->slot) {
		(void)sendto(fd, buf, len, MSG_DONTWAIT, to, tolen);
		return;
	}
	if (b->n == UDP_BATCH)
		udp__send(fd, b);
	i = b->n++;
	memcpy(b->bufs + (size_t)i * b->slot, buf, len);
	memcpy(&b->addr[i], to, tolen);
	b->iov[i].iov_len = len;
	b->hdr[i].msg_hdr.msg_namelen = tolen;
}

void udp__send(int fd, struct udp_batch *b)
{
	unsigned i = 0;

	/* One datagram (an answer, a set in a round trip): sendto() does less
	 * than a sendmmsg() of one. */
	if (b->n == 1) {
		while (sendto(fd, b->iov[0].iov_base, b->iov[0].iov_len, MSG_DONTWAIT,
		              (const struct sockaddr *)&b->addr[0], b->hdr[0].msg_hdr.msg_namelen) < 0 &&
		       errno == EINTR)
			;
		b->n = 0;
		return;
	}
	while (i < b->n) {
		int r = sendmmsg(fd, b->hdr + i, b->n - i, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		/* The one that failed is lost, as sendto() would have lost it;
		 * the others still go. */
		i += r > 0 ? (unsigned)r : 1u;
	}
	b->n = 0;
}
