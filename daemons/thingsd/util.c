/*
 * thingsd helpers: hex, values as JSON, atomic file writes, clocks.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "thingsd.h"
#include "util/util.h"

uint64_t td__now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t td__realtime_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int td__hex_decode(const char *hex, unsigned char *out, size_t outlen)
{
	if (!hex || strlen(hex) != 2 * outlen)
		return -EINVAL;
	for (size_t i = 0; i < outlen; i++) {
		int hi = hex__digit(hex[2 * i]), lo = hex__digit(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

void td__hex_encode(const unsigned char *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

void *td__value_json(const tsync_value *v)
{
	switch (v->type) {
	case TSYNC_TYPE_BOOL:
		return json_boolean(v->u.b);
	case TSYNC_TYPE_INT:
		return json_integer((json_int_t)v->u.i);
	case TSYNC_TYPE_FLOAT:
		return json_real(v->u.f);
	case TSYNC_TYPE_STRING:
		return json_string(v->u.s ? v->u.s : "");
	case TSYNC_TYPE_NONE:
		break;
	}
	return json_null();
}

int td__value_from_json(tsync_type type, const void *json, tsync_value *out, char **str)
{
	const json_t *j = json;

	*str = NULL;
	if (json_is_string(j)) {
		/* Text is parsed the way thingsctl and site.conf write values. */
		tsync_value v;
		char *copy = strdup(json_string_value(j));
		if (!copy)
			return -ENOMEM;
		if (tsync_value_parse(type, copy, &v) < 0) {
			free(copy);
			return TSYNC_EVALUE;
		}
		*out = v;
		if (type == TSYNC_TYPE_STRING)
			*str = copy;
		else
			free(copy);
		return 0;
	}
	switch (type) {
	case TSYNC_TYPE_BOOL:
		if (json_is_boolean(j)) {
			*out = tsync_bool(json_is_true(j));
			return 0;
		}
		if (json_is_integer(j) && (json_integer_value(j) == 0 || json_integer_value(j) == 1)) {
			*out = tsync_bool(json_integer_value(j) == 1);
			return 0;
		}
		return TSYNC_EVALUE;
	case TSYNC_TYPE_INT:
		if (json_is_integer(j)) {
			*out = tsync_int(json_integer_value(j));
			return 0;
		}
		if (json_is_real(j) && json_real_value(j) == floor(json_real_value(j)) &&
		    fabs(json_real_value(j)) < 9e18) {
			*out = tsync_int((int64_t)json_real_value(j));
			return 0;
		}
		return TSYNC_EVALUE;
	case TSYNC_TYPE_FLOAT:
		if (json_is_number(j)) {
			*out = tsync_float(json_number_value(j));
			return 0;
		}
		return TSYNC_EVALUE;
	default:
		return TSYNC_EVALUE;
	}
}

int daemon__write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	char *tmp = NULL, *dircopy = NULL;
	int fd = -1, dfd, r = 0;
	size_t off = 0;

	if (asprintf(&tmp, "%s.tmp-XXXXXX", path) < 0)
		return -ENOMEM;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto leave;
	}
	if (fchmod(fd, mode) < 0) {
		r = -errno;
		goto leave;
	}
	while (off < len) {
		ssize_t w = write(fd, (const char *)data + off, len - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto leave;
		}
		off += (size_t)w;
	}
	/* The data is on disk before the name points at it, and the name is on
	 * disk before we say it is done: a power cut leaves old or new, whole. */
	if (fsync(fd) < 0) {
		r = -errno;
		goto leave;
	}
	if (close(fd) < 0) {
		fd = -1;
		r = -errno;
		goto leave;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = -errno;
		goto leave;
	}
	free(tmp);
	tmp = NULL;
	dircopy = strdup(path);
	if (!dircopy)
		goto leave;
	dfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
leave:
	if (fd >= 0)
		close(fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	free(dircopy);
	return r;
}
