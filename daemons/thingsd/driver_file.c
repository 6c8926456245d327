/*
 * The file driver: a value in a file, such as a sysfs GPIO `value` or a
 * 1-wire `w1_slave` (format=w1). The file is read at every poll; a set
 * writes the value to it.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"

#define FILE_MAX_READ 4095

static int file_parse(struct driver *d, char *err, size_t errlen)
{
	if (d->n_args != 1 || d->args[0][0] != '/') {
		snprintf(err, errlen,
		         "file: needs one absolute path, e.g. file:/sys/class/gpio/gpio17/value");
		return -EINVAL;
	}
	return 0;
}

static void file_read(struct driver *d)
{
	char buf[FILE_MAX_READ + 1], why[DRIVER_ERR_LEN];
	ssize_t n;
	size_t len = 0;
	int fd = open(d->args[0], O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0) {
		snprintf(why, sizeof(why), "%s: %s", d->args[0], strerror(errno));
		driver__read_done(d, -errno, why, NULL);
		return;
	}
	/* sysfs files are small and read whole at once; a regular file may
	 * come in pieces. Anything longer than a page is not a value. */
	while (len < FILE_MAX_READ && (n = read(fd, buf + len, FILE_MAX_READ - len)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			snprintf(why, sizeof(why), "%s: %s", d->args[0], strerror(errno));
			close(fd);
			driver__read_done(d, -EIO, why, NULL);
			return;
		}
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	if (memchr(buf, '\0', len)) {
		snprintf(why, sizeof(why), "%s: binary content", d->args[0]);
		driver__read_done(d, -EIO, why, NULL);
		return;
	}
	driver__read_done(d, 0, NULL, buf);
}

static int file_write(struct driver *d, const tsync_value *to_be, tsync_value *as_is, char *err,
                      size_t errlen)
{
	char text[4096];
	int n = driver__to_text(d, to_be, text, sizeof(text) - 1);
	int fd, r = 0;
	size_t off = 0;

	if (n < 0 || (size_t)n >= sizeof(text) - 1) {
		snprintf(err, errlen, "value too long for a file");
		return -EINVAL;
	}
	text[n++] = '\n';
	fd = open(d->args[0], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", d->args[0], strerror(errno));
		return -errno;
	}
	while (off < (size_t)n) {
		ssize_t w = write(fd, text + off, (size_t)n - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			snprintf(err, errlen, "%s: %s", d->args[0], strerror(errno));
			break;
		}
		off += (size_t)w;
	}
	if (close(fd) < 0 && r == 0) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", d->args[0], strerror(errno));
	}
	if (r == 0)
		*as_is = *to_be;
	return r;
}

const struct driver_ops driver_file_ops = {
    .kind = "file",
    .default_interval_ms = 1000,
    .parse = file_parse,
    .read = file_read,
    .write = file_write,
};
