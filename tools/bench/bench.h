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

/* --- the peers of issue 15 (bench-peers.c) ------------------------------------ */

#define BENCH_MAX_SUBS 30

/* Raw UDP with thingsync's throughput shape: rounds of `things` updates,
 * per_dgram to a 1400-byte datagram, to each of `subs` subscriber processes,
 * every datagram acknowledged, each round acknowledged before the next;
 * with mmsg, sendmmsg/recvmmsg on both sides. Returns updates/s. */
double bench_raw_throughput(int subs, int things, int per_dgram, double seconds, bool mmsg);

/* Eclipse Cyclone DDS's ddsperf (Debian's cyclonedds-tools), reliable, in a
 * DDS domain of the bench's own; its output goes to files in dir. */
bool bench_have_dds(void);
/* `subs` processes of "ddsperf sub", one "ddsperf pub size S": samples
 * delivered per second, summed over the subscribers, or < 0. */
double bench_dds_throughput(const char *dir, int subs, size_t size, double seconds);
/* "ddsperf ping size S" against "ddsperf pong": the round trip (ddsperf
 * prints half of it), median and p99 of its per-second figures. 0 or -1. */
int bench_dds_pingpong(const char *dir, size_t size, double seconds, struct bench_lat *rtt);

/* libcoap's coap-server (libcoap3-bin) and a confirmable PUT of `size`
 * bytes from a client of our own, `rounds` times, one at a time: the round
 * trip to its piggybacked ACK. samples holds rounds values. 0 or -1. */
bool bench_have_coap(void);
int bench_coap_rtt(size_t size, size_t rounds, uint64_t *samples, struct bench_lat *rtt);

#endif
