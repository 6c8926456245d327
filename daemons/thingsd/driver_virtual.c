/*
 * The virtual driver: no hardware. The value lives in the node, which keeps
 * it in LMDB when thingsd runs with a state directory, so it survives
 * restarts. Every write is taken as it is.
 * SPDX-License-Identifier: MIT
 */
#include "driver.h"

static int virtual_write(struct driver *d, const tsync_value *to_be, tsync_value *as_is, char *err,
                         size_t errlen)
{
	*as_is = *to_be;
	return 0;
}

const struct driver_ops driver_virtual_ops = {
    .kind = "virtual",
    .write = virtual_write,
};
