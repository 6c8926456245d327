/*
 * The hand-written Poly1305 of the datagram tag (lib/wire/tag.c) against
 * libsodium on the fuzzer's keys, nonces and data: the ChaCha20-Poly1305
 * tag of (associated data, ciphertext) equals
 * crypto_aead_chacha20poly1305_ietf_encrypt_detached()'s, verify takes it
 * and refuses it with one bit flipped, and both plain Poly1305 variants
 * equal crypto_onetimeauth_poly1305().
 *
 * Everything is checked twice: with the four-lane AVX2 Poly1305 (where the
 * CPU has it; segments of 32 blocks or more) and with the scalar loop.
 *
 * Input: 32 bytes of key, 12 of nonce, 2 giving how many of the rest are
 * associated data (the others are the plaintext libsodium encrypts), then
 * the data. Shorter inputs are padded with zeros.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>

#include <sodium.h>

#include "fuzz_util.h"
#include "wire/tag.h"

#define HEAD (TAG_KEY_BYTES + TAG_NONCE_BYTES + 2)

/* The tags of one input, with the four lanes on (simd 1) or off, against
 * libsodium's: want is its AEAD tag of (rest[0..adlen), c). */
static void check_tags(int simd, const uint8_t *key, const uint8_t *nonce, const uint8_t *rest, size_t n,
                       size_t adlen, const uint8_t *c, const uint8_t *aead_want, const uint8_t *head)
{
	uint8_t want[16], got[16], none[1] = {0};

	wire__tag_simd(simd);
	memcpy(want, aead_want, 16);

	wire__tag_aead(got, key, nonce, rest, adlen, c, n - adlen);
	check(memcmp(got, want, 16) == 0);
	check(wire__tag_aead_verify(want, key, nonce, rest, adlen, c, n - adlen) == 0);
	got[head[0] % 16] ^= (uint8_t)(1u << (head[1] % 8));
	check(wire__tag_aead_verify(got, key, nonce, rest, adlen, c, n - adlen) == -EBADMSG);

	/* Nothing encrypted, all of it associated data: what the wire does. */
	crypto_aead_chacha20poly1305_ietf_encrypt_detached(none, want, NULL, none, 0, rest, n, NULL, nonce, key);
	wire__tag_aead(got, key, nonce, rest, n, NULL, 0);
	check(memcmp(got, want, 16) == 0);

	/* Plain Poly1305 with the key as its one-time key. */
	crypto_onetimeauth_poly1305(want, rest, n, key);
	wire__poly1305_32(got, key, rest, n);
	check(memcmp(got, want, 16) == 0);
#if WIRE_POLY1305_64
	wire__poly1305_64(got, key, rest, n);
	check(memcmp(got, want, 16) == 0);
#endif
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t c[1 << 16];
	uint8_t head[HEAD] = {0}, key[TAG_KEY_BYTES], nonce[TAG_NONCE_BYTES], want[16], none[1] = {0};
	const uint8_t *rest = data + (size < HEAD ? size : HEAD);
	size_t n = size < HEAD ? 0 : size - HEAD, adlen;

	if (sodium_init() < 0 || n > sizeof(c))
		return 0;
	memcpy(head, data, size < HEAD ? size : HEAD);
	memcpy(key, head, sizeof(key));
	memcpy(nonce, head + TAG_KEY_BYTES, sizeof(nonce));
	adlen = ((size_t)head[HEAD - 2] << 8 | head[HEAD - 1]) % (n + 1);

	/* The rest after the associated data, encrypted by libsodium. */
	crypto_aead_chacha20poly1305_ietf_encrypt_detached(n > adlen ? c : none, want, NULL, n > adlen ? rest + adlen : none,
	                                                   n - adlen, rest, adlen, NULL, nonce, key);
	for (int simd = 0; simd <= 1; simd++)
		check_tags(simd, key, nonce, rest, n, adlen, c, want, head);
	return 0;
}
