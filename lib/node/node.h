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

#endif
