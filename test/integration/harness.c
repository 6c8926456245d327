/*
 * Integration-test harness (see harness.h).
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "harness.h"

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

void harness_ports(uint16_t *ports, int n)
{
	int fds[64];

	if (n > 64)
		abort();
	/* Hold all sockets open while asking, so the kernel gives n distinct ports. */
	for (int i = 0; i < n; i++) {
		struct sockaddr_in sa;
		socklen_t len = sizeof(sa);
		memset(&sa, 0, sizeof(sa));
		sa.sin_family = AF_INET;
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
		if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
		    getsockname(fds[i], (struct sockaddr *)&sa, &len) < 0)
			abort();
		ports[i] = ntohs(sa.sin_port);
	}
	for (int i = 0; i < n; i++)
		close(fds[i]);
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
