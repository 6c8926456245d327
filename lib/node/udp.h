/*
 * lib/node: datagrams in batches, one system call for many: recvmmsg() to
 * read what is waiting, sendmmsg() to send what a flush produced. The
 * buffers are allocated once, for the site's max_datagram.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_NODE_UDP_H
#define TSYNC_NODE_UDP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define UDP_BATCH 32 /* datagrams per system call */
/* Turns that read with recvmsg() after a batch read found one datagram
 * alone (see udp__turn_want()). */
#define UDP_LONE_TURNS 8

struct udp_batch {
	struct mmsghdr hdr[UDP_BATCH];
	struct iovec iov[UDP_BATCH];
	struct sockaddr_storage addr[UDP_BATCH];
	unsigned char *bufs; /* UDP_BATCH slots of `slot` bytes */
	size_t slot;
	unsigned n; /* tx: datagrams queued; rx: datagrams read */
	unsigned lone; /* rx: turns left that start with a single read */
};

/* 0 or -ENOMEM. slot: the largest datagram (rx: one byte more, so that a
 * longer one shows as longer than max_datagram, not cut to it). */
int udp__init(struct udp_batch *b, size_t slot);
void udp__free(struct udp_batch *b);

/* Reads up to max (<= UDP_BATCH) datagrams without blocking; returns how
 * many (0 when none is waiting). Fewer than max (max > 1) means the socket
 * is empty: no need to call again to learn it. max 1 is one recvmsg(),
 * which says nothing about what else waits. Datagram i: udp__rx_data(), its
 * length (a truncated one has slot bytes) and b->addr[i]. */
unsigned udp__recv(int fd, struct udp_batch *b, unsigned max);

/* How many to ask for first in a receive turn: max, or 1 for the
 * UDP_LONE_TURNS turns after a read of more than one found one datagram
 * alone. A recvmmsg() that finds one datagram looks for a second in vain,
 * which costs a round trip (one request, one answer) about a tenth of a
 * system call's time on each side; a single read skips that. When a single
 * read left more behind, a level-triggered poll brings the caller back at
 * once, and the turns after UDP_LONE_TURNS read in batches again: a burst
 * costs at most that many extra turns. */
unsigned udp__turn_want(struct udp_batch *b, unsigned max);
static inline const void *udp__rx_data(const struct udp_batch *b, unsigned i)
{
	return b->bufs + (size_t)i * b->slot;
}
size_t udp__rx_len(const struct udp_batch *b, unsigned i);

/* Queues a copy of a datagram (at most slot bytes: a longer one is sent at
 * once), sending the batch first when it is full. */
void udp__queue(int fd, struct udp_batch *b, const void *buf, size_t len, const struct sockaddr *to,
                socklen_t tolen);
/* Sends what is queued. A datagram the socket refuses (a full buffer, an
 * unreachable peer) is lost, as with sendto(): retransmission is the
 * engine's business. */
void udp__send(int fd, struct udp_batch *b);

#endif
