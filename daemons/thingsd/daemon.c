/*
 * thingsd: the daemon's life cycle. It loads site.conf, builds the node and
 * the drivers of the things this controller owns, and runs the loop; a
 * reload (SIGHUP, the reload command, a deploy) checks the new file first
 * and, only if it is good, frees the node and builds a new one on the new
 * site with the same state directory: owned values come back from LMDB and
 * the copies re-sync by themselves, as after any restart.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/event.h>
#include <jansson.h>

#include "driver.h"
#include "statedir.h"
#include "thingsd.h"

/* --- checking a site ---------------------------------------------------------- */

static void add_error(char **errors, const char *fmt, ...) TD_PRINTF(2, 3);
static void add_error(char **errors, const char *fmt, ...)
{
	char line[512], *grown;
	size_t old = *errors ? strlen(*errors) : 0, add;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	add = strlen(line);
	grown = realloc(*errors, old + add + 2);
	if (!grown)
		return;
	memcpy(grown + old, line, add);
	grown[old + add] = '\n';
	grown[old + add + 1] = '\0';
	*errors = grown;
}

int daemon__check_site(struct thingsd *td, const char *path, tsync_site **ret, char **errors)
{
	tsync_site *site = NULL;
	size_t n;
	int r;

	*ret = NULL;
	*errors = NULL;
	r = tsync_site_load(path, &site, errors);
	if (r < 0) {
		if (!*errors)
			add_error(errors, "%s: %s", path, tsync_strerror(r));
		return r;
	}
	if (tsync_site_controller_find(site, td->opt.controller) < 0) {
		add_error(errors, "%s: controller '%s' is not in this site", path, td->opt.controller);
		r = TSYNC_EUNKNOWN_CTRL;
		goto leave;
	}
	/* Every driver string is checked, not only ours: the same file goes to
	 * every controller, and a mistake is best found at the first one. */
	n = tsync_site_thing_count(site);
	for (size_t i = 0; i < n; i++) {
		tsync_thing_info ti;
		struct driver *d = NULL;
		char err[DRIVER_ERR_LEN];

		tsync_site_thing(site, i, &ti);
		if (driver__parse(ti.driver, ti.type, !strcmp(ti.owner, td->opt.controller), &d, err,
		                  sizeof(err)) < 0) {
			add_error(errors, "%s:%d: thing '%s': driver: %s", path, ti.line, ti.name, err);
			r = TSYNC_ESITE;
		}
		driver__free(d);
	}
leave:
	if (r < 0) {
		tsync_site_free(site);
		return r;
	}
	*ret = site;
	return 0;
}

/* --- things ---------------------------------------------------------------------- */

struct owned *daemon__owned(struct thingsd *td, const char *name)
{
	for (size_t i = 0; i < td->n_owned; i++)
		if (!strcmp(td->owned[i].name, name))
			return &td->owned[i];
	return NULL;
}

struct used *daemon__used(struct thingsd *td, const char *name)
{
	for (size_t i = 0; i < td->n_used; i++)
		if (!strcmp(td->used[i].name, name))
			return &td->used[i];
	return NULL;
}

static bool value_equal(const tsync_value *a, const tsync_value *b)
{
	if (a->type != b->type)
		return false;
	switch (a->type) {
	case TSYNC_TYPE_BOOL:
		return a->u.b == b->u.b;
	case TSYNC_TYPE_INT:
		return a->u.i == b->u.i;
	case TSYNC_TYPE_FLOAT:
		return a->u.f == b->u.f;
	case TSYNC_TYPE_STRING:
		return !strcmp(a->u.s, b->u.s);
	case TSYNC_TYPE_NONE:
		return true;
	}
	return false;
}

int daemon__set_from_driver(struct owned *o, const tsync_value *v)
{
	struct thingsd *td = o->td;
	tsync_thing_state st;
	int r;

	if (tsync_node_get(td->node, o->name, &st) == 0 && st.value.type != TSYNC_TYPE_NONE &&
	    value_equal(&st.value, v))
		return 0;
	td->from_driver = true;
	r = tsync_node_set(td->node, o->name, v);
	td->from_driver = false;
	return r;
}

static int write_hook(void *ud, tsync_node *node, const char *thing, const tsync_value *to_be,
                      tsync_value *as_is)
{
	struct thingsd *td = ud;
	struct owned *o;
	int r;

	*as_is = *to_be;
	if (td->from_driver)
		return 0;
	o = daemon__owned(td, thing);
	if (!o || !o->drv)
		return 0;
	/* During a pulse the output shows the pulse; the new value is the one
	 * it returns to, written when the pulse ends. */
	if (o->pulsing)
		return 0;
	r = driver__write(o->drv, to_be, as_is);
	if (r == 0)
		return 0;
	/* A read-only driver, or a value it cannot express, is a refusal:
	 * nothing was tried. Anything else is an output that did not move
	 * (a program that could not start or failed, a board that did not
	 * answer), which the requester must see as a failure. */
	return r == TSYNC_EREFUSED || r == -EINVAL ? TSYNC_EREFUSED : TSYNC_EWRITE;
}

/* --- pulses ---------------------------------------------------------------------- */

static void clear_pulse_value(struct owned *o)
{
	free(o->pulse_str);
	o->pulse_str = NULL;
	o->pulse_val.type = TSYNC_TYPE_NONE;
}

static tsync_value normal_value(struct owned *o)
{
	tsync_thing_state st;

	if (tsync_node_get(o->td->node, o->name, &st) == 0 && st.value.type != TSYNC_TYPE_NONE)
		return st.value;
	/* No value yet: the output's rest state. */
	switch (o->info.type) {
	case TSYNC_TYPE_INT:
		return tsync_int(0);
	case TSYNC_TYPE_FLOAT:
		return tsync_float(0);
	case TSYNC_TYPE_STRING:
		return tsync_string("");
	default:
		return tsync_bool(false);
	}
}

static void pulse_finish(struct owned *o, const char *how)
{
	struct thingsd *td = o->td;
	tsync_value back = normal_value(o), as_is;
	char txt[80];
	json_t *j;
	char *s;

	o->pulsing = false;
	clear_pulse_value(o);
	if (o->pulse_ev)
		evtimer_del(o->pulse_ev);
	if (o->drv && o->drv->ops->write && driver__write(o->drv, &back, &as_is) < 0)
		o->drv->write_pending = true; /* retried at the driver's next poll */
	tsync_value_format(&back, txt, sizeof(txt));
	td_info("pulse of %s %s: back to %s", o->name, how, txt);
	j = json_pack("{s:s,s:o}", "thing", o->name, "value", td__value_json(&back));
	s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	if (s)
		http__broadcast(td, "pulse_end", s);
	free(s);
	json_decref(j);
}

static void pulse_cb(evutil_socket_t fd, short what, void *arg)
{
	pulse_finish(arg, "ended");
}

int daemon__pulse_start(struct owned *o, const tsync_value *v, uint32_t ms, const char *by)
{
	struct thingsd *td = o->td;
	struct timeval tv;
	tsync_value as_is;
	char txt[80], *str = NULL;

	tsync_value_format(v, txt, sizeof(txt));
	if (v->type == TSYNC_TYPE_STRING && !(str = strdup(v->u.s ? v->u.s : ""))) {
		td_error("out of memory pulsing %s", o->name);
		return -ENOMEM;
	}
	if (!o->pulse_ev)
		o->pulse_ev = evtimer_new(td->base, pulse_cb, o);
	if (!o->pulse_ev) {
		td_error("out of memory pulsing %s", o->name);
		free(str);
		return -ENOMEM;
	}
	/* The output moves first: a pulse it could not start did not happen,
	 * and the one who asked is told so (err_write_crash), not acknowledged.
	 * A pulse already running goes on to its end unchanged. */
	if (o->drv && o->drv->ops->write && driver__write(o->drv, v, &as_is) < 0) {
		td_error("pulse of %s = %s for %u ms (from %s) not started: %s", o->name, txt, ms,
		         by ? by : "?", o->drv->last_error);
		free(str);
		return TSYNC_EWRITE;
	}
	clear_pulse_value(o);
	o->pulse_val = *v;
	if (str) {
		o->pulse_str = str;
		o->pulse_val.u.s = str;
	}
	/* A pulse during a pulse extends it; it returns to the same value. */
	o->pulsing = true;
	o->pulse_ms = ms;
	o->pulse_end_us = td__now_us() + (uint64_t)ms * 1000u;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(o->pulse_ev, &tv);
	td_info("pulse of %s = %s for %u ms (from %s)", o->name, txt, ms, by ? by : "?");
	return 0;
}

/* The library's pulse hook: the owner acts here, and a failure goes back to
 * whoever asked (TSYNC_EWRITE), instead of an event that cannot fail. */
static int pulse_hook(void *ud, tsync_node *node, const char *thing, const tsync_value *v, uint32_t ms,
                      const char *by)
{
	struct owned *o = daemon__owned(ud, thing);

	return o ? daemon__pulse_start(o, v, ms, by) : 0;
}

/* --- node events --------------------------------------------------------------- */

static void on_event(void *ud, tsync_node *node, const tsync_event *ev)
{
	struct thingsd *td = ud;
	const char *kind = NULL;
	json_t *j = NULL;
	char txt[80], *s;

	switch (ev->kind) {
	case TSYNC_EVENT_CHANGED: {
		struct owned *o = daemon__owned(td, ev->thing);
		struct used *u = o ? NULL : daemon__used(td, ev->thing);
		td->events_changed++;
		if (o) {
			o->changes_today++;
			o->changes_total++;
		} else if (u) {
			u->changes_today++;
			u->changes_total++;
		}
		if (o || u) {
			struct changed *c = o ? &o->last : &u->last;
			c->time_ms = td__realtime_ms();
			snprintf(c->by, sizeof(c->by), "%s", ev->controller ? ev->controller : "");
		}
		tsync_value_format(&ev->value, txt, sizeof(txt));
		if (!o)
			td_info("%s = %s (from %s)", ev->thing, txt, ev->controller ? ev->controller : "?");
		else if (ev->controller && strcmp(ev->controller, td->opt.controller))
			td_info("%s = %s (owner, set by %s)", ev->thing, txt, ev->controller);
		else
			td_info("%s = %s (owner)", ev->thing, txt);
		kind = "changed";
		j = json_pack("{s:s,s:o,s:s,s:b,s:I}", "thing", ev->thing, "value", td__value_json(&ev->value),
		              "from", ev->controller ? ev->controller : "", "owned", o != NULL, "time_ms",
		              (json_int_t)td__realtime_ms());
		break;
	}
	case TSYNC_EVENT_PULSE: {
		struct owned *o = daemon__owned(td, ev->thing);
		td->events_pulse++;
		/* An owned thing's pulse was started by pulse_hook already. */
		if (!o) {
			struct used *u = daemon__used(td, ev->thing);
			if (u)
				u->pulses++;
			tsync_value_format(&ev->value, txt, sizeof(txt));
			td_info("pulse of %s = %s for %u ms (by its owner, from %s)", ev->thing, txt,
			        ev->pulse_ms, ev->controller ? ev->controller : "?");
		}
		kind = "pulse";
		j = json_pack("{s:s,s:o,s:i,s:s,s:b}", "thing", ev->thing, "value",
		              td__value_json(&ev->value), "ms", (json_int_t)ev->pulse_ms, "from",
		              ev->controller ? ev->controller : "", "owned", o != NULL);
		break;
	}
	case TSYNC_EVENT_PEER_UP:
	case TSYNC_EVENT_PEER_DOWN:
		kind = ev->kind == TSYNC_EVENT_PEER_UP ? "peer_up" : "peer_down";
		j = json_pack("{s:s}", "peer", ev->controller ? ev->controller : "");
		break;
	}
	if (!kind || !j)
		return;
	s = json_dumps(j, JSON_COMPACT);
	if (s)
		http__broadcast(td, kind, s);
	free(s);
	json_decref(j);
}

/* --- building and tearing down the node ---------------------------------------------- */

static void teardown(struct thingsd *td)
{
	http__node_gone(td);
	for (size_t i = 0; i < td->n_owned; i++) {
		struct owned *o = &td->owned[i];
		/* A pulse cut short by a reload or a stop still returns the
		 * output to its value: a door strike must not stay open. */
		if (o->pulsing && td->node)
			pulse_finish(o, "cut short");
		if (o->pulse_ev)
			event_free(o->pulse_ev);
		clear_pulse_value(o);
		driver__free(o->drv);
		free(o->name);
	}
	free(td->owned);
	td->owned = NULL;
	td->n_owned = 0;
	for (size_t i = 0; i < td->n_used; i++)
		free(td->used[i].name);
	free(td->used);
	td->used = NULL;
	td->n_used = 0;
	/* Outstanding commands' callbacks run in here, with TSYNC_ECANCELED. */
	tsync_node_free(td->node);
	td->node = NULL;
}

static int build(struct thingsd *td, tsync_site *site)
{
	tsync_node_options o;
	size_t n = tsync_site_thing_count(site);
	const char *me = td->opt.controller;
	int r;

	tsync_node_options_init(&o);
	o.site = site;
	o.controller = me;
	o.state_dir = td->opt.state_dir;
	o.event_base = td->base;
	o.busy_poll_us = td->opt.busy_poll_us;
	o.log = tdlog__lib;
	o.log_level = td->opt.verbose ? TSYNC_LOG_DEBUG : TSYNC_LOG_INFO;
	r = tsync_node_new(&o, &td->node);
	if (r < 0) {
		td_error("cannot start the node: %s", tsync_strerror(r));
		return r;
	}
	td->site = site;
	td->node_started_us = td__now_us();
	td->owned = calloc(n ? n : 1, sizeof(*td->owned));
	td->used = calloc(n ? n : 1, sizeof(*td->used));
	if (!td->owned || !td->used) {
		r = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		tsync_thing_info ti;
		tsync_site_thing(site, i, &ti);
		if (!strcmp(ti.owner, me)) {
			struct owned *ow = &td->owned[td->n_owned];
			char err[DRIVER_ERR_LEN];
			ow->td = td;
			ow->info = ti;
			ow->name = strdup(ti.name);
			if (!ow->name) {
				r = -ENOMEM;
				goto fail;
			}
			td->n_owned++;
			r = driver__parse(ti.driver, ti.type, true, &ow->drv, err, sizeof(err));
			if (r < 0) {
				td_error("thing %s: driver: %s", ti.name, err);
				goto fail;
			}
			continue;
		}
		for (size_t u = 0; u < ti.n_users; u++) {
			if (strcmp(ti.users[u], me))
				continue;
			td->used[td->n_used].name = strdup(ti.name);
			if (!td->used[td->n_used].name) {
				r = -ENOMEM;
				goto fail;
			}
			td->n_used++;
		}
	}
	r = tsync_node_on_event(td->node, on_event, td);
	if (r < 0)
		goto fail;
	tsync_node_set_write_hook(td->node, write_hook, td);
	tsync_node_set_pulse_hook(td->node, pulse_hook, td);
	r = cmd__register(td);
	if (r < 0)
		goto fail;
	for (size_t i = 0; i < td->n_owned; i++)
		driver__start(td->owned[i].drv, &td->owned[i]);
	td_info("thingsd %s running: %zu things owned, %zu used, state %s", THINGSD_VERSION, td->n_owned,
	        td->n_used, td->opt.state_dir ? td->opt.state_dir : "in memory (no -s)");
	return 0;
fail:
	if (r == -ENOMEM)
		td_error("out of memory building the node");
	teardown(td);
	return r;
}

static int signature_setup(struct thingsd *td);

/* --- reload -------------------------------------------------------------------------- */

static void log_errors(const char *errors)
{
	char *copy = errors ? strdup(errors) : NULL, *save = NULL;

	for (char *l = copy ? strtok_r(copy, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save))
		td_error("%s", l);
	free(copy);
}

int daemon__request_reload(struct thingsd *td, const char *why, char **errors)
{
	tsync_site *site = NULL;
	char *errs = NULL;
	int r;

	if (errors)
		*errors = NULL;
	r = daemon__check_site(td, td->opt.conf_path, &site, &errs);
	if (r < 0) {
		td->reloads_failed++;
		td_error("reload (%s) rejected: %s is not valid; the running site is kept", why,
		         td->opt.conf_path);
		log_errors(errs);
		if (errors)
			*errors = errs;
		else
			free(errs);
		return r;
	}
	tsync_site_free(td->next_site);
	td->next_site = site;
	td_info("reload (%s): %s is valid; restarting the node on it", why, td->opt.conf_path);
	/* Never from inside a node callback: the swap frees the node. */
	event_active(td->ev_reload, EV_TIMEOUT, 0);
	return 0;
}

static void reload_cb(evutil_socket_t fd, short what, void *arg)
{
	struct thingsd *td = arg;
	tsync_site *old = td->site, *next = td->next_site;
	int r;

	if (!next || td->stopping)
		return;
	td->next_site = NULL;
	teardown(td);
	r = build(td, next);
	if (r == 0) {
		tsync_controller_info ci;
		int idx = tsync_site_controller_find(next, td->opt.controller);
		/* A new tcp_port moves the HTTP API (its watchers reconnect). */
		if (idx >= 0 && tsync_site_controller(next, (size_t)idx, &ci) == 0 &&
		    ci.tcp_port != http__port(td)) {
			http__stop(td);
			if (http__start(td) < 0)
				td_error("http: the API could not move to port %u", ci.tcp_port);
		}
		tsync_site_free(old);
		td->reloads++;
		/* A new key checks signatures from now on. */
		http__set_site(td);
		if (signature_setup(td) < 0)
			td_warn("http: the new site has no key, so signed requests are refused until it has one");
		td_info("reloaded: site %s", tsync_site_name(next));
		http__broadcast(td, "reload", "{\"ok\":true}");
		return;
	}
	/* The new file is valid but the node cannot run on it (a port taken,
	 * say): go back to the old one, which just ran. */
	td->reloads_failed++;
	tsync_site_free(next);
	td->site = old;
	td_error("reload failed: %s; back on the previous site.conf", tsync_strerror(r));
	if (build(td, old) < 0) {
		td_error("cannot restart on the previous site.conf either; stopping");
		td->exit_code = 1;
		daemon__request_stop(td, false);
	}
}

/* --- signals and stopping ----------------------------------------------------------- */

void daemon__request_stop(struct thingsd *td, bool reboot)
{
	struct timeval grace = {0, 200000};

	if (td->stopping)
		return;
	td->stopping = true;
	td->reboot = reboot;
	/* A short grace, so that the answer to the command that asked for
	 * this leaves over HTTP and UDP before the loop ends. */
	event_base_loopexit(td->base, &grace);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct thingsd *td = arg;

	switch (sig) {
	case SIGHUP:
		daemon__request_reload(td, "SIGHUP", NULL);
		break;
	case SIGCHLD:
		driver__child(td);
		break;
	default:
		td_info("%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
		td->stopping = true;
		event_base_loopexit(td->base, NULL);
		break;
	}
}

/*
 * Off loopback every HTTP request (but /metrics) must be signed with the site
 * key (httpd.h), so an API bound there needs a key to check them with.
 */
static int signature_setup(struct thingsd *td)
{
	const char *bind = td->opt.http_bind;
	bool loopback =
	    !bind || !strcmp(bind, "127.0.0.1") || !strcmp(bind, "::1") || !strcmp(bind, "localhost");

	td->signature_required = td->opt.require_signature || !loopback;
	if (!td->signature_required || tsync_site_has_key(td->site))
		return 0;
	td_error("the HTTP API %s needs signed requests, and the site has no key_file to check them with",
	         loopback ? "(--require-signature)" : "is off loopback: it");
	return -EINVAL;
}

/* The state directory and its parents, like mkdir -p (mode 0700: it holds
 * the values of the site). */
static int make_state_dir(const char *dir)
{
	char path[4096];
	size_t len = strlen(dir);

	if (len >= sizeof(path))
		return -ENAMETOOLONG;
	memcpy(path, dir, len + 1);
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/*
 * The state directory held state and it is gone or unreadable: say so, with
 * the commands that fix it, and do not start. Starting from empty would hand
 * out boots and versions the users have already seen.
 */
static int refuse_state(struct thingsd *td, const char *why)
{
	char hint[2048];

	statedir__hint(hint, sizeof(hint), td->opt.conf_path,
	               td->opt.controller ? td->opt.controller : "NAME", td->opt.state_dir);
	td_error("state unusable: %s; not starting: %s", why, hint);
	return STATEDIR_EXIT_UNUSABLE;
}

int daemon__run(struct thingsd *td)
{
	tsync_site *site = NULL;
	char *errors = NULL;
	int r;

	td->started_us = td__now_us();
	td->day = 1;
	signal(SIGPIPE, SIG_IGN);
	td->base = event_base_new();
	if (!td->base) {
		td_error("cannot create the event loop");
		return 1;
	}
	td->ev_hup = evsignal_new(td->base, SIGHUP, signal_cb, td);
	td->ev_term = evsignal_new(td->base, SIGTERM, signal_cb, td);
	td->ev_int = evsignal_new(td->base, SIGINT, signal_cb, td);
	td->ev_chld = evsignal_new(td->base, SIGCHLD, signal_cb, td);
	td->ev_reload = event_new(td->base, -1, 0, reload_cb, td);
	if (!td->ev_hup || !td->ev_term || !td->ev_int || !td->ev_chld || !td->ev_reload ||
	    event_add(td->ev_hup, NULL) < 0 || event_add(td->ev_term, NULL) < 0 ||
	    event_add(td->ev_int, NULL) < 0 || event_add(td->ev_chld, NULL) < 0) {
		td_error("cannot set up signal events");
		r = 1;
		goto leave;
	}

	r = daemon__check_site(td, td->opt.conf_path, &site, &errors);
	if (r < 0) {
		td_error("%s is not valid:", td->opt.conf_path);
		log_errors(errors);
		free(errors);
		r = 3;
		goto leave;
	}
	td->site = site;
	if (td->opt.state_dir && (r = make_state_dir(td->opt.state_dir)) < 0) {
		td_error("cannot create the state directory %s: %s", td->opt.state_dir, strerror(-r));
		r = 1;
		goto leave;
	}
	if (signature_setup(td) < 0) {
		r = 2;
		goto leave;
	}
	cmd__load_clim(td);
	deploy__load_serial(td);
	if (td->opt.state_dir) {
		char why[8600];
		if (statedir__check_env(td->opt.state_dir, td->opt.state_dir, why, sizeof(why)) < 0) {
			r = refuse_state(td, why);
			goto leave;
		}
	}
	if ((r = build(td, site)) < 0) {
		char why[4400];
		snprintf(why, sizeof(why), "the state store %s/data.mdb cannot be opened", td->opt.state_dir);
		r = r == TSYNC_ESTORE && td->opt.state_dir ? refuse_state(td, why) : 1;
		goto leave;
	}
	/* The store made and its boot committed: losing it from now on is a disaster, not a first start. */
	if (td->opt.state_dir &&
	    (r = statedir__mark(td->opt.state_dir, tsync_node_name(td->node), "data.mdb")) < 0) {
		td_error("%s/%s: %s", td->opt.state_dir, STATEDIR_MARKER, strerror(-r));
		r = 1;
		goto leave;
	}
	if (http__start(td) < 0) {
		r = 1;
		goto leave;
	}
	event_base_dispatch(td->base);
	r = td->exit_code;
	td_info("%s", td->reboot ? "restarting (reboot command)" : "stopped");
leave:
	/* The node first: its outstanding commands complete (canceled) while
	 * the HTTP requests that wait for them can still be answered. */
	if (td->node)
		teardown(td);
	http__stop(td);
	tsync_site_free(td->site);
	td->site = NULL;
	tsync_site_free(td->next_site);
	td->next_site = NULL;
	if (td->ev_hup)
		event_free(td->ev_hup);
	if (td->ev_term)
		event_free(td->ev_term);
	if (td->ev_int)
		event_free(td->ev_int);
	if (td->ev_chld)
		event_free(td->ev_chld);
	if (td->ev_reload)
		event_free(td->ev_reload);
	free(td->clim);
	td->clim = NULL;
	/* libcurl's cached connections have events on this loop. */
	driver_evok__global_cleanup();
	event_base_free(td->base);
	td->base = NULL;
	return r;
}
