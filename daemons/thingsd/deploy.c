/*
 * Site deployment: `thingsctl deploy NEW_SITE.CONF` posts the file to every
 * controller's /deploy with a tag from tsync_site_sign() over
 *
 *     "thingsync-deploy\n" SERIAL "\n" FILE
 *
 * where SERIAL is a number that grows with every deploy (thingsctl uses the
 * time in milliseconds). The tag proves the sender holds the site key; the
 * serial, remembered in the state directory, refuses a replay of an older
 * deploy. The file is then written next to site.conf, checked the way a
 * start would check it, and renamed over site.conf (atomic: a controller
 * that loses power has the old file or the new one), and the daemon
 * reloads. A file this controller cannot run on is refused with the
 * reasons, and the running site is kept.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "thingsd.h"

static const char prefix[] = "thingsync-deploy\n";

int deploy__message(uint64_t serial, const void *body, size_t len, unsigned char **out, size_t *outlen)
{
	char head[64];
	int n = snprintf(head, sizeof(head), "%s%llu\n", prefix, (unsigned long long)serial);
	unsigned char *m = malloc((size_t)n + len);

	if (!m)
		return -ENOMEM;
	memcpy(m, head, (size_t)n);
	memcpy(m + n, body, len);
	*out = m;
	*outlen = (size_t)n + len;
	return 0;
}

static char *serial_path(struct thingsd *td)
{
	char *p = NULL;

	if (!td->opt.state_dir || asprintf(&p, "%s/deploy.serial", td->opt.state_dir) < 0)
		return NULL;
	return p;
}

void deploy__load_serial(struct thingsd *td)
{
	char *path = serial_path(td);
	FILE *f = path ? fopen(path, "re") : NULL;
	unsigned long long v;

	if (f && fscanf(f, "%llu", &v) == 1)
		td->deploy_serial = v;
	if (f)
		fclose(f);
	free(path);
}

static void save_serial(struct thingsd *td, uint64_t serial)
{
	char *path = serial_path(td), text[32];
	int n = snprintf(text, sizeof(text), "%llu\n", (unsigned long long)serial);

	td->deploy_serial = serial;
	if (path && daemon__write_atomic(path, text, (size_t)n, 0644) < 0)
		td_warn("deploy: cannot remember serial %llu in %s", (unsigned long long)serial, path);
	free(path);
}

/* The check's messages name the temporary copy; say site.conf instead. */
static char *rename_in(const char *text, const char *from, const char *to)
{
	size_t fl = strlen(from), tl = strlen(to), n = 0;
	const char *p;
	char *out, *o;

	if (!text)
		return NULL;
	for (p = text; (p = strstr(p, from)); p += fl)
		n++;
	out = malloc(strlen(text) + n * (tl > fl ? tl - fl : 0) + 1);
	if (!out)
		return strdup(text);
	for (o = out, p = text;;) {
		const char *q = strstr(p, from);
		if (!q) {
			strcpy(o, p);
			break;
		}
		memcpy(o, p, (size_t)(q - p));
		o += q - p;
		memcpy(o, to, tl);
		o += tl;
		p = q + fl;
	}
	return out;
}

static int write_temp(const char *conf, const void *body, size_t len, char **tmp_out)
{
	const char *slash = conf ? strrchr(conf, '/') : NULL;
	const char *base = slash ? slash + 1 : conf;
	int dirlen = slash ? (slash == conf ? 1 : (int)(slash - conf)) : 1;
	char *tmp = NULL;
	struct stat st;
	mode_t mode = 0644;
	size_t off = 0;
	int fd = -1, r = 0;

	/* Next to site.conf: the same file system, so the rename is atomic,
	 * and the same directory, so a relative key_file means the same. */
	if (!conf || !*conf)
		return -EINVAL;
	if (asprintf(&tmp, "%.*s/.%s.deploy-XXXXXX", dirlen, slash ? (slash == conf ? "/" : conf) : ".",
	             base) < 0)
		return -ENOMEM;
	if (stat(conf, &st) == 0)
		mode = st.st_mode & 0777;
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
		ssize_t w = write(fd, (const char *)body + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			r = -errno;
			goto leave;
		}
		off += (size_t)w;
	}
	if (fsync(fd) < 0)
		r = -errno;
leave:
	if (fd >= 0 && close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0) {
		if (fd >= 0)
			unlink(tmp);
		free(tmp);
		return r;
	}
	*tmp_out = tmp;
	return 0;
}

int deploy__apply(struct thingsd *td, uint64_t serial, const char *tag_hex, const void *body, size_t len,
                  char **why)
{
	uint8_t tag[TSYNC_TAG_BYTES];
	unsigned char *msg = NULL;
	size_t msglen;
	tsync_site *site = NULL;
	char *tmp = NULL, *errors = NULL, *copy, *dir;
	int r, dfd;

	*why = NULL;
	td->deploys_failed++; /* taken back on success */
	if (!tsync_site_has_key(td->site)) {
		*why = strdup("this site has no key_file: a deploy must be authenticated with the site key");
		td_warn("deploy refused: %s", *why);
		return TSYNC_EKEY;
	}
	if (td__hex_decode(tag_hex, tag, sizeof(tag)) < 0) {
		*why = strdup("the tag is not 64 hex characters");
		td_warn("deploy refused: %s", *why);
		return -EBADMSG;
	}
	r = deploy__message(serial, body, len, &msg, &msglen);
	if (r < 0)
		return r;
	r = tsync_site_verify(td->site, msg, msglen, tag);
	free(msg);
	if (r < 0) {
		*why = strdup("the tag does not match: not signed with this site's key");
		td_warn("err_ip_in_auth deploy refused: %s", *why);
		return -EBADMSG;
	}
	if (serial <= td->deploy_serial) {
		if (asprintf(why, "serial %llu is not newer than the last deploy's (%llu): a replay?",
		             (unsigned long long)serial, (unsigned long long)td->deploy_serial) < 0)
			*why = NULL;
		td_warn("err_ip_in_replay deploy refused: serial %llu, last %llu", (unsigned long long)serial,
		        (unsigned long long)td->deploy_serial);
		return -ESTALE;
	}
	r = write_temp(td->opt.conf_path, body, len, &tmp);
	if (r < 0) {
		if (asprintf(why, "%s: cannot write next to it: %s", td->opt.conf_path, strerror(-r)) < 0)
			*why = NULL;
		td_error("deploy failed: %s", *why ? *why : strerror(-r));
		return r;
	}
	r = daemon__check_site(td, tmp, &site, &errors);
	if (r < 0) {
		char newname[600];
		snprintf(newname, sizeof(newname), "%s (deployed)", td->opt.conf_path);
		unlink(tmp);
		*why = rename_in(errors, tmp, newname);
		td_error("deploy refused: the new site.conf is not valid here; the running site is kept");
		{
			char *save = NULL, *c = *why ? strdup(*why) : NULL;
			for (char *l = c ? strtok_r(c, "\n", &save) : NULL; l;
			     l = strtok_r(NULL, "\n", &save))
				td_error("%s", l);
			free(c);
		}
		free(errors);
		free(tmp);
		return r;
	}
	tsync_site_free(site);
	if (rename(tmp, td->opt.conf_path) < 0) {
		r = -errno;
		unlink(tmp);
		free(tmp);
		if (asprintf(why, "cannot replace %s: %s", td->opt.conf_path, strerror(-r)) < 0)
			*why = NULL;
		td_error("deploy failed: %s", *why ? *why : "rename");
		return r;
	}
	free(tmp);
	copy = strdup(td->opt.conf_path);
	dir = copy ? dirname(copy) : NULL;
	dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	free(copy);
	save_serial(td, serial);
	td->deploys_failed--;
	td->deploys++;
	td_info("deploy: new site.conf (%zu bytes, serial %llu) is in place", len,
	        (unsigned long long)serial);
	r = daemon__request_reload(td, "deploy", &errors);
	if (r < 0) {
		/* Checked a moment ago; only a change under our feet gets here. */
		*why = errors;
		return r;
	}
	return 0;
}
