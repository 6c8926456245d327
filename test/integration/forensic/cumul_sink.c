/*
 * A stand-in for the push controller's side of contract 2, for the
 * forensicd tests: a node with a state directory that takes `cumul_data`
 * requests and appends each, as one line of JSON, to a file, synced before
 * it answers (as pushd answers after its journal commit). The request
 * machinery calls the handler once per request; a request whose content
 * (owner, day and cumuls) was written before is answered as a duplicate and
 * not written again, as pushd's commit marks do (forensicd sends again, at
 * its start, what was not acked). So the file shows whether forensicd
 * delivered a day once.
 *
 * Usage: cumul_sink SITE.CONF CONTROLLER STATE_DIR OUT_FILE
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <thingsync/thingsync.h>

static tsync_node *node;
static int out_fd = -1;
static json_t *seen; /* the content of every request written */

/* What a request carries, as pushd's commit mark knows it; NULL if malformed. */
static char *content_key(const char *text)
{
	json_t *j = json_loads(text, 0, NULL);
	char *c = j ? json_dumps(json_object_get(j, "cumuls"), JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	char *key = NULL;

	if (c && asprintf(&key, "%s/%s/%s", json_string_value(json_object_get(j, "owner")),
	                  json_string_value(json_object_get(j, "day")), c) < 0)
		key = NULL;
	free(c);
	json_decref(j);
	return key;
}

/* The requests written by earlier runs. */
static void load_seen(const char *path)
{
	FILE *f = fopen(path, "r");
	char *line = NULL, *key;
	size_t cap = 0;

	while (f && getline(&line, &cap, f) > 0)
		if ((key = content_key(line))) {
			json_object_set_new(seen, key, json_true());
			free(key);
		}
	free(line);
	if (f)
		fclose(f);
}

static void log_stderr(void *ud, tsync_log_level level, const char *line)
{
	(void)ud;
	fprintf(stderr, "%s: %s\n", tsync_log_level_name(level), line);
}

static int on_cumul_data(void *ud, tsync_node *n, const tsync_request *req, char **result)
{
	size_t len = strlen(req->json);
	char *key = content_key(req->json);

	(void)ud;
	(void)n;
	(void)result;
	if (!key)
		return TSYNC_ECMD_ARGS;
	if (json_object_get(seen, key)) {
		fprintf(stderr, "info: duplicate cumul_data from %s (%zu bytes): written before\n", req->from,
		        len);
		free(key);
		return 0;
	}
	if (write(out_fd, req->json, len) != (ssize_t)len || write(out_fd, "\n", 1) != 1 ||
	    fsync(out_fd) < 0) {
		fprintf(stderr, "error: cannot write: %s\n", strerror(errno));
		free(key);
		return -EIO;
	}
	json_object_set_new(seen, key, json_true());
	free(key);
	fprintf(stderr, "info: cumul_data from %s (%zu bytes)\n", req->from, len);
	return 0;
}

static volatile sig_atomic_t stopping;

static void on_term(int sig)
{
	(void)sig;
	stopping = 1;
}

int main(int argc, char **argv)
{
	tsync_node_options o;
	int r;

	if (argc != 5) {
		fprintf(stderr, "usage: cumul_sink SITE.CONF CONTROLLER STATE_DIR OUT_FILE\n");
		return 2;
	}
	seen = json_object();
	load_seen(argv[4]);
	out_fd = open(argv[4], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (out_fd < 0) {
		perror(argv[4]);
		return 1;
	}
	tsync_node_options_init(&o);
	o.site_path = argv[1];
	o.controller = argv[2];
	o.state_dir = argv[3];
	o.log = log_stderr;
	r = tsync_node_new(&o, &node);
	if (r < 0) {
		fprintf(stderr, "error: node: %s\n", tsync_strerror(r));
		return 1;
	}
	tsync_node_on_request(node, "cumul_data", on_cumul_data, NULL);
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	fprintf(stderr, "info: sink up on udp %u\n", tsync_node_port(node));
	while (!stopping && (r = tsync_node_run_for(node, 200)) == 0)
		;
	tsync_node_free(node);
	close(out_fd);
	return 0;
}
