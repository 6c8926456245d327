/*
 * thingsync-pushbench: how fast measurements go from the mesh through
 * thingsync-pushd into thingsync-collectord's database, for SQLite and
 * PostgreSQL, and how fast a backlog drains after an outage.
 *
 * For each backend it prints:
 *   stream   an owner in this process sets 100 int things, --rate changes/s
 *            in all, for --seconds; pushd journals each value it receives
 *            and posts; the figure is measurements stored per second at the
 *            collector (steady state, after a warm-up), with what the owner
 *            offered, what pushd journaled, and each process's CPU.
 *   backlog  pushd journals --backlog measurements from a CSV file while the
 *            collector is down (an outage), then the collector starts: the
 *            figure is measurements stored per second until the journal is
 *            empty.
 *   baseline the same rows inserted directly into the same database, in the
 *            collector's own schema, by this process, --batch per
 *            transaction (SQLite: a prepared INSERT; PostgreSQL: COPY): the
 *            floor the chain is compared to (ratios stream/baseline and
 *            drain/baseline).
 * PostgreSQL runs as a private cluster in a temporary directory (as the
 * postgres user when run as root), unless --pg gives a conninfo.
 *
 * It prints figures and never passes or fails.
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <dirent.h>
#include <glob.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>
#include <sqlite3.h>
#include <thingsync/thingsync.h>
#ifdef HAVE_POSTGRES
#include <libpq-fe.h>
#endif

#define N_THINGS 100

#include "db.h" /* the collector's schema: db_schema_sql */

static const char usage_text[] =
    "usage: thingsync-pushbench [options]\n"
    "\n"
    "Measures measurements/s from the mesh through thingsync-pushd into\n"
    "thingsync-collectord (SQLite and PostgreSQL), and how fast a backlog drains\n"
    "after an outage. Prints figures; never passes or fails.\n"
    "\n"
    "  --pushd PATH         thingsync-pushd to run (default: the build's, or PATH)\n"
    "  --collectord PATH    thingsync-collectord to run (likewise)\n"
    "  --seconds N          length of the stream measurement (default 5)\n"
    "  --rate N             changes/s the owner offers in the stream (default\n"
    "                       200000: more than the chain takes here)\n"
    "  --backlog N          measurements in the outage backlog (default 1000000)\n"
    "  --batch N            measurements per POST (pushd --batch) and rows per\n"
    "                       transaction of the baseline (default 5000)\n"
    "  --inflight N         POSTs pushd keeps in flight (pushd --inflight)\n"
    "  --backend NAME       sqlite, postgres or both (default both, if built with libpq)\n"
    "  --stream-only        measure only the stream (no backlog, no baseline)\n"
    "  --pg CONNINFO        use this PostgreSQL instead of a private cluster\n"
    "  --pg-defaults        run the private cluster with PostgreSQL's defaults instead\n"
    "                       of the collector's recommended settings (max_wal_size ...)\n"
    "  --keep               keep the temporary directory\n"
    "  -h, --help           this text\n";

/* What the server did during a phase: WAL (pg_stat_wal), the last checkpoint, its CPU. */
struct pg_mark {
	double wal_bytes, records, fpi, syncs;
	double checkpoint; /* the last checkpoint's LSN */
	double cpu_s; /* the private cluster's CPU so far (all its processes), -1 unknown */
	bool ok;
};

struct bench {
	const char *pushd, *collectord;
	int seconds;
	long rate; /* changes/s the owner offers in the stream */
	long backlog;
	long batch;           /* measurements per POST (pushd --batch) and rows per baseline transaction */
	const char *inflight; /* pushd --inflight, or NULL for its default */
	bool do_sqlite, do_pg, keep, stream_only;
	const char *pg_conninfo;
	char dir[256];
	char site_path[512];
	uint16_t udp[3];
	tsync_site *site;
	struct event_base *base;
	tsync_node *owner;
	bool producing;
	int64_t next_value;
	/* private PostgreSQL */
	char pgdir[256];
	char pgbin[256];
	uint16_t pg_port;
	bool pg_as_postgres, pg_running;
	bool pg_defaults;    /* the private cluster with PostgreSQL's defaults, not pg_settings[] */
	const char *pg_live; /* conninfo of the PostgreSQL being measured (NULL: SQLite's turn) */
	struct pg_mark base_a, base_z; /* around the baseline */
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint16_t free_port(int type)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
	uint16_t port = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static void die(const char *what)
{
	fprintf(stderr, "thingsync-pushbench: %s\n", what);
	exit(1);
}

/* --- processes and HTTP ------------------------------------------------------------- */

static pid_t spawn(struct bench *b, const char *logname, const char *const argv[])
{
	char log[600];
	pid_t pid;

	snprintf(log, sizeof(log), "%s/%s", b->dir, logname);
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		die("fork failed");
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

static int reap(pid_t pid, int sig)
{
	int status = 0;

	if (pid <= 0)
		return 0;
	kill(pid, sig);
	waitpid(pid, &status, 0);
	return status;
}

struct resp {
	char *data;
	size_t len;
};

static size_t collect_cb(char *p, size_t size, size_t n, void *ud)
{
	struct resp *r = ud;
	char *d = realloc(r->data, r->len + size * n + 1);
	if (!d)
		return 0;
	memcpy(d + r->len, p, size * n);
	r->data = d;
	r->len += size * n;
	r->data[r->len] = '\0';
	return size * n;
}

static json_t *get_json(const char *url)
{
	CURL *c = curl_easy_init();
	struct resp r = {0};
	long status = 0;
	json_t *j = NULL;

	if (!c)
		return NULL;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect_cb);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	if (status == 200 && r.data)
		j = json_loads(r.data, 0, NULL);
	free(r.data);
	return j;
}

/* Stored measurements of `source` at the collector, or -1. */
static int64_t stored(uint16_t col_port, const char *source)
{
	char url[128];
	json_t *j, *s;
	size_t i;
	int64_t n = -1;

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/sources", col_port);
	j = get_json(url);
	json_array_foreach(json_object_get(j, "sources"), i, s)
	{
		if (!strcmp(json_string_value(json_object_get(s, "source")), source))
			n = json_integer_value(json_object_get(s, "stored"));
	}
	json_decref(j);
	return n;
}

static json_t *pushd_status(uint16_t port)
{
	char url[128];
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/status", port);
	return get_json(url);
}

/* Runs the loop for `ms`. */
static void run_for(struct bench *b, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	event_base_loopexit(b->base, &tv);
	event_base_dispatch(b->base);
}

static void wait_file(struct bench *b, const char *path, pid_t pid)
{
	double end = now_s() + 30;
	int status;

	while (access(path, R_OK) != 0) {
		if (now_s() > end || waitpid(pid, &status, WNOHANG) == pid)
			die("a daemon did not start; see its log in the bench directory (--keep)");
		run_for(b, 5);
	}
}

/* --- PostgreSQL ------------------------------------------------------------------------ */

static int run_pg_cmd(struct bench *b, const char *const *argv)
{
	const char *full[24];
	int n = 0, status;
	pid_t pid;

	if (b->pg_as_postgres) {
		full[n++] = "runuser";
		full[n++] = "-u";
		full[n++] = "postgres";
		full[n++] = "--";
	}
	for (int i = 0; argv[i]; i++)
		full[n++] = argv[i];
	full[n] = NULL;
	pid = spawn(b, "postgres.log", full);
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/*
 * The settings thingsync-collectord(8) recommends for a PostgreSQL that takes
 * backlogs (POSTGRESQL SETTINGS there), used for the collector and for the COPY
 * baseline alike: one drain of 1,000,000 writes 320-410 MB of WAL. With
 * the default max_wal_size (1 GB) a checkpoint starts every ~540 MB of WAL,
 * i.e. in the middle of a drain; with the default min_wal_size (80 MB) the
 * WAL segments are removed at a checkpoint instead of kept for reuse, and
 * every 16 MB segment of a burst is created and zero-filled again.
 * synchronous_commit stays on (the collector's durability rule).
 */
static const char *const pg_settings[] = {
    "max_wal_size=4GB",
    "min_wal_size=1GB",
    "checkpoint_timeout=15min",
};

static int pg_start(struct bench *b)
{
	char initdb[300], pg_ctl[300], data[300], opts[600], logf[300];
	glob_t g;
	int n;

	if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) != 0 || g.gl_pathc == 0) {
		globfree(&g);
		return -ENOENT;
	}
	snprintf(b->pgbin, sizeof(b->pgbin), "%s", g.gl_pathv[g.gl_pathc - 1]);
	*strrchr(b->pgbin, '/') = '\0';
	globfree(&g);
	snprintf(b->pgdir, sizeof(b->pgdir), "/tmp/pushbench-pg-XXXXXX");
	if (!mkdtemp(b->pgdir))
		return -errno;
	if (geteuid() == 0) {
		struct passwd *pw = getpwnam("postgres");
		if (!pw || chown(b->pgdir, pw->pw_uid, pw->pw_gid) < 0)
			return -EPERM;
		b->pg_as_postgres = true;
	}
	snprintf(initdb, sizeof(initdb), "%s/initdb", b->pgbin);
	snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", b->pgbin);
	snprintf(data, sizeof(data), "%s/data", b->pgdir);
	snprintf(logf, sizeof(logf), "%s/server.log", b->pgdir);
	b->pg_port = free_port(SOCK_STREAM);
	n = snprintf(opts, sizeof(opts), "-p %u -k %s -c listen_addresses=127.0.0.1", b->pg_port, b->pgdir);
	for (size_t i = 0; !b->pg_defaults && i < sizeof(pg_settings) / sizeof(pg_settings[0]); i++)
		n += snprintf(opts + n, sizeof(opts) - (size_t)n, " -c %s", pg_settings[i]);
	{
		const char *a1[] = {initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", NULL};
		const char *a2[] = {pg_ctl, "-D", data, "-o", opts,    "-l",
		                    logf,   "-w", "-t", "60", "start", NULL};
		if (run_pg_cmd(b, a1) != 0 || run_pg_cmd(b, a2) != 0)
			return -EIO;
	}
	b->pg_running = true;
	return 0;
}

static void pg_stop(struct bench *b)
{
	char pg_ctl[300], data[300], cmd[400];
	const char *argv[] = {pg_ctl, "-D", data, "-m", "immediate", "-w", "stop", NULL};

	if (!b->pg_running)
		return;
	snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", b->pgbin);
	snprintf(data, sizeof(data), "%s/data", b->pgdir);
	run_pg_cmd(b, argv);
	b->pg_running = false;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", b->pgdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", b->pgdir);
}

/* From /proc/PID/stat (after the command's closing parenthesis: state is field 3, ppid 4, utime
 * 14, stime 15, cutime 16, cstime 17): the parent, the CPU of the process and of its children
 * reaped, in seconds. */
static int proc_cpu(pid_t pid, pid_t *ppid, double *self, double *reaped)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st, cut, cst;
	int pp;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %llu %llu", &pp, &ut, &st,
	                 &cut, &cst) != 5)
		return -1;
	*ppid = pp;
	*self = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
	*reaped = (double)(cut + cst) / (double)sysconf(_SC_CLK_TCK);
	return 0;
}

/*
 * The CPU the private cluster used so far: the postmaster, the backends and
 * helpers alive, and those that exited (the postmaster reaped them). A
 * count of the server's work that the load of the machine does not change
 * much, unlike the wall time.
 */
static double cluster_cpu_s(const struct bench *b)
{
	char path[300], line[32];
	double self, reaped, total;
	pid_t pm = 0, pp;
	FILE *f;
	DIR *d;
	struct dirent *de;

	snprintf(path, sizeof(path), "%s/data/postmaster.pid", b->pgdir);
	f = b->pg_running ? fopen(path, "r") : NULL;
	if (f && fgets(line, sizeof(line), f))
		pm = (pid_t)atoi(line);
	if (f)
		fclose(f);
	if (pm <= 0 || proc_cpu(pm, &pp, &self, &reaped) < 0)
		return -1;
	total = self + reaped;
	d = opendir("/proc");
	while (d && (de = readdir(d)) != NULL) {
		pid_t pid = (pid_t)atoi(de->d_name);
		if (pid > 0 && pid != pm && proc_cpu(pid, &pp, &self, &reaped) == 0 && pp == pm)
			total += self;
	}
	if (d)
		closedir(d);
	return total;
}

#ifdef HAVE_POSTGRES
static void quiet(void *arg, const char *message);

/* With `checkpoint`, a CHECKPOINT first: every phase starts with nothing of the one before to write. */
static struct pg_mark pg_mark(const struct bench *b, bool checkpoint)
{
	struct pg_mark m = {.cpu_s = -1};
	PGconn *c;
	PGresult *res;

	if (!b->pg_live)
		return m;
	c = PQconnectdb(b->pg_live);
	if (PQstatus(c) == CONNECTION_OK) {
		if (checkpoint)
			PQclear(PQexec(c, "CHECKPOINT"));
		/* The last checkpoint's place from the control file: pg_stat_bgwriter's count may
		 * come later than the CHECKPOINT above returned. */
		res = PQexec(c, "SELECT pg_current_wal_lsn() - '0/0', w.wal_records, w.wal_fpi, w.wal_sync,"
		                " (SELECT checkpoint_lsn - '0/0' FROM pg_control_checkpoint()) FROM pg_stat_wal w");
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
			m.wal_bytes = atof(PQgetvalue(res, 0, 0));
			m.records = atof(PQgetvalue(res, 0, 1));
			m.fpi = atof(PQgetvalue(res, 0, 2));
			m.syncs = atof(PQgetvalue(res, 0, 3));
			m.checkpoint = atof(PQgetvalue(res, 0, 4));
			m.ok = true;
			m.cpu_s = cluster_cpu_s(b);
		}
		PQclear(res);
	}
	PQfinish(c);
	return m;
}

/*
 * Before the first measured phase, with the recommended settings: WAL
 * written and checkpointed, so that every phase (the baseline first)
 * finds recycled segments, as a server that has run for a while does.
 */
static void pg_warm(const struct bench *b)
{
	PGconn *c = PQconnectdb(b->pg_live);

	if (PQstatus(c) == CONNECTION_OK) {
		PQsetNoticeProcessor(c, quiet, NULL);
		PQclear(PQexec(c, "CREATE TABLE pushbench_warm AS SELECT g, repeat('w', 200) AS pad"
		                  " FROM generate_series(1, 1500000) g"));
		PQclear(PQexec(c, "DROP TABLE IF EXISTS pushbench_warm"));
		PQclear(PQexec(c, "CHECKPOINT"));
	}
	PQfinish(c);
}
#else
static struct pg_mark pg_mark(const struct bench *b, bool checkpoint)
{
	return (struct pg_mark){.cpu_s = -1};
}
#endif

/* "server: ..." for rows stored between marks a and z (the connections closed: their counters flushed). */
static void pg_print(const char *what, struct pg_mark a, struct pg_mark z, double rows)
{
	if (!a.ok || !z.ok || rows <= 0)
		return;
	printf("    server, %s: WAL %.0f B a row (%.2f records, %.0f full-page images in all),"
	       " %.0f WAL syncs, %s checkpoint during it",
	       what, (z.wal_bytes - a.wal_bytes) / rows, (z.records - a.records) / rows, z.fpi - a.fpi,
	       z.syncs - a.syncs, z.checkpoint != a.checkpoint ? "a" : "no");
	if (a.cpu_s >= 0 && z.cpu_s >= a.cpu_s)
		printf("; CPU %.2f us a row", 1e6 * (z.cpu_s - a.cpu_s) / rows);
	printf("\n");
}

/* --- the site and the owner ---------------------------------------------------------- */

/*
 * The owner: every tick sets each of the 100 things to a new value; the
 * node's flush after the callback sends them all to pushd. The tick comes
 * from a precise timer (EVENT_BASE_FLAG_PRECISE_TIMER, set in main): with
 * libevent's default clock (CLOCK_MONOTONIC_COARSE, 4 ms granularity on a
 * kernel with HZ=250) a 1 ms timer fires every 4 ms, which capped the offer
 * at 25,000 changes/s - the figure earlier versions of this bench printed as
 * the stream.
 */
static void produce_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;

	if (!b->producing)
		return;
	for (int k = 0; k < N_THINGS; k++) {
		char name[16];
		tsync_value v = tsync_int(b->next_value++);
		snprintf(name, sizeof(name), "t%d", k);
		tsync_node_set(b->owner, name, &v);
	}
}

static void make_site(struct bench *b)
{
	char key[600];
	FILE *f;

	b->udp[0] = free_port(SOCK_DGRAM);
	b->udp[1] = free_port(SOCK_DGRAM);
	b->udp[2] = free_port(SOCK_DGRAM);
	snprintf(key, sizeof(key), "%s/site.key", b->dir);
	if (tsync_key_generate(key) < 0)
		die("cannot write the site key");
	snprintf(b->site_path, sizeof(b->site_path), "%s/site.conf", b->dir);
	f = fopen(b->site_path, "w");
	if (!f)
		die("cannot write site.conf");
	fprintf(f,
	        "[site]\nname = pushbench\nkey_file = site.key\nretry_max_ms = 500\n\n"
	        "[controller OWNER]\nhost = 127.0.0.1\nudp_port = %u\n\n"
	        "[controller PUSH]\nhost = 127.0.0.1\nudp_port = %u\nroles = push\n\n"
	        "[controller BACKLOG]\nhost = 127.0.0.1\nudp_port = %u\nroles = push\n\n",
	        b->udp[0], b->udp[1], b->udp[2]);
	for (int k = 0; k < N_THINGS; k++)
		fprintf(f, "[thing t%d]\nowner = OWNER\ntype = int\nusers = PUSH\n\n", k);
	fclose(f);
	if (tsync_site_load(b->site_path, &b->site, NULL) < 0)
		die("cannot load the generated site.conf");
}

static pid_t start_collector(struct bench *b, const char *db, uint16_t port, const char *tag)
{
	char listen[64], portfile[600], logname[64];
	const char *argv[] = {b->collectord, "--site", b->site_path, "--listen",    listen, "--port-file",
	                      portfile,      "--db",   db,           "--log-level", "warn", NULL};
	pid_t pid;

	snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
	snprintf(portfile, sizeof(portfile), "%s/collector-%s.port", b->dir, tag);
	snprintf(logname, sizeof(logname), "collector-%s.log", tag);
	unlink(portfile);
	pid = spawn(b, logname, argv);
	wait_file(b, portfile, pid);
	return pid;
}

static pid_t start_pushd(struct bench *b, const char *controller, uint16_t col_port, uint16_t http_port,
                         const char *csv, const char *tag)
{
	char url[128], http[64], state[600], logname[64], batch[24];
	const char *argv[28];
	int n = 0;

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/push", col_port);
	snprintf(http, sizeof(http), "127.0.0.1:%u", http_port);
	snprintf(state, sizeof(state), "%s/pushd-%s", b->dir, tag);
	snprintf(logname, sizeof(logname), "pushd-%s.log", tag);
	snprintf(batch, sizeof(batch), "%ld", b->batch);
	argv[n++] = b->pushd;
	argv[n++] = "--site";
	argv[n++] = b->site_path;
	argv[n++] = "--controller";
	argv[n++] = controller;
	argv[n++] = "--state-dir";
	argv[n++] = state;
	argv[n++] = "--collector";
	argv[n++] = url;
	argv[n++] = "--http";
	argv[n++] = http;
	argv[n++] = "--retry-max-ms";
	argv[n++] = "200";
	argv[n++] = "--log-level";
	argv[n++] = "warn";
	argv[n++] = "--journal-max-entries";
	argv[n++] = "100000000";
	argv[n++] = "--journal-max-bytes";
	argv[n++] = "100000000000";
	argv[n++] = "--batch";
	argv[n++] = batch;
	if (b->inflight) {
		argv[n++] = "--inflight";
		argv[n++] = b->inflight;
	}
	if (csv) {
		argv[n++] = "--csv";
		argv[n++] = csv;
	}
	argv[n] = NULL;
	return spawn(b, logname, argv);
}

/* Measurements pushd has journaled so far (its journal's last sequence), or -1. */
static int64_t journaled(uint16_t port)
{
	json_t *j = pushd_status(port);
	json_t *v = json_object_get(json_object_get(j, "journal"), "last_seq");
	int64_t n = json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;

	json_decref(j);
	return n;
}

/* pushd's POSTs answered as settled and the measurements they carried, so far; -1 if unknown. */
static void posts_sent(uint16_t port, int64_t *posts, int64_t *sent)
{
	json_t *j = pushd_status(port);
	json_t *p = json_object_get(json_object_get(j, "sender"), "posts_ok");
	json_t *n = json_object_get(json_object_get(j, "sender"), "sent");

	*posts = json_is_integer(p) ? (int64_t)json_integer_value(p) : -1;
	*sent = json_is_integer(n) ? (int64_t)json_integer_value(n) : -1;
	json_decref(j);
}

static bool pushd_up(uint16_t port)
{
	json_t *j = pushd_status(port);
	json_decref(j);
	return j != NULL;
}

/* --- the measurements ----------------------------------------------------------------- */

/* CPU time (user + system) of a process so far, in seconds; -1 if unknown. */
static double cpu_s(pid_t pid)
{
	pid_t pp;
	double self, reaped;

	return proc_cpu(pid, &pp, &self, &reaped) < 0 ? -1 : self;
}

static double self_cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct stream_result {
	double stored;    /* measurements stored at the collector per second: the figure */
	double offered;   /* changes the owner made per second */
	double journaled; /* measurements pushd journaled (and acknowledged to the mesh) per second */
	int64_t behind;   /* journaled but not stored at the end */
	double posts;     /* POSTs settled per second */
	double per_post;  /* measurements a settled POST carried, on average */
	double cores[4];  /* CPU used, in cores: owner (this process), pushd, collector, PostgreSQL */
};

static struct stream_result bench_stream(struct bench *b, const char *db, const char *tag)
{
	struct stream_result res = {-1, -1, -1, -1, -1, -1, {-1, -1, -1, -1}};
	uint16_t col_port = free_port(SOCK_STREAM), http_port = free_port(SOCK_STREAM);
	pid_t col = start_collector(b, db, col_port, tag), pushd;
	double t0, t1, end, c0[4], c1[4];
	int64_t n0, n1, v0, j0, j1, p0, p1, s0, s1;
	char ptag[64];
	int status;

	snprintf(ptag, sizeof(ptag), "stream-%s", tag);
	pushd = start_pushd(b, "PUSH", col_port, http_port, NULL, ptag);
	end = now_s() + 30;
	while (!pushd_up(http_port)) {
		if (now_s() > end || waitpid(pushd, &status, WNOHANG) == pushd)
			die("thingsync-pushd did not start; see its log (--keep)");
		run_for(b, 10);
	}
	/* Warm up, then count what the collector stored during --seconds. */
	b->producing = true;
	run_for(b, 1000);
	n0 = stored(col_port, "PUSH");
	j0 = journaled(http_port);
	posts_sent(http_port, &p0, &s0);
	v0 = b->next_value;
	c0[0] = self_cpu_s();
	c0[1] = cpu_s(pushd);
	c0[2] = cpu_s(col);
	c0[3] = cluster_cpu_s(b);
	t0 = now_s();
	while (now_s() - t0 < b->seconds)
		run_for(b, 100);
	/* The CPU first: the collector's answer to stored() (a count over the table) is the
	 * bench's work, not the stream's (at c0 it came before, too). */
	c1[0] = self_cpu_s();
	c1[1] = cpu_s(pushd);
	c1[2] = cpu_s(col);
	c1[3] = cluster_cpu_s(b);
	n1 = stored(col_port, "PUSH");
	t1 = now_s();
	j1 = journaled(http_port);
	posts_sent(http_port, &p1, &s1);
	b->producing = false;
	run_for(b, 500);
	reap(pushd, SIGTERM);
	reap(col, SIGTERM);
	if (n0 < 0 || n1 <= n0)
		return res;
	res.stored = (double)(n1 - n0) / (t1 - t0);
	res.offered = (double)(b->next_value - v0) / (t1 - t0);
	if (j0 >= 0 && j1 >= j0) {
		res.journaled = (double)(j1 - j0) / (t1 - t0);
		res.behind = j1 - n1;
	}
	if (p0 >= 0 && p1 > p0 && s0 >= 0 && s1 >= s0) {
		res.posts = (double)(p1 - p0) / (t1 - t0);
		res.per_post = (double)(s1 - s0) / (double)(p1 - p0);
	}
	for (int i = 0; i < 4; i++)
		if (c0[i] >= 0 && c1[i] >= c0[i])
			res.cores[i] = (c1[i] - c0[i]) / (t1 - t0);
	return res;
}

static void write_backlog_csv(struct bench *b, const char *path)
{
	FILE *f = fopen(path, "w");
	long t0 = (long)time(NULL) - 86400;

	if (!f)
		die("cannot write the backlog CSV");
	for (long i = 0; i < b->backlog; i++)
		fprintf(f, "%ld.%03ld,t%ld,%ld\n", t0 + i / 1000, i % 1000, i % N_THINGS, i);
	fclose(f);
}

struct backlog_result {
	double journal_s, drain_s;
	struct pg_mark a, z; /* around the drain (PostgreSQL) */
};

static struct backlog_result bench_backlog(struct bench *b, const char *db, const char *tag)
{
	struct backlog_result res = {.journal_s = -1, .drain_s = -1};
	uint16_t col_port = free_port(SOCK_STREAM), http_port = free_port(SOCK_STREAM);
	char csv[600];
	pid_t pushd, col;
	double t0, end;
	char ptag[64];
	int status;

	snprintf(ptag, sizeof(ptag), "backlog-%s", tag);
	snprintf(csv, sizeof(csv), "%s/backlog.csv", b->dir);
	if (access(csv, R_OK) != 0)
		write_backlog_csv(b, csv);
	/* The outage: pushd journals everything, the collector is not there. */
	t0 = now_s();
	pushd = start_pushd(b, "BACKLOG", col_port, http_port, csv, ptag);
	end = now_s() + 600;
	for (;;) {
		if (waitpid(pushd, &status, WNOHANG) == pushd)
			die("thingsync-pushd stopped; see its log (--keep)");
		json_t *s = pushd_status(http_port);
		bool done = s && json_is_true(json_object_get(json_object_get(s, "csv"), "done"));
		json_decref(s);
		if (done || now_s() > end)
			break;
		run_for(b, 50);
	}
	res.journal_s = now_s() - t0;
	/* The collector comes back: time until the journal is empty. */
	res.a = pg_mark(b, true);
	col = start_collector(b, db, col_port, tag);
	t0 = now_s();
	end = t0 + 1200;
	for (;;) {
		json_t *s = pushd_status(http_port);
		bool empty =
		    s && json_integer_value(json_object_get(json_object_get(s, "journal"), "entries")) == 0;
		json_decref(s);
		if (empty || now_s() > end)
			break;
		run_for(b, 20);
	}
	res.drain_s = now_s() - t0;
	/* WAL bytes and CPU before the count below (its query over the table is not the drain's
	 * work); the counters of pg_stat_wal once the collector's connections closed (a backend
	 * reports them when it exits, or when idle, at most once a second). */
	res.z = pg_mark(b, false);
	if (stored(col_port, "BACKLOG") != b->backlog)
		fprintf(stderr, "warning: the collector stored %" PRId64 " of %ld\n",
		        stored(col_port, "BACKLOG"), b->backlog);
	reap(pushd, SIGTERM);
	reap(col, SIGTERM);
	if (b->pg_live) {
		struct pg_mark after;
		usleep(300000);
		after = pg_mark(b, false);
		res.z.records = after.records;
		res.z.fpi = after.fpi;
		res.z.syncs = after.syncs;
		res.z.checkpoint = after.checkpoint;
	}
	return res;
}

/*
 * The floor: the rows the backlog drain stores, straight into a fresh
 * database with the collector's own schema (db_schema_sql, compiled in from
 * the collector's sources: the same tables and indexes), the same pragmas,
 * b->batch rows per transaction, with nothing else in the way (no HTTP, no
 * JSON, no validation). The rows' stream is a row of streams with a 32-hex
 * name, as pushd's, made as the collector makes a new one.
 */
#define BASE_STREAM "0123456789abcdef0123456789abcdef"

static void base_row(long i, char thing[16], char val[24], int64_t *time_us)
{
	snprintf(thing, 16, "t%ld", i % N_THINGS);
	snprintf(val, 24, "%ld", i);
	*time_us = (int64_t)1700000000000000 + i;
}

static double baseline_sqlite(struct bench *b)
{
	char path[600];
	sqlite3 *h;
	sqlite3_stmt *st = NULL;
	double t0;

	snprintf(path, sizeof(path), "%s/baseline.db", b->dir);
	if (sqlite3_open(path, &h) != SQLITE_OK)
		return -1;
	sqlite3_exec(h, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, NULL);
	for (size_t i = 0; i < db_schema_count; i++)
		if (sqlite3_exec(h, db_schema_sql[i], NULL, NULL, NULL) != SQLITE_OK)
			goto fail;
	for (size_t i = 0; i < db_index_count; i++)
		if (sqlite3_exec(h, db_index_sql[i], NULL, NULL, NULL) != SQLITE_OK)
			goto fail;
	if (sqlite3_exec(h,
	                 "INSERT INTO streams (id, source, stream, first_seq, last_seq, first_us, last_us)"
	                 " VALUES (1, 'BASE', '" BASE_STREAM "', 1, 1, 0, 0)",
	                 NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(h,
	                       "INSERT OR IGNORE INTO measurement_rows (sid, seq, thing, vtype, value,"
	                       " time_us, owner_boot, version, received_us, owner, via)"
	                       " VALUES (1, ?1, ?2, 'int', ?3, ?4, 0, 0, ?4, 'OWNER', 'import')",
	                       -1, &st, NULL) != SQLITE_OK)
		goto fail;
	t0 = now_s();
	for (long i = 0; i < b->backlog; i++) {
		char thing[16], val[24];
		int64_t t;
		if (i % b->batch == 0)
			sqlite3_exec(h, "BEGIN", NULL, NULL, NULL);
		base_row(i, thing, val, &t);
		sqlite3_bind_int64(st, 1, i + 1);
		sqlite3_bind_text(st, 2, thing, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 3, val, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 4, t);
		if (sqlite3_step(st) != SQLITE_DONE)
			goto fail;
		sqlite3_reset(st);
		if (i % b->batch == b->batch - 1 || i == b->backlog - 1)
			sqlite3_exec(h, "COMMIT", NULL, NULL, NULL);
	}
	t0 = now_s() - t0;
	sqlite3_finalize(st);
	sqlite3_close(h);
	return (double)b->backlog / t0;
fail:
	fprintf(stderr, "baseline: %s\n", sqlite3_errmsg(h));
	sqlite3_finalize(st);
	sqlite3_close(h);
	return -1;
}

#ifdef HAVE_POSTGRES
static void quiet(void *arg, const char *message)
{
}

static bool pg_ok(PGconn *c, PGresult *res)
{
	ExecStatusType s = PQresultStatus(res);
	bool ok = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK || s == PGRES_COPY_IN;

	if (!ok)
		fprintf(stderr, "baseline: %s", PQerrorMessage(c));
	PQclear(res);
	return ok;
}

static bool pg_all(PGconn *c, const char *const *sql, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!pg_ok(c, PQexec(c, sql[i])))
			return false;
	return true;
}

/*
 * The floor for PostgreSQL: COPY of each batch into the collector's schema
 * (made in a schema of its own, so the collector's tables are untouched,
 * or with `shared` the collector's own tables, as a new stream), one
 * transaction per batch: the fastest way in that PostgreSQL offers.
 */
static double baseline_pg(struct bench *b, const char *conninfo, bool shared, struct pg_mark *ma,
                          struct pg_mark *mz)
{
	PGconn *c = PQconnectdb(conninfo);
	PGresult *res;
	double t0 = -1;
	char *buf = NULL, sid[24];

	if (PQstatus(c) != CONNECTION_OK) {
		PQfinish(c);
		return -1;
	}
	PQsetNoticeProcessor(c, quiet, NULL);
	if (!shared) {
		if (!pg_ok(c, PQexec(c, "DROP SCHEMA IF EXISTS pushbench_baseline CASCADE")) ||
		    !pg_ok(c, PQexec(c, "CREATE SCHEMA pushbench_baseline")) ||
		    !pg_ok(c, PQexec(c, "SET search_path TO pushbench_baseline")))
			goto leave;
		/* The collector's order (db__schema()): tables, PostgreSQL's columns, indexes, their options. */
		if (!pg_all(c, db_schema_sql, db_schema_count) || !pg_all(c, db_pg_columns_sql, db_pg_columns_count) ||
		    !pg_all(c, db_index_sql, db_index_count) || !pg_all(c, db_pg_index_sql, db_pg_index_count))
			goto leave;
	}
	/* The stream's row, as the collector makes a new one (ids from the sequence). */
	res = PQexec(c, "INSERT INTO streams (source, stream, first_seq, last_seq, first_us, last_us)"
	                " VALUES ('BASE', '" BASE_STREAM "', 1, 1, 0, 0) RETURNING id");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		pg_ok(c, res);
		goto leave;
	}
	snprintf(sid, sizeof(sid), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	buf = malloc((size_t)b->batch * 128);
	if (!buf)
		goto leave;
	*ma = pg_mark(b, true);
	t0 = now_s();
	for (long i = 0; i < b->backlog; i += b->batch) {
		size_t n = 0;
		if (!pg_ok(c, PQexec(c, "BEGIN")) ||
		    !pg_ok(c, PQexec(c, "COPY measurement_rows (sid, seq, thing, vtype, value, time_us,"
		                        " owner_boot, version, received_us, owner, via) FROM STDIN")))
			goto fail;
		for (long k = i; k < i + b->batch && k < b->backlog; k++) {
			char thing[16], val[24];
			int64_t t;
			base_row(k, thing, val, &t);
			n += (size_t)sprintf(buf + n,
			                     "%s\t%ld\t%s\tint\t%s\t%" PRId64 "\t0\t0\t%" PRId64
			                     "\tOWNER\timport\n",
			                     sid, k + 1, thing, val, t, t);
		}
		if (PQputCopyData(c, buf, (int)n) != 1 || PQputCopyEnd(c, NULL) != 1)
			goto fail;
		res = PQgetResult(c);
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			pg_ok(c, res);
			goto fail;
		}
		PQclear(res);
		if (!pg_ok(c, PQexec(c, "COMMIT")))
			goto fail;
	}
	t0 = (double)b->backlog / (now_s() - t0);
	/* This connection's WAL counters into pg_stat_wal before they are read. */
	PQclear(PQexec(c, "SELECT pg_stat_force_next_flush()"));
	PQclear(PQexec(c, "SELECT 1"));
	*mz = pg_mark(b, false);
	goto leave;
fail:
	t0 = -1;
leave:
	free(buf);
	if (!shared)
		PQclear(PQexec(c, "DROP SCHEMA IF EXISTS pushbench_baseline CASCADE"));
	PQfinish(c);
	return t0;
}
#endif

static void report(struct bench *b, const char *tag, const char *name, const char *db, double baseline,
                   const char *base_how)
{
	struct stream_result st = (pg_mark(b, true), bench_stream(b, db, tag));
	struct backlog_result bl;
	/* CPU per measurement, each process for what it handled: the owner per change it
	 * made, pushd per measurement it journaled (and, in a steady state, sent), the
	 * collector per measurement it stored. */
	bool pg = strcmp(tag, "postgres") == 0 && st.cores[3] >= 0;
	double us[4] = {1e6 * st.cores[0] / st.offered, 1e6 * st.cores[1] / st.journaled,
	                1e6 * st.cores[2] / st.stored, pg ? 1e6 * st.cores[3] / st.stored : 0};
	double drain, cpu = us[0] + us[1] + us[2] + us[3];
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	printf("%s\n", name);
	printf("  stream, mesh -> pushd -> collector:   %9.0f measurements/s  (%d things, %d s)\n",
	       st.stored, N_THINGS, b->seconds);
	printf("    owner offered %.0f changes/s; pushd journaled %.0f/s (acknowledged to the mesh);\n"
	       "    %" PRId64 " journaled, not yet stored at the end\n",
	       st.offered, st.journaled, st.behind);
	if (st.posts > 0)
		printf("    POSTs: %.0f/s settled, %.0f measurements each on average\n", st.posts, st.per_post);
	if (st.offered > 0 && st.journaled > 0 && st.stored > 0 && st.cores[0] >= 0 && st.cores[1] >= 0 &&
	    st.cores[2] >= 0) {
		printf("    CPU: owner %.2f cores (%.1f us a change), pushd %.2f (%.1f us a measurement),"
		       " collector %.2f (%.1f us)%s\n",
		       st.cores[0], us[0], st.cores[1], us[1], st.cores[2], us[2], pg ? "," : "");
		if (pg)
			printf("         PostgreSQL server %.2f (%.1f us)\n", st.cores[3], us[3]);
		printf("    = %.1f us a measurement: at most %.0f/s if the chain had all %ld cores\n", cpu,
		       cpu > 0 ? 1e6 * (double)ncpu / cpu : 0, ncpu);
	}
	fflush(stdout);
	if (b->stream_only)
		return;
	bl = bench_backlog(b, db, tag);
	drain = bl.drain_s > 0 ? (double)b->backlog / bl.drain_s : -1;
	printf("  backlog of %ld after an outage:  journaled in %.1f s, drained in %.1f s = %9.0f "
	       "measurements/s\n",
	       b->backlog, bl.journal_s, bl.drain_s, drain);
	pg_print("drain", bl.a, bl.z, (double)b->backlog);
	printf("  baseline, %s, %ld rows/txn: %9.0f rows/s\n", base_how, b->batch, baseline);
	pg_print("baseline", b->base_a, b->base_z, (double)b->backlog);
	printf("  ratio to the baseline:   stream %.2f   drain %.2f\n", baseline > 0 ? st.stored / baseline : 0,
	       baseline > 0 ? drain / baseline : 0);
	fflush(stdout);
#ifdef HAVE_POSTGRES
	/*
	 * The same COPY once more, into the drain's own table, as a third source: a new stream of the
	 * collector's table, its rows next to the stream's and the drain's (schema 5 keys them by
	 * stream id; before, by the names, BACKLOG sorting before PUSH put the drain's entries in the
	 * middle of the index), not into an empty table as above.
	 */
	if (b->pg_live) {
		struct pg_mark a, z;
		double same = baseline_pg(b, b->pg_live, true, &a, &z);

		printf("  baseline, the same COPY into the drain's table (other sources' rows in it): %9.0f rows/s\n",
		       same);
		pg_print("that baseline", a, z, (double)b->backlog);
		printf("  ratio of the drain to it: %.2f\n", same > 0 ? drain / same : 0);
		fflush(stdout);
	}
#endif
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"pushd", required_argument, NULL, 'p'},
	    {"collectord", required_argument, NULL, 'c'},
	    {"seconds", required_argument, NULL, 's'},
	    {"rate", required_argument, NULL, 'r'},
	    {"backlog", required_argument, NULL, 'b'},
	    {"batch", required_argument, NULL, 'n'},
	    {"inflight", required_argument, NULL, 'i'},
	    {"backend", required_argument, NULL, 'B'},
	    {"pg", required_argument, NULL, 'g'},
	    {"pg-defaults", no_argument, NULL, 'D'},
	    {"keep", no_argument, NULL, 'k'},
	    {"stream-only", no_argument, NULL, 'S'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct bench b;
	struct event *prod;
	struct timeval tv;
	struct event_config *cfg;
	long tick_us;
	tsync_node_options o;
	char db[700];
	int ch;

	memset(&b, 0, sizeof(b));
	b.pushd = access(PUSHD_BUILD_PATH, X_OK) == 0 ? PUSHD_BUILD_PATH : "thingsync-pushd";
	b.collectord =
	    access(COLLECTORD_BUILD_PATH, X_OK) == 0 ? COLLECTORD_BUILD_PATH : "thingsync-collectord";
	b.seconds = 5;
	b.rate = 200000;
	b.backlog = 1000000;
	b.batch = 5000;
	b.do_sqlite = true;
#ifdef HAVE_POSTGRES
	b.do_pg = true;
#endif
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'p':
			b.pushd = optarg;
			break;
		case 'c':
			b.collectord = optarg;
			break;
		case 's':
			b.seconds = atoi(optarg);
			break;
		case 'b':
			b.backlog = atol(optarg);
			break;
		case 'r':
			b.rate = atol(optarg);
			break;
		case 'n':
			b.batch = atol(optarg);
			break;
		case 'i':
			b.inflight = optarg;
			break;
		case 'B':
			b.do_sqlite = !strcmp(optarg, "sqlite") || !strcmp(optarg, "both");
			b.do_pg = !strcmp(optarg, "postgres") || !strcmp(optarg, "both");
			break;
		case 'g':
			b.pg_conninfo = optarg;
			break;
		case 'D':
			b.pg_defaults = true;
			break;
		case 'k':
			b.keep = true;
			break;
		case 'S':
			b.stream_only = true;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		default:
			fputs(usage_text, stderr);
			return 2;
		}
	}
	if (b.seconds < 1 || b.backlog < 1 || b.batch < 1 || b.batch > 100000 || b.rate < 1 ||
	    b.rate > 1000000) {
		fputs(usage_text, stderr);
		return 2;
	}
#ifndef HAVE_POSTGRES
	if (b.do_pg) {
		fprintf(stderr, "built without libpq: PostgreSQL skipped\n");
		b.do_pg = false;
	}
#endif
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	snprintf(b.dir, sizeof(b.dir), "/tmp/pushbench-XXXXXX");
	if (!mkdtemp(b.dir))
		die("mkdtemp failed");
	chmod(b.dir, 0755);
	make_site(&b);
	/* The owner's tick needs the precise clock (see produce_cb()). */
	cfg = event_config_new();
	if (cfg)
		event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	b.base = cfg ? event_base_new_with_config(cfg) : NULL;
	if (cfg)
		event_config_free(cfg);
	tick_us = (long)(1e6 * N_THINGS / (double)b.rate);
	tv.tv_sec = tick_us / 1000000;
	tv.tv_usec = tick_us % 1000000;
	tsync_node_options_init(&o);
	o.site = b.site;
	o.controller = "OWNER";
	o.event_base = b.base;
	if (!b.base || tsync_node_new(&o, &b.owner) < 0)
		die("cannot start the owner node");
	prod = event_new(b.base, -1, EV_PERSIST, produce_cb, &b);
	event_add(prod, &tv);

	printf("thingsync-pushbench: %d-second stream offered at %ld changes/s, backlog of %ld, %ld CPUs\n",
	       b.seconds, b.rate, b.backlog, sysconf(_SC_NPROCESSORS_ONLN));
	if (b.do_sqlite) {
		snprintf(db, sizeof(db), "sqlite:%s/collector-sqlite.db", b.dir);
		report(&b, "sqlite", "SQLite (WAL, synchronous=FULL)", db, b.stream_only ? 0 : baseline_sqlite(&b),
		       "prepared INSERT into the collector's schema");
	}
#ifdef HAVE_POSTGRES
	if (b.do_pg) {
		char conninfo[400];
		if (b.pg_conninfo) {
			snprintf(conninfo, sizeof(conninfo), "%s", b.pg_conninfo);
		} else if (pg_start(&b) == 0) {
			snprintf(conninfo, sizeof(conninfo),
			         "host=127.0.0.1 port=%u user=postgres dbname=postgres", b.pg_port);
		} else {
			fprintf(stderr, "cannot start a private PostgreSQL cluster: PostgreSQL skipped\n");
			conninfo[0] = '\0';
		}
		if (conninfo[0]) {
			b.pg_live = conninfo;
			if (!b.pg_conninfo && !b.pg_defaults)
				pg_warm(&b);
			double base = b.stream_only ? 0 : baseline_pg(&b, conninfo, false, &b.base_a, &b.base_z);
			snprintf(db, sizeof(db), "postgres:%s", conninfo);
			report(&b, "postgres", "PostgreSQL (synchronous_commit on)", db, base,
			       "COPY into the collector's schema");
		}
		pg_stop(&b);
	}
#endif
	event_free(prod);
	tsync_node_free(b.owner);
	event_base_free(b.base);
	tsync_site_free(b.site);
	if (!b.keep) {
		char cmd[300];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", b.dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", b.dir);
	} else {
		printf("kept %s\n", b.dir);
	}
	curl_global_cleanup();
	return 0;
}
