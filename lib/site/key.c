/*
 * lib/site: the site key file (libsodium crypto_auth key, stored as hex).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "site/site.h"

#define KEY_HEX_LEN (2 * SITE_KEY_BYTES)

/*
 * A key file is 64 hex characters and an optional newline. Anything longer is
 * refused, so a little more than that is enough to tell "too long" apart.
 */
#define KEY_READ_MAX (KEY_HEX_LEN + 8)

static ssize_t read_all(int fd, char *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static int write_all(int fd, const char *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(fd, buf + done, len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)n;
	}
	return 0;
}

int site__read_key(const char *path, uint8_t key[SITE_KEY_BYTES], char *errbuf, size_t errlen)
{
	char text[KEY_READ_MAX];
	struct stat st;
	size_t bin_len = 0, hex_len;
	const char *end = NULL;
	ssize_t n;
	int fd = -1;
	int r = TSYNC_EKEY;

	if (errbuf && errlen)
		errbuf[0] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		if (errno == ENOENT)
			snprintf(errbuf, errlen,
			         "key file '%s' does not exist (create one with 'thingsctl keygen')", path);
		else
			snprintf(errbuf, errlen, "cannot open key file '%s': %s", path, strerror(errno));
		goto leave;
	}
	if (fstat(fd, &st) < 0) {
		snprintf(errbuf, errlen, "cannot stat key file '%s': %s", path, strerror(errno));
		goto leave;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(errbuf, errlen, "key file '%s' is not a regular file", path);
		goto leave;
	}
	/*
	 * Checked on the open descriptor, not the path, so the file cannot be
	 * swapped between the check and the read.
	 */
	if (st.st_mode & 077) {
		snprintf(errbuf, errlen,
		         "key file '%s' is accessible by group or others (mode %04o); run 'chmod 600 %s'",
		         path, (unsigned)(st.st_mode & 07777), path);
		goto leave;
	}
	n = read_all(fd, text, sizeof(text));
	if (n < 0) {
		snprintf(errbuf, errlen, "cannot read key file '%s': %s", path, strerror((int)-n));
		goto leave;
	}
	hex_len = (size_t)n;
	if (hex_len == KEY_HEX_LEN + 1 && text[KEY_HEX_LEN] == '\n')
		hex_len = KEY_HEX_LEN;
	if (hex_len != KEY_HEX_LEN) {
		snprintf(errbuf, errlen,
		         "key file '%s' is malformed: expected %d hex characters and a newline", path,
		         KEY_HEX_LEN);
		goto leave;
	}
	if (sodium_hex2bin(key, SITE_KEY_BYTES, text, hex_len, NULL, &bin_len, &end) != 0 ||
	    bin_len != SITE_KEY_BYTES || end != text + KEY_HEX_LEN) {
		snprintf(errbuf, errlen, "key file '%s' is malformed: not %d hex characters", path,
		         KEY_HEX_LEN);
		sodium_memzero(key, SITE_KEY_BYTES);
		goto leave;
	}
	r = 0;
leave:
	sodium_memzero(text, sizeof(text));
	if (fd >= 0)
		close(fd);
	return r;
}

TSYNC_API int tsync_key_generate(const char *path)
{
	uint8_t key[SITE_KEY_BYTES];
	char hex[KEY_HEX_LEN + 2];
	bool created = false;
	int fd = -1;
	int r;

	if (!path || !*path)
		return -EINVAL;
	if (sodium_init() < 0)
		return -EIO;
	randombytes_buf(key, sizeof(key));
	sodium_bin2hex(hex, sizeof(hex), key, sizeof(key));
	hex[KEY_HEX_LEN] = '\n';
	hex[KEY_HEX_LEN + 1] = '\0';

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
	if (fd < 0) {
		r = -errno;
		goto leave;
	}
	created = true;
	/* The umask may only have narrowed 0600; make it exactly that. */
	if (fchmod(fd, 0600) < 0) {
		r = -errno;
		goto leave;
	}
	r = write_all(fd, hex, KEY_HEX_LEN + 1);
	if (r < 0)
		goto leave;
	/* A key that vanishes in a power cut would lock this controller out. */
	if (fsync(fd) < 0) {
		r = -errno;
		goto leave;
	}
	r = 0;
leave:
	if (fd >= 0 && close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0 && created)
		unlink(path);
	sodium_memzero(key, sizeof(key));
	sodium_memzero(hex, sizeof(hex));
	return r;
}

TSYNC_API int tsync_site_sign(const tsync_site *site, const void *data, size_t len, uint8_t tag[TSYNC_TAG_BYTES])
{
	if (!site || !tag || (!data && len))
		return -EINVAL;
	if (!site->has_key)
		return TSYNC_EKEY;
	if (sodium_init() < 0)
		return -EIO;
	crypto_auth(tag, data ? data : (const void *)"", len, site->key);
	return 0;
}

TSYNC_API int tsync_site_verify(const tsync_site *site, const void *data, size_t len,
                                const uint8_t tag[TSYNC_TAG_BYTES])
{
	if (!site || !tag || (!data && len))
		return -EINVAL;
	if (!site->has_key)
		return TSYNC_EKEY;
	if (sodium_init() < 0)
		return -EIO;
	return crypto_auth_verify(tag, data ? data : (const void *)"", len, site->key) == 0 ? 0 : -EBADMSG;
}

/*
 * OpenSSL's libcrypto, not libsodium's crypto_hash_sha256: the request
 * bodies pushd signs and the collector checks are hundreds of kilobytes,
 * and libsodium's SHA-256 is portable C (about 150 MB/s here, half of
 * pushd's work per measurement sent), where libcrypto uses the CPU's SHA
 * extensions or its vector code (5-10x faster). The digest is the same
 * (test_site: known vectors, and libsodium's on random inputs).
 */
TSYNC_API void tsync_sha256_hex(const void *data, size_t len, char hex[TSYNC_HEX_BYTES + 1])
{
	uint8_t h[32];

	if ((!data && len) || EVP_Digest(data ? data : (const void *)"", len, h, NULL, EVP_sha256(), NULL) != 1) {
		hex[0] = '\0';
		return;
	}
	sodium_bin2hex(hex, TSYNC_HEX_BYTES + 1, h, sizeof(h));
}

/* The text a request signature is the tag of; malloc'ed, NULL on bad input. */
static bool valid_nonce(const char *nonce)
{
	size_t n = 0;

	for (; nonce[n]; n++) {
		char c = nonce[n];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '-'))
			return false;
	}
	return n >= 1 && n <= 64;
}

static char *request_text(const char *to, const char *method, const char *target, int64_t time_s,
                          const char *nonce, const char *body_sha256, size_t *len)
{
	char *text = NULL;
	int n;

	if (!to || !method || !target || !nonce || !body_sha256 || !valid_nonce(nonce) || strchr(to, '\n') ||
	    strchr(method, '\n') || strchr(target, '\n'))
		return NULL;
	n = asprintf(&text, "thingsync-http-1\n%s\n%s\n%s\n%lld\n%s\n%s", to, method, target,
	             (long long)time_s, nonce, body_sha256);
	if (n < 0)
		return NULL;
	*len = (size_t)n;
	return text;
}

TSYNC_API int tsync_site_sign_request(const tsync_site *site, const char *to, const char *method,
                                      const char *target, int64_t time_s, const char *nonce,
                                      const char *body_sha256, char sig[TSYNC_HEX_BYTES + 1])
{
	uint8_t tag[TSYNC_TAG_BYTES];
	size_t len = 0;
	char *text;
	int r;

	if (!site || !sig)
		return -EINVAL;
	text = request_text(to, method, target, time_s, nonce, body_sha256, &len);
	if (!text)
		return -EINVAL;
	r = tsync_site_sign(site, text, len, tag);
	free(text);
	if (r < 0)
		return r;
	sodium_bin2hex(sig, TSYNC_HEX_BYTES + 1, tag, sizeof(tag));
	return 0;
}

TSYNC_API int tsync_site_verify_request(const tsync_site *site, const char *to, const char *method,
                                        const char *target, int64_t time_s, const char *nonce,
                                        const char *body_sha256, const char *sig)
{
	uint8_t tag[TSYNC_TAG_BYTES];
	size_t len = 0, bin_len = 0;
	char *text;
	int r;

	if (!site || !sig)
		return -EINVAL;
	if (strlen(sig) != TSYNC_HEX_BYTES ||
	    sodium_hex2bin(tag, sizeof(tag), sig, TSYNC_HEX_BYTES, NULL, &bin_len, NULL) != 0 ||
	    bin_len != sizeof(tag))
		return -EBADMSG;
	text = request_text(to, method, target, time_s, nonce, body_sha256, &len);
	if (!text)
		return -EINVAL;
	r = tsync_site_verify(site, text, len, tag);
	free(text);
	return r;
}
