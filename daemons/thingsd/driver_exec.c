/*
 * The exec driver: a program reads or writes the value.
 *
 *   exec:PROGRAM [ARG...] [interval=MS] [timeout=MS]
 *
 * A read runs `PROGRAM ARG... get` and takes the first line it prints; a
 * write runs `PROGRAM ARG... set VALUE`, and if it prints a line, that is the
 * resulting state (as_is). Exit status 0 means success. The environment has
 * THINGSYNC_THING and THINGSYNC_CONTROLLER. A program that runs longer than
 * `timeout` is killed.
 *
 * Reads run in the background (the loop goes on); writes wait for the
 * program, because the write hook must answer with the resulting state.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "driver.h"

extern char **environ;

#define EXEC_OUT_MAX 4095

struct exec_run {
	pid_t pid;
	int fd;
	struct event *rd_ev, *to_ev;
	char out[EXEC_OUT_MAX + 1];
	size_t len;
	bool eof, exited, timed_out;
	int status;
};

static int exec_parse(struct driver *d, char *err, size_t errlen)
{
	if (d->n_args < 1) {
		snprintf(err, errlen, "exec: needs a program, e.g. exec:/usr/local/bin/relay 3");
		return -EINVAL;
	}
	return 0;
}

static int spawn(struct driver *d, const char *op, const char *value, pid_t *pid, int *fd, char *err,
                 size_t errlen)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, defaults;
	char **argv = NULL, **envp = NULL;
	char env_thing[128], env_ctrl[128];
	size_t n_env = 0, k = 0;
	int p[2] = {-1, -1}, r;

	argv = calloc(d->n_args + 3, sizeof(*argv));
	for (char **e = environ; e && *e; e++)
		n_env++;
	envp = calloc(n_env + 3, sizeof(*envp));
	if (!argv || !envp) {
		r = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto leave;
	}
	for (size_t i = 0; i < d->n_args; i++)
		argv[i] = d->args[i];
	argv[d->n_args] = (char *)op;
	argv[d->n_args + 1] = (char *)value;
	snprintf(env_thing, sizeof(env_thing), "THINGSYNC_THING=%s", d->thing->name);
	snprintf(env_ctrl, sizeof(env_ctrl), "THINGSYNC_CONTROLLER=%s", tsync_node_name(d->td->node));
	for (char **e = environ; e && *e; e++)
		if (strncmp(*e, "THINGSYNC_THING=", 16) && strncmp(*e, "THINGSYNC_CONTROLLER=", 21))
			envp[k++] = *e;
	envp[k++] = env_thing;
	envp[k++] = env_ctrl;

	if (pipe2(p, O_CLOEXEC) < 0) {
		r = -errno;
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto leave;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 34)
	/* Every descriptor of ours is close-on-exec, but not every library's
	 * (LMDB's data file is not): the program gets 0, 1 and 2 only. */
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
	posix_spawnattr_init(&at);
	/* The daemon ignores SIGPIPE; the program must not inherit that. */
	sigemptyset(&none);
	sigemptyset(&defaults);
	sigaddset(&defaults, SIGPIPE);
	sigaddset(&defaults, SIGCHLD);
	sigaddset(&defaults, SIGHUP);
	sigaddset(&defaults, SIGTERM);
	sigaddset(&defaults, SIGINT);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &defaults);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	r = posix_spawnp(pid, argv[0], &fa, &at, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(p[1]);
	p[1] = -1;
	if (r != 0) {
		snprintf(err, errlen, "%s: %s", argv[0], strerror(r));
		r = -r;
		goto leave;
	}
	*fd = p[0];
	p[0] = -1;
leave:
	if (p[0] >= 0)
		close(p[0]);
	free(argv);
	free(envp);
	return r;
}

static void describe_status(int status, bool timed_out, uint32_t timeout_ms, const char *out, char *why,
                            size_t len)
{
	char first[120];

	snprintf(first, sizeof(first), "%s", out);
	first[strcspn(first, "\r\n")] = '\0';
	if (timed_out)
		snprintf(why, len, "timed out after %u ms", timeout_ms);
	else if (WIFSIGNALED(status))
		snprintf(why, len, "killed by signal %d", WTERMSIG(status));
	else
		snprintf(why, len, "exit status %d%s%s", WEXITSTATUS(status), first[0] ? ": " : "", first);
}

/* --- reads, in the background ---------------------------------------------- */

static void run_close(struct exec_run *run)
{
	if (run->rd_ev) {
		event_free(run->rd_ev);
		run->rd_ev = NULL;
	}
	if (run->to_ev) {
		event_free(run->to_ev);
		run->to_ev = NULL;
	}
	if (run->fd >= 0) {
		close(run->fd);
		run->fd = -1;
	}
}

static void check_done(struct driver *d)
{
	struct exec_run *run = d->priv;
	char why[DRIVER_ERR_LEN];
	bool ok;

	if (!run || !run->eof || !run->exited)
		return;
	run_close(run);
	run->out[run->len] = '\0';
	ok = !run->timed_out && WIFEXITED(run->status) && WEXITSTATUS(run->status) == 0;
	if (!ok)
		describe_status(run->status, run->timed_out, d->timeout_ms, run->out, why, sizeof(why));
	d->priv = NULL;
	if (ok) {
		run->out[strcspn(run->out, "\r\n")] = '\0';
		driver__read_done(d, 0, NULL, run->out);
	} else {
		driver__read_done(d, -EIO, why, NULL);
	}
	free(run);
}

static void rd_cb(evutil_socket_t fd, short what, void *arg)
{
	struct driver *d = arg;
	struct exec_run *run = d->priv;
	char sink[512];
	ssize_t n;

	/* Output beyond the limit is read and dropped so the program never
	 * blocks on a full pipe. */
	if (run->len < EXEC_OUT_MAX)
		n = read(fd, run->out + run->len, EXEC_OUT_MAX - run->len);
	else
		n = read(fd, sink, sizeof(sink));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0) {
		if (run->len < EXEC_OUT_MAX)
			run->len += (size_t)n;
		return;
	}
	run->eof = true;
	event_del(run->rd_ev);
	check_done(d);
}

static void to_cb(evutil_socket_t fd, short what, void *arg)
{
	struct driver *d = arg;
	struct exec_run *run = d->priv;

	run->timed_out = true;
	/* Once reaped, the pid may belong to someone else: never kill it then. */
	if (!run->exited)
		kill(run->pid, SIGKILL);
	/* A grandchild may hold the pipe open after the program is gone. */
	if (run->exited && !run->eof) {
		run->eof = true;
		check_done(d);
	}
}

static void exec_read(struct driver *d)
{
	struct exec_run *run = calloc(1, sizeof(*run));
	char err[DRIVER_ERR_LEN];
	struct timeval tv;
	int r;

	if (!run) {
		driver__read_done(d, -ENOMEM, "out of memory", NULL);
		return;
	}
	run->fd = -1;
	r = spawn(d, "get", NULL, &run->pid, &run->fd, err, sizeof(err));
	if (r < 0) {
		free(run);
		driver__read_done(d, r, err, NULL);
		return;
	}
	fcntl(run->fd, F_SETFL, fcntl(run->fd, F_GETFL) | O_NONBLOCK);
	run->rd_ev = event_new(d->td->base, run->fd, EV_READ | EV_PERSIST, rd_cb, d);
	run->to_ev = evtimer_new(d->td->base, to_cb, d);
	d->priv = run;
	if (!run->rd_ev || !run->to_ev) {
		kill(run->pid, SIGKILL);
		waitpid(run->pid, NULL, 0);
		run_close(run);
		free(run);
		d->priv = NULL;
		driver__read_done(d, -ENOMEM, "out of memory", NULL);
		return;
	}
	tv.tv_sec = d->timeout_ms / 1000;
	tv.tv_usec = (suseconds_t)(d->timeout_ms % 1000) * 1000;
	event_add(run->rd_ev, NULL);
	evtimer_add(run->to_ev, &tv);
}

static void exec_child(struct driver *d)
{
	struct exec_run *run = d->priv;
	int status;

	if (!run || run->exited)
		return;
	if (waitpid(run->pid, &status, WNOHANG) == run->pid) {
		run->exited = true;
		run->status = status;
		check_done(d);
	}
}

static void exec_stop(struct driver *d)
{
	struct exec_run *run = d->priv;

	if (!run)
		return;
	if (!run->exited) {
		kill(run->pid, SIGKILL);
		waitpid(run->pid, NULL, 0);
	}
	run_close(run);
	free(run);
	d->priv = NULL;
}

/* --- writes, waiting ---------------------------------------------------------- */

static int exec_write(struct driver *d, const tsync_value *to_be, tsync_value *as_is, char *err,
                      size_t errlen)
{
	char text[1024], out[EXEC_OUT_MAX + 1];
	uint64_t deadline = td__now_us() + (uint64_t)d->timeout_ms * 1000u;
	size_t len = 0;
	bool timed_out = false, exited = false;
	int fd = -1, status = 0, r;
	pid_t pid;

	if (driver__to_text(d, to_be, text, sizeof(text)) < 0) {
		snprintf(err, errlen, "value cannot be written");
		return -EINVAL;
	}
	r = spawn(d, "set", text, &pid, &fd, err, errlen);
	if (r < 0)
		return r;
	for (;;) {
		uint64_t now = td__now_us();
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t n;
		if (now >= deadline) {
			timed_out = true;
			break;
		}
		r = poll(&pfd, 1, (int)((deadline - now + 999) / 1000));
		if (r < 0 && errno != EINTR)
			break;
		if (r <= 0)
			continue;
		n = read(fd, out + len, EXEC_OUT_MAX - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == EXEC_OUT_MAX)
			break;
	}
	close(fd);
	out[len] = '\0';
	/* The program closed its output; give it the rest of the timeout to exit. */
	while (!timed_out) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid) {
			exited = true;
			break;
		}
		if (w < 0 && errno != EINTR)
			break;
		if (td__now_us() >= deadline) {
			timed_out = true;
			break;
		}
		poll(NULL, 0, 2);
	}
	if (!exited) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	if (timed_out || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		describe_status(status, timed_out, d->timeout_ms, out, err, errlen);
		return -EIO;
	}
	out[strcspn(out, "\r\n")] = '\0';
	if (out[0]) {
		r = driver__from_text(d, out, as_is, err, errlen);
		if (r < 0)
			return -EIO;
	}
	return 0;
}

const struct driver_ops driver_exec_ops = {
    .kind = "exec",
    .default_interval_ms = 5000,
    .default_timeout_ms = 2000,
    .parse = exec_parse,
    .read = exec_read,
    .write = exec_write,
    .child = exec_child,
    .stop = exec_stop,
};
