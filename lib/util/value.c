/*
 * lib/util: values, and the public helpers that name things.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <thingsync/node.h>

#include "util/util.h"

int value__copy(tsync_value *dst, const tsync_value *src)
{
	if (src->type == TSYNC_TYPE_STRING) {
		char *s = util__strdup(src->u.s ? src->u.s : "");
		if (!s)
			return -ENOMEM;
		dst->type = TSYNC_TYPE_STRING;
		dst->u.s = s;
		return 0;
	}
	*dst = *src;
	return 0;
}

void value__clear(tsync_value *v)
{
	if (v->type == TSYNC_TYPE_STRING)
		free((char *)v->u.s);
	v->type = TSYNC_TYPE_NONE;
	v->u.i = 0;
}

int value__equal(const tsync_value *a, const tsync_value *b)
{
	if (a->type != b->type)
		return 0;
	switch (a->type) {
	case TSYNC_TYPE_NONE:
		return 1;
	case TSYNC_TYPE_BOOL:
		return a->u.b == b->u.b;
	case TSYNC_TYPE_INT:
		return a->u.i == b->u.i;
	case TSYNC_TYPE_FLOAT:
		return a->u.f == b->u.f || (isnan(a->u.f) && isnan(b->u.f));
	case TSYNC_TYPE_STRING:
		return strcmp(a->u.s, b->u.s) == 0;
	}
	return 0;
}

TSYNC_API int tsync_value_format(const tsync_value *v, char *buf, size_t len)
{
	if (!v || (!buf && len))
		return -EINVAL;
	switch (v->type) {
	case TSYNC_TYPE_NONE:
		return snprintf(buf, len, "-");
	case TSYNC_TYPE_BOOL:
		return snprintf(buf, len, "%d", v->u.b ? 1 : 0);
	case TSYNC_TYPE_INT:
		return snprintf(buf, len, "%lld", (long long)v->u.i);
	case TSYNC_TYPE_FLOAT:
		return snprintf(buf, len, "%.15g", v->u.f);
	case TSYNC_TYPE_STRING:
		return snprintf(buf, len, "%s", v->u.s ? v->u.s : "");
	}
	return -EINVAL;
}

TSYNC_API int tsync_value_parse(tsync_type type, const char *text, tsync_value *out)
{
	char *end;

	if (!text || !out)
		return TSYNC_EVALUE;
	switch (type) {
	case TSYNC_TYPE_BOOL:
		if (!strcmp(text, "1") || !strcasecmp(text, "true") || !strcasecmp(text, "on") ||
		    !strcasecmp(text, "yes")) {
			*out = tsync_bool(true);
			return 0;
		}
		if (!strcmp(text, "0") || !strcasecmp(text, "false") || !strcasecmp(text, "off") ||
		    !strcasecmp(text, "no")) {
			*out = tsync_bool(false);
			return 0;
		}
		return TSYNC_EVALUE;
	case TSYNC_TYPE_INT: {
		long long i;
		errno = 0;
		i = strtoll(text, &end, 10);
		if (errno || end == text || *end)
			return TSYNC_EVALUE;
		*out = tsync_int(i);
		return 0;
	}
	case TSYNC_TYPE_FLOAT: {
		double f;
		errno = 0;
		f = strtod(text, &end);
		if (errno || end == text || *end || !isfinite(f))
			return TSYNC_EVALUE;
		*out = tsync_float(f);
		return 0;
	}
	case TSYNC_TYPE_STRING:
		*out = tsync_string(text);
		return 0;
	case TSYNC_TYPE_NONE:
		break;
	}
	return TSYNC_EVALUE;
}

TSYNC_API const char *tsync_type_name(tsync_type type)
{
	switch (type) {
	case TSYNC_TYPE_BOOL:
		return "bool";
	case TSYNC_TYPE_INT:
		return "int";
	case TSYNC_TYPE_FLOAT:
		return "float";
	case TSYNC_TYPE_STRING:
		return "string";
	case TSYNC_TYPE_NONE:
		break;
	}
	return "none";
}

TSYNC_API const char *tsync_log_level_name(tsync_log_level level)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};
	if ((unsigned)level < ARRAY_SIZE(names))
		return names[level];
	return "?";
}

TSYNC_API int tsync_log_level_parse(const char *name, tsync_log_level *out)
{
	for (int l = TSYNC_LOG_ERROR; name && out && l <= TSYNC_LOG_DEBUG; l++)
		if (!strcmp(name, tsync_log_level_name((tsync_log_level)l))) {
			*out = (tsync_log_level)l;
			return 0;
		}
	return -EINVAL;
}

TSYNC_API const char *tsync_reject_name(tsync_reject reason)
{
	static const char *const names[TSYNC_REJ_COUNT] = {
	    [TSYNC_REJ_JSON] = "err_ip_in_json_req", [TSYNC_REJ_REQ] = "err_ip_in_req",
	    [TSYNC_REJ_IO] = "err_ip_in_io",         [TSYNC_REJ_THS_I_USE] = "err_ip_in_ths_i_use",
	    [TSYNC_REJ_VAL] = "err_ip_in_val",       [TSYNC_REJ_REFUSED] = "err_ip_in_refused",
	    [TSYNC_REJ_CMD] = "err_ip_in_cmd",       [TSYNC_REJ_AUTH] = "err_ip_in_auth",
	    [TSYNC_REJ_REPLAY] = "err_ip_in_replay", [TSYNC_REJ_STALE_BOOT] = "err_ip_in_stale_boot",
	    [TSYNC_REJ_OVERSIZE] = "err_ip_in_size", [TSYNC_REJ_UNKNOWN_SENDER] = "err_ip_in_sender",
	};
	if ((unsigned)reason < TSYNC_REJ_COUNT)
		return names[reason];
	return "err_unknown";
}

TSYNC_API const char *tsync_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
	case TSYNC_ESITE:
		return "site.conf is invalid";
	case TSYNC_EUNKNOWN_THING:
		return "no thing of that name in site.conf";
	case TSYNC_EUNKNOWN_CTRL:
		return "no controller of that name in site.conf";
	case TSYNC_ENOT_USED:
		return "this controller neither owns nor uses that thing";
	case TSYNC_EVALUE:
		return "value of the wrong type or out of its limits";
	case TSYNC_EREFUSED:
		return "refused by the peer (err_ip_in_refused)";
	case TSYNC_ENO_PULSE:
		return "that thing may not be pulsed";
	case TSYNC_EPEER_RESTARTED:
		return "the peer restarted before answering; outcome unknown";
	case TSYNC_ECMD:
		return "unknown role or command at the peer (err_ip_in_cmd)";
	case TSYNC_ECMD_ARGS:
		return "the peer rejected the command's arguments (err_cmd_args)";
	case TSYNC_ESTORE:
		return "the state store (LMDB) failed";
	case TSYNC_EKEY:
		return "site key missing, unreadable, too open or malformed";
	case TSYNC_ECANCELED:
		return "canceled: the node was freed before the answer came";
	case TSYNC_EWRITE:
		return "the owner could not act: its output or handler failed (err_write_crash)";
	}
	if (err < 0 && err > -4096)
		return strerror(-err);
	return "unknown error";
}
