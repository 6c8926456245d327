/*
 * Integration-test harness (see harness.h).
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "curlev.h"
#include "harness.h"
#include "httpd.h"

char *harness_tmpdir(const char *tag)
{
	char *d = malloc(256);
	if (!d)
		abort();
	snprintf(d, 256, "/tmp/tsync-%s-XXXXXX", tag);
	if (!mkdtemp(d))
		abort();
	return d;
}

void harness_rmdir(const char *dir)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

static bool port_free(uint16_t port)
{
	struct sockaddr_in sa;
	int fd;
	bool ok = true;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons(port);
	for (int type = 0; type < 2 && ok; type++) {
		fd = socket(AF_INET, type ? SOCK_STREAM : SOCK_DGRAM, 0);
		ok = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		if (fd >= 0)
			close(fd);
	}
	return ok;
}

/*
 * Ports for the daemons, free for TCP and UDP. They come from a block below
 * the kernel's ephemeral range (32768-60999 by default), handed out in turn
 * under a lock shared by every test process (normal and sanitizer builds,
 * and test/browser/ports.js, run side by side), so two tests never get the
 * same port, and no client socket's ephemeral port takes one between the
 * choice and the daemon's bind - nor while a daemon killed with -9 is
 * restarted on it, which a port the kernel picked could not promise.
 */
uint16_t harness_port(void)
{
	enum { LOW = 15000, SPAN = 15000 };
	unsigned next = 0;
	char buf[32], path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/tmp/thingsync-tdh-ports-%u", (unsigned)getuid());
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || flock(fd, LOCK_EX) < 0)
		abort();
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n > 0) {
		buf[n] = '\0';
		next = (unsigned)strtoul(buf, NULL, 10);
	}
	if (next < LOW || next >= LOW + SPAN)
		next = LOW + (unsigned)getpid() % SPAN;
	for (int tries = 0; tries < SPAN && !port_free((uint16_t)next); tries++)
		next = next + 1 >= LOW + SPAN ? LOW : next + 1;
	n = snprintf(buf, sizeof(buf), "%u\n", next + 1 >= LOW + SPAN ? LOW : next + 1);
	if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n)
		abort();
	flock(fd, LOCK_UN);
	close(fd);
	return (uint16_t)next;
}

void harness_ports(uint16_t *ports, int n)
{
	for (int i = 0; i < n; i++)
		ports[i] = harness_port();
}

int harness_stop(pid_t *pid, int sig)
{
	int status = 0;

	if (*pid <= 0)
		return 0;
	kill(*pid, sig);
	if (waitpid(*pid, &status, 0) != *pid)
		abort();
	*pid = 0;
	return status;
}

void harness_print_log(const char *dir, const char *name)
{
	char cmd[800];

	snprintf(cmd, sizeof(cmd), "echo '--- %s (tail)'; tail -n 40 '%s/%s' 1>&2", name, dir, name);
	if (system(cmd) != 0)
		fprintf(stderr, "(no %s)\n", name);
}

char *harness_write(const char *dir, const char *name, const char *text)
{
	char *path = malloc(512);
	FILE *f;

	if (!path)
		abort();
	snprintf(path, 512, "%s/%s", dir, name);
	f = fopen(path, "w");
	if (!f)
		abort();
	fputs(text, f);
	fclose(f);
	return path;
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool harness_run_until(struct event_base *base, harness_pred pred, void *ud, int timeout_ms)
{
	struct timeval tv = {0, 5000};
	struct event *wake = event_new(base, -1, EV_PERSIST, wake_cb, NULL);
	int64_t end = now_ms() + timeout_ms;
	bool ok;

	event_add(wake, &tv);
	while (!(ok = pred(ud)) && now_ms() < end)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(wake);
	return ok;
}

void harness_log(void *ud, tsync_log_level level, const char *line)
{
	if (getenv("THINGSYNC_TEST_LOG"))
		fprintf(stderr, "[%s] %s\n", tsync_log_level_name(level), line);
}

pid_t harness_spawn(const char *dir, const char *logname, const char *const argv[])
{
	char log[700];
	pid_t pid;

	snprintf(log, sizeof(log), "%s/%s", dir, logname);
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		abort();
	if (pid == 0) {
		/* Never outlive the test, whatever happens to it. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (!getenv("THINGSYNC_TEST_LOG")) {
			int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
			}
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

long harness_http(const char *base, const char *method, const char *target, const char *body,
                  const tsync_site *site, const char *sign_for, const struct curl_slist *headers,
                  long timeout_ms, char **out)
{
	CURL *c = curl_easy_init();
	struct curl_slist *h = NULL;
	struct curlev_body s = {NULL, 0};
	char *url = NULL;
	long status = 0;

	if (!c || asprintf(&url, "%s%s", base, target) < 0)
		abort();
	if (sign_for) {
		struct httpd_sig_headers sig;
		if (httpd__sign(site, sign_for, method, target, body, body ? strlen(body) : 0, &sig) != 0)
			abort();
		h = curl_slist_append(h, sig.to);
		h = curl_slist_append(h, sig.time);
		h = curl_slist_append(h, sig.nonce);
		h = curl_slist_append(h, sig.body);
		h = curl_slist_append(h, sig.sig);
	}
	if (!strcmp(method, "POST")) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
		/* A POST says it is JSON, as every client of the daemons must (httpd.h). */
		if (!headers)
			h = curl_slist_append(h, "Content-Type: application/json");
	}
	for (; headers; headers = headers->next)
		h = curl_slist_append(h, headers->data);
	/* A body goes at once, without waiting for "100 Continue". */
	h = curl_slist_append(h, "Expect:");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, curlev__body_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	free(url);
	if (out)
		*out = s.data;
	else
		free(s.data);
	return status;
}
