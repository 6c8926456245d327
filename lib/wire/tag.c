/*
 * lib/wire: the Poly1305 part of the datagram tag (auth.c), by hand.
 *
 * What it computes is exactly ChaCha20-Poly1305's tag (RFC 8439 section
 * 2.8): the one-time key is the first 32 bytes of ChaCha20 block 0 under
 * the key and nonce, and Poly1305 runs over the associated data padded to
 * 16 bytes, the ciphertext padded likewise, then both lengths as 64-bit
 * little-endian numbers. auth.c calls it with the datagram's JSON as the
 * associated data and an empty message, so the bytes on the wire are the
 * ones libsodium's crypto_aead_chacha20poly1305_ietf_encrypt_detached()
 * gives, "v":3 unchanged.
 *
 * Why by hand: a datagram of the round trip is 110-200 bytes of JSON, and
 * for that size libsodium's AEAD call cost about 2,670 instructions a tag
 * (callgrind), 45 % of each side's round trip: its Poly1305 is the SSE2 one
 * set up for long messages (powers of r, two blocks a step, a buffer),
 * reached through eight update calls for the padding and lengths. Plain
 * scalar Poly1305 on the padded blocks in place costs 1,600 for 170 bytes
 * (BENCHMARKS.md "Session 11: round trip"): two 64-bit limbs and 128-bit
 * products where the compiler has them (as OpenSSL's scalar code), five
 * 26-bit limbs with 64-bit products otherwise (poly1305-donna-32, as on the
 * Pi's 32-bit ARM). The ChaCha20 block stays libsodium's
 * (crypto_stream_chacha20_ietf(), vectorised), as do the key derivation,
 * HChaCha20 and the random nonce prefixes (auth.c).
 *
 * How it is checked: test_wire_tag compares every tag with libsodium's for
 * random keys and nonces, every length 0..300 and random ones to 2,000,
 * both Poly1305 variants with crypto_onetimeauth_poly1305(), and the RFC
 * 8439 vectors (2.5.2, 2.6.2, 2.8.2, A.3); test_wire_tag_32 runs it with
 * only the 26-bit limbs, as a 32-bit target builds this file; fuzz_wire_tag
 * does the same on the fuzzer's inputs. Branches and memory accesses
 * depend on lengths only, never on the key or the data; a tag is checked
 * with crypto_verify_16(); the one-time key and the state are wiped after
 * use.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "wire/tag.h"

_Static_assert(TAG_KEY_BYTES == crypto_stream_chacha20_ietf_KEYBYTES, "ChaCha20 key");
_Static_assert(TAG_NONCE_BYTES == crypto_stream_chacha20_ietf_NONCEBYTES, "ChaCha20 IETF nonce");
_Static_assert(TAG_MAC_BYTES == crypto_aead_chacha20poly1305_ietf_ABYTES, "Poly1305 tag");

static uint32_t load32_le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void store32_le(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void store64_le(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(p, &v, sizeof(v));
#else
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
#endif
}

/* --- Poly1305, five 26-bit limbs (poly1305-donna-32) ---------------------- */

#define M26 0x3ffffffu

struct poly32 {
	uint32_t r[5], h[5], pad[4];
};

static void poly32_init(struct poly32 *st, const uint8_t k[32])
{
	st->r[0] = load32_le(k + 0) & 0x3ffffff;
	st->r[1] = (load32_le(k + 3) >> 2) & 0x3ffff03;
	st->r[2] = (load32_le(k + 6) >> 4) & 0x3ffc0ff;
	st->r[3] = (load32_le(k + 9) >> 6) & 0x3f03fff;
	st->r[4] = (load32_le(k + 12) >> 8) & 0x00fffff;
	memset(st->h, 0, sizeof(st->h));
	for (int i = 0; i < 4; i++)
		st->pad[i] = load32_le(k + 16 + 4 * i);
}

/* n 16-byte blocks; hibit is 2^128 in the top limb (1 << 24), or 0 for a
 * last partial block that carries its own 1 byte. */
static void poly32_blocks(struct poly32 *st, const uint8_t *m, size_t n, uint32_t hibit)
{
	const uint32_t r0 = st->r[0], r1 = st->r[1], r2 = st->r[2], r3 = st->r[3], r4 = st->r[4];
	const uint32_t s1 = r1 * 5, s2 = r2 * 5, s3 = r3 * 5, s4 = r4 * 5;
	uint32_t h0 = st->h[0], h1 = st->h[1], h2 = st->h[2], h3 = st->h[3], h4 = st->h[4], c;
	uint64_t d0, d1, d2, d3, d4;

	for (; n > 0; n--, m += 16) {
		h0 += load32_le(m + 0) & M26;
		h1 += (load32_le(m + 3) >> 2) & M26;
		h2 += (load32_le(m + 6) >> 4) & M26;
		h3 += (load32_le(m + 9) >> 6) & M26;
		h4 += (load32_le(m + 12) >> 8) | hibit;

		d0 = (uint64_t)h0 * r0 + (uint64_t)h1 * s4 + (uint64_t)h2 * s3 + (uint64_t)h3 * s2 +
		     (uint64_t)h4 * s1;
		d1 = (uint64_t)h0 * r1 + (uint64_t)h1 * r0 + (uint64_t)h2 * s4 + (uint64_t)h3 * s3 +
		     (uint64_t)h4 * s2;
		d2 = (uint64_t)h0 * r2 + (uint64_t)h1 * r1 + (uint64_t)h2 * r0 + (uint64_t)h3 * s4 +
		     (uint64_t)h4 * s3;
		d3 = (uint64_t)h0 * r3 + (uint64_t)h1 * r2 + (uint64_t)h2 * r1 + (uint64_t)h3 * r0 +
		     (uint64_t)h4 * s4;
		d4 = (uint64_t)h0 * r4 + (uint64_t)h1 * r3 + (uint64_t)h2 * r2 + (uint64_t)h3 * r1 +
		     (uint64_t)h4 * r0;

		c = (uint32_t)(d0 >> 26);
		h0 = (uint32_t)d0 & M26;
		d1 += c;
		c = (uint32_t)(d1 >> 26);
		h1 = (uint32_t)d1 & M26;
		d2 += c;
		c = (uint32_t)(d2 >> 26);
		h2 = (uint32_t)d2 & M26;
		d3 += c;
		c = (uint32_t)(d3 >> 26);
		h3 = (uint32_t)d3 & M26;
		d4 += c;
		c = (uint32_t)(d4 >> 26);
		h4 = (uint32_t)d4 & M26;
		h0 += c * 5;
		c = h0 >> 26;
		h0 &= M26;
		h1 += c;
	}
	st->h[0] = h0;
	st->h[1] = h1;
	st->h[2] = h2;
	st->h[3] = h3;
	st->h[4] = h4;
}

static void poly32_finish(struct poly32 *st, uint8_t mac[16])
{
	uint32_t h0 = st->h[0], h1 = st->h[1], h2 = st->h[2], h3 = st->h[3], h4 = st->h[4];
	uint32_t g0, g1, g2, g3, g4, c, mask;
	uint64_t f;

	/* Carry fully, then h - p if h >= p, chosen by a mask. */
	c = h1 >> 26;
	h1 &= M26;
	h2 += c;
	c = h2 >> 26;
	h2 &= M26;
	h3 += c;
	c = h3 >> 26;
	h3 &= M26;
	h4 += c;
	c = h4 >> 26;
	h4 &= M26;
	h0 += c * 5;
	c = h0 >> 26;
	h0 &= M26;
	h1 += c;

	g0 = h0 + 5;
	c = g0 >> 26;
	g0 &= M26;
	g1 = h1 + c;
	c = g1 >> 26;
	g1 &= M26;
	g2 = h2 + c;
	c = g2 >> 26;
	g2 &= M26;
	g3 = h3 + c;
	c = g3 >> 26;
	g3 &= M26;
	g4 = h4 + c - (1u << 26);

	mask = (g4 >> 31) - 1; /* all ones if g4 did not go below 0: h >= p */
	h0 = (h0 & ~mask) | (g0 & mask);
	h1 = (h1 & ~mask) | (g1 & mask);
	h2 = (h2 & ~mask) | (g2 & mask);
	h3 = (h3 & ~mask) | (g3 & mask);
	h4 = (h4 & ~mask) | (g4 & mask);

	/* h mod 2^128, plus the pad. */
	h0 = h0 | (h1 << 26);
	h1 = (h1 >> 6) | (h2 << 20);
	h2 = (h2 >> 12) | (h3 << 14);
	h3 = (h3 >> 18) | (h4 << 8);
	f = (uint64_t)h0 + st->pad[0];
	store32_le(mac + 0, (uint32_t)f);
	f = (uint64_t)h1 + st->pad[1] + (f >> 32);
	store32_le(mac + 4, (uint32_t)f);
	f = (uint64_t)h2 + st->pad[2] + (f >> 32);
	store32_le(mac + 8, (uint32_t)f);
	f = (uint64_t)h3 + st->pad[3] + (f >> 32);
	store32_le(mac + 12, (uint32_t)f);
}

/* --- Poly1305, two 64-bit limbs and a few bits (as OpenSSL's scalar code) - */

#if WIRE_POLY1305_64
__extension__ typedef unsigned __int128 u128; /* GCC and clang, 64-bit targets */

static uint64_t load64_le(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return v;
#else
	return (uint64_t)load32_le(p) | (uint64_t)load32_le(p + 4) << 32;
#endif
}

/* h = h0 + h1 2^64 + h2 2^128, kept below 5 2^128 between blocks (only
 * partly reduced mod p = 2^130 - 5); r = r0 + r1 2^64, clamped, so r1 is a
 * multiple of 4 and h1 r1 2^128 = h1 (r1 / 4) 2^130, which is h1 s1 mod p
 * with s1 = 5 r1 / 4. */
struct poly64 {
	uint64_t r0, r1, h0, h1, h2, pad0, pad1;
};

static void poly64_init(struct poly64 *st, const uint8_t k[32])
{
	st->r0 = load64_le(k) & 0x0ffffffc0fffffffull;
	st->r1 = load64_le(k + 8) & 0x0ffffffc0ffffffcull;
	st->h0 = st->h1 = st->h2 = 0;
	st->pad0 = load64_le(k + 16);
	st->pad1 = load64_le(k + 24);
}

/* hibit: 1 for a full block (2^128 added), 0 for a last partial one that
 * carries its own 1 byte. */
static void poly64_blocks(struct poly64 *st, const uint8_t *m, size_t n, uint64_t hibit)
{
	const uint64_t r0 = st->r0, r1 = st->r1, s1 = r1 + (r1 >> 2);
	uint64_t h0 = st->h0, h1 = st->h1, h2 = st->h2, c, m0, m1;
	u128 d0, d1;

	/* Carries as comparisons: GCC spills 128-bit sums of 64-bit halves. */
	for (; n > 0; n--, m += 16) {
		m0 = load64_le(m);
		m1 = load64_le(m + 8);
		h0 += m0;
		c = h0 < m0;
		h1 += c;
		c = h1 < c;
		h1 += m1;
		c += h1 < m1;
		h2 += c + hibit;

		/* h2 < 8 and r0, s1 < 2^61: the products cannot overflow. */
		d0 = (u128)h0 * r0 + (u128)h1 * s1;
		d1 = (u128)h0 * r1 + (u128)h1 * r0 + (u128)(h2 * s1) + (uint64_t)(d0 >> 64);
		h2 = h2 * r0 + (uint64_t)(d1 >> 64);
		h0 = (uint64_t)d0;
		h1 = (uint64_t)d1;

		/* The bits from 2^130 up, times 5, back into the bottom. */
		c = (h2 & ~3ull) + (h2 >> 2);
		h2 &= 3;
		h0 += c;
		c = h0 < c;
		h1 += c;
		h2 += h1 < c;
	}
	st->h0 = h0;
	st->h1 = h1;
	st->h2 = h2;
}

static void poly64_finish(struct poly64 *st, uint8_t mac[16])
{
	uint64_t g0, g1, g2, mask;
	u128 t;

	/* h + 5 reaches 2^130 exactly when h >= p (h < 2p): then h - p is
	 * h + 5 mod 2^128. Chosen by a mask. */
	t = (u128)st->h0 + 5;
	g0 = (uint64_t)t;
	t = (u128)st->h1 + (uint64_t)(t >> 64);
	g1 = (uint64_t)t;
	g2 = st->h2 + (uint64_t)(t >> 64);
	mask = 0 - (g2 >> 2);
	g0 = (st->h0 & ~mask) | (g0 & mask);
	g1 = (st->h1 & ~mask) | (g1 & mask);

	/* Plus the pad, mod 2^128. */
	t = (u128)g0 + st->pad0;
	g0 = (uint64_t)t;
	g1 = g1 + st->pad1 + (uint64_t)(t >> 64);
	store64_le(mac, g0);
	store64_le(mac + 8, g1);
}

/* --- Poly1305, four blocks at a time (AVX2) ----------------------------------
 *
 * A throughput datagram is about 1,400 bytes, 85 blocks, and the scalar
 * loop above costs about 55 instructions a block: the tag was 40 % of the
 * instructions of an update with 10 users, on both sides (BENCHMARKS.md
 * "Session 13: 10 users"). With four lanes, lane j takes blocks j, j + 4,
 * j + 8, ...: h r^n + B_0 r^n + ... + B_{n-1} r is, with A_j = h [j = 0] +
 * B_j and A <- A r^4 + (the next four blocks) K - 1 times (K = n / 4),
 * the sum of A_j r^(4-j). Five 26-bit limbs a lane (as poly32), 64-bit
 * products, 20-odd instructions a block. The state goes in and out as
 * poly64's (h0, h1, h2), so a segment is the vector part for its whole
 * groups of four, then the scalar loop for the rest: the same h as the
 * scalar loop gives, as a number mod p (the representation may differ
 * below 5 2^128, which poly64_finish() reduces). Branches and memory
 * accesses depend on lengths only. Chosen at run time when the CPU has
 * AVX2 (wire__tag_simd()); test_wire_tag checks both against libsodium. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(WIRE_TAG_NO_SIMD)
#define WIRE_POLY_AVX2 1
#include <immintrin.h>

/* Below this many blocks the powers of r cost more than the lanes save. */
#define AVX2_MIN_BLOCKS 32

/* a * b mod p, five 26-bit limbs each (each below 2^27), carried so that
 * every limb of the result is below 2^26 but the second (below 2^26 + 64). */
static void mul26(uint64_t o[5], const uint64_t a[5], const uint64_t b[5])
{
	const uint64_t s1 = b[1] * 5, s2 = b[2] * 5, s3 = b[3] * 5, s4 = b[4] * 5;
	uint64_t d0, d1, d2, d3, d4, c;

	d0 = a[0] * b[0] + a[1] * s4 + a[2] * s3 + a[3] * s2 + a[4] * s1;
	d1 = a[0] * b[1] + a[1] * b[0] + a[2] * s4 + a[3] * s3 + a[4] * s2;
	d2 = a[0] * b[2] + a[1] * b[1] + a[2] * b[0] + a[3] * s4 + a[4] * s3;
	d3 = a[0] * b[3] + a[1] * b[2] + a[2] * b[1] + a[3] * b[0] + a[4] * s4;
	d4 = a[0] * b[4] + a[1] * b[3] + a[2] * b[2] + a[3] * b[1] + a[4] * b[0];
	c = d0 >> 26;
	d1 += c;
	c = d1 >> 26;
	d2 += c;
	c = d2 >> 26;
	d3 += c;
	c = d3 >> 26;
	d4 += c;
	c = d4 >> 26;
	o[0] = (d0 & M26) + c * 5;
	o[1] = (d1 & M26) + (o[0] >> 26);
	o[0] &= M26;
	o[2] = d2 & M26;
	o[3] = d3 & M26;
	o[4] = d4 & M26;
}

/* A number below 2^131 from poly64's radix to 26-bit limbs (the top one
 * takes what is above 2^104). */
static void limbs_of(uint64_t l[5], uint64_t lo, uint64_t hi, uint64_t top)
{
	l[0] = lo & M26;
	l[1] = (lo >> 26) & M26;
	l[2] = ((lo >> 52) | (hi << 12)) & M26;
	l[3] = (hi >> 14) & M26;
	l[4] = (hi >> 40) | (top << 24);
}

/* Five vectors of limbs times five (and the four times 5), lane by lane,
 * carried as in poly32_blocks(). */
#define AVX2_MUL(h, r, s)                                                                              \
	do {                                                                                           \
		__m256i d0_, d1_, d2_, d3_, d4_, c_;                                                   \
		d0_ = _mm256_add_epi64(                                                                \
		    _mm256_add_epi64(_mm256_mul_epu32(h[0], r[0]), _mm256_mul_epu32(h[1], s[4])),      \
		    _mm256_add_epi64(_mm256_add_epi64(_mm256_mul_epu32(h[2], s[3]),                    \
		                                      _mm256_mul_epu32(h[3], s[2])),                   \
		                     _mm256_mul_epu32(h[4], s[1])));                                   \
		d1_ = _mm256_add_epi64(                                                                \
		    _mm256_add_epi64(_mm256_mul_epu32(h[0], r[1]), _mm256_mul_epu32(h[1], r[0])),      \
		    _mm256_add_epi64(_mm256_add_epi64(_mm256_mul_epu32(h[2], s[4]),                    \
		                                      _mm256_mul_epu32(h[3], s[3])),                   \
		                     _mm256_mul_epu32(h[4], s[2])));                                   \
		d2_ = _mm256_add_epi64(                                                                \
		    _mm256_add_epi64(_mm256_mul_epu32(h[0], r[2]), _mm256_mul_epu32(h[1], r[1])),      \
		    _mm256_add_epi64(_mm256_add_epi64(_mm256_mul_epu32(h[2], r[0]),                    \
		                                      _mm256_mul_epu32(h[3], s[4])),                   \
		                     _mm256_mul_epu32(h[4], s[3])));                                   \
		d3_ = _mm256_add_epi64(                                                                \
		    _mm256_add_epi64(_mm256_mul_epu32(h[0], r[3]), _mm256_mul_epu32(h[1], r[2])),      \
		    _mm256_add_epi64(_mm256_add_epi64(_mm256_mul_epu32(h[2], r[1]),                    \
		                                      _mm256_mul_epu32(h[3], r[0])),                   \
		                     _mm256_mul_epu32(h[4], s[4])));                                   \
		d4_ = _mm256_add_epi64(                                                                \
		    _mm256_add_epi64(_mm256_mul_epu32(h[0], r[4]), _mm256_mul_epu32(h[1], r[3])),      \
		    _mm256_add_epi64(_mm256_add_epi64(_mm256_mul_epu32(h[2], r[2]),                    \
		                                      _mm256_mul_epu32(h[3], r[1])),                   \
		                     _mm256_mul_epu32(h[4], r[0])));                                   \
		c_ = _mm256_srli_epi64(d0_, 26);                                                       \
		h[0] = _mm256_and_si256(d0_, m26);                                                     \
		d1_ = _mm256_add_epi64(d1_, c_);                                                       \
		c_ = _mm256_srli_epi64(d1_, 26);                                                       \
		h[1] = _mm256_and_si256(d1_, m26);                                                     \
		d2_ = _mm256_add_epi64(d2_, c_);                                                       \
		c_ = _mm256_srli_epi64(d2_, 26);                                                       \
		h[2] = _mm256_and_si256(d2_, m26);                                                     \
		d3_ = _mm256_add_epi64(d3_, c_);                                                       \
		c_ = _mm256_srli_epi64(d3_, 26);                                                       \
		h[3] = _mm256_and_si256(d3_, m26);                                                     \
		d4_ = _mm256_add_epi64(d4_, c_);                                                       \
		c_ = _mm256_srli_epi64(d4_, 26);                                                       \
		h[4] = _mm256_and_si256(d4_, m26);                                                     \
		h[0] = _mm256_add_epi64(h[0], _mm256_add_epi64(c_, _mm256_slli_epi64(c_, 2)));         \
		c_ = _mm256_srli_epi64(h[0], 26);                                                      \
		h[0] = _mm256_and_si256(h[0], m26);                                                    \
		h[1] = _mm256_add_epi64(h[1], c_);                                                     \
	} while (0)

/* Four blocks at m as limbs, lane j block j, each with 2^128 (hibit). */
#define AVX2_LOAD(b, m)                                                                                \
	do {                                                                                           \
		__m256i t0_ = _mm256_loadu_si256((const __m256i *)(const void *)(m));                  \
		__m256i t1_ = _mm256_loadu_si256((const __m256i *)(const void *)((m) + 32));           \
		__m256i lo_ = _mm256_permute4x64_epi64(_mm256_unpacklo_epi64(t0_, t1_), 0xd8);         \
		__m256i hi_ = _mm256_permute4x64_epi64(_mm256_unpackhi_epi64(t0_, t1_), 0xd8);         \
		b[0] = _mm256_and_si256(lo_, m26);                                                     \
		b[1] = _mm256_and_si256(_mm256_srli_epi64(lo_, 26), m26);                              \
		b[2] = _mm256_and_si256(                                                               \
		    _mm256_or_si256(_mm256_srli_epi64(lo_, 52), _mm256_slli_epi64(hi_, 12)), m26);     \
		b[3] = _mm256_and_si256(_mm256_srli_epi64(hi_, 14), m26);                              \
		b[4] = _mm256_or_si256(_mm256_srli_epi64(hi_, 40), hibit);                             \
	} while (0)

/* n (a multiple of 4, at least 4) full blocks at m. */
__attribute__((target("avx2"))) static void poly64_blocks_avx2(struct poly64 *st, const uint8_t *m, size_t n)
{
	const __m256i m26 = _mm256_set1_epi64x(M26), hibit = _mm256_set1_epi64x(1 << 24);
	uint64_t r[4][5], h[5], lane[5][4], c;
	__m256i R[5], S[5], A[5], B[5];
	u128 t;

	/* r, r^2, r^3, r^4. */
	limbs_of(r[0], st->r0, st->r1, 0);
	mul26(r[1], r[0], r[0]);
	mul26(r[2], r[1], r[0]);
	mul26(r[3], r[2], r[0]);
	for (int i = 0; i < 5; i++) {
		R[i] = _mm256_set1_epi64x((long long)r[3][i]);
		S[i] = _mm256_set1_epi64x((long long)(r[3][i] * 5));
	}
	limbs_of(h, st->h0, st->h1, st->h2);
	AVX2_LOAD(A, m);
	A[0] = _mm256_add_epi64(A[0], _mm256_set_epi64x(0, 0, 0, (long long)h[0]));
	A[1] = _mm256_add_epi64(A[1], _mm256_set_epi64x(0, 0, 0, (long long)h[1]));
	A[2] = _mm256_add_epi64(A[2], _mm256_set_epi64x(0, 0, 0, (long long)h[2]));
	A[3] = _mm256_add_epi64(A[3], _mm256_set_epi64x(0, 0, 0, (long long)h[3]));
	A[4] = _mm256_add_epi64(A[4], _mm256_set_epi64x(0, 0, 0, (long long)h[4]));
	for (n -= 4, m += 64; n > 0; n -= 4, m += 64) {
		AVX2_MUL(A, R, S);
		AVX2_LOAD(B, m);
		/* Written out: GCC kept a loop over A and B in memory. */
		A[0] = _mm256_add_epi64(A[0], B[0]);
		A[1] = _mm256_add_epi64(A[1], B[1]);
		A[2] = _mm256_add_epi64(A[2], B[2]);
		A[3] = _mm256_add_epi64(A[3], B[3]);
		A[4] = _mm256_add_epi64(A[4], B[4]);
	}
	/* Lane j times r^(4-j): lane 0 r^4, lane 3 r. */
	for (int i = 0; i < 5; i++) {
		R[i] = _mm256_set_epi64x((long long)r[0][i], (long long)r[1][i], (long long)r[2][i],
		                         (long long)r[3][i]);
		S[i] = _mm256_mul_epu32(R[i], _mm256_set1_epi64x(5));
	}
	AVX2_MUL(A, R, S);
	for (int i = 0; i < 5; i++)
		_mm256_storeu_si256((__m256i *)(void *)lane[i], A[i]);
	for (int i = 0; i < 5; i++)
		h[i] = lane[i][0] + lane[i][1] + lane[i][2] + lane[i][3];
	/* Carried once (each limb below 2^26 but the first, a little over),
	 * then to poly64's radix by additions, which take limbs that overlap:
	 * h stays below 2^130 + 2^30, so h2 below 5. */
	c = h[0] >> 26;
	h[0] &= M26;
	h[1] += c;
	c = h[1] >> 26;
	h[1] &= M26;
	h[2] += c;
	c = h[2] >> 26;
	h[2] &= M26;
	h[3] += c;
	c = h[3] >> 26;
	h[3] &= M26;
	h[4] += c;
	c = h[4] >> 26;
	h[4] &= M26;
	h[0] += c * 5;
	t = (u128)h[0] + ((u128)h[1] << 26) + ((u128)h[2] << 52);
	st->h0 = (uint64_t)t;
	t = (t >> 64) + ((u128)h[3] << 14) + ((u128)h[4] << 40);
	st->h1 = (uint64_t)t;
	st->h2 = (uint64_t)(t >> 64);
	sodium_memzero(r, sizeof(r));
	sodium_memzero(lane, sizeof(lane));
}

static int simd_state = -1; /* -1: not asked yet; 0, 1: off, on */

bool wire__tag_simd(int on)
{
	if (simd_state < 0 || on >= 0)
		simd_state = on != 0 && __builtin_cpu_supports("avx2"); /* on < 0: as the CPU says */
	return simd_state;
}

/* Full blocks (hibit 2^128): four at a time where they pay, the rest (and
 * every block on a CPU without AVX2) by the scalar loop. */
static void poly64_full(struct poly64 *st, const uint8_t *m, size_t n)
{
	if (n >= AVX2_MIN_BLOCKS && (simd_state > 0 || (simd_state < 0 && wire__tag_simd(-1)))) {
		size_t k = n & ~(size_t)3;
		poly64_blocks_avx2(st, m, k);
		m += 16 * k;
		n -= k;
	}
	poly64_blocks(st, m, n, 1);
}
#else
bool wire__tag_simd(int on)
{
	(void)on;
	return false;
}

static void poly64_full(struct poly64 *st, const uint8_t *m, size_t n)
{
	poly64_blocks(st, m, n, 1);
}
#endif

#define POLY        poly64
#define POLY_HIBIT  1
#define poly_init   poly64_init
#define poly_blocks poly64_blocks
#define poly_finish poly64_finish
#define poly_full   poly64_full
#else
#define POLY        poly32
#define POLY_HIBIT  (1u << 24)
#define poly_init   poly32_init
#define poly_blocks poly32_blocks
#define poly_finish poly32_finish
#define poly_full(st, m, n) poly32_blocks(st, m, n, POLY_HIBIT)

bool wire__tag_simd(int on)
{
	(void)on;
	return false;
}
#endif

/* --- the AEAD's tag ------------------------------------------------------- */

/* A segment (associated data or ciphertext), zero-padded to 16 bytes. */
static void poly_padded(struct POLY *st, const uint8_t *p, size_t len)
{
	uint8_t last[16] = {0};

	poly_full(st, p, len / 16);
	if (len % 16) {
		memcpy(last, p + len / 16 * 16, len % 16);
		poly_blocks(st, last, 1, POLY_HIBIT);
	}
}

/* What a tag computes on the stack, wiped in one go afterwards. */
struct tag_work {
	uint8_t otk[64]; /* ChaCha20 block 0: the one-time key, then unused */
	struct POLY st;
	uint8_t lens[16];
	uint8_t mac[TAG_MAC_BYTES];
};

static void aead_mac(struct tag_work *w, const uint8_t key[TAG_KEY_BYTES], const uint8_t nonce[TAG_NONCE_BYTES],
                     const void *ad, size_t adlen, const void *c, size_t clen)
{
	/* The first half of ChaCha20 block 0 (counter 0) is the one-time key.
	 * The whole block: libsodium's vectorised path takes whole blocks, and
	 * a part of one costs it more (670 instructions against 500). */
	crypto_stream_chacha20_ietf(w->otk, sizeof(w->otk), nonce, key);
	poly_init(&w->st, w->otk);
	poly_padded(&w->st, ad, adlen);
	poly_padded(&w->st, c, clen);
	store64_le(w->lens, (uint64_t)adlen);
	store64_le(w->lens + 8, (uint64_t)clen);
	poly_blocks(&w->st, w->lens, 1, POLY_HIBIT);
	poly_finish(&w->st, w->mac);
}

void wire__tag_aead(uint8_t mac[TAG_MAC_BYTES], const uint8_t key[TAG_KEY_BYTES],
                    const uint8_t nonce[TAG_NONCE_BYTES], const void *ad, size_t adlen, const void *c, size_t clen)
{
	struct tag_work w;

	aead_mac(&w, key, nonce, ad, adlen, c, clen);
	memcpy(mac, w.mac, TAG_MAC_BYTES);
	sodium_memzero(&w, sizeof(w));
}

int wire__tag_aead_verify(const uint8_t mac[TAG_MAC_BYTES], const uint8_t key[TAG_KEY_BYTES],
                          const uint8_t nonce[TAG_NONCE_BYTES], const void *ad, size_t adlen, const void *c,
                          size_t clen)
{
	struct tag_work w;
	int r;

	aead_mac(&w, key, nonce, ad, adlen, c, clen);
	r = crypto_verify_16(w.mac, mac) == 0 ? 0 : -EBADMSG;
	sodium_memzero(&w, sizeof(w));
	return r;
}

/* --- plain Poly1305, for the tests ---------------------------------------- */

/* The message's last partial block: its bytes, a 1, zeros (RFC 8439 2.5.1). */
static size_t plain_last(const uint8_t *m, size_t len, uint8_t last[16])
{
	size_t full = len / 16 * 16;

	memset(last, 0, 16);
	if (len > full) {
		memcpy(last, m + full, len - full);
		last[len - full] = 1;
	}
	return full / 16;
}

void wire__poly1305_32(uint8_t mac[TAG_MAC_BYTES], const uint8_t otk[32], const void *m, size_t len)
{
	struct poly32 st;
	uint8_t last[16];
	size_t n = plain_last(m, len, last);

	poly32_init(&st, otk);
	poly32_blocks(&st, m, n, 1u << 24);
	if (len % 16)
		poly32_blocks(&st, last, 1, 0);
	poly32_finish(&st, mac);
}

#if WIRE_POLY1305_64
void wire__poly1305_64(uint8_t mac[TAG_MAC_BYTES], const uint8_t otk[32], const void *m, size_t len)
{
	struct poly64 st;
	uint8_t last[16];
	size_t n = plain_last(m, len, last);

	poly64_init(&st, otk);
	poly64_full(&st, m, n);
	if (len % 16)
		poly64_blocks(&st, last, 1, 0);
	poly64_finish(&st, mac);
}
#endif
