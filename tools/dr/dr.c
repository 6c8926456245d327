/*
 * thingsync-dr: disaster recovery of one controller's local state (seed 004).
 * Tier-1 is the controller's LMDB environments (the node's state store; the
 * pushd journal: stream id, last sequence, cursor); Tier-2 is the
 * collector's database.
 *
 *   check    opens every environment read-only and says what is present,
 *            missing, unreadable or inconsistent; exit 1 if anything needs
 *            recovery. Changes nothing (no lock file is even made).
 *   recover  rebuilds what is lost and leaves what is intact (partial loss):
 *            the node's state store anew from the collector (GET /v1/owned:
 *            boot counter above its boots, owned values with their
 *            versions; moved aside first if unreadable), and
 *            pushd's journal from the collector (GET /v1/streams,
 *            signed with the site key): the collector's stream, next
 *            sequence after its last stored one (the truncation offset), the
 *            newest version per thing. A journal with unsent entries is never
 *            overwritten: in the collector's stream they are kept, in another
 *            one they are renumbered after the collector's last sequence.
 *            An unreadable journal is moved aside, never deleted.
 *
 * Exit status: 0 nothing to do / done; 1 (check) something needs recovery;
 * 2 usage; 3 failure (collector unreachable, a write that failed, ...).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <thingsync/thingsync.h>

#include "curlev.h"
#include "daemonopt.h"
#include "httpd.h"
#include "store/store.h"
#include "util/util.h"

#define EXIT_NEEDS_RECOVERY 1
#define EXIT_USAGE          2
#define EXIT_FAILED         3

static const char usage_text[] =
    "usage: thingsync-dr check   -c SITE -n CONTROLLER -s STATE_DIR [--journal DIR]\n"
    "                            [--collector URL [--cacert FILE]] [--json]\n"
    "       thingsync-dr recover -c SITE -n CONTROLLER -s STATE_DIR [--journal DIR]\n"
    "                            --collector URL [--cacert FILE] [--json]\n"
    "\n"
    "Disaster recovery of a controller's local LMDB state. Stop the controller's\n"
    "daemons first.\n"
    "\n"
    "  check     open every LMDB environment of CONTROLLER read-only and report\n"
    "            what is present, missing, unreadable or inconsistent; with\n"
    "            --collector, whether an intact state store is behind what the\n"
    "            collector saw (boot counter, owned values: an old copy put back)\n"
    "  recover   rebuild what is missing or unreadable, leave what is intact:\n"
    "            pushd's journal from the collector (same stream, next sequence\n"
    "            after the collector's last one; unsent entries are kept,\n"
    "            renumbered into the collector's stream if need be), the node's\n"
    "            state store anew (boot counter above every boot the collector\n"
    "            saw, owned values with their versions); unreadable files are\n"
    "            moved aside, never deleted\n"
    "\n"
    "  -c, --site FILE        site.conf (with key_file)\n"
    "  -n, --controller NAME  the controller\n"
    "  -s, --state-dir DIR    its state directory (thingsd's, or pushd's)\n"
    "      --journal DIR      pushd's journal (default STATE_DIR/journal for a\n"
    "                         controller with the role push)\n"
    "      --collector URL    the collector's base URL, e.g. http://srv:8090\n"
    "      --cacert FILE      CA bundle for an https collector\n"
    "      --json             one JSON object on stdout instead of text\n"
    "  -h, --help             this text\n"
    "\n"
    "Exit status: 0 nothing to do, or done; 1 (check) something needs recovery;\n"
    "2 usage; 3 failure.\n";

struct opts {
	const char *cmd, *site, *controller, *state_dir, *journal, *collector, *cacert;
	bool json;
};

/* The report: printed as text lines, or gathered into one JSON object. */
struct report {
	bool json;
	json_t *root;
	json_t *items;
	bool needs_recovery;
	bool failed;
};

static void item(struct report *rp, const char *what, const char *path, const char *state, json_t *detail,
                 const char *fmt, ...) TSYNC_PRINTF(6, 7);

/* One thing checked or done: `state` is present, missing, unreadable, inconsistent, recovered, ... */
static void item(struct report *rp, const char *what, const char *path, const char *state, json_t *detail,
                 const char *fmt, ...)
{
	char text[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (rp->json) {
		json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "what", what, "path", path ? path : "", "state",
		                      state, "message", text);
		if (o && detail)
			json_object_update(o, detail);
		json_array_append_new(rp->items, o);
	} else {
		printf("%-8s %-12s %s: %s\n", what, state, path ? path : "-", text);
	}
	json_decref(detail);
}

static void log_stderr(void *ud, tsync_log_level level, const char *line)
{
	fprintf(stderr, "%s: %s\n", tsync_log_level_name(level), line);
}

static bool has_role(tsync_site *site, const char *controller, const char *role)
{
	size_t n = tsync_site_controller_count(site);

	for (size_t i = 0; i < n; i++) {
		tsync_controller_info ci;
		if (tsync_site_controller(site, i, &ci) < 0 || strcmp(ci.name, controller) != 0)
			continue;
		for (size_t k = 0; k < ci.n_roles; k++)
			if (strcmp(ci.roles[k], role) == 0)
				return true;
	}
	return false;
}

static bool exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static int collector_get(const struct opts *o, tsync_site *site, const char *target, json_t **out, char *why,
                         size_t whylen);

/* --- the node's state store --------------------------------------------------------------- */

/* Reads the state store read-only (store__inspect(): no lock file made, nothing written). */
static int check_store(struct report *rp, const char *dir, struct store_info *si)
{
	int r = store__inspect(dir, si, NULL, NULL);

	if (r == -ENOENT) {
		rp->needs_recovery = true;
		item(rp, "node", dir, "missing", NULL,
		     "no state store (%s): the boot counter and owned values are lost; the daemon refuses to "
		     "start "
		     "while its state directory is marked",
		     si->problem);
	} else if (r < 0) {
		rp->needs_recovery = true;
		item(rp, "node", dir, "unreadable", NULL, "state store: %s", si->problem);
	} else if (si->problem[0]) {
		rp->needs_recovery = true;
		item(rp, "node", dir, "inconsistent",
		     json_pack("{s:I,s:I}", "boot", (json_int_t)si->boot, "values", (json_int_t)si->values),
		     "state store: %s", si->problem);
	} else {
		item(rp, "node", dir, "present",
		     json_pack("{s:I,s:I}", "boot", (json_int_t)si->boot, "values", (json_int_t)si->values),
		     "boot counter %" PRIu64 ", %" PRIu64 " owned value(s)", si->boot, si->values);
	}
	return r;
}

/* A store's values as {thing: [owner boot, version]}, for the comparison below. */
static void keep_version(void *ud, const char *thing, uint64_t version, uint64_t boot, const tsync_value *v)
{
	json_object_set_new(ud, thing, json_pack("[I,I]", (json_int_t)boot, (json_int_t)version));
}

/*
 * The owned things whose newest value at the collector is newer, by (owner
 * boot, version), than the store's: a store restored from an old copy. Users
 * hold those newer values too; a daemon started on the old ones would send
 * them again under a new boot, and every copy would go back. A new JSON
 * array of {"thing", "owner_boot", "version", "value"} (the collector's).
 */
static json_t *behind_collector(const char *dir, json_t *owned)
{
	struct store_info si;
	json_t *mine = json_object(), *behind = json_array(), *x;
	size_t i;

	if (!mine || !behind || store__inspect(dir, &si, keep_version, mine) < 0) {
		json_decref(mine);
		return behind;
	}
	json_array_foreach(json_object_get(owned, "things"), i, x)
	{
		const char *thing = json_string_value(json_object_get(x, "thing"));
		json_t *have = thing ? json_object_get(mine, thing) : NULL;
		uint64_t ob = (uint64_t)json_integer_value(json_object_get(x, "owner_boot"));
		uint64_t ver = (uint64_t)json_integer_value(json_object_get(x, "version"));
		uint64_t hb = have ? (uint64_t)json_integer_value(json_array_get(have, 0)) : 0;
		uint64_t hv = have ? (uint64_t)json_integer_value(json_array_get(have, 1)) : 0;

		if (thing && (ob > hb || (ob == hb && ver > hv)))
			json_array_append(behind, x);
	}
	json_decref(mine);
	return behind;
}

/*
 * check --collector: an intact store can still be behind what the collector
 * saw (a restored backup): a boot counter at or below a boot the collector
 * has seen would repeat a boot, and older values would make copies go back.
 */
static void check_against_collector(struct report *rp, const struct opts *o, tsync_site *site,
                                    const char *dir, const struct store_info *si)
{
	json_t *owned = NULL, *behind;
	char target[256], why[512];
	uint64_t last_boot;

	snprintf(target, sizeof(target), "/v1/owned?controller=%s", o->controller);
	if (collector_get(o, site, target, &owned, why, sizeof(why)) < 0) {
		rp->failed = true;
		item(rp, "node", dir, "failed", NULL, "collector: %s", why);
		return;
	}
	last_boot = (uint64_t)json_integer_value(json_object_get(owned, "last_boot"));
	behind = behind_collector(dir, owned);
	if (si->boot < last_boot || json_array_size(behind)) {
		rp->needs_recovery = true;
		item(rp, "node", dir, "behind",
		     json_pack("{s:I,s:I,s:O}", "boot", (json_int_t)si->boot, "last_boot",
		               (json_int_t)last_boot, "things", behind),
		     "behind the collector: boot counter %" PRIu64 " (the collector saw %" PRIu64
		     "), %zu owned "
		     "value(s) older than the collector's (and the users')",
		     si->boot, last_boot, json_array_size(behind));
	} else {
		item(rp, "node", dir, "in_step", NULL,
		     "in step with the collector (boot counter %" PRIu64 ", its last %" PRIu64 ")", si->boot,
		     last_boot);
	}
	json_decref(behind);
	json_decref(owned);
}

/*
 * Moves an unreadable store's data.mdb aside (never deleted: it may hold
 * what nobody else has). File by file, not the directory: thingsd's store is
 * its state directory itself, with the marker and other files in it.
 */
static int move_store_aside(struct report *rp, const char *dir)
{
	char from[4300], to[4400];

	snprintf(from, sizeof(from), "%s/data.mdb", dir);
	snprintf(to, sizeof(to), "%s.unreadable-%lld", from, (long long)time(NULL));
	if (rename(from, to) < 0) {
		item(rp, "node", dir, "failed", NULL, "cannot move %s aside to %s: %s", from, to,
		     strerror(errno));
		return -errno;
	}
	/* The lock file holds no data, only the readers of the old file. */
	snprintf(from, sizeof(from), "%s/lock.mdb", dir);
	unlink(from);
	item(rp, "node", dir, "moved", NULL, "unreadable state store kept as %s", to);
	return 0;
}

/* A stored value as the site's type says; false if it does not fit. */
static bool value_from_json(tsync_site *site, const char *thing, json_t *jv, tsync_value *v)
{
	int idx = tsync_site_thing_find(site, thing);
	tsync_thing_info ti;

	if (idx < 0 || tsync_site_thing(site, (size_t)idx, &ti) < 0)
		return false;
	switch (ti.type) {
	case TSYNC_TYPE_BOOL:
		*v = tsync_bool(json_is_true(jv) || (json_is_integer(jv) && json_integer_value(jv) != 0));
		return json_is_boolean(jv) || json_is_integer(jv);
	case TSYNC_TYPE_INT:
		*v = tsync_int((int64_t)json_integer_value(jv));
		return json_is_integer(jv);
	case TSYNC_TYPE_FLOAT:
		*v = tsync_float(json_number_value(jv));
		return json_is_number(jv);
	case TSYNC_TYPE_STRING:
		*v = tsync_string(json_string_value(jv));
		return json_is_string(jv);
	default:
		return false;
	}
}

/*
 * Rebuilds what is lost of the state store and nothing else. The collector
 * (GET /v1/owned) says the last boot of this controller it has seen and the
 * newest value, with its (owner boot, version), of each thing it owns that a
 * push role received. A store made anew (missing, or unreadable and moved
 * aside) gets those values back with their versions, so users, who order a
 * thing's values by (owner boot, version), keep their copies and never see
 * one go back; and a boot counter above every boot the collector has seen
 * and above the clock (every start floors it by the clock too). An intact
 * store whose counter is behind what the collector saw gets its counter
 * raised, values kept; an intact one that is not behind is left unwritten.
 */
static int recover_store(struct report *rp, const struct opts *o, tsync_site *site, const char *dir,
                         int inspected, const struct store_info *si)
{
	struct logger log = {log_stderr, NULL, TSYNC_LOG_WARN, "thingsync-dr"};
	struct store *s = NULL;
	struct timespec ts;
	json_t *owned = NULL, *x, *lost = NULL, *behind = NULL;
	char target[256], why[512];
	uint64_t floor, last_boot, boot = 0, restored = 0;
	size_t i;
	int r;

	snprintf(target, sizeof(target), "/v1/owned?controller=%s", o->controller);
	r = collector_get(o, site, target, &owned, why, sizeof(why));
	if (r < 0) {
		item(rp, "node", dir, "failed", NULL, "collector: %s", why);
		return r;
	}
	last_boot = (uint64_t)json_integer_value(json_object_get(owned, "last_boot"));
	if (inspected == 0 && !si->problem[0])
		behind = behind_collector(dir, owned);
	if (inspected == 0 && !si->problem[0] && si->boot >= last_boot && !json_array_size(behind)) {
		item(rp, "node", dir, "unchanged", NULL,
		     "intact (boot counter %" PRIu64 ", the collector's last %" PRIu64 "): left as it is",
		     si->boot, last_boot);
		json_decref(behind);
		json_decref(owned);
		return 0;
	}
	if (inspected < 0 && inspected != -ENOENT) {
		r = move_store_aside(rp, dir);
		if (r < 0)
			goto leave;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	floor = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	if (last_boot >= floor)
		floor = last_boot + 1;
	if (inspected == 0 && si->max_value_boot >= floor)
		floor = si->max_value_boot + 1;
	r = store__open(dir, 0, &log, &s);
	if (r == 0 && inspected != 0) {
		/* Made anew: the values the collector has, with their versions. */
		behind = json_incref(json_object_get(owned, "things"));
	}
	if (r == 0 && behind) {
		/* The collector's values: all of them for a store made anew, only
		 * those it is behind on for an intact one. */
		json_array_foreach(behind, i, x)
		{
			const char *thing = json_string_value(json_object_get(x, "thing"));
			tsync_value v;

			if (!thing || !value_from_json(site, thing, json_object_get(x, "value"), &v))
				continue;
			r = store__stage_value(
			    s, thing, (uint64_t)json_integer_value(json_object_get(x, "version")),
			    (uint64_t)json_integer_value(json_object_get(x, "owner_boot")), &v);
			if (r < 0)
				break;
			restored++;
		}
		if (r == 0)
			r = store__commit(s);
	}
	if (r == 0)
		r = store__next_boot(s, floor, &boot);
	store__close(s);
	if (r < 0) {
		item(rp, "node", dir, "failed", NULL, "cannot rebuild the state store: %s",
		     tsync_strerror(r));
		goto leave;
	}
	if (inspected == 0) {
		item(rp, "node", dir, "recovered",
		     json_pack("{s:I,s:I,s:I}", "boot", (json_int_t)boot, "last_boot", (json_int_t)last_boot,
		               "values", (json_int_t)restored),
		     "boot counter raised to %" PRIu64 ", above the collector's last boot %" PRIu64
		     " and its own values; %" PRIu64
		     " value(s) that were behind the collector's brought up to them, "
		     "the others kept",
		     boot, last_boot, restored);
		goto leave;
	}
	/* What cannot come back: owned things no push role receives (or never stored). */
	lost = json_array();
	{
		size_t n = tsync_site_thing_count(site);
		for (size_t k = 0; k < n && lost; k++) {
			tsync_thing_info ti;
			bool found = false;
			if (tsync_site_thing(site, k, &ti) < 0 || strcmp(ti.owner, o->controller) != 0)
				continue;
			json_array_foreach(json_object_get(owned, "things"), i, x)
			{
				if (!strcmp(json_string_value(json_object_get(x, "thing")), ti.name))
					found = true;
			}
			if (!found)
				json_array_append_new(lost, json_string(ti.name));
		}
	}
	item(rp, "node", dir, "recovered",
	     json_pack("{s:I,s:I,s:I,s:O}", "boot", (json_int_t)boot, "last_boot", (json_int_t)last_boot,
	               "values", (json_int_t)restored, "not_restored", lost),
	     "new state store: boot counter %" PRIu64 " (the collector's last boot %" PRIu64 "), %" PRIu64
	     " owned value(s) restored with their versions; %zu not restored (no push role stored them: they "
	     "start without a value)",
	     boot, last_boot, restored, json_array_size(lost));
leave:
	json_decref(lost);
	json_decref(behind);
	json_decref(owned);
	return r;
}

/* --- the journal ---------------------------------------------------------------------------- */

static json_t *journal_json(const struct journal_info *ji)
{
	return json_pack("{s:s,s:s,s:I,s:I,s:I,s:I}", "source", ji->source, "stream", ji->stream, "cursor",
	                 (json_int_t)ji->cursor, "last_seq", (json_int_t)ji->last_seq, "entries",
	                 (json_int_t)ji->entries, "things", (json_int_t)ji->things);
}

static int check_journal(struct report *rp, const char *dir, const char *controller, struct journal_info *ji)
{
	int r = journal__inspect(dir, ji);

	if (r == -ENOENT) {
		rp->needs_recovery = true;
		item(rp, "journal", dir, "missing", NULL,
		     "no journal: pushd would start a new stream, which the collector refuses");
	} else if (r < 0) {
		rp->needs_recovery = true;
		item(rp, "journal", dir, "unreadable", NULL, "%s", ji->problem);
	} else if (ji->problem[0]) {
		rp->needs_recovery = true;
		item(rp, "journal", dir, "inconsistent", journal_json(ji), "%s", ji->problem);
	} else if (strcmp(ji->source, controller) != 0) {
		rp->needs_recovery = true;
		item(rp, "journal", dir, "inconsistent", journal_json(ji), "belongs to source '%s', not '%s'",
		     ji->source, controller);
	} else {
		item(rp, "journal", dir, "present", journal_json(ji),
		     "stream %s, cursor %" PRIu64 ", last sequence %" PRIu64 ", %" PRIu64 " unsent",
		     ji->stream[0] ? ji->stream : "(none yet)", ji->cursor, ji->last_seq, ji->entries);
	}
	return r;
}

/* --- the collector -------------------------------------------------------------------------- */

/* GET base + target, signed with the site key for the collector service. */
static int collector_get(const struct opts *o, tsync_site *site, const char *target, json_t **out, char *why,
                         size_t whylen)
{
	struct httpd_sig_headers sig;
	struct curl_slist *h = NULL;
	struct curlev_body b = {0};
	char url[2048];
	long status = 0;
	CURL *c;
	CURLcode cc;
	size_t n = strlen(o->collector);

	*out = NULL;
	if (httpd__sign(site, HTTPD_COLLECTOR_NAME, "GET", target, NULL, 0, &sig) < 0) {
		snprintf(why, whylen, "cannot sign: the site has no key");
		return -EINVAL;
	}
	snprintf(url, sizeof(url), "%.*s%s", (int)(n && o->collector[n - 1] == '/' ? n - 1 : n), o->collector,
	         target);
	h = curl_slist_append(h, sig.to);
	h = curl_slist_append(h, sig.time);
	h = curl_slist_append(h, sig.nonce);
	h = curl_slist_append(h, sig.body);
	h = curl_slist_append(h, sig.sig);
	c = curl_easy_init();
	if (!c || !h) {
		curl_slist_free_all(h);
		return -ENOMEM;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, curlev__body_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "thingsync-dr/" TSYNC_VERSION_STRING);
	if (o->cacert)
		curl_easy_setopt(c, CURLOPT_CAINFO, o->cacert);
	cc = curl_easy_perform(c);
	if (cc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	if (cc != CURLE_OK) {
		snprintf(why, whylen, "%.300s: %s", url, curl_easy_strerror(cc));
		free(b.data);
		return -EIO;
	}
	if (status != 200 || !(*out = json_loadb(b.data ? b.data : "", b.len, 0, NULL))) {
		snprintf(why, whylen, "%.200s: HTTP %ld: %.200s", url, status, b.data ? b.data : "");
		free(b.data);
		return -EIO;
	}
	free(b.data);
	return 0;
}

/* --- recover -------------------------------------------------------------------------------- */

/* Moves an unreadable journal aside (never deleted: it may hold what nobody else has). */
static int move_aside(struct report *rp, const char *dir)
{
	char to[4300];

	snprintf(to, sizeof(to), "%s.unreadable-%lld", dir, (long long)time(NULL));
	if (rename(dir, to) < 0) {
		item(rp, "journal", dir, "failed", NULL, "cannot move it aside to %s: %s", to,
		     strerror(errno));
		return -errno;
	}
	item(rp, "journal", dir, "moved", NULL, "unreadable journal kept as %s", to);
	return 0;
}

static int recover_journal(struct report *rp, const struct opts *o, tsync_site *site, const char *dir)
{
	struct logger log = {log_stderr, NULL, TSYNC_LOG_WARN, "thingsync-dr"};
	struct journal_info ji;
	struct journal_adopt_result res;
	struct journal_version *v = NULL;
	struct journal *j = NULL;
	json_t *info = NULL, *jv, *x;
	char target[256], why[512];
	const char *stream;
	int64_t last;
	size_t nv, i;
	int r;

	snprintf(target, sizeof(target), "/v1/streams?source=%s", o->controller);
	r = collector_get(o, site, target, &info, why, sizeof(why));
	if (r < 0) {
		item(rp, "journal", dir, "failed", NULL, "collector: %s", why);
		return r;
	}
	stream = json_string_value(json_object_get(info, "stream"));
	last = json_integer_value(json_object_get(info, "last_seq"));
	if (!stream || !*stream) {
		/* Nothing to continue: a journal made now (or kept) is adopted at its first push. */
		item(rp, "journal", dir, "unchanged", NULL,
		     "the collector holds no stream of %s: pushd's next stream will be adopted",
		     o->controller);
		json_decref(info);
		return 0;
	}
	r = journal__inspect(dir, &ji);
	if (r == 0 && !ji.problem[0] && !strcmp(ji.source, o->controller) && !strcmp(ji.stream, stream) &&
	    (int64_t)ji.last_seq >= last) {
		/* Intact and in the collector's stream, at or ahead of it: nothing to rebuild, nothing
		 * written. */
		item(rp, "journal", dir, "unchanged", journal_json(&ji),
		     "intact: stream %s, last sequence %" PRIu64 " (collector's %" PRId64 "), left as it is",
		     stream, ji.last_seq, last);
		r = 0;
		goto leave;
	}
	if (r < 0 && r != -ENOENT) {
		r = move_aside(rp, dir);
		if (r < 0)
			goto leave;
	} else if (r == 0 && (ji.problem[0] || strcmp(ji.source, o->controller) != 0)) {
		if (ji.entries == 0 || strcmp(ji.source, o->controller) != 0) {
			r = move_aside(rp, dir);
			if (r < 0)
				goto leave;
		}
	}
	jv = json_object_get(info, "versions");
	nv = json_array_size(jv);
	v = calloc(nv + 1, sizeof(*v));
	if (!v) {
		r = -ENOMEM;
		goto leave;
	}
	json_array_foreach(jv, i, x)
	{
		v[i].thing = json_string_value(json_object_get(x, "thing"));
		v[i].owner_boot = (uint64_t)json_integer_value(json_object_get(x, "owner_boot"));
		v[i].version = (uint64_t)json_integer_value(json_object_get(x, "version"));
	}
	r = journal__open(dir, o->controller, NULL, &log, &j);
	if (r == 0)
		r = journal__adopt(j, stream, (uint64_t)last, v, nv, &res);
	if (r < 0) {
		item(rp, "journal", dir, "failed", NULL, "cannot rebuild the journal: %s", tsync_strerror(r));
		goto leave;
	}
	{
		struct journal_stats st;
		json_t *d;

		journal__stats(j, &st);
		d = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I}", "stream", stream, "cursor",
		              (json_int_t)st.cursor, "last_seq", (json_int_t)st.last_seq, "kept",
		              (json_int_t)res.kept, "renumbered", (json_int_t)res.renumbered, "dropped",
		              (json_int_t)res.dropped, "acked", (json_int_t)res.acked);
		if (res.stream_changed && res.kept + res.dropped > 0)
			item(rp, "journal", dir, "recovered", d,
			     "now stream %s after the collector's sequence %" PRId64 ": %" PRIu64
			     " unsent measurement(s) of the other stream renumbered %" PRIu64 "..%" PRIu64
			     ", %" PRIu64 " dropped as copies of values the collector has",
			     stream, last, res.kept, st.cursor + 1, st.last_seq, res.dropped);
		else
			item(rp, "journal", dir, "recovered", d,
			     "stream %s, next sequence %" PRIu64 " (collector's last %" PRId64 "), %" PRIu64
			     " unsent kept",
			     stream, st.cursor + 1 > st.last_seq + 1 ? st.cursor + 1 : st.last_seq + 1, last,
			     res.kept);
	}
leave:
	journal__close(j);
	free(v);
	json_decref(info);
	return r;
}

/* --- main ----------------------------------------------------------------------------------- */

static int parse_args(int argc, char **argv, struct opts *o)
{
	enum { O_JOURNAL = 256, O_COLLECTOR, O_CACERT, O_JSON };
	static const struct option longopts[] = {
	    {"site", required_argument, NULL, 'c'},
	    {"controller", required_argument, NULL, 'n'},
	    {"state-dir", required_argument, NULL, 's'},
	    {"journal", required_argument, NULL, O_JOURNAL},
	    {"collector", required_argument, NULL, O_COLLECTOR},
	    {"cacert", required_argument, NULL, O_CACERT},
	    {"json", no_argument, NULL, O_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	/* --help and a wrong option are answered as every daemon answers them
	 * (daemonopt.h); the options themselves are thingsd's letters. */
	struct daemonopt d;
	int ch;

	daemonopt__init(&d, "thingsync-dr", usage_text);
	if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")))
		return daemonopt__handle(&d, 'h', NULL);
	if (argc < 2 || (strcmp(argv[1], "check") != 0 && strcmp(argv[1], "recover") != 0))
		return daemonopt__handle(&d, '?', NULL);
	o->cmd = argv[1];
	optind = 2;
	while ((ch = getopt_long(argc, argv, "c:n:s:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o->site = optarg;
			break;
		case 'n':
			o->controller = optarg;
			break;
		case 's':
			o->state_dir = optarg;
			break;
		case O_JOURNAL:
			o->journal = optarg;
			break;
		case O_COLLECTOR:
			o->collector = optarg;
			break;
		case O_CACERT:
			o->cacert = optarg;
			break;
		case O_JSON:
			o->json = true;
			break;
		default: /* -h, --help, or getopt's complaint */
			if (daemonopt__handle(&d, ch, optarg) < 0)
				return -EINVAL;
		}
	}
	if (optind < argc || !o->site || !o->controller || !o->state_dir) {
		fprintf(stderr, "thingsync-dr: -c, -n and -s are required\n");
		return -EINVAL;
	}
	if (!strcmp(o->cmd, "recover") && !o->collector) {
		fprintf(stderr, "thingsync-dr: recover needs --collector URL\n");
		return -EINVAL;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = {0};
	struct report rp = {0};
	struct journal_info ji;
	tsync_site *site = NULL;
	char *errors = NULL;
	char node_dir[4200], journal_dir[4200];
	bool push;
	int code = 0, r;

	if (parse_args(argc, argv, &o) < 0)
		return EXIT_USAGE;
	r = tsync_site_load(o.site, &site, &errors);
	if (r < 0) {
		fprintf(stderr, "thingsync-dr: %s: %s\n", o.site, errors ? errors : tsync_strerror(r));
		free(errors);
		return EXIT_FAILED;
	}
	if (tsync_site_controller_find(site, o.controller) < 0) {
		fprintf(stderr, "thingsync-dr: %s is not a controller of %s\n", o.controller, o.site);
		tsync_site_free(site);
		return EXIT_USAGE;
	}
	push = has_role(site, o.controller, "push");
	/* pushd keeps the node in STATE_DIR/node; thingsd in STATE_DIR itself. */
	snprintf(node_dir, sizeof(node_dir), "%s/node", o.state_dir);
	if (!push && !exists(node_dir))
		snprintf(node_dir, sizeof(node_dir), "%s", o.state_dir);
	snprintf(journal_dir, sizeof(journal_dir), "%s", o.journal ? o.journal : "");
	if (!o.journal && push)
		snprintf(journal_dir, sizeof(journal_dir), "%s/journal", o.state_dir);
	rp.json = o.json;
	rp.items = json_array();
	if (!rp.items)
		return EXIT_FAILED;
	curl_global_init(CURL_GLOBAL_DEFAULT);

	{
		struct store_info si;
		int inspected = check_store(&rp, node_dir, &si);
		if (!strcmp(o.cmd, "check") && o.collector && inspected == 0 && !si.problem[0])
			check_against_collector(&rp, &o, site, node_dir, &si);
		if (!strcmp(o.cmd, "recover")) {
			rp.needs_recovery = false;
			if (recover_store(&rp, &o, site, node_dir, inspected, &si) < 0)
				rp.failed = true;
		}
	}
	if (journal_dir[0]) {
		bool before = rp.needs_recovery;
		check_journal(&rp, journal_dir, o.controller, &ji);
		if (!strcmp(o.cmd, "recover")) {
			rp.needs_recovery = before;
			if (recover_journal(&rp, &o, site, journal_dir) < 0)
				rp.failed = true;
		}
	}
	if (!strcmp(o.cmd, "check"))
		code = rp.needs_recovery ? EXIT_NEEDS_RECOVERY : 0;
	else
		code = rp.failed ? EXIT_FAILED : 0;
	if (rp.json) {
		json_t *root =
		    json_pack("{s:s,s:s,s:o,s:b,s:i}", "command", o.cmd, "controller", o.controller, "items",
		              rp.items, "needs_recovery", rp.needs_recovery, "exit", code);
		if (root)
			json_dumpf(root, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(root);
	} else {
		json_decref(rp.items);
		if (!strcmp(o.cmd, "check"))
			printf("%s\n", rp.needs_recovery
			                   ? "needs recovery: run thingsync-dr recover (see thingsync-dr(8))"
			                   : "nothing to recover");
	}
	curl_global_cleanup();
	tsync_site_free(site);
	return code;
}
