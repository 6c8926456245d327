/*
 * thingsync-forensicd: the report of a day (the seed's forensics report),
 * and report_command, which receives it on its stdin.
 *
 * What the report counts is read from the things' names and types, since
 * site.conf says nothing else about what a thing is (thingsync-forensicd(8),
 * "REPORT"): a bool whose name contains "armed" is an alarm being armed
 * (rises: times armed); another bool with "alarm" is an alarm going off
 * (rises: times triggered); a bool with "door" is a door (rises: times
 * opened); a bool with "heat" is heating (time on, in hours); an int or
 * float with "power" is a power in W (its integral: energy in Wh). Names
 * are compared without regard to case.
 *
 * The command runs without a shell (site.conf's report_command is split on
 * blanks when the site is loaded), in its own process group, with the
 * report on its stdin; the daemon waits for it for report_timeout_ms, then
 * kills the group. What it prints is read, kept to a short excerpt for the
 * log, and otherwise thrown away.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "forensicd.h"

#define OUTPUT_EXCERPT 512
/* Room left in a datagram for the envelope around an answer. */
#define ANSWER_OVERHEAD 400

/* --- the report -------------------------------------------------------------------- */

enum category { CAT_NONE, CAT_ARMED, CAT_ALARM, CAT_DOOR, CAT_HEATING, CAT_POWER };

static bool has(const char *name, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = name; *p; p++)
		if (!strncasecmp(p, word, n))
			return true;
	return false;
}

static enum category category_of(const char *thing, const char *type)
{
	if (!strcmp(type, "bool")) {
		if (has(thing, "armed"))
			return CAT_ARMED;
		if (has(thing, "alarm"))
			return CAT_ALARM;
		if (has(thing, "door"))
			return CAT_DOOR;
		if (has(thing, "heat"))
			return CAT_HEATING;
	} else if ((!strcmp(type, "int") || !strcmp(type, "float")) && has(thing, "power")) {
		return CAT_POWER;
	}
	return CAT_NONE;
}

struct build {
	json_t *armed, *alarm, *doors, *heating, *energy, *owners, *missing;
	json_int_t n_armed, n_alarm, n_doors, things;
	double heat_h, wh;
	size_t dlen;
};

static json_int_t jint(const json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

/* "c/DAY/OWNER/THING" -> cumul. */
static void build_cb(void *ud, const char *key, const char *value)
{
	struct build *b = ud;
	const char *owner = key + 2 + b->dlen + 1, *slash = strchr(owner, '/'), *thing;
	json_t *cum = json_loads(value, 0, NULL);
	const char *type = json_string_value(json_object_get(cum, "type"));
	char oname[256];

	if (!slash || !json_is_object(cum) || !type || (size_t)(slash - owner) >= sizeof(oname)) {
		json_decref(cum);
		return;
	}
	memcpy(oname, owner, (size_t)(slash - owner));
	oname[slash - owner] = '\0';
	thing = slash + 1;
	if (!json_object_get(b->owners, oname))
		json_object_set_new(b->owners, oname, json_integer(0));
	json_object_set_new(b->owners, oname, json_integer(jint(b->owners, oname) + 1));
	b->things++;
	switch (category_of(thing, type)) {
	case CAT_ARMED:
		b->n_armed += jint(cum, "rises");
		json_object_set_new(
		    b->armed, thing,
		    json_pack("{sIsI}", "times", jint(cum, "rises"), "on_ms", jint(cum, "on_ms")));
		break;
	case CAT_ALARM:
		b->n_alarm += jint(cum, "rises");
		json_object_set_new(
		    b->alarm, thing,
		    json_pack("{sIsI}", "times", jint(cum, "rises"), "on_ms", jint(cum, "on_ms")));
		break;
	case CAT_DOOR:
		b->n_doors += jint(cum, "rises");
		json_object_set_new(
		    b->doors, thing,
		    json_pack("{sIsI}", "opened", jint(cum, "rises"), "open_ms", jint(cum, "on_ms")));
		break;
	case CAT_HEATING: {
		double h = (double)jint(cum, "on_ms") / 3600e3;
		b->heat_h += h;
		json_object_set_new(b->heating, thing,
		                    json_pack("{sIsfsI}", "on_ms", jint(cum, "on_ms"), "hours", h, "starts",
		                              jint(cum, "rises")));
		break;
	}
	case CAT_POWER: {
		double wh = json_number_value(json_object_get(cum, "integral"));
		b->wh += wh;
		json_object_set_new(
		    b->energy, thing,
		    json_pack("{sfsO}", "wh", wh, "mean_w",
		              json_object_get(cum, "mean") ? json_object_get(cum, "mean") : json_null()));
		break;
	}
	case CAT_NONE:
		break;
	}
	json_decref(cum);
}

/* "m/DAY/OWNER" -> {"missing": [...]} */
static void missing_cb(void *ud, const char *key, const char *value)
{
	struct build *b = ud;
	json_t *m = json_loads(value, 0, NULL), *e;
	size_t i;

	json_array_foreach(json_object_get(m, "missing"), i, e)
	{
		char name[600];
		snprintf(name, sizeof(name), "%s/%s", key + 2 + b->dlen + 1,
		         json_string_value(e) ? json_string_value(e) : "?");
		json_array_append_new(b->missing, json_string(name));
	}
	json_decref(m);
}

static void text_section(struct buf *t, const char *title, json_t *items, const char *unit)
{
	const char *k;
	json_t *v;

	if (!json_object_size(items))
		return;
	if (title)
		buf__appendf(t, "%s\n", title);
	json_object_foreach(items, k, v)
	{
		if (!strcmp(unit, "times"))
			buf__appendf(t, "  %-24s %lld times, %.2f h on\n", k, (long long)jint(v, "times"),
			             (double)jint(v, "on_ms") / 3600e3);
		else if (!strcmp(unit, "opened"))
			buf__appendf(t, "  %-24s opened %lld times, open %.2f h\n", k,
			             (long long)jint(v, "opened"), (double)jint(v, "open_ms") / 3600e3);
		else if (!strcmp(unit, "hours"))
			buf__appendf(t, "  %-24s %.2f h\n", k, json_real_value(json_object_get(v, "hours")));
		else
			buf__appendf(t, "  %-24s %.3f Wh\n", k, json_real_value(json_object_get(v, "wh")));
	}
}

int report__build(struct forensicd *fd, const char *day, json_t **json, char **text)
{
	struct build b;
	struct buf t = {0};
	char from[32], to[32];
	json_t *j;
	int r;

	memset(&b, 0, sizeof(b));
	b.dlen = strlen(day);
	b.armed = json_object();
	b.alarm = json_object();
	b.doors = json_object();
	b.heating = json_object();
	b.energy = json_object();
	b.owners = json_object();
	b.missing = json_array();
	snprintf(from, sizeof(from), "c/%s/", day);
	snprintf(to, sizeof(to), "c/%s0", day); /* '0' follows '/' */
	r = forensicd__scan(fd, from, to, build_cb, &b);
	if (r == 0) {
		snprintf(from, sizeof(from), "m/%s/", day);
		snprintf(to, sizeof(to), "m/%s0", day);
		r = forensicd__scan(fd, from, to, missing_cb, &b);
	}
	if (r == 0 && b.things == 0 && json_array_size(b.missing) == 0)
		r = -ENOENT;
	j = r == 0 ? json_pack("{sssssos{sOsO}sOsOsOsIsOs{sIsIsIsfsf}}", "site", tsync_site_name(fd->site),
	                       "day", day, "timezone",
	                       fd->isite->timezone ? json_string(fd->isite->timezone) : json_null(), "alarms",
	                       "armed", b.armed, "triggered", b.alarm, "doors", b.doors, "heating", b.heating,
	                       "energy", b.energy, "things", b.things, "missing", b.missing, "totals",
	                       "armed", b.n_armed, "triggered", b.n_alarm, "doors_opened", b.n_doors,
	                       "heating_hours", b.heat_h, "energy_wh", b.wh)
	           : NULL;
	if (r == 0 && !j)
		r = -ENOMEM;
	if (r == 0) {
		buf__appendf(&t, "thingsync forensics report: site %s, %s (%s)\n\n",
		             tsync_site_name(fd->site), day,
		             fd->isite->timezone ? fd->isite->timezone : "local time");
		buf__appendf(&t, "Alarms: armed %lld times, triggered %lld times\n", (long long)b.n_armed,
		             (long long)b.n_alarm);
		text_section(&t, " armed", b.armed, "times");
		text_section(&t, " triggered", b.alarm, "times");
		buf__appendf(&t, "Doors: opened %lld times\n", (long long)b.n_doors);
		text_section(&t, NULL, b.doors, "opened");
		buf__appendf(&t, "Heating: %.2f h\n", b.heat_h);
		text_section(&t, NULL, b.heating, "hours");
		buf__appendf(&t, "Energy: %.3f Wh\n", b.wh);
		text_section(&t, NULL, b.energy, "wh");
		buf__appendf(&t, "\nCollected: %lld things from %zu owners", (long long)b.things,
		             json_object_size(b.owners));
		if (json_array_size(b.missing)) {
			size_t i;
			json_t *e;
			buf__appendf(&t, "; not kept by their owner:");
			json_array_foreach(b.missing, i, e) buf__appendf(&t, " %s", json_string_value(e));
		}
		if (buf__appendf(&t, "\n") < 0)
			r = -ENOMEM;
	}
	if (r == 0) {
		json_object_set(j, "owners", b.owners);
		*json = j;
		*text = t.data;
		t.data = NULL;
	} else {
		json_decref(j);
	}
	buf__free(&t);
	json_decref(b.armed);
	json_decref(b.alarm);
	json_decref(b.doors);
	json_decref(b.heating);
	json_decref(b.energy);
	json_decref(b.missing);
	json_decref(b.owners);
	return r;
}

static void last_cb(void *ud, const char *key, const char *value)
{
	char *out = ud;
	(void)value;
	if (strlen(key) >= 2 + DATE_LEN) {
		memcpy(out, key + 2, DATE_LEN);
		out[DATE_LEN] = '\0';
	}
}

int report__last_day(struct forensicd *fd, char out[DATE_LEN + 1])
{
	out[0] = '\0';
	forensicd__scan(fd, "m/", "m0", last_cb, out);
	return out[0] ? 0 : -ENOENT;
}

/* --- report_command -------------------------------------------------------------------- */

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fail(struct forensicd *fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct forensicd *fd, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fd->report.last_error, sizeof(fd->report.last_error), fmt, ap);
	va_end(ap);
	fd->report.failures++;
}

int report__run_command(struct forensicd *fd, const char *day, const char *text)
{
	char *const *argv = fd->isite->report_command;
	int in[2] = {-1, -1}, out[2] = {-1, -1}, status = 0;
	size_t len = strlen(text), sent = 0, got = 0;
	char excerpt[OUTPUT_EXCERPT + 1];
	int64_t deadline;
	pid_t pid, w = 0;
	bool timed_out = false;

	if (!argv || !argv[0])
		return 0;
	fd->report.runs++;
	fd->report.last_error[0] = '\0';
	fd->report.last_at_ms = forensicd__now_us() / 1000;
	snprintf(fd->report.last_day, sizeof(fd->report.last_day), "%s", day);
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
		fail(fd, "%s: cannot make pipes (%s)", argv[0], strerror(errno));
		goto leave;
	}
	pid = fork();
	if (pid < 0) {
		fail(fd, "%s: cannot fork (%s)", argv[0], strerror(errno));
		goto leave;
	}
	if (pid == 0) {
		/* The child: stdin from the report, stdout and stderr to us; its
		 * own process group, so a timeout kills what it started too. */
		setpgid(0, 0);
		signal(SIGPIPE, SIG_DFL);
		if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(out[1], 2) < 0)
			_exit(126);
		execv(argv[0], argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	in[0] = out[1] = -1;
	fcntl(in[1], F_SETFL, O_NONBLOCK);
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	deadline = mono_ms() + fd->isite->report_timeout_ms;
	excerpt[0] = '\0';
	while (out[0] >= 0 || in[1] >= 0) {
		struct pollfd p[2];
		int np = 0, left = (int)(deadline - mono_ms());
		if (left <= 0) {
			timed_out = true;
			break;
		}
		if (in[1] >= 0)
			p[np++] = (struct pollfd){in[1], POLLOUT, 0};
		if (out[0] >= 0)
			p[np++] = (struct pollfd){out[0], POLLIN, 0};
		if (poll(p, (nfds_t)np, left) < 0 && errno != EINTR)
			break;
		for (int i = 0; i < np; i++) {
			if (!p[i].revents)
				continue;
			if (p[i].fd == in[1]) {
				ssize_t n = write(in[1], text + sent, len - sent);
				if (n > 0)
					sent += (size_t)n;
				if ((n < 0 && errno != EAGAIN) || sent == len) {
					/* Done, or the command does not read: EOF either way. */
					close(in[1]);
					in[1] = -1;
				}
			} else {
				char b[4096];
				ssize_t n = read(out[0], b, sizeof(b));
				if (n > 0 && got < OUTPUT_EXCERPT) {
					size_t k = (size_t)n < OUTPUT_EXCERPT - got ? (size_t)n
					                                            : OUTPUT_EXCERPT - got;
					memcpy(excerpt + got, b, k);
					got += k;
					excerpt[got] = '\0';
				}
				if (n == 0 || (n < 0 && errno != EAGAIN)) {
					close(out[0]);
					out[0] = -1;
				}
			}
		}
	}
	/* Its output is closed: the command is ending; wait for it within the deadline. */
	while (!timed_out && (w = waitpid(pid, &status, WNOHANG)) == 0) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		if (mono_ms() >= deadline)
			timed_out = true;
		else
			nanosleep(&ts, NULL);
	}
	if (timed_out) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		fail(fd, "%s: timed out after %u ms, killed", argv[0],
		     (unsigned)fd->isite->report_timeout_ms);
	} else if (w < 0) {
		fail(fd, "%s: waitpid failed (%s)", argv[0], strerror(errno));
	} else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
		fail(fd, "%s: exit status %d", argv[0], WEXITSTATUS(status));
	} else if (WIFSIGNALED(status)) {
		fail(fd, "%s: killed by signal %d", argv[0], WTERMSIG(status));
	}
leave:
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (out[i] >= 0)
			close(out[i]);
	}
	if (fd->report.last_error[0]) {
		/* The logger escapes what the command printed. */
		log_error(&fd->log, "report of %s: report_command failed: %s%s%s", day, fd->report.last_error,
		          got ? "; it said: " : "", got ? excerpt : "");
		return -1;
	}
	log_info(&fd->log, "report of %s handed to %s (%zu bytes)", day, argv[0], len);
	return 0;
}

/* --- the seed's {"type":"cmd","role":"forensics","cmd":"report"} ---------------------------- */

int report__cmd(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct forensicd *fd = ud;
	json_t *msg = json_loads(req->json ? req->json : "{}", 0, NULL), *rep = NULL, *ans, *cmd = NULL;
	const char *day = json_string_value(json_object_get(msg, "day"));
	char d[DATE_LEN + 1], *text = NULL;
	int r;

	(void)node;
	if (!day)
		day = json_string_value(json_object_get(json_object_get(msg, "kwargs"), "day"));
	if (day && !forensicd__valid_date(day)) {
		json_decref(msg);
		return TSYNC_ECMD_ARGS;
	}
	if (day)
		snprintf(d, sizeof(d), "%s", day);
	json_decref(msg);
	if (!day && report__last_day(fd, d) < 0)
		return TSYNC_EVALUE; /* nothing collected yet */
	r = report__build(fd, d, &rep, &text);
	if (r == -ENOENT)
		return TSYNC_EVALUE;
	if (r < 0)
		return r;
	if (fd->isite->report_command) {
		int rc = report__run_command(fd, d, text);
		cmd = json_pack("{sbss?}", "ok", rc == 0, "error", rc == 0 ? NULL : fd->report.last_error);
	}
	/* The answer travels in one datagram: the whole report and its text
	 * when they fit, else the day's totals and what became of
	 * report_command (the whole report is GET /v1/report?day=DAY). */
	ans = json_pack("{sssOsssO?}", "day", d, "report", rep, "text", text, "report_command", cmd);
	*result = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
	if (*result && strlen(*result) + ANSWER_OVERHEAD > fd->isite->max_datagram) {
		free(*result);
		json_decref(ans);
		ans = json_pack("{sssOsIsO?}", "day", d, "totals", json_object_get(rep, "totals"),
		                "text_bytes", (json_int_t)strlen(text), "report_command", cmd);
		*result = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
	}
	json_decref(ans);
	json_decref(rep);
	json_decref(cmd);
	free(text);
	return *result ? 0 : -ENOMEM;
}
