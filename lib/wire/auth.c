/*
 * lib/wire: datagram authentication with the site key (envelope "v":2).
 *
 * The 32 bytes after a datagram's JSON are a 16-byte nonce and a 16-byte
 * Poly1305 tag: XChaCha20-Poly1305 (libsodium's IETF AEAD) with the JSON as
 * associated data and nothing to encrypt, under a MAC key derived once from
 * the site key. Each datagram's nonce gives its own Poly1305 key (the first
 * ChaCha20 block under the derived key and that nonce), as the construction
 * requires; a nonce is never used twice: 8 random bytes drawn when the
 * process first sends (again in a forked child), then a counter.
 *
 * It replaced HMAC-SHA-512-256 (crypto_auth, "v":1) because it costs less:
 * 0.5-0.7 us for a 1,400-byte datagram against 3.8-4.6 us
 * (thingsync-wirebench), and the tag was the largest item in the profile of
 * a batched owner (BENCHMARKS.md). Replay and boot binding are the
 * envelope's (boot, seq, to_boot), which the tag covers as before.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "wire/wire.h"

#define NONCE_BYTES 16
#define MAC_BYTES   crypto_aead_xchacha20poly1305_ietf_ABYTES

_Static_assert(WIRE_TAG_BYTES == NONCE_BYTES + MAC_BYTES, "a tag is a nonce and a Poly1305 tag");
_Static_assert(WIRE_KEY_BYTES == crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "WIRE_KEY_BYTES");

/* What the MAC key is derived with: another use of the site key (the signed
 * HTTP requests' HMAC) never sees the same key. */
static const char kdf_context[] = "thingsync wire v2: XChaCha20-Poly1305 MAC key";

/*
 * Applications are expected to call sodium_init() themselves, but a library
 * that cannot be sure of it does it once, lazily: sodium_init() is idempotent
 * and thread-safe, and the flag only spares the hot path its mutex.
 */
static atomic_bool sodium_ready;

/* The nonces of this process: a random prefix, a counter after it. A child
 * of fork() must not repeat its parent's: it draws a new prefix. */
static atomic_bool nonce_ready;
static uint8_t nonce_prefix[8];
static atomic_uint_fast64_t nonce_counter;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void nonce_forked(void)
{
	atomic_store(&nonce_ready, false);
}

static void nonce_register(void)
{
	(void)pthread_atfork(NULL, NULL, nonce_forked);
}

static int auth_init(void)
{
	if (atomic_load_explicit(&sodium_ready, memory_order_acquire))
		return 0;
	if (sodium_init() < 0)
		return -EIO;
	pthread_once(&atfork_once, nonce_register);
	atomic_store_explicit(&sodium_ready, true, memory_order_release);
	return 0;
}

static void next_nonce(uint8_t nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES])
{
	uint64_t n;

	if (!atomic_load_explicit(&nonce_ready, memory_order_acquire)) {
		/* Two threads may both draw: either prefix is as good. */
		randombytes_buf(nonce_prefix, sizeof(nonce_prefix));
		atomic_store(&nonce_counter, 0);
		atomic_store_explicit(&nonce_ready, true, memory_order_release);
	}
	n = atomic_fetch_add(&nonce_counter, 1);
	memset(nonce, 0, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
	memcpy(nonce, nonce_prefix, sizeof(nonce_prefix));
	for (int i = 0; i < 8; i++)
		nonce[8 + i] = (uint8_t)(n >> (8 * i));
}

struct wire_auth_key {
	uint8_t k[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
};

static void derive(const uint8_t key[WIRE_KEY_BYTES], struct wire_auth_key *out)
{
	crypto_generichash(out->k, sizeof(out->k), (const unsigned char *)kdf_context, sizeof(kdf_context) - 1,
	                   key, WIRE_KEY_BYTES);
}

/* The 16-byte nonce on the wire, as the 24 bytes XChaCha20 takes. */
static void full_nonce(const uint8_t *wire, uint8_t nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES])
{
	memset(nonce, 0, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
	memcpy(nonce, wire, NONCE_BYTES);
}

static void tag_with(const struct wire_auth_key *k, const void *data, size_t len, uint8_t tag[WIRE_TAG_BYTES])
{
	uint8_t nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES], none[1] = {0};

	next_nonce(nonce);
	memcpy(tag, nonce, NONCE_BYTES);
	/* Nothing to encrypt: `none` only stands for the empty message. */
	crypto_aead_xchacha20poly1305_ietf_encrypt_detached(none, tag + NONCE_BYTES, NULL, none, 0, data, len, NULL,
	                                                    nonce, k->k);
}

static int verify_with(const struct wire_auth_key *k, const void *data, size_t len,
                       const uint8_t tag[WIRE_TAG_BYTES])
{
	uint8_t nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES], none[1] = {0};

	full_nonce(tag, nonce);
	/* Compares the Poly1305 tag in constant time. */
	if (crypto_aead_xchacha20poly1305_ietf_decrypt_detached(none, NULL, none, 0, tag + NONCE_BYTES, data, len,
	                                                        nonce, k->k) != 0)
		return -EBADMSG;
	return 0;
}

int wire__auth_tag(const uint8_t *key, const void *data, size_t len, uint8_t tag[WIRE_TAG_BYTES])
{
	struct wire_auth_key k;
	int r = auth_init();

	if (r < 0)
		return r;
	derive(key, &k);
	tag_with(&k, data, len, tag);
	sodium_memzero(&k, sizeof(k));
	return 0;
}

int wire__auth_verify(const uint8_t *key, const void *data, size_t len, const uint8_t tag[WIRE_TAG_BYTES])
{
	struct wire_auth_key k;
	int r = auth_init();

	if (r < 0)
		return r;
	derive(key, &k);
	r = verify_with(&k, data, len, tag);
	sodium_memzero(&k, sizeof(k));
	return r;
}

int wire__auth_prepare(const uint8_t key[WIRE_KEY_BYTES], struct wire_auth_key **ret)
{
	struct wire_auth_key *k;
	int r = auth_init();

	if (r < 0)
		return r;
	k = sodium_malloc(sizeof(*k)); /* guarded, and wiped when freed */
	if (!k)
		return -ENOMEM;
	derive(key, k);
	*ret = k;
	return 0;
}

void wire__auth_free(struct wire_auth_key *k)
{
	if (k)
		sodium_free(k);
}

int wire__codec_tag(const struct wire_codec *c, const void *data, size_t len, uint8_t tag[WIRE_TAG_BYTES])
{
	if (!c->auth)
		return wire__auth_tag(c->key, data, len, tag);
	tag_with(c->auth, data, len, tag);
	return 0;
}

int wire__codec_verify(const struct wire_codec *c, const void *data, size_t len,
                       const uint8_t tag[WIRE_TAG_BYTES])
{
	if (!c->auth)
		return wire__auth_verify(c->key, data, len, tag);
	return verify_with(c->auth, data, len, tag);
}
