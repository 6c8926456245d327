/*
 * libFuzzer target for the datagram handler: every input is one datagram
 * arriving at a node's engine from a listed peer's address, in legacy mode
 * (no key) so the fuzzer reaches message handling without forging tags.
 * The engine's boot is 1, so envelopes with "to_boot":1 are acted on.
 * SPDX-License-Identifier: MIT
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sync/sync.h"

static const char SITE[] = "[site]\nname = fuzz\nmax_outstanding = 8\n"
                           "[controller A]\nhost = 127.0.0.1\nudp_port = 7001\nroles = cmd_do\n"
                           "[controller B]\nhost = 127.0.0.1\nudp_port = 7002\n"
                           "[thing light]\nowner = A\ntype = bool\nusers = B\n"
                           "[thing temp]\nowner = B\ntype = float\nusers = A\nmin = -50\nmax = 150\n"
                           "[thing mode]\nowner = A\ntype = string\nusers = B\nallowed = off, eco\n"
                           "[thing door]\nowner = A\ntype = bool\nusers = B\npulse = yes\n"
                           "[thing count]\nowner = B\ntype = int\nusers = A\n";

static tsync_site *site;

static void op_send(void *ctx, uint32_t peer, const void *buf, size_t len)
{
	/* What the engine answers must itself be a valid datagram. */
	struct wire_codec c = {NULL, 65507, 100000, 65536};
	struct wire_datagram dg;
	tsync_reject why;
	if (wire__decode(&c, buf, len, &dg, &why) < 0)
		abort();
	wire__datagram_release(&dg);
}

static void op_arm(void *ctx, uint32_t peer, uint64_t delay_us)
{
}

static void op_want_flush(void *ctx)
{
}

static int on_cmd(void *ud, tsync_node *node, const tsync_request *req, char **result)
{
	*result = strdup("{\"ok\":true}");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sync_ops ops = {.send = op_send, .arm = op_arm, .want_flush = op_want_flush};
	struct sync_engine *e;

	if (!site) {
		char path[] = "/tmp/fuzz-site-XXXXXX";
		int fd = mkstemp(path);
		char *errors = NULL;
		if (fd < 0 || write(fd, SITE, sizeof(SITE) - 1) != (ssize_t)(sizeof(SITE) - 1))
			abort();
		close(fd);
		if (tsync_site_load(path, &site, &errors) < 0)
			abort();
		unlink(path);
	}
	if (sync__new(site, 0, 1, &ops, NULL, NULL, &e) < 0)
		abort();
	sync__on_request(e, "cmd", "cmd_do", "version", on_cmd, NULL);
	sync__start(e, 1000);
	sync__input(e, 0, data, size, 2000);
	sync__flush(e, 3000);
	sync__timer(e, 0, 500000);
	sync__input(e, 0, data, size, 600000); /* the same again: a duplicate */
	sync__flush(e, 600001);
	sync__free(e);
	return 0;
}
