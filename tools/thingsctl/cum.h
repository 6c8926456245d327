/*
 * thingsctl cum: a thing's cumulative statistics of a day, from its owner.
 * SPDX-License-Identifier: MIT
 */
#ifndef THINGSCTL_CUM_H
#define THINGSCTL_CUM_H

#include "client.h"

/* thingsctl cum THING [--day DATE] [--to CONTROLLER] [--json] */
int cmd_cum(struct ctl *c, int argc, char **argv);

#endif
