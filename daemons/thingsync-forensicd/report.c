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
 * report on its stdin, beside the event loop (the mesh and HTTP are served
 * meanwhile); after report_timeout_ms its group is killed. The mesh's
 * report command is answered when the command ends (a deferred answer,
 * tsync_request_defer()), with its outcome, which is also in /v1/status
 * and the log. What it prints is read, kept to a short excerpt for the
 * log and the answer, and otherwise thrown away.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

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

static void fail(struct forensicd *fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct forensicd *fd, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fd->report.last_error, sizeof(fd->report.last_error), fmt, ap);
	va_end(ap);
	fd->report.failures++;
}

/*
 * report_command runs beside the event loop: its stdin is fed and its
 * output read by events on non-blocking pipes, its end seen by SIGCHLD
 * (waitpid), a timer kills its group at report_timeout_ms. The mesh and
 * HTTP are served meanwhile. One run at a time.
 */
struct report_job {
	struct forensicd *fd;
	pid_t pid;
	int in, out; /* our ends; -1 once closed */
	struct event *in_ev, *out_ev, *timer_ev;
	char *text;
	size_t len, sent, got;
	char excerpt[OUTPUT_EXCERPT + 1];
	char day[DATE_LEN + 1];
	bool exited;
	int status;
	/* The mesh command that started it, answered when it ends (NULL:
	 * started otherwise, or that answer was given), with the answer's
	 * parts: the whole report, and the day's totals if that does not fit. */
	tsync_node *node;
	tsync_deferred *answer;
	json_t *full, *brief;
	uint64_t run;
};

static char *answer_text(struct forensicd *fd, json_t *full, json_t *brief, json_t *cmd);
static json_t *outcome(struct report_job *j, bool timed_out);

static void job_close(int *fdp, struct event **ev)
{
	if (*ev)
		event_free(*ev);
	*ev = NULL;
	if (*fdp >= 0)
		close(*fdp);
	*fdp = -1;
}

/* The run is over (it exited and its output is closed, or it timed out). */
static void job_finish(struct report_job *j, bool timed_out)
{
	struct forensicd *fd = j->fd;
	const char *prog = fd->isite->report_command[0];

	if (timed_out && !j->exited) {
		kill(-j->pid, SIGKILL);
		kill(j->pid, SIGKILL);
		waitpid(j->pid, &j->status, 0);
		fail(fd, "%s: timed out after %u ms, killed", prog, (unsigned)fd->isite->report_timeout_ms);
	} else if (timed_out) {
		/* It exited, but what it started still holds its output. */
		kill(-j->pid, SIGKILL);
		fail(fd, "%s: timed out after %u ms, killed", prog, (unsigned)fd->isite->report_timeout_ms);
	} else if (WIFEXITED(j->status) && WEXITSTATUS(j->status) != 0) {
		fail(fd, "%s: exit status %d", prog, WEXITSTATUS(j->status));
	} else if (WIFSIGNALED(j->status)) {
		fail(fd, "%s: killed by signal %d", prog, WTERMSIG(j->status));
	}
	if (fd->report.last_error[0])
		/* The logger escapes what the command printed. */
		log_error(&fd->log, "report of %s: report_command failed: %s%s%s", j->day, fd->report.last_error,
		          j->got ? "; it said: " : "", j->got ? j->excerpt : "");
	else
		log_info(&fd->log, "report of %s handed to %s (%zu bytes)", j->day, prog, j->len);
	if (j->answer) {
		json_t *cmd = outcome(j, timed_out);
		char *text = answer_text(fd, j->full, j->brief, cmd);
		int r = tsync_request_answer(j->node, j->answer, text ? 0 : -ENOMEM, text);
		if (r < 0)
			log_warn(&fd->log, "report of %s: the command's answer was not sent: %s", j->day,
			         tsync_strerror(r));
		free(text);
		json_decref(cmd);
	}
	json_decref(j->full);
	json_decref(j->brief);
	job_close(&j->in, &j->in_ev);
	job_close(&j->out, &j->out_ev);
	if (j->timer_ev)
		event_free(j->timer_ev);
	free(j->text);
	fd->report.running = false;
	fd->report_job = NULL;
	free(j);
}

static void job_in_cb(evutil_socket_t s, short what, void *arg)
{
	struct report_job *j = arg;
	ssize_t n = write(j->in, j->text + j->sent, j->len - j->sent);

	(void)s;
	(void)what;
	if (n > 0)
		j->sent += (size_t)n;
	if ((n < 0 && errno != EAGAIN && errno != EINTR) || j->sent == j->len)
		/* Done, or the command does not read: EOF either way. */
		job_close(&j->in, &j->in_ev);
}

static void job_out_cb(evutil_socket_t s, short what, void *arg)
{
	struct report_job *j = arg;
	char b[4096];
	ssize_t n = read(j->out, b, sizeof(b));

	(void)s;
	(void)what;
	if (n > 0 && j->got < OUTPUT_EXCERPT) {
		size_t k = (size_t)n < OUTPUT_EXCERPT - j->got ? (size_t)n : OUTPUT_EXCERPT - j->got;
		memcpy(j->excerpt + j->got, b, k);
		j->got += k;
		j->excerpt[j->got] = '\0';
	}
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		job_close(&j->out, &j->out_ev);
		if (j->exited)
			job_finish(j, false);
	}
}

static void job_timer_cb(evutil_socket_t s, short what, void *arg)
{
	(void)s;
	(void)what;
	job_finish(arg, true);
}

void report__child(struct forensicd *fd)
{
	struct report_job *j = fd->report_job;

	if (!j || j->exited || waitpid(j->pid, &j->status, WNOHANG) != j->pid)
		return;
	j->exited = true;
	if (j->out < 0)
		job_finish(j, false);
}

void report__stop(struct forensicd *fd)
{
	struct report_job *j = fd->report_job;

	if (!j)
		return;
	log_warn(&fd->log, "stopping: report_command of %s killed", j->day);
	if (!j->exited) {
		kill(-j->pid, SIGKILL);
		kill(j->pid, SIGKILL);
		waitpid(j->pid, &j->status, 0);
		j->exited = true;
	}
	fail(fd, "%s: killed, the daemon stopped", fd->isite->report_command[0]);
	job_finish(j, false);
}

int report__run_command(struct forensicd *fd, const char *day, const char *text)
{
	char *const *argv = fd->isite->report_command;
	int in[2] = {-1, -1}, out[2] = {-1, -1};
	struct report_job *j = NULL;
	struct timeval tv;
	pid_t pid;

	if (!argv || !argv[0])
		return 0;
	if (fd->report_job) {
		log_warn(&fd->log, "report of %s: report_command still runs for %s: not started", day,
		         fd->report_job->day);
		return -EBUSY;
	}
	fd->report.runs++;
	fd->report.last_error[0] = '\0';
	fd->report.last_at_ms = forensicd__now_us() / 1000;
	snprintf(fd->report.last_day, sizeof(fd->report.last_day), "%s", day);
	j = calloc(1, sizeof(*j));
	if (!j || !(j->text = strdup(text))) {
		free(j);
		fail(fd, "%s: out of memory", argv[0]);
		return -1;
	}
	j->fd = fd;
	j->in = j->out = -1;
	j->len = strlen(text);
	snprintf(j->day, sizeof(j->day), "%s", day);
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
		fail(fd, "%s: cannot make pipes (%s)", argv[0], strerror(errno));
		goto fail;
	}
	pid = fork();
	if (pid < 0) {
		fail(fd, "%s: cannot fork (%s)", argv[0], strerror(errno));
		goto fail;
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
	j->pid = pid;
	j->in = in[1];
	j->out = out[0];
	fcntl(j->in, F_SETFL, O_NONBLOCK);
	fcntl(j->out, F_SETFL, O_NONBLOCK);
	j->in_ev = event_new(fd->base, j->in, EV_WRITE | EV_PERSIST, job_in_cb, j);
	j->out_ev = event_new(fd->base, j->out, EV_READ | EV_PERSIST, job_out_cb, j);
	j->timer_ev = evtimer_new(fd->base, job_timer_cb, j);
	fd->report_job = j;
	fd->report.running = true;
	tv.tv_sec = fd->isite->report_timeout_ms / 1000;
	tv.tv_usec = (suseconds_t)(fd->isite->report_timeout_ms % 1000) * 1000;
	if (!j->in_ev || !j->out_ev || !j->timer_ev || event_add(j->in_ev, NULL) < 0 ||
	    event_add(j->out_ev, NULL) < 0 || evtimer_add(j->timer_ev, &tv) < 0) {
		/* Cannot watch it: it is killed and reported at once. */
		job_finish(j, true);
		return -1;
	}
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (out[i] >= 0)
			close(out[i]);
	}
	free(j->text);
	free(j);
	log_error(&fd->log, "report of %s: report_command failed: %s", day, fd->report.last_error);
	return -1;
}

/* What became of a run, for the mesh answer: how it ended and the start of
 * what it printed (printable ASCII only, at most OUTPUT_EXCERPT bytes). */
static json_t *outcome(struct report_job *j, bool timed_out)
{
	struct forensicd *fd = j->fd;
	char out[OUTPUT_EXCERPT + 1];
	json_t *o;

	for (size_t i = 0; i < j->got; i++) {
		char ch = j->excerpt[i];
		out[i] = (ch >= 0x20 && ch < 0x7f) || ch == '\n' ? ch : '?';
	}
	out[j->got] = '\0';
	o = json_pack("{sbsIsbss?ss}", "started", true, "run", (json_int_t)j->run, "ok",
	              !fd->report.last_error[0], "error",
	              fd->report.last_error[0] ? fd->report.last_error : NULL, "output", out);
	if (!o)
		return NULL;
	if (!timed_out && WIFEXITED(j->status))
		json_object_set_new(o, "exit_status", json_integer(WEXITSTATUS(j->status)));
	else if (!timed_out && WIFSIGNALED(j->status))
		json_object_set_new(o, "signal", json_integer(WTERMSIG(j->status)));
	json_object_set_new(o, "timed_out", json_boolean(timed_out));
	return o;
}

/* The answer travels in one datagram: the whole report and its text when
 * they fit, else the day's totals (the whole report is GET
 * /v1/report?day=DAY), else without what the command printed. */
static char *answer_text(struct forensicd *fd, json_t *full, json_t *brief, json_t *cmd)
{
	json_t *parts[] = {full, brief, brief};
	char *text = NULL;

	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		json_t *ans = json_copy(parts[i]);
		if (!ans)
			return NULL;
		if (cmd) {
			json_t *c = json_copy(cmd);
			if (i == 2)
				json_object_del(c, "output");
			json_object_set_new(ans, "report_command", c);
		}
		text = json_dumps(ans, JSON_COMPACT);
		json_decref(ans);
		if (!text || strlen(text) + ANSWER_OVERHEAD <= fd->isite->max_datagram)
			return text;
		free(text);
		text = NULL;
	}
	return NULL;
}

int report__cmd(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct forensicd *fd = ud;
	json_t *msg = json_loads(req->json ? req->json : "{}", 0, NULL), *rep = NULL, *cmd = NULL;
	json_t *full = NULL, *brief = NULL;
	const char *day = json_string_value(json_object_get(msg, "day"));
	char d[DATE_LEN + 1], *text = NULL;
	tsync_deferred *later = NULL;
	int r, rc;

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
	full = json_pack("{sssOss}", "day", d, "report", rep, "text", text);
	brief = json_pack("{sssOsI}", "day", d, "totals", json_object_get(rep, "totals"), "text_bytes",
	                  (json_int_t)strlen(text));
	r = full && brief ? 0 : -ENOMEM;
	if (r == 0 && fd->isite->report_command) {
		/* Answered when the command ends, with its outcome (also in
		 * /v1/status and the log); at once if it cannot start, or if
		 * the answer cannot wait (then: whether it started). Deferred
		 * before it starts, so that a restart meanwhile answers
		 * "outcome unknown" rather than running it twice. */
		if (!fd->report_job && tsync_request_defer(node, req, &later) < 0)
			later = NULL;
		rc = report__run_command(fd, d, text);
		if (rc == 0 && later) {
			fd->report_job->node = node;
			fd->report_job->answer = later;
			fd->report_job->full = full;
			fd->report_job->brief = brief;
			fd->report_job->run = fd->report.runs;
			json_decref(rep);
			free(text);
			return TSYNC_DEFERRED;
		}
		cmd = json_pack("{sbss?sI}", "started", rc == 0, "error",
		                rc == -EBUSY ? "busy: the previous run has not ended"
		                : rc == 0    ? NULL
		                             : fd->report.last_error,
		                "run", (json_int_t)fd->report.runs);
	}
	*result = r == 0 ? answer_text(fd, full, brief, cmd) : NULL;
	json_decref(full);
	json_decref(brief);
	json_decref(rep);
	json_decref(cmd);
	free(text);
	if (later) {
		/* Deferred, but the command did not start: answered now. */
		tsync_request_answer(node, later, *result ? 0 : -ENOMEM, *result);
		free(*result);
		*result = NULL;
		return TSYNC_DEFERRED;
	}
	return *result ? 0 : -ENOMEM;
}
