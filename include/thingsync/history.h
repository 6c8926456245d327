/*
 * thingsync — the local history of a controller's own things.
 * SPDX-License-Identifier: MIT
 */
#ifndef THINGSYNC_HISTORY_H
#define THINGSYNC_HISTORY_H

#include <thingsync/common.h>
#include <thingsync/node.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * The mesh carries only the latest value of a thing. A node with a state
 * directory can also keep every change of the things it owns (time, owner
 * boot, version, value) in its LMDB store, written by the same group commit
 * as its state, so that the changes made while nobody listened can be
 * recovered later. The history is bounded by age and by size; the oldest
 * entries are trimmed first, and what was trimmed is remembered, so that a
 * window that lost entries is reported as trimmed, never as empty.
 *
 * site.conf turns it on (`history = yes` in the controller's section, with
 * `history_max_age` and `history_max_bytes`; a thing may have its own bounds
 * or `history = no`): tsync_node_new() then enables it. An application may
 * enable it itself with tsync_node_history_enable().
 *
 * While the history is on, the node answers the seed's
 * `recovery_data_request` ({"lost_connection_time": L,
 * "restored_connection_time": R}, seconds since the epoch) itself: its
 * answer is {"chunks": N, "entries": M, "trimmed": B, "trimmed_from_us",
 * "trimmed_to_us", "complete": B}, and the changes of the window follow as N
 * `recovery_data` requests to the requester, each within the site's
 * max_datagram, each delivered once: {"entity": ME, "lost_connection_time",
 * "restored_connection_time", "chunk": K, "chunks": N, "recovery_data":
 * {"io": [{"thing", "value", "time_us", "owner_boot", "version"}, ...]}}.
 * Chunks not yet sent when the node is freed are not sent: ask again. An
 * application's own handler for the type (tsync_node_on_request()),
 * registered after the history was enabled, replaces this one.
 */

/** Bounds of a history; 0 means no bound of that kind. */
typedef struct tsync_history_limits {
	uint64_t max_age_ms; /**< entries older than this are trimmed at the next commit */
	uint64_t max_bytes;  /**< keys and records held, over all things */
} tsync_history_limits;

/** One change. Every pointer is borrowed for the duration of the callback. */
typedef struct tsync_history_entry {
	const char *thing;
	int64_t time_us;     /**< when the owner took it, microseconds since the epoch */
	uint64_t owner_boot; /**< the owner's boot and version of the value, as the */
	uint64_t version;    /**< mesh carries them: together, the change's identity */
	tsync_value value;
} tsync_history_entry;

/**
 * Called for each entry of a window, per thing in name order and by time
 * within a thing. Return 0 to go on, anything else to stop. It must not free
 * the node.
 */
typedef int (*tsync_history_fn)(void *userdata, const tsync_history_entry *entry);

/** What a query found, besides the entries. */
typedef struct tsync_history_window {
	uint64_t entries; /**< entries passed to the callback */
	/**
	 * Part of the window was recorded and has since been trimmed by the
	 * bounds: the entries of [trimmed_from_us, trimmed_to_us] are lost. An
	 * empty answer with `trimmed` false means there were no changes.
	 */
	bool trimmed;
	int64_t trimmed_from_us;
	int64_t trimmed_to_us;
	/** The oldest time still held (of the thing, or of all things; 0: none). */
	int64_t held_from_us;
} tsync_history_window;

/** Counters of a node's history. */
typedef struct tsync_history_stats {
	bool enabled;
	uint64_t entries;           /**< held (committed) */
	uint64_t bytes;             /**< keys and records held */
	uint64_t trimmed;           /**< entries trimmed by the bounds since the history began */
	uint64_t staged;            /**< recorded, not yet committed */
	int64_t oldest_us;          /**< the oldest time held (0: none) */
	int64_t trimmed_through_us; /**< the newest time trimmed (0: nothing trimmed) */
	tsync_history_limits limits;
} tsync_history_stats;

/**
 * Starts keeping the history of the node's own things, or changes its
 * bounds. Needs a state directory. What was kept by an earlier run on the
 * same directory is kept.
 *
 * @param limits  borrowed for the call; NULL takes the controller's bounds
 *                from site.conf (or none). Bounds of single things set in
 *                site.conf apply either way.
 * @return 0; -ENOTSUP (no state directory); TSYNC_ESTORE; -ENOMEM.
 */
TSYNC_API int tsync_node_history_enable(tsync_node *node, const tsync_history_limits *limits);

/**
 * Reads the committed entries of a window (changes in the group-commit
 * window appear once committed; see tsync_node_commit()).
 *
 * @param thing   one thing (borrowed), or NULL for every thing.
 * @param from_us start of the window, included (microseconds since the epoch).
 * @param to_us   end of the window, included.
 * @param fn      called for each entry; may be NULL to count only.
 * @param out     receives the counts and what was trimmed; may be NULL.
 * @return 0 (also when fn stopped early); -EINVAL (from_us > to_us);
 *         -ENOTSUP (history not enabled); TSYNC_ESTORE; -ENOMEM.
 */
TSYNC_API int tsync_node_history_query(tsync_node *node, const char *thing, int64_t from_us, int64_t to_us,
                                       tsync_history_fn fn, void *userdata, tsync_history_window *out);

/**
 * The history's counters (all zero, `enabled` false, when it is off).
 * @return 0, or -EINVAL.
 */
TSYNC_API int tsync_node_history_stats(const tsync_node *node, tsync_history_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* THINGSYNC_HISTORY_H */
