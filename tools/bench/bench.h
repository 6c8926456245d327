/*
 * thingsync-bench: what its parts share.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_BENCH_H
#define TSYNC_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Median and 99th percentile of a set of samples, in nanoseconds. */
struct bench_lat {
	bool ok;
	uint64_t med, p99;
	size_t n;
};

uint64_t bench_now_ns(void);
/* Sorts the n samples and returns their median and 99th percentile. */
struct bench_lat bench_lat_of(uint64_t *v, size_t n);
/* A free port on 127.0.0.1 for the socket type (SOCK_DGRAM, SOCK_STREAM). */
uint16_t bench_free_port(int type);
/* Shared, zeroed memory that a forked child writes and the parent reads. */
void *bench_shared(size_t len);
void bench_kill(pid_t pid);

/* --- Mosquitto (bench-mqtt.c; only built when libmosquitto is found) ------- */

/* A broker of our own: `mosquitto -c DIR/mosquitto.conf` on 127.0.0.1. */
struct bench_broker {
	pid_t pid;
	uint16_t port;
};

/* Starts it and waits until it accepts connections. 0, or -1 with a message
 * on stderr (no mosquitto binary, it did not come up). */
int bench_broker_start(struct bench_broker *b, const char *dir);
void bench_broker_stop(struct bench_broker *b);

/* QoS 1 latency: `rounds` times, a publisher publishes `size` bytes, a
 * subscriber in another process receives it (one way: publish to delivery)
 * and publishes it back (round trip: back at the publisher). */
int bench_mqtt_latency(const struct bench_broker *b, size_t rounds, size_t size, struct bench_lat *one_way,
                       struct bench_lat *round_trip);

/* QoS 1 throughput: rounds of `msgs` messages (one topic per message, as one
 * topic per thing) to `subs` subscriber processes, each round delivered to
 * every subscriber before the next, for `seconds`. Returns deliveries/s, or
 * a negative number on failure. */
double bench_mqtt_throughput(const struct bench_broker *b, int subs, int msgs, double seconds);

#endif
