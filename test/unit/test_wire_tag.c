/*
 * The hand-written Poly1305 of the datagram tag (lib/wire/tag.c) against
 * libsodium and RFC 8439: the same tag as
 * crypto_aead_chacha20poly1305_ietf_encrypt_detached() for random keys and
 * nonces at every length 0..300 and random lengths to 2,000 (with and
 * without a ciphertext), both Poly1305 variants (26- and 64-bit limbs) equal
 * to crypto_onetimeauth_poly1305(), the RFC's vectors, Poly1305's edge
 * cases (all-ones keys and data, h near p), and a verify that takes exactly
 * the right tag; the four-lane (AVX2) Poly1305 and the scalar loop alike.
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

#include "wire/tag.h"

#define MAX_LEN 2000

static void hex(const char *s, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		assert_int_equal(sscanf(s + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
}

/* libsodium's tag of (ad, c) as ciphertext. ChaCha20-Poly1305 encrypts, so
 * the ciphertext c is what it produced from some plaintext: decrypting c
 * with libsodium under the same key and nonce gives that plaintext back. */
static void sodium_aead(uint8_t mac[16], const uint8_t key[32], const uint8_t nonce[12], const uint8_t *ad,
                        size_t adlen, const uint8_t *c, size_t clen)
{
	static uint8_t plain[MAX_LEN + 1], again[MAX_LEN + 1];
	unsigned long long maclen = 0;

	/* The plaintext that encrypts to c is c xor the key stream. */
	crypto_stream_chacha20_ietf_xor_ic(plain, clen ? c : plain, clen, nonce, 1, key);
	crypto_aead_chacha20poly1305_ietf_encrypt_detached(again, mac, &maclen, plain, clen, ad, adlen, NULL, nonce,
	                                                   key);
	assert_int_equal(maclen, 16);
	if (clen)
		assert_memory_equal(again, c, clen);
}

static void check_one(const uint8_t *ad, size_t adlen, const uint8_t *c, size_t clen)
{
	uint8_t key[32], nonce[12], want[16], got[16];

	randombytes_buf(key, sizeof(key));
	randombytes_buf(nonce, sizeof(nonce));
	sodium_aead(want, key, nonce, ad, adlen, c, clen);
	wire__tag_aead(got, key, nonce, ad, adlen, c, clen);
	assert_memory_equal(got, want, 16);
	assert_int_equal(wire__tag_aead_verify(want, key, nonce, ad, adlen, c, clen), 0);
	/* Any one bit of the tag flipped is refused. */
	for (int bit = 0; bit < 128; bit += 7) {
		got[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		assert_int_equal(wire__tag_aead_verify(got, key, nonce, ad, adlen, c, clen), -EBADMSG);
		got[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
}

/* Every length 0..300 of associated data with nothing to encrypt (what the
 * wire does), then random lengths to 2,000 with and without ciphertext. */
static void test_aead_matches_libsodium(void **state)
{
	static uint8_t ad[MAX_LEN], c[MAX_LEN];

	(void)state;
	for (size_t len = 0; len <= 300; len++) {
		for (int i = 0; i < 4; i++) {
			randombytes_buf(ad, len);
			check_one(len ? ad : NULL, len, NULL, 0);
		}
	}
	for (int i = 0; i < 2000; i++) {
		size_t adlen = randombytes_uniform(MAX_LEN + 1), clen = randombytes_uniform(i % 2 ? 64 : MAX_LEN + 1);
		randombytes_buf(ad, adlen);
		randombytes_buf(c, clen);
		check_one(ad, adlen, c, clen);
	}
	/* All-ones data: the largest limbs, every carry taken. */
	memset(ad, 0xff, sizeof(ad));
	memset(c, 0xff, sizeof(c));
	for (size_t len = 0; len <= 300; len += 13)
		check_one(ad, len, c, len / 3);
}

static void poly_both(const uint8_t otk[32], const uint8_t *m, size_t len, uint8_t want[16])
{
	uint8_t got[16];

	wire__poly1305_32(got, otk, m, len);
	assert_memory_equal(got, want, 16);
#if WIRE_POLY1305_64
	wire__poly1305_64(got, otk, m, len);
	assert_memory_equal(got, want, 16);
#endif
}

/* Both limb sizes against crypto_onetimeauth_poly1305 (random keys, and
 * keys and data of all ones, where carries and the final reduction bite). */
static void test_poly1305_matches_libsodium(void **state)
{
	static uint8_t m[MAX_LEN];
	uint8_t otk[32], want[16];

	(void)state;
	for (size_t len = 0; len <= 300; len++) {
		randombytes_buf(otk, sizeof(otk));
		randombytes_buf(m, len);
		crypto_onetimeauth_poly1305(want, m, len, otk);
		poly_both(otk, m, len, want);
	}
	for (int i = 0; i < 500; i++) {
		size_t len = randombytes_uniform(MAX_LEN + 1);
		randombytes_buf(otk, sizeof(otk));
		randombytes_buf(m, len);
		crypto_onetimeauth_poly1305(want, m, len, otk);
		poly_both(otk, m, len, want);
	}
	memset(otk, 0xff, sizeof(otk));
	memset(m, 0xff, sizeof(m));
	for (size_t len = 0; len <= 300; len++) {
		crypto_onetimeauth_poly1305(want, m, len, otk);
		poly_both(otk, m, len, want);
	}
	/* r = 1: the blocks just add up. 2^128 - 1, then zero blocks: the
	 * fourth block's 2^128 bits make 2^130, folded in as 5, which carries
	 * through both 64-bit limbs into the top. */
	memset(otk, 0, 16);
	otk[0] = 1;
	randombytes_buf(otk + 16, 16);
	memset(m, 0, sizeof(m));
	memset(m, 0xff, 16);
	for (size_t len = 16; len <= 160; len += 16) {
		crypto_onetimeauth_poly1305(want, m, len, otk);
		poly_both(otk, m, len, want);
	}
}

/* The four-lane Poly1305 (AVX2, where the CPU has it: tag.c) and the scalar
 * loop, each against libsodium: every length from 400 to 1,600 bytes (the
 * lanes' threshold, every remainder of blocks after the groups of four, a
 * last partial block), both segments long (the state goes into the lanes
 * and back), all-ones keys and data (the largest limbs, every carry), and
 * r = 1 with 2^128 - 1 blocks (h near p in every lane). */
static void test_four_lanes_both_ways(void **state)
{
	static uint8_t m[MAX_LEN + 64], c[MAX_LEN];
	uint8_t otk[32], want[16];

	(void)state;
	for (int on = 1; on >= 0; on--) {
		wire__tag_simd(on);
		for (size_t len = 400; len <= 1600; len++) {
			randombytes_buf(m, len);
			check_one(m, len, NULL, 0);
			randombytes_buf(otk, sizeof(otk));
			crypto_onetimeauth_poly1305(want, m, len, otk);
			poly_both(otk, m, len, want);
		}
		for (size_t len = 512; len <= MAX_LEN; len += 97) {
			randombytes_buf(m, len);
			randombytes_buf(c, len);
			check_one(m, len, c, MAX_LEN - len + 512);
		}
		memset(otk, 0xff, sizeof(otk));
		memset(m, 0xff, sizeof(m));
		memset(c, 0xff, sizeof(c));
		for (size_t len = 500; len <= MAX_LEN; len += 7) {
			crypto_onetimeauth_poly1305(want, m, len, otk);
			poly_both(otk, m, len, want);
			check_one(m, len, c, len / 2);
		}
		memset(otk, 0, 16);
		otk[0] = 1;
		randombytes_buf(otk + 16, 16);
		for (size_t len = 512; len <= MAX_LEN; len += 16) {
			crypto_onetimeauth_poly1305(want, m, len, otk);
			poly_both(otk, m, len, want);
		}
	}
	wire__tag_simd(1);
}

/* RFC 8439 2.5.2, and A.3's vectors that drive h to p and past it. */
static void test_rfc8439_poly1305(void **state)
{
	static const char *const v[][3] = {
	    /* 2.5.2 */
	    {"85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b",
	     "43727970746f6772617068696320466f72756d2052657365617263682047726f7570",
	     "a8061dc1305136c6c22b8baf0c0127a9"},
	    /* A.3 #1: all zeros */
	    {"0000000000000000000000000000000000000000000000000000000000000000",
	     "0000000000000000000000000000000000000000000000000000000000000000"
	     "0000000000000000000000000000000000000000000000000000000000000000",
	     "00000000000000000000000000000000"},
	    /* A.3 #6: h reaches p; the tag is 03 00.. */
	    {"0200000000000000000000000000000000000000000000000000000000000000",
	     "ffffffffffffffffffffffffffffffff", "03000000000000000000000000000000"},
	    /* A.3 #7 */
	    {"0100000000000000000000000000000000000000000000000000000000000000",
	     "fffffffffffffffffffffffffffffffff0ffffffffffffffffffffffffffffff"
	     "11000000000000000000000000000000",
	     "05000000000000000000000000000000"},
	    /* A.3 #9: h mod p a negative-looking value */
	    {"0200000000000000000000000000000000000000000000000000000000000000",
	     "fdffffffffffffffffffffffffffffff", "faffffffffffffffffffffffffffffff"},
	    /* A.3 #8 */
	    {"0100000000000000000000000000000000000000000000000000000000000000",
	     "fffffffffffffffffffffffffffffffffbfefefefefefefefefefefefefefefe"
	     "01010101010101010101010101010101",
	     "00000000000000000000000000000000"},
	    /* A.3 #10 and #11: the reduction's last carries */
	    {"0100000000000000040000000000000000000000000000000000000000000000",
	     "e33594d7505e43b900000000000000003394d7505e4379cd0100000000000000"
	     "0000000000000000000000000000000001000000000000000000000000000000",
	     "14000000000000005500000000000000"},
	    {"0100000000000000040000000000000000000000000000000000000000000000",
	     "e33594d7505e43b900000000000000003394d7505e4379cd0100000000000000"
	     "00000000000000000000000000000000",
	     "13000000000000000000000000000000"},
	};
	uint8_t otk[32], m[128], want[16];

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t len = strlen(v[i][1]) / 2;
		hex(v[i][0], otk, 32);
		hex(v[i][1], m, len);
		hex(v[i][2], want, 16);
		poly_both(otk, m, len, want);
	}
}

/* RFC 8439 2.6.2 (the one-time key from ChaCha20 block 0) and 2.8.2 (the
 * AEAD's tag over associated data and a ciphertext). */
static void test_rfc8439_aead(void **state)
{
	static const char ct[] = "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
	                         "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
	                         "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
	                         "3ff4def08e4b7a9de576d26586cec64b6116";
	uint8_t key[32], nonce[12], ad[12], c[sizeof(ct) / 2], mac[16], want[16], otk[32], otk_want[32];

	(void)state;
	/* 2.6.2: the Poly1305 key generation. */
	hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f", key, 32);
	hex("000000000001020304050607", nonce, 12);
	hex("8ad5a08b905f81cc815040274ab29471a833b637e3fd0da508dbb8e2fdd1a646", otk_want, 32);
	crypto_stream_chacha20_ietf(otk, sizeof(otk), nonce, key);
	assert_memory_equal(otk, otk_want, 32);
	/* 2.8.2 */
	hex("070000004041424344454647", nonce, 12);
	hex("50515253c0c1c2c3c4c5c6c7", ad, 12);
	hex(ct, c, sizeof(c));
	hex("1ae10b594f09e26a7e902ecbd0600691", want, 16);
	wire__tag_aead(mac, key, nonce, ad, sizeof(ad), c, sizeof(c));
	assert_memory_equal(mac, want, 16);
	assert_int_equal(wire__tag_aead_verify(want, key, nonce, ad, sizeof(ad), c, sizeof(c)), 0);
	ad[0] ^= 1;
	assert_int_equal(wire__tag_aead_verify(want, key, nonce, ad, sizeof(ad), c, sizeof(c)), -EBADMSG);
	ad[0] ^= 1;
	nonce[11] ^= 1;
	assert_int_equal(wire__tag_aead_verify(want, key, nonce, ad, sizeof(ad), c, sizeof(c)), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_aead_matches_libsodium),
	    cmocka_unit_test(test_poly1305_matches_libsodium),
	    cmocka_unit_test(test_four_lanes_both_ways),
	    cmocka_unit_test(test_rfc8439_poly1305),
	    cmocka_unit_test(test_rfc8439_aead),
	};
	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
