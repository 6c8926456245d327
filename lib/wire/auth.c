/*
 * lib/wire: datagram authentication with the site key (libsodium crypto_auth,
 * HMAC-SHA512-256).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include <sodium.h>

#include "wire/wire.h"

_Static_assert(WIRE_TAG_BYTES == crypto_auth_BYTES, "WIRE_TAG_BYTES must be crypto_auth_BYTES");
_Static_assert(WIRE_KEY_BYTES == crypto_auth_KEYBYTES, "WIRE_KEY_BYTES must be crypto_auth_KEYBYTES");

/*
 * Applications are expected to call sodium_init() themselves, but a library
 * that cannot be sure of it does it once, lazily: sodium_init() is idempotent
 * and thread-safe, and the flag only spares the hot path its mutex.
 */
static atomic_bool sodium_ready;

static int auth_init(void)
{
	if (atomic_load_explicit(&sodium_ready, memory_order_acquire))
		return 0;
	if (sodium_init() < 0)
		return -EIO;
	atomic_store_explicit(&sodium_ready, true, memory_order_release);
	return 0;
}

int wire__auth_tag(const uint8_t *key, const void *data, size_t len, uint8_t tag[WIRE_TAG_BYTES])
{
	int r = auth_init();

	if (r < 0)
		return r;
	crypto_auth(tag, data, len, key);
	return 0;
}

int wire__auth_verify(const uint8_t *key, const void *data, size_t len, const uint8_t tag[WIRE_TAG_BYTES])
{
	int r = auth_init();

	if (r < 0)
		return r;
	/* crypto_auth_verify compares in constant time. */
	if (crypto_auth_verify(tag, data, len, key) != 0)
		return -EBADMSG;
	return 0;
}

struct wire_auth_key {
	crypto_auth_hmacsha512256_state st;
};

int wire__auth_prepare(const uint8_t key[WIRE_KEY_BYTES], struct wire_auth_key **ret)
{
	struct wire_auth_key *k;
	int r = auth_init();

	if (r < 0)
		return r;
	k = sodium_malloc(sizeof(*k)); /* guarded, and wiped when freed */
	if (!k)
		return -ENOMEM;
	crypto_auth_hmacsha512256_init(&k->st, key, WIRE_KEY_BYTES);
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
	crypto_auth_hmacsha512256_state st;

	if (!c->auth)
		return wire__auth_tag(c->key, data, len, tag);
	/* HMAC's inner and outer pads were hashed once with the key; a copy of
	 * that state gives the same tag as crypto_auth(). */
	st = c->auth->st;
	crypto_auth_hmacsha512256_update(&st, data, len);
	crypto_auth_hmacsha512256_final(&st, tag);
	sodium_memzero(&st, sizeof(st));
	return 0;
}

int wire__codec_verify(const struct wire_codec *c, const void *data, size_t len,
                       const uint8_t tag[WIRE_TAG_BYTES])
{
	uint8_t good[WIRE_TAG_BYTES];
	int r;

	if (!c->auth)
		return wire__auth_verify(c->key, data, len, tag);
	r = wire__codec_tag(c, data, len, good);
	if (r < 0)
		return r;
	r = crypto_verify_32(good, tag) == 0 ? 0 : -EBADMSG; /* constant time */
	sodium_memzero(good, sizeof(good));
	return r;
}
