/*
 * thingsync-historybench: what the history of owned things costs a Pi
 * (issue 13).
 *
 * One node in this process (a controller that owns 10 things and has no
 * peers) with a state directory changes its things N times, committing
 * every B changes (B = 1: every change committed on its own, the worst case
 * for an SD card; B = 100: a busy group-commit window). Each run is made
 * with the history off (the baseline, in the same process) and on. Printed
 * per 1,000 changes: the bytes of keys and records the store wrote
 * (store__written()), the bytes the process wrote to the block layer
 * (/proc/self/io write_bytes, when the kernel counts them), the size of
 * data.mdb at the end, and the resident set (VmRSS) after the run and its
 * peak (VmHWM); then how fast a window of every change is read back.
 *
 *   thingsync-historybench [N]        (default 20000)
 *
 * It prints figures; it does not pass or fail.
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <thingsync/thingsync.h>

#include "node/node.h"

#define THINGS 10

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A field of /proc/self/status or /proc/self/io, or -1. */
static long long proc_field(const char *file, const char *name)
{
	char line[256];
	long long v = -1;
	size_t n = strlen(name);
	FILE *f = fopen(file, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, name, n) && line[n] == ':') {
			v = atoll(line + n + 1);
			break;
		}
	fclose(f);
	return v;
}

static unsigned free_port(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	unsigned port = 0;

	if (fd < 0)
		return 0;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

struct result {
	double logical_per_1k, io_per_1k, commits_per_1k;
	long long mdb_bytes, rss_kb, hwm_kb;
	double read_per_s;
	uint64_t entries, bytes;
};

static int count_cb(void *ud, const tsync_history_entry *e)
{
	(void)e;
	(*(uint64_t *)ud)++;
	return 0;
}

static int run(const char *tmp, bool history, int n, int batch, struct result *res)
{
	char conf[256], state[256], text[4096], mdb[300];
	size_t len;
	tsync_site *site = NULL;
	tsync_node *node = NULL;
	tsync_node_options o;
	uint64_t bytes0, commits0, bytes1, commits1;
	long long io0, io1;
	struct stat st;
	FILE *f;
	int r;

	snprintf(conf, sizeof(conf), "%s/site.conf", tmp);
	snprintf(state, sizeof(state), "%s/state-%s-%d", tmp, history ? "on" : "off", batch);
	len = (size_t)snprintf(text, sizeof(text),
	                       "[site]\nname = bench\nstate_commit_ms = 600000\n"
	                       "[controller pi]\nhost = 127.0.0.1\nudp_port = %u\n%s",
	                       free_port(), history ? "history = yes\nhistory_max_bytes = 1G\n" : "");
	for (int t = 0; t < THINGS; t++)
		len += (size_t)snprintf(text + len, sizeof(text) - len,
		                        "[thing t%d]\nowner = pi\ntype = %s\n", t, t % 2 ? "float" : "int");
	f = fopen(conf, "w");
	if (!f)
		return -errno;
	fputs(text, f);
	fclose(f);
	r = tsync_site_load(conf, &site, NULL);
	if (r < 0)
		return r;
	tsync_node_options_init(&o);
	o.site = site;
	o.controller = "pi";
	o.state_dir = state;
	r = tsync_node_new(&o, &node);
	if (r < 0)
		goto leave;

	node__store_written(node, &bytes0, &commits0);
	io0 = proc_field("/proc/self/io", "write_bytes");
	for (int i = 0; i < n; i++) {
		char name[8];
		tsync_value v = i % 2 ? tsync_float(20.0 + (i % 100) / 10.0) : tsync_int(i);
		snprintf(name, sizeof(name), "t%d", i % THINGS);
		r = tsync_node_set(node, name, &v);
		if (r == 0 && (i + 1) % batch == 0)
			r = tsync_node_commit(node);
		if (r < 0)
			goto leave;
	}
	r = tsync_node_commit(node);
	if (r < 0)
		goto leave;
	node__store_written(node, &bytes1, &commits1);
	io1 = proc_field("/proc/self/io", "write_bytes");
	res->logical_per_1k = (double)(bytes1 - bytes0) * 1000.0 / n;
	res->commits_per_1k = (double)(commits1 - commits0) * 1000.0 / n;
	res->io_per_1k = io0 >= 0 && io1 >= 0 ? (double)(io1 - io0) * 1000.0 / n : -1;
	res->rss_kb = proc_field("/proc/self/status", "VmRSS");
	res->hwm_kb = proc_field("/proc/self/status", "VmHWM");
	if (history) {
		tsync_history_stats hs;
		uint64_t seen = 0, t0 = now_ns();
		r = tsync_node_history_query(node, NULL, INT64_MIN, INT64_MAX, count_cb, &seen, NULL);
		if (r < 0)
			goto leave;
		res->read_per_s = (double)seen / ((double)(now_ns() - t0) / 1e9);
		tsync_node_history_stats(node, &hs);
		res->entries = hs.entries;
		res->bytes = hs.bytes;
	}
	tsync_node_free(node);
	node = NULL;
	snprintf(mdb, sizeof(mdb), "%s/data.mdb", state);
	res->mdb_bytes = stat(mdb, &st) == 0 ? (long long)st.st_blocks * 512 : -1;
leave:
	tsync_node_free(node);
	tsync_site_free(site);
	return r;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 20000;
	static const int batches[] = {1, 100};
	char tmp[] = "/tmp/thingsync-historybench.XXXXXX";

	if (n < 1000) {
		fprintf(stderr, "usage: thingsync-historybench [N >= 1000]\n");
		return 2;
	}
	if (!mkdtemp(tmp)) {
		perror("mkdtemp");
		return 1;
	}
	printf("thingsync-historybench: %d changes of %d owned things (int and float), one node\n\n", n,
	       THINGS);
	printf("%-9s %-8s %14s %14s %12s %12s %10s %10s\n", "commit", "history", "store B/1k", "disk B/1k",
	       "commits/1k", "data.mdb KiB", "RSS KiB", "peak KiB");
	for (size_t b = 0; b < sizeof(batches) / sizeof(batches[0]); b++) {
		struct result off, on;
		int r;

		memset(&off, 0, sizeof(off));
		memset(&on, 0, sizeof(on));
		r = run(tmp, false, n, batches[b], &off);
		if (r == 0)
			r = run(tmp, true, n, batches[b], &on);
		if (r < 0) {
			fprintf(stderr, "run failed: %s\n", tsync_strerror(r));
			nftw(tmp, rm_one, 8, FTW_DEPTH | FTW_PHYS);
			return 1;
		}
		for (int h = 0; h < 2; h++) {
			const struct result *x = h ? &on : &off;
			char disk[32];
			if (x->io_per_1k < 0)
				snprintf(disk, sizeof(disk), "n/a");
			else
				snprintf(disk, sizeof(disk), "%.0f", x->io_per_1k);
			printf("every %-3d %-8s %14.0f %14s %12.0f %12lld %10lld %10lld\n", batches[b],
			       h ? "on" : "off", x->logical_per_1k, disk, x->commits_per_1k,
			       x->mdb_bytes / 1024, x->rss_kb, x->hwm_kb);
		}
		printf(
		    "  history: %llu entries, %llu bytes held (%.1f per entry); store bytes x%.2f with it; "
		    "a window of all read back at %.0f changes/s\n",
		    (unsigned long long)on.entries, (unsigned long long)on.bytes,
		    on.entries ? (double)on.bytes / (double)on.entries : 0.0,
		    off.logical_per_1k > 0 ? on.logical_per_1k / off.logical_per_1k : 0.0, on.read_per_s);
	}
	nftw(tmp, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	return 0;
}
