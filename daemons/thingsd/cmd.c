/*
 * thingsd commands: the cmd_do role of the seed (version, logging, timers,
 * reload, reload_all, new_day, reboot) and the clim settings document of the
 * climate role. They are registered with libthingsync's handler registry,
 * so a peer's command arrives exactly once through the mesh; the HTTP API
 * runs the same handlers for commands addressed to this controller.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "driver.h"
#include "thingsd.h"

extern char **environ;

/* Members of a command message that are not arguments. */
static const char *const envelope[] = {"type", "role", "cmd", "id", "re", NULL};

static bool in_list(const char *const *list, const char *s)
{
	for (; list && *list; list++)
		if (!strcmp(*list, s))
			return true;
	return false;
}

static char *dump(json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	json_decref(j);
	return s;
}

/*
 * Checks a command's arguments: `args` a list (if allowed), `kwargs` an
 * object with only the named keys, nothing else. On a mistake the answer
 * says what is wrong and the log has err_cmd_args with the seed's fields.
 */
static int check_args(const tsync_request *req, bool args_ok, const char *const *kw_allowed, json_t **root,
                      json_t **kwargs, char **result)
{
	json_error_t jerr;
	const char *key;
	json_t *val;
	char why[200] = "";

	*kwargs = NULL;
	*root = json_loads(req->json ? req->json : "{}", 0, &jerr);
	if (!json_is_object(*root)) {
		snprintf(why, sizeof(why), "not a JSON object");
		goto bad;
	}
	json_object_foreach(*root, key, val)
	{
		if (in_list(envelope, key))
			continue;
		if (!strcmp(key, "args")) {
			if (!args_ok || !json_is_array(val)) {
				snprintf(why, sizeof(why), args_ok ? "args must be a list" : "takes no args");
				goto bad;
			}
			continue;
		}
		if (!strcmp(key, "kwargs")) {
			const char *k;
			json_t *v;
			if (!json_is_object(val)) {
				snprintf(why, sizeof(why), "kwargs must be an object");
				goto bad;
			}
			json_object_foreach(val, k, v)
			{
				if (!in_list(kw_allowed, k)) {
					snprintf(why, sizeof(why), "unknown kwarg '%.60s'", k);
					goto bad;
				}
			}
			*kwargs = val;
			continue;
		}
		snprintf(why, sizeof(why), "unknown member '%.60s'", key);
		goto bad;
	}
	return 0;
bad:
	td_warn("err_cmd_args IP command %s, from %s, callability issue %s, msg=%.300s",
	        req->cmd ? req->cmd : "?", req->from ? req->from : "?", why, req->json ? req->json : "");
	*result = dump(json_pack("{s:s,s:s}", "error", "err_cmd_args", "why", why));
	json_decref(*root);
	*root = NULL;
	return TSYNC_ECMD_ARGS;
}

/* A kwarg of the wrong type: the same answer as an unknown one. */
static int bad_kwarg(const tsync_request *req, json_t *root, const char *why, char **result)
{
	td_warn("err_cmd_args IP command %s, from %s, callability issue %s, msg=%.300s", req->cmd, req->from,
	        why, req->json ? req->json : "");
	*result = dump(json_pack("{s:s,s:s}", "error", "err_cmd_args", "why", why));
	json_decref(root);
	return TSYNC_ECMD_ARGS;
}

/* --- cmd_do ---------------------------------------------------------------------- */

static int cmd_version(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	static const char *const kw[] = {"with_email", NULL};
	struct thingsd *td = ud;
	json_t *root, *kwargs, *res, *mail;
	int r = check_args(req, false, kw, &root, &kwargs, result);

	if (r < 0)
		return r;
	mail = kwargs ? json_object_get(kwargs, "with_email") : NULL;
	if (mail && !json_is_boolean(mail))
		return bad_kwarg(req, root, "with_email must be true or false", result);
	res = json_pack("{s:s,s:s,s:s,s:s,s:I}", "program", "thingsd", "version", THINGSD_VERSION, "library",
	                TSYNC_VERSION_STRING, "controller", tsync_node_name(node), "boot",
	                (json_int_t)tsync_node_boot(node));
	if (res && mail && json_is_true(mail))
		json_object_set_new(res, "email", json_string("not sent: thingsd has no mail transport"));
	td_info("version asked by %s", req->from);
	*result = dump(res);
	json_decref(root);
	(void)td;
	return 0;
}

static int cmd_logging(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	static const char *const kw[] = {"reason", "level", NULL};
	json_t *root, *kwargs, *reason, *level;
	tsync_log_level lvl = TSYNC_LOG_INFO;
	int r = check_args(req, false, kw, &root, &kwargs, result);

	if (r < 0)
		return r;
	reason = kwargs ? json_object_get(kwargs, "reason") : NULL;
	level = kwargs ? json_object_get(kwargs, "level") : NULL;
	if (!json_is_string(reason))
		return bad_kwarg(req, root, "kwargs.reason must be a string", result);
	if (level) {
		const char *l = json_string_value(level);
		if (!l || (strcmp(l, "info") && strcmp(l, "warn") && strcmp(l, "error")))
			return bad_kwarg(req, root, "kwargs.level must be info, warn or error", result);
		lvl = !strcmp(l, "error")  ? TSYNC_LOG_ERROR
		      : !strcmp(l, "warn") ? TSYNC_LOG_WARN
		                           : TSYNC_LOG_INFO;
	}
	tdlog__printf(lvl, "logging from %s: %.500s", req->from, json_string_value(reason));
	*result = dump(json_pack("{s:b}", "logged", 1));
	json_decref(root);
	return 0;
}

static int cmd_timers(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct thingsd *td = ud;
	uint64_t now = td__now_us();
	json_t *root, *kwargs, *polls, *pulses, *res;
	int r = check_args(req, false, NULL, &root, &kwargs, result);

	if (r < 0)
		return r;
	polls = json_array();
	pulses = json_array();
	for (size_t i = 0; i < td->n_owned; i++) {
		struct owned *o = &td->owned[i];
		struct driver *d = o->drv;
		if (d && (d->interval_ms || d->read_failing || d->write_pending)) {
			int64_t next = d->next_poll_us > now ? (int64_t)((d->next_poll_us - now) / 1000u) : 0;
			json_array_append_new(polls, json_pack("{s:s,s:s,s:i,s:I,s:b}", "thing", o->name,
			                                       "driver", d->ops->kind, "interval_ms",
			                                       (json_int_t)d->interval_ms, "next_ms",
			                                       (json_int_t)next, "failing",
			                                       d->read_failing || d->write_failing));
		}
		if (o->pulsing) {
			int64_t left = o->pulse_end_us > now ? (int64_t)((o->pulse_end_us - now) / 1000u) : 0;
			json_array_append_new(pulses, json_pack("{s:s,s:I,s:I}", "thing", o->name, "ms",
			                                        (json_int_t)o->pulse_ms, "remaining_ms",
			                                        (json_int_t)left));
		}
	}
	res = json_pack("{s:o,s:o,s:I,s:I}", "polls", polls, "pulses", pulses, "http_waiting",
	                (json_int_t)http__pending(td), "unsettled", (json_int_t)tsync_node_unsettled(node));
	td_info("timers asked by %s: %zu polls, %zu pulses", req->from, json_array_size(polls),
	        json_array_size(pulses));
	*result = dump(res);
	json_decref(root);
	return 0;
}

static json_t *error_lines(const char *errors)
{
	json_t *a = json_array();
	char *copy = errors ? strdup(errors) : NULL, *save = NULL;

	for (char *l = copy ? strtok_r(copy, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save))
		json_array_append_new(a, json_string(l));
	free(copy);
	return a;
}

static int cmd_reload(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct thingsd *td = ud;
	json_t *root, *kwargs;
	char why[96], *errors = NULL;
	int r = check_args(req, false, NULL, &root, &kwargs, result);

	if (r < 0)
		return r;
	json_decref(root);
	snprintf(why, sizeof(why), "command from %s", req->from);
	r = daemon__request_reload(td, why, &errors);
	if (r < 0) {
		*result = dump(
		    json_pack("{s:s,s:o}", "error", "site.conf rejected", "errors", error_lines(errors)));
		free(errors);
		return -EINVAL;
	}
	*result = dump(json_pack("{s:s}", "reload", "scheduled"));
	return 0;
}

static int cmd_reload_all(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct thingsd *td = ud;
	const tsync_site *site = tsync_node_site(node);
	json_t *root, *kwargs, *sent;
	size_t n = tsync_site_controller_count(site);
	char why[96], *errors = NULL;
	int r = check_args(req, false, NULL, &root, &kwargs, result);

	if (r < 0)
		return r;
	json_decref(root);
	sent = json_array();
	for (size_t i = 0; i < n; i++) {
		tsync_controller_info ci;
		bool has = false;
		tsync_site_controller(site, i, &ci);
		for (size_t k = 0; k < ci.n_roles; k++)
			has |= !strcmp(ci.roles[k], "cmd_do");
		if (!has || !strcmp(ci.name, tsync_node_name(node)))
			continue;
		if (tsync_node_cmd(node, ci.name, "cmd_do", "reload", NULL, NULL, NULL) == 0)
			json_array_append_new(sent, json_string(ci.name));
	}
	snprintf(why, sizeof(why), "reload_all from %s", req->from);
	r = daemon__request_reload(td, why, &errors);
	*result = dump(
	    json_pack("{s:o,s:s}", "sent_to", sent, "self", r == 0 ? "scheduled" : "site.conf rejected"));
	free(errors);
	return 0;
}

static int cmd_new_day(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct thingsd *td = ud;
	json_t *root, *kwargs, *changes;
	uint64_t total = 0;
	int r = check_args(req, false, NULL, &root, &kwargs, result);

	if (r < 0)
		return r;
	json_decref(root);
	changes = json_object();
	for (size_t i = 0; i < td->n_owned; i++) {
		json_object_set_new(changes, td->owned[i].name,
		                    json_integer((json_int_t)td->owned[i].changes_today));
		total += td->owned[i].changes_today;
		td->owned[i].changes_today = 0;
	}
	for (size_t i = 0; i < td->n_used; i++) {
		json_object_set_new(changes, td->used[i].name,
		                    json_integer((json_int_t)td->used[i].changes_today));
		total += td->used[i].changes_today;
		td->used[i].changes_today = 0;
	}
	td_info("new_day from %s: day %d closed with %llu changes", req->from, td->day,
	        (unsigned long long)total);
	*result = dump(json_pack("{s:i,s:I,s:o}", "day", td->day, "changes_total", (json_int_t)total,
	                         "changes", changes));
	td->day++;
	return 0;
}

static int cmd_reboot(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	static const char *const kw[] = {"reboot_not_exit", NULL};
	struct thingsd *td = ud;
	json_t *root, *kwargs, *machine;
	int r = check_args(req, false, kw, &root, &kwargs, result);

	if (r < 0)
		return r;
	machine = kwargs ? json_object_get(kwargs, "reboot_not_exit") : NULL;
	if (machine && !json_is_boolean(machine))
		return bad_kwarg(req, root, "reboot_not_exit must be true or false", result);
	if (machine && json_is_true(machine)) {
		char *argv[] = {"systemctl", "reboot", NULL};
		pid_t pid;
		if (!td->opt.allow_machine_reboot)
			return bad_kwarg(
			    req, root,
			    "rebooting the machine is not enabled (thingsd --allow-machine-reboot)", result);
		json_decref(root);
		td_warn("reboot of the machine asked by %s", req->from);
		r = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
		if (r != 0) {
			/* Asked for and allowed, but it did not happen. */
			td_error("err_write_crash reboot of the machine failed: %s", strerror(r));
			*result = dump(json_pack("{s:s}", "error", strerror(r)));
			return TSYNC_EWRITE;
		}
		*result = dump(json_pack("{s:s}", "reboot", "machine"));
		return 0;
	}
	json_decref(root);
	td_info("reboot asked by %s: thingsd restarts", req->from);
	*result = dump(json_pack("{s:s}", "reboot", "thingsd restarts"));
	daemon__request_stop(td, true);
	return 0;
}

/* --- clim: the climate role's settings document -------------------------------------- */

static char *clim_path(struct thingsd *td)
{
	char *p = NULL;

	if (!td->opt.state_dir || asprintf(&p, "%s/clim.json", td->opt.state_dir) < 0)
		return NULL;
	return p;
}

void cmd__load_clim(struct thingsd *td)
{
	char *path = clim_path(td);
	json_error_t jerr;
	json_t *doc;

	if (!path)
		return;
	doc = json_load_file(path, 0, &jerr);
	free(path);
	if (!doc)
		return;
	free(td->clim);
	td->clim = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
}

static int on_clim(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct thingsd *td = ud;
	json_error_t jerr;
	json_t *root = json_loads(req->json ? req->json : "{}", 0, &jerr), *doc = NULL;
	char *text, *path;
	int r;

	if (!json_is_object(root)) {
		json_decref(root);
		return TSYNC_ECMD_ARGS;
	}
	for (const char *const *k = envelope; *k; k++)
		json_object_del(root, *k);
	doc = json_object_get(root, "settings");
	if (!doc && json_object_size(root))
		doc = root;
	if (!doc) {
		/* {"type":"clim"} alone: re-read the settings and hand them over. */
		cmd__load_clim(td);
		td_info("clim: settings handed to %s", req->from);
		*result = td->clim ? strdup(td->clim) : NULL;
		json_decref(root);
		return 0;
	}
	text = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(root);
	if (!text)
		return -ENOMEM;
	path = clim_path(td);
	/* Durable before it is acknowledged: the sender retries until then. */
	r = path ? daemon__write_atomic(path, text, strlen(text), 0644) : 0;
	free(path);
	if (r < 0) {
		/* Taken but not stored: the sender must hear that it failed (it
		 * would otherwise believe the settings are kept). */
		td_error("err_write_crash clim: cannot store the settings from %s: %s", req->from,
		         strerror(-r));
		*result = dump(json_pack("{s:s}", "error", strerror(-r)));
		free(text);
		return TSYNC_EWRITE;
	}
	free(td->clim);
	td->clim = text;
	td_info("clim: settings from %s stored (%zu bytes)", req->from, strlen(text));
	http__broadcast(td, "clim", text);
	*result = dump(json_pack("{s:b,s:I}", "stored", 1, "bytes", (json_int_t)strlen(text)));
	return 0;
}

/* --- the registry ------------------------------------------------------------------ */

static const struct {
	const char *role, *cmd;
	tsync_request_fn fn;
} cmds[] = {
    {"cmd_do", "version", cmd_version},       {"cmd_do", "logging", cmd_logging},
    {"cmd_do", "timers", cmd_timers},         {"cmd_do", "reload", cmd_reload},
    {"cmd_do", "reload_all", cmd_reload_all}, {"cmd_do", "new_day", cmd_new_day},
    {"cmd_do", "reboot", cmd_reboot},
};

static bool has_role(struct thingsd *td, const char *role)
{
	const tsync_site *site = td->site;
	tsync_controller_info ci;
	int idx = tsync_site_controller_find(site, td->opt.controller);

	if (idx < 0 || tsync_site_controller(site, (size_t)idx, &ci) < 0)
		return false;
	for (size_t i = 0; i < ci.n_roles; i++)
		if (!strcmp(ci.roles[i], role))
			return true;
	return false;
}

static bool clim_role(struct thingsd *td)
{
	return has_role(td, "climate") || has_role(td, "m_clim");
}

int cmd__register(struct thingsd *td)
{
	int r;

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		r = tsync_node_on_cmd(td->node, cmds[i].role, cmds[i].cmd, cmds[i].fn, td);
		if (r < 0)
			return r;
	}
	if (clim_role(td)) {
		r = tsync_node_on_request(td->node, "clim", on_clim, td);
		if (r < 0)
			return r;
	}
	return 0;
}

/* A cum read through the API of the owner itself (thingsctl cum): the
 * node's cumul, answered as a cum request over the mesh would be. The reset
 * is the forensics controller's, over the mesh, not the API's. */
static int local_cum(struct thingsd *td, json_t *msg, char **result, const char **err)
{
	const char *fld = json_string_value(json_object_get(msg, "fld"));
	const json_t *day = json_object_get(msg, "day");
	char *cum = NULL;
	json_t *c, *ans;
	int r;

	if (json_is_null(day))
		day = NULL;
	if (!fld || (day && !json_is_string(day))) {
		*err = "err_cmd_args";
		return TSYNC_ECMD_ARGS;
	}
	r = tsync_node_cumul(td->node, fld, json_string_value(day), &cum);
	if (r < 0) {
		*err = r == TSYNC_EUNKNOWN_THING ? "err_ip_in_io"
		       : r == TSYNC_ENOT_USED    ? "err_ip_in_ths_i_use"
		       : r == TSYNC_EVALUE       ? "err_ip_in_val"
		                                 : "err_cmd_failed";
		return r;
	}
	c = json_loads(cum, 0, NULL);
	free(cum);
	ans = c ? json_pack("{sssssO}", "type", "cum", "fld", fld, "cum", c) : NULL;
	json_decref(c);
	*result = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
	json_decref(ans);
	return *result ? 0 : -ENOMEM;
}

int cmd__run_local(struct thingsd *td, const char *type, const char *role, const char *cmd,
                   const char *body_json, char **result, const char **err)
{
	tsync_request req;
	tsync_request_fn fn = NULL;
	json_error_t jerr;
	json_t *msg;
	char *json;
	int r;

	*result = NULL;
	*err = NULL;
	msg = body_json && *body_json ? json_loads(body_json, 0, &jerr) : json_object();
	if (!json_is_object(msg)) {
		json_decref(msg);
		*err = "err_cmd_args";
		return TSYNC_ECMD_ARGS;
	}
	json_object_set_new(msg, "type", json_string(type));
	if (!strcmp(type, "cmd")) {
		json_object_set_new(msg, "role", json_string(role ? role : ""));
		json_object_set_new(msg, "cmd", json_string(cmd ? cmd : ""));
		if (!role || !cmd || !has_role(td, role)) {
			td_warn("err_ip_in_cmd IP %s not valid cmd, requester=http with role %s",
			        cmd ? cmd : "?", role ? role : "?");
			json_decref(msg);
			*err = "err_ip_in_cmd";
			return TSYNC_ECMD;
		}
		for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
			if (!strcmp(cmds[i].role, role) && !strcmp(cmds[i].cmd, cmd))
				fn = cmds[i].fn;
		if (!fn) {
			td_warn("err_ip_in_cmd IP %s not valid cmd, requester=http with role %s", cmd, role);
			json_decref(msg);
			*err = "err_ip_in_cmd";
			return TSYNC_ECMD;
		}
	} else if (!strcmp(type, "clim") && clim_role(td)) {
		fn = on_clim;
	} else if (!strcmp(type, "cum")) {
		r = local_cum(td, msg, result, err);
		json_decref(msg);
		return r;
	} else {
		td_warn("err_ip_in_req message type error, requester=http with <%s>", type);
		json_decref(msg);
		*err = "err_ip_in_req";
		return TSYNC_ECMD;
	}
	json = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	if (!json)
		return -ENOMEM;
	memset(&req, 0, sizeof(req));
	req.from = "http";
	req.type = type;
	req.role = role;
	req.cmd = cmd;
	req.json = json;
	r = fn(td, td->node, &req, result);
	free(json);
	if (r == TSYNC_ECMD_ARGS)
		*err = "err_cmd_args";
	else if (r == TSYNC_EWRITE)
		*err = "err_write_crash";
	else if (r < 0)
		*err = "err_cmd_failed";
	return r;
}
