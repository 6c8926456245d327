/*
 * thingsync — the node: one controller of the site, speaking the mesh protocol.
 * SPDX-License-Identifier: MIT
 */
#ifndef THINGSYNC_NODE_H
#define THINGSYNC_NODE_H

#include <thingsync/common.h>
#include <thingsync/site.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * A node is one controller of a site: it owns some things, holds copies of
 * the things it uses, and exchanges datagrams with the other controllers.
 * A node is not thread-safe; call it from the thread that runs its loop.
 * Many nodes may live in one process.
 */
typedef struct tsync_node tsync_node;

/** Options for tsync_node_new(). Initialise with tsync_node_options_init(). */
typedef struct tsync_node_options {
	/** The site, borrowed: it must outlive the node. If NULL, `site_path` is loaded. */
	const tsync_site *site;
	/** Path of site.conf, used when `site` is NULL. */
	const char *site_path;
	/** This controller's name in site.conf (required). */
	const char *controller;
	/**
	 * Directory for the LMDB state (boot counter, owned values). NULL keeps
	 * everything in memory: the node then forgets its values when freed.
	 */
	const char *state_dir;
	/**
	 * A libevent `struct event_base *`, borrowed, to run inside the caller's
	 * loop. NULL: the node makes its own, run with tsync_node_run().
	 */
	void *event_base;
	/** UDP address to bind instead of the controller's `host` (e.g. "0.0.0.0"). */
	const char *bind_host;
	/** Log callback; NULL logs nothing. */
	tsync_log_fn log;
	void *log_userdata;
	/** Most verbose level passed to `log` (default TSYNC_LOG_INFO). */
	tsync_log_level log_level;
	/**
	 * Bounded busy poll, in microseconds (0, the default: off). After the
	 * node sends something whose answer it awaits (a set awaiting its
	 * acknowledgement, a request, an ask) to a peer whose measured round
	 * trip is at most twice this, it reads the socket without sleeping for
	 * at most min(2 x that round trip, this) before it waits in the event
	 * loop again, so that the answer does not have to wake a halted CPU.
	 * It costs CPU while it polls and never runs when nothing is awaited,
	 * nor after a turn that sent to more than four peers (a batch).
	 * Ignored (off) when the process may run on one CPU only
	 * (sched_getaffinity): the peer would then wait for the poll to end.
	 * At most 1000. For a controller on a LAN with CPU to spare; not for a
	 * Raspberry Pi on battery.
	 */
	unsigned busy_poll_us;
} tsync_node_options;

/** Fills `opts` with defaults (all NULL, log level info). */
TSYNC_API void tsync_node_options_init(tsync_node_options *opts);

/**
 * Creates a node, binds its UDP socket and starts the start-up re-sync (it asks
 * the owners of everything it uses, and sends its own values to their users).
 *
 * @param opts  options, borrowed for the call (strings are copied).
 * @param ret   receives the node (owned, free with tsync_node_free()); written
 *              only on success.
 * @return 0; -EINVAL (missing controller); TSYNC_EUNKNOWN_CTRL; TSYNC_ESITE or
 *         TSYNC_EKEY (site_path invalid); -EADDRINUSE or another negative errno
 *         from the socket; TSYNC_ESTORE; -ENOMEM.
 */
TSYNC_API int tsync_node_new(const tsync_node_options *opts, tsync_node **ret);

/**
 * Frees a node: closes its socket, commits its state, and completes every
 * outstanding pulse or command callback with TSYNC_ECANCELED. Accepts NULL.
 *
 * With a state directory, a request that completes this way is still kept:
 * the next node started on the same directory resumes it under its first
 * (origin boot, id) and the peer acts on it once (see tsync_node_pulse()).
 */
TSYNC_API void tsync_node_free(tsync_node *node);

/**
 * Frees a node as a crash or a power cut would end it: nothing staged since
 * the last commit is committed (the group commit window of its own values,
 * say), so a node started again on the same state directory finds only what
 * was durable. Callbacks run as in tsync_node_free(). For simulators and
 * tests of crash recovery in one process. Accepts NULL.
 */
TSYNC_API void tsync_node_abandon(tsync_node *node);

/** The node's controller name; borrowed, valid until tsync_node_free(). */
TSYNC_API const char *tsync_node_name(const tsync_node *node);

/** The node's site; borrowed, valid until tsync_node_free(). */
TSYNC_API const tsync_site *tsync_node_site(const tsync_node *node);

/** The node's boot counter (increases at every start; never repeats). */
TSYNC_API uint64_t tsync_node_boot(const tsync_node *node);

/** The UDP port the node is bound to. */
TSYNC_API uint16_t tsync_node_port(const tsync_node *node);

/**
 * Runs the node's own event loop until tsync_node_stop() is called.
 * Not for nodes created with `event_base`.
 * @return 0, or -EINVAL.
 */
TSYNC_API int tsync_node_run(tsync_node *node);

/**
 * Runs the node's own event loop for `timeout_ms` (the socket keeps the loop
 * busy, so it returns early only through tsync_node_stop()); with
 * timeout_ms < 0 it handles one round of ready events, waiting for the first.
 * For tests and tools: loop on it until tsync_node_unsettled() is 0.
 * @return 0, or -EINVAL.
 */
TSYNC_API int tsync_node_run_for(tsync_node *node, int timeout_ms);

/**
 * Makes tsync_node_run() return. Safe to call from any callback. On a node
 * created with `event_base`, it breaks that loop (event_base_loopbreak()).
 */
TSYNC_API void tsync_node_stop(tsync_node *node);

/**
 * Sets a thing.
 *
 * On the owner, this is the new value: it is stored and sent to every user,
 * repeated until each acknowledges. Elsewhere, it is a request to the owner
 * (to_be); the copy changes when the owner reports the resulting value.
 *
 * @param thing  name, borrowed.
 * @param v      value, borrowed (strings are copied).
 * @return 0; TSYNC_EUNKNOWN_THING; TSYNC_ENOT_USED; TSYNC_EVALUE;
 *         TSYNC_EREFUSED (a user setting a thing that is not settable, or the
 *         owner's write hook refusing the value); TSYNC_EWRITE (on the owner:
 *         the write hook could not drive the output, see tsync_write_fn);
 *         -ENOMEM.
 */
TSYNC_API int tsync_node_set(tsync_node *node, const char *thing, const tsync_value *v);

/**
 * Makes the node's own changes durable now.
 *
 * A change that answers a peer is always committed before the answer
 * leaves. The controller's own changes (tsync_node_set() on things it owns)
 * are committed together within `state_commit_ms` of site.conf (default
 * 5000; 0 commits before they are sent; a thing's first value is always
 * committed before it is sent), to spare an SD card one write per change. Call this before acknowledging a change to someone outside the
 * mesh (e.g. an HTTP client) that must survive a crash.
 *
 * @return 0 (also without a state directory); TSYNC_ESTORE.
 */
TSYNC_API int tsync_node_commit(tsync_node *node);

/**
 * Whether the owner has a value for one of its things now. With `unknown`
 * true its driver cannot read it (the seed's err_read_crash window): the
 * mesh keeps the last value, and the thing's cumul counts the time from now
 * as unknown (`unknown_ms`), until this is called with false (the read works
 * again: the node's value holds from now) or the next tsync_node_set() of
 * the thing, even with the same value.
 *
 * @return 0; -EINVAL; TSYNC_EUNKNOWN_THING; TSYNC_ENOT_USED (not owned here).
 */
TSYNC_API int tsync_node_set_unknown(tsync_node *node, const char *thing, bool unknown);

/**
 * A thing's cumulative statistics, as JSON text: those of the open day up
 * to now, or of a closed day, the same object a `cum` request is answered
 * with (documented in thingsync-cumul(7)). Each owner keeps them for its
 * own things, per day of the site's `timezone`, and closes the day at
 * local midnight (or at the forensics controller's reset, `{"type":"cum"}`),
 * keeping `cumul_days` closed days.
 *
 * @param day   NULL or the open day's date for today's; "YYYY-MM-DD" for a
 *              closed day. Borrowed for the call.
 * @param json  receives the text, malloc()ed: the caller frees it. Written
 *              only on success.
 * @return 0; -EINVAL; TSYNC_EUNKNOWN_THING; TSYNC_ENOT_USED (not owned
 *         here); TSYNC_EVALUE (no such day kept); -ENOMEM.
 */
TSYNC_API int tsync_node_cumul(tsync_node *node, const char *thing, const char *day, char **json);

/**
 * Stores an application's own small record in the node's state store: an
 * outage ledger, a cursor, what a role daemon must remember across restarts.
 * It is staged like the node's own changes and written by the node's next
 * commit, in the same transaction as everything else staged by then: a
 * record put and a request sent (tsync_node_request()) in the same turn of
 * the loop are durable together, before the request first leaves. It is
 * committed within `state_commit_ms`, or at once by tsync_node_commit().
 *
 * @param key   1 to 511 bytes, borrowed for the call.
 * @param text  the record (copied), or NULL to delete the key.
 * @return 0; -EINVAL; -ENOTSUP (no state directory); -ENAMETOOLONG; -ENOMEM.
 */
TSYNC_API int tsync_node_record_put(tsync_node *node, const char *key, const char *text);

/**
 * Reads a committed record of tsync_node_record_put().
 *
 * @param text  receives the record, malloc()ed: the caller frees it. Written
 *              only on success.
 * @return 0; -ENOENT (no such record committed); -EINVAL; -ENOTSUP (no
 *         state directory); TSYNC_ESTORE; -ENOMEM.
 */
TSYNC_API int tsync_node_record_get(tsync_node *node, const char *key, char **text);

/**
 * A record of tsync_node_record_scan(): key and text are borrowed for the
 * call. It must not call tsync_node_record_get() or _scan() (one read of
 * the store at a time), but may put records and send requests.
 */
typedef void (*tsync_record_fn)(void *userdata, const char *key, const char *text);

/**
 * Calls `fn` for every committed record of tsync_node_record_put() whose key
 * sorts (bytewise) from `from` up to, not including, `to`, in key order: a
 * role daemon keeps its history under keys that make a range one scan
 * (thingsync-forensicd: "c/DAY/OWNER/THING").
 *
 * @param from, to  borrowed for the call; NULL: unbounded on that side.
 * @return 0; -EINVAL; -ENOTSUP (no state directory); TSYNC_ESTORE; -ENOMEM.
 */
TSYNC_API int tsync_node_record_scan(tsync_node *node, const char *from, const char *to, tsync_record_fn fn,
                                     void *userdata);

/** What a node knows of one thing. */
typedef struct tsync_thing_state {
	tsync_value value; /**< TSYNC_TYPE_NONE if no value yet; a string is borrowed
	                        until the thing changes or the node is freed */
	bool owned;        /**< this node is the owner */
	uint64_t version;  /**< the owner's version of the value (0: none yet) */
	uint64_t owner_boot;
	size_t users_pending; /**< owner only: users that have not acknowledged it yet */
	bool asking;          /**< user only: an ask to the owner is not answered yet */
	bool requesting;      /**< user only: a set request (to_be) is not answered yet; once
	                           false, the value is the owner's answer (as_is) */
	int request_error;    /**< user only: once `requesting` is false, how the owner answered
	                           the last set request: 0 (taken), TSYNC_EREFUSED (refused,
	                           err_ip_in_refused), TSYNC_EVALUE (err_ip_in_val) or
	                           TSYNC_EWRITE (its output failed, err_write_crash) */
} tsync_thing_state;

/**
 * Reads the value a node holds for a thing (its own, or its copy).
 * @return 0; TSYNC_EUNKNOWN_THING; TSYNC_ENOT_USED.
 */
TSYNC_API int tsync_node_get(tsync_node *node, const char *thing, tsync_thing_state *out);

/**
 * Asks the owner again for a thing's value (done for every used thing at
 * start-up; useful after the application suspects a stale copy).
 * @return 0; TSYNC_EUNKNOWN_THING; TSYNC_ENOT_USED; -EINVAL on the owner itself.
 */
TSYNC_API int tsync_node_ask(tsync_node *node, const char *thing);

/**
 * Completion of a pulse, command or request.
 *
 * @param status  0 when the peer acknowledged (or answered) and acted;
 *                TSYNC_ECMD, TSYNC_ECMD_ARGS, TSYNC_EREFUSED if it refused;
 *                TSYNC_EWRITE if it tried and failed (err_write_crash: its
 *                pulse hook or command handler failed, e.g. a driver could
 *                not move the output), never as success;
 *                TSYNC_EPEER_RESTARTED if it restarted before answering;
 *                TSYNC_ECANCELED if the node is being freed.
 * @param result  the answer as JSON text (commands and requests; NULL for
 *                pulses or on error), borrowed for the call.
 */
typedef void (*tsync_done_fn)(void *userdata, tsync_node *node, int status, const char *result);

/**
 * Pulses a thing: its value is `v` for `ms` milliseconds, then returns to
 * normal. Acted on exactly once by the owner and each user, however often the
 * datagram is lost or duplicated. On the owner this acts locally (through the
 * pulse hook, see tsync_node_set_pulse_hook()) and tells the users; elsewhere
 * it asks the owner to pulse.
 *
 * An act that fails is never reported as success: when the owner's pulse
 * hook fails, the owner answers err_write_crash, `done` gets TSYNC_EWRITE,
 * and the users are not told of a pulse that did not happen. A duplicate of
 * the request is answered the same way without calling the hook again.
 *
 * @param v    the pulse value (NULL: true / 1), borrowed.
 * @param ms   duration (0: the thing's `pulse_ms`).
 * @param done called once with the owner's answer (may be NULL); never
 *             called when this function returns a negative code. On the
 *             owner itself it runs before this function returns.
 * @return 0; TSYNC_EUNKNOWN_THING; TSYNC_ENOT_USED; TSYNC_ENO_PULSE;
 *         TSYNC_EVALUE; TSYNC_EWRITE (on the owner: the pulse hook failed);
 *         -ENOBUFS if too many are outstanding; -ENOMEM.
 */
TSYNC_API int tsync_node_pulse(tsync_node *node, const char *thing, const tsync_value *v, uint32_t ms,
                               tsync_done_fn done, void *userdata);

/** Kinds of events delivered to a tsync_event_fn. */
typedef enum tsync_event_kind {
	TSYNC_EVENT_CHANGED = 1,   /**< a thing's value changed (own or copy) */
	TSYNC_EVENT_PULSE = 2,     /**< a thing was pulsed (acted on once; on the owner, after
	                                its pulse hook succeeded) */
	TSYNC_EVENT_PEER_UP = 3,   /**< a controller answered after silence or restart */
	TSYNC_EVENT_PEER_DOWN = 4, /**< a controller stopped answering */
} tsync_event_kind;

/** An event. Every pointer is borrowed for the duration of the callback. */
typedef struct tsync_event {
	tsync_event_kind kind;
	const char *thing;      /**< CHANGED, PULSE */
	tsync_value value;      /**< CHANGED: the new value; PULSE: the pulse value */
	uint32_t pulse_ms;      /**< PULSE */
	const char *controller; /**< who caused it (the sender, or this node) */
} tsync_event;

/**
 * Event callback. It may call any node function, including tsync_node_set().
 * During a TSYNC_EVENT_CHANGED, tsync_node_get() already returns the new
 * state, with the owner's version and boot of the value. An owner's new
 * version that carries the same value raises no event.
 */
typedef void (*tsync_event_fn)(void *userdata, tsync_node *node, const tsync_event *ev);

/**
 * Adds an event listener. Listeners are called in the order they were added.
 * @return 0, or -ENOMEM.
 */
TSYNC_API int tsync_node_on_event(tsync_node *node, tsync_event_fn fn, void *userdata);

/**
 * Owner-side write hook: called when a user asks to set one of this node's
 * things (or the application calls tsync_node_set() on it), before the value
 * is taken. It decides the resulting state (as_is), e.g. after driving an
 * output. The default takes `to_be` as it is.
 *
 * @param to_be  the requested value, borrowed.
 * @param as_is  receives the resulting value; a string must stay valid until
 *               the hook is called again or the node is freed.
 * @return 0 to take `as_is`; TSYNC_EWRITE when the value was accepted but
 *         the output could not be driven (a driver failed): answered
 *         err_write_crash, so the requester sees a failure, not a refusal
 *         (its tsync_thing_state.request_error is TSYNC_EWRITE); any other
 *         negative code to refuse the value (answered err_ip_in_refused).
 *         Either way the value is unchanged.
 */
typedef int (*tsync_write_fn)(void *userdata, tsync_node *node, const char *thing, const tsync_value *to_be,
                              tsync_value *as_is);

/** Sets the write hook (one per node; NULL restores the default). */
TSYNC_API void tsync_node_set_write_hook(tsync_node *node, tsync_write_fn fn, void *userdata);

/**
 * Owner-side pulse hook: the act of a pulse on one of this node's things.
 * Called once per pulse, whether the application pulsed (tsync_node_pulse()
 * on the owner) or a user asked, before TSYNC_EVENT_PULSE is raised and
 * before the users are told. Like an event, it runs again for the same pulse
 * only if a commit hook fails (see tsync_node_set_commit_hook()).
 *
 * @param thing  the thing's name, borrowed for the call.
 * @param v      the pulse value, borrowed for the call.
 * @param ms     the pulse's duration.
 * @param by     the controller that asked (this node's name for its own).
 * @return 0 when the pulse is under way; a negative code when it could not
 *         be acted on (e.g. the driver could not move the output). Then no
 *         event is raised, the users are not told, and the requester gets
 *         TSYNC_EWRITE (err_write_crash); a duplicate of the request gets the
 *         same answer without a second call.
 */
typedef int (*tsync_pulse_fn)(void *userdata, tsync_node *node, const char *thing, const tsync_value *v,
                              uint32_t ms, const char *by);

/**
 * Sets the pulse hook (one per node; NULL removes it: a pulse is then acted
 * on through TSYNC_EVENT_PULSE alone, which cannot fail).
 */
TSYNC_API void tsync_node_set_pulse_hook(tsync_node *node, tsync_pulse_fn fn, void *userdata);

/**
 * Commit hook: see tsync_node_set_commit_hook().
 * @return 0 when everything the events since the last call stored is durable;
 *         a negative code otherwise.
 */
typedef int (*tsync_commit_fn)(void *userdata, tsync_node *node);

/**
 * Sets the commit hook (one per node; NULL removes it): the durability point
 * of an application that stores what it receives, e.g. a journal.
 *
 * Received messages whose events ran since the last call (a copy's
 * TSYNC_EVENT_CHANGED, a TSYNC_EVENT_PULSE, a request handler) are
 * acknowledged only after `fn` returned 0, once for a whole batch of
 * datagrams (group commit). A negative return withholds those
 * acknowledgements and undoes what the messages did to the node: copies go
 * back to their previous value and version, pulses and requests count as
 * never received. The senders retry, and the events come again. This is
 * backpressure: return e.g. -ENOSPC while a journal is full, and the owners
 * keep the newest values in their retry queues.
 */
TSYNC_API void tsync_node_set_commit_hook(tsync_node *node, tsync_commit_fn fn, void *userdata);

/**
 * A command or request as received. Pointers are borrowed for the call.
 */
typedef struct tsync_request {
	const char *from; /**< sending controller */
	const char *type; /**< "cmd", "cum", "clim", "connection_status", ... */
	const char *role; /**< cmd: the role */
	const char *cmd;  /**< cmd: the command */
	const char *json; /**< the whole message object as JSON text */
} tsync_request;

/**
 * Handler for a command or request. Called exactly once per request, however
 * often the request datagram arrives.
 *
 * @param result  may receive an answer as JSON text, malloc()ed; ownership
 *                passes to the library. Leave NULL for no answer (`null`).
 * @return 0; TSYNC_ECMD_ARGS for bad arguments (err_cmd_args);
 *         TSYNC_EUNKNOWN_THING (answered err_ip_in_io), TSYNC_ENOT_USED
 *         (err_ip_in_ths_i_use) and TSYNC_EVALUE (err_ip_in_val), which the
 *         requester's done gets back as the same codes; TSYNC_EWRITE
 *         when the command was accepted but acting on it failed (answered
 *         err_write_crash: the requester's done gets TSYNC_EWRITE); another
 *         negative code to refuse it (answered err_cmd_failed: the
 *         requester's done gets TSYNC_EREFUSED). A duplicate of the request
 *         gets the same answer without a second call.
 */
typedef int (*tsync_request_fn)(void *userdata, tsync_node *node, const tsync_request *req, char **result);

/** What a request handler returns after tsync_request_defer(). */
#define TSYNC_DEFERRED 1

/** A request whose answer comes later (tsync_request_defer()). */
typedef struct tsync_deferred tsync_deferred;

/**
 * Within a request handler: the answer comes later, from
 * tsync_request_answer(); the handler then returns TSYNC_DEFERRED (its
 * `result` is ignored). Call it before starting the work: the request is
 * marked running, durably with a state directory, so a repeat of it (the
 * requester retransmits until answered) is neither run again nor answered
 * until the answer exists, and then gets that answer. The answer leaves
 * at once, without waiting for a repeat.
 *
 * If the node stops or dies before answering, the request's outcome is
 * unknown: with a state directory, the restarted node answers its repeat
 * err_outcome_unknown, without running it again; without one, the
 * requester sees the new boot. Either way the requester's done gets
 * TSYNC_EPEER_RESTARTED. With a commit hook that fails, the request counts
 * as never received, as every request of that batch does (the requester
 * repeats it and the handler runs again); the first handle's answer then
 * returns TSYNC_ECANCELED.
 *
 * @param req  the request the handler was called with.
 * @param ret  receives the handle; valid until tsync_request_answer() or
 *             tsync_node_free(), which drops unanswered ones.
 * @return 0; -EINVAL (not called from req's handler); -ENOMEM; the state
 *         commit's error (then nothing was deferred: answer now).
 */
TSYNC_API int tsync_request_defer(tsync_node *node, const tsync_request *req, tsync_deferred **ret);

/**
 * Answers a deferred request, exactly once, and frees the handle. Call it
 * from the node's loop thread (a callback of its event base).
 *
 * @param status       as a handler's return: 0, or a code it could return.
 * @param result_json  the answer as JSON text, borrowed, or NULL (`null`).
 * @return 0; TSYNC_ECANCELED when the request no longer waits for it (see
 *         tsync_request_defer()); -EINVAL; -ENOMEM (the result could not
 *         be kept: the requester is answered err_outcome_unknown, its done
 *         gets TSYNC_EPEER_RESTARTED). The handle is freed whatever the
 *         return.
 */
TSYNC_API int tsync_request_answer(tsync_node *node, tsync_deferred *d, int status, const char *result_json);

/**
 * Registers a handler for `{"type":"cmd","role":ROLE,"cmd":CMD}`. The node
 * accepts a command only if site.conf gives it ROLE; any other answers
 * err_ip_in_cmd. Registering the same role and command again replaces it.
 *
 * @return 0, -EINVAL, -ENOMEM.
 */
TSYNC_API int tsync_node_on_cmd(tsync_node *node, const char *role, const char *cmd, tsync_request_fn fn,
                                void *userdata);

/**
 * Registers a handler for every message of a type other than "io" and "cmd":
 * "cum", "clim", "connection_status", "recovery_data_request",
 * "recovery_data", or an application's own.
 *
 * @return 0, -EINVAL, -ENOMEM.
 */
TSYNC_API int tsync_node_on_request(tsync_node *node, const char *type, tsync_request_fn fn, void *userdata);

/**
 * Sends a command to a controller, exactly once.
 *
 * @param controller  the target; NULL sends it to the first controller of the
 *                    site that has `role`.
 * @param args_json   NULL, or a JSON object whose members are added to the
 *                    message (e.g. `{"kwargs":{"reason":"x"}}`), borrowed.
 * @param done        called once with the answer.
 * @return 0; TSYNC_EUNKNOWN_CTRL; -EINVAL (bad JSON, or the target is this
 *         node); -ENOBUFS if too many are outstanding; -ENOMEM.
 */
TSYNC_API int tsync_node_cmd(tsync_node *node, const char *controller, const char *role, const char *cmd,
                             const char *args_json, tsync_done_fn done, void *userdata);

/**
 * Sends a message of any other type (cum, clim, connection_status, ...),
 * exactly once.
 *
 * @param body_json  a JSON object, borrowed; its "type" member is set to `type`.
 * @return as tsync_node_cmd().
 */
TSYNC_API int tsync_node_request(tsync_node *node, const char *controller, const char *type,
                                 const char *body_json, tsync_done_fn done, void *userdata);

/** Why a datagram or message was refused. Names are the seed's where it has one. */
typedef enum tsync_reject {
	TSYNC_REJ_JSON = 0,       /**< err_ip_in_json_req: not JSON, or bad envelope */
	TSYNC_REJ_REQ,            /**< err_ip_in_req: unknown message type or cmd */
	TSYNC_REJ_IO,             /**< err_ip_in_io: no such thing */
	TSYNC_REJ_THS_I_USE,      /**< err_ip_in_ths_i_use: not a thing I own or use, or not from its owner */
	TSYNC_REJ_VAL,            /**< err_ip_in_val: wrong type or out of limits */
	TSYNC_REJ_REFUSED,        /**< err_ip_in_refused: sender not allowed */
	TSYNC_REJ_CMD,            /**< err_ip_in_cmd: unknown role or command */
	TSYNC_REJ_AUTH,           /**< err_ip_in_auth: missing, forged or altered tag */
	TSYNC_REJ_REPLAY,         /**< err_ip_in_replay: seen before, or from an older boot */
	TSYNC_REJ_STALE_BOOT,     /**< err_ip_in_stale_boot: addressed to a previous boot of mine */
	TSYNC_REJ_OVERSIZE,       /**< err_ip_in_size: datagram or field over its limit */
	TSYNC_REJ_UNKNOWN_SENDER, /**< err_ip_in_sender: not a controller in site.conf */
	TSYNC_REJ_COUNT
} tsync_reject;

/** The log name of a rejection reason, e.g. "err_ip_in_val". */
TSYNC_API const char *tsync_reject_name(tsync_reject reason);

/** Counters for one peer controller, as seen by this node. */
typedef struct tsync_peer_stats {
	const char *name; /**< borrowed, valid until tsync_node_free() */
	/** Up since its last valid datagram, until it is silent for 2.5
	 * heartbeat_ms (a peer that shares a thing with this node, heartbeats on)
	 * or for down_after_ms with a message to it unanswered as long. */
	bool up;
	uint64_t boot; /**< the peer's boot counter as last seen (0: never) */
	uint64_t datagrams_sent;
	uint64_t datagrams_received;
	uint64_t bytes_sent;
	uint64_t bytes_received;
	uint64_t msgs_sent;   /**< messages, including retransmissions */
	uint64_t retransmits; /**< expiries of the retry timer that resent something */
	uint64_t acked;       /**< messages acknowledged by the peer */
	uint64_t pending;     /**< messages waiting for the peer's answer now */
	uint32_t srtt_us;     /**< smoothed round trip (0: no sample yet) */
	uint32_t rttvar_us;
	uint32_t rto_ms; /**< current retransmission timeout, with backoff */
	uint64_t rejected[TSYNC_REJ_COUNT];
	int64_t last_heard_ms; /**< ms since the last valid datagram (-1: never) */
} tsync_peer_stats;

/** Number of peers (every other controller of the site). */
TSYNC_API size_t tsync_node_peer_count(const tsync_node *node);

/**
 * Counters of peer number `idx`.
 * @return 0, or -ERANGE.
 */
TSYNC_API int tsync_node_peer_stats(const tsync_node *node, size_t idx, tsync_peer_stats *out);

/**
 * Datagrams rejected before a sender could be named (forged tags, unknown
 * addresses, broken envelopes), by reason.
 */
TSYNC_API uint64_t tsync_node_rejected_unknown(const tsync_node *node, tsync_reject reason);

/** Fault injection on the node's outgoing datagrams, for tests and the simulator. */
typedef struct tsync_faults {
	double loss;       /**< probability a datagram is dropped (0..1) */
	double duplicate;  /**< probability it is sent twice */
	double reorder;    /**< probability it is held back and sent later */
	uint32_t delay_ms; /**< how long a reordered datagram is held (default 5) */
	uint32_t seed;     /**< PRNG seed (0: from the clock) */
} tsync_faults;

/**
 * Sets (or with NULL, clears) fault injection on outgoing datagrams.
 * @return 0, or -EINVAL.
 */
TSYNC_API int tsync_node_set_faults(tsync_node *node, const tsync_faults *faults);

/**
 * Number of things this node owns whose users have not all acknowledged the
 * current value, plus asks and requests still unanswered. 0 means settled.
 */
TSYNC_API size_t tsync_node_unsettled(const tsync_node *node);

#ifdef __cplusplus
}
#endif

#endif /* THINGSYNC_NODE_H */
