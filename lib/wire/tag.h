/*
 * lib/wire: the Poly1305 tag of ChaCha20-Poly1305 (RFC 8439) for the
 * datagram tag of auth.c, written for short messages (tag.c). Internal.
 * SPDX-License-Identifier: MIT
 */
#ifndef WIRE_TAG_H
#define WIRE_TAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TAG_KEY_BYTES   32 /* ChaCha20 key (auth.c: the HChaCha20 subkey) */
#define TAG_NONCE_BYTES 12 /* ChaCha20's IETF nonce */
#define TAG_MAC_BYTES   16

/* The tag of ChaCha20-Poly1305 (RFC 8439 section 2.8) with `ad` as the
 * associated data and `c` (clen bytes, may be 0) as the ciphertext:
 * crypto_aead_chacha20poly1305_ietf_encrypt_detached()'s tag, to the byte. */
void wire__tag_aead(uint8_t mac[TAG_MAC_BYTES], const uint8_t key[TAG_KEY_BYTES],
                    const uint8_t nonce[TAG_NONCE_BYTES], const void *ad, size_t adlen, const void *c,
                    size_t clen);

/* 0 if mac is that tag (compared in constant time), else -EBADMSG. */
int wire__tag_aead_verify(const uint8_t mac[TAG_MAC_BYTES], const uint8_t key[TAG_KEY_BYTES],
                          const uint8_t nonce[TAG_NONCE_BYTES], const void *ad, size_t adlen, const void *c,
                          size_t clen);

/* Plain Poly1305 (RFC 8439 section 2.5) with a one-time key: what
 * crypto_onetimeauth_poly1305() computes. The 64-bit variant exists where
 * the compiler has a 128-bit integer; the 32-bit one everywhere (the tests
 * check both; wire__tag_aead() takes the 64-bit one where it exists). */
void wire__poly1305_32(uint8_t mac[TAG_MAC_BYTES], const uint8_t otk[32], const void *m, size_t len);
#if defined(__SIZEOF_INT128__) && !defined(WIRE_TAG_ONLY_32) /* WIRE_TAG_ONLY_32: as on 32-bit targets */
#define WIRE_POLY1305_64 1
void wire__poly1305_64(uint8_t mac[TAG_MAC_BYTES], const uint8_t otk[32], const void *m, size_t len);
#endif

/* Whether the tag's Poly1305 takes four blocks at a time with AVX2 (tag.c):
 * on < 0 asks (the CPU decides, the first time); 0 turns it off and 1 on
 * where the CPU has it (the tests compare both ways). */
bool wire__tag_simd(int on);

#endif
