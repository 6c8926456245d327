/*
 * Site deployment: `thingsctl deploy NEW_SITE.CONF` posts to a controller's
 * /deploy a signed envelope around the file,
 *
 *     "thingsync-deploy 2\n"
 *     "site " SITE "\n"
 *     "targets " ("*" | NAME[","NAME...]) "\n"
 *     "serial " SERIAL "\n"
 *     "\n"
 *     FILE
 *
 * with X-Thingsync-Tag, the tsync_site_sign() tag of the whole envelope, and
 * X-Thingsync-Serial, the same SERIAL. SERIAL grows with every deploy
 * (thingsctl uses the time in milliseconds).
 *
 * The tag proves the sender holds the site key. What it covers says what the
 * deploy is for, so that one captured on its way somewhere cannot be used
 * elsewhere: another site (one that shares the key) refuses it by SITE, a
 * controller not in TARGETS refuses it (a deploy for PI-B replayed to PI-C),
 * and a SERIAL at or below the running file's refuses a replay of an older
 * deploy, which would roll the site back. That serial is durable: in the
 * state directory, or without one next to site.conf (SITE.CONF.serial), and
 * it is on disk before the new file takes the name site.conf, so no restart
 * or power cut can forget it while the file it belongs to runs.
 *
 * The file is then written next to site.conf, checked the way a start would
 * check it, and renamed over site.conf (atomic: a controller that loses
 * power has the old file or the new one), and the daemon reloads. A file
 * this controller cannot run on is refused with the reasons, and the
 * running site is kept.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "thingsd.h"

static const char magic[] = "thingsync-deploy 2\n";

/* A deploy envelope's fields; pointers into the body, not NUL-terminated. */
struct envelope {
	const char *site, *targets;
	size_t site_len, targets_len;
	uint64_t serial;
	const char *file;
	size_t file_len;
};

/* One "KEY VALUE\n" line at *p; the value must be non-empty. */
static int take_line(const char **p, const char *end, const char *key, const char **val, size_t *len)
{
	size_t kl = strlen(key);
	const char *nl;

	if ((size_t)(end - *p) <= kl + 1 || memcmp(*p, key, kl) || (*p)[kl] != ' ')
		return -EBADMSG;
	*val = *p + kl + 1;
	nl = memchr(*val, '\n', (size_t)(end - *val));
	if (!nl || nl == *val)
		return -EBADMSG;
	*len = (size_t)(nl - *val);
	*p = nl + 1;
	return 0;
}

/* Parses an envelope strictly: one spelling, so that what was signed is
 * exactly what is read. */
static int parse_envelope(const void *body, size_t len, struct envelope *env)
{
	const char *p = body, *end = p + len, *serial;
	size_t serial_len;
	char num[24], *e;

	memset(env, 0, sizeof(*env));
	if (len < sizeof(magic) - 1 || memcmp(p, magic, sizeof(magic) - 1))
		return -EBADMSG;
	p += sizeof(magic) - 1;
	if (take_line(&p, end, "site", &env->site, &env->site_len) < 0 ||
	    take_line(&p, end, "targets", &env->targets, &env->targets_len) < 0 ||
	    take_line(&p, end, "serial", &serial, &serial_len) < 0 || p >= end || *p != '\n')
		return -EBADMSG;
	if (serial_len >= sizeof(num) || serial[0] < '1' || serial[0] > '9')
		return -EBADMSG;
	memcpy(num, serial, serial_len);
	num[serial_len] = '\0';
	errno = 0;
	env->serial = strtoull(num, &e, 10);
	if (errno || *e)
		return -EBADMSG;
	env->file = p + 1;
	env->file_len = (size_t)(end - env->file);
	return 0;
}

/* Whether `name` is in the comma-separated list, or the list is "*". */
static bool targets_include(const char *list, size_t len, const char *name)
{
	size_t nl = strlen(name);
	const char *p = list, *end = list + len;

	if (len == 1 && list[0] == '*')
		return true;
	while (p < end) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *stop = comma ? comma : end;
		if ((size_t)(stop - p) == nl && !memcmp(p, name, nl))
			return true;
		p = stop + 1;
	}
	return false;
}

/* The serial lives in the state directory, or without one next to
 * site.conf: deploy writes that directory anyway, so it is always there when
 * a deploy can succeed at all. */
static char *serial_path(const struct thingsd *td, bool state)
{
	char *p = NULL;
	int n = state ? asprintf(&p, "%s/deploy.serial", td->opt.state_dir)
	              : asprintf(&p, "%s.serial", td->opt.conf_path);

	return n < 0 ? NULL : p;
}

/* Reads one serial file: 0 and *out (0 if there is none), or -errno. */
static int read_serial(const char *path, uint64_t *out)
{
	char text[32], *end;
	FILE *f;
	size_t n;
	unsigned long long v;

	*out = 0;
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	errno = 0;
	v = strtoull(text, &end, 10);
	if (errno || end == text || (*end && strcmp(end, "\n")))
		return -EBADMSG;
	*out = v;
	return 0;
}

void deploy__load_serial(struct thingsd *td)
{
	/* Both places count: thingsd may have run with and without -s. */
	for (int state = 0; state < 2; state++) {
		char *path;
		uint64_t v;
		int r;
		if (state && !td->opt.state_dir)
			continue;
		path = serial_path(td, state);
		r = path ? read_serial(path, &v) : -ENOMEM;
		if (r < 0) {
			/* Forgetting it would let an old deploy roll the site back. */
			td_error(
			    "deploy: cannot read the last deploy's serial from %s: %s; deploys are refused "
			    "until it is repaired",
			    path ? path : "?", strerror(-r));
			td->deploy_serial = UINT64_MAX;
		} else if (v > td->deploy_serial) {
			td->deploy_serial = v;
		}
		free(path);
	}
}

static int save_serial(struct thingsd *td, uint64_t serial, char **why)
{
	char *path = serial_path(td, td->opt.state_dir != NULL), text[32];
	int n = snprintf(text, sizeof(text), "%llu\n", (unsigned long long)serial);
	int r = path ? daemon__write_atomic(path, text, (size_t)n, 0644) : -ENOMEM;

	if (r < 0) {
		if (asprintf(why,
		             "cannot keep the deploy serial in %s: %s; without it an older deploy could "
		             "roll this controller back, so this one is refused",
		             path ? path : "?", strerror(-r)) < 0)
			*why = NULL;
		td_error("deploy refused: %s", *why ? *why : strerror(-r));
	} else {
		td->deploy_serial = serial;
	}
	free(path);
	return r;
}

static int refuse(char **why, int r, const char *log_name, const char *fmt, ...) TD_PRINTF(4, 5);
static int refuse(char **why, int r, const char *log_name, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(why, fmt, ap) < 0)
		*why = NULL;
	va_end(ap);
	td_warn("%s deploy refused: %s", log_name, *why ? *why : "?");
	return r;
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
	struct envelope env;
	tsync_site *site = NULL;
	const char *site_name = tsync_site_name(td->site);
	char *tmp = NULL, *errors = NULL, *copy, *dir;
	int r, dfd;

	*why = NULL;
	td->deploys_failed++; /* taken back on success */
	if (!tsync_site_has_key(td->site))
		return refuse(why, TSYNC_EKEY, "err_ip_in_auth",
		              "this site has no key_file: a deploy must be authenticated with the site key");
	if (td__hex_decode(tag_hex, tag, sizeof(tag)) < 0)
		return refuse(why, -EBADMSG, "err_ip_in_auth", "the tag is not 64 hex characters");
	if (tsync_site_verify(td->site, body, len, tag) < 0)
		return refuse(why, -EBADMSG, "err_ip_in_auth",
		              "the tag does not match: not signed with this site's key");
	/* Authenticated: only now is the envelope read. */
	if (parse_envelope(body, len, &env) < 0)
		return refuse(why, -EBADMSG, "err_ip_in_json_req",
		              "not a deploy envelope (\"thingsync-deploy 2\", site, targets, serial)");
	if (env.site_len != strlen(site_name) || memcmp(env.site, site_name, env.site_len))
		return refuse(why, -EBADMSG, "err_ip_in_refused", "signed for site '%.*s', this is site '%s'",
		              (int)(env.site_len > 64 ? 64 : env.site_len), env.site, site_name);
	if (!targets_include(env.targets, env.targets_len, td->opt.controller))
		return refuse(why, -EBADMSG, "err_ip_in_refused", "addressed to %.*s, not to %s",
		              (int)(env.targets_len > 300 ? 300 : env.targets_len), env.targets,
		              td->opt.controller);
	if (env.serial != serial)
		return refuse(why, -EBADMSG, "err_ip_in_refused",
		              "the X-Thingsync-Serial header (%llu) is not the signed serial (%llu)",
		              (unsigned long long)serial, (unsigned long long)env.serial);
	if (td->deploy_serial == UINT64_MAX)
		return refuse(why, -ESTALE, "err_ip_in_replay",
		              "the last deploy's serial could not be read at start; repair it first");
	if (serial <= td->deploy_serial)
		return refuse(why, -ESTALE, "err_ip_in_replay",
		              "serial %llu is not newer than the last deploy's (%llu): a replay?",
		              (unsigned long long)serial, (unsigned long long)td->deploy_serial);
	r = write_temp(td->opt.conf_path, env.file, env.file_len, &tmp);
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
	/* The serial is durable before the file it belongs to runs: a crash
	 * in between leaves the old file with a newer serial, which refuses
	 * nothing a new deploy would send. */
	r = save_serial(td, serial, why);
	if (r < 0) {
		unlink(tmp);
		free(tmp);
		return r;
	}
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
	td->deploys_failed--;
	td->deploys++;
	td_info("deploy: new site.conf (%zu bytes, serial %llu) is in place", env.file_len,
	        (unsigned long long)serial);
	r = daemon__request_reload(td, "deploy", &errors);
	if (r < 0) {
		/* Checked a moment ago; only a change under our feet gets here. */
		*why = errors;
		return r;
	}
	return 0;
}
