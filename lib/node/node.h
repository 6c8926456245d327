/*
 * lib/node: what the library's own tools may ask of a node beyond the
 * public API (the benchmarks link the internal parts).
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_NODE_INTERNAL_H
#define TSYNC_NODE_INTERNAL_H

#include <stdint.h>

#include <thingsync/node.h>

/* Bytes and commits the node's store has written so far (store__written);
 * zeros without a state directory. */
void node__store_written(const tsync_node *n, uint64_t *bytes, uint64_t *commits);

/* The realtime clock of every node's cumuls in this process (microseconds
 * since the epoch), for tests that walk a day through midnight without
 * waiting for it; set it before the nodes are made. NULL restores the
 * system clock. */
typedef int64_t (*node_clock_fn)(void *ud);
void node__set_clock(node_clock_fn fn, void *ud);
/* Runs the cumuls' timer now (midnight or checkpoint), as the loop would. */
void node__cumul_tick(tsync_node *n);

/* The max_datagram of the node's site. */
size_t node__max_datagram(const tsync_node *n);
/* The handler of `recovery_data_request` (recovery.c), registered on the
 * node while its history is on: the window's changes go back to the
 * requester as chunked `recovery_data` requests. */
int node__recovery_request(void *ud, tsync_node *node, const tsync_request *req, char **result);
/* Where recovery.c keeps the node's answers being sent. */
void **node__recovery_answers(tsync_node *n);
/* At the node's start: the answers a stop interrupted go on (recovery.c). */
void node__recovery_resume(tsync_node *node);
/* At the node's start, before its stored requests resume: a chunk of a
 * recovery answer of this node gets the callback that sends it again when
 * its outcome is unknown (*done, *userdata); other requests are left. */
struct store_request;
void node__recovery_resumed(tsync_node *node, const struct store_request *q, tsync_done_fn *done,
                            void **userdata);

/* The bounded busy poll (tsync_node_options.busy_poll_us, node.c
 * busy_poll()): what it did. */
struct node_busy_stats {
	uint64_t polls;    /* started: a send awaited an answer from a near peer */
	uint64_t answered; /* ended with a datagram read */
	uint64_t reads;    /* non-blocking reads made */
};
/* A poll's reads, at most, whatever the clock says. */
#define NODE_BUSY_READS_MAX 4096u
void node__busy_stats(const tsync_node *n, struct node_busy_stats *st);
/* The cap in force (0: off: not asked for, or one CPU usable). */
uint32_t node__busy_poll_us(const tsync_node *n);
/* The CPUs this process may run on (sched_getaffinity(); 1 if it cannot
 * tell), or what node__busy_cpus() set: the poll is off below 2. */
int node__usable_cpus(void);
/* Tests: the CPUs nodes made from now on assume (0: sched_getaffinity()),
 * and a hook called before each read of a poll (NULL: none). */
void node__busy_cpus(int cpus);
typedef void (*node_busy_hook)(void *ud);
void node__set_busy_hook(node_busy_hook fn, void *ud);

#endif
