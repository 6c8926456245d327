/*
 * daemons/common: a daemon's state directory at start-up (statedir.h).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "statedir.h"

bool statedir__marked(const char *dir)
{
	char path[4200];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, STATEDIR_MARKER);
	return stat(path, &st) == 0;
}

int statedir__mark(const char *dir, const char *controller, const char *envs)
{
	char path[4200], tmp[4300], text[512];
	int fd, n, r = 0;

	if (statedir__marked(dir))
		return 0;
	snprintf(path, sizeof(path), "%s/%s", dir, STATEDIR_MARKER);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	n = snprintf(text, sizeof(text),
	             "# thingsync state of controller %s, made %lld (seconds since the epoch).\n"
	             "# Its LMDB environments: %s. While this file exists, a daemon that\n"
	             "# finds one of them missing refuses to start: see thingsync-dr(8).\n",
	             controller, (long long)time(NULL), envs);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	/* The marker must not be durable before the environments it vouches
	 * for, nor torn: written whole, synced, then renamed into place. */
	if (write(fd, text, (size_t)n) != n || fsync(fd) < 0)
		r = errno ? -errno : -EIO;
	close(fd);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}

int statedir__check_env(const char *dir, const char *env_dir, char *why, size_t whylen)
{
	char path[4200];
	struct stat st;

	if (!statedir__marked(dir))
		return 0;
	snprintf(path, sizeof(path), "%s/data.mdb", env_dir);
	/* LMDB takes an empty data.mdb for a new environment: as lost as none. */
	if (stat(path, &st) < 0 || st.st_size < 4096) {
		snprintf(why, whylen, "%s %s, but %s/%s says this directory held state", path,
		         stat(path, &st) < 0 ? "is missing" : "is empty", dir, STATEDIR_MARKER);
		return -ENOENT;
	}
	return 0;
}

void statedir__hint(char *buf, size_t len, const char *conf, const char *controller, const char *dir)
{
	snprintf(buf, len,
	         "run: thingsync-dr check -c %s -n %s -s %s, then thingsync-dr recover -c %s -n %s -s %s "
	         "--collector URL (thingsync-dr(8)); or delete %s/%s to start from empty on purpose",
	         conf, controller, dir, conf, controller, dir, dir, STATEDIR_MARKER);
}
