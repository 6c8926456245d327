/*
 * thingsync — brokerless peer-to-peer mesh for home and building automation.
 * SPDX-License-Identifier: MIT
 *
 * The umbrella header: include this one.
 */
#ifndef THINGSYNC_THINGSYNC_H
#define THINGSYNC_THINGSYNC_H

#include <thingsync/common.h>
#include <thingsync/site.h>
#include <thingsync/node.h>
#include <thingsync/history.h>

#endif /* THINGSYNC_THINGSYNC_H */
