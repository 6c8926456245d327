/*
 * daemons/common: the node of a role daemon (daemonnode.h).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/event.h>

#include "daemonnode.h"
#include "statedir.h"
#include "util/util.h"

int daemonnode__refuse(const struct daemonopt *d, const struct logger *log, const char *why, bool *unusable)
{
	char hint[2048];

	statedir__hint(hint, sizeof(hint), d->site_path, d->controller, d->state_dir);
	log_error(log, "state unusable: %s; not starting: %s", why, hint);
	*unusable = true;
	return TSYNC_ESTORE;
}

int daemonnode__start(const struct daemonopt *d, const tsync_site *site, struct logger *log,
                      const char *const *envs, struct event_base **base, tsync_node **node,
                      bool *unusable)
{
	tsync_node_options no;
	char node_dir[4200], env_dir[4200], why[8600];
	int r;

	if (mkdir(d->state_dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		log_error(log, "%s: %s", d->state_dir, strerror(-r));
		return r;
	}
	snprintf(node_dir, sizeof(node_dir), "%s/node", d->state_dir);
	if (statedir__check_env(d->state_dir, node_dir, why, sizeof(why)) < 0)
		return daemonnode__refuse(d, log, why, unusable);
	for (size_t i = 0; envs && envs[i]; i++) {
		snprintf(env_dir, sizeof(env_dir), "%s/%s", d->state_dir, envs[i]);
		if (statedir__check_env(d->state_dir, env_dir, why, sizeof(why)) < 0)
			return daemonnode__refuse(d, log, why, unusable);
	}
	if (!*base && !(*base = event_base_new()))
		return -ENOMEM;

	tsync_node_options_init(&no);
	no.site = site;
	no.controller = d->controller;
	no.state_dir = node_dir;
	no.event_base = *base;
	no.bind_host = d->bind_host;
	no.log = log->fn;
	no.log_userdata = log->userdata;
	no.log_level = d->log_level;
	r = tsync_node_new(&no, node);
	if (r == TSYNC_ESTORE) {
		snprintf(why, sizeof(why), "the node's state store %s cannot be opened", node_dir);
		return daemonnode__refuse(d, log, why, unusable);
	}
	if (r < 0) {
		log_error(log, "cannot start the node %s: %s", d->controller, tsync_strerror(r));
		return r;
	}
	log->prefix = tsync_node_name(*node);
	return 0;
}

int daemonnode__mark(const struct daemonopt *d, const struct logger *log, const char *name, const char *envs)
{
	int r = statedir__mark(d->state_dir, name, envs);

	if (r < 0)
		log_error(log, "%s/%s: %s", d->state_dir, STATEDIR_MARKER, strerror(-r));
	return r;
}
