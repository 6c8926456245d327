/*
 * lib/wire: datagram authentication with the site key (envelope "v":3).
 *
 * The 32 bytes after a datagram's JSON are a 16-byte nonce and a 16-byte
 * Poly1305 tag: XChaCha20-Poly1305 (libsodium's IETF AEAD) with the JSON as
 * associated data and nothing to encrypt, under a MAC key derived once from
 * the site key. Each datagram's nonce gives its own Poly1305 key (the first
 * ChaCha20 block under the derived key and that nonce), as the construction
 * requires; a nonce is never used twice: 8 random bytes drawn when the
 * process first sends (again in a forked child), then a counter.
 *
 * The 16 bytes on the wire are that prefix and that counter; the 24-byte
 * XChaCha20 nonce is the prefix, 8 zero bytes, then the counter ("v":3).
 * So the part that goes through HChaCha20 (the first 16 bytes) is the same
 * for every datagram a process sends, and so is the subkey it gives: the
 * sender computes it once per prefix, a receiver keeps the subkeys of the
 * prefixes it saw last (a small table in the prepared key), and a datagram
 * then costs one ChaCha20 block and Poly1305, not HChaCha20 on top (about
 * 1,100 instructions of 3,900 for a 200-byte datagram, on each side;
 * BENCHMARKS.md "Session 10: round trip"). The Poly1305 part after that
 * block is tag.c's, written for short datagrams (the same bytes as
 * libsodium's AEAD call; "Session 11"). The tag is XChaCha20-Poly1305's
 * under that nonce exactly (test_wire_auth checks it against libsodium's own
 * XChaCha20 call); "v":2 put the counter into the HChaCha20 part.
 *
 * XChaCha20-Poly1305 replaced HMAC-SHA-512-256 (crypto_auth, "v":1) because
 * it costs less: 0.5-0.7 us for a 1,400-byte datagram against 3.8-4.6 us
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

#include "wire/tag.h"
#include "wire/wire.h"

#define NONCE_BYTES  16
#define PREFIX_BYTES 8
#define MAC_BYTES    crypto_aead_chacha20poly1305_ietf_ABYTES
#define SUB_BYTES    crypto_aead_chacha20poly1305_ietf_KEYBYTES
/* Senders whose subkeys a receiver keeps: direct-mapped by prefix. A miss
 * costs what every datagram cost before (one HChaCha20); the table fills
 * the page sodium_malloc() takes for the key anyway. */
#define RX_SLOTS 64

_Static_assert(WIRE_TAG_BYTES == NONCE_BYTES + MAC_BYTES, "a tag is a nonce and a Poly1305 tag");
_Static_assert(WIRE_KEY_BYTES == crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "WIRE_KEY_BYTES");
_Static_assert(crypto_core_hchacha20_INPUTBYTES == 16 && crypto_aead_chacha20poly1305_ietf_NPUBBYTES == 12 &&
                   crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == 24,
               "XChaCha20: HChaCha20 of the first 16 nonce bytes, then ChaCha20 with 4 zero bytes and the last 8");
_Static_assert(MAC_BYTES == crypto_aead_xchacha20poly1305_ietf_ABYTES, "the same Poly1305 tag");

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
static uint8_t nonce_prefix[PREFIX_BYTES];
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

/* The next nonce as it goes on the wire (prefix, counter little-endian). */
static void next_nonce(uint8_t wire[NONCE_BYTES])
{
	uint64_t n;

	if (!atomic_load_explicit(&nonce_ready, memory_order_acquire)) {
		/* Two threads may both draw: either prefix is as good. */
		randombytes_buf(nonce_prefix, sizeof(nonce_prefix));
		atomic_store(&nonce_counter, 0);
		atomic_store_explicit(&nonce_ready, true, memory_order_release);
	}
	n = atomic_fetch_add(&nonce_counter, 1);
	memcpy(wire, nonce_prefix, PREFIX_BYTES);
	for (int i = 0; i < 8; i++)
		wire[PREFIX_BYTES + i] = (uint8_t)(n >> (8 * i));
}

/* The MAC key, and the HChaCha20 subkeys worth keeping: this process's
 * (for sending) and the last senders' (for receiving). A prepared key is
 * used by one thread at a time (a node's engine). */
struct wire_auth_key {
	uint8_t k[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
	bool tx_ok;                    /* tx_sub is the subkey of tx_prefix */
	uint8_t tx_prefix[PREFIX_BYTES];
	uint8_t tx_sub[SUB_BYTES];
	struct {
		bool used;
		uint8_t prefix[PREFIX_BYTES];
		uint8_t sub[SUB_BYTES];
	} rx[RX_SLOTS];
};

static void derive(const uint8_t key[WIRE_KEY_BYTES], uint8_t k[crypto_aead_xchacha20poly1305_ietf_KEYBYTES])
{
	crypto_generichash(k, crypto_aead_xchacha20poly1305_ietf_KEYBYTES, (const unsigned char *)kdf_context,
	                   sizeof(kdf_context) - 1, key, WIRE_KEY_BYTES);
}

/* XChaCha20's subkey for a prefix: HChaCha20 of the prefix and 8 zeros. */
static void subkey(const uint8_t *k, const uint8_t prefix[PREFIX_BYTES], uint8_t sub[SUB_BYTES])
{
	uint8_t in[crypto_core_hchacha20_INPUTBYTES] = {0};

	memcpy(in, prefix, PREFIX_BYTES);
	crypto_core_hchacha20(sub, in, k, NULL);
}

/* ChaCha20's nonce: 4 zero bytes and the counter (the wire's last 8). */
static void chacha_nonce(const uint8_t wire[NONCE_BYTES], uint8_t npub[TAG_NONCE_BYTES])
{
	memset(npub, 0, 4);
	memcpy(npub + 4, wire + PREFIX_BYTES, NONCE_BYTES - PREFIX_BYTES);
}

static void tag_sub(const uint8_t sub[SUB_BYTES], const void *data, size_t len, uint8_t tag[WIRE_TAG_BYTES])
{
	uint8_t npub[TAG_NONCE_BYTES];

	chacha_nonce(tag, npub);
	/* Nothing to encrypt: the tag of the empty message (tag.c). */
	wire__tag_aead(tag + NONCE_BYTES, sub, npub, data, len, NULL, 0);
}

static int verify_sub(const uint8_t sub[SUB_BYTES], const void *data, size_t len,
                      const uint8_t tag[WIRE_TAG_BYTES])
{
	uint8_t npub[TAG_NONCE_BYTES];

	chacha_nonce(tag, npub);
	/* Compares the Poly1305 tag in constant time. */
	return wire__tag_aead_verify(tag + NONCE_BYTES, sub, npub, data, len, NULL, 0);
}

static void tag_with(struct wire_auth_key *k, const void *data, size_t len, uint8_t tag[WIRE_TAG_BYTES])
{
	next_nonce(tag);
	/* The prefix just written decides, not a flag of the process: a new
	 * one (after fork(), or drawn by another thread) gets its subkey. */
	if (!k->tx_ok || memcmp(k->tx_prefix, tag, PREFIX_BYTES) != 0) {
		subkey(k->k, tag, k->tx_sub);
		memcpy(k->tx_prefix, tag, PREFIX_BYTES);
		k->tx_ok = true;
	}
	tag_sub(k->tx_sub, data, len, tag);
}

static int verify_with(struct wire_auth_key *k, const void *data, size_t len, const uint8_t tag[WIRE_TAG_BYTES])
{
	uint64_t p;
	unsigned slot;

	memcpy(&p, tag, sizeof(p));
	p *= 0x9e3779b97f4a7c15u;
	slot = (unsigned)(p >> 58) % RX_SLOTS;
	/* A forged datagram may take a slot: it costs the HChaCha20 that every
	 * datagram cost before, and the next real one from that sender the same. */
	if (!k->rx[slot].used || memcmp(k->rx[slot].prefix, tag, PREFIX_BYTES) != 0) {
		subkey(k->k, tag, k->rx[slot].sub);
		memcpy(k->rx[slot].prefix, tag, PREFIX_BYTES);
		k->rx[slot].used = true;
	}
	return verify_sub(k->rx[slot].sub, data, len, tag);
}

int wire__auth_tag(const uint8_t *key, const void *data, size_t len, uint8_t tag[WIRE_TAG_BYTES])
{
	uint8_t k[crypto_aead_xchacha20poly1305_ietf_KEYBYTES], sub[SUB_BYTES];
	int r = auth_init();

	if (r < 0)
		return r;
	derive(key, k);
	next_nonce(tag);
	subkey(k, tag, sub);
	tag_sub(sub, data, len, tag);
	sodium_memzero(k, sizeof(k));
	sodium_memzero(sub, sizeof(sub));
	return 0;
}

int wire__auth_verify(const uint8_t *key, const void *data, size_t len, const uint8_t tag[WIRE_TAG_BYTES])
{
	uint8_t k[crypto_aead_xchacha20poly1305_ietf_KEYBYTES], sub[SUB_BYTES];
	int r = auth_init();

	if (r < 0)
		return r;
	derive(key, k);
	subkey(k, tag, sub);
	r = verify_sub(sub, data, len, tag);
	sodium_memzero(k, sizeof(k));
	sodium_memzero(sub, sizeof(sub));
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
	memset(k, 0, sizeof(*k));
	derive(key, k->k);
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
