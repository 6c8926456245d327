/*
 * thingsync-wirebench: what the wire path costs per datagram, in one
 * process, without the network: encoding a datagram of set messages,
 * decoding it (tag check included), and the candidate MACs over the same
 * bytes. It prints figures; it does not pass or fail.
 *
 * Usage: thingsync-wirebench [--iterations N] [--msgs N]
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "daemonopt.h"
#include "wire/wire.h"

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Best of five runs of n iterations, in nanoseconds per iteration: the
 * machine is shared, the minimum is the figure least disturbed by others. */
#define BEST_OF(out, n, body)                                                                                \
	do {                                                                                                 \
		double best_ = 1e18;                                                                         \
		for (int run_ = 0; run_ < 5; run_++) {                                                       \
			uint64_t t0_ = now_ns();                                                             \
			for (size_t it_ = 0; it_ < (n); it_++) {                                             \
				body;                                                                        \
			}                                                                                    \
			double per_ = (double)(now_ns() - t0_) / (double)(n);                                \
			if (per_ < best_)                                                                    \
				best_ = per_;                                                                \
		}                                                                                            \
		(out) = best_;                                                                               \
	} while (0)

static void usage(FILE *f)
{
	fprintf(f, "usage: thingsync-wirebench [--iterations N] [--msgs N]\n"
	           "  Encodes and decodes one authenticated datagram of N set messages (default 20)\n"
	           "  and times the candidate MACs over it; prints microseconds per datagram.\n");
}

/* The messages of thingsync-bench's batched throughput, sets (or their
 * replies) of a thing named t<i> with an integer value and a version, added
 * to a begun datagram until n or the first error. */
static int add_batch(struct wire_writer *w, enum wire_op op, size_t n, uint64_t seq)
{
	char names[64][32];
	int r = 0;

	for (size_t i = 0; r == 0 && i < n; i++) {
		struct wire_msg m = {.type = WIRE_T_IO, .op = op, .has_val = true, .has_ver = true};
		snprintf(names[i % 64], sizeof(names[0]), "t%03zu", i);
		m.io = names[i % 64];
		m.val = tsync_int((int64_t)(20000 + i * 79));
		m.ver = 100000 + seq;
		r = wire__add(w, &m);
	}
	return r;
}

static int build(struct wire_writer *w, size_t msgs, uint64_t seq, const void **out, size_t *len)
{
	struct wire_env env = {
	    .from = "owner", .boot = 3, .seq = seq, .to_boot = 7, .re = seq, .durable = true};
	int r = wire__begin(w, &env);

	if (r == 0)
		r = add_batch(w, WIRE_OP_SET, msgs, seq);
	return r == 0 ? wire__finish(w, out, len) : r;
}

/* The user's answer to such a datagram: a reply per set (as before
 * acknowledgements by datagram, and as a peer without them still gets), or
 * an envelope that acknowledges the datagram by its seq ("ack"). */
static int build_answer(struct wire_writer *w, size_t msgs, bool by_datagram, uint64_t seq, const void **out,
                        size_t *len)
{
	struct wire_env env = {
	    .from = "user", .boot = 7, .seq = seq, .to_boot = 3, .re = seq, .durable = true};
	int r;

	env.acks_ok = true;
	if (by_datagram) {
		env.n_acks = 1;
		env.acks[0][0] = env.acks[0][1] = seq;
	}
	r = wire__begin(w, &env);
	if (r == 0 && !by_datagram)
		r = add_batch(w, WIRE_OP_REPLY, msgs, seq);
	/* Replies are longer than sets: as many as one datagram holds. */
	if (r == -EMSGSIZE && w->n_msgs > 0)
		r = 0;
	return r == 0 ? wire__finish(w, out, len) : r;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"iterations", required_argument, NULL, 'n'},
	    {"msgs", required_argument, NULL, 'm'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	uint8_t key[WIRE_KEY_BYTES], tag[64], dkey[32], nonce[crypto_stream_chacha20_NONCEBYTES] = {0};
	struct wire_codec c = {.key = key, .max_datagram = 1400, .max_msgs = 64, .max_string = 1024};
	struct wire_auth_key *auth = NULL;
	struct wire_writer w;
	struct wire_datagram dg;
	struct wire_decoder *dec = NULL;
	tsync_reject why;
	const void *out;
	size_t len, iters = 20000, msgs = 20;
	uint64_t x;
	double t;
	int o;

	while ((o = getopt_long(argc, argv, "n:m:h", opts, NULL)) != -1) {
		switch (o) {
		case 'n':
			if (daemonopt__uint(optarg, 1, 1000000000, &x) < 0) {
				fprintf(stderr,
				        "thingsync-wirebench: --iterations wants 1 to 1000000000, not %s\n",
				        optarg);
				return 2;
			}
			iters = (size_t)x;
			break;
		case 'm':
			if (daemonopt__uint(optarg, 1, 64, &x) < 0) {
				fprintf(stderr, "thingsync-wirebench: --msgs wants 1 to 64, not %s\n",
				        optarg);
				return 2;
			}
			msgs = (size_t)x;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc || sodium_init() < 0) {
		usage(stderr);
		return 2;
	}
	randombytes_buf(key, sizeof(key));
	if (wire__auth_prepare(key, &auth) < 0)
		return 1;
	c.auth = auth;
	wire__writer_init(&w, &c);
	o = build(&w, msgs, 1, &out, &len);
	if (o == -EMSGSIZE) {
		/* --msgs is bounded by the codec's max_msgs; what fits the
		 * datagram's bytes is known only once written. */
		fprintf(stderr, "thingsync-wirebench: %zu set messages do not fit one datagram of %u bytes\n",
		        msgs, (unsigned)c.max_datagram);
		wire__writer_free(&w);
		wire__auth_free(auth);
		return 2;
	}
	if (o < 0 || wire__decoder_new(&c, &dec) < 0) {
		fprintf(stderr, "thingsync-wirebench: cannot build the datagram: %s\n", strerror(-o));
		return 1;
	}
	printf(
	    "thingsync-wirebench: one authenticated datagram of %zu set messages, %zu bytes (tag included)\n",
	    msgs, len);

	t = 0;
	BEST_OF(t, iters, {
		uint64_t seq = it_ + 2;
		if (build(&w, msgs, seq, &out, &len) < 0)
			return 1;
	});
	printf("  encode (writer + tag)            %8.2f us   %6.0f ns/msg\n", t / 1e3, t / (double)msgs);
	build(&w, msgs, 1, &out, &len);

	t = 0;
	BEST_OF(t, iters, {
		if (wire__decode_in(dec, out, len, &dg, &why) < 0)
			return 1;
		wire__datagram_release(&dg);
	});
	printf("  decode (tag check, parse, walk)  %8.2f us   %6.0f ns/msg\n", t / 1e3, t / (double)msgs);

	t = 0;
	BEST_OF(t, iters, {
		if (wire__decode(&c, out, len, &dg, &why) < 0)
			return 1;
		wire__datagram_release(&dg);
	});
	printf("  decode, one-shot (wire__decode)  %8.2f us\n", t / 1e3);

	for (int by_dg = 0; by_dg < 2; by_dg++) {
		const void *aout;
		size_t alen;
		double te = 0, td = 0;
		BEST_OF(te, iters, {
			if (build_answer(&w, msgs, by_dg, it_ + 2, &aout, &alen) < 0)
				return 1;
		});
		if (build_answer(&w, msgs, by_dg, 1, &aout, &alen) < 0)
			return 1;
		BEST_OF(td, iters, {
			if (wire__decode_in(dec, aout, alen, &dg, &why) < 0)
				return 1;
			wire__datagram_release(&dg);
		});
		printf("  its acknowledgement, %2zu %-9s %4zu bytes: encode %6.2f us, decode %6.2f us\n",
		       by_dg ? (size_t)1 : w.n_msgs, by_dg ? "\"ack\"" : "replies", alen, te / 1e3, td / 1e3);
	}
	build(&w, msgs, 1, &out, &len);

	printf("MACs over %zu bytes:\n", len - WIRE_TAG_BYTES);
	t = 0;
	BEST_OF(t, iters, { wire__codec_tag(&c, out, len - WIRE_TAG_BYTES, tag); });
	printf("  the wire's tag (wire__codec_tag)  %8.2f us\n", t / 1e3);
	t = 0;
	BEST_OF(t, iters, { crypto_auth(tag, out, len - WIRE_TAG_BYTES, key); });
	printf("  HMAC-SHA-512-256, crypto_auth()   %8.2f us\n", t / 1e3);
	{
		/* As "v":1 did it: the pads hashed once, the state copied. */
		crypto_auth_hmacsha512256_state pads, st;
		crypto_auth_hmacsha512256_init(&pads, key, sizeof(key));
		t = 0;
		BEST_OF(t, iters, {
			st = pads;
			crypto_auth_hmacsha512256_update(&st, out, len - WIRE_TAG_BYTES);
			crypto_auth_hmacsha512256_final(&st, tag);
		});
		printf("  HMAC-SHA-512-256, pads prepared   %8.2f us   (the tag of \"v\":1)\n", t / 1e3);
	}
	t = 0;
	BEST_OF(t, iters, { crypto_generichash(tag, 32, out, len - WIRE_TAG_BYTES, key, sizeof(key)); });
	printf("  keyed BLAKE2b-256                 %8.2f us\n", t / 1e3);
	t = 0;
	BEST_OF(t, iters, {
		nonce[0] = (uint8_t)it_;
		crypto_stream_chacha20(dkey, sizeof(dkey), nonce, key);
		crypto_onetimeauth(tag, out, len - WIRE_TAG_BYTES, dkey);
	});
	printf("  Poly1305, ChaCha20 datagram key   %8.2f us\n", t / 1e3);

	wire__decoder_free(dec);
	wire__writer_free(&w);
	wire__auth_free(auth);
	return 0;
}
