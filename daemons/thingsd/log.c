/*
 * thingsd logging: one line per event on stderr. Under systemd (journald is
 * on the other end of stderr) each line starts with its syslog priority,
 * `<3>` to `<7>`, so the journal keeps the levels; elsewhere it starts with
 * the local time and the level. Each line goes out in one write(), so the
 * lines of several daemons sharing a terminal do not mix.
 *
 * A line is one line whatever it carries: control characters in the text
 * (a newline in a command's argument, an escape sequence in a thing's name)
 * are written as \n and \xNN by the library's escaper, so nobody who can send
 * thingsd a string can forge a line of its log. Text that is meant to span
 * lines is logged line by line by its caller.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "thingsd.h"
#include "util/util.h"

static struct {
	char controller[64];
	tsync_log_level level;
	bool journal;
} L = {"thingsd", TSYNC_LOG_INFO, false};

void tdlog__init(const char *controller, tsync_log_level level)
{
	L.level = level;
	L.journal = getenv("JOURNAL_STREAM") != NULL;
	tdlog__set_controller(controller);
}

void tdlog__set_controller(const char *controller)
{
	log__escape(L.controller, sizeof(L.controller), controller ? controller : "thingsd");
}

tsync_log_level tdlog__level(void)
{
	return L.level;
}

static void emit(tsync_log_level level, const char *prefix, const char *raw)
{
	static const int prio[] = {3, 4, 6, 7};
	char line[1400], text[1200];
	int n;

	/* Lines from the library come escaped already; escaping is idempotent. */
	log__escape(text, sizeof(text), raw);
	if (L.journal) {
		n = snprintf(line, sizeof(line), "<%d>%s%s\n", prio[level], prefix, text);
	} else {
		struct timeval tv;
		struct tm tm;
		gettimeofday(&tv, NULL);
		localtime_r(&tv.tv_sec, &tm);
		n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld %-5s %s%s\n", tm.tm_hour, tm.tm_min,
		             tm.tm_sec, (long)(tv.tv_usec / 1000), tsync_log_level_name(level), prefix, text);
	}
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	/* Nothing to do about a failed log write but go on. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

void tdlog__printf(tsync_log_level level, const char *fmt, ...)
{
	char text[1200], prefix[80];
	va_list ap;

	if (level > L.level)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	snprintf(prefix, sizeof(prefix), "%s: ", L.controller);
	emit(level, prefix, text);
}

void tdlog__lib(void *userdata, tsync_log_level level, const char *line)
{
	if (level > L.level || (unsigned)level > TSYNC_LOG_DEBUG)
		return;
	emit(level, "", line);
}
