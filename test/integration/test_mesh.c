/*
 * Integration tests: real nodes with real UDP sockets on loopback, through
 * the public API only, with fault injection (loss, duplication, reordering),
 * restarts with state on disk, and the example controller run as a process.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <thingsync/thingsync.h>

#include "harness.h"

#define N 3

struct node_obs {
	int pulses_door;
	int changes;
	int cmds;
};

struct fixture {
	char *dir;
	char *site_path;
	uint16_t ports[N];
	tsync_site *site;
	struct event_base *base;
	tsync_node *node[N];
	struct node_obs obs[N];
};

static const char *NAMES[N] = {"PI-Security", "PI-Light", "PI-Climate"};

static void on_event(void *ud, tsync_node *node, const tsync_event *ev)
{
	struct node_obs *o = ud;
	if (ev->kind == TSYNC_EVENT_PULSE && !strcmp(ev->thing, "door"))
		o->pulses_door++;
	if (ev->kind == TSYNC_EVENT_CHANGED)
		o->changes++;
}

static int on_version(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	struct node_obs *o = ud;
	o->cmds++;
	*result = strdup("{\"version\":\"" TSYNC_VERSION_STRING "\"}");
	return 0;
}

static void start_node(struct fixture *f, int i, const char *state_dir)
{
	tsync_node_options o;

	tsync_node_options_init(&o);
	o.site = f->site;
	o.controller = NAMES[i];
	o.event_base = f->base;
	o.state_dir = state_dir;
	o.log = harness_log;
	o.log_level = getenv("THINGSYNC_TEST_LOG") ? TSYNC_LOG_DEBUG : TSYNC_LOG_WARN;
	assert_int_equal(tsync_node_new(&o, &f->node[i]), 0);
	assert_int_equal(tsync_node_on_event(f->node[i], on_event, &f->obs[i]), 0);
	assert_int_equal(tsync_node_on_cmd(f->node[i], "cmd_do", "version", on_version, &f->obs[i]), 0);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char conf[4096], keypath[512];
	char *errors = NULL;

	f->dir = harness_tmpdir("mesh");
	harness_ports(f->ports, N);
	snprintf(keypath, sizeof(keypath), "%s/site.key", f->dir);
	assert_int_equal(tsync_key_generate(keypath), 0);
	snprintf(conf, sizeof(conf),
	         "[site]\nname = itest\nkey_file = site.key\nretry_min_ms = 10\nretry_initial_ms = 50\n"
	         "retry_max_ms = 500\n"
	         "[controller PI-Security]\nhost = 127.0.0.1\nudp_port = %u\nroles = security, cmd_do\n"
	         "[controller PI-Light]\nhost = 127.0.0.1\nudp_port = %u\nroles = light, cmd_do\n"
	         "[controller PI-Climate]\nhost = 127.0.0.1\nudp_port = %u\nroles = climate\n"
	         "[thing is_armed]\nowner = PI-Security\ntype = bool\nusers = PI-Light, PI-Climate\n"
	         "[thing door]\nowner = PI-Security\ntype = bool\nusers = PI-Light, PI-Climate\npulse = yes\n"
	         "pulse_ms = 200\n"
	         "[thing counter]\nowner = PI-Light\ntype = int\nusers = PI-Security, PI-Climate\n"
	         "driver = virtual\n"
	         "[thing temp]\nowner = PI-Climate\ntype = float\nusers = PI-Security, PI-Light\nmin = -40\n"
	         "max = 120\n"
	         "[thing mode]\nowner = PI-Climate\ntype = string\nusers = PI-Light\nallowed = off, eco, "
	         "comfort\n",
	         f->ports[0], f->ports[1], f->ports[2]);
	f->site_path = harness_write(f->dir, "site.conf", conf);
	if (tsync_site_load(f->site_path, &f->site, &errors) < 0)
		fail_msg("%s", errors);
	f->base = event_base_new();
	for (int i = 0; i < N; i++)
		start_node(f, i, NULL);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	for (int i = 0; i < N; i++)
		tsync_node_free(f->node[i]);
	event_base_free(f->base);
	tsync_site_free(f->site);
	harness_rmdir(f->dir);
	free(f->dir);
	free(f->site_path);
	free(f);
	return 0;
}

static bool all_settled(void *ud)
{
	struct fixture *f = ud;
	for (int i = 0; i < N; i++)
		if (f->node[i] && tsync_node_unsettled(f->node[i]))
			return false;
	return true;
}

static int64_t get_int(tsync_node *n, const char *thing)
{
	tsync_thing_state st;
	assert_int_equal(tsync_node_get(n, thing, &st), 0);
	assert_int_equal(st.value.type, TSYNC_TYPE_INT);
	return st.value.u.i;
}

static double get_float(tsync_node *n, const char *thing)
{
	tsync_thing_state st;
	assert_int_equal(tsync_node_get(n, thing, &st), 0);
	assert_int_equal(st.value.type, TSYNC_TYPE_FLOAT);
	return st.value.u.f;
}

/* The scenario: 30% loss both ways, plus duplicates and reordering;
 * every user ends with the owner's last value, every pulse acts once. */
static void test_converge_under_faults(void **state)
{
	struct fixture *f = *state;
	tsync_faults faults = {.loss = 0.3, .duplicate = 0.2, .reorder = 0.2, .delay_ms = 8};
	tsync_value v;
	int pulses_done = 0;

	assert_true(harness_run_until(f->base, all_settled, f, 10000));
	for (int i = 0; i < N; i++) {
		faults.seed = 100 + (uint32_t)i;
		assert_int_equal(tsync_node_set_faults(f->node[i], &faults), 0);
	}
	for (int k = 1; k <= 200; k++) {
		v = tsync_int(k);
		assert_int_equal(tsync_node_set(f->node[1], "counter", &v), 0);
		v = tsync_float(20.0 + k * 0.25);
		assert_int_equal(tsync_node_set(f->node[2], "temp", &v), 0);
		if (k % 10 == 0) {
			/* A user asks the owner to pulse: exactly once everywhere. */
			assert_int_equal(tsync_node_pulse(f->node[1], "door", NULL, 0, NULL, NULL), 0);
			pulses_done++;
		}
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	}
	assert_true(harness_run_until(f->base, all_settled, f, 60000));
	for (int i = 0; i < N; i++) {
		assert_int_equal(get_int(f->node[i], "counter"), 200);
		assert_true(get_float(f->node[i], "temp") == 20.0 + 200 * 0.25);
		assert_int_equal(f->obs[i].pulses_door, pulses_done);
	}
	/* The faults were real: something was retransmitted. */
	{
		tsync_peer_stats st;
		uint64_t retx = 0;
		for (size_t p = 0; p < tsync_node_peer_count(f->node[1]); p++) {
			assert_int_equal(tsync_node_peer_stats(f->node[1], p, &st), 0);
			retx += st.retransmits;
			assert_true(st.up);
			assert_true(st.srtt_us > 0);
		}
		assert_true(retx > 0);
	}
}

struct cmd_result {
	int calls, status;
	char text[128];
};

static void cmd_done(void *ud, tsync_node *node, int status, const char *result)
{
	struct cmd_result *r = ud;
	r->calls++;
	r->status = status;
	snprintf(r->text, sizeof(r->text), "%s", result ? result : "");
}

static bool cmd_finished(void *ud)
{
	return ((struct cmd_result *)ud)->calls > 0;
}

static void test_commands(void **state)
{
	struct fixture *f = *state;
	struct cmd_result ok = {0}, bad = {0};
	tsync_faults faults = {.loss = 0.3, .duplicate = 0.3, .seed = 7};

	tsync_node_set_faults(f->node[2], &faults);
	tsync_node_set_faults(f->node[1], &faults);
	assert_int_equal(
	    tsync_node_cmd(f->node[2], "PI-Light", "cmd_do", "version", "{\"kwargs\":{}}", cmd_done, &ok), 0);
	assert_true(harness_run_until(f->base, cmd_finished, &ok, 20000));
	assert_int_equal(ok.status, 0);
	assert_string_equal(ok.text, "{\"version\":\"" TSYNC_VERSION_STRING "\"}");
	assert_int_equal(f->obs[1].cmds, 1);
	/* PI-Climate has no cmd_do role: err_ip_in_cmd. */
	assert_int_equal(tsync_node_cmd(f->node[0], "PI-Climate", "cmd_do", "version", NULL, cmd_done, &bad),
	                 0);
	assert_true(harness_run_until(f->base, cmd_finished, &bad, 20000));
	assert_int_equal(bad.status, TSYNC_ECMD);
	assert_int_equal(tsync_node_cmd(f->node[0], "PI-Nowhere", "cmd_do", "version", NULL, NULL, NULL),
	                 TSYNC_EUNKNOWN_CTRL);
	/* Settle so the lossy retries do not outlive the test. */
	assert_true(harness_run_until(f->base, all_settled, f, 20000));
	assert_int_equal(f->obs[1].cmds, 1);
}

static bool counter_is(void *ud)
{
	struct fixture *f = ud;
	return all_settled(f) && f->node[1] && get_int(f->node[0], "counter") == 43 &&
	       get_int(f->node[2], "counter") == 43 && get_int(f->node[1], "counter") == 43;
}

/* The owner of a virtual thing with state on disk restarts: it keeps its
 * value and boot order; a user's request made while it was down is applied
 * when it returns. */
static void test_restart_with_state(void **state)
{
	struct fixture *f = *state;
	char *sdir = harness_tmpdir("state");
	tsync_value v = tsync_int(42);
	uint64_t boot1;

	tsync_node_free(f->node[1]);
	start_node(f, 1, sdir);
	boot1 = tsync_node_boot(f->node[1]);
	assert_int_equal(tsync_node_set(f->node[1], "counter", &v), 0);
	assert_true(harness_run_until(f->base, all_settled, f, 10000));
	assert_int_equal(get_int(f->node[0], "counter"), 42);

	tsync_node_free(f->node[1]);
	f->node[1] = NULL;
	v = tsync_int(43);
	assert_int_equal(tsync_node_set(f->node[0], "counter", &v), 0); /* a request to the absent owner */
	assert_false(harness_run_until(f->base, all_settled, f, 300));
	assert_int_equal(get_int(f->node[0], "counter"), 42); /* not until the owner says so */

	start_node(f, 1, sdir);
	assert_true(tsync_node_boot(f->node[1]) > boot1);
	assert_true(harness_run_until(f->base, counter_is, f, 10000));

	/* And once more: the value came from disk, not from the users. */
	tsync_node_free(f->node[1]);
	start_node(f, 1, sdir);
	assert_int_equal(get_int(f->node[1], "counter"), 43);
	harness_rmdir(sdir);
	free(sdir);
}

/* Where a node listens on 127.0.0.1:port, for datagrams sent from outside. */
static struct sockaddr_in loopback(uint16_t port)
{
	struct sockaddr_in to;

	memset(&to, 0, sizeof(to));
	to.sin_family = AF_INET;
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	to.sin_port = htons(port);
	return to;
}

static bool forged_counted(void *ud)
{
	struct fixture *f = ud;
	return tsync_node_rejected_unknown(f->node[0], TSYNC_REJ_AUTH) >= 2;
}

/* Datagrams from outside: forged tags and the seed's plain lists are
 * refused in authenticated mode, counted, and never acted on. */
static void test_forged_datagrams(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_in to;
	const char *plain = "[{\"type\":\"io\",\"io\":\"is_armed\",\"cmd\":\"set\",\"val\":1}]";
	char forged[256];
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	tsync_thing_state st;
	size_t len;

	assert_true(harness_run_until(f->base, all_settled, f, 10000));
	to = loopback(f->ports[0]);
	len = (size_t)snprintf(forged, sizeof(forged),
	                       "{\"v\":1,\"from\":\"PI-Light\",\"boot\":9,\"seq\":1,\"msgs\":[]}"
	                       "0123456789abcdef0123456789abcdef");
	assert_true(sendto(fd, plain, strlen(plain), 0, (struct sockaddr *)&to, sizeof(to)) > 0);
	assert_true(sendto(fd, forged, len, 0, (struct sockaddr *)&to, sizeof(to)) > 0);
	assert_true(harness_run_until(f->base, forged_counted, f, 5000));
	close(fd);
	assert_int_equal(tsync_node_get(f->node[0], "is_armed", &st), 0);
	assert_int_equal(st.value.type, TSYNC_TYPE_NONE);
}

static bool burst_counted(void *ud)
{
	struct fixture *f = ud;
	return tsync_node_rejected_unknown(f->node[0], TSYNC_REJ_AUTH) >= 100 &&
	       tsync_node_rejected_unknown(f->node[0], TSYNC_REJ_OVERSIZE) >= 1;
}

/* Datagrams read in batches (recvmmsg): a burst longer than a batch is
 * read whole, every datagram counted; one longer than max_datagram is
 * refused as oversize, not cut to size and read. */
static void test_burst_and_oversize(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_in to;
	static char big[3000];
	char forged[256];
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	size_t len;

	assert_true(harness_run_until(f->base, all_settled, f, 10000));
	to = loopback(f->ports[0]);
	for (int i = 0; i < 100; i++) {
		len = (size_t)snprintf(forged, sizeof(forged),
		                       "{\"v\":3,\"from\":\"PI-Light\",\"boot\":9,\"seq\":%d,\"msgs\":[]}"
		                       "0123456789abcdef0123456789abcdef",
		                       i + 1);
		assert_true(sendto(fd, forged, len, 0, (struct sockaddr *)&to, sizeof(to)) > 0);
	}
	/* Valid JSON up to a length over max_datagram: it would decode if it
	 * were cut to fit and taken as whole. */
	memset(big, ' ', sizeof(big));
	memcpy(big, "[]", 2);
	assert_true(sendto(fd, big, sizeof(big), 0, (struct sockaddr *)&to, sizeof(to)) > 0);
	assert_true(harness_run_until(f->base, burst_counted, f, 5000));
	close(fd);
	assert_int_equal(tsync_node_rejected_unknown(f->node[0], TSYNC_REJ_AUTH), 100);
	assert_int_equal(tsync_node_rejected_unknown(f->node[0], TSYNC_REJ_OVERSIZE), 1);
}

static void test_api_errors(void **state)
{
	struct fixture *f = *state;
	tsync_node_options o;
	tsync_node *n = NULL;
	tsync_value v = tsync_bool(true);
	tsync_thing_state st;

	tsync_node_options_init(&o);
	o.site = f->site;
	o.controller = "PI-Security"; /* its port is taken by f->node[0] */
	assert_int_equal(tsync_node_new(&o, &n), -EADDRINUSE);
	assert_null(n);
	o.controller = "PI-Nobody";
	assert_int_equal(tsync_node_new(&o, &n), TSYNC_EUNKNOWN_CTRL);
	o.site = NULL;
	o.site_path = "/nonexistent/site.conf";
	o.controller = "PI-Light";
	assert_int_equal(tsync_node_new(&o, &n), -ENOENT);

	assert_int_equal(tsync_node_set(f->node[0], "nothing", &v), TSYNC_EUNKNOWN_THING);
	assert_int_equal(tsync_node_get(f->node[2], "is_armed", &st), 0); /* a user */
	assert_int_equal(tsync_node_get(f->node[1], "nothing", &st), TSYNC_EUNKNOWN_THING);
	v = tsync_float(500); /* over max */
	assert_int_equal(tsync_node_set(f->node[2], "temp", &v), TSYNC_EVALUE);
	assert_int_equal(tsync_node_pulse(f->node[0], "is_armed", NULL, 0, NULL, NULL), TSYNC_ENO_PULSE);
	assert_int_equal(tsync_node_ask(f->node[0], "is_armed"), -EINVAL); /* owner */
	assert_true(tsync_node_port(f->node[0]) == f->ports[0]);
	assert_string_equal(tsync_node_name(f->node[2]), "PI-Climate");
}

/* --- the example controller, as a separate process -------------------------- */

static bool light_on(void *ud)
{
	struct fixture *f = ud;
	tsync_thing_state st;
	return tsync_node_get(f->node[0], "hall_light", &st) == 0 && st.value.type == TSYNC_TYPE_BOOL &&
	       st.value.u.b;
}

static bool light_off(void *ud)
{
	struct fixture *f = ud;
	tsync_thing_state st;
	return tsync_node_get(f->node[0], "hall_light", &st) == 0 && st.value.type == TSYNC_TYPE_BOOL &&
	       !st.value.u.b;
}

static void test_example_controller(void **state)
{
	const char *exe = getenv("MOTION_LIGHT");
	struct fixture g, *f = &g;
	char conf[2048], *errors = NULL;
	tsync_value v;
	pid_t pid;
	int status;

	if (!exe)
		fail_msg("MOTION_LIGHT is not set");
	memset(&g, 0, sizeof(g));
	f->dir = harness_tmpdir("example");
	harness_ports(f->ports, 2);
	snprintf(conf, sizeof(conf),
	         "[site]\nname = example\nretry_min_ms = 10\nretry_initial_ms = 50\nretry_max_ms = 300\n"
	         "[controller PI-Security]\nhost = 127.0.0.1\nudp_port = %u\n"
	         "[controller PI-Light]\nhost = 127.0.0.1\nudp_port = %u\n"
	         "[thing hall_motion]\nowner = PI-Security\ntype = bool\nusers = PI-Light\n"
	         "[thing hall_light]\nowner = PI-Light\ntype = bool\nusers = PI-Security\n",
	         f->ports[0], f->ports[1]);
	f->site_path = harness_write(f->dir, "site.conf", conf);
	if (tsync_site_load(f->site_path, &f->site, &errors) < 0)
		fail_msg("%s", errors);
	f->base = event_base_new();
	start_node(f, 0, NULL);

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 1);
		execl(exe, exe, "-c", f->site_path, "-n", "PI-Light", "-o", "1", (char *)NULL);
		_exit(127);
	}
	v = tsync_bool(true);
	assert_int_equal(tsync_node_set(f->node[0], "hall_motion", &v), 0);
	assert_true(harness_run_until(f->base, light_on, f, 10000));
	v = tsync_bool(false);
	assert_int_equal(tsync_node_set(f->node[0], "hall_motion", &v), 0);
	assert_true(harness_run_until(f->base, light_off, f, 10000));

	kill(pid, SIGTERM);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	tsync_node_free(f->node[0]);
	event_base_free(f->base);
	tsync_site_free(f->site);
	harness_rmdir(f->dir);
	free(f->dir);
	free(f->site_path);
}

/* In a child: a node on `dir` sets counter = value, optionally commits, lets
 * its loop run (the flush), and dies without freeing anything. */
static void child_sets(const char *site_path, const char *dir, int64_t value, bool commit)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		tsync_node_options o;
		tsync_node *n;
		tsync_value v = tsync_int(value);
		tsync_node_options_init(&o);
		o.site_path = site_path;
		o.controller = "PI-Light";
		o.state_dir = dir;
		if (tsync_node_new(&o, &n) < 0 || tsync_node_set(n, "counter", &v) < 0)
			_exit(2);
		if (commit && tsync_node_commit(n) < 0)
			_exit(3);
		tsync_node_run_for(n, 50);
		_exit(0); /* a crash: nothing freed, nothing closed */
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static int64_t stored_counter(const char *site_path, const char *dir)
{
	tsync_node_options o;
	tsync_node *n;
	tsync_thing_state st;
	int64_t v;

	tsync_node_options_init(&o);
	o.site_path = site_path;
	o.controller = "PI-Light";
	o.state_dir = dir;
	assert_int_equal(tsync_node_new(&o, &n), 0);
	assert_int_equal(tsync_node_get(n, "counter", &st), 0);
	v = st.value.type == TSYNC_TYPE_INT ? st.value.u.i : -1;
	tsync_node_free(n);
	return v;
}

/* A controller's own changes are committed together within state_commit_ms;
 * tsync_node_commit() makes them durable at once; with the window at 0 they
 * are durable before they are sent, and so is a thing's first value with any
 * window: a crash inside the window then takes the owner back to a value,
 * which its users follow, never to none while they keep a copy (the sim's
 * "restarted without its last value" with nothing restored). */
static void test_group_commit_window(void **state)
{
	char *dir = harness_tmpdir("commit");
	char conf[1024], sdir[600], fresh[600], *lazy, *eager;
	uint16_t ports[2];

	harness_ports(ports, 2);
	snprintf(sdir, sizeof(sdir), "%s/state", dir);
	snprintf(fresh, sizeof(fresh), "%s/fresh", dir);
	snprintf(conf, sizeof(conf),
	         "[site]\nname = c\nstate_commit_ms = 60000\n"
	         "[controller PI-Light]\nhost = 127.0.0.1\nudp_port = %u\n"
	         "[controller PI-Security]\nhost = 127.0.0.1\nudp_port = %u\n"
	         "[thing counter]\nowner = PI-Light\ntype = int\nusers = PI-Security\n",
	         ports[0], ports[1]);
	lazy = harness_write(dir, "lazy.conf", conf);
	snprintf(conf, sizeof(conf),
	         "[site]\nname = c\nstate_commit_ms = 0\n"
	         "[controller PI-Light]\nhost = 127.0.0.1\nudp_port = %u\n"
	         "[controller PI-Security]\nhost = 127.0.0.1\nudp_port = %u\n"
	         "[thing counter]\nowner = PI-Light\ntype = int\nusers = PI-Security\n",
	         ports[0], ports[1]);
	eager = harness_write(dir, "eager.conf", conf);

	child_sets(lazy, fresh, 5, false);
	assert_int_equal(stored_counter(lazy, fresh), 5); /* the first value: durable when sent */
	child_sets(lazy, fresh, 6, false);
	assert_int_equal(stored_counter(lazy, fresh), 5); /* the next: inside the window, lost */
	child_sets(eager, sdir, 1, false);
	assert_int_equal(stored_counter(eager, sdir), 1); /* window 0: durable when sent */
	child_sets(lazy, sdir, 2, false);
	assert_int_equal(stored_counter(lazy, sdir), 1); /* inside the window: lost with the crash */
	child_sets(lazy, sdir, 3, true);
	assert_int_equal(stored_counter(lazy, sdir), 3); /* tsync_node_commit() */
	harness_rmdir(dir);
	free(dir);
	free(lazy);
	free(eager);
}

/* Nodes on their own loops (tsync_node_run_for(), as tools and the bench
 * run them): what is set between turns leaves with the next turn, before
 * it waits, as a first send (not the retry timer's), both sets together;
 * nothing leaves between turns. Then the user has both and the owner hears
 * both acknowledged. */
static bool own_loops_until(tsync_node *a, tsync_node *b, bool (*done)(tsync_node *, tsync_node *))
{
	for (int i = 0; i < 5000; i++) { /* a give-up limit, not a bound */
		if (done(a, b))
			return true;
		assert_int_equal(tsync_node_run_for(a, 1), 0);
		assert_int_equal(tsync_node_run_for(b, 1), 0);
	}
	return done(a, b);
}

static bool both_settled(tsync_node *a, tsync_node *b)
{
	tsync_peer_stats st;

	return tsync_node_unsettled(a) == 0 && tsync_node_unsettled(b) == 0 &&
	       tsync_node_peer_stats(a, 0, &st) == 0 && st.up;
}

static bool user_has_both(tsync_node *a, tsync_node *b)
{
	tsync_thing_state x, y;

	return tsync_node_get(b, "t1", &x) == 0 && x.value.type == TSYNC_TYPE_INT && x.value.u.i == 41 &&
	       tsync_node_get(b, "t2", &y) == 0 && y.value.type == TSYNC_TYPE_INT && y.value.u.i == 42 &&
	       tsync_node_unsettled(a) == 0;
}

/* An owner and a user, each on its own loop, things t1 and t2 (with
 * `site_extra` [site] keys), brought up and settled. Free with pair_free(). */
struct pair {
	char *dir, *path;
	uint16_t ports[2];
	tsync_node *a, *b;
};

static void pair_start(struct pair *pr, const char *tag, const char *site_extra, tsync_log_level level)
{
	char conf[1024], keypath[512];
	tsync_node_options o;

	pr->dir = harness_tmpdir(tag);
	harness_ports(pr->ports, 2);
	snprintf(keypath, sizeof(keypath), "%s/site.key", pr->dir);
	assert_int_equal(tsync_key_generate(keypath), 0);
	snprintf(conf, sizeof(conf),
	         "[site]\nname = %s\nkey_file = site.key\n%s"
	         "[controller OWNER]\nhost = 127.0.0.1\nudp_port = %u\n"
	         "[controller USER]\nhost = 127.0.0.1\nudp_port = %u\n"
	         "[thing t1]\nowner = OWNER\ntype = int\nusers = USER\n"
	         "[thing t2]\nowner = OWNER\ntype = int\nusers = USER\n",
	         tag, site_extra, pr->ports[0], pr->ports[1]);
	pr->path = harness_write(pr->dir, "site.conf", conf);
	tsync_node_options_init(&o);
	o.site_path = pr->path;
	o.log = harness_log;
	o.log_level = level;
	o.controller = "OWNER";
	assert_int_equal(tsync_node_new(&o, &pr->a), 0);
	o.controller = "USER";
	assert_int_equal(tsync_node_new(&o, &pr->b), 0);
	assert_true(own_loops_until(pr->a, pr->b, both_settled));
}

static void pair_free(struct pair *pr)
{
	tsync_node_free(pr->a);
	tsync_node_free(pr->b);
	harness_rmdir(pr->dir);
	free(pr->dir);
	free(pr->path);
}

static void test_sets_between_own_turns(void **state)
{
	struct pair pr;
	tsync_node *a, *b;
	tsync_peer_stats s0, s1, s2;
	tsync_value v;

	(void)state;
	pair_start(&pr, "turns", "", TSYNC_LOG_WARN);
	a = pr.a;
	b = pr.b;

	assert_int_equal(tsync_node_peer_stats(a, 0, &s0), 0);
	v = tsync_int(41);
	assert_int_equal(tsync_node_set(a, "t1", &v), 0);
	v = tsync_int(42);
	assert_int_equal(tsync_node_set(a, "t2", &v), 0);
	assert_int_equal(tsync_node_peer_stats(a, 0, &s1), 0);
	assert_int_equal(s1.datagrams_sent, s0.datagrams_sent);
	assert_int_equal(tsync_node_run_for(a, 0), 0);
	assert_int_equal(tsync_node_peer_stats(a, 0, &s2), 0);
	assert_true(s2.datagrams_sent - s0.datagrams_sent >= 1 + (s2.retransmits - s0.retransmits));
	assert_true(s2.msgs_sent - s0.msgs_sent >= 2);
	assert_true(own_loops_until(a, b, user_has_both));
	assert_int_equal(tsync_node_peer_stats(a, 0, &s2), 0);
	assert_true(s2.acked - s0.acked >= 2);
	pair_free(&pr);
}

/* A retry timer that comes due while the peer's acknowledgement waits in
 * the socket behind more than a turn's reading (here, datagrams from a
 * stranger) must not resend: the node reads what waits before it decides.
 * The owner's timeout is pinned at 20 ms and it sleeps well past it, so the
 * timer is due in the same turn as the unread acknowledgement. */
static bool user_has_7(tsync_node *a, tsync_node *b)
{
	tsync_thing_state x;

	(void)a;
	return tsync_node_get(b, "t1", &x) == 0 && x.value.type == TSYNC_TYPE_INT && x.value.u.i == 7;
}

static void test_ack_read_before_retry(void **state)
{
	struct pair pr;
	tsync_node *a, *b;
	tsync_peer_stats s0, s1;
	tsync_value v;
	struct sockaddr_in to;
	struct timespec nap = {0, 150 * 1000 * 1000};
	int fd;

	(void)state;
	pair_start(&pr, "retry", "heartbeat_ms = 0\nretry_min_ms = 20\nretry_initial_ms = 20\nretry_max_ms = 20\n",
	           TSYNC_LOG_ERROR);
	a = pr.a;
	b = pr.b;

	/* The set leaves; the owner's timer is armed. */
	v = tsync_int(7);
	assert_int_equal(tsync_node_set(a, "t1", &v), 0);
	assert_int_equal(tsync_node_run_for(a, 0), 0);
	assert_int_equal(tsync_node_peer_stats(a, 0, &s0), 0);
	assert_int_equal(tsync_node_unsettled(a), 1);
	/* 100 datagrams of a stranger, then the user's acknowledgement. */
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(fd >= 0);
	to = loopback(pr.ports[0]);
	for (int i = 0; i < 100; i++)
		assert_int_equal(sendto(fd, "[]", 2, 0, (struct sockaddr *)&to, sizeof(to)), 2);
	close(fd);
	for (int i = 0; i < 5000 && !user_has_7(a, b); i++) /* a give-up limit */
		assert_int_equal(tsync_node_run_for(b, 1), 0);
	assert_true(user_has_7(a, b));
	nanosleep(&nap, NULL); /* the timer is due: 150 ms against 20 */

	/* One turn: the socket's callback reads 64, the timer is due. */
	assert_int_equal(tsync_node_run_for(a, 0), 0);
	assert_int_equal(tsync_node_peer_stats(a, 0, &s1), 0);
	assert_int_equal(s1.retransmits, s0.retransmits);
	assert_int_equal(s1.datagrams_sent, s0.datagrams_sent);
	assert_int_equal(tsync_node_unsettled(a), 0);
	pair_free(&pr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_converge_under_faults, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commands, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_restart_with_state, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forged_datagrams, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_burst_and_oversize, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_api_errors, setup, teardown),
	    cmocka_unit_test(test_example_controller),
	    cmocka_unit_test(test_group_commit_window),
	    cmocka_unit_test(test_sets_between_own_turns),
	    cmocka_unit_test(test_ack_read_before_retry),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
