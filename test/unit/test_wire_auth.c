/*
 * The tag of "v":3 (lib/wire/auth.c): what it is, checked against
 * libsodium's own XChaCha20-Poly1305, and the subkeys a prepared key keeps
 * (the sender's, per nonce prefix; the receiver's table of the last
 * senders'), which must never let a tag pass that the plain construction
 * would refuse, nor refuse one it would pass. (A forked child's sending
 * subkey: test_wire's test_auth_v2.)
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "wire/wire.h"

static const uint8_t key_a[WIRE_KEY_BYTES] = "0123456789abcdef0123456789abcde";
static const uint8_t key_b[WIRE_KEY_BYTES] = "0123456789abcdef0123456789abcdX";
static const char text[] = "{\"v\":3,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":[]}";
#define TEXT_LEN (sizeof(text) - 1)

/* The MAC key, derived from the site key as auth.c does. */
static void mac_key(const uint8_t *site_key, uint8_t k[32])
{
	static const char ctx[] = "thingsync wire v2: XChaCha20-Poly1305 MAC key";
	crypto_generichash(k, 32, (const unsigned char *)ctx, sizeof(ctx) - 1, site_key, WIRE_KEY_BYTES);
}

/* The 24-byte XChaCha20 nonce of a wire nonce: prefix, 8 zeros, counter. */
static void xnonce(const uint8_t wire[16], uint8_t n[24])
{
	memset(n, 0, 24);
	memcpy(n, wire, 8);
	memcpy(n + 16, wire + 8, 8);
}

/* libsodium's XChaCha20-Poly1305 checks a tag (no wire code involved). */
static bool sodium_ok(const uint8_t *site_key, const void *data, size_t len, const uint8_t tag[WIRE_TAG_BYTES])
{
	uint8_t k[32], n[24], none[1] = {0};

	mac_key(site_key, k);
	xnonce(tag, n);
	return crypto_aead_xchacha20poly1305_ietf_decrypt_detached(none, NULL, none, 0, tag + 16, data, len, n,
	                                                            k) == 0;
}

/* A tag as a sender with this nonce would make it, by libsodium alone. */
static void sodium_tag(const uint8_t *site_key, const uint8_t wire_nonce[16], const void *data, size_t len,
                       uint8_t tag[WIRE_TAG_BYTES])
{
	uint8_t k[32], n[24], none[1] = {0};

	mac_key(site_key, k);
	xnonce(wire_nonce, n);
	memcpy(tag, wire_nonce, 16);
	crypto_aead_xchacha20poly1305_ietf_encrypt_detached(none, tag + 16, NULL, none, 0, data, len, NULL, n, k);
}

static int setup(void **state)
{
	(void)state;
	return sodium_init() < 0 ? -1 : 0;
}

/* Every tag, with a key as it is or prepared (its subkey computed once,
 * then kept), is libsodium's XChaCha20-Poly1305 under prefix || 0^8 ||
 * counter; the prefix stays, the counter moves. */
static void test_tag_is_xchacha(void **state)
{
	struct wire_auth_key *prep;
	struct wire_codec c = {.key = key_a, .max_datagram = 1400, .max_msgs = 64, .max_string = 256};
	uint8_t t[4][WIRE_TAG_BYTES];

	(void)state;
	assert_int_equal(wire__auth_prepare(key_a, &prep), 0);
	assert_int_equal(wire__auth_tag(key_a, text, TEXT_LEN, t[0]), 0);
	c.auth = prep;
	assert_int_equal(wire__codec_tag(&c, text, TEXT_LEN, t[1]), 0);
	assert_int_equal(wire__codec_tag(&c, text, TEXT_LEN, t[2]), 0);
	assert_int_equal(wire__codec_tag(&c, text, TEXT_LEN - 1, t[3]), 0);
	for (int i = 0; i < 4; i++) {
		assert_true(sodium_ok(key_a, text, i == 3 ? TEXT_LEN - 1 : TEXT_LEN, t[i]));
		assert_false(sodium_ok(key_b, text, i == 3 ? TEXT_LEN - 1 : TEXT_LEN, t[i]));
		assert_memory_equal(t[i], t[0], 8); /* one prefix per process */
		if (i > 0)
			assert_memory_not_equal(t[i] + 8, t[i - 1] + 8, 8);
	}
	/* "v":2's layout (the 16 bytes first, then 8 zeros) gives another
	 * tag: a "v":2 sender's datagrams do not pass. */
	{
		uint8_t k[32], n[24] = {0}, old[WIRE_TAG_BYTES], none[1] = {0};
		mac_key(key_a, k);
		memcpy(n, t[1], 16);
		memcpy(old, t[1], 16);
		crypto_aead_xchacha20poly1305_ietf_encrypt_detached(none, old + 16, NULL, none, 0,
		                                                    (const unsigned char *)text, TEXT_LEN, NULL, n, k);
		assert_int_equal(wire__codec_verify(&c, text, TEXT_LEN, old), -EBADMSG);
		assert_int_equal(wire__auth_verify(key_a, text, TEXT_LEN, old), -EBADMSG);
	}
	wire__auth_free(prep);
}

/* A receiver's table of subkeys, with more senders than it has slots: every
 * genuine tag passes however the senders come and go, a wrong one fails
 * even when its sender's subkey is in the table, a forged datagram that
 * takes a sender's slot costs that sender nothing, and a table under one
 * key never passes another key's tags. */
static void test_receiver_table(void **state)
{
	enum { SENDERS = 200 };
	struct wire_auth_key *prep, *other;
	struct wire_codec c = {.key = key_a, .max_datagram = 1400, .max_msgs = 64, .max_string = 256};
	struct wire_codec cb = c;
	static uint8_t nonce[SENDERS][16];
	uint8_t tag[WIRE_TAG_BYTES], bad[WIRE_TAG_BYTES];
	uint64_t passed = 0;

	(void)state;
	assert_int_equal(wire__auth_prepare(key_a, &prep), 0);
	assert_int_equal(wire__auth_prepare(key_b, &other), 0);
	c.auth = prep;
	cb.key = key_b;
	cb.auth = other;
	randombytes_buf(nonce, sizeof(nonce));
	for (int round = 0; round < 6; round++) {
		for (int i = 0; i < SENDERS; i++) {
			/* Sometimes in order, sometimes one sender again and again. */
			int s = round % 2 ? (i * 7 + round) % SENDERS : i / 4;
			nonce[s][8]++; /* the sender's counter moves */
			sodium_tag(key_a, nonce[s], text, TEXT_LEN, tag);
			assert_int_equal(wire__codec_verify(&c, text, TEXT_LEN, tag), 0);
			passed++;
			/* The same sender, its subkey now kept: a flipped bit fails. */
			memcpy(bad, tag, sizeof(bad));
			bad[16 + (i % 16)] ^= 0x01;
			assert_int_equal(wire__codec_verify(&c, text, TEXT_LEN, bad), -EBADMSG);
			assert_int_equal(wire__codec_verify(&c, text, TEXT_LEN - 1, tag), -EBADMSG);
			/* A forgery from a new prefix in any slot, then the sender. */
			memcpy(bad, tag, sizeof(bad));
			randombytes_buf(bad, 8);
			assert_int_equal(wire__codec_verify(&c, text, TEXT_LEN, bad), -EBADMSG);
			assert_int_equal(wire__codec_verify(&c, text, TEXT_LEN, tag), 0);
			/* Twice under the wrong key: the kept subkey is key_b's. */
			assert_int_equal(wire__codec_verify(&cb, text, TEXT_LEN, tag), -EBADMSG);
			assert_int_equal(wire__codec_verify(&cb, text, TEXT_LEN, tag), -EBADMSG);
		}
	}
	assert_int_equal(passed, 6 * SENDERS);
	wire__auth_free(prep);
	wire__auth_free(other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tag_is_xchacha),
	    cmocka_unit_test(test_receiver_table),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
