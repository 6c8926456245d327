/*
 * daemons/common/httpd in one process: what is hard to provoke in a daemon
 * from outside. Descriptors run out while clients wait to be accepted: the
 * server must pause instead of spinning on accept(), log once, and serve
 * the waiting clients when descriptors come back.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "httpd.h"

static int log_lines;

static void count_log(void *ud, tsync_log_level level, const char *line)
{
	(void)ud;
	(void)level;
	log_lines++;
	print_message("log: %s\n", line);
}

static void hello(void *arg, struct evhttp_request *req, const char *path)
{
	(void)arg;
	(void)path;
	httpd__reply_json(req, 200, json_pack("{s:s}", "hello", "world"));
}

static const struct httpd_route routes[] = {
    {"/hello", HTTPD_GET, 0, false, false},
    {NULL, 0, 0, false, false},
};

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own */
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       (double)ru.ru_stime.tv_usec / 1e6;
}

static void run_for(struct event_base *base, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

/* A server on 127.0.0.1 and the address to connect to. */
static struct httpd *start(struct event_base *base, size_t max_connections, struct sockaddr_in *sa)
{
	struct httpd_config cfg;
	struct httpd *s = NULL;

	memset(&cfg, 0, sizeof(cfg));
	cfg.base = base;
	cfg.host = "127.0.0.1";
	cfg.routes = routes;
	cfg.handler = hello;
	cfg.name = "test";
	cfg.max_connections = max_connections;
	cfg.log = count_log;
	assert_int_equal(httpd__new(&cfg, &s), 0);
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons(httpd__port(s));
	sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return s;
}

static void test_emfile_pauses(void **state)
{
	enum { CLIENTS = 8 };
	struct event_base *base = event_base_new();
	struct httpd_stats st;
	struct rlimit old, low;
	struct sockaddr_in sa;
	struct httpd *s = start(base, 32, &sa);
	int fds[CLIENTS];
	double cpu0, cpu1;
	char buf[512];
	ssize_t n;

	(void)state;
	for (int i = 0; i < CLIENTS; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(fds[i] >= 0);
		/* The kernel completes the handshake; the server has not accepted. */
		assert_int_equal(connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)), 0);
		assert_int_equal(send(fds[i], "GET /hello HTTP/1.0\r\n\r\n", 23, 0), 23);
	}
	/* Not one descriptor left for accept(). */
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)open_fds();
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);

	log_lines = 0;
	cpu0 = cpu_s();
	run_for(base, 1500);
	cpu1 = cpu_s();
	httpd__stats(s, &st);
	print_message("emfile: %llu failed accepts, %d log lines, %.3f s cpu in 1.5 s\n",
	              (unsigned long long)st.emfile, log_lines, cpu1 - cpu0);
	assert_true(st.emfile >= 1);
	/* Paused, not spinning: a spin takes every cycle and a line per try. */
	assert_true(st.emfile < 20);
	assert_true(log_lines <= 2);
	assert_true(cpu1 - cpu0 < 0.5);
	assert_int_equal(st.connections, 0);

	/* Descriptors come back: the waiting clients are served. */
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	run_for(base, 1500);
	for (int i = 0; i < CLIENTS; i++) {
		struct timeval tv = {5, 0};
		setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		n = recv(fds[i], buf, sizeof(buf) - 1, MSG_DONTWAIT);
		assert_true(n > 0);
		buf[n] = '\0';
		assert_non_null(strstr(buf, "200"));
		close(fds[i]);
	}
	httpd__free(s);
	event_base_free(base);
}

/* The connection cap pauses the listener; closing a connection resumes it. */
static void test_connection_cap(void **state)
{
	enum { CLIENTS = 6 };
	struct event_base *base = event_base_new();
	struct httpd_stats st;
	struct sockaddr_in sa;
	struct httpd *s = start(base, 3, &sa);
	int fds[CLIENTS];

	(void)state;
	for (int i = 0; i < CLIENTS; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_int_equal(connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)), 0);
	}
	run_for(base, 300);
	httpd__stats(s, &st);
	assert_int_equal(st.connections, 3);
	assert_true(st.accept_paused >= 1);
	/* Two go away: two more are taken in. */
	close(fds[0]);
	close(fds[1]);
	run_for(base, 1500);
	httpd__stats(s, &st);
	assert_int_equal(st.connections, 3);
	for (int i = 2; i < CLIENTS; i++)
		close(fds[i]);
	run_for(base, 1500);
	httpd__stats(s, &st);
	assert_int_equal(st.connections, 0);
	httpd__free(s);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_emfile_pauses),
	    cmocka_unit_test(test_connection_cap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
