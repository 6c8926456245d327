/*
 * thingsync-bench: the obvious alternative, measured the same way. A
 * Mosquitto broker of our own on 127.0.0.1 (Debian's mosquitto, started as a
 * child with a temporary configuration), clients with Debian's libmosquitto,
 * every client in a process of its own, QoS 1 throughout.
 * SPDX-License-Identifier: MIT
 */
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

#include <mosquitto.h>

#include "bench.h"

#define CONNECT_WAIT_NS 10000000000ull /* a client or the broker must be up within 10 s */
#define ROUND_WAIT_NS   30000000000ull /* a round must be delivered within 30 s */

int bench_broker_start(struct bench_broker *b, const char *dir)
{
	char conf[512], log[512];
	FILE *f;
	uint64_t end;

	b->port = bench_free_port(SOCK_STREAM);
	snprintf(conf, sizeof(conf), "%s/mosquitto.conf", dir);
	snprintf(log, sizeof(log), "%s/mosquitto.log", dir);
	f = fopen(conf, "w");
	if (!f) {
		perror(conf);
		return -1;
	}
	/* No persistence (thingsync keeps nothing on disk in these tests
	 * either), Nagle off on the broker's sockets as on the clients', and no
	 * limit on queued messages so that a round of many messages is never
	 * dropped; in-flight limits stay at their defaults (20). */
	fprintf(f,
	        "# written by thingsync-bench\n"
	        "listener %u 127.0.0.1\n"
	        "allow_anonymous true\n"
	        "persistence false\n"
	        "set_tcp_nodelay true\n"
	        "max_queued_messages 0\n"
	        "sys_interval 0\n"
	        "log_dest file %s\n",
	        b->port, log);
	fclose(f);
	b->pid = fork();
	if (b->pid < 0) {
		perror("fork");
		return -1;
	}
	if (b->pid == 0) {
		int devnull = open("/dev/null", O_RDWR);
		if (devnull >= 0) {
			dup2(devnull, STDOUT_FILENO);
			dup2(devnull, STDERR_FILENO);
		}
		execlp("mosquitto", "mosquitto", "-c", conf, (char *)NULL);
		execl("/usr/sbin/mosquitto", "mosquitto", "-c", conf, (char *)NULL);
		_exit(127);
	}
	end = bench_now_ns() + CONNECT_WAIT_NS;
	while (bench_now_ns() < end) {
		struct sockaddr_in sa;
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), st;

		memset(&sa, 0, sizeof(sa));
		sa.sin_family = AF_INET;
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sa.sin_port = htons(b->port);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(fd);
			return 0;
		}
		if (fd >= 0)
			close(fd);
		if (waitpid(b->pid, &st, WNOHANG) == b->pid) {
			fprintf(stderr, "thingsync-bench: mosquitto %s (see %s)\n",
			        WIFEXITED(st) && WEXITSTATUS(st) == 127 ? "is not installed"
			                                                : "did not start",
			        log);
			b->pid = 0;
			return -1;
		}
		usleep(10000);
	}
	fprintf(stderr, "thingsync-bench: mosquitto did not accept connections on port %u\n", b->port);
	bench_broker_stop(b);
	return -1;
}

void bench_broker_stop(struct bench_broker *b)
{
	if (b->pid > 0) {
		kill(b->pid, SIGTERM);
		waitpid(b->pid, NULL, 0);
	}
	b->pid = 0;
}

/* --- a client ---------------------------------------------------------------- */

struct client {
	struct mosquitto *m;
	bool connected;
	int subacks;
	int ready;         /* bench/ready/... messages seen */
	uint64_t done;     /* bench/done/... messages seen */
	uint64_t received; /* data messages */
	bool pong;
	int index;           /* a subscriber's number */
	int msgs;            /* throughput: messages per round */
	uint64_t *samples;   /* latency: one-way samples (shared with the parent) */
	uint64_t *n_samples; /* their count, shared too */
	size_t cap_samples;
};

static void on_connect(struct mosquitto *m, void *obj, int rc)
{
	struct client *c = obj;
	c->connected = rc == 0;
}

static void on_subscribe(struct mosquitto *m, void *obj, int mid, int qos_count, const int *granted)
{
	struct client *c = obj;
	c->subacks++;
}

/* Runs the client's loop until *flag (an int or uint64_t read through
 * `get`) reaches `want`, or the deadline. */
static int pump_until(struct client *c, uint64_t (*get)(const struct client *), uint64_t want,
                      uint64_t wait_ns)
{
	uint64_t end = bench_now_ns() + wait_ns;

	while (get(c) < want) {
		int rc = mosquitto_loop(c->m, 100, 1);
		if (rc != MOSQ_ERR_SUCCESS) {
			fprintf(stderr, "thingsync-bench: mosquitto client: %s\n", mosquitto_strerror(rc));
			return -1;
		}
		if (bench_now_ns() > end)
			return -1;
	}
	return 0;
}

static uint64_t get_connected(const struct client *c)
{
	return c->connected;
}

static uint64_t get_subacks(const struct client *c)
{
	return (uint64_t)c->subacks;
}

static uint64_t get_ready(const struct client *c)
{
	return (uint64_t)c->ready;
}

static uint64_t get_done(const struct client *c)
{
	return c->done;
}

static uint64_t get_pong(const struct client *c)
{
	return c->pong;
}

static int client_open(struct client *c, const struct bench_broker *b,
                       void (*on_msg)(struct mosquitto *, void *, const struct mosquitto_message *))
{
	c->m = mosquitto_new(NULL, true, c);
	if (!c->m)
		return -1;
	mosquitto_int_option(c->m, MOSQ_OPT_TCP_NODELAY, 1);
	mosquitto_connect_callback_set(c->m, on_connect);
	mosquitto_subscribe_callback_set(c->m, on_subscribe);
	mosquitto_message_callback_set(c->m, on_msg);
	if (mosquitto_connect(c->m, "127.0.0.1", b->port, 60) != MOSQ_ERR_SUCCESS)
		return -1;
	return pump_until(c, get_connected, 1, CONNECT_WAIT_NS);
}

static int client_subscribe(struct client *c, const char *topic)
{
	int want = c->subacks + 1;
	if (mosquitto_subscribe(c->m, NULL, topic, 1) != MOSQ_ERR_SUCCESS)
		return -1;
	return pump_until(c, get_subacks, (uint64_t)want, CONNECT_WAIT_NS);
}

/* Each test numbers its readiness topics anew, since the retained messages
 * of an earlier test stay in the broker. Set before the fork. */
static unsigned test_run;

static void ready_filter(char *buf, size_t len)
{
	snprintf(buf, len, "bench/ready/%u/#", ++test_run);
}

/* A subscriber says it is subscribed with a retained message, which the
 * parent gets whenever it subscribes itself. */
static int client_announce(struct client *c)
{
	char topic[64];
	snprintf(topic, sizeof(topic), "bench/ready/%u/%d", test_run, c->index);
	return mosquitto_publish(c->m, NULL, topic, 1, "1", 1, true) == MOSQ_ERR_SUCCESS ? 0 : -1;
}

static void client_close(struct client *c)
{
	if (c->m) {
		mosquitto_disconnect(c->m);
		mosquitto_destroy(c->m);
	}
	c->m = NULL;
}

/* Runs a child's loop for ever; the parent kills it. */
static void child_loop(struct client *c) __attribute__((noreturn));
static void child_loop(struct client *c)
{
	for (;;)
		if (mosquitto_loop(c->m, 1000, 1) != MOSQ_ERR_SUCCESS)
			_exit(1);
}

static void on_parent_msg(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
	struct client *c = obj;
	if (!strncmp(msg->topic, "bench/ready/", 12))
		c->ready++;
	else if (!strncmp(msg->topic, "bench/done/", 11))
		c->done++;
	else if (!strcmp(msg->topic, "bench/pong"))
		c->pong = true;
}

/* --- latency -------------------------------------------------------------------- */

static void on_echo_msg(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
	struct client *c = obj;
	uint64_t t0;

	if (strcmp(msg->topic, "bench/ping") || msg->payloadlen < (int)sizeof(t0))
		return;
	memcpy(&t0, msg->payload, sizeof(t0));
	/* Recorded before the echo leaves, so the parent, woken by the echo,
	 * finds the sample there. */
	if (*c->n_samples < c->cap_samples)
		c->samples[(*c->n_samples)++] = bench_now_ns() - t0;
	mosquitto_publish(m, NULL, "bench/pong", msg->payloadlen, msg->payload, 1, false);
}

int bench_mqtt_latency(const struct bench_broker *b, size_t rounds, size_t size, struct bench_lat *one_way,
                       struct bench_lat *round_trip)
{
	uint64_t *shared = bench_shared((rounds + 1) * sizeof(uint64_t)), *rtt = calloc(rounds, sizeof(*rtt));
	unsigned char *payload = calloc(1, size < 8 ? 8 : size);
	struct client pub = {0};
	char ready[48];
	pid_t pid;
	int r = -1;

	if (!shared || !rtt || !payload)
		return -1;
	memset(payload, 'x', size < 8 ? 8 : size);
	ready_filter(ready, sizeof(ready));
	pid = fork();
	if (pid == 0) {
		struct client echo = {0};
		/* shared[0] counts, the samples follow */
		echo.n_samples = shared;
		echo.samples = shared + 1;
		echo.cap_samples = rounds;
		mosquitto_lib_init();
		if (client_open(&echo, b, on_echo_msg) < 0 || client_subscribe(&echo, "bench/ping") < 0 ||
		    client_announce(&echo) < 0)
			_exit(1);
		child_loop(&echo);
	}
	if (client_open(&pub, b, on_parent_msg) < 0 || client_subscribe(&pub, "bench/pong") < 0 ||
	    client_subscribe(&pub, ready) < 0 || pump_until(&pub, get_ready, 1, CONNECT_WAIT_NS) < 0) {
		fprintf(stderr, "thingsync-bench: the Mosquitto clients did not come up\n");
		goto leave;
	}
	for (size_t i = 0; i < rounds; i++) {
		uint64_t t0 = bench_now_ns();
		memcpy(payload, &t0, sizeof(t0));
		pub.pong = false;
		if (mosquitto_publish(pub.m, NULL, "bench/ping", (int)size, payload, 1, false) !=
		        MOSQ_ERR_SUCCESS ||
		    pump_until(&pub, get_pong, 1, ROUND_WAIT_NS) < 0) {
			fprintf(stderr, "thingsync-bench: Mosquitto round trip %zu failed\n", i);
			goto leave;
		}
		rtt[i] = bench_now_ns() - t0;
	}
	*round_trip = bench_lat_of(rtt, rounds);
	*one_way = bench_lat_of(shared + 1, shared[0] < rounds ? (size_t)shared[0] : rounds);
	r = 0;
leave:
	bench_kill(pid);
	client_close(&pub);
	free(rtt);
	free(payload);
	return r;
}

/* --- throughput ------------------------------------------------------------------ */

static void on_sub_msg(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
	struct client *c = obj;
	char topic[64], round[32];

	if (strncmp(msg->topic, "bench/t/", 8))
		return;
	c->received++;
	if (c->received % (uint64_t)c->msgs == 0) {
		/* The whole round is here: say so. */
		snprintf(topic, sizeof(topic), "bench/done/%d", c->index);
		snprintf(round, sizeof(round), "%llu", (unsigned long long)(c->received / (uint64_t)c->msgs));
		mosquitto_publish(m, NULL, topic, (int)strlen(round), round, 1, false);
	}
}

double bench_mqtt_throughput(const struct bench_broker *b, int subs, int msgs, double seconds)
{
	struct client pub = {0};
	pid_t *pids = calloc((size_t)subs, sizeof(*pids));
	char(*topics)[32] = calloc((size_t)msgs, sizeof(*topics));
	uint64_t t0, t1 = 0, round = 0;
	double rate = -1;
	char ready[48];

	if (!pids || !topics)
		return -1;
	for (int k = 0; k < msgs; k++)
		snprintf(topics[k], sizeof(topics[k]), "bench/t/%d", k);
	ready_filter(ready, sizeof(ready));
	for (int s = 0; s < subs; s++) {
		pids[s] = fork();
		if (pids[s] == 0) {
			struct client sub = {0};
			sub.index = s;
			sub.msgs = msgs;
			mosquitto_lib_init();
			if (client_open(&sub, b, on_sub_msg) < 0 || client_subscribe(&sub, "bench/t/#") < 0 ||
			    client_announce(&sub) < 0)
				_exit(1);
			child_loop(&sub);
		}
	}
	if (client_open(&pub, b, on_parent_msg) < 0 || client_subscribe(&pub, "bench/done/#") < 0 ||
	    client_subscribe(&pub, ready) < 0 ||
	    pump_until(&pub, get_ready, (uint64_t)subs, CONNECT_WAIT_NS) < 0) {
		fprintf(stderr, "thingsync-bench: the Mosquitto subscribers did not come up\n");
		goto leave;
	}
	t0 = bench_now_ns();
	do {
		char payload[96];
		round++;
		for (int k = 0; k < msgs; k++) {
			/* What a thing's change would say, as the seed's JSON. */
			int n = snprintf(payload, sizeof(payload),
			                 "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t%d\",\"val\":%llu}", k,
			                 (unsigned long long)(round * 1000u + (unsigned)k));
			if (mosquitto_publish(pub.m, NULL, topics[k], n, payload, 1, false) !=
			    MOSQ_ERR_SUCCESS) {
				fprintf(stderr, "thingsync-bench: Mosquitto publish failed\n");
				goto leave;
			}
		}
		if (pump_until(&pub, get_done, round * (uint64_t)subs, ROUND_WAIT_NS) < 0) {
			fprintf(stderr, "thingsync-bench: Mosquitto round %llu not delivered\n",
			        (unsigned long long)round);
			goto leave;
		}
		t1 = bench_now_ns();
	} while ((double)(t1 - t0) / 1e9 < seconds);
	rate = (double)round * (double)msgs * (double)subs / ((double)(t1 - t0) / 1e9);
leave:
	for (int s = 0; s < subs; s++)
		bench_kill(pids[s]);
	client_close(&pub);
	free(pids);
	free(topics);
	return rate;
}
