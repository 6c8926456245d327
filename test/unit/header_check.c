/*
 * The public headers must compile on their own with -std=c99 -pedantic
 * -Werror (and, from header_check.cpp, as C++): this file is built with
 * those flags and only includes them.
 * SPDX-License-Identifier: MIT
 */
#include <thingsync/thingsync.h>

int main(void)
{
	tsync_value v = tsync_int(3);
	tsync_node_options o;
	tsync_node_options_init(&o);
	return v.u.i == 3 && tsync_strerror(0) != NULL ? 0 : 1;
}
