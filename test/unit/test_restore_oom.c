/*
 * A node that cannot restore a sender's window or an answer in it (out of
 * memory at its start) does not start: tsync_node_new() returns -ENOMEM
 * and the log says what was lost. Started without them, it would run a
 * repeat of a request it had executed again, or answer a request whose
 * outcome it does not know "done".
 *
 * The allocations are failed through the linker (-Wl,--wrap=calloc, this
 * program only): the window's and the answers' callocs are recognised by
 * their sizes.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"
#include "store/store.h"
#include "sync/sync.h"
#include "util/util.h"

void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);

static bool fail_windows, fail_answers;

void *__wrap_calloc(size_t n, size_t size)
{
	if (fail_windows && n == SYNC_DEDUP_BOOTS && size == sizeof(struct dedup_win))
		return NULL;
	if (fail_answers && n == SYNC_DEDUP_BITS && size == sizeof(struct dedup_answer))
		return NULL;
	return __real_calloc(n, size);
}

static char logged[4096];

static void capture_log(void *ud, tsync_log_level level, const char *line)
{
	size_t len = strlen(logged);

	(void)ud;
	if (level == TSYNC_LOG_ERROR)
		snprintf(logged + len, sizeof(logged) - len, "%s\n", line);
}

static int start(const char *site, const char *state, tsync_node **node)
{
	tsync_node_options o;

	tsync_node_options_init(&o);
	o.site_path = site;
	o.controller = "A";
	o.state_dir = state;
	o.log = capture_log;
	logged[0] = '\0';
	return tsync_node_new(&o, node);
}

static void test_restore_out_of_memory(void **state)
{
	char *dir = harness_tmpdir("restore-oom"), text[512], state_dir[300];
	uint64_t bits[STORE_WINDOW_WORDS] = {0x7};
	struct logger log = {NULL, NULL, TSYNC_LOG_ERROR, NULL};
	uint16_t ports[2];
	struct store *s = NULL;
	tsync_node *node = NULL;
	char *site;

	(void)state;
	harness_ports(ports, 2);
	snprintf(text, sizeof(text),
	         "[site]\nname = oom\n"
	         "[controller A]\nhost = 127.0.0.1\nudp_port = %u\nroles = cmd_do\n"
	         "[controller B]\nhost = 127.0.0.1\nudp_port = %u\n"
	         "[thing light]\nowner = A\ntype = bool\nusers = B\n",
	         ports[0], ports[1]);
	site = harness_write(dir, "site.conf", text);
	snprintf(state_dir, sizeof(state_dir), "%s/state", dir);
	/* A's store: B's requests 1-3 of its boot 5 executed, the answer to
	 * request 2 "outcome unknown" (a deferred one A died in). */
	assert_int_equal(store__open(state_dir, 0, &log, &s), 0);
	assert_int_equal(store__stage_window(s, "B", 5, 3, bits), 0);
	assert_int_equal(store__stage_answer(s, "B", 5, 2, 2, SYNC_ERR_UNKNOWN, NULL), 0);
	assert_int_equal(store__commit(s), 0);
	store__close(s);

	fail_windows = true;
	assert_int_equal(start(site, state_dir, &node), -ENOMEM);
	fail_windows = false;
	assert_null(node);
	assert_non_null(strstr(logged, "out of memory restoring the window of B's boot 5"));

	fail_answers = true;
	assert_int_equal(start(site, state_dir, &node), -ENOMEM);
	fail_answers = false;
	assert_null(node);
	assert_non_null(strstr(logged, "out of memory restoring an answer to B"));

	/* With memory, it starts. */
	assert_int_equal(start(site, state_dir, &node), 0);
	assert_string_equal(logged, "");
	tsync_node_free(node);

	free(site);
	harness_rmdir(dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_restore_out_of_memory),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
