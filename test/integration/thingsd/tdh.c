/*
 * thingsd integration tests: the harness (see tdh.h).
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <thingsync/thingsync.h>

#include "harness.h"
#include "httpd.h"
#include "tdh.h"

extern char **environ;

static const char *env_or_die(const char *name)
{
	const char *v = getenv(name);
	if (!v)
		fail_msg("%s is not set (run through meson test)", name);
	return v;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap(void)
{
	struct timespec ts = {0, 20 * 1000 * 1000};
	nanosleep(&ts, NULL);
}

bool tdh_wait(tdh_pred pred, void *ud, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;
	bool ok;

	while (!(ok = pred(ud)) && now_ms() < end)
		nap();
	return ok;
}

void tdh_write(const char *path, const char *text)
{
	char tmp[600];
	FILE *f;

	/* Whole or not at all: a poller never sees half a file. */
	snprintf(tmp, sizeof(tmp), "%s.tdh-tmp", path);
	f = fopen(tmp, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(rename(tmp, path), 0);
}

char *tdh_read(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (!f)
		return NULL;
	do {
		if (len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		n = fread(buf + len, 1, 4096, f);
		len += n;
	} while (n > 0);
	fclose(f);
	buf[len] = '\0';
	return buf;
}

char *tdh_path(struct tdh *t, const char *name)
{
	char *p = NULL;
	assert_true(asprintf(&p, "%s/%s", t->dir, name) > 0);
	return p;
}

/* Ports for the daemons: harness_port() (a shared block below the ephemeral range). */
uint16_t tdh_tcp_port(void)
{
	return harness_port();
}

pid_t tdh_spawn(const char *const *argv, const char *log)
{
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int r;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	r = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		fail_msg("cannot start %s: %s", argv[0], strerror(r));
	return pid;
}

static char *replace_dir(const char *text, const char *dir)
{
	size_t n = 0, dl = strlen(dir);
	const char *p;
	char *out, *o;

	for (p = text; (p = strstr(p, "@DIR@")); p += 5)
		n++;
	out = malloc(strlen(text) + n * dl + 1);
	assert_non_null(out);
	for (o = out, p = text;;) {
		const char *q = strstr(p, "@DIR@");
		if (!q) {
			strcpy(o, p);
			break;
		}
		memcpy(o, p, (size_t)(q - p));
		o += q - p;
		memcpy(o, dir, dl);
		o += dl;
		p = q + 5;
	}
	return out;
}

char *tdh_site_text(struct tdh *t, const char *things)
{
	char *text = NULL, *body = replace_dir(things ? things : "", t->dir);
	size_t cap = 4096 + strlen(body), len;

	text = malloc(cap);
	assert_non_null(text);
	len = (size_t)snprintf(text, cap, "[site]\nname = tdtest\nkey_file = site.key\n%s\n",
	                       t->site_keys ? t->site_keys
	                                    : "retry_min_ms = 10\nretry_initial_ms = 50\nretry_max_ms = 400\n"
	                                      "down_after_ms = 1500\n");
	for (int i = 0; i < t->n; i++)
		len += (size_t)snprintf(
		    text + len, cap - len,
		    "[controller %s]\nhost = 127.0.0.1\nudp_port = %u\ntcp_port = %u\nroles = %s\n\n",
		    t->c[i].name, t->c[i].udp, t->c[i].tcp, t->roles[i] ? t->roles[i] : "cmd_do");
	snprintf(text + len, cap - len, "%s", body);
	free(body);
	return text;
}

void tdh_write_site(struct tdh *t)
{
	char *text = tdh_site_text(t, t->things);
	tdh_write(t->site, text);
	for (int i = 0; i < t->n; i++)
		tdh_write(t->c[i].conf, text);
	free(text);
}

void tdh_write_conf(struct tdh *t, int i, const char *text)
{
	tdh_write(t->c[i].conf, text);
}

void tdh_init(struct tdh *t, const char *tag, int n, const char *const *names, const char *const *roles,
              const char *things)
{
	char *key;

	memset(t, 0, sizeof(*t));
	assert_true(n <= TDH_MAX);
	t->dir = harness_tmpdir(tag);
	t->n = n;
	t->things = things;
	for (int i = 0; i < n; i++) {
		t->c[i].name = names[i];
		t->c[i].udp = tdh_tcp_port();
		t->c[i].tcp = tdh_tcp_port();
		t->roles[i] = roles ? roles[i] : NULL;
		assert_true(asprintf(&t->c[i].state, "%s/state-%s", t->dir, names[i]) > 0);
		assert_true(asprintf(&t->c[i].log, "%s/%s.log", t->dir, names[i]) > 0);
		assert_true(asprintf(&t->c[i].conf, "%s/%s.conf", t->dir, names[i]) > 0);
	}
	key = tdh_path(t, "site.key");
	assert_int_equal(tsync_key_generate(key), 0);
	free(key);
	t->site = tdh_path(t, "site.conf");
	tdh_write_site(t);
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

int tdh_index(struct tdh *t, const char *name)
{
	for (int i = 0; i < t->n; i++)
		if (!strcmp(t->c[i].name, name))
			return i;
	fail_msg("no controller %s", name);
	return -1;
}

struct up_wait {
	struct tdh *t;
	int i;
	bool exited;
	int status;
};

static bool is_up(void *ud)
{
	struct up_wait *w = ud;
	char *body = NULL;
	long code;

	if (waitpid(w->t->c[w->i].pid, &w->status, WNOHANG) == w->t->c[w->i].pid) {
		w->exited = true;
		return true;
	}
	code = tdh_http(w->t, w->i, "GET", "/status", NULL, NULL, &body);
	free(body);
	return code == 200 || code == 401;
}

static void dump_log(struct tdh *t, int i)
{
	char *log = tdh_read(t->c[i].log);
	fprintf(stderr, "---- %s log ----\n%s---- end ----\n", t->c[i].name, log ? log : "(none)\n");
	free(log);
}

void tdh_start(struct tdh *t, int i)
{
	const char *argv[32];
	struct up_wait w = {t, i, false, 0};
	int k = 0;

	argv[k++] = env_or_die("THINGSD");
	argv[k++] = "-c";
	argv[k++] = t->c[i].conf;
	argv[k++] = "-n";
	argv[k++] = t->c[i].name;
	argv[k++] = "-s";
	argv[k++] = t->c[i].state;
	if (getenv("THINGSYNC_TEST_LOG"))
		argv[k++] = "-v";
	for (char **e = t->c[i].extra; e && *e && k < 30; e++)
		argv[k++] = *e;
	argv[k] = NULL;
	t->c[i].pid = tdh_spawn(argv, t->c[i].log);
	if (!tdh_wait(is_up, &w, TDH_WAIT_MS) || w.exited) {
		dump_log(t, i);
		t->c[i].pid = 0;
		fail_msg("%s did not come up (%s)", t->c[i].name, w.exited ? "it exited" : "no answer");
	}
}

void tdh_start_all(struct tdh *t)
{
	for (int i = 0; i < t->n; i++)
		tdh_start(t, i);
}

static bool reaped(struct tdh *t, int i, int *status)
{
	int64_t end = now_ms() + TDH_WAIT_MS;

	while (now_ms() < end) {
		pid_t r = waitpid(t->c[i].pid, status, WNOHANG);
		if (r == t->c[i].pid)
			return true;
		nap();
	}
	return false;
}

void tdh_stop(struct tdh *t, int i)
{
	int status = 0;

	if (!t->c[i].pid)
		return;
	kill(t->c[i].pid, SIGTERM);
	if (!reaped(t, i, &status)) {
		kill(t->c[i].pid, SIGKILL);
		waitpid(t->c[i].pid, &status, 0);
		t->c[i].pid = 0;
		dump_log(t, i);
		fail_msg("%s did not stop on SIGTERM", t->c[i].name);
	}
	t->c[i].pid = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		dump_log(t, i);
		fail_msg("%s stopped with status 0x%x", t->c[i].name, status);
	}
}

/* Whether the port can be bound on 127.0.0.1 as the daemon binds it (TCP with
 * SO_REUSEADDR, as httpd does: the killed one's connections linger). */
static bool bindable(uint16_t port, int type)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0), one = 1;
	bool ok;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (type == SOCK_STREAM)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	ok = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

static bool ports_free(void *ud)
{
	const struct tdh_ctrl *c = ud;
	return (!c->udp || bindable(c->udp, SOCK_DGRAM)) && (!c->tcp || bindable(c->tcp, SOCK_STREAM));
}

void tdh_kill9(struct tdh *t, int i)
{
	int status;

	/* Not running (a start that failed): kill(0) would kill the test. */
	if (t->c[i].pid <= 0)
		return;
	kill(t->c[i].pid, SIGKILL);
	waitpid(t->c[i].pid, &status, 0);
	t->c[i].pid = 0;
	/* Its sockets are gone once no process holds them: a program it was
	 * spawning at the kill (a driver's, between fork and exec) holds copies
	 * for a moment, and a start at once then found its port in use. */
	if (!tdh_wait(ports_free, &t->c[i], TDH_WAIT_MS))
		fail_msg("%s's ports %u/%u still in use after its kill -9", t->c[i].name, t->c[i].udp,
		         t->c[i].tcp);
}

void tdh_fini(struct tdh *t)
{
	bool keep = getenv("TDH_KEEP") != NULL;

	for (int i = 0; i < t->n; i++) {
		if (t->c[i].pid) {
			int status;
			kill(t->c[i].pid, SIGTERM);
			if (!reaped(t, i, &status)) {
				kill(t->c[i].pid, SIGKILL);
				waitpid(t->c[i].pid, &status, 0);
			}
			t->c[i].pid = 0;
		}
		free(t->c[i].state);
		free(t->c[i].log);
		free(t->c[i].conf);
	}
	if (keep)
		fprintf(stderr, "kept %s\n", t->dir);
	else
		harness_rmdir(t->dir);
	free(t->dir);
	free(t->site);
	curl_global_cleanup();
}

/* --- HTTP ------------------------------------------------------------------------- */

static long http_do(struct tdh *t, int i, const char *method, const char *path, const char *body,
                    const char *sign_for, const char *const *headers, char **out)
{
	struct curl_slist *h = NULL;
	tsync_site *site = NULL;
	char base[64];
	long code;

	snprintf(base, sizeof(base), "http://127.0.0.1:%u", t->c[i].tcp);
	/* Signed with the site key, as thingsctl signs (httpd.h). */
	if (sign_for)
		assert_int_equal(tsync_site_load(t->site, &site, NULL), 0);
	for (; headers && *headers; headers++)
		h = curl_slist_append(h, *headers);
	code = harness_http(base, method, path, body, site, sign_for, h, 60000L, out);
	curl_slist_free_all(h);
	tsync_site_free(site);
	return code;
}

long tdh_http(struct tdh *t, int i, const char *method, const char *path, const char *body, const char *sign_for,
              char **out)
{
	return http_do(t, i, method, path, body, sign_for, NULL, out);
}

long tdh_http_h(struct tdh *t, int i, const char *method, const char *path, const char *body,
                const char *const *headers, char **out)
{
	return http_do(t, i, method, path, body, NULL, headers, out);
}

static char *format_json(json_t *v)
{
	char *s = NULL;

	if (!v || json_is_null(v))
		s = strdup("-");
	else if (json_is_boolean(v))
		s = strdup(json_is_true(v) ? "1" : "0");
	else if (json_is_integer(v))
		assert_true(asprintf(&s, "%lld", (long long)json_integer_value(v)) > 0);
	else if (json_is_real(v))
		assert_true(asprintf(&s, "%.15g", json_real_value(v)) > 0);
	else if (json_is_string(v))
		s = strdup(json_string_value(v));
	else
		s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	return s;
}

char *tdh_json_get(const char *json, const char *dotted)
{
	json_error_t jerr;
	json_t *root = json ? json_loads(json, JSON_DECODE_ANY, &jerr) : NULL, *v = root;
	char *path = strdup(dotted), *save = NULL, *out;

	for (char *k = strtok_r(path, ".", &save); k && v; k = strtok_r(NULL, ".", &save))
		v = json_is_array(v) ? json_array_get(v, strtoul(k, NULL, 10)) : json_object_get(v, k);
	out = v ? format_json(v) : NULL;
	free(path);
	json_decref(root);
	return out;
}

char *tdh_value(struct tdh *t, int i, const char *thing)
{
	char path[128], *body = NULL, *v;

	snprintf(path, sizeof(path), "/things/%s", thing);
	if (tdh_http(t, i, "GET", path, NULL, NULL, &body) != 200) {
		free(body);
		return NULL;
	}
	v = tdh_json_get(body, "value");
	free(body);
	return v;
}

struct value_wait {
	struct tdh *t;
	int i;
	const char *thing, *want;
};

static bool value_is(void *ud)
{
	struct value_wait *w = ud;
	char *v = tdh_value(w->t, w->i, w->thing);
	bool ok = v && !strcmp(v, w->want);

	free(v);
	return ok;
}

bool tdh_wait_value(struct tdh *t, int i, const char *thing, const char *want)
{
	struct value_wait w = {t, i, thing, want};
	bool ok = tdh_wait(value_is, &w, TDH_WAIT_MS);

	if (!ok) {
		char *v = tdh_value(t, i, thing);
		fprintf(stderr, "%s: %s is %s, waited for %s\n", t->c[i].name, thing, v ? v : "(none)", want);
		free(v);
	}
	return ok;
}

bool tdh_log_has(struct tdh *t, int i, const char *needle)
{
	char *log = tdh_read(t->c[i].log);
	bool yes = log && strstr(log, needle);

	free(log);
	return yes;
}

struct log_wait {
	struct tdh *t;
	int i;
	const char *needle;
};

static bool log_pred(void *ud)
{
	struct log_wait *w = ud;
	return tdh_log_has(w->t, w->i, w->needle);
}

bool tdh_wait_log(struct tdh *t, int i, const char *needle)
{
	struct log_wait w = {t, i, needle};
	bool ok = tdh_wait(log_pred, &w, TDH_WAIT_MS);

	if (!ok) {
		fprintf(stderr, "%s's log never had '%s'\n", t->c[i].name, needle);
		dump_log(t, i);
	}
	return ok;
}

int tdh_log_count(struct tdh *t, int i, const char *needle)
{
	char *log = tdh_read(t->c[i].log);
	int n = 0;

	for (char *p = log; p && (p = strstr(p, needle)); p += strlen(needle))
		n++;
	free(log);
	return n;
}

/* --- thingsctl ------------------------------------------------------------------------ */

int tdh_ctlv(struct tdh *t, char **out, char **err, const char *const *args)
{
	const char *argv[64];
	char *outp = tdh_path(t, "ctl.out"), *errp = tdh_path(t, "ctl.err");
	posix_spawn_file_actions_t fa;
	int k = 0, status;
	pid_t pid;

	argv[k++] = env_or_die("THINGSCTL");
	argv[k++] = "-c";
	argv[k++] = t->site;
	for (; *args && k < 62; args++)
		argv[k++] = *args;
	argv[k] = NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	posix_spawn_file_actions_addopen(&fa, 2, errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_int_equal(posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (out)
		*out = tdh_read(outp);
	if (err)
		*err = tdh_read(errp);
	if (getenv("THINGSYNC_TEST_LOG")) {
		char *o = tdh_read(outp), *e = tdh_read(errp);
		fprintf(stderr, "thingsctl");
		for (int j = 3; argv[j]; j++)
			fprintf(stderr, " %s", argv[j]);
		fprintf(stderr, " -> %d\n%s%s", WIFEXITED(status) ? WEXITSTATUS(status) : -1, o ? o : "",
		        e ? e : "");
		free(o);
		free(e);
	}
	free(outp);
	free(errp);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int tdh_ctl(struct tdh *t, char **out, char **err, ...)
{
	const char *args[60];
	va_list ap;
	int k = 0;

	va_start(ap, err);
	while (k < 59 && (args[k] = va_arg(ap, const char *)))
		k++;
	va_end(ap);
	args[k] = NULL;
	return tdh_ctlv(t, out, err, args);
}

struct tdh *tdh_new_started(const char *tag, int n, const char *const *names, const char *const *roles,
                            const char *things)
{
	struct tdh *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	tdh_init(t, tag, n, names, roles, things);
	tdh_start_all(t);
	return t;
}

int tdh_teardown(void **state)
{
	struct tdh *t = *state;

	for (int i = 0; i < t->n; i++)
		tdh_stop(t, i);
	tdh_fini(t);
	free(t);
	return 0;
}
